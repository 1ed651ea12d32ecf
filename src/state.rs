//! The module's running state: loaded rules, the PostgreSQL pool, the lanes and
//! the dirty ids of CHECK CHANGED.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use redis_module::configuration::{ConfigurationContext, ConfigurationValue};
use redis_module::{RedisError, RedisString};

use consistency_bridge::{
    read_password_file, BridgeError, Lane, PgPool, PgSettings, TruthQuery, TruthShape,
};

use crate::config;
use crate::dirty::{DirtySet, DirtyTracker};
use crate::rules::{Rule, RuleKind, RuleSet, RulesError};
use crate::watch_samples::WatchSamples;

/// A rule with its truth query, which learns the id column's type once.
pub struct LoadedRule {
    pub rule: Rule,
    pub truth: TruthQuery,
    /// The rule's `changed` query: ids whose truth changed since `$1`.
    pub changed: Option<TruthQuery>,
}

impl LoadedRule {
    pub fn new(rule: Rule) -> LoadedRule {
        // json documents and templates with several placeholders read their
        // columns by name: id, each other placeholder, then the value (or, for
        // json, the fields).
        let shape = if rule.kind == RuleKind::Json || rule.key.is_multi() {
            let mut required: Vec<String> = rule.key.other_names().map(str::to_string).collect();
            if rule.kind.is_valued() && rule.kind != RuleKind::Json {
                required.push("value".to_string());
            }
            TruthShape::Named { required }
        } else if rule.kind.is_valued() {
            TruthShape::IdValue
        } else {
            TruthShape::IdOnly
        };
        let takes_window = matches!(rule.kind, RuleKind::WindowSum { .. });
        let truth = TruthQuery::new(&rule.truth, shape, takes_window);
        let changed = rule
            .changed
            .as_deref()
            .map(|sql| TruthQuery::new(sql, TruthShape::IdOnly, true));
        LoadedRule {
            rule,
            truth,
            changed,
        }
    }
}

/// The rules in force, in file order, and where they came from.
#[derive(Default)]
pub struct LoadedRules {
    pub file: String,
    pub rules: Vec<Arc<LoadedRule>>,
    /// Why the last load failed, while no rules are loaded because of it.
    pub error: Option<String>,
}

impl LoadedRules {
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedRule>> {
        self.rules.iter().find(|r| r.rule.name == name)
    }

    pub fn names(&self) -> String {
        self.rules
            .iter()
            .map(|r| r.rule.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

static RULES: RwLock<Option<Arc<LoadedRules>>> = RwLock::new(None);

/// The ids written since each rule's last check (CHECK CHANGED).
static DIRTY: OnceLock<DirtyTracker> = OnceLock::new();
static DIRTY_MERGE_STOP: AtomicBool = AtomicBool::new(false);
/// How often the background merge empties the write log into the set.
const DIRTY_MERGE_EVERY: Duration = Duration::from_millis(20);

/// The dirty set, locked, with every write logged so far merged in. Its
/// bound follows `dirty-max-ids` through that config's change callback.
pub fn dirty() -> MutexGuard<'static, DirtySet> {
    dirty_tracker().lock()
}

/// The tracker itself: the keyspace callback logs into it, the run layer
/// locks it.
pub fn dirty_tracker() -> &'static DirtyTracker {
    DIRTY.get_or_init(|| DirtyTracker::new(config::dirty_max_ids()))
}

/// Merges logged writes into the dirty set every 20 ms, on a thread of its
/// own, so the hash lookups happen neither inside writes nor in one long
/// lump at the next check.
pub fn start_dirty_merge() {
    let _ = std::thread::Builder::new()
        .name("consistency-dirty".into())
        .spawn(|| {
            while !DIRTY_MERGE_STOP.load(Ordering::Relaxed) {
                std::thread::sleep(DIRTY_MERGE_EVERY);
                if dirty_tracker().has_log() {
                    drop(dirty());
                }
            }
        });
}

/// Samples of watched rules' writes (continuous consistency).
static WATCH: OnceLock<Mutex<WatchSamples>> = OnceLock::new();

/// The watch samples, locked, with bound and looks as configured now.
pub fn watch_samples() -> MutexGuard<'static, WatchSamples> {
    let mut samples = watch_samples_lock()
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    samples.configure(config::watch_max_pending(), crate::watch::looks());
    samples
}

/// The watch samples themselves, for the run layer to lock when it needs.
pub fn watch_samples_lock() -> &'static Mutex<WatchSamples> {
    WATCH.get_or_init(|| {
        Mutex::new(WatchSamples::new(
            config::watch_max_pending(),
            crate::watch::looks(),
        ))
    })
}

pub fn rules() -> Arc<LoadedRules> {
    RULES.read().unwrap().clone().unwrap_or_default()
}

/// Loads `path` and puts its rules in force; on error the old rules stay.
pub fn load_rules(path: &str) -> Result<usize, RulesError> {
    let set = if path.is_empty() {
        RuleSet::default()
    } else {
        RuleSet::load_file(path)?
    };
    let loaded = LoadedRules {
        file: path.to_string(),
        rules: set
            .rules()
            .iter()
            .cloned()
            .map(|r| Arc::new(LoadedRule::new(r)))
            .collect(),
        error: None,
    };
    let count = loaded.rules.len();
    *RULES.write().unwrap() = Some(Arc::new(loaded));
    // A rule's ids may name other keys now: every rule starts over.
    dirty().clear();
    Ok(count)
}

/// At startup a bad file must not stop Redis: no rules, and the reason kept for CHECK.
pub fn load_rules_at_start(path: &str) {
    match load_rules(path) {
        Ok(n) => log::info!("consistency: loaded {n} rules from '{path}'"),
        Err(e) => {
            log::warn!("consistency: no rules loaded: {e}");
            *RULES.write().unwrap() = Some(Arc::new(LoadedRules {
                file: path.to_string(),
                rules: Vec::new(),
                error: Some(e.to_string()),
            }));
        }
    }
}

/// The PostgreSQL side, rebuilt when pg-url or the connect timeout change.
static POOL: RwLock<Option<Result<Arc<PgPool>, BridgeError>>> = RwLock::new(None);

pub fn pg_settings() -> Result<PgSettings, BridgeError> {
    let file = config::pg_password_file();
    Ok(PgSettings {
        url: config::pg_url(),
        // Read at each new connection by the bridge, so a rotated file is used.
        password_file: Some(file).filter(|f| !f.is_empty()),
        password: std::env::var("PGPASSWORD").ok(),
        ssl_files: config::pg_ssl_files(),
        connect_timeout: config::connect_timeout(),
        statement_timeout: config::statement_timeout(),
        pool_size: config::pool_size().max(1),
    })
}

pub fn rebuild_pool() {
    let pool = pg_settings().and_then(|s| {
        // The pool reads the file only when it connects: say now if it cannot.
        if let Some(file) = &s.password_file {
            if let Err(e) = read_password_file(file) {
                log::warn!("consistency: {e}");
            }
        }
        PgPool::new(&s)
    });
    let pool = pool.map(Arc::new);
    if let Err(e) = &pool {
        log::warn!("consistency: {e}");
    }
    *POOL.write().unwrap() = Some(pool);
}

pub fn pool() -> Result<Arc<PgPool>, BridgeError> {
    if POOL.read().unwrap().is_none() {
        rebuild_pool();
    }
    POOL.read().unwrap().clone().unwrap()
}

/// The two worker lanes: PostgreSQL jobs never queue keyspace-only work.
pub struct Lanes {
    pub truth: Lane,
    pub keyspace: Lane,
}

static LANES: OnceLock<Lanes> = OnceLock::new();

pub fn lanes() -> &'static Lanes {
    LANES.get_or_init(|| Lanes {
        truth: Lane::start("truth", config::workers().max(1), config::max_queue()),
        keyspace: Lane::start("keyspace", 1, config::max_queue()),
    })
}

pub fn stop_lanes() {
    DIRTY_MERGE_STOP.store(true, Ordering::Relaxed);
    if let Some(l) = LANES.get() {
        l.truth.shutdown(Duration::from_secs(2));
        l.keyspace.shutdown(Duration::from_secs(2));
    }
}

/// `consistency.rules-file`, kept here with the loading it triggers, so the
/// configs do not depend on the module's state.
pub static RULES_FILE: RulesFileConfig = RulesFileConfig(Mutex::new(String::new()));

pub fn rules_file() -> String {
    RULES_FILE.0.lock().unwrap().clone()
}

/// `consistency.rules-file`: once the module runs, setting it loads the file and
/// refuses a bad one (the old rules stay); while Redis starts it is only stored,
/// so a bad file never stops Redis from starting.
pub struct RulesFileConfig(Mutex<String>);

impl ConfigurationValue<RedisString> for RulesFileConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        RedisString::create(None, self.0.lock().unwrap().as_str())
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let path = val.to_string_lossy();
        if crate::config::INITIALISED.load(Ordering::Acquire) {
            load_rules(&path).map_err(|e| RedisError::String(e.to_string()))?;
        }
        *self.0.lock().unwrap() = path;
        Ok(())
    }
}
