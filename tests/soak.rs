//! Reliability: a thousand checks in a row. After a warm-up of 100 checks the
//! redis-server's resident set (VmRSS of /proc/<pid>/status) may grow by less
//! than 10% by the thousandth; every check answers the same report; counters add
//! up. The keyspace is small (a few hundred keys) so the run takes seconds.
//!
//! Run: `cargo test --release --features test-hooks --test integration soak::`

use crate::common;
use crate::fault_support;

use std::time::{Duration, Instant};

use common::{as_i64, as_str, call_ok, field, ledger, TestRedis};
use fault_support::{assert_no_crash, digest, rss_kib};

const WARM_UP: usize = 100;

/// 1000, or `SOAK_CHECKS` for a longer run.
fn checks() -> usize {
    std::env::var("SOAK_CHECKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn a_thousand_checks_in_a_row_keep_memory_flat() {
    let pg = common::TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 60, 2, 9);
    for i in 0..40 {
        ledger::add_endpoint(&pg, &format!("ep{i}"), i % 4 != 0);
    }
    let rules = common::write_rules(&[
        common::weekly_rule_json(),
        common::monthly_rule_json(),
        common::window_rule_json(),
        common::presence_rule_json(),
    ]);
    let redis = TestRedis::start_for(&pg, &rules, &[("notify-channel", "")]);
    let mut c2 = redis.conn();
    let mut c3 = redis.conn_resp3();
    ledger::fill_cache_weekly(&mut c2, &pg);
    ledger::fill_cache_monthly(&mut c2, &pg);
    ledger::fill_cache_window(&mut c2, &pg);
    for i in 0..30 {
        call_ok(
            &mut c2,
            &["SET", &format!("mcp:connection:state:ep{i}"), "up"],
        );
    }
    // Some findings of every kind, so entries and verification rounds run.
    for (k, v) in [
        ("user:3:cost_weekly", "900"),
        ("user:4:cost_monthly", "-5"),
        ("user:5:cost_weekly", "abc"),
        ("user:9999:cost_weekly", "1"),
    ] {
        call_ok(&mut c2, &["SET", k, v]);
    }
    let before = digest(&mut c2);
    let pid = redis.pid();
    let checks = checks();

    let mut first: Option<(i64, i64)> = None;
    let mut rss_at_warm_up = 0;
    let mut samples = Vec::new();
    let started = Instant::now();
    for i in 1..=checks {
        let (checked, drifted) = match i % 3 {
            0 => {
                let r = call_ok(&mut c3, &["CONSISTENCY.CHECK"]);
                (as_i64(field(&r, "checked")), as_i64(field(&r, "drifted")))
            }
            1 => {
                let r = call_ok(&mut c2, &["CONSISTENCY.CHECK"]);
                (as_i64(field(&r, "checked")), as_i64(field(&r, "drifted")))
            }
            _ => {
                let r = call_ok(&mut c2, &["CONSISTENCY.CHECK", "FORMAT", "json"]);
                let j: serde_json::Value = serde_json::from_str(as_str(&r)).unwrap();
                (
                    j["checked"].as_i64().unwrap(),
                    j["drifted"].as_i64().unwrap(),
                )
            }
        };
        match first {
            None => first = Some((checked, drifted)),
            Some(f) => assert_eq!((checked, drifted), f, "check {i} reports differently"),
        }
        if i == WARM_UP {
            rss_at_warm_up = rss_kib(pid);
        }
        if i % (checks / 10).max(1) == 0 {
            samples.push((i, rss_kib(pid)));
        }
    }
    let took = started.elapsed();
    let rss_end = rss_kib(pid);
    eprintln!(
        "{checks} checks in {took:?} ({:?} each); VmRSS kB by check: {samples:?}",
        took / checks as u32
    );
    let (checked, drifted) = first.unwrap();
    assert!(
        checked > 200 && drifted >= 14,
        "checked {checked}, drifted {drifted}"
    );
    assert!(
        (rss_end as f64) < rss_at_warm_up as f64 * 1.10,
        "VmRSS grew from {rss_at_warm_up} kB (check {WARM_UP}) to {rss_end} kB (check {checks}): {samples:?}"
    );
    let info = redis.info("consistency");
    assert_eq!(info["consistency_checks_total"], checks.to_string());
    assert_eq!(
        info["consistency_keys_checked_total"],
        (checked as usize * checks).to_string()
    );
    assert_eq!(digest(&mut c2), before, "checks changed data");
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert_no_crash(&redis.log());
}
