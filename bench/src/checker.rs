//! The client-side checker: what a careful engineer would build outside Redis
//! with ordinary clients, the peer CONSISTENCY.CHECK has to beat.
//!
//! - The truth queries of all rules run at once, one thread and one PostgreSQL
//!   connection per rule, while the main thread walks the keyspace.
//! - The keyspace walk is one SCAN (MATCH `user:*:cost*`, COUNT 1000) whose
//!   pages are read as they arrive: each round trip sends, in one pipeline, an
//!   MGET of the page's number keys, a ZRANGEBYSCORE `<window start> +inf` per
//!   window key, and the SCAN for the next page. One round trip per page.
//! - Window sums and totals are compared with the same threshold; keys whose id
//!   the truth does not return are orphans.
//! - Verification, as the module does it: the truth is re-queried for just the
//!   drifted ids (`WHERE t.id = ANY($n::int4[])`, on the same connections, in
//!   parallel) and the keys re-read in one pipeline; only findings that persist
//!   are reported.
//! - Window start is fixed once, to the millisecond, and used for the SQL and
//!   the ZSET alike.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use postgres::Client;
use redis::Value;

use crate::data::{connect, Finding};
use crate::rules::{Kind, Rule, SCAN_MATCH, THRESHOLD};
use crate::util::{epoch_ms, from_epoch_ms, Result};

const SCAN_COUNT: usize = 1000;

/// What the checker found and where its time went.
#[derive(Debug, Default)]
pub struct ClientReport {
    pub checked: u64,
    pub round_one: usize,
    pub findings: BTreeSet<Finding>,
    /// The slowest truth query (they run at once).
    pub truth: Duration,
    pub keyspace: Duration,
    pub verify: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cached {
    Number(f64),
    /// Not a number, or a window member without a readable amount.
    Invalid,
    /// Gone since it was scanned (only seen when re-reading).
    Absent,
}

type TruthMap = HashMap<String, f64>;
type CacheMap = HashMap<String, Cached>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Drift,
    Invalid,
    Orphan,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Drift => "drift",
            Status::Invalid => "invalid",
            Status::Orphan => "orphan",
        }
    }
}

fn parse_number(bytes: &[u8]) -> Cached {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .map_or(Cached::Invalid, Cached::Number)
}

/// The sum of the amounts of `<ms>:<amount>` (or `<ms>:<request>:<amount>`) members.
fn window_sum(members: &[Value]) -> Cached {
    let mut sum = 0.0;
    for m in members {
        let Value::BulkString(bytes) = m else {
            return Cached::Invalid;
        };
        let amount = match bytes.iter().rposition(|&b| b == b':') {
            Some(i) => &bytes[i + 1..],
            None => return Cached::Invalid,
        };
        match parse_number(amount) {
            Cached::Number(v) => sum += v,
            _ => return Cached::Invalid,
        }
    }
    Cached::Number(sum)
}

fn status(cached: Cached, truth: Option<f64>) -> Option<Status> {
    match (cached, truth) {
        (Cached::Absent, _) => None,
        (_, None) => Some(Status::Orphan),
        (Cached::Invalid, Some(_)) => Some(Status::Invalid),
        (Cached::Number(c), Some(t)) => ((c - t).abs() > THRESHOLD).then_some(Status::Drift),
    }
}

/// Runs the rule's whole truth; `$1` is the window start for window rules.
fn query_truth(pg: &mut Client, rule: &Rule, window_start: SystemTime) -> Result<TruthMap> {
    let sql = rule.wrapped_truth();
    let rows = if rule.takes_window() {
        pg.query(&sql, &[&window_start])?
    } else {
        pg.query(&sql, &[])?
    };
    let mut map = TruthMap::with_capacity(rows.len());
    for row in rows {
        let id: Option<String> = row.get(0);
        let value: Option<String> = row.get(1);
        if let Some(id) = id {
            // SQL NULL is an empty sum; an unreadable value is NaN and never equal.
            let v = value.map_or(0.0, |v| v.parse().unwrap_or(f64::NAN));
            map.insert(id, v);
        }
    }
    Ok(map)
}

/// The truth of just `ids`.
fn query_truth_ids(
    pg: &mut Client,
    rule: &Rule,
    ids: &[String],
    window_start: SystemTime,
) -> Result<TruthMap> {
    let ints: Vec<i32> = ids.iter().filter_map(|id| id.parse().ok()).collect();
    if ints.is_empty() {
        return Ok(TruthMap::new());
    }
    let sql = rule.truth_for_ids();
    let rows = if rule.takes_window() {
        pg.query(&sql, &[&window_start, &ints])?
    } else {
        pg.query(&sql, &[&ints])?
    };
    Ok(rows
        .iter()
        .filter_map(|row| {
            let id: Option<String> = row.get(0);
            let value: Option<String> = row.get(1);
            Some((id?, value.map_or(0.0, |v| v.parse().unwrap_or(f64::NAN))))
        })
        .collect())
}

fn scan_cmd(cursor: u64) -> redis::Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(SCAN_MATCH)
        .arg("COUNT")
        .arg(SCAN_COUNT);
    cmd
}

/// The rule a key belongs to, and its id.
fn classify(rules: &[Rule], key: &[u8]) -> Option<(usize, String)> {
    rules.iter().enumerate().find_map(|(i, rule)| {
        let id = rule.id_of(key)?;
        Some((i, String::from_utf8(id.to_vec()).ok()?))
    })
}

/// One pass over the keyspace: every page's values are read in the same round
/// trip that fetches the next page.
fn scan_cache(
    con: &mut redis::Connection,
    rules: &[Rule],
    windows_ms: &[u64],
) -> Result<Vec<CacheMap>> {
    let mut caches: Vec<CacheMap> = rules.iter().map(|_| CacheMap::new()).collect();
    let (mut cursor, mut keys): (u64, Vec<Vec<u8>>) = scan_cmd(0).query(con)?;
    loop {
        let mut numbers: Vec<(usize, String)> = Vec::new();
        let mut number_keys: Vec<&[u8]> = Vec::new();
        let mut windows: Vec<(usize, String)> = Vec::new();
        let mut pipe = redis::pipe();
        for key in &keys {
            let Some((ri, id)) = classify(rules, key) else {
                continue;
            };
            match rules[ri].kind {
                Kind::Number => {
                    numbers.push((ri, id));
                    number_keys.push(key);
                }
                Kind::Window { .. } => {
                    pipe.cmd("ZRANGEBYSCORE")
                        .arg(key)
                        .arg(windows_ms[ri])
                        .arg("+inf");
                    windows.push((ri, id));
                }
            }
        }
        if !number_keys.is_empty() {
            pipe.cmd("MGET").arg(&number_keys);
        }
        let more = cursor != 0;
        if more {
            pipe.add_command(scan_cmd(cursor));
        }
        if windows.is_empty() && number_keys.is_empty() && !more {
            break;
        }
        let replies: Vec<Value> = pipe.query(con)?;
        let mut replies = replies.into_iter();
        for (ri, id) in windows {
            let cached = match replies.next() {
                Some(Value::Array(members)) => window_sum(&members),
                _ => Cached::Invalid,
            };
            caches[ri].insert(id, cached);
        }
        if !number_keys.is_empty() {
            if let Some(Value::Array(values)) = replies.next() {
                for ((ri, id), value) in numbers.into_iter().zip(values) {
                    // Nil: deleted since the SCAN page, or not a string.
                    if let Value::BulkString(b) = value {
                        caches[ri].insert(id, parse_number(&b));
                    }
                }
            }
        }
        if !more {
            break;
        }
        let page = replies.next().ok_or("SCAN reply missing")?;
        (cursor, keys) = redis::from_redis_value(&page)?;
    }
    Ok(caches)
}

/// Re-reads the given keys in one pipeline.
fn reread(
    con: &mut redis::Connection,
    rules: &[Rule],
    targets: &[(usize, String)],
    windows_ms: &[u64],
) -> Result<Vec<Cached>> {
    let mut pipe = redis::pipe();
    let number_keys: Vec<String> = targets
        .iter()
        .filter(|(ri, _)| rules[*ri].kind == Kind::Number)
        .map(|(ri, id)| rules[*ri].key(id))
        .collect();
    if !number_keys.is_empty() {
        pipe.cmd("MGET").arg(&number_keys);
    }
    for (ri, id) in targets {
        if rules[*ri].takes_window() {
            let key = rules[*ri].key(id);
            pipe.cmd("EXISTS").arg(&key);
            pipe.cmd("ZRANGEBYSCORE")
                .arg(&key)
                .arg(windows_ms[*ri])
                .arg("+inf");
        }
    }
    let replies: Vec<Value> = pipe.query(con)?;
    let mut replies = replies.into_iter();
    let numbers = if number_keys.is_empty() {
        Vec::new()
    } else {
        match replies.next() {
            Some(Value::Array(values)) => values,
            _ => return Err("MGET reply missing".into()),
        }
    };
    let mut numbers = numbers.into_iter();
    let mut out = Vec::with_capacity(targets.len());
    for (ri, _) in targets {
        let cached = if rules[*ri].takes_window() {
            let exists = matches!(replies.next(), Some(Value::Int(1)));
            match replies.next() {
                Some(Value::Array(members)) if exists => window_sum(&members),
                _ => Cached::Absent,
            }
        } else {
            match numbers.next() {
                Some(Value::BulkString(b)) => parse_number(&b),
                _ => Cached::Absent,
            }
        };
        out.push(cached);
    }
    Ok(out)
}

/// Runs the whole check against PostgreSQL at `pg_url` and Redis at `redis_url`.
pub fn run(pg_url: &str, redis_url: &str, rules: &[Rule]) -> Result<ClientReport> {
    let mut report = ClientReport::default();
    // One instant for SQL and ZSETs, to the millisecond (ZSET scores are ms).
    let now_ms = epoch_ms(SystemTime::now());
    let mut windows_ms = Vec::new();
    for rule in rules {
        windows_ms.push(match rule.kind {
            Kind::Window { window_ms } => now_ms - window_ms,
            Kind::Number => 0,
        });
    }
    let mut redis_con = redis::Client::open(redis_url)?.get_connection()?;
    let windows_ms = &windows_ms;

    // Round one: truth queries in parallel threads, keyspace on this one.
    let (truths, caches) = std::thread::scope(|s| -> Result<_> {
        let handles: Vec<_> = rules
            .iter()
            .enumerate()
            .map(|(ri, rule)| {
                s.spawn(move || -> Result<(Client, TruthMap, Duration)> {
                    let started = Instant::now();
                    let mut pg = connect(pg_url)?;
                    let map = query_truth(&mut pg, rule, from_epoch_ms(windows_ms[ri]))?;
                    Ok((pg, map, started.elapsed()))
                })
            })
            .collect();
        let started = Instant::now();
        let caches = scan_cache(&mut redis_con, rules, windows_ms);
        report.keyspace = started.elapsed();
        let mut truths = Vec::new();
        for h in handles {
            let (pg, map, took) = h.join().map_err(|_| "truth thread panicked")??;
            report.truth = report.truth.max(took);
            truths.push((pg, map));
        }
        Ok((truths, caches?))
    })?;

    let mut found: Vec<(usize, String, Status)> = Vec::new();
    for (ri, ((_, truth), cache)) in truths.iter().zip(&caches).enumerate() {
        report.checked += cache.len() as u64;
        for (id, cached) in cache {
            if let Some(st) = status(*cached, truth.get(id).copied()) {
                found.push((ri, id.clone(), st));
            }
        }
    }
    report.round_one = found.len();
    drop(caches);

    // Verification: truth for just those ids (parallel), keys re-read.
    let started = Instant::now();
    let mut connections: Vec<Client> = truths.into_iter().map(|(pg, _)| pg).collect();
    let verified = if found.is_empty() {
        Vec::new()
    } else {
        let fresh = std::thread::scope(|s| -> Result<Vec<TruthMap>> {
            let handles: Vec<_> = connections
                .iter_mut()
                .enumerate()
                .map(|(ri, pg)| {
                    let ids: Vec<String> = found
                        .iter()
                        .filter(|(r, _, _)| *r == ri)
                        .map(|(_, id, _)| id.clone())
                        .collect();
                    let rule = &rules[ri];
                    let start = from_epoch_ms(windows_ms[ri]);
                    s.spawn(move || query_truth_ids(pg, rule, &ids, start))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| "verify thread panicked")?)
                .collect()
        })?;
        let targets: Vec<(usize, String)> =
            found.iter().map(|(ri, id, _)| (*ri, id.clone())).collect();
        let reread = reread(&mut redis_con, rules, &targets, windows_ms)?;
        found
            .into_iter()
            .zip(reread)
            .filter(|((ri, id, before), cached)| {
                status(*cached, fresh[*ri].get(id).copied()) == Some(*before)
            })
            .map(|(f, _)| f)
            .collect()
    };
    report.verify = started.elapsed();
    report.findings = verified
        .into_iter()
        .map(|(ri, id, st)| {
            (
                rules[ri].name.to_string(),
                rules[ri].key(&id),
                st.name().to_string(),
            )
        })
        .collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_windows() {
        let members = vec![
            Value::BulkString(b"1700000000000:1.5".to_vec()),
            Value::BulkString(b"1700000000001:42:2.25".to_vec()),
        ];
        assert_eq!(window_sum(&members), Cached::Number(3.75));
        let bad = vec![Value::BulkString(b"1700000000000:x".to_vec())];
        assert_eq!(window_sum(&bad), Cached::Invalid);
    }

    #[test]
    fn statuses() {
        assert_eq!(status(Cached::Number(10.0), Some(4.0)), Some(Status::Drift));
        assert_eq!(status(Cached::Number(9.0), Some(4.0)), None);
        assert_eq!(status(Cached::Number(1.0), None), Some(Status::Orphan));
        assert_eq!(status(Cached::Invalid, Some(1.0)), Some(Status::Invalid));
        assert_eq!(status(Cached::Absent, None), None);
    }
}
