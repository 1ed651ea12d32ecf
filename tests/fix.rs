//! CONSISTENCY.FIX against a real redis-server and PostgreSQL: FIX of given ids
//! (clear, REWRITE, rule-level rewrite, hash_field), FIX ALL (exactly the verified
//! drift, never a key written after the verification, nothing from truth we did not
//! get), DRYRUN, PostgreSQL down, the audit stream and log, presence events, and
//! bad input. Every expectation is computed from what the test injected.
//!
//! Run: `cargo test --release --features test-hooks --test integration fix::`

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant};

use common::{ledger, TestPg, TestRedis};
use redis::{Connection, Value};
use serde_json::{json, Value as J};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A PostgreSQL database with the seed 000 ledger and a redis-server whose module
/// is pointed at it. Redis is declared first, so it stops before the database drops.
struct Env {
    redis: TestRedis,
    pg: TestPg,
}

impl Env {
    /// `users` users with 3 ledger rows each, and `rules`.
    fn new(users: usize, rules: &[J], configs: &[(&str, &str)]) -> Env {
        let pg = TestPg::fresh();
        ledger::create_schema(&pg);
        ledger::load(&pg, users, 3, 11);
        let path = common::write_rules(rules);
        let redis = TestRedis::start_for(&pg, &path, configs);
        Env { redis, pg }
    }

    /// Weekly, monthly and 5-hour caches filled with the truth for every user.
    fn fill_costs(&self, c: &mut Connection) {
        ledger::fill_cache_weekly(c, &self.pg);
        ledger::fill_cache_monthly(c, &self.pg);
        ledger::fill_cache_window(c, &self.pg);
    }

    /// The weekly truth as PostgreSQL prints it, by id.
    fn weekly(&self) -> BTreeMap<i64, String> {
        ledger::truth_weekly(&self.pg).into_iter().collect()
    }

    fn monthly(&self) -> BTreeMap<i64, String> {
        ledger::truth_monthly(&self.pg).into_iter().collect()
    }
}

/// The base rules: seed 000's three cost caches and a `fix: none` rule.
fn cost_rules() -> Vec<J> {
    vec![
        common::weekly_rule_json(),
        common::monthly_rule_json(),
        common::window_rule_json(),
        frozen_rule(),
    ]
}

/// A number rule FIX must leave alone.
fn frozen_rule() -> J {
    json!({
        "name": "frozen", "kind": "number", "key": "user:{id}:frozen",
        "truth": ledger::WEEKLY_TRUTH, "fix": "none"
    })
}

/// A number rule whose own policy is `rewrite`.
fn spend_rewrite_rule() -> J {
    json!({
        "name": "spend_rw", "kind": "number", "key": "spend:{id}",
        "truth": ledger::WEEKLY_TRUTH, "fix": "rewrite"
    })
}

/// A hash_field rule (field `weekly` of `quota:{id}`), fix delete.
fn quota_rule() -> J {
    json!({
        "name": "quota", "kind": "hash_field", "key": "quota:{id}", "field": "weekly",
        "truth": ledger::WEEKLY_TRUTH
    })
}

fn digest(c: &mut Connection) -> String {
    common::as_str(&common::call_ok(c, &["DEBUG", "DIGEST"])).to_string()
}

/// Every key with its DUMP (type, value, encoding) and whether it has a TTL.
fn snapshot(c: &mut Connection) -> BTreeMap<String, (Vec<u8>, bool)> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(c).expect("KEYS");
    let mut p = redis::pipe();
    for k in &keys {
        p.cmd("DUMP").arg(k).cmd("PTTL").arg(k);
    }
    let values: Vec<Value> = p.query(c).expect("DUMP/PTTL");
    keys.into_iter()
        .zip(values.chunks(2))
        .map(|(k, v)| {
            let dump = match &v[0] {
                Value::BulkString(b) => b.clone(),
                other => panic!("DUMP {k}: {other:?}"),
            };
            (k, (dump, common::as_i64(&v[1]) > 0))
        })
        .collect()
}

fn set(c: &mut Connection, key: &str, value: &str) {
    common::call_ok(c, &["SET", key, value]);
}

fn get(c: &mut Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(c).expect("GET")
}

fn exists(c: &mut Connection, key: &str) -> bool {
    common::as_i64(&common::call_ok(c, &["EXISTS", key])) == 1
}

fn entries(reply: &J) -> &Vec<J> {
    reply["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries in {reply}"))
}

/// The entry for `key`; panics listing the keys present.
fn entry<'a>(reply: &'a J, key: &str) -> &'a J {
    let all = entries(reply);
    let found: Vec<&J> = all.iter().filter(|e| e["key"] == key).collect();
    assert!(
        found.len() == 1,
        "expected one entry for {key}, found {}; keys: {:?}",
        found.len(),
        all.iter().map(|e| e["key"].clone()).collect::<Vec<_>>()
    );
    found[0]
}

/// key -> action, for every entry.
fn actions(reply: &J) -> BTreeMap<String, String> {
    entries(reply)
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn num(text: &str) -> f64 {
    text.parse()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

/// Adds a member of `amount` to a window ZSET, scored now.
fn add_to_window(c: &mut Connection, id: i64, amount: &str) {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let key = format!("user:{id}:cost_5h_rolling");
    redis::cmd("ZADD")
        .arg(&key)
        .arg(ms)
        .arg(format!("{ms}:injected:{amount}"))
        .query::<i64>(c)
        .expect("ZADD");
}

fn info_i64(r: &TestRedis, name: &str) -> i64 {
    r.info("consistency")
        .get(name)
        .unwrap_or_else(|| panic!("INFO consistency has no {name}"))
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------
// 1. DRYRUN changes nothing
// ---------------------------------------------------------------------------

#[test]
fn dry_run_changes_nothing_and_says_what_it_would_do() {
    let mut rules = cost_rules();
    rules.push(spend_rewrite_rule());
    let env = Env::new(
        20,
        &rules,
        &[("audit-stream", "consistency:audit"), ("audit-maxlen", "5")],
    );
    let mut c = env.redis.conn();
    env.fill_costs(&mut c);
    let weekly = env.weekly();
    ledger::fill_cache(&mut c, "spend:{id}", &ledger::truth_weekly(&env.pg));
    // Drift on users 3 and 4, an orphan, and spend:4 off by 50.
    set(&mut c, "user:3:cost_weekly", "500");
    set(&mut c, "user:4:cost_monthly", "-40");
    set(&mut c, "user:777:cost_weekly", "1");
    let spend4 = format!("{}", num(&weekly[&4]) + 50.0);
    set(&mut c, "spend:4", &spend4);
    let before = digest(&mut c);
    let keys_before = snapshot(&mut c);

    // FIX id DRYRUN: every selected rule's key, would_delete / would_rewrite.
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "4", "DRYRUN"]);
    assert_eq!(r["dry_run"], true, "{r}");
    assert_eq!(r["truth"], "ok");
    assert_eq!(r["changed"], 0);
    let expect: BTreeMap<String, String> = [
        ("user:4:cost_weekly", "would_delete"),
        ("user:4:cost_monthly", "would_delete"),
        ("user:4:cost_5h_rolling", "would_delete"),
        ("spend:4", "would_rewrite"),
    ]
    .iter()
    .map(|(k, a)| (k.to_string(), a.to_string()))
    .collect();
    assert_eq!(actions(&r), expect, "{r}");
    assert_eq!(entry(&r, "spend:4")["cached"], spend4.as_str());
    assert_eq!(entry(&r, "spend:4")["truth"], weekly[&4].as_str());
    assert_eq!(digest(&mut c), before, "FIX 4 DRYRUN changed the data set");

    let r = common::jcall(
        &mut c,
        &[
            "CONSISTENCY.FIX",
            "4",
            "REWRITE",
            "DRYRUN",
            "RULE",
            "cost_weekly",
        ],
    );
    assert_eq!(
        actions(&r),
        BTreeMap::from([("user:4:cost_weekly".into(), "would_rewrite".into())])
    );
    assert_eq!(
        digest(&mut c),
        before,
        "FIX 4 REWRITE DRYRUN changed the data set"
    );

    // FIX ALL DRYRUN: the check's findings with would_* actions.
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "ALL", "DRYRUN"]);
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["changed"], 0);
    assert_eq!(r["skipped"], 0);
    assert_eq!(r["drifted"], 4, "{r}");
    let expect: BTreeMap<String, String> = [
        ("user:3:cost_weekly", "would_delete"),
        ("user:4:cost_monthly", "would_delete"),
        ("user:777:cost_weekly", "would_delete"),
        ("spend:4", "would_rewrite"),
    ]
    .iter()
    .map(|(k, a)| (k.to_string(), a.to_string()))
    .collect();
    assert_eq!(actions(&r), expect, "{r}");
    assert_eq!(
        digest(&mut c),
        before,
        "FIX ALL DRYRUN changed the data set"
    );

    // FIX ALL REWRITE: drifted numbers would be rewritten, the orphan deleted.
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "ALL", "REWRITE", "DRYRUN"]);
    let expect: BTreeMap<String, String> = [
        ("user:3:cost_weekly", "would_rewrite"),
        ("user:4:cost_monthly", "would_rewrite"),
        ("user:777:cost_weekly", "would_delete"),
        ("spend:4", "would_rewrite"),
    ]
    .iter()
    .map(|(k, a)| (k.to_string(), a.to_string()))
    .collect();
    assert_eq!(actions(&r), expect, "{r}");
    assert_eq!(
        digest(&mut c),
        before,
        "FIX ALL REWRITE DRYRUN changed the data set"
    );

    // PURGE DRYRUN counts and keeps.
    let p = common::call_ok(
        &mut c,
        &["CONSISTENCY.PURGE", "MATCH", "user:*:cost_weekly", "DRYRUN"],
    );
    assert_eq!(
        common::field_names(&p),
        ["matched", "deleted", "dry_run", "duration_ms"]
    );
    // 20 users plus the orphan 777.
    assert_eq!(common::as_i64(common::field(&p, "matched")), 21);
    assert_eq!(common::as_i64(common::field(&p, "deleted")), 0);
    assert!(common::as_bool(common::field(&p, "dry_run")));
    assert_eq!(digest(&mut c), before, "PURGE DRYRUN changed the data set");
    assert_eq!(snapshot(&mut c), keys_before);
    assert!(
        !exists(&mut c, "consistency:audit"),
        "a dry run was audited"
    );

    // The twin: without DRYRUN the same FIX does change the data set.
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "4"]);
    assert_eq!(r["changed"], 4, "{r}");
    assert_ne!(digest(&mut c), before);
}

// ---------------------------------------------------------------------------
// 2. FIX of ids
// ---------------------------------------------------------------------------

#[test]
fn fix_one_id_clears_exactly_its_keys_and_shows_both_values() {
    let env = Env::new(25, &cost_rules(), &[]);
    let mut c = env.redis.conn();
    env.fill_costs(&mut c);
    ledger::fill_cache(&mut c, "user:{id}:frozen", &ledger::truth_weekly(&env.pg));
    set(&mut c, "session:4", "not a rule key");
    set(&mut c, "user:4:cost_weekly", "123.5");
    add_to_window(&mut c, 4, "7.25");
    let weekly = env.weekly();
    let monthly = env.monthly();
    let before = snapshot(&mut c);

    // RESP2 first: the reply's shape (the documented field order).
    let v = common::call_ok(&mut c, &["CONSISTENCY.FIX", "4", "DRYRUN"]);
    assert_eq!(
        common::field_names(&v),
        ["dry_run", "truth", "changed", "skipped", "entries"]
    );
    let first = &common::as_array(common::field(&v, "entries"))[0];
    assert_eq!(
        common::field_names(first),
        ["rule", "id", "key", "cached", "truth", "diff", "field", "action"]
    );

    let started = Instant::now();
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "4"]);
    eprintln!("FIX 4 took {:?}", started.elapsed());
    assert_eq!(r["dry_run"], false);
    assert_eq!(r["truth"], "ok");
    assert_eq!(r["changed"], 3, "{r}");
    assert_eq!(r["skipped"], 0);
    assert_eq!(
        entries(&r).len(),
        3,
        "frozen (fix none) is not selected: {r}"
    );

    let w = entry(&r, "user:4:cost_weekly");
    assert_eq!(w["rule"], "cost_weekly");
    assert_eq!(w["id"], "4");
    assert_eq!(w["cached"], "123.5");
    assert_eq!(w["truth"], weekly[&4].as_str());
    let diff = w["diff"].as_f64().unwrap();
    assert!((diff - (123.5 - num(&weekly[&4]))).abs() < 1e-9, "{w}");
    assert_eq!(w["action"], "deleted");

    let m = entry(&r, "user:4:cost_monthly");
    assert_eq!(m["cached"], monthly[&4].as_str());
    assert_eq!(m["truth"], monthly[&4].as_str());
    assert_eq!(m["action"], "deleted");

    // The window's cached value is the computed sum, ledger plus the injected 7.25.
    let z = entry(&r, "user:4:cost_5h_rolling");
    assert_eq!(z["rule"], "cost_5h");
    let sum = num(z["cached"].as_str().unwrap());
    assert!((sum - (num(&weekly[&4]) + 7.25)).abs() < 1e-9, "{z}");
    assert_eq!(z["truth"], weekly[&4].as_str());
    assert!((z["diff"].as_f64().unwrap() - 7.25).abs() < 1e-9, "{z}");
    assert_eq!(z["action"], "deleted");

    // Exactly those three keys are gone; everything else is byte-identical.
    let mut expect = before.clone();
    for k in [
        "user:4:cost_weekly",
        "user:4:cost_monthly",
        "user:4:cost_5h_rolling",
    ] {
        assert!(expect.remove(k).is_some(), "{k} was not there before");
    }
    assert_eq!(snapshot(&mut c), expect);
    assert!(exists(&mut c, "user:4:frozen"));
    assert!(exists(&mut c, "session:4"));

    // Again: nothing left to clear, every key absent.
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "4"]);
    assert_eq!(r["changed"], 0);
    assert_eq!(r["skipped"], 3);
    assert!(actions(&r).values().all(|a| a == "absent"), "{r}");
    assert_eq!(snapshot(&mut c), expect);
}

#[test]
fn fix_several_ids_and_ids_named_like_keywords() {
    let env = Env::new(10, &cost_rules(), &[]);
    let mut c = env.redis.conn();
    env.fill_costs(&mut c);
    // Keys whose id part is a FIX keyword.
    for id in ["DRYRUN", "ALL", "rewrite"] {
        set(&mut c, &format!("user:{id}:cost_weekly"), "3");
    }
    let before = snapshot(&mut c);

    // 2 and 5 bare, then DRYRUN, ALL and rewrite as ids; 9999 has no keys at all.
    let r = common::jcall(
        &mut c,
        &[
            "CONSISTENCY.FIX",
            "2",
            "5",
            "9999",
            "ID",
            "DRYRUN",
            "id",
            "ALL",
            "ID",
            "rewrite",
            "RULE",
            "cost_weekly",
            "RULE",
            "cost_monthly",
        ],
    );
    assert_eq!(
        r["dry_run"], false,
        "ID DRYRUN is an id, not the option: {r}"
    );
    let mut expect_deleted = BTreeSet::new();
    for id in ["2", "5"] {
        for rule in ["cost_weekly", "cost_monthly"] {
            expect_deleted.insert(format!("user:{id}:{rule}"));
        }
    }
    for id in ["DRYRUN", "ALL", "rewrite"] {
        expect_deleted.insert(format!("user:{id}:cost_weekly"));
    }
    let acts = actions(&r);
    let deleted: BTreeSet<String> = acts
        .iter()
        .filter(|(_, a)| *a == "deleted")
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(deleted, expect_deleted, "{r}");
    // The keyword-named keys are orphans (no such user): no truth.
    assert!(entry(&r, "user:DRYRUN:cost_weekly")["truth"].is_null());
    assert_eq!(entry(&r, "user:DRYRUN:cost_weekly")["cached"], "3");
    let absent: BTreeSet<String> = acts
        .iter()
        .filter(|(_, a)| *a == "absent")
        .map(|(k, _)| k.clone())
        .collect();
    let expect_absent: BTreeSet<String> = [
        "user:9999:cost_weekly",
        "user:9999:cost_monthly",
        "user:DRYRUN:cost_monthly",
        "user:ALL:cost_monthly",
        "user:rewrite:cost_monthly",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(absent, expect_absent, "{r}");
    assert_eq!(r["changed"], 7);
    assert_eq!(r["skipped"], 5);

    let mut expect = before;
    for k in &expect_deleted {
        expect.remove(k);
    }
    assert_eq!(snapshot(&mut c), expect);
    // The window keys of 2 and 5 were not selected.
    assert!(exists(&mut c, "user:2:cost_5h_rolling"));

    // An id that is not UTF-8: the exact bytes come back, the key is cleared.
    let key: &[u8] = b"user:\xff\x00:cost_weekly";
    redis::cmd("SET")
        .arg(key)
        .arg("5")
        .query::<()>(&mut c)
        .unwrap();
    let v: Value = redis::cmd("CONSISTENCY.FIX")
        .arg(&b"\xff\x00"[..])
        .arg("RULE")
        .arg("cost_weekly")
        .query(&mut c)
        .unwrap();
    let listed = common::as_array(common::field(&v, "entries"));
    assert_eq!(listed.len(), 1, "{v:?}");
    assert_eq!(
        common::as_bytes(common::field(&listed[0], "id")),
        b"\xff\x00"
    );
    assert_eq!(common::as_bytes(common::field(&listed[0], "key")), key);
    assert_eq!(
        common::as_str(common::field(&listed[0], "action")),
        "deleted"
    );
    assert_eq!(
        common::as_i64(
            &redis::cmd("EXISTS")
                .arg(key)
                .query::<Value>(&mut c)
                .unwrap()
        ),
        0
    );
    // The log line escapes the bytes (a NUL used to make the logger panic).
    assert!(env.redis.wait_for_log(
        r"consistency: deleted user:\xff\x00:cost_weekly (rule cost_weekly, id \xff\x00, cached '5', truth '')",
        Duration::from_secs(5)
    ));
}

#[test]
fn rewrite_sets_the_truth_and_keeps_the_ttl() {
    let env = Env::new(12, &cost_rules(), &[]);
    let mut c = env.redis.conn();
    env.fill_costs(&mut c);
    let weekly = env.weekly();
    let monthly = env.monthly();
    common::call_ok(&mut c, &["SET", "user:4:cost_weekly", "999", "EX", "3600"]);
    common::call_ok(
        &mut c,
        &["SET", "user:4:cost_monthly", "-3", "PX", "5000000"],
    );
    // User 9 becomes unknown to the truth: its key is an orphan, deleted even with REWRITE.
    ledger::soft_delete_user(&env.pg, 9);
    // User 6's weekly key is missing: REWRITE does not create it.
    common::call_ok(&mut c, &["DEL", "user:6:cost_weekly"]);
    let before = snapshot(&mut c);

    let r = common::jcall(
        &mut c,
        &[
            "CONSISTENCY.FIX",
            "4",
            "6",
            "9",
            "REWRITE",
            "RULE",
            "cost_weekly",
            "RULE",
            "cost_monthly",
        ],
    );
    assert_eq!(r["truth"], "ok", "{r}");
    let expect: BTreeMap<String, String> = [
        ("user:4:cost_weekly", "rewritten"),
        ("user:4:cost_monthly", "rewritten"),
        ("user:6:cost_weekly", "absent"),
        ("user:6:cost_monthly", "rewritten"),
        ("user:9:cost_weekly", "deleted"),
        ("user:9:cost_monthly", "deleted"),
    ]
    .iter()
    .map(|(k, a)| (k.to_string(), a.to_string()))
    .collect();
    assert_eq!(actions(&r), expect, "{r}");
    assert_eq!(r["changed"], 5);
    assert_eq!(r["skipped"], 1);
    assert_eq!(entry(&r, "user:4:cost_weekly")["cached"], "999");
    assert_eq!(
        entry(&r, "user:4:cost_weekly")["truth"],
        weekly[&4].as_str()
    );

    // The exact text PostgreSQL returned, and the TTLs are still there.
    assert_eq!(
        get(&mut c, "user:4:cost_weekly").as_deref(),
        Some(&*weekly[&4])
    );
    assert_eq!(
        get(&mut c, "user:4:cost_monthly").as_deref(),
        Some(&*monthly[&4])
    );
    let ttl_w = common::as_i64(&common::call_ok(&mut c, &["PTTL", "user:4:cost_weekly"]));
    let ttl_m = common::as_i64(&common::call_ok(&mut c, &["PTTL", "user:4:cost_monthly"]));
    assert!(ttl_w > 3_000_000 && ttl_w <= 3_600_000, "PTTL {ttl_w}");
    assert!(ttl_m > 4_000_000 && ttl_m <= 5_000_000, "PTTL {ttl_m}");
    assert!(
        !exists(&mut c, "user:6:cost_weekly"),
        "REWRITE created a key"
    );
    assert!(!exists(&mut c, "user:9:cost_weekly"));

    // Nothing else changed.
    let mut expect = before;
    for k in [
        "user:4:cost_weekly",
        "user:4:cost_monthly",
        "user:6:cost_monthly",
        "user:9:cost_weekly",
        "user:9:cost_monthly",
    ] {
        expect.remove(k);
    }
    let mut after = snapshot(&mut c);
    for k in [
        "user:4:cost_weekly",
        "user:4:cost_monthly",
        "user:6:cost_monthly",
    ] {
        after.remove(k);
    }
    assert_eq!(after, expect);

    // A CHECK of user 4 now finds nothing.
    let check = common::jcall(&mut c, &["CONSISTENCY.CHECK", "ID", "4"]);
    assert_eq!(check["drifted"], 0, "{check}");
}

#[test]
fn rule_level_rewrite_and_hash_field_rewrite() {
    let rules = vec![
        common::weekly_rule_json(),
        spend_rewrite_rule(),
        quota_rule(),
    ];
    let env = Env::new(10, &rules, &[]);
    let mut c = env.redis.conn();
    ledger::fill_cache_weekly(&mut c, &env.pg);
    let weekly = env.weekly();
    for (id, truth) in &weekly {
        let key = format!("quota:{id}");
        common::call_ok(&mut c, &["HSET", &key, "weekly", truth, "limit", "100"]);
        common::call_ok(&mut c, &["EXPIRE", &key, "7200"]);
        common::call_ok(&mut c, &["SET", &format!("spend:{id}"), truth, "EX", "900"]);
    }
    common::call_ok(&mut c, &["HSET", "quota:4", "weekly", "88.5"]);
    set(&mut c, "user:4:cost_weekly", "77");
    common::call_ok(&mut c, &["SET", "spend:4", "66", "KEEPTTL"]);

    // Without REWRITE: spend (fix rewrite) is rewritten, the others deleted.
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "4"]);
    let expect: BTreeMap<String, String> = [
        ("user:4:cost_weekly", "deleted"),
        ("spend:4", "rewritten"),
        ("quota:4", "deleted"),
    ]
    .iter()
    .map(|(k, a)| (k.to_string(), a.to_string()))
    .collect();
    assert_eq!(actions(&r), expect, "{r}");
    assert_eq!(entry(&r, "spend:4")["cached"], "66");
    assert_eq!(entry(&r, "quota:4")["cached"], "88.5");
    assert_eq!(get(&mut c, "spend:4").as_deref(), Some(&*weekly[&4]));
    let ttl = common::as_i64(&common::call_ok(&mut c, &["PTTL", "spend:4"]));
    assert!(
        ttl > 800_000 && ttl <= 900_000,
        "spend:4 lost its TTL: {ttl}"
    );
    assert!(!exists(&mut c, "quota:4"));

    // hash_field with REWRITE: HSET of that one field, the rest and the TTL kept.
    common::call_ok(&mut c, &["HSET", "quota:5", "weekly", "-12"]);
    let r = common::jcall(
        &mut c,
        &["CONSISTENCY.FIX", "5", "REWRITE", "RULE", "quota"],
    );
    assert_eq!(
        actions(&r),
        BTreeMap::from([("quota:5".into(), "rewritten".into())]),
        "{r}"
    );
    let h: BTreeMap<String, String> = redis::cmd("HGETALL").arg("quota:5").query(&mut c).unwrap();
    assert_eq!(
        h,
        BTreeMap::from([
            ("weekly".to_string(), weekly[&5].clone()),
            ("limit".to_string(), "100".to_string())
        ])
    );
    let ttl = common::as_i64(&common::call_ok(&mut c, &["PTTL", "quota:5"]));
    assert!(
        ttl > 7_000_000 && ttl <= 7_200_000,
        "quota:5 lost its TTL: {ttl}"
    );

    // A key of the wrong type cannot take an HSET: REWRITE deletes it instead of
    // failing half-way (the other rule's key is still rewritten).
    set(&mut c, "quota:6", "a string");
    set(&mut c, "user:6:cost_weekly", "60");
    let r = common::jcall(
        &mut c,
        &[
            "CONSISTENCY.FIX",
            "6",
            "REWRITE",
            "RULE",
            "cost_weekly",
            "RULE",
            "quota",
        ],
    );
    let expect: BTreeMap<String, String> =
        [("user:6:cost_weekly", "rewritten"), ("quota:6", "deleted")]
            .iter()
            .map(|(k, a)| (k.to_string(), a.to_string()))
            .collect();
    assert_eq!(actions(&r), expect, "{r}");
    assert_eq!(entry(&r, "quota:6")["cached"], "(string)");
    assert!(!exists(&mut c, "quota:6"));
    assert_eq!(
        get(&mut c, "user:6:cost_weekly").as_deref(),
        Some(&*weekly[&6])
    );

    // FIX ALL follows the rule's policy too: spend:7 rewritten, user:7 deleted.
    set(&mut c, "user:7:cost_weekly", "500");
    common::call_ok(&mut c, &["SET", "spend:7", "500", "KEEPTTL"]);
    let before = snapshot(&mut c);
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    let expect: BTreeMap<String, String> =
        [("user:7:cost_weekly", "deleted"), ("spend:7", "rewritten")]
            .iter()
            .map(|(k, a)| (k.to_string(), a.to_string()))
            .collect();
    assert_eq!(actions(&r), expect, "{r}");
    assert_eq!(get(&mut c, "spend:7").as_deref(), Some(&*weekly[&7]));
    let ttl = common::as_i64(&common::call_ok(&mut c, &["PTTL", "spend:7"]));
    assert!(ttl > 0, "spend:7 lost its TTL");
    let mut after = snapshot(&mut c);
    let mut expect = before;
    expect.remove("user:7:cost_weekly");
    expect.remove("spend:7");
    after.remove("spend:7");
    assert_eq!(after, expect);
}

// ---------------------------------------------------------------------------
// 3. PostgreSQL down
// ---------------------------------------------------------------------------

#[test]
fn postgres_down_still_clears_but_refuses_rewrite() {
    let rules = common::write_rules(&cost_rules());
    let dead = common::dead_pg_url();
    let r = TestRedis::start_with(
        &[
            ("pg-url", &dead),
            ("pg-connect-timeout-ms", "300"),
            ("rules-file", rules.to_str().unwrap()),
        ],
        &[],
    );
    let mut c = r.conn();
    for id in [4, 5] {
        set(&mut c, &format!("user:{id}:cost_weekly"), "12.5");
        common::call_ok(
            &mut c,
            &["SET", &format!("user:{id}:cost_monthly"), "30", "EX", "600"],
        );
        common::call_ok(
            &mut c,
            &[
                "ZADD",
                &format!("user:{id}:cost_5h_rolling"),
                "+inf",
                "9999999999999:x:1.5",
            ],
        );
    }
    set(&mut c, "user:4:frozen", "1");
    let before = digest(&mut c);
    let keys_before = snapshot(&mut c);

    // REWRITE needs the truth: refused, nothing changed.
    let started = Instant::now();
    let err = common::call_err(
        &mut c,
        &["CONSISTENCY.FIX", "4", "REWRITE", "RULE", "cost_weekly"],
    );
    let took = started.elapsed();
    assert!(
        err.starts_with(
            "ERR REWRITE needs the truth, and it is unavailable: postgres unavailable:"
        ) && err.ends_with("nothing was changed"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "refusal took {took:?}");
    assert_eq!(
        digest(&mut c),
        before,
        "a refused REWRITE changed the data set"
    );

    // Clearing needs no truth.
    let started = Instant::now();
    let res = common::jcall(&mut c, &["CONSISTENCY.FIX", "4"]);
    let took = started.elapsed();
    let truth = res["truth"].as_str().unwrap();
    assert!(
        truth.starts_with("unavailable: postgres unavailable:"),
        "{res}"
    );
    assert!(
        took < Duration::from_secs(5),
        "FIX with PostgreSQL down took {took:?}"
    );
    assert_eq!(res["changed"], 3, "{res}");
    let w = entry(&res, "user:4:cost_weekly");
    assert_eq!(w["cached"], "12.5");
    assert!(w["truth"].is_null() && w["diff"].is_null(), "{w}");
    assert_eq!(w["action"], "deleted");
    assert_eq!(entry(&res, "user:4:cost_5h_rolling")["action"], "deleted");
    let mut expect = keys_before;
    for k in [
        "user:4:cost_weekly",
        "user:4:cost_monthly",
        "user:4:cost_5h_rolling",
    ] {
        expect.remove(k);
    }
    assert_eq!(snapshot(&mut c), expect, "only user 4's fixable keys go");

    // FIX ALL needs the truth to know what drifted: an error, nothing changed.
    let before = digest(&mut c);
    let err = common::call_err(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    assert!(err.starts_with("ERR postgres unavailable:"), "{err}");
    assert_eq!(digest(&mut c), before);
}

// ---------------------------------------------------------------------------
// 4. FIX ALL
// ---------------------------------------------------------------------------

#[test]
fn fix_all_repairs_exactly_the_verified_drift() {
    let env = Env::new(40, &cost_rules(), &[]);
    let mut c = env.redis.conn();
    env.fill_costs(&mut c);
    let weekly = env.weekly();
    let monthly = env.monthly();
    ledger::fill_cache(&mut c, "user:{id}:frozen", &ledger::truth_weekly(&env.pg));
    for id in 1..=40 {
        common::call_ok(
            &mut c,
            &["EXPIRE", &format!("user:{id}:cost_monthly"), "86400"],
        );
    }
    set(&mut c, "unrelated", "x");

    // Drift beyond the threshold (5).
    let mut expect: BTreeMap<String, &str> = BTreeMap::new();
    for id in 1..=5 {
        let key = format!("user:{id}:cost_weekly");
        set(
            &mut c,
            &key,
            &format!("{}", num(&weekly[&id]) + 100.0 + id as f64),
        );
        expect.insert(key, "drift");
    }
    common::call_ok(
        &mut c,
        &[
            "SET",
            "user:6:cost_monthly",
            &format!("{}", num(&monthly[&6]) - 50.0),
            "KEEPTTL",
        ],
    );
    expect.insert("user:6:cost_monthly".into(), "drift");
    add_to_window(&mut c, 7, "25.5");
    expect.insert("user:7:cost_5h_rolling".into(), "drift");
    // Invalid: not a number, and the wrong type.
    set(&mut c, "user:8:cost_weekly", "twelve");
    expect.insert("user:8:cost_weekly".into(), "invalid");
    common::call_ok(&mut c, &["DEL", "user:9:cost_monthly"]);
    common::call_ok(&mut c, &["HSET", "user:9:cost_monthly", "v", "1"]);
    expect.insert("user:9:cost_monthly".into(), "invalid");
    // Orphans: no such user, and a user deleted in PostgreSQL (all three caches).
    set(&mut c, "user:5000:cost_weekly", "3");
    expect.insert("user:5000:cost_weekly".into(), "orphan");
    ledger::soft_delete_user(&env.pg, 10);
    for rule in ["cost_weekly", "cost_monthly", "cost_5h_rolling"] {
        expect.insert(format!("user:10:{rule}"), "orphan");
    }
    // Not to be touched: drift within the threshold, a missing key (missing is
    // ignored for cost rules), and drift in a fix-none rule.
    set(
        &mut c,
        "user:11:cost_weekly",
        &format!("{}", num(&weekly[&11]) + 1.0),
    );
    common::call_ok(&mut c, &["DEL", "user:12:cost_monthly"]);
    set(&mut c, "user:13:frozen", "1000");
    let before = snapshot(&mut c);

    // The reply's shape in RESP3: CHECK's fields, then dry_run, changed, skipped.
    let mut c3 = env.redis.conn_resp3();
    let v = common::call_ok(&mut c3, &["CONSISTENCY.FIX", "ALL", "DRYRUN"]);
    assert!(matches!(v, Value::Map(_)), "{v:?}");
    assert_eq!(
        common::field_names(&v),
        [
            "checked",
            "ids",
            "drifted",
            "rate",
            "max_diff",
            "max_diff_key",
            "by_status",
            "by_rule",
            "rounds",
            "duration_ms",
            "truth_ms",
            "truncated",
            "entries",
            "mode",
            "reason",
            "dry_run",
            "changed",
            "skipped"
        ]
    );
    assert!(matches!(common::field(&v, "dry_run"), Value::Boolean(true)));
    let listed = common::as_array(common::field(&v, "entries"));
    assert_eq!(listed.len(), expect.len());
    for e in listed {
        assert_eq!(
            common::field_names(e),
            ["rule", "id", "key", "status", "cached", "truth", "diff", "field", "action"]
        );
        assert_eq!(common::as_str(common::field(e, "action")), "would_delete");
    }
    assert_eq!(snapshot(&mut c), before);

    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    assert_eq!(r["dry_run"], false);
    assert_eq!(r["drifted"], expect.len(), "{r}");
    assert_eq!(r["changed"], expect.len(), "{r}");
    assert_eq!(r["skipped"], 0);
    assert_eq!(r["rounds"], 2, "findings are verified");
    assert_eq!(r["by_status"]["drift"], 7);
    assert_eq!(r["by_status"]["invalid"], 2);
    assert_eq!(r["by_status"]["orphan"], 4);
    assert!(
        r["by_rule"].get("frozen").is_none(),
        "fix-none rules are not checked by FIX ALL: {r}"
    );
    let got: BTreeMap<String, (String, String)> = entries(&r)
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                (
                    e["status"].as_str().unwrap().to_string(),
                    e["action"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (String, String)> = expect
        .iter()
        .map(|(k, s)| (k.clone(), (s.to_string(), "deleted".to_string())))
        .collect();
    assert_eq!(got, want);
    assert_eq!(entry(&r, "user:9:cost_monthly")["cached"], "(hash)");

    // Exactly those keys are gone; every other key is byte-identical.
    let mut want_keys = before;
    for k in expect.keys() {
        assert!(want_keys.remove(k).is_some(), "{k} was not there");
    }
    assert_eq!(snapshot(&mut c), want_keys);

    // A CHECK now finds only the fix-none rule's findings: its drift on user 13
    // and its key for the deleted user 10.
    let check = common::jcall(&mut c, &["CONSISTENCY.CHECK"]);
    let found: Vec<(&str, &str)> = entries(&check)
        .iter()
        .map(|e| (e["key"].as_str().unwrap(), e["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        found,
        [("user:13:frozen", "drift"), ("user:10:frozen", "orphan")],
        "{check}"
    );

    // THRESHOLD lowers the bar for this run: user 11's +1 is repaired now.
    let r = common::jcall(
        &mut c,
        &[
            "CONSISTENCY.FIX",
            "ALL",
            "RULE",
            "cost_weekly",
            "THRESHOLD",
            "0.5",
        ],
    );
    assert_eq!(
        actions(&r),
        BTreeMap::from([("user:11:cost_weekly".into(), "deleted".into())]),
        "{r}"
    );
    want_keys.remove("user:11:cost_weekly");
    assert_eq!(snapshot(&mut c), want_keys);
}

#[test]
fn fix_all_skips_a_key_written_between_check_and_repair() {
    let env = Env::new(
        10,
        &[common::weekly_rule_json(), common::window_rule_json()],
        &[],
    );
    let mut c = env.redis.conn();
    ledger::fill_cache_weekly(&mut c, &env.pg);
    ledger::fill_cache_window(&mut c, &env.pg);
    let weekly = env.weekly();
    let drifted: BTreeMap<i64, String> = (1..=4)
        .map(|id| (id, format!("{}", num(&weekly[&id]) + 100.0)))
        .collect();
    for (id, v) in &drifted {
        set(&mut c, &format!("user:{id}:cost_weekly"), v);
    }
    add_to_window(&mut c, 5, "30");
    add_to_window(&mut c, 6, "30");
    common::call_ok(
        &mut c,
        &["CONSISTENCY.DEBUG", "PAUSE-BEFORE-REPAIR", "1500"],
    );
    let checks_before = info_i64(&env.redis, "consistency_checks_total");

    let mut worker = env.redis.conn();
    let fix = thread::spawn(move || common::jcall(&mut worker, &["CONSISTENCY.FIX", "ALL"]));
    // The check (with its verification) is recorded before the pause: write then.
    let paused = common::wait_until(Duration::from_secs(10), || {
        info_i64(&env.redis, "consistency_checks_total") > checks_before
    });
    assert!(paused, "FIX ALL's check did not finish");
    let write_at = Instant::now();
    // A new value, a deleted key, and a new member in a window.
    set(&mut c, "user:2:cost_weekly", "31337");
    common::call_ok(&mut c, &["DEL", "user:3:cost_weekly"]);
    add_to_window(&mut c, 5, "0.5");
    let window5 = snapshot(&mut c)["user:5:cost_5h_rolling"].clone();
    let r = fix.join().expect("FIX ALL thread");
    // The writes happened during the pause, not after the repairs.
    assert!(write_at.elapsed() > Duration::from_millis(200), "no pause?");
    common::call_ok(&mut c, &["CONSISTENCY.DEBUG", "PAUSE-BEFORE-REPAIR", "0"]);

    let expect: BTreeMap<String, String> = [
        ("user:1:cost_weekly", "deleted"),
        ("user:2:cost_weekly", "skipped_changed"),
        ("user:3:cost_weekly", "absent"),
        ("user:4:cost_weekly", "deleted"),
        ("user:5:cost_5h_rolling", "skipped_changed"),
        ("user:6:cost_5h_rolling", "deleted"),
    ]
    .iter()
    .map(|(k, a)| (k.to_string(), a.to_string()))
    .collect();
    assert_eq!(actions(&r), expect, "{r}");
    assert_eq!(r["changed"], 3);
    assert_eq!(r["skipped"], 3);
    // The entry shows what was verified, not the new write.
    assert_eq!(
        entry(&r, "user:2:cost_weekly")["cached"],
        drifted[&2].as_str()
    );
    assert_eq!(get(&mut c, "user:2:cost_weekly").as_deref(), Some("31337"));
    assert_eq!(snapshot(&mut c)["user:5:cost_5h_rolling"], window5);
    for key in [
        "user:1:cost_weekly",
        "user:3:cost_weekly",
        "user:4:cost_weekly",
        "user:6:cost_5h_rolling",
    ] {
        assert!(!exists(&mut c, key), "{key}");
    }
    for id in 5..=10 {
        assert_eq!(
            get(&mut c, &format!("user:{id}:cost_weekly")).as_deref(),
            Some(&*weekly[&id])
        );
    }
    // Only the repairs were logged: nothing for the skipped keys.
    let log = env.redis.log();
    assert!(log.contains("consistency: deleted user:1:cost_weekly "));
    assert!(!log.contains("user:2:cost_weekly ("), "{log}");
    assert!(!log.contains("user:5:cost_5h_rolling ("), "{log}");
}

#[test]
fn fix_all_repairs_a_key_with_two_findings_once() {
    let mut rule = common::weekly_rule_json();
    rule["require_ttl"] = json!(true);
    let env = Env::new(6, &[rule], &[("audit-stream", "consistency:audit")]);
    let mut c = env.redis.conn();
    ledger::fill_cache_weekly(&mut c, &env.pg);
    for id in 1..=6 {
        common::call_ok(
            &mut c,
            &["EXPIRE", &format!("user:{id}:cost_weekly"), "600"],
        );
    }
    // User 3: drift and no TTL; user 4: right value, no TTL.
    set(&mut c, "user:3:cost_weekly", "300");
    common::call_ok(&mut c, &["PERSIST", "user:4:cost_weekly"]);
    let before = snapshot(&mut c);

    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    let mut found: Vec<(String, String, String)> = entries(&r)
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    let t = |k: &str, s: &str| (k.to_string(), s.to_string(), "deleted".to_string());
    assert_eq!(
        found,
        vec![
            t("user:3:cost_weekly", "drift"),
            t("user:3:cost_weekly", "no_ttl"),
            t("user:4:cost_weekly", "no_ttl"),
        ],
        "{r}"
    );
    assert_eq!(r["drifted"], 3);
    assert_eq!(r["changed"], 2, "one repair per key: {r}");
    assert_eq!(r["skipped"], 0);
    let audited = common::as_i64(&common::call_ok(&mut c, &["XLEN", "consistency:audit"]));
    assert_eq!(audited, 2, "one audit entry per repaired key");
    let mut expect = before;
    expect.remove("user:3:cost_weekly");
    expect.remove("user:4:cost_weekly");
    let mut after = snapshot(&mut c);
    after.remove("consistency:audit");
    assert_eq!(after, expect);
}

#[test]
fn fix_all_repairs_nothing_once_its_client_has_timed_out() {
    // One truth worker, so a later command queues behind the paused FIX ALL.
    let env = Env::new(8, &[common::weekly_rule_json()], &[("workers", "1")]);
    let mut c = env.redis.conn();
    ledger::fill_cache_weekly(&mut c, &env.pg);
    set(&mut c, "user:4:cost_weekly", "999");
    let before = digest(&mut c);
    common::call_ok(
        &mut c,
        &["CONSISTENCY.DEBUG", "PAUSE-BEFORE-REPAIR", "1200"],
    );
    common::call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.job-timeout-ms", "400"],
    );
    let started = Instant::now();
    let err = common::call_err(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    assert!(
        err.starts_with("ERR timeout: the job did not finish within consistency.job-timeout-ms"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1100),
        "{:?}",
        started.elapsed()
    );
    common::call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.job-timeout-ms", "60000"],
    );
    common::call_ok(&mut c, &["CONSISTENCY.DEBUG", "PAUSE-BEFORE-REPAIR", "0"]);
    // This CHECK runs only once the timed-out job has ended.
    let check = common::jcall(&mut c, &["CONSISTENCY.CHECK"]);
    assert!(started.elapsed() >= Duration::from_millis(1200));
    assert_eq!(check["drifted"], 1, "{check}");
    assert_eq!(
        digest(&mut c),
        before,
        "a timed-out FIX ALL repaired after answering"
    );
    assert_eq!(get(&mut c, "user:4:cost_weekly").as_deref(), Some("999"));
    assert!(!env.redis.log().contains("consistency: deleted"));
}

/// A weekly truth that succeeds on its first call and fails on every later one:
/// FIX ALL's round one gets the truth, its verification round does not.
fn create_flaky_truth(pg: &TestPg) {
    pg.exec(
        "CREATE SEQUENCE truth_calls;
         CREATE FUNCTION flaky_weekly() RETURNS TABLE(id int, value numeric)
         LANGUAGE plpgsql AS $$
         DECLARE n bigint;
         BEGIN
             n := nextval('truth_calls');
             IF n > 1 THEN
                 RAISE EXCEPTION 'flaky truth: call % fails', n;
             END IF;
             RETURN QUERY SELECT u.id, COALESCE(SUM(m.cost_usd), 0)
                 FROM users u LEFT JOIN message_request m
                   ON m.user_id = u.id AND m.created_at >= date_trunc('week', now())
                 WHERE u.deleted_at IS NULL GROUP BY u.id;
         END $$;",
    );
}

#[test]
fn fix_all_repairs_nothing_when_the_verification_truth_fails() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 10, 3, 5);
    create_flaky_truth(&pg);
    let rules = common::write_rules(&[json!({
        "name": "flaky_weekly", "kind": "number", "key": "user:{id}:cost_weekly",
        "truth": "SELECT id, value FROM flaky_weekly()"
    })]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    for id in 1..=3 {
        set(&mut c, &format!("user:{id}:cost_weekly"), "900");
    }
    set(&mut c, "user:4000:cost_weekly", "1");
    let before = digest(&mut c);

    let err = common::call_err(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    assert!(
        err.starts_with("ERR truth query failed:") && err.contains("flaky truth: call 2 fails"),
        "{err}"
    );
    // Round one ran (call 1), the verification failed (call 2), nothing was repaired.
    assert_eq!(
        pg.scalar("SELECT last_value FROM truth_calls").as_deref(),
        Some("2")
    );
    assert_eq!(digest(&mut c), before, "repaired from truth we did not get");

    // The twin: with the truth answering every time, the same FIX ALL repairs.
    pg.exec("ALTER SEQUENCE truth_calls MINVALUE -1000 RESTART WITH -1000");
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    assert_eq!(r["changed"], 4, "{r}");
    assert_ne!(digest(&mut c), before);
}

#[test]
fn fix_all_repairs_nothing_when_a_later_rule_truth_fails() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 10, 3, 6);
    let broken = json!({
        "name": "broken", "kind": "number", "key": "user:{id}:cost_broken",
        "truth": "SELECT id, value FROM no_such_table"
    });
    let rules = common::write_rules(&[common::weekly_rule_json(), broken]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    set(&mut c, "user:1:cost_weekly", "900");
    set(&mut c, "user:2:cost_broken", "1");
    let before = digest(&mut c);

    let err = common::call_err(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    assert!(
        err.starts_with("ERR truth query failed:") && err.contains("no_such_table"),
        "{err}"
    );
    assert_eq!(digest(&mut c), before, "repaired from truth we did not get");

    // The working rule alone is repaired.
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "ALL", "RULE", "cost_weekly"]);
    assert_eq!(
        actions(&r),
        BTreeMap::from([("user:1:cost_weekly".into(), "deleted".into())])
    );
}

// ---------------------------------------------------------------------------
// 8. Audit stream and log
// ---------------------------------------------------------------------------

fn stream_entries(c: &mut Connection, start: &str) -> Vec<(String, Vec<(String, String)>)> {
    let v: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("consistency:audit")
        .arg(start)
        .arg("+")
        .query(c)
        .expect("XRANGE");
    v
}

fn entries_added(c: &mut Connection) -> i64 {
    let v = common::call_ok(c, &["XINFO", "STREAM", "consistency:audit"]);
    common::as_i64(common::field(&v, "entries-added"))
}

#[test]
fn audit_stream_and_log_record_every_repair() {
    let env = Env::new(
        150,
        &cost_rules(),
        &[("audit-stream", "consistency:audit"), ("audit-maxlen", "5")],
    );
    let mut c = env.redis.conn();
    ledger::fill_cache_weekly(&mut c, &env.pg);
    ledger::fill_cache_monthly(&mut c, &env.pg);
    let weekly = env.weekly();
    let monthly = env.monthly();
    set(&mut c, "user:4:cost_weekly", "40.5");

    // FIX 4: one entry per repaired key, with every field.
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "4"]);
    assert_eq!(r["changed"], 2, "{r}");
    let got = stream_entries(&mut c, "-");
    let fields: Vec<Vec<(String, String)>> = got.into_iter().map(|(_, f)| f).collect();
    let want = |rule: &str, key: &str, old: &str, truth: &str| {
        vec![
            ("rule".to_string(), rule.to_string()),
            ("id".to_string(), "4".to_string()),
            ("key".to_string(), key.to_string()),
            ("old".to_string(), old.to_string()),
            ("truth".to_string(), truth.to_string()),
            ("action".to_string(), "deleted".to_string()),
        ]
    };
    assert_eq!(
        fields,
        vec![
            want("cost_weekly", "user:4:cost_weekly", "40.5", &weekly[&4]),
            want(
                "cost_monthly",
                "user:4:cost_monthly",
                &monthly[&4],
                &monthly[&4]
            ),
        ]
    );
    assert!(env.redis.wait_for_log(
        &format!(
            "consistency: deleted user:4:cost_weekly (rule cost_weekly, id 4, cached '40.5', truth '{}')",
            weekly[&4]
        ),
        Duration::from_secs(5)
    ));

    // A rewrite is audited as such.
    set(&mut c, "user:5:cost_weekly", "41");
    common::jcall(
        &mut c,
        &["CONSISTENCY.FIX", "5", "REWRITE", "RULE", "cost_weekly"],
    );
    let (_, last) = stream_entries(&mut c, "-").pop().unwrap();
    assert_eq!(last[5], ("action".to_string(), "rewritten".to_string()));
    assert_eq!(last[3], ("old".to_string(), "41".to_string()));
    assert_eq!(entries_added(&mut c), 3);

    // Many repairs: every one is added, and the stream stays trimmed near maxlen
    // (MAXLEN ~ removes whole nodes, so at most stream-node-max-entries over).
    for id in 6..=150 {
        set(&mut c, &format!("user:{id}:cost_weekly"), "1000");
        set(&mut c, &format!("user:{id}:cost_monthly"), "-1000");
    }
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    let repaired: i64 = 2 * 145;
    assert_eq!(r["changed"], repaired, "{}", r["by_status"]);
    // Entries stop at the default LIMIT (100); the repairs do not.
    assert_eq!(entries(&r).len(), 100);
    assert_eq!(r["truncated"], repaired - 100);
    assert_eq!(
        info_i64(&env.redis, "consistency_fixes_total"),
        3 + repaired,
        "INFO counts every change"
    );
    assert_eq!(entries_added(&mut c), 3 + repaired);
    let node_max: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("stream-node-max-entries")
        .query(&mut c)
        .unwrap();
    let node_max: i64 = node_max[1].parse().unwrap();
    let len = common::as_i64(&common::call_ok(&mut c, &["XLEN", "consistency:audit"]));
    eprintln!("audit stream: {len} entries after {} added", 3 + repaired);
    assert!(len >= 5 && len <= 5 + node_max, "XLEN {len}");
    assert!(len < repaired, "the stream was not trimmed: {len}");
    let log = env.redis.log();
    let deleted_lines = log
        .lines()
        // `*` is Redis's mark for the notice level.
        .filter(|l| l.contains(" * <consistency> consistency: deleted "))
        .count();
    let rewritten_lines = log
        .lines()
        .filter(|l| l.contains(" * <consistency> consistency: rewritten user:5:cost_weekly "))
        .count();
    assert_eq!(
        deleted_lines as i64,
        2 + repaired,
        "one notice line per deleted key"
    );
    assert_eq!(rewritten_lines, 1);

    // A dry run adds nothing.
    set(&mut c, "user:9:cost_weekly", "1000");
    common::jcall(&mut c, &["CONSISTENCY.FIX", "ALL", "DRYRUN"]);
    common::jcall(&mut c, &["CONSISTENCY.FIX", "9", "DRYRUN"]);
    assert_eq!(entries_added(&mut c), 3 + repaired);

    // PURGE: one summary entry, however many keys.
    for i in 0..20 {
        set(&mut c, &format!("tmp:{i}"), "x");
    }
    let (last_id, _) = stream_entries(&mut c, "-").pop().unwrap();
    let p = common::call_ok(&mut c, &["CONSISTENCY.PURGE", "MATCH", "tmp:*"]);
    assert_eq!(common::as_i64(common::field(&p, "deleted")), 20);
    let after = stream_entries(&mut c, &format!("({last_id}"));
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        after[0].1,
        vec![
            ("action".to_string(), "purge".to_string()),
            ("target".to_string(), "MATCH tmp:*".to_string()),
            ("matched".to_string(), "20".to_string()),
            ("deleted".to_string(), "20".to_string()),
        ]
    );
    assert!(env.redis.wait_for_log(
        "consistency: PURGE MATCH tmp:* deleted 20 of 20 matching keys",
        Duration::from_secs(5)
    ));
}

// ---------------------------------------------------------------------------
// Presence events
// ---------------------------------------------------------------------------

#[test]
fn presence_findings_are_published_and_orphans_cleared() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::add_endpoint(&pg, "a", true);
    ledger::add_endpoint(&pg, "b", true);
    ledger::add_endpoint(&pg, "c", false);
    let rules = common::write_rules(&[common::presence_rule_json()]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    set(&mut c, "mcp:connection:state:a", "up");
    set(&mut c, "mcp:connection:state:c", "up");
    set(&mut c, "mcp:connection:state:zz", "up");

    let sub_conn = redis.conn();
    let (tx, rx) = std::sync::mpsc::channel::<J>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let listener = thread::spawn(move || {
        let mut sub_conn = sub_conn;
        let mut ps = sub_conn.as_pubsub();
        ps.subscribe("consistency:events").unwrap();
        ps.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        ready_tx.send(()).unwrap();
        for _ in 0..4 {
            let Ok(msg) = ps.get_message() else { return };
            let text: String = msg.get_payload().unwrap();
            let mut event: J = serde_json::from_str(&text).unwrap();
            // Each event says when and in which database; the rest is compared whole.
            let fields = event.as_object_mut().unwrap();
            let at_ms = fields.remove("at_ms").and_then(|v| v.as_u64());
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            assert!(
                at_ms.is_some_and(|at| at <= now_ms && now_ms - at < 60_000),
                "at_ms {at_ms:?} is not a recent time: {text}"
            );
            assert_eq!(fields.remove("db"), Some(json!(0)), "{text}");
            tx.send(event).unwrap();
        }
    });
    ready_rx.recv().unwrap();

    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    let expect: BTreeMap<String, String> = [
        ("mcp:connection:state:b", "absent"),
        ("mcp:connection:state:c", "deleted"),
        ("mcp:connection:state:zz", "deleted"),
    ]
    .iter()
    .map(|(k, a)| (k.to_string(), a.to_string()))
    .collect();
    assert_eq!(actions(&r), expect, "{r}");
    assert_eq!(entry(&r, "mcp:connection:state:b")["status"], "missing");
    assert!(exists(&mut c, "mcp:connection:state:a"));
    assert!(
        !exists(&mut c, "mcp:connection:state:b"),
        "a missing key was created"
    );
    let mut got: Vec<J> = (0..3)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("event"))
        .collect();
    got.sort_by_key(|e| e["id"].as_str().unwrap().to_string());
    let ev = |id: &str, status: &str| {
        json!({"rule": "mcp_connection", "id": id,
               "key": format!("mcp:connection:state:{id}"), "status": status})
    };
    assert_eq!(
        got,
        vec![ev("b", "missing"), ev("c", "orphan"), ev("zz", "orphan")]
    );

    // FIX of an id whose key is missing publishes too, and creates nothing.
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "b"]);
    assert_eq!(
        actions(&r),
        BTreeMap::from([("mcp:connection:state:b".into(), "absent".into())])
    );
    let e = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("event for FIX b");
    assert_eq!(e, ev("b", "missing"));
    listener.join().unwrap();
}

// ---------------------------------------------------------------------------
// Scripts and MULTI: the synchronous path
// ---------------------------------------------------------------------------

#[test]
fn fix_and_purge_run_synchronously_in_scripts_and_multi() {
    let env = Env::new(10, &[common::weekly_rule_json()], &[]);
    let mut c = env.redis.conn();
    ledger::fill_cache_weekly(&mut c, &env.pg);
    let weekly = env.weekly();
    set(&mut c, "user:4:cost_weekly", "400");
    for i in 0..30 {
        set(&mut c, &format!("tmp:{i}"), "x");
    }

    // FIX of ids inside EVAL, with the truth from its own connection.
    let v = common::call_ok(
        &mut c,
        &[
            "EVAL",
            "return redis.call('CONSISTENCY.FIX', ARGV[1], 'FORMAT', 'json')",
            "0",
            "4",
        ],
    );
    let r: J = serde_json::from_str(common::as_str(&v)).unwrap();
    assert_eq!(r["truth"], "ok", "{r}");
    let e = entry(&r, "user:4:cost_weekly");
    assert_eq!(
        (e["cached"].as_str(), e["action"].as_str()),
        (Some("400"), Some("deleted"))
    );
    assert_eq!(e["truth"], weekly[&4].as_str());
    assert!(!exists(&mut c, "user:4:cost_weekly"));

    // REWRITE inside MULTI.
    set(&mut c, "user:5:cost_weekly", "500");
    let replies: Vec<Value> = redis::pipe()
        .atomic()
        .cmd("CONSISTENCY.FIX")
        .arg("5")
        .arg("REWRITE")
        .arg("FORMAT")
        .arg("json")
        .query(&mut c)
        .expect("MULTI FIX");
    let r: J = serde_json::from_str(common::as_str(&replies[0])).unwrap();
    assert_eq!(
        entry(&r, "user:5:cost_weekly")["action"],
        "rewritten",
        "{r}"
    );
    assert_eq!(
        get(&mut c, "user:5:cost_weekly").as_deref(),
        Some(&*weekly[&5])
    );

    // PURGE with a LIMIT within sync-max-keys.
    let v = common::call_ok(
        &mut c,
        &[
            "EVAL",
            "return redis.call('CONSISTENCY.PURGE', 'MATCH', 'tmp:*', 'LIMIT', '12')",
            "0",
        ],
    );
    assert_eq!(common::as_i64(common::field(&v, "deleted")), 12);
    assert_eq!(
        redis::cmd("KEYS")
            .arg("tmp:*")
            .query::<Vec<String>>(&mut c)
            .unwrap()
            .len(),
        18
    );

    // Anything unbounded is refused with a precise error, and changes nothing.
    let before = digest(&mut c);
    let dbsize = common::as_i64(&common::call_ok(&mut c, &["DBSIZE"]));
    let refused = [
        (
            "return redis.call('CONSISTENCY.PURGE', 'MATCH', 'tmp:*')",
            format!(
                "ERR too large for a script or MULTI: a whole-keyspace run over {dbsize} keys \
                 over sync-max-keys 1000; call CONSISTENCY.PURGE directly"
            ),
        ),
        (
            "return redis.call('CONSISTENCY.FIX', 'ALL')",
            format!(
                "ERR too large for a script or MULTI: a whole-keyspace run over {dbsize} keys \
                 over sync-max-keys 1000; call CONSISTENCY.FIX ALL directly"
            ),
        ),
        (
            "return redis.call('CONSISTENCY.PURGE', 'MATCH', 'tmp:*', 'LIMIT', '1001')",
            "ERR too large for a script or MULTI: 1001 ids over sync-max-keys 1000; \
             call CONSISTENCY.PURGE directly"
                .to_string(),
        ),
    ];
    for (script, want) in &refused {
        let err = common::call_err(&mut c, &["EVAL", script, "0"]);
        assert!(err.starts_with(want.as_str()), "{script}: {err}");
    }
    let many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
    let mut args = vec![
        "EVAL",
        "return redis.call('CONSISTENCY.FIX', unpack(ARGV))",
        "0",
    ];
    args.extend(many.iter().map(String::as_str));
    let err = common::call_err(&mut c, &args);
    assert!(
        err.starts_with(
            "ERR too large for a script or MULTI: 1001 ids over sync-max-keys 1000; \
             call CONSISTENCY.FIX directly"
        ),
        "{err}"
    );
    assert_eq!(digest(&mut c), before);
}

// ---------------------------------------------------------------------------
// 9. Bad input
// ---------------------------------------------------------------------------

#[test]
fn bad_input_is_refused_precisely_and_changes_nothing() {
    let mut rules = cost_rules();
    rules.push(common::presence_rule_json());
    let env = Env::new(5, &rules, &[]);
    let mut c = env.redis.conn();
    env.fill_costs(&mut c);
    set(&mut c, "user:4:cost_weekly", "999");
    set(&mut c, "tmp:1", "x");
    let before = digest(&mut c);
    let loaded = "cost_weekly, cost_monthly, cost_5h, frozen, mcp_connection";

    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec![], "ERR FIX needs at least one id or ALL".into()),
        (vec!["RULE", "cost_weekly"], "ERR FIX needs at least one id or ALL".into()),
        (
            vec!["4", "RULE", "nope"],
            format!("ERR unknown rule 'nope' (loaded: {loaded})"),
        ),
        (
            vec!["ALL", "RULE", "nope"],
            format!("ERR unknown rule 'nope' (loaded: {loaded})"),
        ),
        (
            vec!["4", "REWRITE", "RULE", "cost_5h"],
            "ERR REWRITE is not possible for rule 'cost_5h' (kind window_sum); select rewritable rules with RULE".into(),
        ),
        (
            vec!["4", "REWRITE"],
            "ERR REWRITE is not possible for rule 'cost_5h' (kind window_sum); select rewritable rules with RULE".into(),
        ),
        (
            vec!["a", "REWRITE", "RULE", "mcp_connection"],
            "ERR REWRITE is not possible for rule 'mcp_connection' (kind presence); select rewritable rules with RULE".into(),
        ),
        (
            vec!["4", "RULE", "frozen"],
            "ERR rule 'frozen' has fix none: FIX leaves its keys alone".into(),
        ),
        (
            vec!["ALL", "RULE", "cost_weekly", "RULE", "frozen"],
            "ERR rule 'frozen' has fix none: FIX leaves its keys alone".into(),
        ),
        (vec!["4", "THRESHOLD", "3"], "ERR THRESHOLD applies only to FIX ALL".into()),
        (
            vec!["ALL", "THRESHOLD", "abc"],
            "ERR THRESHOLD must be a non-negative number, got 'abc'".into(),
        ),
        (
            vec!["ALL", "THRESHOLD", "-1"],
            "ERR THRESHOLD must be a non-negative number, got '-1'".into(),
        ),
        (vec!["ALL", "ID", "4"], "ERR ALL and ID cannot be combined".into()),
        (
            vec!["4", "ALL"],
            "ERR ALL must be the first argument; to fix an id named ALL, give ID ALL".into(),
        ),
        (
            vec!["4", "DRYRUN", "5"],
            "ERR unknown option '5' (bare ids go before the first option; give later ids as ID <id>)".into(),
        ),
        (vec!["4", "ID"], "ERR ID needs a value".into()),
        (vec!["4", "ID", ""], "ERR ID must not be empty".into()),
        (vec!["", "4"], "ERR ID must not be empty".into()),
        (
            vec!["4", "FORMAT", "xml"],
            "ERR FORMAT must be resp or json, got 'xml'".into(),
        ),
        (vec!["ALL", "LIMIT", "3"], "ERR unknown option 'LIMIT'".into()),
    ];
    for (args, want) in &cases {
        let mut all = vec!["CONSISTENCY.FIX"];
        all.extend(args);
        let err = common::call_err(&mut c, &all);
        assert_eq!(&err, want, "{all:?}");
    }
    let purge_cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["MATCH", "*"],
            "ERR MATCH pattern '*' would purge every key; name a narrower pattern".into(),
        ),
        (
            vec!["MATCH", "**"],
            "ERR MATCH pattern '**' would purge every key; name a narrower pattern".into(),
        ),
        (vec!["MATCH", ""], "ERR MATCH must not be empty".into()),
        (vec![], "ERR PURGE needs MATCH pattern or RULE name".into()),
        (
            vec!["DRYRUN"],
            "ERR PURGE needs MATCH pattern or RULE name".into(),
        ),
        (
            vec!["MATCH", "tmp:*", "RULE", "cost_weekly"],
            "ERR MATCH and RULE cannot be combined".into(),
        ),
        (
            vec!["RULE", "nope"],
            format!("ERR unknown rule 'nope' (loaded: {loaded})"),
        ),
        (
            vec!["MATCH", "tmp:*", "LIMIT", "x"],
            "ERR LIMIT must be a non-negative integer, got 'x'".into(),
        ),
        (vec!["MATCH"], "ERR MATCH needs a value".into()),
    ];
    for (args, want) in &purge_cases {
        let mut all = vec!["CONSISTENCY.PURGE"];
        all.extend(args);
        let err = common::call_err(&mut c, &all);
        assert_eq!(&err, want, "{all:?}");
    }
    assert_eq!(
        digest(&mut c),
        before,
        "a refused command changed the data set"
    );
    assert_eq!(get(&mut c, "user:4:cost_weekly").as_deref(), Some("999"));
}
