//! How a check runs: truth from PostgreSQL, keys from the cache in slices,
//! comparison, then verification rounds that re-query and re-read only what
//! drifted, so writes in flight raise no false alarm.

use std::collections::HashSet;

use crate::fast_hash::{FastMap, FastSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use consistency_bridge::{BridgeError, PgPool, TruthRow};

use crate::cluster::SlotSet;
use crate::compare::{compare_key, CachedKey, DriftEntry, Tolerance, Truth};
use crate::report::{CheckMode, CheckReport, RuleTally};
use crate::rules::RuleKind;
use crate::state::LoadedRule;
use crate::stats;
use crate::store::{Access, Expired, Keyspace};
pub use crate::truth_map::{key_of_slot, slot_of, to_map, DuplicateId, TruthMap};

/// Where the truth comes from: the pool on a worker, or a direct connection on
/// the main thread (scripts).
pub trait TruthSource: Send {
    fn all(
        &mut self,
        rule: &LoadedRule,
        window_start: Option<SystemTime>,
    ) -> Result<Vec<TruthRow>, BridgeError>;
    fn ids(
        &mut self,
        rule: &LoadedRule,
        ids: &[String],
        window_start: Option<SystemTime>,
    ) -> Result<Vec<TruthRow>, BridgeError>;

    /// The ids the rule's `changed` query returns for `since`: ids whose
    /// truth changed since then (as text, like truth ids).
    fn changed(&mut self, rule: &LoadedRule, since: SystemTime)
        -> Result<Vec<String>, BridgeError>;

    /// The rows of several rules' given ids, in order; one after another
    /// unless the source can run them side by side.
    fn ids_of(
        &mut self,
        asks: &[(&LoadedRule, Vec<String>, Option<SystemTime>)],
    ) -> Vec<Result<Vec<TruthRow>, BridgeError>> {
        asks.iter()
            .map(|(rule, ids, window)| self.ids(rule, ids, *window))
            .collect()
    }

    /// Every row of several rules, in order; one after another unless the
    /// source can run them side by side.
    fn all_of(
        &mut self,
        rules: &[(&LoadedRule, Option<SystemTime>)],
    ) -> Vec<Result<Vec<TruthRow>, BridgeError>> {
        rules
            .iter()
            .map(|(rule, window)| self.all(rule, *window))
            .collect()
    }
}

/// Truth through the module's connection pool.
#[derive(Clone)]
pub struct PoolTruth {
    pub pool: Arc<PgPool>,
    pub statement_timeout: Duration,
}

impl PoolTruth {
    /// Takes one pooled connection and gives it back, recording whether
    /// PostgreSQL answered.
    pub fn probe(&self) {
        let result = self.pool.get().map(drop);
        stats::record_pg_contact(result.as_ref().map(|_| ()));
    }

    fn timed<T>(
        &self,
        rule: &LoadedRule,
        run: impl FnOnce(&mut consistency_bridge::PgConn) -> Result<T, BridgeError>,
    ) -> Result<T, BridgeError> {
        let started = Instant::now();
        let result = self.pool.get().and_then(|mut conn| {
            rule.truth.prepare(&mut *conn)?;
            run(&mut conn)
        });
        record_truth(started, &result);
        // A truth of the wrong shape is the rule's problem: say which rule.
        result.map_err(|e| match e {
            BridgeError::BadTruth(why) => {
                BridgeError::BadTruth(format!("rule '{}': {why}", rule.rule.name))
            }
            other => other,
        })
    }
}

/// Counts a truth query in the stats, as INFO shows them.
pub fn record_truth<T>(started: Instant, result: &Result<T, BridgeError>) {
    stats::record_pg_query(started.elapsed().as_millis() as u64);
    stats::record_pg_contact(result.as_ref().map(|_| ()));
}

impl TruthSource for PoolTruth {
    fn all(
        &mut self,
        rule: &LoadedRule,
        window_start: Option<SystemTime>,
    ) -> Result<Vec<TruthRow>, BridgeError> {
        let timeout = self.statement_timeout;
        self.timed(rule, |conn| {
            rule.truth.run_all(&mut **conn, window_start, timeout)
        })
    }

    fn ids(
        &mut self,
        rule: &LoadedRule,
        ids: &[String],
        window_start: Option<SystemTime>,
    ) -> Result<Vec<TruthRow>, BridgeError> {
        let timeout = self.statement_timeout;
        self.timed(rule, |conn| {
            rule.truth.run_ids(&mut **conn, ids, window_start, timeout)
        })
    }

    fn changed(
        &mut self,
        rule: &LoadedRule,
        since: SystemTime,
    ) -> Result<Vec<String>, BridgeError> {
        let Some(query) = &rule.changed else {
            return Ok(Vec::new());
        };
        let timeout = self.statement_timeout;
        let started = Instant::now();
        let result = self.pool.get().and_then(|mut conn| {
            query
                .run_all(&mut *conn, Some(since), timeout)
                .map(|rows| rows.into_iter().map(|r| r.id).collect())
        });
        record_truth(started, &result);
        result
    }

    /// The rules' queries run side by side on their own pooled connections, as
    /// many at once as the pool holds and the machine has cores to spare: the
    /// keyspace scan runs meanwhile, and on two cores parallel queries only
    /// slowed the check (and preempted the thread holding the Redis lock).
    fn all_of(
        &mut self,
        rules: &[(&LoadedRule, Option<SystemTime>)],
    ) -> Vec<Result<Vec<TruthRow>, BridgeError>> {
        let spare_cores =
            std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1));
        self.side_by_side(rules, spare_cores, |source, (rule, window)| {
            source.all(rule, *window)
        })
    }

    /// Id-restricted queries (CHECK CHANGED, verification rounds) run side by
    /// side too: no keyspace scan runs meanwhile, so every core may serve
    /// PostgreSQL.
    fn ids_of(
        &mut self,
        asks: &[(&LoadedRule, Vec<String>, Option<SystemTime>)],
    ) -> Vec<Result<Vec<TruthRow>, BridgeError>> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.side_by_side(asks, cores, |source, (rule, ids, window)| {
            source.ids(rule, ids, *window)
        })
    }
}

impl PoolTruth {
    /// Runs `query` for each of `asks`, in order of `asks`, up to `cores` (and
    /// the pool's size) at once, each on a pooled connection of its own.
    fn side_by_side<Q: Sync>(
        &self,
        asks: &[Q],
        cores: usize,
        query: impl Fn(&mut PoolTruth, &Q) -> Result<Vec<TruthRow>, BridgeError> + Sync,
    ) -> Vec<Result<Vec<TruthRow>, BridgeError>> {
        let at_once = (self.pool.settings().pool_size as usize).min(cores).max(1);
        let mut results = Vec::with_capacity(asks.len());
        for group in asks.chunks(at_once) {
            std::thread::scope(|s| {
                let running: Vec<_> = group
                    .iter()
                    .map(|ask| {
                        let mut source = self.clone();
                        let query = &query;
                        s.spawn(move || query(&mut source, ask))
                    })
                    .collect();
                for handle in running {
                    results.push(match handle.join() {
                        Ok(result) => result,
                        Err(panic) => std::panic::resume_unwind(panic),
                    });
                }
            });
        }
        results
    }
}

/// What to check.
#[derive(Clone)]
pub struct CheckPlan {
    pub rules: Vec<Arc<LoadedRule>>,
    /// Given ids: read by name, nothing scanned. Empty: the whole keyspace.
    pub ids: Vec<Vec<u8>>,
    /// Each rule's own ids instead (CHECK CHANGED), by rule index: read by
    /// name, nothing scanned, `ids` unused.
    pub per_rule_ids: Option<Vec<Vec<Vec<u8>>>>,
    pub threshold_override: Option<f64>,
    pub default_threshold: f64,
    pub verify_rounds: u32,
    pub scan_batch: usize,
    /// The instant windows are cut at, for every round and any repair after them,
    /// so all of them compare the same window.
    pub now: SystemTime,
}

impl CheckPlan {
    /// A check of `rules` (of `ids` only, when given) with the module's configs
    /// in force now; windows are cut at this instant.
    pub fn configured(
        rules: Vec<Arc<LoadedRule>>,
        ids: Vec<Vec<u8>>,
        threshold_override: Option<f64>,
    ) -> CheckPlan {
        CheckPlan {
            rules,
            ids,
            per_rule_ids: None,
            threshold_override,
            default_threshold: crate::config::threshold(),
            verify_rounds: crate::config::verify_rounds(),
            scan_batch: crate::config::scan_batch(),
            now: SystemTime::now(),
        }
    }
}

impl PoolTruth {
    /// Truth through the module's pool, with the configured statement timeout.
    pub fn from_pool() -> Result<PoolTruth, BridgeError> {
        Ok(PoolTruth {
            pool: crate::state::pool()?,
            statement_timeout: crate::config::statement_timeout(),
        })
    }
}

/// Why a check produced no report.
#[derive(Debug)]
pub enum CheckError {
    Truth(BridgeError),
    Expired,
    /// A rule's truth is ambiguous: nothing is reported or repaired.
    DuplicateId(DuplicateId),
}

impl From<DuplicateId> for CheckError {
    fn from(e: DuplicateId) -> Self {
        CheckError::DuplicateId(e)
    }
}

impl From<BridgeError> for CheckError {
    fn from(e: BridgeError) -> Self {
        CheckError::Truth(e)
    }
}

impl From<Expired> for CheckError {
    fn from(_: Expired) -> Self {
        CheckError::Expired
    }
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Truth(e) => write!(f, "{e}"),
            CheckError::Expired => {
                write!(f, "timeout: the check ran past consistency.job-timeout-ms")
            }
            CheckError::DuplicateId(e) => write!(f, "{e}"),
        }
    }
}

/// The cache of one rule, by slot (see [`slot_of`]): the key and what it holds.
type CacheMap = FastMap<Vec<u8>, (Vec<u8>, CachedKey)>;

/// The instant a window_sum rule's window starts, shared by SQL and ZSET.
pub fn window_start(rule: &LoadedRule, now: SystemTime) -> Option<SystemTime> {
    match rule.rule.kind {
        RuleKind::WindowSum { window_ms } => Some(
            now.checked_sub(Duration::from_millis(window_ms))
                .unwrap_or(UNIX_EPOCH),
        ),
        _ => None,
    }
}

pub fn epoch_ms(t: Option<SystemTime>) -> f64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(f64::NEG_INFINITY, |d| d.as_millis() as f64)
}

/// A check in progress.
struct Run<'a, A: Access, T: TruthSource> {
    plan: &'a CheckPlan,
    access: &'a A,
    truth: &'a mut T,
    truth_time: Duration,
    /// The slots this node serves (all, outside a cluster), read at the start.
    slots: Arc<SlotSet>,
}

/// Runs the whole check: round one, then verification rounds.
pub fn run_check<A: Access, T: TruthSource>(
    plan: &CheckPlan,
    access: &A,
    truth: &mut T,
) -> Result<CheckReport, CheckError> {
    let started = Instant::now();
    let memory = crate::working_memory::Measure::start();
    let slots = access.hold(|ks| ks.slots());
    let mut run = Run {
        plan,
        access,
        truth,
        truth_time: Duration::ZERO,
        slots,
    };
    let (mut entries, by_rule, ids) = match &plan.per_rule_ids {
        Some(per_rule) => run.ids_round(per_rule.clone())?,
        None if plan.ids.is_empty() => run.scan_round()?,
        None => run.ids_round(vec![plan.ids.clone(); plan.rules.len()])?,
    };
    let mut rounds = 1;
    while rounds < plan.verify_rounds && !entries.is_empty() {
        entries = run.verify(&entries)?;
        rounds += 1;
    }
    let mut report = CheckReport {
        checked: by_rule.iter().map(|t| t.checked).sum(),
        ids,
        by_rule,
        rounds,
        duration_ms: 0,
        truth_ms: run.truth_time.as_millis() as u64,
        entries,
        mode: CheckMode::Full,
    };
    for tally in &mut report.by_rule {
        tally.drifted = report
            .entries
            .iter()
            .filter(|e| e.rule == tally.rule)
            .count() as u64;
    }
    report.sort_entries();
    report.duration_ms = started.elapsed().as_millis() as u64;
    stats::record_check_memory(memory.peak());
    Ok(report)
}

impl<A: Access, T: TruthSource> Run<'_, A, T> {
    fn tolerance(&self, rule: &LoadedRule) -> Tolerance {
        Tolerance::new(
            rule.rule
                .effective_threshold(self.plan.default_threshold, self.plan.threshold_override),
            rule.rule.threshold_pct,
        )
        .at(epoch_ms(Some(self.plan.now)) as i64)
    }

    /// Round one over the whole keyspace: the truth queries run on their own
    /// thread while this one scans, so a check costs about the slower of the two.
    fn scan_round(&mut self) -> Result<(Vec<DriftEntry>, Vec<RuleTally>, u64), CheckError> {
        let now = self.plan.now;
        let rules = &self.plan.rules;
        let windows: Vec<Option<SystemTime>> = rules.iter().map(|r| window_start(r, now)).collect();
        let truth = &mut *self.truth;
        let (truths, caches, truth_time) = std::thread::scope(|s| {
            let queries = s.spawn(|| {
                let started = Instant::now();
                let asked: Vec<(&LoadedRule, Option<SystemTime>)> = rules
                    .iter()
                    .map(|r| &**r)
                    .zip(windows.iter().copied())
                    .collect();
                let truths = truth
                    .all_of(&asked)
                    .into_iter()
                    .zip(rules)
                    .map(|(rows, rule)| Ok(to_map(rows?, &rule.rule)?))
                    .collect::<Result<Vec<_>, CheckError>>();
                (truths, started.elapsed())
            });
            let caches = scan_caches(self.access, rules, &windows, self.plan.scan_batch);
            let (truths, elapsed) = match queries.join() {
                Ok(done) => done,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            (truths, caches, elapsed)
        });
        self.truth_time += truth_time;
        let mut truths = truths?;
        let caches = caches?;
        if !self.slots.is_all() {
            // In a cluster, ids whose key lives on another shard are that shard's.
            for (rule, truth) in rules.iter().zip(&mut truths) {
                truth.retain(|slot| self.slots.owns_key(&key_of_slot(&rule.rule, slot).0));
            }
        }

        let mut entries = Vec::new();
        let mut tallies = Vec::new();
        // Distinct ids across rules; with one rule whose keys are named by id
        // alone they are counted, not collected.
        let single = rules.len() == 1 && !rules[0].rule.key.is_multi();
        let mut ids: FastSet<&[u8]> = FastSet::default();
        let mut distinct = 0u64;
        for ((rule, truth), cache) in rules.iter().zip(&truths).zip(&caches) {
            let tolerance = self.tolerance(rule);
            let template = &rule.rule.key;
            let mut checked = cache.len() as u64;
            let mut known_in_cache = 0u64;
            for (slot, (key, cached)) in cache {
                let id = if template.is_multi() {
                    template.id_of(key).unwrap_or_default()
                } else {
                    slot.as_slice()
                };
                let t = truth.lookup(slot);
                known_in_cache += u64::from(t != Truth::Unknown);
                entries.extend(compare_key(&rule.rule, tolerance, id, key, cached, t));
                if !single {
                    ids.insert(id);
                }
            }
            distinct += cache.len() as u64 + truth.len() as u64 - known_in_cache;
            let missing = reports_missing(rule);
            if missing || !single {
                for (slot, t) in truth.iter() {
                    if !single {
                        let id = if template.is_multi() {
                            template.id_of(slot).unwrap_or_default()
                        } else {
                            slot
                        };
                        ids.insert(id);
                    }
                    if missing && !cache.contains_key(slot) {
                        checked += 1;
                        let (key, id) = key_of_slot(&rule.rule, slot);
                        entries.extend(compare_key(
                            &rule.rule,
                            tolerance,
                            &id,
                            &key,
                            &CachedKey::ABSENT,
                            t,
                        ));
                    }
                }
            }
            tallies.push(RuleTally {
                rule: rule.rule.name.clone(),
                checked,
                drifted: 0,
            });
        }
        if !single {
            distinct = ids.len() as u64;
        }
        Ok((entries, tallies, distinct))
    }

    /// Round one for given ids, per rule index: truth for just those ids,
    /// keys read by name (and, for templates with several placeholders,
    /// found by a scan: one for all rules when they ask the same ids).
    fn ids_round(
        &mut self,
        per_rule: Vec<Vec<Vec<u8>>>,
    ) -> Result<(Vec<DriftEntry>, Vec<RuleTally>, u64), CheckError> {
        let rules = &self.plan.rules;
        let batch = self.plan.scan_batch;
        let scanned = if per_rule.windows(2).all(|w| w[0] == w[1]) {
            let ids = per_rule.first().map_or(&[][..], Vec::as_slice);
            keys_of_ids(self.access, rules, ids, batch)?
        } else {
            let mut scanned = Vec::with_capacity(rules.len());
            for (rule, ids) in rules.iter().zip(&per_rule) {
                let mut keys = keys_of_ids(self.access, std::slice::from_ref(rule), ids, batch)?;
                scanned.push(keys.pop().unwrap_or_default());
            }
            scanned
        };
        let targets: Vec<Target> = per_rule
            .into_iter()
            .zip(scanned)
            .enumerate()
            .map(|(i, (ids, keys))| Target { rule: i, ids, keys })
            .collect();
        let (entries, checked) = self.check_ids(&targets, true, false)?;
        let tallies = rules
            .iter()
            .zip(checked)
            .map(|(rule, checked)| RuleTally {
                rule: rule.rule.name.clone(),
                checked,
                drifted: 0,
            })
            .collect();
        let mut ids: HashSet<&[u8]> = HashSet::new();
        ids.extend(targets.iter().flat_map(|t| t.ids.iter().map(Vec::as_slice)));
        Ok((entries, tallies, ids.len() as u64))
    }

    /// A verification round: re-query and re-read what the last round found, and
    /// keep only what is still wrong.
    fn verify(&mut self, found: &[DriftEntry]) -> Result<Vec<DriftEntry>, CheckError> {
        let mut targets: Vec<Target> = Vec::new();
        for (i, rule) in self.plan.rules.iter().enumerate() {
            let mut seen = HashSet::new();
            let mut seen_keys = HashSet::new();
            let mine = || found.iter().filter(|e| e.rule == rule.rule.name);
            let ids: Vec<Vec<u8>> = mine()
                .filter(|e| seen.insert(e.id.as_slice()))
                .map(|e| e.id.clone())
                .collect();
            // Keys named by more than the id are re-read by name.
            let keys: Vec<Vec<u8>> = if rule.rule.key.is_multi() {
                mine()
                    .filter(|e| seen_keys.insert(e.key.as_slice()))
                    .map(|e| e.key.clone())
                    .collect()
            } else {
                Vec::new()
            };
            if !ids.is_empty() {
                targets.push(Target { rule: i, ids, keys });
            }
        }
        let (entries, _) = self.check_ids(&targets, false, true)?;
        // A finding that was not there before is not verified: keep what persists.
        let before: HashSet<(&str, &[u8], _, Option<&str>)> = found
            .iter()
            .map(|e| {
                (
                    e.rule.as_str(),
                    e.key.as_slice(),
                    e.status,
                    e.field.as_deref(),
                )
            })
            .collect();
        Ok(entries
            .into_iter()
            .filter(|e| {
                before.contains(&(
                    e.rule.as_str(),
                    e.key.as_slice(),
                    e.status,
                    e.field.as_deref(),
                ))
            })
            .collect())
    }

    /// The values of `keys` (id, key) as `rule` reads them.
    fn read_target(
        &self,
        rule: &LoadedRule,
        keys: &[(Vec<u8>, Vec<u8>)],
        window: Option<SystemTime>,
    ) -> Result<Vec<CachedKey>, Expired> {
        let names: Vec<Vec<u8>> = keys.iter().map(|(_, k)| k.clone()).collect();
        read_keys(
            self.access,
            &names,
            &rule.rule.kind,
            epoch_ms(window),
            self.plan.scan_batch,
        )
    }

    /// Compares the keys of the given ids per rule (by rule index). Returns the
    /// findings and, when `count` is set, the keys compared per selected rule.
    ///
    /// With `bracket` (verification rounds), each key is read both before and
    /// after the truth is queried, and a finding stands only if the read before
    /// shows it too (drift on the same side). A key written while the query runs
    /// is behind the truth on one read and ahead of it on the other, so writes
    /// in flight raise no false alarm however long the query takes.
    fn check_ids(
        &mut self,
        targets: &[Target],
        count: bool,
        bracket: bool,
    ) -> Result<(Vec<DriftEntry>, Vec<u64>), CheckError> {
        let now = self.plan.now;
        let mut entries = Vec::new();
        let mut checked = vec![0; self.plan.rules.len()];
        // First every target's keys (and, bracketing, their values before the
        // truth), then all the truth queries at once, then the comparisons.
        let mut prepared = Vec::with_capacity(targets.len());
        let mut asks: Vec<(&LoadedRule, Vec<String>, Option<SystemTime>)> = Vec::new();
        for target in targets {
            let rule = &self.plan.rules[target.rule];
            let template = &rule.rule.key;
            let window = window_start(rule, now);
            let text_ids = sendable_ids(&target.ids);
            // (id, key) pairs: one per id, or the keys found for the ids.
            let mut keys: Vec<(Vec<u8>, Vec<u8>)> = if template.is_multi() {
                target
                    .keys
                    .iter()
                    .map(|k| (template.id_of(k).unwrap_or_default().to_vec(), k.clone()))
                    .collect()
            } else {
                target
                    .ids
                    .iter()
                    .map(|id| (id.clone(), template.key_for(id)))
                    .collect()
            };
            // Keys of slots another shard serves are not ours to check.
            keys.retain(|(_, key)| self.slots.owns_key(key));
            let earlier = if bracket {
                Some(self.read_target(rule, &keys, window)?)
            } else {
                None
            };
            let asked = !text_ids.is_empty();
            if asked {
                asks.push((&**rule, text_ids, window));
            }
            prepared.push((target, keys, asked, window, earlier));
        }
        let started = Instant::now();
        let mut answers = self.truth.ids_of(&asks).into_iter();
        self.truth_time += started.elapsed();
        for (target, mut keys, asked, window, earlier) in prepared {
            let rule = &self.plan.rules[target.rule];
            let template = &rule.rule.key;
            let truth = if asked {
                let rows = answers.next().expect("one answer per query asked")?;
                to_map(rows, &rule.rule)?
            } else {
                TruthMap::default()
            };
            if template.is_multi() && !bracket {
                // The truth's keys for these ids that no scan found: missing.
                let known: HashSet<Vec<u8>> = keys.iter().map(|(_, k)| k.clone()).collect();
                for (slot, _) in truth.iter() {
                    if !known.contains(slot) && self.slots.owns_key(slot) {
                        let (key, id) = key_of_slot(&rule.rule, slot);
                        keys.push((id, key));
                    }
                }
            }
            let cached = self.read_target(rule, &keys, window)?;
            let tolerance = self.tolerance(rule);
            for (n, ((id, key), cached)) in keys.iter().zip(&cached).enumerate() {
                let t = truth.lookup(slot_of(&rule.rule, id, key));
                if count && (cached.is_present() || (reports_missing(rule) && t != Truth::Unknown))
                {
                    checked[target.rule] += 1;
                }
                let mut found = compare_key(&rule.rule, tolerance, id, key, cached, t);
                if let Some(earlier) = &earlier {
                    let before = compare_key(&rule.rule, tolerance, id, key, &earlier[n], t);
                    found.retain(|e| {
                        before.iter().any(|b| {
                            b.status == e.status && b.field == e.field && same_side(b.diff, e.diff)
                        })
                    });
                }
                entries.extend(found);
            }
        }
        Ok((entries, checked))
    }
}

/// What one rule's part of an id-scoped round looks at.
struct Target {
    rule: usize,
    ids: Vec<Vec<u8>>,
    /// Templates with several placeholders: the keys found for the ids.
    keys: Vec<Vec<u8>>,
}

/// Whether two findings' diffs (if any) lie on the same side of the truth.
fn same_side(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => (x > 0.0) == (y > 0.0),
        (None, None) => true,
        _ => false,
    }
}

fn reports_missing(rule: &LoadedRule) -> bool {
    rule.rule.missing == crate::rules::MissingPolicy::Report
}

/// The ids that may be sent to PostgreSQL: UTF-8 text without NUL. Any other
/// id cannot exist there; its key is reported invalid instead.
pub fn sendable_ids(ids: &[Vec<u8>]) -> Vec<String> {
    ids.iter()
        .filter_map(|id| std::str::from_utf8(id).ok())
        .filter(|id| !id.contains('\0'))
        .map(str::to_string)
        .collect()
}

/// One pass over the keyspace serving every rule: each key name is matched against
/// every rule's template, and matching keys are read in the same GIL hold.
fn scan_caches<A: Access>(
    access: &A,
    rules: &[Arc<LoadedRule>],
    windows: &[Option<SystemTime>],
    batch: usize,
) -> Result<Vec<CacheMap>, Expired> {
    let window_ms: Vec<f64> = windows.iter().map(|w| epoch_ms(*w)).collect();
    let mut caches: Vec<CacheMap> = rules.iter().map(|_| CacheMap::default()).collect();
    let mut scan = access.hold(|ks| ks.new_cursor());
    // (rule index, key name, slot): the matches of one slice.
    let mut matched: Vec<(usize, Vec<u8>, Vec<u8>)> = Vec::with_capacity(batch);
    let mut more = true;
    while more {
        matched.clear();
        let values = access.hold(|ks| {
            more = ks.scan(&mut scan, batch, &mut |name| {
                for (i, rule) in rules.iter().enumerate() {
                    if let Some(id) = rule.rule.key.id_of(name) {
                        let slot = slot_of(&rule.rule, id, name).to_vec();
                        matched.push((i, name.to_vec(), slot));
                    }
                }
            });
            // Read each rule's matches together (one MGET for number rules).
            let mut values: Vec<Vec<CachedKey>> = Vec::with_capacity(rules.len());
            for (i, rule) in rules.iter().enumerate() {
                let names: Vec<&[u8]> = matched
                    .iter()
                    .filter(|(r, _, _)| *r == i)
                    .map(|(_, name, _)| name.as_slice())
                    .collect();
                values.push(ks.read(&names, &rule.rule.kind, window_ms[i]));
            }
            values
        });
        // The maps grow outside the lock: rehashing a large map takes
        // milliseconds that Redis must not wait for.
        for (i, values) in values.into_iter().enumerate() {
            let slots = matched.iter_mut().filter(|(r, _, _)| *r == i);
            for ((_, name, slot), cached) in slots.zip(values) {
                if cached.is_present() {
                    caches[i].insert(std::mem::take(slot), (name.clone(), cached));
                }
            }
        }
        if more {
            access.between_slices()?;
        }
    }
    Ok(caches)
}

/// For each rule, the keys of `ids` when its template has several
/// placeholders (one scan of the keyspace serves them all); nothing for the
/// other rules, whose keys are named by the id alone. No scan without such a
/// rule.
pub fn keys_of_ids<A: Access>(
    access: &A,
    rules: &[Arc<LoadedRule>],
    ids: &[Vec<u8>],
    batch: usize,
) -> Result<Vec<Vec<Vec<u8>>>, Expired> {
    let mut found: Vec<Vec<Vec<u8>>> = rules.iter().map(|_| Vec::new()).collect();
    if !rules.iter().any(|r| r.rule.key.is_multi()) || ids.is_empty() {
        return Ok(found);
    }
    let wanted: HashSet<&[u8]> = ids.iter().map(Vec::as_slice).collect();
    let mut scan = access.hold(|ks| ks.new_cursor());
    let mut more = true;
    while more {
        access.hold(|ks| {
            more = ks.scan(&mut scan, batch, &mut |name| {
                for (i, rule) in rules.iter().enumerate() {
                    let template = &rule.rule.key;
                    if template.is_multi()
                        && template.id_of(name).is_some_and(|id| wanted.contains(id))
                    {
                        found[i].push(name.to_vec());
                    }
                }
            });
        });
        if more {
            access.between_slices()?;
        }
    }
    // A key the scan returned twice counts once.
    for keys in &mut found {
        keys.sort_unstable();
        keys.dedup();
    }
    Ok(found)
}

/// Reads keys by name, `batch` per hold.
pub fn read_keys<A: Access>(
    access: &A,
    keys: &[Vec<u8>],
    kind: &RuleKind,
    window_start_ms: f64,
    batch: usize,
) -> Result<Vec<CachedKey>, Expired> {
    let mut out = Vec::with_capacity(keys.len());
    for (n, chunk) in keys.chunks(batch.max(1)).enumerate() {
        if n > 0 {
            access.between_slices()?;
        }
        let names: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        access.hold(|ks| out.extend(ks.read(&names, kind, window_start_ms)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Rule, RuleSet};

    fn rule(kind_json: &str) -> Rule {
        let json =
            format!(r#"{{"rules":[{{"name":"cost_weekly","key":"k:{{id}}",{kind_json}}}]}}"#);
        RuleSet::parse(&json).unwrap().rules()[0].clone()
    }

    fn row(id: &str, value: Option<&str>) -> TruthRow {
        TruthRow {
            id: id.into(),
            value: value.map(str::to_string),
            named: Vec::new(),
        }
    }

    #[test]
    fn truth_map_refuses_an_id_twice_for_valued_rules() {
        let number = rule(r#""kind":"number","truth":"SELECT 1, 2""#);
        let map = to_map(vec![row("4", Some("1.0")), row("5", None)], &number).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map.lookup(b"4"), Truth::Known(Some("1.0")));
        assert_eq!(map.lookup(b"5"), Truth::Known(None));
        assert_eq!(map.lookup(b"6"), Truth::Unknown);
        let twice = vec![row("4", Some("1.0")), row("5", None), row("4", Some("2.0"))];
        let err = to_map(twice, &number).unwrap_err();
        assert_eq!(
            err,
            DuplicateId {
                rule: "cost_weekly".into(),
                id: "4".into(),
                key: None,
            }
        );
        assert_eq!(
            err.to_string(),
            "truth of rule 'cost_weekly' returned id '4' twice"
        );
        // Equal values are refused too: a repeated id means the SQL is not
        // what the operator thinks (a join that fans out).
        let same = vec![row("4", Some("1.0")), row("4", Some("1.0"))];
        assert!(to_map(same, &number).is_err());
        let check = CheckError::from(err);
        assert_eq!(
            check.to_string(),
            "truth of rule 'cost_weekly' returned id '4' twice"
        );
    }

    #[test]
    fn presence_truth_may_repeat_an_id() {
        let presence = rule(r#""kind":"presence","truth":"SELECT id FROM t""#);
        let map = to_map(
            vec![row("a", None), row("a", None), row("b", None)],
            &presence,
        )
        .unwrap();
        assert_eq!(map.len(), 2);
    }
}

/// The check against the in-memory keyspace and a fake truth: no redis-server,
/// no PostgreSQL.
#[cfg(test)]
mod run_tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::compare::Status;
    use crate::store::memory::fake_truth::{rules, FakeTruth};
    use crate::store::memory::{MemoryAccess, MemoryKey, MemoryStore, MemoryValue};

    const NOW_MS: u64 = 1_700_000_000_000;

    pub(crate) fn plan(rules: Vec<Arc<LoadedRule>>, threshold: f64) -> CheckPlan {
        CheckPlan {
            rules,
            ids: Vec::new(),
            per_rule_ids: None,
            threshold_override: None,
            default_threshold: threshold,
            verify_rounds: 2,
            scan_batch: 3,
            now: UNIX_EPOCH + Duration::from_millis(NOW_MS),
        }
    }

    fn found(report: &CheckReport) -> BTreeSet<(String, String, Status)> {
        report
            .entries
            .iter()
            .map(|e| {
                (
                    e.rule.clone(),
                    String::from_utf8_lossy(&e.key).into_owned(),
                    e.status,
                )
            })
            .collect()
    }

    fn entry(rule: &str, key: &str, status: Status) -> (String, String, Status) {
        (rule.into(), key.into(), status)
    }

    #[test]
    fn a_full_check_over_every_kind_and_status() {
        let rules = rules(
            r#"[
            {"name": "weekly", "kind": "number", "key": "u:{id}:w", "truth": "x", "require_ttl": true},
            {"name": "window", "kind": "window_sum", "key": "u:{id}:5h", "window_ms": 60000, "truth": "$1"},
            {"name": "quota", "kind": "hash_field", "key": "q:{id}", "field": "f", "truth": "x", "missing": "report"},
            {"name": "conn", "kind": "presence", "key": "c:{id}", "truth": "x"}
        ]"#,
        );
        let mut store = MemoryStore::default();
        store.set("u:1:w", "10"); // consistent
        store.set("u:2:w", "50"); // drift
        store.set("u:3:w", "abc"); // invalid
        store.set("u:9:w", "1"); // orphan
        store.keys.insert(
            b"u:4:w".to_vec(),
            MemoryKey {
                value: MemoryValue::Str(b"4".to_vec()),
                ttl_ms: None,
            },
        ); // no_ttl
        let at = NOW_MS as f64;
        store.zadd("u:1:5h", at - 1000.0, "1:0.1");
        store.zadd("u:1:5h", at - 2000.0, "2:0.2");
        store.zadd("u:1:5h", at - 120_000.0, "3:100"); // outside the window
        store.zadd("u:2:5h", at - 1000.0, "1:9");
        store.hset("q:1", "f", "10");
        // q:2 missing (reported)
        store.set("c:a", "up");
        store.set("c:z", "up"); // orphan; c:b missing
        let mut truth = FakeTruth::default()
            .with(
                "weekly",
                &[
                    ("1", Some("10")),
                    ("2", Some("10")),
                    ("3", Some("1")),
                    ("4", Some("4")),
                ],
            )
            .with("window", &[("1", Some("0.3")), ("2", Some("1"))])
            .with("quota", &[("1", Some("10")), ("2", Some("3"))])
            .with("conn", &[("a", None), ("b", None)]);
        let access = MemoryAccess::new(store);
        let report = run_check(&plan(rules, 5.0), &access, &mut truth).unwrap();
        assert_eq!(
            found(&report),
            BTreeSet::from([
                entry("weekly", "u:2:w", Status::Drift),
                entry("weekly", "u:3:w", Status::Invalid),
                entry("weekly", "u:9:w", Status::Orphan),
                entry("weekly", "u:4:w", Status::NoTtl),
                entry("window", "u:2:5h", Status::Drift),
                entry("quota", "q:2", Status::Missing),
                entry("conn", "c:b", Status::Missing),
                entry("conn", "c:z", Status::Orphan),
            ])
        );
        assert_eq!(report.rounds, 2);
        // Checked: weekly 5 keys, window 2, quota 1 key + 1 missing, conn 2 + 1.
        assert_eq!(report.checked, 5 + 2 + 2 + 3);
        // Many holds: slices of 3 keys, never all in one.
        assert!(access.holds() > 4, "{} holds", access.holds());
    }

    #[test]
    fn verification_drops_a_key_rewritten_between_rounds() {
        let rules =
            rules(r#"[{"name": "weekly", "kind": "number", "key": "u:{id}:w", "truth": "x"}]"#);
        let mut store = MemoryStore::default();
        store.set("u:1:w", "50");
        store.set("u:2:w", "70");
        let truth = FakeTruth::default().with("weekly", &[("1", Some("10")), ("2", Some("10"))]);
        let verifying = Arc::clone(&truth.id_queries);
        let mut truth = truth;
        let access = MemoryAccess::new(store);
        // The application repairs u:1:w once the first round is over.
        // (Round one has read every key by the time ids are asked for.)
        access.between_holds(move |store, _| {
            if verifying.load(Ordering::SeqCst) > 0 {
                store.set("u:1:w", "10");
            }
        });
        let report = run_check(&plan(rules.clone(), 5.0), &access, &mut truth).unwrap();
        assert_eq!(
            found(&report),
            BTreeSet::from([entry("weekly", "u:2:w", Status::Drift)])
        );
        assert_eq!(report.rounds, 2);

        // Twin without verification: the rewrite comes too late to matter.
        let mut store = MemoryStore::default();
        store.set("u:1:w", "50");
        let mut truth = FakeTruth::default().with("weekly", &[("1", Some("10"))]);
        let access = MemoryAccess::new(store);
        let mut one_round = plan(rules, 5.0);
        one_round.verify_rounds = 1;
        let report = run_check(&one_round, &access, &mut truth).unwrap();
        assert_eq!(
            found(&report),
            BTreeSet::from([entry("weekly", "u:1:w", Status::Drift)])
        );
    }

    #[test]
    fn a_check_of_given_ids_reads_only_their_keys() {
        let rules =
            rules(r#"[{"name": "weekly", "kind": "number", "key": "u:{id}:w", "truth": "x"}]"#);
        let mut store = MemoryStore::default();
        for id in 1..=50 {
            store.set(&format!("u:{id}:w"), "50");
        }
        let mut truth = FakeTruth::default().with("weekly", &[("7", Some("10"))]);
        let access = MemoryAccess::new(store);
        let mut by_id = plan(rules, 5.0);
        by_id.ids = vec![b"7".to_vec(), b"8".to_vec()];
        let report = run_check(&by_id, &access, &mut truth).unwrap();
        assert_eq!(
            found(&report),
            BTreeSet::from([
                entry("weekly", "u:7:w", Status::Drift),
                entry("weekly", "u:8:w", Status::Orphan),
            ])
        );
        assert_eq!(report.checked, 2);
    }

    #[test]
    fn truth_down_fails_the_check() {
        let rules =
            rules(r#"[{"name": "weekly", "kind": "number", "key": "u:{id}:w", "truth": "x"}]"#);
        let mut truth = FakeTruth {
            down: Some(BridgeError::Unavailable("connection refused".into())),
            ..FakeTruth::default()
        };
        let access = MemoryAccess::new(MemoryStore::default());
        let err = run_check(&plan(rules, 5.0), &access, &mut truth).unwrap_err();
        assert_eq!(err.to_string(), "postgres unavailable: connection refused");
    }
}

/// Real layouts over the in-memory keyspace: json documents, staleness and
/// templates with several placeholders.
#[cfg(test)]
mod layout_tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::Ordering;

    use super::run_tests::plan;
    use super::*;
    use crate::compare::Status;
    use crate::store::memory::fake_truth::{rules, FakeTruth};
    use crate::store::memory::{MemoryAccess, MemoryStore};

    /// (key, status, field) of every entry.
    fn found(report: &CheckReport) -> BTreeSet<(String, Status, Option<String>)> {
        report
            .entries
            .iter()
            .map(|e| {
                (
                    String::from_utf8_lossy(&e.key).into_owned(),
                    e.status,
                    e.field.clone(),
                )
            })
            .collect()
    }

    fn f(key: &str, status: Status, field: Option<&str>) -> (String, Status, Option<String>) {
        (key.into(), status, field.map(str::to_string))
    }

    const STATS: &str = r#"[{"name": "stats", "kind": "json", "key": "p:{id}:stats", "truth": "x",
        "age_field": "cached_at", "max_age_sec": 3600}]"#;

    /// 1_700_000_000 s is the plan's now.
    fn doc(total: &str, title: &str, cached_at: &str) -> String {
        format!(
            r#"{{"total_members": {total}, "title": "{title}", "stats": {{"rate": 0.85}}, "cached_at": {cached_at}}}"#
        )
    }

    fn stats_truth() -> FakeTruth {
        let row =
            |id| -> Vec<Option<&str>> { vec![Some(id), Some("150"), Some("Run"), Some("0.85")] };
        let rows: Vec<Vec<Option<&str>>> = ["1", "2", "3", "4", "5", "6", "7"].map(row).to_vec();
        let rows: Vec<&[Option<&str>]> = rows.iter().map(Vec::as_slice).collect();
        FakeTruth::default().with_named(
            "stats",
            &["id", "total_members", "title", "stats.rate"],
            &rows,
        )
    }

    #[test]
    fn json_documents_are_compared_field_by_field() {
        let fresh = "1699999000"; // 1000 s old
        let mut store = MemoryStore::default();
        store.set("p:1:stats", &doc("150", "Run", fresh)); // consistent
        store.set("p:2:stats", &doc("170", "Run", fresh)); // drift of 20
        store.set("p:3:stats", &doc("150", "Walk", fresh)); // string differs
        store.set(
            "p:4:stats",
            r#"{"total_members": 150, "title": "Run", "stats": {}, "cached_at": 1699999000}"#,
        ); // nested field lacking
        store.set("p:5:stats", "not json"); // not an object
        store.set("p:6:stats", &doc("999", "Run", "\"2023-11-14T20:13:20Z\"")); // 3600 s + 1 old: stale
        store.set("p:7:stats", &doc("150", "Run", "1699996399")); // 3601 s old: stale
        store.set("p:9:stats", &doc("150", "Run", fresh)); // orphan
        let access = MemoryAccess::new(store);
        let report = run_check(&plan(rules(STATS), 5.0), &access, &mut stats_truth()).unwrap();
        assert_eq!(
            found(&report),
            BTreeSet::from([
                f("p:2:stats", Status::Drift, Some("total_members")),
                f("p:3:stats", Status::Drift, Some("title")),
                f("p:4:stats", Status::Invalid, Some("stats.rate")),
                f("p:5:stats", Status::Invalid, None),
                f("p:6:stats", Status::Stale, Some("cached_at")),
                f("p:7:stats", Status::Stale, Some("cached_at")),
                f("p:9:stats", Status::Orphan, None),
            ])
        );
        let drift = report
            .entries
            .iter()
            .find(|e| e.status == Status::Drift)
            .unwrap();
        assert_eq!(
            (drift.cached.as_deref(), drift.truth.as_deref(), drift.diff),
            (Some("170"), Some("150"), Some(20.0))
        );
        assert_eq!(report.by_status()[Status::Stale.index()], 2);
    }

    #[test]
    fn a_document_rewritten_during_the_check_raises_nothing() {
        let rules = rules(STATS);
        let mut store = MemoryStore::default();
        store.set("p:2:stats", &doc("170", "Run", "1699999000"));
        let truth = stats_truth();
        let verifying = Arc::clone(&truth.id_queries);
        let mut truth = truth;
        let access = MemoryAccess::new(store);
        // The application refreshes the document once round one is over.
        access.between_holds(move |store, _| {
            if verifying.load(Ordering::SeqCst) > 0 {
                store.set("p:2:stats", &doc("150", "Run", "1699999900"));
            }
        });
        let report = run_check(&plan(rules.clone(), 5.0), &access, &mut truth).unwrap();
        assert!(report.entries.is_empty(), "{:?}", report.entries);

        // Twin without verification: the drift stands.
        let mut store = MemoryStore::default();
        store.set("p:2:stats", &doc("170", "Run", "1699999000"));
        let mut one_round = plan(rules, 5.0);
        one_round.verify_rounds = 1;
        let report = run_check(&one_round, &MemoryAccess::new(store), &mut stats_truth()).unwrap();
        assert_eq!(report.entries.len(), 1);
    }

    const DAILY: &str = r#"[{"name": "daily", "kind": "number", "key": "key:{id}:cost_daily_{reset}",
        "truth": "x", "missing": "report"}]"#;

    fn daily_truth() -> FakeTruth {
        FakeTruth::default().with_named(
            "daily",
            &["id", "reset", "value"],
            &[
                &[Some("123"), Some("1800"), Some("4.5")],
                &[Some("7"), Some("0000"), Some("1")],
            ],
        )
    }

    #[test]
    fn a_leftover_reset_suffix_is_an_orphan() {
        let mut store = MemoryStore::default();
        store.set("key:123:cost_daily_1800", "4.5");
        store.set("key:123:cost_daily_0000", "9"); // the reset moved to 18:00
        store.set("key:8:cost_daily_0000", "1"); // unknown id
        let access = MemoryAccess::new(store);
        let report = run_check(&plan(rules(DAILY), 5.0), &access, &mut daily_truth()).unwrap();
        assert_eq!(
            found(&report),
            BTreeSet::from([
                f("key:123:cost_daily_0000", Status::Orphan, None),
                f("key:8:cost_daily_0000", Status::Orphan, None),
                f("key:7:cost_daily_0000", Status::Missing, None),
            ])
        );
        let orphan = &report
            .entries
            .iter()
            .find(|e| e.key.ends_with(b"_0000"))
            .unwrap();
        assert_eq!(orphan.id, b"123");
        assert_eq!(report.ids, 3);
        assert_eq!(report.checked, 4);

        // CHECK ID 123 finds the leftover too: its keys are found by a scan.
        let mut by_id = plan(rules(DAILY), 5.0);
        by_id.ids = vec![b"123".to_vec()];
        let report = run_check(&by_id, &access, &mut daily_truth()).unwrap();
        assert_eq!(
            found(&report),
            BTreeSet::from([f("key:123:cost_daily_0000", Status::Orphan, None)])
        );
        assert_eq!(report.checked, 2);
    }
}
