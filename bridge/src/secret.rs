//! Keeping the PostgreSQL password out of sight: reading it from a file, and
//! showing connection strings without it.

use postgres::config::Host;
use postgres::Config;

use crate::conninfo::{quote, ConnInfo, ConnInfoError};
use crate::error::{io_reason, BridgeError};

const MASK: &str = "***";

/// Reads the password from `path`, dropping the trailing line break that
/// editors and `echo` add. Other whitespace is kept: it may be part of the
/// password.
pub fn read_password_file(path: &str) -> Result<String, BridgeError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BridgeError::Config(format!(
            "cannot read pg-password-file {path}: {}",
            io_reason(&e)
        ))
    })?;
    let password = text
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(BridgeError::Config(format!(
            "pg-password-file {path} is empty"
        )));
    }
    Ok(password.to_string())
}

/// How pg-url is shown (STATUS, `Debug` of the settings): the configuration
/// as it is parsed (the driver's part and the TLS and password-file options
/// the bridge reads), rendered as libpq `key=value` text with the password
/// as `***`.
///
/// Rendering from the parsed form rather than masking the raw text means the
/// display cannot disagree with the parser about where a password is (an
/// upper-case scheme, a non-ASCII space before `password=`, ...). Text that
/// does not parse is not shown at all.
pub fn redact_url(url: &str) -> String {
    match ConnInfo::parse(url) {
        Ok(info) if stray_at_sign(&info.driver) => STRAY_AT.to_string(),
        Ok(info) => render(&info),
        Err(e @ (ConnInfoError::Driver(_) | ConnInfoError::InvalidValue(_))) => {
            format!("(pg-url cannot be parsed: {e})")
        }
        Err(e @ ConnInfoError::AllowUnsupported) => format!("(pg-url refused: {e})"),
    }
}

const STRAY_AT: &str =
    "(pg-url not shown: '@' in a host or dbname, as from an unescaped '@' in a URL password)";

/// The URL parser ends the user info at the first '@', so a password holding
/// a raw '@' spills its tail into the host or dbname ("u:p@ss/w@h/db" gives
/// host "ss", dbname "w@h/db"). A later '@' must then land in one of them.
fn stray_at_sign(config: &Config) -> bool {
    let host_has_at = config
        .get_hosts()
        .iter()
        .any(|h| matches!(h, Host::Tcp(name) if name.contains('@')));
    host_has_at || config.get_dbname().is_some_and(|d| d.contains('@'))
}

/// Fields in libpq's order, except the password last; options the pool sets
/// itself (keepalives) are left out. Empty lists and unset fields are omitted.
fn render(info: &ConnInfo) -> String {
    let config = &info.driver;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(dir) => dir.to_string_lossy().into_owned(),
        })
        .collect();
    let hostaddrs: Vec<String> = config
        .get_hostaddrs()
        .iter()
        .map(|a| a.to_string())
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(|p| p.to_string()).collect();
    // prefer, the default, is shown only when given.
    let ssl_mode = info.sslmode.map(|m| m.as_str());
    let fields = [
        ("host", Some(hosts.join(",")).filter(|s| !s.is_empty())),
        (
            "hostaddr",
            Some(hostaddrs.join(",")).filter(|s| !s.is_empty()),
        ),
        ("port", Some(ports.join(",")).filter(|s| !s.is_empty())),
        ("user", config.get_user().map(str::to_string)),
        ("dbname", config.get_dbname().map(str::to_string)),
        ("options", config.get_options().map(str::to_string)),
        (
            "application_name",
            config.get_application_name().map(str::to_string),
        ),
        ("passfile", info.passfile.clone()),
        ("sslmode", ssl_mode.map(str::to_string)),
        ("sslcert", info.files.cert.clone()),
        ("sslkey", info.files.key.clone()),
        ("sslrootcert", info.files.rootcert.clone()),
        (
            "connect_timeout",
            config
                .get_connect_timeout()
                .map(|t| t.as_secs().to_string()),
        ),
    ];
    let mut out: Vec<String> = fields
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| format!("{key}={}", quote(&v))))
        .collect();
    if config.get_password().is_some() {
        out.push(format!("password={MASK}"));
    }
    out.join(" ")
}

/// Options the parser names in "invalid value for option `x`".
const CHECKED_OPTIONS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "sslmode",
    "sslnegotiation",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// Why the driver refused pg-url, in words that quote nothing from it.
///
/// The driver's own messages may: an "unknown option" can be a mistyped URL
/// with its password, or the tail of an unquoted password holding a space;
/// "unexpected character" quotes a character. So only fixed texts come out.
pub(crate) fn url_error_reason(e: &postgres::Error) -> String {
    let text = std::error::Error::source(e)
        .map(|c| c.to_string())
        .unwrap_or_default();
    if let Some(option) = CHECKED_OPTIONS
        .iter()
        .find(|o| text == format!("invalid value for option `{o}`"))
    {
        return format!("invalid value for {option}");
    }
    let reason = if text.starts_with("unknown option") {
        "unknown option"
    } else if text.starts_with("unexpected") {
        "expected key=value pairs or a postgres:// URL"
    } else if text.starts_with("unterminated quoted") {
        "unterminated quoted value"
    } else if text == "unterminated parameter" {
        "URL parameter without ="
    } else if text.starts_with("invalid utf-8") {
        "percent-encoding is not UTF-8"
    } else {
        "malformed"
    };
    reason.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    /// Shows `url`, checking that the password "secret" is not in it.
    fn shown(url: &str) -> String {
        let text = redact_url(url);
        assert!(!text.contains("secret"), "{url:?} shown as {text:?}");
        text
    }

    const NOT_KEY_VALUE: &str =
        "(pg-url cannot be parsed: expected key=value pairs or a postgres:// URL)";

    // The forms the old pattern-based redaction showed verbatim.

    #[test]
    fn upper_case_scheme_is_not_shown() {
        // The driver knows only lower-case schemes, so this is not a URL to it.
        assert_eq!(shown("POSTGRESQL://u:secret@h/db"), NOT_KEY_VALUE);
        assert_eq!(shown("Postgres://u:secret@h/db"), NOT_KEY_VALUE);
    }

    #[test]
    fn upper_case_query_key_is_not_shown() {
        // The driver rejects `PASSWORD` as an unknown option.
        assert_eq!(
            shown("postgres://h/db?PASSWORD=secret"),
            "(pg-url cannot be parsed: unknown option)"
        );
    }

    #[test]
    fn one_slash_url_is_not_shown() {
        assert_eq!(shown("postgresql:/u:secret@h"), NOT_KEY_VALUE);
    }

    #[test]
    fn non_ascii_space_before_password_is_masked() {
        // The driver splits on any Unicode whitespace, so this sets a password.
        assert_eq!(shown("host=h\u{a0}password=secret"), "host=h password=***");
        assert_eq!(
            shown("host=h\u{3000}password=secret\u{2003}user=u"),
            "host=h user=u password=***"
        );
    }

    #[test]
    fn unescaped_at_sign_in_url_password_is_not_shown() {
        // The driver takes "p" as the password; the rest would show as
        // host and dbname.
        for url in [
            "postgresql://u:p@ss/w@secret@h:5433/db",
            "postgres://u:p@secret@h/db",
            "postgres://u:p@ss@secret@h",
        ] {
            assert_eq!(shown(url), STRAY_AT, "{url:?}");
        }
    }

    #[test]
    fn parse_errors_quote_nothing() {
        let cases = [
            // The driver would name the whole text as an unknown option.
            (
                "POSTGRESQL://u:secret@h/db?sslmode=x",
                "(pg-url cannot be parsed: unknown option)",
            ),
            // An unquoted password with a space: its tail becomes a key.
            (
                "host=h password=my secret=1",
                "(pg-url cannot be parsed: unknown option)",
            ),
            // The driver would quote the character after the key.
            ("host=h pass secret=x", NOT_KEY_VALUE),
            ("host=h password", NOT_KEY_VALUE),
            (
                "host=h password='secret",
                "(pg-url cannot be parsed: unterminated quoted value)",
            ),
            (
                "postgres://u:secret@h/db?sslmode=bogus",
                "(pg-url cannot be parsed: invalid value for sslmode)",
            ),
            (
                "postgres://u:secret@h:x/db",
                "(pg-url cannot be parsed: invalid value for port)",
            ),
            (
                "postgres://u:secret@h/db?secret",
                "(pg-url cannot be parsed: URL parameter without =)",
            ),
            (
                "postgres://u:secret@h/db%FF",
                "(pg-url cannot be parsed: percent-encoding is not UTF-8)",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(shown(url), want, "{url:?}");
        }
    }

    // Ordinary forms.

    #[test]
    fn key_value_forms() {
        let cases = [
            (
                "host=h password=secret user=u",
                "host=h user=u password=***",
            ),
            (
                "host=db user=app password = 'x secret y' dbname=costs",
                "host=db user=app dbname=costs password=***",
            ),
            (r"password='it\'s secret' host=h", "host=h password=***"),
            (r"password=a\ secret host=h", "host=h password=***"),
            ("host=h password=''", "host=h password=***"),
            ("host=h user=u dbname=d", "host=h user=u dbname=d"),
            (
                "host=h1,h2 port=5432,5433 user=u password=secret",
                "host=h1,h2 port=5432,5433 user=u password=***",
            ),
            (
                "host=/var/run/postgresql dbname=d password=secret",
                "host=/var/run/postgresql dbname=d password=***",
            ),
            (
                "hostaddr=127.0.0.1 sslmode=require connect_timeout=5 password=secret",
                "hostaddr=127.0.0.1 sslmode=require connect_timeout=5 password=***",
            ),
            (
                "application_name=é password=ü host=h",
                "host=h application_name=é password=***",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(shown(url), want, "{url:?}");
        }
    }

    #[test]
    fn url_forms() {
        let cases = [
            (
                "postgres://u:secret@h/db",
                "host=h port=5432 user=u dbname=db password=***",
            ),
            (
                "postgresql://u:p%40ss%2Fw%40secret@h:5433/db?sslmode=disable",
                "host=h port=5433 user=u dbname=db sslmode=disable password=***",
            ),
            (
                "postgres://h/db?user=u&password=secret&application_name=my%20app",
                "host=h port=5432 user=u dbname=db application_name='my app' password=***",
            ),
            (
                "postgres://u:secret@h1,h2:5433/db",
                "host=h1,h2 port=5432,5433 user=u dbname=db password=***",
            ),
            (
                "postgres://%2Fvar%2Frun%2Fpostgresql/db",
                "host=/var/run/postgresql port=5432 dbname=db",
            ),
            ("postgres://u@h/db", "host=h port=5432 user=u dbname=db"),
        ];
        for (url, want) in cases {
            assert_eq!(shown(url), want, "{url:?}");
        }
    }

    #[test]
    fn no_password_no_password_field() {
        for url in [
            "host=h user=u dbname=d",
            "postgres://u@h/db",
            "host=/tmp",
            "",
        ] {
            assert!(!shown(url).contains("password"), "{url:?}");
        }
        assert_eq!(shown(""), "");
    }

    #[test]
    fn values_are_quoted_and_read_back_alike() {
        let url =
            r"host=h user='it\'s me' options='-c search_path=a' application_name='a\\b' dbname=''";
        let text = shown(url);
        assert_eq!(
            text,
            r"host=h user='it\'s me' dbname='' options='-c search_path=a' application_name='a\\b'"
        );
        let (a, b) = (
            Config::from_str(url).unwrap(),
            Config::from_str(&text).unwrap(),
        );
        assert_eq!(a.get_user(), b.get_user());
        assert_eq!(a.get_dbname(), b.get_dbname());
        assert_eq!(a.get_options(), b.get_options());
        assert_eq!(a.get_application_name(), b.get_application_name());
    }
}
