//! Key templates: how a rule names its cache keys, and how ids (and the other
//! placeholders' parts) are read back out of key names.

use std::fmt;

/// The placeholder a key template must contain exactly once.
pub const PLACEHOLDER: &str = "{id}";

/// The most placeholders one template may hold; matching backtracks over them.
const MAX_PLACEHOLDERS: usize = 8;

/// A key template such as `user:{id}:cost_weekly` or
/// `key:{id}:cost_daily_{reset}`: `{id}` appears once, other named
/// placeholders (`{name}`, name `[a-z_][a-z0-9_]*`) may appear once each, and
/// every other char (braces included) is literal, so `user:{{id}}:cost`
/// matches `user:{4}:cost` with id `4`.
///
/// A placeholder is one or more bytes up to the next literal text, and holds
/// no `:` (Redis's separator) unless it is `{id}` and the rule allows it:
/// otherwise `u:{id}` would claim every `u:4:w` of a rule `u:{id}:w`, and
/// every application key under its prefix (`...:abc:lock`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTemplate {
    /// `literals[i]` comes before placeholder `i`; the last one ends the key.
    literals: Vec<Vec<u8>>,
    /// The placeholders' names, in order.
    names: Vec<String>,
    /// Which placeholder is `{id}`.
    id_at: usize,
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
    /// The template uses this placeholder name more than once.
    DuplicateName(String, String),
    /// These two placeholders have nothing literal between them, so where one
    /// ends and the next begins would be a guess.
    Adjacent(String, String, String),
    /// More placeholders than [`MAX_PLACEHOLDERS`].
    TooMany(String, usize),
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
            TemplateError::DuplicateName(source, name) => write!(
                f,
                "key template '{source}' uses placeholder {{{name}}} twice"
            ),
            TemplateError::Adjacent(source, a, b) => write!(
                f,
                "key template '{source}' is ambiguous: {{{a}}} and {{{b}}} have no literal text between them"
            ),
            TemplateError::TooMany(source, n) => write!(
                f,
                "key template '{source}' has {n} placeholders, at most {MAX_PLACEHOLDERS} are allowed"
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

/// The placeholder name at the start of `rest` (which follows a `{`), if the
/// `{` opens one: `[a-z_][a-z0-9_]*` then `}`.
fn placeholder_at(rest: &[u8]) -> Option<&str> {
    let end = rest.iter().position(|&b| b == b'}')?;
    let name = &rest[..end];
    let first_ok = name
        .first()
        .is_some_and(|&b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = name
        .iter()
        .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    (first_ok && rest_ok).then(|| std::str::from_utf8(name).expect("ASCII checked"))
}

impl KeyTemplate {
    /// Parses a template: `{id}` exactly once, other placeholders at most once
    /// each, literal text between any two placeholders and somewhere around
    /// `{id}`.
    pub fn parse(source: &str) -> Result<KeyTemplate, TemplateError> {
        let bytes = source.as_bytes();
        let mut literals = vec![Vec::new()];
        let mut names: Vec<String> = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            if bytes[at] == b'{' {
                if let Some(name) = placeholder_at(&bytes[at + 1..]) {
                    names.push(name.to_string());
                    literals.push(Vec::new());
                    at += name.len() + 2;
                    continue;
                }
            }
            literals.last_mut().expect("never empty").push(bytes[at]);
            at += 1;
        }
        let ids = names.iter().filter(|n| *n == "id").count();
        match ids {
            0 => return Err(TemplateError::NoPlaceholder(source.to_string())),
            1 => {}
            _ => return Err(TemplateError::ManyPlaceholders(source.to_string(), ids)),
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(TemplateError::DuplicateName(
                    source.to_string(),
                    name.clone(),
                ));
            }
            if i > 0 && literals[i].is_empty() {
                return Err(TemplateError::Adjacent(
                    source.to_string(),
                    names[i - 1].clone(),
                    name.clone(),
                ));
            }
        }
        if names.len() > MAX_PLACEHOLDERS {
            return Err(TemplateError::TooMany(source.to_string(), names.len()));
        }
        if literals.iter().all(Vec::is_empty) {
            return Err(TemplateError::NoLiteral(source.to_string()));
        }
        let id_at = names.iter().position(|n| n == "id").expect("counted above");
        Ok(KeyTemplate {
            literals,
            names,
            id_at,
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

    /// The literal bytes before the first placeholder.
    pub fn prefix(&self) -> &[u8] {
        &self.literals[0]
    }

    /// The literal bytes after the last placeholder.
    pub fn suffix(&self) -> &[u8] {
        self.literals.last().expect("never empty")
    }

    /// The placeholders' names in order, `id` among them.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The names of the placeholders other than `{id}`, in order.
    pub fn other_names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.id_at)
            .map(|(_, n)| n.as_str())
    }

    /// Whether the template holds placeholders besides `{id}`: then a key is
    /// one of an id's keys, and truth columns are matched by name.
    pub fn is_multi(&self) -> bool {
        self.names.len() > 1
    }

    /// Where `{id}` is among the placeholders.
    pub fn id_index(&self) -> usize {
        self.id_at
    }

    /// The key name for `id`. Only for templates with `{id}` alone; a
    /// template with more placeholders needs them all ([`KeyTemplate::key_from`]).
    pub fn key_for(&self, id: &[u8]) -> Vec<u8> {
        debug_assert!(!self.is_multi(), "key_for on {}", self.source);
        self.key_from(&[id])
    }

    /// The key name for these placeholder values, in [`KeyTemplate::names`] order.
    pub fn key_from(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut key = self.literals[0].clone();
        for (part, literal) in parts.iter().zip(&self.literals[1..]) {
            key.extend_from_slice(part);
            key.extend_from_slice(literal);
        }
        key
    }

    /// The id part of `key` if it matches, else None. Works on arbitrary bytes.
    pub fn id_of<'k>(&self, key: &'k [u8]) -> Option<&'k [u8]> {
        if self.names.len() > 1 {
            return self.parts_of(key).map(|parts| parts[self.id_at]);
        }
        // `{id}` alone: no parts to collect, so nothing is allocated (the
        // keyspace-event callback calls this inside every write).
        let (first, last) = (self.prefix(), self.suffix());
        if key.len() <= first.len() + last.len() || !key.starts_with(first) || !key.ends_with(last)
        {
            return None;
        }
        let id = &key[first.len()..key.len() - last.len()];
        id.iter().all(|&b| self.takes(0, b)).then_some(id)
    }

    /// Every placeholder's part of `key` (in [`KeyTemplate::names`] order) if
    /// it matches: each part one or more bytes, without `:` unless allowed,
    /// up to the earliest next literal that lets the rest match.
    pub fn parts_of<'k>(&self, key: &'k [u8]) -> Option<Vec<&'k [u8]>> {
        let (first, last) = (self.prefix(), self.suffix());
        // Prefix and suffix must not overlap and must leave a byte per placeholder.
        if key.len() < first.len() + last.len() + self.names.len() {
            return None;
        }
        if !key.starts_with(first) || !key.ends_with(last) {
            return None;
        }
        let body = &key[first.len()..key.len() - last.len()];
        let mut parts = Vec::with_capacity(self.names.len());
        self.match_from(body, 0, &mut parts).then_some(parts)
    }

    /// Whether placeholder `i` may hold byte `b`.
    fn takes(&self, i: usize, b: u8) -> bool {
        b != b':' || (i == self.id_at && self.colon_in_id)
    }

    /// Matches `body` from placeholder `i` on, pushing parts; backtracks.
    fn match_from<'k>(&self, body: &'k [u8], i: usize, parts: &mut Vec<&'k [u8]>) -> bool {
        if i + 1 == self.names.len() {
            let ok = !body.is_empty() && body.iter().all(|&b| self.takes(i, b));
            if ok {
                parts.push(body);
            }
            return ok;
        }
        let literal = &self.literals[i + 1];
        let mut end = 1;
        while end + literal.len() <= body.len() {
            if !self.takes(i, body[end - 1]) {
                return false;
            }
            if body[end..].starts_with(literal) {
                parts.push(&body[..end]);
                if self.match_from(&body[end + literal.len()..], i + 1, parts) {
                    return true;
                }
                parts.pop();
            }
            end += 1;
        }
        false
    }

    /// A key both templates match, if there is one: two rules whose templates
    /// can claim the same key would each call the other's keys orphans.
    pub fn overlap(&self, other: &KeyTemplate) -> Option<Vec<u8>> {
        crate::template_overlap::common_key(&self.atoms(), &other.atoms())
    }

    /// The template as a sequence of atoms, for [`KeyTemplate::overlap`].
    fn atoms(&self) -> Vec<Atom> {
        let mut atoms: Vec<Atom> = self.literals[0].iter().map(|&b| Atom::Byte(b)).collect();
        for (i, literal) in self.literals[1..].iter().enumerate() {
            atoms.push(if i == self.id_at && self.colon_in_id {
                Atom::AnyBytes
            } else {
                Atom::AnyBut(b':')
            });
            atoms.extend(literal.iter().map(|&b| Atom::Byte(b)));
        }
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
            ("{I}{id}{D}", b"{I}", b"{D}"),
            ("{ i}{id}{-d}", b"{ i}", b"{-d}"),
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

#[cfg(test)]
mod several_placeholders {
    use super::*;

    fn template(source: &str) -> KeyTemplate {
        KeyTemplate::parse(source).unwrap()
    }

    fn parts(t: &KeyTemplate, key: &str) -> Option<Vec<String>> {
        t.parts_of(key.as_bytes()).map(|p| {
            p.iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect()
        })
    }

    #[test]
    fn parses_names_in_order() {
        let t = template("zsxq:project:{id}:leaderboard:{type}");
        assert_eq!(t.names(), ["id", "type"]);
        assert_eq!(t.other_names().collect::<Vec<_>>(), ["type"]);
        assert!(t.is_multi() && !template("u:{id}").is_multi());
        assert_eq!(t.id_index(), 0);
        let t = template("{reset}_x:{id}");
        assert_eq!(
            (t.id_index(), t.prefix(), t.suffix()),
            (1, &b""[..], &b""[..])
        );
    }

    #[test]
    fn matches_each_part_up_to_the_next_literal() {
        let daily = template("key:{id}:cost_daily_{reset}");
        assert_eq!(
            parts(&daily, "key:123:cost_daily_1800"),
            Some(vec!["123".into(), "1800".into()])
        );
        for key in [
            "key:123:cost_daily_",
            "key::cost_daily_1800",
            "key:1:2:cost_daily_1800",
            "key:123:cost_daily_18:00",
            "key:123:cost_weekly",
            "key:123:cost_daily",
        ] {
            assert_eq!(parts(&daily, key), None, "{key}");
        }
        let board = template("zsxq:project:{id}:leaderboard:{type}");
        assert_eq!(
            parts(&board, "zsxq:project:1141152412:leaderboard:continuous"),
            Some(vec!["1141152412".into(), "continuous".into()])
        );
        assert_eq!(parts(&board, "zsxq:project:1:leaderboard:a:b"), None);
        // The earliest split that lets the rest match: the literal may recur.
        let t = template("a_{x}_{id}_z");
        assert_eq!(parts(&t, "a_1_2_3_z"), Some(vec!["1".into(), "2_3".into()]));
        // With colons allowed in ids only {id} takes them.
        let wide = template("k:{id}:d_{reset}").allowing_colon_in_id();
        assert_eq!(
            parts(&wide, "k:a:b:d_9"),
            Some(vec!["a:b".into(), "9".into()])
        );
        assert_eq!(parts(&wide, "k:a:d_9:9"), None);
    }

    #[test]
    fn key_from_round_trips() {
        let t = template("key:{id}:cost_daily_{reset}");
        let key = t.key_from(&[b"123", b"0000"]);
        assert_eq!(key, b"key:123:cost_daily_0000");
        assert_eq!(t.parts_of(&key), Some(vec![&b"123"[..], &b"0000"[..]]));
        assert_eq!(t.id_of(&key), Some(&b"123"[..]));
    }

    #[test]
    fn refuses_ambiguous_templates() {
        let cases = [
            (
                "k:{id}{type}",
                "key template 'k:{id}{type}' is ambiguous: {id} and {type} have no literal text between them",
            ),
            (
                "k:{type}:{id}:{type}",
                "key template 'k:{type}:{id}:{type}' uses placeholder {type} twice",
            ),
            (
                "k:{type}",
                "key template 'k:{type}' must contain {id} exactly once, found 0",
            ),
            (
                "{a}:{b}:{c}:{d}:{e}:{f}:{g}:{h}:{id}",
                "key template '{a}:{b}:{c}:{d}:{e}:{f}:{g}:{h}:{id}' has 9 placeholders, at most 8 are allowed",
            ),
        ];
        for (source, message) in cases {
            assert_eq!(KeyTemplate::parse(source).unwrap_err().to_string(), message);
        }
        // Not placeholders: upper case, spaces, digits first; braces stay literal.
        let t = template("{Type}:{ x }:{9a}:{id}");
        assert_eq!(t.names(), ["id"]);
    }

    #[test]
    fn overlapping_layouts_are_found() {
        let daily = template("key:{id}:cost_daily_{reset}");
        let other = template("key:{id}:cost_{period}");
        let key = daily
            .overlap(&other)
            .expect("cost_daily_x is a cost_{period} too");
        assert!(daily.parts_of(&key).is_some() && other.parts_of(&key).is_some());
        assert_eq!(daily.overlap(&template("key:{id}:cost_weekly")), None);
        assert_eq!(
            template("zsxq:project:{id}:leaderboard:{type}")
                .overlap(&template("zsxq:project:{id}:stats")),
            None
        );
    }
}
