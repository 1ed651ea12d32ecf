//! Helpers shared by the `tests/check_*.rs` files: reading a CONSISTENCY.CHECK
//! reply (RESP2, RESP3 or `FORMAT json`) into a [`Report`], checking its shape
//! against the documented shapes on the way, and building the expected entries of
//! a check from what a test injected.
//!
//! Each `check_*.rs` file declares `mod common; mod check_support;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;

use redis::Value;

use crate::common::{self, as_array, as_bytes, as_i64, as_str, field_names, map_of};

pub use crate::common::CHECK_FIELDS;

/// The fields of one entry, in order.
pub const ENTRY_FIELDS: [&str; 8] = [
    "rule", "id", "key", "status", "cached", "truth", "diff", "field",
];

/// The statuses, in the order `by_status` lists them.
pub const STATUSES: [&str; 7] = [
    "drift", "invalid", "orphan", "missing", "no_ttl", "bad_ttl", "stale",
];

/// One entry of a check report (or one the test expects).
#[derive(Clone, PartialEq)]
pub struct Entry {
    pub rule: String,
    pub id: Vec<u8>,
    pub key: Vec<u8>,
    pub status: String,
    pub cached: Option<String>,
    pub truth: Option<String>,
    pub diff: Option<f64>,
    /// The JSON field of a json rule's entry.
    pub field: Option<String>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{{} {} {:?} cached={:?} truth={:?} diff={:?} field={:?}}}",
            self.rule,
            show(&self.key),
            self.status,
            self.cached,
            self.truth,
            self.diff,
            self.field
        )
    }
}

/// Bytes as readable text (`\xNN` for bytes that are not UTF-8), like the module's JSON.
pub fn show(bytes: &[u8]) -> String {
    let mut text = String::new();
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for b in chunk.invalid() {
            text.push_str(&format!("\\x{b:02x}"));
        }
    }
    text
}

impl Entry {
    /// An expected entry for `key_template` with `{id}` replaced by `id`.
    pub fn new(rule: &str, template: &str, id: &[u8], status: &str) -> Entry {
        Entry {
            rule: rule.to_string(),
            id: id.to_vec(),
            key: key_bytes(template, id),
            status: status.to_string(),
            cached: None,
            truth: None,
            diff: None,
            field: None,
        }
    }

    pub fn field(mut self, v: impl Into<String>) -> Entry {
        self.field = Some(v.into());
        self
    }

    pub fn cached(mut self, v: impl Into<String>) -> Entry {
        self.cached = Some(v.into());
        self
    }

    pub fn truth(mut self, v: impl Into<String>) -> Entry {
        self.truth = Some(v.into());
        self
    }

    /// cached minus truth, computed as the module does: exactly when both are
    /// plain decimals, then rounded once to f64; else both parsed as f64.
    pub fn with_diff(mut self) -> Entry {
        let c = self.cached.as_deref().expect("diff needs a cached value");
        let t = self.truth.as_deref().expect("diff needs a truth");
        let diff = match (plain_decimal(c), plain_decimal(t)) {
            (Some(a), Some(b)) => a.checked_sub(b).map(|d| decimal_text(d).parse().unwrap()),
            _ => None,
        };
        self.diff = Some(diff.unwrap_or_else(|| {
            let c: f64 = c.parse().expect("cached is a number");
            let t: f64 = t.parse().expect("truth is a number");
            c - t
        }));
        self
    }
}

/// Decimal places of [`plain_decimal`]'s fixed point.
const PLACES: usize = 18;

/// A plain decimal (`-12.5`, `3`, no exponent, at most 18 places) as an i128
/// scaled by 10^18; the test's own reading, independent of the module's.
pub fn plain_decimal(text: &str) -> Option<i128> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !ok(int) || !ok(frac) || frac.len() > PLACES {
        return None;
    }
    let padded = format!("{int}{frac}{}", "0".repeat(PLACES - frac.len()));
    let v: i128 = padded.parse().ok()?;
    Some(if neg { -v } else { v })
}

/// A [`plain_decimal`] value as text without trailing zeros (`0.3`, `40`).
pub fn decimal_text(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let m = v.unsigned_abs();
    let scale = 10u128.pow(PLACES as u32);
    let frac = format!("{:0width$}", m % scale, width = PLACES);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{}", m / scale)
    } else {
        format!("{sign}{}.{frac}", m / scale)
    }
}

/// `template` with `{id}` replaced by the raw bytes of `id`.
pub fn key_bytes(template: &str, id: &[u8]) -> Vec<u8> {
    let at = template.find("{id}").expect("template has {id}");
    let mut key = template.as_bytes()[..at].to_vec();
    key.extend_from_slice(id);
    key.extend_from_slice(&template.as_bytes()[at + 4..]);
    key
}

/// Sorts expected entries the way a report is documented to be sorted: largest
/// absolute diff first; entries without a diff after, by rule, then key (then
/// status, for a key with two entries).
pub fn sort_entries(entries: &mut [Entry]) {
    let status_rank = |s: &str| STATUSES.iter().position(|x| *x == s).unwrap_or(99);
    entries.sort_by(|a, b| match (a.diff, b.diff) {
        (Some(x), Some(y)) => y
            .abs()
            .total_cmp(&x.abs())
            .then_with(|| a.rule.cmp(&b.rule))
            .then_with(|| a.key.cmp(&b.key))
            .then_with(|| status_rank(&a.status).cmp(&status_rank(&b.status)))
            .then_with(|| a.field.cmp(&b.field)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a
            .rule
            .cmp(&b.rule)
            .then_with(|| a.key.cmp(&b.key))
            .then_with(|| status_rank(&a.status).cmp(&status_rank(&b.status)))
            .then_with(|| a.field.cmp(&b.field)),
    });
}

/// A parsed CHECK reply.
#[derive(Clone, Debug)]
pub struct Report {
    pub checked: i64,
    pub ids: i64,
    pub drifted: i64,
    pub rate: f64,
    pub max_diff: Option<f64>,
    pub max_diff_key: Option<Vec<u8>>,
    /// (status, count) in reply order.
    pub by_status: Vec<(String, i64)>,
    /// (rule, checked, drifted) in reply order.
    pub by_rule: Vec<(String, i64, i64)>,
    pub rounds: i64,
    pub duration_ms: i64,
    pub truth_ms: i64,
    pub truncated: i64,
    pub entries: Vec<Entry>,
}

/// Which encoding a reply came in, to check each value's RESP type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Resp2,
    Resp3,
}

fn int(v: &Value, what: &str) -> i64 {
    assert!(
        matches!(v, Value::Int(_)),
        "{what} is not an integer: {v:?}"
    );
    as_i64(v)
}

fn double(v: &Value, proto: Proto, what: &str) -> f64 {
    match (proto, v) {
        (Proto::Resp3, Value::Double(d)) => *d,
        (Proto::Resp2, Value::BulkString(_)) => common::as_f64(v),
        _ => panic!("{what} is not a {proto:?} double: {v:?}"),
    }
}

fn opt_double(v: &Value, proto: Proto, what: &str) -> Option<f64> {
    if common::is_null(v) {
        None
    } else {
        Some(double(v, proto, what))
    }
}

fn opt_text(v: &Value, what: &str) -> Option<String> {
    match v {
        Value::Nil => None,
        Value::BulkString(b) => Some(
            String::from_utf8(b.clone()).unwrap_or_else(|_| panic!("{what} is not UTF-8: {b:?}")),
        ),
        other => panic!("{what} is not a bulk string or null: {other:?}"),
    }
}

fn bulk(v: &Value, what: &str) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        other => panic!("{what} is not a bulk string: {other:?}"),
    }
}

fn assert_map(v: &Value, proto: Proto, what: &str) {
    match (proto, v) {
        (Proto::Resp3, Value::Map(_)) | (Proto::Resp2, Value::Array(_)) => {}
        _ => panic!("{what} is not a {proto:?} map: {v:?}"),
    }
}

impl Report {
    /// Reads a CHECK reply, asserting field names, order and RESP types.
    pub fn from_value(v: &Value, proto: Proto) -> Report {
        assert_map(v, proto, "the CHECK reply");
        assert_eq!(field_names(v), CHECK_FIELDS, "CHECK fields and their order");
        let m: BTreeMap<String, Value> = map_of(v).into_iter().collect();
        let by_status_v = &m["by_status"];
        assert_map(by_status_v, proto, "by_status");
        assert_eq!(field_names(by_status_v), STATUSES, "by_status fields");
        let by_status = map_of(by_status_v)
            .iter()
            .map(|(k, v)| (k.clone(), int(v, k)))
            .collect();
        let by_rule_v = &m["by_rule"];
        assert_map(by_rule_v, proto, "by_rule");
        let by_rule = map_of(by_rule_v)
            .iter()
            .map(|(rule, t)| {
                assert_map(t, proto, "a by_rule value");
                assert_eq!(field_names(t), ["checked", "drifted"], "by_rule.{rule}");
                let t: BTreeMap<String, Value> = map_of(t).into_iter().collect();
                (
                    rule.clone(),
                    int(&t["checked"], "checked"),
                    int(&t["drifted"], "drifted"),
                )
            })
            .collect();
        let entries = as_array(&m["entries"])
            .iter()
            .map(|e| {
                assert_map(e, proto, "an entry");
                assert_eq!(field_names(e), ENTRY_FIELDS, "entry fields");
                let f: BTreeMap<String, Value> = map_of(e).into_iter().collect();
                Entry {
                    rule: String::from_utf8(bulk(&f["rule"], "rule")).unwrap(),
                    id: bulk(&f["id"], "id"),
                    key: bulk(&f["key"], "key"),
                    status: String::from_utf8(bulk(&f["status"], "status")).unwrap(),
                    cached: opt_text(&f["cached"], "cached"),
                    truth: opt_text(&f["truth"], "truth"),
                    diff: opt_double(&f["diff"], proto, "diff"),
                    field: opt_text(&f["field"], "field"),
                }
            })
            .collect();
        let max_diff_key = match &m["max_diff_key"] {
            Value::Nil => None,
            other => Some(bulk(other, "max_diff_key")),
        };
        Report {
            checked: int(&m["checked"], "checked"),
            ids: int(&m["ids"], "ids"),
            drifted: int(&m["drifted"], "drifted"),
            rate: double(&m["rate"], proto, "rate"),
            max_diff: opt_double(&m["max_diff"], proto, "max_diff"),
            max_diff_key,
            by_status,
            by_rule,
            rounds: int(&m["rounds"], "rounds"),
            duration_ms: int(&m["duration_ms"], "duration_ms"),
            truth_ms: int(&m["truth_ms"], "truth_ms"),
            truncated: int(&m["truncated"], "truncated"),
            entries,
        }
    }

    /// Reads a `FORMAT json` reply, asserting field names, order and JSON types.
    /// Ids and keys come back as the module writes them (`\xNN` for bytes that are
    /// not UTF-8), so compare with [`show`]n expectations.
    pub fn from_json(text: &str) -> Report {
        let doc: Json = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("FORMAT json is not JSON ({e}): {text}"));
        let names: Vec<&str> = doc.obj().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, CHECK_FIELDS, "JSON fields and their order");
        let by_status_j = doc.get("by_status");
        let names: Vec<&str> = by_status_j.obj().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, STATUSES, "JSON by_status fields");
        let entries = doc
            .get("entries")
            .arr()
            .iter()
            .map(|e| {
                let names: Vec<&str> = e.obj().iter().map(|(k, _)| k.as_str()).collect();
                assert_eq!(names, ENTRY_FIELDS, "JSON entry fields");
                Entry {
                    rule: e.get("rule").str().to_string(),
                    id: e.get("id").str().as_bytes().to_vec(),
                    key: e.get("key").str().as_bytes().to_vec(),
                    status: e.get("status").str().to_string(),
                    cached: e.get("cached").opt_str(),
                    truth: e.get("truth").opt_str(),
                    diff: e.get("diff").opt_num(),
                    field: e.get("field").opt_str(),
                }
            })
            .collect();
        Report {
            checked: doc.get("checked").int(),
            ids: doc.get("ids").int(),
            drifted: doc.get("drifted").int(),
            rate: doc.get("rate").num(),
            max_diff: doc.get("max_diff").opt_num(),
            max_diff_key: doc
                .get("max_diff_key")
                .opt_str()
                .map(|s| s.as_bytes().to_vec()),
            by_status: by_status_j
                .obj()
                .iter()
                .map(|(k, v)| (k.clone(), v.int()))
                .collect(),
            by_rule: doc
                .get("by_rule")
                .obj()
                .iter()
                .map(|(rule, t)| {
                    let names: Vec<&str> = t.obj().iter().map(|(k, _)| k.as_str()).collect();
                    assert_eq!(names, ["checked", "drifted"], "JSON by_rule.{rule}");
                    (rule.clone(), t.get("checked").int(), t.get("drifted").int())
                })
                .collect(),
            rounds: doc.get("rounds").int(),
            duration_ms: doc.get("duration_ms").int(),
            truth_ms: doc.get("truth_ms").int(),
            truncated: doc.get("truncated").int(),
            entries,
        }
    }

    /// The count `by_status` gives for `status`.
    pub fn status_count(&self, status: &str) -> i64 {
        self.by_status
            .iter()
            .find(|(s, _)| s == status)
            .unwrap_or_else(|| panic!("no status {status} in {:?}", self.by_status))
            .1
    }

    /// The keys of the entries, in reply order.
    pub fn keys(&self) -> Vec<String> {
        self.entries.iter().map(|e| show(&e.key)).collect()
    }

    /// Asserts everything that follows from the entries the test expects (all of
    /// them: LIMIT not cut): drifted, rate, max_diff(_key), by_status, per-rule
    /// drifted, truncated, and the entries themselves, exactly and in order.
    /// `checked` and `ids` are the caller's to assert.
    pub fn assert_findings(&self, want: &[Entry]) {
        let mut want = want.to_vec();
        sort_entries(&mut want);
        self.assert_sorted_findings(&want);
    }

    /// [`Report::assert_findings`] for a `FORMAT json` report: sorted by the raw
    /// key bytes, as the module sorts, then shown as JSON shows them.
    pub fn assert_findings_json(&self, want: &[Entry]) {
        let mut want = want.to_vec();
        sort_entries(&mut want);
        self.assert_sorted_findings(&as_json_shown(&want));
    }

    fn assert_sorted_findings(&self, want: &[Entry]) {
        assert_entries(&self.entries, want);
        assert_eq!(self.drifted, want.len() as i64, "drifted");
        assert_eq!(self.truncated, 0, "truncated");
        let rate = if self.checked == 0 {
            0.0
        } else {
            want.len() as f64 / self.checked as f64
        };
        assert!(
            (self.rate - rate).abs() <= 1e-12,
            "rate {} != {rate}",
            self.rate
        );
        let max = want
            .iter()
            .filter(|e| e.diff.is_some())
            .max_by(|a, b| a.diff.unwrap().abs().total_cmp(&b.diff.unwrap().abs()));
        assert_eq!(
            self.max_diff,
            max.map(|e| e.diff.unwrap().abs()),
            "max_diff"
        );
        assert_eq!(
            self.max_diff_key.as_deref().map(show),
            max.map(|e| show(&e.key)),
            "max_diff_key"
        );
        let counts: Vec<(String, i64)> = STATUSES
            .iter()
            .map(|s| {
                (
                    s.to_string(),
                    want.iter().filter(|e| e.status == *s).count() as i64,
                )
            })
            .collect();
        assert_eq!(self.by_status, counts, "by_status");
        for (rule, _, drifted) in &self.by_rule {
            let n = want.iter().filter(|e| &e.rule == rule).count() as i64;
            assert_eq!(*drifted, n, "by_rule.{rule}.drifted");
        }
        assert!(self.duration_ms >= 0 && self.truth_ms >= 0);
        assert!(
            self.truth_ms <= self.duration_ms,
            "truth_ms {} > duration_ms {}",
            self.truth_ms,
            self.duration_ms
        );
    }

    /// `by_rule` as (rule, checked) pairs.
    pub fn checked_by_rule(&self) -> Vec<(String, i64)> {
        self.by_rule
            .iter()
            .map(|(r, c, _)| (r.clone(), *c))
            .collect()
    }
}

/// Asserts two entry lists are equal, in order, with a readable message.
pub fn assert_entries(got: &[Entry], want: &[Entry]) {
    if got != want {
        let mut msg = String::from("entries differ\n--- got ---\n");
        for e in got {
            msg.push_str(&format!("  {e:?}\n"));
        }
        msg.push_str("--- want ---\n");
        for e in want {
            msg.push_str(&format!("  {e:?}\n"));
        }
        panic!("{msg}");
    }
}

/// The same expectations as JSON shows them: ids and keys with `\xNN` escapes.
pub fn as_json_shown(want: &[Entry]) -> Vec<Entry> {
    want.iter()
        .map(|e| Entry {
            id: show(&e.id).into_bytes(),
            key: show(&e.key).into_bytes(),
            ..e.clone()
        })
        .collect()
}

/// Builds a command from byte arguments.
pub fn cmd_bytes(args: &[&[u8]]) -> redis::Cmd {
    let mut c = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// `CONSISTENCY.CHECK args...` on `conn`, read as a report.
pub fn check(conn: &mut redis::Connection, proto: Proto, args: &[&str]) -> Report {
    let mut full = vec!["CONSISTENCY.CHECK"];
    full.extend_from_slice(args);
    let v = common::call_ok(conn, &full);
    Report::from_value(&v, proto)
}

/// `CONSISTENCY.CHECK args... FORMAT json`, parsed.
pub fn check_json(conn: &mut redis::Connection, args: &[&str]) -> Report {
    let mut full = vec!["CONSISTENCY.CHECK"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["FORMAT", "json"]);
    let v = common::call_ok(conn, &full);
    let text = match &v {
        Value::BulkString(b) => String::from_utf8(b.clone()).expect("JSON is UTF-8"),
        other => panic!("FORMAT json must reply with one bulk string, got {other:?}"),
    };
    Report::from_json(&text)
}

/// The truth rows as an id -> text map.
pub fn truth_map(rows: &[(i64, String)]) -> BTreeMap<i64, String> {
    rows.iter().cloned().collect()
}

/// A number as text the way a cache would store it.
pub fn num(v: f64) -> String {
    format!("{v}")
}

/// `SET key value` with byte arguments.
pub fn set(conn: &mut redis::Connection, key: &[u8], value: &[u8]) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(conn)
        .expect("SET");
}

/// Value of a string reply as text.
pub fn text_of(v: &Value) -> String {
    String::from_utf8_lossy(as_bytes(v)).into_owned()
}

/// A string reply.
pub fn str_of(v: &Value) -> &str {
    as_str(v)
}

// ---------------------------------------------------------------------------
// JSON that keeps object field order (serde_json's Map sorts without the
// preserve_order feature, and the documented replies fix the order).
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64, bool),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn obj(&self) -> &[(String, Json)] {
        match self {
            Json::Obj(f) => f,
            other => panic!("expected a JSON object, got {other:?}"),
        }
    }
    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            other => panic!("expected a JSON array, got {other:?}"),
        }
    }
    pub fn get(&self, name: &str) -> &Json {
        self.obj()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no JSON field {name} in {self:?}"))
    }
    pub fn int(&self) -> i64 {
        match self {
            Json::Num(n, true) => *n as i64,
            other => panic!("expected a JSON integer, got {other:?}"),
        }
    }
    pub fn num(&self) -> f64 {
        match self {
            Json::Num(n, _) => *n,
            other => panic!("expected a JSON number, got {other:?}"),
        }
    }
    pub fn opt_num(&self) -> Option<f64> {
        match self {
            Json::Null => None,
            _ => Some(self.num()),
        }
    }
    pub fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("expected a JSON string, got {other:?}"),
        }
    }
    pub fn opt_str(&self) -> Option<String> {
        match self {
            Json::Null => None,
            _ => Some(self.str().to_string()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
                Ok(Json::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
                Ok(Json::Num(n as f64, true))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
                Ok(Json::Num(n as f64, true))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Json, E> {
                Ok(Json::Num(n, false))
            }
            fn visit_str<E>(self, s: &str) -> Result<Json, E> {
                Ok(Json::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Json, E> {
                Ok(Json::Str(s))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(x) = a.next_element()? {
                    items.push(x);
                }
                Ok(Json::Arr(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Json>()? {
                    fields.push((k, v));
                }
                Ok(Json::Obj(fields))
            }
        }
        d.deserialize_any(V)
    }
}
