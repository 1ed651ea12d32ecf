//! The synchronous path for Lua and MULTI, where a command cannot block: only
//! small, ID-scoped work, on the main thread, with its own PostgreSQL connection
//! and the short `sync-timeout-ms` statement timeout (DESIGN section 4 point 6).

use std::time::{Duration, Instant, SystemTime};

use consistency_bridge::{connect_direct, BridgeError, TruthRow};
use redis_module::{raw, Context};

use crate::config;
use crate::drift_check::{record_truth, run_check, CheckPlan, TruthSource};
use crate::error::CommandError;
use crate::keyspace::MainThread;
use crate::report::CheckReport;
use crate::state::{self, LoadedRule};

/// Truth over one direct connection, for the length of one command.
pub struct DirectTruth {
    client: postgres::Client,
    timeout: Duration,
}

impl DirectTruth {
    pub fn connect() -> Result<DirectTruth, CommandError> {
        let mut settings = state::pg_settings()?;
        let timeout = config::sync_timeout();
        // The main thread waits on this connection: bound it by the sync timeout too.
        settings.connect_timeout = settings.connect_timeout.min(timeout);
        let started = Instant::now();
        let client = connect_direct(&settings, timeout);
        record_truth(started, &client);
        Ok(DirectTruth {
            client: client?,
            timeout,
        })
    }
}

impl TruthSource for DirectTruth {
    fn all(
        &mut self,
        rule: &LoadedRule,
        window_start: Option<SystemTime>,
    ) -> Result<Vec<TruthRow>, BridgeError> {
        let started = Instant::now();
        let result = rule.truth.prepare(&mut self.client).and_then(|()| {
            rule.truth
                .run_all(&mut self.client, window_start, self.timeout)
        });
        record_truth(started, &result);
        result
    }

    fn ids(
        &mut self,
        rule: &LoadedRule,
        ids: &[String],
        window_start: Option<SystemTime>,
    ) -> Result<Vec<TruthRow>, BridgeError> {
        let started = Instant::now();
        let result = rule.truth.prepare(&mut self.client).and_then(|()| {
            rule.truth
                .run_ids(&mut self.client, ids, window_start, self.timeout)
        });
        record_truth(started, &result);
        result
    }
}

/// Refuses work too large to run on the main thread.
pub fn ensure_small(ctx: &Context, ids: usize, command: &'static str) -> Result<(), CommandError> {
    let limit = config::sync_max_keys();
    let what = if ids == 0 {
        let keys = unsafe { raw::RedisModule_DbSize.unwrap()(ctx.ctx) };
        format!("a whole-keyspace run over {keys} keys")
    } else if ids > limit {
        format!("{ids} ids")
    } else {
        return Ok(());
    };
    Err(CommandError::TooLargeForScript {
        what,
        limit,
        command,
    })
}

/// CONSISTENCY.CHECK inside a script or MULTI.
pub fn check(ctx: &Context, plan: &CheckPlan) -> Result<CheckReport, CommandError> {
    ensure_small(ctx, plan.ids.len(), "CONSISTENCY.CHECK")?;
    let mut truth = DirectTruth::connect()?;
    Ok(run_check(plan, &MainThread(ctx), &mut truth)?)
}
