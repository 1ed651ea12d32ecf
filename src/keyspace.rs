//! Reading the cache in process: scanning key names and reading values, always in
//! short slices with the GIL held by whoever calls (a worker through its blocked
//! client, or the main thread for the synchronous path in scripts).
//!
//! Values are read without side effects on the keyspace: keys are opened with
//! NOTOUCH, and strings are read with GET (StringDMA would re-encode embstr and int
//! strings) with the key's LRU/LFU put back afterwards.

use std::ffi::{c_void, CString};
use std::os::raw::{c_char, c_int};
use std::ptr;

use redis_module::{raw, Context};

use crate::compare::{CachedKey, CachedValue, WindowSummer};
use crate::rules::RuleKind;

/// Access to the keyspace in slices. Between two slices Redis serves other clients.
pub trait GilAccess {
    /// Runs `f` with the GIL held, on a context whose selected db is the caller's.
    fn with_gil<R>(&self, f: impl FnOnce(&Context) -> R) -> R;
    /// Called between slices: pauses so the main thread is never starved, and
    /// answers `Err` once the job's deadline has passed.
    fn between_slices(&self) -> Result<(), Expired>;
    /// Whether the job is over for its client: answered by the deadline, by
    /// CLIENT UNBLOCK or gone with a disconnect. No write may follow that.
    fn answered(&self) -> bool {
        false
    }
    /// Whether this caller may wait, GIL released, while writes are paused: a
    /// worker may; the main thread (scripts, MULTI) must not, and never meets a
    /// pause anyway (Redis holds paused clients' commands back).
    fn may_wait_for_writes(&self) -> bool {
        false
    }

    /// Runs `f`, which writes, in one GIL hold, and only while writing is safe:
    /// the client still waits for this job, this node is a primary, and writes
    /// are not paused (CLIENT PAUSE WRITE, FAILOVER, CLUSTER FAILOVER: a module
    /// write then trips an assertion in Redis when the GIL is released). While
    /// paused it waits, GIL released, until the pause ends or the job's time does.
    /// Checked and written in one hold, so nothing can change in between.
    fn write_hold<R>(&self, f: impl FnOnce(&Context) -> R) -> Result<R, WriteStop> {
        let mut f = Some(f);
        loop {
            let done = self.with_gil(|ctx| {
                if self.answered() {
                    return Err(WriteStop::Answered);
                }
                if self.may_wait_for_writes() && crate::writes::writes_paused() {
                    return Ok(None);
                }
                if !crate::writes::is_primary(ctx) {
                    return Err(WriteStop::NotPrimary);
                }
                Ok(f.take().map(|f| f(ctx)))
            })?;
            if let Some(result) = done {
                return Ok(result);
            }
            std::thread::sleep(PAUSED_WRITES_POLL);
            if self.answered() {
                return Err(WriteStop::StillPaused);
            }
        }
    }
}

/// How often a job waiting for paused writes looks again.
const PAUSED_WRITES_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Why [`GilAccess::write_hold`] wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStop {
    /// The client has its answer (deadline, CLIENT UNBLOCK, disconnect).
    Answered,
    /// This node is a replica now (a failover).
    NotPrimary,
    /// Writes stayed paused until the job's time ran out.
    StillPaused,
}

/// The job ran out of time; its client has been (or will be) answered with a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

/// The main thread, where the GIL is already held (Lua and MULTI): no pauses.
pub struct MainThread<'c>(pub &'c Context);

impl GilAccess for MainThread<'_> {
    fn with_gil<R>(&self, f: impl FnOnce(&Context) -> R) -> R {
        f(self.0)
    }
    fn between_slices(&self) -> Result<(), Expired> {
        Ok(())
    }
}

/// Whether database `db` exists (below `databases`): selecting it succeeds.
/// Called on the main thread (config set, at load or CONFIG SET).
pub fn database_exists(db: i64) -> bool {
    let Ok(db) = c_int::try_from(db) else {
        return false;
    };
    unsafe {
        let ctx = raw::RedisModule_GetThreadSafeContext.unwrap()(ptr::null_mut());
        let selected = raw::RedisModule_SelectDb.unwrap()(ctx, db);
        raw::RedisModule_FreeThreadSafeContext.unwrap()(ctx);
        selected == raw::REDISMODULE_OK as c_int
    }
}

/// Selects database `db` on `ctx`; false when there is no such database.
pub fn select_db(ctx: &Context, db: i32) -> bool {
    unsafe { raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db) == raw::REDISMODULE_OK as c_int }
}

/// An in-process SCAN over the whole keyspace of the selected db.
pub struct KeyScan {
    cursor: *mut raw::RedisModuleScanCursor,
    done: bool,
}

impl Default for KeyScan {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyScan {
    pub fn new() -> KeyScan {
        let cursor = unsafe { raw::RedisModule_ScanCursorCreate.unwrap()() };
        KeyScan {
            cursor,
            done: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Visits at least `budget` keys (or the rest of the keyspace) and passes each
    /// name to `visit`. The caller holds the GIL.
    pub fn next_slice(&mut self, ctx: &Context, budget: usize, visit: &mut dyn FnMut(&[u8])) {
        struct State<'v> {
            visit: &'v mut dyn FnMut(&[u8]),
            visited: usize,
        }
        extern "C" fn on_key(
            _ctx: *mut raw::RedisModuleCtx,
            name: *mut raw::RedisModuleString,
            _key: *mut raw::RedisModuleKey,
            privdata: *mut c_void,
        ) {
            let state = unsafe { &mut *(privdata as *mut State<'_>) };
            state.visited += 1;
            (state.visit)(string_bytes(name));
        }
        let mut state = State { visit, visited: 0 };
        while !self.done && state.visited < budget {
            let more = unsafe {
                raw::RedisModule_Scan.unwrap()(
                    ctx.ctx,
                    self.cursor,
                    Some(on_key),
                    &mut state as *mut State<'_> as *mut c_void,
                )
            };
            self.done = more == 0;
        }
    }
}

impl Drop for KeyScan {
    fn drop(&mut self) {
        unsafe { raw::RedisModule_ScanCursorDestroy.unwrap()(self.cursor) };
    }
}

fn string_bytes<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    let mut len = 0;
    let ptr = unsafe { raw::RedisModule_StringPtrLen.unwrap()(s, &mut len) };
    unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }
}

/// A RedisModuleString owned for the length of one read.
struct OwnedName {
    ctx: *mut raw::RedisModuleCtx,
    inner: *mut raw::RedisModuleString,
}

impl OwnedName {
    fn new(ctx: &Context, bytes: &[u8]) -> OwnedName {
        let inner = unsafe {
            raw::RedisModule_CreateString.unwrap()(
                ctx.ctx,
                bytes.as_ptr().cast::<c_char>(),
                bytes.len(),
            )
        };
        OwnedName {
            ctx: ctx.ctx,
            inner,
        }
    }
}

impl Drop for OwnedName {
    fn drop(&mut self) {
        unsafe { raw::RedisModule_FreeString.unwrap()(self.ctx, self.inner) };
    }
}

/// An open key, closed on drop.
struct OpenKey(*mut raw::RedisModuleKey);

impl Drop for OpenKey {
    fn drop(&mut self) {
        if !self.0.is_null() {
            unsafe { raw::RedisModule_CloseKey.unwrap()(self.0) };
        }
    }
}

/// The LRU idle time or LFU counter of a key, to put back after a read that touched it.
enum Recency {
    Lru(i64),
    Lfu(i64),
    Unknown,
}

impl Recency {
    fn save(key: *mut raw::RedisModuleKey) -> Recency {
        // Under an LFU policy GetLRU succeeds with -1 (and GetLFU likewise under
        // LRU): a negative value means the key keeps the other kind of recency.
        let mut v = 0;
        if unsafe { raw::RedisModule_GetLRU.unwrap()(key, &mut v) } == raw::REDISMODULE_OK as c_int
            && v >= 0
        {
            return Recency::Lru(v);
        }
        if unsafe { raw::RedisModule_GetLFU.unwrap()(key, &mut v) } == raw::REDISMODULE_OK as c_int
            && v >= 0
        {
            return Recency::Lfu(v);
        }
        Recency::Unknown
    }

    fn restore(&self, key: *mut raw::RedisModuleKey) {
        unsafe {
            match *self {
                Recency::Lru(idle) => {
                    raw::RedisModule_SetLRU.unwrap()(key, idle);
                }
                Recency::Lfu(freq) => {
                    raw::RedisModule_SetLFU.unwrap()(key, freq);
                }
                Recency::Unknown => {}
            }
        }
    }
}

fn type_name(t: isize) -> &'static str {
    match t {
        raw::REDISMODULE_KEYTYPE_STRING => "string",
        raw::REDISMODULE_KEYTYPE_LIST => "list",
        raw::REDISMODULE_KEYTYPE_HASH => "hash",
        raw::REDISMODULE_KEYTYPE_SET => "set",
        raw::REDISMODULE_KEYTYPE_ZSET => "zset",
        raw::REDISMODULE_KEYTYPE_STREAM => "stream",
        _ => "module",
    }
}

/// Reads many keys of one rule kind in one GIL hold. Number rules read their
/// strings with one MGET for the whole batch: a call per key would cost more than
/// everything else a check does.
pub fn read_many(
    ctx: &Context,
    names: &[&[u8]],
    kind: &RuleKind,
    window_start_ms: f64,
) -> Vec<CachedKey> {
    if *kind != RuleKind::Number {
        return names
            .iter()
            .map(|n| read_key(ctx, n, kind, window_start_ms))
            .collect();
    }
    // First pass: existence, type, TTL and recency, without reading values.
    let mut out = Vec::with_capacity(names.len());
    let mut strings: Vec<(usize, OwnedName, Recency)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let keyname = OwnedName::new(ctx, name);
        let probe = probe_key(ctx, &keyname);
        match probe {
            Probe::Absent => out.push(CachedKey::ABSENT),
            Probe::Found {
                key,
                key_type,
                has_ttl,
            } if key_type == raw::REDISMODULE_KEYTYPE_STRING => {
                strings.push((i, keyname, Recency::save(key.0)));
                out.push(CachedKey {
                    value: CachedValue::Absent,
                    has_ttl,
                });
            }
            Probe::Found {
                key_type, has_ttl, ..
            } => out.push(CachedKey {
                value: CachedValue::WrongType(type_name(key_type)),
                has_ttl,
            }),
        }
    }
    if strings.is_empty() {
        return out;
    }
    // One MGET for every string, then the recency each key had before it. In a
    // cluster an MGET may not cross slots: one per slot there.
    let slot_of = |name: &OwnedName| crate::cluster::key_slot(string_bytes(name.inner));
    let cluster = crate::cluster_view::in_cluster(ctx);
    if cluster {
        strings.sort_by_key(|(_, name, _)| slot_of(name));
    }
    let mut values = Vec::with_capacity(strings.len());
    let mut rest = &strings[..];
    while let Some((_, first, _)) = rest.first() {
        let group = if cluster {
            let slot = slot_of(first);
            rest.iter()
                .take_while(|(_, n, _)| slot_of(n) == slot)
                .count()
        } else {
            rest.len()
        };
        values.extend(mget(ctx, &rest[..group]));
        rest = &rest[group..];
    }
    for ((i, name, recency), value) in strings.iter().zip(values) {
        if let Probe::Found { key, .. } = probe_key(ctx, name) {
            recency.restore(key.0);
        }
        out[*i].value = value.map_or(CachedValue::Absent, CachedValue::Text);
    }
    out
}

/// MGET of the given keys: their string values, None where there is none.
fn mget(ctx: &Context, strings: &[(usize, OwnedName, Recency)]) -> Vec<Option<Vec<u8>>> {
    let mut argv: Vec<*mut raw::RedisModuleString> =
        strings.iter().map(|(_, n, _)| n.inner).collect();
    unsafe {
        let reply = raw::RedisModule_Call.unwrap()(
            ctx.ctx,
            c"MGET".as_ptr(),
            c"v".as_ptr(),
            argv.as_mut_ptr(),
            argv.len(),
        );
        let values = call_reply_strings(reply, argv.len());
        if !reply.is_null() {
            raw::RedisModule_FreeCallReply.unwrap()(reply);
        }
        values
    }
}

/// The string elements of an array reply (None for nil or any other type).
unsafe fn call_reply_strings(
    reply: *mut raw::RedisModuleCallReply,
    expected: usize,
) -> Vec<Option<Vec<u8>>> {
    let mut values = vec![None; expected];
    if reply.is_null()
        || raw::RedisModule_CallReplyType.unwrap()(reply) != raw::REDISMODULE_REPLY_ARRAY as c_int
    {
        return values;
    }
    let len = raw::RedisModule_CallReplyLength.unwrap()(reply).min(expected);
    for (i, slot) in values.iter_mut().enumerate().take(len) {
        let element = raw::RedisModule_CallReplyArrayElement.unwrap()(reply, i);
        if !element.is_null()
            && raw::RedisModule_CallReplyType.unwrap()(element)
                == raw::REDISMODULE_REPLY_STRING as c_int
        {
            let mut n = 0;
            let p = raw::RedisModule_CallReplyStringPtr.unwrap()(element, &mut n);
            *slot = Some(std::slice::from_raw_parts(p.cast::<u8>(), n).to_vec());
        }
    }
    values
}

/// A key looked up without reading its value.
enum Probe {
    Absent,
    Found {
        key: OpenKey,
        key_type: isize,
        has_ttl: bool,
    },
}

fn probe_key(ctx: &Context, keyname: &OwnedName) -> Probe {
    let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH) as c_int;
    let key = OpenKey(unsafe { raw::RedisModule_OpenKey.unwrap()(ctx.ctx, keyname.inner, mode) });
    if key.0.is_null() {
        return Probe::Absent;
    }
    let key_type = unsafe { raw::RedisModule_KeyType.unwrap()(key.0) } as isize;
    if key_type == raw::REDISMODULE_KEYTYPE_EMPTY {
        return Probe::Absent;
    }
    let expire = unsafe { raw::RedisModule_GetExpire.unwrap()(key.0) };
    if expire == 0 {
        // Expires this very millisecond: as good as gone.
        return Probe::Absent;
    }
    Probe::Found {
        key,
        key_type,
        has_ttl: expire > 0,
    }
}

/// Reads the key `name` as a rule of `kind` sees it. `window_start_ms` cuts
/// window_sum ZSETs (scores are epoch ms). The caller holds the GIL.
pub fn read_key(ctx: &Context, name: &[u8], kind: &RuleKind, window_start_ms: f64) -> CachedKey {
    let keyname = OwnedName::new(ctx, name);
    let Probe::Found {
        key,
        key_type,
        has_ttl,
    } = probe_key(ctx, &keyname)
    else {
        return CachedKey::ABSENT;
    };
    let value = match kind {
        RuleKind::Presence => CachedValue::Present,
        RuleKind::Number if key_type == raw::REDISMODULE_KEYTYPE_STRING => {
            read_string(ctx, &key, &keyname)
        }
        RuleKind::HashField { field } if key_type == raw::REDISMODULE_KEYTYPE_HASH => {
            read_hash_field(ctx, &key, field)
        }
        RuleKind::WindowSum { .. } if key_type == raw::REDISMODULE_KEYTYPE_ZSET => {
            sum_window(ctx, &key, window_start_ms)
        }
        _ => CachedValue::WrongType(type_name(key_type)),
    };
    CachedKey { value, has_ttl }
}

fn read_string(ctx: &Context, key: &OpenKey, name: &OwnedName) -> CachedValue {
    let recency = Recency::save(key.0);
    let value = unsafe {
        let reply =
            raw::RedisModule_Call.unwrap()(ctx.ctx, c"GET".as_ptr(), c"s".as_ptr(), name.inner);
        if reply.is_null() {
            return CachedValue::Absent;
        }
        let value = if raw::RedisModule_CallReplyType.unwrap()(reply)
            == raw::REDISMODULE_REPLY_STRING as c_int
        {
            let mut len = 0;
            let p = raw::RedisModule_CallReplyStringPtr.unwrap()(reply, &mut len);
            CachedValue::Text(std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec())
        } else {
            CachedValue::Absent
        };
        raw::RedisModule_FreeCallReply.unwrap()(reply);
        value
    };
    recency.restore(key.0);
    value
}

fn read_hash_field(ctx: &Context, key: &OpenKey, field: &str) -> CachedValue {
    let Ok(field) = CString::new(field) else {
        return CachedValue::NoField;
    };
    let mut out: *mut raw::RedisModuleString = ptr::null_mut();
    unsafe {
        raw::RedisModule_HashGet.unwrap()(
            key.0,
            raw::REDISMODULE_HASH_CFIELDS as c_int,
            field.as_ptr(),
            &mut out as *mut *mut raw::RedisModuleString,
            ptr::null_mut::<c_void>(),
        );
    }
    if out.is_null() {
        return CachedValue::NoField;
    }
    let value = CachedValue::Text(string_bytes(out).to_vec());
    unsafe { raw::RedisModule_FreeString.unwrap()(ctx.ctx, out) };
    value
}

fn sum_window(ctx: &Context, key: &OpenKey, window_start_ms: f64) -> CachedValue {
    let mut summer = WindowSummer::default();
    unsafe {
        let first = raw::RedisModule_ZsetFirstInScoreRange.unwrap()(
            key.0,
            window_start_ms,
            f64::INFINITY,
            0,
            0,
        );
        if first == raw::REDISMODULE_OK as c_int {
            while raw::RedisModule_ZsetRangeEndReached.unwrap()(key.0) == 0 {
                let mut score = 0.0;
                let member = raw::RedisModule_ZsetRangeCurrentElement.unwrap()(key.0, &mut score);
                if member.is_null() {
                    break;
                }
                summer.add_member(string_bytes(member));
                raw::RedisModule_FreeString.unwrap()(ctx.ctx, member);
                if raw::RedisModule_ZsetRangeNext.unwrap()(key.0) == 0 {
                    break;
                }
            }
        }
        raw::RedisModule_ZsetRangeStop.unwrap()(key.0);
    }
    summer.finish()
}
