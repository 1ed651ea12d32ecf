//! redis-consistency: a Redis module that finds and repairs drift between values
//! cached in Redis and the truth in PostgreSQL.
//!
//! Everything that touches Redis lives in this crate; `consistency-bridge` knows
//! PostgreSQL. Pure parts (args, rules, template, compare, decimal, report,
//! reply, text, ordered_json, dirty, watch_samples) carry their own unit tests and no Redis
//! types. The run layer (drift_check, incremental, fix, purge, schedule,
//! watch, sync_run) talks to Redis only through the `store` seam, implemented once
//! over the module API in `redis_api` (the only folder with `raw::` and
//! `unsafe`, besides the registration below) and once in memory for unit
//! tests; `commands` turns its plain results into replies.

pub mod args;
pub mod cluster;
pub mod commands;
pub mod compare;
pub mod compare_json;
pub mod config;
pub mod decimal;
pub mod dirty;
pub mod drift_check;
pub mod error;
pub mod fast_hash;
pub mod fix;
pub mod glob;
pub mod incremental;
pub mod ordered_json;
pub mod purge;
pub mod redis_api;
pub mod reply;
pub mod report;
pub mod rfc3339;
pub mod rules;
pub mod schedule;
pub mod state;
pub mod stats;
pub mod store;
pub mod sync_run;
pub mod template;
pub mod template_overlap;
pub mod text;
pub mod truth_map;
pub mod watch;
pub mod watch_samples;
pub mod working_memory;

use std::sync::atomic::Ordering;

use redis_module::configuration::{ConfigurationContext, ConfigurationFlags};
use redis_module::{raw, redis_module, Context, RedisString, Status};

fn init(ctx: &Context, _args: &[RedisString]) -> Status {
    redis_api::logging::setup(ctx);
    state::load_rules_at_start(&state::rules_file());
    state::rebuild_pool();
    let _ = state::lanes();
    redis_api::test_hooks::register(ctx);
    // COMMAND DOCS on Redis 7.0+; a no-op on servers without SetCommandInfo.
    redis_api::command_docs::register(ctx);
    schedule::start(ctx);
    watch::start(ctx);
    redis_api::key_events::register_server_events(ctx);
    state::start_dirty_merge();
    unsafe { raw::RedisModule_RegisterInfoFunc.unwrap()(ctx.ctx, Some(redis_api::info::write)) };
    config::INITIALISED.store(true, Ordering::Release);
    Status::Ok
}

fn deinit(_ctx: &Context) -> Status {
    state::stop_lanes();
    Status::Ok
}

/// pg-url, the password file, the TLS files and the connect timeout shape the
/// pool: build a new one when they change.
fn pool_changed<T>(_ctx: &ConfigurationContext, _name: &str, _value: &'static T) {
    if config::INITIALISED.load(Ordering::Acquire) {
        state::rebuild_pool();
    }
}

/// The dirty set's bound applies from the next write on, not from the next
/// time something locks the set.
fn dirty_max_changed<T>(_ctx: &ConfigurationContext, _name: &str, _value: &'static T) {
    state::dirty_tracker().set_max(config::dirty_max_ids());
}

/// The registration. redis-module's macro logs through its own helpers (which
/// pass the text as a printf format); its messages are fixed text and parse
/// errors naming no value, so here, and only here, clippy lets it.
#[allow(clippy::disallowed_methods)]
mod registration {
    use super::*;

    const IMMUTABLE: ConfigurationFlags = ConfigurationFlags::IMMUTABLE;
    const DEFAULT: ConfigurationFlags = ConfigurationFlags::DEFAULT;

    redis_module! {
        name: "consistency",
        version: 1,
        // Working memory (a check's truth map) must not count toward maxmemory;
        // the system allocator, counted (check_memory_peak_bytes).
        allocator: (redis_api::allocator::CountingSystem, redis_api::allocator::CountingSystem),
        data_types: [],
        init: init,
        deinit: deinit,
        // RELOAD only re-reads the rules file: `admin`, not `write`, so a read-only
        // replica accepts it. STATUS and RULES read module memory only: they answer
        // while Redis loads its data. "dangerous" sits in the optional ACL slot: set
        // where the server has RedisModule_SetCommandACLCategories (7.2+), skipped on
        // 7.0 (the mandatory slot would fail the load there).
        commands: [
            ["consistency.check", commands::check::check, "readonly", 0, 0, 0, ""],
            ["consistency.status", commands::status::status, "readonly fast allow-loading", 0, 0, 0, ""],
            ["consistency.rules", commands::rules::rules, "readonly fast allow-loading", 0, 0, 0, ""],
            ["consistency.reload", commands::reload::reload, "admin", 0, 0, 0, ""],
            ["consistency.fix", commands::fix::fix, "write", 0, 0, 0, "", "dangerous"],
            ["consistency.purge", commands::purge::purge, "write", 0, 0, 0, "", "dangerous"],
        ],
        // Writes, expiries and evictions of rule keys: the ids CHECK CHANGED reads.
        event_handlers: [
            [@STRING @GENERIC @HASH @ZSET @LIST @SET @EXPIRED @EVICTED: redis_api::key_events::on_key_event],
        ],
        configurations: [
            i64: [
                ["pg-connect-timeout-ms", &config::PG_CONNECT_TIMEOUT_MS, config::defaults::PG_CONNECT_TIMEOUT_MS, 1, 600_000, DEFAULT, Some(Box::new(pool_changed))],
                ["pg-statement-timeout-ms", &config::PG_STATEMENT_TIMEOUT_MS, config::defaults::PG_STATEMENT_TIMEOUT_MS, 1, 86_400_000, DEFAULT, None],
                ["job-timeout-ms", &config::JOB_TIMEOUT_MS, config::defaults::JOB_TIMEOUT_MS, 1, 86_400_000, DEFAULT, None],
                ["workers", &config::WORKERS, config::defaults::WORKERS, 1, 64, IMMUTABLE, None],
                ["pool-size", &config::POOL_SIZE, config::defaults::POOL_SIZE, 1, 256, IMMUTABLE, None],
                ["scan-batch", &config::SCAN_BATCH, config::defaults::SCAN_BATCH, 1, 100_000, DEFAULT, None],
                ["verify-rounds", &config::VERIFY_ROUNDS, config::defaults::VERIFY_ROUNDS, 1, 10, DEFAULT, None],
                ["check-interval-sec", &config::CHECK_INTERVAL_SEC, config::defaults::CHECK_INTERVAL_SEC, 0, 31_536_000, DEFAULT, None],
                ["db", &config::DB, config::defaults::DB, 0, 1_000_000, DEFAULT, None],
                ["audit-maxlen", &config::AUDIT_MAXLEN, config::defaults::AUDIT_MAXLEN, 0, i64::MAX, DEFAULT, None],
                ["sync-timeout-ms", &config::SYNC_TIMEOUT_MS, config::defaults::SYNC_TIMEOUT_MS, 1, 60_000, DEFAULT, None],
                ["sync-max-keys", &config::SYNC_MAX_KEYS, config::defaults::SYNC_MAX_KEYS, 0, 1_000_000, DEFAULT, None],
                ["max-queue", &config::MAX_QUEUE, config::defaults::MAX_QUEUE, 1, 100_000, IMMUTABLE, None],
                ["dirty-max-ids", &config::DIRTY_MAX_IDS, config::defaults::DIRTY_MAX_IDS, 0, 1_000_000_000, DEFAULT, Some(Box::new(dirty_max_changed))],
                ["watch-grace-ms", &config::WATCH_GRACE_MS, config::defaults::WATCH_GRACE_MS, 0, 600_000, DEFAULT, None],
                ["watch-max-qps", &config::WATCH_MAX_QPS, config::defaults::WATCH_MAX_QPS, 1, 10_000, DEFAULT, None],
                ["watch-max-pending", &config::WATCH_MAX_PENDING, config::defaults::WATCH_MAX_PENDING, 0, 100_000_000, DEFAULT, None],
            ],
            string: [
                ["pg-url", &config::PG_URL, config::DEFAULT_PG_URL, DEFAULT, Some(Box::new(pool_changed))],
                ["pg-password-file", &config::PG_PASSWORD_FILE, "", DEFAULT, Some(Box::new(pool_changed))],
                ["pg-sslrootcert", &config::PG_SSLROOTCERT, "", DEFAULT, Some(Box::new(pool_changed))],
                ["pg-sslcert", &config::PG_SSLCERT, "", DEFAULT, Some(Box::new(pool_changed))],
                ["pg-sslkey", &config::PG_SSLKEY, "", DEFAULT, Some(Box::new(pool_changed))],
                ["rules-file", &state::RULES_FILE, "", DEFAULT, None],
                ["threshold", &config::THRESHOLD, config::defaults::THRESHOLD, DEFAULT, None],
                ["audit-stream", &config::AUDIT_STREAM, "", DEFAULT, None],
                ["notify-channel", &config::NOTIFY_CHANNEL, config::defaults::NOTIFY_CHANNEL, DEFAULT, None],
            ],
            bool: [
                ["autofix", &config::AUTOFIX, config::defaults::AUTOFIX, DEFAULT, None],
            ],
            enum: [],
            module_args_as_configuration: true,
        ]
    }
}
