//! The seed 000 data at a given size: users and a spend ledger in PostgreSQL,
//! generated server-side, and the cache the application would hold, with about
//! 1% of keys drifted and 0.1% of users soft-deleted (their keys are orphans).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant, SystemTime};

use postgres::Client;

use crate::rules::{Kind, Rule};
use crate::util::{epoch_ms, mix, picked, Result};

/// One benchmark size.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub name: &'static str,
    pub users: i64,
    pub rows_per_user: i64,
    /// Interleaved runs of the three main contenders (median reported).
    pub repeat: usize,
}

impl Size {
    pub fn rows(&self) -> i64 {
        self.users * self.rows_per_user
    }
}

pub const SIZES: [Size; 3] = [
    Size {
        name: "small",
        users: 20_000,
        rows_per_user: 50,
        repeat: 5,
    },
    Size {
        name: "medium",
        users: 100_000,
        rows_per_user: 50,
        repeat: 5,
    },
    Size {
        name: "large",
        users: 330_000,
        rows_per_user: 50,
        repeat: 3,
    },
];

/// A finding: (rule, key, status).
pub type Finding = (String, String, String);

/// One key in this many drifts, per rule.
pub const DRIFT_ONE_IN: u64 = 100;
/// One user in this many is soft-deleted after the cache is filled.
pub const ORPHAN_ONE_IN: u64 = 1000;
const ORPHAN_SALT: u64 = 9;
/// TTLs the application would set: a week for totals, 6 h for the window.
const NUMBER_TTL_SEC: u64 = 7 * 24 * 3600;
const WINDOW_TTL_SEC: u64 = 6 * 3600;

pub fn is_orphan(id: i64) -> bool {
    picked(id, ORPHAN_SALT, ORPHAN_ONE_IN)
}

pub fn is_drifted(id: i64, rule_index: usize) -> bool {
    !is_orphan(id) && picked(id, 1 + rule_index as u64, DRIFT_ONE_IN)
}

/// How far a drifted key is off: 10.5 to 49.5 dollars, well past the threshold.
fn drift_amount(id: i64, rule_index: usize) -> f64 {
    10.5 + (mix(id as u64 + 77 * rule_index as u64) % 40) as f64
}

pub use crate::pg::{connect, db_url, drop_db, recreate_db};

/// How long loading took, step by step.
#[derive(Debug, Default)]
pub struct LoadTimes {
    pub insert: Duration,
    pub index: Duration,
    pub vacuum: Duration,
    pub table_mb: u64,
}

/// Creates the seed 000 tables and fills them server-side with generate_series.
///
/// Every user has exactly `rows_per_user` ledger rows, interleaved across the
/// heap as a time-ordered ledger would be (`1 + n * 7919 % users` walks every
/// user once per `users` rows). 20% of rows fall in the last 6 hours (so the
/// 5-hour window holds about 8 per user), the rest over the 30 days before.
/// Costs are in [0, 0.2) with 15 decimals, as `numeric(21,15)` holds them.
/// Tables are UNLOGGED to load faster; reading them costs the same.
pub fn load(pg: &mut Client, size: &Size) -> Result<LoadTimes> {
    let mut times = LoadTimes::default();
    let started = Instant::now();
    pg.batch_execute(&format!(
        "SET maintenance_work_mem = '512MB';
         CREATE UNLOGGED TABLE users (
             id integer PRIMARY KEY,
             name text NOT NULL,
             deleted_at timestamptz
         );
         CREATE UNLOGGED TABLE message_request (
             id bigint NOT NULL,
             user_id integer NOT NULL,
             cost_usd numeric(21,15) NOT NULL,
             created_at timestamptz NOT NULL
         );
         INSERT INTO users (id, name) SELECT g, 'user' || g FROM generate_series(1, {users}) g;
         SELECT setseed(0.42);
         INSERT INTO message_request (id, user_id, cost_usd, created_at)
             SELECT n,
                    (1 + (n * 7919) % {users})::integer,
                    round((random() * 0.2)::numeric, 15),
                    date_trunc('milliseconds', now() - CASE WHEN random() < 0.2
                        THEN random() * interval '6 hours'
                        ELSE interval '6 hours' + random() * interval '30 days' END)
             FROM generate_series(1::bigint, {rows}) n;",
        users = size.users,
        rows = size.rows(),
    ))?;
    times.insert = started.elapsed();
    let started = Instant::now();
    pg.batch_execute(
        "ALTER TABLE message_request ADD PRIMARY KEY (id);
         CREATE INDEX message_request_user_created ON message_request (user_id, created_at);",
    )?;
    times.index = started.elapsed();
    let started = Instant::now();
    // Also keeps autovacuum from waking up in the middle of a timed run.
    // One statement per call: VACUUM cannot run in the implicit transaction
    // of a multi-statement string.
    pg.batch_execute("VACUUM (ANALYZE) users")?;
    pg.batch_execute("VACUUM (ANALYZE) message_request")?;
    times.vacuum = started.elapsed();
    let mb: i64 = pg
        .query_one(
            "SELECT (pg_total_relation_size('message_request') / 1048576)::bigint",
            &[],
        )?
        .get(0);
    times.table_mb = mb as u64;
    Ok(times)
}

/// What the cache holds after `fill`.
#[derive(Debug, Default)]
pub struct Filled {
    pub keys: u64,
    pub zset_members: u64,
    /// The findings a correct checker must report.
    pub expected: BTreeSet<Finding>,
    pub orphan_users: Vec<i64>,
    pub took: Duration,
}

fn flush(
    con: &mut redis::Connection,
    pipe: &mut redis::Pipeline,
    queued: &mut usize,
) -> Result<()> {
    if *queued > 0 {
        pipe.query::<()>(con)?;
        pipe.clear();
        *queued = 0;
    }
    Ok(())
}

const PIPELINE: usize = 1000;

/// Fills the cache as the application would (the truth of every user), with
/// injected drift, then soft-deletes the orphan users in PostgreSQL.
pub fn fill(pg: &mut Client, con: &mut redis::Connection, rules: &[Rule]) -> Result<Filled> {
    let started = Instant::now();
    let mut filled = Filled::default();
    let mut pipe = redis::pipe();
    let mut queued = 0;
    let fill_now_ms = epoch_ms(SystemTime::now());
    let mut users_max = 0i64;
    for (ri, rule) in rules.iter().enumerate() {
        match rule.kind {
            Kind::Number => {
                for row in pg.query(&rule.wrapped_truth(), &[])? {
                    let id: String = row.get(0);
                    let value: Option<String> = row.get(1);
                    let value = value.unwrap_or_else(|| "0".to_string());
                    let n: i64 = id.parse()?;
                    users_max = users_max.max(n);
                    let key = rule.key(&id);
                    let text = if is_drifted(n, ri) {
                        filled
                            .expected
                            .insert((rule.name.into(), key.clone(), "drift".into()));
                        format!("{}", value.parse::<f64>()? + drift_amount(n, ri))
                    } else {
                        value
                    };
                    if is_orphan(n) {
                        filled
                            .expected
                            .insert((rule.name.into(), key.clone(), "orphan".into()));
                    }
                    pipe.cmd("SET")
                        .arg(&key)
                        .arg(text)
                        .arg("EX")
                        .arg(NUMBER_TTL_SEC)
                        .ignore();
                    queued += 1;
                    if queued >= PIPELINE {
                        flush(con, &mut pipe, &mut queued)?;
                    }
                }
            }
            Kind::Window { .. } => {
                // Members for the last 6 hours: the application trims lazily, so
                // some are older than the 5-hour window and must not count.
                let mut reader = BufReader::new(pg.copy_out(
                    "COPY (SELECT user_id, (extract(epoch FROM created_at) * 1000)::bigint, \
                     cost_usd::text FROM message_request \
                     WHERE created_at >= now() - interval '6 hours' ORDER BY user_id) TO STDOUT",
                )?);
                let mut seen = std::collections::HashSet::new();
                let mut current: Option<i64> = None;
                let mut members: Vec<(u64, String)> = Vec::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    let done = reader.read_line(&mut line)? == 0;
                    let parsed = if done {
                        None
                    } else {
                        let mut f = line.trim_end().split('\t');
                        let user: i64 = f.next().ok_or("bad COPY line")?.parse()?;
                        let ms: u64 = f.next().ok_or("bad COPY line")?.parse()?;
                        let amount = f.next().ok_or("bad COPY line")?.to_string();
                        Some((user, ms, amount))
                    };
                    let next_user = parsed.as_ref().map(|p| p.0);
                    if current.is_some() && current != next_user {
                        let user = current.take().unwrap_or_default();
                        seen.insert(user);
                        add_window(
                            &mut pipe,
                            rule,
                            user,
                            ri,
                            fill_now_ms,
                            &members,
                            &mut filled,
                        );
                        queued += 2;
                        members.clear();
                        if queued >= PIPELINE {
                            flush(con, &mut pipe, &mut queued)?;
                        }
                    }
                    let Some((user, ms, amount)) = parsed else {
                        break;
                    };
                    current = Some(user);
                    members.push((ms, amount));
                }
                // Drifted users with nothing in the last 6 hours still get a key.
                for user in 1..=users_max {
                    if !seen.contains(&user) && is_drifted(user, ri) {
                        add_window(&mut pipe, rule, user, ri, fill_now_ms, &[], &mut filled);
                        queued += 2;
                        seen.insert(user);
                    }
                }
                for &user in &seen {
                    if is_orphan(user) {
                        filled.expected.insert((
                            rule.name.into(),
                            rule.key(&user.to_string()),
                            "orphan".into(),
                        ));
                    }
                }
            }
        }
    }
    flush(con, &mut pipe, &mut queued)?;
    filled.orphan_users = (1..=users_max).filter(|&id| is_orphan(id)).collect();
    let ids: Vec<i32> = filled.orphan_users.iter().map(|&id| id as i32).collect();
    pg.execute(
        "UPDATE users SET deleted_at = now() WHERE id = ANY($1)",
        &[&ids],
    )?;
    filled.keys = redis::cmd("DBSIZE").query(con)?;
    filled.took = started.elapsed();
    Ok(filled)
}

/// Queues the ZADD (and EXPIRE) of one user's window, with a drift member when
/// the user is picked.
fn add_window(
    pipe: &mut redis::Pipeline,
    rule: &Rule,
    user: i64,
    rule_index: usize,
    now_ms: u64,
    members: &[(u64, String)],
    filled: &mut Filled,
) {
    let key = rule.key(&user.to_string());
    let cmd = pipe.cmd("ZADD").arg(&key);
    for (ms, amount) in members {
        cmd.arg(*ms).arg(format!("{ms}:{amount}"));
    }
    filled.zset_members += members.len() as u64;
    if is_drifted(user, rule_index) {
        // A request the database never saw, a minute ago.
        let ms = now_ms - 60_000;
        cmd.arg(ms)
            .arg(format!("{ms}:{}", drift_amount(user, rule_index)));
        filled.zset_members += 1;
        filled
            .expected
            .insert((rule.name.into(), key.clone(), "drift".into()));
    }
    cmd.ignore();
    pipe.cmd("EXPIRE").arg(&key).arg(WINDOW_TTL_SEC).ignore();
}
