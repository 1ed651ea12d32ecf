//! Key templates against a real redis-server: a placeholder matches no `:`
//! unless the rule says so, and rules whose templates can claim the same key are
//! refused at load, naming both.
//!
//! With rules `u:{id}` and `u:{id}:w`, FIX ALL (and scheduled autofix) used to
//! delete every `u:N:w` as an orphan of the first rule (id `N:w`), and the
//! presence rule deleted application keys such as `mcp:connection:state:abc:lock`.
//!
//! Run: `cargo test --release --features test-hooks --test integration key_templates::`

use crate::common;

use common::{as_i64, call_err, call_ok, field, ledger, TestPg, TestRedis};
use serde_json::json;

fn spend_rule(name: &str, key: &str) -> serde_json::Value {
    json!({"name": name, "kind": "number", "key": key, "truth": ledger::WEEKLY_TRUTH})
}

#[test]
fn keys_of_a_longer_family_are_not_orphans_of_a_shorter_one() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 5, 3, 11);
    ledger::add_endpoint(&pg, "abc", true);
    let rules = common::write_rules(&[
        spend_rule("short", "u:{id}"),
        spend_rule("long", "u:{id}:w"),
        common::presence_rule_json(),
    ]);
    let r = TestRedis::start_for(&pg, &rules, &[("autofix", "yes")]);
    let mut c = r.conn();
    ledger::fill_cache(&mut c, "u:{id}", &ledger::truth_weekly(&pg));
    ledger::fill_cache(&mut c, "u:{id}:w", &ledger::truth_weekly(&pg));
    call_ok(&mut c, &["SET", "mcp:connection:state:abc", "up"]);
    call_ok(&mut c, &["SET", "mcp:connection:state:abc:lock", "1"]);
    let before: i64 = as_i64(&call_ok(&mut c, &["DBSIZE"]));

    let v = call_ok(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    assert_eq!(as_i64(field(&v, "drifted")), 0, "{v:?}");
    assert_eq!(as_i64(field(&v, "changed")), 0, "{v:?}");
    assert_eq!(as_i64(&call_ok(&mut c, &["DBSIZE"])), before);
    assert_eq!(
        as_i64(&call_ok(
            &mut c,
            &["EXISTS", "mcp:connection:state:abc:lock"]
        )),
        1
    );

    // A real orphan of the short family is still found.
    call_ok(&mut c, &["SET", "u:999:w", "1"]);
    let v = call_ok(&mut c, &["CONSISTENCY.CHECK", "RULE", "long"]);
    assert_eq!(as_i64(field(&v, "drifted")), 1, "{v:?}");
}

#[test]
fn overlapping_templates_are_refused_naming_both_rules() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    let mut wide = spend_rule("short", "u:{id}");
    wide["ids_may_contain_colon"] = json!(true);
    let overlapping = common::write_rules(&[wide, spend_rule("long", "u:{id}:w")]);

    // At load: no rules, Redis up, the reason names both rules and an example key.
    let r = TestRedis::start_for(&pg, &overlapping, &[]);
    let mut c = r.conn();
    let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
    for piece in [
        "rule 'long'",
        "rule 'short'",
        "'u:{id}:w'",
        "'u:{id}'",
        "for example 'u:1:w'",
    ] {
        assert!(err.contains(piece), "{piece} in {err}");
    }

    // At RELOAD: refused, and the rules in force stay.
    let good = common::write_rules(&[
        spend_rule("short", "u:{id}"),
        spend_rule("long", "u:{id}:w"),
    ]);
    call_ok(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "consistency.rules-file",
            good.to_str().unwrap(),
        ],
    );
    let err = call_err(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "consistency.rules-file",
            overlapping.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("can match the same keys as rule 'short'"),
        "{err}"
    );
    let rules = call_ok(&mut c, &["CONSISTENCY.RULES"]);
    assert_eq!(common::as_array(&rules).len(), 2);
}
