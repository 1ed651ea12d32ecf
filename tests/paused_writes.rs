//! Repairs and purges meet paused writes and early answers.
//!
//! - CLIENT PAUSE WRITE (what FAILOVER and CLUSTER FAILOVER do for a moment): a
//!   PURGE or FIX ALL whose job writes during the pause, on a primary with AOF
//!   and a replica, tripped Redis's pause assertion and killed redis-server; on
//!   a plain server it deleted keys while clients were paused. Now the job waits,
//!   GIL released, deletes nothing while paused, and finishes after.
//! - FAILOVER while a FIX ALL or a PURGE waits to write: the node becomes a
//!   replica and the job stops, answering why; nothing is written, Redis lives.
//! - The deadline, CLIENT UNBLOCK and a disconnect answer the client early; no repair may
//!   happen after that (it used to run seconds later and delete every key).
//!
//! Run: `cargo test --release --features test-hooks --test integration paused_writes::`

use crate::common;
use crate::fault_support;

use std::thread;
use std::time::{Duration, Instant};

use common::{as_i64, call, call_ok, field, ledger, TestPg, TestRedis};
use fault_support::{assert_no_crash, dbsize, ping};
use redis::Connection;

/// A primary with AOF on and a linked replica (both with the module).
fn primary_with_replica(pg: &TestPg, rules: &std::path::Path) -> (TestRedis, TestRedis) {
    let url = pg.url();
    let rules = rules.to_str().unwrap().to_string();
    let configs = [("pg-url", url.as_str()), ("rules-file", rules.as_str())];
    let primary = TestRedis::start_with(&configs, &["appendonly yes", "appendfsync always"]);
    let replica = TestRedis::start_with(
        &configs,
        &[
            &format!("replicaof 127.0.0.1 {}", primary.port()),
            "appendonly yes",
        ],
    );
    common::wait_linked(&replica);
    (primary, replica)
}

fn orphan_setup() -> (TestPg, std::path::PathBuf) {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 3, 2, 5);
    (pg, common::write_rules(&[common::weekly_rule_json()]))
}

/// `n` keys of the weekly rule for ids the truth does not know: all orphans.
fn fill_orphans(c: &mut Connection, n: usize) {
    let mut p = redis::pipe();
    for i in 0..n {
        p.cmd("SET")
            .arg(format!("user:{}:cost_weekly", 100_000 + i))
            .arg("1")
            .ignore();
    }
    p.query::<()>(c).unwrap();
}

/// Runs `args` on its own connection in a thread; returns the reply or error text.
fn in_thread(r: &TestRedis, args: &[&str]) -> thread::JoinHandle<Result<redis::Value, String>> {
    let mut c = r.conn();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        call(&mut c, &args).map_err(|e| common::error_text(&e))
    })
}

/// Under CLIENT PAUSE WRITE the job waits: nothing is deleted while paused,
/// everything after; the primary (AOF on) and its replica live and agree.
fn survives_pause(command: &[&str], key_count: usize) {
    let (pg, rules) = orphan_setup();
    let (primary, replica) = primary_with_replica(&pg, &rules);
    let mut c = primary.conn();
    fill_orphans(&mut c, key_count);
    let before = dbsize(&mut c);
    // The job starts, then sleeps past the start of the pause before it writes.
    call_ok(&mut c, &["CONSISTENCY.DEBUG", "JOB-SLEEP", "400"]);
    let job = in_thread(&primary, command);
    thread::sleep(Duration::from_millis(100));
    call_ok(&mut c, &["CLIENT", "PAUSE", "1500", "WRITE"]);
    let paused_at = Instant::now();
    // Reads still work; the job must not have deleted anything while paused.
    thread::sleep(Duration::from_millis(900));
    assert!(paused_at.elapsed() < Duration::from_millis(1400));
    assert_eq!(
        dbsize(&mut c),
        before,
        "{command:?} wrote while writes were paused"
    );
    let reply = job
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    call_ok(&mut c, &["CONSISTENCY.DEBUG", "JOB-SLEEP", "0"]);
    assert!(
        paused_at.elapsed() >= Duration::from_millis(1400),
        "finished inside the pause"
    );
    let changed = common::try_field(&reply, "changed")
        .or_else(|| common::try_field(&reply, "deleted"))
        .map(as_i64)
        .unwrap();
    assert_eq!(changed as usize, key_count, "{reply:?}");
    ping(&mut c);
    assert_no_crash(&primary.log());
    let caught_up = common::wait_until(Duration::from_secs(20), || {
        primary.info("replication")["master_repl_offset"]
            == replica.info("replication")["master_repl_offset"]
    });
    assert!(caught_up);
    assert_eq!(dbsize(&mut replica.conn()), dbsize(&mut c));
}

#[test]
fn purge_waits_while_writes_are_paused() {
    survives_pause(&["CONSISTENCY.PURGE", "MATCH", "user:*:cost_weekly"], 3000);
}

#[test]
fn fix_all_waits_while_writes_are_paused() {
    survives_pause(&["CONSISTENCY.FIX", "ALL"], 300);
}

#[test]
fn failover_stops_a_pending_repair() {
    let (pg, rules) = orphan_setup();
    let (primary, replica) = primary_with_replica(&pg, &rules);
    let mut c = primary.conn();
    fill_orphans(&mut c, 50);
    let before = dbsize(&mut c);
    // FIX ALL has checked and waits to repair while the failover runs.
    call_ok(
        &mut c,
        &["CONSISTENCY.DEBUG", "PAUSE-BEFORE-REPAIR", "1500"],
    );
    let job = in_thread(&primary, &["CONSISTENCY.FIX", "ALL"]);
    thread::sleep(Duration::from_millis(500));
    call_ok(&mut c, &["FAILOVER", "TIMEOUT", "5000"]);
    let demoted = common::wait_until(Duration::from_secs(10), || {
        primary.info("replication")["role"] == "slave"
    });
    assert!(demoted, "{:?}", primary.info("replication"));
    // Redis answers clients blocked on a write command itself when the role
    // changes (UNBLOCKED); the job must then write nothing.
    let err = job.join().unwrap().expect_err("the repair must stop");
    assert!(
        err.contains("not a primary") || err.contains("UNBLOCKED"),
        "{err}"
    );
    ping(&mut c);
    assert_no_crash(&primary.log());
    assert_no_crash(&replica.log());
    assert_eq!(dbsize(&mut c), before);
    assert_eq!(dbsize(&mut replica.conn()), before);
}

/// An early answer (CLIENT UNBLOCK, or the client gone) ends the job's writes.
fn no_repair_after(early: impl FnOnce(&mut Connection, i64)) {
    let (pg, rules) = orphan_setup();
    let r = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = r.conn();
    fill_orphans(&mut c, 100);
    call_ok(
        &mut c,
        &["CONSISTENCY.DEBUG", "PAUSE-BEFORE-REPAIR", "1500"],
    );
    let mut blocked = r.conn();
    let id = as_i64(&call_ok(&mut blocked, &["CLIENT", "ID"]));
    let job = thread::spawn(move || {
        let reply = call(&mut blocked, &["CONSISTENCY.FIX", "ALL"]);
        (blocked, reply.map_err(|e| common::error_text(&e)))
    });
    thread::sleep(Duration::from_millis(400));
    early(&mut c, id);
    // Unblocked: a timeout error; killed: the connection is gone.
    let (_conn, reply) = job.join().unwrap();
    assert!(reply.is_err(), "{reply:?}");
    // Past the repair pause: nothing may have been deleted.
    thread::sleep(Duration::from_millis(2000));
    assert_eq!(dbsize(&mut c), 100);
    ping(&mut c);
    assert_no_crash(&r.log());
}

#[test]
fn no_repair_after_client_unblock() {
    no_repair_after(|c, id| {
        let n = as_i64(&call_ok(c, &["CLIENT", "UNBLOCK", &id.to_string()]));
        assert_eq!(n, 1, "the FIX ALL client was blocked");
    });
}

#[test]
fn no_repair_after_the_client_disconnects() {
    no_repair_after(|c, id| {
        call_ok(c, &["CLIENT", "KILL", "ID", &id.to_string()]);
    });
}

#[test]
fn twin_without_early_answer_repairs() {
    // The same setup, left alone, deletes all 100: the tests above can fail.
    let (pg, rules) = orphan_setup();
    let r = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = r.conn();
    fill_orphans(&mut c, 100);
    call_ok(&mut c, &["CONSISTENCY.DEBUG", "PAUSE-BEFORE-REPAIR", "300"]);
    let v = call_ok(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    assert_eq!(as_i64(field(&v, "changed")), 100);
    assert_eq!(dbsize(&mut c), 0);
}

#[test]
fn failover_stops_a_pending_purge() {
    let (pg, rules) = orphan_setup();
    let (primary, replica) = primary_with_replica(&pg, &rules);
    let mut c = primary.conn();
    fill_orphans(&mut c, 3000);
    let before = dbsize(&mut c);
    // The PURGE job starts, then sleeps while the failover runs.
    call_ok(&mut c, &["CONSISTENCY.DEBUG", "JOB-SLEEP", "1500"]);
    let job = in_thread(
        &primary,
        &["CONSISTENCY.PURGE", "MATCH", "user:*:cost_weekly"],
    );
    thread::sleep(Duration::from_millis(300));
    call_ok(&mut c, &["FAILOVER", "TIMEOUT", "5000"]);
    let demoted = common::wait_until(Duration::from_secs(10), || {
        primary.info("replication")["role"] == "slave"
    });
    assert!(demoted, "{:?}", primary.info("replication"));
    let err = job.join().unwrap().expect_err("the purge must stop");
    assert!(
        err.contains("not a primary") || err.contains("UNBLOCKED"),
        "{err}"
    );
    // Past the job's sleep: nothing deleted on either node.
    thread::sleep(Duration::from_millis(1500));
    ping(&mut c);
    assert_no_crash(&primary.log());
    assert_no_crash(&replica.log());
    assert_eq!(dbsize(&mut c), before);
    assert_eq!(dbsize(&mut replica.conn()), before);
}

#[test]
fn no_repair_after_the_deadline() {
    let (pg, rules) = orphan_setup();
    let r = TestRedis::start_for(&pg, &rules, &[("job-timeout-ms", "700")]);
    let mut c = r.conn();
    fill_orphans(&mut c, 100);
    call_ok(
        &mut c,
        &["CONSISTENCY.DEBUG", "PAUSE-BEFORE-REPAIR", "1500"],
    );
    let err = common::call_err(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    assert!(err.contains("timeout"), "{err}");
    thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        dbsize(&mut c),
        100,
        "repaired after the client got its timeout"
    );
    ping(&mut c);
    assert_no_crash(&r.log());
}
