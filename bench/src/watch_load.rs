//! consistency-bench-watch: the driver of scripts/bench-watch.sh.
//!
//! What watching costs under a steady write load. A table `balances(id, v)`
//! in PostgreSQL, a `number` rule `account:{id}:balance` over it, and an
//! application writing the true value of random ids at a fixed rate. Phases
//! alternate in one run: the rule without `watch`, then with it (CONFIG SET
//! consistency.rules-file), same load, same server. Each phase reports the
//! writes/s achieved, PING p50/p99/max on another connection (1 ms apart), and
//! for the watched phases the truth queries per second the looks sent (INFO
//! `watch_queries_total`) against `watch-max-qps`, and the samples' outcome.

mod pg;
#[allow(dead_code)]
mod server;
#[allow(dead_code)]
mod util;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use server::{RedisServer, ServerConfig};
use util::{quantile, Result};

const USAGE: &str = "\
usage: consistency-bench-watch --module PATH [options]

  --module PATH        the built libredis_consistency.so (required)
  --pg CONNINFO        PostgreSQL, libpq key=value without dbname
                       (default: host=127.0.0.1 port=5432 user=postgres)
  --rate N             writes per second (default 5000)
  --seconds N          length of each phase (default 20)
  --rounds N           unwatched/watched phase pairs (default 2)
  --ids N              rows in the table; writes pick ids at random (default 100000)
  --max-qps N          consistency.watch-max-qps (default 20)
  --workdir DIR        where configs and logs go (default: a new dir in /tmp)
  --redis-server PATH  (default: redis-server)
";

struct Options {
    module: PathBuf,
    pg_base: String,
    rate: u64,
    seconds: u64,
    rounds: usize,
    ids: u64,
    max_qps: u64,
    workdir: Option<PathBuf>,
    redis_server: String,
}

fn parse_args() -> Result<Options> {
    let mut o = Options {
        module: PathBuf::new(),
        pg_base: "host=127.0.0.1 port=5432 user=postgres".into(),
        rate: 5000,
        seconds: 20,
        rounds: 2,
        ids: 100_000,
        max_qps: 20,
        workdir: None,
        redis_server: "redis-server".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--module" => o.module = PathBuf::from(value("--module")?),
            "--pg" => o.pg_base = value("--pg")?,
            "--rate" => o.rate = value("--rate")?.parse::<u64>()?.max(100),
            "--seconds" => o.seconds = value("--seconds")?.parse::<u64>()?.max(1),
            "--rounds" => o.rounds = value("--rounds")?.parse::<usize>()?.max(1),
            "--ids" => o.ids = value("--ids")?.parse::<u64>()?.max(1),
            "--max-qps" => o.max_qps = value("--max-qps")?.parse::<u64>()?.max(1),
            "--workdir" => o.workdir = Some(PathBuf::from(value("--workdir")?)),
            "--redis-server" => o.redis_server = value("--redis-server")?,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    if o.module.as_os_str().is_empty() {
        return Err(format!("--module is required\n{USAGE}").into());
    }
    Ok(o)
}

const DB: &str = "consistency_bench_watch";

/// The true value of `id`, as the application would cache it.
fn value_of(id: u64) -> String {
    format!("{}.{}", id % 1000, id % 10)
}

fn prepare_pg(pg_base: &str, ids: u64) -> Result<()> {
    pg::recreate_db(pg_base, DB)?;
    let mut db = pg::connect(&pg::db_url(pg_base, DB))?;
    db.batch_execute(&format!(
        "CREATE TABLE balances (id int PRIMARY KEY, v numeric NOT NULL);
         INSERT INTO balances SELECT g, ((g % 1000)::text || '.' || (g % 10)::text)::numeric
           FROM generate_series(1, {ids}) g;"
    ))?;
    db.batch_execute("VACUUM ANALYZE balances")?;
    Ok(())
}

fn rules_file(dir: &std::path::Path, watch: bool) -> Result<PathBuf> {
    let path = dir.join(if watch {
        "rules-watch.json"
    } else {
        "rules-plain.json"
    });
    let rule = serde_json::json!({
        "name": "balance",
        "kind": "number",
        "key": "account:{id}:balance",
        "truth": "SELECT id, v FROM balances",
        "threshold": 0.01,
        "watch": watch,
    });
    std::fs::write(&path, serde_json::json!({ "rules": [rule] }).to_string())?;
    Ok(path)
}

/// One phase's figures.
struct Phase {
    watched: bool,
    writes: u64,
    seconds: f64,
    ping_p50: Duration,
    ping_p99: Duration,
    ping_max: Duration,
    queries: i64,
    samples: i64,
    within_1s: i64,
    dropped: i64,
}

fn info_consistency(con: &mut redis::Connection) -> Result<String> {
    Ok(redis::cmd("INFO").arg("consistency").query(con)?)
}

fn info_int(info: &str, field: &str) -> i64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn rule_int(info: &str, field: &str) -> i64 {
    info.lines()
        .find_map(|l| l.strip_prefix("consistency_rule_balance:"))
        .and_then(|dict| {
            dict.trim()
                .split(',')
                .find_map(|p| p.strip_prefix(&format!("{field}=")))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn run_phase(server: &RedisServer, o: &Options, watched: bool, seed: u64) -> Result<Phase> {
    let mut con = server.connect()?;
    let before = info_consistency(&mut con)?;
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let stop = Arc::clone(&stop);
        let mut ping = server.connect()?;
        thread::spawn(move || {
            let mut rtts = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut ping);
                if pong.is_err() {
                    break;
                }
                rtts.push(at.elapsed());
                thread::sleep(Duration::from_millis(1));
            }
            rtts
        })
    };
    // Batches every 10 ms on an absolute schedule, so the rate holds.
    let per_batch = (o.rate / 100).max(1);
    let started = Instant::now();
    let end = started + Duration::from_secs(o.seconds);
    let mut x = seed | 1;
    let mut writes = 0;
    let mut tick = 0u32;
    while Instant::now() < end {
        let mut pipe = redis::pipe();
        for _ in 0..per_batch {
            // xorshift: a cheap, deterministic spread over the ids.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = x % o.ids + 1;
            pipe.cmd("SET")
                .arg(format!("account:{id}:balance"))
                .arg(value_of(id))
                .ignore();
        }
        let _: () = pipe.query(&mut con)?;
        writes += per_batch;
        tick += 1;
        let next = started + Duration::from_millis(10) * tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = info_consistency(&mut con)?;
    stop.store(true, Ordering::Relaxed);
    let rtts = pinger.join().map_err(|_| "the PING thread panicked")?;
    let delta = |f: &str| info_int(&after, f) - info_int(&before, f);
    let rule_delta = |f: &str| rule_int(&after, f) - rule_int(&before, f);
    Ok(Phase {
        watched,
        writes,
        seconds,
        ping_p50: quantile(rtts.clone(), 0.5),
        ping_p99: quantile(rtts.clone(), 0.99),
        ping_max: rtts.iter().copied().max().unwrap_or_default(),
        queries: delta("consistency_watch_queries_total"),
        samples: rule_delta("watch_samples"),
        within_1s: rule_delta("watch_within_1s"),
        dropped: rule_delta("watch_dropped"),
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("consistency-bench-watch: {e:?}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let o = parse_args()?;
    let dir = match &o.workdir {
        Some(d) => d.clone(),
        None => {
            let d = std::env::temp_dir()
                .join(format!("consistency-bench-watch.{}", std::process::id()));
            std::fs::create_dir_all(&d)?;
            d
        }
    };
    eprintln!("[bench-watch] table of {} ids in {DB}", o.ids);
    prepare_pg(&o.pg_base, o.ids)?;
    let result = measure(&o, &dir);
    let _ = pg::drop_db(&o.pg_base, DB);
    result
}

fn measure(o: &Options, dir: &std::path::Path) -> Result<()> {
    let plain = rules_file(dir, false)?;
    let watched = rules_file(dir, true)?;
    let pg_url = pg::db_url(&o.pg_base, DB);
    let server = RedisServer::start(&ServerConfig {
        redis_server: &o.redis_server,
        module: &o.module,
        rules_file: &plain,
        pg_url: &pg_url,
        dir,
        name: "watch",
        extra: "",
    })?;
    let mut con = server.connect()?;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("consistency.watch-max-qps")
        .arg(o.max_qps.to_string())
        .query(&mut con)?;
    let mut phases = Vec::new();
    for round in 0..o.rounds {
        for watch in [false, true] {
            let file = if watch { &watched } else { &plain };
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("consistency.rules-file")
                .arg(file.display().to_string())
                .query(&mut con)?;
            // Let the previous phase's looks drain.
            thread::sleep(Duration::from_secs(2));
            eprintln!(
                "[bench-watch] round {} {}",
                round + 1,
                if watch { "watched" } else { "unwatched" }
            );
            phases.push(run_phase(&server, o, watch, 0x9e37_79b9 + round as u64)?);
        }
    }
    println!(
        "| phase | writes/s | PING p50 | PING p99 | PING max | truth queries/s (watch-max-qps {}) | samples | consistent within 1 s | dropped |",
        o.max_qps
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for p in &phases {
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            if p.watched { "watched" } else { "not watched" },
            p.writes as f64 / p.seconds,
            ms(p.ping_p50),
            ms(p.ping_p99),
            ms(p.ping_max),
            if p.watched {
                format!("{:.1}", p.queries as f64 / p.seconds)
            } else {
                "-".into()
            },
            p.samples,
            p.within_1s,
            p.dropped,
        );
    }
    let median_p99 = |watched: bool| {
        let v: Vec<Duration> = phases
            .iter()
            .filter(|p| p.watched == watched)
            .map(|p| p.ping_p99)
            .collect();
        util::median(v)
    };
    let (off, on) = (median_p99(false), median_p99(true));
    let max_qps = phases
        .iter()
        .filter(|p| p.watched)
        .map(|p| p.queries as f64 / p.seconds)
        .fold(0.0, f64::max);
    println!();
    println!(
        "PING p99 (median of phases): watched {} vs not watched {}: {:+.2} ms (target: within 1 ms). \
         Truth queries: at most {:.1}/s (target: within watch-max-qps {}).",
        ms(on),
        ms(off),
        (on.as_secs_f64() - off.as_secs_f64()) * 1000.0,
        max_qps,
        o.max_qps
    );
    Ok(())
}
