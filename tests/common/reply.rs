//! Reading module replies the same way under RESP2 and RESP3 (field order as documented):
//! a map is a RESP3 Map or a RESP2 flat array of alternating names and values, a
//! double is a RESP3 Double or a RESP2 bulk string, a boolean is a RESP3 Boolean
//! or a RESP2 integer 0/1.

use redis::Value;

/// The CHECK fields, in the documented order.
pub const CHECK_FIELDS: [&str; 15] = [
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
    "reason",
];

/// Text of a map key or string value, if it is one.
fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_string()),
        _ => None,
    }
}

/// The (name, value) pairs of a map reply, in reply order.
pub fn map_of(v: &Value) -> Vec<(String, Value)> {
    map_refs(v)
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect()
}

fn map_refs(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| {
                (
                    key_text(k).unwrap_or_else(|| panic!("map key is not a string: {k:?}")),
                    v,
                )
            })
            .collect(),
        Value::Array(items) => {
            assert!(
                items.len() % 2 == 0,
                "expected a map (flat array of name/value pairs), got an odd-length array: {v:?}"
            );
            items
                .chunks(2)
                .map(|kv| {
                    (
                        key_text(&kv[0]).unwrap_or_else(|| {
                            panic!("map field name is not a string: {:?} in {v:?}", kv[0])
                        }),
                        &kv[1],
                    )
                })
                .collect()
        }
        other => panic!("expected a map reply, got {other:?}"),
    }
}

/// The names of a map reply's fields, in order.
pub fn field_names(v: &Value) -> Vec<String> {
    map_refs(v).into_iter().map(|(k, _)| k).collect()
}

/// Field `name` of a map reply; panics listing the fields present.
pub fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    let pairs = map_refs(v);
    if let Some((_, val)) = pairs.iter().find(|(k, _)| k == name) {
        return val;
    }
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    panic!("no field '{name}' in reply; fields: {names:?}");
}

/// Field `name` if present.
pub fn try_field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    map_refs(v)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// An integer (RESP integer, or a string holding one).
pub fn as_i64(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::BulkString(_) | Value::SimpleString(_) => {
            let s = as_str(v);
            s.parse()
                .unwrap_or_else(|_| panic!("expected an integer, got string {s:?}"))
        }
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// A double (RESP3 Double, RESP2 bulk string, or an integer).
pub fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Double(d) => *d,
        Value::Int(i) => *i as f64,
        Value::BulkString(_) | Value::SimpleString(_) => {
            let s = as_str(v);
            match s {
                "inf" | "+inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                _ => s
                    .parse()
                    .unwrap_or_else(|_| panic!("expected a double, got string {s:?}")),
            }
        }
        other => panic!("expected a double, got {other:?}"),
    }
}

/// A boolean (RESP3 Boolean or RESP2 integer 0/1).
pub fn as_bool(v: &Value) -> bool {
    match v {
        Value::Boolean(b) => *b,
        Value::Int(0) => false,
        Value::Int(1) => true,
        other => panic!("expected a boolean (or 0/1), got {other:?}"),
    }
}

/// A string (bulk, simple or verbatim) as UTF-8 text.
pub fn as_str(v: &Value) -> &str {
    match v {
        Value::BulkString(b) => {
            std::str::from_utf8(b).unwrap_or_else(|_| panic!("bulk string is not UTF-8: {b:?}"))
        }
        Value::SimpleString(s) => s,
        Value::VerbatimString { text, .. } => text,
        Value::Okay => "OK",
        other => panic!("expected a string, got {other:?}"),
    }
}

/// A string's exact bytes.
pub fn as_bytes(v: &Value) -> &[u8] {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.as_bytes(),
        Value::VerbatimString { text, .. } => text.as_bytes(),
        Value::Okay => b"OK",
        other => panic!("expected a string, got {other:?}"),
    }
}

/// A string, or None for null.
pub fn opt_str(v: &Value) -> Option<String> {
    if is_null(v) {
        None
    } else {
        Some(as_str(v).to_string())
    }
}

/// A double, or None for null.
pub fn opt_f64(v: &Value) -> Option<f64> {
    if is_null(v) {
        None
    } else {
        Some(as_f64(v))
    }
}

/// Whether the value is RESP null.
pub fn is_null(v: &Value) -> bool {
    matches!(v, Value::Nil)
}

/// The elements of an array (or RESP3 set).
pub fn as_array(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// Run a command given as words; top-level error replies come back as `Err`.
pub fn call(conn: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(conn)
}

/// Run a command that must succeed.
pub fn call_ok(conn: &mut redis::Connection, args: &[&str]) -> Value {
    call(conn, args).unwrap_or_else(|e| panic!("{args:?} failed: {}", error_text(&e)))
}

/// Run a command that must fail; returns the error as the server sent it
/// (`ERR unknown rule 'x' ...`).
pub fn call_err(conn: &mut redis::Connection, args: &[&str]) -> String {
    match call(conn, args) {
        Ok(v) => panic!("{args:?} should have failed, got {v:?}"),
        Err(e) => error_text(&e),
    }
}

/// An error reply as the server sent it: `<CODE> <detail>`.
pub fn error_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}
