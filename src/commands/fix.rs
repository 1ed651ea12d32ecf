//! CONSISTENCY.FIX: clear or rewrite given ids' keys, or repair verified drift.

use std::sync::Arc;
use std::time::SystemTime;

use redis_module::{Context, RedisResult, RedisString};

use super::{dispatch, guarded, render, select_rules, LaneKind, TruthConnection, Work};
use crate::args::{parse_fix, FixArgs, FixTarget, ReplyFormat};
use crate::commands::check::DEFAULT_LIMIT;
use crate::config;
use crate::drift_check::CheckPlan;
use crate::error::CommandError;
use crate::fix::{fix_all, fix_ids, FixIdsPlan};
use crate::incremental::run_tracked;
use crate::reply::Reply;
use crate::report::{fix_all_reply, fix_ids_reply};
use crate::rules::FixPolicy;
use crate::state::{self, LoadedRule};
use crate::stats;
use crate::store::Access;

/// ```text
/// CONSISTENCY.FIX id [id ...] [ID id]... [RULE name]... [DRYRUN] [REWRITE] [FORMAT resp|json]
/// CONSISTENCY.FIX ALL [CHANGED] [RULE name]... [THRESHOLD n] [DRYRUN] [REWRITE] [FORMAT resp|json]
/// ```
/// With ids: clears (or rewrites to the truth) every selected rule's key for
/// those ids; clearing works with PostgreSQL down. With ALL: checks, then repairs
/// only verified findings whose keys still hold what was verified.
pub fn fix(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(ctx, args, |ctx, args| {
        let args = parse_fix(args)?;
        let rules = select_fix_rules(&args)?;
        let format = args.format.unwrap_or(ReplyFormat::Resp);
        match args.target {
            FixTarget::Ids(ids) => {
                let plan = FixIdsPlan {
                    rules,
                    ids,
                    dry_run: args.dry_run,
                    rewrite: args.rewrite,
                    scan_batch: config::scan_batch(),
                    now: SystemTime::now(),
                };
                dispatch(ctx, FixIdsWork { plan, format })
            }
            FixTarget::All => {
                let plan = CheckPlan::configured(rules, Vec::new(), args.threshold);
                let work = FixAllWork {
                    plan,
                    dry_run: args.dry_run,
                    rewrite: args.rewrite,
                    format,
                    changed: args.changed,
                };
                dispatch(ctx, work)
            }
        }
    })
}

struct FixIdsWork {
    plan: FixIdsPlan,
    format: ReplyFormat,
}

impl Work for FixIdsWork {
    const COMMAND: &'static str = "CONSISTENCY.FIX";
    const LANE: LaneKind = LaneKind::Truth;

    fn sync_size(&self) -> usize {
        self.plan.ids.len()
    }

    fn scans_for_ids(&self) -> bool {
        self.plan.rules.iter().any(|r| r.rule.key.is_multi())
    }

    /// Clearing needs no truth; REWRITE does.
    fn goes_on_without_truth(&self) -> bool {
        !self.plan.rewrite
    }

    /// Clearing needs no truth: an outage is reported in the reply, not refused.
    fn run<A: Access>(
        self,
        access: &A,
        truth: &mut TruthConnection,
    ) -> Result<Reply, CommandError> {
        let outcome = fix_ids(&self.plan, access, truth)?;
        Ok(render(fix_ids_reply(&outcome), self.format))
    }
}

struct FixAllWork {
    plan: CheckPlan,
    dry_run: bool,
    rewrite: bool,
    format: ReplyFormat,
    changed: bool,
}

impl Work for FixAllWork {
    const COMMAND: &'static str = "CONSISTENCY.FIX ALL";
    const LANE: LaneKind = LaneKind::Truth;

    /// FIX ALL scans the whole keyspace: never inside a script or MULTI.
    fn sync_size(&self) -> usize {
        0
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
        stats::record_check(&report, true);
        let outcome = fix_all(&self.plan, &report, access, self.dry_run, self.rewrite)?;
        Ok(render(
            fix_all_reply(&report, &outcome, DEFAULT_LIMIT),
            self.format,
        ))
    }
}

/// The rules FIX acts on: named ones must allow repairs (and REWRITE, when given
/// with ids); unnamed, every rule whose fix is not `none`.
fn select_fix_rules(args: &FixArgs) -> Result<Vec<Arc<LoadedRule>>, CommandError> {
    let mut rules = select_rules(&args.rules)?;
    if args.rules.is_empty() {
        rules.retain(|r| r.rule.fix != FixPolicy::None);
        if rules.is_empty() {
            return Err(CommandError::NothingToFix);
        }
    } else if let Some(r) = rules.iter().find(|r| r.rule.fix == FixPolicy::None) {
        return Err(CommandError::RuleNotFixable(r.rule.name.clone()));
    }
    if args.rewrite && matches!(args.target, FixTarget::Ids(_)) {
        if let Some(r) = rules.iter().find(|r| !r.rule.kind.can_rewrite()) {
            return Err(CommandError::CannotRewrite {
                rule: r.rule.name.clone(),
                kind: r.rule.kind.name(),
            });
        }
    }
    Ok(rules)
}
