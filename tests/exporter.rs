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
//! Run: `cargo test --release --features test-hooks --test integration exporter::`

use crate::common;

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
const FIELDS: [&str; 24] = [
    "consistency_rules_loaded",
    "consistency_checks_total",
    "consistency_keys_checked_total",
    "consistency_drifted_total",
    "consistency_drifted_drift",
    "consistency_drifted_invalid",
    "consistency_drifted_orphan",
    "consistency_drifted_missing",
    "consistency_drifted_no_ttl",
    "consistency_drifted_bad_ttl",
    "consistency_drifted_stale",
    "consistency_fixes_total",
    "consistency_purged_keys_total",
    "consistency_pg_errors_total",
    "consistency_pg_query_ms_last",
    "consistency_pg_query_ms_max",
    "consistency_lane_truth_queued",
    "consistency_lane_keyspace_queued",
    "consistency_last_check_age_sec",
    "consistency_last_check_drifted",
    "consistency_pg_up",
    "consistency_runs_failed_total",
    "consistency_check_memory_peak_bytes",
    "consistency_watch_queries_total",
];

/// The keys of a rule's INFO dict field, in order; the script exports each as
/// `consistency_rule_<key>:<rule>`.
const RULE_FIELDS: [&str; 6] = [
    "checked",
    "drifted",
    "last_run_age_sec",
    "last_duration_ms",
    "runs_failed",
    "dirty",
];

/// What the script returns with the weekly rule loaded, in order.
fn exported_names() -> Vec<String> {
    FIELDS
        .iter()
        .map(|f| f.to_string())
        .chain(
            RULE_FIELDS
                .iter()
                .map(|k| format!("consistency_rule_{k}:cost_weekly")),
        )
        .collect()
}

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
    assert_eq!(names, exported_names(), "INFO's fields, in INFO's order");
    let info = info_consistency(&e.redis);
    let rule_dict = &info["consistency_rule_cost_weekly"];
    for (k, v) in &pairs {
        v.parse::<f64>()
            .unwrap_or_else(|_| panic!("{k}={v} must parse as a number"));
        if k.ends_with("age_sec") {
            continue;
        }
        match k.strip_suffix(":cost_weekly") {
            Some(rule_key) => {
                let pair = format!("{}={v}", rule_key.trim_start_matches("consistency_rule_"));
                assert!(
                    rule_dict.split(',').any(|p| p == pair),
                    "{pair} in {rule_dict}"
                );
            }
            None => assert_eq!(Some(v), info.get(k), "{k}"),
        }
    }
    let got: BTreeMap<_, _> = pairs.into_iter().collect();
    assert_eq!(got["consistency_rule_checked:cost_weekly"], "10");
    assert_eq!(got["consistency_rule_drifted:cost_weekly"], "1");
    assert_eq!(got["consistency_pg_up"], "1");
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

#[test]
fn a_watched_rule_exports_its_counters_and_nines() {
    let e = env();
    let mut c = e.redis.conn();
    let mut watched = common::weekly_rule_json();
    watched["watch"] = serde_json::json!(true);
    let path = common::write_rules(&[watched]);
    common::call_ok(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "consistency.rules-file",
            path.to_str().unwrap(),
        ],
    );
    let got: BTreeMap<_, _> = eval_script(&mut c).into_iter().collect();
    assert_eq!(got["consistency_rule_watch_samples:cost_weekly"], "0");
    // `inf` as Prometheus spells it, so the nines alert compares it.
    assert_eq!(got["consistency_rule_nines:cost_weekly"], "+Inf");

    common::call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.watch-grace-ms", "50"],
    );
    common::call_ok(&mut c, &["CONSISTENCY.DEBUG", "WATCH-LOOKS", "100", "150"]);
    redis::cmd("SET")
        .arg("user:6:cost_weekly")
        .arg("100000")
        .query::<()>(&mut c)
        .unwrap();
    let mut got = BTreeMap::new();
    let settled = common::wait_until(Duration::from_secs(10), || {
        got = eval_script(&mut c).into_iter().collect();
        got["consistency_rule_watch_inconsistent:cost_weekly"] == "1"
    });
    assert!(settled, "{got:?}");
    assert_eq!(got["consistency_rule_watch_samples:cost_weekly"], "1");
    assert_eq!(got["consistency_rule_nines:cost_weekly"], "0.00");
    assert!(
        got["consistency_watch_queries_total"]
            .parse::<i64>()
            .unwrap()
            >= 3
    );
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
    let mut want = exported_names();
    want.sort();
    assert_eq!(keys, want, "every INFO consistency field, nothing else");
    assert_eq!(v["consistency_rule_last_run_age_sec:cost_weekly"], -1.0);
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
    assert_eq!(v["consistency_rule_drifted:cost_weekly"], 1.0);
    assert_eq!(v["consistency_rule_checked:cost_weekly"], 10.0);
    assert_eq!(v["consistency_pg_up"], 1.0);
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

// ---------------------------------------------------------------------------
// The alert examples of docs/OPERATIONS.md, in a real Prometheus
// ---------------------------------------------------------------------------

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// The fenced yaml block of docs/OPERATIONS.md that starts with `first_line`.
fn docs_yaml(first_line: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md");
    let text = std::fs::read_to_string(&path).unwrap();
    text.split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split_once("```").map(|(block, _)| block))
        .find(|b| b.starts_with(first_line))
        .unwrap_or_else(|| panic!("no yaml block starting {first_line:?} in docs/OPERATIONS.md"))
        .to_string()
}

/// The alert names of the documented rules block, in order.
fn documented_alerts(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|rest| rest.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// Prometheus on a free port, with `config` and `rules`; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Prometheus {
    fn start(config: &str, rules: &str) -> Prometheus {
        let dir = common::temp_dir("prometheus");
        std::fs::write(dir.join("alerts.yml"), rules).unwrap();
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = common::free_port();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("run prometheus");
        let p = Prometheus { child, port, log };
        let up = common::wait_until(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "prometheus did not listen:\n{}", p.log_text());
        p
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET /api/v1/alerts: (alert name, labels, state) of each active alert.
    fn alerts(&self) -> Vec<(String, BTreeMap<String, String>, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect prometheus");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /api/v1/alerts HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read alerts");
        let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
        // Until its first rule evaluation Prometheus answers 503 "not ready".
        if !head.contains(" 200 ") {
            return Vec::new();
        }
        let doc: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("alerts JSON: {e}: {body}"));
        doc["data"]["alerts"]
            .as_array()
            .expect("data.alerts")
            .iter()
            .map(|a| {
                let labels: BTreeMap<String, String> = a["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                (
                    labels["alertname"].clone(),
                    labels,
                    a["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each documented alert fires (is pending or firing: `for:` only delays it) on
/// the situation it names, with the documented relabelling giving the `rule`
/// label, and stays quiet elsewhere. Three Redis servers, each behind its own
/// exporter: `drifting` (a check found drift; then its runs are aged past the
/// stale bound), `pg_down` (a scheduled rule whose PostgreSQL refuses
/// connections), `bare` (no module).
#[test]
fn the_documented_alerts_fire_in_prometheus() {
    let bin = match exporter_binary() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIPPED the_documented_alerts_fire_in_prometheus: {why}");
            return;
        }
    };
    if !Path::new(PROMETHEUS).is_file() {
        eprintln!(
            "SKIPPED the_documented_alerts_fire_in_prometheus: no {PROMETHEUS} \
             (apt-get install prometheus; scripts/test.sh does)"
        );
        return;
    }
    let drifting = env();
    // Its rule watched, and one write that never reaches PostgreSQL: nines
    // fall to 0 once the (shortened) last look still finds it inconsistent.
    let mut watched = common::weekly_rule_json();
    watched["watch"] = serde_json::json!(true);
    let watched_rules = common::write_rules(&[watched]);
    {
        let mut c = drifting.redis.conn();
        common::call_ok(
            &mut c,
            &["CONFIG", "SET", "consistency.watch-grace-ms", "100"],
        );
        common::call_ok(&mut c, &["CONSISTENCY.DEBUG", "WATCH-LOOKS", "200", "300"]);
        let path = watched_rules.to_str().unwrap();
        common::call_ok(&mut c, &["CONFIG", "SET", "consistency.rules-file", path]);
        redis::cmd("SET")
            .arg("user:5:cost_weekly")
            .arg("100000")
            .query::<()>(&mut c)
            .unwrap();
        let inconsistent = common::wait_until(Duration::from_secs(10), || {
            info_consistency(&drifting.redis)["consistency_rule_cost_weekly"].contains("nines=0.00")
        });
        assert!(inconsistent, "{:?}", info_consistency(&drifting.redis));
    }
    common::call_ok(&mut drifting.redis.conn(), &["CONSISTENCY.CHECK"]);
    common::call_ok(
        &mut drifting.redis.conn(),
        &["CONSISTENCY.DEBUG", "AGE-RUNS", "10000"],
    );

    let mut scheduled = common::weekly_rule_json();
    scheduled["interval_sec"] = serde_json::json!(1);
    let rules = common::write_rules(&[scheduled]);
    let closed = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        common::free_port()
    );
    let pg_down = TestRedis::start_with(
        &[
            ("pg-url", &closed),
            ("rules-file", rules.to_str().unwrap()),
            ("pg-connect-timeout-ms", "300"),
        ],
        &[],
    );
    let bare = TestRedis::start_without_module(&[]);

    let exporters: Vec<(&str, Exporter)> = [
        ("drifting", &drifting.redis),
        ("pg_down", &pg_down),
        ("bare", &bare),
    ]
    .into_iter()
    .map(|(name, r)| (name, Exporter::start(&bin, r.port())))
    .collect();
    let instance_of = |name: &str| {
        let port = exporters.iter().find(|(n, _)| *n == name).unwrap().1.port;
        format!("127.0.0.1:{port}")
    };
    let targets: Vec<String> = exporters
        .iter()
        .map(|(_, e)| format!("'127.0.0.1:{}'", e.port))
        .collect();
    let scrape = docs_yaml("scrape_configs:")
        .replace("['127.0.0.1:9121']", &format!("[{}]", targets.join(", ")));
    assert!(
        scrape.contains(&targets[0]),
        "the documented targets line changed: {scrape}"
    );
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\n{scrape}"
    );
    let rules_yaml = docs_yaml("groups:");
    let documented = documented_alerts(&rules_yaml);
    assert_eq!(
        documented,
        [
            "RedisCacheDrift",
            "RedisConsistencyRuleStale",
            "RedisConsistencyRunsFailing",
            "RedisConsistencyPostgresDown",
            "RedisConsistencyModuleMissing",
            "RedisConsistencyWatchNines"
        ]
    );
    let prometheus = Prometheus::start(&config, &rules_yaml);

    // Where each alert must show, by the server behind the exporter.
    let want: Vec<(&str, &str)> = vec![
        ("RedisCacheDrift", "drifting"),
        ("RedisConsistencyRuleStale", "drifting"),
        ("RedisConsistencyRunsFailing", "pg_down"),
        ("RedisConsistencyPostgresDown", "pg_down"),
        ("RedisConsistencyModuleMissing", "bare"),
        ("RedisConsistencyWatchNines", "drifting"),
    ];
    let mut active = Vec::new();
    let all_seen = common::wait_until(Duration::from_secs(60), || {
        active = prometheus.alerts();
        want.iter().all(|(alert, server)| {
            active
                .iter()
                .any(|(name, labels, _)| name == alert && labels["instance"] == instance_of(server))
        })
    });
    assert!(
        all_seen,
        "not every documented alert became active: {active:?}\n{}",
        prometheus.log_text()
    );
    for (name, labels, state) in &active {
        assert!(
            ["pending", "firing"].contains(&state.as_str()),
            "{name}: {state}"
        );
        let server = want
            .iter()
            .find(|(alert, s)| alert == name && labels["instance"] == instance_of(s))
            .map(|(_, s)| *s);
        assert!(server.is_some(), "a false alarm: {name} {labels:?}");
        let per_rule = [
            ("RedisCacheDrift", "consistency_rule_drifted"),
            (
                "RedisConsistencyRuleStale",
                "consistency_rule_last_run_age_sec",
            ),
            ("RedisConsistencyWatchNines", "consistency_rule_nines"),
        ];
        if let Some((_, key)) = per_rule.iter().find(|(alert, _)| alert == name) {
            // The relabelling made the rule a label of its own.
            assert_eq!(
                labels.get("rule").map(String::as_str),
                Some("cost_weekly"),
                "{labels:?}"
            );
            assert_eq!(labels["key"], *key);
        }
    }
    // The failing scheduled runs are counted per rule too, and retried.
    let info = pg_down.info("consistency");
    assert!(
        info["consistency_rule_cost_weekly"].contains("runs_failed="),
        "{info:?}"
    );
    let failed: i64 = info["consistency_runs_failed_total"].parse().unwrap();
    assert!(failed >= 2, "{info:?}");
    assert_eq!(info["consistency_pg_up"], "0");
    drop(prometheus);
    drop(exporters);
}
