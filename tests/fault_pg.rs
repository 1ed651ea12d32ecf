//! Reliability: PostgreSQL faults. Each case asserts what the client sees, that
//! Redis keeps answering (PING), and that no key changed unless a verified repair
//! changed it (DEBUG DIGEST before and after).
//!
//! - down when the module loads, then started: no Redis restart needed;
//! - killed while a CHECK waits on its truth;
//! - killed in the middle of FIX ALL: during the verification (nothing repaired)
//!   and after it (the verified repairs go ahead without PostgreSQL);
//! - hanging (`pg_sleep`): the statement timeout, or else the job deadline;
//! - a dropped TCP peer (a frozen proxy): the job deadline answers the client;
//! - restarted (immediate and fast stops): the pool recovers;
//! - the password (pg-url, URL form, pg-password-file, wrong password) is never
//!   shown in a reply, INFO or the log.
//!
//! PostgreSQL clusters that get stopped are the tests' own (`OwnPg`), never the
//! system one. Run: `cargo test --release --features test-hooks --test integration fault_pg::`

use crate::common;
use crate::fault_support;

use std::thread;
use std::time::{Duration, Instant};

use common::{as_i64, as_str, call, call_err, call_ok, error_text, field, opt_str, TestRedis};
use fault_support::{
    assert_no_crash, assert_pings, create_spend, digest, exists, fill_spend, in_background, ping,
    set, snapshot, spend_rule, spend_test_pg, OwnPg, Pinger, Proxy, PING_BOUND, SPEND_TRUTH,
};
use redis::Connection;

/// Redis with the module pointed at `url`, `rules`, and `configs`; verbose log.
fn redis_for(url: &str, rules: &[serde_json::Value], configs: &[(&str, &str)]) -> TestRedis {
    redis_logging(url, rules, configs, "verbose")
}

fn redis_logging(
    url: &str,
    rules: &[serde_json::Value],
    configs: &[(&str, &str)],
    level: &str,
) -> TestRedis {
    let path = common::write_rules(rules);
    let path = path.display().to_string();
    let mut all: Vec<(&str, &str)> = vec![("pg-url", url), ("rules-file", &path)];
    all.extend_from_slice(configs);
    TestRedis::start_with(&all, &[&format!("loglevel {level}")])
}

/// CHECK as JSON.
fn check_json(c: &mut Connection, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["CONSISTENCY.CHECK"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["FORMAT", "json"]);
    let text = as_str(&call_ok(c, &all)).to_string();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn fix_json(c: &mut Connection, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["CONSISTENCY.FIX"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["FORMAT", "json"]);
    let text = as_str(&call_ok(c, &all)).to_string();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn drifted_keys(report: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = report["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

fn pg_state(c: &mut Connection) -> (String, Option<String>) {
    let status = call_ok(c, &["CONSISTENCY.STATUS"]);
    let pg = field(&status, "pg");
    (
        as_str(field(pg, "state")).to_string(),
        opt_str(field(pg, "last_error")),
    )
}

// ---------------------------------------------------------------------------
// Down at load, killed during a CHECK, restarted
// ---------------------------------------------------------------------------

#[test]
fn postgres_down_at_load_answers_unavailable_promptly_and_recovers_when_it_starts() {
    let mut pg = OwnPg::start();
    create_spend(&pg, 10);
    pg.kill();
    // Redis starts (TestRedis waits for PING) although PostgreSQL is down.
    let redis = redis_for(
        &pg.url(),
        &[spend_rule("spend", SPEND_TRUTH)],
        &[("pg-connect-timeout-ms", "500")],
    );
    let mut c = redis.conn();
    fill_spend(&mut c, 10);
    set(&mut c, b"u:3:spend", b"999");
    let before = digest(&mut c);

    let pings = Pinger::start(&redis);
    thread::sleep(Duration::from_millis(30));
    for args in [
        &["CONSISTENCY.CHECK"][..],
        &["CONSISTENCY.FIX", "ALL"],
        &["CONSISTENCY.CHECK", "ID", "3"],
    ] {
        let started = Instant::now();
        let err = call_err(&mut c, args);
        let took = started.elapsed();
        assert!(
            err.starts_with("ERR postgres unavailable: ") && err.contains("refused"),
            "{args:?}: {err}"
        );
        assert!(
            took < Duration::from_millis(500 + 1000),
            "{args:?} took {took:?} with pg-connect-timeout-ms 500"
        );
    }
    // REWRITE needs the truth: refused before any change.
    let err = call_err(&mut c, &["CONSISTENCY.FIX", "3", "REWRITE"]);
    assert!(
        err.starts_with("ERR REWRITE needs the truth") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_pings(pings, 10, PING_BOUND);
    assert_eq!(
        digest(&mut c),
        before,
        "a key changed while PostgreSQL was down"
    );
    let (state, last_error) = pg_state(&mut c);
    assert_eq!(state, "down");
    assert!(last_error.unwrap().contains("refused"));

    // PostgreSQL starts: the same Redis, the same pool, CHECK works at once.
    pg.start_again();
    let report = check_json(&mut c, &[]);
    assert_eq!(report["checked"], 10, "{report}");
    assert_eq!(drifted_keys(&report), ["u:3:spend"], "{report}");
    assert_eq!(pg_state(&mut c).0, "ok");
    let fixed = fix_json(&mut c, &["ALL"]);
    assert_eq!(fixed["changed"], 1, "{fixed}");
    assert!(!exists(&mut c, b"u:3:spend"));
    assert_no_crash(&redis.log());
}

#[test]
fn postgres_killed_during_a_check_answers_unavailable_and_changes_nothing() {
    let mut pg = OwnPg::start();
    create_spend(&pg, 10);
    let slow = "SELECT id, spend FROM users CROSS JOIN pg_sleep(4)";
    let redis = redis_for(
        &pg.url(),
        &[
            spend_rule("spend", SPEND_TRUTH),
            serde_json::json!({"name": "slow", "kind": "number", "key": "s:{id}:spend", "truth": slow}),
        ],
        &[("pg-connect-timeout-ms", "500")],
    );
    let mut c = redis.conn();
    fill_spend(&mut c, 10);
    set(&mut c, b"s:1:spend", b"10");
    set(&mut c, b"s:2:spend", b"777");
    let before = digest(&mut c);

    for command in [
        &["CONSISTENCY.CHECK", "RULE", "slow"][..],
        &["CONSISTENCY.FIX", "ALL", "RULE", "slow"],
    ] {
        let pings = Pinger::start(&redis);
        let job = in_background(&redis, command);
        assert!(
            common::wait_until(Duration::from_secs(5), || pg.running_query("pg_sleep")),
            "the slow truth never ran"
        );
        pg.kill();
        let (result, took) = job.join().unwrap();
        let err = result.expect_err("the command should fail");
        assert!(
            err.starts_with("ERR postgres unavailable: "),
            "{command:?}: {err}"
        );
        assert!(
            took < Duration::from_millis(3500),
            "answered after {took:?}: not when PostgreSQL went away"
        );
        assert_pings(pings, 10, PING_BOUND);
        assert_eq!(digest(&mut c), before, "{command:?} changed a key");
        pg.start_again();
    }
    // The fast rule works again on the same pool.
    let report = check_json(&mut c, &["RULE", "spend"]);
    assert_eq!(report["checked"], 10, "{report}");
    assert_eq!(report["drifted"], 0, "{report}");
    assert_no_crash(&redis.log());
}

#[test]
fn the_pool_recovers_after_postgres_restarts_without_restarting_redis() {
    let mut pg = OwnPg::start();
    create_spend(&pg, 20);
    let redis = redis_for(
        &pg.url(),
        &[spend_rule("spend", SPEND_TRUTH)],
        &[("pg-connect-timeout-ms", "500"), ("pool-size", "3")],
    );
    let mut c = redis.conn();
    fill_spend(&mut c, 20);
    set(&mut c, b"u:7:spend", b"1");
    let pid = redis.pid();
    let expect = |c: &mut Connection| {
        let report = check_json(c, &[]);
        assert_eq!(report["checked"], 20, "{report}");
        assert_eq!(drifted_keys(&report), ["u:7:spend"], "{report}");
    };
    // Warm the pool: several concurrent checks leave several idle connections.
    let warm: Vec<_> = (0..3)
        .map(|_| in_background(&redis, &["CONSISTENCY.CHECK"]))
        .collect();
    for w in warm {
        w.join().unwrap().0.expect("warm-up check");
    }
    expect(&mut c);
    for (round, immediate) in [(1, true), (2, false), (3, true)] {
        if immediate {
            pg.kill();
        } else {
            pg.stop();
        }
        let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
        assert!(
            err.starts_with("ERR postgres unavailable: "),
            "round {round}: {err}"
        );
        pg.start_again();
        // The first CHECK after the restart already works: broken pooled
        // connections are replaced, not handed out.
        expect(&mut c);
        expect(&mut c);
    }
    assert_eq!(redis.pid(), pid);
    assert_eq!(pg_state(&mut c).0, "ok");
    assert_no_crash(&redis.log());
}

// ---------------------------------------------------------------------------
// Killed in the middle of FIX ALL
// ---------------------------------------------------------------------------

/// A truth that sleeps from its second call on (FIX ALL's verification round),
/// counting calls in a sequence.
fn create_slow_second_truth(pg: &OwnPg) {
    pg.exec(
        "CREATE SEQUENCE truth_calls;
         CREATE FUNCTION spend_truth() RETURNS TABLE(id int, spend numeric)
         LANGUAGE plpgsql AS $$
         BEGIN
             IF nextval('truth_calls') > 1 THEN PERFORM pg_sleep(4); END IF;
             RETURN QUERY SELECT u.id, u.spend FROM users u;
         END $$;",
    );
}

#[test]
fn postgres_killed_in_the_middle_of_fix_all() {
    let mut pg = OwnPg::start();
    create_spend(&pg, 12);
    create_slow_second_truth(&pg);
    let redis = redis_for(
        &pg.url(),
        &[spend_rule("spend", "SELECT id, spend FROM spend_truth()")],
        &[("pg-connect-timeout-ms", "500")],
    );
    let mut c = redis.conn();
    fill_spend(&mut c, 12);
    for id in [2, 5, 9] {
        set(&mut c, format!("u:{id}:spend").as_bytes(), b"5000");
    }
    set(&mut c, b"other:key", b"x");
    let before = digest(&mut c);
    let before_keys = snapshot(&mut c);

    // (a) Killed while the verification round waits on its truth: that truth was
    // never obtained, so nothing is repaired.
    let pings = Pinger::start(&redis);
    let job = in_background(&redis, &["CONSISTENCY.FIX", "ALL"]);
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            pg.scalar("SELECT last_value FROM truth_calls").as_deref() == Some("2")
                && pg.running_query("spend_truth")
        }),
        "the verification round never started"
    );
    pg.kill();
    let (result, _) = job.join().unwrap();
    let err = result.expect_err("FIX ALL should fail");
    assert!(err.starts_with("ERR postgres unavailable: "), "{err}");
    assert_pings(pings, 10, PING_BOUND);
    assert_eq!(
        digest(&mut c),
        before,
        "FIX ALL repaired from truth it did not get"
    );
    assert!(!redis.log().contains("consistency: deleted"));

    // (b) Killed after the verification, while FIX ALL pauses before repairing:
    // the repairs rest on verified truth already obtained and go ahead.
    pg.start_again();
    pg.exec("ALTER SEQUENCE truth_calls MINVALUE -1000 RESTART WITH -1000");
    call_ok(
        &mut c,
        &["CONSISTENCY.DEBUG", "PAUSE-BEFORE-REPAIR", "1500"],
    );
    let job = in_background(&redis, &["CONSISTENCY.FIX", "ALL", "FORMAT", "json"]);
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            pg.scalar("SELECT last_value FROM truth_calls").as_deref() == Some("-999")
        }),
        "round one and the verification never ran"
    );
    thread::sleep(Duration::from_millis(100));
    pg.kill();
    let (result, _) = job.join().unwrap();
    call_ok(&mut c, &["CONSISTENCY.DEBUG", "PAUSE-BEFORE-REPAIR", "0"]);
    let reply = result.expect("FIX ALL with verified findings");
    let fixed: serde_json::Value = serde_json::from_str(as_str(&reply)).unwrap();
    assert_eq!(fixed["changed"], 3, "{fixed}");
    let mut expect = before_keys;
    for id in [2, 5, 9] {
        expect.remove(format!("u:{id}:spend").as_bytes());
    }
    assert_eq!(
        snapshot(&mut c),
        expect,
        "exactly the verified drift is repaired"
    );
    ping(&mut c);
    assert_no_crash(&redis.log());
}

// ---------------------------------------------------------------------------
// Hanging PostgreSQL, dropped TCP peer
// ---------------------------------------------------------------------------

#[test]
fn hanging_postgres_answers_the_statement_timeout_or_the_job_deadline() {
    let pg = spend_test_pg(10);
    let hanging = "SELECT id, spend FROM users CROSS JOIN pg_sleep(30)";
    let redis = redis_for(
        &pg.url(),
        &[spend_rule("spend", hanging)],
        &[("pg-statement-timeout-ms", "300")],
    );
    let mut c = redis.conn();
    fill_spend(&mut c, 10);
    set(&mut c, b"u:4:spend", b"1234");
    let before = digest(&mut c);
    let pings = Pinger::start(&redis);

    // The statement timeout cancels the query and answers a timeout error.
    for args in [&["CONSISTENCY.CHECK"][..], &["CONSISTENCY.FIX", "ALL"]] {
        let started = Instant::now();
        let err = call_err(&mut c, args);
        let took = started.elapsed();
        assert!(
            err.starts_with("ERR postgres timeout: ")
                && err.contains("statement timeout")
                && err.contains("(300 ms)"),
            "{args:?}: {err}"
        );
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(2000),
            "{args:?} took {took:?}"
        );
    }
    // PostgreSQL really cancelled it: nothing is left sleeping.
    let mut admin = pg.client();
    let sleeping: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(sleeping, 0);

    // Statement timeout longer than the job deadline: the deadline answers.
    call_ok(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "consistency.pg-statement-timeout-ms",
            "1500",
        ],
    );
    call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.job-timeout-ms", "500"],
    );
    for args in [&["CONSISTENCY.CHECK"][..], &["CONSISTENCY.FIX", "ALL"]] {
        let started = Instant::now();
        let err = call_err(&mut c, args);
        let took = started.elapsed();
        assert_eq!(
            err, "ERR timeout: the job did not finish within consistency.job-timeout-ms (500 ms)",
            "{args:?}"
        );
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_millis(2500),
            "{args:?} took {took:?}"
        );
        // The connection is in step: the late answer of the job is not read as
        // the answer of the next command.
        ping(&mut c);
    }
    assert_pings(pings, 20, PING_BOUND);
    // Let the stuck workers reach their statement timeout and answer late.
    thread::sleep(Duration::from_millis(1200));
    ping(&mut c);
    assert_eq!(digest(&mut c), before, "a timed-out job changed a key");
    assert_no_crash(&redis.log());
}

#[test]
fn a_frozen_tcp_peer_is_answered_by_the_job_deadline() {
    let pg = spend_test_pg(10);
    let real: postgres::Config = pg.url().parse().unwrap();
    let backend_port = real.get_ports().first().copied().unwrap_or(5432);
    let proxy = Proxy::start(backend_port);
    let url = format!(
        "host=127.0.0.1 port={} user=postgres dbname={}",
        proxy.port(),
        pg.name()
    );
    let redis = redis_for(
        &url,
        &[spend_rule("spend", SPEND_TRUTH)],
        &[
            ("job-timeout-ms", "800"),
            ("pg-connect-timeout-ms", "1000"),
            ("workers", "3"),
        ],
    );
    let mut c = redis.conn();
    fill_spend(&mut c, 10);
    set(&mut c, b"u:6:spend", b"4242");
    for i in 0..5 {
        set(&mut c, format!("scratch:{i}").as_bytes(), b"1");
    }
    // Through the proxy, all is well; the pool now holds a connection.
    let report = check_json(&mut c, &[]);
    assert_eq!(drifted_keys(&report), ["u:6:spend"]);
    let before = digest(&mut c);

    proxy.freeze();
    thread::sleep(Duration::from_millis(50));
    let pings = Pinger::start(&redis);
    let mut last_sent = Instant::now();
    // A check, a FIX ALL, and a FIX of an id (which would clear without the
    // truth, but not after its client was told it timed out).
    for args in [
        &["CONSISTENCY.CHECK"][..],
        &["CONSISTENCY.FIX", "ALL"],
        &["CONSISTENCY.FIX", "6"],
    ] {
        let started = Instant::now();
        last_sent = started;
        let err = call_err(&mut c, args);
        let took = started.elapsed();
        assert_eq!(
            err, "ERR timeout: the job did not finish within consistency.job-timeout-ms (800 ms)",
            "{args:?}"
        );
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_millis(1800),
            "{args:?} took {took:?}"
        );
        ping(&mut c);
    }
    // The truth workers are stuck on the dead peer; keyspace work and the
    // read-only commands are not.
    let started = Instant::now();
    let purge = call_ok(
        &mut c,
        &["CONSISTENCY.PURGE", "MATCH", "scratch:*", "DRYRUN"],
    );
    assert_eq!(as_i64(field(&purge, "matched")), 5);
    assert!(started.elapsed() < Duration::from_millis(1000));
    call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    call_ok(&mut c, &["CONSISTENCY.RULES"]);
    let info = redis.info("consistency");
    assert!(info.contains_key("consistency_checks_total"), "{info:?}");
    assert_pings(pings, 20, PING_BOUND);

    // The peer finally resets: the workers come free, the pool reconnects.
    proxy.cut();
    proxy.thaw();
    let recovered = common::wait_until(Duration::from_secs(10), || {
        call(&mut c, &["CONSISTENCY.CHECK", "FORMAT", "json"]).is_ok()
    });
    assert!(
        recovered,
        "CHECK never worked again after the peer came back"
    );
    let report = check_json(&mut c, &[]);
    assert_eq!(drifted_keys(&report), ["u:6:spend"]);
    ping(&mut c);
    // The FIX of id 6 gave up on the pool after pg-connect-timeout-ms; by now it
    // has reached its repairs, and must have refused them.
    let settle = Duration::from_millis(1000 + 700);
    thread::sleep(settle.saturating_sub(last_sent.elapsed()));
    assert_eq!(digest(&mut c), before, "a timed-out FIX repaired");
    assert!(!redis.log().contains("consistency: deleted"));

    // The twin: with a deadline longer than the pool's connect timeout, the same
    // FIX of id 6 is answered, and clears without the truth, as designed.
    proxy.cut();
    proxy.freeze();
    call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.job-timeout-ms", "5000"],
    );
    let cleared = fix_json(&mut c, &["6"]);
    assert!(
        cleared["truth"]
            .as_str()
            .unwrap()
            .starts_with("unavailable: "),
        "{cleared}"
    );
    assert_eq!(cleared["changed"], 1, "{cleared}");
    assert!(!exists(&mut c, b"u:6:spend"));
    proxy.thaw();
    assert_eq!(
        fault_support::status_i64(&mut c, &["lanes", "truth", "workers"]),
        3
    );
    assert_no_crash(&redis.log());
}

// ---------------------------------------------------------------------------
// The password
// ---------------------------------------------------------------------------

const PW_URL: &str = "Pw-url-7f3Kq9";
const PW_WRONG: &str = "Pw-wrong-Zx81v";
const PW_URI: &str = "Pw-uri-Hh55m";
const PW_BAD: &str = "Pw-badurl-Ty62";
const PW_FILE: &str = "Pw-file-Ww40c";
const PW_FILE_WRONG: &str = "Pw-filewrong-Qa19";
const ALL_PASSWORDS: [&str; 6] = [PW_URL, PW_WRONG, PW_URI, PW_BAD, PW_FILE, PW_FILE_WRONG];

fn password_pg() -> OwnPg {
    // Trust for the test's own `postgres`; every other role needs its password.
    let pg = OwnPg::start_with_hba(&[
        "host all postgres 127.0.0.1/32 trust",
        "host all all 127.0.0.1/32 scram-sha-256",
    ]);
    create_spend(&pg, 5);
    for pw in [PW_URL, PW_URI, PW_FILE] {
        // One role per password, so each path proves its own password works.
        let role = format!("app_{}", pw.rsplit('-').next().unwrap().to_lowercase());
        pg.exec(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{pw}'; GRANT SELECT ON users TO {role};"
        ));
    }
    pg.exec(&format!(
        "CREATE ROLE app LOGIN PASSWORD '{PW_URL}'; GRANT SELECT ON users TO app;"
    ));
    pg
}

/// Everything a client or an operator can see: replies of every command (also
/// from a script), STATUS, RULES, INFO, and the log.
fn visible_text(redis: &TestRedis, c: &mut Connection, seen: &mut String) {
    let commands: [&[&str]; 9] = [
        &["CONSISTENCY.CHECK"],
        &["CONSISTENCY.CHECK", "FORMAT", "json"],
        &["CONSISTENCY.FIX", "1", "DRYRUN"],
        &["CONSISTENCY.FIX", "1", "REWRITE", "DRYRUN"],
        &["CONSISTENCY.FIX", "ALL", "DRYRUN"],
        &["CONSISTENCY.STATUS"],
        &["CONSISTENCY.RULES"],
        &["CONSISTENCY.RELOAD"],
        &[
            "EVAL",
            "return redis.call('CONSISTENCY.CHECK', 'ID', '1')",
            "0",
        ],
    ];
    for args in commands {
        let shown = match call(c, args) {
            Ok(v) => format!("{v:?}"),
            Err(e) => error_text(&e),
        };
        seen.push_str(&shown);
        seen.push('\n');
    }
    for section in ["consistency", "everything", "modules", "all"] {
        let info: String = redis::cmd("INFO").arg(section).query(c).unwrap();
        seen.push_str(&info);
    }
    seen.push_str(&redis.log());
}

fn assert_hidden(seen: &str) {
    for pw in ALL_PASSWORDS {
        if let Some(at) = seen.find(pw) {
            let from = at.saturating_sub(200);
            panic!(
                "password {pw} shown: ...{}...",
                &seen[from..(at + 200).min(seen.len())]
            );
        }
    }
}

#[test]
fn the_password_is_never_shown_in_replies_info_or_the_log() {
    let mut pg = password_pg();
    let port = pg.port();
    let url = format!("host=127.0.0.1 port={port} user=app dbname=postgres password={PW_URL}");
    let redis = redis_logging(
        &url,
        &[spend_rule("spend", SPEND_TRUTH)],
        &[("pg-connect-timeout-ms", "200")],
        "debug",
    );
    let mut c = redis.conn();
    fill_spend(&mut c, 5);
    set(&mut c, b"u:2:spend", b"77");
    let mut seen = String::new();

    // The password in pg-url works, and is masked where the url is shown.
    assert_eq!(drifted_keys(&check_json(&mut c, &[])), ["u:2:spend"]);
    let status = call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    assert_eq!(
        as_str(field(field(&status, "pg"), "url")),
        url.replace(PW_URL, "***")
    );
    visible_text(&redis, &mut c, &mut seen);

    // A wrong password: authentication errors, which must not echo it.
    let wrong = format!("host=127.0.0.1 port={port} user=app dbname=postgres password={PW_WRONG}");
    call_ok(&mut c, &["CONFIG", "SET", "consistency.pg-url", &wrong]);
    let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
    assert!(
        err.starts_with("ERR postgres unavailable: ") && err.contains("password authentication"),
        "{err}"
    );
    visible_text(&redis, &mut c, &mut seen);

    // The URL form, shown as the key=value text it parses to.
    let uri = format!("postgresql://app_hh55m:{PW_URI}@127.0.0.1:{port}/postgres");
    call_ok(&mut c, &["CONFIG", "SET", "consistency.pg-url", &uri]);
    assert_eq!(drifted_keys(&check_json(&mut c, &[])), ["u:2:spend"]);
    let status = call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    assert_eq!(
        as_str(field(field(&status, "pg"), "url")),
        format!("host=127.0.0.1 port={port} user=app_hh55m dbname=postgres password=***")
    );
    visible_text(&redis, &mut c, &mut seen);

    // An invalid pg-url that holds a password: the config error names the
    // option, not the value.
    let bad = format!("host=127.0.0.1 port={port} password={PW_BAD} no_such_option=1");
    call_ok(&mut c, &["CONFIG", "SET", "consistency.pg-url", &bad]);
    let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
    assert!(err.starts_with("ERR postgres config: "), "{err}");
    visible_text(&redis, &mut c, &mut seen);

    // PostgreSQL down, with the right password configured: every error path.
    call_ok(&mut c, &["CONFIG", "SET", "consistency.pg-url", &url]);
    pg.kill();
    let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
    assert!(err.starts_with("ERR postgres unavailable: "), "{err}");
    let cleared = fix_json(&mut c, &["3"]);
    assert!(
        cleared["truth"]
            .as_str()
            .unwrap()
            .starts_with("unavailable: "),
        "{cleared}"
    );
    // Scheduled runs (and autofix) meet the outage too, and log it.
    call_ok(&mut c, &["CONFIG", "SET", "consistency.autofix", "yes"]);
    call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.check-interval-sec", "1"],
    );
    assert!(
        redis.wait_for_log("scheduled check of spend failed", Duration::from_secs(5)),
        "no scheduled run logged its failure"
    );
    call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.check-interval-sec", "0"],
    );
    visible_text(&redis, &mut c, &mut seen);
    assert!(seen.contains("password authentication failed"));
    assert!(seen.contains("refused"));
    assert_hidden(&seen);
    assert_no_crash(&redis.log());
}

#[test]
fn a_password_file_is_used_and_never_shown() {
    let mut pg = password_pg();
    let port = pg.port();
    let dir = common::temp_dir("pwfile");
    let right = dir.join("right");
    let wrong = dir.join("wrong");
    std::fs::write(&right, format!("{PW_FILE}\n")).unwrap();
    std::fs::write(&wrong, format!("{PW_FILE_WRONG}\n")).unwrap();
    let url = format!("host=127.0.0.1 port={port} user=app_ww40c dbname=postgres");
    let mut seen = String::new();

    // The wrong file: authentication fails, the password stays hidden.
    {
        let wrong = wrong.display().to_string();
        let redis = redis_logging(
            &url,
            &[spend_rule("spend", SPEND_TRUTH)],
            &[
                ("pg-password-file", &wrong),
                ("pg-connect-timeout-ms", "200"),
            ],
            "debug",
        );
        let mut c = redis.conn();
        fill_spend(&mut c, 5);
        let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
        assert!(err.contains("password authentication failed"), "{err}");
        visible_text(&redis, &mut c, &mut seen);
    }
    // The right file works; then PostgreSQL goes down.
    let right = right.display().to_string();
    let redis = redis_logging(
        &url,
        &[spend_rule("spend", SPEND_TRUTH)],
        &[
            ("pg-password-file", &right),
            ("pg-connect-timeout-ms", "200"),
        ],
        "debug",
    );
    let mut c = redis.conn();
    fill_spend(&mut c, 5);
    set(&mut c, b"u:5:spend", b"1");
    assert_eq!(drifted_keys(&check_json(&mut c, &[])), ["u:5:spend"]);
    visible_text(&redis, &mut c, &mut seen);
    pg.kill();
    let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
    assert!(err.starts_with("ERR postgres unavailable: "), "{err}");
    visible_text(&redis, &mut c, &mut seen);
    assert_hidden(&seen);
}

/// EXEC of one command; the answer (or error) of that command inside.
fn in_multi(c: &mut Connection, args: &[&str]) -> Result<redis::Value, String> {
    call_ok(c, &["MULTI"]);
    let queued = call_ok(c, args);
    assert_eq!(as_str(&queued), "QUEUED");
    let exec = call(c, &["EXEC"]).map_err(|e| error_text(&e))?;
    let mut items = common::as_array(&exec).to_vec();
    match items.pop() {
        Some(redis::Value::ServerError(e)) => {
            Err(format!("{} {}", e.code(), e.details().unwrap_or_default()))
        }
        Some(v) => Ok(v),
        None => Err("empty EXEC".into()),
    }
}

#[test]
fn a_frozen_tcp_peer_does_not_stall_redis_in_a_script_or_multi() {
    let pg = spend_test_pg(10);
    let real: postgres::Config = pg.url().parse().unwrap();
    let backend_port = real.get_ports().first().copied().unwrap_or(5432);
    let proxy = Proxy::start(backend_port);
    let url = format!(
        "host=127.0.0.1 port={} user=postgres dbname={}",
        proxy.port(),
        pg.name()
    );
    // The synchronous path waits sync-timeout-ms (250) for PostgreSQL.
    let redis = redis_for(&url, &[spend_rule("spend", SPEND_TRUTH)], &[]);
    let mut c = redis.conn();
    fill_spend(&mut c, 10);
    set(&mut c, b"u:1:spend", b"1000");
    let before = digest(&mut c);
    let script = "return redis.call('CONSISTENCY.CHECK', 'ID', '1', 'FORMAT', 'json')";
    let fix_script = "return redis.call('CONSISTENCY.FIX', '1', 'REWRITE')";
    let works = |c: &mut Connection| {
        let r = call_ok(c, &["EVAL", script, "0"]);
        let report: serde_json::Value = serde_json::from_str(as_str(&r)).unwrap();
        assert_eq!(report["drifted"], 1, "{report}");
    };
    works(&mut c);

    // Frozen: no new connection gets past its startup, and a connection made
    // just before freezing gets no answer to its query.
    proxy.freeze();
    let pings = Pinger::start(&redis);
    thread::sleep(Duration::from_millis(50));
    for round in 0..12 {
        let started = Instant::now();
        let err = match round % 3 {
            0 => call_err(&mut c, &["EVAL", script, "0"]),
            1 => call_err(&mut c, &["EVAL", fix_script, "0"]),
            _ => in_multi(&mut c, &["CONSISTENCY.CHECK", "ID", "1"]).expect_err("MULTI"),
        };
        let took = started.elapsed();
        assert!(
            err.contains("postgres timeout: no answer from PostgreSQL within consistency.sync-timeout-ms (250 ms)")
                || err.contains("postgres unavailable: ")
                    && err.contains("still wait for PostgreSQL"),
            "round {round}: {err}"
        );
        assert!(
            took < Duration::from_millis(1000),
            "round {round} took {took:?}"
        );
        thread::sleep(Duration::from_millis(30));
    }
    // Redis answered others throughout; the main thread was never held for long.
    assert_pings(pings, 20, PING_BOUND + Duration::from_millis(400));
    call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    assert_eq!(
        digest(&mut c),
        before,
        "REWRITE without the truth changed a key"
    );

    // The peer resets: the abandoned connections end, scripts work again.
    proxy.cut();
    proxy.thaw();
    let recovered = common::wait_until(Duration::from_secs(10), || {
        call(&mut c, &["EVAL", script, "0"]).is_ok()
    });
    assert!(recovered, "scripts never worked again");
    works(&mut c);
    let r = in_multi(&mut c, &["CONSISTENCY.CHECK", "ID", "1"]).expect("MULTI CHECK");
    assert_eq!(as_i64(field(&r, "drifted")), 1);
    assert_no_crash(&redis.log());
}
