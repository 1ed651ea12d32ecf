//! One thin file per command: parse, hand off, reply. Shared plumbing lives here.

pub mod check;
pub mod fix;
pub mod purge;
pub mod reload;
pub mod rules;
pub mod status;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::SystemTime;

use consistency_bridge::{panic_message, BridgeError, TruthRow};
use redis_module::{Context, ContextFlags, RedisResult, RedisString, RedisValue};

use crate::args::ReplyFormat;
use crate::config;
use crate::drift_check::{PoolTruth, TruthSource};
use crate::error::CommandError;
use crate::redis_api::blocking::{submit, BlockedJob};
use crate::redis_api::keyspace::MainThread;
use crate::redis_api::respond;
use crate::reply::Reply;
use crate::state::{self, LoadedRule};
use crate::stats;
use crate::store::Access;
use crate::sync_run::{ensure_small, DirectTruth};

/// What a handler did: answered at once, or blocked the client on a job.
pub enum Outcome {
    Reply(Reply),
    Blocked,
}

/// Runs a handler body: errors become `ERR` replies, and a panic is caught and
/// answered, since a panic in a handler would abort redis-server.
pub fn guarded(
    ctx: &Context,
    args: Vec<RedisString>,
    body: impl FnOnce(&Context, &[&[u8]]) -> Result<Outcome, CommandError>,
) -> RedisResult {
    let bytes: Vec<&[u8]> = args.iter().skip(1).map(|a| a.as_slice()).collect();
    let outcome = catch_unwind(AssertUnwindSafe(|| body(ctx, &bytes)));
    let reply = match outcome {
        Ok(Ok(Outcome::Blocked)) => return Ok(RedisValue::NoReply),
        Ok(Ok(Outcome::Reply(reply))) => reply,
        Ok(Err(e)) => Reply::err(e),
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            log::warn!("consistency: a command panicked: {message}");
            Reply::err(format!("internal error: {message}"))
        }
    };
    respond::send(ctx, &reply);
    Ok(RedisValue::NoReply)
}

/// The lane a command's work queues on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaneKind {
    /// Jobs that query PostgreSQL.
    Truth,
    /// Jobs that need only Redis (PURGE): a PostgreSQL outage never queues them.
    Keyspace,
}

/// A command's work after parsing, run the same way whichever path runs it.
pub trait Work: Send + 'static {
    /// The command, for the refusal inside a script or MULTI.
    const COMMAND: &'static str;
    const LANE: LaneKind;
    /// Ids or keys the work touches when run inside a script or MULTI; 0 means
    /// the whole keyspace, always refused there.
    fn sync_size(&self) -> usize;
    /// True when ids' keys are found by a scan (a selected rule's template
    /// has several placeholders): in a script that scan runs on the main
    /// thread, so the keyspace must be small too.
    fn scans_for_ids(&self) -> bool {
        false
    }
    /// True when the work can go ahead without the truth (FIX of ids clears):
    /// with PostgreSQL down or the truth lane full it then runs at once on the
    /// keyspace lane, told the truth is unavailable, instead of waiting or
    /// answering busy.
    fn goes_on_without_truth(&self) -> bool {
        false
    }
    /// Does the work and shapes the reply. `truth` is the pool on a lane, a
    /// direct connection on the main thread, or the reason neither is there.
    fn run<A: Access>(self, access: &A, truth: &mut TruthConnection)
        -> Result<Reply, CommandError>;
}

/// Runs `work`: on its lane with the client blocked, or, inside Lua or MULTI
/// (which cannot block), on the main thread if it is small enough, with its
/// own connection bounded by sync-timeout-ms. One path, so an error reads the
/// same whichever ran.
pub fn dispatch<W: Work>(ctx: &Context, work: W) -> Result<Outcome, CommandError> {
    if cannot_block(ctx) {
        let main_thread = MainThread(ctx);
        ensure_small(
            &main_thread,
            work.sync_size(),
            work.scans_for_ids(),
            config::sync_max_keys(),
            W::COMMAND,
        )?;
        let mut truth = match W::LANE {
            LaneKind::Truth => TruthConnection::direct(),
            LaneKind::Keyspace => TruthConnection::NotNeeded,
        };
        return work.run(&main_thread, &mut truth).map(Outcome::Reply);
    }
    let lanes = state::lanes();
    let job = BlockedJob::block(ctx, config::job_timeout());
    let refused = match W::LANE {
        LaneKind::Keyspace => submit(job, &lanes.keyspace, (work, None), run_work::<W>),
        LaneKind::Truth => {
            let known_down = stats::pg_down().filter(|_| work.goes_on_without_truth());
            match known_down {
                Some(why) => {
                    probe_postgres();
                    let truth = BridgeError::Unavailable(why);
                    submit(job, &lanes.keyspace, (work, Some(truth)), run_work::<W>)
                }
                None => match submit(job, &lanes.truth, (work, None), run_work::<W>) {
                    Err((job, (work, _), full)) if work.goes_on_without_truth() => {
                        let truth = BridgeError::Unavailable(format!(
                            "not asked: the truth lane is full ({} queued)",
                            full.queued
                        ));
                        submit(job, &lanes.keyspace, (work, Some(truth)), run_work::<W>)
                    }
                    other => other,
                },
            }
        }
    };
    if let Err((job, _, full)) = refused {
        job.answer(&Reply::err(full));
    }
    Ok(Outcome::Blocked)
}

/// A queued command's work: `unavailable` says the truth is not to be asked.
fn run_work<W: Work>(job: &BlockedJob, (work, unavailable): (W, Option<BridgeError>)) -> Reply {
    let mut truth = match (unavailable, W::LANE) {
        (Some(e), _) => TruthConnection::Unavailable(e),
        (None, LaneKind::Truth) => TruthConnection::pool(),
        (None, LaneKind::Keyspace) => TruthConnection::NotNeeded,
    };
    work.run(job, &mut truth).unwrap_or_else(Reply::err)
}

/// While PostgreSQL is known down, commands that go on without it do not ask;
/// one pooled connection attempt on the truth lane (if it has room) notices
/// PostgreSQL's return.
fn probe_postgres() {
    let _ = state::lanes().truth.try_submit(Box::new(|| {
        if let Ok(truth) = PoolTruth::from_pool() {
            truth.probe();
        }
    }));
}

/// Where a command's truth comes from. An outage is carried along, not
/// returned at once: FIX of ids clears without the truth.
pub enum TruthConnection {
    Pool(PoolTruth),
    Direct(Box<DirectTruth>),
    Unavailable(BridgeError),
    /// Keyspace work: never asks.
    NotNeeded,
}

impl TruthConnection {
    fn pool() -> TruthConnection {
        match PoolTruth::from_pool() {
            Ok(truth) => TruthConnection::Pool(truth),
            Err(e) => TruthConnection::Unavailable(e),
        }
    }

    fn direct() -> TruthConnection {
        match DirectTruth::connect() {
            Ok(truth) => TruthConnection::Direct(Box::new(truth)),
            Err(e) => TruthConnection::Unavailable(e),
        }
    }

    /// The outage, for commands that cannot start without the truth.
    pub fn available(&self) -> Result<(), BridgeError> {
        match self {
            TruthConnection::Unavailable(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn source(&mut self) -> Result<&mut dyn TruthSource, BridgeError> {
        match self {
            TruthConnection::Pool(t) => Ok(t),
            TruthConnection::Direct(t) => Ok(t.as_mut()),
            TruthConnection::Unavailable(e) => Err(e.clone()),
            TruthConnection::NotNeeded => Err(BridgeError::Unavailable(
                "this command does not query PostgreSQL".into(),
            )),
        }
    }
}

impl TruthSource for TruthConnection {
    fn all(
        &mut self,
        rule: &LoadedRule,
        window: Option<SystemTime>,
    ) -> Result<Vec<TruthRow>, BridgeError> {
        self.source()?.all(rule, window)
    }

    fn ids(
        &mut self,
        rule: &LoadedRule,
        ids: &[String],
        window: Option<SystemTime>,
    ) -> Result<Vec<TruthRow>, BridgeError> {
        self.source()?.ids(rule, ids, window)
    }

    fn changed(
        &mut self,
        rule: &LoadedRule,
        since: SystemTime,
    ) -> Result<Vec<String>, BridgeError> {
        self.source()?.changed(rule, since)
    }

    fn all_of(
        &mut self,
        rules: &[(&LoadedRule, Option<SystemTime>)],
    ) -> Vec<Result<Vec<TruthRow>, BridgeError>> {
        match self.source() {
            Ok(source) => source.all_of(rules),
            Err(e) => rules.iter().map(|_| Err(e.clone())).collect(),
        }
    }
}

/// Inside Lua or MULTI a command cannot block: it must answer synchronously.
pub fn cannot_block(ctx: &Context) -> bool {
    ctx.get_flags().contains(ContextFlags::DENY_BLOCKING)
}

/// The rules a command names (all loaded rules when it names none).
pub fn select_rules(names: &[String]) -> Result<Vec<Arc<LoadedRule>>, CommandError> {
    let loaded = state::rules();
    if loaded.rules.is_empty() {
        let why = loaded.error.clone().unwrap_or_else(|| {
            if loaded.file.is_empty() {
                "consistency.rules-file is not set".to_string()
            } else {
                format!("'{}' has no rules", loaded.file)
            }
        });
        return Err(CommandError::NoRules(why));
    }
    if names.is_empty() {
        return Ok(loaded.rules.clone());
    }
    let mut selected: Vec<Arc<LoadedRule>> = Vec::new();
    for name in names {
        // The name is the client's text: shown cut and escaped, never echoed
        // whole (a 4 MB name made a 4 MB error reply on the main thread).
        let rule = loaded.get(name).ok_or_else(|| CommandError::UnknownRule {
            name: crate::args::display_arg(name.as_bytes()),
            loaded: loaded.names(),
        })?;
        if !selected.iter().any(|r| Arc::ptr_eq(r, rule)) {
            selected.push(Arc::clone(rule));
        }
    }
    Ok(selected)
}

/// A reply in the format the command asked for: as is, or one JSON string.
pub fn render(reply: Reply, format: ReplyFormat) -> Reply {
    match format {
        ReplyFormat::Resp => reply,
        ReplyFormat::Json => Reply::text(reply.to_json()),
    }
}
