//! CHECK CHANGED and FIX ALL CHANGED against real Redis and PostgreSQL: the ids
//! written, expired or evicted since the last check, plus the rule's `changed`
//! query, are all that is read; a full check when those could be incomplete
//! (first check, overflow, FLUSHALL, a load), saying why; scheduled CHANGED runs
//! with `full_every_sec`; binary key names through the keyspace callback.
//!
//! Run: `cargo test --release --features test-hooks --test integration changed::`

use std::time::Duration;

use crate::check_support::set;
use crate::common;
use common::{as_i64, as_str, call_ok, field, is_null, ledger, wait_until, TestPg, TestRedis};
use redis::Connection;
use serde_json::json;

/// The weekly rule with a `changed` query: users with ledger rows since $1.
fn weekly_changed() -> serde_json::Value {
    let mut rule = common::weekly_rule_json();
    rule["changed"] = json!("SELECT DISTINCT user_id FROM message_request WHERE created_at >= $1");
    rule["changed_overlap_ms"] = json!(0);
    rule
}

/// 20 users with costs, the cache filled exactly.
fn prepared(rules: &[serde_json::Value], configs: &[(&str, &str)]) -> (TestPg, TestRedis) {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 20, 2, 11);
    let redis = TestRedis::start_for(&pg, &common::write_rules(rules), configs);
    ledger::fill_cache_weekly(&mut redis.conn(), &pg);
    (pg, redis)
}

fn changed(c: &mut Connection) -> redis::Value {
    call_ok(c, &["CONSISTENCY.CHECK", "CHANGED"])
}

fn mode(r: &redis::Value) -> (String, Option<String>) {
    let reason = field(r, "reason");
    (
        as_str(field(r, "mode")).to_string(),
        (!is_null(reason)).then(|| as_str(reason).to_string()),
    )
}

fn drifted_keys(r: &redis::Value) -> Vec<String> {
    let mut keys: Vec<String> = common::as_array(field(r, "entries"))
        .iter()
        .map(|e| as_str(field(e, "key")).to_string())
        .collect();
    keys.sort();
    keys
}

fn dirty(redis: &TestRedis, rule: &str) -> i64 {
    let fields = redis.rule_info(rule);
    let (_, dirty) = fields
        .iter()
        .find(|(k, _)| k == "dirty")
        .unwrap_or_else(|| panic!("no dirty in {fields:?}"));
    dirty.parse().unwrap()
}

#[test]
fn changed_checks_read_what_was_written_and_what_the_truth_says_changed() {
    let (pg, redis) = prepared(&[weekly_changed()], &[]);
    let mut c = redis.conn();

    let first = changed(&mut c);
    assert_eq!(mode(&first), ("full".into(), Some("first check".into())));
    assert_eq!(as_i64(field(&first, "checked")), 20);
    assert_eq!(as_i64(field(&first, "drifted")), 0);

    // Nothing written, nothing changed: nothing read.
    let idle = changed(&mut c);
    assert_eq!(mode(&idle), ("changed".into(), None));
    assert_eq!(as_i64(field(&idle, "checked")), 0);

    // User 4's cache drifts; user 7's is rewritten with its true value; user
    // 9's truth changes in PostgreSQL while its key is never written.
    set(&mut c, b"user:4:cost_weekly", b"999");
    let truth7 = ledger::truth_weekly(&pg)[6].1.clone();
    set(&mut c, b"user:7:cost_weekly", truth7.as_bytes());
    ledger::add_cost(&pg, 9, "50");
    assert_eq!(dirty(&redis, "cost_weekly"), 2);
    let r = changed(&mut c);
    assert_eq!(mode(&r), ("changed".into(), None));
    assert_eq!(as_i64(field(&r, "checked")), 3, "ids 4, 7 and 9 only");
    assert_eq!(
        drifted_keys(&r),
        ["user:4:cost_weekly", "user:9:cost_weekly"]
    );
    assert_eq!(dirty(&redis, "cost_weekly"), 0);

    // A full check finds exactly the same among those ids, and nothing else.
    let full = call_ok(&mut c, &["CONSISTENCY.CHECK"]);
    assert_eq!(mode(&full), ("full".into(), None));
    assert_eq!(drifted_keys(&full), drifted_keys(&r));

    // FIX ALL CHANGED repairs what changed since.
    set(&mut c, b"user:5:cost_weekly", b"777");
    let fixed = call_ok(&mut c, &["CONSISTENCY.FIX", "ALL", "CHANGED"]);
    assert_eq!(mode(&fixed), ("changed".into(), None));
    assert_eq!(as_i64(field(&fixed, "checked")), 1);
    assert_eq!(as_i64(field(&fixed, "changed")), 1);
    let exists: bool = redis::cmd("EXISTS")
        .arg("user:5:cost_weekly")
        .query(&mut c)
        .unwrap();
    assert!(!exists, "the drifted key was cleared");
}

#[test]
fn full_instead_after_overflow_flushall_and_a_load_and_after_a_restart() {
    let (pg, redis) = prepared(&[common::weekly_rule_json()], &[]);
    let mut c = redis.conn();
    call_ok(&mut c, &["CONSISTENCY.CHECK"]);
    assert_eq!(mode(&changed(&mut c)).0, "changed");

    // More dirty ids than dirty-max-ids: dropped, and the next run is full.
    call_ok(&mut c, &["CONFIG", "SET", "consistency.dirty-max-ids", "2"]);
    for id in 1..=3 {
        set(&mut c, format!("user:{id}:cost_weekly").as_bytes(), b"1");
    }
    let r = changed(&mut c);
    assert_eq!(
        mode(&r),
        ("full".into(), Some("dirty set overflowed".into()))
    );
    assert_eq!(as_i64(field(&r, "checked")), 20);
    assert_eq!(mode(&changed(&mut c)).0, "changed");
    call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.dirty-max-ids", "1000000"],
    );

    // A load (DEBUG RELOAD saves and loads the RDB) and FLUSHALL change keys
    // without per-key events.
    call_ok(&mut c, &["DEBUG", "RELOAD"]);
    assert_eq!(
        mode(&changed(&mut c)),
        ("full".into(), Some("loaded".into()))
    );
    call_ok(&mut c, &["FLUSHALL"]);
    let r = changed(&mut c);
    assert_eq!(mode(&r), ("full".into(), Some("flushed".into())));
    assert_eq!(as_i64(field(&r, "checked")), 0, "nothing left to read");
    assert_eq!(mode(&changed(&mut c)).0, "changed");

    // A restarted server knows nothing of what was written before.
    drop(c);
    let rules = common::write_rules(&[common::weekly_rule_json()]);
    let again = TestRedis::start_for(&pg, &rules, &[]);
    let r = changed(&mut again.conn());
    assert_eq!(mode(&r), ("full".into(), Some("first check".into())));
    drop(redis);
}

#[test]
fn expired_and_evicted_keys_mark_their_ids() {
    let (_pg, redis) = prepared(&[common::weekly_rule_json()], &[]);
    let mut c = redis.conn();
    call_ok(&mut c, &["CONSISTENCY.CHECK"]);
    assert_eq!(dirty(&redis, "cost_weekly"), 0);

    // Expiry: a key set with a 50 ms TTL, then looked up (or swept) away.
    redis::cmd("SET")
        .arg("user:3:cost_weekly")
        .arg("1")
        .arg("PX")
        .arg(50)
        .query::<()>(&mut c)
        .unwrap();
    call_ok(&mut c, &["CONSISTENCY.CHECK", "CHANGED"]);
    std::thread::sleep(Duration::from_millis(120));
    let _: Option<String> = redis::cmd("GET")
        .arg("user:3:cost_weekly")
        .query(&mut c)
        .unwrap();
    assert_eq!(dirty(&redis, "cost_weekly"), 1, "the expiry marked id 3");
    call_ok(&mut c, &["CONSISTENCY.CHECK", "CHANGED"]);

    // Eviction: under a tight maxmemory with allkeys-random, filler writes
    // evict rule keys too.
    let used: i64 = redis.info("memory")["used_memory"].parse().unwrap();
    call_ok(
        &mut c,
        &["CONFIG", "SET", "maxmemory", &(used + 200_000).to_string()],
    );
    call_ok(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-random"],
    );
    let filler = "x".repeat(10_000);
    for i in 0..200 {
        let _ = redis::cmd("SET")
            .arg(format!("filler:{i}"))
            .arg(&filler)
            .query::<()>(&mut c);
    }
    let evicted: i64 = redis.info("stats")["evicted_keys"].parse().unwrap();
    assert!(evicted > 0);
    assert!(
        wait_until(Duration::from_secs(2), || dirty(&redis, "cost_weekly") > 0),
        "{evicted} keys evicted, none of them marked (20 of ~200 keys are rule keys)"
    );
    call_ok(&mut c, &["CONFIG", "SET", "maxmemory", "0"]);
}

#[test]
fn binary_key_names_pass_the_keyspace_callback_unharmed() {
    let (_pg, redis) = prepared(&[common::weekly_rule_json()], &[]);
    let mut c = redis.conn();
    call_ok(&mut c, &["CONSISTENCY.CHECK"]);
    let keys: [&[u8]; 4] = [
        b"user:\xff\xfe:cost_weekly",
        b"user:\x00:cost_weekly",
        b"user:%n%s:cost_weekly",
        b"\xc3\x28user:1:cost_weekly",
    ];
    for key in keys {
        redis::cmd("SET")
            .arg(key)
            .arg(b"\xff")
            .query::<()>(&mut c)
            .unwrap();
        redis::cmd("DEL").arg(key).query::<()>(&mut c).unwrap();
        redis::cmd("SET")
            .arg(key)
            .arg("1")
            .query::<()>(&mut c)
            .unwrap();
    }
    // Three of them match the template; the last does not.
    assert_eq!(dirty(&redis, "cost_weekly"), 3);
    let r = changed(&mut c);
    assert_eq!(mode(&r).0, "changed");
    assert_eq!(as_i64(field(&r, "drifted")), 3);
    crate::fault_support::ping(&mut c);
}

#[test]
fn scheduled_runs_check_what_changed_and_a_full_one_every_full_every_sec() {
    let mut rule = common::weekly_rule_json();
    rule["interval_sec"] = json!(1);
    rule["full_every_sec"] = json!(3600);
    let (_pg, redis) = prepared(&[rule], &[]);
    let mut c = redis.conn();
    // The rule's figures, all from one INFO.
    let rule_run = || -> std::collections::BTreeMap<String, i64> {
        let info = redis.info("consistency");
        info["consistency_rule_cost_weekly"]
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
            .collect()
    };
    // The first scheduled run is full (no baseline): all 20 keys.
    assert!(
        wait_until(Duration::from_secs(10), || rule_run()["checked"] == 20),
        "{:?}",
        rule_run()
    );
    // Then only what is written: one key read, one drift found.
    set(&mut c, b"user:2:cost_weekly", b"555");
    let mut seen = rule_run();
    assert!(
        wait_until(Duration::from_secs(10), || {
            seen = rule_run();
            seen["drifted"] == 1
        }),
        "{seen:?}"
    );
    assert_eq!(seen["checked"], 1, "a CHANGED run read one key: {seen:?}");
    assert_eq!(seen["runs_failed"], 0);
}
