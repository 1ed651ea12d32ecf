//! All logging goes through [`write_line`], the one caller of `RedisModule_Log`.
//!
//! `RedisModule_Log` takes a printf format. Text from outside (a PURGE pattern,
//! a key name, a rules-file path, a rule's SQL, a PostgreSQL error) handed to it
//! as the format turns `%n` or `%s` into a crash of redis-server. So Redis gets
//! the constant format `"%s"` and the text as its argument, always. The `log`
//! crate's macros reach it through [`RedisLogger`]; redis-module's own logging
//! helpers (which pass the text as the format) are refused by clippy
//! (`disallowed-methods` in clippy.toml), and a test below keeps every other file
//! from naming `RedisModule_Log`.

use std::ffi::CString;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use redis_module::raw;

use crate::text::one_line;

/// A detached context of the module, for the `<consistency>` tag Redis puts
/// before each line; null (no tag) until [`setup`] runs.
static MODULE_CTX: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(ptr::null_mut());

/// Redis's log levels, as `RedisModule_Log` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Verbose,
    Notice,
    Warning,
}

impl Level {
    fn name(self) -> &'static std::ffi::CStr {
        match self {
            Level::Debug => c"debug",
            Level::Verbose => c"verbose",
            Level::Notice => c"notice",
            Level::Warning => c"warning",
        }
    }
}

impl From<log::Level> for Level {
    fn from(level: log::Level) -> Level {
        match level {
            log::Level::Error | log::Level::Warn => Level::Warning,
            log::Level::Info => Level::Notice,
            log::Level::Debug => Level::Verbose,
            log::Level::Trace => Level::Debug,
        }
    }
}

/// Writes one line to the Redis log: the format is the constant `"%s"` and
/// `text` (made one safe line by [`one_line`]) its argument. Safe from any thread.
pub fn write_line(level: Level, text: &str) {
    let Some(log) = (unsafe { raw::RedisModule_Log }) else {
        // Outside Redis (unit tests): there is no log to write to.
        return;
    };
    let line = CString::new(one_line(text).as_bytes()).expect("one_line leaves no NUL");
    unsafe {
        log(
            MODULE_CTX.load(Ordering::Relaxed),
            level.name().as_ptr(),
            c"%s".as_ptr(),
            line.as_ptr(),
        )
    };
}

/// Longest text, in characters, a log line shows of one key, id or value.
pub const CLIP_CHARS: usize = 200;

/// `text` cut to [`CLIP_CHARS`] for a log line.
pub fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    crate::text::clip(text, CLIP_CHARS)
}

/// Routes the `log` crate's macros to [`write_line`].
pub struct RedisLogger;

static LOGGER: RedisLogger = RedisLogger;

impl log::Log for RedisLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        write_line(record.level().into(), &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Installs [`RedisLogger`] for the `log` macros, tagging lines with the
/// module's name. Redis filters by its own `loglevel`. `load_ctx` is the context
/// `OnLoad` got; it dies after loading, so lines use a detached context made
/// from it, which lives as long as the module.
pub fn setup(load_ctx: &redis_module::Context) {
    if let Some(detach) = unsafe { raw::RedisModule_GetDetachedThreadSafeContext } {
        MODULE_CTX.store(unsafe { detach(load_ctx.ctx) }, Ordering::Relaxed);
    }
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_clipped() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(300);
        let clipped = clip(&long);
        assert!(clipped.starts_with(&"é".repeat(CLIP_CHARS)));
        assert!(clipped.ends_with("...(600 bytes)"), "{clipped}");
    }

    #[test]
    fn levels_map_to_redis_names() {
        assert_eq!(Level::from(log::Level::Error), Level::Warning);
        assert_eq!(Level::from(log::Level::Info), Level::Notice);
        assert_eq!(Level::from(log::Level::Debug).name(), c"verbose");
    }

    /// Only this file may call `RedisModule_Log`: any other call would be one
    /// more place where text could become a printf format.
    #[test]
    fn no_other_file_names_redis_module_log() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("logging.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    if text.contains(concat!("RedisModule_", "Log"))
                        || text.contains(concat!("redis_", "log("))
                    {
                        offenders.push(path.display().to_string());
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "log through logging.rs: {offenders:?}"
        );
    }
}
