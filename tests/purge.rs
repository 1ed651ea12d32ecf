//! CONSISTENCY.PURGE against a real redis-server: a 200k-key purge that keeps
//! Redis answering, PURGE RULE, LIMIT, DRYRUN, glob semantics equal to Redis's
//! own SCAN MATCH, and PURGE while PostgreSQL is down or the truth lane is busy.
//!
//! Run: `cargo test --release --features test-hooks --test integration purge::`

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{ledger, TestPg, TestRedis};
use redis::{Connection, Value};

fn digest(c: &mut Connection) -> String {
    common::as_str(&common::call_ok(c, &["DEBUG", "DIGEST"])).to_string()
}

fn dbsize(c: &mut Connection) -> i64 {
    common::as_i64(&common::call_ok(c, &["DBSIZE"]))
}

/// Every key with its DUMP.
fn snapshot(c: &mut Connection) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(c).expect("KEYS");
    let mut p = redis::pipe();
    for k in &keys {
        p.cmd("DUMP").arg(k);
    }
    let dumps: Vec<Vec<u8>> = p.query(c).expect("DUMP");
    keys.into_iter().zip(dumps).collect()
}

/// How many keys Redis's own SCAN MATCH finds for `pattern`.
fn scan_count(c: &mut Connection, pattern: &[u8]) -> i64 {
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(c)
            .expect("SCAN");
        n += keys.len() as i64;
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

/// PURGE with the given arguments; returns (matched, deleted, dry_run).
fn purge(c: &mut Connection, args: &[&[u8]]) -> (i64, i64, bool) {
    let mut cmd = redis::cmd("CONSISTENCY.PURGE");
    for a in args {
        cmd.arg(*a);
    }
    let v: Value = cmd
        .query(c)
        .unwrap_or_else(|e| panic!("PURGE {args:?}: {}", common::error_text(&e)));
    assert_eq!(
        common::field_names(&v),
        ["matched", "deleted", "dry_run", "duration_ms"]
    );
    (
        common::as_i64(common::field(&v, "matched")),
        common::as_i64(common::field(&v, "deleted")),
        common::as_bool(common::field(&v, "dry_run")),
    )
}

#[test]
fn purge_of_200k_keys_deletes_exactly_them_and_keeps_redis_answering() {
    let r = TestRedis::start(&[]);
    let mut c = r.conn();
    // 10k keys that must survive, in several types.
    common::call_ok(&mut c, &["DEBUG", "POPULATE", "10000", "keep"]);
    for i in 0..50 {
        common::call_ok(&mut c, &["HSET", &format!("tmpx:{i}"), "f", "v"]);
        common::call_ok(&mut c, &["SET", &format!("xtmp:{i}"), "v", "EX", "3600"]);
    }
    let survivors = digest(&mut c);
    let survivors_n = dbsize(&mut c);
    // 200k keys to purge: tmp:0 .. tmp:199999.
    let started = Instant::now();
    common::call_ok(&mut c, &["DEBUG", "POPULATE", "200000", "tmp"]);
    eprintln!("populated 200k keys in {:?}", started.elapsed());
    assert_eq!(dbsize(&mut c), survivors_n + 200_000);

    // A second client PINGs in a loop all through the purge.
    let stop = Arc::new(AtomicBool::new(false));
    let mut pinger = r.conn();
    let stop_in = Arc::clone(&stop);
    let pings = thread::spawn(move || {
        let mut longest = Duration::ZERO;
        let mut n = 0u64;
        while !stop_in.load(Ordering::Relaxed) {
            let t = Instant::now();
            let pong: String = redis::cmd("PING").query(&mut pinger).expect("PING");
            assert_eq!(pong, "PONG");
            longest = longest.max(t.elapsed());
            n += 1;
        }
        (longest, n)
    });
    thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let (matched, deleted, dry_run) = purge(&mut c, &[b"MATCH", b"tmp:*"]);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (longest, n) = pings.join().expect("pinger");
    eprintln!("PURGE of 200k keys took {took:?}; longest PING during it {longest:?} ({n} PINGs)");
    assert_eq!((matched, deleted, dry_run), (200_000, 200_000, false));
    assert!(n > 10, "only {n} PINGs were answered during the purge");
    assert!(
        longest < Duration::from_millis(200),
        "a PING took {longest:?} during the purge"
    );

    // Exactly the matching keys are gone: the survivors are as they were.
    assert_eq!(dbsize(&mut c), survivors_n);
    assert_eq!(digest(&mut c), survivors);
    assert_eq!(scan_count(&mut c, b"tmp:*"), 0);
    let info = r.info("consistency");
    assert_eq!(info["consistency_purged_keys_total"], "200000");
}

#[test]
fn purge_rule_limit_and_dry_run() {
    let rules = common::write_rules(&[common::weekly_rule_json(), common::monthly_rule_json()]);
    let pg = TestPg::fresh();
    let r = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = r.conn();
    for id in 1..=50 {
        common::call_ok(&mut c, &["SET", &format!("user:{id}:cost_weekly"), "1"]);
        common::call_ok(&mut c, &["SET", &format!("user:{id}:cost_monthly"), "2"]);
    }
    // Keys of the weekly template with unusual ids, and near misses that are not
    // (an id holds no `:` unless the rule allows it).
    let weekly_odd = ["user:{4}:cost_weekly", "user:*:cost_weekly"];
    let near_misses = [
        "user:a:b:cost_weekly",
        "user::cost_weekly",
        "user:4:cost_weekly2",
        "xuser:4:cost_weekly",
        "USER:4:COST_WEEKLY",
        "user:4:cost_weekl",
    ];
    for k in weekly_odd.iter().chain(&near_misses) {
        common::call_ok(&mut c, &["SET", k, "3"]);
    }
    let before = snapshot(&mut c);
    let before_digest = digest(&mut c);

    // DRYRUN counts and changes nothing.
    assert_eq!(
        purge(&mut c, &[b"RULE", b"cost_weekly", b"DRYRUN"]),
        (52, 0, true)
    );
    assert_eq!(digest(&mut c), before_digest);

    // PURGE RULE: exactly the keys the template reads.
    assert_eq!(purge(&mut c, &[b"RULE", b"cost_weekly"]), (52, 52, false));
    let mut expect = before.clone();
    for id in 1..=50 {
        expect.remove(format!("user:{id}:cost_weekly").as_bytes());
    }
    for k in weekly_odd {
        expect.remove(k.as_bytes());
    }
    assert_eq!(snapshot(&mut c), expect);

    // LIMIT n deletes exactly n.
    for i in 0..1000 {
        common::call_ok(&mut c, &["SET", &format!("tmp:{i}"), "x"]);
    }
    let n = dbsize(&mut c);
    assert_eq!(
        purge(&mut c, &[b"MATCH", b"tmp:*", b"LIMIT", b"137"]),
        (137, 137, false)
    );
    assert_eq!(dbsize(&mut c), n - 137);
    assert_eq!(scan_count(&mut c, b"tmp:*"), 1000 - 137);
    assert_eq!(
        purge(&mut c, &[b"MATCH", b"tmp:*", b"LIMIT", b"10", b"DRYRUN"]),
        (10, 0, true)
    );
    assert_eq!(
        purge(&mut c, &[b"MATCH", b"tmp:*", b"LIMIT", b"0"]),
        (0, 0, false)
    );
    // A LIMIT above what matches deletes what there is.
    assert_eq!(
        purge(&mut c, &[b"MATCH", b"tmp:*", b"LIMIT", b"100000"]),
        (863, 863, false)
    );
    assert_eq!(scan_count(&mut c, b"tmp:*"), 0);
    // The other rule's keys were never touched.
    for id in 1..=50 {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("user:{id}:cost_monthly"))
            .query(&mut c)
            .unwrap();
        assert_eq!(v.as_deref(), Some("2"));
    }
}

#[test]
fn purge_matches_exactly_what_redis_scan_matches() {
    let r = TestRedis::start(&[]);
    let mut c = r.conn();
    let keys: Vec<&[u8]> = vec![
        b"g:1",
        b"g:2",
        b"g:12",
        b"g:5x",
        b"g:ab",
        b"g:*",
        b"g:?",
        b"g:[x]",
        b"g:\\",
        b"g:a]",
        b"g:-",
        b"g:\xff\x00z",
        b"G:1",
        b"h:g:1",
        b"g:",
    ];
    for k in &keys {
        redis::cmd("SET")
            .arg(*k)
            .arg("v")
            .query::<()>(&mut c)
            .unwrap();
    }
    let patterns: Vec<&[u8]> = vec![
        b"g:*",
        b"g:?",
        b"g:[0-4]*",
        b"g:[^1]*",
        b"g:\\*",
        b"g:\\?",
        b"g:[a-b]?",
        b"g:\\\\",
        b"g:[]]",
        b"g:[x",
        b"g:*]",
        b"g:\xff*",
        b"*:1",
        b"?:?",
        b"g:[9-0]*",
        b"g:[-]",
        b"*g*",
    ];
    for p in &patterns {
        let want = scan_count(&mut c, p);
        let before = digest(&mut c);
        let (matched, deleted, _) = purge(&mut c, &[b"MATCH", p, b"DRYRUN"]);
        assert_eq!(
            (matched, deleted),
            (want, 0),
            "pattern {:?}",
            String::from_utf8_lossy(p)
        );
        assert_eq!(digest(&mut c), before);
    }
    // Patterns and keys with NUL and newline bytes: matched, deleted, and logged
    // on one escaped line.
    for k in [&b"nul:\x00a"[..], b"nul:\x00b", b"nul:\nc"] {
        redis::cmd("SET")
            .arg(k)
            .arg("v")
            .query::<()>(&mut c)
            .unwrap();
    }
    assert_eq!(purge(&mut c, &[b"MATCH", b"nul:\x00*"]), (2, 2, false));
    assert_eq!(purge(&mut c, &[b"MATCH", b"nul:\n?"]), (1, 1, false));
    assert!(r.wait_for_log(
        r"consistency: PURGE MATCH nul:\x00* deleted 2 of 2 matching keys",
        Duration::from_secs(5)
    ));
    assert!(r.wait_for_log(
        r"consistency: PURGE MATCH nul:\x0a? deleted 1 of 1 matching keys",
        Duration::from_secs(5)
    ));

    // And for real: the keys deleted are those SCAN MATCH lists.
    let want = scan_count(&mut c, b"g:[0-4]*");
    let n = dbsize(&mut c);
    let (matched, deleted, _) = purge(&mut c, &[b"MATCH", b"g:[0-4]*"]);
    assert_eq!((matched, deleted), (want, want));
    assert_eq!(dbsize(&mut c), n - want);
    assert_eq!(scan_count(&mut c, b"g:[0-4]*"), 0);
}

#[test]
fn purge_works_with_postgres_down() {
    let rules = common::write_rules(&[common::weekly_rule_json()]);
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
    for i in 0..300 {
        common::call_ok(&mut c, &["SET", &format!("user:{i}:cost_weekly"), "1"]);
        common::call_ok(&mut c, &["SET", &format!("tmp:{i}"), "1"]);
        common::call_ok(&mut c, &["SET", &format!("keep:{i}"), "1"]);
    }
    // PostgreSQL is down indeed.
    let err = common::call_err(&mut c, &["CONSISTENCY.CHECK"]);
    assert!(err.starts_with("ERR postgres unavailable:"), "{err}");

    let started = Instant::now();
    assert_eq!(purge(&mut c, &[b"MATCH", b"tmp:*"]), (300, 300, false));
    assert_eq!(purge(&mut c, &[b"RULE", b"cost_weekly"]), (300, 300, false));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(dbsize(&mut c), 300);
    assert_eq!(scan_count(&mut c, b"keep:*"), 300);
}

#[test]
fn purge_does_not_wait_for_a_busy_truth_lane() {
    // A truth query that takes 2 s keeps both truth workers busy.
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 3, 1, 1);
    let slow = serde_json::json!({
        "name": "slow", "kind": "number", "key": "slow:{id}",
        "truth": "SELECT u.id, 0 FROM users u, pg_sleep(2)"
    });
    let rules = common::write_rules(&[slow]);
    let r = TestRedis::start_for(&pg, &rules, &[("workers", "2")]);
    let mut c = r.conn();
    for i in 0..100 {
        common::call_ok(&mut c, &["SET", &format!("tmp:{i}"), "1"]);
    }
    let checks: Vec<_> = (0..2)
        .map(|_| {
            let mut conn = r.conn();
            thread::spawn(move || {
                let t = Instant::now();
                let v = common::call_ok(&mut conn, &["CONSISTENCY.CHECK"]);
                (t.elapsed(), common::as_i64(common::field(&v, "checked")))
            })
        })
        .collect();
    // Let both checks reach PostgreSQL.
    assert!(common::wait_until(Duration::from_secs(5), || {
        pg.scalar("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(2)%' AND state = 'active' AND pid <> pg_backend_pid()")
            .as_deref()
            == Some("2")
    }));
    let started = Instant::now();
    assert_eq!(purge(&mut c, &[b"MATCH", b"tmp:*"]), (100, 100, false));
    let took = started.elapsed();
    for h in checks {
        let (t, _) = h.join().unwrap();
        assert!(
            t >= Duration::from_millis(1500),
            "the checks were not slow: {t:?}"
        );
    }
    eprintln!("PURGE beside two 2 s checks took {took:?}");
    assert!(
        took < Duration::from_millis(1000),
        "PURGE waited for the truth lane: {took:?}"
    );
}

#[test]
fn purge_refuses_patterns_that_match_every_key() {
    let r = TestRedis::start(&[]);
    let mut c = r.conn();
    common::call_ok(&mut c, &["DEBUG", "POPULATE", "100", "k"]);
    let before = digest(&mut c);
    for (args, pattern) in [
        (vec!["MATCH", "*"], "*"),
        (vec!["MATCH", "*", "DRYRUN"], "*"),
        (vec!["MATCH", "*", "LIMIT", "1"], "*"),
        (vec!["MATCH", "***"], "***"),
        (vec!["MATCH", "*?"], "*?"),
        (vec!["DRYRUN", "MATCH", "?*"], "?*"),
    ] {
        let mut all = vec!["CONSISTENCY.PURGE"];
        all.extend(&args);
        assert_eq!(
            common::call_err(&mut c, &all),
            format!("ERR MATCH pattern '{pattern}' would purge every key; name a narrower pattern"),
            "{all:?}"
        );
    }
    assert_eq!(
        common::call_err(&mut c, &["CONSISTENCY.PURGE", "MATCH", ""]),
        "ERR MATCH must not be empty"
    );
    assert_eq!(digest(&mut c), before);
    assert_eq!(dbsize(&mut c), 100);
    // Narrower patterns are fine: `?` alone matches one-byte names only.
    common::call_ok(&mut c, &["SET", "x", "1"]);
    assert_eq!(purge(&mut c, &[b"MATCH", b"?"]), (1, 1, false));
    assert_eq!(purge(&mut c, &[b"MATCH", b"k:*"]), (100, 100, false));
}
