//! CONSISTENCY.STATUS: health of the module, its PostgreSQL side and its lanes.

use consistency_bridge::{redact_url, Lane};
use redis_module::{Context, RedisResult, RedisString};

use super::{guarded, Outcome};
use crate::args::{display_arg, ArgError};
use crate::config;
use crate::reply::Reply;
use crate::report::status_counts_reply;
use crate::state;
use crate::stats;

/// ```text
/// CONSISTENCY.STATUS
/// ```
/// Version, rules, PostgreSQL state (the password never shown), lanes, the last
/// check and the schedule. Never touches PostgreSQL: it reports what was seen.
pub fn status(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(ctx, args, |_ctx, args| {
        if let Some(extra) = args.first() {
            return Err(ArgError::UnknownOption(display_arg(extra)).into());
        }
        let rules = state::rules();
        let lanes = state::lanes();
        Ok(Outcome::Reply(Reply::Map(vec![
            ("version", Reply::text(env!("CARGO_PKG_VERSION"))),
            ("rules", Reply::Int(rules.rules.len() as i64)),
            ("rules_error", Reply::opt_text(rules.error.clone())),
            ("pg", pg_reply()),
            (
                "lanes",
                Reply::Map(vec![
                    ("truth", lane_reply(&lanes.truth)),
                    ("keyspace", lane_reply(&lanes.keyspace)),
                ]),
            ),
            ("last_check", last_check_reply()),
            ("schedule", schedule_reply()),
        ])))
    })
}

fn pg_reply() -> Reply {
    let (idle, last_error, down) = match state::pool() {
        Ok(pool) => (
            pool.state().idle,
            stats::last_pg_error(),
            stats::pg_down().is_some(),
        ),
        Err(e) => (0, Some(e.to_string()), true),
    };
    let state = if down { "down" } else { "ok" };
    Reply::Map(vec![
        ("url", Reply::text(redact_url(&config::pg_url()))),
        ("state", Reply::text(state)),
        ("pool_size", Reply::Int(i64::from(config::pool_size()))),
        ("idle", Reply::Int(i64::from(idle))),
        ("last_error", Reply::opt_text(last_error)),
    ])
}

fn lane_reply(lane: &Lane) -> Reply {
    Reply::Map(vec![
        ("workers", Reply::Int(lane.workers() as i64)),
        ("queued", Reply::Int(lane.queued() as i64)),
    ])
}

fn last_check_reply() -> Reply {
    let Some(last) = stats::last_check() else {
        return Reply::Null;
    };
    Reply::Map(vec![
        ("at_ms", Reply::Int(last.at_ms as i64)),
        ("duration_ms", Reply::Int(last.duration_ms as i64)),
        ("checked", Reply::Int(last.checked as i64)),
        ("drifted", Reply::Int(last.drifted as i64)),
        ("by_status", status_counts_reply(&last.by_status)),
    ])
}

fn schedule_reply() -> Reply {
    let interval = config::check_interval_sec();
    Reply::Map(vec![
        ("interval_sec", Reply::Int(interval as i64)),
        ("autofix", Reply::Bool(config::autofix())),
        (
            "next_in_sec",
            crate::schedule::next_in_sec().map_or(Reply::Null, |s| Reply::Int(s as i64)),
        ),
    ])
}
