//! Verification against writes in flight.
//!
//! Writer threads do what the seed 000 application does: insert a ledger row,
//! then INCRBYFLOAT the user's weekly cache, over and over, while a full CHECK
//! runs. Round one compares a truth snapshot with keys read up to a second later,
//! so a busy user's key is many writes ahead of its truth: drift that is not
//! real. With the default verify-rounds 2 the check re-queries those ids, reading
//! each key before and after the query, and reports none of them, while a static
//! drift is still reported. (Re-reading only after the query was not enough: the
//! query takes 20-30 ms under this load, and a busy key moved past the threshold
//! in that time.) The twin with verify-rounds 1 must report writer keys, which
//! shows the writers do cause false drift and the first test could fail.

use crate::check_support;
use crate::common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use check_support::{check, num, show, truth_map, Entry, Proto, Report};
use common::{ledger, TestPg, TestRedis};

const WEEKLY: &str = "user:{id}:cost_weekly";
const USERS: usize = 50_000;
const WRITERS: usize = 2;
const USERS_PER_WRITER: usize = 16;
/// Keys per GIL hold: small, so one full check spans a good fraction of a second.
const SCAN_BATCH: &str = "10";

/// The two tests load the same machine heavily; run them one after the other.
static SERIAL: Mutex<()> = Mutex::new(());

struct Outcome {
    report: Report,
    writer_keys: BTreeSet<String>,
    static_entry: Entry,
    writes_during_check: u64,
}

/// Loads the ledger, fills the cache, injects one static drift, and runs a full
/// CHECK (with `verify_rounds`) while the writers write.
fn check_under_writers(verify_rounds: &str) -> Outcome {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, USERS, 1, 21);
    let rules = common::write_rules(&[common::weekly_rule_json()]);
    let redis = TestRedis::start_for(&pg, &rules, &[("scan-batch", SCAN_BATCH)]);
    let mut c = redis.conn();
    common::call_ok(
        &mut c,
        &["CONFIG", "SET", "consistency.verify-rounds", verify_rounds],
    );
    let truth = ledger::truth_weekly(&pg);
    ledger::fill_cache(&mut c, WEEKLY, &truth);
    let truth = truth_map(&truth);

    // The static drift: a user no writer touches.
    let cached = num(truth[&1].parse::<f64>().unwrap() + 100.0);
    check_support::set(&mut c, b"user:1:cost_weekly", cached.as_bytes());
    let static_entry = Entry::new("cost_weekly", WEEKLY, b"1", "drift")
        .cached(cached)
        .truth(truth[&1].clone())
        .with_diff();

    // Writer w owns users spread over the id range.
    let owned: Vec<Vec<i64>> = (0..WRITERS)
        .map(|w| {
            (0..USERS_PER_WRITER)
                .map(|k| 1000 + (w * USERS_PER_WRITER + k) as i64 * 1400)
                .collect()
        })
        .collect();
    let writer_keys: BTreeSet<String> = owned
        .iter()
        .flatten()
        .map(|id| format!("user:{id}:cost_weekly"))
        .collect();
    assert!(owned
        .iter()
        .flatten()
        .all(|id| *id as usize <= USERS && *id != 1));

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = owned
        .into_iter()
        .map(|ids| {
            let mut pgc = pg.client();
            let mut rc = redis.conn();
            let stop = Arc::clone(&stop);
            let writes = Arc::clone(&writes);
            thread::spawn(move || {
                // The ledger write is what matters, not its durability.
                pgc.batch_execute("SET synchronous_commit = off").unwrap();
                let insert = pgc
                    .prepare(
                        "INSERT INTO message_request (user_id, cost_usd) \
                         VALUES ($1::int8::int4, 1.0)",
                    )
                    .unwrap();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = ids[i % ids.len()];
                    i += 1;
                    pgc.execute(&insert, &[&id]).expect("insert");
                    let _: String = redis::cmd("INCRBYFLOAT")
                        .arg(format!("user:{id}:cost_weekly"))
                        .arg(1.0)
                        .query(&mut rc)
                        .expect("INCRBYFLOAT");
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Let the writers get going, then check while they write.
    thread::sleep(Duration::from_millis(300));
    let before = writes.load(Ordering::Relaxed);
    let started = Instant::now();
    let report = check(&mut c, Proto::Resp2, &[]);
    let took = started.elapsed();
    let writes_during_check = writes.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("writer");
    }
    eprintln!(
        "verify-rounds {verify_rounds}: CHECK took {took:?} (truth {} ms, {} rounds); \
         {writes_during_check} writes meanwhile ({:.1} per writer key); reported {:?}",
        report.truth_ms,
        report.rounds,
        writes_during_check as f64 / writer_keys.len() as f64,
        report.keys()
    );
    Outcome {
        report,
        writer_keys,
        static_entry,
        writes_during_check,
    }
}

#[test]
fn writes_in_flight_raise_no_false_alarm() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let o = check_under_writers("2");
    // Enough writes for every writer key to run far past the threshold (5.0)
    // over one check.
    let per_key = o.writes_during_check as f64 / o.writer_keys.len() as f64;
    assert!(
        per_key > 5.0,
        "writers too slow to test anything: {per_key:.1} writes per key during the check"
    );
    assert_eq!(o.report.rounds, 2);
    let flagged: Vec<String> = o
        .report
        .keys()
        .into_iter()
        .filter(|k| o.writer_keys.contains(k))
        .collect();
    assert!(
        flagged.is_empty(),
        "verified drift reported for keys only writers changed: {flagged:?}"
    );
    assert_eq!(o.report.checked, USERS as i64);
    o.report.assert_findings(&[o.static_entry]);
}

#[test]
fn twin_without_verification_reports_writer_keys() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let o = check_under_writers("1");
    assert_eq!(o.report.rounds, 1);
    assert_eq!(o.report.checked, USERS as i64);
    let reported: BTreeSet<String> = o.report.entries.iter().map(|e| show(&e.key)).collect();
    let static_key = show(&o.static_entry.key);
    assert!(reported.contains(&static_key), "{reported:?}");
    let from_writers: Vec<&String> = reported
        .iter()
        .filter(|k| o.writer_keys.contains(*k))
        .collect();
    assert!(
        !from_writers.is_empty(),
        "with verification off, writes in flight must show up as drift; reported {reported:?}"
    );
    // Nothing else: every other key holds its truth.
    for k in &reported {
        assert!(
            *k == static_key || o.writer_keys.contains(k),
            "unexpected entry {k}"
        );
    }
    for e in &o.report.entries {
        assert_eq!(e.status, "drift", "{e:?}");
    }
}
