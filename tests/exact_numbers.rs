//! Exact numbers and unambiguous truth, against a real redis-server and
//! PostgreSQL: window members and cached numbers compare with the truth as exact
//! decimals (0.1 + 0.2 is 0.3, so `THRESHOLD 0` finds nothing and FIX ALL deletes
//! nothing), and a truth that returns an id twice fails CHECK and FIX with an
//! error naming the rule and the id, repairing nothing.
//!
//! Run: `cargo test --release --features redis-consistency/test-hooks --test integration exact_numbers::`

use crate::common;

use std::collections::BTreeMap;

use common::{TestPg, TestRedis};
use redis::Connection;
use serde_json::{json, Value as J};

/// Truth of both exact rules: `numeric(21,15)`, printed with all 15 places.
const EXACT_TRUTH: &str = "SELECT id, v FROM exact_truth";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn exists(c: &mut Connection, key: &str) -> bool {
    common::as_i64(&common::call_ok(c, &["EXISTS", key])) == 1
}

/// key -> entry, for every entry of a reply.
fn by_key(reply: &J) -> BTreeMap<String, J> {
    reply["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries in {reply}"))
        .iter()
        .map(|e| (e["key"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

#[test]
fn decimal_sums_and_values_equal_to_the_truth_are_not_drift() {
    let pg = TestPg::fresh();
    pg.exec(
        "CREATE TABLE exact_truth (id int PRIMARY KEY, v numeric(21,15) NOT NULL);
         INSERT INTO exact_truth VALUES (1, 0.3), (2, 0.31);",
    );
    let rules = common::write_rules(&[
        json!({
            "name": "win", "kind": "window_sum", "key": "win:{id}", "window_ms": 3_600_000,
            "truth": format!("{EXACT_TRUTH} WHERE $1::timestamptz IS NOT NULL")
        }),
        json!({ "name": "num", "kind": "number", "key": "num:{id}", "truth": EXACT_TRUTH }),
    ]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    let ms = now_ms() - 1000;
    for id in [1, 2] {
        // Summed in f64, these are 0.30000000000000004.
        for (n, amount) in [(0, "0.1"), (1, "0.2")] {
            let member = format!("{}:{amount}", ms + n);
            common::call_ok(
                &mut c,
                &["ZADD", &format!("win:{id}"), &(ms + n).to_string(), &member],
            );
        }
        common::call_ok(&mut c, &["SET", &format!("num:{id}"), "0.3"]);
    }

    let r = common::jcall(&mut c, &["CONSISTENCY.CHECK", "THRESHOLD", "0"]);
    assert_eq!(r["checked"], 4, "{r}");
    let found = by_key(&r);
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        ["num:2", "win:2"],
        "only the twins whose truth is 0.31 drift: {r}"
    );
    let w = &found["win:2"];
    assert_eq!(w["status"], "drift");
    assert_eq!(w["cached"], "0.3", "the exact sum, as text: {w}");
    assert_eq!(w["truth"], "0.310000000000000");
    assert_eq!(w["diff"].as_f64(), Some(-0.01), "{w}");
    assert_eq!(found["num:2"]["diff"].as_f64(), Some(-0.01));

    let r = common::jcall(&mut c, &["CONSISTENCY.CHECK", "ID", "1", "THRESHOLD", "0"]);
    assert_eq!(r["drifted"], 0, "{r}");

    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "ALL", "THRESHOLD", "0"]);
    let actions: BTreeMap<String, J> = by_key(&r)
        .into_iter()
        .map(|(k, e)| (k, e["action"].clone()))
        .collect();
    assert_eq!(
        actions,
        BTreeMap::from([
            ("num:2".to_string(), json!("deleted")),
            ("win:2".to_string(), json!("deleted")),
        ]),
        "{r}"
    );
    assert!(exists(&mut c, "win:1"), "a correct window was deleted");
    assert!(exists(&mut c, "num:1"), "a correct number was deleted");
    assert!(!exists(&mut c, "win:2") && !exists(&mut c, "num:2"));

    // FIX of given ids derives the same exact diff.
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "1", "DRYRUN"]);
    let found = by_key(&r);
    assert_eq!(found["win:1"]["cached"], "0.3", "{r}");
    assert_eq!(found["win:1"]["diff"].as_f64(), Some(0.0), "{r}");
    assert_eq!(found["num:1"]["diff"].as_f64(), Some(0.0), "{r}");
}

#[test]
fn a_truth_returning_an_id_twice_fails_the_run_and_repairs_nothing() {
    let pg = TestPg::fresh();
    let rules = common::write_rules(&[
        json!({
            "name": "dup", "kind": "number", "key": "dup:{id}",
            "truth": "SELECT 4, 1.0 UNION ALL SELECT 4, 2.0"
        }),
        // An orphan FIX ALL would delete if its check went ahead.
        json!({
            "name": "other", "kind": "number", "key": "other:{id}",
            "truth": "SELECT 1, 1.0"
        }),
        // A presence truth may list an id twice: no value, no ambiguity.
        json!({
            "name": "seen", "kind": "presence", "key": "seen:{id}",
            "truth": "SELECT 'a' UNION ALL SELECT 'a'"
        }),
    ]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    common::call_ok(&mut c, &["SET", "dup:4", "7"]);
    common::call_ok(&mut c, &["SET", "other:9", "1"]);
    common::call_ok(&mut c, &["SET", "seen:a", "1"]);

    let want = "ERR truth of rule 'dup' returned id '4' twice";
    for args in [
        &["CONSISTENCY.CHECK"][..],
        &["CONSISTENCY.CHECK", "ID", "4"],
        &["CONSISTENCY.CHECK", "RULE", "dup"],
        &["CONSISTENCY.FIX", "ALL"],
        &["CONSISTENCY.FIX", "4"],
        &["CONSISTENCY.FIX", "4", "RULE", "dup", "REWRITE"],
    ] {
        assert_eq!(common::call_err(&mut c, args), want, "{args:?}");
    }
    // The same inside a script, where the check runs on the main thread.
    let script = common::call(
        &mut c,
        &[
            "EVAL",
            "return redis.call('CONSISTENCY.CHECK', 'ID', '4')",
            "0",
        ],
    );
    let err = common::error_text(&script.expect_err("the script must fail"));
    assert!(
        err.contains("truth of rule 'dup' returned id '4' twice"),
        "{err}"
    );
    for key in ["dup:4", "other:9", "seen:a"] {
        assert!(exists(&mut c, key), "{key} was repaired by a failed run");
    }
    assert_eq!(
        common::as_str(&common::call_ok(&mut c, &["GET", "dup:4"])),
        "7",
        "REWRITE wrote a row"
    );

    // The other rules still check on their own.
    let r = common::jcall(
        &mut c,
        &["CONSISTENCY.CHECK", "RULE", "other", "RULE", "seen"],
    );
    let found = by_key(&r);
    assert_eq!(found.keys().collect::<Vec<_>>(), ["other:9"], "{r}");
}
