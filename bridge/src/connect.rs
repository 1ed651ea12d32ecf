//! Opening one connection as libpq would: the password from the first
//! source that has one, TLS as `sslmode` says, and the fallbacks libpq makes.
//!
//! Password sources, first wins: pg-password-file (read at every new
//! connection, so a rotated password needs no restart), the password given
//! separately (PGPASSWORD), the one in pg-url, then the password file of
//! libpq (`passfile`, `PGPASSFILE`, `~/.pgpass`).

use std::path::PathBuf;
use std::time::Duration;

use postgres::config::{Host, SslMode as DriverSslMode};
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls};

use crate::conninfo::ConnInfo;
use crate::error::{classify_connect, BridgeError};
use crate::pgpass::{self, Lookup};
use crate::secret::read_password_file;
use crate::tls::{self, SslFiles, SslMode, TlsError};

/// How long a connection may sit silent before the kernel probes it, so a
/// vanished server (failover, cable pulled) is noticed instead of hanging.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// Shown in `pg_stat_activity` so a DBA can tell who is running the queries.
const APPLICATION_NAME: &str = "redis-consistency";

/// Where the password comes from.
#[derive(Debug, Clone)]
enum Password {
    /// pg-password-file: read at each connection.
    File(String),
    /// Given with the settings (PGPASSWORD).
    Given(String),
    /// pg-url holds one; the driver has it.
    InUrl,
    /// libpq's password file, with pg-url's `passfile` if any.
    PgPass(Option<String>),
}

/// Everything one connection attempt needs, built once from the settings.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    config: Config,
    mode: SslMode,
    files: SslFiles,
    password: Password,
}

/// The environment libpq reads: `HOME` for `~/.pgpass` and `~/.postgresql/`,
/// `PGPASSFILE`.
struct Env {
    home: Option<PathBuf>,
    passfile: Option<String>,
}

impl Env {
    fn read() -> Env {
        Env {
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
            passfile: std::env::var("PGPASSFILE").ok(),
        }
    }
}

impl Connector {
    /// Parses pg-url and checks what can be checked without connecting.
    pub(crate) fn new(
        url: &str,
        password_file: Option<&str>,
        password: Option<&str>,
        ssl_defaults: &SslFiles,
        connect_timeout: Duration,
    ) -> Result<Connector, BridgeError> {
        let info = ConnInfo::parse(url)
            .map_err(|e| BridgeError::Config(format!("invalid pg-url: {e}")))?;
        if connect_timeout.is_zero() {
            return Err(BridgeError::Config(
                "connect timeout must be positive".to_string(),
            ));
        }
        let mut config = info.driver;
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        config
            .connect_timeout(connect_timeout)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES);
        let mode = info.sslmode.unwrap_or_default();
        let files = info.files.or(ssl_defaults);
        tls::check_mode(mode, &files)?;
        let password = match (password_file.filter(|f| !f.is_empty()), password) {
            (Some(file), _) => Password::File(file.to_string()),
            (None, Some(given)) => Password::Given(given.to_string()),
            (None, None) if config.get_password().is_some() => Password::InUrl,
            (None, None) => Password::PgPass(info.passfile),
        };
        Ok(Connector {
            config,
            mode,
            files,
            password,
        })
    }

    /// Opens a connection. An authentication failure with the password from
    /// pg-password-file re-reads the file and tries once more if it changed
    /// meanwhile (a rotation racing the connection).
    pub(crate) fn connect(&self) -> Result<Client, BridgeError> {
        let env = Env::read();
        let (password, origin) = self.password(&env)?;
        let result = self.connect_with(password.as_deref(), &env);
        match (&self.password, result) {
            (Password::File(path), Err(e)) if is_auth_failure(&e) => {
                let fresh = read_password_file(path)?;
                if Some(&fresh) != password.as_ref() {
                    return self
                        .connect_with(Some(&fresh), &env)
                        .map_err(|e| described(&e, self.mode, origin.as_deref()));
                }
                Err(described(&e, self.mode, origin.as_deref()))
            }
            (_, Err(e)) => Err(described(&e, self.mode, origin.as_deref())),
            (_, Ok(client)) => Ok(client),
        }
    }

    /// The password to send, if any, and where it came from (for errors).
    fn password(&self, env: &Env) -> Result<(Option<String>, Option<String>), BridgeError> {
        Ok(match &self.password {
            Password::File(path) => (
                Some(read_password_file(path)?),
                Some(format!("password from pg-password-file {path}")),
            ),
            Password::Given(p) => (Some(p.clone()), None),
            Password::InUrl => (None, None),
            Password::PgPass(passfile) => {
                let Some(path) = pgpass::file_path(
                    passfile.as_deref(),
                    env.passfile.as_deref(),
                    env.home.as_deref(),
                ) else {
                    return Ok((None, None));
                };
                match self.pgpass_lookup(&path) {
                    Lookup::Found(p) if !p.is_empty() => {
                        (Some(p), Some(format!("password from {}", path.display())))
                    }
                    Lookup::Found(_) | Lookup::NotFound => (None, None),
                    Lookup::Ignored(why) => {
                        log::debug!("password file ignored: {why}");
                        (None, Some(format!("password file ignored: {why}")))
                    }
                }
            }
        })
    }

    /// libpq matches the password file per host; with several hosts the
    /// first host that has a line is used for all.
    fn pgpass_lookup(&self, path: &std::path::Path) -> Lookup {
        let c = &self.config;
        let user = c.get_user().unwrap_or_default();
        let dbname = c.get_dbname().unwrap_or(user);
        let mut hosts: Vec<Option<String>> = c
            .get_hosts()
            .iter()
            .map(|h| {
                Some(match h {
                    Host::Tcp(name) => name.clone(),
                    Host::Unix(dir) => dir.to_string_lossy().into_owned(),
                })
            })
            .collect();
        if hosts.is_empty() {
            hosts = c
                .get_hostaddrs()
                .iter()
                .map(|a| Some(a.to_string()))
                .collect();
        }
        if hosts.is_empty() {
            hosts.push(None);
        }
        let mut outcome = Lookup::NotFound;
        for (i, host) in hosts.iter().enumerate() {
            let port = c
                .get_ports()
                .get(i)
                .or_else(|| c.get_ports().first())
                .copied()
                .unwrap_or(5432)
                .to_string();
            let target = pgpass::Target {
                host: pgpass::match_host(host.as_deref()),
                port: &port,
                dbname,
                user,
            };
            outcome = pgpass::lookup(path, &target);
            if !matches!(outcome, Lookup::NotFound) {
                break;
            }
        }
        outcome
    }

    fn connect_with(&self, password: Option<&str>, env: &Env) -> Result<Client, ConnectError> {
        let mut config = self.config.clone();
        if let Some(p) = password {
            config.password(p);
        }
        // libpq ignores sslmode on Unix sockets: the server never offers TLS there.
        let all_sockets = !config.get_hosts().is_empty()
            && config.get_hostaddrs().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|h| matches!(h, Host::Unix(_)));
        if self.mode == SslMode::Disable || all_sockets {
            config.ssl_mode(DriverSslMode::Disable);
            return config.connect(NoTls).map_err(ConnectError::Driver);
        }
        let tls = tls::connector(self.mode, &self.files, env.home.as_deref())
            .map_err(ConnectError::Bridge)?;
        config.ssl_mode(if self.mode == SslMode::Prefer {
            DriverSslMode::Prefer
        } else {
            DriverSslMode::Require
        });
        match config.connect(tls) {
            Ok(client) => Ok(client),
            // prefer: a failed handshake is retried without TLS, as libpq does
            // (also the driver's refusal to start one without a host name).
            Err(e) if self.mode == SslMode::Prefer && is_tls_failure(&e) => {
                log::debug!("postgres: TLS failed under sslmode=prefer, trying without");
                config.ssl_mode(DriverSslMode::Disable);
                config.connect(NoTls).map_err(ConnectError::Driver)
            }
            Err(e) => Err(ConnectError::Driver(e)),
        }
    }
}

/// A failed attempt: the driver's error, or ours before connecting.
#[derive(Debug)]
enum ConnectError {
    Driver(postgres::Error),
    Bridge(BridgeError),
}

/// The handshake error we produced, inside the driver's error.
fn tls_error(e: &postgres::Error) -> Option<&TlsError> {
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<TlsError>() {
            return Some(tls);
        }
        cur = err.source();
    }
    None
}

/// The driver's name for a failed TLS negotiation or handshake.
const DRIVER_TLS_FAILURE: &str = "error performing TLS handshake";

fn is_tls_failure(e: &postgres::Error) -> bool {
    tls_error(e).is_some() || e.to_string() == DRIVER_TLS_FAILURE
}

fn is_auth_failure(e: &ConnectError) -> bool {
    matches!(e, ConnectError::Driver(e) if is_auth_failure_db(e))
}

/// The server refused the password (or the login).
fn is_auth_failure_db(e: &postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::INVALID_PASSWORD
            || *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    })
}

/// The error as the bridge reports it, with where the password came from
/// when authentication failed (never the password itself).
fn described(e: &ConnectError, mode: SslMode, origin: Option<&str>) -> BridgeError {
    let e = match e {
        ConnectError::Bridge(b) => return b.clone(),
        ConnectError::Driver(e) => e,
    };
    if let Some(tls) = tls_error(e) {
        return BridgeError::Unavailable(format!("TLS: {tls}"));
    }
    let cause = std::error::Error::source(e).map(|s| s.to_string());
    let text = e.to_string();
    if text == DRIVER_TLS_FAILURE {
        // The driver's own TLS refusals.
        return BridgeError::Unavailable(match cause.as_deref() {
            Some("no hostname provided for TLS handshake") => format!(
                "TLS: pg-url gives hostaddr but no host; sslmode={} needs host= too (the \
                 name TLS sends and checks)",
                mode.as_str()
            ),
            cause => format!(
                "TLS: {} (sslmode={} needs TLS)",
                cause.unwrap_or("handshake failed"),
                mode.as_str()
            ),
        });
    }
    if text == "invalid configuration" && cause.as_deref() == Some("password missing") {
        let hint = origin.map(|o| format!(" ({o})")).unwrap_or_default();
        return BridgeError::Unavailable(format!(
            "the server asks for a password and none is configured: pg-url has none, \
             pg-password-file is unset, PGPASSWORD is unset and no password file line \
             matches{hint}"
        ));
    }
    match (classify_connect(e), origin) {
        (BridgeError::Unavailable(r), Some(o)) if is_auth_failure_db(e) => {
            BridgeError::Unavailable(format!("{r} ({o})"))
        }
        (base, _) => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(url: &str) -> Result<Connector, BridgeError> {
        Connector::new(
            url,
            None,
            None,
            &SslFiles::default(),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn password_sources_in_order() {
        let files = SslFiles::default();
        let t = Duration::from_secs(1);
        let c = Connector::new("host=h password=u", Some("/f"), Some("g"), &files, t).unwrap();
        assert!(matches!(c.password, Password::File(ref f) if f == "/f"));
        let c = Connector::new("host=h password=u", Some(""), Some("g"), &files, t).unwrap();
        assert!(matches!(c.password, Password::Given(ref g) if g == "g"));
        let c = Connector::new("host=h password=u", None, None, &files, t).unwrap();
        assert!(matches!(c.password, Password::InUrl));
        let c = Connector::new("host=h passfile=/p", None, None, &files, t).unwrap();
        assert!(matches!(c.password, Password::PgPass(Some(ref p)) if p == "/p"));
    }

    #[test]
    fn configs_fill_in_tls_files_the_url_leaves_out() {
        let defaults = SslFiles {
            rootcert: Some("/conf/ca.pem".into()),
            cert: Some("/conf/c.pem".into()),
            key: None,
        };
        let c = Connector::new(
            "host=h sslmode=verify-full sslcert=/url/c.pem",
            None,
            None,
            &defaults,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(c.mode, SslMode::VerifyFull);
        assert_eq!(c.files.rootcert.as_deref(), Some("/conf/ca.pem"));
        assert_eq!(c.files.cert.as_deref(), Some("/url/c.pem"));
    }

    #[test]
    fn refusals_before_connecting() {
        for (url, want) in [
            ("host=h sslmode=allow", "sslmode=allow is not supported"),
            (
                "host=h sslmode=bogus",
                "invalid pg-url: invalid value for sslmode",
            ),
            (
                "host=h sslmode=require sslrootcert=system",
                "sslrootcert=system needs sslmode=verify-full",
            ),
        ] {
            let err = connector(url).unwrap_err().to_string();
            assert!(err.contains(want), "{url}: {err}");
        }
        let zero = Connector::new("host=h", None, None, &SslFiles::default(), Duration::ZERO);
        assert!(matches!(zero, Err(BridgeError::Config(_))));
    }
}
