//! CONSISTENCY.FIX: clear or rewrite given ids' keys, or repair verified drift.

use std::sync::Arc;
use std::time::SystemTime;

use consistency_bridge::{BridgeError, TruthRow};
use redis_module::{Context, RedisResult, RedisString};

use super::{cannot_block, guarded, render, select_rules, Outcome};
use crate::args::{parse_fix, FixArgs, FixTarget, ReplyFormat};
use crate::commands::check::DEFAULT_LIMIT;
use crate::config;
use crate::drift_check::{run_check, CheckPlan, PoolTruth, TruthSource};
use crate::error::CommandError;
use crate::fix::{fix_all, fix_ids, FixIdsPlan};
use crate::redis_api::blocking::run_on_lane;
use crate::redis_api::keyspace::MainThread;
use crate::reply::Reply;
use crate::report::{fix_all_reply, fix_ids_reply};
use crate::rules::FixPolicy;
use crate::state::{self, LoadedRule};
use crate::stats;
use crate::sync_run::{ensure_small, DirectTruth};

/// ```text
/// CONSISTENCY.FIX id [id ...] [ID id]... [RULE name]... [DRYRUN] [REWRITE] [FORMAT resp|json]
/// CONSISTENCY.FIX ALL [RULE name]... [THRESHOLD n] [DRYRUN] [REWRITE] [FORMAT resp|json]
/// ```
/// With ids: clears (or rewrites to the truth) every selected rule's key for
/// those ids; clearing works with PostgreSQL down. With ALL: checks, then repairs
/// only verified findings whose keys still hold what was verified.
pub fn fix(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(ctx, args, |ctx, args| {
        let args = parse_fix(args)?;
        let rules = select_fix_rules(&args)?;
        let format = args.format.unwrap_or(ReplyFormat::Resp);
        let now = SystemTime::now();
        match args.target {
            FixTarget::Ids(ids) => {
                let plan = FixIdsPlan {
                    rules,
                    ids,
                    dry_run: args.dry_run,
                    rewrite: args.rewrite,
                    scan_batch: config::scan_batch(),
                    now,
                };
                if cannot_block(ctx) {
                    ensure_small(
                        &MainThread(ctx),
                        plan.ids.len(),
                        config::sync_max_keys(),
                        "CONSISTENCY.FIX",
                    )?;
                    let mut truth = match DirectTruth::connect() {
                        Ok(t) => Truth::Direct(Box::new(t)),
                        Err(CommandError::Postgres(e)) => Truth::Unavailable(e),
                        Err(other) => return Err(other),
                    };
                    let outcome = fix_ids(&plan, &MainThread(ctx), &mut truth)
                        .map_err(|e| CommandError::Repair(e.to_string()))?;
                    return Ok(Outcome::Reply(render(fix_ids_reply(&outcome), format)));
                }
                run_on_lane(ctx, &state::lanes().truth, move |job| {
                    let mut truth = match PoolTruth::from_pool() {
                        Ok(truth) => Truth::Pool(truth),
                        Err(e) => Truth::Unavailable(e),
                    };
                    match fix_ids(&plan, job, &mut truth) {
                        Ok(outcome) => render(fix_ids_reply(&outcome), format),
                        Err(e) => Reply::err(e),
                    }
                });
            }
            FixTarget::All => {
                ensure_can_block(ctx)?;
                let plan = CheckPlan::configured(rules, Vec::new(), args.threshold);
                let (dry_run, rewrite) = (args.dry_run, args.rewrite);
                run_on_lane(ctx, &state::lanes().truth, move |job| {
                    let mut truth = match PoolTruth::from_pool() {
                        Ok(truth) => truth,
                        Err(e) => return Reply::err(e),
                    };
                    let report = match run_check(&plan, job, &mut truth) {
                        Ok(report) => report,
                        Err(e) => return Reply::err(e),
                    };
                    stats::record_check(&report);
                    match fix_all(&plan, &report, job, dry_run, rewrite) {
                        Ok(outcome) => {
                            render(fix_all_reply(&report, &outcome, DEFAULT_LIMIT), format)
                        }
                        Err(e) => Reply::err(e),
                    }
                });
            }
        }
        Ok(Outcome::Blocked)
    })
}

/// FIX ALL scans the whole keyspace: never inside a script or MULTI.
fn ensure_can_block(ctx: &Context) -> Result<(), CommandError> {
    if cannot_block(ctx) {
        ensure_small(
            &MainThread(ctx),
            0,
            config::sync_max_keys(),
            "CONSISTENCY.FIX ALL",
        )?;
    }
    Ok(())
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

/// The truth for FIX of ids: clearing needs none, so an outage is carried along.
enum Truth {
    Pool(PoolTruth),
    Direct(Box<DirectTruth>),
    Unavailable(BridgeError),
}

impl TruthSource for Truth {
    fn all(
        &mut self,
        rule: &LoadedRule,
        window: Option<SystemTime>,
    ) -> Result<Vec<TruthRow>, BridgeError> {
        match self {
            Truth::Pool(t) => t.all(rule, window),
            Truth::Direct(t) => t.all(rule, window),
            Truth::Unavailable(e) => Err(e.clone()),
        }
    }

    fn ids(
        &mut self,
        rule: &LoadedRule,
        ids: &[String],
        window: Option<SystemTime>,
    ) -> Result<Vec<TruthRow>, BridgeError> {
        match self {
            Truth::Pool(t) => t.ids(rule, ids, window),
            Truth::Direct(t) => t.ids(rule, ids, window),
            Truth::Unavailable(e) => Err(e.clone()),
        }
    }
}
