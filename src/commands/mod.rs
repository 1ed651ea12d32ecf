//! One thin file per command: parse, hand off, reply. Shared plumbing lives here.

pub mod check;
pub mod fix;
pub mod purge;
pub mod reload;
pub mod rules;
pub mod status;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use redis_module::{Context, ContextFlags, RedisResult, RedisString, RedisValue};

use crate::args::ReplyFormat;
use crate::error::CommandError;
use crate::redis_api::respond;
use crate::reply::Reply;
use crate::state::{self, LoadedRule};
use consistency_bridge::panic_message;

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
        let rule = loaded.get(name).ok_or_else(|| CommandError::UnknownRule {
            name: name.clone(),
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
