//! How ids are matched against the truth's first column.
//!
//! Ids arrive as text (parsed out of Redis key names). Semantically an id
//! matches a truth row when it equals the row's id rendered as text, which is
//! what a full run returns. For a few common types the comparison is done on
//! the column's own type instead, so an index on it is used; ids that are not
//! in that type's canonical text form are dropped first, since a full run
//! could never return them, and since a failing cast would fail the query.

use postgres::types::Type;

/// The id column's type, as far as matching is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdKind {
    Int2,
    Int4,
    Int8,
    /// text and varchar: compared as text directly.
    Text,
    Uuid,
    /// Anything else is compared through its text form. Correct for every
    /// type; only an expression index would help it.
    Other,
}

impl IdKind {
    pub(crate) fn of(ty: &Type) -> IdKind {
        // Matched by built-in type, never by name: a domain or a type in
        // another schema named "int4" must not pass for the real one.
        if *ty == Type::INT2 {
            IdKind::Int2
        } else if *ty == Type::INT4 {
            IdKind::Int4
        } else if *ty == Type::INT8 {
            IdKind::Int8
        } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
            IdKind::Text
        } else if *ty == Type::UUID {
            IdKind::Uuid
        } else {
            IdKind::Other
        }
    }

    /// The WHERE condition restricting column `col` to the ids bound as `$n`.
    /// Type names are literals from this list, never taken from the server.
    pub(crate) fn condition(self, col: &str, n: usize) -> String {
        match self {
            IdKind::Int2 => format!("{col} = ANY(${n}::text[]::int2[])"),
            IdKind::Int4 => format!("{col} = ANY(${n}::text[]::int4[])"),
            IdKind::Int8 => format!("{col} = ANY(${n}::text[]::int8[])"),
            IdKind::Text => format!("{col} = ANY(${n}::text[])"),
            IdKind::Uuid => format!("{col} = ANY(${n}::text[]::uuid[])"),
            IdKind::Other => format!("{col}::text = ANY(${n}::text[])"),
        }
    }

    /// Keeps the ids that could be returned by the truth and are safe to cast.
    pub(crate) fn filter(self, ids: &[String]) -> Vec<String> {
        ids.iter().filter(|id| self.accepts(id)).cloned().collect()
    }

    fn accepts(self, id: &str) -> bool {
        // PostgreSQL text cannot hold NUL; binding it would fail the query.
        if id.contains('\0') {
            return false;
        }
        match self {
            IdKind::Int2 => canonical_int(id, i16::MIN.into(), i16::MAX.into()),
            IdKind::Int4 => canonical_int(id, i32::MIN.into(), i32::MAX.into()),
            IdKind::Int8 => canonical_int(id, i64::MIN, i64::MAX),
            IdKind::Uuid => canonical_uuid(id),
            IdKind::Text | IdKind::Other => true,
        }
    }
}

/// True when `id` is exactly how PostgreSQL prints an integer in range:
/// "7" yes; "007", "+7", " 7", "7.0", "abc" no.
fn canonical_int(id: &str, min: i64, max: i64) -> bool {
    match id.parse::<i64>() {
        Ok(n) => n >= min && n <= max && n.to_string() == id,
        Err(_) => false,
    }
}

/// True when `id` is how PostgreSQL prints a uuid: lowercase, hyphenated
/// 8-4-4-4-12.
fn canonical_uuid(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn integers_keep_only_canonical_in_range() {
        let input = ids(&["1", "-5", "007", "+7", " 7", "abc", "1.0", "40000", "-0"]);
        assert_eq!(IdKind::Int2.filter(&input), ids(&["1", "-5"]));
        assert_eq!(
            IdKind::Int4.filter(&ids(&["2147483647", "2147483648"])),
            ids(&["2147483647"])
        );
        assert_eq!(
            IdKind::Int8.filter(&ids(&["9223372036854775807", "9223372036854775808"])),
            ids(&["9223372036854775807"])
        );
    }

    #[test]
    fn uuids_keep_only_canonical() {
        let good = "0e6f1b2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
        let input = ids(&[good, &good.to_uppercase(), "not-a-uuid", &good[..35]]);
        assert_eq!(IdKind::Uuid.filter(&input), ids(&[good]));
    }

    #[test]
    fn text_drops_only_nul() {
        let input = ids(&["a b", "", "x\0y", "é"]);
        assert_eq!(IdKind::Text.filter(&input), ids(&["a b", "", "é"]));
        assert_eq!(IdKind::Other.filter(&input), ids(&["a b", "", "é"]));
    }

    #[test]
    fn kinds_follow_builtin_types() {
        assert_eq!(IdKind::of(&Type::INT4), IdKind::Int4);
        assert_eq!(IdKind::of(&Type::VARCHAR), IdKind::Text);
        assert_eq!(IdKind::of(&Type::NUMERIC), IdKind::Other);
        assert_eq!(IdKind::of(&Type::BPCHAR), IdKind::Other);
    }
}
