//! The scheduler's context: thread-safe, detached from any client, on
//! `consistency.db`, with a deadline instead of a client to answer.

use std::time::{Duration, Instant};

use redis_module::raw;

use super::blocking::{pause_between_slices, with_locked};
use super::keyspace::{select_db, ModuleKeyspace};
use crate::store::{Access, Expired};

/// A thread-safe context detached from any client, on one database.
pub struct Detached {
    tsc: *mut raw::RedisModuleCtx,
    deadline: Instant,
}

// The context is only used with the lock held, through `hold`.
unsafe impl Send for Detached {}

impl Detached {
    /// Fails when `db` is no database (databases shrank since it was set).
    pub fn new(db: i32, timeout: Duration) -> Result<Detached, String> {
        let tsc = unsafe { raw::RedisModule_GetThreadSafeContext.unwrap()(std::ptr::null_mut()) };
        let detached = Detached {
            tsc,
            deadline: Instant::now() + timeout,
        };
        if unsafe { with_locked(detached.tsc, |ctx| select_db(ctx, db)) } {
            Ok(detached)
        } else {
            Err(format!(
                "consistency.db {db} is not a database of this server"
            ))
        }
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        unsafe { raw::RedisModule_FreeThreadSafeContext.unwrap()(self.tsc) };
    }
}

impl Access for Detached {
    type Keyspace = ModuleKeyspace;

    fn hold<R>(&self, f: impl FnOnce(&mut ModuleKeyspace) -> R) -> R {
        unsafe { with_locked(self.tsc, |ctx| f(&mut ModuleKeyspace::new(ctx))) }
    }

    fn between_slices(&self) -> Result<(), Expired> {
        pause_between_slices(|| self.answered())
    }

    fn answered(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn may_wait_for_writes(&self) -> bool {
        true
    }
}
