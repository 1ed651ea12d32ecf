//! Repairs replicate: a replica without the module and an AOF replayed by a
//! redis-server without the module end up with exactly the primary's data after
//! FIX of ids (delete, SET KEEPTTL, HSET), FIX ALL, PURGE and the audit stream.
//! And the module never writes on a replica.
//!
//! Run: `cargo test --release --features test-hooks --test integration replication::`

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{ledger, TestPg, TestRedis};
use redis::Connection;
use serde_json::{json, Value as J};

fn digest(c: &mut Connection) -> String {
    common::as_str(&common::call_ok(c, &["DEBUG", "DIGEST"])).to_string()
}

fn dbsize(c: &mut Connection) -> i64 {
    common::as_i64(&common::call_ok(c, &["DBSIZE"]))
}

fn quota_rule() -> J {
    json!({
        "name": "quota", "kind": "hash_field", "key": "quota:{id}", "field": "weekly",
        "truth": ledger::WEEKLY_TRUTH
    })
}

/// Waits until the replica has processed everything the primary sent, then
/// asserts both hold the same data.
fn assert_replica_caught_up(primary: &TestRedis, replica: &TestRedis, after: &str) {
    let mut p = primary.conn();
    let mut r = replica.conn();
    let caught_up = common::wait_until(Duration::from_secs(20), || {
        let sent = &primary.info("replication")["master_repl_offset"];
        let done = &replica.info("replication")["master_repl_offset"];
        sent == done
    });
    assert!(caught_up, "the replica did not catch up after {after}");
    assert_eq!(dbsize(&mut r), dbsize(&mut p), "DBSIZE after {after}");
    assert_eq!(digest(&mut r), digest(&mut p), "DEBUG DIGEST after {after}");
}

/// Copies a directory tree (the AOF dir is flat, but be general).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn replica_and_aof_without_the_module_see_the_same_repairs() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 30, 3, 21);
    let rules = common::write_rules(&[
        common::weekly_rule_json(),
        common::monthly_rule_json(),
        common::window_rule_json(),
        quota_rule(),
    ]);
    let url = pg.url();
    let primary = TestRedis::start_with(
        &[
            ("pg-url", &url),
            ("rules-file", rules.to_str().unwrap()),
            ("audit-stream", "consistency:audit"),
            ("audit-maxlen", "10"),
        ],
        &[
            "appendonly yes",
            "appendfsync always",
            "repl-diskless-sync-delay 0",
        ],
    );
    let replica =
        TestRedis::start_without_module(&[&format!("replicaof 127.0.0.1 {}", primary.port())]);
    let mut p = primary.conn();
    common::wait_linked(&replica);

    ledger::fill_cache_weekly(&mut p, &pg);
    ledger::fill_cache_monthly(&mut p, &pg);
    ledger::fill_cache_window(&mut p, &pg);
    let weekly: std::collections::BTreeMap<i64, String> =
        ledger::truth_weekly(&pg).into_iter().collect();
    for (id, truth) in &weekly {
        common::call_ok(
            &mut p,
            &[
                "HSET",
                &format!("quota:{id}"),
                "weekly",
                truth,
                "limit",
                "9",
            ],
        );
        common::call_ok(
            &mut p,
            &["EXPIRE", &format!("user:{id}:cost_weekly"), "3600"],
        );
    }
    let mut fill = redis::pipe();
    for i in 0..5000 {
        fill.cmd("SET").arg(format!("tmp:{i}")).arg("x").ignore();
    }
    fill.query::<()>(&mut p).unwrap();
    assert_replica_caught_up(&primary, &replica, "filling the caches");

    // FIX of an id: UNLINKs.
    common::call_ok(&mut p, &["SET", "user:4:cost_weekly", "900", "KEEPTTL"]);
    let r = common::jcall(&mut p, &["CONSISTENCY.FIX", "4"]);
    assert_eq!(r["changed"], 4, "{r}");
    assert_replica_caught_up(&primary, &replica, "FIX 4");

    // REWRITE: SET KEEPTTL and HSET.
    common::call_ok(&mut p, &["SET", "user:5:cost_weekly", "901", "KEEPTTL"]);
    common::call_ok(&mut p, &["HSET", "quota:5", "weekly", "902"]);
    let r = common::jcall(
        &mut p,
        &[
            "CONSISTENCY.FIX",
            "5",
            "REWRITE",
            "RULE",
            "cost_weekly",
            "RULE",
            "quota",
        ],
    );
    assert_eq!(r["changed"], 2, "{r}");
    assert_replica_caught_up(&primary, &replica, "FIX 5 REWRITE");
    let mut rc = replica.conn();
    let v: Option<String> = redis::cmd("GET")
        .arg("user:5:cost_weekly")
        .query(&mut rc)
        .unwrap();
    assert_eq!(v.as_deref(), Some(&*weekly[&5]));
    let ttl = common::as_i64(&common::call_ok(&mut rc, &["PTTL", "user:5:cost_weekly"]));
    assert!(ttl > 0, "the replica's copy lost its TTL");

    // FIX ALL over many drifted keys (more than one slice, with the audit stream).
    for id in 6..=30 {
        common::call_ok(&mut p, &["SET", &format!("user:{id}:cost_monthly"), "-500"]);
    }
    common::call_ok(&mut p, &["SET", "user:999:cost_weekly", "1"]);
    common::call_ok(&mut p, &["CONFIG", "SET", "consistency.scan-batch", "7"]);
    let r = common::jcall(&mut p, &["CONSISTENCY.FIX", "ALL"]);
    assert_eq!(r["changed"], 26, "{r}");
    assert_replica_caught_up(&primary, &replica, "FIX ALL");

    // PURGE of 5000 keys in slices of 7.
    let v = common::call_ok(&mut p, &["CONSISTENCY.PURGE", "MATCH", "tmp:*"]);
    assert_eq!(common::as_i64(common::field(&v, "deleted")), 5000);
    assert_replica_caught_up(&primary, &replica, "PURGE");
    assert_eq!(dbsize(&mut rc), dbsize(&mut p));

    // Inside a script and MULTI (the synchronous path), and in another database.
    common::call_ok(&mut p, &["SET", "user:7:cost_weekly", "907"]);
    let v = common::call_ok(
        &mut p,
        &["EVAL", "return redis.call('CONSISTENCY.FIX', '7', 'REWRITE', 'RULE', 'cost_weekly', 'FORMAT', 'json')", "0"],
    );
    assert!(common::as_str(&v).contains("\"rewritten\""), "{v:?}");
    let mut p3 = primary.conn();
    common::call_ok(&mut p3, &["SELECT", "3"]);
    for i in 0..40 {
        common::call_ok(&mut p3, &["SET", &format!("tmp:{i}"), "x"]);
    }
    common::call_ok(&mut p3, &["SET", "user:8:cost_weekly", "908"]);
    let _: Vec<redis::Value> = redis::pipe()
        .atomic()
        .cmd("CONSISTENCY.PURGE")
        .arg("MATCH")
        .arg("tmp:*")
        .arg("LIMIT")
        .arg("15")
        .query(&mut p3)
        .unwrap();
    let r = common::jcall(&mut p3, &["CONSISTENCY.FIX", "8"]);
    assert_eq!(r["changed"], 1, "{r}");
    let v = common::call_ok(&mut p3, &["CONSISTENCY.PURGE", "MATCH", "tmp:*"]);
    assert_eq!(common::as_i64(common::field(&v, "deleted")), 25);
    assert_eq!(dbsize(&mut p3), 1, "db 3 keeps the audit stream only");
    assert_replica_caught_up(&primary, &replica, "script, MULTI and db 3");

    // The AOF, replayed by a redis-server without the module, gives the same data.
    let flushed = common::wait_until(Duration::from_secs(10), || {
        let info = primary.info("persistence");
        info.get("aof_rewrite_in_progress").map(String::as_str) == Some("0")
            && info.get("aof_rewrite_scheduled").map(String::as_str) == Some("0")
            && info.get("aof_buffer_length").map(String::as_str) == Some("0")
    });
    assert!(flushed, "{:?}", primary.info("persistence"));
    let want = digest(&mut p);
    let copy = common::temp_dir("aof-copy");
    copy_dir(
        &primary.dir().join("appendonlydir"),
        &copy.join("appendonlydir"),
    );
    let dir_line = format!("dir {}", common::quote_conf(&copy.display().to_string()));
    let replay = TestRedis::start_without_module(&[
        "appendonly yes",
        "appenddirname appendonlydir",
        &dir_line,
    ]);
    let mut a = replay.conn();
    assert_eq!(
        dbsize(&mut a),
        dbsize(&mut p),
        "keys after replaying the AOF"
    );
    assert_eq!(digest(&mut a), want, "DEBUG DIGEST after replaying the AOF");
    // Nothing in the AOF needed the module.
    assert!(
        !replay.log().contains("Unknown command"),
        "{}",
        common::tail_of(&replay.dir().join("redis.log"), 30)
    );
}

#[test]
fn the_module_never_writes_on_a_replica() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 10, 3, 22);
    let rules = common::write_rules(&[common::weekly_rule_json()]);
    let primary = TestRedis::start_without_module(&["repl-diskless-sync-delay 0"]);
    let url = pg.url();
    let replica = TestRedis::start_with(
        &[
            ("pg-url", &url),
            ("rules-file", rules.to_str().unwrap()),
            ("audit-stream", "consistency:audit"),
        ],
        &[&format!("replicaof 127.0.0.1 {}", primary.port())],
    );
    common::wait_linked(&replica);
    let mut p = primary.conn();
    ledger::fill_cache_weekly(&mut p, &pg);
    common::call_ok(&mut p, &["SET", "user:4:cost_weekly", "900"]);
    for i in 0..50 {
        common::call_ok(&mut p, &["SET", &format!("tmp:{i}"), "x"]);
    }
    assert_replica_caught_up(&primary, &replica, "filling the cache");
    let mut r = replica.conn();
    let before = digest(&mut r);

    // The replica's module reads fine: CHECK sees the drift.
    let check = common::jcall(&mut r, &["CONSISTENCY.CHECK"]);
    assert_eq!(check["drifted"], 1, "{check}");

    // replica-read-only (the default): Redis itself refuses the write commands.
    for args in [
        vec!["CONSISTENCY.FIX", "4"],
        vec!["CONSISTENCY.FIX", "ALL"],
        vec!["CONSISTENCY.PURGE", "MATCH", "tmp:*"],
    ] {
        let err = common::call_err(&mut r, &args);
        assert!(err.starts_with("READONLY"), "{args:?}: {err}");
    }
    assert_eq!(digest(&mut r), before);

    // A writable replica: the module checks it is not a primary and refuses.
    common::call_ok(&mut r, &["CONFIG", "SET", "replica-read-only", "no"]);
    for args in [
        vec!["CONSISTENCY.FIX", "4"],
        vec!["CONSISTENCY.FIX", "4", "REWRITE"],
        vec!["CONSISTENCY.FIX", "ALL"],
        vec!["CONSISTENCY.PURGE", "MATCH", "tmp:*"],
        vec!["CONSISTENCY.PURGE", "RULE", "cost_weekly"],
        // Nothing to delete, but a PURGE also writes its audit entry.
        vec!["CONSISTENCY.PURGE", "MATCH", "nothing:*"],
        // Nothing to repair.
        vec!["CONSISTENCY.FIX", "no-such-id"],
    ] {
        let err = common::call_err(&mut r, &args);
        assert!(
            err.starts_with("ERR not a primary: this node is a replica now"),
            "{args:?}: {err}"
        );
    }
    // A dry run writes nothing, so it may run anywhere.
    let dry = common::jcall(&mut r, &["CONSISTENCY.FIX", "4", "DRYRUN"]);
    assert_eq!(dry["entries"][0]["action"], "would_delete", "{dry}");
    assert_eq!(digest(&mut r), before, "the module wrote on a replica");
    assert_eq!(digest(&mut r), digest(&mut p));
    let info = replica.info("consistency");
    assert_eq!(info["consistency_fixes_total"], "0");
    assert_eq!(info["consistency_purged_keys_total"], "0");
}

#[test]
fn a_failover_between_check_and_repair_stops_the_repair() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 10, 3, 23);
    let rules = common::write_rules(&[common::weekly_rule_json()]);
    // One truth worker, so a later command queues behind the paused FIX ALL.
    let node = TestRedis::start_for(&pg, &rules, &[("workers", "1")]);
    let mut c = node.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    for id in 1..=3 {
        common::call_ok(&mut c, &["SET", &format!("user:{id}:cost_weekly"), "800"]);
    }
    let before = digest(&mut c);
    common::call_ok(
        &mut c,
        &["CONSISTENCY.DEBUG", "PAUSE-BEFORE-REPAIR", "1000"],
    );
    let checks = |n: &TestRedis| -> i64 {
        n.info("consistency")["consistency_checks_total"]
            .parse()
            .unwrap()
    };
    let checks_before = checks(&node);
    let mut worker = node.conn();
    let fix = std::thread::spawn(move || common::call(&mut worker, &["CONSISTENCY.FIX", "ALL"]));
    assert!(common::wait_until(Duration::from_secs(10), || checks(
        &node
    )
        > checks_before));

    // This node becomes a replica (of a primary that is not there) mid-run.
    let dead = common::free_port().to_string();
    common::call_ok(&mut c, &["REPLICAOF", "127.0.0.1", &dead]);
    let answer = fix.join().unwrap();
    match &answer {
        Err(e) => eprintln!("FIX ALL answered: {}", common::error_text(e)),
        Ok(v) => panic!("FIX ALL repaired on a node that became a replica: {v:?}"),
    }
    common::call_ok(&mut c, &["CONSISTENCY.DEBUG", "PAUSE-BEFORE-REPAIR", "0"]);
    // Runs once the paused job has ended.
    let check = common::jcall(&mut c, &["CONSISTENCY.CHECK"]);
    assert_eq!(check["drifted"], 3, "{check}");
    assert_eq!(
        digest(&mut c),
        before,
        "the module wrote after the failover"
    );
    assert!(!node.log().contains("consistency: deleted"));

    // Primary again: the same FIX ALL repairs.
    common::call_ok(&mut c, &["REPLICAOF", "NO", "ONE"]);
    let r = common::jcall(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    assert_eq!(r["changed"], 3, "{r}");
}
