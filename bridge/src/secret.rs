//! Keeping the PostgreSQL password out of sight: reading it from a file and
//! redacting it from connection strings before they are shown or logged.

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

/// Returns `url` with every password replaced by `***`, for display.
///
/// Handles libpq key=value strings (`password=x`, `password = 'x y'`) and
/// URLs (`postgres://user:secret@host/db`, `?password=secret`).
pub fn redact_url(url: &str) -> String {
    let trimmed = url.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        redact_uri(url)
    } else {
        redact_key_value(url)
    }
}

fn redact_uri(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let (head, rest) = url.split_at(scheme_end);
    // The user info ends at the last '@' before the query string. A password
    // may hold an unescaped '/', so the path is not a safe boundary; taking
    // the last '@' errs towards hiding too much rather than too little.
    let query_at = rest.find('?').unwrap_or(rest.len());
    let (before_query, query) = rest.split_at(query_at);
    let mut out = String::from(head);
    match before_query.rfind('@') {
        Some(at) => {
            let userinfo = &before_query[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&before_query[at..]);
        }
        None => out.push_str(before_query),
    }
    out.push_str(&redact_query(query));
    out
}

/// Masks `password=...` parameters in a URL query string ("?a=b&password=c").
fn redact_query(query: &str) -> String {
    let Some(params) = query.strip_prefix('?') else {
        return query.to_string();
    };
    let (params, fragment) = match params.find('#') {
        Some(i) => params.split_at(i),
        None => (params, ""),
    };
    let masked: Vec<String> = params
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k == "password" => format!("{k}={MASK}"),
            _ => p.to_string(),
        })
        .collect();
    format!("?{}{fragment}", masked.join("&"))
}

/// Walks a libpq `key = value` string, copying it verbatim except for the
/// values of `password` keys.
fn redact_key_value(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        // Copy whitespace.
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        out.push_str(&s[start..i]);
        // Key.
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[key_start..i];
        out.push_str(key);
        // Spaces, '=', spaces.
        let sep_start = i;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            // Not key=value: copy what we skipped and go on with the next word.
            out.push_str(&s[sep_start..i]);
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        out.push_str(&s[sep_start..i]);
        // Value: quoted with backslash escapes, or up to the next space.
        let value_start = i;
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = i.min(bytes.len());
        }
        if key == "password" {
            out.push_str(MASK);
        } else {
            out.push_str(&s[value_start..i]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_forms() {
        assert_eq!(
            redact_url("host=h password=secret user=u"),
            "host=h password=*** user=u"
        );
        assert_eq!(
            redact_url("host=h password = 'x y' dbname=d"),
            "host=h password = *** dbname=d"
        );
        assert_eq!(
            redact_url(r"password='it\'s secret' host=h"),
            "password=*** host=h"
        );
        assert_eq!(redact_url("password=a\\ b"), "password=***");
        assert_eq!(redact_url("host=h passwd=x"), "host=h passwd=x");
        assert_eq!(redact_url("host=h password="), "host=h password=***");
        assert_eq!(redact_url("host=h user=u"), "host=h user=u");
    }

    #[test]
    fn uri_forms() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgresql://u:p@ss/w@h:5432/db?sslmode=disable"),
            "postgresql://u:***@h:5432/db?sslmode=disable"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=s3&x=1#f"),
            "postgres://h/db?user=u&password=***&x=1#f"
        );
    }

    #[test]
    fn multibyte_text_survives() {
        assert_eq!(
            redact_url("application_name=é password=ü host=h"),
            "application_name=é password=*** host=h"
        );
    }
}
