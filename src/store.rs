//! The seam between the run layer (check, fix, purge, schedule) and Redis.
//!
//! [`Keyspace`] is everything a run asks of Redis inside one hold of the Redis
//! lock: scan a slice, read keys, unlink, set keeping the TTL, append to the
//! audit stream, publish, "am I a primary", "are writes paused", "which slots are
//! mine". [`Access`] is how a run gets holds: on a worker, through a blocked
//! client or a detached context, with pauses between holds; on the main thread
//! (scripts, MULTI), at once. One adapter implements both over the module API
//! (`redis_api/`), and [`memory`] implements them in memory for unit tests.
//!
//! "Compare and write within one hold" is a property of this API, not of the
//! caller's care: [`Access::write_hold`] checks, in the hold that writes, that
//! the client still waits, that this node is a primary and that writes are not
//! paused.

pub mod memory;

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::SlotSet;
use crate::compare::CachedKey;
use crate::rules::RuleKind;

/// Redis as one hold of its lock sees it.
pub trait Keyspace {
    /// Where a scan of the whole keyspace stands.
    type Cursor;

    /// A scan from the start.
    fn new_cursor(&mut self) -> Self::Cursor;
    /// Visits at least `budget` key names (or the rest of the keyspace); false
    /// once the scan has visited everything.
    fn scan(
        &mut self,
        cursor: &mut Self::Cursor,
        budget: usize,
        visit: &mut dyn FnMut(&[u8]),
    ) -> bool;
    /// Reads keys as a rule of `kind` sees them (values, TTL flag), without
    /// touching their LRU/LFU. `window_start_ms` cuts window_sum ZSETs.
    fn read(&mut self, names: &[&[u8]], kind: &RuleKind, window_start_ms: f64) -> Vec<CachedKey>;
    /// UNLINKs `keys` (replicated); how many existed.
    fn unlink(&mut self, keys: &[&[u8]]) -> Result<i64, String>;
    /// SET keeping the TTL (replicated).
    fn set_keep_ttl(&mut self, key: &[u8], value: &[u8]) -> Result<(), String>;
    /// HSET one field (replicated; a hash keeps its TTL).
    fn set_hash_field(&mut self, key: &[u8], field: &[u8], value: &[u8]) -> Result<(), String>;
    /// One entry in the audit stream, when one is configured.
    fn audit(&mut self, fields: &[(&str, &[u8])]);
    /// PUBLISH on the notify channel, when one is configured (not replicated).
    fn publish(&mut self, message: &str);
    /// Whether this node may write (a primary, not a replica).
    fn is_primary(&mut self) -> bool;
    /// Whether writes are paused (CLIENT PAUSE WRITE, FAILOVER).
    fn writes_paused(&mut self) -> bool;
    /// The slots this node serves now (all of them outside a cluster).
    fn slots(&mut self) -> Arc<SlotSet>;
    /// Keys in the selected database.
    fn db_size(&mut self) -> u64;
    /// The selected database's number.
    fn db(&mut self) -> i64;
}

/// The job ran out of time, or its client already has its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

/// Why [`Access::write_hold`] wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStop {
    /// The client has its answer (deadline, CLIENT UNBLOCK, disconnect).
    Answered,
    /// This node is a replica now (a failover).
    NotPrimary,
    /// Writes stayed paused until the job's time ran out.
    StillPaused,
}

/// How long a job waiting for paused writes sleeps before it looks again.
pub const PAUSED_WRITES_POLL: Duration = Duration::from_millis(20);

/// How a run gets holds of the Redis lock.
pub trait Access {
    type Keyspace: Keyspace;

    /// Runs `f` with the lock held, in the caller's selected database.
    fn hold<R>(&self, f: impl FnOnce(&mut Self::Keyspace) -> R) -> R;
    /// Called between holds: pauses so the main thread is never starved, and
    /// answers `Err` once the job is over for its client.
    fn between_slices(&self) -> Result<(), Expired>;
    /// Whether the job is over for its client: answered by the deadline, by
    /// CLIENT UNBLOCK or gone with a disconnect. No write may follow that.
    fn answered(&self) -> bool {
        false
    }
    /// Whether this caller may wait, lock released, while writes are paused: a
    /// worker may; the main thread (scripts, MULTI) must not, and never meets a
    /// pause anyway (Redis holds paused clients' commands back).
    fn may_wait_for_writes(&self) -> bool {
        false
    }
    /// Sleeps between two looks at paused writes.
    fn wait_for_writes(&self) {
        std::thread::sleep(PAUSED_WRITES_POLL);
    }

    /// Runs `f`, which writes, in one hold, and only while writing is safe: the
    /// client still waits for this job, this node is a primary, and writes are
    /// not paused (a module write from a thread during CLIENT PAUSE WRITE or a
    /// FAILOVER trips an assertion in Redis when the lock is released). While
    /// paused it waits, lock released, until the pause or the job's time ends.
    fn write_hold<R>(&self, f: impl FnOnce(&mut Self::Keyspace) -> R) -> Result<R, WriteStop> {
        let mut f = Some(f);
        loop {
            let done = self.hold(|ks| {
                if self.answered() {
                    return Err(WriteStop::Answered);
                }
                if self.may_wait_for_writes() && ks.writes_paused() {
                    return Ok(None);
                }
                if !ks.is_primary() {
                    return Err(WriteStop::NotPrimary);
                }
                Ok(f.take().map(|f| f(ks)))
            })?;
            if let Some(result) = done {
                return Ok(result);
            }
            self.wait_for_writes();
            if self.answered() {
                return Err(WriteStop::StillPaused);
            }
        }
    }
}
