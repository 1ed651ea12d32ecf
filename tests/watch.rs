//! Watched rules against real Redis and PostgreSQL: an application writing the
//! truth then the cache, or the cache then (later) the truth, is consistent
//! within the looks; a cache write that never reaches PostgreSQL is reported
//! inconsistent at the last look, announced and, with autofix, repaired. The
//! looks stay within `watch-max-qps`; a flush ends pending samples as
//! `unknown`; hostile key names pass through the callback harmlessly. The 10 s
//! and 60 s looks are shortened through CONSISTENCY.DEBUG WATCH-LOOKS.
//!
//! Run: `cargo test --release --features test-hooks --test integration watch::`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::check_support::set;
use crate::common;
use common::{call_ok, ledger, wait_until, TestPg, TestRedis};
use redis::Connection;
use serde_json::json;

fn watched_weekly() -> serde_json::Value {
    let mut rule = common::weekly_rule_json();
    rule["watch"] = json!(true);
    rule
}

/// 20 users with costs, the cache filled exactly, then `rules` (watched)
/// loaded, so the fill is no sample; looks at `grace_ms`, `second_ms` and
/// `last_ms` after a write.
fn prepared(
    rules: &[serde_json::Value],
    configs: &[(&str, &str)],
    grace_ms: u64,
    second_ms: u64,
    last_ms: u64,
) -> (TestPg, TestRedis) {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 20, 2, 17);
    let grace = grace_ms.to_string();
    let mut all = vec![("watch-grace-ms", grace.as_str())];
    all.extend_from_slice(configs);
    let file = common::write_rules(&[common::weekly_rule_json()]);
    let redis = TestRedis::start_for(&pg, &file, &all);
    let mut c = redis.conn();
    let (second, last) = (second_ms.to_string(), last_ms.to_string());
    call_ok(
        &mut c,
        &["CONSISTENCY.DEBUG", "WATCH-LOOKS", &second, &last],
    );
    ledger::fill_cache_weekly(&mut c, &pg);
    common::write_rules_to(&file, rules);
    call_ok(&mut c, &["CONSISTENCY.RELOAD"]);
    (pg, redis)
}

/// A watched rule's INFO dict field, as key -> text.
fn watch_info(redis: &TestRedis, rule: &str) -> BTreeMap<String, String> {
    redis.rule_info(rule).into_iter().collect()
}

fn int(fields: &BTreeMap<String, String>, key: &str) -> i64 {
    fields
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not an integer in {fields:?}"))
}

/// Waits until every sample of `rule` has its verdict; returns the fields.
fn settled(redis: &TestRedis, rule: &str, samples: i64) -> BTreeMap<String, String> {
    let mut last = BTreeMap::new();
    let done = wait_until(Duration::from_secs(20), || {
        last = watch_info(redis, rule);
        let ended = int(&last, "watch_within_60s")
            + int(&last, "watch_inconsistent")
            + int(&last, "watch_superseded")
            + int(&last, "watch_unknown");
        int(&last, "watch_samples") == samples && ended == samples
    });
    assert!(done, "samples of {rule} never settled: {last:?}");
    last
}

fn weekly_truth_of(pg: &TestPg, user: i64) -> String {
    ledger::truth_weekly(pg)
        .into_iter()
        .find(|(id, _)| *id == user)
        .expect("a live user")
        .1
}

fn exists(c: &mut Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query(c).unwrap()
}

#[test]
fn application_writes_in_either_order_are_consistent_and_a_lost_write_is_not() {
    let (pg, redis) = prepared(&[watched_weekly()], &[("autofix", "yes")], 300, 1500, 3000);
    let mut c = redis.conn();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut sub = client.get_connection().unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("consistency:events").unwrap();
    let fields = watch_info(&redis, "cost_weekly");
    assert_eq!(int(&fields, "watch_samples"), 0);
    assert_eq!(fields["nines"], "inf");

    // Truth then cache, 100 ms apart: consistent at the first look.
    ledger::add_cost(&pg, 3, "5");
    std::thread::sleep(Duration::from_millis(100));
    set(
        &mut c,
        b"user:3:cost_weekly",
        weekly_truth_of(&pg, 3).as_bytes(),
    );

    // Cache then truth, 800 ms apart (past the grace): inconsistent at the
    // first look, consistent at the second.
    let before: f64 = weekly_truth_of(&pg, 5).parse().unwrap();
    let after = format!("{}", before + 7.0);
    set(&mut c, b"user:5:cost_weekly", after.as_bytes());
    std::thread::sleep(Duration::from_millis(800));
    ledger::add_cost(&pg, 5, "7");

    // A cache write that never reaches PostgreSQL.
    let lost = format!(
        "{}",
        weekly_truth_of(&pg, 8).parse::<f64>().unwrap() + 100.0
    );
    set(&mut c, b"user:8:cost_weekly", lost.as_bytes());

    let fields = settled(&redis, "cost_weekly", 3);
    assert_eq!(int(&fields, "watch_within_1s"), 1, "{fields:?}");
    assert_eq!(int(&fields, "watch_within_10s"), 2, "{fields:?}");
    assert_eq!(int(&fields, "watch_within_60s"), 2, "{fields:?}");
    assert_eq!(int(&fields, "watch_inconsistent"), 1, "{fields:?}");
    assert_eq!(int(&fields, "watch_unknown"), 0, "{fields:?}");
    // -log10(1/3)
    assert_eq!(fields["nines"], "0.48");

    // Announced once, with the key and both values.
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let message: String = pubsub.get_message().unwrap().get_payload().unwrap();
    let event: serde_json::Value = serde_json::from_str(&message).unwrap();
    assert_eq!(event["event"], "watch_inconsistent", "{message}");
    assert_eq!(event["key"], "user:8:cost_weekly", "{message}");
    assert_eq!(event["status"], "drift", "{message}");
    assert_eq!(event["after_ms"], 3000, "{message}");
    assert_eq!(event["cached"], lost.as_str(), "{message}");
    // Autofix repaired it the way FIX ALL does (the rule's fix: delete), and
    // left the consistent keys alone.
    assert!(wait_until(Duration::from_secs(5), || !exists(
        &mut c,
        "user:8:cost_weekly"
    )));
    assert!(exists(&mut c, "user:3:cost_weekly"));
    assert!(exists(&mut c, "user:5:cost_weekly"));
    assert!(redis.log().contains("still inconsistent after 3000 ms"));
}

#[test]
fn without_autofix_an_inconsistent_write_is_only_reported() {
    let (pg, redis) = prepared(&[watched_weekly()], &[], 100, 200, 400);
    let mut c = redis.conn();
    // RULES shows the option.
    let rules = call_ok(&mut c, &["CONSISTENCY.RULES"]);
    let rule = &common::as_array(&rules)[0];
    assert!(common::try_field(rule, "watch").is_some());
    let lost = format!("{}", weekly_truth_of(&pg, 2).parse::<f64>().unwrap() + 50.0);
    set(&mut c, b"user:2:cost_weekly", lost.as_bytes());
    let fields = settled(&redis, "cost_weekly", 1);
    assert_eq!(int(&fields, "watch_inconsistent"), 1, "{fields:?}");
    let value: String = redis::cmd("GET")
        .arg("user:2:cost_weekly")
        .query(&mut c)
        .unwrap();
    assert_eq!(value, lost);
}

#[test]
fn a_rewrite_between_looks_supersedes_and_pg_down_is_unknown_never_inconsistent() {
    let (pg, redis) = prepared(&[watched_weekly()], &[], 200, 1500, 3000);
    let mut c = redis.conn();
    let truth = weekly_truth_of(&pg, 6);
    // Wrong, looked at once (inconsistent), then rewritten right.
    set(&mut c, b"user:6:cost_weekly", b"12345");
    std::thread::sleep(Duration::from_millis(700));
    set(&mut c, b"user:6:cost_weekly", truth.as_bytes());
    let fields = settled(&redis, "cost_weekly", 2);
    assert_eq!(int(&fields, "watch_superseded"), 1, "{fields:?}");
    assert_eq!(int(&fields, "watch_within_1s"), 1, "{fields:?}");
    assert_eq!(int(&fields, "watch_inconsistent"), 0, "{fields:?}");

    // PostgreSQL unreachable: the sample ends unknown.
    call_ok(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "consistency.pg-url",
            &common::dead_pg_url(),
        ],
    );
    set(&mut c, b"user:7:cost_weekly", b"999999");
    let fields = settled(&redis, "cost_weekly", 3);
    assert_eq!(int(&fields, "watch_unknown"), 1, "{fields:?}");
    assert_eq!(int(&fields, "watch_inconsistent"), 0, "{fields:?}");
    assert_eq!(fields["nines"], "inf");
}

#[test]
fn looks_stay_within_the_query_budget_and_a_flush_ends_samples() {
    let mut monthly = common::monthly_rule_json();
    monthly["watch"] = json!(true);
    let (pg, redis) = prepared(
        &[watched_weekly(), monthly],
        &[("watch-max-qps", "2")],
        0,
        0,
        0,
    );
    let mut c = redis.conn();
    let truth = ledger::truth_weekly(&pg);
    let queries = |redis: &TestRedis| -> i64 {
        redis.info("consistency")["consistency_watch_queries_total"]
            .parse()
            .unwrap()
    };
    let start = queries(&redis);
    let began = Instant::now();
    // 3 s of writes to both rules' keys, 20 per 50 ms: every tick has looks
    // due for two rules.
    let mut writes = 0;
    while began.elapsed() < Duration::from_secs(3) {
        for (id, value) in &truth {
            set(
                &mut c,
                format!("user:{id}:cost_weekly").as_bytes(),
                value.as_bytes(),
            );
            set(&mut c, format!("user:{id}:cost_monthly").as_bytes(), b"0");
            writes += 2;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = began.elapsed().as_secs_f64();
    let sent = queries(&redis) - start;
    // The bucket starts empty and saves at most a second's worth.
    let allowed = (elapsed * 2.0).ceil() as i64 + 2;
    assert!(sent >= 2, "looks were sent: {sent}");
    assert!(
        sent <= allowed,
        "{sent} truth queries in {elapsed:.1} s at watch-max-qps 2 ({writes} writes)"
    );

    // A flush ends what is pending as unknown: never inconsistent.
    call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.watch-grace-ms", "60000"],
    );
    call_ok(
        &mut c,
        &["CONSISTENCY.DEBUG", "WATCH-LOOKS", "60000", "60000"],
    );
    set(&mut c, b"user:1:cost_weekly", b"31337");
    let before = watch_info(&redis, "cost_weekly");
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let after = watch_info(&redis, "cost_weekly");
    let ended = |f: &BTreeMap<String, String>| {
        int(f, "watch_within_60s")
            + int(f, "watch_inconsistent")
            + int(f, "watch_superseded")
            + int(f, "watch_unknown")
    };
    assert_eq!(int(&after, "watch_samples"), ended(&after), "{after:?}");
    assert!(int(&after, "watch_unknown") > int(&before, "watch_unknown"));
    assert_eq!(int(&after, "watch_inconsistent"), 0, "{after:?}");
}

#[test]
fn hostile_key_names_pass_through_the_callback_and_samples_are_bounded() {
    let mut rule = watched_weekly();
    rule["key"] = json!("user:{id}:cost_weekly");
    let (_pg, redis) = prepared(&[rule], &[("watch-max-pending", "3")], 0, 0, 0);
    let mut c = redis.conn();
    let hostile: [&[u8]; 4] = [
        b"user:%s%n%x:cost_weekly",
        b"user:\xff\xfe\x00:cost_weekly",
        b"user:\r\nPING:cost_weekly",
        b"user:{id}:cost_weekly",
    ];
    // In one MULTI: no look runs between the writes.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for key in hostile {
        pipe.cmd("SET").arg(key).arg("1").ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let fields = settled(&redis, "cost_weekly", 3);
    assert_eq!(int(&fields, "watch_dropped"), 1, "{fields:?}");
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}
