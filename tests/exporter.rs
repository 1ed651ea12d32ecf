//! scripts/redis_exporter/consistency.lua: the collect script that makes
//! redis_exporter export `INFO consistency`. Checked twice: by EVAL against the
//! module (the reply is exactly INFO's fields and values), and end to end with
//! Debian's prometheus-redis-exporter (1.45) scraping a module-loaded Redis,
//! where each field must appear as `redis_script_values{key="<field>"}` with the
//! right value.
//!
//! The exporter is taken from `$REDIS_EXPORTER`, else `prometheus-redis-exporter`
//! or `redis_exporter` on PATH, else installed with
//! `apt-get install -y prometheus-redis-exporter` when running as root; when none
//! of that works the end-to-end test says so and is skipped.
//!
//! Run: `cargo test --release --features test-hooks --test exporter`

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ledger, TestPg, TestRedis};
use redis::Connection;

const SCRIPT: &str = "scripts/redis_exporter/consistency.lua";

/// Every documented field of `INFO consistency`, as INFO prints them.
const FIELDS: [&str; 18] = [
    "consistency_rules_loaded",
    "consistency_checks_total",
    "consistency_keys_checked_total",
    "consistency_drifted_total",
    "consistency_drifted_drift",
    "consistency_drifted_invalid",
    "consistency_drifted_orphan",
    "consistency_drifted_missing",
    "consistency_drifted_no_ttl",
    "consistency_fixes_total",
    "consistency_purged_keys_total",
    "consistency_pg_errors_total",
    "consistency_pg_query_ms_last",
    "consistency_pg_query_ms_max",
    "consistency_lane_truth_queued",
    "consistency_lane_keyspace_queued",
    "consistency_last_check_age_sec",
    "consistency_last_check_drifted",
];

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRIPT)
}

/// Redis is declared first, so it stops before the database is dropped.
struct Env {
    redis: TestRedis,
    _pg: TestPg,
}

/// Users 1..=10, the weekly rule, the cache filled, user 4 off by 45.1.
fn env() -> Env {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 10, 2, 3);
    let rules = common::write_rules(&[common::weekly_rule_json()]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    let truth4: f64 = ledger::truth_weekly(&pg)[3].1.parse().unwrap();
    redis::cmd("SET")
        .arg("user:4:cost_weekly")
        .arg(format!("{}", truth4 + 45.1))
        .query::<()>(&mut c)
        .unwrap();
    Env { redis, _pg: pg }
}

/// The collect script's reply, as name -> value.
fn eval_script(c: &mut Connection) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(script_path()).unwrap();
    let flat: Vec<String> = redis::cmd("EVAL").arg(text).arg(0).query(c).unwrap();
    assert_eq!(flat.len() % 2, 0, "{flat:?}");
    flat.chunks(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect()
}

fn info_consistency(r: &TestRedis) -> BTreeMap<String, String> {
    r.info("consistency")
}

#[test]
fn the_collect_script_returns_info_consistency_as_flat_pairs() {
    let e = env();
    let mut c = e.redis.conn();
    common::call_ok(&mut c, &["CONSISTENCY.CHECK"]);

    let pairs = eval_script(&mut c);
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, FIELDS, "INFO's fields, in INFO's order");
    let info = info_consistency(&e.redis);
    for (k, v) in &pairs {
        v.parse::<f64>()
            .unwrap_or_else(|_| panic!("{k}={v} must parse as a number"));
        if k != "consistency_last_check_age_sec" {
            assert_eq!(Some(v), info.get(k), "{k}");
        }
    }
    let got: BTreeMap<_, _> = pairs.into_iter().collect();
    assert_eq!(got["consistency_rules_loaded"], "1");
    assert_eq!(got["consistency_checks_total"], "1");
    assert_eq!(got["consistency_keys_checked_total"], "10");
    assert_eq!(got["consistency_drifted_total"], "1");
    assert_eq!(got["consistency_drifted_drift"], "1");
    assert_eq!(got["consistency_last_check_drifted"], "1");

    // Read-only, and fine on a Redis without the module: an empty reply.
    let bare = TestRedis::start_without_module(&[]);
    assert!(eval_script(&mut bare.conn()).is_empty());
}

// ---------------------------------------------------------------------------
// End to end with redis_exporter
// ---------------------------------------------------------------------------

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn find_exporter() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REDIS_EXPORTER").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    on_path("prometheus-redis-exporter").or_else(|| on_path("redis_exporter"))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn apt_get(args: &[&str]) -> bool {
    Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The exporter binary, installing Debian's package when we may.
fn exporter_binary() -> Result<PathBuf, String> {
    if let Some(p) = find_exporter() {
        return Ok(p);
    }
    if !is_root() {
        return Err("not root, so prometheus-redis-exporter cannot be installed".into());
    }
    if on_path("apt-get").is_none() {
        return Err("no apt-get to install prometheus-redis-exporter".into());
    }
    let install = ["install", "-y", "-q", "prometheus-redis-exporter"];
    let installed = apt_get(&install) || (apt_get(&["update", "-q"]) && apt_get(&install));
    if !installed {
        return Err("apt-get install prometheus-redis-exporter failed".into());
    }
    find_exporter().ok_or_else(|| "installed, but no exporter binary on PATH".into())
}

/// The exporter process, killed on drop.
struct Exporter {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Exporter {
    fn start(bin: &Path, redis_port: u16) -> Exporter {
        let port = common::free_port();
        let dir = common::temp_dir("exporter");
        let log = dir.join("exporter.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("--redis.addr")
            .arg(format!("redis://127.0.0.1:{redis_port}"))
            .arg("--script")
            .arg(script_path())
            .arg("--web.listen-address")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--redis-only-metrics")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
        let mut ex = Exporter { child, port, log };
        let up = common::wait_until(Duration::from_secs(15), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up,
            "exporter did not listen on {port}: {:?}\n{}",
            ex.child.try_wait(),
            ex.log_text()
        );
        ex
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET /metrics over loopback with a minimal HTTP/1.0 request.
    fn scrape(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect exporter");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n")
            .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read /metrics");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP header end in {text:?}"));
        assert!(head.starts_with("HTTP/1."), "{head}");
        assert!(head.contains(" 200 "), "{head}\n{}", self.log_text());
        body.to_string()
    }

    /// `redis_script_values{key="..."}` samples of one scrape.
    fn script_values(&self) -> (String, BTreeMap<String, f64>) {
        let body = self.scrape();
        let mut values = BTreeMap::new();
        for line in body.lines() {
            let Some(rest) = line.strip_prefix("redis_script_values{") else {
                continue;
            };
            let (labels, value) = rest.rsplit_once("} ").expect("sample line");
            let key = labels
                .split(',')
                .find_map(|l| l.strip_prefix("key=\""))
                .and_then(|k| k.strip_suffix('"'))
                .unwrap_or_else(|| panic!("no key label in {line}"));
            values.insert(key.to_string(), value.trim().parse::<f64>().unwrap());
        }
        (body, values)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn redis_exporter_exports_the_consistency_fields() {
    let bin = match exporter_binary() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIPPED redis_exporter_exports_the_consistency_fields: {why}");
            return;
        }
    };
    let e = env();
    let mut c = e.redis.conn();
    let exporter = Exporter::start(&bin, e.redis.port());
    let started = Instant::now();

    // Before any check.
    let (body, v) = exporter.script_values();
    assert!(
        body.contains("# TYPE redis_script_values gauge"),
        "{body}\n{}",
        exporter.log_text()
    );
    let keys: Vec<&str> = v.keys().map(String::as_str).collect();
    let mut want = FIELDS.to_vec();
    want.sort();
    assert_eq!(keys, want, "every INFO consistency field, nothing else");
    assert_eq!(v["consistency_rules_loaded"], 1.0);
    assert_eq!(v["consistency_checks_total"], 0.0);
    assert_eq!(v["consistency_last_check_age_sec"], -1.0);
    assert_eq!(metric(&body, "redis_up"), Some(1.0));

    // One CHECK: 10 keys, user 4 drifted.
    common::call_ok(&mut c, &["CONSISTENCY.CHECK"]);
    let (body, v) = exporter.script_values();
    assert_eq!(v["consistency_checks_total"], 1.0, "{body}");
    assert_eq!(v["consistency_keys_checked_total"], 10.0);
    assert_eq!(v["consistency_drifted_total"], 1.0);
    assert_eq!(v["consistency_drifted_drift"], 1.0);
    assert_eq!(v["consistency_drifted_orphan"], 0.0);
    assert_eq!(v["consistency_last_check_drifted"], 1.0);
    assert_eq!(v["consistency_fixes_total"], 0.0);
    assert!(v["consistency_last_check_age_sec"] >= 0.0);
    assert!(
        v["consistency_last_check_age_sec"] <= started.elapsed().as_secs_f64() + 1.0,
        "{v:?}"
    );

    // FIX ALL (a second check, one key repaired) and a PURGE of one key.
    common::call_ok(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    common::call_ok(&mut c, &["CONSISTENCY.PURGE", "MATCH", "user:1:*"]);
    let (body, v) = exporter.script_values();
    assert_eq!(v["consistency_checks_total"], 2.0, "{body}");
    assert_eq!(v["consistency_keys_checked_total"], 20.0);
    assert_eq!(v["consistency_drifted_total"], 2.0);
    assert_eq!(v["consistency_fixes_total"], 1.0);
    assert_eq!(v["consistency_purged_keys_total"], 1.0);
    assert_eq!(v["consistency_pg_errors_total"], 0.0);

    // The exported values are INFO's.
    let info = info_consistency(&e.redis);
    for f in FIELDS {
        if f != "consistency_last_check_age_sec" {
            assert_eq!(
                info[f].parse::<f64>().unwrap(),
                v[f],
                "{f}: INFO {} vs exported {}",
                info[f],
                v[f]
            );
        }
    }
    drop(exporter);
}
