//! Scheduled checks: the timer inside Redis that replaces the seeds' cron job.
//!
//! A one-second timer on the main thread decides which rules are due (each rule's
//! `interval_sec`, else `consistency.check-interval-sec`) and queues one run on
//! the truth lane: CHECK, or FIX ALL with `consistency.autofix`. Never two runs at
//! once, never on a replica. Each run logs one summary line, as the seed's
//! script did, and updates STATUS and INFO. A run that fails is retried after
//! 5 s, doubling up to the rule's interval, not a whole interval later. While
//! nothing else talks to PostgreSQL, a probe every 30 s keeps `pg_up` current.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis_module::Context;

use crate::config;
use crate::drift_check::{CheckPlan, PoolTruth};
use crate::fix::{fix_all, notify_presence};
use crate::incremental::run_tracked;
use crate::redis_api::detached::Detached;
use crate::redis_api::writes;
use crate::reply::bytes_as_text;
use crate::report::{CheckMode, CheckReport};
use crate::state::{self, LoadedRule};
use crate::stats;

const TICK: Duration = Duration::from_secs(1);
/// The first retry of a failed run; each further failure doubles it.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// How often an otherwise idle module asks PostgreSQL whether it is up.
const PROBE_EVERY: Duration = Duration::from_secs(30);

static RUNNING: AtomicBool = AtomicBool::new(false);
/// Each scheduled rule's timing (by rule name).
static TIMERS: Mutex<Option<HashMap<String, RuleTimer>>> = Mutex::new(None);
static LAST_PROBE: Mutex<Option<Instant>> = Mutex::new(None);

/// When a rule last ran on schedule and, after failures, when it retries.
#[derive(Clone, Copy, Debug)]
struct RuleTimer {
    last: Instant,
    failures: u32,
    retry_at: Option<Instant>,
    /// When its last full check completed (rules with `full_every_sec`).
    last_full: Option<Instant>,
}

impl RuleTimer {
    fn due_at(&self, interval: Duration) -> Instant {
        self.retry_at.unwrap_or(self.last + interval)
    }
}

/// How long after its `failures`-th failure in a row a run is retried: 5 s,
/// doubling, never longer than the rule's interval.
pub fn retry_delay(failures: u32, interval: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    FIRST_RETRY.saturating_mul(1 << doublings).min(interval)
}

/// Starts the timer; it re-arms itself every tick.
pub fn start(ctx: &Context) {
    ctx.create_timer(TICK, tick, ());
}

fn tick(ctx: &Context, _: ()) {
    ctx.create_timer(TICK, tick, ());
    if RUNNING.load(Ordering::Acquire) || !writes::is_primary(ctx) {
        return;
    }
    let now = Instant::now();
    let due = due_rules(now);
    if due.is_empty() {
        probe_when_idle(now);
        return;
    }
    let names: Vec<String> = due.iter().map(|r| r.rule.name.clone()).collect();
    let changed = changed_run(&due, now);
    RUNNING.store(true, Ordering::Release);
    let run_names = names.clone();
    let submitted = state::lanes().truth.try_submit(Box::new(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(due, changed)));
        let failed = match result {
            Ok(Ok(full)) => {
                if full {
                    mark_full(&run_names, Instant::now());
                }
                false
            }
            Ok(Err(why)) => {
                log::warn!("consistency: {why}");
                true
            }
            Err(panic) => {
                log::warn!(
                    "consistency: scheduled check panicked: {}",
                    consistency_bridge::panic_message(panic.as_ref())
                );
                true
            }
        };
        finish_run(&run_names, failed, Instant::now());
        RUNNING.store(false, Ordering::Release);
    }));
    match submitted {
        Ok(()) => mark_run(&names, now),
        // The lane is full of operators' commands: try again next tick.
        Err(_) => RUNNING.store(false, Ordering::Release),
    }
}

/// The interval of a rule, or None when it is not scheduled.
fn interval_of(rule: &LoadedRule) -> Option<Duration> {
    let secs = rule
        .rule
        .interval_sec
        .unwrap_or_else(config::check_interval_sec);
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// The rules due now. A rule first seen waits a full interval.
fn due_rules(now: Instant) -> Vec<Arc<LoadedRule>> {
    let rules = state::rules();
    let mut guard = TIMERS.lock().unwrap();
    let timers = guard.get_or_insert_with(HashMap::new);
    let mut due = Vec::new();
    for rule in &rules.rules {
        let Some(interval) = interval_of(rule) else {
            continue;
        };
        let timer = timers.entry(rule.rule.name.clone()).or_insert(RuleTimer {
            last: now,
            failures: 0,
            retry_at: None,
            last_full: None,
        });
        if now >= timer.due_at(interval) {
            due.push(Arc::clone(rule));
        }
    }
    due
}

/// Records that these rules' run was queued at `now`.
fn mark_run(names: &[String], now: Instant) {
    let mut guard = TIMERS.lock().unwrap();
    let timers = guard.get_or_insert_with(HashMap::new);
    for name in names {
        if let Some(timer) = timers.get_mut(name) {
            timer.last = now;
            timer.retry_at = None;
        }
    }
}

/// Whether a run of `due` checks only what changed: every rule sets
/// `full_every_sec`, and none is due its full check.
fn changed_run(due: &[Arc<LoadedRule>], now: Instant) -> bool {
    let guard = TIMERS.lock().unwrap();
    due.iter().all(|rule| {
        let Some(every) = rule.rule.full_every_sec else {
            return false;
        };
        guard
            .as_ref()
            .and_then(|t| t.get(&rule.rule.name))
            .and_then(|t| t.last_full)
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(every))
    })
}

/// Records that these rules' run read everything.
fn mark_full(names: &[String], now: Instant) {
    let mut guard = TIMERS.lock().unwrap();
    let timers = guard.get_or_insert_with(HashMap::new);
    for name in names {
        if let Some(timer) = timers.get_mut(name) {
            timer.last_full = Some(now);
        }
    }
}

/// Records how a run ended: a failure counts in INFO and sets the retry.
fn finish_run(names: &[String], failed: bool, now: Instant) {
    if failed {
        stats::record_failed_run(names);
    }
    let rules = state::rules();
    let mut guard = TIMERS.lock().unwrap();
    let timers = guard.get_or_insert_with(HashMap::new);
    for name in names {
        let Some(timer) = timers.get_mut(name) else {
            continue;
        };
        if !failed {
            timer.failures = 0;
            continue;
        }
        timer.failures = timer.failures.saturating_add(1);
        let interval = rules
            .rules
            .iter()
            .find(|r| &r.rule.name == name)
            .and_then(|r| interval_of(r));
        if let Some(interval) = interval {
            timer.retry_at = Some(now + retry_delay(timer.failures, interval));
        }
    }
}

/// Seconds until the next scheduled run, or None when nothing is scheduled.
pub fn next_in_sec() -> Option<u64> {
    let rules = state::rules();
    let guard = TIMERS.lock().unwrap();
    let now = Instant::now();
    rules
        .rules
        .iter()
        .filter_map(|rule| {
            let interval = interval_of(rule)?;
            let due = guard
                .as_ref()
                .and_then(|m| m.get(&rule.rule.name))
                .map_or(now + interval, |t| t.due_at(interval));
            Some(due.saturating_duration_since(now).as_secs())
        })
        .min()
}

/// With rules loaded and the truth lane idle, asks PostgreSQL every
/// PROBE_EVERY whether it is up; checks and repairs tell INFO too.
fn probe_when_idle(now: Instant) {
    if state::rules().rules.is_empty() || state::lanes().truth.queued() > 0 {
        return;
    }
    let mut last = LAST_PROBE.lock().unwrap();
    if last.is_some_and(|at| now.duration_since(at) < PROBE_EVERY) {
        return;
    }
    *last = Some(now);
    let _ = state::lanes().truth.try_submit(Box::new(|| {
        if let Ok(truth) = PoolTruth::from_pool() {
            truth.probe();
        }
    }));
}

/// One scheduled run (a CHECK CHANGED with `changed`); Ok says whether it
/// read everything, Err why it could not complete.
fn run(rules: Vec<Arc<LoadedRule>>, changed: bool) -> Result<bool, String> {
    let autofix = config::autofix();
    let names: Vec<String> = rules.iter().map(|r| r.rule.name.clone()).collect();
    let failed =
        |e: &dyn std::fmt::Display| format!("scheduled check of {} failed: {e}", names.join(", "));
    let plan = CheckPlan::configured(rules, Vec::new(), None);
    let access = Detached::new(config::db(), config::job_timeout()).map_err(|e| failed(&e))?;
    let mut truth = PoolTruth::from_pool().map_err(|e| failed(&e))?;
    let report = run_tracked(&plan, changed, &access, &mut truth, state::dirty_tracker())
        .map_err(|e| failed(&e))?;
    let full = report.mode != CheckMode::Changed;
    stats::record_check(&report, true);
    let mut outcome = Ok(full);
    let repaired = if autofix {
        match fix_all(&plan, &report, &access, false, false) {
            Ok(fixed) => fixed.changed as i64,
            Err(e) => {
                outcome = Err(format!("scheduled repair failed: {e}"));
                0
            }
        }
    } else {
        let _ = notify_presence(&access, &plan.rules, &report.entries);
        0
    };
    log::info!(
        "{}",
        summary_line(&names, &report, autofix.then_some(repaired))
    );
    drop(report);
    crate::redis_api::blocking::release_free_memory();
    outcome
}

/// The one line a scheduled run logs: what was checked, what drifted, the rate,
/// the largest drift and its key, and repairs when autofix is on.
pub fn summary_line(rules: &[String], report: &CheckReport, repaired: Option<i64>) -> String {
    let mut line = format!(
        "consistency: scheduled check of {}: {} keys, {} ids checked, {} drifted ({:.2}%)",
        rules.join(", "),
        report.checked,
        report.ids,
        report.drifted(),
        report.rate() * 100.0
    );
    if let Some(max) = report.max_diff() {
        line.push_str(&format!(
            ", largest drift {} at {}",
            max.diff.map_or(0.0, f64::abs),
            bytes_as_text(&max.key)
        ));
    }
    if let Some(n) = repaired {
        line.push_str(&format!(", {n} repaired"));
    }
    line.push_str(&format!(", in {} ms", report.duration_ms));
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{CachedValue, DriftEntry, Status};

    #[test]
    fn summary_names_the_largest_drift() {
        let report = CheckReport {
            checked: 200,
            ids: 100,
            duration_ms: 12,
            entries: vec![DriftEntry {
                rule: "cost_weekly".into(),
                id: b"4".to_vec(),
                key: b"user:4:cost_weekly".to_vec(),
                status: Status::Drift,
                cached: Some("50.1".into()),
                truth: Some("12.8".into()),
                diff: Some(-37.5),
                field: None,
                seen: CachedValue::Absent,
            }],
            ..CheckReport::default()
        };
        let line = summary_line(&["cost_weekly".into()], &report, Some(1));
        assert_eq!(
            line,
            "consistency: scheduled check of cost_weekly: 200 keys, 100 ids checked, 1 drifted (0.50%), \
             largest drift 37.5 at user:4:cost_weekly, 1 repaired, in 12 ms"
        );
        let quiet = summary_line(&["a".into()], &CheckReport::default(), None);
        assert!(quiet.ends_with("0 drifted (0.00%), in 0 ms"), "{quiet}");
    }

    #[test]
    fn failed_runs_retry_after_5s_doubling_up_to_the_interval() {
        let hour = Duration::from_secs(3600);
        let delays: Vec<u64> = (1..=12).map(|n| retry_delay(n, hour).as_secs()).collect();
        assert_eq!(
            delays,
            [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        // Never later than the interval itself, and no overflow however many.
        assert_eq!(
            retry_delay(3, Duration::from_secs(7)),
            Duration::from_secs(7)
        );
        assert_eq!(retry_delay(u32::MAX, hour), hour);
        assert_eq!(retry_delay(0, hour), Duration::from_secs(5));
    }
}
