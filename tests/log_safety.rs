//! Text from outside never becomes a printf format in the Redis log.
//!
//! Every path that logs text a client, a key, a file or PostgreSQL chose runs
//! against a real redis-server with `%n`/`%s` in that text: a PURGE pattern, FIX
//! of ids and FIX ALL of keys whose names and values hold them, RELOAD and CONFIG
//! SET of such a rules-file path, a rule whose name holds them (refused at load,
//! and the refusal logged), and a PostgreSQL error echoing them (a scheduled run's
//! failure). Handed to `RedisModule_Log` as its format, any of these crashed
//! redis-server; now the server must answer PING afterwards and its log must hold
//! the literal text.
//!
//! Run: `cargo test --release --features test-hooks --test integration log_safety::`

use crate::common;

use std::time::Duration;

use common::{ledger, TestPg, TestRedis};
use redis::Connection;

const HOSTILE: &str = "%n%s%n%x%p";

fn assert_alive_and_logged(r: &TestRedis, c: &mut Connection, needle: &str) {
    let pong: String = redis::cmd("PING")
        .query(c)
        .expect("redis-server must survive");
    assert_eq!(pong, "PONG");
    assert!(
        r.wait_for_log(needle, Duration::from_secs(5)),
        "the log must hold {needle:?} literally; log tail:\n{}",
        r.log()
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn weekly_setup() -> (TestPg, TestRedis) {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 5, 3, 7);
    let rules = common::write_rules(&[common::weekly_rule_json()]);
    let r = TestRedis::start_for(&pg, &rules, &[]);
    (pg, r)
}

#[test]
fn purge_pattern_with_printf_directives() {
    let (_pg, r) = weekly_setup();
    let mut c = r.conn();
    for i in 0..3 {
        common::call_ok(&mut c, &["SET", &format!("{HOSTILE}:{i}"), "1"]);
    }
    let pattern = format!("{HOSTILE}:*");
    let v = common::call_ok(&mut c, &["CONSISTENCY.PURGE", "MATCH", &pattern]);
    assert_eq!(common::as_i64(common::field(&v, "deleted")), 3);
    assert_alive_and_logged(&r, &mut c, &format!("PURGE MATCH {pattern} deleted 3"));
}

#[test]
fn fix_of_ids_and_fix_all_of_keys_named_with_printf_directives() {
    let (_pg, r) = weekly_setup();
    let mut c = r.conn();
    let key = format!("user:{HOSTILE}:cost_weekly");
    common::call_ok(&mut c, &["SET", &key, "%s%n"]);
    let v = common::call_ok(&mut c, &["CONSISTENCY.FIX", HOSTILE]);
    assert_eq!(common::as_i64(common::field(&v, "changed")), 1);
    assert_alive_and_logged(
        &r,
        &mut c,
        &format!("deleted {key} (rule cost_weekly, id {HOSTILE}, cached '%s%n'"),
    );

    // FIX ALL: an orphan whose name and value hold directives.
    let orphan = "user:%n%n%n%s:cost_weekly";
    common::call_ok(&mut c, &["SET", orphan, "%n%s"]);
    let v = common::call_ok(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    assert!(common::as_i64(common::field(&v, "changed")) >= 1);
    assert_alive_and_logged(
        &r,
        &mut c,
        &format!("deleted {orphan} (rule cost_weekly, id %n%n%n%s, cached '%n%s'"),
    );
}

#[test]
fn rules_file_paths_with_printf_directives() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    // At start: a path that cannot be read is logged, and Redis starts.
    let missing = format!("/nonexistent/{HOSTILE}.json");
    let r = TestRedis::start_for(&pg, std::path::Path::new(&missing), &[]);
    let mut c = r.conn();
    assert_alive_and_logged(
        &r,
        &mut c,
        &format!("no rules loaded: {missing}: cannot read"),
    );

    // CONFIG SET of a readable path holding directives, then RELOAD (which logs).
    let dir = common::temp_dir("rules-printf");
    let path = dir.join(format!("{HOSTILE}.json"));
    common::write_rules_to(&path, &[common::weekly_rule_json()]);
    let path = path.to_str().unwrap();
    common::call_ok(&mut c, &["CONFIG", "SET", "consistency.rules-file", path]);
    let v = common::call_ok(&mut c, &["CONSISTENCY.RELOAD"]);
    assert_eq!(common::as_i64(common::field(&v, "rules")), 1);
    assert_alive_and_logged(&r, &mut c, &format!("reloaded 1 rules from '{path}'"));
}

#[test]
fn rule_names_and_postgres_errors_with_printf_directives() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    // A rule name with directives is refused at load; the refusal quotes it.
    let bad = common::write_rules(&[serde_json::json!({
        "name": "a%s%n", "kind": "number", "key": "a:{id}", "truth": "SELECT 1, 2"
    })]);
    let r = TestRedis::start_for(&pg, &bad, &[]);
    let mut c = r.conn();
    assert_alive_and_logged(&r, &mut c, "got 'a%s%n'");
    drop(c);
    drop(r);

    // SQL whose error echoes the directives: PostgreSQL quotes the bad input,
    // and a scheduled run logs the failure.
    let echo = common::write_rules(&[serde_json::json!({
        "name": "echo", "kind": "number", "key": "echo:{id}",
        "truth": format!("SELECT '{HOSTILE}'::int, 1"), "interval_sec": 1
    })]);
    let r = TestRedis::start_for(&pg, &echo, &[]);
    let mut c = r.conn();
    assert_alive_and_logged(
        &r,
        &mut c,
        &format!("invalid input syntax for type integer: \"{HOSTILE}\""),
    );
    let err = common::call_err(&mut c, &["CONSISTENCY.CHECK"]);
    assert!(err.contains(HOSTILE), "{err}");
}
