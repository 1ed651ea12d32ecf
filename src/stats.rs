//! Counters and gauges for `INFO consistency` and CONSISTENCY.STATUS.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::report::CheckReport;

pub static CHECKS_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static KEYS_CHECKED_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static DRIFTED_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static DRIFTED_BY_STATUS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
pub static FIXES_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static PURGED_KEYS_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static PG_ERRORS_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static PG_QUERY_MS_LAST: AtomicU64 = AtomicU64::new(0);
pub static PG_QUERY_MS_MAX: AtomicU64 = AtomicU64::new(0);

/// The summary of the last finished check, for STATUS and INFO.
#[derive(Clone, Debug, PartialEq)]
pub struct LastCheck {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub checked: u64,
    pub drifted: u64,
    pub by_status: [u64; 5],
}

static LAST_CHECK: Mutex<Option<LastCheck>> = Mutex::new(None);
static LAST_PG_ERROR: Mutex<Option<String>> = Mutex::new(None);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn record_check(report: &CheckReport) {
    let by_status = report.by_status();
    CHECKS_TOTAL.fetch_add(1, Ordering::Relaxed);
    KEYS_CHECKED_TOTAL.fetch_add(report.checked, Ordering::Relaxed);
    DRIFTED_TOTAL.fetch_add(report.drifted(), Ordering::Relaxed);
    for (counter, n) in DRIFTED_BY_STATUS.iter().zip(by_status) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    *LAST_CHECK.lock().unwrap() = Some(LastCheck {
        at_ms: now_ms(),
        duration_ms: report.duration_ms,
        checked: report.checked,
        drifted: report.drifted(),
        by_status,
    });
}

pub fn last_check() -> Option<LastCheck> {
    LAST_CHECK.lock().unwrap().clone()
}

/// One truth query's time, successful or not.
pub fn record_pg_query(ms: u64) {
    PG_QUERY_MS_LAST.store(ms, Ordering::Relaxed);
    PG_QUERY_MS_MAX.fetch_max(ms, Ordering::Relaxed);
}

pub fn record_pg_error(message: &str) {
    PG_ERRORS_TOTAL.fetch_add(1, Ordering::Relaxed);
    *LAST_PG_ERROR.lock().unwrap() = Some(message.to_string());
}

pub fn record_pg_ok() {
    *LAST_PG_ERROR.lock().unwrap() = None;
}

/// The last PostgreSQL error, while the last attempt failed.
pub fn last_pg_error() -> Option<String> {
    LAST_PG_ERROR.lock().unwrap().clone()
}

pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The `INFO consistency` fields, in the documented order.
pub fn info_fields(
    rules_loaded: usize,
    lane_truth_queued: usize,
    lane_keyspace_queued: usize,
) -> Vec<(&'static str, i64)> {
    let n = |c: &AtomicU64| get(c) as i64;
    let last = last_check();
    vec![
        ("rules_loaded", rules_loaded as i64),
        ("checks_total", n(&CHECKS_TOTAL)),
        ("keys_checked_total", n(&KEYS_CHECKED_TOTAL)),
        ("drifted_total", n(&DRIFTED_TOTAL)),
        ("drifted_drift", n(&DRIFTED_BY_STATUS[0])),
        ("drifted_invalid", n(&DRIFTED_BY_STATUS[1])),
        ("drifted_orphan", n(&DRIFTED_BY_STATUS[2])),
        ("drifted_missing", n(&DRIFTED_BY_STATUS[3])),
        ("drifted_no_ttl", n(&DRIFTED_BY_STATUS[4])),
        ("fixes_total", n(&FIXES_TOTAL)),
        ("purged_keys_total", n(&PURGED_KEYS_TOTAL)),
        ("pg_errors_total", n(&PG_ERRORS_TOTAL)),
        ("pg_query_ms_last", n(&PG_QUERY_MS_LAST)),
        ("pg_query_ms_max", n(&PG_QUERY_MS_MAX)),
        ("lane_truth_queued", lane_truth_queued as i64),
        ("lane_keyspace_queued", lane_keyspace_queued as i64),
        (
            "last_check_age_sec",
            last.as_ref()
                .map_or(-1, |l| (now_ms().saturating_sub(l.at_ms) / 1000) as i64),
        ),
        ("last_check_drifted", last.map_or(0, |l| l.drifted as i64)),
    ]
}
