//! `consistency-bridge`: the PostgreSQL side of redis-consistency.
//!
//! This crate knows PostgreSQL and nothing of Redis. It provides:
//! - [`PgPool`]: a lazily connecting r2d2 pool that never fails to start
//!   because PostgreSQL is down, plus [`connect_direct`] for one-off use;
//!   both connect as libpq would: `sslmode` and its certificate files over
//!   rustls, passwords from pg-password-file, PGPASSWORD, pg-url or
//!   `~/.pgpass`;
//! - [`TruthQuery`]: the operator's truth SQL, run in full or for given ids,
//!   with values read as exact text;
//! - [`Lane`]: bounded job queues with their own worker threads;
//! - [`BridgeError`]: errors classified as config, unavailable, timeout,
//!   query or bad truth, with short reasons that never hold a password.

mod connect;
mod conninfo;
pub mod error;
pub mod lanes;
mod pgpass;
pub mod pool;
mod secret;
pub mod tls;
pub mod truth;

pub use error::BridgeError;
pub use lanes::{panic_message, Job, Lane, LaneFull};
pub use pool::{
    connect_direct, read_password_file, redact_url, PgConn, PgManager, PgPool, PgSettings,
    PoolState,
};
pub use tls::{SslFiles, SslMode, TlsError};
pub use truth::{TruthQuery, TruthRow, TruthShape};

/// The PostgreSQL settings' defaults, written once: [`PgSettings::default`] and
/// the module's configs start from them.
pub mod defaults {
    pub const PG_URL: &str = "host=127.0.0.1 user=postgres dbname=postgres";
    pub const PG_CONNECT_TIMEOUT_MS: u64 = 2000;
    pub const PG_STATEMENT_TIMEOUT_MS: u64 = 30000;
    pub const POOL_SIZE: u32 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The module shares these between Redis's main thread and workers.
    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<PgPool>();
        check::<PgSettings>();
        check::<TruthQuery>();
        check::<Lane>();
        check::<BridgeError>();
        check::<LaneFull>();
    }
}
