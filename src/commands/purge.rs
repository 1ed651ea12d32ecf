//! CONSISTENCY.PURGE: delete a pattern's or a rule's keys without blocking Redis.

use redis_module::{Context, RedisResult, RedisString};

use super::{dispatch, guarded, select_rules, LaneKind, TruthConnection, Work};
use crate::args::{parse_purge, PurgeTarget};
use crate::config;
use crate::error::CommandError;
use crate::purge::{run_purge, PurgeMatch, PurgePlan};
use crate::reply::Reply;
use crate::report::purge_reply;
use crate::store::Access;

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
        dispatch(ctx, PurgeWork(plan))
    })
}

struct PurgeWork(PurgePlan);

impl Work for PurgeWork {
    const COMMAND: &'static str = "CONSISTENCY.PURGE";
    const LANE: LaneKind = LaneKind::Keyspace;

    /// Bounded by LIMIT: without one, a purge is as large as the keyspace.
    fn sync_size(&self) -> usize {
        self.0.limit.map_or(0, |l| l.max(1))
    }

    fn run<A: Access>(self, access: &A, _: &mut TruthConnection) -> Result<Reply, CommandError> {
        let outcome = run_purge(&self.0, access)?;
        Ok(purge_reply(&outcome))
    }
}
