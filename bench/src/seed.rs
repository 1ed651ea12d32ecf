//! The seed's per-user loop (one psql and one redis-cli per user), run on a
//! sample of users and extrapolated.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use crate::rules::{THRESHOLD, WINDOW_MS};
use crate::util::{epoch_ms, Result};

pub const SCRIPT: &str = include_str!("../seed_loop.sh");

/// Findings as (status, rule, id).
pub type SeedFinding = (String, String, String);

/// Runs the loop over `ids` and returns what it printed.
pub fn run(script: &Path, pg_url: &str, port: u16, ids: &[i64]) -> Result<BTreeSet<SeedFinding>> {
    let window_start_ms = epoch_ms(SystemTime::now()) - WINDOW_MS;
    let out = Command::new("bash")
        .arg(script)
        .arg(pg_url)
        .arg(port.to_string())
        .arg(window_start_ms.to_string())
        .arg(THRESHOLD.to_string())
        .args(ids.iter().map(i64::to_string))
        .output()?;
    if !out.status.success() || !out.stderr.is_empty() {
        return Err(format!(
            "seed loop failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let mut found = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [status, rule, id] = f[..] {
            found.insert((status.to_string(), rule.to_string(), id.to_string()));
        } else {
            return Err(format!("seed loop printed {line:?}").into());
        }
    }
    Ok(found)
}
