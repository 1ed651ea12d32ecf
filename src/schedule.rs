//! Scheduled checks: the timer inside Redis that replaces the seeds' cron job.
//!
//! A one-second timer on the main thread decides which rules are due (each rule's
//! `interval_sec`, else `consistency.check-interval-sec`) and queues one run on
//! the truth lane: CHECK, or FIX ALL with `consistency.autofix`. Never two runs at
//! once, never on a replica. Each run logs one summary line, as the seed's
//! script did, and updates STATUS and INFO.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis_module::Context;

use crate::config;
use crate::drift_check::{run_check, CheckPlan, PoolTruth};
use crate::fix::{fix_all, notify_presence};
use crate::redis_api::detached::Detached;
use crate::redis_api::writes;
use crate::reply::bytes_as_text;
use crate::report::CheckReport;
use crate::state::{self, LoadedRule};
use crate::stats;

const TICK: Duration = Duration::from_secs(1);

static RUNNING: AtomicBool = AtomicBool::new(false);
/// When each rule last ran on schedule (by rule name).
static LAST_RUN: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);

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
        return;
    }
    let names: Vec<String> = due.iter().map(|r| r.rule.name.clone()).collect();
    RUNNING.store(true, Ordering::Release);
    let submitted = state::lanes().truth.try_submit(Box::new(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(due)));
        if let Err(panic) = result {
            log::warn!(
                "consistency: scheduled check panicked: {}",
                consistency_bridge::panic_message(panic.as_ref())
            );
        }
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
    let mut guard = LAST_RUN.lock().unwrap();
    let last_run = guard.get_or_insert_with(HashMap::new);
    let mut due = Vec::new();
    for rule in &rules.rules {
        let Some(interval) = interval_of(rule) else {
            continue;
        };
        let last = *last_run.entry(rule.rule.name.clone()).or_insert(now);
        if now.duration_since(last) >= interval {
            due.push(Arc::clone(rule));
        }
    }
    due
}

/// Records that these rules' run was queued at `now`.
fn mark_run(names: &[String], now: Instant) {
    let mut guard = LAST_RUN.lock().unwrap();
    let last_run = guard.get_or_insert_with(HashMap::new);
    for name in names {
        last_run.insert(name.clone(), now);
    }
}

/// Seconds until the next scheduled run, or None when nothing is scheduled.
pub fn next_in_sec() -> Option<u64> {
    let rules = state::rules();
    let guard = LAST_RUN.lock().unwrap();
    let now = Instant::now();
    rules
        .rules
        .iter()
        .filter_map(|rule| {
            let interval = interval_of(rule)?;
            let last = guard
                .as_ref()
                .and_then(|m| m.get(&rule.rule.name).copied())
                .unwrap_or(now);
            Some((last + interval).saturating_duration_since(now).as_secs())
        })
        .min()
}

fn run(rules: Vec<Arc<LoadedRule>>) {
    let autofix = config::autofix();
    let names: Vec<String> = rules.iter().map(|r| r.rule.name.clone()).collect();
    let plan = CheckPlan::configured(rules, Vec::new(), None);
    let access = match Detached::new(config::db(), config::job_timeout()) {
        Ok(access) => access,
        Err(e) => {
            log::warn!(
                "consistency: scheduled check of {} failed: {e}",
                names.join(", ")
            );
            return;
        }
    };
    let mut truth = match PoolTruth::from_pool() {
        Ok(truth) => truth,
        Err(e) => {
            log::warn!("consistency: scheduled check skipped: {e}");
            return;
        }
    };
    let report = match run_check(&plan, &access, &mut truth) {
        Ok(report) => report,
        Err(e) => {
            log::warn!(
                "consistency: scheduled check of {} failed: {e}",
                names.join(", ")
            );
            return;
        }
    };
    stats::record_check(&report);
    let repaired = if autofix {
        match fix_all(&plan, &report, &access, false, false) {
            Ok(outcome) => outcome.changed as i64,
            Err(e) => {
                log::warn!("consistency: scheduled repair failed: {e}");
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
}
