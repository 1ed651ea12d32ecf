//! Reliability: malformed rules files. A bad file never stops Redis.
//!
//! - at load: Redis starts with no rules; CHECK answers `ERR no rules loaded: ...`
//!   naming the file, the rule and the problem; STATUS and the log say the same;
//! - at RELOAD (and CONFIG SET consistency.rules-file): refused with the file, the
//!   rule and the problem; the old rules stay and CHECK still works;
//! - SQL that errors is not a file problem: the file loads, and CHECK answers
//!   `ERR truth query failed: ...` (or `ERR bad truth query: ...` for a wrong shape).
//!
//! Tests run as root, for whom chmod 000 does not stop a read: an unreadable file
//! is a missing file or a directory here.
//!
//! Run: `cargo test --release --features test-hooks --test integration rules_files::`

use crate::common;
use crate::fault_support;

use std::path::Path;

use common::{as_array, as_i64, as_str, call_err, call_ok, field, ledger, opt_str, TestRedis};
use fault_support::{assert_no_crash, digest, ping};
use serde_json::{json, Value as J};

/// A valid rule named `name` (seed 000 weekly spend).
fn rule(name: &str) -> J {
    json!({
        "name": name, "kind": "number", "key": format!("{name}:{{id}}"),
        "truth": ledger::WEEKLY_TRUTH
    })
}

/// A bad rules file: its text, the rule the error must name (`#n` or a name), and
/// pieces of the problem the error must contain.
struct Bad {
    what: &'static str,
    text: String,
    rule: Option<&'static str>,
    problem: &'static [&'static str],
}

fn doc(rules: &[J]) -> String {
    serde_json::to_string_pretty(&json!({ "rules": rules })).unwrap()
}

fn with(name: &str, change: impl FnOnce(&mut serde_json::Map<String, J>)) -> J {
    let mut r = rule(name);
    change(r.as_object_mut().unwrap());
    r
}

fn bad_files() -> Vec<Bad> {
    vec![
        Bad {
            what: "invalid JSON (cut short)",
            text: r#"{"rules": [{"name": "a", "kind": "#.to_string(),
            rule: None,
            problem: &["invalid JSON", "EOF"],
        },
        Bad {
            what: "invalid JSON (trailing comma)",
            text: doc(&[rule("a")]).replace("\n  ]", ",\n  ]"),
            rule: None,
            problem: &["invalid JSON", "line"],
        },
        Bad {
            what: "empty file",
            text: String::new(),
            rule: None,
            problem: &["invalid JSON"],
        },
        Bad {
            what: "not an object",
            text: "[1, 2]".to_string(),
            rule: None,
            problem: &["top level must be an object"],
        },
        Bad {
            what: "no rules array",
            text: r#"{"rulez": []}"#.to_string(),
            rule: None,
            problem: &["unknown top-level field 'rulez'"],
        },
        Bad {
            what: "a rule that is not an object",
            text: doc(&[rule("a"), json!("b")]),
            rule: Some("#2"),
            problem: &["must be an object"],
        },
        Bad {
            what: "duplicate names",
            text: doc(&[rule("a"), rule("b"), rule("a")]),
            rule: Some("#3"),
            problem: &["duplicate rule name 'a'", "rule #1"],
        },
        Bad {
            what: "template without {id}",
            text: doc(&[with("noid", |r| {
                r.insert("key".into(), json!("user:cost_weekly"));
            })]),
            rule: Some("noid"),
            problem: &["field 'key'", "'user:cost_weekly'", "exactly once, found 0"],
        },
        Bad {
            what: "template with two {id}",
            text: doc(&[
                rule("fine"),
                with("twoid", |r| {
                    r.insert("key".into(), json!("user:{id}:{id}"));
                }),
            ]),
            rule: Some("twoid"),
            problem: &["field 'key'", "exactly once, found 2"],
        },
        Bad {
            what: "template that is only {id}",
            text: doc(&[with("bare", |r| {
                r.insert("key".into(), json!("{id}"));
            })]),
            rule: Some("bare"),
            problem: &["field 'key'", "match every key"],
        },
        Bad {
            what: "unknown kind",
            text: doc(&[with("k", |r| {
                r.insert("kind".into(), json!("counter"));
            })]),
            rule: Some("k"),
            problem: &["unknown kind 'counter'", "number"],
        },
        Bad {
            what: "unknown field",
            text: doc(&[with("f", |r| {
                r.insert("treshold".into(), json!(5));
            })]),
            rule: Some("f"),
            problem: &["unknown field 'treshold'"],
        },
        Bad {
            what: "field of the wrong type",
            text: doc(&[with("t", |r| {
                r.insert("threshold".into(), json!("5"));
            })]),
            rule: Some("t"),
            problem: &["field 'threshold'", "non-negative number"],
        },
        Bad {
            what: "field of another kind",
            text: doc(&[with("w", |r| {
                r.insert("window_ms".into(), json!(1000));
            })]),
            rule: Some("w"),
            problem: &["field 'window_ms' applies only to kind window_sum"],
        },
        Bad {
            what: "missing truth",
            text: doc(&[with("m", |r| {
                r.remove("truth");
            })]),
            rule: Some("m"),
            problem: &["missing field 'truth'"],
        },
        Bad {
            what: "window_sum without $1",
            text: doc(&[json!({
                "name": "win", "kind": "window_sum", "key": "w:{id}", "window_ms": 1000,
                "truth": "SELECT 1, 2"
            })]),
            rule: Some("win"),
            problem: &["must use $1"],
        },
        Bad {
            what: "a name with a space",
            text: doc(&[with("ok", |r| {
                r.insert("name".into(), json!("my rule"));
            })]),
            rule: Some("#1"),
            problem: &["field 'name'", "'my rule'"],
        },
        Bad {
            what: "bytes that are not UTF-8",
            text: String::from_utf8_lossy(b"{\"rules\": []}").to_string(),
            rule: None,
            problem: &[],
        },
    ]
}

/// Writes the raw bytes of a file whose text is not UTF-8.
fn write_non_utf8(path: &Path) {
    let mut bytes = doc(&[rule("a")]).into_bytes();
    let at = bytes.iter().position(|&b| b == b'a').unwrap();
    bytes[at] = 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// The error CHECK answers when no rules loaded, the error text of the file.
fn check_error(redis: &TestRedis) -> String {
    let mut c = redis.conn();
    call_err(&mut c, &["CONSISTENCY.CHECK"])
}

fn assert_names(err: &str, file: &str, bad: &Bad) {
    assert!(
        err.contains(file),
        "{}: error does not name the file: {err}",
        bad.what
    );
    if let Some(rule) = bad.rule {
        let label = if rule.starts_with('#') {
            format!("rule {rule}: ")
        } else {
            format!("rule '{rule}': ")
        };
        assert!(
            err.contains(&label),
            "{}: error does not name {label}: {err}",
            bad.what
        );
    }
    for piece in bad.problem {
        assert!(err.contains(piece), "{}: no '{piece}' in: {err}", bad.what);
    }
    assert!(
        !err.contains('\n'),
        "{}: a multi-line error: {err:?}",
        bad.what
    );
}

#[test]
fn a_bad_rules_file_at_load_leaves_redis_up_and_check_says_why() {
    let dir = common::temp_dir("badrules");
    let mut cases: Vec<(Bad, std::path::PathBuf)> = Vec::new();
    for (i, bad) in bad_files().into_iter().enumerate() {
        let path = dir.join(format!("rules{i}.json"));
        if bad.what == "bytes that are not UTF-8" {
            write_non_utf8(&path);
            let bad = Bad {
                problem: &["cannot read", "UTF-8"],
                ..bad
            };
            cases.push((bad, path));
        } else {
            std::fs::write(&path, &bad.text).unwrap();
            cases.push((bad, path));
        }
    }
    // Unreadable: a missing file, and a directory.
    cases.push((
        Bad {
            what: "missing file",
            text: String::new(),
            rule: None,
            problem: &["cannot read", "No such file"],
        },
        dir.join("no-such-rules.json"),
    ));
    let sub = dir.join("a-directory.json");
    std::fs::create_dir(&sub).unwrap();
    cases.push((
        Bad {
            what: "a directory",
            text: String::new(),
            rule: None,
            problem: &["cannot read", "directory"],
        },
        sub,
    ));

    let dead = common::dead_pg_url();
    for (bad, path) in &cases {
        let file = path.display().to_string();
        let redis = TestRedis::start(&[("pg-url", &dead), ("rules-file", &file)]);
        let mut c = redis.conn();
        ping(&mut c);
        let err = check_error(&redis);
        assert!(
            err.starts_with("ERR no rules loaded: "),
            "{}: {err}",
            bad.what
        );
        assert_names(&err, &file, bad);
        // FIX and PURGE RULE say the same; nothing is loaded.
        let fix = call_err(&mut c, &["CONSISTENCY.FIX", "ALL"]);
        assert_eq!(fix, err, "{}", bad.what);
        let status = call_ok(&mut c, &["CONSISTENCY.STATUS"]);
        assert_eq!(as_i64(field(&status, "rules")), 0);
        let why = opt_str(field(&status, "rules_error")).expect("rules_error");
        assert_eq!(format!("ERR no rules loaded: {why}"), err);
        assert!(as_array(&call_ok(&mut c, &["CONSISTENCY.RULES"])).is_empty());
        let info = redis.info("consistency");
        assert_eq!(info["consistency_rules_loaded"], "0");
        // One warning in the log, naming the same.
        let log = redis.log();
        let line = log
            .lines()
            .find(|l| l.contains("no rules loaded"))
            .unwrap_or_else(|| panic!("{}: no warning in the log:\n{log}", bad.what));
        assert!(line.contains(&why), "{}: {line}", bad.what);
        // Fixing the file and reloading brings the rules in.
        std::fs::remove_dir(path).ok();
        std::fs::write(path, doc(&[rule("good")])).unwrap();
        let reloaded = call_ok(&mut c, &["CONSISTENCY.RELOAD"]);
        assert_eq!(as_i64(field(&reloaded, "rules")), 1, "{}", bad.what);
        assert_no_crash(&log);
    }
}

#[test]
fn a_bad_rules_file_at_reload_keeps_the_old_rules_and_check_works() {
    let pg = common::TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 10, 2, 3);
    let path = common::write_rules(&[common::weekly_rule_json(), rule("extra")]);
    let file = path.display().to_string();
    let redis = TestRedis::start_for(&pg, &path, &[]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    call_ok(&mut c, &["SET", "user:2:cost_weekly", "900"]);
    let before = digest(&mut c);
    let rules_before = call_ok(&mut c, &["CONSISTENCY.RULES"]);
    let drifted = |c: &mut redis::Connection| {
        let r = call_ok(c, &["CONSISTENCY.CHECK"]);
        (as_i64(field(&r, "checked")), as_i64(field(&r, "drifted")))
    };
    assert_eq!(drifted(&mut c), (10, 1));

    let mut cases = bad_files();
    cases.retain(|b| b.what != "bytes that are not UTF-8");
    for bad in &cases {
        common::write_rules_text_to(&path, &bad.text);
        let err = call_err(&mut c, &["CONSISTENCY.RELOAD"]);
        assert!(
            err.starts_with("ERR reload failed: "),
            "{}: {err}",
            bad.what
        );
        assert_names(&err, &file, bad);
        // CONFIG SET of the file is refused the same way. (Setting the very
        // same string again is a no-op in Redis, which then never calls the
        // module: another spelling of the path makes it a change.)
        let same = call_ok(&mut c, &["CONFIG", "SET", "consistency.rules-file", &file]);
        assert_eq!(same, redis::Value::Okay, "{}", bad.what);
        let other_spelling = path
            .parent()
            .unwrap()
            .join(".")
            .join(path.file_name().unwrap())
            .display()
            .to_string();
        let err = call_err(
            &mut c,
            &["CONFIG", "SET", "consistency.rules-file", &other_spelling],
        );
        assert!(err.contains(&other_spelling), "{}: {err}", bad.what);
        for piece in bad.problem {
            assert!(err.contains(piece), "{}: no '{piece}' in: {err}", bad.what);
        }
        assert_eq!(call_ok(&mut c, &["CONSISTENCY.RULES"]), rules_before);
        assert_eq!(drifted(&mut c), (10, 1), "{}", bad.what);
    }
    write_non_utf8(&path);
    let err = call_err(&mut c, &["CONSISTENCY.RELOAD"]);
    assert!(
        err.contains("cannot read") && err.contains("UTF-8"),
        "{err}"
    );
    // The file vanishes, or becomes a directory.
    std::fs::remove_file(&path).unwrap();
    let err = call_err(&mut c, &["CONSISTENCY.RELOAD"]);
    assert!(err.contains(&file) && err.contains("No such file"), "{err}");
    std::fs::create_dir(&path).unwrap();
    let err = call_err(&mut c, &["CONSISTENCY.RELOAD"]);
    assert!(err.contains(&file) && err.contains("directory"), "{err}");
    // CONFIG SET to a path that does not exist: refused, the setting unchanged.
    let missing = format!("{file}.missing");
    let err = call_err(
        &mut c,
        &["CONFIG", "SET", "consistency.rules-file", &missing],
    );
    assert!(
        err.contains(&missing) && err.contains("No such file"),
        "{err}"
    );
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("consistency.rules-file")
        .query(&mut c)
        .unwrap();
    assert_eq!(got[1], file);

    assert_eq!(call_ok(&mut c, &["CONSISTENCY.RULES"]), rules_before);
    assert_eq!(drifted(&mut c), (10, 1));
    let status = call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    assert!(opt_str(field(&status, "rules_error")).is_none());
    assert_eq!(as_i64(field(&status, "rules")), 2);
    assert_eq!(digest(&mut c), before, "a failed reload changed a key");

    // A good file again: RELOAD takes it.
    std::fs::remove_dir(&path).unwrap();
    common::write_rules_to(&path, &[common::weekly_rule_json()]);
    let r = call_ok(&mut c, &["CONSISTENCY.RELOAD"]);
    assert_eq!(as_i64(field(&r, "rules")), 1);
    assert_eq!(as_str(field(&r, "file")), file);
    assert_no_crash(&redis.log());
}

#[test]
fn sql_that_errors_loads_and_surfaces_at_check() {
    let pg = common::TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 5, 2, 4);
    let broken = |name: &str, truth: &str| json!({"name": name, "kind": "number", "key": format!("{name}:{{id}}"), "truth": truth});
    let path = common::write_rules(&[
        common::weekly_rule_json(),
        broken("missing_table", "SELECT id, v FROM no_such_table"),
        broken("syntax", "SELEC id, v FROM users"),
        broken("one_column", "SELECT id FROM users"),
        broken("division", "SELECT id, 1 / (id - id) FROM users"),
    ]);
    let redis = TestRedis::start_for(&pg, &path, &[]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    call_ok(&mut c, &["SET", "syntax:1", "5"]);
    let before = digest(&mut c);
    let rules = call_ok(&mut c, &["CONSISTENCY.RULES"]);
    assert_eq!(as_array(&rules).len(), 5, "SQL is not checked at load");
    let reloaded = call_ok(&mut c, &["CONSISTENCY.RELOAD"]);
    assert_eq!(as_i64(field(&reloaded, "rules")), 5);

    for (rule, expect) in [
        (
            "missing_table",
            "ERR truth query failed: relation \"no_such_table\" does not exist (SQLSTATE 42P01)",
        ),
        (
            "syntax",
            "ERR truth query failed: syntax error at or near \"SELEC\"",
        ),
        (
            "one_column",
            "ERR bad truth query: rule 'one_column': truth returns 1 column(s), needs at least 2 (id, value)",
        ),
        (
            "division",
            "ERR truth query failed: division by zero (SQLSTATE 22012)",
        ),
    ] {
        for args in [
            &["CONSISTENCY.CHECK", "RULE", rule][..],
            &["CONSISTENCY.CHECK", "RULE", rule, "ID", "1"],
            &["CONSISTENCY.FIX", "ALL", "RULE", rule],
            &["CONSISTENCY.FIX", "1", "RULE", rule, "REWRITE"],
        ] {
            let err = call_err(&mut c, args);
            let ok = err.starts_with(expect)
                || (args.contains(&"REWRITE")
                    && err.starts_with("ERR REWRITE needs the truth")
                    && err.contains(&expect["ERR ".len()..]));
            assert!(ok, "{args:?}: {err}\nexpected: {expect}");
        }
    }
    // The good rule is unaffected; all rules together fail on the first broken one.
    let r = call_ok(&mut c, &["CONSISTENCY.CHECK", "RULE", "cost_weekly"]);
    assert_eq!(as_i64(field(&r, "checked")), 5);
    let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
    assert!(err.starts_with("ERR truth query failed: "), "{err}");
    assert_eq!(digest(&mut c), before);
    let info = redis.info("consistency");
    let pg_errors: i64 = info["consistency_pg_errors_total"].parse().unwrap();
    assert!(pg_errors >= 8, "{info:?}");
    assert_no_crash(&redis.log());
}
