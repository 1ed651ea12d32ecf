//! Watched rules (`"watch": true`): continuous consistency. Every write of a
//! watched rule's key is sampled (redis_api/key_events.rs); a timer on the
//! main thread sees when looks are due and queues one job at a time on the
//! truth lane, which looks at the due samples in batches (one truth query per
//! rule and database), at most `watch-max-qps` queries per second whatever
//! the write rate. A write still inconsistent at the last look (60 s) is
//! announced on `notify-channel` and, with `autofix`, repaired as FIX ALL
//! would (never over a value written after it was looked at).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use redis_module::Context;

use crate::compare::DriftEntry;
use crate::config;
use crate::drift_check::{epoch_ms, run_check, CheckPlan, PoolTruth, TruthSource};
use crate::fix::fix_all;
use crate::redis_api::detached::Detached;
use crate::redis_api::writes;
use crate::reply::{bytes_as_text, Reply};
use crate::report::CheckReport;
use crate::state::{self, LoadedRule};
use crate::store::{Access, Keyspace};
use crate::watch_samples::{LookBatch, LookResult, Looks, WatchSamples, LAST_LOOK, SECOND_LOOK};

/// How often the timer looks for due samples.
const TICK: Duration = Duration::from_millis(100);
/// Ids in one look's truth query.
pub const MAX_IDS_PER_LOOK: usize = 2000;

/// The second and last looks' offsets; only the test hooks change them.
static SECOND_LOOK_MS: AtomicU64 = AtomicU64::new(SECOND_LOOK.as_millis() as u64);
static LAST_LOOK_MS: AtomicU64 = AtomicU64::new(LAST_LOOK.as_millis() as u64);
static IN_FLIGHT: AtomicBool = AtomicBool::new(false);
static BUDGET: Mutex<Option<QueryBudget>> = Mutex::new(None);

/// The looks in force: `watch-grace-ms`, then 10 s and 60 s after the write.
pub fn looks() -> Looks {
    let grace = config::watch_grace();
    let second = Duration::from_millis(SECOND_LOOK_MS.load(Ordering::Relaxed)).max(grace);
    let last = Duration::from_millis(LAST_LOOK_MS.load(Ordering::Relaxed)).max(second);
    Looks([grace, second, last])
}

/// Tests shorten the 10 s and 60 s looks (CONSISTENCY.DEBUG WATCH-LOOKS).
pub fn set_later_looks(second: Duration, last: Duration) {
    SECOND_LOOK_MS.store(second.as_millis() as u64, Ordering::Relaxed);
    LAST_LOOK_MS.store(last.as_millis() as u64, Ordering::Relaxed);
}

/// Truth queries per second as a token bucket: up to one second's worth
/// saved, so a quiet spell never allows a burst above the rate.
#[derive(Debug, Clone, Copy)]
pub struct QueryBudget {
    tokens: f64,
    at: Instant,
}

impl QueryBudget {
    pub fn new(now: Instant) -> QueryBudget {
        QueryBudget {
            tokens: 0.0,
            at: now,
        }
    }

    /// Whole queries allowed now at `qps`.
    pub fn available(&mut self, now: Instant, qps: usize) -> usize {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * qps as f64).min(qps as f64);
        self.at = now;
        self.tokens.floor() as usize
    }

    pub fn spend(&mut self, queries: usize) {
        self.tokens = (self.tokens - queries as f64).max(0.0);
    }
}

/// Starts the timer; it re-arms itself every tick.
pub fn start(ctx: &Context) {
    ctx.create_timer(TICK, tick, ());
}

fn tick(ctx: &Context, _: ()) {
    ctx.create_timer(TICK, tick, ());
    if IN_FLIGHT.load(Ordering::Acquire) || !writes::is_primary(ctx) {
        return;
    }
    let now = Instant::now();
    if !state::watch_samples().any_due(now) {
        return;
    }
    let allowed = {
        let mut budget = BUDGET.lock().unwrap_or_else(|p| p.into_inner());
        budget
            .get_or_insert_with(|| QueryBudget::new(now))
            .available(now, config::watch_max_qps())
    };
    if allowed == 0 {
        return;
    }
    IN_FLIGHT.store(true, Ordering::Release);
    let submitted = state::lanes().truth.try_submit(Box::new(move || {
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_due_looks(allowed)));
        if let Err(panic) = result {
            log::warn!(
                "consistency: a watch look panicked: {}",
                consistency_bridge::panic_message(panic.as_ref())
            );
        }
        IN_FLIGHT.store(false, Ordering::Release);
    }));
    // A full lane (operators' commands first): the next tick tries again.
    if submitted.is_err() {
        IN_FLIGHT.store(false, Ordering::Release);
    }
}

/// The job: takes up to `allowed` due batches and looks at each.
fn run_due_looks(allowed: usize) {
    let rules = state::rules();
    let watched = |name: &str| rules.get(name).is_some_and(|r| r.rule.watch);
    let batches =
        state::watch_samples().take_due(Instant::now(), allowed, MAX_IDS_PER_LOOK, watched);
    if let Some(budget) = BUDGET.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        budget.spend(batches.len());
    }
    crate::stats::record_watch_queries(batches.len());
    let samples = state::watch_samples_lock();
    let autofix = config::autofix();
    for batch in &batches {
        let Some(rule) = rules.get(&batch.rule) else {
            continue;
        };
        let access = i32::try_from(batch.db)
            .map_err(|_| "no such database".to_string())
            .and_then(|db| Detached::new(db, config::job_timeout()));
        let truth = PoolTruth::from_pool();
        match (access, truth) {
            (Ok(access), Ok(mut truth)) => {
                look_at(batch, rule, &access, &mut truth, samples, autofix);
            }
            _ => {
                let mut book = samples.lock().unwrap_or_else(|p| p.into_inner());
                book.settle(batch, LookResult::Unknown, Instant::now());
            }
        }
    }
}

/// What one look ended with: the writes still inconsistent at the last look
/// (announced), and how many keys were repaired.
#[derive(Debug, Default)]
pub struct LookOutcome {
    pub inconsistent: Vec<DriftEntry>,
    pub repaired: usize,
}

/// Looks at one batch: the truth for its ids, their keys read by name, the
/// verdicts into `samples`; writes inconsistent at the last look are
/// announced, and repaired with `autofix`.
pub fn look_at<A: Access, T: TruthSource>(
    batch: &LookBatch,
    rule: &Arc<LoadedRule>,
    access: &A,
    truth: &mut T,
    samples: &Mutex<WatchSamples>,
    autofix: bool,
) -> LookOutcome {
    let mut plan = CheckPlan::configured(vec![Arc::clone(rule)], Vec::new(), None);
    plan.per_rule_ids = Some(vec![batch.ids()]);
    // The looks themselves are the re-reads: one round each.
    plan.verify_rounds = 1;
    let report = run_check(&plan, access, truth);
    let now = Instant::now();
    let lock = || samples.lock().unwrap_or_else(|p| p.into_inner());
    let report = match report {
        Ok(report) => report,
        Err(_) => {
            lock().settle(batch, LookResult::Unknown, now);
            return LookOutcome::default();
        }
    };
    let differs: HashSet<Vec<u8>> = report.entries.iter().map(|e| e.id.clone()).collect();
    let last: HashSet<Vec<u8>> = lock()
        .settle(batch, LookResult::Inconsistent(&differs), now)
        .into_iter()
        .collect();
    if last.is_empty() {
        return LookOutcome::default();
    }
    let inconsistent: Vec<DriftEntry> = report
        .entries
        .into_iter()
        .filter(|e| last.contains(&e.id))
        .collect();
    announce(access, &inconsistent);
    let mut outcome = LookOutcome {
        inconsistent,
        repaired: 0,
    };
    if autofix {
        let report = CheckReport {
            entries: outcome.inconsistent.clone(),
            ..CheckReport::default()
        };
        match fix_all(&plan, &report, access, false, false) {
            Ok(fixed) => outcome.repaired = fixed.changed,
            Err(e) => log::warn!(
                "consistency: watch repair of rule {} failed: {e}",
                rule.rule.name
            ),
        }
    }
    outcome
}

/// Logs and PUBLISHes each write still inconsistent at the last look.
fn announce<A: Access>(access: &A, entries: &[DriftEntry]) {
    let Some(first) = entries.first() else {
        return;
    };
    let after_ms = looks().0[2].as_millis() as i64;
    log::warn!(
        "consistency: watch: {} write(s) of rule {} still inconsistent after {} ms, first {} ({})",
        entries.len(),
        first.rule,
        after_ms,
        bytes_as_text(&first.key),
        first.status.name()
    );
    for chunk in entries.chunks(500) {
        access.hold(|ks| {
            let at_ms = epoch_ms(Some(SystemTime::now())) as i64;
            let db = ks.db();
            for e in chunk {
                let text = |v: &Option<String>| v.clone().map_or(Reply::Null, Reply::text);
                let event = Reply::Map(vec![
                    ("event", Reply::text("watch_inconsistent")),
                    ("rule", Reply::text(e.rule.clone())),
                    ("id", Reply::Bulk(e.id.clone())),
                    ("key", Reply::Bulk(e.key.clone())),
                    ("status", Reply::text(e.status.name())),
                    ("cached", text(&e.cached)),
                    ("truth", text(&e.truth)),
                    ("after_ms", Reply::Int(after_ms)),
                    ("at_ms", Reply::Int(at_ms)),
                    ("db", Reply::Int(db)),
                ]);
                ks.publish(&event.to_json());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Status;
    use crate::store::memory::fake_truth::{rules, FakeTruth};
    use crate::store::memory::{MemoryAccess, MemoryStore, MemoryValue};
    use crate::watch_samples::WatchTally;

    const RULE: &str = r#"[{"name": "weekly", "kind": "number", "key": "u:{id}:w",
        "truth": "SELECT id, v FROM t", "threshold": 1, "fix": "rewrite", "watch": true}]"#;

    fn setup() -> (Arc<LoadedRule>, MemoryAccess, Mutex<WatchSamples>) {
        let rule = rules(RULE).remove(0);
        let mut store = MemoryStore::default();
        store.set("u:1:w", "10");
        store.set("u:2:w", "99");
        let looks = Looks([
            Duration::from_millis(0),
            Duration::from_millis(0),
            Duration::from_millis(0),
        ]);
        (
            rule,
            MemoryAccess::new(store),
            Mutex::new(WatchSamples::new(100, looks)),
        )
    }

    fn take(samples: &Mutex<WatchSamples>) -> Vec<LookBatch> {
        samples
            .lock()
            .unwrap()
            .take_due(Instant::now(), 10, 100, |_| true)
    }

    #[test]
    fn a_write_inconsistent_at_every_look_is_announced_and_repaired() {
        let (rule, access, samples) = setup();
        let mut truth =
            FakeTruth::default().with("weekly", &[("1", Some("10")), ("2", Some("20"))]);
        let now = Instant::now();
        samples.lock().unwrap().record("weekly", 0, b"1", now);
        samples.lock().unwrap().record("weekly", 0, b"2", now);
        let mut last = LookOutcome::default();
        for _ in 0..3 {
            let batch = take(&samples).remove(0);
            last = look_at(&batch, &rule, &access, &mut truth, &samples, true);
        }
        assert_eq!(last.inconsistent.len(), 1);
        assert_eq!(last.inconsistent[0].key, b"u:2:w");
        assert_eq!(last.inconsistent[0].status, Status::Drift);
        assert_eq!(last.repaired, 1);
        assert_eq!(
            access.store.borrow().get("u:2:w"),
            Some(&MemoryValue::Str(b"20".to_vec()))
        );
        let tally = samples.lock().unwrap().tally("weekly");
        assert_eq!(
            tally,
            WatchTally {
                samples: 2,
                within_1s: 1,
                within_10s: 1,
                within_60s: 1,
                inconsistent: 1,
                ..WatchTally::default()
            }
        );
        let published = access.store.borrow().published.clone();
        assert_eq!(published.len(), 1);
        assert!(
            published[0].contains(r#""event":"watch_inconsistent""#),
            "{}",
            published[0]
        );
        assert!(
            published[0].contains(r#""key":"u:2:w""#),
            "{}",
            published[0]
        );
    }

    #[test]
    fn an_unreachable_truth_makes_samples_unknown_and_repairs_nothing() {
        let (rule, access, samples) = setup();
        let mut truth = FakeTruth {
            down: Some(consistency_bridge::BridgeError::Unavailable(
                "refused".into(),
            )),
            ..FakeTruth::default()
        };
        samples
            .lock()
            .unwrap()
            .record("weekly", 0, b"2", Instant::now());
        let batch = take(&samples).remove(0);
        let out = look_at(&batch, &rule, &access, &mut truth, &samples, true);
        assert!(out.inconsistent.is_empty());
        assert_eq!(samples.lock().unwrap().tally("weekly").unknown, 1);
        assert_eq!(
            access.store.borrow().get("u:2:w"),
            Some(&MemoryValue::Str(b"99".to_vec()))
        );
    }

    #[test]
    fn the_budget_allows_the_rate_and_saves_at_most_a_second() {
        let t0 = Instant::now();
        let mut budget = QueryBudget::new(t0);
        assert_eq!(budget.available(t0, 20), 0);
        assert_eq!(budget.available(t0 + Duration::from_millis(100), 20), 2);
        budget.spend(2);
        assert_eq!(budget.available(t0 + Duration::from_millis(150), 20), 1);
        // A long quiet spell saves one second's worth, no more.
        assert_eq!(budget.available(t0 + Duration::from_secs(60), 20), 20);
        budget.spend(50);
        assert_eq!(budget.available(t0 + Duration::from_secs(60), 20), 0);
    }
}
