//! CONSISTENCY.CHECK: the drift report.

use redis_module::{Context, RedisResult, RedisString};

use super::{dispatch, guarded, render, select_rules, LaneKind, TruthConnection, Work};
use crate::args::{parse_check, ReplyFormat};
use crate::drift_check::CheckPlan;
use crate::error::CommandError;
use crate::fix::notify_presence;
use crate::incremental::run_tracked;
use crate::reply::Reply;
use crate::state;
use crate::stats;
use crate::store::Access;

/// Entries shown when no LIMIT is given.
pub const DEFAULT_LIMIT: usize = 100;

/// ```text
/// CONSISTENCY.CHECK [CHANGED] [RULE name]... [ID id]... [THRESHOLD n] [LIMIT n] [FORMAT resp|json]
/// ```
/// Compares every key of the selected rules (all by default) in the caller's db
/// with the truth from PostgreSQL and reports what drifted. Read-only. With
/// CHANGED, only the ids written, expired or evicted (or returned by the
/// rule's `changed` query) since the last check; full when those may be
/// incomplete, saying why.
pub fn check(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(ctx, args, |ctx, args| {
        let args = parse_check(args)?;
        let plan = CheckPlan::configured(select_rules(&args.rules)?, args.ids, args.threshold);
        let work = CheckWork {
            plan,
            limit: args.limit.unwrap_or(DEFAULT_LIMIT),
            format: args.format.unwrap_or(ReplyFormat::Resp),
            changed: args.changed,
        };
        dispatch(ctx, work)
    })
}

struct CheckWork {
    plan: CheckPlan,
    limit: usize,
    format: ReplyFormat,
    changed: bool,
}

impl Work for CheckWork {
    const COMMAND: &'static str = "CONSISTENCY.CHECK";
    const LANE: LaneKind = LaneKind::Truth;

    fn sync_size(&self) -> usize {
        self.plan.ids.len()
    }

    fn scans_for_ids(&self) -> bool {
        self.plan.rules.iter().any(|r| r.rule.key.is_multi())
    }

    fn run<A: Access>(
        self,
        access: &A,
        truth: &mut TruthConnection,
    ) -> Result<Reply, CommandError> {
        truth.available()?;
        let report = run_tracked(
            &self.plan,
            self.changed,
            access,
            truth,
            state::dirty_tracker(),
        )?;
        // Presence findings are events the application acts on.
        let _ = notify_presence(access, &self.plan.rules, &report.entries);
        stats::record_check(&report, self.plan.ids.is_empty());
        Ok(render(report.to_reply(self.limit), self.format))
    }
}
