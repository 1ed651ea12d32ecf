//! An in-memory [`Keyspace`] and [`Access`], for unit tests of the run layer
//! without a redis-server: strings, hashes and sorted sets with a TTL flag, an
//! audit log and published messages kept for inspection, and hooks that change
//! the data between holds (an application writing while a check runs).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Access, Expired, Keyspace};
use crate::cluster::SlotSet;
use crate::compare::{CachedKey, CachedValue, WindowSummer};
use crate::rules::RuleKind;

/// A value as the memory store holds it.
#[derive(Clone, Debug, PartialEq)]
pub enum MemoryValue {
    Str(Vec<u8>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    /// Members with their scores.
    Zset(Vec<(f64, Vec<u8>)>),
    List(Vec<Vec<u8>>),
}

/// One key: its value and its TTL in milliseconds (None: no TTL).
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryKey {
    pub value: MemoryValue,
    pub ttl_ms: Option<u64>,
}

/// The TTL keys get from [`MemoryStore::set`] and friends: an hour.
pub const DEFAULT_TTL_MS: u64 = 3_600_000;

/// A keyspace in memory.
#[derive(Debug)]
pub struct MemoryStore {
    pub keys: BTreeMap<Vec<u8>, MemoryKey>,
    pub primary: bool,
    pub paused: bool,
    pub slots: Arc<SlotSet>,
    /// Audit entries written, each as its fields.
    pub audit: Vec<Vec<(String, Vec<u8>)>>,
    /// Messages published.
    pub published: Vec<String>,
    /// Keys deleted or written, in order, for assertions.
    pub writes: Vec<Vec<u8>>,
    /// The selected database.
    pub db: i64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            keys: BTreeMap::new(),
            primary: true,
            paused: false,
            slots: Arc::new(SlotSet::all()),
            audit: Vec::new(),
            published: Vec::new(),
            writes: Vec::new(),
            db: 0,
        }
    }
}

impl MemoryStore {
    pub fn set(&mut self, key: &str, value: &str) {
        self.keys.insert(
            key.as_bytes().to_vec(),
            MemoryKey {
                value: MemoryValue::Str(value.as_bytes().to_vec()),
                ttl_ms: Some(DEFAULT_TTL_MS),
            },
        );
    }

    /// The value of `key`, made `empty` (with a TTL) when there is none.
    fn value_or(&mut self, key: &str, empty: MemoryValue) -> &mut MemoryValue {
        &mut self
            .keys
            .entry(key.as_bytes().to_vec())
            .or_insert(MemoryKey {
                value: empty,
                ttl_ms: Some(DEFAULT_TTL_MS),
            })
            .value
    }

    pub fn hset(&mut self, key: &str, field: &str, value: &str) {
        if let MemoryValue::Hash(h) = self.value_or(key, MemoryValue::Hash(BTreeMap::new())) {
            h.insert(field.as_bytes().to_vec(), value.as_bytes().to_vec());
        }
    }

    pub fn zadd(&mut self, key: &str, score: f64, member: &str) {
        if let MemoryValue::Zset(z) = self.value_or(key, MemoryValue::Zset(Vec::new())) {
            z.push((score, member.as_bytes().to_vec()));
        }
    }

    pub fn get(&self, key: &str) -> Option<&MemoryValue> {
        self.keys.get(key.as_bytes()).map(|k| &k.value)
    }

    fn read_one(&self, name: &[u8], kind: &RuleKind, window_start_ms: f64) -> CachedKey {
        let Some(key) = self.keys.get(name) else {
            return CachedKey::ABSENT;
        };
        let value = match (kind, &key.value) {
            (RuleKind::Presence, _) => CachedValue::Present,
            (RuleKind::Number | RuleKind::Json, MemoryValue::Str(s)) => {
                CachedValue::Text(s.clone())
            }
            (RuleKind::HashField { field }, MemoryValue::Hash(h)) => h
                .get(field.as_bytes())
                .map_or(CachedValue::NoField, |v| CachedValue::Text(v.clone())),
            (RuleKind::WindowSum { .. }, MemoryValue::Zset(z)) => {
                let mut members: Vec<&(f64, Vec<u8>)> =
                    z.iter().filter(|(s, _)| *s >= window_start_ms).collect();
                members.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
                let mut summer = WindowSummer::default();
                for (_, m) in members {
                    summer.add_member(m);
                }
                summer.finish()
            }
            (_, v) => CachedValue::WrongType(match v {
                MemoryValue::Str(_) => "string",
                MemoryValue::Hash(_) => "hash",
                MemoryValue::Zset(_) => "zset",
                MemoryValue::List(_) => "list",
            }),
        };
        CachedKey {
            value,
            ttl_ms: key.ttl_ms,
        }
    }
}

/// A scan in progress: the last key visited.
#[derive(Default)]
pub struct MemoryCursor {
    after: Option<Vec<u8>>,
}

impl Keyspace for MemoryStore {
    type Cursor = MemoryCursor;

    fn new_cursor(&mut self) -> MemoryCursor {
        MemoryCursor::default()
    }

    fn scan(
        &mut self,
        cursor: &mut MemoryCursor,
        budget: usize,
        visit: &mut dyn FnMut(&[u8]),
    ) -> bool {
        use std::ops::Bound;
        let start = match &cursor.after {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        let keys = self.keys.range((start, Bound::Unbounded)).map(|(k, _)| k);
        for (visited, key) in keys.enumerate() {
            if visited == budget.max(1) {
                return true;
            }
            visit(key);
            cursor.after = Some(key.clone());
        }
        false
    }

    fn read(&mut self, names: &[&[u8]], kind: &RuleKind, window_start_ms: f64) -> Vec<CachedKey> {
        names
            .iter()
            .map(|n| self.read_one(n, kind, window_start_ms))
            .collect()
    }

    fn unlink(&mut self, keys: &[&[u8]]) -> Result<i64, String> {
        let mut n = 0;
        for k in keys {
            if self.keys.remove(*k).is_some() {
                n += 1;
                self.writes.push(k.to_vec());
            }
        }
        Ok(n)
    }

    fn set_keep_ttl(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let ttl_ms = self.keys.get(key).and_then(|k| k.ttl_ms);
        self.keys.insert(
            key.to_vec(),
            MemoryKey {
                value: MemoryValue::Str(value.to_vec()),
                ttl_ms,
            },
        );
        self.writes.push(key.to_vec());
        Ok(())
    }

    fn set_hash_field(&mut self, key: &[u8], field: &[u8], value: &[u8]) -> Result<(), String> {
        match self.keys.get_mut(key).map(|k| &mut k.value) {
            Some(MemoryValue::Hash(h)) => {
                h.insert(field.to_vec(), value.to_vec());
            }
            Some(_) => return Err("WRONGTYPE".into()),
            None => {
                let mut h = BTreeMap::new();
                h.insert(field.to_vec(), value.to_vec());
                self.keys.insert(
                    key.to_vec(),
                    MemoryKey {
                        value: MemoryValue::Hash(h),
                        ttl_ms: None,
                    },
                );
            }
        }
        self.writes.push(key.to_vec());
        Ok(())
    }

    fn audit(&mut self, fields: &[(&str, &[u8])]) {
        self.audit.push(
            fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
        );
    }

    fn publish(&mut self, message: &str) {
        self.published.push(message.to_string());
    }

    fn is_primary(&mut self) -> bool {
        self.primary
    }

    fn writes_paused(&mut self) -> bool {
        self.paused
    }

    fn slots(&mut self) -> Arc<SlotSet> {
        Arc::clone(&self.slots)
    }

    fn db_size(&mut self) -> u64 {
        self.keys.len() as u64
    }

    fn db(&mut self) -> i64 {
        self.db
    }
}

/// A change an application makes between two holds.
pub type Between = Box<dyn FnMut(&mut MemoryStore, usize)>;

/// Holds on a [`MemoryStore`], as a worker would take them.
pub struct MemoryAccess {
    pub store: RefCell<MemoryStore>,
    /// Called before every hold with the hold's number (from 0).
    pub before_hold: RefCell<Option<Between>>,
    holds: Cell<usize>,
    /// Set to stand for a client answered early (deadline, CLIENT UNBLOCK).
    pub answered: Cell<bool>,
    /// Whether it waits for paused writes (a worker) or not (the main thread).
    pub worker: bool,
    /// Looks at paused writes so far: each unpauses after this many.
    pub pause_lasts: Cell<usize>,
}

impl MemoryAccess {
    pub fn new(store: MemoryStore) -> MemoryAccess {
        MemoryAccess {
            store: RefCell::new(store),
            before_hold: RefCell::new(None),
            holds: Cell::new(0),
            answered: Cell::new(false),
            worker: true,
            pause_lasts: Cell::new(usize::MAX),
        }
    }

    /// Holds taken so far.
    pub fn holds(&self) -> usize {
        self.holds.get()
    }

    /// Runs `change` before every hold from now on.
    pub fn between_holds(&self, change: impl FnMut(&mut MemoryStore, usize) + 'static) {
        *self.before_hold.borrow_mut() = Some(Box::new(change));
    }
}

impl Access for MemoryAccess {
    type Keyspace = MemoryStore;

    fn hold<R>(&self, f: impl FnOnce(&mut MemoryStore) -> R) -> R {
        let n = self.holds.get();
        self.holds.set(n + 1);
        if let Some(change) = self.before_hold.borrow_mut().as_mut() {
            change(&mut self.store.borrow_mut(), n);
        }
        f(&mut self.store.borrow_mut())
    }

    fn between_slices(&self) -> Result<(), Expired> {
        if self.answered.get() {
            Err(Expired)
        } else {
            Ok(())
        }
    }

    fn answered(&self) -> bool {
        self.answered.get()
    }

    fn may_wait_for_writes(&self) -> bool {
        self.worker
    }

    fn wait_for_writes(&self) {
        let left = self.pause_lasts.get();
        if left == 0 {
            self.store.borrow_mut().paused = false;
        } else {
            self.pause_lasts.set(left - 1);
            if left == 1 {
                self.store.borrow_mut().paused = false;
            }
        }
    }
}

/// A truth source for unit tests: fixed rows per rule, or PostgreSQL down.
#[cfg(test)]
pub mod fake_truth {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::SystemTime;

    use consistency_bridge::{BridgeError, TruthRow};

    use crate::drift_check::TruthSource;
    use crate::rules::RuleSet;
    use crate::state::LoadedRule;

    /// Rows by rule name; `down` answers every query with that error.
    #[derive(Default)]
    pub struct FakeTruth {
        pub rows: HashMap<String, Vec<TruthRow>>,
        pub down: Option<BridgeError>,
        /// Queries for given ids so far (verification rounds, FIX of ids).
        pub id_queries: Arc<AtomicUsize>,
        /// What each rule's `changed` query returns, and the `since` it was
        /// last asked with.
        pub changed: HashMap<String, Vec<String>>,
        pub changed_since: Option<SystemTime>,
    }

    impl FakeTruth {
        /// `rows` of rule `rule`: (id, value).
        pub fn with(mut self, rule: &str, rows: &[(&str, Option<&str>)]) -> FakeTruth {
            self.rows.insert(
                rule.to_string(),
                rows.iter()
                    .map(|(id, v)| TruthRow {
                        id: id.to_string(),
                        value: v.map(str::to_string),
                        named: Vec::new(),
                    })
                    .collect(),
            );
            self
        }

        /// Rows of rule `rule` with named columns (as the bridge returns a
        /// truth read by name): `columns[0]` must be `id`.
        pub fn with_named(
            mut self,
            rule: &str,
            columns: &[&str],
            rows: &[&[Option<&str>]],
        ) -> FakeTruth {
            assert_eq!(columns.first(), Some(&"id"));
            let names: Vec<Arc<str>> = columns[1..].iter().map(|c| Arc::from(*c)).collect();
            self.rows.insert(
                rule.to_string(),
                rows.iter()
                    .map(|row| TruthRow {
                        id: row[0].expect("an id").to_string(),
                        value: None,
                        named: names
                            .iter()
                            .cloned()
                            .zip(row[1..].iter().map(|v| v.map(str::to_string)))
                            .collect(),
                    })
                    .collect(),
            );
            self
        }

        fn answer(&self, rule: &LoadedRule) -> Result<Vec<TruthRow>, BridgeError> {
            if let Some(e) = &self.down {
                return Err(e.clone());
            }
            Ok(self.rows.get(&rule.rule.name).cloned().unwrap_or_default())
        }
    }

    impl TruthSource for FakeTruth {
        fn all(
            &mut self,
            rule: &LoadedRule,
            _window: Option<SystemTime>,
        ) -> Result<Vec<TruthRow>, BridgeError> {
            self.answer(rule)
        }

        fn ids(
            &mut self,
            rule: &LoadedRule,
            ids: &[String],
            _window: Option<SystemTime>,
        ) -> Result<Vec<TruthRow>, BridgeError> {
            self.id_queries.fetch_add(1, Ordering::SeqCst);
            Ok(self
                .answer(rule)?
                .into_iter()
                .filter(|r| ids.contains(&r.id))
                .collect())
        }

        fn changed(
            &mut self,
            rule: &LoadedRule,
            since: SystemTime,
        ) -> Result<Vec<String>, BridgeError> {
            if let Some(e) = &self.down {
                return Err(e.clone());
            }
            self.changed_since = Some(since);
            Ok(self
                .changed
                .get(&rule.rule.name)
                .cloned()
                .unwrap_or_default())
        }
    }

    /// The loaded rules of a rules file's JSON `rules` array.
    pub fn rules(json: &str) -> Vec<Arc<LoadedRule>> {
        RuleSet::parse(&format!(r#"{{"rules": {json}}}"#))
            .unwrap()
            .rules()
            .iter()
            .cloned()
            .map(|r| Arc::new(LoadedRule::new(r)))
            .collect()
    }
}
