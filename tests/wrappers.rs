//! scripts/check-redis-consistency.sh and scripts/fix-user-cache.sh, the seed 000
//! drop-in wrappers, run as an operator would (by path, through redis-cli) against
//! the real module, redis-server and PostgreSQL: their flags, their output and
//! their exit status (0 consistent or fixed, 1 drift remains, 2 error); how they
//! run redis-cli (`REDIS_CLI` with arguments, never evaluated; `--user` as the
//! documented ACL users (docs/REFERENCE.md); `--tls` and certificates against a real TLS port); and
//! fix-user-cache.sh's warning for an id nobody knows.
//!
//! Run: `cargo test --release --features test-hooks --test integration wrappers::`

use crate::common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{ledger, TestPg, TestRedis};
use redis::Connection;
use serde_json::Value as J;

const USERS: usize = 10;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// What a run printed and how it ended.
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.out, self.err
        )
    }
}

/// Run scripts/<name> with `args` and extra environment; REDISCLI_AUTH and the
/// REDIS_* defaults of the calling environment are removed.
fn run_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(script(name));
    cmd.args(args)
        .env_remove("REDISCLI_AUTH")
        .env_remove("REDIS_HOST")
        .env_remove("REDIS_PORT")
        .env_remove("REDIS_DB")
        .env_remove("REDIS_CLI")
        .env_remove("CONSISTENCY_JSON_TOOL")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("run {name}: {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(name: &str, args: &[&str]) -> Run {
    run_env(name, args, &[])
}

/// Redis is declared first, so it stops before the database is dropped.
struct Env {
    redis: TestRedis,
    pg: TestPg,
    port: String,
}

/// Users 1..=10 with 3 ledger rows each, the seed 000 weekly, monthly and 5-hour
/// rules, and every cache filled with the truth.
fn env() -> Env {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, USERS, 3, 17);
    let rules = common::write_rules(&[
        common::weekly_rule_json(),
        common::monthly_rule_json(),
        common::window_rule_json(),
    ]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    ledger::fill_cache_monthly(&mut c, &pg);
    ledger::fill_cache_window(&mut c, &pg);
    let port = redis.port().to_string();
    Env { redis, pg, port }
}

impl Env {
    fn weekly(&self, id: i64) -> String {
        ledger::truth_weekly(&self.pg)
            .into_iter()
            .find(|(i, _)| *i == id)
            .unwrap()
            .1
    }

    /// Cache user `id`'s weekly spend `delta` above the truth; returns the value.
    fn drift_weekly(&self, c: &mut Connection, id: i64, delta: f64) -> String {
        let v = format!("{}", self.weekly(id).parse::<f64>().unwrap() + delta);
        redis::cmd("SET")
            .arg(format!("user:{id}:cost_weekly"))
            .arg(&v)
            .query::<()>(c)
            .unwrap();
        v
    }

    /// `-h 127.0.0.1 -p <port>` followed by `args`.
    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["-h", "127.0.0.1", "-p", self.port.as_str()];
        all.extend_from_slice(args);
        all
    }

    fn check(&self, args: &[&str]) -> Run {
        run("check-redis-consistency.sh", &self.args(args))
    }

    fn fix(&self, args: &[&str]) -> Run {
        run("fix-user-cache.sh", &self.args(args))
    }
}

fn digest(c: &mut Connection) -> String {
    redis::cmd("DEBUG").arg("DIGEST").query(c).unwrap()
}

fn keys(c: &mut Connection) -> BTreeSet<String> {
    redis::cmd("KEYS").arg("*").query(c).unwrap()
}

fn drifted(c: &mut Connection) -> i64 {
    let v = common::call_ok(c, &["CONSISTENCY.CHECK", "FORMAT", "json"]);
    let doc: J = serde_json::from_str(common::as_str(&v)).unwrap();
    doc["drifted"].as_i64().unwrap()
}

/// `text` without its timestamps (`YYYY-MM-DD HH:MM:SS` becomes `TS`) and without
/// the lines that report timings.
fn comparable(text: &str) -> Vec<String> {
    let shape = b"0000-00-00 00:00:00";
    let is_ts = |w: &[u8]| {
        w.iter().zip(shape).all(|(c, s)| {
            if *s == b'0' {
                c.is_ascii_digit()
            } else {
                c == s
            }
        })
    };
    text.lines()
        .filter(|l| !l.ends_with(" ms"))
        .map(|l| {
            let b = l.as_bytes();
            let mut out = String::new();
            let mut i = 0;
            while i < b.len() {
                if b.len() - i >= shape.len() && is_ts(&b[i..i + shape.len()]) {
                    out.push_str("TS");
                    i += shape.len();
                } else {
                    let ch = l[i..].chars().next().unwrap();
                    out.push(ch);
                    i += ch.len_utf8();
                }
            }
            out
        })
        .collect()
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
}

// ---------------------------------------------------------------------------
// The scripts themselves
// ---------------------------------------------------------------------------

#[test]
fn scripts_are_executable_and_parse() {
    for name in ["check-redis-consistency.sh", "fix-user-cache.sh"] {
        let p = script(name);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{name} is not executable: {mode:o}");
        let st = Command::new("bash").arg("-n").arg(&p).status().unwrap();
        assert!(st.success(), "bash -n {name}");
        let r = run(name, &["--help"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.out.contains("Usage:"), "{r:?}");
        for flag in [
            "--dry-run",
            "--verbose",
            "--help",
            "-h, --host",
            "-p, --port",
        ] {
            assert!(r.out.contains(flag), "{name} --help lacks {flag}: {r:?}");
        }
        assert!(r.out.contains("REDISCLI_AUTH"), "{r:?}");
        for flag in [
            "--user NAME",
            "--tls",
            "--cacert FILE",
            "--cert FILE",
            "--key FILE",
            "REDIS_CLI",
        ] {
            assert!(r.out.contains(flag), "{name} --help lacks {flag}: {r:?}");
        }
    }
    let r = run("check-redis-consistency.sh", &["--help"]);
    for flag in ["--threshold N", "--user-id ID", "--auto-fix", "--summary"] {
        assert!(r.out.contains(flag), "{r:?}");
    }
}

#[test]
fn bad_flags_and_unreachable_redis_exit_2() {
    for name in ["check-redis-consistency.sh", "fix-user-cache.sh"] {
        let r = run(name, &["--bogus", "4"]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.err.contains("unknown option '--bogus'"), "{r:?}");
        let r = run(name, &["4", "--port"]);
        assert_eq!(r.code, 2, "{r:?}");
        let r = run(name, &["4", "--port", "notaport"]);
        assert_eq!(r.code, 2, "{r:?}");
    }
    let r = run("check-redis-consistency.sh", &["4"]);
    assert_eq!(r.code, 2, "a positional argument is not a flag: {r:?}");
    let r = run("check-redis-consistency.sh", &["--threshold", "abc"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("--threshold"), "{r:?}");
    let r = run("fix-user-cache.sh", &["--dry-run"]);
    assert_eq!(r.code, 2, "no id: {r:?}");
    for (name, id) in [
        ("check-redis-consistency.sh", "--summary"),
        ("fix-user-cache.sh", "4"),
    ] {
        // Without a password redis-cli would skip AUTH and act as the default user.
        let r = run(name, &[id, "--user", "ops-ro"]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.err.contains("--user needs a password"), "{r:?}");
        let r = run(name, &[id, "--cacert", "/etc/ssl/ca.pem"]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.err.contains("need --tls"), "{r:?}");
    }

    // Nothing listens on this port.
    let closed = common::free_port().to_string();
    for (name, args) in [
        ("check-redis-consistency.sh", vec!["-p", &closed]),
        (
            "check-redis-consistency.sh",
            vec!["-p", &closed, "--summary"],
        ),
        ("fix-user-cache.sh", vec!["4", "-p", &closed]),
    ] {
        let r = run(name, &args);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.err.contains("cannot reach Redis at 127.0.0.1:"), "{r:?}");
    }
}

// ---------------------------------------------------------------------------
// check-redis-consistency.sh
// ---------------------------------------------------------------------------

#[test]
fn check_reports_consistent_and_drifted_caches() {
    let e = env();
    let mut c = e.redis.conn();

    let r = e.check(&[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("Results summary"), "{r:?}");
    assert!(r.out.contains("Keys checked: 30\n"), "{r:?}");
    assert!(r.out.contains("Ids checked: 10\n"), "{r:?}");
    assert!(r.out.contains("Inconsistent entries: 0 "), "{r:?}");
    assert!(r.out.contains("all checked caches are consistent"), "{r:?}");

    let cached = e.drift_weekly(&mut c, 4, 45.1);
    let before = digest(&mut c);
    let r = e.check(&[]);
    assert_eq!(r.code, 1, "{r:?}");
    let warn = line_with(&r.out, "cache inconsistent!");
    assert!(warn.starts_with("[WARNING] "), "{warn}");
    assert!(
        warn.contains("id 4") && warn.contains("user:4:cost_weekly") && warn.contains("drift"),
        "{warn}"
    );
    assert!(
        line_with(&r.out, "- database:").ends_with(&e.weekly(4)),
        "{r:?}"
    );
    assert!(
        line_with(&r.out, "- redis cache:").ends_with(&cached),
        "{r:?}"
    );
    assert!(line_with(&r.out, "- difference:").contains("45.1"), "{r:?}");
    assert!(
        r.out.contains("Inconsistent entries: 1 (drift 1, "),
        "{r:?}"
    );
    assert!(r.out.contains("Inconsistent ids: 1\n"), "{r:?}");
    assert!(r.out.contains("Inconsistency rate: 3.33%"), "{r:?}");
    assert!(r.out.contains("(key user:4:cost_weekly)"), "{r:?}");
    assert!(r.out.contains("fix-user-cache.sh 4\n"), "{r:?}");
    assert_eq!(r.out.matches("cache inconsistent!").count(), 1);
    assert_eq!(digest(&mut c), before, "a check changes nothing");

    // --summary: the summary block only, with the counts (the cron line).
    let s = e.check(&["--summary"]);
    assert_eq!(s.code, 1, "{s:?}");
    assert!(s.out.lines().count() < r.out.lines().count(), "{s:?}");
    assert!(!s.out.contains("cache inconsistent!"), "{s:?}");
    assert!(!s.out.contains("Threshold:"), "{s:?}");
    for needle in [
        "Results summary",
        "Keys checked: 30\n",
        "Inconsistent entries: 1 ",
        "Inconsistent ids: 1\n",
    ] {
        assert!(s.out.contains(needle), "{needle}: {s:?}");
    }

    // --verbose: the command sent, timings and per-rule counts.
    let v = e.check(&["--verbose"]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.out.contains("[DEBUG]"), "{v:?}");
    assert!(v.out.contains("CONSISTENCY.CHECK FORMAT json"), "{v:?}");
    assert!(
        line_with(&v.out, "rule cost_weekly").contains("drifted 1"),
        "{v:?}"
    );
    assert!(v.out.lines().count() > r.out.lines().count());

    // --dry-run alone only warns that a check changes nothing anyway.
    let d = e.check(&["--dry-run"]);
    assert_eq!(d.code, 1, "{d:?}");
    assert!(d.out.contains("--dry-run has no effect without --auto-fix"));

    // An ERR from the module is an error.
    let x = e.check(&["--rule", "nope"]);
    assert_eq!(x.code, 2, "{x:?}");
    assert!(x.err.contains("unknown rule 'nope'"), "{x:?}");
}

#[test]
fn check_threshold_and_user_id_select_what_is_reported() {
    let e = env();
    let mut c = e.redis.conn();
    e.drift_weekly(&mut c, 4, 45.1);
    e.drift_weekly(&mut c, 6, 3.0); // under the rules' 5.0

    let r = e.check(&[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.out.contains("user:4:cost_weekly"));
    assert!(!r.out.contains("user:6:cost_weekly"), "{r:?}");

    let r = e.check(&["--threshold", "1"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.out.contains("Threshold: 1\n"), "{r:?}");
    assert!(r.out.contains("Inconsistent entries: 2 "), "{r:?}");
    assert!(r.out.contains("user:4:cost_weekly") && r.out.contains("user:6:cost_weekly"));

    let r = e.check(&["--threshold", "50"]);
    assert_eq!(r.code, 0, "45.1 is under 50: {r:?}");
    assert!(r.out.contains("Inconsistent entries: 0 "), "{r:?}");

    // --user-id: one id's three keys, nothing else.
    let r = e.check(&["--user-id", "5"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("Scope: id 5"), "{r:?}");
    assert!(r.out.contains("Keys checked: 3\n"), "{r:?}");
    assert!(r.out.contains("Ids checked: 1\n"), "{r:?}");

    let r = e.check(&["--user-id", "4"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.out.contains("user:4:cost_weekly"));
    assert!(r.out.contains("Keys checked: 3\n"), "{r:?}");

    let r = e.check(&["--user-id", "6", "--threshold", "1"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.out.contains("user:6:cost_weekly") && !r.out.contains("user:4:"));
}

#[test]
fn check_auto_fix_repairs_and_dry_run_changes_nothing() {
    let e = env();
    let mut c = e.redis.conn();
    e.drift_weekly(&mut c, 4, 45.1);
    let all = keys(&mut c);

    let before = digest(&mut c);
    let r = e.check(&["--auto-fix", "--dry-run"]);
    assert_eq!(r.code, 1, "a dry run leaves the drift: {r:?}");
    assert!(r.out.contains("Auto-fix: enabled (dry run)"), "{r:?}");
    assert!(
        line_with(&r.out, "- action:").ends_with("would_delete"),
        "{r:?}"
    );
    assert!(
        r.out.contains("Auto-fix: dry run, nothing changed"),
        "{r:?}"
    );
    assert_eq!(digest(&mut c), before, "--dry-run changed the data");

    let r = e.check(&["--auto-fix"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(line_with(&r.out, "- action:").ends_with("deleted"), "{r:?}");
    assert!(
        r.out.contains("Auto-fix: 1 keys repaired, 0 left alone"),
        "{r:?}"
    );
    assert!(
        r.out.contains("a new check finds no inconsistency"),
        "{r:?}"
    );
    // Exactly the drifted key went; the check is clean now.
    let gone: Vec<String> = all.difference(&keys(&mut c)).cloned().collect();
    assert_eq!(gone, ["user:4:cost_weekly"]);
    assert_eq!(drifted(&mut c), 0);
    assert_eq!(e.check(&["--summary"]).code, 0);

    // With --summary (the cron form) too.
    e.drift_weekly(&mut c, 2, 9.0);
    let r = e.check(&["--auto-fix", "--summary"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("Auto-fix: 1 keys repaired"), "{r:?}");
    assert_eq!(drifted(&mut c), 0);
}

#[test]
fn check_auto_fix_with_user_id_clears_only_that_id() {
    let e = env();
    let mut c = e.redis.conn();
    e.drift_weekly(&mut c, 4, 45.1);
    e.drift_weekly(&mut c, 6, 30.0);
    let all = keys(&mut c);

    let r = e.check(&["--user-id", "4", "--auto-fix"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("clearing the keys of id 4"), "{r:?}");
    let gone: BTreeSet<String> = all.difference(&keys(&mut c)).cloned().collect();
    let want: BTreeSet<String> = [
        "user:4:cost_weekly",
        "user:4:cost_monthly",
        "user:4:cost_5h_rolling",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(gone, want);

    // User 6 is still drifted, and the next full check says so.
    let r = e.check(&["--summary"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.out.contains("(key user:6:cost_weekly)"), "{r:?}");

    // A clean id with --auto-fix: nothing to do, nothing changes.
    let before = digest(&mut c);
    let r = e.check(&["--user-id", "5", "--auto-fix"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(digest(&mut c), before);
}

#[test]
fn check_reads_json_with_jq_as_well() {
    if Command::new("jq").arg("--version").output().is_err() {
        eprintln!("SKIPPED check_reads_json_with_jq_as_well: jq is not installed");
        return;
    }
    let e = env();
    let mut c = e.redis.conn();
    let cached = e.drift_weekly(&mut c, 4, 45.1);
    let jq = [("CONSISTENCY_JSON_TOOL", "jq")];
    let py = e.check(&[]);
    let r = run_env("check-redis-consistency.sh", &e.args(&[]), &jq);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(line_with(&r.out, "- redis cache:").ends_with(&cached));
    // The same report as with python3, timestamps and timings aside.
    assert_eq!(comparable(&r.out), comparable(&py.out));
    let f = run_env("fix-user-cache.sh", &e.args(&["4"]), &jq);
    assert_eq!(f.code, 0, "{f:?}");
    assert_eq!(drifted(&mut c), 0);
}

// ---------------------------------------------------------------------------
// fix-user-cache.sh
// ---------------------------------------------------------------------------

#[test]
fn fix_user_cache_clears_exactly_that_users_keys() {
    let e = env();
    let mut c = e.redis.conn();
    let cached = e.drift_weekly(&mut c, 4, 45.1);
    let all = keys(&mut c);

    // --dry-run: shows the keys, changes nothing.
    let before = digest(&mut c);
    let r = e.fix(&["4", "--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("id: 4 (dry run)"), "{r:?}");
    let row = line_with(&r.out, "user:4:cost_weekly");
    assert!(row.contains(&cached) && row.contains(&e.weekly(4)), "{row}");
    assert!(row.trim_end().ends_with("would_delete"), "{row}");
    assert!(r.out.contains("3 keys would be cleared"), "{r:?}");
    assert_eq!(digest(&mut c), before, "--dry-run changed the data");

    // The real thing: user 4's three keys, and nothing else.
    let r = e.fix(&["4"]);
    assert_eq!(r.code, 0, "{r:?}");
    for k in [
        "user:4:cost_weekly",
        "user:4:cost_monthly",
        "user:4:cost_5h_rolling",
    ] {
        assert!(
            line_with(&r.out, k).trim_end().ends_with("deleted"),
            "{k}: {r:?}"
        );
    }
    assert!(r.out.contains("cache cleared (3 keys"), "{r:?}");
    let gone: BTreeSet<String> = all.difference(&keys(&mut c)).cloned().collect();
    let want: BTreeSet<String> = [
        "user:4:cost_weekly",
        "user:4:cost_monthly",
        "user:4:cost_5h_rolling",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(gone, want);
    assert_eq!(keys(&mut c).len(), all.len() - 3);
    assert_eq!(drifted(&mut c), 0);

    // Again: nothing cached any more, still a success.
    let r = e.fix(&["4", "--verbose"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("[DEBUG]") && r.out.contains("CONSISTENCY.FIX ID 4"));
    assert!(
        line_with(&r.out, "user:4:cost_weekly")
            .trim_end()
            .ends_with("absent"),
        "{r:?}"
    );

    // An ERR reply is an error.
    let r = e.fix(&["4", "--rule", "nope"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("unknown rule 'nope'"), "{r:?}");
}

#[test]
fn fix_user_cache_warns_of_an_id_nobody_knows() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, USERS, 3, 17);
    ledger::add_endpoint(&pg, "abc", true);
    let rules = common::write_rules(&[common::weekly_rule_json(), common::presence_rule_json()]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    let port = redis.port().to_string();
    let fix = |ids: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["-h", "127.0.0.1", "-p", port.as_str()];
        args.extend_from_slice(ids);
        run_env("fix-user-cache.sh", &args, env)
    };
    let warned = |r: &Run, id: &str| {
        r.out.contains(&format!(
            "id {id}: no key cached and no row in the database: is the id right?"
        ))
    };
    let before = digest(&mut c);

    // No key and no truth row under any rule: a warning and status 2, in a dry
    // run too, and nothing changes.
    for args in [vec!["99999"], vec!["99999", "--dry-run"]] {
        let r = fix(&args, &[]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(warned(&r, "99999"), "{r:?}");
        assert!(r.out.contains("Unknown id: 99999."), "{r:?}");
        assert!(!r.out.contains("Fixed"), "{r:?}");
    }
    assert_eq!(digest(&mut c), before);

    // Known ids with nothing cached are no typo: an endpoint the presence rule's
    // truth has (its state key is missing; FIX's reply cannot tell, CHECK can),
    // and a user whose cache is empty.
    let _: () = redis::cmd("DEL")
        .arg("user:5:cost_weekly")
        .query(&mut c)
        .unwrap();
    for tool in ["python3", "jq"] {
        let env = [("CONSISTENCY_JSON_TOOL", tool)];
        let r = fix(&["abc", "5"], &env);
        assert_eq!(r.code, 0, "{tool}: {r:?}");
        assert!(!r.out.contains("is the id right?"), "{tool}: {r:?}");
        let r = fix(&["99999", "abc"], &env);
        assert_eq!(r.code, 2, "{tool}: {r:?}");
        assert!(warned(&r, "99999") && !warned(&r, "abc"), "{tool}: {r:?}");
    }

    // A known id is still cleared next to an unknown one.
    let r = fix(&["4", "424242"], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(warned(&r, "424242") && !warned(&r, "4"), "{r:?}");
    assert!(
        line_with(&r.out, "user:4:cost_weekly")
            .trim_end()
            .ends_with("deleted"),
        "{r:?}"
    );
    let n: i64 = redis::cmd("EXISTS")
        .arg("user:4:cost_weekly")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 0);
}

// ---------------------------------------------------------------------------
// Passwords
// ---------------------------------------------------------------------------

#[test]
fn password_comes_from_rediscli_auth_or_a_flag_and_never_reaches_argv() {
    let e = env();
    let mut c = e.redis.conn();
    e.drift_weekly(&mut c, 4, 45.1);
    // The fixture's readiness PING has no password, so protect Redis once it runs.
    common::call_ok(&mut c, &["CONFIG", "SET", "requirepass", "s3cret"]);
    let mut admin = e.redis.conn();
    let _: () = redis::cmd("AUTH").arg("s3cret").query(&mut admin).unwrap();

    let r = e.check(&[]);
    assert_eq!(r.code, 2, "no password: {r:?}");
    assert!(r.err.contains("cannot reach Redis"), "{r:?}");
    let auth = [("REDISCLI_AUTH", "s3cret")];
    let r = run_env("check-redis-consistency.sh", &e.args(&[]), &auth);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.out.contains("user:4:cost_weekly"), "{r:?}");
    let r = run_env(
        "check-redis-consistency.sh",
        &e.args(&[]),
        &[("REDISCLI_AUTH", "wrong")],
    );
    assert_eq!(r.code, 2, "{r:?}");

    // -a: handed to redis-cli through REDISCLI_AUTH, not its arguments. A
    // recording redis-cli shows what the real one would have been given.
    let dir = common::temp_dir("fake-cli");
    let record = dir.join("calls");
    let fake = dir.join("redis-cli");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf 'argv=%s auth=%s\\n' \"$*\" \"${{REDISCLI_AUTH:-}}\" >> '{}'\nexec redis-cli \"$@\"\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cli = [("REDIS_CLI", fake.to_str().unwrap())];
    let r = run_env(
        "check-redis-consistency.sh",
        &e.args(&["-a", "s3cret", "--auto-fix"]),
        &cli,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = run_env(
        "fix-user-cache.sh",
        &e.args(&["5", "--password", "s3cret"]),
        &cli,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let calls = std::fs::read_to_string(&record).unwrap();
    assert!(calls.lines().count() >= 5, "{calls}");
    for line in calls.lines() {
        let (argv, auth) = line.split_once(" auth=").unwrap();
        assert!(
            !argv.contains("s3cret"),
            "password on the command line: {line}"
        );
        assert!(!argv.contains(" -a "), "{line}");
        assert_eq!(auth, "s3cret", "{line}");
    }
    assert!(!r.out.contains("s3cret") && !r.err.contains("s3cret"));

    // REDISCLI_AUTH for fix-user-cache.sh as well.
    let r = run_env("fix-user-cache.sh", &e.args(&["6"]), &auth);
    assert_eq!(r.code, 0, "{r:?}");
    let n: i64 = redis::cmd("EXISTS")
        .arg("user:6:cost_weekly")
        .query(&mut admin)
        .unwrap();
    assert_eq!(n, 0);

    // Let the fixture shut the server down without a password.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("")
        .query(&mut admin)
        .unwrap();
}

// ---------------------------------------------------------------------------
// How redis-cli is run: REDIS_CLI with arguments, --user, --tls
// ---------------------------------------------------------------------------

/// An executable shell script `name` in `dir`.
fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A redis-cli stand-in taking arguments of its own, as `docker exec redis
/// redis-cli` does: `<recorder> <tag> <command>...` appends `tag=[<tag>]` and its
/// arguments, each in brackets, as one line of `record`; then runs the command
/// after the tag (none: it fails, as an unreachable server would).
fn recorder(dir: &Path, record: &Path) -> PathBuf {
    write_script(
        dir,
        "recorder",
        &format!(
            "tag=$1; shift\n\
             {{ printf 'tag=[%s]' \"$tag\"; for a in \"$@\"; do printf ' [%s]' \"$a\"; done; echo; }} >> '{}'\n\
             [ \"$1\" = none ] && exit 1\n\
             exec \"$@\"\n",
            record.display()
        ),
    )
}

#[test]
fn redis_cli_may_be_a_command_with_arguments_never_evaluated() {
    let e = env();
    let mut c = e.redis.conn();
    e.drift_weekly(&mut c, 4, 45.1);
    let dir = common::temp_dir("cli-words");
    let record = dir.join("calls");
    let rec = recorder(&dir, &record);
    // A word that runs a command if anything evaluates it.
    let pwned = dir.join("pwned");
    let tag = format!("$(touch${{IFS}}{})", pwned.display());
    let cli = format!("  {} {tag}   redis-cli ", rec.display());
    let with_cli = [("REDIS_CLI", cli.as_str())];

    let r = run_env("check-redis-consistency.sh", &e.args(&[]), &with_cli);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.out.contains("user:4:cost_weekly"), "{r:?}");
    let r = run_env("fix-user-cache.sh", &e.args(&["4"]), &with_cli);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("cache cleared (3 keys"), "{r:?}");
    assert_eq!(drifted(&mut c), 0);
    assert!(!pwned.exists(), "REDIS_CLI was evaluated");
    let calls = std::fs::read_to_string(&record).unwrap();
    assert!(calls.lines().count() >= 4, "{calls}");
    for line in calls.lines() {
        let want = format!(
            "tag=[{tag}] [redis-cli] [-h] [127.0.0.1] [-p] [{}] ",
            e.port
        );
        assert!(line.starts_with(&want), "{line}");
    }

    // The usual form: a command and its arguments, here `env redis-cli`.
    let r = run_env(
        "check-redis-consistency.sh",
        &e.args(&["--summary"]),
        &[("REDIS_CLI", "env redis-cli")],
    );
    assert_eq!(r.code, 0, "{r:?}");

    // A first word that is no command: an error naming it.
    let r = run_env(
        "fix-user-cache.sh",
        &e.args(&["4"]),
        &[("REDIS_CLI", "no-such-cli-here redis-cli")],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("no-such-cli-here not found"), "{r:?}");
}

#[test]
fn user_and_tls_flags_reach_redis_cli_in_order_for_every_wrapper() {
    // A recorder that runs nothing: what each wrapper hands redis-cli, whatever
    // TLS support this machine's redis has.
    let dir = common::temp_dir("cli-flags");
    let record = dir.join("calls");
    let rec = recorder(&dir, &record);
    let cli = format!("{} none", rec.display());
    let env = [("REDIS_CLI", cli.as_str()), ("REDISCLI_AUTH", "pw")];
    let flags = [
        "--user",
        "ops fix",
        "--tls",
        "--cacert",
        "/etc/ssl/my ca.pem",
        "--cert",
        "c.pem",
        "--key",
        "k.pem",
    ];
    let want = "[--user] [ops fix] [--tls] [--cacert] [/etc/ssl/my ca.pem] [--cert] [c.pem] [--key] [k.pem]";
    for (name, first) in [
        ("check-redis-consistency.sh", vec![]),
        ("fix-user-cache.sh", vec!["4"]),
        ("cluster-check.sh", vec![]),
    ] {
        let _ = std::fs::remove_file(&record);
        let mut args = first.clone();
        args.extend_from_slice(&["-p", "7001"]);
        args.extend_from_slice(&flags);
        let r = run_env(name, &args, &env);
        assert_eq!(r.code, 2, "the recorder fails like a dead server: {r:?}");
        let calls = std::fs::read_to_string(&record).unwrap_or_default();
        let line = calls
            .lines()
            .next()
            .unwrap_or_else(|| panic!("{name} ran no redis-cli: {r:?}"));
        assert!(line.starts_with("tag=[none] "), "{line}");
        assert!(line.contains(want), "{name}: {line}");
        assert!(
            !line.contains("pw"),
            "the password stays in REDISCLI_AUTH: {line}"
        );
    }
}

#[test]
fn acl_users_from_the_readme_log_in_with_user() {
    let e = env();
    let mut c = e.redis.conn();
    e.drift_weekly(&mut c, 4, 45.1);
    // The documented read-only and repairing operators, as written there.
    for user in ["ops-ro", "ops-fix"] {
        let words = common::documented_acl_line(user);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        common::call_ok(&mut c, &words);
    }
    let auth = [("REDISCLI_AUTH", "s3cret")];
    let before = digest(&mut c);

    // ops-ro may check but not repair: proof that the wrapper logged in as it.
    let r = run_env(
        "check-redis-consistency.sh",
        &e.args(&["--user", "ops-ro"]),
        &auth,
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.out.contains("user:4:cost_weekly"), "{r:?}");
    let r = run_env(
        "check-redis-consistency.sh",
        &e.args(&["--user", "ops-ro", "--auto-fix"]),
        &auth,
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("NOPERM"), "{r:?}");
    let r = run(
        "fix-user-cache.sh",
        &e.args(&["4", "--user", "ops-ro", "-a", "s3cret"]),
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("NOPERM"), "{r:?}");
    assert_eq!(digest(&mut c), before, "ops-ro changed nothing");

    // A wrong password is an error, not a silent fall-back to the default user.
    let r = run_env(
        "fix-user-cache.sh",
        &e.args(&["4", "--user", "ops-fix"]),
        &[("REDISCLI_AUTH", "wrong")],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("WRONGPASS"), "{r:?}");
    assert_eq!(digest(&mut c), before);

    // ops-fix repairs.
    let r = run(
        "fix-user-cache.sh",
        &e.args(&["4", "--user", "ops-fix", "-a", "s3cret"]),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("cache cleared (3 keys"), "{r:?}");
    e.drift_weekly(&mut c, 6, 30.0);
    let r = run_env(
        "check-redis-consistency.sh",
        &e.args(&["--user", "ops-fix", "--auto-fix"]),
        &auth,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(drifted(&mut c), 0);
}

/// Runs `openssl args` in `dir`; false when openssl is missing or fails.
fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all in
/// `dir`; false when openssl cannot make them.
fn make_certs(dir: &Path) -> bool {
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let days = ["-days", "2"];
    let mut ok = openssl(
        dir,
        &[
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-subj",
                "/CN=wrappers test CA",
            ][..],
            &days[..],
        ]
        .concat(),
    );
    for (who, ext) in [("server", true), ("client", false)] {
        let key = format!("{who}.key");
        let csr = format!("{who}.csr");
        let crt = format!("{who}.crt");
        ok = ok
            && openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                    "-subj",
                    &format!("/CN={who}"),
                ],
            );
        let mut sign = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
        ];
        sign.extend_from_slice(&days);
        if ext {
            sign.extend_from_slice(&["-extfile", "server.ext"]);
        }
        ok = ok && openssl(dir, &sign);
    }
    ok
}

#[test]
fn tls_flags_connect_to_a_tls_port() {
    let e = env();
    let mut c = e.redis.conn();
    e.drift_weekly(&mut c, 4, 45.1);
    let dir = common::temp_dir("tls");
    if !make_certs(&dir) {
        eprintln!("SKIPPED tls_flags_connect_to_a_tls_port: openssl cannot make certificates");
        return;
    }
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let tls_port = common::free_port().to_string();
    // Debian builds redis-server with TLS; a build without it refuses these.
    let set = common::call(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "tls-cert-file",
            &file("server.crt"),
            "tls-key-file",
            &file("server.key"),
            "tls-ca-cert-file",
            &file("ca.crt"),
            "tls-port",
            &tls_port,
        ],
    );
    if let Err(err) = set {
        eprintln!("SKIPPED tls_flags_connect_to_a_tls_port: this redis-server has no TLS ({err})");
        return;
    }
    let (ca, cert, key) = (file("ca.crt"), file("client.crt"), file("client.key"));
    let tls = vec![
        "-h",
        "127.0.0.1",
        "-p",
        &tls_port,
        "--tls",
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
    ];
    let r = run("check-redis-consistency.sh", &tls);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.out.contains("user:4:cost_weekly"), "{r:?}");
    let mut fix = tls.clone();
    fix.push("4");
    let r = run("fix-user-cache.sh", &fix);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("cache cleared (3 keys"), "{r:?}");
    assert_eq!(drifted(&mut c), 0);

    // The TLS port speaks nothing else, and the server asks for a client
    // certificate (tls-auth-clients yes, the default).
    let r = run(
        "check-redis-consistency.sh",
        &["-h", "127.0.0.1", "-p", &tls_port],
    );
    assert_eq!(r.code, 2, "{r:?}");
    let r = run(
        "check-redis-consistency.sh",
        &["-h", "127.0.0.1", "-p", &tls_port, "--tls", "--cacert", &ca],
    );
    assert_eq!(r.code, 2, "no client certificate: {r:?}");
}

// ---------------------------------------------------------------------------
// PostgreSQL down
// ---------------------------------------------------------------------------

#[test]
fn postgres_down_fails_the_check_but_not_the_clearing() {
    let rules = common::write_rules(&[common::weekly_rule_json(), common::monthly_rule_json()]);
    let rules = rules.to_str().unwrap().to_string();
    let dead = common::dead_pg_url();
    let redis = TestRedis::start(&[
        ("pg-url", &dead),
        ("rules-file", &rules),
        ("pg-connect-timeout-ms", "500"),
    ]);
    let mut c = redis.conn();
    for k in [
        "user:4:cost_weekly",
        "user:4:cost_monthly",
        "user:5:cost_weekly",
    ] {
        redis::cmd("SET")
            .arg(k)
            .arg("50.1")
            .query::<()>(&mut c)
            .unwrap();
    }
    let port = redis.port().to_string();
    let conn = ["-h", "127.0.0.1", "-p", port.as_str()];

    let mut args = conn.to_vec();
    args.push("--summary");
    let r = run("check-redis-consistency.sh", &args);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("postgres unavailable"), "{r:?}");

    // Clearing needs no truth: user 4's keys go, with a warning.
    let mut args = conn.to_vec();
    args.push("4");
    let r = run("fix-user-cache.sh", &args);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        line_with(&r.out, "[WARNING]").contains("database unavailable"),
        "{r:?}"
    );
    assert!(
        line_with(&r.out, "user:4:cost_weekly")
            .trim_end()
            .ends_with("deleted"),
        "{r:?}"
    );
    let left: BTreeSet<String> = keys(&mut c);
    assert_eq!(
        left.into_iter().collect::<Vec<_>>(),
        ["user:5:cost_weekly"],
        "only user 4's keys go"
    );
}
