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

use std::sync::Arc;

use redis_module::{raw, Context};

use super::{cluster_view, writes};
use crate::cluster::SlotSet;
use crate::compare::{CachedKey, CachedValue, WindowSummer};
use crate::rules::RuleKind;
use crate::store::{Access, Expired, Keyspace};

/// Redis as seen from one hold of its lock: the module API behind the
/// [`Keyspace`] seam. A context wrapper, made for each hold.
pub struct ModuleKeyspace {
    ctx: Context,
}

impl ModuleKeyspace {
    /// The keyspace of `ctx` (a command's, a blocked client's thread-safe
    /// context, or a detached one), whose lock the caller holds.
    pub fn new(ctx: &Context) -> ModuleKeyspace {
        ModuleKeyspace {
            ctx: Context::new(ctx.ctx),
        }
    }
}

impl Keyspace for ModuleKeyspace {
    type Cursor = KeyScan;

    fn new_cursor(&mut self) -> KeyScan {
        KeyScan::new()
    }

    fn scan(&mut self, cursor: &mut KeyScan, budget: usize, visit: &mut dyn FnMut(&[u8])) -> bool {
        cursor.next_slice(&self.ctx, budget, visit);
        !cursor.is_done()
    }

    fn read(&mut self, names: &[&[u8]], kind: &RuleKind, window_start_ms: f64) -> Vec<CachedKey> {
        read_many(&self.ctx, names, kind, window_start_ms)
    }

    fn unlink(&mut self, keys: &[&[u8]]) -> Result<i64, String> {
        writes::unlink(&self.ctx, keys)
    }

    fn set_keep_ttl(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        writes::set_keep_ttl(&self.ctx, key, value)
    }

    fn set_hash_field(&mut self, key: &[u8], field: &[u8], value: &[u8]) -> Result<(), String> {
        writes::set_hash_field(&self.ctx, key, field, value)
    }

    fn audit(&mut self, fields: &[(&str, &[u8])]) {
        writes::audit(&self.ctx, fields)
    }

    fn publish(&mut self, message: &str) {
        writes::notify(&self.ctx, message)
    }

    fn is_primary(&mut self) -> bool {
        writes::is_primary(&self.ctx)
    }

    fn writes_paused(&mut self) -> bool {
        writes::writes_paused()
    }

    fn slots(&mut self) -> Arc<SlotSet> {
        cluster_view::refresh(&self.ctx)
    }

    fn db_size(&mut self) -> u64 {
        unsafe { raw::RedisModule_DbSize.unwrap()(self.ctx.ctx) }
    }

    fn db(&mut self) -> i64 {
        i64::from(unsafe { raw::RedisModule_GetSelectedDb.unwrap()(self.ctx.ctx) })
    }
}

/// The main thread, where the lock is already held (Lua and MULTI): no pauses.
pub struct MainThread<'c>(pub &'c Context);

impl Access for MainThread<'_> {
    type Keyspace = ModuleKeyspace;

    fn hold<R>(&self, f: impl FnOnce(&mut ModuleKeyspace) -> R) -> R {
        f(&mut ModuleKeyspace::new(self.0))
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

/// Reads many keys of one rule kind in one GIL hold. Number and json rules read their
/// strings with one MGET for the whole batch: a call per key would cost more than
/// everything else a check does.
fn read_many(
    ctx: &Context,
    names: &[&[u8]],
    kind: &RuleKind,
    window_start_ms: f64,
) -> Vec<CachedKey> {
    if !matches!(kind, RuleKind::Number | RuleKind::Json) {
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
                ttl_ms,
            } if key_type == raw::REDISMODULE_KEYTYPE_STRING => {
                strings.push((i, keyname, Recency::save(key.0)));
                out.push(CachedKey {
                    value: CachedValue::Absent,
                    ttl_ms,
                });
            }
            Probe::Found {
                key_type, ttl_ms, ..
            } => out.push(CachedKey {
                value: CachedValue::WrongType(type_name(key_type)),
                ttl_ms,
            }),
        }
    }
    if strings.is_empty() {
        return out;
    }
    // One MGET for every string, then the recency each key had before it. In a
    // cluster an MGET may not cross slots: one per slot there.
    let slot_of = |name: &OwnedName| crate::cluster::key_slot(string_bytes(name.inner));
    let cluster = crate::redis_api::cluster_view::in_cluster(ctx);
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
        /// Milliseconds left; None without a TTL.
        ttl_ms: Option<u64>,
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
        ttl_ms: (expire > 0).then_some(expire as u64),
    }
}

/// Reads the key `name` as a rule of `kind` sees it. `window_start_ms` cuts
/// window_sum ZSETs (scores are epoch ms). The caller holds the GIL.
fn read_key(ctx: &Context, name: &[u8], kind: &RuleKind, window_start_ms: f64) -> CachedKey {
    let keyname = OwnedName::new(ctx, name);
    let Probe::Found {
        key,
        key_type,
        ttl_ms,
    } = probe_key(ctx, &keyname)
    else {
        return CachedKey::ABSENT;
    };
    let value = match kind {
        RuleKind::Presence => CachedValue::Present,
        RuleKind::Number | RuleKind::Json if key_type == raw::REDISMODULE_KEYTYPE_STRING => {
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
    CachedKey { value, ttl_ms }
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
