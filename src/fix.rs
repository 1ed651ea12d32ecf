//! Repairs: FIX of given ids, and FIX ALL (check, then repair verified drift).
//!
//! A repair never destroys a fresh value: FIX ALL deletes or rewrites a key only
//! if it still holds what the verification saw, compared and written within one
//! GIL hold. Deleting is always safe (the application reloads from the
//! database); rewriting needs the truth, so it is refused without it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use consistency_bridge::BridgeError;

use crate::compare::{
    classify, ttl_findings, CachedKey, CachedValue, DriftEntry, Status, Truth, Verdict,
};
use crate::drift_check::{
    epoch_ms, sendable_ids, to_map, window_start, DuplicateId, TruthMap, TruthSource,
};
use crate::redis_api::logging::clip;
use crate::reply::{bytes_as_text, Reply};
use crate::rules::{FixPolicy, RuleKind};
use crate::state::LoadedRule;
use crate::stats;
use crate::store::{Access, Expired, Keyspace, WriteStop};

/// What a repair did to one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixAction {
    Deleted,
    Rewritten,
    WouldDelete,
    WouldRewrite,
    Absent,
    SkippedChanged,
    SkippedNotLocal,
}

impl FixAction {
    pub fn name(self) -> &'static str {
        match self {
            FixAction::Deleted => "deleted",
            FixAction::Rewritten => "rewritten",
            FixAction::WouldDelete => "would_delete",
            FixAction::WouldRewrite => "would_rewrite",
            FixAction::Absent => "absent",
            FixAction::SkippedChanged => "skipped_changed",
            FixAction::SkippedNotLocal => "skipped_not_local",
        }
    }

    pub fn changed(self) -> bool {
        matches!(self, FixAction::Deleted | FixAction::Rewritten)
    }
}

/// Why a repair stopped.
#[derive(Debug)]
pub enum FixError {
    Expired,
    /// This node stopped being a primary mid-repair (a failover): writes stop.
    NotPrimary {
        changed: u64,
    },
    /// Writes stayed paused (CLIENT PAUSE, a failover) past the job's time.
    WritesPaused {
        changed: u64,
    },
    Write(String),
}

impl FixError {
    /// Why a write hold wrote nothing, after `changed` changes.
    pub fn stopped(stop: WriteStop, changed: u64) -> FixError {
        match stop {
            WriteStop::Answered => FixError::Expired,
            WriteStop::NotPrimary => FixError::NotPrimary { changed },
            WriteStop::StillPaused => FixError::WritesPaused { changed },
        }
    }
}

impl From<Expired> for FixError {
    fn from(_: Expired) -> Self {
        FixError::Expired
    }
}

impl std::fmt::Display for FixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FixError::Expired => {
                write!(f, "timeout: the repair ran past consistency.job-timeout-ms")
            }
            FixError::NotPrimary { changed } => write!(
                f,
                "not a primary: this node is a replica now; repairs stopped after {changed} changes"
            ),
            FixError::WritesPaused { changed } => write!(
                f,
                "timeout: writes stayed paused (CLIENT PAUSE or a failover) past consistency.job-timeout-ms; repairs stopped after {changed} changes"
            ),
            FixError::Write(e) => write!(f, "a repair write failed: {e}"),
        }
    }
}

/// How a key is to be repaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repair {
    Delete,
    Rewrite,
}

/// One key to repair, with what it must still hold (None: no comparison, as for
/// FIX of given ids, where the operator asked for exactly these keys).
pub struct RepairItem<'a> {
    pub rule: &'a LoadedRule,
    pub entry: &'a DriftEntry,
    pub expect: Option<&'a CachedValue>,
    pub rewrite_to: Option<Vec<u8>>,
    /// False for a key of a slot this node does not serve (cluster): never touched.
    pub local: bool,
}

/// Runs repairs in slices, comparing each key with what it must still hold.
/// Returns the action for each item, in order.
pub fn apply_repairs<A: Access>(
    access: &A,
    items: &[RepairItem<'_>],
    now: SystemTime,
    dry_run: bool,
    batch: usize,
) -> Result<Vec<FixAction>, FixError> {
    let mut actions = Vec::with_capacity(items.len());
    let mut changed = 0u64;
    // A repair costs several calls and a log line: smaller slices than a scan's,
    // and cut by size too, so a few huge keys do not make one long hold.
    for chunk in repair_slices(items, (batch / 4).max(1), REPAIR_SLICE_BYTES) {
        // Before the first slice too: a job whose client was already answered
        // with a timeout (FIX ALL after a long check) must not start repairing.
        access.between_slices()?;
        let before = changed;
        let mut slice = |ks: &mut A::Keyspace| -> Result<(), FixError> {
            for item in chunk {
                let action = repair_one(ks, item, now, dry_run)?;
                changed += u64::from(action.changed());
                actions.push(action);
            }
            Ok(())
        };
        if dry_run {
            access.hold(slice)?;
        } else {
            access
                .write_hold(&mut slice)
                .map_err(|stop| FixError::stopped(stop, before))??;
        }
    }
    stats::FIXES_TOTAL.fetch_add(changed, std::sync::atomic::Ordering::Relaxed);
    Ok(actions)
}

/// Key and value bytes one repair hold may cover (besides its count limit).
const REPAIR_SLICE_BYTES: usize = 256 * 1024;

/// Cuts `items` into slices of at most `max_items` and, past the first item,
/// at most `max_bytes` of key names and seen values.
fn repair_slices<'i, 'a>(
    items: &'i [RepairItem<'a>],
    max_items: usize,
    max_bytes: usize,
) -> impl Iterator<Item = &'i [RepairItem<'a>]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut n = 0;
        while n < rest.len() && n < max_items {
            bytes += rest[n].entry.key.len() + rest[n].entry.seen.size();
            if n > 0 && bytes > max_bytes {
                break;
            }
            n += 1;
        }
        let (slice, tail) = rest.split_at(n);
        rest = tail;
        Some(slice)
    })
}

fn repair_one(
    ks: &mut impl Keyspace,
    item: &RepairItem<'_>,
    now: SystemTime,
    dry_run: bool,
) -> Result<FixAction, FixError> {
    if !item.local {
        return Ok(FixAction::SkippedNotLocal);
    }
    let rule = &item.rule.rule;
    let key = &item.entry.key;
    let window = epoch_ms(window_start(item.rule, now));
    let current = ks.read(&[key.as_slice()], &rule.kind, window).remove(0);
    if !current.is_present() {
        return Ok(FixAction::Absent);
    }
    if let Some(expect) = item.expect {
        if &current.value != expect {
            return Ok(FixAction::SkippedChanged);
        }
        // A TTL finding stands only while the TTL is still wrong: the
        // application may have set one since, keeping the value.
        let ttl_status = matches!(item.entry.status, Status::NoTtl | Status::BadTtl);
        if ttl_status && !ttl_findings(rule, &current).any(|s| s == item.entry.status) {
            return Ok(FixAction::SkippedChanged);
        }
    }
    let repair = if item.rewrite_to.is_some() {
        Repair::Rewrite
    } else {
        Repair::Delete
    };
    if dry_run {
        return Ok(match repair {
            Repair::Delete => FixAction::WouldDelete,
            Repair::Rewrite => FixAction::WouldRewrite,
        });
    }
    let action = match (&item.rewrite_to, &rule.kind) {
        (Some(value), RuleKind::HashField { field }) => {
            ks.set_hash_field(key, field.as_bytes(), value)
                .map_err(FixError::Write)?;
            FixAction::Rewritten
        }
        (Some(value), _) => {
            ks.set_keep_ttl(key, value).map_err(FixError::Write)?;
            FixAction::Rewritten
        }
        (None, _) => {
            ks.unlink(&[key]).map_err(FixError::Write)?;
            FixAction::Deleted
        }
    };
    log_repair(ks, item, &current, action);
    Ok(action)
}

/// Each repair is logged at notice level and, when set, appended to the audit stream.
fn log_repair(
    ks: &mut impl Keyspace,
    item: &RepairItem<'_>,
    before: &CachedKey,
    action: FixAction,
) {
    let e = item.entry;
    let old = before.display().unwrap_or_default();
    let truth = e.truth.clone().unwrap_or_default();
    // The log line shows long texts cut; the audit entry keeps them whole.
    log::info!(
        "consistency: {} {} (rule {}, id {}, cached '{}', truth '{}')",
        action.name(),
        clip(&bytes_as_text(&e.key)),
        e.rule,
        clip(&bytes_as_text(&e.id)),
        clip(&old),
        clip(&truth)
    );
    ks.audit(&[
        ("rule", e.rule.as_bytes()),
        ("id", &e.id),
        ("key", &e.key),
        ("old", old.as_bytes()),
        ("truth", truth.as_bytes()),
        ("action", action.name().as_bytes()),
    ]);
}

/// The value a rewrite writes: the truth as PostgreSQL returned it (NULL is 0).
pub fn rewrite_value(entry: &DriftEntry) -> Vec<u8> {
    entry
        .truth
        .clone()
        .unwrap_or_else(|| "0".into())
        .into_bytes()
}

/// Whether a finding gets a repair, and which: `rewrite` is the operator's
/// REWRITE; the rule's own policy applies otherwise. Orphans, invalid values,
/// keys without a required TTL or with one above the bound, and stale documents
/// are deleted (the application reloads them); missing keys cannot be created
/// here.
pub fn plan_repair(
    rule: &LoadedRule,
    entry: &DriftEntry,
    rewrite: bool,
    truth_ok: bool,
) -> Option<Repair> {
    let can_rewrite = rule.rule.kind.can_rewrite() && truth_ok;
    match entry.status {
        Status::Missing => None,
        Status::Drift if can_rewrite && (rewrite || rule.rule.fix == FixPolicy::Rewrite) => {
            Some(Repair::Rewrite)
        }
        Status::Drift
        | Status::Invalid
        | Status::Orphan
        | Status::NoTtl
        | Status::BadTtl
        | Status::Stale => Some(Repair::Delete),
    }
}

/// PUBLISHes each presence finding (missing or orphaned) as JSON, so the
/// application can recover the connection (seed 001), from CHECK and FIX alike.
pub fn notify_presence<A: Access>(
    access: &A,
    rules: &[Arc<LoadedRule>],
    entries: &[DriftEntry],
) -> Result<(), Expired> {
    let presence: Vec<&DriftEntry> = entries
        .iter()
        .filter(|e| matches!(e.status, Status::Missing | Status::Orphan))
        .filter(|e| {
            rules
                .iter()
                .any(|r| r.rule.name == e.rule && r.rule.kind == RuleKind::Presence)
        })
        .collect();
    for (n, chunk) in presence.chunks(500).enumerate() {
        if n > 0 {
            access.between_slices()?;
        }
        access.hold(|ks| {
            // When and where: a subscriber serving several databases, or
            // catching up after a reconnect, needs both.
            let at_ms = epoch_ms(Some(SystemTime::now())) as i64;
            let db = ks.db();
            for e in chunk {
                let event = Reply::Map(vec![
                    ("rule", Reply::text(e.rule.clone())),
                    ("id", Reply::Bulk(e.id.clone())),
                    ("key", Reply::Bulk(e.key.clone())),
                    ("status", Reply::text(e.status.name())),
                    ("at_ms", Reply::Int(at_ms)),
                    ("db", Reply::Int(db)),
                ]);
                ks.publish(&event.to_json());
            }
        });
    }
    Ok(())
}

/// FIX of given ids.
pub struct FixIdsPlan {
    pub rules: Vec<Arc<LoadedRule>>,
    pub ids: Vec<Vec<u8>>,
    pub dry_run: bool,
    pub rewrite: bool,
    pub scan_batch: usize,
    pub now: SystemTime,
}

/// The truth rows for given ids of one rule, or why they could not be had.
fn truth_for_ids<T: TruthSource>(
    truth: &mut T,
    rule: &LoadedRule,
    ids: &[Vec<u8>],
    now: SystemTime,
) -> Result<Vec<consistency_bridge::TruthRow>, BridgeError> {
    let text = sendable_ids(ids);
    if text.is_empty() {
        return Ok(Vec::new());
    }
    truth.ids(rule, &text, window_start(rule, now))
}

/// Runs FIX of given ids and shapes its reply. With the truth unavailable,
/// clearing goes ahead and the reply says so; REWRITE is refused before any change.
pub fn fix_ids<A: Access, T: TruthSource>(
    plan: &FixIdsPlan,
    access: &A,
    truth: &mut T,
) -> Result<FixIdsOutcome, FixIdsError> {
    let mut truths = Vec::with_capacity(plan.rules.len());
    let mut truth_error: Option<BridgeError> = None;
    for rule in &plan.rules {
        if truth_error.is_some() {
            truths.push(TruthMap::default());
            continue;
        }
        match truth_for_ids(truth, rule, &plan.ids, plan.now) {
            // A truth that returns an id twice fails the FIX, as it fails a
            // check: REWRITE would write whichever row came last, and even a
            // delete would be reported against an arbitrary truth. Unlike an
            // unavailable truth, this is the rule's error, not a reason to clear.
            Ok(rows) => truths.push(to_map(rows, &rule.rule)?),
            // A truth of the wrong shape (a column the template needs is
            // missing) is the rule's error too: which keys are the id's, and
            // which are orphans, is not known, so nothing is touched.
            Err(e @ BridgeError::BadTruth(_)) => return Err(FixIdsError::BadTruth(e)),
            Err(e) => {
                truth_error = Some(e);
                truths.push(TruthMap::default());
            }
        }
    }
    if let (true, Some(e)) = (plan.rewrite, &truth_error) {
        return Err(FixIdsError::RewriteNeedsTruth(e.clone()));
    }
    let truth_ok = truth_error.is_none();
    let slots = access.hold(|ks| ks.slots());

    // Templates with several placeholders: every key of the ids, found by one
    // scan, whatever the other placeholders hold.
    let scanned = crate::drift_check::keys_of_ids(access, &plan.rules, &plan.ids, plan.scan_batch)
        .map_err(|_| FixIdsError::Fix(FixError::Expired))?;

    // What each key holds now, for the report and to tell orphans from the rest.
    // Keys of slots this node does not serve are listed as not local, untouched.
    let mut entries: Vec<(usize, DriftEntry, bool)> = Vec::new();
    for ((i, rule), scanned) in plan.rules.iter().enumerate().zip(scanned) {
        let template = &rule.rule.key;
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = if template.is_multi() {
            // The keys found, then the truth's keys (built from its rows) no
            // scan found: a key the truth names and the cache lacks is missing.
            let mut keys = scanned;
            let found: std::collections::HashSet<Vec<u8>> = keys.iter().cloned().collect();
            keys.extend(
                truths[i]
                    .iter()
                    .map(|(slot, _)| slot.to_vec())
                    .filter(|k| !found.contains(k)),
            );
            keys.into_iter()
                .map(|k| (template.id_of(&k).unwrap_or_default().to_vec(), k))
                .collect()
        } else {
            plan.ids
                .iter()
                .map(|id| (id.clone(), template.key_for(id)))
                .collect()
        };
        let keys: Vec<Vec<u8>> = pairs.iter().map(|(_, k)| k.clone()).collect();
        let window = epoch_ms(window_start(rule, plan.now));
        let cached =
            crate::drift_check::read_keys(access, &keys, &rule.rule.kind, window, plan.scan_batch)
                .map_err(|_| FixIdsError::Fix(FixError::Expired))?;
        for (((id, _), key), cached) in pairs.iter().zip(keys).zip(cached) {
            let truth = truths[i].lookup(crate::drift_check::slot_of(&rule.rule, id, &key));
            let known = truth != Truth::Unknown;
            let truth_value = truth.value().map(str::to_string);
            if !slots.owns_key(&key) {
                let entry = DriftEntry {
                    rule: rule.rule.name.clone(),
                    id: id.clone(),
                    key,
                    status: Status::Drift,
                    cached: None,
                    truth: truth_value,
                    diff: None,
                    field: None,
                    seen: CachedValue::Absent,
                };
                entries.push((i, entry, false));
                continue;
            }
            let verdict = classify(&rule.rule.kind, id, &cached.value, truth);
            // FIX acts on every key whatever the threshold; the status only picks
            // the repair. Without the truth an unknown id is not an orphan.
            let status = match verdict {
                Verdict::Absent if known => Status::Missing,
                Verdict::Absent => Status::Drift, // absent and unknown: shown as absent
                Verdict::Present => continue,     // as it should be
                _ if !known && rule.rule.kind == RuleKind::Presence && !truth_ok => continue,
                _ if !known && truth_ok => Status::Orphan,
                // A key of the wrong type cannot be rewritten in place (HSET on a
                // string fails): it is invalid, and deleted, as FIX ALL does.
                Verdict::Unreadable { wrong_type: true } => Status::Invalid,
                _ => Status::Drift,
            };
            let diff = match verdict {
                Verdict::Compared { diff, .. } => Some(diff.to_f64()),
                _ => None,
            };
            entries.push((
                i,
                DriftEntry {
                    rule: rule.rule.name.clone(),
                    id: id.clone(),
                    key,
                    status,
                    cached: cached.display(),
                    truth: truth_value,
                    diff,
                    field: None,
                    seen: cached.value,
                },
                true,
            ));
        }
    }

    let items: Vec<RepairItem<'_>> = entries
        .iter()
        .map(|(i, e, local)| {
            let rule = &plan.rules[*i];
            let rewrite = plan_repair(rule, e, plan.rewrite, truth_ok) == Some(Repair::Rewrite)
                && e.status != Status::Orphan;
            RepairItem {
                rule,
                entry: e,
                expect: None,
                rewrite_to: rewrite.then(|| rewrite_value(e)),
                local: *local,
            }
        })
        .collect();
    let actions = apply_repairs(access, &items, plan.now, plan.dry_run, plan.scan_batch)
        .map_err(FixIdsError::Fix)?;
    let missing: Vec<DriftEntry> = entries
        .iter()
        .filter(|(_, e, local)| *local && e.status == Status::Missing)
        .map(|(_, e, _)| e.clone())
        .collect();
    notify_presence(access, &plan.rules, &missing)
        .map_err(|_| FixIdsError::Fix(FixError::Expired))?;

    let (changed, skipped) = tally(&actions);
    Ok(FixIdsOutcome {
        truth_error: truth_error.map(|e| e.to_string()),
        entries: entries.into_iter().map(|(_, e, _)| e).collect(),
        fix: FixOutcome {
            dry_run: plan.dry_run,
            actions,
            changed,
            skipped,
        },
    })
}

/// What a FIX did: an action per entry, in order, and the totals.
#[derive(Clone, Debug, PartialEq)]
pub struct FixOutcome {
    pub dry_run: bool,
    pub actions: Vec<FixAction>,
    /// Keys deleted or rewritten.
    pub changed: usize,
    /// Keys left alone: absent, changed since verified, not local.
    pub skipped: usize,
}

/// What FIX of given ids did, with the entries it acted on.
#[derive(Clone, Debug, PartialEq)]
pub struct FixIdsOutcome {
    /// Why the truth was unavailable (clearing went ahead without it).
    pub truth_error: Option<String>,
    pub entries: Vec<DriftEntry>,
    pub fix: FixOutcome,
}

/// Keys changed, and keys left alone (absent, changed since verified, not local).
fn tally(actions: &[FixAction]) -> (usize, usize) {
    let changed = actions.iter().filter(|a| a.changed()).count();
    let skipped = actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                FixAction::Absent | FixAction::SkippedChanged | FixAction::SkippedNotLocal
            )
        })
        .count();
    (changed, skipped)
}

/// Why FIX of given ids answered an error.
#[derive(Debug)]
pub enum FixIdsError {
    RewriteNeedsTruth(BridgeError),
    Fix(FixError),
    DuplicateId(DuplicateId),
    BadTruth(BridgeError),
}

impl From<DuplicateId> for FixIdsError {
    fn from(e: DuplicateId) -> Self {
        FixIdsError::DuplicateId(e)
    }
}

impl std::fmt::Display for FixIdsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FixIdsError::RewriteNeedsTruth(e) => {
                write!(
                    f,
                    "REWRITE needs the truth, and it is unavailable: {e}; nothing was changed"
                )
            }
            FixIdsError::Fix(e) => write!(f, "{e}"),
            FixIdsError::DuplicateId(e) => write!(f, "{e}"),
            FixIdsError::BadTruth(e) => write!(f, "{e}; nothing was changed"),
        }
    }
}

/// FIX ALL: the check's report, then a repair of each verified finding that still
/// holds what the verification saw.
pub fn fix_all<A: Access>(
    plan: &crate::drift_check::CheckPlan,
    report: &crate::report::CheckReport,
    access: &A,
    dry_run: bool,
    rewrite: bool,
) -> Result<FixOutcome, FixError> {
    let rule_of = |name: &str| plan.rules.iter().find(|r| r.rule.name == name);
    // A key with two findings (drift and no_ttl) is repaired once.
    let mut first_for_key: HashMap<&[u8], usize> = HashMap::new();
    let mut items = Vec::new();
    let mut item_of_entry: Vec<Option<usize>> = Vec::with_capacity(report.entries.len());
    for e in &report.entries {
        let Some(rule) = rule_of(&e.rule) else {
            item_of_entry.push(None);
            continue;
        };
        let Some(repair) = plan_repair(rule, e, rewrite, true) else {
            item_of_entry.push(None);
            continue;
        };
        let index = *first_for_key.entry(e.key.as_slice()).or_insert_with(|| {
            items.push(RepairItem {
                rule,
                entry: e,
                expect: Some(&e.seen),
                rewrite_to: (repair == Repair::Rewrite).then(|| rewrite_value(e)),
                local: true,
            });
            items.len() - 1
        });
        item_of_entry.push(Some(index));
    }
    crate::redis_api::test_hooks::before_repair();
    let actions = apply_repairs(access, &items, plan.now, dry_run, plan.scan_batch)?;
    notify_presence(access, &plan.rules, &report.entries)?;
    // Each entry's action: its key's repair, or absent for a missing key.
    let entry_actions: Vec<FixAction> = item_of_entry
        .iter()
        .map(|i| i.map_or(FixAction::Absent, |i| actions[i]))
        .collect();
    let (changed, repairs_skipped) = tally(&actions);
    // Missing keys get no repair: they are left alone, as absent.
    let skipped = repairs_skipped + item_of_entry.iter().filter(|i| i.is_none()).count();
    Ok(FixOutcome {
        dry_run,
        actions: entry_actions,
        changed,
        skipped,
    })
}

/// Repairs against the in-memory keyspace and a fake truth.
#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::drift_check::{run_check, CheckPlan};
    use crate::store::memory::fake_truth::{rules, FakeTruth};
    use crate::store::memory::{MemoryAccess, MemoryStore, MemoryValue};

    fn weekly() -> Vec<Arc<LoadedRule>> {
        rules(r#"[{"name": "weekly", "kind": "number", "key": "u:{id}:w", "truth": "x"}]"#)
    }

    fn check_plan(rules: Vec<Arc<LoadedRule>>) -> CheckPlan {
        CheckPlan {
            rules,
            ids: Vec::new(),
            per_rule_ids: None,
            threshold_override: None,
            default_threshold: 5.0,
            verify_rounds: 2,
            scan_batch: 10,
            now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn fix_all_skips_a_key_changed_after_it_was_verified() {
        let mut store = MemoryStore::default();
        store.set("u:1:w", "50");
        store.set("u:2:w", "60");
        store.set("u:9:w", "1");
        let mut truth =
            FakeTruth::default().with("weekly", &[("1", Some("10")), ("2", Some("10"))]);
        let access = MemoryAccess::new(store);
        let plan = check_plan(weekly());
        let report = run_check(&plan, &access, &mut truth).unwrap();
        assert_eq!(report.entries.len(), 3);
        // The application writes u:2:w after the check verified it.
        access.store.borrow_mut().set("u:2:w", "10");
        let outcome = fix_all(&plan, &report, &access, false, false).unwrap();
        let by_key: Vec<(String, FixAction)> = report
            .entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.key).into_owned())
            .zip(outcome.actions.iter().copied())
            .collect();
        assert!(
            by_key.contains(&("u:1:w".into(), FixAction::Deleted)),
            "{by_key:?}"
        );
        assert!(
            by_key.contains(&("u:9:w".into(), FixAction::Deleted)),
            "{by_key:?}"
        );
        assert!(
            by_key.contains(&("u:2:w".into(), FixAction::SkippedChanged)),
            "{by_key:?}"
        );
        assert_eq!((outcome.changed, outcome.skipped), (2, 1));
        let store = access.store.borrow();
        assert_eq!(store.get("u:2:w"), Some(&MemoryValue::Str(b"10".to_vec())));
        assert!(store.get("u:1:w").is_none());
        assert_eq!(store.audit.len(), 2, "one audit entry per repair");
    }

    #[test]
    fn fix_all_deletes_bad_ttl_keys_unless_given_a_good_ttl_since() {
        use crate::store::memory::MemoryKey;
        let rules = rules(
            r#"[{"name": "stats", "kind": "number", "key": "s:{id}", "truth": "x", "ttl_max_sec": 60}]"#,
        );
        let mut store = MemoryStore::default();
        for (key, ttl_ms) in [("s:1", None), ("s:2", Some(61_000)), ("s:3", Some(30_000))] {
            store.keys.insert(
                key.as_bytes().to_vec(),
                MemoryKey {
                    value: MemoryValue::Str(b"5".to_vec()),
                    ttl_ms,
                },
            );
        }
        let truth = [("1", Some("5")), ("2", Some("5")), ("3", Some("5"))];
        let mut truth = FakeTruth::default().with("stats", &truth);
        let access = MemoryAccess::new(store);
        let plan = check_plan(rules);
        let report = run_check(&plan, &access, &mut truth).unwrap();
        let found: Vec<(&[u8], Status)> = report
            .entries
            .iter()
            .map(|e| (e.key.as_slice(), e.status))
            .collect();
        assert_eq!(
            found,
            [(&b"s:1"[..], Status::BadTtl), (&b"s:2"[..], Status::BadTtl)]
        );
        // The application gives s:2 a proper TTL, same value, after the check.
        access
            .store
            .borrow_mut()
            .keys
            .get_mut(&b"s:2"[..])
            .unwrap()
            .ttl_ms = Some(10_000);
        let outcome = fix_all(&plan, &report, &access, false, false).unwrap();
        assert_eq!(
            outcome.actions,
            [FixAction::Deleted, FixAction::SkippedChanged]
        );
        let store = access.store.borrow();
        assert!(store.get("s:1").is_none());
        assert!(store.get("s:2").is_some() && store.get("s:3").is_some());
    }

    #[test]
    fn fix_of_an_id_clears_every_key_of_it_whatever_the_other_placeholders() {
        let rules = rules(
            r#"[{"name": "daily", "kind": "number", "key": "key:{id}:cost_daily_{reset}", "truth": "x"}]"#,
        );
        let mut store = MemoryStore::default();
        store.set("key:123:cost_daily_1800", "50");
        store.set("key:123:cost_daily_0000", "9"); // leftover of an old reset
        store.set("key:124:cost_daily_1800", "50"); // another id: untouched
        let truth = FakeTruth::default().with_named(
            "daily",
            &["id", "reset", "value"],
            &[&[Some("123"), Some("1800"), Some("4.5")]],
        );
        for down in [false, true] {
            let mut truth = FakeTruth {
                rows: truth.rows.clone(),
                down: down.then(|| BridgeError::Unavailable("refused".into())),
                ..FakeTruth::default()
            };
            let access = MemoryAccess::new(MemoryStore {
                keys: store.keys.clone(),
                ..MemoryStore::default()
            });
            let plan = FixIdsPlan {
                rules: rules.clone(),
                ids: vec![b"123".to_vec()],
                dry_run: false,
                rewrite: false,
                scan_batch: 2,
                now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            };
            let outcome = fix_ids(&plan, &access, &mut truth).unwrap();
            let mut keys: Vec<(String, Status, FixAction)> = outcome
                .entries
                .iter()
                .zip(&outcome.fix.actions)
                .map(|(e, a)| (String::from_utf8_lossy(&e.key).into_owned(), e.status, *a))
                .collect();
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            // Without the truth an unknown part is not called an orphan.
            let leftover = if down { Status::Drift } else { Status::Orphan };
            assert_eq!(
                keys,
                [
                    (
                        "key:123:cost_daily_0000".into(),
                        leftover,
                        FixAction::Deleted
                    ),
                    (
                        "key:123:cost_daily_1800".into(),
                        Status::Drift,
                        FixAction::Deleted
                    ),
                ],
                "truth down: {down}"
            );
            let store = access.store.borrow();
            assert_eq!(store.keys.len(), 1);
            assert!(store.get("key:124:cost_daily_1800").is_some());
        }
    }

    #[test]
    fn fix_all_writes_nothing_after_the_client_was_answered_or_on_a_replica() {
        let mut store = MemoryStore::default();
        store.set("u:9:w", "1");
        let mut truth = FakeTruth::default().with("weekly", &[]);
        let access = MemoryAccess::new(store);
        let plan = check_plan(weekly());
        let report = run_check(&plan, &access, &mut truth).unwrap();
        access.answered.set(true);
        assert!(matches!(
            fix_all(&plan, &report, &access, false, false),
            Err(FixError::Expired)
        ));
        access.answered.set(false);
        access.store.borrow_mut().primary = false;
        assert!(matches!(
            fix_all(&plan, &report, &access, false, false),
            Err(FixError::NotPrimary { changed: 0 })
        ));
        assert!(access.store.borrow().writes.is_empty());
    }

    #[test]
    fn fix_all_waits_while_writes_are_paused() {
        let mut store = MemoryStore::default();
        store.set("u:9:w", "1");
        store.paused = true;
        let mut truth = FakeTruth::default().with("weekly", &[]);
        let access = MemoryAccess::new(store);
        access.pause_lasts.set(3);
        let plan = check_plan(weekly());
        let report = run_check(&plan, &access, &mut truth).unwrap();
        let outcome = fix_all(&plan, &report, &access, false, false).unwrap();
        assert_eq!(outcome.changed, 1);
        assert_eq!(access.pause_lasts.get(), 0, "it waited out the pause");
    }

    #[test]
    fn fix_of_ids_clears_with_the_truth_down_and_refuses_rewrite() {
        let mut store = MemoryStore::default();
        store.set("u:4:w", "50");
        store.set("u:5:w", "7");
        let down = || FakeTruth {
            down: Some(BridgeError::Unavailable("connection refused".into())),
            ..FakeTruth::default()
        };
        let access = MemoryAccess::new(store);
        let mut plan = FixIdsPlan {
            rules: weekly(),
            ids: vec![b"4".to_vec(), b"6".to_vec()],
            dry_run: false,
            rewrite: true,
            scan_batch: 10,
            now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        let err = fix_ids(&plan, &access, &mut down()).unwrap_err();
        assert!(
            err.to_string().starts_with("REWRITE needs the truth"),
            "{err}"
        );
        assert!(access.store.borrow().writes.is_empty());

        plan.rewrite = false;
        let outcome = fix_ids(&plan, &access, &mut down()).unwrap();
        assert_eq!(
            outcome.truth_error.as_deref(),
            Some("postgres unavailable: connection refused")
        );
        assert_eq!(
            outcome.fix.actions,
            vec![FixAction::Deleted, FixAction::Absent]
        );
        assert_eq!((outcome.fix.changed, outcome.fix.skipped), (1, 1));
        let store = access.store.borrow();
        assert!(store.get("u:4:w").is_none());
        assert!(store.get("u:5:w").is_some(), "only the asked ids");
    }

    #[test]
    fn fix_of_ids_rewrites_to_the_truth() {
        let mut store = MemoryStore::default();
        store.set("u:4:w", "50");
        let access = MemoryAccess::new(store);
        let plan = FixIdsPlan {
            rules: weekly(),
            ids: vec![b"4".to_vec()],
            dry_run: false,
            rewrite: true,
            scan_batch: 10,
            now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        let mut truth = FakeTruth::default().with("weekly", &[("4", Some("12.8"))]);
        let outcome = fix_ids(&plan, &access, &mut truth).unwrap();
        assert_eq!(outcome.fix.actions, vec![FixAction::Rewritten]);
        assert_eq!(outcome.entries[0].diff, Some(37.2));
        assert_eq!(
            access.store.borrow().get("u:4:w"),
            Some(&MemoryValue::Str(b"12.8".to_vec()))
        );
    }

    #[test]
    fn presence_findings_are_published() {
        let presence =
            rules(r#"[{"name": "conn", "kind": "presence", "key": "c:{id}", "truth": "x"}]"#);
        let mut store = MemoryStore::default();
        store.set("c:a", "up");
        store.set("c:z", "up");
        store.db = 3;
        let mut truth = FakeTruth::default().with("conn", &[("a", None), ("b", None)]);
        let access = MemoryAccess::new(store);
        let plan = check_plan(presence);
        let report = run_check(&plan, &access, &mut truth).unwrap();
        let before = epoch_ms(Some(SystemTime::now())) as i64;
        notify_presence(&access, &plan.rules, &report.entries).unwrap();
        let after = epoch_ms(Some(SystemTime::now())) as i64;
        let published = access.store.borrow().published.clone();
        assert_eq!(published.len(), 2);
        let mut expected = [("b", "missing"), ("z", "orphan")].into_iter();
        for message in published {
            let (id, status) = expected.next().unwrap();
            let head = format!(
                r#"{{"rule":"conn","id":"{id}","key":"c:{id}","status":"{status}","at_ms":"#
            );
            assert!(message.starts_with(&head), "{message}");
            assert!(message.ends_with(r#","db":3}"#), "{message}");
            let at_ms: i64 = message[head.len()..message.len() - r#","db":3}"#.len()]
                .parse()
                .unwrap();
            assert!(
                (before..=after).contains(&at_ms),
                "{at_ms} not in {before}..{after}"
            );
        }
    }
}
