//! Module configs (`CONFIG GET consistency.*`), held in atomics and mutexes so worker
//! threads read them without the GIL. Registered in `lib.rs`; documented in
//! redis.conf.example.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis_module::configuration::{ConfigurationContext, ConfigurationValue};
use redis_module::{RedisError, RedisString};

pub const DEFAULT_PG_URL: &str = consistency_bridge::defaults::PG_URL;

/// Each config's default, written once: the statics below start with them and
/// lib.rs registers them.
pub mod defaults {
    use consistency_bridge::defaults as pg;

    pub const PG_CONNECT_TIMEOUT_MS: i64 = pg::PG_CONNECT_TIMEOUT_MS as i64;
    pub const PG_STATEMENT_TIMEOUT_MS: i64 = pg::PG_STATEMENT_TIMEOUT_MS as i64;
    pub const JOB_TIMEOUT_MS: i64 = 60000;
    pub const WORKERS: i64 = 2;
    pub const POOL_SIZE: i64 = pg::POOL_SIZE as i64;
    pub const SCAN_BATCH: i64 = 500;
    pub const VERIFY_ROUNDS: i64 = 2;
    pub const CHECK_INTERVAL_SEC: i64 = 0;
    pub const AUDIT_MAXLEN: i64 = 100_000;
    pub const SYNC_TIMEOUT_MS: i64 = 250;
    pub const SYNC_MAX_KEYS: i64 = 1000;
    pub const MAX_QUEUE: i64 = 64;
    pub const DIRTY_MAX_IDS: i64 = 1_000_000;
    pub const WATCH_GRACE_MS: i64 = 1000;
    pub const WATCH_MAX_QPS: i64 = 20;
    pub const WATCH_MAX_PENDING: i64 = 100_000;
    pub const DB: i64 = 0;
    pub const AUTOFIX: bool = false;
    pub const THRESHOLD: &str = "5.0";
    pub const NOTIFY_CHANNEL: &str = "consistency:events";
}

pub static PG_URL: Mutex<String> = Mutex::new(String::new());
pub static PG_PASSWORD_FILE: PasswordFileConfig = PasswordFileConfig(Mutex::new(String::new()));
pub static PG_SSLROOTCERT: Mutex<String> = Mutex::new(String::new());
pub static PG_SSLCERT: Mutex<String> = Mutex::new(String::new());
pub static PG_SSLKEY: Mutex<String> = Mutex::new(String::new());
pub static PG_CONNECT_TIMEOUT_MS: AtomicI64 = AtomicI64::new(defaults::PG_CONNECT_TIMEOUT_MS);
pub static PG_STATEMENT_TIMEOUT_MS: AtomicI64 = AtomicI64::new(defaults::PG_STATEMENT_TIMEOUT_MS);
pub static JOB_TIMEOUT_MS: AtomicI64 = AtomicI64::new(defaults::JOB_TIMEOUT_MS);
pub static WORKERS: AtomicI64 = AtomicI64::new(defaults::WORKERS);
pub static POOL_SIZE: AtomicI64 = AtomicI64::new(defaults::POOL_SIZE);
pub static THRESHOLD: ThresholdConfig = ThresholdConfig {
    text: Mutex::new(String::new()),
    bits: AtomicU64::new(0x4014_0000_0000_0000), // 5.0
};
pub static SCAN_BATCH: AtomicI64 = AtomicI64::new(defaults::SCAN_BATCH);
pub static VERIFY_ROUNDS: AtomicI64 = AtomicI64::new(defaults::VERIFY_ROUNDS);
pub static CHECK_INTERVAL_SEC: AtomicI64 = AtomicI64::new(defaults::CHECK_INTERVAL_SEC);
pub static AUTOFIX: AtomicBool = AtomicBool::new(defaults::AUTOFIX);
pub static DB: DbConfig = DbConfig(AtomicI64::new(defaults::DB));
pub static AUDIT_STREAM: Mutex<String> = Mutex::new(String::new());
pub static AUDIT_MAXLEN: AtomicI64 = AtomicI64::new(defaults::AUDIT_MAXLEN);
pub static NOTIFY_CHANNEL: Mutex<String> = Mutex::new(String::new());
pub static SYNC_TIMEOUT_MS: AtomicI64 = AtomicI64::new(defaults::SYNC_TIMEOUT_MS);
pub static SYNC_MAX_KEYS: AtomicI64 = AtomicI64::new(defaults::SYNC_MAX_KEYS);
pub static MAX_QUEUE: AtomicI64 = AtomicI64::new(defaults::MAX_QUEUE);
pub static DIRTY_MAX_IDS: AtomicI64 = AtomicI64::new(defaults::DIRTY_MAX_IDS);
pub static WATCH_GRACE_MS: AtomicI64 = AtomicI64::new(defaults::WATCH_GRACE_MS);
pub static WATCH_MAX_QPS: AtomicI64 = AtomicI64::new(defaults::WATCH_MAX_QPS);
pub static WATCH_MAX_PENDING: AtomicI64 = AtomicI64::new(defaults::WATCH_MAX_PENDING);

/// Set once `init` has run: before that, configs are being loaded and must not act.
pub static INITIALISED: AtomicBool = AtomicBool::new(false);

fn ms(v: &AtomicI64) -> Duration {
    Duration::from_millis(v.load(Ordering::Relaxed).max(0) as u64)
}

fn int(v: &AtomicI64) -> usize {
    v.load(Ordering::Relaxed).max(0) as usize
}

pub fn pg_url() -> String {
    PG_URL.lock().unwrap().clone()
}
pub fn pg_password_file() -> String {
    PG_PASSWORD_FILE.0.lock().unwrap().clone()
}
/// The TLS files for pg-url to fall back on; an empty config is no file.
pub fn pg_ssl_files() -> consistency_bridge::SslFiles {
    let get = |m: &Mutex<String>| Some(m.lock().unwrap().clone()).filter(|v| !v.is_empty());
    consistency_bridge::SslFiles {
        rootcert: get(&PG_SSLROOTCERT),
        cert: get(&PG_SSLCERT),
        key: get(&PG_SSLKEY),
    }
}
pub fn connect_timeout() -> Duration {
    ms(&PG_CONNECT_TIMEOUT_MS)
}
pub fn statement_timeout() -> Duration {
    ms(&PG_STATEMENT_TIMEOUT_MS)
}
pub fn job_timeout() -> Duration {
    ms(&JOB_TIMEOUT_MS)
}
pub fn workers() -> usize {
    int(&WORKERS)
}
pub fn pool_size() -> u32 {
    int(&POOL_SIZE) as u32
}
pub fn threshold() -> f64 {
    f64::from_bits(THRESHOLD.bits.load(Ordering::Relaxed))
}
pub fn scan_batch() -> usize {
    int(&SCAN_BATCH).max(1)
}
pub fn verify_rounds() -> u32 {
    int(&VERIFY_ROUNDS).max(1) as u32
}
pub fn check_interval_sec() -> u64 {
    int(&CHECK_INTERVAL_SEC) as u64
}
pub fn autofix() -> bool {
    AUTOFIX.load(Ordering::Relaxed)
}
pub fn db() -> i32 {
    int(&DB.0) as i32
}
pub fn audit_stream() -> String {
    AUDIT_STREAM.lock().unwrap().clone()
}
pub fn audit_maxlen() -> usize {
    int(&AUDIT_MAXLEN)
}
pub fn notify_channel() -> String {
    NOTIFY_CHANNEL.lock().unwrap().clone()
}
pub fn sync_timeout() -> Duration {
    ms(&SYNC_TIMEOUT_MS)
}
pub fn sync_max_keys() -> usize {
    int(&SYNC_MAX_KEYS)
}
pub fn max_queue() -> usize {
    int(&MAX_QUEUE).max(1)
}
pub fn dirty_max_ids() -> usize {
    int(&DIRTY_MAX_IDS)
}
pub fn watch_grace() -> Duration {
    ms(&WATCH_GRACE_MS)
}
pub fn watch_max_qps() -> usize {
    int(&WATCH_MAX_QPS).max(1)
}
pub fn watch_max_pending() -> usize {
    int(&WATCH_MAX_PENDING)
}

/// `consistency.threshold`: a float kept as a string config (7.0 has no float
/// configs), validated on set so a bad value is refused, not stored.
pub struct ThresholdConfig {
    text: Mutex<String>,
    bits: AtomicU64,
}

impl ConfigurationValue<RedisString> for ThresholdConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        RedisString::create(None, self.text.lock().unwrap().as_str())
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let text = val.to_string_lossy();
        let value: f64 = text
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                RedisError::String(format!(
                    "threshold must be a non-negative number, got '{text}'"
                ))
            })?;
        self.bits.store(value.to_bits(), Ordering::Relaxed);
        *self.text.lock().unwrap() = text;
        Ok(())
    }
}

/// `consistency.pg-password-file`: settable at runtime. The bridge reads the
/// file at every new connection (a rotated password needs nothing more);
/// CONFIG SET to a file that cannot be read, or is empty, is refused. At
/// load it is only stored, so a missing file never stops Redis from starting.
pub struct PasswordFileConfig(Mutex<String>);

impl ConfigurationValue<RedisString> for PasswordFileConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        RedisString::create(None, self.0.lock().unwrap().as_str())
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let path = val.to_string_lossy();
        if INITIALISED.load(Ordering::Acquire) && !path.is_empty() {
            consistency_bridge::read_password_file(&path)
                .map_err(|e| RedisError::String(e.to_string()))?;
        }
        *self.0.lock().unwrap() = path;
        Ok(())
    }
}

/// `consistency.db`: the database scheduled checks use. A number at or above
/// `databases` is refused (on CONFIG SET and at load), or scheduled runs would
/// select nothing and check db 0.
pub struct DbConfig(AtomicI64);

impl ConfigurationValue<i64> for DbConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: i64) -> Result<(), RedisError> {
        if !crate::redis_api::keyspace::database_exists(val) {
            return Err(RedisError::String(format!(
                "db must name an existing database (0 to databases-1), got {val}"
            )));
        }
        self.0.store(val, Ordering::Relaxed);
        Ok(())
    }
}
