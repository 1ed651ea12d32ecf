//! pg-url read as libpq reads it: the driver parses most options itself, but
//! not `sslmode=verify-ca|verify-full`, `sslrootcert`, `sslcert`, `sslkey` or
//! `passfile`. Those are taken out here (from `key=value` text or a URL's
//! query) and the rest goes to the driver.
//!
//! The `key=value` reader follows the driver's grammar exactly (whitespace
//! separated, `'quoted'` values, `\` escapes), so both agree on where a
//! value, and a password, begins and ends.

use std::str::FromStr;

use percent_encoding::percent_decode_str;
use postgres::Config;

use crate::secret::url_error_reason;
use crate::tls::{SslFiles, SslMode, SslModeError};

/// Options the bridge handles instead of the driver.
const OURS: [&str; 5] = ["sslmode", "sslrootcert", "sslcert", "sslkey", "passfile"];

/// pg-url, parsed.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// Everything the driver knows; its ssl mode is set at connect time.
    pub driver: Config,
    /// `sslmode` when given (libpq's default is prefer).
    pub sslmode: Option<SslMode>,
    /// The TLS files named in pg-url.
    pub files: SslFiles,
    /// libpq's `passfile`: the password file to use instead of ~/.pgpass.
    pub passfile: Option<String>,
}

/// Why pg-url was refused, in words that quote nothing from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnInfoError {
    /// The driver refused its part (the reason is one of fixed texts).
    Driver(String),
    /// One of our options has a value libpq would not accept.
    InvalidValue(&'static str),
    /// `sslmode=allow`: libpq's plain-first mode, which the driver cannot do.
    AllowUnsupported,
}

impl std::fmt::Display for ConnInfoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnInfoError::Driver(reason) => f.write_str(reason),
            ConnInfoError::InvalidValue(option) => write!(f, "invalid value for {option}"),
            ConnInfoError::AllowUnsupported => {
                f.write_str("sslmode=allow is not supported (use prefer or disable)")
            }
        }
    }
}

impl ConnInfo {
    pub(crate) fn parse(url: &str) -> Result<ConnInfo, ConnInfoError> {
        let split = if is_url(url) {
            split_url(url)
        } else {
            split_key_value(url)
        };
        let (rest, ours) = match split {
            Some(split) => split?,
            // Text this reader cannot follow: the driver says why.
            None => {
                return Err(match Config::from_str(url) {
                    Err(e) => ConnInfoError::Driver(url_error_reason(&e)),
                    Ok(_) => ConnInfoError::Driver("malformed".to_string()),
                })
            }
        };
        let driver =
            Config::from_str(&rest).map_err(|e| ConnInfoError::Driver(url_error_reason(&e)))?;
        let mut info = ConnInfo {
            driver,
            sslmode: None,
            files: SslFiles::default(),
            passfile: None,
        };
        for (key, value) in ours {
            // libpq treats an empty value as not given.
            let value = Some(value).filter(|v| !v.is_empty());
            match key {
                "sslmode" => {
                    let mode =
                        SslMode::parse(value.as_deref().unwrap_or("")).map_err(|e| match e {
                            SslModeError::Invalid => ConnInfoError::InvalidValue("sslmode"),
                            SslModeError::AllowUnsupported => ConnInfoError::AllowUnsupported,
                        })?;
                    info.sslmode = Some(mode);
                }
                "sslrootcert" => info.files.rootcert = value,
                "sslcert" => info.files.cert = value,
                "sslkey" => info.files.key = value,
                _ => info.passfile = value,
            }
        }
        Ok(info)
    }
}

type Split = Result<(String, Vec<(&'static str, String)>), ConnInfoError>;

/// Which of our options `key` is.
fn ours(key: &str) -> Option<&'static str> {
    OURS.iter().copied().find(|o| *o == key)
}

fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// A URL: the query parameters that are ours come out, the rest stays as
/// written. Parameters are read as the driver reads them: a key up to the
/// next `=`, its value up to the next `&`, after the user info (which ends
/// at the first `@`, so a `?` in a password does not start the query).
fn split_url(url: &str) -> Option<Split> {
    let after_scheme = url.find("://")? + 3;
    let query_from = match url[after_scheme..].find('@') {
        Some(at) => after_scheme + at + 1,
        None => after_scheme,
    };
    let Some(q) = url[query_from..].find('?') else {
        return Some(Ok((url.to_string(), Vec::new())));
    };
    let q = query_from + q;
    let mut kept: Vec<&str> = Vec::new();
    let mut found = Vec::new();
    let mut rest = &url[q + 1..];
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            // "key" without '=': the driver names that error.
            return None;
        };
        let end = rest[eq + 1..].find('&').map_or(rest.len(), |a| eq + 1 + a);
        let param = &rest[..end];
        let key = percent_decode_str(&rest[..eq]).decode_utf8().ok();
        match key.as_deref().and_then(ours) {
            Some(option) => {
                let value = match percent_decode_str(&rest[eq + 1..end]).decode_utf8() {
                    Ok(v) => v.into_owned(),
                    Err(_) => {
                        return Some(Err(ConnInfoError::Driver(
                            "percent-encoding is not UTF-8".to_string(),
                        )))
                    }
                };
                found.push((option, value));
            }
            None => kept.push(param),
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let mut out = url[..q].to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    Some(Ok((out, found)))
}

/// `key=value` text: read every pair as the driver would, keep ours, and
/// write the others back quoted so the driver reads the same values.
/// `None` when the text does not follow the grammar.
fn split_key_value(s: &str) -> Option<Split> {
    let mut chars = s.chars().peekable();
    let mut kept = Vec::new();
    let mut found = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=')?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let value = if chars.next_if_eq(&'\'').is_some() {
            let mut value = String::new();
            loop {
                match chars.next()? {
                    '\'' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
            value
        } else {
            let mut value = String::new();
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return None;
            }
            value
        };
        match ours(&key) {
            Some(option) => found.push((option, value)),
            None => kept.push(format!("{key}={}", quote(&value))),
        }
    }
    Some(Ok((kept.join(" "), found)))
}

/// Quotes a value the libpq way when the parser would otherwise split or
/// unescape it.
pub(crate) fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain {
        return value.to_string();
    }
    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
    format!("'{escaped}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> ConnInfo {
        ConnInfo::parse(url).unwrap_or_else(|e| panic!("{url:?}: {e}"))
    }

    #[test]
    fn key_value_options_are_taken_out() {
        let info = parse(
            "host=db.internal sslmode=verify-full sslrootcert='/etc/ca dir/ca.pem' \
             user=u sslcert=/c.pem sslkey=/k.pem passfile=/p dbname=d",
        );
        assert_eq!(info.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(info.files.rootcert.as_deref(), Some("/etc/ca dir/ca.pem"));
        assert_eq!(info.files.cert.as_deref(), Some("/c.pem"));
        assert_eq!(info.files.key.as_deref(), Some("/k.pem"));
        assert_eq!(info.passfile.as_deref(), Some("/p"));
        assert_eq!(info.driver.get_user(), Some("u"));
        assert_eq!(info.driver.get_dbname(), Some("d"));
    }

    #[test]
    fn url_query_options_are_taken_out() {
        let info = parse(
            "postgresql://u:p%3Fw@db:5433/app?sslmode=verify-ca&application_name=x&sslrootcert=%2Fca.pem",
        );
        assert_eq!(info.sslmode, Some(SslMode::VerifyCa));
        assert_eq!(info.files.rootcert.as_deref(), Some("/ca.pem"));
        assert_eq!(info.driver.get_application_name(), Some("x"));
        assert_eq!(info.driver.get_dbname(), Some("app"));
        assert_eq!(info.driver.get_password(), Some(&b"p?w"[..]));
        assert_eq!(info.driver.get_ports(), [5433]);
    }

    #[test]
    fn a_question_mark_in_a_url_password_is_not_the_query() {
        let info = parse("postgres://u:pa?ss@h/db?sslmode=require");
        assert_eq!(info.driver.get_password(), Some(&b"pa?ss"[..]));
        assert_eq!(info.sslmode, Some(SslMode::Require));
        let info = parse("postgres://u:pa?sslmode=verify-full@h/db");
        assert_eq!(
            info.driver.get_password(),
            Some(&b"pa?sslmode=verify-full"[..])
        );
        assert_eq!(info.sslmode, None);
    }

    #[test]
    fn quoted_passwords_keep_what_looks_like_options() {
        let info = parse(r"host=h password='x sslmode=verify-full \' sslkey=/k' user=u");
        assert_eq!(info.sslmode, None);
        assert_eq!(info.files, SslFiles::default());
        assert_eq!(
            info.driver.get_password(),
            Some(&b"x sslmode=verify-full ' sslkey=/k"[..])
        );
        let info = parse(r"password=a\ sslmode=disable host=h");
        assert_eq!(info.sslmode, None);
        assert_eq!(info.driver.get_password(), Some(&b"a sslmode=disable"[..]));
    }

    #[test]
    fn values_the_driver_knows_still_come_through_us() {
        for (text, mode) in [
            ("host=h sslmode=disable", SslMode::Disable),
            ("host=h sslmode=prefer", SslMode::Prefer),
            ("postgres://h/d?sslmode=require", SslMode::Require),
        ] {
            assert_eq!(parse(text).sslmode, Some(mode), "{text}");
        }
        assert_eq!(parse("host=h").sslmode, None);
        // Empty means not given, as in libpq.
        assert_eq!(parse("host=h sslrootcert=''").files.rootcert, None);
    }

    #[test]
    fn bad_values_name_the_option_only() {
        for (text, want) in [
            (
                "host=h sslmode=verify",
                ConnInfoError::InvalidValue("sslmode"),
            ),
            ("host=h sslmode=''", ConnInfoError::InvalidValue("sslmode")),
            (
                "postgres://h/d?sslmode=bogus",
                ConnInfoError::InvalidValue("sslmode"),
            ),
            ("host=h sslmode=allow", ConnInfoError::AllowUnsupported),
            (
                "host=h password=top secret=1",
                ConnInfoError::Driver("unknown option".into()),
            ),
            (
                "host=h password='secret",
                ConnInfoError::Driver("unterminated quoted value".into()),
            ),
            (
                "host=h password",
                ConnInfoError::Driver("expected key=value pairs or a postgres:// URL".into()),
            ),
            (
                "postgres://u:secret@h/db?secret",
                ConnInfoError::Driver("URL parameter without =".into()),
            ),
            (
                "postgres://h/db?sslrootcert=%FF",
                ConnInfoError::Driver("percent-encoding is not UTF-8".into()),
            ),
        ] {
            assert_eq!(ConnInfo::parse(text).unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn the_rest_reads_back_the_same() {
        let text = r"host=h user='it\'s me' options='-c search_path=a' application_name='a\\b' dbname='' sslmode=verify-ca";
        let info = parse(text);
        assert_eq!(info.driver.get_user(), Some("it's me"));
        assert_eq!(info.driver.get_options(), Some("-c search_path=a"));
        assert_eq!(info.driver.get_application_name(), Some(r"a\b"));
        assert_eq!(info.driver.get_dbname(), Some(""));
    }
}
