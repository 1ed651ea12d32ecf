//! Errors a command answers with, turned into `ERR ...` replies at the edge.

use std::fmt;

use consistency_bridge::BridgeError;

use crate::args::ArgError;
use crate::drift_check::{CheckError, DuplicateId};
use crate::fix::{FixError, FixIdsError};

/// Why a command was refused before any work was queued, or failed after.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandError {
    Args(ArgError),
    UnknownRule {
        name: String,
        loaded: String,
    },
    NoRules(String),
    Postgres(BridgeError),
    TooLargeForScript {
        what: String,
        limit: usize,
        command: &'static str,
    },
    Reload(String),
    Timeout(String),
    /// A rule with `fix: none` was named in FIX.
    RuleNotFixable(String),
    CannotRewrite {
        rule: String,
        kind: &'static str,
    },
    NothingToFix,
    Repair(String),
    /// A rule's truth returned an id twice.
    DuplicateId(DuplicateId),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Args(e) => write!(f, "{e}"),
            CommandError::UnknownRule { name, loaded } => {
                write!(f, "unknown rule '{name}' (loaded: {loaded})")
            }
            CommandError::NoRules(why) => write!(f, "no rules loaded: {why}"),
            CommandError::Postgres(e) => write!(f, "{e}"),
            CommandError::TooLargeForScript { what, limit, command } => write!(
                f,
                "too large for a script or MULTI: {what} over sync-max-keys {limit}; call {command} directly"
            ),
            CommandError::Reload(why) => write!(f, "reload failed: {why}"),
            CommandError::Timeout(why) => write!(f, "timeout: {why}"),
            CommandError::RuleNotFixable(rule) => {
                write!(f, "rule '{rule}' has fix none: FIX leaves its keys alone")
            }
            CommandError::CannotRewrite { rule, kind } => write!(
                f,
                "REWRITE is not possible for rule '{rule}' (kind {kind}); select rewritable rules with RULE"
            ),
            CommandError::NothingToFix => write!(f, "no rule can be fixed: every loaded rule has fix none"),
            CommandError::Repair(why) => write!(f, "{why}"),
            CommandError::DuplicateId(e) => write!(f, "{e}"),
        }
    }
}

impl From<ArgError> for CommandError {
    fn from(e: ArgError) -> Self {
        CommandError::Args(e)
    }
}

impl From<BridgeError> for CommandError {
    fn from(e: BridgeError) -> Self {
        CommandError::Postgres(e)
    }
}

impl From<CheckError> for CommandError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::Truth(b) => CommandError::Postgres(b),
            CheckError::Expired => {
                CommandError::Timeout("the check ran past consistency.job-timeout-ms".into())
            }
            CheckError::DuplicateId(e) => CommandError::DuplicateId(e),
        }
    }
}

/// A repair's error keeps its own wording on every path.
impl From<FixError> for CommandError {
    fn from(e: FixError) -> Self {
        CommandError::Repair(e.to_string())
    }
}

impl From<FixIdsError> for CommandError {
    fn from(e: FixIdsError) -> Self {
        CommandError::Repair(e.to_string())
    }
}
