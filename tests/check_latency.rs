//! A full CHECK over 100k keys never stalls Redis: another connection PINGs in a
//! loop throughout, and no PING may take 200 ms or more. The check still reports
//! exactly the injected drift.
//!
//! Its own test binary, so that no other test competes for the CPU meanwhile.

use crate::check_support;
use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use check_support::{check, num, truth_map, Entry, Proto};
use common::{ledger, TestPg, TestRedis};

const WEEKLY: &str = "user:{id}:cost_weekly";

#[test]
fn hundred_thousand_keys_checked_while_pings_stay_fast() {
    const USERS: usize = 100_000;
    let setup = Instant::now();
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, USERS, 1, 3);
    let rules = common::write_rules(&[common::weekly_rule_json()]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    let truth = ledger::truth_weekly(&pg);
    ledger::fill_cache(&mut c, WEEKLY, &truth);
    let truth = truth_map(&truth);

    // Drift spread over the id range, one invalid value, one orphan.
    let mut want = Vec::new();
    for (n, offset) in [(17i64, 40.0), (50_001, -12.5), (99_999, 7.25)] {
        let cached = num(truth[&n].parse::<f64>().unwrap() + offset);
        let id = n.to_string();
        check_support::set(
            &mut c,
            &check_support::key_bytes(WEEKLY, id.as_bytes()),
            cached.as_bytes(),
        );
        want.push(
            Entry::new("cost_weekly", WEEKLY, id.as_bytes(), "drift")
                .cached(cached)
                .truth(truth[&n].clone())
                .with_diff(),
        );
    }
    check_support::set(&mut c, b"user:77777:cost_weekly", b"12.3.4");
    want.push(
        Entry::new("cost_weekly", WEEKLY, b"77777", "invalid")
            .cached("12.3.4")
            .truth(truth[&77_777].clone()),
    );
    check_support::set(&mut c, b"user:100001:cost_weekly", b"3");
    want.push(Entry::new("cost_weekly", WEEKLY, b"100001", "orphan").cached("3"));
    // Keys of no rule are scanned past.
    for i in 0..1000 {
        check_support::set(&mut c, format!("session:{i}").as_bytes(), b"x");
    }
    eprintln!("setup of {USERS} users and keys: {:?}", setup.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let mut pc = redis.conn();
    let flag = Arc::clone(&stop);
    let pinger = thread::spawn(move || {
        let mut times = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            let t = Instant::now();
            let pong: String = redis::cmd("PING").query(&mut pc).expect("PING");
            times.push(t.elapsed());
            assert_eq!(pong, "PONG");
        }
        times
    });
    thread::sleep(Duration::from_millis(20));
    let started = Instant::now();
    let r = check(&mut c, Proto::Resp2, &[]);
    let took = started.elapsed();
    thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let times = pinger.join().expect("pinger");
    let longest = times.iter().max().copied().unwrap_or_default();
    let mut sorted = times.clone();
    sorted.sort();
    let p99 = sorted[sorted.len() * 99 / 100];
    eprintln!(
        "CHECK of {} keys took {took:?} (truth {} ms); {} PINGs meanwhile, longest PING {longest:?}, p99 {p99:?}",
        r.checked,
        r.truth_ms,
        times.len()
    );

    assert_eq!(r.checked, USERS as i64 + 1);
    assert_eq!(r.ids, USERS as i64 + 1);
    r.assert_findings(&want);
    assert!(
        times.len() >= 20,
        "only {} PINGs answered during the check",
        times.len()
    );
    assert!(
        longest < Duration::from_millis(200),
        "a PING took {longest:?} during the check"
    );
    // On a fast machine the whole scan may fit in 200 ms: a check that held the
    // GIL throughout would then still stall one PING for most of the check.
    assert!(
        longest * 4 < took,
        "a PING waited {longest:?}, a large part of the {took:?} check"
    );
}
