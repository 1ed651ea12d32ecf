//! Real key layouts against a real redis-server and PostgreSQL: templates with
//! several placeholders (seed 000's `key:{id}:cost_daily_{reset}`), JSON-valued
//! caches compared field by field (seed 004), staleness by `cached_at`, TTL
//! bounds, and the rules refused at load or at the first run.
//!
//! Run: `cargo test --release --features redis-consistency/test-hooks --test integration layouts::`

use crate::check_support;
use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use check_support::{check, Entry, Proto, Report};
use common::{as_array, as_i64, as_str, call_err, call_ok, field, jcall, TestPg, TestRedis};
use serde_json::json;

const DAILY: &str = "key:{id}:cost_daily_{reset}";
const STATS: &str = "zsxq:project:{id}:stats";

fn daily_rule() -> serde_json::Value {
    json!({"name": "cost_daily", "kind": "number", "key": DAILY, "missing": "report",
           "truth": "SELECT id, reset, cost AS value FROM api_keys"})
}

fn stats_rule() -> serde_json::Value {
    json!({"name": "stats", "kind": "json", "key": STATS, "threshold": 0,
           "age_field": "cached_at", "max_age_sec": 3600, "ttl_max_sec": 3600,
           "truth": "SELECT id, total_members, title, rate AS \"stats.rate\" FROM projects"})
}

fn schema(pg: &TestPg) {
    pg.exec(
        "CREATE TABLE api_keys (id integer PRIMARY KEY, reset text NOT NULL, cost numeric(21,15) NOT NULL);
         INSERT INTO api_keys VALUES (123, '1800', 4.5), (124, '0000', 2), (125, '1800', 1);
         CREATE TABLE projects (id bigint PRIMARY KEY, total_members integer, title text, rate numeric);
         INSERT INTO projects
           SELECT g, 150, 'Run', 0.85 FROM generate_series(1, 9) AS g;",
    );
}

fn now_sec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A stats document as the application caches it.
fn stats_doc(total: i64, title: &str, cached_at: serde_json::Value) -> String {
    json!({"total_members": total, "title": title, "stats": {"rate": 0.85},
           "cached_at": cached_at})
    .to_string()
}

fn setex(c: &mut redis::Connection, key: &str, ttl: u64, value: &str) {
    call_ok(c, &["SET", key, value, "EX", &ttl.to_string()]);
}

fn status_count(report: &Report, status: &str) -> i64 {
    report
        .by_status
        .iter()
        .find(|(s, _)| s == status)
        .map_or(-1, |(_, n)| *n)
}

fn sorted(mut entries: Vec<Entry>) -> Vec<Entry> {
    check_support::sort_entries(&mut entries);
    entries
}

#[test]
fn a_leftover_reset_suffix_is_an_orphan_and_fix_clears_every_key_of_the_id() {
    let pg = TestPg::fresh();
    schema(&pg);
    let rules = common::write_rules(&[daily_rule()]);
    let r = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = r.conn();
    setex(&mut c, "key:123:cost_daily_1800", 600, "4.5");
    // Key 123's reset moved from midnight to 18:00; the old key stayed behind.
    setex(&mut c, "key:123:cost_daily_0000", 600, "9");
    setex(&mut c, "key:124:cost_daily_0000", 600, "40"); // drift
                                                         // key:125:cost_daily_1800 is missing (reported). Another family's key:
    setex(&mut c, "key:125:cost_weekly", 600, "1");

    let want = sorted(vec![
        Entry::new("cost_daily", "key:{id}:cost_daily_0000", b"124", "drift")
            .cached("40")
            .truth("2.000000000000000")
            .with_diff(),
        Entry::new("cost_daily", "key:{id}:cost_daily_0000", b"123", "orphan").cached("9"),
        Entry::new("cost_daily", "key:{id}:cost_daily_1800", b"125", "missing")
            .truth("1.000000000000000"),
    ]);
    let resp3 = r.conn_resp3();
    for (proto, mut conn) in [(Proto::Resp2, r.conn()), (Proto::Resp3, resp3)] {
        let report: Report = check(&mut conn, proto, &[]);
        assert_eq!(report.entries, want, "{proto:?}");
        assert_eq!((report.checked, report.ids), (4, 3), "{proto:?}");
        assert_eq!(status_count(&report, "orphan"), 1);
    }
    // CHECK ID 123 finds the leftover too: an id's keys are found by a scan.
    let report = check(&mut c, Proto::Resp2, &["ID", "123"]);
    assert_eq!(report.entries, want[1..2].to_vec());

    // FIX 123 clears both of its keys, whatever the suffix, and nothing else.
    let dry = jcall(&mut c, &["CONSISTENCY.FIX", "123", "DRYRUN"]);
    assert_eq!(dry["changed"], 0, "{dry}");
    let fixed = jcall(&mut c, &["CONSISTENCY.FIX", "123"]);
    let mut acted: Vec<(String, String)> = fixed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["field"].is_null(), "{e}");
            (
                e["key"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    acted.sort();
    assert_eq!(
        acted,
        [
            ("key:123:cost_daily_0000".to_string(), "deleted".to_string()),
            ("key:123:cost_daily_1800".to_string(), "deleted".to_string()),
        ]
    );
    assert_eq!(fixed["changed"], 2);
    let exists = |c: &mut redis::Connection, k: &str| as_i64(&call_ok(c, &["EXISTS", k]));
    assert_eq!(exists(&mut c, "key:123:cost_daily_1800"), 0);
    assert_eq!(exists(&mut c, "key:123:cost_daily_0000"), 0);
    assert_eq!(exists(&mut c, "key:124:cost_daily_0000"), 1);
    assert_eq!(exists(&mut c, "key:125:cost_weekly"), 1);

    // PURGE RULE matches every key of the template, and only those.
    let purge = call_ok(
        &mut c,
        &["CONSISTENCY.PURGE", "RULE", "cost_daily", "DRYRUN"],
    );
    assert_eq!(as_i64(field(&purge, "matched")), 1, "{purge:?}");
}

#[test]
fn json_documents_drift_field_by_field_and_go_stale() {
    let pg = TestPg::fresh();
    schema(&pg);
    let rules = common::write_rules(&[stats_rule()]);
    let r = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = r.conn();
    let now = now_sec();
    let fresh = json!(now - 60);
    let key = |id: u32| format!("zsxq:project:{id}:stats");
    setex(&mut c, &key(1), 600, &stats_doc(150, "Run", fresh.clone())); // consistent
    setex(&mut c, &key(2), 600, &stats_doc(170, "Run", fresh.clone())); // number drift
    setex(&mut c, &key(3), 600, &stats_doc(150, "Walk", fresh.clone())); // string drift
    let nested = json!({"total_members": 150, "title": "Run", "stats": {"rate": 0.5},
                        "cached_at": fresh});
    setex(&mut c, &key(4), 600, &nested.to_string()); // nested drift
    let lacking = json!({"total_members": 150, "title": "Run", "cached_at": fresh});
    setex(&mut c, &key(5), 600, &lacking.to_string()); // stats.rate missing
    setex(&mut c, &key(6), 600, "<html>oops</html>"); // not JSON
                                                      // Two hours old, as RFC 3339 and as epoch seconds: stale whatever the fields say.
    let old = now - 7200;
    let rfc3339 = {
        let (days, rest) = (old / 86_400, old % 86_400);
        let (y, m, d) = civil(days as i64);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        )
    };
    setex(&mut c, &key(7), 600, &stats_doc(999, "Run", json!(rfc3339)));
    setex(&mut c, &key(8), 600, &stats_doc(150, "Run", json!(old)));
    // A TTL above the bound: cached for a day where the family allows an hour.
    setex(
        &mut c,
        &key(9),
        86_400,
        &stats_doc(150, "Run", fresh.clone()),
    );

    let k = STATS;
    let want = sorted(vec![
        Entry::new("stats", k, b"2", "drift")
            .cached("170")
            .truth("150")
            .with_diff()
            .field("total_members"),
        Entry::new("stats", k, b"4", "drift")
            .cached("0.5")
            .truth("0.85")
            .with_diff()
            .field("stats.rate"),
        Entry::new("stats", k, b"3", "drift")
            .cached("Walk")
            .truth("Run")
            .field("title"),
        Entry::new("stats", k, b"5", "invalid")
            .truth("0.85")
            .field("stats.rate"),
        Entry::new("stats", k, b"6", "invalid").cached("<html>oops</html>"),
        Entry::new("stats", k, b"7", "stale")
            .cached(rfc3339.clone())
            .field("cached_at"),
        Entry::new("stats", k, b"8", "stale")
            .cached(old.to_string())
            .field("cached_at"),
        Entry::new("stats", k, b"9", "bad_ttl").cached(stats_doc(150, "Run", fresh)),
    ]);
    let resp3 = r.conn_resp3();
    for (proto, mut conn) in [(Proto::Resp2, r.conn()), (Proto::Resp3, resp3)] {
        let report = check(&mut conn, proto, &[]);
        assert_eq!(report.entries, want, "{proto:?}");
        assert_eq!(status_count(&report, "stale"), 2);
        assert_eq!(status_count(&report, "bad_ttl"), 1);
    }
    let json_report = check_support::check_json(&mut c, &[]);
    assert_eq!(json_report.entries, want);
    let info = r.info("consistency");
    assert!(info["consistency_drifted_stale"].parse::<i64>().unwrap() >= 2);
    assert!(info["consistency_drifted_bad_ttl"].parse::<i64>().unwrap() >= 1);

    // FIX ALL deletes each bad document once, however many fields it has wrong.
    let fixed = jcall(&mut c, &["CONSISTENCY.FIX", "ALL"]);
    assert_eq!(fixed["changed"], 8, "{fixed}");
    assert_eq!(as_i64(&call_ok(&mut c, &["EXISTS", &key(1)])), 1);
    assert_eq!(as_i64(&call_ok(&mut c, &["DBSIZE"])), 1);

    // RULES shows the new options.
    let rules = call_ok(&mut c, &["CONSISTENCY.RULES"]);
    let rule = &as_array(&rules)[0];
    assert_eq!(as_i64(field(rule, "ttl_max_sec")), 3600);
    assert_eq!(as_str(field(rule, "age_field")), "cached_at");
    assert_eq!(as_i64(field(rule, "max_age_sec")), 3600);
}

/// Days since 1970-01-01 to (year, month, day), for an RFC 3339 text built
/// independently of the module's parser.
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[test]
fn ambiguous_layouts_are_refused_at_load_and_a_missing_column_at_the_first_run() {
    let pg = TestPg::fresh();
    schema(&pg);
    let good = common::write_rules(&[daily_rule()]);
    let r = TestRedis::start_for(&pg, &good, &[]);
    let mut c = r.conn();
    let with_key = |key: &str| {
        let mut rule = daily_rule();
        rule["key"] = json!(key);
        common::write_rules(&[rule])
    };
    let overlapping = common::write_rules(&[
        daily_rule(),
        json!({"name": "cost_any", "kind": "number", "key": "key:{id}:cost_{period}",
               "truth": "SELECT id, 'x' AS period, 1 AS value FROM api_keys"}),
    ]);
    let refused = [
        (with_key("key:{id}{reset}"), "rule 'cost_daily': field 'key': key template 'key:{id}{reset}' is ambiguous: {id} and {reset} have no literal text between them"),
        (with_key("key:{id}:{reset}_{reset}"), "rule 'cost_daily': field 'key': key template 'key:{id}:{reset}_{reset}' uses placeholder {reset} twice"),
        (with_key("key:{user}:cost_daily_{reset}"), "rule 'cost_daily': field 'key': key template 'key:{user}:cost_daily_{reset}' must contain {id} exactly once, found 0"),
        (overlapping, "rule 'cost_any': key template 'key:{id}:cost_{period}' can match the same keys as rule 'cost_daily'"),
    ];
    for (file, message) in refused {
        let err = call_err(
            &mut c,
            &[
                "CONFIG",
                "SET",
                "consistency.rules-file",
                file.to_str().unwrap(),
            ],
        );
        assert!(err.contains(message), "{err}\nexpected: {message}");
        // The rules in force stay.
        assert_eq!(as_array(&call_ok(&mut c, &["CONSISTENCY.RULES"])).len(), 1);
    }

    // A truth without the {reset} column loads (the SQL is not run at load)
    // and is refused at the first run, naming the column; nothing is repaired.
    let mut no_reset = daily_rule();
    no_reset["truth"] = json!("SELECT id, cost AS value FROM api_keys");
    let file = common::write_rules(&[no_reset]);
    call_ok(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "consistency.rules-file",
            file.to_str().unwrap(),
        ],
    );
    setex(&mut c, "key:123:cost_daily_0000", 600, "9");
    setex(&mut c, "key:123:cost_daily_1800", 600, "50");
    let missing =
        "ERR bad truth query: rule 'cost_daily': truth has no column 'reset' (columns: id, value)";
    for args in [
        &["CONSISTENCY.CHECK"][..],
        &["CONSISTENCY.CHECK", "ID", "123"],
        &["CONSISTENCY.FIX", "ALL"],
        &["CONSISTENCY.FIX", "123"],
    ] {
        let err = call_err(&mut c, args);
        assert!(err.starts_with(missing), "{args:?}: {err}");
    }
    assert_eq!(
        as_i64(&call_ok(&mut c, &["DBSIZE"])),
        2,
        "nothing was repaired"
    );
}

#[test]
fn both_example_rules_files_load() {
    let pg = TestPg::fresh();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let r = TestRedis::start_for(&pg, &repo.join("rules.example.json"), &[]);
    let mut c = r.conn();
    let names = |c: &mut redis::Connection| -> Vec<String> {
        as_array(&call_ok(c, &["CONSISTENCY.RULES"]))
            .iter()
            .map(|r| as_str(field(r, "name")).to_string())
            .collect()
    };
    assert_eq!(
        names(&mut c),
        [
            "cost_weekly",
            "cost_monthly",
            "cost_5h",
            "cost_daily",
            "mcp_connection"
        ]
    );
    let seed004 = repo.join("rules.seed004.example.json");
    call_ok(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "consistency.rules-file",
            seed004.to_str().unwrap(),
        ],
    );
    assert_eq!(
        names(&mut c),
        [
            "projects_list",
            "project_info",
            "project_stats",
            "project_daily_stats",
            "project_leaderboard",
            "project_topics"
        ]
    );
}

/// The application refreshes a document (truth first, then the cache) while
/// the check runs: verification drops what round one saw; its twin with
/// verify-rounds 1 must see the writer's false drift at least once.
#[test]
fn a_document_rewritten_during_the_check_raises_no_false_alarm() {
    let pg = TestPg::fresh();
    pg.exec(
        "CREATE TABLE projects (id bigint PRIMARY KEY, total_members integer, title text, rate numeric);
         INSERT INTO projects SELECT g, 150, 'Run', 0.85 FROM generate_series(1, 20000) AS g;",
    );
    let mut rule = stats_rule();
    rule["threshold"] = json!(5);
    let rules = common::write_rules(&[rule]);
    let r = TestRedis::start_for(&pg, &rules, &[("scan-batch", "20")]);
    let mut c = r.conn();
    let fresh = json!(now_sec());
    let doc = stats_doc(150, "Run", fresh.clone());
    let mut pipe = redis::pipe();
    for id in 1..=20000 {
        pipe.cmd("SET")
            .arg(format!("zsxq:project:{id}:stats"))
            .arg(&doc)
            .arg("EX")
            .arg(600)
            .ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
    // A real drift nobody writes, found every time.
    call_ok(
        &mut c,
        &[
            "SET",
            "zsxq:project:20000:stats",
            &stats_doc(999, "Run", fresh),
            "EX",
            "600",
        ],
    );

    let mut run = |verify_rounds: &str| -> (Report, u64) {
        let twin = verify_rounds == "1";
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let writer = {
            let (stop, writes) = (Arc::clone(&stop), Arc::clone(&writes));
            let (url, redis_url) = (pg.url(), r.url());
            thread::spawn(move || {
                let mut db = common::pg_connect(&url).unwrap();
                let mut cache = redis::Client::open(redis_url)
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let mut total = 150 + 10_000 * i64::from(twin);
                while !stop.load(Ordering::Relaxed) {
                    total += 1;
                    db.execute(
                        "UPDATE projects SET total_members = $1 WHERE id = 1",
                        &[&(total as i32)],
                    )
                    .unwrap();
                    let doc = stats_doc(total, "Run", json!(now_sec()));
                    redis::cmd("SET")
                        .arg("zsxq:project:1:stats")
                        .arg(doc)
                        .arg("EX")
                        .arg(600)
                        .query::<()>(&mut cache)
                        .unwrap();
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        common::wait_until(std::time::Duration::from_secs(10), || {
            writes.load(Ordering::Relaxed) > 20
        });
        call_ok(
            &mut c,
            &["CONFIG", "SET", "consistency.verify-rounds", verify_rounds],
        );
        let report = check(&mut c, Proto::Resp2, &[]);
        let during = writes.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        (report, during)
    };
    let writer_key = b"zsxq:project:1:stats".to_vec();
    for _ in 0..3 {
        let (report, _) = run("2");
        let keys: Vec<&Vec<u8>> = report.entries.iter().map(|e| &e.key).collect();
        assert_eq!(keys, [&b"zsxq:project:20000:stats".to_vec()], "{report:?}");
    }
    let mut seen = false;
    for _ in 0..5 {
        let (report, during) = run("1");
        assert!(during > 0);
        if report.entries.iter().any(|e| e.key == writer_key) {
            seen = true;
            break;
        }
    }
    assert!(
        seen,
        "without verification the writer's document must drift"
    );
}
