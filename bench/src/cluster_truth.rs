//! consistency-bench-cluster: the driver of scripts/bench-cluster.sh.
//!
//! What a full CHECK costs PostgreSQL in a Redis Cluster against one node.
//! The seed's ledger (users, message_request) and its weekly totals cached as
//! `user:{<id>}:cost_weekly` (a `number` rule, missing keys ignored), once in
//! a plain redis-server and once spread over a three-primary cluster, each
//! node with the module. CHECK runs on the single node and on each primary in
//! turn (never two at once, so PostgreSQL is not shared), interleaved, and the
//! module's own `truth_ms` and the wall times are compared: the shards'
//! total truth time against the single node's.

mod pg;
#[allow(dead_code)]
mod server;
#[allow(dead_code)]
mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use server::{RedisServer, ServerConfig};
use util::{median, Result};

const USAGE: &str = "\
usage: consistency-bench-cluster --module PATH [options]

  --module PATH        the built libredis_consistency.so (required)
  --pg CONNINFO        PostgreSQL, libpq key=value without dbname
                       (default: host=127.0.0.1 port=5432 user=postgres)
  --users N            users (default 100000), 20 ledger rows each
  --repeat N           interleaved runs (default 3)
  --workdir DIR        where configs and logs go (default: a new dir in /tmp)
  --redis-server PATH  (default: redis-server)
  --redis-cli PATH     (default: redis-cli), for --cluster create
";

const DB: &str = "consistency_bench_cluster";
const TRUTH: &str = "SELECT u.id, COALESCE(SUM(m.cost_usd), 0) FROM users u \
LEFT JOIN message_request m ON m.user_id = u.id AND m.created_at >= date_trunc('week', now()) \
WHERE u.deleted_at IS NULL GROUP BY u.id";

struct Options {
    module: PathBuf,
    pg_base: String,
    users: u64,
    repeat: usize,
    workdir: Option<PathBuf>,
    redis_server: String,
    redis_cli: String,
}

fn parse_args() -> Result<Options> {
    let mut o = Options {
        module: PathBuf::new(),
        pg_base: "host=127.0.0.1 port=5432 user=postgres".into(),
        users: 100_000,
        repeat: 3,
        workdir: None,
        redis_server: "redis-server".into(),
        redis_cli: "redis-cli".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--module" => o.module = PathBuf::from(value("--module")?),
            "--pg" => o.pg_base = value("--pg")?,
            "--users" => o.users = value("--users")?.parse::<u64>()?.max(10),
            "--repeat" => o.repeat = value("--repeat")?.parse::<usize>()?.max(1),
            "--workdir" => o.workdir = Some(PathBuf::from(value("--workdir")?)),
            "--redis-server" => o.redis_server = value("--redis-server")?,
            "--redis-cli" => o.redis_cli = value("--redis-cli")?,
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

/// Redis Cluster's key slot: CRC16 (XMODEM) of the hash tag, mod 16384.
fn key_slot(key: &[u8]) -> u16 {
    let tag = match key.iter().position(|b| *b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|b| *b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for byte in tag {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

fn prepare_pg(pg_base: &str, users: u64) -> Result<Vec<(i64, String)>> {
    pg::recreate_db(pg_base, DB)?;
    let mut db = pg::connect(&pg::db_url(pg_base, DB))?;
    db.batch_execute(&format!(
        "CREATE UNLOGGED TABLE users (id int PRIMARY KEY, deleted_at timestamptz);
         CREATE UNLOGGED TABLE message_request (user_id int NOT NULL, cost_usd numeric(21,15) NOT NULL,
                                                created_at timestamptz NOT NULL);
         INSERT INTO users SELECT g, NULL FROM generate_series(1, {users}) g;
         INSERT INTO message_request
           SELECT 1 + (g % {users}), ((g::int8 * 7919) % 10000) / 1000.0,
                  now() - ((g::int8 * 104729) % 864000) * interval '1 second'
           FROM generate_series(1, {users} * 20) g;
         CREATE INDEX ON message_request (user_id, created_at);"
    ))?;
    db.batch_execute("VACUUM ANALYZE")?;
    let rows = db.query(
        &format!("SELECT t.id::int8, t.v::text FROM ({TRUTH}) t(id, v)"),
        &[],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A redis-server with the module, in a Redis Cluster when `cluster`.
fn start(o: &Options, dir: &Path, name: &str, rules: &Path, cluster: bool) -> Result<RedisServer> {
    let pg_url = pg::db_url(&o.pg_base, DB);
    // Each node keeps its own cluster state file in the shared directory.
    let extra = if cluster {
        format!("cluster-enabled yes\ncluster-config-file nodes-{name}.conf\ncluster-node-timeout 5000\n")
    } else {
        String::new()
    };
    RedisServer::start(&ServerConfig {
        redis_server: &o.redis_server,
        module: &o.module,
        rules_file: rules,
        pg_url: &pg_url,
        dir,
        name,
        extra: &extra,
    })
}

/// The slot ranges each node serves, from CLUSTER SLOTS.
fn owned_ranges(node: &RedisServer) -> Result<Vec<(u16, u16)>> {
    let mut c = node.connect()?;
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut c)?;
    let mut mine = Vec::new();
    for range in slots {
        let redis::Value::Array(parts) = range else {
            continue;
        };
        let (
            Some(redis::Value::Int(from)),
            Some(redis::Value::Int(to)),
            Some(redis::Value::Array(master)),
        ) = (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        if let Some(redis::Value::Int(port)) = master.get(1) {
            if *port as u16 == node.port {
                mine.push((*from as u16, *to as u16));
            }
        }
    }
    Ok(mine)
}

fn fill(node: &RedisServer, rows: &[(i64, String)], owns: impl Fn(u16) -> bool) -> Result<u64> {
    let mut c = node.connect()?;
    let mut written = 0;
    for chunk in rows.chunks(5000) {
        let mut pipe = redis::pipe();
        for (id, v) in chunk {
            let key = format!("user:{{{id}}}:cost_weekly");
            if owns(key_slot(key.as_bytes())) {
                pipe.cmd("SET").arg(key).arg(v).ignore();
                written += 1;
            }
        }
        let _: () = pipe.query(&mut c)?;
    }
    Ok(written)
}

/// One CHECK: (wall, the module's truth_ms, keys checked).
fn check(node: &RedisServer) -> Result<(Duration, u64, u64)> {
    let mut c = node.connect()?;
    let started = Instant::now();
    let json: String = redis::cmd("CONSISTENCY.CHECK")
        .arg("FORMAT")
        .arg("json")
        .query(&mut c)?;
    let wall = started.elapsed();
    let v: serde_json::Value = serde_json::from_str(&json)?;
    let n = |f: &str| v[f].as_u64().ok_or(format!("no {f} in {json:.200}"));
    Ok((wall, n("truth_ms")?, n("checked")?))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("consistency-bench-cluster: {e:?}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let o = parse_args()?;
    let dir = match &o.workdir {
        Some(d) => d.clone(),
        None => {
            std::env::temp_dir().join(format!("consistency-bench-cluster.{}", std::process::id()))
        }
    };
    fs::create_dir_all(&dir)?;
    eprintln!(
        "[bench-cluster] ledger: {} users, {} rows",
        o.users,
        o.users * 20
    );
    let rows = prepare_pg(&o.pg_base, o.users)?;
    let result = measure(&o, &dir, &rows);
    let _ = pg::drop_db(&o.pg_base, DB);
    result
}

fn measure(o: &Options, dir: &Path, rows: &[(i64, String)]) -> Result<()> {
    let rules = dir.join("rules.json");
    let rule = serde_json::json!({
        "name": "cost_weekly", "kind": "number", "key": "user:{{id}}:cost_weekly",
        "truth": TRUTH, "threshold": 5.0,
    });
    fs::write(&rules, serde_json::json!({ "rules": [rule] }).to_string())?;
    let single = start(o, dir, "single", &rules, false)?;
    let shards: Vec<RedisServer> = (0..3)
        .map(|i| start(o, dir, &format!("shard{i}"), &rules, true))
        .collect::<Result<_>>()?;
    let addrs: Vec<String> = shards
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let created = Command::new(&o.redis_cli)
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-yes"])
        .stdout(Stdio::null())
        .status()?;
    if !created.success() {
        return Err("redis-cli --cluster create failed".into());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = shards.iter().all(|n| {
            n.connect()
                .and_then(|mut c| Ok(redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c)?))
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        });
        if ok {
            break;
        }
        if Instant::now() > deadline {
            return Err("the cluster did not reach cluster_state:ok".into());
        }
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!("[bench-cluster] filling {} keys", rows.len());
    fill(&single, rows, |_| true)?;
    let mut spread = 0;
    for shard in &shards {
        let ranges = owned_ranges(shard)?;
        spread += fill(shard, rows, |slot| {
            ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot))
        })?;
    }
    if spread != rows.len() as u64 {
        return Err(format!("the shards hold {spread} keys, not {}", rows.len()).into());
    }
    // One untimed run each: connections and caches warm.
    check(&single)?;
    for shard in &shards {
        check(shard)?;
    }
    let (mut single_wall, mut single_truth) = (Vec::new(), Vec::new());
    let (mut total_truth, mut total_wall, mut max_wall) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.repeat {
        eprintln!("[bench-cluster] run {}/{}", round + 1, o.repeat);
        let (wall, truth_ms, checked) = check(&single)?;
        if checked != rows.len() as u64 {
            return Err(
                format!("the single node checked {checked} keys, not {}", rows.len()).into(),
            );
        }
        single_wall.push(wall);
        single_truth.push(Duration::from_millis(truth_ms));
        let (mut truth_sum, mut wall_sum, mut wall_max, mut checked_sum) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO, 0);
        for shard in &shards {
            let (wall, truth_ms, checked) = check(shard)?;
            truth_sum += Duration::from_millis(truth_ms);
            wall_sum += wall;
            wall_max = wall_max.max(wall);
            checked_sum += checked;
        }
        if checked_sum != rows.len() as u64 {
            return Err(
                format!("the shards checked {checked_sum} keys, not {}", rows.len()).into(),
            );
        }
        total_truth.push(truth_sum);
        total_wall.push(wall_sum);
        max_wall.push(wall_max);
    }
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let (st, sw) = (median(single_truth), median(single_wall));
    let (tt, tw, mw) = (median(total_truth), median(total_wall), median(max_wall));
    println!(
        "| {} keys, weekly totals | truth time (module's truth_ms) | CHECK wall |",
        rows.len()
    );
    println!("| --- | ---: | ---: |");
    println!("| one node | {} | {} |", ms(st), ms(sw));
    println!(
        "| three shards, total | {} | {} (slowest shard {}) |",
        ms(tt),
        ms(tw),
        ms(mw)
    );
    println!();
    println!(
        "Total truth cost of the three shards: {:.2}x one node's (target: at most 1.3x); median of {} runs.",
        tt.as_secs_f64() / st.as_secs_f64().max(1e-9),
        o.repeat
    );
    Ok(())
}
