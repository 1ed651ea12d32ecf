//! Test-only hooks, compiled in only with the `test-hooks` cargo feature: they let
//! integration tests force a panic in a job, slow jobs down, pause FIX ALL
//! between its check and its repairs, or age recorded runs (for age alerts).
//! Without the feature every hook is a no-op.

#[cfg(feature = "test-hooks")]
mod enabled {
    use std::os::raw::c_int;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use redis_module::{raw, Context, RedisError, RedisResult, RedisString, RedisValue};

    static PANIC_NEXT_JOB: AtomicBool = AtomicBool::new(false);
    static JOB_SLEEP_MS: AtomicU64 = AtomicU64::new(0);
    static PAUSE_BEFORE_REPAIR_MS: AtomicU64 = AtomicU64::new(0);

    pub fn before_job() {
        let sleep = JOB_SLEEP_MS.load(Ordering::Relaxed);
        if sleep > 0 {
            std::thread::sleep(Duration::from_millis(sleep));
        }
        if PANIC_NEXT_JOB.swap(false, Ordering::Relaxed) {
            panic!("forced by CONSISTENCY.DEBUG PANIC-NEXT-JOB");
        }
    }

    pub fn before_repair() {
        let pause = PAUSE_BEFORE_REPAIR_MS.load(Ordering::Relaxed);
        if pause > 0 {
            std::thread::sleep(Duration::from_millis(pause));
        }
    }

    /// CONSISTENCY.DEBUG PANIC-NEXT-JOB | JOB-SLEEP ms | PAUSE-BEFORE-REPAIR ms | AGE-RUNS sec
    /// | WATCH-LOOKS second-ms last-ms
    fn debug(_ctx: &Context, args: Vec<RedisString>) -> RedisResult {
        let words: Vec<String> = args.iter().skip(1).map(|a| a.to_string_lossy()).collect();
        let ms = |i: usize| -> Result<u64, RedisError> {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .ok_or(RedisError::Str("ERR DEBUG needs a number of milliseconds"))
        };
        match words.first().map(|w| w.to_ascii_uppercase()).as_deref() {
            Some("PANIC-NEXT-JOB") => PANIC_NEXT_JOB.store(true, Ordering::Relaxed),
            Some("JOB-SLEEP") => JOB_SLEEP_MS.store(ms(1)?, Ordering::Relaxed),
            Some("PAUSE-BEFORE-REPAIR") => PAUSE_BEFORE_REPAIR_MS.store(ms(1)?, Ordering::Relaxed),
            // Seconds here: every recorded run becomes that much older.
            Some("AGE-RUNS") => crate::stats::age_runs(ms(1)?),
            // The 10 s and 60 s looks of watched rules, shortened.
            Some("WATCH-LOOKS") => crate::watch::set_later_looks(
                Duration::from_millis(ms(1)?),
                Duration::from_millis(ms(2)?),
            ),
            _ => return Err(RedisError::Str("ERR unknown DEBUG subcommand")),
        }
        Ok(RedisValue::SimpleStringStatic("OK"))
    }

    extern "C" fn debug_command(
        ctx: *mut raw::RedisModuleCtx,
        argv: *mut *mut raw::RedisModuleString,
        argc: c_int,
    ) -> c_int {
        let context = Context::new(ctx);
        let args = redis_module::decode_args(ctx, argv, argc);
        context.reply(debug(&context, args)) as c_int
    }

    pub fn register(ctx: &Context) {
        unsafe {
            raw::RedisModule_CreateCommand.unwrap()(
                ctx.ctx,
                c"consistency.debug".as_ptr(),
                Some(debug_command),
                c"".as_ptr(),
                0,
                0,
                0,
            );
        }
    }
}

#[cfg(feature = "test-hooks")]
pub use enabled::{before_job, before_repair, register};

#[cfg(not(feature = "test-hooks"))]
pub fn before_job() {}

#[cfg(not(feature = "test-hooks"))]
pub fn before_repair() {}

#[cfg(not(feature = "test-hooks"))]
pub fn register(_ctx: &redis_module::Context) {}
