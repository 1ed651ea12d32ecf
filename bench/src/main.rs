//! consistency-bench: the driver of scripts/bench.sh.
//!
//! For each size it generates a seed 000 ledger in PostgreSQL and the cache in a
//! redis-server of its own (module loaded), injects drift, and times, in the
//! same run: the truth SQL alone (psql), CONSISTENCY.CHECK, a client-side
//! checker, the seed's per-user loop (sampled), FIX of one id, FIX ALL and
//! PURGE, watching redis-server's peak RSS and the longest PING of a second
//! client during each. Prints markdown tables, and writes them into
//! docs/BENCHMARKS.md between its markers when asked.

mod checker;
mod data;
mod monitor;
mod perf;
mod pg;
mod report;
mod rules;
mod seed;
mod server;
mod util;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use data::{Finding, Size, SIZES};
use monitor::{observe, Observed};
use report::{Machine, OpRow, RunRow, SizeReport};
use rules::{Rule, SCAN_MATCH, WINDOW_MS};
use server::{RedisServer, ServerConfig};
use util::{epoch_ms, fmt_dur, fmt_int, median, Result};

const USAGE: &str = "\
usage: consistency-bench --module PATH [options]

  --module PATH        the built libredis_consistency.so (required)
  --pg CONNINFO        PostgreSQL, libpq key=value without dbname
                       (default: host=127.0.0.1 port=5432 user=postgres)
  --sizes LIST         comma-separated: small, medium, large (default: all)
  --quick              the small size only
  --repeat N           interleaved runs of truth SQL, CHECK and client checker,
                       reported as the median (default: 5, or 3 at the large size)
  --seed-sample N      users the per-user loop is timed on (default 200)
  --fix-samples N      single-id FIXes timed (default 200)
  --workdir DIR        where configs and logs go (default: a new dir in /tmp)
  --doc PATH           write the tables into PATH between the generated markers
  --keep-db            leave the databases behind
  --perf               perf record -g redis-server during the first CHECK of each
                       size (perf-check-<size>.data/.txt in the workdir)
  --redis-server PATH  (default: redis-server)
  --psql PATH          (default: psql)
";

struct Options {
    module: PathBuf,
    pg_base: String,
    sizes: Vec<Size>,
    repeat: Option<usize>,
    seed_sample: usize,
    fix_samples: usize,
    workdir: Option<PathBuf>,
    doc: Option<PathBuf>,
    keep_db: bool,
    perf: bool,
    redis_server: String,
    psql: String,
}

fn parse_args() -> Result<Options> {
    let mut o = Options {
        module: PathBuf::new(),
        pg_base: "host=127.0.0.1 port=5432 user=postgres".to_string(),
        sizes: SIZES.to_vec(),
        repeat: None,
        seed_sample: 200,
        fix_samples: 200,
        workdir: None,
        doc: None,
        keep_db: false,
        perf: false,
        redis_server: "redis-server".to_string(),
        psql: "psql".to_string(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--module" => o.module = PathBuf::from(value("--module")?),
            "--pg" => o.pg_base = value("--pg")?,
            "--sizes" => {
                let list = value("--sizes")?;
                o.sizes = list
                    .split(',')
                    .map(|name| {
                        SIZES
                            .iter()
                            .find(|s| s.name == name.trim())
                            .copied()
                            .ok_or(format!("unknown size {name:?} (small, medium, large)"))
                    })
                    .collect::<std::result::Result<_, _>>()?;
            }
            "--quick" => o.sizes = vec![SIZES[0]],
            "--repeat" => o.repeat = Some(value("--repeat")?.parse::<usize>()?.max(1)),
            "--seed-sample" => o.seed_sample = value("--seed-sample")?.parse::<usize>()?.max(1),
            "--fix-samples" => o.fix_samples = value("--fix-samples")?.parse::<usize>()?.max(1),
            "--workdir" => o.workdir = Some(PathBuf::from(value("--workdir")?)),
            "--doc" => o.doc = Some(PathBuf::from(value("--doc")?)),
            "--keep-db" => o.keep_db = true,
            "--perf" => o.perf = true,
            "--redis-server" => o.redis_server = value("--redis-server")?,
            "--psql" => o.psql = value("--psql")?,
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
    if !o.module.is_file() {
        return Err(format!("module {} not found", o.module.display()).into());
    }
    o.module = o.module.canonicalize()?;
    Ok(o)
}

fn main() {
    if let Err(e) = real_main() {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        eprintln!("consistency-bench: error: {message}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let o = parse_args()?;
    let workdir = match &o.workdir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("consistency-bench.{}", std::process::id())),
    };
    std::fs::create_dir_all(&workdir)?;
    let workdir = workdir.canonicalize()?;
    // A private copy: a rebuild must not rewrite the file under a running server.
    let module = workdir.join("libredis_consistency.so");
    std::fs::copy(&o.module, &module)?;
    let started = Instant::now();
    let mut machine = Machine::probe(&o.redis_server, &data::db_url(&o.pg_base, "postgres"))?;
    eprintln!(
        "consistency-bench: {} CPUs, {:.1} GiB, {}; {}; PostgreSQL {}; load {}",
        machine.nproc,
        machine.mem_gib,
        machine.cpu,
        machine.redis,
        machine.postgres,
        machine.load_start
    );
    let mut reports = Vec::new();
    for size in &o.sizes {
        eprintln!(
            "\n== {} ({} users, {} ledger rows) ==",
            size.name,
            fmt_int(size.users as u64),
            fmt_int(size.rows() as u64)
        );
        let db = format!("consistency_bench_{}", size.name);
        data::recreate_db(&o.pg_base, &db)?;
        let result = run_size(&o, &module, size, &db, &workdir);
        if !o.keep_db {
            if let Err(e) = data::drop_db(&o.pg_base, &db) {
                eprintln!("consistency-bench: could not drop database {db}: {e}");
            }
        }
        let report = result?;
        println!("{}", report::size_markdown(&report));
        reports.push(report);
    }
    machine.load_end = util::load_average();
    machine.total = started.elapsed();
    let md = report::full_markdown(&machine, &reports);
    println!("{md}");
    std::fs::write(workdir.join("results.md"), &md)?;
    if let Some(doc) = &o.doc {
        report::write_into_doc(doc, &md)?;
        eprintln!("consistency-bench: wrote {}", doc.display());
    }
    eprintln!("consistency-bench: done in {}", fmt_dur(started.elapsed()));
    Ok(())
}

fn step(what: &str) {
    eprintln!("  {what}");
}

fn run_size(
    o: &Options,
    module: &Path,
    size: &Size,
    db: &str,
    workdir: &Path,
) -> Result<SizeReport> {
    let rules = rules::all();
    let pg_url = data::db_url(&o.pg_base, db);
    let mut pg = data::connect(&pg_url)?;
    step("loading the ledger (generate_series)");
    let load = data::load(&mut pg, size)?;
    step(&format!(
        "  {} rows in {} (+ indexes {}, vacuum {}; {} MB)",
        fmt_int(size.rows() as u64),
        fmt_dur(load.insert),
        fmt_dur(load.index),
        fmt_dur(load.vacuum),
        load.table_mb
    ));

    let rules_path = workdir.join(format!("rules-{}.json", size.name));
    std::fs::write(&rules_path, rules::rules_file(&rules))?;
    let server = RedisServer::start(&ServerConfig {
        redis_server: &o.redis_server,
        module,
        rules_file: &rules_path,
        pg_url: &pg_url,
        dir: workdir,
        name: size.name,
        extra: "",
    })?;
    let url = server.url();
    let mut con = server.connect()?;
    step("filling the cache");
    let filled = data::fill(&mut pg, &mut con, &rules)?;
    step(&format!(
        "  {} keys, {} ZSET members, {} injected findings, in {}",
        fmt_int(filled.keys),
        fmt_int(filled.zset_members),
        fmt_int(filled.expected.len() as u64),
        fmt_dur(filled.took)
    ));
    let rss_at_rest = util::proc_status_kb(server.pid, "VmRSS").unwrap_or(0);

    let mut report = SizeReport {
        size: *size,
        load,
        keys: filled.keys,
        zset_members: filled.zset_members,
        injected: filled.expected.len(),
        fill: filled.took,
        rss_at_rest_kb: rss_at_rest,
        ..SizeReport::default()
    };

    // Warm PostgreSQL's and the OS's caches once, untimed.
    step("warming up (truth SQL once)");
    truth_sql(o, &pg_url, &rules)?;

    let mut floors = Vec::new();
    let mut checks = Vec::new();
    let mut clients = Vec::new();
    let mut floor_obs = Observed::default();
    let mut check_obs = Observed::default();
    let mut client_obs = Observed::default();
    // Per run: (wall, note); the note shown is the median run's.
    let mut check_notes: Vec<(Duration, String)> = Vec::new();
    let mut client_notes: Vec<(Duration, String)> = Vec::new();
    let mut check_found = BTreeSet::new();
    let mut client_found = BTreeSet::new();
    let repeat = o.repeat.unwrap_or(size.repeat);
    report.repeat = repeat;
    for rep in 1..=repeat {
        step(&format!("run {rep}/{repeat}: truth SQL (psql)"));
        let (floor, _, obs) = observe(&url, server.pid, || truth_sql(o, &pg_url, &rules))?;
        floors.push(floor.query_time);
        floor_obs = floor_obs.worst(obs);

        step(&format!("run {rep}/{repeat}: CONSISTENCY.CHECK"));
        let perf = if o.perf && rep == 1 {
            Some(perf::Recording::start(
                server.pid,
                workdir,
                &format!("check-{}", size.name),
            )?)
        } else {
            None
        };
        let (reply, wall, obs) = observe(&url, server.pid, || {
            let reply: String = redis::cmd("CONSISTENCY.CHECK")
                .arg("LIMIT")
                .arg(filled.keys.max(1))
                .arg("FORMAT")
                .arg("json")
                .query(&mut con)?;
            Ok(reply)
        })?;
        if let Some(perf) = perf {
            perf.finish()?;
        }
        let check = parse_check(&reply)?;
        if check.truncated > 0 {
            return Err(format!("CHECK left out {} entries", check.truncated).into());
        }
        checks.push(wall);
        check_obs = check_obs.worst(obs);
        let check_note = format!(
            "module: truth {} ms, {} rounds",
            check.truth_ms, check.rounds
        );
        check_notes.push((wall, check_note));
        check_found = check.findings;

        step(&format!("run {rep}/{repeat}: client-side checker"));
        let (client, wall, obs) =
            observe(&url, server.pid, || checker::run(&pg_url, &url, &rules))?;
        clients.push(wall);
        client_obs = client_obs.worst(obs);
        let client_note = format!(
            "truth {} ∥ keyspace {}, verify {}",
            fmt_dur(client.truth),
            fmt_dur(client.keyspace),
            fmt_dur(client.verify)
        );
        client_notes.push((wall, client_note));
        client_found = client.findings;
        eprintln!(
            "    truth SQL {}, CHECK {}, client {}",
            fmt_dur(*floors.last().unwrap_or(&Duration::ZERO)),
            fmt_dur(*checks.last().unwrap_or(&Duration::ZERO)),
            fmt_dur(wall)
        );
    }
    let floor = median(floors.clone());
    report.truth_sql = floor;
    report.runs.push(RunRow {
        name: format!(
            "truth SQL alone (psql, {} queries in sequence)",
            rules.len()
        ),
        wall: floor,
        all: floors,
        extrapolated: false,
        observed: floor_obs,
        found: "—".to_string(),
        note: "sum of `\\timing`".to_string(),
    });
    let agree = compare_sets(
        "CONSISTENCY.CHECK",
        &check_found,
        "injected",
        &filled.expected,
    ) && compare_sets(
        "client-side checker",
        &client_found,
        "injected",
        &filled.expected,
    );
    let same = compare_sets(
        "CONSISTENCY.CHECK",
        &check_found,
        "client-side checker",
        &client_found,
    );
    report.findings_agree = agree && same;
    let mark = |found: &BTreeSet<Finding>| {
        let ok = *found == filled.expected;
        format!(
            "{} {}",
            fmt_int(found.len() as u64),
            if ok { "✓" } else { "✗ MISMATCH" }
        )
    };
    report.check = median(checks.clone());
    report.runs.push(RunRow {
        name: "`CONSISTENCY.CHECK` (all rules)".to_string(),
        wall: report.check,
        all: checks,
        extrapolated: false,
        observed: check_obs.clone(),
        found: mark(&check_found),
        note: median_note(check_notes),
    });
    report.client = median(clients.clone());
    report.runs.push(RunRow {
        name: "client-side checker (Rust, see above)".to_string(),
        wall: report.client,
        all: clients,
        extrapolated: false,
        observed: client_obs,
        found: mark(&client_found),
        note: median_note(client_notes),
    });

    // The seed's per-user loop on an even sample of users.
    let n = o.seed_sample.min(size.users as usize).max(1);
    let stride = size.users / n as i64;
    let sample: Vec<i64> = (0..n as i64).map(|i| 1 + i * stride).collect();
    let script = workdir.join("seed_loop.sh");
    std::fs::write(&script, seed::SCRIPT)?;
    step(&format!("seed per-user loop on {n} users"));
    let (seed_found, wall, obs) = observe(&url, server.pid, || {
        seed::run(&script, &pg_url, server.port, &sample)
    })?;
    let sample_set: BTreeSet<String> = sample.iter().map(i64::to_string).collect();
    let expected_in_sample: BTreeSet<(String, String, String)> = filled
        .expected
        .iter()
        .filter_map(|(rule, key, status)| {
            let r = rules.iter().find(|r| r.name == rule)?;
            let id = String::from_utf8(r.id_of(key.as_bytes())?.to_vec()).ok()?;
            sample_set
                .contains(&id)
                .then(|| (status.clone(), rule.clone(), id))
        })
        .collect();
    let seed_ok = seed_found == expected_in_sample;
    if !seed_ok {
        eprintln!(
            "!!! MISMATCH: the seed loop found {:?} in its sample, expected {:?}",
            seed_found, expected_in_sample
        );
    }
    let extrapolated = wall.mul_f64(size.users as f64 / n as f64);
    report.runs.push(RunRow {
        name: format!("seed per-user loop (extrapolated from {n} users)"),
        wall: extrapolated,
        all: vec![extrapolated],
        extrapolated: true,
        observed: obs,
        found: format!(
            "{} in sample {}",
            seed_found.len(),
            if seed_ok { "✓" } else { "✗ MISMATCH" }
        ),
        note: format!(
            "{} for {n} users, {:.1} ms per user",
            fmt_dur(wall),
            wall.as_secs_f64() * 1e3 / n as f64
        ),
    });

    // CHECK CHANGED after the keys of 1% of the users were written (an EXPIRE
    // then a PERSIST per key: a keyspace event each, no value changed). The
    // CHECKs above were the baseline; its findings among those users are what
    // CHANGED must report.
    step("CHECK CHANGED after 1% of the users' keys were written");
    let _: String = redis::cmd("CONSISTENCY.CHECK")
        .arg("CHANGED")
        .arg("FORMAT")
        .arg("json")
        .query(&mut con)?;
    let touched: BTreeSet<String> = (1..=size.users)
        .step_by(100)
        .map(|id| id.to_string())
        .collect();
    for chunk in touched.iter().collect::<Vec<_>>().chunks(1000) {
        let mut p = redis::pipe();
        for id in chunk {
            for rule in &rules {
                let key = rule.key(id);
                p.cmd("EXPIRE").arg(&key).arg(100_000_000).ignore();
                p.cmd("PERSIST").arg(&key).ignore();
            }
        }
        p.query::<()>(&mut con)?;
    }
    let (reply, wall, obs) = observe(&url, server.pid, || {
        let reply: String = redis::cmd("CONSISTENCY.CHECK")
            .arg("CHANGED")
            .arg("LIMIT")
            .arg(filled.keys.max(1))
            .arg("FORMAT")
            .arg("json")
            .query(&mut con)?;
        Ok(reply)
    })?;
    let v: serde_json::Value = serde_json::from_str(&reply)?;
    let changed = parse_check(&reply)?;
    let id_of = |key: &str| -> String {
        key.strip_prefix(rules::PREFIX)
            .and_then(|rest| rest.split(':').next())
            .unwrap_or_default()
            .to_string()
    };
    let expected: BTreeSet<Finding> = check_found
        .iter()
        .filter(|(_, key, _)| touched.contains(&id_of(key)))
        .cloned()
        .collect();
    let exact = v["mode"] == "changed" && changed.findings == expected;
    if !exact {
        eprintln!(
            "!!! CHECK CHANGED ({}) found {} findings, the full CHECK {} among those users",
            v["mode"],
            changed.findings.len(),
            expected.len()
        );
    }
    report.ops.push(OpRow {
        name: format!(
            "`CONSISTENCY.CHECK CHANGED` ({} of {} users written since the last check)",
            fmt_int(touched.len() as u64),
            fmt_int(size.users as u64)
        ),
        result: format!(
            "{} ({:.3}× CHECK, {:.3}× truth SQL): {} keys, {} findings, {}",
            fmt_dur(wall),
            wall.as_secs_f64() / report.check.as_secs_f64().max(1e-9),
            wall.as_secs_f64() / report.truth_sql.as_secs_f64().max(1e-9),
            fmt_int(v["checked"].as_u64().unwrap_or(0)),
            fmt_int(changed.drifted),
            if exact {
                "exactly the full CHECK's findings among them"
            } else {
                "NOT the full CHECK's findings among them"
            }
        ),
        observed: obs,
    });

    // A json rule next to number: the weekly totals again, as JSON documents
    // (`user:<id>:stats` = {"weekly": <the number key's text>, "plan": "pro"}),
    // checked rule by rule; then the documents go and the rules come back.
    step("a json rule next to the number rule (weekly totals as documents)");
    let json_rules_path = workdir.join(format!("rules-{}-json.json", size.name));
    let mut with_json: Vec<serde_json::Value> = rules.iter().map(Rule::to_json).collect();
    with_json.push(serde_json::json!({
        "name": "weekly_json",
        "kind": "json",
        "key": format!("{}{{id}}:stats", rules::PREFIX),
        "truth": format!("SELECT t.id, t.weekly FROM ({}) AS t(id, weekly)", rules::WEEKLY_TRUTH),
        "threshold": rules::THRESHOLD,
    }));
    std::fs::write(
        &json_rules_path,
        serde_json::to_string_pretty(&serde_json::json!({ "rules": with_json }))?,
    )?;
    let weekly = &rules[0];
    let ids: Vec<i64> = (1..=size.users).collect();
    for chunk in ids.chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(|id| weekly.key(&id.to_string())).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con)?;
        let mut p = redis::pipe();
        for (id, value) in chunk.iter().zip(values) {
            if let Some(value) = value {
                let doc = format!("{{\"weekly\":{value},\"plan\":\"pro\"}}");
                p.cmd("SET")
                    .arg(format!("{}{id}:stats", rules::PREFIX))
                    .arg(doc)
                    .ignore();
            }
        }
        p.query::<()>(&mut con)?;
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("consistency.rules-file")
        .arg(json_rules_path.display().to_string())
        .query(&mut con)?;
    let mut timed = |rule: &str| -> Result<(Duration, BTreeSet<String>, u64)> {
        let mut walls = Vec::new();
        let mut ids = BTreeSet::new();
        let mut checked = 0;
        for _ in 0..3 {
            let started = Instant::now();
            let reply: String = redis::cmd("CONSISTENCY.CHECK")
                .arg("RULE")
                .arg(rule)
                .arg("LIMIT")
                .arg(filled.keys.max(1))
                .arg("FORMAT")
                .arg("json")
                .query(&mut con)?;
            walls.push(started.elapsed());
            let v: serde_json::Value = serde_json::from_str(&reply)?;
            checked = v["checked"].as_u64().unwrap_or(0);
            ids = v["entries"]
                .as_array()
                .map(|es| {
                    es.iter()
                        .map(|e| format!("{}:{}", e["id"], e["status"]))
                        .collect()
                })
                .unwrap_or_default();
        }
        Ok((median(walls), ids, checked))
    };
    let (number_wall, number_ids, number_keys) = timed("cost_weekly")?;
    let (json_wall, json_ids, json_keys) = timed("weekly_json")?;
    let _: redis::Value = redis::cmd("CONSISTENCY.PURGE")
        .arg("RULE")
        .arg("weekly_json")
        .query(&mut con)?;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("consistency.rules-file")
        .arg(rules_path.display().to_string())
        .query(&mut con)?;
    let per_key = |wall: Duration, keys: u64| wall.as_secs_f64() * 1e6 / keys.max(1) as f64;
    let same = number_ids == json_ids;
    if !same {
        eprintln!(
            "!!! the json rule found {} findings, the number rule {}",
            json_ids.len(),
            number_ids.len()
        );
    }
    report.ops.push(OpRow {
        name: "`CONSISTENCY.CHECK RULE` json vs number (the same weekly totals)".to_string(),
        result: format!(
            "json {} for {} keys ({:.2} µs/key) vs number {} for {} keys ({:.2} µs/key): {:.2}×; {}",
            fmt_dur(json_wall),
            fmt_int(json_keys),
            per_key(json_wall, json_keys),
            fmt_dur(number_wall),
            fmt_int(number_keys),
            per_key(number_wall, number_keys),
            json_wall.as_secs_f64() / number_wall.as_secs_f64().max(1e-9),
            if same {
                "the same findings"
            } else {
                "NOT the same findings"
            }
        ),
        observed: Observed::default(),
    });

    // FIX of one id, one at a time, on ids with nothing wrong.
    let nfix = o.fix_samples.min(size.users as usize / 2).max(1);
    let stride = size.users / nfix as i64;
    let fix_ids: Vec<i64> = (0..nfix as i64)
        .map(|i| 1 + stride / 2 + i * stride)
        .map(|mut id| {
            while data::is_orphan(id) || (0..rules.len()).any(|r| data::is_drifted(id, r)) {
                id += 1;
            }
            id
        })
        .collect();
    step(&format!("FIX of one id, {nfix} times"));
    let (lat, _, obs) = observe(&url, server.pid, || {
        let mut lat = Vec::with_capacity(fix_ids.len());
        for id in &fix_ids {
            let started = Instant::now();
            let _: redis::Value = redis::cmd("CONSISTENCY.FIX").arg(*id).query(&mut con)?;
            lat.push(started.elapsed());
        }
        Ok(lat)
    })?;
    report.ops.push(OpRow {
        name: format!("`CONSISTENCY.FIX <id>` ({nfix} ids, one at a time)"),
        result: format!(
            "median {}, p95 {}, max {}",
            fmt_dur(median(lat.clone())),
            fmt_dur(util::quantile(lat.clone(), 0.95)),
            fmt_dur(lat.iter().max().copied().unwrap_or_default())
        ),
        observed: obs,
    });
    report.fix_one = median(lat);

    step("FIX ALL");
    let (reply, wall, obs) = observe(&url, server.pid, || {
        let reply: String = redis::cmd("CONSISTENCY.FIX")
            .arg("ALL")
            .arg("FORMAT")
            .arg("json")
            .query(&mut con)?;
        Ok(reply)
    })?;
    let v: serde_json::Value = serde_json::from_str(&reply)?;
    let changed = v["changed"].as_u64().unwrap_or(0);
    let drifted = v["drifted"].as_u64().unwrap_or(0);
    report.fix_all_obs = obs.clone();
    report.ops.push(OpRow {
        name: "`CONSISTENCY.FIX ALL`".to_string(),
        result: format!(
            "{} ({:.2}× CHECK): {} findings, {} keys deleted",
            fmt_dur(wall),
            wall.as_secs_f64() / report.check.as_secs_f64().max(1e-9),
            fmt_int(drifted),
            fmt_int(changed)
        ),
        observed: obs,
    });

    step("CHECK after FIX ALL");
    let reply: String = redis::cmd("CONSISTENCY.CHECK")
        .arg("FORMAT")
        .arg("json")
        .query(&mut con)?;
    let after = parse_check(&reply)?;
    report.after_fix = after.drifted;
    if after.drifted != 0 {
        eprintln!("!!! {} findings remain after FIX ALL", after.drifted);
    }

    step("PURGE");
    let (reply, wall, obs) = observe(&url, server.pid, || {
        let reply: redis::Value = redis::cmd("CONSISTENCY.PURGE")
            .arg("MATCH")
            .arg(SCAN_MATCH)
            .query(&mut con)?;
        Ok(reply)
    })?;
    let deleted = map_int(&reply, "deleted").ok_or("PURGE reply without `deleted`")?;
    let left: u64 = redis::cmd("DBSIZE").query(&mut con)?;
    report.purge_rate = deleted as f64 / wall.as_secs_f64().max(1e-9);
    report.purge_obs = obs.clone();
    report.purged = deleted;
    report.ops.push(OpRow {
        name: format!("`CONSISTENCY.PURGE MATCH {SCAN_MATCH}`"),
        result: format!(
            "{} keys in {}: {} keys/s{}",
            fmt_int(deleted),
            fmt_dur(wall),
            fmt_int(report.purge_rate as u64),
            if left > 0 {
                format!(" ({left} keys left!)")
            } else {
                String::new()
            }
        ),
        observed: obs,
    });
    report.check_obs = check_obs;
    let tail = server.log_tail(5);
    if tail.contains("WARNING") || tail.contains("panick") {
        eprintln!("redis-server log tail:\n{tail}");
    }
    drop(con);
    drop(server);
    Ok(report)
}

/// The note of the run whose wall time is the median.
fn median_note(mut runs: Vec<(Duration, String)>) -> String {
    runs.sort_by_key(|r| r.0);
    let n = runs.len();
    runs.into_iter()
        .nth(n / 2)
        .map(|r| format!("median run: {}", r.1))
        .unwrap_or_default()
}

/// What the truth-SQL floor measured.
struct Floor {
    /// Sum of psql's `\timing` over the queries.
    query_time: Duration,
}

/// Runs every rule's truth as the module would (wrapped, ids and values as
/// text, one after another on one connection), with psql.
fn truth_sql(o: &Options, pg_url: &str, rules: &[Rule]) -> Result<Floor> {
    let window_start_ms = epoch_ms(SystemTime::now()) - WINDOW_MS;
    let mut sql = String::from("\\timing on\n");
    for rule in rules {
        let q = rule
            .wrapped_truth()
            .replace("$1", &format!("to_timestamp({window_start_ms} / 1000.0)"));
        sql.push_str(&q);
        sql.push_str(";\n");
    }
    let path = std::env::temp_dir().join(format!(
        "consistency-bench-truth.{}.sql",
        std::process::id()
    ));
    std::fs::write(&path, sql)?;
    let out = Command::new(&o.psql)
        .args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-o",
            "/dev/null",
            "-d",
            pg_url,
            "-f",
        ])
        .arg(&path)
        .output()?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        return Err(format!("psql failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let mut total = Duration::ZERO;
    let mut n = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(rest) = line.strip_prefix("Time: ") {
            let ms: f64 = rest.split_whitespace().next().unwrap_or("0").parse()?;
            total += Duration::from_secs_f64(ms / 1e3);
            n += 1;
        }
    }
    if n != rules.len() {
        return Err(format!("psql printed {n} timings for {} queries", rules.len()).into());
    }
    Ok(Floor { query_time: total })
}

struct CheckReply {
    drifted: u64,
    truncated: u64,
    truth_ms: u64,
    rounds: u64,
    findings: BTreeSet<Finding>,
}

fn parse_check(json: &str) -> Result<CheckReply> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let mut findings = BTreeSet::new();
    for e in v["entries"]
        .as_array()
        .ok_or("CHECK reply without entries")?
    {
        let s = |f: &str| e[f].as_str().unwrap_or_default().to_string();
        findings.insert((s("rule"), s("key"), s("status")));
    }
    Ok(CheckReply {
        drifted: v["drifted"].as_u64().unwrap_or(0),
        truncated: v["truncated"].as_u64().unwrap_or(0),
        truth_ms: v["truth_ms"].as_u64().unwrap_or(0),
        rounds: v["rounds"].as_u64().unwrap_or(0),
        findings,
    })
}

/// An integer field of a map reply (RESP2 flat array or RESP3 map).
fn map_int(reply: &redis::Value, field: &str) -> Option<u64> {
    use redis::Value;
    match reply {
        Value::Array(items) => items.chunks(2).find_map(|kv| match kv {
            [Value::BulkString(k), Value::Int(v)] if k == field.as_bytes() => Some(*v as u64),
            [Value::SimpleString(k), Value::Int(v)] if k == field => Some(*v as u64),
            _ => None,
        }),
        Value::Map(items) => items.iter().find_map(|(k, v)| match (k, v) {
            (Value::BulkString(k), Value::Int(v)) if k == field.as_bytes() => Some(*v as u64),
            _ => None,
        }),
        _ => None,
    }
}

/// Says loudly where two sets of findings differ; true when they are equal.
fn compare_sets(a_name: &str, a: &BTreeSet<Finding>, b_name: &str, b: &BTreeSet<Finding>) -> bool {
    if a == b {
        return true;
    }
    let only_a: Vec<_> = a.difference(b).take(10).collect();
    let only_b: Vec<_> = b.difference(a).take(10).collect();
    eprintln!(
        "\n!!! MISMATCH: {a_name} found {} findings, {b_name} {}.\n!!!   only in {a_name} ({}): {:?}\n!!!   only in {b_name} ({}): {:?}\n",
        a.len(),
        b.len(),
        a.difference(b).count(),
        only_a,
        b.difference(a).count(),
        only_b
    );
    false
}
