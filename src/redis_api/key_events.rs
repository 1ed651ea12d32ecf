//! What feeds CHECK CHANGED: keyspace events (writes, expiries, evictions) of
//! rule keys record (rule, id) in the dirty set; server events that change
//! keys without per-key events (FLUSHDB/FLUSHALL, loading data, a role change)
//! make every rule's next CHANGED check run full. Writes of watched rules'
//! keys also start watch samples; those server events end them.
//!
//! The keyspace callback runs inside every write on the main thread: it only
//! matches the key against the templates (no allocation unless one matches),
//! never calls Redis, and never lets a panic out.

use std::os::raw::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use redis_module::{raw, Context, NotifyEvent};

use super::writes;
use crate::dirty::FullReason;
use crate::state;

/// The keyspace-event callback (registered in lib.rs).
pub fn on_key_event(ctx: &Context, _event: NotifyEvent, name: &str, key: &[u8]) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let rules = state::rules();
        let mut db = None;
        for rule in &rules.rules {
            if let Some(id) = rule.rule.key.id_of(key) {
                // SAFETY: the callback's context is valid for the callback.
                let db = *db.get_or_insert_with(|| unsafe {
                    i64::from(raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx))
                });
                state::dirty_tracker().record(db, &rule.rule.name, id);
                // Watching samples the application's writes on a primary: an
                // expiry, an eviction or the module's own repair is none, and
                // a replica does not look.
                if rule.rule.watch
                    && !matches!(name, "expired" | "evicted")
                    && !writes::is_own_write()
                    && writes::is_primary(ctx)
                {
                    state::watch_samples().record(&rule.rule.name, db, id, Instant::now());
                }
            }
        }
    }));
}

/// Subscribes to the server events that invalidate dirty ids. A server
/// without one of them (none here: all exist since 6.0) would just not tell.
pub fn register_server_events(ctx: &Context) {
    let Some(subscribe) = (unsafe { raw::RedisModule_SubscribeToServerEvent }) else {
        return;
    };
    for id in [
        raw::REDISMODULE_EVENT_FLUSHDB,
        raw::REDISMODULE_EVENT_LOADING,
        raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
    ] {
        let event = raw::RedisModuleEvent { id, dataver: 1 };
        // SAFETY: a valid context at load; the callback is a plain function.
        unsafe { subscribe(ctx.ctx, event, Some(on_server_event)) };
    }
}

extern "C" fn on_server_event(
    _ctx: *mut raw::RedisModuleCtx,
    event: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let (db, reason) = match event.id {
            raw::REDISMODULE_EVENT_FLUSHDB => {
                if subevent != raw::REDISMODULE_SUBEVENT_FLUSHDB_END {
                    return;
                }
                // SAFETY: FLUSHDB events carry a RedisModuleFlushInfo.
                let dbnum = (!data.is_null())
                    .then(|| unsafe { (*(data as *const raw::RedisModuleFlushInfo)).dbnum });
                // -1 is FLUSHALL.
                let db = dbnum.filter(|n| *n >= 0).map(i64::from);
                (db, FullReason::Flushed)
            }
            raw::REDISMODULE_EVENT_LOADING => {
                if subevent != raw::REDISMODULE_SUBEVENT_LOADING_ENDED {
                    return;
                }
                (None, FullReason::Loaded)
            }
            raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED => (None, FullReason::RoleChanged),
            _ => return,
        };
        state::dirty().reset(db, reason);
        state::watch_samples().clear(db);
    }));
}
