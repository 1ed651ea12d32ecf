//! CONSISTENCY.PURGE: delete a pattern's or a rule's keys without blocking Redis.

use redis_module::{Context, RedisResult, RedisString};

use super::{cannot_block, guarded, select_rules, Outcome};
use crate::args::{parse_purge, PurgeTarget};
use crate::config;
use crate::error::CommandError;
use crate::purge::{run_purge, PurgeMatch, PurgePlan};
use crate::redis_api::blocking::run_on_lane;
use crate::redis_api::keyspace::MainThread;
use crate::reply::Reply;
use crate::state;
use crate::sync_run::ensure_small;

/// ```text
/// CONSISTENCY.PURGE (MATCH pattern | RULE name) [DRYRUN] [LIMIT n]
/// ```
/// Scans and UNLINKs matching keys in slices on the keyspace lane, so it works
/// while PostgreSQL is down. A pattern that matches every key is refused.
pub fn purge(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(ctx, args, |ctx, args| {
        let args = parse_purge(args)?;
        let target = match args.target {
            PurgeTarget::Match(pattern) => PurgeMatch::Glob(pattern),
            PurgeTarget::Rule(name) => {
                let rule = select_rules(std::slice::from_ref(&name))?.remove(0);
                PurgeMatch::Rule {
                    name,
                    template: rule.rule.key.clone(),
                }
            }
        };
        let plan = PurgePlan {
            target,
            dry_run: args.dry_run,
            limit: args.limit,
            scan_batch: config::scan_batch(),
        };
        if cannot_block(ctx) {
            // Bounded by LIMIT: without one, a purge is as large as the keyspace
            // (0 asks for the whole-keyspace refusal, which names DBSIZE).
            ensure_small(
                &MainThread(ctx),
                plan.limit.map_or(0, |l| l.max(1)),
                config::sync_max_keys(),
                "CONSISTENCY.PURGE",
            )?;
            let reply = run_purge(&plan, &MainThread(ctx))
                .map_err(|e| CommandError::Repair(e.to_string()))?;
            return Ok(Outcome::Reply(reply));
        }
        run_on_lane(ctx, &state::lanes().keyspace, move |job| {
            match run_purge(&plan, job) {
                Ok(reply) => reply,
                Err(e) => Reply::err(e),
            }
        });
        Ok(Outcome::Blocked)
    })
}
