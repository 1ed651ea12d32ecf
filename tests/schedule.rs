//! Scheduled checks: the timer inside Redis that replaces the hourly cron job.

use crate::common;

use std::time::{Duration, Instant};

use common::{call_ok, field, ledger, map_of, wait_until, write_rules, TestPg, TestRedis};
use serde_json::json;

fn prepared(rules: &[serde_json::Value], configs: &[(&str, &str)]) -> (TestPg, TestRedis) {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 200, 2, 5);
    let redis = TestRedis::start_for(&pg, &write_rules(rules), configs);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    ledger::fill_cache_monthly(&mut c, &pg);
    (pg, redis)
}

fn weekly(interval: Option<u64>) -> serde_json::Value {
    let mut rule = json!({"name": "cost_weekly", "kind": "number", "key": "user:{id}:cost_weekly",
                          "truth": ledger::WEEKLY_TRUTH, "threshold": 5.0});
    if let Some(s) = interval {
        rule["interval_sec"] = json!(s);
    }
    rule
}

fn monthly() -> serde_json::Value {
    json!({"name": "cost_monthly", "kind": "number", "key": "user:{id}:cost_monthly",
           "truth": ledger::MONTHLY_TRUTH, "threshold": 5.0})
}

fn info_int(redis: &TestRedis, name: &str) -> i64 {
    redis.info("consistency")[name].parse().unwrap()
}

#[test]
fn global_interval_runs_checks_and_updates_status_and_info() {
    let (_pg, redis) = prepared(&[weekly(None)], &[("check-interval-sec", "1")]);
    let mut c = redis.conn();
    let _ = call_ok(&mut c, &["SET", "user:4:cost_weekly", "50.1"]);
    let _ = call_ok(&mut c, &["SET", "user:9:cost_weekly", "abc"]);

    let fired = wait_until(Duration::from_secs(10), || {
        info_int(&redis, "consistency_checks_total") >= 1
    });
    assert!(fired, "no scheduled check within 10 s");
    assert!(redis.wait_for_log(
        "scheduled check of cost_weekly: 200 keys, 200 ids checked, 2 drifted (1.00%), largest drift",
        Duration::from_secs(5)
    ), "summary line missing: {}", redis.log());
    assert!(redis.log().contains("at user:4:cost_weekly"));
    assert_eq!(info_int(&redis, "consistency_last_check_drifted"), 2);
    assert!(info_int(&redis, "consistency_drifted_invalid") >= 1);

    let status = call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    let last = field(&status, "last_check");
    assert_eq!(common::as_i64(field(last, "checked")), 200);
    assert_eq!(common::as_i64(field(last, "drifted")), 2);
    let schedule = field(&status, "schedule");
    assert_eq!(common::as_i64(field(schedule, "interval_sec")), 1);
    assert!(common::as_i64(field(schedule, "next_in_sec")) <= 1);
    // Not repaired without autofix.
    let v: String = redis::cmd("GET")
        .arg("user:4:cost_weekly")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "50.1");
}

#[test]
fn per_rule_interval_runs_only_that_rule() {
    let (_pg, redis) = prepared(&[weekly(Some(1)), monthly()], &[]);
    let fired = wait_until(Duration::from_secs(10), || {
        redis.log().contains("scheduled check of cost_weekly:")
    });
    assert!(
        fired,
        "the rule's own interval did not fire: {}",
        redis.log()
    );
    assert!(
        !redis.log().contains("cost_monthly:")
            && !redis.log().contains("cost_weekly, cost_monthly"),
        "a rule without an interval must not run when the global interval is off"
    );
    let mut c = redis.conn();
    let status = call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    let last = field(&status, "last_check");
    assert_eq!(
        common::as_i64(field(last, "checked")),
        200,
        "only the weekly keys"
    );
    let schedule = map_of(field(&status, "schedule"));
    assert_eq!(
        common::as_i64(&schedule[0].1),
        0,
        "the global interval stays off"
    );
}

#[test]
fn autofix_repairs_verified_drift_on_schedule() {
    let (_pg, redis) = prepared(
        &[weekly(None)],
        &[("check-interval-sec", "1"), ("autofix", "yes")],
    );
    let mut c = redis.conn();
    let _ = call_ok(&mut c, &["SET", "user:4:cost_weekly", "50.1"]);
    let repaired = wait_until(Duration::from_secs(10), || {
        let v: Option<String> = redis::cmd("GET")
            .arg("user:4:cost_weekly")
            .query(&mut c)
            .unwrap();
        v.is_none()
    });
    assert!(
        repaired,
        "autofix did not delete the drifted key: {}",
        redis.log()
    );
    assert!(redis.wait_for_log("1 repaired", Duration::from_secs(5)));
    assert!(info_int(&redis, "consistency_fixes_total") >= 1);
    let untouched: Option<String> = redis::cmd("GET")
        .arg("user:5:cost_weekly")
        .query(&mut c)
        .unwrap();
    assert!(untouched.is_some(), "keys that did not drift stay");
}

#[test]
fn replicas_do_not_run_scheduled_checks() {
    let (pg, primary) = prepared(&[weekly(None)], &[]);
    let rules = write_rules(&[weekly(None)]);
    let replica_of = format!("replicaof 127.0.0.1 {}", primary.port());
    let replica = TestRedis::start_with(
        &[
            ("pg-url", &pg.url()),
            ("rules-file", rules.to_str().unwrap()),
            ("check-interval-sec", "1"),
            ("autofix", "yes"),
        ],
        &[&replica_of],
    );
    let synced = wait_until(Duration::from_secs(10), || {
        replica
            .info("replication")
            .get("master_link_status")
            .map(String::as_str)
            == Some("up")
    });
    assert!(synced);
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        info_int(&replica, "consistency_checks_total"),
        0,
        "{}",
        replica.log()
    );
    assert!(!replica.log().contains("scheduled check of"));
    // The same config on the primary does run: the test can fail.
    let mut c = primary.conn();
    let _ = call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.check-interval-sec", "1"],
    );
    assert!(wait_until(Duration::from_secs(10), || info_int(
        &primary,
        "consistency_checks_total"
    ) >= 1));
}

/// One key of a rule's INFO dict field (`consistency_rule_<name>:k=v,...`).
fn rule_int(redis: &TestRedis, rule: &str, key: &str) -> i64 {
    let info = redis.info("consistency");
    let dict = &info[&format!("consistency_rule_{rule}")];
    dict.split(',')
        .find_map(|p| p.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not in {dict}"))
        .parse()
        .unwrap()
}

#[test]
fn a_failed_run_is_counted_and_retried_after_5s_not_a_whole_interval() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 20, 2, 5);
    // PostgreSQL refuses at first: a closed port.
    let closed = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        common::free_port()
    );
    let rules = write_rules(&[weekly(Some(12))]);
    let redis = TestRedis::start_with(
        &[
            ("pg-url", &closed),
            ("rules-file", rules.to_str().unwrap()),
            ("pg-connect-timeout-ms", "300"),
        ],
        &[],
    );
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    assert!(wait_until(Duration::from_secs(20), || {
        info_int(&redis, "consistency_runs_failed_total") == 1
    }));
    let failed_at = Instant::now();
    assert_eq!(rule_int(&redis, "cost_weekly", "runs_failed"), 1);
    assert_eq!(rule_int(&redis, "cost_weekly", "last_run_age_sec"), -1);
    assert_eq!(info_int(&redis, "consistency_pg_up"), 0);

    // PostgreSQL is back: the retry comes about 5 s after the failure, well
    // before the rule's 12 s interval would bring the next run.
    call_ok(&mut c, &["CONFIG", "SET", "consistency.pg-url", &pg.url()]);
    assert!(wait_until(Duration::from_secs(15), || {
        rule_int(&redis, "cost_weekly", "last_run_age_sec") >= 0
    }));
    let retried_after = failed_at.elapsed();
    assert!(
        retried_after > Duration::from_secs(3) && retried_after < Duration::from_secs(9),
        "retried {retried_after:?} after the failure"
    );
    assert_eq!(rule_int(&redis, "cost_weekly", "checked"), 20);
    assert_eq!(rule_int(&redis, "cost_weekly", "runs_failed"), 1);
    assert_eq!(info_int(&redis, "consistency_runs_failed_total"), 1);
    assert_eq!(info_int(&redis, "consistency_pg_up"), 1);
}
