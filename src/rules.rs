//! The rules file: which families of cache keys are checked, and against
//! which truth. Parsing and validation only; nothing here
//! touches Redis or PostgreSQL.

use std::fmt;

use crate::ordered_json::JsonNode;

use crate::template::KeyTemplate;

/// What kind of value a rule's keys hold, and so how they are compared.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleKind {
    /// A STRING holding a number.
    Number,
    /// A ZSET whose members end in `:<amount>`, scored by epoch ms, summed
    /// over the last `window_ms` milliseconds.
    WindowSum {
        /// The window length in milliseconds.
        window_ms: u64,
    },
    /// A number in one field of a HASH.
    HashField {
        /// The hash field holding the number.
        field: String,
    },
    /// The key must exist exactly for the ids the truth returns.
    Presence,
    /// A STRING holding a JSON object; each truth column other than `id` and
    /// the placeholders names a field (dots reach into nested objects).
    Json,
}

/// The kind names accepted in the rules file, in the order messages list them.
const KIND_NAMES: [&str; 5] = ["number", "window_sum", "hash_field", "presence", "json"];

impl RuleKind {
    /// The name used in the rules file and in replies.
    pub fn name(&self) -> &'static str {
        match self {
            RuleKind::Number => "number",
            RuleKind::WindowSum { .. } => "window_sum",
            RuleKind::HashField { .. } => "hash_field",
            RuleKind::Presence => "presence",
            RuleKind::Json => "json",
        }
    }

    /// Whether keys of this kind hold a value compared with the truth (all
    /// kinds but `presence`).
    pub fn is_valued(&self) -> bool {
        !matches!(self, RuleKind::Presence)
    }

    /// Whether a drifted key of this kind can be set to the truth. A window
    /// sum is made of many ZSET members and a presence key has no value, so
    /// neither can.
    pub fn can_rewrite(&self) -> bool {
        matches!(self, RuleKind::Number | RuleKind::HashField { .. })
    }
}

/// How a drifted key is repaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixPolicy {
    /// Delete the key, so the application reloads it from the database.
    Delete,
    /// Set the key to the truth, keeping its TTL.
    Rewrite,
    /// Report only; never touch the key.
    None,
}

impl FixPolicy {
    /// The name used in the rules file and in replies.
    pub fn name(&self) -> &'static str {
        match self {
            FixPolicy::Delete => "delete",
            FixPolicy::Rewrite => "rewrite",
            FixPolicy::None => "none",
        }
    }
}

/// What an id the truth returns but the cache lacks means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingPolicy {
    /// Nothing: cache-aside keys load lazily.
    Ignore,
    /// Report the key as `missing`.
    Report,
}

impl MissingPolicy {
    /// The name used in the rules file and in replies.
    pub fn name(&self) -> &'static str {
        match self {
            MissingPolicy::Ignore => "ignore",
            MissingPolicy::Report => "report",
        }
    }
}

/// A json rule's staleness bound: the document's age field, and how old it
/// may be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgeLimit {
    /// The field holding an RFC 3339 time or epoch seconds (dots nest).
    pub field: String,
    pub max_age_sec: u64,
}

/// One validated rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Unique name, made of `[A-Za-z0-9_.:-]`.
    pub name: String,
    /// The kind of value the keys hold.
    pub kind: RuleKind,
    /// The keys' template.
    pub key: KeyTemplate,
    /// The operator's SQL: id first, then (for valued kinds) the value.
    pub truth: String,
    /// Absolute drift threshold; None uses the module's `threshold` config.
    pub threshold: Option<f64>,
    /// Relative threshold in percent of |truth|, required in addition to
    /// the absolute one when set.
    pub threshold_pct: Option<f64>,
    /// How drifted keys are repaired (default `delete`).
    pub fix: FixPolicy,
    /// Whether ids without a key are reported (default `ignore` for valued
    /// kinds, `report` for presence).
    pub missing: MissingPolicy,
    /// Whether keys without a TTL are reported (default false).
    pub require_ttl: bool,
    /// Keys without a TTL or with a longer one are `bad_ttl`.
    pub ttl_max_sec: Option<u64>,
    /// json: documents older than this are `stale`.
    pub age: Option<AgeLimit>,
    /// This rule's own schedule; None uses `check-interval-sec`.
    pub interval_sec: Option<u64>,
    /// SQL returning the ids whose truth changed since `$1` (a timestamptz):
    /// CHANGED checks add them to the ids whose keys were written.
    pub changed: Option<String>,
    /// How far before the previous run's start `changed` looks: `now()` is a
    /// transaction's start, so rows committed late carry earlier times.
    pub changed_overlap_ms: u64,
    /// With a schedule: scheduled runs are CHANGED checks, and one in this
    /// many seconds is a full check.
    pub full_every_sec: Option<u64>,
    /// Writes of its keys are sampled and compared with the truth after a
    /// delay: continuous consistency, per rule in INFO.
    pub watch: bool,
}

/// `changed_overlap_ms` when the rule does not say.
pub const DEFAULT_CHANGED_OVERLAP_MS: u64 = 60_000;

impl Rule {
    /// The absolute threshold in force: a command's THRESHOLD (`override_`)
    /// beats the rule's own, which beats the module default.
    pub fn effective_threshold(&self, default: f64, override_: Option<f64>) -> f64 {
        override_.or(self.threshold).unwrap_or(default)
    }
}

/// The validated rules of one rules file, in file order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

/// Why a rules file was refused: which file, which rule, what is wrong.
///
/// `rule` holds the rule's name or, when the rule has no usable name (or
/// its name repeats an earlier rule's), `#n` with its 1-based position in
/// the `rules` array. Names cannot contain `#`, so the two never collide.
#[derive(Clone, Debug, PartialEq)]
pub struct RulesError {
    /// The file, when the rules came from one.
    pub file: Option<String>,
    /// The rule: its name, or `#n`.
    pub rule: Option<String>,
    /// What is wrong, naming the field and the reason.
    pub problem: String,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        match &self.rule {
            Some(position) if position.starts_with('#') => write!(f, "rule {position}: ")?,
            Some(name) => write!(f, "rule '{name}': ")?,
            None => {}
        }
        f.write_str(&self.problem)
    }
}

impl std::error::Error for RulesError {}

impl RulesError {
    fn file_level(problem: String) -> RulesError {
        RulesError {
            file: None,
            rule: None,
            problem,
        }
    }
}

impl RuleSet {
    /// Parses and validates the rules file's JSON text.
    pub fn parse(json: &str) -> Result<RuleSet, RulesError> {
        let document: JsonNode = serde_json::from_str(json)
            .map_err(|error| RulesError::file_level(format!("invalid JSON: {error}")))?;
        let entries = top_level_rules(&document).map_err(RulesError::file_level)?;
        let mut rules: Vec<Rule> = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let position = format!("#{}", index + 1);
            let in_rule = |label: &str, problem: String| RulesError {
                file: None,
                rule: Some(label.to_string()),
                problem,
            };
            let fields = match entry {
                JsonNode::Object(fields) => fields,
                other => {
                    return Err(in_rule(
                        &position,
                        format!("must be an object, got {}", describe(other)),
                    ))
                }
            };
            let name = rule_name(fields).map_err(|problem| in_rule(&position, problem))?;
            if let Some(first) = rules.iter().position(|rule| rule.name == name) {
                return Err(in_rule(
                    &position,
                    format!(
                        "duplicate rule name '{name}' (first used by rule #{})",
                        first + 1
                    ),
                ));
            }
            let rule = rule_from_fields(name.clone(), fields)
                .map_err(|problem| in_rule(&name, problem))?;
            // Two rules claiming one key would each call the other's keys orphans.
            for earlier in &rules {
                if let Some(key) = earlier.key.overlap(&rule.key) {
                    return Err(in_rule(
                        &name,
                        format!(
                            "key template {} can match the same keys as rule '{}' ({}), for example {}",
                            quote(rule.key.source()),
                            earlier.name,
                            quote(earlier.key.source()),
                            quote(&crate::reply::bytes_as_text(&key))
                        ),
                    ));
                }
            }
            rules.push(rule);
        }
        Ok(RuleSet { rules })
    }

    /// Reads and parses a rules file; errors carry the file's path.
    pub fn load_file(path: &str) -> Result<RuleSet, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|error| RulesError {
            file: Some(path.to_string()),
            rule: None,
            problem: format!("cannot read: {error}"),
        })?;
        RuleSet::parse(&text).map_err(|error| RulesError {
            file: Some(path.to_string()),
            ..error
        })
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule with exactly this name (case-sensitive).
    pub fn get(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.name == name)
    }

    /// The rules' names, in file order.
    pub fn names(&self) -> Vec<&str> {
        self.rules.iter().map(|rule| rule.name.as_str()).collect()
    }
}

/// The fields a rule may have, in the order the file format documents them.
const RULE_FIELDS: [&str; 20] = [
    "name",
    "kind",
    "key",
    "truth",
    "window_ms",
    "field",
    "threshold",
    "threshold_pct",
    "fix",
    "missing",
    "require_ttl",
    "interval_sec",
    "ids_may_contain_colon",
    "ttl_max_sec",
    "age_field",
    "max_age_sec",
    "changed",
    "changed_overlap_ms",
    "full_every_sec",
    "watch",
];

/// Checks the document is `{"rules": [...]}` and returns the array.
fn top_level_rules(document: &JsonNode) -> Result<&[JsonNode], String> {
    let fields = match document {
        JsonNode::Object(fields) => fields,
        other => {
            return Err(format!(
                "top level must be an object with a 'rules' array, got {}",
                describe(other)
            ))
        }
    };
    check_field_names(fields, &["rules"], "top-level ")?;
    match lookup(fields, "rules") {
        None => Err("missing field 'rules'".to_string()),
        Some(JsonNode::Array(entries)) => Ok(entries),
        Some(other) => Err(format!(
            "field 'rules' must be an array, got {}",
            describe(other)
        )),
    }
}

/// The rule's name if it is usable, else the problem with it.
fn rule_name(fields: &[(String, JsonNode)]) -> Result<String, String> {
    let occurrences = fields.iter().filter(|(key, _)| key == "name").count();
    if occurrences > 1 {
        return Err("field 'name' given twice".to_string());
    }
    let name = match lookup(fields, "name") {
        None => return Err("missing field 'name'".to_string()),
        Some(JsonNode::String(name)) => name,
        Some(other) => {
            return Err(format!(
                "field 'name' must be a string, got {}",
                describe(other)
            ))
        }
    };
    if name.is_empty() {
        return Err("field 'name' must not be empty".to_string());
    }
    if !name.chars().all(is_name_char) {
        return Err(format!(
            "field 'name' may only use letters, digits and _ . : -, got {}",
            quote(name)
        ));
    }
    Ok(name.clone())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// Validates every field but `name` (already checked) and builds the rule.
fn rule_from_fields(name: String, fields: &[(String, JsonNode)]) -> Result<Rule, String> {
    check_field_names(fields, &RULE_FIELDS, "")?;

    let kind_name = match lookup(fields, "kind") {
        None => return Err("missing field 'kind'".to_string()),
        Some(JsonNode::String(kind)) => kind.as_str(),
        Some(other) => {
            return Err(format!(
                "field 'kind' must be a string, got {}",
                describe(other)
            ))
        }
    };
    let kind = match kind_name {
        "number" => RuleKind::Number,
        "window_sum" => RuleKind::WindowSum {
            window_ms: match lookup(fields, "window_ms") {
                None => {
                    return Err(
                        "missing field 'window_ms' (required for kind window_sum)".to_string()
                    )
                }
                Some(value) => positive_integer("window_ms", value)?,
            },
        },
        "hash_field" => RuleKind::HashField {
            field: match lookup(fields, "field") {
                None => {
                    return Err("missing field 'field' (required for kind hash_field)".to_string())
                }
                Some(JsonNode::String(field)) if !field.is_empty() => field.clone(),
                Some(other) => {
                    return Err(format!(
                        "field 'field' must be a non-empty string, got {}",
                        describe(other)
                    ))
                }
            },
        },
        "presence" => RuleKind::Presence,
        "json" => RuleKind::Json,
        other => {
            return Err(format!(
                "unknown kind {} (expected {})",
                quote(other),
                KIND_NAMES.join(", ")
            ))
        }
    };
    for (field, owner) in [
        ("window_ms", "window_sum"),
        ("field", "hash_field"),
        ("age_field", "json"),
        ("max_age_sec", "json"),
    ] {
        if owner != kind.name() && lookup(fields, field).is_some() {
            return Err(format!(
                "field '{field}' applies only to kind {owner}, not {}",
                kind.name()
            ));
        }
    }

    let colon_in_id = optional_bool(fields, "ids_may_contain_colon")?;
    let key = match lookup(fields, "key") {
        None => return Err("missing field 'key'".to_string()),
        Some(JsonNode::String(source)) => {
            let key =
                KeyTemplate::parse(source).map_err(|error| format!("field 'key': {error}"))?;
            if colon_in_id {
                key.allowing_colon_in_id()
            } else {
                key
            }
        }
        Some(other) => {
            return Err(format!(
                "field 'key' must be a string, got {}",
                describe(other)
            ))
        }
    };

    let truth = match lookup(fields, "truth") {
        None => return Err("missing field 'truth'".to_string()),
        Some(JsonNode::String(sql)) if !sql.trim().is_empty() => sql.clone(),
        Some(other) => {
            return Err(format!(
                "field 'truth' must be a non-empty SQL query, got {}",
                describe(other)
            ))
        }
    };
    // The module binds the window start as $1 for window_sum and nothing
    // for the other kinds; a mismatch would fail only when first queried.
    let uses_window_start = truth.contains("$1");
    if matches!(kind, RuleKind::WindowSum { .. }) && !uses_window_start {
        return Err("field 'truth' must use $1 (the window start) for kind window_sum".to_string());
    }
    if !matches!(kind, RuleKind::WindowSum { .. }) && uses_window_start {
        return Err(format!(
            "field 'truth' must not use $1: only kind window_sum binds a parameter (the window start), not {}",
            kind.name()
        ));
    }

    let threshold = optional_threshold("threshold", fields, &kind)?;
    let threshold_pct = optional_threshold("threshold_pct", fields, &kind)?;

    let fix = match lookup(fields, "fix") {
        None => FixPolicy::Delete,
        Some(JsonNode::String(fix)) if fix == "delete" => FixPolicy::Delete,
        Some(JsonNode::String(fix)) if fix == "rewrite" => {
            if !kind.can_rewrite() {
                return Err(format!(
                    "fix 'rewrite' is not possible for kind {}",
                    kind.name()
                ));
            }
            FixPolicy::Rewrite
        }
        Some(JsonNode::String(fix)) if fix == "none" => FixPolicy::None,
        Some(other) => {
            return Err(format!(
                "field 'fix' must be delete, rewrite or none, got {}",
                describe(other)
            ))
        }
    };

    let missing = match lookup(fields, "missing") {
        None if kind.is_valued() => MissingPolicy::Ignore,
        None => MissingPolicy::Report,
        Some(JsonNode::String(missing)) if missing == "ignore" => MissingPolicy::Ignore,
        Some(JsonNode::String(missing)) if missing == "report" => MissingPolicy::Report,
        Some(other) => {
            return Err(format!(
                "field 'missing' must be ignore or report, got {}",
                describe(other)
            ))
        }
    };

    let require_ttl = optional_bool(fields, "require_ttl")?;

    let interval_sec = lookup(fields, "interval_sec")
        .map(|value| positive_integer("interval_sec", value))
        .transpose()?;
    let ttl_max_sec = lookup(fields, "ttl_max_sec")
        .map(|value| positive_integer("ttl_max_sec", value))
        .transpose()?;
    let age = match (lookup(fields, "age_field"), lookup(fields, "max_age_sec")) {
        (None, None) => None,
        (Some(JsonNode::String(field)), Some(max)) if !field.is_empty() => Some(AgeLimit {
            field: field.clone(),
            max_age_sec: positive_integer("max_age_sec", max)?,
        }),
        (Some(JsonNode::String(_)), None) => {
            return Err(
                "field 'age_field' needs 'max_age_sec' (how old a document may be)".to_string(),
            )
        }
        (None, Some(_)) => {
            return Err(
                "field 'max_age_sec' needs 'age_field' (the field holding the time)".to_string(),
            )
        }
        (Some(other), _) => {
            return Err(format!(
                "field 'age_field' must be a non-empty string, got {}",
                describe(other)
            ))
        }
    };

    let changed = match lookup(fields, "changed") {
        None => None,
        Some(JsonNode::String(sql)) if sql.contains("$1") => Some(sql.clone()),
        Some(JsonNode::String(_)) => {
            return Err(
                "field 'changed' must use $1 (the time since which ids changed)".to_string(),
            )
        }
        Some(other) => {
            return Err(format!(
                "field 'changed' must be an SQL query returning ids, got {}",
                describe(other)
            ))
        }
    };
    let changed_overlap_ms = match lookup(fields, "changed_overlap_ms") {
        None => DEFAULT_CHANGED_OVERLAP_MS,
        Some(JsonNode::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or_default(),
        Some(other) => {
            return Err(format!(
                "field 'changed_overlap_ms' must be a non-negative integer, got {}",
                describe(other)
            ))
        }
    };
    if changed.is_none() && lookup(fields, "changed_overlap_ms").is_some() {
        return Err("field 'changed_overlap_ms' needs field 'changed'".to_string());
    }
    let full_every_sec = lookup(fields, "full_every_sec")
        .map(|value| positive_integer("full_every_sec", value))
        .transpose()?;
    let watch = optional_bool(fields, "watch")?;

    Ok(Rule {
        name,
        kind,
        key,
        truth,
        threshold,
        threshold_pct,
        fix,
        missing,
        require_ttl,
        ttl_max_sec,
        age,
        interval_sec,
        changed,
        changed_overlap_ms,
        full_every_sec,
        watch,
    })
}

/// Rejects unknown and repeated field names, in document order.
/// `scope` prefixes "field" in messages ("top-level " or "").
fn check_field_names(
    fields: &[(String, JsonNode)],
    allowed: &[&str],
    scope: &str,
) -> Result<(), String> {
    for (index, (key, _)) in fields.iter().enumerate() {
        if !allowed.contains(&key.as_str()) {
            return Err(format!("unknown {scope}field {}", quote(key)));
        }
        if fields[..index].iter().any(|(earlier, _)| earlier == key) {
            return Err(format!("field '{key}' given twice"));
        }
    }
    Ok(())
}

/// `threshold` or `threshold_pct`: absent, or a finite number >= 0, and
/// only for valued kinds.
fn optional_threshold(
    field: &str,
    fields: &[(String, JsonNode)],
    kind: &RuleKind,
) -> Result<Option<f64>, String> {
    let Some(value) = lookup(fields, field) else {
        return Ok(None);
    };
    if !kind.is_valued() {
        return Err(format!(
            "field '{field}' does not apply to kind {}: it has no value to compare",
            kind.name()
        ));
    }
    match value {
        JsonNode::Number(number) => match number.as_f64() {
            // Adding 0.0 turns -0 into 0, so replies never show "-0".
            Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x + 0.0)),
            _ => Err(non_negative_number(field, value)),
        },
        _ => Err(non_negative_number(field, value)),
    }
}

fn non_negative_number(field: &str, value: &JsonNode) -> String {
    format!(
        "field '{field}' must be a non-negative number, got {}",
        describe(value)
    )
}

/// An integer >= 1 written without a fraction or exponent.
fn positive_integer(field: &str, value: &JsonNode) -> Result<u64, String> {
    match value {
        JsonNode::Number(number) => match number.as_u64() {
            Some(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "field '{field}' must be a positive integer, got {}",
                describe(value)
            )),
        },
        _ => Err(format!(
            "field '{field}' must be a positive integer, got {}",
            describe(value)
        )),
    }
}

/// The first value under `key`; repeats are refused earlier.
fn lookup<'n>(fields: &'n [(String, JsonNode)], key: &str) -> Option<&'n JsonNode> {
    fields
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value)
}

/// A field that is absent (false) or a JSON boolean.
fn optional_bool(fields: &[(String, JsonNode)], name: &str) -> Result<bool, String> {
    match lookup(fields, name) {
        None => Ok(false),
        Some(JsonNode::Bool(value)) => Ok(*value),
        Some(other) => Err(format!(
            "field '{name}' must be true or false, got {}",
            describe(other)
        )),
    }
}

/// Longest string value quoted whole in a message; longer ones are cut so an
/// SQL query pasted into the wrong field does not flood the log.
const QUOTE_MAX_CHARS: usize = 60;

/// A value as messages show it: numbers and booleans as written, strings
/// quoted, containers by type.
fn describe(value: &JsonNode) -> String {
    match value {
        JsonNode::Null => "null".to_string(),
        JsonNode::Bool(b) => b.to_string(),
        JsonNode::Number(number) => number.to_string(),
        JsonNode::String(s) => quote(s),
        JsonNode::Array(_) => "an array".to_string(),
        JsonNode::Object(_) => "an object".to_string(),
    }
}

/// `'text'` as [`crate::text::shown`] writes it, cut to [`QUOTE_MAX_CHARS`].
fn quote(text: &str) -> String {
    format!("'{}'", crate::text::shown(text.as_bytes(), QUOTE_MAX_CHARS))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NUMBER_TRUTH: &str = "SELECT id, cost FROM users";
    const WINDOW_TRUTH: &str = "SELECT id, SUM(c) FROM m WHERE at >= $1 GROUP BY id";

    /// Parses a file holding one rule given as JSON object text.
    fn parse_one(rule: &str) -> Result<Rule, RulesError> {
        RuleSet::parse(&format!(r#"{{"rules": [{rule}]}}"#)).map(|set| {
            assert_eq!(set.len(), 1);
            set.rules()[0].clone()
        })
    }

    /// The full message for a file holding one rule.
    fn error_of(rule: &str) -> String {
        parse_one(rule).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_design_example() {
        let json = r#"{ "rules": [
          { "name": "cost_weekly", "kind": "number", "key": "user:{id}:cost_weekly",
            "truth": "SELECT u.id, COALESCE(SUM(m.cost_usd), 0) FROM users u LEFT JOIN message_request m ON m.user_id = u.id AND m.created_at >= date_trunc('week', now()) WHERE u.deleted_at IS NULL GROUP BY u.id",
            "threshold": 5.0, "fix": "delete" },
          { "name": "cost_5h", "kind": "window_sum", "key": "user:{id}:cost_5h_rolling", "window_ms": 18000000,
            "truth": "SELECT u.id, COALESCE(SUM(m.cost_usd), 0) FROM users u LEFT JOIN message_request m ON m.user_id = u.id AND m.created_at >= $1 WHERE u.deleted_at IS NULL GROUP BY u.id" },
          { "name": "mcp_connection", "kind": "presence", "key": "mcp:connection:state:{id}",
            "truth": "SELECT id FROM xiaozhi_mcp_endpoints WHERE is_enabled", "interval_sec": 30 }
        ]}"#;
        let set = RuleSet::parse(json).unwrap();
        assert_eq!(set.len(), 3);
        assert!(!set.is_empty());
        assert_eq!(set.names(), ["cost_weekly", "cost_5h", "mcp_connection"]);

        let weekly = set.get("cost_weekly").unwrap();
        assert_eq!(weekly.kind, RuleKind::Number);
        assert_eq!(weekly.key.source(), "user:{id}:cost_weekly");
        assert_eq!(weekly.threshold, Some(5.0));
        assert_eq!(weekly.threshold_pct, None);
        assert_eq!(weekly.fix, FixPolicy::Delete);
        assert_eq!(weekly.missing, MissingPolicy::Ignore);
        assert!(!weekly.require_ttl);
        assert_eq!(weekly.interval_sec, None);

        let rolling = set.get("cost_5h").unwrap();
        assert_eq!(
            rolling.kind,
            RuleKind::WindowSum {
                window_ms: 18_000_000
            }
        );
        assert_eq!(rolling.threshold, None);
        assert_eq!(rolling.missing, MissingPolicy::Ignore);

        let presence = set.get("mcp_connection").unwrap();
        assert_eq!(presence.kind, RuleKind::Presence);
        assert_eq!(presence.missing, MissingPolicy::Report);
        assert_eq!(presence.interval_sec, Some(30));
        assert_eq!(presence.fix, FixPolicy::Delete);
    }

    #[test]
    fn parses_every_field_of_a_hash_field_rule() {
        let rule = parse_one(
            r#"{"name": "quota.v2:x-1", "kind": "hash_field", "key": "quota:{id}",
                "field": "used", "truth": "SELECT id, used FROM quota",
                "threshold": 0, "threshold_pct": 2.5, "fix": "rewrite",
                "missing": "report", "require_ttl": true, "interval_sec": 3600,
                "ttl_max_sec": 7200}"#,
        )
        .unwrap();
        assert_eq!(
            rule,
            Rule {
                name: "quota.v2:x-1".into(),
                kind: RuleKind::HashField {
                    field: "used".into()
                },
                key: KeyTemplate::parse("quota:{id}").unwrap(),
                truth: "SELECT id, used FROM quota".into(),
                threshold: Some(0.0),
                threshold_pct: Some(2.5),
                fix: FixPolicy::Rewrite,
                missing: MissingPolicy::Report,
                require_ttl: true,
                ttl_max_sec: Some(7200),
                age: None,
                interval_sec: Some(3600),
                changed: None,
                changed_overlap_ms: DEFAULT_CHANGED_OVERLAP_MS,
                full_every_sec: None,
                watch: false,
            }
        );
    }

    /// A property an accepted rule must have.
    type RuleCheck = Box<dyn Fn(&Rule) -> bool>;

    #[test]
    fn accepted_variants() {
        let base = format!(r#""name": "r", "key": "k:{{id}}", "truth": "{NUMBER_TRUTH}""#);
        let cases: Vec<(String, RuleCheck)> = vec![
            (
                format!(r#"{{{base}, "kind": "number", "fix": "none"}}"#),
                Box::new(|r| r.fix == FixPolicy::None),
            ),
            (
                format!(r#"{{{base}, "kind": "number", "fix": "rewrite"}}"#),
                Box::new(|r| r.fix == FixPolicy::Rewrite),
            ),
            (
                format!(r#"{{{base}, "kind": "number", "missing": "report"}}"#),
                Box::new(|r| r.missing == MissingPolicy::Report),
            ),
            (
                format!(r#"{{{base}, "kind": "presence", "missing": "ignore"}}"#),
                Box::new(|r| r.missing == MissingPolicy::Ignore),
            ),
            (
                format!(r#"{{{base}, "kind": "presence", "fix": "none"}}"#),
                Box::new(|r| r.fix == FixPolicy::None),
            ),
            (
                format!(r#"{{{base}, "kind": "number", "threshold": 7}}"#),
                Box::new(|r| r.threshold == Some(7.0)),
            ),
            (
                format!(r#"{{{base}, "kind": "number", "threshold": -0.0}}"#),
                Box::new(|r| r.threshold == Some(0.0) && r.threshold.unwrap().is_sign_positive()),
            ),
            (
                format!(r#"{{{base}, "kind": "number", "threshold": 1e300}}"#),
                Box::new(|r| r.threshold == Some(1e300)),
            ),
            (
                format!(r#"{{{base}, "kind": "number", "require_ttl": false}}"#),
                Box::new(|r| !r.require_ttl),
            ),
            (
                format!(
                    r#"{{"name": "w", "kind": "window_sum", "key": "z:{{id}}", "window_ms": 1, "truth": "{WINDOW_TRUTH}", "fix": "none"}}"#
                ),
                Box::new(|r| r.kind == RuleKind::WindowSum { window_ms: 1 }),
            ),
            (
                format!(
                    r#"{{"name": "h", "kind": "hash_field", "key": "h:{{id}}", "field": " spaced field ", "truth": "{NUMBER_TRUTH}"}}"#
                ),
                Box::new(|r| {
                    r.kind
                        == RuleKind::HashField {
                            field: " spaced field ".into(),
                        }
                }),
            ),
        ];
        for (json, check) in cases {
            let rule = parse_one(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert!(check(&rule), "{json}: {rule:?}");
        }
    }

    #[test]
    fn empty_rules_array_is_valid() {
        let set = RuleSet::parse(r#"{"rules": []}"#).unwrap();
        assert!(set.is_empty());
        assert_eq!(set.len(), 0);
        assert!(set.names().is_empty());
        assert_eq!(set, RuleSet::default());
    }

    #[test]
    fn top_level_problems() {
        let cases = [
            (
                "",
                "invalid JSON: EOF while parsing a value at line 1 column 0",
            ),
            (
                "{\"rules\": [}",
                "invalid JSON: expected value at line 1 column 12",
            ),
            (
                "{\"rules\": []} x",
                "invalid JSON: trailing characters at line 1 column 15",
            ),
            (
                "[]",
                "top level must be an object with a 'rules' array, got an array",
            ),
            (
                "null",
                "top level must be an object with a 'rules' array, got null",
            ),
            ("{}", "missing field 'rules'"),
            (
                "{\"rules\": {}}",
                "field 'rules' must be an array, got an object",
            ),
            (
                "{\"rules\": null}",
                "field 'rules' must be an array, got null",
            ),
            (
                "{\"rules\": [], \"version\": 2}",
                "unknown top-level field 'version'",
            ),
            (
                "{\"rules\": [], \"rules\": []}",
                "field 'rules' given twice",
            ),
        ];
        for (json, expected) in cases {
            let error = RuleSet::parse(json).unwrap_err();
            assert_eq!(error.rule, None, "{json}");
            assert_eq!(error.to_string(), expected, "{json}");
        }
    }

    #[test]
    fn out_of_range_numbers_are_invalid_json() {
        let message = error_of(
            r#"{"name": "r", "kind": "number", "key": "k:{id}", "truth": "q", "threshold": 1e999}"#,
        );
        assert!(
            message.starts_with("invalid JSON: number out of range at line 1"),
            "{message}"
        );
    }

    #[test]
    fn rules_without_a_usable_name_are_named_by_position() {
        let cases = [
            (r#""x""#, "rule #1: must be an object, got 'x'"),
            ("5", "rule #1: must be an object, got 5"),
            (r#"{"kind": "number"}"#, "rule #1: missing field 'name'"),
            (
                r#"{"name": 5}"#,
                "rule #1: field 'name' must be a string, got 5",
            ),
            (r#"{"name": ""}"#, "rule #1: field 'name' must not be empty"),
            (
                r#"{"name": "cost weekly"}"#,
                "rule #1: field 'name' may only use letters, digits and _ . : -, got 'cost weekly'",
            ),
            (
                r#"{"name": "a#1"}"#,
                "rule #1: field 'name' may only use letters, digits and _ . : -, got 'a#1'",
            ),
            (
                r#"{"name": "käse"}"#,
                "rule #1: field 'name' may only use letters, digits and _ . : -, got 'käse'",
            ),
            (
                r#"{"name": "a\nb"}"#,
                "rule #1: field 'name' may only use letters, digits and _ . : -, got 'a\\x0ab'",
            ),
            (
                r#"{"name": "a", "name": "b"}"#,
                "rule #1: field 'name' given twice",
            ),
        ];
        for (rule, expected) in cases {
            let error = parse_one(rule).unwrap_err();
            assert_eq!(error.rule.as_deref(), Some("#1"), "{rule}");
            assert_eq!(error.to_string(), expected, "{rule}");
        }
    }

    #[test]
    fn position_is_one_based_in_the_array() {
        let good = format!(
            r#"{{"name": "a", "kind": "number", "key": "a:{{id}}", "truth": "{NUMBER_TRUTH}"}}"#
        );
        let json = format!(r#"{{"rules": [{good}, {{"name": "b"}}, {{}}]}}"#);
        // Rule 'b' is named, so its own problem names it.
        assert_eq!(
            RuleSet::parse(&json).unwrap_err().to_string(),
            "rule 'b': missing field 'kind'"
        );
        let json = format!(r#"{{"rules": [{good}, {{}}]}}"#);
        assert_eq!(
            RuleSet::parse(&json).unwrap_err().to_string(),
            "rule #2: missing field 'name'"
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let rule = |name: &str| {
            format!(
                r#"{{"name": "{name}", "kind": "number", "key": "{name}:{{id}}", "truth": "{NUMBER_TRUTH}"}}"#
            )
        };
        let json = format!(
            r#"{{"rules": [{}, {}, {}]}}"#,
            rule("x"),
            rule("y"),
            rule("x")
        );
        let error = RuleSet::parse(&json).unwrap_err();
        assert_eq!(error.rule.as_deref(), Some("#3"));
        assert_eq!(
            error.to_string(),
            "rule #3: duplicate rule name 'x' (first used by rule #1)"
        );
        // Names are case-sensitive, so these differ.
        let json = format!(r#"{{"rules": [{}, {}]}}"#, rule("x"), rule("X"));
        let set = RuleSet::parse(&json).unwrap();
        assert_eq!(set.names(), ["x", "X"]);
        assert_eq!(set.get("X").unwrap().name, "X");
        assert!(set.get("x ").is_none());
    }

    #[test]
    fn rule_problems_name_the_rule_and_the_field() {
        let number = |extra: &str| {
            format!(
                r#"{{"name": "r", "kind": "number", "key": "k:{{id}}", "truth": "{NUMBER_TRUTH}"{extra}}}"#
            )
        };
        let window = |extra: &str| {
            format!(
                r#"{{"name": "r", "kind": "window_sum", "key": "k:{{id}}", "truth": "{WINDOW_TRUTH}"{extra}}}"#
            )
        };
        let presence = |extra: &str| {
            format!(
                r#"{{"name": "r", "kind": "presence", "key": "k:{{id}}", "truth": "SELECT id FROM t"{extra}}}"#
            )
        };
        let hash = |extra: &str| {
            format!(
                r#"{{"name": "r", "kind": "hash_field", "key": "k:{{id}}", "truth": "{NUMBER_TRUTH}"{extra}}}"#
            )
        };
        let cases: Vec<(String, &str)> = vec![
            (number(r#", "treshold": 5"#), "unknown field 'treshold'"),
            (number(r#", "Threshold": 5"#), "unknown field 'Threshold'"),
            (
                number(r#", "threshold": 5, "threshold": 6"#),
                "field 'threshold' given twice",
            ),
            (
                r#"{"name": "r", "key": "k:{id}", "truth": "q"}"#.to_string(),
                "missing field 'kind'",
            ),
            (
                r#"{"name": "r", "kind": 1, "key": "k:{id}", "truth": "q"}"#.to_string(),
                "field 'kind' must be a string, got 1",
            ),
            (
                r#"{"name": "r", "kind": "foo", "key": "k:{id}", "truth": "q"}"#.to_string(),
                "unknown kind 'foo' (expected number, window_sum, hash_field, presence, json)",
            ),
            (
                r#"{"name": "r", "kind": "Number", "key": "k:{id}", "truth": "q"}"#.to_string(),
                "unknown kind 'Number' (expected number, window_sum, hash_field, presence, json)",
            ),
            (
                r#"{"name": "r", "kind": "number", "truth": "q"}"#.to_string(),
                "missing field 'key'",
            ),
            (
                r#"{"name": "r", "kind": "number", "key": ["k"], "truth": "q"}"#.to_string(),
                "field 'key' must be a string, got an array",
            ),
            (
                r#"{"name": "r", "kind": "number", "key": "user:cost", "truth": "q"}"#.to_string(),
                "field 'key': key template 'user:cost' must contain {id} exactly once, found 0",
            ),
            (
                r#"{"name": "r", "kind": "number", "key": "{id}:{id}", "truth": "q"}"#.to_string(),
                "field 'key': key template '{id}:{id}' must contain {id} exactly once, found 2",
            ),
            (
                r#"{"name": "r", "kind": "number", "key": "{id}", "truth": "q"}"#.to_string(),
                "field 'key': key template '{id}' needs literal text around {id}; alone it would match every key",
            ),
            (
                r#"{"name": "r", "kind": "number", "key": "k:{id}"}"#.to_string(),
                "missing field 'truth'",
            ),
            (
                r#"{"name": "r", "kind": "number", "key": "k:{id}", "truth": ""}"#.to_string(),
                "field 'truth' must be a non-empty SQL query, got ''",
            ),
            (
                r#"{"name": "r", "kind": "number", "key": "k:{id}", "truth": " \n "}"#.to_string(),
                "field 'truth' must be a non-empty SQL query, got ' \\x0a '",
            ),
            (
                r#"{"name": "r", "kind": "number", "key": "k:{id}", "truth": null}"#.to_string(),
                "field 'truth' must be a non-empty SQL query, got null",
            ),
            (
                r#"{"name": "r", "kind": "number", "key": "k:{id}", "truth": "SELECT id, v FROM t WHERE at > $1"}"#.to_string(),
                "field 'truth' must not use $1: only kind window_sum binds a parameter (the window start), not number",
            ),
            (
                r#"{"name": "r", "kind": "presence", "key": "k:{id}", "truth": "SELECT id FROM t WHERE x = $1"}"#.to_string(),
                "field 'truth' must not use $1: only kind window_sum binds a parameter (the window start), not presence",
            ),
            (
                r#"{"name": "r", "kind": "window_sum", "key": "k:{id}", "window_ms": 5, "truth": "SELECT id, SUM(c) FROM m GROUP BY id"}"#.to_string(),
                "field 'truth' must use $1 (the window start) for kind window_sum",
            ),
            (
                r#"{"name": "r", "kind": "window_sum", "key": "k:{id}", "truth": "$1"}"#.to_string(),
                "missing field 'window_ms' (required for kind window_sum)",
            ),
            (window(r#", "window_ms": 0"#), "field 'window_ms' must be a positive integer, got 0"),
            (window(r#", "window_ms": -5"#), "field 'window_ms' must be a positive integer, got -5"),
            (window(r#", "window_ms": 1.5"#), "field 'window_ms' must be a positive integer, got 1.5"),
            (window(r#", "window_ms": 1000.0"#), "field 'window_ms' must be a positive integer, got 1000.0"),
            (window(r#", "window_ms": "1000""#), "field 'window_ms' must be a positive integer, got '1000'"),
            (
                window(r#", "window_ms": 1000, "fix": "rewrite""#),
                "fix 'rewrite' is not possible for kind window_sum",
            ),
            (
                window(r#", "window_ms": 1000, "field": "f""#),
                "field 'field' applies only to kind hash_field, not window_sum",
            ),
            (
                number(r#", "window_ms": 1000"#),
                "field 'window_ms' applies only to kind window_sum, not number",
            ),
            (
                presence(r#", "window_ms": 1000"#),
                "field 'window_ms' applies only to kind window_sum, not presence",
            ),
            (
                number(r#", "field": "f""#),
                "field 'field' applies only to kind hash_field, not number",
            ),
            (hash(""), "missing field 'field' (required for kind hash_field)"),
            (hash(r#", "field": """#), "field 'field' must be a non-empty string, got ''"),
            (hash(r#", "field": 3"#), "field 'field' must be a non-empty string, got 3"),
            (
                hash(r#", "field": "f", "window_ms": 10"#),
                "field 'window_ms' applies only to kind window_sum, not hash_field",
            ),
            (number(r#", "threshold": -1"#), "field 'threshold' must be a non-negative number, got -1"),
            (number(r#", "threshold": -0.5"#), "field 'threshold' must be a non-negative number, got -0.5"),
            (number(r#", "threshold": "5""#), "field 'threshold' must be a non-negative number, got '5'"),
            (number(r#", "threshold": null"#), "field 'threshold' must be a non-negative number, got null"),
            (number(r#", "threshold": true"#), "field 'threshold' must be a non-negative number, got true"),
            (number(r#", "threshold_pct": -2"#), "field 'threshold_pct' must be a non-negative number, got -2"),
            (number(r#", "threshold_pct": {}"#), "field 'threshold_pct' must be a non-negative number, got an object"),
            (
                presence(r#", "threshold": 1"#),
                "field 'threshold' does not apply to kind presence: it has no value to compare",
            ),
            (
                presence(r#", "threshold_pct": 1"#),
                "field 'threshold_pct' does not apply to kind presence: it has no value to compare",
            ),
            (
                presence(r#", "fix": "rewrite""#),
                "fix 'rewrite' is not possible for kind presence",
            ),
            (number(r#", "fix": "Delete""#), "field 'fix' must be delete, rewrite or none, got 'Delete'"),
            (number(r#", "fix": "expire""#), "field 'fix' must be delete, rewrite or none, got 'expire'"),
            (number(r#", "fix": false"#), "field 'fix' must be delete, rewrite or none, got false"),
            (number(r#", "missing": "warn""#), "field 'missing' must be ignore or report, got 'warn'"),
            (number(r#", "missing": 1"#), "field 'missing' must be ignore or report, got 1"),
            (
                number(r#", "changed": "SELECT user_id FROM ledger""#),
                "field 'changed' must use $1 (the time since which ids changed)",
            ),
            (number(r#", "changed": 3"#), "field 'changed' must be an SQL query returning ids, got 3"),
            (
                number(r#", "changed": "SELECT 1 WHERE $1 > now()", "changed_overlap_ms": -1"#),
                "field 'changed_overlap_ms' must be a non-negative integer, got -1",
            ),
            (
                number(r#", "changed_overlap_ms": 5"#),
                "field 'changed_overlap_ms' needs field 'changed'",
            ),
            (number(r#", "full_every_sec": 0"#), "field 'full_every_sec' must be a positive integer, got 0"),
            (number(r#", "require_ttl": "yes""#), "field 'require_ttl' must be true or false, got 'yes'"),
            (number(r#", "require_ttl": 1"#), "field 'require_ttl' must be true or false, got 1"),
            (number(r#", "interval_sec": 0"#), "field 'interval_sec' must be a positive integer, got 0"),
            (number(r#", "ttl_max_sec": 0"#), "field 'ttl_max_sec' must be a positive integer, got 0"),
            (presence(r#", "ttl_max_sec": "600""#), "field 'ttl_max_sec' must be a positive integer, got '600'"),
            (number(r#", "interval_sec": -30"#), "field 'interval_sec' must be a positive integer, got -30"),
            (number(r#", "interval_sec": 0.5"#), "field 'interval_sec' must be a positive integer, got 0.5"),
            (number(r#", "interval_sec": "30""#), "field 'interval_sec' must be a positive integer, got '30'"),
        ];
        for (rule, expected) in cases {
            let error = parse_one(&rule).unwrap_err();
            assert_eq!(error.rule.as_deref(), Some("r"), "{rule}");
            assert_eq!(error.problem, expected, "{rule}");
            assert_eq!(error.to_string(), format!("rule 'r': {expected}"), "{rule}");
        }
    }

    #[test]
    fn unknown_fields_are_reported_in_document_order() {
        let error = error_of(r#"{"name": "r", "zeta": 1, "alpha": 2, "kind": "number"}"#);
        assert_eq!(error, "rule 'r': unknown field 'zeta'");
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(500);
        let message = error_of(&format!(
            r#"{{"name": "r", "kind": "number", "key": "k:{{id}}", "truth": "q", "fix": "{long}"}}"#
        ));
        assert_eq!(
            message,
            format!(
                "rule 'r': field 'fix' must be delete, rewrite or none, got '{}...(500 bytes)'",
                "x".repeat(QUOTE_MAX_CHARS)
            )
        );
    }

    #[test]
    fn effective_threshold_prefers_override_then_rule_then_default() {
        let mut rule =
            parse_one(r#"{"name": "r", "kind": "number", "key": "k:{id}", "truth": "q"}"#).unwrap();
        assert_eq!(rule.effective_threshold(5.0, None), 5.0);
        assert_eq!(rule.effective_threshold(5.0, Some(0.0)), 0.0);
        rule.threshold = Some(2.0);
        assert_eq!(rule.effective_threshold(5.0, None), 2.0);
        assert_eq!(rule.effective_threshold(5.0, Some(9.0)), 9.0);
    }

    #[test]
    fn kind_and_policy_names() {
        let kinds = [
            (RuleKind::Number, "number", true, true),
            (
                RuleKind::WindowSum { window_ms: 1 },
                "window_sum",
                true,
                false,
            ),
            (
                RuleKind::HashField { field: "f".into() },
                "hash_field",
                true,
                true,
            ),
            (RuleKind::Presence, "presence", false, false),
        ];
        for (kind, name, valued, rewritable) in kinds {
            assert_eq!(kind.name(), name);
            assert_eq!(kind.is_valued(), valued, "{name}");
            assert_eq!(kind.can_rewrite(), rewritable, "{name}");
            assert!(KIND_NAMES.contains(&name));
        }
        assert_eq!(FixPolicy::Delete.name(), "delete");
        assert_eq!(FixPolicy::Rewrite.name(), "rewrite");
        assert_eq!(FixPolicy::None.name(), "none");
        assert_eq!(MissingPolicy::Ignore.name(), "ignore");
        assert_eq!(MissingPolicy::Report.name(), "report");
    }

    #[test]
    fn error_display_omits_absent_parts() {
        let error = |file: Option<&str>, rule: Option<&str>| RulesError {
            file: file.map(str::to_string),
            rule: rule.map(str::to_string),
            problem: "p".into(),
        };
        assert_eq!(error(None, None).to_string(), "p");
        assert_eq!(error(Some("/f"), None).to_string(), "/f: p");
        assert_eq!(error(None, Some("x")).to_string(), "rule 'x': p");
        assert_eq!(error(None, Some("#3")).to_string(), "rule #3: p");
        assert_eq!(
            error(Some("/etc/rules.json"), Some("cost_weekly")).to_string(),
            "/etc/rules.json: rule 'cost_weekly': p"
        );
    }

    /// A file in the system temp dir, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(tag: &str, contents: &[u8]) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "consistency-rules-test-{}-{tag}.json",
                std::process::id()
            ));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn load_file_reads_and_names_the_file_in_errors() {
        let good = TempFile::new(
            "good",
            format!(
                r#"{{"rules": [{{"name": "a", "kind": "number", "key": "a:{{id}}", "truth": "{NUMBER_TRUTH}"}}]}}"#
            )
            .as_bytes(),
        );
        assert_eq!(RuleSet::load_file(good.path()).unwrap().names(), ["a"]);

        let bad = TempFile::new(
            "bad",
            br#"{"rules": [{"name": "cost_weekly", "kind": "number", "key": "k:{id}", "truth": "q", "threshold": -1}]}"#,
        );
        let error = RuleSet::load_file(bad.path()).unwrap_err();
        assert_eq!(error.file.as_deref(), Some(bad.path()));
        assert_eq!(error.rule.as_deref(), Some("cost_weekly"));
        assert_eq!(
            error.to_string(),
            format!(
                "{}: rule 'cost_weekly': field 'threshold' must be a non-negative number, got -1",
                bad.path()
            )
        );

        let broken = TempFile::new("broken", b"{\n  \"rules\": [,]\n}");
        assert_eq!(
            RuleSet::load_file(broken.path()).unwrap_err().to_string(),
            format!(
                "{}: invalid JSON: expected value at line 2 column 13",
                broken.path()
            )
        );

        let binary = TempFile::new("binary", b"\xff\xfe");
        let error = RuleSet::load_file(binary.path()).unwrap_err();
        assert_eq!(error.rule, None);
        assert!(error.problem.starts_with("cannot read: "), "{error}");
    }

    #[test]
    fn load_file_reports_unreadable_files() {
        let path = std::env::temp_dir().join("consistency-rules-test-does-not-exist.json");
        let path = path.to_str().unwrap();
        let error = RuleSet::load_file(path).unwrap_err();
        assert_eq!(error.file.as_deref(), Some(path));
        assert_eq!(error.rule, None);
        assert!(
            error
                .to_string()
                .starts_with(&format!("{path}: cannot read: No such file or directory")),
            "{error}"
        );
    }
}
