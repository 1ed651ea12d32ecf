//! Tests of the integration-test fixture itself (tests/common): PostgreSQL databases,
//! the seed 000 ledger, redis-server with the module loaded, reply readers. None of
//! these use the module's commands.

use crate::common;

use common::{ledger, TestPg, TestRedis};
use redis::Value;
use std::time::{Duration, Instant};

fn database_exists(name: &str) -> bool {
    // Ask from a different database than the one in question.
    let probe = TestPg::fresh();
    let n = probe
        .scalar(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{name}'"
        ))
        .unwrap();
    n == "1"
}

#[test]
fn fresh_database_is_created_and_dropped() {
    let name;
    {
        let pg = TestPg::fresh();
        name = pg.name().to_string();
        assert!(pg.url().contains(&name), "url {} names the db", pg.url());
        pg.exec("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2);");
        assert_eq!(pg.scalar("SELECT sum(x) FROM t").as_deref(), Some("3"));
        assert_eq!(
            pg.scalar("SELECT current_database()").as_deref(),
            Some(&*name)
        );
        // An open connection must not keep the database alive (DROP ... WITH (FORCE)).
        let held = pg.client();
        assert!(database_exists(&name));
        drop(pg);
        drop(held);
    }
    assert!(!database_exists(&name), "database {name} was not dropped");
}

#[test]
fn parallel_databases_are_distinct() {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                let pg = TestPg::fresh();
                ledger::create_schema(&pg);
                pg.name().to_string()
            })
        })
        .collect();
    let mut names: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4);
}

#[test]
fn ledger_load_and_truth_are_exact_and_deterministic() {
    let a = TestPg::fresh();
    ledger::create_schema(&a);
    ledger::load(&a, 50, 7, 42);
    assert_eq!(
        a.scalar("SELECT count(*) FROM users").as_deref(),
        Some("50")
    );
    assert_eq!(
        a.scalar("SELECT count(*) FROM message_request").as_deref(),
        Some("350")
    );
    // Every row counts this week, this month and in the last 5 hours.
    assert_eq!(
        a.scalar(
            "SELECT count(*) FROM message_request WHERE created_at >= date_trunc('week', now()) \
             AND created_at >= date_trunc('month', now()) \
             AND created_at >= now() - interval '5 hours' AND created_at <= now()"
        )
        .as_deref(),
        Some("350")
    );
    // Up to 15 decimals, and not all alike.
    let distinct = a
        .scalar("SELECT count(DISTINCT cost_usd) FROM message_request")
        .unwrap();
    assert!(
        distinct.parse::<i64>().unwrap() > 300,
        "{distinct} distinct costs"
    );
    let max_scale = a
        .scalar("SELECT max(scale(cost_usd::numeric - trunc(cost_usd))) FROM message_request")
        .unwrap();
    assert_eq!(max_scale, "15");

    let truth = ledger::truth_weekly(&a);
    assert_eq!(truth.len(), 50);
    assert_eq!(truth.first().unwrap().0, 1);
    assert_eq!(truth.last().unwrap().0, 50);
    // The text is PostgreSQL's own: the sum of numeric(21,15) keeps 15 decimals.
    for (id, sum) in &truth {
        let expect = a
            .scalar(&format!(
                "SELECT sum(cost_usd)::text FROM message_request WHERE user_id = {id}"
            ))
            .unwrap();
        assert_eq!(sum, &expect, "user {id}");
        let (_, frac) = sum.split_once('.').expect("decimal point");
        assert_eq!(frac.len(), 15, "{sum}");
    }

    // Same seed, same data; another seed, other data.
    let b = TestPg::fresh();
    ledger::create_schema(&b);
    ledger::load(&b, 50, 7, 42);
    assert_eq!(ledger::truth_weekly(&b), truth);
    let c = TestPg::fresh();
    ledger::create_schema(&c);
    ledger::load(&c, 50, 7, 43);
    assert_ne!(ledger::truth_weekly(&c), truth);

    // A user without rows sums to 0; a deleted user is not in the truth.
    ledger::add_user(&a, 1000, "idle");
    ledger::soft_delete_user(&a, 3);
    let truth = ledger::truth_weekly(&a);
    assert_eq!(truth.len(), 50);
    assert!(truth.iter().all(|(id, _)| *id != 3));
    assert_eq!(truth.last().unwrap(), &(1000, "0".to_string()));
    ledger::add_cost(&a, 1000, "12.8");
    assert_eq!(
        ledger::truth_weekly(&a).last().unwrap().1,
        "12.800000000000000"
    );
}

#[test]
fn window_truth_binds_the_window_start() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 5, 3, 1);
    let all = ledger::truth(
        &pg,
        ledger::WINDOW_TRUTH,
        Some("now() - interval '5 hours'"),
    );
    assert_eq!(all, ledger::truth_weekly(&pg));
    let none = ledger::truth(&pg, ledger::WINDOW_TRUTH, Some("now() + interval '1 hour'"));
    assert!(none.iter().all(|(_, v)| v == "0"), "{none:?}");
}

#[test]
fn module_path_points_at_the_built_module() {
    let p = common::module_path();
    assert!(p.ends_with("libredis_consistency.so"), "{}", p.display());
    assert!(p.is_file());
}

#[test]
fn redis_starts_with_the_module_loaded() {
    let r = TestRedis::start(&[]);
    assert_ne!(r.port(), 6379);
    let mut c = r.conn();
    let list: Value = redis::cmd("MODULE").arg("LIST").query(&mut c).unwrap();
    let names: Vec<String> = common::as_array(&list)
        .iter()
        .map(|m| common::as_str(common::field(m, "name")).to_string())
        .collect();
    assert!(names.iter().any(|n| n == "consistency"), "{names:?}");
    assert!(
        r.log().contains("Module 'consistency' loaded"),
        "{}",
        r.log()
    );
    let out = r.cli(&["PING"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
}

#[test]
fn redis_conf_values_are_quoted() {
    // A value with spaces, quotes and backslashes survives redis.conf parsing.
    let value = r#"host=127.0.0.1 user=postgres dbname=postgres application_name='a "b" \c'"#;
    let r = TestRedis::start(&[("pg-url", value), ("scan-batch", "123")]);
    let mut c = r.conn();
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("consistency.pg-url")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        got,
        vec!["consistency.pg-url".to_string(), value.to_string()]
    );
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("consistency.scan-batch")
        .query(&mut c)
        .unwrap();
    assert_eq!(got[1], "123");
}

#[test]
fn conf_quoting_survives_redis_conf_parsing() {
    // Checked on a core string config, so it holds whatever the module does.
    for value in [
        r#"a "quoted" \ value with spaces"#,
        "tab\there",
        "",
        "trailing\\",
    ] {
        let line = format!("masterauth {}", common::quote_conf(value));
        let r = TestRedis::start_without_module(&[&line]);
        let got: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("masterauth")
            .query(&mut r.conn())
            .unwrap();
        assert_eq!(got[1], value, "{line}");
    }
}

#[test]
fn redis_servers_run_side_by_side_and_stop_on_drop() {
    let a = TestRedis::start_without_module(&[]);
    let b = TestRedis::start_without_module(&["maxmemory 10mb"]);
    assert_ne!(a.port(), b.port());
    let mut ca = a.conn();
    let mut cb = b.conn();
    let _: () = redis::cmd("SET").arg("k").arg("a").query(&mut ca).unwrap();
    let got: Option<String> = redis::cmd("GET").arg("k").query(&mut cb).unwrap();
    assert_eq!(got, None);
    assert_eq!(b.info("memory")["maxmemory"], "10485760");
    let (port, dir) = (a.port(), a.dir().to_path_buf());
    drop(ca);
    drop(a);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still answers"
    );
}

#[test]
fn replies_read_the_same_in_resp2_and_resp3() {
    let r = TestRedis::start_without_module(&[]);
    let mut c2 = r.conn();
    let mut c3 = r.conn_resp3();
    let v2: Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(&mut c2)
        .unwrap();
    let v3: Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(&mut c3)
        .unwrap();
    assert!(matches!(v2, Value::Array(_)), "{v2:?}");
    assert!(matches!(v3, Value::Map(_)), "RESP3 not negotiated: {v3:?}");
    for v in [&v2, &v3] {
        assert_eq!(
            common::as_str(common::field(v, "maxmemory-policy")),
            "noeviction"
        );
        assert_eq!(common::map_of(v).len(), 1);
    }
    // Doubles: RESP3 double vs RESP2 bulk string.
    let _: () = redis::cmd("ZADD")
        .arg("z")
        .arg("1.5")
        .arg("m")
        .query(&mut c2)
        .unwrap();
    let d2: Value = redis::cmd("ZSCORE")
        .arg("z")
        .arg("m")
        .query(&mut c2)
        .unwrap();
    let d3: Value = redis::cmd("ZSCORE")
        .arg("z")
        .arg("m")
        .query(&mut c3)
        .unwrap();
    assert!(matches!(d3, Value::Double(_)), "{d3:?}");
    assert_eq!(common::as_f64(&d2), 1.5);
    assert_eq!(common::as_f64(&d3), 1.5);
    let nil: Value = redis::cmd("GET").arg("nope").query(&mut c3).unwrap();
    assert!(common::is_null(&nil));
    let err = common::call_err(&mut c2, &["INCRBY", "k", "x"]);
    assert!(err.starts_with("ERR "), "{err}");
}

#[test]
fn reply_readers_accept_both_map_shapes() {
    let flat = Value::Array(vec![
        Value::BulkString(b"checked".to_vec()),
        Value::Int(3),
        Value::SimpleString("rate".into()),
        Value::BulkString(b"0.25".to_vec()),
        Value::BulkString(b"dry_run".to_vec()),
        Value::Int(1),
    ]);
    let map = Value::Map(vec![
        (Value::SimpleString("checked".into()), Value::Int(3)),
        (Value::BulkString(b"rate".to_vec()), Value::Double(0.25)),
        (Value::SimpleString("dry_run".into()), Value::Boolean(true)),
    ]);
    for v in [&flat, &map] {
        assert_eq!(common::field_names(v), ["checked", "rate", "dry_run"]);
        assert_eq!(common::as_i64(common::field(v, "checked")), 3);
        assert_eq!(common::as_f64(common::field(v, "rate")), 0.25);
        assert!(common::as_bool(common::field(v, "dry_run")));
        assert!(common::try_field(v, "nope").is_none());
    }
    let missing = std::panic::catch_unwind(|| {
        common::field(&flat, "entries");
    })
    .unwrap_err();
    let msg = missing
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(msg.contains("checked") && msg.contains("entries"), "{msg}");
}

#[test]
fn rules_files_are_written() {
    let path = common::write_rules(&[
        common::weekly_rule_json(),
        common::monthly_rule_json(),
        common::window_rule_json(),
        common::presence_rule_json(),
    ]);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let rules = doc["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 4);
    assert_eq!(rules[0]["name"], "cost_weekly");
    assert_eq!(rules[0]["kind"], "number");
    assert_eq!(rules[0]["key"], "user:{id}:cost_weekly");
    assert_eq!(rules[0]["threshold"], 5.0);
    assert!(rules[0]["truth"]
        .as_str()
        .unwrap()
        .contains("date_trunc('week', now())"));
    assert_eq!(rules[2]["window_ms"], 18_000_000);
    common::write_rules_to(&path, &[common::weekly_rule_json()]);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["rules"].as_array().unwrap().len(), 1);
    assert_ne!(common::write_rules(&[]), path);
}

#[test]
fn a_hundred_thousand_users_load_and_fill_quickly() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    let t = Instant::now();
    ledger::load(&pg, 100_000, 1, 7);
    let load = t.elapsed();
    let r = TestRedis::start_without_module(&[]);
    let mut c = r.conn();
    let t = Instant::now();
    ledger::fill_cache_weekly(&mut c, &pg);
    let fill = t.elapsed();
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 100_000);
    let v: String = redis::cmd("GET")
        .arg("user:77777:cost_weekly")
        .query(&mut c)
        .unwrap();
    let expect = pg
        .scalar("SELECT sum(cost_usd)::text FROM message_request WHERE user_id = 77777")
        .unwrap();
    assert_eq!(v, expect);
    eprintln!("load 100k: {load:?}, fill 100k: {fill:?}");
    assert!(load < Duration::from_secs(60), "load took {load:?}");
    assert!(fill < Duration::from_secs(60), "fill took {fill:?}");
}

#[test]
fn window_cache_is_filled_like_the_application() {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, 3, 4, 9);
    let r = TestRedis::start_without_module(&[]);
    let mut c = r.conn();
    ledger::fill_cache_window(&mut c, &pg);
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg("user:2:cost_5h_rolling")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .unwrap();
    assert_eq!(members.len(), 4);
    let sum: f64 = members
        .iter()
        .map(|m| m.rsplit(':').next().unwrap().parse::<f64>().unwrap())
        .sum();
    let truth: f64 = ledger::truth_weekly(&pg)[1].1.parse().unwrap();
    assert!((sum - truth).abs() < 1e-9, "{sum} vs {truth}");
}
