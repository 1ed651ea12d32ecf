//! Counters and gauges for `INFO consistency` and CONSISTENCY.STATUS: module
//! wide, and per rule (the rule's last full run, its failed scheduled runs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use consistency_bridge::BridgeError;

use crate::compare::STATUS_COUNT;
use crate::report::CheckReport;
use crate::watch_samples::WatchTally;

pub static CHECKS_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static KEYS_CHECKED_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static DRIFTED_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static DRIFTED_BY_STATUS: [AtomicU64; STATUS_COUNT] =
    [const { AtomicU64::new(0) }; STATUS_COUNT];
pub static FIXES_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static PURGED_KEYS_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static PG_ERRORS_TOTAL: AtomicU64 = AtomicU64::new(0);
pub static PG_QUERY_MS_LAST: AtomicU64 = AtomicU64::new(0);
pub static PG_QUERY_MS_MAX: AtomicU64 = AtomicU64::new(0);
/// Scheduled runs that could not complete (no connection, a failed query, a
/// failed repair).
pub static RUNS_FAILED_TOTAL: AtomicU64 = AtomicU64::new(0);
/// The most working memory one check held since load.
static CHECK_MEMORY_PEAK_BYTES: AtomicU64 = AtomicU64::new(0);

/// A check held at most `bytes` of working memory.
pub fn record_check_memory(bytes: usize) {
    CHECK_MEMORY_PEAK_BYTES.fetch_max(bytes as u64, Ordering::Relaxed);
}

/// Truth queries watched rules' looks sent (continuous consistency's load).
static WATCH_QUERIES_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Looks sent `n` truth queries.
pub fn record_watch_queries(n: usize) {
    WATCH_QUERIES_TOTAL.fetch_add(n as u64, Ordering::Relaxed);
}

/// The summary of the last finished check, for STATUS and INFO.
#[derive(Clone, Debug, PartialEq)]
pub struct LastCheck {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub checked: u64,
    pub drifted: u64,
    pub by_status: [u64; STATUS_COUNT],
}

static LAST_CHECK: Mutex<Option<LastCheck>> = Mutex::new(None);

/// What the last contact with PostgreSQL said.
#[derive(Clone, Debug, Default, PartialEq)]
struct PgContact {
    /// None before the first contact; Some(true) when PostgreSQL answered, even
    /// with an error about the query.
    up: Option<bool>,
    /// The last attempt's error, while it failed.
    last_error: Option<String>,
}

static PG_CONTACT: Mutex<PgContact> = Mutex::new(PgContact {
    up: None,
    last_error: None,
});

/// One rule's figures: its last full run (CHECK without ids, FIX ALL, a
/// scheduled run) and its failed scheduled runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleRun {
    pub checked: u64,
    pub drifted: u64,
    pub at_ms: Option<u64>,
    pub duration_ms: u64,
    pub runs_failed: u64,
}

static RULE_RUNS: Mutex<Option<HashMap<String, RuleRun>>> = Mutex::new(None);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counts a finished check. `full` says it covered every id of its rules, so
/// it is each rule's last run; a check of given ids is not.
pub fn record_check(report: &CheckReport, full: bool) {
    let by_status = report.by_status();
    let at_ms = now_ms();
    CHECKS_TOTAL.fetch_add(1, Ordering::Relaxed);
    KEYS_CHECKED_TOTAL.fetch_add(report.checked, Ordering::Relaxed);
    DRIFTED_TOTAL.fetch_add(report.drifted(), Ordering::Relaxed);
    for (counter, n) in DRIFTED_BY_STATUS.iter().zip(by_status) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    *LAST_CHECK.lock().unwrap() = Some(LastCheck {
        at_ms,
        duration_ms: report.duration_ms,
        checked: report.checked,
        drifted: report.drifted(),
        by_status,
    });
    if full {
        let mut runs = RULE_RUNS.lock().unwrap();
        let runs = runs.get_or_insert_with(HashMap::new);
        for tally in &report.by_rule {
            let run = runs.entry(tally.rule.clone()).or_default();
            run.checked = tally.checked;
            run.drifted = tally.drifted;
            run.at_ms = Some(at_ms);
            run.duration_ms = report.duration_ms;
        }
    }
}

pub fn last_check() -> Option<LastCheck> {
    LAST_CHECK.lock().unwrap().clone()
}

/// A scheduled run of `rules` that could not complete.
pub fn record_failed_run(rules: &[String]) {
    RUNS_FAILED_TOTAL.fetch_add(1, Ordering::Relaxed);
    let mut runs = RULE_RUNS.lock().unwrap();
    let runs = runs.get_or_insert_with(HashMap::new);
    for rule in rules {
        runs.entry(rule.clone()).or_default().runs_failed += 1;
    }
}

/// The figures of one rule (default before its first run).
pub fn rule_run(rule: &str) -> RuleRun {
    RULE_RUNS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|runs| runs.get(rule).cloned())
        .unwrap_or_default()
}

/// Test hook: makes every recorded run `secs` older, so age alerts can be
/// shown to fire without waiting for hours.
pub fn age_runs(secs: u64) {
    let ms = secs.saturating_mul(1000);
    if let Some(last) = LAST_CHECK.lock().unwrap().as_mut() {
        last.at_ms = last.at_ms.saturating_sub(ms);
    }
    if let Some(runs) = RULE_RUNS.lock().unwrap().as_mut() {
        for at in runs.values_mut().filter_map(|r| r.at_ms.as_mut()) {
            *at = at.saturating_sub(ms);
        }
    }
}

/// One truth query's time, successful or not.
pub fn record_pg_query(ms: u64) {
    PG_QUERY_MS_LAST.store(ms, Ordering::Relaxed);
    PG_QUERY_MS_MAX.fetch_max(ms, Ordering::Relaxed);
}

/// What a contact with PostgreSQL (a truth query or a probe) said. A query
/// the server refused still shows the server up; only failing to reach it
/// (or to log in) shows it down.
pub fn record_pg_contact(result: Result<(), &BridgeError>) {
    let mut contact = PG_CONTACT.lock().unwrap();
    match result {
        Ok(()) => {
            *contact = PgContact {
                up: Some(true),
                last_error: None,
            }
        }
        Err(e) => {
            PG_ERRORS_TOTAL.fetch_add(1, Ordering::Relaxed);
            let down = matches!(e, BridgeError::Unavailable(_) | BridgeError::Config(_));
            *contact = PgContact {
                up: Some(!down),
                last_error: Some(e.to_string()),
            };
        }
    }
}

/// The last PostgreSQL error, while the last attempt failed.
pub fn last_pg_error() -> Option<String> {
    PG_CONTACT.lock().unwrap().last_error.clone()
}

/// Why PostgreSQL could not be reached, while the last contact failed so.
pub fn pg_down() -> Option<String> {
    let contact = PG_CONTACT.lock().unwrap();
    match contact.up {
        Some(false) => contact.last_error.clone(),
        _ => None,
    }
}

/// True when the last contact with PostgreSQL reached it.
pub fn pg_up() -> bool {
    PG_CONTACT.lock().unwrap().up == Some(true)
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
        ("drifted_bad_ttl", n(&DRIFTED_BY_STATUS[5])),
        ("drifted_stale", n(&DRIFTED_BY_STATUS[6])),
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
        ("pg_up", i64::from(pg_up())),
        ("runs_failed_total", n(&RUNS_FAILED_TOTAL)),
        ("check_memory_peak_bytes", n(&CHECK_MEMORY_PEAK_BYTES)),
        ("watch_queries_total", n(&WATCH_QUERIES_TOTAL)),
    ]
}

/// One rule's dict field of `INFO consistency`, keys in the documented order;
/// `dirty`: its ids waiting for a CHANGED check.
pub fn rule_info_fields(rule: &str, dirty: usize) -> Vec<(&'static str, i64)> {
    let run = rule_run(rule);
    vec![
        ("checked", run.checked as i64),
        ("drifted", run.drifted as i64),
        (
            "last_run_age_sec",
            run.at_ms
                .map_or(-1, |at| (now_ms().saturating_sub(at) / 1000) as i64),
        ),
        ("last_duration_ms", run.duration_ms as i64),
        ("runs_failed", run.runs_failed as i64),
        ("dirty", dirty as i64),
    ]
}

/// A watched rule's counters in its dict field, after `dirty`, in the
/// documented order (`nines` follows them, as text).
pub fn watch_info_fields(tally: &WatchTally) -> Vec<(&'static str, i64)> {
    let n = |v: u64| v as i64;
    vec![
        ("watch_samples", n(tally.samples)),
        ("watch_within_1s", n(tally.within_1s)),
        ("watch_within_10s", n(tally.within_10s)),
        ("watch_within_60s", n(tally.within_60s)),
        ("watch_inconsistent", n(tally.inconsistent)),
        ("watch_superseded", n(tally.superseded)),
        ("watch_unknown", n(tally.unknown)),
        ("watch_dropped", n(tally.dropped)),
    ]
}
