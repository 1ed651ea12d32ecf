//! Checks that cost what changed. Every check of all ids (CHECK, FIX ALL, a
//! scheduled run) goes through [`run_tracked`], so the dirty set knows what it
//! covered; CHECK CHANGED reads only each rule's dirty ids (keys written,
//! expired or evicted since its last check) plus what its `changed` query
//! returns, and falls back to a full check when those could be incomplete.

use std::time::Duration;

use crate::dirty::{ChangedScope, DirtyTracker, Taken};
use crate::drift_check::{run_check, CheckError, CheckPlan, TruthSource};
use crate::report::{CheckMode, CheckReport};
use crate::store::{Access, Keyspace};

/// Runs `plan` (a full check, or with `changed` a CHECK CHANGED) and keeps
/// `dirty` in step: what the check covered is taken at its start, and given
/// back if it fails. A check of given ids is a spot check and leaves it alone.
pub fn run_tracked<A: Access, T: TruthSource>(
    plan: &CheckPlan,
    changed: bool,
    access: &A,
    truth: &mut T,
    dirty: &DirtyTracker,
) -> Result<CheckReport, CheckError> {
    if !plan.ids.is_empty() || plan.per_rule_ids.is_some() {
        return run_check(plan, access, truth);
    }
    let db = access.hold(|ks| ks.db());
    let names: Vec<String> = plan.rules.iter().map(|r| r.rule.name.clone()).collect();
    if !changed {
        let taken = dirty.lock().take_for_full(db, &names, plan.now);
        return finish(
            run_check(plan, access, truth),
            taken,
            CheckMode::Full,
            dirty,
        );
    }
    let scope = dirty.lock().take_changed(db, &names, plan.now);
    match scope {
        ChangedScope::Full { taken, reason } => finish(
            run_check(plan, access, truth),
            taken,
            CheckMode::FullInstead(reason),
            dirty,
        ),
        ChangedScope::Ids { taken, since } => {
            let per_rule = match changed_ids(plan, &taken, &since, truth) {
                Ok(ids) => ids,
                Err(e) => {
                    dirty.lock().give_back(taken);
                    return Err(e);
                }
            };
            let only_changed = CheckPlan {
                per_rule_ids: Some(per_rule),
                ..plan.clone()
            };
            finish(
                run_check(&only_changed, access, truth),
                taken,
                CheckMode::Changed,
                dirty,
            )
        }
    }
}

/// Each rule's ids to check: its dirty ids and its `changed` query's ids
/// since the last run's start, less the rule's overlap.
fn changed_ids<T: TruthSource>(
    plan: &CheckPlan,
    taken: &Taken,
    since: &[std::time::SystemTime],
    truth: &mut T,
) -> Result<Vec<Vec<Vec<u8>>>, CheckError> {
    let mut per_rule = Vec::with_capacity(plan.rules.len());
    for ((rule, (_, dirty_ids, _)), since) in plan.rules.iter().zip(&taken.rules).zip(since) {
        let mut ids = dirty_ids.clone();
        if rule.changed.is_some() {
            let overlap = Duration::from_millis(rule.rule.changed_overlap_ms);
            let from = since.checked_sub(overlap).unwrap_or(std::time::UNIX_EPOCH);
            ids.extend(
                truth
                    .changed(rule, from)?
                    .into_iter()
                    .map(String::into_bytes),
            );
        }
        per_rule.push(ids.into_iter().collect());
    }
    Ok(per_rule)
}

fn finish(
    result: Result<CheckReport, CheckError>,
    taken: Taken,
    mode: CheckMode,
    dirty: &DirtyTracker,
) -> Result<CheckReport, CheckError> {
    match result {
        Ok(mut report) => {
            dirty.lock().complete(taken);
            report.mode = mode;
            Ok(report)
        }
        Err(e) => {
            dirty.lock().give_back(taken);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Status;
    use crate::dirty::FullReason;
    use crate::store::memory::fake_truth::{rules, FakeTruth};
    use crate::store::memory::{MemoryAccess, MemoryStore};

    const WEEKLY: &str = r#"[{"name": "weekly", "kind": "number", "key": "u:{id}:w",
        "truth": "SELECT id, v FROM t", "threshold": 1,
        "changed": "SELECT id FROM ledger WHERE at >= $1", "changed_overlap_ms": 1000}]"#;

    fn plan() -> CheckPlan {
        let mut plan = CheckPlan::configured(rules(WEEKLY), Vec::new(), None);
        plan.default_threshold = 1.0;
        plan.verify_rounds = 1;
        plan.scan_batch = 10;
        plan
    }

    fn truth() -> FakeTruth {
        FakeTruth::default().with(
            "weekly",
            &[("1", Some("10")), ("2", Some("20")), ("3", Some("30"))],
        )
    }

    fn store(values: &[(&str, &str)]) -> MemoryAccess {
        let mut store = MemoryStore::default();
        for (id, v) in values {
            store.set(&format!("u:{id}:w"), v);
        }
        MemoryAccess::new(store)
    }

    #[test]
    fn changed_checks_read_only_dirty_and_changed_ids_and_find_what_full_finds() {
        let access = store(&[("1", "10"), ("2", "20"), ("3", "30")]);
        let dirty = DirtyTracker::new(100);
        let mut truth = truth();

        // No baseline yet: it runs full and says why.
        let first_plan = plan();
        let first = run_tracked(&first_plan, true, &access, &mut truth, &dirty).unwrap();
        assert_eq!(first.mode, CheckMode::FullInstead(FullReason::FirstCheck));
        assert_eq!(first.checked, 3);

        // Key 2 drifts and is written; the truth says ids 3 and 2 changed.
        access.hold(|ks| ks.set("u:2:w", "99"));
        dirty.record(0, "weekly", b"2");
        truth
            .changed
            .insert("weekly".into(), vec!["3".into(), "2".into()]);
        let second = run_tracked(&plan(), true, &access, &mut truth, &dirty).unwrap();
        assert_eq!(second.mode, CheckMode::Changed);
        assert_eq!(second.checked, 2, "ids 2 and 3 only");
        assert_eq!(second.entries.len(), 1);
        assert_eq!(second.entries[0].key, b"u:2:w");
        assert_eq!(second.entries[0].status, Status::Drift);
        // `changed` was asked from the first run's start, less the overlap.
        assert_eq!(
            truth.changed_since,
            Some(first_plan.now - Duration::from_secs(1))
        );

        // A full check finds the same.
        let full = run_tracked(&plan(), false, &access, &mut truth, &dirty).unwrap();
        assert_eq!(full.mode, CheckMode::Full);
        assert_eq!(full.checked, 3);
        assert_eq!(full.entries, second.entries);
    }

    #[test]
    fn a_failed_changed_check_keeps_its_ids_for_the_next_one() {
        let access = store(&[("1", "10")]);
        let dirty = DirtyTracker::new(100);
        let mut truth = truth();
        run_tracked(&plan(), false, &access, &mut truth, &dirty).unwrap();
        dirty.record(0, "weekly", b"1");
        truth.down = Some(consistency_bridge::BridgeError::Unavailable(
            "refused".into(),
        ));
        assert!(run_tracked(&plan(), true, &access, &mut truth, &dirty).is_err());
        assert_eq!(dirty.lock().pending("weekly"), 1);
        truth.down = None;
        let again = run_tracked(&plan(), true, &access, &mut truth, &dirty).unwrap();
        assert_eq!(again.mode, CheckMode::Changed);
        assert_eq!(again.checked, 1);
        assert_eq!(dirty.lock().pending("weekly"), 0);
    }
}
