//! Reliability: the worker lanes and the clients waiting on them.
//!
//! - a full truth lane answers `ERR busy: truth lane full (N queued)` at once,
//!   and PURGE (keyspace lane) still works while the truth lane is stuck;
//! - both lanes filled with `CONSISTENCY.DEBUG JOB-SLEEP`;
//! - clients that disconnect while blocked: Redis fine, other clients answered;
//! - SHUTDOWN NOSAVE with jobs in flight: a clean exit (status 0, no crash lines);
//! - a panic forced inside a job: an ERR answer, every lane at full strength.
//!
//! Run: `cargo test --release --features test-hooks --test integration fault_lanes::`

use crate::common;
use crate::fault_support;

use std::thread;
use std::time::{Duration, Instant};

use common::{as_array, as_i64, as_str, call, call_err, call_ok, field, TestRedis};
use fault_support::{
    assert_no_crash, assert_pings, digest, exists, fill_spend, in_background, ping,
    send_and_hang_up, set, snapshot, spend_rule, spend_test_pg, status_i64, test_pg_running,
    OwnRedis, Pinger, AT_ONCE, PING_BOUND, SPEND_TRUTH,
};
use redis::Connection;

/// These tests measure latency while others load both cores (200k-key scans at
/// shutdown): they take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// The spend rule and a `slow` rule whose truth sleeps `secs` seconds.
fn rules_with_slow(secs: f64) -> Vec<serde_json::Value> {
    vec![
        spend_rule("spend", SPEND_TRUTH),
        serde_json::json!({
            "name": "slow", "kind": "number", "key": "s:{id}:spend",
            "truth": format!("SELECT id, spend FROM users CROSS JOIN pg_sleep({secs})")
        }),
    ]
}

fn start(pg: &common::TestPg, rules: &[serde_json::Value], configs: &[(&str, &str)]) -> TestRedis {
    let path = common::write_rules(rules);
    TestRedis::start_for(pg, &path, configs)
}

fn wait_queued(c: &mut Connection, lane: &str, n: i64) {
    assert!(
        common::wait_until(Duration::from_secs(5), || status_i64(
            c,
            &["lanes", lane, "queued"]
        ) == n),
        "lane {lane} never had {n} queued"
    );
}

// ---------------------------------------------------------------------------
// Full lanes
// ---------------------------------------------------------------------------

#[test]
fn a_full_truth_lane_answers_busy_at_once_and_purge_still_works() {
    let _turn = take_turn();
    let pg = spend_test_pg(10);
    let redis = start(
        &pg,
        &rules_with_slow(1.0),
        &[("workers", "1"), ("max-queue", "2")],
    );
    let mut c = redis.conn();
    fill_spend(&mut c, 10);
    set(&mut c, b"u:3:spend", b"3000");
    for i in 0..50 {
        set(&mut c, format!("scratch:{i}").as_bytes(), b"x");
    }
    let before = snapshot(&mut c);

    let pings = Pinger::start(&redis);
    // One slow check running, two queued: the lane is full.
    let running = in_background(&redis, &["CONSISTENCY.CHECK", "RULE", "slow"]);
    assert!(common::wait_until(Duration::from_secs(5), || {
        test_pg_running(&pg, "pg_sleep")
    }));
    let queued: Vec<_> = (0..2)
        .map(|_| in_background(&redis, &["CONSISTENCY.CHECK", "RULE", "slow"]))
        .collect();
    wait_queued(&mut c, "truth", 2);
    for args in [
        &["CONSISTENCY.CHECK"][..],
        &["CONSISTENCY.CHECK", "RULE", "spend", "ID", "1"],
        &["CONSISTENCY.FIX", "ALL"],
        &["CONSISTENCY.FIX", "3", "REWRITE"],
    ] {
        let started = Instant::now();
        let err = call_err(&mut c, args);
        let took = started.elapsed();
        assert_eq!(err, "ERR busy: truth lane full (2 queued)", "{args:?}");
        assert!(took < AT_ONCE, "{args:?} took {took:?}");
    }
    // Clearing needs no truth: FIX of ids goes to the keyspace lane at once and
    // says the truth was not asked.
    for (args, action, changed) in [
        (&["CONSISTENCY.FIX", "3", "DRYRUN"][..], "would_delete", 0),
        (&["CONSISTENCY.FIX", "3"], "deleted", 1),
    ] {
        let started = Instant::now();
        let r = call_ok(&mut c, args);
        let took = started.elapsed();
        assert!(took < AT_ONCE, "{args:?} took {took:?}");
        let truth = as_str(field(&r, "truth"));
        assert!(
            truth.starts_with("unavailable: ") && truth.contains("truth lane is full (2 queued)"),
            "{args:?}: {truth}"
        );
        assert_eq!(as_i64(field(&r, "changed")), changed, "{args:?}");
        let entries = as_array(field(&r, "entries"));
        let spend = entries
            .iter()
            .find(|e| as_str(field(e, "key")) == "u:3:spend")
            .expect("u:3:spend reported");
        assert_eq!(as_str(field(spend, "action")), action, "{args:?}");
    }
    assert!(!exists(&mut c, b"u:3:spend"));

    let info = redis.info("consistency");
    assert_eq!(info["consistency_lane_truth_queued"], "2", "{info:?}");
    assert_eq!(info["consistency_lane_keyspace_queued"], "0", "{info:?}");

    // PURGE runs on the keyspace lane: not held up by the stuck truth lane.
    let started = Instant::now();
    let dry = call_ok(&mut c, &["CONSISTENCY.PURGE", "RULE", "spend", "DRYRUN"]);
    assert_eq!(
        as_i64(field(&dry, "matched")),
        9,
        "10 spend keys, one cleared by FIX"
    );
    let purged = call_ok(&mut c, &["CONSISTENCY.PURGE", "MATCH", "scratch:*"]);
    assert_eq!(as_i64(field(&purged, "deleted")), 50);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "PURGE waited {:?} behind the truth lane",
        started.elapsed()
    );
    call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    call_ok(&mut c, &["CONSISTENCY.RULES"]);
    // Everything above answers at once, so the window is short: a few PINGs
    // prove Redis kept serving, the bound proves none waited.
    assert_pings(pings, 3, PING_BOUND);

    // The waiting clients are all answered, in turn.
    for job in std::iter::once(running).chain(queued) {
        let (reply, took) = job.join().unwrap();
        let reply = reply.expect("a queued CHECK is answered");
        assert_eq!(as_i64(field(&reply, "checked")), 0);
        assert!(took < Duration::from_secs(10));
    }
    assert_eq!(status_i64(&mut c, &["lanes", "truth", "queued"]), 0);
    // FIX cleared the one drifted key; an absent number key is not a finding
    // (the application refills it).
    let r = call_ok(&mut c, &["CONSISTENCY.CHECK", "RULE", "spend"]);
    assert_eq!(as_i64(field(&r, "checked")), 9);
    assert_eq!(as_i64(field(&r, "drifted")), 0);
    let mut expect = before;
    expect.retain(|k, _| !k.starts_with(b"scratch:") && k.as_slice() != b"u:3:spend");
    assert_eq!(snapshot(&mut c), expect, "only PURGE's and FIX's keys went");
    assert_no_crash(&redis.log());
}

#[test]
fn both_lanes_filled_with_job_sleep_answer_busy_naming_the_lane() {
    let _turn = take_turn();
    let pg = spend_test_pg(5);
    let redis = start(
        &pg,
        &[spend_rule("spend", SPEND_TRUTH)],
        &[("workers", "1"), ("max-queue", "1")],
    );
    let mut c = redis.conn();
    fill_spend(&mut c, 5);
    let before = digest(&mut c);
    call_ok(&mut c, &["CONSISTENCY.DEBUG", "JOB-SLEEP", "700"]);

    let mut jobs = Vec::new();
    for (lane, args) in [
        ("truth", &["CONSISTENCY.CHECK"][..]),
        ("keyspace", &["CONSISTENCY.PURGE", "MATCH", "u:*", "DRYRUN"]),
    ] {
        // One job sleeping in the worker, one in the queue.
        jobs.push(in_background(&redis, args));
        assert!(common::wait_until(Duration::from_secs(2), || {
            let info = redis.info("consistency");
            info[&format!("consistency_lane_{lane}_queued")] == "0"
        }));
        thread::sleep(Duration::from_millis(50));
        jobs.push(in_background(&redis, args));
        wait_queued(&mut c, lane, 1);
        let started = Instant::now();
        let err = call_err(&mut c, args);
        assert_eq!(err, format!("ERR busy: {lane} lane full (1 queued)"));
        assert!(started.elapsed() < AT_ONCE);
        ping(&mut c);
    }
    for job in jobs {
        job.join().unwrap().0.expect("queued jobs are answered");
    }
    call_ok(&mut c, &["CONSISTENCY.DEBUG", "JOB-SLEEP", "0"]);
    call_ok(&mut c, &["CONSISTENCY.CHECK"]);
    assert_eq!(digest(&mut c), before);
}

// ---------------------------------------------------------------------------
// Clients going away
// ---------------------------------------------------------------------------

#[test]
fn clients_disconnecting_while_blocked_leave_redis_and_other_clients_fine() {
    let _turn = take_turn();
    let pg = spend_test_pg(10);
    let redis = start(&pg, &rules_with_slow(0.5), &[("workers", "2")]);
    let mut c = redis.conn();
    fill_spend(&mut c, 10);
    set(&mut c, b"u:4:spend", b"4444");
    set(&mut c, b"s:2:spend", b"1");
    let before = digest(&mut c);
    let pings = Pinger::start(&redis);

    // Blocked on a slow truth, on JOB-SLEEP, and on the keyspace lane; then gone.
    let port = redis.port();
    let hang_ups: [&[&[u8]]; 6] = [
        &[b"CONSISTENCY.CHECK", b"RULE", b"slow"],
        &[b"CONSISTENCY.FIX", b"ALL", b"RULE", b"slow", b"DRYRUN"],
        &[b"CONSISTENCY.CHECK", b"FORMAT", b"json"],
        &[b"CONSISTENCY.FIX", b"4", b"DRYRUN"],
        &[b"CONSISTENCY.PURGE", b"MATCH", b"u:*", b"DRYRUN"],
        &[b"CONSISTENCY.CHECK", b"ID", b"4"],
    ];
    for args in hang_ups {
        send_and_hang_up(port, args);
    }
    call_ok(&mut c, &["CONSISTENCY.DEBUG", "JOB-SLEEP", "300"]);
    for args in hang_ups {
        send_and_hang_up(port, args);
    }
    // Other clients are answered meanwhile, blocked commands included.
    let r = call_ok(&mut c, &["CONSISTENCY.CHECK", "RULE", "spend"]);
    assert_eq!(as_i64(field(&r, "drifted")), 1);
    call_ok(&mut c, &["CONSISTENCY.DEBUG", "JOB-SLEEP", "0"]);
    call_ok(&mut c, &["CONSISTENCY.STATUS"]);

    // Every orphaned job finishes; nobody stays blocked.
    let settled = common::wait_until(Duration::from_secs(15), || {
        let clients = redis.info("clients");
        clients["blocked_clients"] == "0"
            && status_i64(&mut c, &["lanes", "truth", "queued"]) == 0
            && !test_pg_running(&pg, "pg_sleep")
    });
    assert!(settled, "jobs of gone clients never finished");
    let clients = redis.info("clients");
    let connected: i64 = clients["connected_clients"].parse().unwrap();
    assert!(connected <= 3, "{clients:?}");
    let r = call_ok(&mut c, &["CONSISTENCY.CHECK"]);
    assert_eq!(as_i64(field(&r, "drifted")), 2);
    assert_pings(pings, 20, PING_BOUND);
    assert_eq!(digest(&mut c), before);
    assert_no_crash(&redis.log());
}

// ---------------------------------------------------------------------------
// Shutting down with jobs in flight
// ---------------------------------------------------------------------------

/// Starts jobs of every kind, then SHUTDOWN NOSAVE; Redis must exit 0 and log no crash.
fn shutdown_with_jobs_in_flight(setup: &[&[&str]], in_flight: &[&[&str]], settle: Duration) {
    let pg = spend_test_pg(10);
    let rules = common::write_rules(&rules_with_slow(3.0));
    let rules = rules.display().to_string();
    let url = pg.url();
    let mut redis = OwnRedis::start(&[
        ("pg-url", &url),
        ("rules-file", &rules),
        ("workers", "2"),
        ("scan-batch", "20"),
    ]);
    let mut c = redis.conn();
    fill_spend(&mut c, 10);
    for args in setup {
        call_ok(&mut c, args);
    }
    let clients: Vec<_> = in_flight
        .iter()
        .map(|args| {
            let mut conn = redis.conn();
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            thread::spawn(move || {
                let words: Vec<&str> = args.iter().map(String::as_str).collect();
                call(&mut conn, &words).map_err(|e| common::error_text(&e))
            })
        })
        .collect();
    thread::sleep(settle);
    let blocked: i64 = {
        let text: String = redis::cmd("INFO").arg("clients").query(&mut c).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert!(blocked >= 2, "only {blocked} clients blocked at shutdown");
    let started = Instant::now();
    let _ = call(&mut c, &["SHUTDOWN", "NOSAVE"]);
    let status = redis.wait_exit(Duration::from_secs(10));
    let log = redis.log();
    let status = status.unwrap_or_else(|| panic!("redis did not exit: {log}"));
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(log.contains("ready to exit, bye bye"), "{log}");
    assert_no_crash(&log);
    // Clients waiting at shutdown see their connection close; none hangs.
    for client in clients {
        let _ = client.join().expect("client thread");
    }
}

#[test]
fn shutdown_nosave_with_jobs_in_flight_exits_cleanly() {
    let _turn = take_turn();
    // Truth workers waiting on PostgreSQL, one check queued, and a PURGE
    // scanning 200k keys in 20-key GIL slices on the keyspace lane.
    shutdown_with_jobs_in_flight(
        &[&["DEBUG", "POPULATE", "200000", "pop:", "8"]],
        &[
            &["CONSISTENCY.CHECK", "RULE", "slow"],
            &["CONSISTENCY.FIX", "ALL", "RULE", "slow"],
            &["CONSISTENCY.CHECK", "RULE", "spend"],
            &["CONSISTENCY.PURGE", "MATCH", "nothing:*", "DRYRUN"],
        ],
        Duration::from_millis(400),
    );
}

#[test]
fn shutdown_nosave_while_fix_all_pauses_before_repairing_and_checks_scan() {
    let _turn = take_turn();
    // FIX ALL asleep between its verification and its repairs; checks scanning
    // 200k keys; JOB-SLEEP holding another job before it starts.
    shutdown_with_jobs_in_flight(
        &[
            &["DEBUG", "POPULATE", "200000", "pop:", "8"],
            &["SET", "u:3:spend", "3333"],
            &["CONSISTENCY.DEBUG", "PAUSE-BEFORE-REPAIR", "1500"],
        ],
        &[
            &["CONSISTENCY.FIX", "ALL", "RULE", "spend"],
            &["CONSISTENCY.CHECK", "RULE", "spend"],
            &["CONSISTENCY.PURGE", "MATCH", "nothing:*"],
        ],
        Duration::from_millis(700),
    );
}

// ---------------------------------------------------------------------------
// A panic inside a job
// ---------------------------------------------------------------------------

#[test]
fn a_panic_inside_a_job_answers_an_error_and_leaves_every_lane_at_full_strength() {
    let _turn = take_turn();
    let pg = spend_test_pg(10);
    let redis = start(
        &pg,
        &[spend_rule("spend", SPEND_TRUTH)],
        &[("workers", "3")],
    );
    let mut c = redis.conn();
    fill_spend(&mut c, 10);
    set(&mut c, b"u:8:spend", b"8888");
    let before = digest(&mut c);
    let panic_reply = "ERR internal error: forced by CONSISTENCY.DEBUG PANIC-NEXT-JOB";

    // More panics than workers, on every command that runs as a job.
    let commands: [&[&str]; 7] = [
        &["CONSISTENCY.CHECK"],
        &["CONSISTENCY.CHECK", "ID", "8"],
        &["CONSISTENCY.FIX", "8"],
        &["CONSISTENCY.FIX", "ALL"],
        &["CONSISTENCY.PURGE", "RULE", "spend"],
        &["CONSISTENCY.CHECK", "FORMAT", "json"],
        &["CONSISTENCY.FIX", "8", "REWRITE"],
    ];
    for args in commands {
        call_ok(&mut c, &["CONSISTENCY.DEBUG", "PANIC-NEXT-JOB"]);
        let started = Instant::now();
        assert_eq!(call_err(&mut c, args), panic_reply, "{args:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        ping(&mut c);
    }
    assert_eq!(digest(&mut c), before, "a panicking job changed a key");
    assert_eq!(status_i64(&mut c, &["lanes", "truth", "workers"]), 3);
    assert_eq!(status_i64(&mut c, &["lanes", "keyspace", "workers"]), 1);

    // Every worker still works: three slowed-down checks run side by side.
    call_ok(&mut c, &["CONSISTENCY.DEBUG", "JOB-SLEEP", "1000"]);
    let started = Instant::now();
    let jobs: Vec<_> = (0..3)
        .map(|_| in_background(&redis, &["CONSISTENCY.CHECK"]))
        .collect();
    for job in jobs {
        let (reply, _) = job.join().unwrap();
        let reply = reply.expect("CHECK after panics");
        assert_eq!(as_i64(field(&reply, "drifted")), 1);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1800),
        "3 checks of 1000 ms took {took:?}: not 3 workers in parallel"
    );
    call_ok(&mut c, &["CONSISTENCY.DEBUG", "JOB-SLEEP", "0"]);
    // The keyspace lane's worker too.
    let purge = call_ok(&mut c, &["CONSISTENCY.PURGE", "RULE", "spend", "DRYRUN"]);
    assert_eq!(as_i64(field(&purge, "matched")), 10);
    // And the repair path after a panic: FIX ALL repairs the one drifted key.
    let fixed = call_ok(&mut c, &["CONSISTENCY.FIX", "ALL", "FORMAT", "json"]);
    let fixed: serde_json::Value = serde_json::from_str(as_str(&fixed)).unwrap();
    assert_eq!(fixed["changed"], 1, "{fixed}");
    let log = redis.log();
    assert!(log.contains("a job panicked"), "{log}");
    assert_no_crash(&log.replace("a job panicked", ""));
}
