//! Connection settings, the r2d2 pool, and one-off connections.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::connect::Connector;
use crate::defaults;
use crate::error::{classify, BridgeError};
pub use crate::secret::{read_password_file, redact_url};
pub use crate::tls::SslFiles;

/// A pooled connection, returned to the pool on drop.
pub type PgConn = r2d2::PooledConnection<PgManager>;

/// Everything needed to reach PostgreSQL.
#[derive(Clone)]
pub struct PgSettings {
    /// libpq `key=value` string or `postgres://` URL. Besides what the driver
    /// parses, it may hold `sslmode` (all of libpq's values but `allow`),
    /// `sslrootcert`, `sslcert`, `sslkey` and `passfile`.
    pub url: String,
    /// pg-password-file: read at every new connection, so a rotated password
    /// is picked up without a restart; overrides `password` and the url's.
    pub password_file: Option<String>,
    /// PGPASSWORD (or a test's password); overrides any password in `url`.
    pub password: Option<String>,
    /// The TLS files where `url` names none (the module's pg-ssl* configs).
    pub ssl_files: SslFiles,
    /// Bounds both connecting and waiting for a pooled connection.
    pub connect_timeout: Duration,
    /// Default statement timeout for truth queries.
    pub statement_timeout: Duration,
    /// Most connections the pool opens.
    pub pool_size: u32,
}

impl Default for PgSettings {
    /// The module's documented defaults.
    fn default() -> Self {
        PgSettings {
            url: defaults::PG_URL.to_string(),
            password_file: None,
            password: None,
            ssl_files: SslFiles::default(),
            connect_timeout: Duration::from_millis(defaults::PG_CONNECT_TIMEOUT_MS),
            statement_timeout: Duration::from_millis(defaults::PG_STATEMENT_TIMEOUT_MS),
            pool_size: defaults::POOL_SIZE,
        }
    }
}

impl fmt::Debug for PgSettings {
    // Hand-written so that `{:?}` in a log line never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redact_url(&self.url))
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ssl_files", &self.ssl_files)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl PgSettings {
    /// Parses the url and checks the numbers; reads no file.
    fn connector(&self) -> Result<Connector, BridgeError> {
        Connector::new(
            &self.url,
            self.password_file.as_deref(),
            self.password.as_deref(),
            &self.ssl_files,
            self.connect_timeout,
        )
    }
}

/// The pool's connection manager: each new connection goes through
/// [`Connector`] (password sources, TLS).
#[derive(Debug)]
pub struct PgManager(Connector);

impl r2d2::ManageConnection for PgManager {
    type Connection = postgres::Client;
    type Error = BridgeError;

    fn connect(&self) -> Result<postgres::Client, BridgeError> {
        self.0.connect()
    }

    fn is_valid(&self, conn: &mut postgres::Client) -> Result<(), BridgeError> {
        conn.simple_query("").map(|_| ()).map_err(|e| classify(&e))
    }

    fn has_broken(&self, conn: &mut postgres::Client) -> bool {
        conn.is_closed()
    }
}

/// The last connection failure, so `get()` can say why it timed out (r2d2
/// itself only says that it did).
type LastError = Arc<Mutex<Option<(Instant, BridgeError)>>>;

/// r2d2 error handler: remembers the reason and logs at debug. The pool
/// retries in the background while PostgreSQL is down, so logging each
/// failure at a louder level would flood the Redis log; `get()` reports it.
#[derive(Debug)]
struct RememberError(LastError);

impl r2d2::HandleError<BridgeError> for RememberError {
    fn handle_error(&self, error: BridgeError) {
        log::debug!("postgres connection attempt failed: {error}");
        if let Ok(mut last) = self.0.lock() {
            *last = Some((Instant::now(), error));
        }
    }
}

/// Counts from the pool, for STATUS and INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Open connections, idle or checked out.
    pub connections: u32,
    /// Open connections waiting in the pool.
    pub idle: u32,
}

/// A pool of PostgreSQL connections that opens them lazily.
pub struct PgPool {
    pool: r2d2::Pool<PgManager>,
    settings: PgSettings,
    last_error: LastError,
}

impl fmt::Debug for PgPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgPool")
            .field("settings", &self.settings)
            .field("state", &self.state())
            .finish()
    }
}

impl PgPool {
    /// Creates the pool without connecting, so it succeeds while PostgreSQL
    /// is down; only a bad url or bad numbers fail (with `Config`). Files
    /// (password, certificates) are read at each new connection, so one
    /// that appears or changes later is used without rebuilding the pool.
    pub fn new(settings: &PgSettings) -> Result<PgPool, BridgeError> {
        let connector = settings.connector()?;
        if settings.pool_size == 0 {
            return Err(BridgeError::Config(
                "pool size must be at least 1".to_string(),
            ));
        }
        let last_error = LastError::default();
        let manager = PgManager(connector);
        let pool = r2d2::Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(0))
            .connection_timeout(settings.connect_timeout)
            .error_handler(Box::new(RememberError(Arc::clone(&last_error))))
            .build_unchecked(manager);
        Ok(PgPool {
            pool,
            settings: settings.clone(),
            last_error,
        })
    }

    /// Checks out a connection, waiting at most the connect timeout.
    ///
    /// Fails with the last connection error seen while waiting (`Unavailable`:
    /// "connection refused", a TLS refusal; `Config`: an unreadable password
    /// file), or `Unavailable` saying that every connection is in use.
    pub fn get(&self) -> Result<PgConn, BridgeError> {
        let start = Instant::now();
        self.pool.get().map_err(|e| {
            let recent = self
                .last_error
                .lock()
                .ok()
                .and_then(|last| last.clone())
                .filter(|(at, _)| *at >= start)
                .map(|(_, error)| error);
            if let Some(error) = recent {
                return error;
            }
            let reason = {
                let state = self.pool.state();
                if state.connections >= self.settings.pool_size && state.idle_connections == 0 {
                    format!(
                        "no free connection within {} ms (all {} in use)",
                        self.settings.connect_timeout.as_millis(),
                        state.connections
                    )
                } else {
                    // r2d2's own text; never holds a password.
                    e.to_string()
                }
            };
            BridgeError::Unavailable(reason)
        })
    }

    /// Open and idle connection counts.
    pub fn state(&self) -> PoolState {
        let s = self.pool.state();
        PoolState {
            connections: s.connections,
            idle: s.idle_connections,
        }
    }

    /// The settings the pool was built with.
    pub fn settings(&self) -> &PgSettings {
        &self.settings
    }
}

/// Opens one connection outside the pool with the same settings, its
/// statement timeout set to `statement_timeout` (zero leaves it unlimited).
///
/// For the synchronous path (Lua scripts, MULTI), which must not wait for a
/// pooled connection that a long check may hold.
pub fn connect_direct(
    settings: &PgSettings,
    statement_timeout: Duration,
) -> Result<postgres::Client, BridgeError> {
    let mut client = settings.connector()?.connect()?;
    set_statement_timeout(&mut client, statement_timeout)?;
    Ok(client)
}

/// Sets the session's statement timeout. Done per call because the
/// configured value may change at runtime and pooled sessions outlive it.
pub(crate) fn set_statement_timeout(
    client: &mut impl postgres::GenericClient,
    timeout: Duration,
) -> Result<(), BridgeError> {
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}",
            timeout_millis(timeout)
        ))
        .map_err(|e| classify(&e))
}

/// Milliseconds for `statement_timeout`: rounded up so a tiny non-zero value
/// does not become 0 (which means "no limit"), capped at PostgreSQL's maximum.
fn timeout_millis(timeout: Duration) -> u128 {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    ms.min(i32::MAX as u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_rounding() {
        assert_eq!(timeout_millis(Duration::ZERO), 0);
        assert_eq!(timeout_millis(Duration::from_micros(1)), 1);
        assert_eq!(timeout_millis(Duration::from_millis(250)), 250);
        assert_eq!(
            timeout_millis(Duration::from_secs(u64::MAX)),
            i32::MAX as u128
        );
    }

    #[test]
    fn debug_hides_password() {
        for url in [
            "host=h password=topsecret",
            "host=h\u{a0}password=topsecret",
            "POSTGRESQL://u:topsecret@h/db",
            "postgres://h/db?PASSWORD=topsecret",
        ] {
            let s = PgSettings {
                url: url.into(),
                password: Some("alsosecret".into()),
                ..PgSettings::default()
            };
            let text = format!("{s:?}");
            assert!(
                !text.contains("topsecret") && !text.contains("alsosecret"),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_url_is_config_error() {
        for url in [
            "host=h bogus_option=1 password=topsecret",
            // The parser's own message would quote these up to the '='.
            "host=h password=top topsecret=1",
            "POSTGRESQL://u:topsecret@h/db?sslmode=disable",
        ] {
            let s = PgSettings {
                url: url.into(),
                ..PgSettings::default()
            };
            match PgPool::new(&s) {
                Err(BridgeError::Config(r)) => {
                    assert_eq!(r, "invalid pg-url: unknown option", "{url:?}")
                }
                other => panic!("expected Config, got {other:?}"),
            }
        }
    }

    #[test]
    fn zero_sizes_are_config_errors() {
        let zero_pool = PgSettings {
            pool_size: 0,
            ..PgSettings::default()
        };
        assert!(matches!(
            PgPool::new(&zero_pool),
            Err(BridgeError::Config(_))
        ));
        let zero_timeout = PgSettings {
            connect_timeout: Duration::ZERO,
            ..PgSettings::default()
        };
        assert!(matches!(
            PgPool::new(&zero_timeout),
            Err(BridgeError::Config(_))
        ));
    }
}
