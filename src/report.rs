//! Shaping a check's findings into the documented reply, with no Redis types.

use std::cmp::Ordering;

use crate::compare::{DriftEntry, Status, STATUS_COUNT};
use crate::dirty::FullReason;
use crate::fix::{FixIdsOutcome, FixOutcome};
use crate::purge::PurgeOutcome;
use crate::reply::Reply;

/// Keys compared and findings for one rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleTally {
    pub rule: String,
    pub checked: u64,
    pub drifted: u64,
}

/// Whether a check read every key or only the ids that changed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum CheckMode {
    /// Every key of the selected rules (or the given ids).
    #[default]
    Full,
    /// A CHECK CHANGED that had to read everything, and why.
    FullInstead(FullReason),
    /// Only the ids whose keys were written, expired or evicted, or whose
    /// truth the rule's `changed` query returned.
    Changed,
}

impl CheckMode {
    /// The reply's `mode` field.
    pub fn name(self) -> &'static str {
        match self {
            CheckMode::Full | CheckMode::FullInstead(_) => "full",
            CheckMode::Changed => "changed",
        }
    }

    /// The reply's `reason` field.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            CheckMode::FullInstead(why) => Some(why.as_str()),
            _ => None,
        }
    }
}

/// Everything a finished check knows, before LIMIT cuts the entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckReport {
    pub checked: u64,
    pub ids: u64,
    pub by_rule: Vec<RuleTally>,
    pub rounds: u32,
    pub duration_ms: u64,
    pub truth_ms: u64,
    /// Sorted as reported: see [`CheckReport::sort_entries`].
    pub entries: Vec<DriftEntry>,
    pub mode: CheckMode,
}

impl CheckReport {
    /// Largest absolute diff first; entries without a diff follow, by rule, then key.
    pub fn sort_entries(&mut self) {
        self.entries.sort_by(entry_order);
    }

    pub fn drifted(&self) -> u64 {
        self.entries.len() as u64
    }

    /// drifted / checked, 0 when nothing was checked.
    pub fn rate(&self) -> f64 {
        if self.checked == 0 {
            0.0
        } else {
            self.drifted() as f64 / self.checked as f64
        }
    }

    /// Count of entries per status, in [`Status::ALL`] order.
    pub fn by_status(&self) -> [u64; STATUS_COUNT] {
        let mut counts = [0; STATUS_COUNT];
        for e in &self.entries {
            counts[e.status.index()] += 1;
        }
        counts
    }

    /// The entry with the largest absolute diff.
    pub fn max_diff(&self) -> Option<&DriftEntry> {
        self.entries
            .iter()
            .filter(|e| e.diff.is_some())
            .max_by(|a, b| abs_diff(a).total_cmp(&abs_diff(b)))
    }

    /// The documented CHECK fields; `action` (by entry index) adds an `action` to
    /// each entry (FIX ALL).
    pub fn fields(
        &self,
        limit: usize,
        action: &dyn Fn(usize) -> Option<&'static str>,
    ) -> Vec<(&'static str, Reply)> {
        let max = self.max_diff();
        let shown = self.entries.len().min(limit);
        vec![
            ("checked", Reply::Int(self.checked as i64)),
            ("ids", Reply::Int(self.ids as i64)),
            ("drifted", Reply::Int(self.drifted() as i64)),
            ("rate", Reply::Double(self.rate())),
            ("max_diff", Reply::opt_double(max.map(abs_diff))),
            (
                "max_diff_key",
                max.map_or(Reply::Null, |e| Reply::Bulk(e.key.clone())),
            ),
            ("by_status", status_counts_reply(&self.by_status())),
            (
                "by_rule",
                Reply::NamedMap(
                    self.by_rule
                        .iter()
                        .map(|t| {
                            (
                                t.rule.clone(),
                                Reply::Map(vec![
                                    ("checked", Reply::Int(t.checked as i64)),
                                    ("drifted", Reply::Int(t.drifted as i64)),
                                ]),
                            )
                        })
                        .collect(),
                ),
            ),
            ("rounds", Reply::Int(i64::from(self.rounds))),
            ("duration_ms", Reply::Int(self.duration_ms as i64)),
            ("truth_ms", Reply::Int(self.truth_ms as i64)),
            ("truncated", Reply::Int((self.entries.len() - shown) as i64)),
            (
                "entries",
                Reply::Array(
                    self.entries[..shown]
                        .iter()
                        .enumerate()
                        .map(|(i, e)| entry_reply(e, action(i)))
                        .collect(),
                ),
            ),
            ("mode", Reply::text(self.mode.name())),
            ("reason", Reply::opt_text(self.mode.reason())),
        ]
    }

    /// The CONSISTENCY.CHECK reply.
    pub fn to_reply(&self, limit: usize) -> Reply {
        Reply::Map(self.fields(limit, &|_| None))
    }
}

/// The FIX ALL reply: the check's fields (each entry with its action), then
/// `dry_run`, `changed`, `skipped`.
pub fn fix_all_reply(report: &CheckReport, outcome: &FixOutcome, limit: usize) -> Reply {
    let mut fields = report.fields(limit, &|i| Some(outcome.actions[i].name()));
    fields.push(("dry_run", Reply::Bool(outcome.dry_run)));
    fields.push(("changed", Reply::Int(outcome.changed as i64)));
    fields.push(("skipped", Reply::Int(outcome.skipped as i64)));
    Reply::Map(fields)
}

/// The reply to FIX of given ids: entries carry their action, not a status.
pub fn fix_ids_reply(outcome: &FixIdsOutcome) -> Reply {
    let truth = match &outcome.truth_error {
        None => "ok".to_string(),
        Some(e) => format!("unavailable: {e}"),
    };
    let entries = outcome
        .entries
        .iter()
        .zip(&outcome.fix.actions)
        .map(|(e, a)| {
            let Reply::Map(mut fields) = entry_reply(e, Some(a.name())) else {
                unreachable!("entry_reply builds a map")
            };
            fields.retain(|(name, _)| *name != "status");
            Reply::Map(fields)
        })
        .collect();
    Reply::Map(vec![
        ("dry_run", Reply::Bool(outcome.fix.dry_run)),
        ("truth", Reply::text(truth)),
        ("changed", Reply::Int(outcome.fix.changed as i64)),
        ("skipped", Reply::Int(outcome.fix.skipped as i64)),
        ("entries", Reply::Array(entries)),
    ])
}

/// The PURGE reply.
pub fn purge_reply(outcome: &PurgeOutcome) -> Reply {
    Reply::Map(vec![
        ("matched", Reply::Int(outcome.matched as i64)),
        ("deleted", Reply::Int(outcome.deleted as i64)),
        ("dry_run", Reply::Bool(outcome.dry_run)),
        ("duration_ms", Reply::Int(outcome.duration_ms as i64)),
    ])
}

/// `{drift, invalid, orphan, missing, no_ttl, bad_ttl, stale}` with zeros included.
pub fn status_counts_reply(counts: &[u64; STATUS_COUNT]) -> Reply {
    Reply::Map(
        Status::ALL
            .iter()
            .map(|s| (s.name(), Reply::Int(counts[s.index()] as i64)))
            .collect(),
    )
}

/// One entry: rule, id, key, status, cached, truth, diff, field (and action
/// for repairs).
pub fn entry_reply(e: &DriftEntry, action: Option<&'static str>) -> Reply {
    let mut fields = vec![
        ("rule", Reply::text(e.rule.clone())),
        ("id", Reply::Bulk(e.id.clone())),
        ("key", Reply::Bulk(e.key.clone())),
        ("status", Reply::text(e.status.name())),
        ("cached", Reply::opt_text(e.cached.clone())),
        ("truth", Reply::opt_text(e.truth.clone())),
        ("diff", Reply::opt_double(e.diff)),
        ("field", Reply::opt_text(e.field.clone())),
    ];
    if let Some(a) = action {
        fields.push(("action", Reply::text(a)));
    }
    Reply::Map(fields)
}

fn abs_diff(e: &DriftEntry) -> f64 {
    e.diff.map_or(0.0, f64::abs)
}

fn entry_order(a: &DriftEntry, b: &DriftEntry) -> Ordering {
    match (a.diff, b.diff) {
        (Some(x), Some(y)) => y.abs().total_cmp(&x.abs()).then_with(|| by_rule_key(a, b)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => by_rule_key(a, b),
    }
}

fn by_rule_key(a: &DriftEntry, b: &DriftEntry) -> Ordering {
    a.rule
        .cmp(&b.rule)
        .then_with(|| a.key.cmp(&b.key))
        .then_with(|| a.status.cmp(&b.status))
        // A json document's fields, in name order (None, a whole key, first).
        .then_with(|| a.field.cmp(&b.field))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rule: &str, key: &str, status: Status, diff: Option<f64>) -> DriftEntry {
        DriftEntry {
            rule: rule.into(),
            id: key.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
            status,
            cached: Some("1".into()),
            truth: None,
            diff,
            field: None,
            seen: crate::compare::CachedValue::Absent,
        }
    }

    fn report() -> CheckReport {
        let mut r = CheckReport {
            checked: 10,
            ids: 8,
            by_rule: vec![RuleTally {
                rule: "a".into(),
                checked: 10,
                drifted: 4,
            }],
            rounds: 2,
            duration_ms: 7,
            truth_ms: 3,
            mode: CheckMode::Full,
            entries: vec![
                entry("b", "k2", Status::Orphan, None),
                entry("a", "k1", Status::Drift, Some(6.0)),
                entry("a", "k9", Status::Drift, Some(-40.0)),
                entry("a", "k3", Status::Invalid, None),
            ],
        };
        r.sort_entries();
        r
    }

    #[test]
    fn entries_sort_by_abs_diff_then_rule_and_key() {
        let keys: Vec<_> = report().entries.iter().map(|e| e.key.clone()).collect();
        assert_eq!(
            keys,
            vec![
                b"k9".to_vec(),
                b"k1".to_vec(),
                b"k3".to_vec(),
                b"k2".to_vec()
            ]
        );
    }

    #[test]
    fn reply_has_fields_in_order_and_counts() {
        let r = report();
        let reply = r.to_reply(100);
        let Reply::Map(fields) = &reply else { panic!() };
        let names: Vec<_> = fields.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            vec![
                "checked",
                "ids",
                "drifted",
                "rate",
                "max_diff",
                "max_diff_key",
                "by_status",
                "by_rule",
                "rounds",
                "duration_ms",
                "truth_ms",
                "truncated",
                "entries",
                "mode",
                "reason"
            ]
        );
        assert_eq!(reply.get("drifted"), Some(&Reply::Int(4)));
        assert_eq!(reply.get("rate"), Some(&Reply::Double(0.4)));
        assert_eq!(reply.get("max_diff"), Some(&Reply::Double(40.0)));
        assert_eq!(
            reply.get("max_diff_key"),
            Some(&Reply::Bulk(b"k9".to_vec()))
        );
        let by_status = reply.get("by_status").unwrap();
        assert_eq!(by_status.get("drift"), Some(&Reply::Int(2)));
        assert_eq!(by_status.get("no_ttl"), Some(&Reply::Int(0)));
    }

    #[test]
    fn limit_truncates_entries_not_counts() {
        let reply = report().to_reply(1);
        assert_eq!(reply.get("truncated"), Some(&Reply::Int(3)));
        assert_eq!(reply.get("drifted"), Some(&Reply::Int(4)));
        let Some(Reply::Array(items)) = reply.get("entries") else {
            panic!()
        };
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].get("key"), Some(&Reply::Bulk(b"k9".to_vec())));
    }

    #[test]
    fn empty_report_has_zero_rate_and_null_max() {
        let reply = CheckReport::default().to_reply(100);
        assert_eq!(reply.get("mode"), Some(&Reply::text("full")));
        assert_eq!(reply.get("reason"), Some(&Reply::Null));
        let instead = CheckReport {
            mode: CheckMode::FullInstead(FullReason::Overflowed),
            ..CheckReport::default()
        };
        assert_eq!(
            instead.to_reply(1).get("reason"),
            Some(&Reply::text("dirty set overflowed"))
        );
        assert_eq!(reply.get("rate"), Some(&Reply::Double(0.0)));
        assert_eq!(reply.get("max_diff"), Some(&Reply::Null));
        assert_eq!(reply.get("max_diff_key"), Some(&Reply::Null));
    }

    #[test]
    fn action_is_appended_to_entries() {
        let r = report();
        let fields = r.fields(100, &|i| {
            (r.entries[i].status == Status::Drift).then_some("deleted")
        });
        let entries = &fields.iter().find(|(n, _)| *n == "entries").unwrap().1;
        let Reply::Array(items) = entries else {
            panic!()
        };
        assert_eq!(items[0].get("action"), Some(&Reply::text("deleted")));
        assert_eq!(items[3].get("action"), None);
    }
}
