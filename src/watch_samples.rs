//! Continuous consistency of watched rules: each write of a rule key starts a
//! sample, looked at (cache against truth) after the grace, again at 10 s and
//! at 60 s while it still differs. Pure: the keyspace callback records into
//! it, the watch job (watch.rs) takes the due samples and settles them.
//!
//! A write to an id whose sample waits for its first look changes nothing (the
//! look reads the newest value). A write after an inconsistent look, or during
//! a look that found it inconsistent, ends the sample as `superseded` and
//! starts a new one. Samples past the bound are `dropped`, counted, never kept.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// When a sample is looked at, counted from its write: the grace, then 10 s
/// and 60 s by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Looks(pub [Duration; 3]);

/// The looks' offsets after the grace.
pub const SECOND_LOOK: Duration = Duration::from_secs(10);
pub const LAST_LOOK: Duration = Duration::from_secs(60);

/// One rule's totals since load. `within_10s` counts `within_1s` too, and
/// `within_60s` both: "consistent within M seconds" reads off directly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchTally {
    pub samples: u64,
    pub within_1s: u64,
    pub within_10s: u64,
    pub within_60s: u64,
    pub inconsistent: u64,
    pub superseded: u64,
    pub unknown: u64,
    pub dropped: u64,
}

impl WatchTally {
    /// -log10(inconsistent / samples), two decimals; `inf` when nothing was
    /// inconsistent.
    pub fn nines(&self) -> String {
        if self.inconsistent == 0 || self.samples == 0 {
            return "inf".to_string();
        }
        let ratio = self.inconsistent as f64 / self.samples as f64;
        // 0.00 rather than -0.00 when every sample was inconsistent.
        format!("{:.2}", (-ratio.log10()).max(0.0))
    }
}

/// A sample waiting for a look (or in one).
#[derive(Clone, Copy, Debug)]
struct Sample {
    started: Instant,
    /// The look it waits for: 0 (grace), 1 (10 s) or 2 (60 s).
    stage: usize,
    /// Writes to its key since it started.
    writes: u64,
    in_flight: bool,
}

/// A queued look: due at, sample start (to skip restarted samples), db, id.
type Queued = (Instant, Instant, i64, Vec<u8>);

#[derive(Debug, Default)]
struct RuleSamples {
    /// By database, then id.
    pending: HashMap<i64, HashMap<Vec<u8>, Sample>>,
    /// One queue per look: each look is a fixed time after the write, so each
    /// queue stays in due order.
    queues: [VecDeque<Queued>; 3],
    tally: WatchTally,
}

/// One sample in a look: the id, and what the book knew when it was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookItem {
    pub id: Vec<u8>,
    started: Instant,
    writes: u64,
}

/// The samples of one rule in one database looked at with one truth query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookBatch {
    pub rule: String,
    pub db: i64,
    pub items: Vec<LookItem>,
}

impl LookBatch {
    pub fn ids(&self) -> Vec<Vec<u8>> {
        self.items.iter().map(|i| i.id.clone()).collect()
    }
}

/// What a look found.
pub enum LookResult<'a> {
    /// The ids of the batch that differ from the truth.
    Inconsistent(&'a HashSet<Vec<u8>>),
    /// No verdict (PostgreSQL unreachable, or the look could not finish).
    Unknown,
}

/// Every watched rule's samples, bounded in total.
#[derive(Debug)]
pub struct WatchSamples {
    rules: HashMap<String, RuleSamples>,
    pending: usize,
    max_pending: usize,
    looks: Looks,
}

impl WatchSamples {
    pub fn new(max_pending: usize, looks: Looks) -> WatchSamples {
        WatchSamples {
            rules: HashMap::new(),
            pending: 0,
            max_pending,
            looks,
        }
    }

    pub fn configure(&mut self, max_pending: usize, looks: Looks) {
        self.max_pending = max_pending;
        self.looks = looks;
    }

    fn rule(&mut self, rule: &str) -> &mut RuleSamples {
        if !self.rules.contains_key(rule) {
            self.rules.insert(rule.to_string(), RuleSamples::default());
        }
        self.rules.get_mut(rule).expect("inserted above")
    }

    /// A key of watched `rule` with this id was written in `db` at `now`.
    pub fn record(&mut self, rule: &str, db: i64, id: &[u8], now: Instant) {
        let first_look = now + self.looks.0[0];
        let full = self.pending >= self.max_pending;
        let samples = self.rule(rule);
        if let Some(sample) = samples.pending.get_mut(&db).and_then(|ids| ids.get_mut(id)) {
            sample.writes += 1;
            if sample.stage == 0 || sample.in_flight {
                // Its next look reads this value (or the look in flight
                // settles it).
                return;
            }
            // Rewritten between looks: a new sample from this write.
            *sample = Sample {
                started: now,
                stage: 0,
                writes: 0,
                in_flight: false,
            };
            samples.tally.superseded += 1;
            samples.tally.samples += 1;
            samples.queues[0].push_back((first_look, now, db, id.to_vec()));
            return;
        }
        if full {
            samples.tally.dropped += 1;
            return;
        }
        samples.pending.entry(db).or_default().insert(
            id.to_vec(),
            Sample {
                started: now,
                stage: 0,
                writes: 0,
                in_flight: false,
            },
        );
        samples.queues[0].push_back((first_look, now, db, id.to_vec()));
        samples.tally.samples += 1;
        self.pending += 1;
    }

    /// Whether any look is due at `now` (cheap: the queues' fronts).
    pub fn any_due(&self, now: Instant) -> bool {
        self.rules.values().any(|r| {
            r.queues
                .iter()
                .any(|q| q.front().is_some_and(|f| f.0 <= now))
        })
    }

    /// Takes the looks due at `now`: at most `max_batches` batches (one truth
    /// query each) of at most `max_ids` ids. Samples of rules no longer
    /// watched (`watched` says) are forgotten.
    pub fn take_due(
        &mut self,
        now: Instant,
        max_batches: usize,
        max_ids: usize,
        watched: impl Fn(&str) -> bool,
    ) -> Vec<LookBatch> {
        let gone: Vec<String> = self.rules.keys().filter(|r| !watched(r)).cloned().collect();
        for rule in gone {
            if let Some(samples) = self.rules.remove(&rule) {
                self.pending -= samples.pending.values().map(HashMap::len).sum::<usize>();
            }
        }
        let mut batches: Vec<LookBatch> = Vec::new();
        let mut names: Vec<&String> = self.rules.keys().collect();
        names.sort();
        let names: Vec<String> = names.into_iter().cloned().collect();
        for name in names {
            let samples = self.rules.get_mut(&name).expect("listed above");
            for stage in 0..3 {
                while let Some((due, started, db, _)) = samples.queues[stage].front() {
                    if *due > now {
                        break;
                    }
                    let (started, db) = (*started, *db);
                    let index = batches.iter().position(|b| b.rule == name && b.db == db);
                    let full = index.is_some_and(|i| batches[i].items.len() >= max_ids);
                    if full || (index.is_none() && batches.len() >= max_batches) {
                        break;
                    }
                    let (_, _, _, id) = samples.queues[stage].pop_front().expect("front above");
                    let Some(sample) = samples.pending.get_mut(&db).and_then(|m| m.get_mut(&id))
                    else {
                        continue;
                    };
                    // A restarted sample left its old queue entry behind.
                    if sample.started != started || sample.stage != stage || sample.in_flight {
                        continue;
                    }
                    sample.in_flight = true;
                    let item = LookItem {
                        id,
                        started,
                        writes: sample.writes,
                    };
                    match index {
                        Some(i) => batches[i].items.push(item),
                        None => batches.push(LookBatch {
                            rule: name.clone(),
                            db,
                            items: vec![item],
                        }),
                    }
                }
            }
        }
        batches
    }

    /// Settles a look: consistent samples are counted, inconsistent ones wait
    /// for their next look, or (after the last) are counted and returned: the
    /// writes still inconsistent at 60 s, to announce and repair.
    pub fn settle(&mut self, batch: &LookBatch, result: LookResult, now: Instant) -> Vec<Vec<u8>> {
        let looks = self.looks;
        let mut finished = 0;
        let mut inconsistent = Vec::new();
        let Some(samples) = self.rules.get_mut(&batch.rule) else {
            return inconsistent;
        };
        for item in &batch.items {
            let Some(ids) = samples.pending.get_mut(&batch.db) else {
                break;
            };
            let Some(sample) = ids.get_mut(&item.id) else {
                continue;
            };
            if sample.started != item.started || !sample.in_flight {
                continue;
            }
            sample.in_flight = false;
            let tally = &mut samples.tally;
            let differs = match result {
                LookResult::Unknown => {
                    tally.unknown += 1;
                    ids.remove(&item.id);
                    finished += 1;
                    continue;
                }
                LookResult::Inconsistent(set) => set.contains(&item.id),
            };
            if !differs {
                if sample.stage == 0 {
                    tally.within_1s += 1;
                }
                if sample.stage <= 1 {
                    tally.within_10s += 1;
                }
                tally.within_60s += 1;
                ids.remove(&item.id);
                finished += 1;
            } else if sample.writes != item.writes {
                // Written while it was looked at: the look proves nothing.
                tally.superseded += 1;
                tally.samples += 1;
                *sample = Sample {
                    started: now,
                    stage: 0,
                    writes: 0,
                    in_flight: false,
                };
                samples.queues[0].push_back((now + looks.0[0], now, batch.db, item.id.clone()));
            } else if sample.stage < 2 {
                sample.stage += 1;
                let due = sample.started + looks.0[sample.stage];
                samples.queues[sample.stage].push_back((
                    due,
                    sample.started,
                    batch.db,
                    item.id.clone(),
                ));
            } else {
                tally.inconsistent += 1;
                ids.remove(&item.id);
                finished += 1;
                inconsistent.push(item.id.clone());
            }
        }
        self.pending -= finished;
        inconsistent
    }

    /// Keys changed without per-key events (a flush, a load, a role change):
    /// pending samples of `db` (None: all) end without a verdict, `unknown`.
    pub fn clear(&mut self, db: Option<i64>) {
        for samples in self.rules.values_mut() {
            let mut cleared = 0;
            samples.pending.retain(|d, ids| {
                let keep = db.is_some_and(|db| db != *d);
                if !keep {
                    cleared += ids.len();
                }
                keep
            });
            for queue in &mut samples.queues {
                queue.retain(|q| db.is_some_and(|db| db != q.2));
            }
            samples.tally.unknown += cleared as u64;
            self.pending -= cleared;
        }
    }

    /// One rule's totals (zeros for a rule never sampled).
    pub fn tally(&self, rule: &str) -> WatchTally {
        self.rules
            .get(rule)
            .map_or_else(WatchTally::default, |r| r.tally)
    }

    /// Samples waiting for a look, all rules.
    pub fn pending(&self) -> usize {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOKS: Looks = Looks([
        Duration::from_secs(1),
        Duration::from_secs(10),
        Duration::from_secs(60),
    ]);

    fn book() -> WatchSamples {
        WatchSamples::new(100, LOOKS)
    }

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    fn take(book: &mut WatchSamples, now: Instant) -> Vec<LookBatch> {
        book.take_due(now, 10, 1000, |_| true)
    }

    fn ids(list: &[&str]) -> HashSet<Vec<u8>> {
        list.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_sample_is_looked_at_after_the_grace_then_at_10_and_60_seconds() {
        let t0 = Instant::now();
        let mut book = book();
        book.record("r", 0, b"4", t0);
        assert!(
            take(&mut book, at(t0, 0)).is_empty(),
            "not before the grace"
        );
        assert!(!book.any_due(at(t0, 0)));
        assert!(book.any_due(at(t0, 1)));

        let first = take(&mut book, at(t0, 1));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].ids(), vec![b"4".to_vec()]);
        let differs = ids(&["4"]);
        let out = book.settle(&first[0], LookResult::Inconsistent(&differs), at(t0, 1));
        assert!(out.is_empty(), "the first look only defers");

        assert!(take(&mut book, at(t0, 9)).is_empty());
        let second = take(&mut book, at(t0, 10));
        assert_eq!(second[0].ids(), vec![b"4".to_vec()]);
        book.settle(&second[0], LookResult::Inconsistent(&differs), at(t0, 10));

        assert!(take(&mut book, at(t0, 59)).is_empty());
        let last = take(&mut book, at(t0, 60));
        let out = book.settle(&last[0], LookResult::Inconsistent(&differs), at(t0, 60));
        assert_eq!(out, vec![b"4".to_vec()]);
        let tally = book.tally("r");
        assert_eq!(tally.samples, 1);
        assert_eq!(tally.inconsistent, 1);
        assert_eq!(tally.within_60s, 0);
        assert_eq!(tally.nines(), "0.00");
        assert_eq!(book.pending(), 0);
    }

    #[test]
    fn consistency_at_a_later_look_counts_within_that_look_and_after() {
        let t0 = Instant::now();
        let mut book = book();
        book.record("r", 0, b"1", t0);
        book.record("r", 0, b"2", t0);
        book.record("r", 0, b"3", t0);
        let none = HashSet::new();
        let batch = take(&mut book, at(t0, 1)).remove(0);
        assert_eq!(batch.items.len(), 3, "one query for all three");
        book.settle(
            &batch,
            LookResult::Inconsistent(&ids(&["2", "3"])),
            at(t0, 1),
        );
        let batch = take(&mut book, at(t0, 10)).remove(0);
        book.settle(&batch, LookResult::Inconsistent(&ids(&["3"])), at(t0, 10));
        let batch = take(&mut book, at(t0, 60)).remove(0);
        book.settle(&batch, LookResult::Inconsistent(&none), at(t0, 60));
        let tally = book.tally("r");
        assert_eq!(
            (tally.within_1s, tally.within_10s, tally.within_60s),
            (1, 2, 3)
        );
        assert_eq!(tally.inconsistent, 0);
        assert_eq!(tally.nines(), "inf");
    }

    #[test]
    fn writes_before_the_first_look_share_one_sample() {
        let t0 = Instant::now();
        let mut book = book();
        for _ in 0..5 {
            book.record("r", 0, b"4", t0);
        }
        assert_eq!(book.tally("r").samples, 1);
        assert_eq!(book.pending(), 1);
    }

    #[test]
    fn a_write_between_looks_supersedes_the_sample_and_starts_another() {
        let t0 = Instant::now();
        let mut book = book();
        book.record("r", 0, b"4", t0);
        let batch = take(&mut book, at(t0, 1)).remove(0);
        book.settle(&batch, LookResult::Inconsistent(&ids(&["4"])), at(t0, 1));
        book.record("r", 0, b"4", at(t0, 5));
        let tally = book.tally("r");
        assert_eq!((tally.samples, tally.superseded), (2, 1));
        // The old 10 s look is gone; the new sample's first look is at 6 s.
        assert!(take(&mut book, at(t0, 5)).is_empty());
        let batch = take(&mut book, at(t0, 6)).remove(0);
        book.settle(&batch, LookResult::Inconsistent(&HashSet::new()), at(t0, 6));
        assert!(take(&mut book, at(t0, 100)).is_empty());
        assert_eq!(book.tally("r").within_1s, 1);
        assert_eq!(book.pending(), 0);
    }

    #[test]
    fn a_write_during_an_inconsistent_look_supersedes_it() {
        let t0 = Instant::now();
        let mut book = book();
        book.record("r", 0, b"4", t0);
        let batch = take(&mut book, at(t0, 1)).remove(0);
        book.record("r", 0, b"4", at(t0, 1));
        book.settle(&batch, LookResult::Inconsistent(&ids(&["4"])), at(t0, 1));
        let tally = book.tally("r");
        assert_eq!((tally.samples, tally.superseded), (2, 1));
        assert_eq!(book.pending(), 1);
    }

    #[test]
    fn an_unknown_look_is_never_inconsistent() {
        let t0 = Instant::now();
        let mut book = book();
        book.record("r", 0, b"4", t0);
        let batch = take(&mut book, at(t0, 1)).remove(0);
        assert!(book
            .settle(&batch, LookResult::Unknown, at(t0, 1))
            .is_empty());
        let tally = book.tally("r");
        assert_eq!((tally.unknown, tally.inconsistent), (1, 0));
        assert_eq!(book.pending(), 0);
    }

    #[test]
    fn past_the_bound_new_samples_are_dropped_and_counted() {
        let t0 = Instant::now();
        let mut book = WatchSamples::new(2, LOOKS);
        for id in ["1", "2", "3", "4"] {
            book.record("r", 0, id.as_bytes(), t0);
        }
        // A known id still coalesces.
        book.record("r", 0, b"1", t0);
        let tally = book.tally("r");
        assert_eq!((tally.samples, tally.dropped), (2, 2));
        assert_eq!(book.pending(), 2);
    }

    #[test]
    fn batches_respect_the_query_budget_and_size() {
        let t0 = Instant::now();
        let mut book = book();
        for id in 0..5 {
            book.record("a", 0, id.to_string().as_bytes(), t0);
            book.record("b", 0, id.to_string().as_bytes(), t0);
        }
        for id in 0..5 {
            book.record("a", 1, id.to_string().as_bytes(), t0);
        }
        let one = book.take_due(at(t0, 1), 1, 3, |_| true);
        assert_eq!(one.len(), 1);
        assert_eq!(
            (one[0].rule.as_str(), one[0].db, one[0].items.len()),
            ("a", 0, 3)
        );
        let rest = book.take_due(at(t0, 1), 10, 1000, |_| true);
        let sizes: Vec<(&str, i64, usize)> = rest
            .iter()
            .map(|b| (b.rule.as_str(), b.db, b.items.len()))
            .collect();
        assert_eq!(sizes, [("a", 0, 2), ("a", 1, 5), ("b", 0, 5)]);
    }

    #[test]
    fn a_flush_ends_pending_samples_as_unknown() {
        let t0 = Instant::now();
        let mut book = book();
        book.record("r", 0, b"1", t0);
        book.record("r", 1, b"1", t0);
        book.clear(Some(0));
        assert_eq!(book.tally("r").unknown, 1);
        assert_eq!(book.pending(), 1);
        let batch = take(&mut book, at(t0, 1));
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].db, 1);
        // A look in flight across a flush settles nothing.
        book.clear(None);
        assert!(book
            .settle(&batch[0], LookResult::Inconsistent(&ids(&["1"])), at(t0, 1))
            .is_empty());
        assert_eq!(book.tally("r").unknown, 2);
        assert_eq!(book.pending(), 0);
    }

    #[test]
    fn rules_no_longer_watched_are_forgotten() {
        let t0 = Instant::now();
        let mut book = book();
        book.record("gone", 0, b"1", t0);
        assert!(book.take_due(at(t0, 1), 10, 10, |r| r != "gone").is_empty());
        assert_eq!(book.pending(), 0);
        assert_eq!(book.tally("gone"), WatchTally::default());
    }

    #[test]
    fn nines_are_minus_log10_of_the_inconsistent_share() {
        let tally = |samples, inconsistent| WatchTally {
            samples,
            inconsistent,
            ..WatchTally::default()
        };
        assert_eq!(tally(1000, 1).nines(), "3.00");
        assert_eq!(tally(3000, 2).nines(), "3.18");
        assert_eq!(tally(0, 0).nines(), "inf");
        assert_eq!(tally(10, 0).nines(), "inf");
    }
}
