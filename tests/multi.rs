//! The module inside MULTI/EXEC and Lua, where a command cannot block: ID-scoped CHECK and FIX of at most `sync-max-keys` ids and
//! PURGE with a LIMIT run synchronously; anything larger is refused with
//! `ERR too large for a script or MULTI: ...`, and a refusal changes nothing.
//!
//! Run: `cargo test --release --features test-hooks --test integration multi::`

use crate::common;

use common::{ledger, TestPg, TestRedis};
use redis::{Connection, Value};
use serde_json::Value as J;

const USERS: usize = 8;
const TOO_LARGE: &str = "ERR too large for a script or MULTI: ";

/// Redis is declared first, so it stops before the database is dropped.
struct Env {
    redis: TestRedis,
    pg: TestPg,
}

/// Users 1..=8, the weekly and monthly rules, caches filled with the truth, and
/// user 4's weekly value 45.1 above its truth.
fn env() -> Env {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, USERS, 3, 33);
    let rules = common::write_rules(&[common::weekly_rule_json(), common::monthly_rule_json()]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    ledger::fill_cache_monthly(&mut c, &pg);
    let e = Env { redis, pg };
    let drifted = format!("{}", e.weekly(4).parse::<f64>().unwrap() + 45.1);
    set(&mut c, "user:4:cost_weekly", &drifted);
    e
}

impl Env {
    fn weekly(&self, id: i64) -> String {
        ledger::truth_weekly(&self.pg)
            .into_iter()
            .find(|(i, _)| *i == id)
            .unwrap()
            .1
    }
}

fn set(c: &mut Connection, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(c)
        .unwrap();
}

fn get(c: &mut Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(c).unwrap()
}

fn digest(c: &mut Connection) -> String {
    redis::cmd("DEBUG").arg("DIGEST").query(c).unwrap()
}

fn dbsize(c: &mut Connection) -> i64 {
    redis::cmd("DBSIZE").query(c).unwrap()
}

/// Sends MULTI, queues `commands` (each must answer QUEUED) and returns EXEC's reply.
fn transaction(c: &mut Connection, commands: &[&[&str]]) -> redis::RedisResult<Value> {
    let ok: Value = redis::cmd("MULTI").query(c)?;
    assert_eq!(ok, Value::Okay);
    for args in commands {
        let queued = common::call(c, args);
        assert!(
            matches!(&queued, Ok(Value::SimpleString(s)) if s == "QUEUED"),
            "{args:?} was not queued: {queued:?}"
        );
    }
    redis::cmd("EXEC").query(c)
}

fn eval(c: &mut Connection, script: &str) -> redis::RedisResult<Value> {
    redis::cmd("EVAL").arg(script).arg(0).query(c)
}

fn eval_err(c: &mut Connection, script: &str) -> String {
    match eval(c, script) {
        Ok(v) => panic!("{script} should have failed, got {v:?}"),
        Err(e) => common::error_text(&e),
    }
}

fn json(v: &Value) -> J {
    serde_json::from_str(common::as_str(v)).unwrap()
}

// ---------------------------------------------------------------------------
// MULTI / EXEC
// ---------------------------------------------------------------------------

#[test]
fn id_scoped_check_runs_inside_multi_and_answers_in_execs_array() {
    let e = env();
    for resp3 in [false, true] {
        let mut c = if resp3 {
            e.redis.conn_resp3()
        } else {
            e.redis.conn()
        };
        let before = digest(&mut c);
        let reply = transaction(
            &mut c,
            &[
                &["CONSISTENCY.CHECK", "ID", "4"],
                &["CONSISTENCY.CHECK", "ID", "5", "ID", "4", "FORMAT", "json"],
                &["GET", "user:4:cost_weekly"],
            ],
        )
        .unwrap();
        let items = common::as_array(&reply);
        assert_eq!(items.len(), 3, "{reply:?}");

        // The native report, a map (RESP3) or flat array (RESP2).
        let r = &items[0];
        assert_eq!(common::as_i64(common::field(r, "checked")), 2, "{r:?}");
        assert_eq!(common::as_i64(common::field(r, "ids")), 1);
        assert_eq!(common::as_i64(common::field(r, "drifted")), 1);
        assert_eq!(
            common::as_str(common::field(r, "max_diff_key")),
            "user:4:cost_weekly"
        );
        let entries = common::as_array(common::field(r, "entries"));
        assert_eq!(entries.len(), 1);
        assert_eq!(
            common::as_str(common::field(&entries[0], "truth")),
            e.weekly(4)
        );
        assert!((common::as_f64(common::field(&entries[0], "diff")) - 45.1).abs() < 1e-6);

        // FORMAT json inside MULTI.
        let doc = json(&items[1]);
        assert_eq!(doc["checked"], 4, "{doc}");
        assert_eq!(doc["ids"], 2);
        assert_eq!(doc["drifted"], 1);
        assert_eq!(doc["entries"][0]["key"], "user:4:cost_weekly");

        // CHECK is read-only, in a transaction too.
        assert!(!common::is_null(&items[2]));
        assert_eq!(digest(&mut c), before, "resp3={resp3}");
    }
}

#[test]
fn unscoped_check_inside_multi_is_refused_and_the_rest_of_exec_runs() {
    let e = env();
    let mut c = e.redis.conn();
    let before = digest(&mut c);
    let err = transaction(&mut c, &[&["CONSISTENCY.CHECK"], &["SET", "marker", "1"]])
        .map(|v| format!("{v:?}"))
        .unwrap_err();
    let err = common::error_text(&err);
    assert!(err.starts_with(TOO_LARGE), "{err}");
    assert!(
        err.contains("a whole-keyspace run over 16 keys over sync-max-keys 1000")
            && err.ends_with("call CONSISTENCY.CHECK directly"),
        "{err}"
    );
    // A runtime error inside EXEC, not an aborted transaction: the SET ran.
    assert_eq!(get(&mut c, "marker"), Some("1".into()));
    common::call_ok(&mut c, &["DEL", "marker"]);
    assert_eq!(digest(&mut c), before);

    // Called directly, the same CHECK runs (blocking the client, not Redis).
    let v = common::call_ok(&mut c, &["CONSISTENCY.CHECK"]);
    assert_eq!(common::as_i64(common::field(&v, "checked")), 16);
    assert_eq!(common::as_i64(common::field(&v, "drifted")), 1);
}

#[test]
fn multi_applies_sync_max_keys_and_fix_of_ids_works_there() {
    let e = env();
    let mut c = e.redis.conn();
    common::call_ok(&mut c, &["CONFIG", "SET", "consistency.sync-max-keys", "2"]);
    let err = transaction(
        &mut c,
        &[&["CONSISTENCY.CHECK", "ID", "1", "ID", "2", "ID", "3"]],
    )
    .unwrap_err();
    assert_eq!(
        common::error_text(&err),
        "ERR too large for a script or MULTI: 3 ids over sync-max-keys 2; \
         call CONSISTENCY.CHECK directly"
    );

    // FIX of two ids inside MULTI clears their keys before EXEC returns.
    let reply = transaction(
        &mut c,
        &[
            &[
                "CONSISTENCY.FIX",
                "4",
                "5",
                "RULE",
                "cost_weekly",
                "FORMAT",
                "json",
            ],
            &["EXISTS", "user:4:cost_weekly", "user:5:cost_weekly"],
        ],
    )
    .unwrap();
    let items = common::as_array(&reply);
    let doc = json(&items[0]);
    assert_eq!(doc["changed"], 2, "{doc}");
    assert_eq!(doc["entries"][0]["action"], "deleted");
    assert_eq!(common::as_i64(&items[1]), 0);
    assert_eq!(dbsize(&mut c), 2 * USERS as i64 - 2);
}

// ---------------------------------------------------------------------------
// Lua
// ---------------------------------------------------------------------------

#[test]
fn scripts_run_small_work_and_refuse_large_work() {
    let e = env();
    let mut c = e.redis.conn();
    common::call_ok(&mut c, &["CONFIG", "SET", "consistency.sync-max-keys", "2"]);
    let before = digest(&mut c);

    // CHECK: two ids run, three are refused.
    let v = eval(
        &mut c,
        "return redis.call('CONSISTENCY.CHECK', 'ID', '3', 'ID', '4', 'FORMAT', 'json')",
    )
    .unwrap();
    let doc = json(&v);
    assert_eq!(doc["checked"], 4, "{doc}");
    assert_eq!(doc["drifted"], 1);
    let err = eval_err(
        &mut c,
        "return redis.call('CONSISTENCY.CHECK', 'ID', '1', 'ID', '2', 'ID', '3')",
    );
    assert!(
        err.starts_with(
            "ERR too large for a script or MULTI: 3 ids over sync-max-keys 2; \
             call CONSISTENCY.CHECK directly"
        ),
        "{err}"
    );
    // pcall sees the same error as a value the script can act on.
    let v = eval(
        &mut c,
        "local r = redis.pcall('CONSISTENCY.CHECK', 'ID', '1', 'ID', '2', 'ID', '3') \
         return r['err']",
    )
    .unwrap();
    assert!(
        common::as_str(&v).starts_with("too large for a script or MULTI: 3 ids")
            || common::as_str(&v).starts_with(TOO_LARGE),
        "{v:?}"
    );
    // An unscoped CHECK.
    let err = eval_err(&mut c, "return redis.call('CONSISTENCY.CHECK')");
    assert!(err.starts_with(TOO_LARGE), "{err}");
    assert!(err.contains("whole-keyspace"), "{err}");

    // FIX ALL is never run in a script; FIX of too many ids neither.
    let err = eval_err(&mut c, "return redis.call('CONSISTENCY.FIX', 'ALL')");
    assert!(err.starts_with(TOO_LARGE), "{err}");
    assert!(err.contains("call CONSISTENCY.FIX ALL directly"), "{err}");
    let err = eval_err(
        &mut c,
        "return redis.call('CONSISTENCY.FIX', 'ALL', 'DRYRUN')",
    );
    assert!(err.starts_with(TOO_LARGE), "{err}");
    let err = eval_err(
        &mut c,
        "return redis.call('CONSISTENCY.FIX', '1', '2', '3')",
    );
    assert!(
        err.starts_with(
            "ERR too large for a script or MULTI: 3 ids over sync-max-keys 2; \
             call CONSISTENCY.FIX directly"
        ),
        "{err}"
    );
    assert_eq!(digest(&mut c), before, "refusals change nothing");

    // FIX of two ids runs.
    let v = eval(
        &mut c,
        "return redis.call('CONSISTENCY.FIX', '4', '5', 'FORMAT', 'json')",
    )
    .unwrap();
    assert_eq!(json(&v)["changed"], 4);
    assert_eq!(dbsize(&mut c), 2 * USERS as i64 - 4);
}

#[test]
fn purge_in_a_script_needs_a_limit_within_sync_max_keys() {
    let e = env();
    let mut c = e.redis.conn();
    for i in 0..20 {
        set(&mut c, &format!("tmp:{i}"), "x");
    }
    let before = digest(&mut c);
    let total = dbsize(&mut c);

    let err = eval_err(
        &mut c,
        "return redis.call('CONSISTENCY.PURGE', 'MATCH', 'tmp:*')",
    );
    assert!(
        err.starts_with(&format!(
            "ERR too large for a script or MULTI: a whole-keyspace run over {total} keys \
             over sync-max-keys 1000; call CONSISTENCY.PURGE directly"
        )),
        "{err}"
    );
    let err = eval_err(
        &mut c,
        "return redis.call('CONSISTENCY.PURGE', 'MATCH', 'tmp:*', 'DRYRUN')",
    );
    assert!(err.starts_with(TOO_LARGE), "{err}");
    assert_eq!(digest(&mut c), before);

    // LIMIT 5: exactly five tmp keys go, nothing else.
    let v = eval(
        &mut c,
        "return redis.call('CONSISTENCY.PURGE', 'MATCH', 'tmp:*', 'LIMIT', '5')",
    )
    .unwrap();
    assert_eq!(common::as_i64(common::field(&v, "deleted")), 5, "{v:?}");
    assert!(!common::as_bool(common::field(&v, "dry_run")));
    assert_eq!(dbsize(&mut c), total - 5);
    let left: Vec<String> = redis::cmd("KEYS").arg("tmp:*").query(&mut c).unwrap();
    assert_eq!(left.len(), 15);
    assert_eq!(dbsize(&mut c) - left.len() as i64, 2 * USERS as i64);

    // In MULTI as well; and a LIMIT above sync-max-keys is refused.
    let reply = transaction(
        &mut c,
        &[&["CONSISTENCY.PURGE", "MATCH", "tmp:*", "LIMIT", "5"]],
    )
    .unwrap();
    let items = common::as_array(&reply);
    assert_eq!(common::as_i64(common::field(&items[0], "deleted")), 5);
    common::call_ok(&mut c, &["CONFIG", "SET", "consistency.sync-max-keys", "3"]);
    let err = eval_err(
        &mut c,
        "return redis.call('CONSISTENCY.PURGE', 'MATCH', 'tmp:*', 'LIMIT', '5')",
    );
    assert!(err.starts_with(TOO_LARGE), "{err}");
    assert_eq!(dbsize(&mut c), total - 10);
}
