//! The Lua scripts in scripts/lua/ run with EVAL against the real module, a real
//! redis-server and a real PostgreSQL holding the seed 000 ledger: check_and_fix,
//! fix_ids_for_rule and drifted_ids. Every expectation is computed from the
//! truth and from what the test injected.
//!
//! Run: `cargo test --release --features test-hooks --test integration lua_scripts::`

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{ledger, TestPg, TestRedis};
use redis::{Connection, Value};
use serde_json::Value as J;

const CHECK_AND_FIX: &str = include_str!("../scripts/lua/check_and_fix.lua");
const FIX_IDS_FOR_RULE: &str = include_str!("../scripts/lua/fix_ids_for_rule.lua");
const DRIFTED_IDS: &str = include_str!("../scripts/lua/drifted_ids.lua");

const USERS: usize = 10;

/// Redis is declared first, so it stops before the database is dropped.
struct Env {
    redis: TestRedis,
    pg: TestPg,
}

/// Users 1..=10 with 3 ledger rows each, the three seed 000 cost rules (weekly,
/// monthly, 5-hour window; threshold 5.0), and every cache filled with the truth.
fn env() -> Env {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, USERS, 3, 21);
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
    assert_eq!(dbsize(&mut c), 3 * USERS as i64);
    Env { redis, pg }
}

impl Env {
    fn weekly(&self, id: i64) -> String {
        truth_of(&ledger::truth_weekly(&self.pg), id)
    }

    fn monthly(&self, id: i64) -> String {
        truth_of(&ledger::truth_monthly(&self.pg), id)
    }
}

fn truth_of(rows: &[(i64, String)], id: i64) -> String {
    rows.iter()
        .find(|(i, _)| *i == id)
        .unwrap_or_else(|| panic!("no truth for id {id}"))
        .1
        .clone()
}

fn keys_of(id: &str) -> [String; 3] {
    [
        format!("user:{id}:cost_weekly"),
        format!("user:{id}:cost_monthly"),
        format!("user:{id}:cost_5h_rolling"),
    ]
}

fn eval(c: &mut Connection, script: &str, args: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(0);
    for a in args {
        cmd.arg(*a);
    }
    cmd.query(c)
}

/// EVAL a script that returns one JSON string; returns (raw text, parsed).
fn eval_json(c: &mut Connection, script: &str, args: &[&str]) -> (String, J) {
    let v = eval(c, script, args)
        .unwrap_or_else(|e| panic!("EVAL {args:?}: {}", common::error_text(&e)));
    let text = common::as_str(&v).to_string();
    let doc: J = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (text, doc)
}

fn eval_err(c: &mut Connection, script: &str, args: &[&str]) -> String {
    match eval(c, script, args) {
        Ok(v) => panic!("EVAL {args:?} should have failed, got {v:?}"),
        Err(e) => common::error_text(&e),
    }
}

/// EVAL a script that returns an array of strings.
fn eval_strings(c: &mut Connection, script: &str, args: &[&str]) -> Vec<String> {
    let v = eval(c, script, args)
        .unwrap_or_else(|e| panic!("EVAL {args:?}: {}", common::error_text(&e)));
    common::as_array(&v)
        .iter()
        .map(|x| common::as_str(x).to_string())
        .collect()
}

fn dbsize(c: &mut Connection) -> i64 {
    redis::cmd("DBSIZE").query(c).unwrap()
}

fn digest(c: &mut Connection) -> String {
    redis::cmd("DEBUG").arg("DIGEST").query(c).unwrap()
}

fn exists(c: &mut Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(c).unwrap() == 1
}

fn get(c: &mut Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(c).unwrap()
}

fn set(c: &mut Connection, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(c)
        .unwrap();
}

/// `truth + delta` as the application would have cached it.
fn plus(truth: &str, delta: f64) -> String {
    format!("{}", truth.parse::<f64>().unwrap() + delta)
}

fn num(v: &J) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn int(v: &J) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

fn actions(fix: &J) -> Vec<(String, String)> {
    fix["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// check_and_fix.lua
// ---------------------------------------------------------------------------

#[test]
fn check_and_fix_fixes_a_drifted_id_and_leaves_a_clean_one_alone() {
    let e = env();
    let mut c = e.redis.conn();
    let truth4 = e.weekly(4);
    let cached4 = plus(&truth4, 45.1);
    set(&mut c, "user:4:cost_weekly", &cached4);

    // A clean id: CHECK finds nothing, FIX is not run, nothing changes.
    let before = digest(&mut c);
    let (raw, doc) = eval_json(&mut c, CHECK_AND_FIX, &["5"]);
    assert!(raw.starts_with(r#"{"check":{"checked":3,"#), "{raw}");
    assert!(raw.ends_with(r#","fix":null}"#), "{raw}");
    assert_eq!(int(&doc["check"]["drifted"]), 0, "{raw}");
    assert_eq!(int(&doc["check"]["ids"]), 1);
    assert_eq!(doc["check"]["entries"], J::Array(vec![]));
    assert!(doc["fix"].is_null());
    assert_eq!(digest(&mut c), before, "a clean id must not be touched");
    assert_eq!(get(&mut c, "user:5:cost_weekly"), Some(e.weekly(5)));
    assert_eq!(get(&mut c, "user:5:cost_monthly"), Some(e.monthly(5)));

    // The drifted id: the check names the key, the fix clears all three of its keys.
    let (raw, doc) = eval_json(&mut c, CHECK_AND_FIX, &["4"]);
    let check = &doc["check"];
    assert_eq!(int(&check["checked"]), 3, "{raw}");
    assert_eq!(int(&check["drifted"]), 1);
    assert_eq!(int(&check["by_status"]["drift"]), 1);
    assert_eq!(check["max_diff_key"], "user:4:cost_weekly");
    let entries = check["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{raw}");
    assert_eq!(entries[0]["rule"], "cost_weekly");
    assert_eq!(entries[0]["id"], "4");
    assert_eq!(entries[0]["key"], "user:4:cost_weekly");
    assert_eq!(entries[0]["status"], "drift");
    assert_eq!(entries[0]["cached"].as_str(), Some(cached4.as_str()));
    assert_eq!(entries[0]["truth"].as_str(), Some(truth4.as_str()));
    assert!((num(&entries[0]["diff"]) - 45.1).abs() < 1e-6, "{raw}");

    let fix = &doc["fix"];
    assert_eq!(fix["dry_run"], false, "{raw}");
    assert_eq!(fix["truth"], "ok");
    assert_eq!(int(&fix["changed"]), 3);
    assert_eq!(int(&fix["skipped"]), 0);
    let mut got = actions(fix);
    got.sort();
    let mut want: Vec<(String, String)> = keys_of("4")
        .iter()
        .map(|k| (k.clone(), "deleted".to_string()))
        .collect();
    want.sort();
    assert_eq!(got, want);
    for k in keys_of("4") {
        assert!(!exists(&mut c, &k), "{k} should be cleared");
    }
    assert_eq!(
        dbsize(&mut c),
        3 * USERS as i64 - 3,
        "only user 4's keys go"
    );

    // Cleared keys are loaded lazily by the application: a new run finds nothing.
    let (_, doc) = eval_json(&mut c, CHECK_AND_FIX, &["4"]);
    assert_eq!(int(&doc["check"]["drifted"]), 0);
    assert!(doc["fix"].is_null());
}

#[test]
fn check_and_fix_honours_the_threshold_argument() {
    let e = env();
    let mut c = e.redis.conn();
    // 3.0 off: under the rules' 5.0, over a threshold of 1.
    let cached = plus(&e.weekly(6), 3.0);
    set(&mut c, "user:6:cost_weekly", &cached);

    for args in [&["6"][..], &["6", ""][..], &["6", "5"][..]] {
        let (raw, doc) = eval_json(&mut c, CHECK_AND_FIX, args);
        assert_eq!(int(&doc["check"]["drifted"]), 0, "{args:?}: {raw}");
        assert!(doc["fix"].is_null(), "{args:?}: {raw}");
        assert_eq!(get(&mut c, "user:6:cost_weekly"), Some(cached.clone()));
    }

    let (raw, doc) = eval_json(&mut c, CHECK_AND_FIX, &["6", "1"]);
    assert_eq!(int(&doc["check"]["drifted"]), 1, "{raw}");
    assert!((num(&doc["check"]["entries"][0]["diff"]) - 3.0).abs() < 1e-6);
    assert_eq!(int(&doc["fix"]["changed"]), 3, "{raw}");
    assert_eq!(get(&mut c, "user:6:cost_weekly"), None);

    // Bad input: the module's own error, and the script's usage line.
    let err = eval_err(&mut c, CHECK_AND_FIX, &["6", "abc"]);
    assert!(
        err.contains("THRESHOLD must be a non-negative number, got 'abc'"),
        "{err}"
    );
    let err = eval_err(&mut c, CHECK_AND_FIX, &[]);
    assert!(err.starts_with("ERR usage: check_and_fix.lua"), "{err}");
}

#[test]
fn check_and_fix_runs_from_redis_cli_eval_as_documented() {
    let e = env();
    let mut c = e.redis.conn();
    let cached = plus(&e.weekly(3), 10.0);
    set(&mut c, "user:3:cost_weekly", &cached);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lua/check_and_fix.lua");
    let script = script.to_str().unwrap();

    // `redis-cli --eval scripts/lua/check_and_fix.lua , 4 5.0` (the header's example)
    let out = e.redis.cli(&["--eval", script, ",", "4", "5.0"]);
    assert!(out.status.success(), "{out:?}");
    let doc: J = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(int(&doc["check"]["drifted"]), 0);
    assert!(doc["fix"].is_null());

    let out = e.redis.cli(&["--eval", script, ",", "3"]);
    let doc: J = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(int(&doc["check"]["drifted"]), 1);
    assert_eq!(int(&doc["fix"]["changed"]), 3);
    assert_eq!(get(&mut c, "user:3:cost_weekly"), None);
}

// ---------------------------------------------------------------------------
// fix_ids_for_rule.lua
// ---------------------------------------------------------------------------

#[test]
fn fix_ids_for_rule_clears_only_that_rules_keys_for_those_ids() {
    let e = env();
    let mut c = e.redis.conn();
    let cached2 = plus(&e.weekly(2), 45.1);
    set(&mut c, "user:2:cost_weekly", &cached2);

    // Ids 2 and 3, and 99 (no such user, no key): only the weekly keys go.
    let (raw, doc) = eval_json(&mut c, FIX_IDS_FOR_RULE, &["cost_weekly", "2", "3", "99"]);
    assert!(
        raw.starts_with(r#"{"dry_run":false,"truth":"ok","#),
        "{raw}"
    );
    assert_eq!(int(&doc["changed"]), 2, "{raw}");
    assert_eq!(int(&doc["skipped"]), 1, "the absent key of 99: {raw}");
    assert_eq!(
        actions(&doc),
        vec![
            ("user:2:cost_weekly".to_string(), "deleted".to_string()),
            ("user:3:cost_weekly".to_string(), "deleted".to_string()),
            ("user:99:cost_weekly".to_string(), "absent".to_string()),
        ]
    );
    let entries = doc["entries"].as_array().unwrap();
    assert!(entries.iter().all(|x| x["rule"] == "cost_weekly"));
    assert_eq!(entries[0]["cached"].as_str(), Some(cached2.as_str()));
    assert_eq!(entries[0]["truth"].as_str(), Some(e.weekly(2).as_str()));
    assert!((num(&entries[0]["diff"]) - 45.1).abs() < 1e-6);
    assert!(entries[2]["cached"].is_null() && entries[2]["truth"].is_null());
    assert!(!exists(&mut c, "user:2:cost_weekly"));
    assert!(!exists(&mut c, "user:3:cost_weekly"));
    assert_eq!(get(&mut c, "user:2:cost_monthly"), Some(e.monthly(2)));
    assert!(exists(&mut c, "user:2:cost_5h_rolling"));
    assert_eq!(get(&mut c, "user:4:cost_weekly"), Some(e.weekly(4)));
    assert_eq!(dbsize(&mut c), 3 * USERS as i64 - 2);

    // The window rule's ZSETs; ids that read like keywords are sent through ID.
    set(&mut c, "user:all:cost_5h_rolling", "x");
    let (raw, doc) = eval_json(&mut c, FIX_IDS_FOR_RULE, &["cost_5h", "7", "all", "rule"]);
    assert_eq!(
        actions(&doc),
        vec![
            ("user:7:cost_5h_rolling".to_string(), "deleted".to_string()),
            (
                "user:all:cost_5h_rolling".to_string(),
                "deleted".to_string()
            ),
            (
                "user:rule:cost_5h_rolling".to_string(),
                "absent".to_string()
            ),
        ],
        "{raw}"
    );
    assert!(!exists(&mut c, "user:7:cost_5h_rolling"));
    assert!(exists(&mut c, "user:7:cost_weekly"));

    // Errors come through unchanged.
    let err = eval_err(&mut c, FIX_IDS_FOR_RULE, &["nope", "1"]);
    assert!(err.contains("unknown rule 'nope'"), "{err}");
    let err = eval_err(&mut c, FIX_IDS_FOR_RULE, &["cost_weekly"]);
    assert!(err.starts_with("ERR usage: fix_ids_for_rule.lua"), "{err}");
    assert!(exists(&mut c, "user:1:cost_weekly"));
}

// ---------------------------------------------------------------------------
// drifted_ids.lua
// ---------------------------------------------------------------------------

#[test]
fn drifted_ids_returns_exactly_the_ids_with_findings() {
    let e = env();
    let mut c = e.redis.conn();
    // drift (weekly), drift (monthly), drift (window), orphan, invalid.
    set(&mut c, "user:2:cost_weekly", &plus(&e.weekly(2), 45.1));
    set(&mut c, "user:7:cost_monthly", &plus(&e.monthly(7), 20.0));
    let now_ms: i64 = {
        let (s, us): (i64, i64) = redis::cmd("TIME").query(&mut c).unwrap();
        s * 1000 + us / 1000
    };
    redis::cmd("ZADD")
        .arg("user:8:cost_5h_rolling")
        .arg(now_ms)
        .arg(format!("{now_ms}:30.5"))
        .query::<()>(&mut c)
        .unwrap();
    ledger::soft_delete_user(&e.pg, 9);
    set(&mut c, "user:10:cost_weekly", "abc");

    let before = digest(&mut c);
    let all: Vec<String> = (1..=USERS).map(|i| i.to_string()).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_eq!(
        eval_strings(&mut c, DRIFTED_IDS, &all),
        ["2", "7", "8", "9", "10"]
    );
    // ARGV order, each id once; clean and unknown ids are not listed.
    assert_eq!(
        eval_strings(&mut c, DRIFTED_IDS, &["10", "5", "2", "2", "999"]),
        ["10", "2"]
    );
    assert!(eval_strings(&mut c, DRIFTED_IDS, &["1", "3", "999"]).is_empty());
    assert!(eval_strings(&mut c, DRIFTED_IDS, &[]).is_empty());
    assert_eq!(digest(&mut c), before, "drifted_ids is read-only");

    // It agrees with a direct, unscoped CHECK.
    let v = common::call_ok(&mut c, &["CONSISTENCY.CHECK", "FORMAT", "json"]);
    let doc: J = serde_json::from_str(common::as_str(&v)).unwrap();
    let direct: BTreeSet<String> = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = ["2", "7", "8", "9", "10"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(direct, want);
}

#[test]
fn drifted_ids_lists_ids_beyond_the_default_entry_limit() {
    // 150 ids each drifted in two rules: 300 entries, over CHECK's default LIMIT 100.
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 150, 1, 5);
    let rules = common::write_rules(&[common::weekly_rule_json(), common::monthly_rule_json()]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    let shifted = |rows: Vec<(i64, String)>| -> Vec<(i64, String)> {
        rows.into_iter()
            .map(|(i, v)| (i, plus(&v, 100.0)))
            .collect()
    };
    ledger::fill_cache(
        &mut c,
        "user:{id}:cost_weekly",
        &shifted(ledger::truth_weekly(&pg)),
    );
    ledger::fill_cache(
        &mut c,
        "user:{id}:cost_monthly",
        &shifted(ledger::truth_monthly(&pg)),
    );
    let ids: Vec<String> = (1..=150).map(|i| i.to_string()).collect();
    let args: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(eval_strings(&mut c, DRIFTED_IDS, &args), ids);
}
