//! CONSISTENCY.CHECK over the seed 000 number caches: every status a number rule
//! can report, the exact reply shape documented in the README in RESP2, RESP3 and
//! `FORMAT json`, and the exact set of reported keys.

use crate::check_support;
use crate::common;

use check_support::{as_json_shown, check, check_json, num, truth_map, Entry, Proto, Report};
use common::{ledger, TestPg, TestRedis};

const WEEKLY: &str = "user:{id}:cost_weekly";
const MONTHLY: &str = "user:{id}:cost_monthly";

fn id(n: i64) -> Vec<u8> {
    n.to_string().into_bytes()
}

#[test]
fn number_rule_reports_exactly_the_injected_drift_in_every_format() {
    const USERS: usize = 2000;
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, USERS, 2, 0);
    let rules = common::write_rules(&[common::weekly_rule_json(), common::monthly_rule_json()]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    ledger::fill_cache_monthly(&mut c, &pg);
    let weekly = truth_map(&ledger::truth_weekly(&pg));
    let monthly = truth_map(&ledger::truth_monthly(&pg));
    let t = |m: &std::collections::BTreeMap<i64, String>, id: i64| m[&id].clone();
    let tf =
        |m: &std::collections::BTreeMap<i64, String>, id: i64| -> f64 { m[&id].parse().unwrap() };
    // PostgreSQL prints numeric(21,15) sums with all 15 decimals.
    assert_eq!(t(&weekly, 4).split_once('.').unwrap().1.len(), 15);

    let mut want = Vec::new();
    let set = |c: &mut redis::Connection, template: &str, n: i64, value: &str| {
        check_support::set(
            c,
            &check_support::key_bytes(template, &id(n)),
            value.as_bytes(),
        );
    };
    // The seed: a weekly cache far above the truth.
    set(&mut c, WEEKLY, 4, "50.1");
    want.push(
        Entry::new("cost_weekly", WEEKLY, &id(4), "drift")
            .cached("50.1")
            .truth(t(&weekly, 4))
            .with_diff(),
    );
    // Beyond the threshold below the truth.
    let low = num(tf(&weekly, 5) - 7.5);
    set(&mut c, WEEKLY, 5, &low);
    want.push(
        Entry::new("cost_weekly", WEEKLY, &id(5), "drift")
            .cached(low)
            .truth(t(&weekly, 5))
            .with_diff(),
    );
    // Within the threshold (5.0): not reported.
    set(&mut c, WEEKLY, 6, &num(tf(&weekly, 6) + 3.0));
    set(&mut c, WEEKLY, 3, &num(tf(&weekly, 3) - 4.9));
    // Unparseable, NaN, wrong type: invalid, with the truth shown.
    set(&mut c, WEEKLY, 8, "abc");
    want.push(
        Entry::new("cost_weekly", WEEKLY, &id(8), "invalid")
            .cached("abc")
            .truth(t(&weekly, 8)),
    );
    set(&mut c, WEEKLY, 9, "nan");
    want.push(
        Entry::new("cost_weekly", WEEKLY, &id(9), "invalid")
            .cached("nan")
            .truth(t(&weekly, 9)),
    );
    let _: () = redis::cmd("DEL")
        .arg("user:10:cost_weekly")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("user:10:cost_weekly")
        .arg("v")
        .arg(t(&weekly, 10))
        .query(&mut c)
        .unwrap();
    want.push(
        Entry::new("cost_weekly", WEEKLY, &id(10), "invalid")
            .cached("(hash)")
            .truth(t(&weekly, 10)),
    );
    // A key for an id the users table does not have: orphan.
    set(&mut c, WEEKLY, 999_999, "1.0");
    want.push(Entry::new("cost_weekly", WEEKLY, &id(999_999), "orphan").cached("1.0"));
    // Monthly: one far drift, one unparseable.
    let high = num(tf(&monthly, 12) + 20.0);
    set(&mut c, MONTHLY, 12, &high);
    want.push(
        Entry::new("cost_monthly", MONTHLY, &id(12), "drift")
            .cached(high)
            .truth(t(&monthly, 12))
            .with_diff(),
    );
    set(&mut c, MONTHLY, 11, "12,5");
    want.push(
        Entry::new("cost_monthly", MONTHLY, &id(11), "invalid")
            .cached("12,5")
            .truth(t(&monthly, 11)),
    );
    // A soft-deleted user's keys (still holding their old, once true values): orphans.
    ledger::soft_delete_user(&pg, 7);
    want.push(Entry::new("cost_weekly", WEEKLY, &id(7), "orphan").cached(t(&weekly, 7)));
    want.push(Entry::new("cost_monthly", MONTHLY, &id(7), "orphan").cached(t(&monthly, 7)));

    // Every user has both keys, plus the weekly orphan 999999.
    let weekly_keys = USERS as i64 + 1;
    let monthly_keys = USERS as i64;
    let assert_report = |r: &Report, want: &[Entry], what: &str| {
        eprintln!(
            "[{what}] checked {} drifted {} duration {} ms truth {} ms",
            r.checked, r.drifted, r.duration_ms, r.truth_ms
        );
        assert_eq!(r.checked, weekly_keys + monthly_keys, "{what}: checked");
        assert_eq!(r.ids, USERS as i64 + 1, "{what}: distinct ids");
        assert_eq!(
            r.checked_by_rule(),
            vec![
                ("cost_weekly".to_string(), weekly_keys),
                ("cost_monthly".to_string(), monthly_keys)
            ],
            "{what}: by_rule"
        );
        assert_eq!(r.rounds, 2, "{what}: one check and one verification round");
        r.assert_findings(want);
    };

    let r2 = check(&mut c, Proto::Resp2, &[]);
    assert_report(&r2, &want, "RESP2");
    // Largest |diff| first: the seed's 50.1.
    assert_eq!(r2.entries[0].key, b"user:4:cost_weekly");
    assert_eq!(r2.max_diff_key.as_deref(), Some(&b"user:4:cost_weekly"[..]));

    let mut c3 = redis.conn_resp3();
    let r3 = check(&mut c3, Proto::Resp3, &[]);
    assert_report(&r3, &want, "RESP3");

    let rj = check_json(&mut c, &[]);
    assert_report(&rj, &as_json_shown(&want), "JSON");

    // Read-only: every value is still what the test wrote.
    let v: String = redis::cmd("GET")
        .arg("user:4:cost_weekly")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, "50.1");
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, weekly_keys + monthly_keys);
}

#[test]
fn a_clean_cache_reports_nothing() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 300, 3, 5);
    let rules = common::write_rules(&[common::weekly_rule_json()]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    for proto in [Proto::Resp2, Proto::Resp3] {
        let mut conn = match proto {
            Proto::Resp2 => redis.conn(),
            Proto::Resp3 => redis.conn_resp3(),
        };
        let r = check(&mut conn, proto, &[]);
        assert_eq!(r.checked, 300);
        assert_eq!(r.ids, 300);
        // Nothing drifted: no verification round is needed.
        assert_eq!(r.rounds, 1);
        assert_eq!(r.rate, 0.0);
        r.assert_findings(&[]);
        assert!(r.max_diff.is_none() && r.max_diff_key.is_none());
    }
    let rj = check_json(&mut c, &[]);
    assert_eq!(rj.checked, 300);
    rj.assert_findings(&[]);
}
