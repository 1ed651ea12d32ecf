//! A blocked client and the job that answers it.
//!
//! The client is blocked with Redis's own timeout (`job-timeout-ms`), so it is
//! answered by then whatever the worker is doing: stuck on a dead TCP peer, say.
//! The worker answers through a thread-safe context made from the blocked client,
//! which also reads keys in the client's selected db. Exactly one answer reaches
//! the client on every path: a normal reply, an error, a panic caught in the job,
//! a full lane, or the timeout (after which a late reply is discarded by Redis).

use std::collections::HashMap;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use consistency_bridge::{panic_message, Lane, LaneFull};
use redis_module::{raw, Context};

use super::keyspace::ModuleKeyspace;
use super::respond;
use crate::config;
use crate::reply::Reply;
use crate::store::{Access, Expired};

/// The pause between two GIL holds: long enough for the main thread to run its
/// event loop, short enough that a 1M-key scan is not slowed much.
pub const SLICE_PAUSE: Duration = Duration::from_micros(100);

/// What a worker does between two holds: pause, so the main thread runs its
/// event loop, then stop if the job is over (`over` says so).
pub fn pause_between_slices(over: impl Fn() -> bool) -> Result<(), Expired> {
    thread::sleep(SLICE_PAUSE);
    if over() {
        Err(Expired)
    } else {
        Ok(())
    }
}

/// A client blocked on a job, with a deadline.
pub struct BlockedJob {
    client: *mut raw::RedisModuleBlockedClient,
    tsc: *mut raw::RedisModuleCtx,
    deadline: Instant,
    answered: bool,
    /// Set on the main thread when the client got its answer some other way:
    /// the timeout, CLIENT UNBLOCK (which runs the timeout callback) or a
    /// disconnect. Read with the GIL held before every write.
    answered_early: Arc<AtomicBool>,
}

/// The jobs' early-answer flags, by blocked-client handle, so the timeout and
/// disconnect callbacks (which get only the handle) can set them.
static EARLY_ANSWERS: Mutex<Option<HashMap<usize, Arc<AtomicBool>>>> = Mutex::new(None);

fn mark_answered_early(client: *mut raw::RedisModuleBlockedClient) {
    let guard = EARLY_ANSWERS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(flag) = guard.as_ref().and_then(|m| m.get(&(client as usize))) {
        flag.store(true, Ordering::SeqCst);
    }
}

extern "C" fn on_disconnect(
    _ctx: *mut raw::RedisModuleCtx,
    client: *mut raw::RedisModuleBlockedClient,
) {
    mark_answered_early(client);
}

// The raw pointers are only used under the rules of the module API: replies need
// no lock, key access happens with the GIL held.
unsafe impl Send for BlockedJob {}

extern "C" fn on_timeout(
    ctx: *mut raw::RedisModuleCtx,
    _argv: *mut *mut raw::RedisModuleString,
    _argc: c_int,
) -> c_int {
    if let Some(handle) = unsafe { raw::RedisModule_GetBlockedClientHandle } {
        mark_answered_early(unsafe { handle(ctx) });
    }
    let message = format!(
        "ERR timeout: the job did not finish within consistency.job-timeout-ms ({} ms)",
        config::job_timeout().as_millis()
    );
    respond::send(&Context::new(ctx), &Reply::Error(message));
    raw::REDISMODULE_OK as c_int
}

impl BlockedJob {
    /// Blocks the calling client until the job answers or `timeout` passes.
    pub fn block(ctx: &Context, timeout: Duration) -> BlockedJob {
        let timeout_ms = timeout.as_millis().clamp(1, i64::MAX as u128) as i64;
        let client = unsafe {
            raw::RedisModule_BlockClient.unwrap()(ctx.ctx, None, Some(on_timeout), None, timeout_ms)
        };
        let tsc = unsafe { raw::RedisModule_GetThreadSafeContext.unwrap()(client) };
        let answered_early = Arc::new(AtomicBool::new(false));
        EARLY_ANSWERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(client as usize, Arc::clone(&answered_early));
        if let Some(set_callback) = unsafe { raw::RedisModule_SetDisconnectCallback } {
            unsafe { set_callback(client, Some(on_disconnect)) };
        }
        BlockedJob {
            client,
            tsc,
            deadline: Instant::now() + timeout,
            answered: false,
            answered_early,
        }
    }

    /// Past the deadline, or the client already has its answer.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline || self.answered_early.load(Ordering::SeqCst)
    }

    /// Sends the one answer and unblocks the client.
    pub fn answer(mut self, reply: &Reply) {
        respond::send(&Context::new(self.tsc), reply);
        self.answered = true;
    }
}

impl Access for BlockedJob {
    type Keyspace = ModuleKeyspace;

    fn hold<R>(&self, f: impl FnOnce(&mut ModuleKeyspace) -> R) -> R {
        unsafe { with_locked(self.tsc, |ctx| f(&mut ModuleKeyspace::new(ctx))) }
    }

    fn between_slices(&self) -> Result<(), Expired> {
        pause_between_slices(|| self.expired())
    }

    fn answered(&self) -> bool {
        self.expired()
    }

    fn may_wait_for_writes(&self) -> bool {
        true
    }
}

impl Drop for BlockedJob {
    fn drop(&mut self) {
        if let Some(map) = EARLY_ANSWERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            map.remove(&(self.client as usize));
        }
        if !self.answered {
            respond::send(
                &Context::new(self.tsc),
                &Reply::err("internal error: the job ended without an answer"),
            );
        }
        unsafe {
            raw::RedisModule_FreeThreadSafeContext.unwrap()(self.tsc);
            raw::RedisModule_UnblockClient.unwrap()(self.client, ptr::null_mut());
        }
    }
}

/// Runs `f` with the GIL held through the thread-safe context `tsc`, unlocking
/// even if `f` panics, so Redis is never left locked.
///
/// # Safety
/// `tsc` must be a live thread-safe context (from `RedisModule_GetThreadSafeContext`).
pub unsafe fn with_locked<R>(tsc: *mut raw::RedisModuleCtx, f: impl FnOnce(&Context) -> R) -> R {
    struct Unlock(*mut raw::RedisModuleCtx);
    impl Drop for Unlock {
        fn drop(&mut self) {
            unsafe { raw::RedisModule_ThreadSafeContextUnlock.unwrap()(self.0) };
        }
    }
    unsafe { raw::RedisModule_ThreadSafeContextLock.unwrap()(tsc) };
    let _unlock = Unlock(tsc);
    f(&Context::new(tsc))
}

/// Gives the working memory of a finished job back to the system. The module
/// allocates with the system allocator, which keeps freed pages for reuse: after
/// a million-key check that would leave hundreds of MB resident in redis-server.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        unsafe { malloc_trim(0) };
    }
}

/// Blocks the client and runs `work` on `lane`; `work`'s reply is the answer. A
/// full lane answers `ERR busy` at once; a panic in `work` answers an error.
pub fn run_on_lane(
    ctx: &Context,
    lane: &Lane,
    work: impl FnOnce(&BlockedJob) -> Reply + Send + 'static,
) {
    fn call<F: FnOnce(&BlockedJob) -> Reply>(job: &BlockedJob, work: F) -> Reply {
        work(job)
    }
    let job = BlockedJob::block(ctx, config::job_timeout());
    if let Err((job, _, full)) = submit(job, lane, work, call) {
        job.answer(&Reply::err(full));
    }
}

/// Queues `run(job, payload)` on `lane`. A full lane hands the still-blocked
/// client back with its payload, so the caller may try another lane; once
/// queued, the client is answered exactly once whatever `run` does.
pub fn submit<P: Send + 'static>(
    job: BlockedJob,
    lane: &Lane,
    payload: P,
    run: fn(&BlockedJob, P) -> Reply,
) -> Result<(), (BlockedJob, P, LaneFull)> {
    // The lane drops a job it cannot take; the slot gives the client back.
    let slot = Arc::new(Mutex::new(Some((job, payload))));
    let in_job = Arc::clone(&slot);
    let submitted = lane.try_submit(Box::new(move || {
        let Some((job, payload)) = in_job.lock().unwrap().take() else {
            return;
        };
        let reply = if job.expired() {
            Reply::err("timeout: the job waited in the queue past consistency.job-timeout-ms")
        } else {
            catch_unwind(AssertUnwindSafe(|| {
                crate::redis_api::test_hooks::before_job();
                run(&job, payload)
            }))
            .unwrap_or_else(|payload| {
                let message = panic_message(payload.as_ref());
                log::warn!("consistency: a job panicked: {message}");
                Reply::err(format!("internal error: {message}"))
            })
        };
        job.answer(&reply);
        release_free_memory();
    }));
    match submitted {
        Ok(()) => Ok(()),
        Err(full) => match slot.lock().unwrap().take() {
            Some((job, payload)) => Err((job, payload, full)),
            // Unreachable: a refused job never ran.
            None => Ok(()),
        },
    }
}
