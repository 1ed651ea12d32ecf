//! Drift comparison: one cached key against its truth, with no Redis types.
//! The keyspace reader turns a key into a [`CachedKey`]; this module decides which
//! status, if any, it earns.

use crate::decimal::Decimal;
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
    BadTtl,
    Stale,
}

/// How many statuses there are: `by_status` lists them all, zeros included.
pub const STATUS_COUNT: usize = 7;

impl Status {
    /// Every status, in the documented order.
    pub const ALL: [Status; STATUS_COUNT] = [
        Status::Drift,
        Status::Invalid,
        Status::Orphan,
        Status::Missing,
        Status::NoTtl,
        Status::BadTtl,
        Status::Stale,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::Drift => "drift",
            Status::Invalid => "invalid",
            Status::Orphan => "orphan",
            Status::Missing => "missing",
            Status::NoTtl => "no_ttl",
            Status::BadTtl => "bad_ttl",
            Status::Stale => "stale",
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
    WindowSum {
        sum: Amount,
        unparsed: Option<Vec<u8>>,
    },
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

/// One cached key: its value and its TTL.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedKey {
    pub value: CachedValue,
    /// Milliseconds left to live; None when the key has no TTL.
    pub ttl_ms: Option<u64>,
}

impl CachedKey {
    pub const ABSENT: CachedKey = CachedKey {
        value: CachedValue::Absent,
        ttl_ms: None,
    };

    pub fn has_ttl(&self) -> bool {
        self.ttl_ms.is_some()
    }

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
            CachedValue::WindowSum { sum, .. } => Some(sum.to_string()),
            CachedValue::Present => Some(String::new()),
            CachedValue::WrongType(t) => Some(format!("({t})")),
        }
    }
}

/// A number formatted the way Redis prints INCRBYFLOAT results: shortest round-trip.
pub fn format_number(v: f64) -> String {
    format!("{v}")
}

/// A cached or true number: exact when its text is a decimal that fits a
/// [`Decimal`], else the nearest f64 (huge values, long fractions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    Exact(Decimal),
    Approx(f64),
}

impl Amount {
    pub const ZERO: Amount = Amount::Exact(Decimal::ZERO);

    /// Reads a number as strictly as [`parse_number`]; exact when it can be.
    pub fn parse(text: &[u8]) -> Option<Amount> {
        // Whatever Decimal reads, parse_number reads too, so the validity of a
        // value does not depend on which path read it.
        match Decimal::parse(text) {
            Some(d) => Some(Amount::Exact(d)),
            None => parse_number(text).map(Amount::Approx),
        }
    }

    pub fn to_f64(self) -> f64 {
        match self {
            Amount::Exact(d) => d.to_f64(),
            Amount::Approx(v) => v,
        }
    }

    /// `self - other`, exact when both are and the result fits.
    pub fn minus(self, other: Amount) -> Amount {
        if let (Amount::Exact(a), Amount::Exact(b)) = (self, other) {
            if let Some(d) = a.checked_sub(b) {
                return Amount::Exact(d);
            }
        }
        Amount::Approx(self.to_f64() - other.to_f64())
    }
}

impl std::fmt::Display for Amount {
    /// Exact: plain decimal text (`0.3`); else as [`format_number`].
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Amount::Exact(d) => write!(f, "{d}"),
            Amount::Approx(v) => f.write_str(&format_number(*v)),
        }
    }
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
    /// The JSON field this entry is about (json rules), else None.
    pub field: Option<String>,
    /// What the key held when this was found: a repair goes ahead only if the key
    /// still holds it.
    pub seen: CachedValue,
}

/// How far a cached number may stray from the truth before it is drift.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub threshold: f64,
    pub pct: Option<f64>,
    /// The check's instant (epoch ms), which a json document's age is measured
    /// from; 0 unless set with [`Tolerance::at`].
    pub now_ms: i64,
    /// The same limits as exact decimals, converted once per check rather than
    /// per key; None when one does not convert (then f64 throughout).
    exact: Option<(Decimal, Option<Decimal>)>,
}

impl Tolerance {
    pub fn new(threshold: f64, pct: Option<f64>) -> Tolerance {
        let exact_pct = match pct {
            None => Some(None),
            Some(p) => Decimal::from_f64(p).map(Some),
        };
        Tolerance {
            threshold,
            pct,
            exact: Decimal::from_f64(threshold).zip(exact_pct),
            now_ms: 0,
        }
    }

    /// The same tolerance, ages measured at `now_ms`.
    pub fn at(mut self, now_ms: i64) -> Tolerance {
        self.now_ms = now_ms;
        self
    }

    /// Drift needs |diff| > threshold, and also |diff| > pct% of |truth| when a
    /// percentage is set: small absolute noise on big totals is not drift.
    /// Exact when diff and truth are and the limits convert; else in f64.
    pub fn exceeded(&self, diff: Amount, truth: Amount) -> bool {
        if let (Amount::Exact(d), Amount::Exact(t)) = (diff, truth) {
            if let Some(verdict) = self.exceeded_exactly(d, t) {
                return verdict;
            }
        }
        let abs = diff.to_f64().abs();
        abs > self.threshold
            && self
                .pct
                .is_none_or(|p| abs > p / 100.0 * truth.to_f64().abs())
    }

    /// |diff| > threshold and, with a percentage, 100 * |diff| > pct * |truth|
    /// (multiplied out, so no division rounds). None when something does not fit.
    fn exceeded_exactly(&self, diff: Decimal, truth: Decimal) -> Option<bool> {
        let (threshold, pct) = self.exact?;
        let abs = diff.checked_abs()?;
        if abs <= threshold {
            return Some(false);
        }
        let Some(pct) = pct else {
            return Some(true);
        };
        let scaled = abs.checked_mul(Decimal::integer(100))?;
        let limit = truth.checked_abs()?.checked_mul(pct)?;
        Some(scaled > limit)
    }
}

/// The truth side of one comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Truth<'a> {
    /// The truth query returned this id, with this value (None: SQL NULL).
    Known(Option<&'a str>),
    /// json rules: the truth's row, `values[i]` being field `names[i]`.
    Document {
        names: &'a [std::sync::Arc<str>],
        values: &'a [Option<String>],
    },
    /// The truth query did not return this id.
    Unknown,
}

impl<'a> Truth<'a> {
    /// The single value a report shows as `truth` (None for documents).
    pub fn value(self) -> Option<&'a str> {
        match self {
            Truth::Known(v) => v,
            Truth::Document { .. } | Truth::Unknown => None,
        }
    }
}

/// Parses a cached or true number strictly: finite, no surrounding space.
pub fn parse_number(text: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(text).ok()?;
    let v: f64 = s.parse().ok()?;
    v.is_finite().then_some(v)
}

/// What one present-or-absent key is against its truth, before any threshold
/// or policy: the one classifier behind CHECK's statuses and FIX's repairs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// No key, or a hash without the rule's field: as good as no key.
    Absent,
    /// The key exists, but its id was never sent to PostgreSQL (not UTF-8, or NUL).
    BadId,
    /// The key holds something the rule cannot read as a number.
    Unreadable { wrong_type: bool },
    /// The key exists and the truth does not know its id.
    Orphan,
    /// A presence key that exists for an id the truth knows: as it should be.
    Present,
    /// The truth's value for this id is not a number.
    BadTruth,
    /// Both sides are numbers: cached minus truth, and the truth.
    Compared { diff: Amount, truth: Amount },
    /// A json document the truth knows: its fields are compared one by one.
    Document,
}

/// Classifies one key of a rule of `kind` against its truth.
pub fn classify(kind: &RuleKind, id: &[u8], cached: &CachedValue, truth: Truth<'_>) -> Verdict {
    if matches!(cached, CachedValue::Absent | CachedValue::NoField) {
        return Verdict::Absent;
    }
    // An id the truth knows is text; any other id must be, or it was never sent
    // to PostgreSQL and the key cannot be checked.
    if truth == Truth::Unknown && (std::str::from_utf8(id).is_err() || id.contains(&0)) {
        return Verdict::BadId;
    }
    let cached_number = match (kind, cached) {
        (RuleKind::Presence, _) => None,
        (RuleKind::Json, CachedValue::Text(_)) => {
            return match truth {
                Truth::Unknown => Verdict::Orphan,
                _ => Verdict::Document,
            }
        }
        (_, CachedValue::WrongType(_)) => return Verdict::Unreadable { wrong_type: true },
        (_, value) => match cached_amount(value) {
            Some(v) => Some(v),
            None => return Verdict::Unreadable { wrong_type: false },
        },
    };
    let value = match truth {
        Truth::Known(value) => value,
        Truth::Document { .. } => None,
        Truth::Unknown => return Verdict::Orphan,
    };
    let Some(cached_number) = cached_number else {
        return Verdict::Present;
    };
    match truth_amount(value) {
        Some(true_number) => Verdict::Compared {
            diff: cached_number.minus(true_number),
            truth: true_number,
        },
        None => Verdict::BadTruth,
    }
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
    let truth_text = truth.value();
    let entry = |status, cached_text: Option<String>, diff| DriftEntry {
        rule: rule.name.clone(),
        id: id.to_vec(),
        key: key.to_vec(),
        status,
        cached: cached_text,
        truth: truth_text.map(str::to_string),
        diff,
        field: None,
        seen: cached.value.clone(),
    };
    let verdict = classify(&rule.kind, id, &cached.value, truth);
    if verdict == Verdict::Absent {
        let reported = truth != Truth::Unknown && rule.missing == MissingPolicy::Report;
        return if reported {
            vec![entry(Status::Missing, None, None)]
        } else {
            Vec::new()
        };
    }
    if verdict == Verdict::Document {
        let mut found: Vec<DriftEntry> = document_findings(rule, tolerance, cached, truth)
            .into_iter()
            .map(|f| DriftEntry {
                truth: f.truth,
                // The whole document (not an object) names no field.
                field: (!f.field.is_empty()).then_some(f.field),
                ..entry(f.status, f.cached, f.diff)
            })
            .collect();
        found.extend(ttl_findings(rule, cached).map(|s| entry(s, cached.display(), None)));
        return found;
    }
    // The value's own finding comes first, then a missing TTL.
    let finding = match verdict {
        Verdict::Absent | Verdict::Present | Verdict::Document => None,
        Verdict::BadId | Verdict::Unreadable { .. } | Verdict::BadTruth => {
            Some(entry(Status::Invalid, cached.display(), None))
        }
        Verdict::Orphan => Some(entry(Status::Orphan, cached.display(), None)),
        Verdict::Compared { diff, truth } => tolerance
            .exceeded(diff, truth)
            .then(|| entry(Status::Drift, cached.display(), Some(diff.to_f64()))),
    };
    let mut found: Vec<DriftEntry> = finding.into_iter().collect();
    found.extend(ttl_findings(rule, cached).map(|s| entry(s, cached.display(), None)));
    found
}

/// A json document against its truth row: invalid when it is not an object,
/// stale when older than the rule allows (whatever the fields say), else one
/// finding per differing or absent field. An invalid document has no field.
fn document_findings(
    rule: &Rule,
    tolerance: Tolerance,
    cached: &CachedKey,
    truth: Truth<'_>,
) -> Vec<crate::compare_json::FieldFinding> {
    use crate::compare_json::{age_field_ms, compare_fields, Document, FieldFinding};
    let CachedValue::Text(bytes) = &cached.value else {
        return Vec::new();
    };
    let whole = |status| FieldFinding {
        status,
        field: String::new(),
        cached: cached.display(),
        truth: None,
        diff: None,
    };
    let Some(doc) = Document::parse(bytes) else {
        return vec![whole(Status::Invalid)];
    };
    if let Some(age) = &rule.age {
        let value = doc.get(&age.field);
        let at = value.as_ref().and_then(age_field_ms);
        let finding = |status| FieldFinding {
            status,
            field: age.field.clone(),
            cached: value.as_ref().map(|v| v.text()),
            truth: None,
            diff: None,
        };
        match at {
            None => return vec![finding(Status::Invalid)],
            Some(at) if tolerance.now_ms - at > (age.max_age_sec as i64).saturating_mul(1000) => {
                return vec![finding(Status::Stale)]
            }
            Some(_) => {}
        }
    }
    let Truth::Document { names, values } = truth else {
        return Vec::new();
    };
    compare_fields(&doc, names, values, tolerance)
}

/// What a present key's TTL earns: `no_ttl` without one where the rule
/// requires one, `bad_ttl` without one or above the rule's `ttl_max_sec` (a
/// key cached without its TTL never refreshes). The two options are
/// independent, so a key without a TTL under both gets both.
pub fn ttl_findings(rule: &Rule, cached: &CachedKey) -> impl Iterator<Item = Status> {
    let no_ttl = rule.require_ttl && !cached.has_ttl();
    let bad_ttl = rule
        .ttl_max_sec
        .is_some_and(|max| cached.ttl_ms.is_none_or(|ms| ms > max.saturating_mul(1000)));
    [(no_ttl, Status::NoTtl), (bad_ttl, Status::BadTtl)]
        .into_iter()
        .filter(|(found, _)| *found)
        .map(|(_, status)| status)
}

/// The number a cached value holds, if it holds one that can be read: a STRING
/// or hash field as text, or a window's sum.
pub fn cached_amount(value: &CachedValue) -> Option<Amount> {
    match value {
        CachedValue::Text(bytes) => Amount::parse(bytes),
        CachedValue::WindowSum {
            sum,
            unparsed: None,
        } => Some(*sum),
        _ => None,
    }
}

/// The number of a truth value; SQL NULL is an empty sum: zero. None when the
/// text is not a number.
pub fn truth_amount(value: Option<&str>) -> Option<Amount> {
    value.map_or(Some(Amount::ZERO), |text| Amount::parse(text.as_bytes()))
}

/// Sums the members of a window_sum ZSET (already cut to the window by score).
/// Members end in `:<amount>`: `<ms>:<amount>` or `<ms>:<request id>:<amount>`.
/// The sum is exact while every amount is a decimal that fits; from the first
/// one that is not, it goes on in f64.
pub struct WindowSummer {
    exact: Option<Decimal>,
    approx: f64,
    unparsed: Option<Vec<u8>>,
}

impl Default for WindowSummer {
    fn default() -> Self {
        WindowSummer {
            exact: Some(Decimal::ZERO),
            approx: 0.0,
            unparsed: None,
        }
    }
}

impl WindowSummer {
    pub fn add_member(&mut self, member: &[u8]) {
        if self.unparsed.is_some() {
            return;
        }
        let Some(colon) = member.iter().rposition(|&b| b == b':') else {
            self.unparsed = Some(member.to_vec());
            return;
        };
        let text = &member[colon + 1..];
        if let Some(sum) = self.exact {
            if let Some(sum) = Decimal::parse(text).and_then(|d| sum.checked_add(d)) {
                self.exact = Some(sum);
                return;
            }
        }
        match parse_number(text) {
            Some(v) => {
                if let Some(sum) = self.exact.take() {
                    self.approx = sum.to_f64();
                }
                self.approx += v;
            }
            None => self.unparsed = Some(member.to_vec()),
        }
    }

    pub fn finish(self) -> CachedValue {
        CachedValue::WindowSum {
            sum: self
                .exact
                .map_or(Amount::Approx(self.approx), Amount::Exact),
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

    /// The usual tolerance of these tests: 5 absolute, no percentage.
    fn tol() -> Tolerance {
        Tolerance::new(5.0, None)
    }

    fn text(v: &str) -> CachedKey {
        CachedKey {
            value: CachedValue::Text(v.as_bytes().to_vec()),
            ttl_ms: Some(3_600_000),
        }
    }

    fn statuses(found: &[DriftEntry]) -> Vec<Status> {
        found.iter().map(|e| e.status).collect()
    }

    #[test]
    fn classify_names_what_a_key_is_before_any_threshold() {
        let number = RuleKind::Number;
        let text = |v: &str| CachedValue::Text(v.as_bytes().to_vec());
        let known = |v| Truth::Known(Some(v));
        assert_eq!(
            classify(&number, b"1", &CachedValue::Absent, known("1")),
            Verdict::Absent
        );
        assert_eq!(
            classify(&number, b"1", &CachedValue::NoField, known("1")),
            Verdict::Absent
        );
        assert_eq!(
            classify(&number, b"\xff", &text("1"), Truth::Unknown),
            Verdict::BadId
        );
        assert_eq!(
            classify(&number, b"1", &text("abc"), known("1")),
            Verdict::Unreadable { wrong_type: false }
        );
        assert_eq!(
            classify(
                &number,
                b"1",
                &CachedValue::WrongType("list"),
                Truth::Unknown
            ),
            Verdict::Unreadable { wrong_type: true }
        );
        assert_eq!(
            classify(&number, b"1", &text("3"), Truth::Unknown),
            Verdict::Orphan
        );
        assert_eq!(
            classify(&number, b"1", &text("3"), known("x")),
            Verdict::BadTruth
        );
        // A diff under any threshold is still a comparison: the threshold is the caller's.
        assert_eq!(
            classify(&number, b"1", &text("3.5"), known("1.25")),
            Verdict::Compared {
                diff: Amount::parse(b"2.25").unwrap(),
                truth: Amount::parse(b"1.25").unwrap(),
            }
        );
        let presence = RuleKind::Presence;
        assert_eq!(
            classify(&presence, b"1", &CachedValue::Present, Truth::Known(None)),
            Verdict::Present
        );
        assert_eq!(
            classify(&presence, b"1", &CachedValue::Present, Truth::Unknown),
            Verdict::Orphan
        );
    }

    #[test]
    fn drift_beyond_threshold_only() {
        let r = number_rule();
        let found = compare_key(
            &r,
            tol(),
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
            tol(),
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
            tol(),
            b"4",
            b"k:4",
            &text("1"),
            Truth::Known(Some("12.8")),
        );
        assert_eq!(statuses(&below), vec![Status::Drift]);
        assert!(below[0].diff.unwrap() < 0.0);
    }

    fn exact(text: &str) -> Amount {
        match Amount::parse(text.as_bytes()) {
            Some(a @ Amount::Exact(_)) => a,
            other => panic!("{text:?} is not exact: {other:?}"),
        }
    }

    #[test]
    fn pct_threshold_needs_both() {
        let tol = Tolerance::new(5.0, Some(10.0));
        // The same verdicts exactly and in f64.
        for amount in [exact, |t: &str| Amount::Approx(t.parse().unwrap())] {
            let exceeded = |d: &str, t: &str| tol.exceeded(amount(d), amount(t));
            assert!(!exceeded("6", "100"), "6 is under 10% of 100");
            assert!(exceeded("11", "100"));
            assert!(!exceeded("10", "100"), "exactly 10% is not beyond it");
            assert!(!exceeded("4", "10"), "4 is under the absolute threshold");
            assert!(exceeded("-11", "-100"));
        }
    }

    #[test]
    fn decimal_sums_and_values_compare_exactly() {
        let zero = Tolerance::new(0.0, None);
        let r = number_rule();
        let same = compare_key(
            &r,
            zero,
            b"4",
            b"k:4",
            &text("0.3"),
            Truth::Known(Some("0.300000000000000")),
        );
        assert!(same.is_empty(), "{same:?}");
        let mut s = WindowSummer::default();
        s.add_member(b"1732100000000:0.1");
        s.add_member(b"1732100000000:req-1:0.2");
        let window = CachedKey {
            value: s.finish(),
            ttl_ms: Some(3_600_000),
        };
        assert_eq!(window.display().as_deref(), Some("0.3"));
        let w = rule(
            r#""kind":"window_sum","window_ms":1000,"truth":"SELECT 1, 2 WHERE $1 IS NOT NULL""#,
        );
        let truth = Truth::Known(Some("0.300000000000000"));
        assert!(compare_key(&w, zero, b"1", b"k:1", &window, truth).is_empty());
        let off = compare_key(&w, zero, b"1", b"k:1", &window, Truth::Known(Some("0.31")));
        assert_eq!(statuses(&off), vec![Status::Drift]);
        assert_eq!(
            off[0].diff,
            Some(-0.01),
            "the exact diff, then rounded once"
        );
        // A threshold from config is the decimal it was typed as: 0.1 apart is
        // not beyond THRESHOLD 0.1, though 0.4 - 0.3 is above 0.1 in f64.
        let (a, b) = std::hint::black_box((0.4f64, 0.3f64));
        assert!(a - b > 0.1);
        let tenth = Tolerance::new(0.1, None);
        assert!(compare_key(
            &r,
            tenth,
            b"4",
            b"k:4",
            &text("0.4"),
            Truth::Known(Some("0.3"))
        )
        .is_empty());
        // With pct too: 1% of 0.3 is 0.003.
        let pct = Tolerance::new(0.0, Some(1.0));
        assert!(!pct.exceeded(exact("0.003"), exact("0.3")));
        assert!(pct.exceeded(exact("0.0031"), exact("0.3")));
    }

    #[test]
    fn values_too_big_for_a_decimal_compare_in_f64() {
        let r = number_rule();
        let big = "1e300";
        assert!(matches!(
            Amount::parse(big.as_bytes()),
            Some(Amount::Approx(_))
        ));
        let found = compare_key(&r, tol(), b"4", b"k:4", &text(big), Truth::Known(Some("1")));
        assert_eq!(statuses(&found), vec![Status::Drift]);
        assert_eq!(found[0].diff, Some(1e300));
        let mut s = WindowSummer::default();
        s.add_member(b"1:0.5");
        s.add_member(b"2:1e300");
        s.add_member(b"3:0.25");
        assert_eq!(
            s.finish(),
            CachedValue::WindowSum {
                sum: Amount::Approx(1e300),
                unparsed: None
            }
        );
    }

    #[test]
    fn unparseable_and_non_finite_values_are_invalid() {
        let r = number_rule();
        for bad in ["abc", "nan", "inf", "-infinity", " 5", "5 ", "", "1e999"] {
            let found = compare_key(&r, tol(), b"4", b"k:4", &text(bad), Truth::Known(Some("1")));
            assert_eq!(statuses(&found), vec![Status::Invalid], "value {bad:?}");
        }
        let wrong = CachedKey {
            value: CachedValue::WrongType("hash"),
            ttl_ms: None,
        };
        let found = compare_key(&r, tol(), b"4", b"k:4", &wrong, Truth::Known(Some("1")));
        assert_eq!(statuses(&found), vec![Status::Invalid]);
        assert_eq!(found[0].cached.as_deref(), Some("(hash)"));
    }

    #[test]
    fn unknown_id_is_orphan_and_null_truth_is_zero() {
        let r = number_rule();
        let found = compare_key(&r, tol(), b"9", b"k:9", &text("1"), Truth::Unknown);
        assert_eq!(statuses(&found), vec![Status::Orphan]);
        assert_eq!(found[0].truth, None);
        let found = compare_key(&r, tol(), b"9", b"k:9", &text("6"), Truth::Known(None));
        assert_eq!(statuses(&found), vec![Status::Drift]);
        assert_eq!(found[0].diff, Some(6.0));
    }

    #[test]
    fn bad_id_bytes_are_invalid_never_orphan() {
        let r = number_rule();
        let found = compare_key(&r, tol(), b"\xff", b"k:\xff", &text("1"), Truth::Unknown);
        assert_eq!(statuses(&found), vec![Status::Invalid]);
        let found = compare_key(&r, tol(), b"a\0b", b"k:a\0b", &text("1"), Truth::Unknown);
        assert_eq!(statuses(&found), vec![Status::Invalid]);
    }

    #[test]
    fn missing_follows_the_rule() {
        let r = number_rule();
        let found = compare_key(
            &r,
            tol(),
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
            tol(),
            b"4",
            b"k:4",
            &CachedKey::ABSENT,
            Truth::Known(Some("3")),
        );
        assert_eq!(statuses(&found), vec![Status::Missing]);
        let found = compare_key(
            &report,
            tol(),
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
            ttl_ms: None,
        };
        assert!(compare_key(&r, tol(), b"a", b"k:a", &present, Truth::Known(None)).is_empty());
        let found = compare_key(&r, tol(), b"a", b"k:a", &present, Truth::Unknown);
        assert_eq!(statuses(&found), vec![Status::Orphan]);
        let found = compare_key(
            &r,
            tol(),
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
        key.ttl_ms = None;
        let found = compare_key(&r, tol(), b"4", b"k:4", &key, Truth::Known(Some("1")));
        assert_eq!(statuses(&found), vec![Status::Drift, Status::NoTtl]);
        let found = compare_key(&r, tol(), b"4", b"k:4", &key, Truth::Known(Some("50")));
        assert_eq!(statuses(&found), vec![Status::NoTtl]);
    }

    #[test]
    fn ttl_max_sec_bounds_the_ttl() {
        let r = rule(r#""kind":"number","truth":"SELECT 1, 2","ttl_max_sec":600"#);
        let with_ttl = |ms: Option<u64>| CachedKey {
            value: CachedValue::Text(b"5".to_vec()),
            ttl_ms: ms,
        };
        let judge = |key: &CachedKey, truth: &str| {
            statuses(&compare_key(
                &r,
                tol(),
                b"4",
                b"k:4",
                key,
                Truth::Known(Some(truth)),
            ))
        };
        // At the bound is fine; a millisecond above, or no TTL at all, is not.
        assert_eq!(judge(&with_ttl(Some(600_000)), "5"), vec![]);
        assert_eq!(judge(&with_ttl(Some(1)), "5"), vec![]);
        assert_eq!(judge(&with_ttl(Some(600_001)), "5"), vec![Status::BadTtl]);
        assert_eq!(judge(&with_ttl(None), "5"), vec![Status::BadTtl]);
        // The value's own finding comes first.
        assert_eq!(
            judge(&with_ttl(None), "50"),
            vec![Status::Drift, Status::BadTtl]
        );
        // Absent keys have no TTL to judge.
        assert_eq!(judge(&CachedKey::ABSENT, "5"), vec![]);
        // With require_ttl too, a key without a TTL earns both.
        let mut both = r.clone();
        both.require_ttl = true;
        let found = compare_key(
            &both,
            tol(),
            b"4",
            b"k:4",
            &with_ttl(None),
            Truth::Known(Some("5")),
        );
        assert_eq!(statuses(&found), vec![Status::NoTtl, Status::BadTtl]);
        assert!(found.iter().all(|e| e.field.is_none() && e.diff.is_none()));
    }

    #[test]
    fn hash_without_field_counts_as_missing() {
        let mut r = rule(r#""kind":"hash_field","field":"f","truth":"SELECT 1, 2""#);
        let key = CachedKey {
            value: CachedValue::NoField,
            ttl_ms: Some(3_600_000),
        };
        assert!(compare_key(&r, tol(), b"1", b"k:1", &key, Truth::Known(Some("2"))).is_empty());
        r.missing = MissingPolicy::Report;
        let found = compare_key(&r, tol(), b"1", b"k:1", &key, Truth::Known(Some("2")));
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
                sum: exact("0.5"),
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
                sum: exact("0.25"),
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
                sum: exact("1"),
                unparsed: Some(b"oops".to_vec()),
            },
            ttl_ms: Some(3_600_000),
        };
        let found = compare_key(&r, tol(), b"1", b"k:1", &key, Truth::Known(Some("1")));
        assert_eq!(statuses(&found), vec![Status::Invalid]);
        assert_eq!(found[0].cached.as_deref(), Some("oops"));
    }
}
