//! CONSISTENCY.RULES: the rules in force.

use redis_module::{Context, RedisResult, RedisString};

use super::{guarded, Outcome};
use crate::args::ArgError;
use crate::config;
use crate::reply::Reply;
use crate::rules::{Rule, RuleKind};
use crate::state;

/// ```text
/// CONSISTENCY.RULES
/// ```
/// Lists the loaded rules with every setting, defaults filled in.
pub fn rules(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(ctx, args, |_ctx, args| {
        if let Some(extra) = args.first() {
            return Err(ArgError::UnknownOption(crate::args::display_arg(extra)).into());
        }
        let loaded = state::rules();
        let default = config::threshold();
        Ok(Outcome::Reply(Reply::Array(
            loaded
                .rules
                .iter()
                .map(|r| rule_reply(&r.rule, default))
                .collect(),
        )))
    })
}

fn rule_reply(rule: &Rule, default_threshold: f64) -> Reply {
    let mut fields = vec![
        ("name", Reply::text(rule.name.clone())),
        ("kind", Reply::text(rule.kind.name())),
        ("key", Reply::text(rule.key.source())),
        (
            "threshold",
            Reply::Double(rule.effective_threshold(default_threshold, None)),
        ),
        ("threshold_pct", Reply::opt_double(rule.threshold_pct)),
        ("fix", Reply::text(rule.fix.name())),
        ("missing", Reply::text(rule.missing.name())),
        ("require_ttl", Reply::Bool(rule.require_ttl)),
        (
            "interval_sec",
            rule.interval_sec
                .map_or(Reply::Null, |s| Reply::Int(s as i64)),
        ),
    ];
    match &rule.kind {
        RuleKind::WindowSum { window_ms } => {
            fields.push(("window_ms", Reply::Int(*window_ms as i64)))
        }
        RuleKind::HashField { field } => fields.push(("field", Reply::text(field.clone()))),
        RuleKind::Number | RuleKind::Presence => {}
        RuleKind::Json => {
            if let Some(age) = &rule.age {
                fields.push(("age_field", Reply::text(age.field.clone())));
                fields.push(("max_age_sec", Reply::Int(age.max_age_sec as i64)));
            }
        }
    }
    // Shown only when set, after the kind's own field: older readers of
    // RULES see the fields they knew, in the same places.
    if let Some(max) = rule.ttl_max_sec {
        fields.push(("ttl_max_sec", Reply::Int(max as i64)));
    }
    if let Some(sql) = &rule.changed {
        fields.push(("changed", Reply::text(sql.clone())));
        let overlap = rule.changed_overlap_ms as i64;
        fields.push(("changed_overlap_ms", Reply::Int(overlap)));
    }
    if let Some(every) = rule.full_every_sec {
        fields.push(("full_every_sec", Reply::Int(every as i64)));
    }
    if rule.watch {
        fields.push(("watch", Reply::Bool(true)));
    }
    Reply::Map(fields)
}
