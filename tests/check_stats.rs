//! What a check leaves behind and the commands around it: STATUS `last_check`,
//! the `INFO consistency` counters, CONSISTENCY.RULES and CONSISTENCY.RELOAD.

use crate::check_support;
use crate::common;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use check_support::{check, num, set, truth_map, Entry, Proto, Report, STATUSES};
use common::{
    as_array, as_bool, as_i64, as_str, call_err, call_ok, field, field_names, is_null, ledger,
    TestPg, TestRedis,
};
use redis::Value;
use serde_json::json;

const WEEKLY: &str = "user:{id}:cost_weekly";
const MONTHLY: &str = "user:{id}:cost_monthly";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `INFO consistency` as name -> integer, without the `consistency_` prefix Redis
/// puts on a module's fields; the per-rule dict fields are read by `rule_info`.
fn info(redis: &TestRedis) -> BTreeMap<String, i64> {
    redis
        .info("consistency")
        .into_iter()
        .filter(|(k, _)| !k.starts_with("consistency_rule_"))
        .map(|(k, v)| {
            let name = k
                .strip_prefix("consistency_")
                .unwrap_or_else(|| panic!("INFO field {k} lacks the module prefix"))
                .to_string();
            let n = v
                .parse()
                .unwrap_or_else(|_| panic!("INFO {k}:{v} is not an integer"));
            (name, n)
        })
        .collect()
}

const INFO_FIELDS: [&str; 24] = [
    "rules_loaded",
    "checks_total",
    "keys_checked_total",
    "drifted_total",
    "drifted_drift",
    "drifted_invalid",
    "drifted_orphan",
    "drifted_missing",
    "drifted_no_ttl",
    "drifted_bad_ttl",
    "drifted_stale",
    "fixes_total",
    "purged_keys_total",
    "pg_errors_total",
    "pg_query_ms_last",
    "pg_query_ms_max",
    "lane_truth_queued",
    "lane_keyspace_queued",
    "last_check_age_sec",
    "last_check_drifted",
    "pg_up",
    "runs_failed_total",
    "check_memory_peak_bytes",
    "watch_queries_total",
];

/// One rule's dict field of `INFO consistency`, as (key, integer) in order.
fn rule_info(redis: &TestRedis, rule: &str) -> Vec<(String, i64)> {
    redis
        .rule_info(rule)
        .into_iter()
        .map(|(k, v)| (k, v.parse().expect("an integer")))
        .collect()
}

/// The per-rule figures a full check leaves: (checked, drifted), age 0 or 1 s.
fn assert_rule_runs(redis: &TestRedis, r: &Report) {
    for (rule, checked, drifted) in &r.by_rule {
        let fields = rule_info(redis, rule);
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "checked",
                "drifted",
                "last_run_age_sec",
                "last_duration_ms",
                "runs_failed",
                "dirty"
            ]
        );
        let value = |k: &str| fields.iter().find(|(n, _)| n == k).unwrap().1;
        assert_eq!(
            (value("checked"), value("drifted")),
            (*checked, *drifted),
            "{rule}"
        );
        assert!(
            (0..=1).contains(&value("last_run_age_sec")),
            "{rule}: {fields:?}"
        );
        assert_eq!(value("last_duration_ms"), r.duration_ms, "{rule}");
        assert_eq!(value("runs_failed"), 0, "{rule}");
    }
}

fn assert_info_order(redis: &TestRedis, rules: &[&str]) {
    let text: String = redis::cmd("INFO")
        .arg("consistency")
        .query(&mut redis.conn())
        .unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(':'))
        .map(|l| l.split_once(':').unwrap().0)
        .collect();
    let want: Vec<String> = INFO_FIELDS
        .iter()
        .map(|f| format!("consistency_{f}"))
        .chain(rules.iter().map(|r| format!("consistency_rule_{r}")))
        .collect();
    assert_eq!(names, want, "INFO consistency fields and their order");
}

/// The counters a check adds, by field.
fn deltas(r: &Report) -> BTreeMap<String, i64> {
    let mut d = BTreeMap::new();
    d.insert("checks_total".to_string(), 1);
    d.insert("keys_checked_total".to_string(), r.checked);
    d.insert("drifted_total".to_string(), r.drifted);
    for s in STATUSES {
        d.insert(format!("drifted_{s}"), r.status_count(s));
    }
    d
}

fn assert_counters(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>, r: &Report) {
    for (name, delta) in deltas(r) {
        assert_eq!(
            after[&name] - before[&name],
            delta,
            "INFO {name}: {} -> {}",
            before[&name],
            after[&name]
        );
    }
    assert_eq!(after["last_check_drifted"], r.drifted);
    assert!((0..=1).contains(&after["last_check_age_sec"]), "{after:?}");
    assert_eq!(after["fixes_total"], before["fixes_total"]);
    assert_eq!(after["purged_keys_total"], before["purged_keys_total"]);
    assert_eq!(after["pg_errors_total"], 0);
    assert!(after["pg_query_ms_max"] >= after["pg_query_ms_last"]);
    assert_eq!(after["lane_truth_queued"], 0);
    assert_eq!(after["lane_keyspace_queued"], 0);
}

fn assert_last_check(status: &Value, r: &Report, from_ms: i64, to_ms: i64) {
    let last = field(status, "last_check");
    assert_eq!(
        field_names(last),
        ["at_ms", "duration_ms", "checked", "drifted", "by_status"]
    );
    let at = as_i64(field(last, "at_ms"));
    assert!(
        from_ms <= at && at <= to_ms,
        "at_ms {at} not in [{from_ms}, {to_ms}]"
    );
    assert_eq!(as_i64(field(last, "duration_ms")), r.duration_ms);
    assert_eq!(as_i64(field(last, "checked")), r.checked);
    assert_eq!(as_i64(field(last, "drifted")), r.drifted);
    let by_status = field(last, "by_status");
    assert_eq!(field_names(by_status), STATUSES);
    let counts: Vec<(String, i64)> = STATUSES
        .iter()
        .map(|s| (s.to_string(), as_i64(field(by_status, s))))
        .collect();
    assert_eq!(counts, r.by_status);
}

#[test]
fn status_and_info_account_for_each_check() {
    let hash_rule = json!({"name": "stats", "kind": "hash_field", "key": "stats:{id}",
        "field": "weekly", "truth": ledger::WEEKLY_TRUTH, "require_ttl": true});
    let rules = [
        common::weekly_rule_json(),
        common::presence_rule_json(),
        hash_rule,
    ];
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 40, 2, 17);
    ledger::add_endpoint(&pg, "ep-1", true);
    ledger::add_endpoint(&pg, "ep-2", true);
    let path = common::write_rules(&rules);
    let redis = TestRedis::start_for(&pg, &path, &[]);
    let mut c = redis.conn();

    let status = call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    assert_eq!(
        field_names(&status),
        [
            "version",
            "rules",
            "rules_error",
            "pg",
            "lanes",
            "last_check",
            "schedule"
        ]
    );
    assert!(is_null(field(&status, "last_check")), "{status:?}");
    assert_eq!(as_i64(field(&status, "rules")), 3);
    assert!(is_null(field(&status, "rules_error")));
    assert_info_order(&redis, &["cost_weekly", "mcp_connection", "stats"]);
    let start = info(&redis);
    assert_eq!(start["rules_loaded"], 3);
    assert_eq!(start["checks_total"], 0);
    assert_eq!(start["last_check_age_sec"], -1);
    assert_eq!(start["runs_failed_total"], 0);
    let never: Vec<i64> = rule_info(&redis, "stats")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(never, [0, 0, -1, 0, 0, 0], "a rule before its first run");

    ledger::fill_cache_weekly(&mut c, &pg);
    let truth = truth_map(&ledger::truth_weekly(&pg));
    for (id, value) in &truth {
        let _: () = redis::cmd("HSET")
            .arg(format!("stats:{id}"))
            .arg("weekly")
            .arg(value)
            .query(&mut c)
            .unwrap();
        let _: bool = redis::cmd("EXPIRE")
            .arg(format!("stats:{id}"))
            .arg(600)
            .query(&mut c)
            .unwrap();
    }
    set(&mut c, b"mcp:connection:state:ep-1", b"1");
    let high = num(truth[&2].parse::<f64>().unwrap() + 9.0);
    set(&mut c, b"user:2:cost_weekly", high.as_bytes());
    set(&mut c, b"user:3:cost_weekly", b"x");
    set(&mut c, b"user:999:cost_weekly", b"1");
    let _: bool = redis::cmd("PERSIST").arg("stats:5").query(&mut c).unwrap();
    let want = vec![
        Entry::new("cost_weekly", WEEKLY, b"2", "drift")
            .cached(high)
            .truth(truth[&2].clone())
            .with_diff(),
        Entry::new("cost_weekly", WEEKLY, b"3", "invalid")
            .cached("x")
            .truth(truth[&3].clone()),
        Entry::new("cost_weekly", WEEKLY, b"999", "orphan").cached("1"),
        Entry::new(
            "mcp_connection",
            "mcp:connection:state:{id}",
            b"ep-2",
            "missing",
        ),
        Entry::new("stats", "stats:{id}", b"5", "no_ttl")
            .cached(truth[&5].clone())
            .truth(truth[&5].clone()),
    ];

    let t0 = now_ms();
    let r = check(&mut c, Proto::Resp2, &[]);
    let t1 = now_ms();
    r.assert_findings(&want);
    assert_eq!(r.checked, 41 + 2 + 40);
    let status = call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    assert_last_check(&status, &r, t0, t1);
    let after = info(&redis);
    assert_counters(&start, &after, &r);
    assert_eq!(after["pg_up"], 1);
    assert_eq!(start["check_memory_peak_bytes"], 0);
    let peak = after["check_memory_peak_bytes"];
    assert!(peak > 0 && peak < 64 << 20, "{peak}");
    assert_rule_runs(&redis, &r);

    // Refused input is no check.
    call_err(&mut c, &["CONSISTENCY.CHECK", "LIMIT", "x"]);
    assert_eq!(info(&redis)["checks_total"], 1);

    // A second, smaller check: the counters add up, last_check is replaced.
    let t0 = now_ms();
    let r2 = check(
        &mut c,
        Proto::Resp2,
        &["RULE", "cost_weekly", "ID", "2", "ID", "4"],
    );
    let t1 = now_ms();
    r2.assert_findings(&want[..1]);
    assert_eq!(r2.checked, 2);
    let after2 = info(&redis);
    assert_counters(&after, &after2, &r2);
    assert_eq!(after2["checks_total"], 2);
    // A check of given ids is a spot check, not the rule's run: the per-rule
    // figures still show the full check.
    assert_rule_runs(&redis, &r);
    assert_last_check(&call_ok(&mut c, &["CONSISTENCY.STATUS"]), &r2, t0, t1);

    // STATUS in RESP3: the same shape with native types.
    let mut c3 = redis.conn_resp3();
    let status = call_ok(&mut c3, &["CONSISTENCY.STATUS"]);
    assert!(matches!(status, Value::Map(_)), "{status:?}");
    let pg_map = field(&status, "pg");
    assert_eq!(
        field_names(pg_map),
        ["url", "state", "pool_size", "idle", "last_error"]
    );
    assert_eq!(as_str(field(pg_map, "state")), "ok");
    assert!(is_null(field(pg_map, "last_error")));
    // Shown as parsed, not as written (the test url may name dbname twice).
    assert_eq!(
        as_str(field(pg_map, "url")),
        consistency_bridge::redact_url(&pg.url())
    );
    let lanes = field(&status, "lanes");
    assert_eq!(field_names(lanes), ["truth", "keyspace"]);
    for lane in ["truth", "keyspace"] {
        assert_eq!(field_names(field(lanes, lane)), ["workers", "queued"]);
        assert_eq!(as_i64(field(field(lanes, lane), "queued")), 0);
    }
    let schedule = field(&status, "schedule");
    assert_eq!(
        field_names(schedule),
        ["interval_sec", "autofix", "next_in_sec"]
    );
    assert!(matches!(field(schedule, "autofix"), Value::Boolean(false)));
}

#[test]
fn rules_lists_every_setting_with_defaults_filled_in() {
    let hash_rule = json!({"name": "stats", "kind": "hash_field", "key": "stats:{{id}}",
        "field": "weekly", "truth": ledger::WEEKLY_TRUTH, "threshold_pct": 12.5,
        "fix": "rewrite", "missing": "report", "require_ttl": true});
    let rules = [
        common::weekly_rule_json(),
        common::window_rule_json(),
        common::presence_rule_json(),
        hash_rule,
    ];
    let pg = TestPg::fresh();
    let path = common::write_rules(&rules);
    let redis = TestRedis::start_for(&pg, &path, &[("threshold", "2.5")]);
    for proto in [Proto::Resp2, Proto::Resp3] {
        let mut c = match proto {
            Proto::Resp2 => redis.conn(),
            Proto::Resp3 => redis.conn_resp3(),
        };
        let reply = call_ok(&mut c, &["CONSISTENCY.RULES"]);
        let list = as_array(&reply);
        assert_eq!(list.len(), 4);
        let base = [
            "name",
            "kind",
            "key",
            "threshold",
            "threshold_pct",
            "fix",
            "missing",
            "require_ttl",
            "interval_sec",
        ];
        let with = |extra: &'static str| {
            let mut v: Vec<&str> = base.to_vec();
            v.push(extra);
            v
        };
        assert_eq!(field_names(&list[0]), base);
        assert_eq!(field_names(&list[1]), with("window_ms"));
        assert_eq!(field_names(&list[2]), base);
        assert_eq!(field_names(&list[3]), with("field"));
        let double = |v: &Value| match (proto, v) {
            (Proto::Resp3, Value::Double(d)) => *d,
            (Proto::Resp2, Value::BulkString(_)) => common::as_f64(v),
            _ => panic!("not a {proto:?} double: {v:?}"),
        };
        let int_or_null = |v: &Value| match v {
            Value::Nil => None,
            Value::Int(i) => Some(*i),
            other => panic!("not an integer or null: {other:?}"),
        };
        // (name, kind, key, threshold, pct, fix, missing, require_ttl, interval)
        let want = [
            (
                "cost_weekly",
                "number",
                WEEKLY,
                5.0,
                None,
                "delete",
                "ignore",
                false,
                None,
            ),
            (
                "cost_5h",
                "window_sum",
                "user:{id}:cost_5h_rolling",
                5.0,
                None,
                "delete",
                "ignore",
                false,
                None,
            ),
            (
                "mcp_connection",
                "presence",
                "mcp:connection:state:{id}",
                2.5,
                None,
                "delete",
                "report",
                false,
                Some(30),
            ),
            (
                "stats",
                "hash_field",
                "stats:{{id}}",
                2.5,
                Some(12.5),
                "rewrite",
                "report",
                true,
                None,
            ),
        ];
        for (rule, w) in list.iter().zip(want) {
            assert_eq!(as_str(field(rule, "name")), w.0);
            assert_eq!(as_str(field(rule, "kind")), w.1);
            assert_eq!(as_str(field(rule, "key")), w.2);
            assert_eq!(double(field(rule, "threshold")), w.3, "{}", w.0);
            let pct = field(rule, "threshold_pct");
            assert_eq!(
                if is_null(pct) {
                    None
                } else {
                    Some(double(pct))
                },
                w.4,
                "{}",
                w.0
            );
            assert_eq!(as_str(field(rule, "fix")), w.5);
            assert_eq!(as_str(field(rule, "missing")), w.6, "{}", w.0);
            match (proto, field(rule, "require_ttl")) {
                (Proto::Resp3, Value::Boolean(b)) => assert_eq!(*b, w.7),
                (Proto::Resp2, Value::Int(i)) => assert_eq!(*i == 1, w.7),
                (_, other) => panic!("require_ttl is not a {proto:?} boolean: {other:?}"),
            }
            assert_eq!(as_bool(field(rule, "require_ttl")), w.7);
            assert_eq!(int_or_null(field(rule, "interval_sec")), w.8, "{}", w.0);
        }
        assert_eq!(as_i64(field(&list[1], "window_ms")), 18_000_000);
        assert_eq!(as_str(field(&list[3], "field")), "weekly");
    }
    // The default threshold follows the config.
    let mut c = redis.conn();
    call_ok(&mut c, &["CONFIG", "SET", "consistency.threshold", "1.25"]);
    let reply = call_ok(&mut c, &["CONSISTENCY.RULES"]);
    let list = as_array(&reply);
    assert_eq!(common::as_f64(field(&list[2], "threshold")), 1.25);
    assert_eq!(common::as_f64(field(&list[0], "threshold")), 5.0);
    let err = call_err(&mut c, &["CONSISTENCY.RULES", "extra"]);
    assert!(err.starts_with("ERR "), "{err}");
}

#[test]
fn reload_replaces_rules_and_a_bad_file_keeps_the_old_ones() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 20, 2, 18);
    let path = common::write_rules(&[common::weekly_rule_json()]);
    let file = path.display().to_string();
    let redis = TestRedis::start_for(&pg, &path, &[]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    ledger::fill_cache_monthly(&mut c, &pg);
    let weekly = truth_map(&ledger::truth_weekly(&pg));
    let monthly = truth_map(&ledger::truth_monthly(&pg));
    let w = num(weekly[&3].parse::<f64>().unwrap() + 11.0);
    set(&mut c, b"user:3:cost_weekly", w.as_bytes());
    let m = num(monthly[&4].parse::<f64>().unwrap() - 12.0);
    set(&mut c, b"user:4:cost_monthly", m.as_bytes());
    let weekly_entry = Entry::new("cost_weekly", WEEKLY, b"3", "drift")
        .cached(w)
        .truth(weekly[&3].clone())
        .with_diff();
    let monthly_entry = Entry::new("cost_monthly", MONTHLY, b"4", "drift")
        .cached(m)
        .truth(monthly[&4].clone())
        .with_diff();

    let r = check(&mut c, Proto::Resp2, &[]);
    assert_eq!(r.checked, 20);
    r.assert_findings(std::slice::from_ref(&weekly_entry));

    // A good file: the new rules are in force at once.
    common::write_rules_to(
        &path,
        &[common::weekly_rule_json(), common::monthly_rule_json()],
    );
    let reply = call_ok(&mut c, &["CONSISTENCY.RELOAD"]);
    assert_eq!(field_names(&reply), ["rules", "file"]);
    assert_eq!(as_i64(field(&reply, "rules")), 2);
    assert_eq!(as_str(field(&reply, "file")), file);
    assert_eq!(as_array(&call_ok(&mut c, &["CONSISTENCY.RULES"])).len(), 2);
    let both = [weekly_entry.clone(), monthly_entry.clone()];
    let r = check(&mut c, Proto::Resp2, &[]);
    assert_eq!(r.checked, 40);
    r.assert_findings(&both);
    assert_eq!(info(&redis)["rules_loaded"], 2);

    // A bad rule: refused with the file, the rule and the problem; old rules stay.
    let mut bad = common::monthly_rule_json();
    bad["threshold"] = json!(-1);
    common::write_rules_to(&path, &[common::weekly_rule_json(), bad]);
    let err = call_err(&mut c, &["CONSISTENCY.RELOAD"]);
    assert!(err.starts_with("ERR "), "{err}");
    for part in [file.as_str(), "cost_monthly", "threshold", "-1"] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
    // Unparseable JSON, and a rule with an unknown kind.
    common::write_rules_text_to(&path, "{\"rules\": [");
    let err = call_err(&mut c, &["CONSISTENCY.RELOAD"]);
    assert!(err.starts_with("ERR ") && err.contains(&file), "{err}");
    let mut odd = common::weekly_rule_json();
    odd["kind"] = json!("counter");
    common::write_rules_to(&path, &[odd]);
    let err = call_err(&mut c, &["CONSISTENCY.RELOAD"]);
    for part in [file.as_str(), "cost_weekly", "counter"] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
    // Still the two good rules, and CHECK still works.
    assert_eq!(as_array(&call_ok(&mut c, &["CONSISTENCY.RULES"])).len(), 2);
    let status = call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    assert_eq!(as_i64(field(&status, "rules")), 2);
    assert_eq!(info(&redis)["rules_loaded"], 2);
    check(&mut c, Proto::Resp2, &[]).assert_findings(&both);
    let err = call_err(&mut c, &["CONSISTENCY.RELOAD", "now"]);
    assert_eq!(err, "ERR unknown option 'now'");
}

/// `check_memory_peak_bytes` counts what a check held (to within 4 KiB per
/// thread): a spot check of one id holds little, a check of 3,000 keys more,
/// and the figure is the highest.
#[test]
fn check_memory_peak_follows_what_a_check_holds() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 3000, 1, 5);
    let path = common::write_rules(&[common::weekly_rule_json()]);
    let redis = TestRedis::start_for(&pg, &path, &[]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);

    call_ok(&mut c, &["CONSISTENCY.CHECK", "ID", "7"]);
    let spot = info(&redis)["check_memory_peak_bytes"];
    call_ok(&mut c, &["CONSISTENCY.CHECK"]);
    let full = info(&redis)["check_memory_peak_bytes"];
    // At least the 3,000 keys' names and values, held at once.
    assert!(
        full > 3000 * 40 && full > 2 * spot,
        "spot {spot}, full {full}"
    );
    call_ok(&mut c, &["CONSISTENCY.CHECK", "ID", "8"]);
    assert_eq!(
        info(&redis)["check_memory_peak_bytes"],
        full,
        "the highest stays"
    );
}
