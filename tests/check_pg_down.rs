//! CONSISTENCY.CHECK with PostgreSQL out of reach: a prompt `ERR postgres
//! unavailable: ...`, Redis serving other clients meanwhile, STATUS showing the
//! outage, and the password in pg-url shown nowhere.

use crate::check_support;
use crate::common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{as_str, call_err, call_ok, field, free_port, opt_str, TestRedis};

/// PINGs on a connection of its own until stopped; returns (count, slowest).
fn pinger(redis: &TestRedis, stop: Arc<AtomicBool>) -> thread::JoinHandle<(u64, Duration)> {
    let mut c = redis.conn();
    thread::spawn(move || {
        let mut n = 0;
        let mut slowest = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let pong: String = redis::cmd("PING").query(&mut c).expect("PING");
            slowest = slowest.max(t.elapsed());
            assert_eq!(pong, "PONG");
            n += 1;
            thread::sleep(Duration::from_millis(2));
        }
        (n, slowest)
    })
}

/// Starts Redis with pg-url pointing at `host port` (with a password), and one rule.
fn start(port: u16) -> (TestRedis, String) {
    let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres password=secret");
    let rules = common::write_rules(&[common::weekly_rule_json()]);
    let rules = rules.display().to_string();
    let redis = TestRedis::start(&[
        ("pg-url", &url),
        ("pg-connect-timeout-ms", "500"),
        ("rules-file", &rules),
    ]);
    let mut c = redis.conn();
    check_support::set(&mut c, b"user:4:cost_weekly", b"50.1");
    (redis, url)
}

/// Runs CHECK while another connection PINGs; asserts a prompt unavailable error.
fn check_fails_promptly(redis: &TestRedis) -> String {
    let stop = Arc::new(AtomicBool::new(false));
    let pings = pinger(redis, Arc::clone(&stop));
    thread::sleep(Duration::from_millis(50));
    let mut c = redis.conn();
    let started = Instant::now();
    let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
    let took = started.elapsed();
    thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let (n, slowest) = pings.join().expect("pinger");
    eprintln!("CHECK failed after {took:?}: {err}; {n} PINGs meanwhile, slowest {slowest:?}");
    assert!(err.starts_with("ERR postgres unavailable: "), "{err}");
    assert!(
        took < Duration::from_millis(1500),
        "CHECK took {took:?} with pg-connect-timeout-ms 500"
    );
    assert!(n >= 5, "only {n} PINGs answered around the CHECK");
    assert!(
        slowest < Duration::from_millis(200),
        "a PING took {slowest:?}"
    );
    err
}

fn assert_no_secret(redis: &TestRedis, url: &str) {
    let mut c = redis.conn();
    // STATUS: the url with the password masked, the outage and its reason.
    let status = call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    let pg = field(&status, "pg");
    assert_eq!(as_str(field(pg, "state")), "down");
    let last_error = opt_str(field(pg, "last_error")).expect("last_error is set");
    assert!(last_error.contains("unavailable"), "{last_error}");
    let shown = as_str(field(pg, "url")).to_string();
    assert_eq!(shown, url.replace("password=secret", "password=***"));
    assert!(!format!("{status:?}").contains("secret"), "{status:?}");
    // INFO, in every section that might carry it.
    for section in ["consistency", "everything", "modules"] {
        let info: String = redis::cmd("INFO").arg(section).query(&mut c).unwrap();
        assert!(!info.contains("secret"), "INFO {section}: {info}");
    }
    let info = redis.info("consistency");
    // Redis prefixes a module's INFO fields with the module name.
    let pg_errors: i64 = info["consistency_pg_errors_total"].parse().unwrap();
    assert!(pg_errors >= 2, "{info:?}");
    assert_eq!(
        info["consistency_checks_total"], "0",
        "a failed check is not a check"
    );
    // The log.
    let log = redis.log();
    assert!(!log.contains("secret"), "{log}");
}

#[test]
fn closed_port_answers_unavailable_promptly_and_hides_the_password() {
    let (redis, url) = start(free_port());
    let err = check_fails_promptly(&redis);
    assert!(err.contains("refused"), "{err}");
    // Again: the pool does not get stuck after a failure.
    check_fails_promptly(&redis);
    assert_no_secret(&redis, &url);
}

#[test]
fn silent_server_answers_unavailable_within_the_connect_timeout() {
    // Accepts TCP connections (the kernel does) but never speaks PostgreSQL.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let (redis, url) = start(port);
    check_fails_promptly(&redis);
    check_fails_promptly(&redis);
    assert_no_secret(&redis, &url);
    drop(listener);
}
