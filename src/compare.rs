//! Drift comparison: one cached key against its truth, with no Redis types.
//! The keyspace reader turns a key into a [`CachedKey`]; this module decides which
//! status, if any, it earns.

use crate::reply::bytes_as_text;
use crate::rules::{MissingPolicy, Rule, RuleKind};

/// Why an entry is in a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Drift,
    Invalid,
    Orphan,
    Missing,
    NoTtl,
}

impl Status {
    /// Every status, in the documented order.
    pub const ALL: [Status; 5] = [
        Status::Drift,
        Status::Invalid,
        Status::Orphan,
        Status::Missing,
        Status::NoTtl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::Drift => "drift",
            Status::Invalid => "invalid",
            Status::Orphan => "orphan",
            Status::Missing => "missing",
            Status::NoTtl => "no_ttl",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What the cache holds for one rule's key, as read in process.
#[derive(Clone, Debug, PartialEq)]
pub enum CachedValue {
    /// No key, or a logically expired one.
    Absent,
    /// A STRING value (number rules) or the HASH field (hash_field rules).
    Text(Vec<u8>),
    /// A window_sum ZSET summed over the window; `unparsed` holds the first member
    /// whose amount could not be read, which makes the key invalid.
    WindowSum { sum: f64, unparsed: Option<Vec<u8>> },
    /// The key exists; presence rules look no further.
    Present,
    /// The key holds a type the rule cannot read (the name of that type).
    WrongType(&'static str),
    /// hash_field: the hash exists but lacks the field.
    NoField,
}

impl CachedValue {
    /// Bytes the value holds, roughly: what reading or logging it costs.
    pub fn size(&self) -> usize {
        match self {
            CachedValue::Text(bytes) => bytes.len(),
            CachedValue::WindowSum {
                unparsed: Some(m), ..
            } => m.len(),
            _ => 0,
        }
    }
}

/// One cached key: its value and whether it carries a TTL.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedKey {
    pub value: CachedValue,
    pub has_ttl: bool,
}

impl CachedKey {
    pub const ABSENT: CachedKey = CachedKey {
        value: CachedValue::Absent,
        has_ttl: false,
    };

    pub fn is_present(&self) -> bool {
        self.value != CachedValue::Absent
    }

    /// The value as a report shows it: as stored, or the computed window sum.
    pub fn display(&self) -> Option<String> {
        match &self.value {
            CachedValue::Absent | CachedValue::NoField => None,
            CachedValue::Text(bytes) => Some(bytes_as_text(bytes)),
            CachedValue::WindowSum {
                unparsed: Some(m), ..
            } => Some(bytes_as_text(m)),
            CachedValue::WindowSum { sum, .. } => Some(format_number(*sum)),
            CachedValue::Present => Some(String::new()),
            CachedValue::WrongType(t) => Some(format!("({t})")),
        }
    }
}

/// A number formatted the way Redis prints INCRBYFLOAT results: shortest round-trip.
pub fn format_number(v: f64) -> String {
    format!("{v}")
}

/// One finding of a check.
#[derive(Clone, Debug, PartialEq)]
pub struct DriftEntry {
    pub rule: String,
    pub id: Vec<u8>,
    pub key: Vec<u8>,
    pub status: Status,
    pub cached: Option<String>,
    pub truth: Option<String>,
    pub diff: Option<f64>,
    /// What the key held when this was found: a repair goes ahead only if the key
    /// still holds it.
    pub seen: CachedValue,
}

/// How far a cached number may stray from the truth before it is drift.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub threshold: f64,
    pub pct: Option<f64>,
}

impl Tolerance {
    /// Drift needs |diff| > threshold, and also |diff| > pct% of |truth| when a
    /// percentage is set: small absolute noise on big totals is not drift.
    pub fn exceeded(&self, diff: f64, truth: f64) -> bool {
        let abs = diff.abs();
        abs > self.threshold && self.pct.is_none_or(|p| abs > p / 100.0 * truth.abs())
    }
}

/// The truth side of one comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Truth<'a> {
    /// The truth query returned this id, with this value (None: SQL NULL).
    Known(Option<&'a str>),
    /// The truth query did not return this id.
    Unknown,
}

/// Parses a cached or true number strictly: finite, no surrounding space.
pub fn parse_number(text: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(text).ok()?;
    let v: f64 = s.parse().ok()?;
    v.is_finite().then_some(v)
}

/// Compares one key of `rule` with its truth and returns what is wrong with it
/// (nothing, or one entry, or two when a drifted key also lacks a required TTL).
pub fn compare_key(
    rule: &Rule,
    tolerance: Tolerance,
    id: &[u8],
    key: &[u8],
    cached: &CachedKey,
    truth: Truth<'_>,
) -> Vec<DriftEntry> {
    let entry = |status, cached_text: Option<String>, truth_text: Option<&str>, diff| DriftEntry {
        rule: rule.name.clone(),
        id: id.to_vec(),
        key: key.to_vec(),
        status,
        cached: cached_text,
        truth: truth_text.map(str::to_string),
        diff,
        seen: cached.value.clone(),
    };
    let truth_text = match truth {
        Truth::Known(v) => v,
        Truth::Unknown => None,
    };
    let mut found = Vec::new();

    if !cached.is_present() {
        if matches!(truth, Truth::Known(_)) && rule.missing == MissingPolicy::Report {
            found.push(entry(Status::Missing, None, truth_text, None));
        }
        return found;
    }
    if rule.require_ttl && !cached.has_ttl {
        found.push(entry(Status::NoTtl, cached.display(), truth_text, None));
    }
    // An id the truth knows is text; any other id must be, or it was never sent
    // to PostgreSQL and the key cannot be checked.
    if truth == Truth::Unknown && (std::str::from_utf8(id).is_err() || id.contains(&0)) {
        found.insert(0, entry(Status::Invalid, cached.display(), None, None));
        return found;
    }

    let cached_number = match (&rule.kind, &cached.value) {
        (RuleKind::Presence, _) => None,
        (_, CachedValue::Text(bytes)) => match parse_number(bytes) {
            Some(v) => Some(v),
            None => {
                return invalid(
                    found,
                    entry(Status::Invalid, cached.display(), truth_text, None),
                )
            }
        },
        (
            _,
            CachedValue::WindowSum {
                sum,
                unparsed: None,
            },
        ) => Some(*sum),
        (_, CachedValue::NoField) => {
            // The hash is there but not the field: as good as a missing key.
            found.clear();
            if matches!(truth, Truth::Known(_)) && rule.missing == MissingPolicy::Report {
                found.push(entry(Status::Missing, None, truth_text, None));
            }
            return found;
        }
        _ => {
            return invalid(
                found,
                entry(Status::Invalid, cached.display(), truth_text, None),
            )
        }
    };

    let Truth::Known(value) = truth else {
        found.insert(0, entry(Status::Orphan, cached.display(), None, None));
        return found;
    };
    let Some(cached_number) = cached_number else {
        return found; // presence: the key exists for a known id
    };
    // SQL NULL is an empty sum: zero.
    let true_number = match value {
        None => 0.0,
        Some(text) => match parse_number(text.as_bytes()) {
            Some(v) => v,
            None => return invalid(found, entry(Status::Invalid, cached.display(), value, None)),
        },
    };
    let diff = cached_number - true_number;
    if tolerance.exceeded(diff, true_number) {
        found.insert(0, entry(Status::Drift, cached.display(), value, Some(diff)));
    }
    found
}

fn invalid(mut found: Vec<DriftEntry>, entry: DriftEntry) -> Vec<DriftEntry> {
    found.insert(0, entry);
    found
}

/// Sums the members of a window_sum ZSET (already cut to the window by score).
/// Members end in `:<amount>`: `<ms>:<amount>` or `<ms>:<request id>:<amount>`.
#[derive(Default)]
pub struct WindowSummer {
    sum: f64,
    unparsed: Option<Vec<u8>>,
}

impl WindowSummer {
    pub fn add_member(&mut self, member: &[u8]) {
        if self.unparsed.is_some() {
            return;
        }
        let amount = member
            .iter()
            .rposition(|&b| b == b':')
            .and_then(|i| parse_number(&member[i + 1..]));
        match amount {
            Some(v) => self.sum += v,
            None => self.unparsed = Some(member.to_vec()),
        }
    }

    pub fn finish(self) -> CachedValue {
        CachedValue::WindowSum {
            sum: self.sum,
            unparsed: self.unparsed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    fn rule(kind_json: &str) -> Rule {
        let json = format!(r#"{{"rules":[{{"name":"r","key":"k:{{id}}",{kind_json}}}]}}"#);
        RuleSet::parse(&json).unwrap().rules()[0].clone()
    }

    fn number_rule() -> Rule {
        rule(r#""kind":"number","truth":"SELECT 1, 2""#)
    }

    const TOL: Tolerance = Tolerance {
        threshold: 5.0,
        pct: None,
    };

    fn text(v: &str) -> CachedKey {
        CachedKey {
            value: CachedValue::Text(v.as_bytes().to_vec()),
            has_ttl: true,
        }
    }

    fn statuses(found: &[DriftEntry]) -> Vec<Status> {
        found.iter().map(|e| e.status).collect()
    }

    #[test]
    fn drift_beyond_threshold_only() {
        let r = number_rule();
        let found = compare_key(
            &r,
            TOL,
            b"4",
            b"k:4",
            &text("50.1"),
            Truth::Known(Some("12.8")),
        );
        assert_eq!(statuses(&found), vec![Status::Drift]);
        assert!((found[0].diff.unwrap() - 37.3).abs() < 1e-9);
        assert_eq!(found[0].cached.as_deref(), Some("50.1"));
        assert_eq!(found[0].truth.as_deref(), Some("12.8"));
        let near = compare_key(
            &r,
            TOL,
            b"4",
            b"k:4",
            &text("17.8"),
            Truth::Known(Some("12.8")),
        );
        assert!(
            near.is_empty(),
            "exactly 5.0 apart is not beyond the threshold"
        );
        let below = compare_key(
            &r,
            TOL,
            b"4",
            b"k:4",
            &text("1"),
            Truth::Known(Some("12.8")),
        );
        assert_eq!(statuses(&below), vec![Status::Drift]);
        assert!(below[0].diff.unwrap() < 0.0);
    }

    #[test]
    fn pct_threshold_needs_both() {
        let tol = Tolerance {
            threshold: 5.0,
            pct: Some(10.0),
        };
        assert!(!tol.exceeded(6.0, 100.0), "6 is under 10% of 100");
        assert!(tol.exceeded(11.0, 100.0));
        assert!(
            !tol.exceeded(4.0, 10.0),
            "4 is under the absolute threshold"
        );
        assert!(tol.exceeded(-11.0, -100.0));
    }

    #[test]
    fn unparseable_and_non_finite_values_are_invalid() {
        let r = number_rule();
        for bad in ["abc", "nan", "inf", "-infinity", " 5", "5 ", "", "1e999"] {
            let found = compare_key(&r, TOL, b"4", b"k:4", &text(bad), Truth::Known(Some("1")));
            assert_eq!(statuses(&found), vec![Status::Invalid], "value {bad:?}");
        }
        let wrong = CachedKey {
            value: CachedValue::WrongType("hash"),
            has_ttl: false,
        };
        let found = compare_key(&r, TOL, b"4", b"k:4", &wrong, Truth::Known(Some("1")));
        assert_eq!(statuses(&found), vec![Status::Invalid]);
        assert_eq!(found[0].cached.as_deref(), Some("(hash)"));
    }

    #[test]
    fn unknown_id_is_orphan_and_null_truth_is_zero() {
        let r = number_rule();
        let found = compare_key(&r, TOL, b"9", b"k:9", &text("1"), Truth::Unknown);
        assert_eq!(statuses(&found), vec![Status::Orphan]);
        assert_eq!(found[0].truth, None);
        let found = compare_key(&r, TOL, b"9", b"k:9", &text("6"), Truth::Known(None));
        assert_eq!(statuses(&found), vec![Status::Drift]);
        assert_eq!(found[0].diff, Some(6.0));
    }

    #[test]
    fn bad_id_bytes_are_invalid_never_orphan() {
        let r = number_rule();
        let found = compare_key(&r, TOL, b"\xff", b"k:\xff", &text("1"), Truth::Unknown);
        assert_eq!(statuses(&found), vec![Status::Invalid]);
        let found = compare_key(&r, TOL, b"a\0b", b"k:a\0b", &text("1"), Truth::Unknown);
        assert_eq!(statuses(&found), vec![Status::Invalid]);
    }

    #[test]
    fn missing_follows_the_rule() {
        let r = number_rule();
        let found = compare_key(
            &r,
            TOL,
            b"4",
            b"k:4",
            &CachedKey::ABSENT,
            Truth::Known(Some("3")),
        );
        assert!(
            found.is_empty(),
            "valued kinds ignore missing keys by default"
        );
        let mut report = r.clone();
        report.missing = MissingPolicy::Report;
        let found = compare_key(
            &report,
            TOL,
            b"4",
            b"k:4",
            &CachedKey::ABSENT,
            Truth::Known(Some("3")),
        );
        assert_eq!(statuses(&found), vec![Status::Missing]);
        let found = compare_key(
            &report,
            TOL,
            b"4",
            b"k:4",
            &CachedKey::ABSENT,
            Truth::Unknown,
        );
        assert!(found.is_empty());
    }

    #[test]
    fn presence_reports_missing_and_orphans() {
        let r = rule(r#""kind":"presence","truth":"SELECT id FROM t""#);
        let present = CachedKey {
            value: CachedValue::Present,
            has_ttl: false,
        };
        assert!(compare_key(&r, TOL, b"a", b"k:a", &present, Truth::Known(None)).is_empty());
        let found = compare_key(&r, TOL, b"a", b"k:a", &present, Truth::Unknown);
        assert_eq!(statuses(&found), vec![Status::Orphan]);
        let found = compare_key(
            &r,
            TOL,
            b"a",
            b"k:a",
            &CachedKey::ABSENT,
            Truth::Known(None),
        );
        assert_eq!(statuses(&found), vec![Status::Missing]);
    }

    #[test]
    fn require_ttl_adds_no_ttl() {
        let mut r = number_rule();
        r.require_ttl = true;
        let mut key = text("50");
        key.has_ttl = false;
        let found = compare_key(&r, TOL, b"4", b"k:4", &key, Truth::Known(Some("1")));
        assert_eq!(statuses(&found), vec![Status::Drift, Status::NoTtl]);
        let found = compare_key(&r, TOL, b"4", b"k:4", &key, Truth::Known(Some("50")));
        assert_eq!(statuses(&found), vec![Status::NoTtl]);
    }

    #[test]
    fn hash_without_field_counts_as_missing() {
        let mut r = rule(r#""kind":"hash_field","field":"f","truth":"SELECT 1, 2""#);
        let key = CachedKey {
            value: CachedValue::NoField,
            has_ttl: true,
        };
        assert!(compare_key(&r, TOL, b"1", b"k:1", &key, Truth::Known(Some("2"))).is_empty());
        r.missing = MissingPolicy::Report;
        let found = compare_key(&r, TOL, b"1", b"k:1", &key, Truth::Known(Some("2")));
        assert_eq!(statuses(&found), vec![Status::Missing]);
    }

    #[test]
    fn window_members_sum_by_trailing_amount() {
        let mut s = WindowSummer::default();
        s.add_member(b"1732100000000:0.25");
        s.add_member(b"1732100000000:req-42:0.25");
        assert_eq!(
            s.finish(),
            CachedValue::WindowSum {
                sum: 0.5,
                unparsed: None
            }
        );
        let mut s = WindowSummer::default();
        s.add_member(b"1732100000000:0.25");
        s.add_member(b"garbage");
        s.add_member(b"1:x");
        assert_eq!(
            s.finish(),
            CachedValue::WindowSum {
                sum: 0.25,
                unparsed: Some(b"garbage".to_vec())
            }
        );
    }

    #[test]
    fn invalid_window_member_makes_key_invalid() {
        let r = rule(
            r#""kind":"window_sum","window_ms":1000,"truth":"SELECT 1, 2 WHERE $1 IS NOT NULL""#,
        );
        let key = CachedKey {
            value: CachedValue::WindowSum {
                sum: 1.0,
                unparsed: Some(b"oops".to_vec()),
            },
            has_ttl: true,
        };
        let found = compare_key(&r, TOL, b"1", b"k:1", &key, Truth::Known(Some("1")));
        assert_eq!(statuses(&found), vec![Status::Invalid]);
        assert_eq!(found[0].cached.as_deref(), Some("oops"));
    }
}
