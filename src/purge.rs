//! PURGE: delete the keys of a pattern or a rule in slices, without blocking
//! Redis and without PostgreSQL (it runs on the keyspace lane).

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::fix::FixError;
use crate::glob::glob_match;
use crate::reply::bytes_as_text;
use crate::stats;
use crate::store::{Access, Keyspace};
use crate::template::KeyTemplate;

/// Which keys a PURGE deletes.
pub enum PurgeMatch {
    Glob(Vec<u8>),
    Rule { name: String, template: KeyTemplate },
}

impl PurgeMatch {
    fn matches(&self, key: &[u8]) -> bool {
        match self {
            PurgeMatch::Glob(p) => glob_match(p, key),
            PurgeMatch::Rule { template, .. } => template.id_of(key).is_some(),
        }
    }

    fn describe(&self) -> String {
        match self {
            PurgeMatch::Glob(p) => format!("MATCH {}", bytes_as_text(p)),
            PurgeMatch::Rule { name, .. } => format!("RULE {name}"),
        }
    }
}

pub struct PurgePlan {
    pub target: PurgeMatch,
    pub dry_run: bool,
    pub limit: Option<usize>,
    pub scan_batch: usize,
}

/// Scans and UNLINKs in slices: one UNLINK (replicated) per slice of matches.
pub fn run_purge<A: Access>(plan: &PurgePlan, access: &A) -> Result<PurgeOutcome, FixError> {
    let started = Instant::now();
    // The audit summary must land in a slot this node serves (cluster).
    access.hold(|ks| ks.slots());
    let limit = plan.limit.unwrap_or(usize::MAX);
    let mut scan = access.hold(|ks| ks.new_cursor());
    let mut more = true;
    let mut matched = 0usize;
    let mut deleted = 0u64;
    let mut found: Vec<Vec<u8>> = Vec::with_capacity(plan.scan_batch);
    while more && matched < limit {
        let before = deleted;
        let mut slice = |ks: &mut A::Keyspace| -> Result<(), FixError> {
            found.clear();
            more = ks.scan(&mut scan, plan.scan_batch, &mut |key| {
                if matched + found.len() < limit && plan.target.matches(key) {
                    found.push(key.to_vec());
                }
            });
            matched += found.len();
            if plan.dry_run || found.is_empty() {
                return Ok(());
            }
            let keys: Vec<&[u8]> = found.iter().map(Vec::as_slice).collect();
            deleted += ks.unlink(&keys).map_err(FixError::Write)? as u64;
            Ok(())
        };
        if plan.dry_run {
            access.hold(slice)?;
        } else {
            // Every hold, matches or not, is a write hold: a PURGE also writes
            // its audit entry, which a replica must not get either.
            access
                .write_hold(&mut slice)
                .map_err(|stop| FixError::stopped(stop, before))??;
        }
        if more {
            access.between_slices()?;
        }
    }
    stats::PURGED_KEYS_TOTAL.fetch_add(deleted, Ordering::Relaxed);
    let duration_ms = started.elapsed().as_millis() as u64;
    if !plan.dry_run {
        log::info!(
            "consistency: PURGE {} deleted {deleted} of {matched} matching keys in {duration_ms} ms",
            plan.target.describe()
        );
        // A failover or a pause after the last slice: no summary then.
        let _ = access.write_hold(|ks| {
            ks.audit(&[
                ("action", b"purge"),
                ("target", plan.target.describe().as_bytes()),
                ("matched", matched.to_string().as_bytes()),
                ("deleted", deleted.to_string().as_bytes()),
            ])
        });
    }
    Ok(PurgeOutcome {
        matched,
        deleted,
        dry_run: plan.dry_run,
        duration_ms,
    })
}

/// What a PURGE did.
#[derive(Clone, Debug, PartialEq)]
pub struct PurgeOutcome {
    pub matched: usize,
    /// 0 with DRYRUN.
    pub deleted: u64,
    pub dry_run: bool,
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::{MemoryAccess, MemoryStore};

    fn store_with(keys: &[&str]) -> MemoryStore {
        let mut store = MemoryStore::default();
        for k in keys {
            store.set(k, "1");
        }
        store
    }

    #[test]
    fn purge_deletes_matches_in_slices_and_audits_once() {
        let keys: Vec<String> = (0..10).map(|i| format!("tmp:{i}")).collect();
        let mut all: Vec<&str> = keys.iter().map(String::as_str).collect();
        all.push("keep:1");
        let access = MemoryAccess::new(store_with(&all));
        let plan = PurgePlan {
            target: PurgeMatch::Glob(b"tmp:*".to_vec()),
            dry_run: false,
            limit: None,
            scan_batch: 3,
        };
        let outcome = run_purge(&plan, &access).unwrap();
        assert_eq!((outcome.matched, outcome.deleted), (10, 10));
        let store = access.store.borrow();
        assert_eq!(store.keys.len(), 1, "only keep:1 stays");
        assert!(
            access.holds() >= 4,
            "{} holds for 11 keys, 3 a slice",
            access.holds()
        );
        assert_eq!(store.audit.len(), 1);
        assert_eq!(store.audit[0][0], ("action".to_string(), b"purge".to_vec()));
    }

    #[test]
    fn purge_limit_and_dry_run() {
        let keys: Vec<String> = (0..10).map(|i| format!("tmp:{i}")).collect();
        let all: Vec<&str> = keys.iter().map(String::as_str).collect();
        let access = MemoryAccess::new(store_with(&all));
        let mut plan = PurgePlan {
            target: PurgeMatch::Glob(b"tmp:*".to_vec()),
            dry_run: true,
            limit: Some(4),
            scan_batch: 3,
        };
        let outcome = run_purge(&plan, &access).unwrap();
        assert_eq!((outcome.matched, outcome.deleted), (4, 0));
        assert_eq!(access.store.borrow().keys.len(), 10);
        plan.dry_run = false;
        run_purge(&plan, &access).unwrap();
        assert_eq!(access.store.borrow().keys.len(), 6);
    }

    #[test]
    fn purge_rule_takes_only_the_template_s_keys() {
        let template = crate::template::KeyTemplate::parse("u:{id}:w").unwrap();
        let access = MemoryAccess::new(store_with(&["u:1:w", "u:1:w:lock", "u:2:m"]));
        let plan = PurgePlan {
            target: PurgeMatch::Rule {
                name: "weekly".into(),
                template,
            },
            dry_run: false,
            limit: None,
            scan_batch: 500,
        };
        run_purge(&plan, &access).unwrap();
        let left: Vec<Vec<u8>> = access.store.borrow().keys.keys().cloned().collect();
        assert_eq!(left, vec![b"u:1:w:lock".to_vec(), b"u:2:m".to_vec()]);
    }
}
