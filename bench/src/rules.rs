//! The three seed 000 cost rules the benchmark checks, shared by the module's
//! rules file, the client-side checker, the truth-SQL floor and the data loader.

/// How a rule's cached value is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A STRING holding a number.
    Number,
    /// A ZSET of `<ms>:<amount>` members scored by epoch ms, summed over the
    /// last `window_ms`.
    Window { window_ms: u64 },
}

/// One rule: `user:{id}<suffix>` and the SQL that gives its truth.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: &'static str,
    pub kind: Kind,
    /// The key is `PREFIX<id><suffix>`.
    pub suffix: &'static str,
    pub truth: &'static str,
}

/// Every rule's key starts with this.
pub const PREFIX: &str = "user:";
/// The SCAN pattern that covers every rule's keys (and PURGE's pattern).
pub const SCAN_MATCH: &str = "user:*:cost*";
/// Drift threshold in dollars (the seed's default).
pub const THRESHOLD: f64 = 5.0;
/// The 5-hour window of seed 000.
pub const WINDOW_MS: u64 = 18_000_000;

pub const WEEKLY_TRUTH: &str = "SELECT u.id, COALESCE(SUM(m.cost_usd), 0) FROM users u \
LEFT JOIN message_request m ON m.user_id = u.id AND m.created_at >= date_trunc('week', now()) \
WHERE u.deleted_at IS NULL GROUP BY u.id";

pub const MONTHLY_TRUTH: &str = "SELECT u.id, COALESCE(SUM(m.cost_usd), 0) FROM users u \
LEFT JOIN message_request m ON m.user_id = u.id AND m.created_at >= date_trunc('month', now()) \
WHERE u.deleted_at IS NULL GROUP BY u.id";

pub const WINDOW_TRUTH: &str = "SELECT u.id, COALESCE(SUM(m.cost_usd), 0) FROM users u \
LEFT JOIN message_request m ON m.user_id = u.id AND m.created_at >= $1 \
WHERE u.deleted_at IS NULL GROUP BY u.id";

pub fn all() -> Vec<Rule> {
    vec![
        Rule {
            name: "cost_weekly",
            kind: Kind::Number,
            suffix: ":cost_weekly",
            truth: WEEKLY_TRUTH,
        },
        Rule {
            name: "cost_monthly",
            kind: Kind::Number,
            suffix: ":cost_monthly",
            truth: MONTHLY_TRUTH,
        },
        Rule {
            name: "cost_5h",
            kind: Kind::Window {
                window_ms: WINDOW_MS,
            },
            suffix: ":cost_5h_rolling",
            truth: WINDOW_TRUTH,
        },
    ]
}

impl Rule {
    pub fn key(&self, id: &str) -> String {
        format!("{PREFIX}{id}{}", self.suffix)
    }

    /// The id part of `key` if it is this rule's key.
    pub fn id_of<'k>(&self, key: &'k [u8]) -> Option<&'k [u8]> {
        let rest = key.strip_prefix(PREFIX.as_bytes())?;
        let id = rest.strip_suffix(self.suffix.as_bytes())?;
        (!id.is_empty()).then_some(id)
    }

    /// The truth as the module runs it: id and value as text. `$1`, when the
    /// rule has it, is left in place.
    pub fn wrapped_truth(&self) -> String {
        format!(
            "SELECT t.id::text, t.value::text FROM (\n{}\n) AS t(id, value)",
            self.truth
        )
    }

    /// The truth for just the ids bound as `$n` (an int4[]), as the module
    /// restricts it once it has learned that the id column is int4.
    pub fn truth_for_ids(&self) -> String {
        let n = if self.takes_window() { 2 } else { 1 };
        // `t.id` is the subquery's own int4 column (only the output is cast),
        // so the users primary key is used.
        format!("{} WHERE t.id = ANY(${n}::int4[])", self.wrapped_truth())
    }

    pub fn takes_window(&self) -> bool {
        matches!(self.kind, Kind::Window { .. })
    }

    /// The module's rules-file entry.
    pub fn to_json(&self) -> serde_json::Value {
        let mut rule = serde_json::json!({
            "name": self.name,
            "kind": match self.kind { Kind::Number => "number", Kind::Window { .. } => "window_sum" },
            "key": format!("{PREFIX}{{id}}{}", self.suffix),
            "truth": self.truth,
            "threshold": THRESHOLD,
            "fix": "delete",
        });
        if let Kind::Window { window_ms } = self.kind {
            rule["window_ms"] = window_ms.into();
        }
        rule
    }
}

/// The module's rules file for `rules`.
pub fn rules_file(rules: &[Rule]) -> String {
    let rules: Vec<serde_json::Value> = rules.iter().map(Rule::to_json).collect();
    serde_json::to_string_pretty(&serde_json::json!({ "rules": rules })).expect("json")
}
