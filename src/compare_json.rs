//! kind `json`: a STRING holding a JSON object, compared field by field with
//! the truth's named columns. Pure code, no Redis types.
//!
//! Numbers keep the text the document holds (serde_json's raw values), so
//! `12.80` against PostgreSQL's `12.800000000000000` compares exactly, as the
//! number kinds do; strings, booleans and null compare exactly.

use std::collections::HashMap;

use serde_json::value::RawValue;

use crate::compare::{Amount, Status, Tolerance};

/// A JSON object's top-level fields, their values as written.
pub struct Document<'a> {
    fields: HashMap<String, &'a RawValue>,
}

/// One field's value.
#[derive(Debug, PartialEq)]
pub enum FieldValue<'a> {
    /// A number, as written (`12.80`, `1e3`).
    Number(&'a str),
    /// A string, unescaped.
    Str(String),
    Bool(bool),
    Null,
    /// An object or an array, as written.
    Composite(&'a str),
}

impl FieldValue<'_> {
    /// The text a report shows, and the text a string truth is compared with.
    pub fn text(&self) -> String {
        match self {
            FieldValue::Number(n) | FieldValue::Composite(n) => n.to_string(),
            FieldValue::Str(s) => s.clone(),
            FieldValue::Bool(b) => b.to_string(),
            FieldValue::Null => "null".to_string(),
        }
    }
}

impl<'a> Document<'a> {
    /// The document, or None when `bytes` is not a JSON object.
    pub fn parse(bytes: &'a [u8]) -> Option<Document<'a>> {
        let text = std::str::from_utf8(bytes).ok()?;
        object(text).map(|fields| Document { fields })
    }

    /// The field at `path`; a dot reaches into a nested object
    /// (`stats.total`). None when a step is absent or not an object.
    pub fn get(&self, path: &str) -> Option<FieldValue<'a>> {
        let mut steps = path.split('.');
        let mut raw = *self.fields.get(steps.next()?)?;
        for step in steps {
            raw = *object(raw.get())?.get(step)?;
        }
        Some(classify(raw))
    }
}

fn object(text: &str) -> Option<HashMap<String, &RawValue>> {
    // A value that is not an object fails here, whatever else it is.
    serde_json::from_str::<HashMap<String, &RawValue>>(text).ok()
}

fn classify(raw: &RawValue) -> FieldValue<'_> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text)
            .map_or(FieldValue::Composite(text), FieldValue::Str),
        Some(b't') => FieldValue::Bool(true),
        Some(b'f') => FieldValue::Bool(false),
        Some(b'n') => FieldValue::Null,
        Some(b'{' | b'[') => FieldValue::Composite(text),
        _ => FieldValue::Number(text),
    }
}

/// One finding about one field of a document.
#[derive(Debug, PartialEq)]
pub struct FieldFinding {
    pub status: Status,
    pub field: String,
    pub cached: Option<String>,
    pub truth: Option<String>,
    pub diff: Option<f64>,
}

/// Compares the document's fields with the truth's (`names[i]` holds
/// `values[i]`): one finding per field that differs, or lacks.
pub fn compare_fields(
    doc: &Document<'_>,
    names: &[impl AsRef<str>],
    values: &[Option<String>],
    tolerance: Tolerance,
) -> Vec<FieldFinding> {
    let mut found = Vec::new();
    for (name, truth) in names.iter().zip(values) {
        let name = name.as_ref();
        let finding = |status, cached: Option<String>, diff| FieldFinding {
            status,
            field: name.to_string(),
            cached,
            truth: truth.clone(),
            diff,
        };
        let Some(value) = doc.get(name) else {
            found.push(finding(Status::Invalid, None, None));
            continue;
        };
        let cached = Some(value.text());
        match field_verdict(&value, truth.as_deref(), tolerance) {
            FieldVerdict::Same => {}
            FieldVerdict::Differs(diff) => found.push(finding(Status::Drift, cached, diff)),
            FieldVerdict::BadTruth => found.push(finding(Status::Invalid, cached, None)),
        }
    }
    found
}

enum FieldVerdict {
    Same,
    /// Differs; the numeric diff when both sides are numbers.
    Differs(Option<f64>),
    /// A JSON number whose truth is not a number: nothing to compare with.
    BadTruth,
}

fn field_verdict(
    value: &FieldValue<'_>,
    truth: Option<&str>,
    tolerance: Tolerance,
) -> FieldVerdict {
    let same = |equal: bool| {
        if equal {
            FieldVerdict::Same
        } else {
            FieldVerdict::Differs(None)
        }
    };
    match (value, truth) {
        (FieldValue::Null, truth) => same(truth.is_none()),
        (_, None) => FieldVerdict::Differs(None),
        (FieldValue::Number(n), Some(t)) => {
            let (Some(cached), Some(truth)) =
                (Amount::parse(n.as_bytes()), Amount::parse(t.as_bytes()))
            else {
                return FieldVerdict::BadTruth;
            };
            let diff = cached.minus(truth);
            if tolerance.exceeded(diff, truth) {
                FieldVerdict::Differs(Some(diff.to_f64()))
            } else {
                FieldVerdict::Same
            }
        }
        (FieldValue::Str(s), Some(t)) => same(s == t),
        (FieldValue::Bool(b), Some(t)) => same(t == if *b { "true" } else { "false" }),
        (FieldValue::Composite(c), Some(t)) => {
            // jsonb's text has its own spacing: compared as values.
            let parsed = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
            same(parsed(c).is_some() && parsed(c) == parsed(t))
        }
    }
}

/// The epoch milliseconds a document's age field holds: an RFC 3339 time, or
/// epoch seconds (a number, or a string of one). None when it holds neither.
pub fn age_field_ms(value: &FieldValue<'_>) -> Option<i64> {
    let seconds = |text: &str| {
        text.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && s.abs() < 1e15)
            .map(|s| (s * 1000.0).round() as i64)
    };
    match value {
        FieldValue::Number(n) => seconds(n),
        FieldValue::Str(s) => crate::rfc3339::epoch_ms(s).or_else(|| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || b == b'.')
                .then(|| seconds(s))?
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tol(threshold: f64) -> Tolerance {
        Tolerance::new(threshold, None)
    }

    #[test]
    fn fields_are_read_as_written_and_nested_by_dots() {
        let doc = Document::parse(
            br#"{"total": 12.80, "name": "a\"b", "ok": true, "none": null,
                 "stats": {"total": 3, "deep": {"x": "y"}}, "list": [1, 2]}"#,
        )
        .unwrap();
        assert_eq!(doc.get("total"), Some(FieldValue::Number("12.80")));
        assert_eq!(doc.get("name"), Some(FieldValue::Str("a\"b".into())));
        assert_eq!(doc.get("ok"), Some(FieldValue::Bool(true)));
        assert_eq!(doc.get("none"), Some(FieldValue::Null));
        assert_eq!(doc.get("stats.total"), Some(FieldValue::Number("3")));
        assert_eq!(doc.get("stats.deep.x"), Some(FieldValue::Str("y".into())));
        assert_eq!(doc.get("list"), Some(FieldValue::Composite("[1, 2]")));
        for absent in [
            "nope",
            "total.x",
            "stats.nope",
            "stats.deep.x.y",
            "",
            "stats.",
        ] {
            assert_eq!(doc.get(absent), None, "{absent}");
        }
    }

    #[test]
    fn only_objects_are_documents() {
        for text in [
            &b"[1]"[..],
            b"3",
            b"\"x\"",
            b"null",
            b"{",
            b"",
            b"\xff",
            b"{} {}",
        ] {
            assert!(Document::parse(text).is_none(), "{text:?}");
        }
        assert!(Document::parse(b" {} ").is_some());
    }

    #[test]
    fn one_finding_per_differing_field() {
        let doc = Document::parse(
            br#"{"total": 12.80, "members": 150, "title": "Run", "open": false,
                 "stats": {"rate": 0.85}, "note": null, "tags": {"a": 1}}"#,
        )
        .unwrap();
        let names = [
            "total",
            "members",
            "title",
            "open",
            "stats.rate",
            "note",
            "tags",
            "gone",
        ];
        let values: Vec<Option<String>> = [
            Some("12.800000000000000"), // same, exactly
            Some("140"),                // drift of 10
            Some("Run "),               // strings compare exactly
            Some("false"),
            Some("0.85"),
            None,               // null is SQL NULL
            Some("{\"a\": 1}"), // compared as JSON values
            Some("1"),          // the document lacks it
        ]
        .iter()
        .map(|v| v.map(str::to_string))
        .collect();
        let found = compare_fields(&doc, &names, &values, tol(5.0));
        let brief: Vec<(&str, Status, Option<&str>, Option<f64>)> = found
            .iter()
            .map(|f| (f.field.as_str(), f.status, f.cached.as_deref(), f.diff))
            .collect();
        assert_eq!(
            brief,
            [
                ("members", Status::Drift, Some("150"), Some(10.0)),
                ("title", Status::Drift, Some("Run"), None),
                ("gone", Status::Invalid, None, None),
            ]
        );
        assert_eq!(found[0].truth.as_deref(), Some("140"));
        // Under a higher threshold the number is fine; the rest is not numbers.
        assert_eq!(compare_fields(&doc, &names, &values, tol(20.0)).len(), 2);
        // THRESHOLD 0: any difference at all.
        let exact = compare_fields(&doc, &["total"], &[Some("12.8000001".into())], tol(0.0));
        assert_eq!(exact.len(), 1);
    }

    #[test]
    fn types_must_agree() {
        let doc = Document::parse(br#"{"n": 1, "s": "1", "b": true, "z": null}"#).unwrap();
        let verdict = |name: &str, truth: Option<&str>| {
            compare_fields(&doc, &[name], &[truth.map(str::to_string)], tol(0.0))
                .first()
                .map(|f| f.status)
        };
        assert_eq!(verdict("n", Some("1.0")), None);
        assert_eq!(verdict("n", None), Some(Status::Drift));
        assert_eq!(verdict("n", Some("one")), Some(Status::Invalid));
        assert_eq!(verdict("s", Some("1")), None);
        assert_eq!(verdict("s", Some("1.0")), Some(Status::Drift));
        assert_eq!(verdict("b", Some("true")), None);
        assert_eq!(verdict("b", Some("t")), Some(Status::Drift));
        assert_eq!(verdict("z", None), None);
        assert_eq!(verdict("z", Some("null")), Some(Status::Drift));
    }

    #[test]
    fn age_fields_hold_rfc_3339_or_epoch_seconds() {
        let doc = Document::parse(
            br#"{"a": "2025-01-15T10:30:00Z", "b": 1736937000, "c": "1736937000",
                 "d": 1736937000.5, "e": "yesterday", "f": true, "g": "1.2.3"}"#,
        )
        .unwrap();
        let at = |f: &str| age_field_ms(&doc.get(f).unwrap());
        assert_eq!(at("a"), Some(1_736_937_000_000));
        assert_eq!(at("b"), Some(1_736_937_000_000));
        assert_eq!(at("c"), Some(1_736_937_000_000));
        assert_eq!(at("d"), Some(1_736_937_000_500));
        assert_eq!(at("e"), None);
        assert_eq!(at("f"), None);
        assert_eq!(at("g"), None);
    }
}
