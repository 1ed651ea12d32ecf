//! Every write the module makes, with the GIL held. Writes go through `call_ext`
//! with replication, so replicas and the AOF see exactly the same effects; they
//! run only while this node is a primary. Notifications (PUBLISH) are local.

use std::cell::Cell;
use std::os::raw::c_char;

use redis_module::{
    raw, CallOptionsBuilder, CallReply, CallResult, Context, ContextFlags, ErrorReply,
};

use super::cluster_view;
use crate::config;

/// Whether this node may write: a replica or a node mid-failover must not.
pub fn is_primary(ctx: &Context) -> bool {
    ctx.get_flags().contains(ContextFlags::MASTER)
}

/// Whether writes are paused right now (CLIENT PAUSE, FAILOVER, CLUSTER
/// FAILOVER): Redis then asks modules to avoid traffic to replicas, and a module
/// write from a thread would trip its pause assertion. The caller holds the GIL.
pub fn writes_paused() -> bool {
    match unsafe { raw::RedisModule_AvoidReplicaTraffic } {
        Some(paused) => unsafe { paused() != 0 },
        None => false,
    }
}

thread_local! {
    /// Set while this thread runs one of the module's own writes: the keyspace
    /// callback (which Redis runs inside the write, on this thread) then knows
    /// a repair is no application write to sample.
    static OWN_WRITE: Cell<bool> = const { Cell::new(false) };
}

/// Whether the write being notified is the module's own.
pub fn is_own_write() -> bool {
    OWN_WRITE.with(Cell::get)
}

fn call(ctx: &Context, command: &str, args: &[&[u8]]) -> Result<i64, String> {
    let options = CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build();
    OWN_WRITE.with(|own| own.set(true));
    let result: CallResult = ctx.call_ext(command, &options, args);
    OWN_WRITE.with(|own| own.set(false));
    match result {
        Ok(CallReply::I64(n)) => Ok(n.to_i64()),
        Ok(_) => Ok(0),
        Err(ErrorReply::Message(m)) => Err(m),
        Err(e) => Err(e.to_utf8_string().unwrap_or_else(|| "error".into())),
    }
}

/// UNLINK `keys`; returns how many existed.
pub fn unlink(ctx: &Context, keys: &[&[u8]]) -> Result<i64, String> {
    if keys.is_empty() {
        return Ok(0);
    }
    call(ctx, "UNLINK", keys)
}

/// SET `key` to `value`, keeping its TTL.
pub fn set_keep_ttl(ctx: &Context, key: &[u8], value: &[u8]) -> Result<(), String> {
    call(ctx, "SET", &[key, value, b"KEEPTTL"]).map(|_| ())
}

/// HSET one field (a hash keeps its TTL).
pub fn set_hash_field(ctx: &Context, key: &[u8], field: &[u8], value: &[u8]) -> Result<(), String> {
    call(ctx, "HSET", &[key, field, value]).map(|_| ())
}

/// One entry in the audit stream (`consistency.audit-stream`), when it is set.
pub fn audit(ctx: &Context, fields: &[(&str, &[u8])]) {
    let configured = config::audit_stream();
    if configured.is_empty() {
        return;
    }
    let stream = audit_stream_key(ctx, &configured);
    let maxlen = config::audit_maxlen().to_string();
    let mut args: Vec<&[u8]> = vec![stream.as_bytes(), b"MAXLEN", b"~", maxlen.as_bytes(), b"*"];
    for (name, value) in fields {
        args.push(name.as_bytes());
        args.push(value);
    }
    if let Err(e) = call(ctx, "XADD", &args) {
        log::warn!("consistency: audit stream '{stream}' refused an entry: {e}");
    }
}

/// The audit stream's key. In a cluster a module write must stay in a slot this
/// node serves: unless the configured name already maps to one, its braces are
/// dropped and a hash tag of a local slot is appended (`consistency:audit{0}`).
fn audit_stream_key(ctx: &Context, configured: &str) -> String {
    if !cluster_view::in_cluster(ctx) {
        return configured.to_string();
    }
    let slots = cluster_view::current();
    if slots.owns_key(configured.as_bytes()) {
        return configured.to_string();
    }
    let base: String = configured
        .chars()
        .filter(|c| *c != '{' && *c != '}')
        .collect();
    match slots.local_tag() {
        Some(tag) => format!("{base}{{{tag}}}"),
        None => configured.to_string(),
    }
}

/// PUBLISH `message` on `consistency.notify-channel`, when it is set. Not
/// replicated: it is an event for this node's subscribers.
pub fn notify(ctx: &Context, message: &str) {
    let channel = config::notify_channel();
    if channel.is_empty() {
        return;
    }
    unsafe {
        let create = raw::RedisModule_CreateString.unwrap();
        let free = raw::RedisModule_FreeString.unwrap();
        let ch = create(ctx.ctx, channel.as_ptr().cast::<c_char>(), channel.len());
        let msg = create(ctx.ctx, message.as_ptr().cast::<c_char>(), message.len());
        raw::RedisModule_PublishMessage.unwrap()(ctx.ctx, ch, msg);
        free(ctx.ctx, ch);
        free(ctx.ctx, msg);
    }
}
