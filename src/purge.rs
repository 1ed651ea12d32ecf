//! PURGE: delete the keys of a pattern or a rule in slices, without blocking
//! Redis and without PostgreSQL (it runs on the keyspace lane).

use std::sync::atomic::Ordering;
use std::time::Instant;

use redis_module::Context;

use crate::fix::FixError;
use crate::glob::glob_match;
use crate::keyspace::{GilAccess, KeyScan};
use crate::reply::{bytes_as_text, Reply};
use crate::stats;
use crate::template::KeyTemplate;
use crate::writes;

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
pub fn run_purge<A: GilAccess>(plan: &PurgePlan, access: &A) -> Result<Reply, FixError> {
    let started = Instant::now();
    // The audit summary must land in a slot this node serves (cluster).
    access.with_gil(crate::cluster_view::refresh);
    let limit = plan.limit.unwrap_or(usize::MAX);
    let mut scan = KeyScan::new();
    let mut matched = 0usize;
    let mut deleted = 0u64;
    let mut found: Vec<Vec<u8>> = Vec::with_capacity(plan.scan_batch);
    while !scan.is_done() && matched < limit {
        let before = deleted;
        let mut slice = |ctx: &Context| -> Result<(), FixError> {
            found.clear();
            scan.next_slice(ctx, plan.scan_batch, &mut |key| {
                if matched + found.len() < limit && plan.target.matches(key) {
                    found.push(key.to_vec());
                }
            });
            matched += found.len();
            if plan.dry_run || found.is_empty() {
                return Ok(());
            }
            let keys: Vec<&[u8]> = found.iter().map(Vec::as_slice).collect();
            deleted += writes::unlink(ctx, &keys).map_err(FixError::Write)? as u64;
            Ok(())
        };
        if plan.dry_run {
            access.with_gil(slice)?;
        } else {
            // Every hold, matches or not, is a write hold: a PURGE also writes
            // its audit entry, which a replica must not get either.
            access
                .write_hold(&mut slice)
                .map_err(|stop| FixError::stopped(stop, before))??;
        }
        if !scan.is_done() {
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
        let _ = access.write_hold(|ctx| {
            writes::audit(
                ctx,
                &[
                    ("action", b"purge"),
                    ("target", plan.target.describe().as_bytes()),
                    ("matched", matched.to_string().as_bytes()),
                    ("deleted", deleted.to_string().as_bytes()),
                ],
            )
        });
    }
    Ok(Reply::Map(vec![
        ("matched", Reply::Int(matched as i64)),
        ("deleted", Reply::Int(deleted as i64)),
        ("dry_run", Reply::Bool(plan.dry_run)),
        ("duration_ms", Reply::Int(duration_ms as i64)),
    ]))
}
