//! Key templates: how a rule names its cache keys, and how ids are read back
//! out of key names.

use std::fmt;

/// The placeholder a key template must contain exactly once.
pub const PLACEHOLDER: &str = "{id}";

/// A key template such as `user:{id}:cost_weekly`: the exact token `{id}`
/// appears once; every other char (braces included) is literal, so
/// `user:{{id}}:cost` matches `user:{4}:cost` with id `4`.
///
/// The id is one or more bytes and holds no `:` (Redis's separator) unless the
/// rule allows it: otherwise `u:{id}` would claim every `u:4:w` of a rule
/// `u:{id}:w`, and every application key under its prefix (`...:abc:lock`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTemplate {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    source: String,
    colon_in_id: bool,
}

/// Why a key template was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// The template (given) has no `{id}`.
    NoPlaceholder(String),
    /// The template (given) has `{id}` this many times, more than once.
    ManyPlaceholders(String, usize),
    /// The template is `{id}` alone: it would match, and let PURGE delete,
    /// every key in the database.
    NoLiteral(String),
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::NoPlaceholder(source) => write!(
                f,
                "key template '{source}' must contain {PLACEHOLDER} exactly once, found 0"
            ),
            TemplateError::ManyPlaceholders(source, count) => write!(
                f,
                "key template '{source}' must contain {PLACEHOLDER} exactly once, found {count}"
            ),
            TemplateError::NoLiteral(source) => write!(
                f,
                "key template '{source}' needs literal text around {PLACEHOLDER}; alone it would match every key"
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

impl KeyTemplate {
    /// Parses a template; it must contain `{id}` exactly once and some literal
    /// text before or after it.
    pub fn parse(source: &str) -> Result<KeyTemplate, TemplateError> {
        let count = source.matches(PLACEHOLDER).count();
        match count {
            0 => return Err(TemplateError::NoPlaceholder(source.to_string())),
            1 => {}
            _ => return Err(TemplateError::ManyPlaceholders(source.to_string(), count)),
        }
        if source == PLACEHOLDER {
            return Err(TemplateError::NoLiteral(source.to_string()));
        }
        let at = source
            .find(PLACEHOLDER)
            .expect("placeholder counted once above");
        Ok(KeyTemplate {
            prefix: source.as_bytes()[..at].to_vec(),
            suffix: source.as_bytes()[at + PLACEHOLDER.len()..].to_vec(),
            source: source.to_string(),
            colon_in_id: false,
        })
    }

    /// The same template, its ids allowed to hold `:` (`ids_may_contain_colon`).
    pub fn allowing_colon_in_id(mut self) -> KeyTemplate {
        self.colon_in_id = true;
        self
    }

    /// Whether ids may hold `:`.
    pub fn colon_in_id(&self) -> bool {
        self.colon_in_id
    }

    /// The template as written, e.g. `user:{id}:cost_weekly`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The literal bytes before `{id}`.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The literal bytes after `{id}`.
    pub fn suffix(&self) -> &[u8] {
        &self.suffix
    }

    /// The key name for `id`.
    pub fn key_for(&self, id: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + id.len() + self.suffix.len());
        key.extend_from_slice(&self.prefix);
        key.extend_from_slice(id);
        key.extend_from_slice(&self.suffix);
        key
    }

    /// The id part of `key` if it matches (prefix and suffix, a non-empty id
    /// between them, without `:` unless allowed), else None. Works on
    /// arbitrary bytes.
    pub fn id_of<'k>(&self, key: &'k [u8]) -> Option<&'k [u8]> {
        // Prefix and suffix must not overlap and must leave at least one byte.
        if key.len() <= self.prefix.len() + self.suffix.len() {
            return None;
        }
        if !key.starts_with(&self.prefix) || !key.ends_with(&self.suffix) {
            return None;
        }
        let id = &key[self.prefix.len()..key.len() - self.suffix.len()];
        (self.colon_in_id || !id.contains(&b':')).then_some(id)
    }

    /// A key both templates match, if there is one: two rules whose templates
    /// can claim the same key would each call the other's keys orphans.
    pub fn overlap(&self, other: &KeyTemplate) -> Option<Vec<u8>> {
        crate::template_overlap::common_key(&self.atoms(), &other.atoms())
    }

    /// The template as a sequence of atoms, for [`KeyTemplate::overlap`].
    fn atoms(&self) -> Vec<Atom> {
        let id = if self.colon_in_id {
            Atom::AnyBytes
        } else {
            Atom::AnyBut(b':')
        };
        let mut atoms: Vec<Atom> = self.prefix.iter().map(|&b| Atom::Byte(b)).collect();
        atoms.push(id);
        atoms.extend(self.suffix.iter().map(|&b| Atom::Byte(b)));
        atoms
    }
}

impl fmt::Display for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// One step of a template: a literal byte, or a placeholder's one or more bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Atom {
    Byte(u8),
    AnyBytes,
    AnyBut(u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(source: &str) -> KeyTemplate {
        KeyTemplate::parse(source).unwrap()
    }

    #[test]
    fn parse_splits_prefix_and_suffix() {
        let cases: &[(&str, &[u8], &[u8])] = &[
            ("user:{id}:cost_weekly", b"user:", b":cost_weekly"),
            ("mcp:connection:state:{id}", b"mcp:connection:state:", b""),
            ("{id}:suffix", b"", b":suffix"),
            ("user:{{id}}:cost", b"user:{", b"}:cost"),
            ("{{id}", b"{", b""),
            ("a{id}a", b"a", b"a"),
            ("{i}{id}{d}", b"{i}", b"{d}"),
            ("ключ:{id}", "ключ:".as_bytes(), b""),
        ];
        for &(source, prefix, suffix) in cases {
            let t = template(source);
            assert_eq!(t.prefix(), prefix, "prefix of {source}");
            assert_eq!(t.suffix(), suffix, "suffix of {source}");
            assert_eq!(t.source(), source);
            assert_eq!(t.to_string(), source);
        }
    }

    #[test]
    fn parse_refuses_bad_templates() {
        let cases = [
            (
                "user:cost",
                TemplateError::NoPlaceholder("user:cost".into()),
            ),
            ("", TemplateError::NoPlaceholder("".into())),
            (
                "user:{ID}",
                TemplateError::NoPlaceholder("user:{ID}".into()),
            ),
            (
                "user:{ id }",
                TemplateError::NoPlaceholder("user:{ id }".into()),
            ),
            ("user:id", TemplateError::NoPlaceholder("user:id".into())),
            (
                "{id}:{id}",
                TemplateError::ManyPlaceholders("{id}:{id}".into(), 2),
            ),
            (
                "{id}{id}{id}",
                TemplateError::ManyPlaceholders("{id}{id}{id}".into(), 3),
            ),
            ("{id}", TemplateError::NoLiteral("{id}".into())),
        ];
        for (source, expected) in cases {
            assert_eq!(KeyTemplate::parse(source), Err(expected), "{source}");
        }
    }

    #[test]
    fn errors_name_the_template_and_the_count() {
        assert_eq!(
            KeyTemplate::parse("x").unwrap_err().to_string(),
            "key template 'x' must contain {id} exactly once, found 0"
        );
        assert_eq!(
            KeyTemplate::parse("a{id}{id}").unwrap_err().to_string(),
            "key template 'a{id}{id}' must contain {id} exactly once, found 2"
        );
        assert_eq!(
            KeyTemplate::parse("{id}").unwrap_err().to_string(),
            "key template '{id}' needs literal text around {id}; alone it would match every key"
        );
    }

    #[test]
    fn key_for_and_id_of_round_trip() {
        let ids: &[&[u8]] = &[
            b"4",
            b"12345678901234567890",
            b"a:b:c",
            b"*",
            b"?",
            b"[abc]",
            b"\\",
            b"{4}",
            b"\x00\xff\xfe",
            b" ",
            "ü".as_bytes(),
            b":cost_weekly",
            b"user:",
        ];
        for source in [
            "user:{id}:cost_weekly",
            "{id}:x",
            "x:{id}",
            "a{id}a",
            "u:{{id}}",
        ] {
            let strict = template(source);
            let wide = template(source).allowing_colon_in_id();
            for &id in ids {
                let key = wide.key_for(id);
                assert_eq!(wide.id_of(&key), Some(id), "{source} with id {id:?}");
                let expected = (!id.contains(&b':')).then_some(id);
                assert_eq!(strict.id_of(&key), expected, "{source} with id {id:?}");
            }
        }
    }

    #[test]
    fn ids_hold_no_colon_unless_allowed() {
        let presence = template("mcp:connection:state:{id}");
        assert_eq!(
            presence.id_of(b"mcp:connection:state:abc"),
            Some(&b"abc"[..])
        );
        assert_eq!(presence.id_of(b"mcp:connection:state:abc:lock"), None);
        assert_eq!(template("u:{id}").id_of(b"u:4:w"), None);
        assert_eq!(
            template("u:{id}").allowing_colon_in_id().id_of(b"u:4:w"),
            Some(&b"4:w"[..])
        );
    }

    #[test]
    fn key_for_builds_the_exact_bytes() {
        assert_eq!(
            template("user:{id}:cost_weekly").key_for(b"4"),
            b"user:4:cost_weekly"
        );
        assert_eq!(template("user:{{id}}:cost").key_for(b"4"), b"user:{4}:cost");
        assert_eq!(template("s:{id}").key_for(b"\x00*"), b"s:\x00*");
    }

    #[test]
    fn id_of_reads_hash_tagged_keys() {
        let t = template("user:{{id}}:cost");
        assert_eq!(t.id_of(b"user:{4}:cost"), Some(&b"4"[..]));
        assert_eq!(t.id_of(b"user:4:cost"), None);
    }

    #[test]
    fn id_of_rejects_keys_that_do_not_match() {
        let cases: &[(&str, &[u8])] = &[
            ("user:{id}:cost_weekly", b"user::cost_weekly"),
            ("user:{id}:cost_weekly", b"user:4:cost_monthly"),
            ("user:{id}:cost_weekly", b"usr:4:cost_weekly"),
            ("user:{id}:cost_weekly", b"user:4:cost_weekly2"),
            ("user:{id}:cost_weekly", b"user:4"),
            ("user:{id}:cost_weekly", b""),
            ("user:{id}:cost_weekly", b"USER:4:COST_WEEKLY"),
            ("a{id}a", b"a"),
            ("a{id}a", b"aa"),
            ("a{id}a", b""),
            ("a{id}a", b"ab"),
            ("a{id}a", b"ba"),
            ("aa{id}aa", b"aaa"),
            ("aa{id}aa", b"aaaa"),
            ("x:{id}", b"x:"),
            ("{id}:x", b":x"),
        ];
        for &(source, key) in cases {
            assert_eq!(template(source).id_of(key), None, "{source} vs {key:?}");
        }
    }

    #[test]
    fn id_of_takes_the_shortest_overlap_free_split() {
        assert_eq!(template("a{id}a").id_of(b"aaa"), Some(&b"a"[..]));
        assert_eq!(template("aa{id}aa").id_of(b"aaaaa"), Some(&b"a"[..]));
        assert_eq!(
            template("user:{id}:cost")
                .allowing_colon_in_id()
                .id_of(b"user:user:1:cost:cost"),
            Some(&b"user:1:cost"[..])
        );
    }
}
