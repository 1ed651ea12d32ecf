//! CONSISTENCY.CHECK: the drift report.

use redis_module::{Context, RedisResult, RedisString};

use super::{cannot_block, guarded, render, select_rules, Outcome};
use crate::args::{parse_check, ReplyFormat};
use crate::drift_check::{run_check, CheckPlan, PoolTruth};
use crate::fix::notify_presence;
use crate::redis_api::blocking::run_on_lane;
use crate::redis_api::keyspace::MainThread;
use crate::reply::Reply;
use crate::report::CheckReport;
use crate::state;
use crate::stats;
use crate::sync_run;

/// Entries shown when no LIMIT is given.
pub const DEFAULT_LIMIT: usize = 100;

/// ```text
/// CONSISTENCY.CHECK [RULE name]... [ID id]... [THRESHOLD n] [LIMIT n] [FORMAT resp|json]
/// ```
/// Compares every key of the selected rules (all by default) in the caller's db
/// with the truth from PostgreSQL and reports what drifted. Read-only.
pub fn check(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(ctx, args, |ctx, args| {
        let args = parse_check(args)?;
        let plan = CheckPlan::configured(select_rules(&args.rules)?, args.ids, args.threshold);
        let limit = args.limit.unwrap_or(DEFAULT_LIMIT);
        let format = args.format.unwrap_or(ReplyFormat::Resp);
        if cannot_block(ctx) {
            let report = sync_run::check(ctx, &plan)?;
            let _ = notify_presence(&MainThread(ctx), &plan.rules, &report.entries);
            return Ok(Outcome::Reply(finish(&report, limit, format)));
        }
        run_on_lane(ctx, &state::lanes().truth, move |job| {
            let mut truth = match PoolTruth::from_pool() {
                Ok(truth) => truth,
                Err(e) => return Reply::err(e),
            };
            match run_check(&plan, job, &mut truth) {
                Ok(report) => {
                    // Presence findings are events the application acts on.
                    let _ = notify_presence(job, &plan.rules, &report.entries);
                    finish(&report, limit, format)
                }
                Err(e) => Reply::err(e),
            }
        });
        Ok(Outcome::Blocked)
    })
}

/// Records the check for STATUS and INFO and renders it in the asked format.
fn finish(report: &CheckReport, limit: usize, format: ReplyFormat) -> Reply {
    stats::record_check(report);
    render(report.to_reply(limit), format)
}
