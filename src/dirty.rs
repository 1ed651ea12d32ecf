//! The ids whose keys changed since a rule's last check: what CHECK CHANGED
//! reads instead of the whole keyspace. Pure: the keyspace-event callback
//! (redis_api/key_events.rs) records into it, checks take from it.
//!
//! A rule's dirty ids are complete only after a full check of it completed
//! since the module loaded (its baseline) and nothing since could have changed
//! keys unseen: a FLUSHDB/FLUSHALL, a load (RDB, AOF, full sync), a role change,
//! or more dirty ids than `dirty-max-ids` (dropped, not half kept). Then the
//! next CHANGED check must run full and says why.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

/// Why a CHANGED check had to run full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullReason {
    FirstCheck,
    Overflowed,
    Flushed,
    Loaded,
    RoleChanged,
}

impl FullReason {
    /// The text of the reply's `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            FullReason::FirstCheck => "first check",
            FullReason::Overflowed => "dirty set overflowed",
            FullReason::Flushed => "flushed",
            FullReason::Loaded => "loaded",
            FullReason::RoleChanged => "role changed",
        }
    }
}

/// One rule in one database.
#[derive(Debug, Default)]
struct RuleDirt {
    ids: HashSet<Vec<u8>>,
    /// When the last completed check of every id (full or changed) started:
    /// the baseline the dirty ids are counted from. None: no baseline.
    since: Option<SystemTime>,
    /// Set by a flush, a load, a role change or an overflow; cleared by a full
    /// check that started after it.
    reset: Option<FullReason>,
    /// Bumped by every reset, so a check that started before one does not
    /// clear it when it completes.
    generation: u64,
}

/// What a check took from the dirty set; given back on failure.
#[derive(Debug, PartialEq)]
pub struct Taken {
    pub db: i64,
    /// Per rule (in the order asked): the rule name, its ids, its generation.
    pub rules: Vec<(String, HashSet<Vec<u8>>, u64)>,
    pub started: SystemTime,
}

/// What a CHANGED check of some rules can do.
#[derive(Debug, PartialEq)]
pub enum ChangedScope {
    /// Every rule has a baseline: check these ids (per rule, in order), and
    /// ask each rule's `changed` query from its `since`.
    Ids {
        taken: Taken,
        since: Vec<SystemTime>,
    },
    /// At least one rule must be checked in full: why (the first such rule's
    /// reason). Everything was taken as for a full check.
    Full { taken: Taken, reason: FullReason },
}

/// All rules' dirty ids, by rule name and database, bounded in total.
#[derive(Debug)]
pub struct DirtySet {
    rules: HashMap<String, HashMap<i64, RuleDirt>>,
    total: usize,
    max: usize,
}

impl DirtySet {
    pub fn new(max_ids: usize) -> DirtySet {
        DirtySet {
            rules: HashMap::new(),
            total: 0,
            max: max_ids,
        }
    }

    pub fn set_max(&mut self, max_ids: usize) {
        self.max = max_ids;
    }

    fn entry(&mut self, db: i64, rule: &str) -> &mut RuleDirt {
        if !self.rules.contains_key(rule) {
            self.rules.insert(rule.to_string(), HashMap::new());
        }
        self.rules
            .get_mut(rule)
            .expect("inserted above")
            .entry(db)
            .or_default()
    }

    /// A key of `rule` with this id was written, expired or evicted in `db`.
    /// Past the bound every rule's ids are dropped and each must run full.
    pub fn record(&mut self, db: i64, rule: &str, id: &[u8]) {
        // The common case, an id already recorded: two lookups, no allocation.
        let known = self
            .rules
            .get(rule)
            .and_then(|dbs| dbs.get(&db))
            .is_some_and(|dirt| dirt.ids.contains(id));
        if known {
            return;
        }
        let full = self.total >= self.max;
        let dirt = self.entry(db, rule);
        if full {
            self.reset(None, FullReason::Overflowed);
            return;
        }
        dirt.ids.insert(id.to_vec());
        self.total += 1;
    }

    /// Something changed keys without per-key events (or too many of them):
    /// every rule's next CHANGED check runs full. `db` None: all databases.
    pub fn reset(&mut self, db: Option<i64>, reason: FullReason) {
        for dbs in self.rules.values_mut() {
            for (rule_db, dirt) in dbs.iter_mut() {
                if db.is_none_or(|d| d == *rule_db) {
                    self.total -= dirt.ids.len();
                    dirt.ids = HashSet::new();
                    dirt.reset = Some(reason);
                    dirt.generation += 1;
                }
            }
        }
    }

    /// Ids waiting for a CHANGED check of `rule`, all databases together.
    pub fn pending(&self, rule: &str) -> usize {
        self.rules
            .get(rule)
            .map_or(0, |dbs| dbs.values().map(|d| d.ids.len()).sum())
    }

    /// Starts a full check of `rules` in `db`: their dirty ids are covered by
    /// it, so they are taken (writes from now on are recorded afresh).
    pub fn take_for_full(&mut self, db: i64, rules: &[String], started: SystemTime) -> Taken {
        let mut taken = Vec::with_capacity(rules.len());
        for rule in rules {
            let dirt = self.entry(db, rule);
            // Taken whole, not drained: the keyspace callback waits on this
            // lock inside every write, so no work here grows with the ids.
            let ids = std::mem::take(&mut dirt.ids);
            let generation = dirt.generation;
            self.total -= ids.len();
            taken.push((rule.clone(), ids, generation));
        }
        Taken {
            db,
            rules: taken,
            started,
        }
    }

    /// Starts a CHANGED check of `rules` in `db`.
    pub fn take_changed(&mut self, db: i64, rules: &[String], started: SystemTime) -> ChangedScope {
        let mut reason = None;
        let mut since = Vec::with_capacity(rules.len());
        for rule in rules {
            let dirt = self.rules.get(rule.as_str()).and_then(|dbs| dbs.get(&db));
            match dirt.map(|d| (d.reset, d.since)) {
                Some((None, Some(at))) => since.push(at),
                Some((Some(why), _)) => {
                    reason.get_or_insert(why);
                }
                _ => {
                    reason.get_or_insert(FullReason::FirstCheck);
                }
            }
        }
        let taken = self.take_for_full(db, rules, started);
        match reason {
            None => ChangedScope::Ids { taken, since },
            Some(reason) => ChangedScope::Full { taken, reason },
        }
    }

    /// The check completed: each rule's ids are now counted from its start,
    /// unless a reset came in between (then that reset stands).
    pub fn complete(&mut self, taken: Taken) {
        for (rule, _, generation) in taken.rules {
            let dirt = self.entry(taken.db, &rule);
            if dirt.generation == generation {
                dirt.reset = None;
                dirt.since = Some(taken.started);
            }
        }
    }

    /// The check failed: its ids go back, to be checked next time.
    pub fn give_back(&mut self, taken: Taken) {
        for (rule, ids, generation) in taken.rules {
            let dirt = self.entry(taken.db, &rule);
            if dirt.generation != generation {
                continue;
            }
            let before = dirt.ids.len();
            if before == 0 {
                dirt.ids = ids;
            } else {
                dirt.ids.extend(ids);
            }
            self.total += dirt.ids.len() - before;
        }
        if self.total > self.max {
            self.reset(None, FullReason::Overflowed);
        }
    }

    /// Rules were reloaded: a rule's ids may mean other keys now.
    pub fn clear(&mut self) {
        self.rules.clear();
        self.total = 0;
    }
}

/// Writes the keyspace callback saw, not yet merged into the [`DirtySet`]:
/// appending is a few nanoseconds inside the write, where a lookup in a set
/// of a million ids would be several cache misses. Bounded like the set.
#[derive(Debug, Default)]
pub struct DirtyLog {
    /// The rules' names, each once; entries name them by index.
    rules: Vec<String>,
    /// Every logged id's bytes, one after another.
    bytes: Vec<u8>,
    /// (rule index, db, end of the id in `bytes`), in write order.
    entries: Vec<(u32, i64, usize)>,
    /// More writes than the bound came: everything is reset, as the set does.
    overflowed: bool,
}

impl DirtyLog {
    fn record(&mut self, db: i64, rule: &str, id: &[u8], max: usize) {
        if self.entries.len() >= max {
            // Dropped, not half kept: the merge resets every rule.
            self.entries.clear();
            self.bytes.clear();
            self.overflowed = true;
            return;
        }
        let index = match self.rules.iter().position(|r| r == rule) {
            Some(i) => i,
            None => {
                self.rules.push(rule.to_string());
                self.rules.len() - 1
            }
        };
        self.bytes.extend_from_slice(id);
        self.entries.push((index as u32, db, self.bytes.len()));
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty() && !self.overflowed
    }
}

/// The dirty set and the log in front of it. The keyspace callback appends
/// to the log; everything else locks the set, which first takes in what the
/// log holds, in write order (so a reset after a write comes after it). A
/// background merge keeps the log short between checks.
#[derive(Debug)]
pub struct DirtyTracker {
    set: Mutex<DirtySet>,
    log: Mutex<DirtyLog>,
    max: AtomicUsize,
}

impl DirtyTracker {
    pub fn new(max_ids: usize) -> DirtyTracker {
        DirtyTracker {
            set: Mutex::new(DirtySet::new(max_ids)),
            log: Mutex::new(DirtyLog::default()),
            max: AtomicUsize::new(max_ids),
        }
    }

    pub fn set_max(&self, max_ids: usize) {
        self.max.store(max_ids, Ordering::Relaxed);
    }

    /// A key of `rule` with this id was written, expired or evicted in `db`:
    /// logged, to be merged later.
    pub fn record(&self, db: i64, rule: &str, id: &[u8]) {
        let max = self.max.load(Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.record(db, rule, id, max);
    }

    /// The set, with everything logged so far merged in.
    pub fn lock(&self) -> MutexGuard<'_, DirtySet> {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        set.set_max(self.max.load(Ordering::Relaxed));
        // Taken whole, so the log's lock (which writes wait on) is held only
        // for a swap.
        let log = std::mem::take(&mut *self.log.lock().unwrap_or_else(|p| p.into_inner()));
        if !log.is_empty() {
            set.absorb(log);
        }
        set
    }

    /// Whether writes wait in the log (for the background merge).
    pub fn has_log(&self) -> bool {
        !self
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

impl DirtySet {
    fn absorb(&mut self, log: DirtyLog) {
        if log.overflowed {
            self.reset(None, FullReason::Overflowed);
        }
        let mut start = 0;
        for (rule, db, end) in log.entries {
            self.record(db, &log.rules[rule as usize], &log.bytes[start..end]);
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn ids_of(scope: &ChangedScope) -> Vec<Vec<Vec<u8>>> {
        let taken = match scope {
            ChangedScope::Ids { taken, .. } | ChangedScope::Full { taken, .. } => taken,
        };
        taken
            .rules
            .iter()
            .map(|(_, ids, _)| {
                let mut ids: Vec<Vec<u8>> = ids.iter().cloned().collect();
                ids.sort();
                ids
            })
            .collect()
    }

    #[test]
    fn the_first_changed_check_runs_full_then_only_what_was_written() {
        let mut set = DirtySet::new(100);
        let rules = names(&["weekly", "monthly"]);
        set.record(0, "weekly", b"4");
        let first = set.take_changed(0, &rules, at(10));
        assert!(matches!(
            first,
            ChangedScope::Full {
                reason: FullReason::FirstCheck,
                ..
            }
        ));
        assert_eq!(ids_of(&first), [vec![b"4".to_vec()], vec![]]);
        let ChangedScope::Full { taken, .. } = first else {
            unreachable!()
        };
        set.complete(taken);

        set.record(0, "weekly", b"7");
        set.record(0, "weekly", b"7");
        set.record(0, "monthly", b"2");
        set.record(1, "weekly", b"9"); // another database
        assert_eq!(set.pending("weekly"), 2);
        let second = set.take_changed(0, &rules, at(20));
        assert_eq!(ids_of(&second), [vec![b"7".to_vec()], vec![b"2".to_vec()]]);
        let ChangedScope::Ids { taken, since } = second else {
            panic!("baseline set: {second:?}")
        };
        assert_eq!(since, [at(10), at(10)]);
        set.complete(taken);
        assert_eq!(set.pending("weekly"), 1, "db 1's id waits");
        let ChangedScope::Ids { since, .. } = set.take_changed(0, &rules, at(30)) else {
            panic!()
        };
        assert_eq!(since, [at(20), at(20)]);
    }

    #[test]
    fn a_failed_check_gives_its_ids_back() {
        let mut set = DirtySet::new(100);
        let rules = names(&["weekly"]);
        let t = set.take_for_full(0, &rules, at(1));
        set.complete(t);
        set.record(0, "weekly", b"1");
        let ChangedScope::Ids { taken, .. } = set.take_changed(0, &rules, at(2)) else {
            panic!()
        };
        assert_eq!(set.pending("weekly"), 0);
        set.record(0, "weekly", b"2"); // written during the check
        set.give_back(taken);
        assert_eq!(set.pending("weekly"), 2);
        let ChangedScope::Ids { since, .. } = set.take_changed(0, &rules, at(3)) else {
            panic!()
        };
        assert_eq!(since, [at(1)], "a failed check moves no baseline");
    }

    #[test]
    fn flush_load_role_change_and_overflow_force_a_full_run_once() {
        for reason in [
            FullReason::Flushed,
            FullReason::Loaded,
            FullReason::RoleChanged,
        ] {
            let mut set = DirtySet::new(100);
            let rules = names(&["weekly"]);
            let t = set.take_for_full(0, &rules, at(1));
            set.complete(t);
            set.record(0, "weekly", b"1");
            set.reset(None, reason);
            assert_eq!(set.pending("weekly"), 0);
            let scope = set.take_changed(0, &rules, at(2));
            let ChangedScope::Full { taken, reason: why } = scope else {
                panic!("{reason:?}: {scope:?}")
            };
            assert_eq!(why, reason);
            set.complete(taken);
            assert!(matches!(
                set.take_changed(0, &rules, at(3)),
                ChangedScope::Ids { .. }
            ));
        }
        let mut set = DirtySet::new(3);
        let rules = names(&["weekly"]);
        let t = set.take_for_full(0, &rules, at(1));
        set.complete(t);
        for id in [b"1", b"2", b"3", b"4"] {
            set.record(0, "weekly", id);
        }
        assert_eq!(set.pending("weekly"), 0, "dropped, not half kept");
        assert!(matches!(
            set.take_changed(0, &rules, at(2)),
            ChangedScope::Full {
                reason: FullReason::Overflowed,
                ..
            }
        ));
    }

    #[test]
    fn a_reset_during_a_check_outlives_its_completion() {
        let mut set = DirtySet::new(100);
        let rules = names(&["weekly"]);
        let t = set.take_for_full(0, &rules, at(1));
        set.complete(t);
        let ChangedScope::Ids { taken, .. } = set.take_changed(0, &rules, at(2)) else {
            panic!()
        };
        set.reset(Some(0), FullReason::Flushed);
        set.complete(taken);
        assert!(matches!(
            set.take_changed(0, &rules, at(3)),
            ChangedScope::Full {
                reason: FullReason::Flushed,
                ..
            }
        ));
        // A flush of another database leaves db 0 alone.
        let mut set = DirtySet::new(100);
        let t = set.take_for_full(0, &rules, at(1));
        set.complete(t);
        set.reset(Some(5), FullReason::Flushed);
        assert!(matches!(
            set.take_changed(0, &rules, at(2)),
            ChangedScope::Ids { .. }
        ));
    }

    #[test]
    fn the_tracker_merges_logged_writes_in_order_with_resets() {
        let tracker = DirtyTracker::new(100);
        tracker.record(0, "weekly", b"4");
        tracker.record(0, "weekly", b"4");
        tracker.record(0, "monthly", b"12345678901234567890");
        assert!(tracker.has_log());
        assert_eq!(tracker.lock().pending("weekly"), 1);
        assert!(!tracker.has_log());
        assert_eq!(tracker.lock().pending("monthly"), 1);
        let taken = tracker.lock().take_for_full(0, &names(&["monthly"]), at(1));
        assert_eq!(
            taken.rules[0].1,
            HashSet::from([b"12345678901234567890".to_vec()])
        );

        // A reset applies after the writes logged before it.
        tracker.record(0, "weekly", b"5");
        tracker.lock().reset(None, FullReason::Flushed);
        tracker.record(0, "weekly", b"6");
        assert_eq!(tracker.lock().pending("weekly"), 1);
    }

    #[test]
    fn a_log_past_the_bound_resets_every_rule() {
        let tracker = DirtyTracker::new(2);
        let taken = tracker.lock().take_for_full(0, &names(&["weekly"]), at(0));
        tracker.lock().complete(taken);
        for id in [b"1", b"2", b"3", b"4"] {
            tracker.record(0, "weekly", id);
        }
        let mut set = tracker.lock();
        assert_eq!(set.pending("weekly"), 1, "the write after the overflow");
        let scope = set.take_changed(0, &names(&["weekly"]), at(1));
        assert!(matches!(
            scope,
            ChangedScope::Full {
                reason: FullReason::Overflowed,
                ..
            }
        ));
    }
}
