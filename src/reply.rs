//! A reply as a tree of values, built by pure code and written to the client at the
//! edge (`respond.rs`). Keeping it free of Redis types lets reports be unit-tested and
//! rendered as JSON (`FORMAT json`) with the same fields in the same order.

use std::fmt::Write as _;

/// One value of a reply. Maps keep their field order (the documented replies fix it).
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Int(i64),
    Double(f64),
    Bool(bool),
    /// A bulk string holding exact bytes (key names, ids, values).
    Bulk(Vec<u8>),
    Null,
    Array(Vec<Reply>),
    Map(Vec<(&'static str, Reply)>),
    /// A map whose field names are data (rule names), not fixed words.
    NamedMap(Vec<(String, Reply)>),
    /// An error line, sent as is: it starts with an error code such as `ERR`.
    Error(String),
}

impl Reply {
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Bulk(s.into().into_bytes())
    }

    pub fn opt_text(s: Option<impl Into<String>>) -> Reply {
        s.map_or(Reply::Null, Reply::text)
    }

    pub fn opt_double(v: Option<f64>) -> Reply {
        v.map_or(Reply::Null, Reply::Double)
    }

    /// An `ERR ...` reply from anything displayable.
    pub fn err(e: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {e}"))
    }

    /// The field `name` of a map, for tests and for reuse of report parts.
    pub fn get(&self, name: &str) -> Option<&Reply> {
        match self {
            Reply::Map(fields) => fields.iter().find(|(k, _)| *k == name).map(|(_, v)| v),
            Reply::NamedMap(fields) => fields.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Renders the reply as one JSON document (`FORMAT json`). Bytes that are not
    /// UTF-8 are written as `\xNN` text so a key name survives the trip.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        write_json(self, &mut out);
        out
    }
}

fn write_json(reply: &Reply, out: &mut String) {
    match reply {
        Reply::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Reply::Double(d) if d.is_finite() => {
            let _ = write!(out, "{d}");
        }
        Reply::Double(_) | Reply::Null => out.push_str("null"),
        Reply::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Reply::Bulk(bytes) => write_json_string(&bytes_as_text(bytes), out),
        Reply::Error(e) => {
            out.push_str("{\"error\":");
            write_json_string(e, out);
            out.push('}');
        }
        Reply::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Reply::Map(fields) => write_json_object(fields.iter().map(|(k, v)| (*k, v)), out),
        Reply::NamedMap(fields) => {
            write_json_object(fields.iter().map(|(k, v)| (k.as_str(), v)), out)
        }
    }
}

fn write_json_object<'a>(fields: impl Iterator<Item = (&'a str, &'a Reply)>, out: &mut String) {
    out.push('{');
    for (i, (name, value)) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_string(name, out);
        out.push(':');
        write_json(value, out);
    }
    out.push('}');
}

pub use crate::text::bytes_as_text;

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_field_order_and_types() {
        let r = Reply::Map(vec![
            ("checked", Reply::Int(3)),
            ("rate", Reply::Double(0.5)),
            ("max_diff", Reply::Null),
            ("dry_run", Reply::Bool(true)),
            (
                "by_rule",
                Reply::NamedMap(vec![("cost".into(), Reply::Array(vec![Reply::Int(1)]))]),
            ),
        ]);
        assert_eq!(
            r.to_json(),
            r#"{"checked":3,"rate":0.5,"max_diff":null,"dry_run":true,"by_rule":{"cost":[1]}}"#
        );
    }

    #[test]
    fn json_escapes_and_marks_invalid_utf8() {
        let r = Reply::Bulk(b"a\"b\\\n\xff\x01z".to_vec());
        let json = r.to_json();
        assert_eq!(json, "\"a\\\"b\\\\\\n\\\\xff\\u0001z\"");
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed.as_str().unwrap(), "a\"b\\\n\\xff\u{1}z");
    }

    #[test]
    fn non_finite_doubles_become_null() {
        assert_eq!(Reply::Double(f64::NAN).to_json(), "null");
        assert_eq!(Reply::Double(f64::INFINITY).to_json(), "null");
        assert_eq!(Reply::Double(-2.5).to_json(), "-2.5");
    }

    #[test]
    fn get_finds_fields() {
        let r = Reply::Map(vec![("a", Reply::Int(1))]);
        assert_eq!(r.get("a"), Some(&Reply::Int(1)));
        assert_eq!(r.get("b"), None);
        assert_eq!(Reply::Int(1).get("a"), None);
    }
}
