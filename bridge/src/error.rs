//! The bridge's error type and the classification of `postgres::Error`.

use std::error::Error as StdError;
use std::fmt;

use postgres::error::SqlState;

/// Everything that can go wrong between the bridge and PostgreSQL.
///
/// Each variant carries a short, human reason. Reasons never hold a password:
/// they come from server messages, I/O error kinds, or text the bridge writes.
#[derive(Debug, Clone, PartialEq)]
pub enum BridgeError {
    /// The settings are wrong: bad pg-url, unreadable password file, ...
    Config(String),
    /// PostgreSQL cannot be reached: connect failed, pool checkout timed out,
    /// or the connection broke mid-query.
    Unavailable(String),
    /// The statement ran past its statement timeout (SQLSTATE 57014).
    Timeout(String),
    /// The server rejected the SQL (syntax, missing table, ...).
    Query(String),
    /// The truth SQL has the wrong shape (too few columns, stray parameters).
    BadTruth(String),
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::Config(r) => write!(f, "postgres config: {r}"),
            BridgeError::Unavailable(r) => write!(f, "postgres unavailable: {r}"),
            BridgeError::Timeout(r) => write!(f, "postgres timeout: {r}"),
            BridgeError::Query(r) => write!(f, "truth query failed: {r}"),
            BridgeError::BadTruth(r) => write!(f, "bad truth query: {r}"),
        }
    }
}

impl StdError for BridgeError {}

impl From<postgres::Error> for BridgeError {
    /// Classifies an error seen while running statements on an open connection.
    fn from(e: postgres::Error) -> Self {
        classify(&e)
    }
}

/// Classifies an error from a statement on an established connection.
pub(crate) fn classify(e: &postgres::Error) -> BridgeError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let reason = db_reason(db);
        return if *code == SqlState::QUERY_CANCELED {
            BridgeError::Timeout(db.message().to_string())
        } else if is_connection_state(code) {
            BridgeError::Unavailable(reason)
        } else {
            BridgeError::Query(reason)
        };
    }
    if e.is_closed() {
        return BridgeError::Unavailable("connection closed".to_string());
    }
    if let Some(io) = io_source(e) {
        return BridgeError::Unavailable(io_reason(io));
    }
    // Client-side problems (parameter encoding, row decoding) are about the
    // query, not about reachability.
    BridgeError::Query(chain_text(e))
}

/// Classifies an error from establishing a connection: whatever the cause
/// (refused, timed out, authentication, unknown database), PostgreSQL is not
/// available to us.
pub(crate) fn classify_connect(e: &postgres::Error) -> BridgeError {
    if let Some(db) = e.as_db_error() {
        return BridgeError::Unavailable(db.message().to_string());
    }
    match io_source(e) {
        Some(io) => BridgeError::Unavailable(io_reason(io)),
        None => BridgeError::Unavailable(chain_text(e)),
    }
}

/// Server states that mean the session is gone or the server is going away,
/// rather than that the SQL is wrong.
fn is_connection_state(code: &SqlState) -> bool {
    code.code().starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
}

fn db_reason(db: &postgres::error::DbError) -> String {
    format!("{} (SQLSTATE {})", db.message(), db.code().code())
}

fn io_source(e: &postgres::Error) -> Option<&std::io::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

/// "Connection refused (os error 111)" becomes "connection refused".
pub(crate) fn io_reason(io: &std::io::Error) -> String {
    let text = io.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    lower_first(text)
}

/// The error's own text followed by its causes, "a: b: c".
fn chain_text(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_prefixes() {
        let cases = [
            (BridgeError::Config("x".into()), "postgres config: x"),
            (
                BridgeError::Unavailable("x".into()),
                "postgres unavailable: x",
            ),
            (BridgeError::Timeout("x".into()), "postgres timeout: x"),
            (BridgeError::Query("x".into()), "truth query failed: x"),
            (BridgeError::BadTruth("x".into()), "bad truth query: x"),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }

    #[test]
    fn io_reason_is_short() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(io_reason(&io), "connection refused");
        let io = std::io::Error::from_raw_os_error(111);
        assert!(!io_reason(&io).contains("os error"), "{}", io_reason(&io));
    }
}
