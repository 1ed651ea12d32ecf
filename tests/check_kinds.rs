//! CONSISTENCY.CHECK for every rule kind and status, and how keys are read:
//! window_sum, hash_field, presence (with its PUBLISHed events), require_ttl,
//! threshold_pct, the missing policy, expired keys, keys seen twice, the caller's
//! selected db, ids with glob characters or bytes that are not UTF-8, and reads
//! that leave LRU/LFU and encodings alone.

use crate::check_support;
use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use check_support::{check, check_json, key_bytes, num, set, show, truth_map, Entry, Proto};
use common::{call_ok, ledger, TestPg, TestRedis};
use serde_json::json;

const WEEKLY: &str = "user:{id}:cost_weekly";
const MONTHLY: &str = "user:{id}:cost_monthly";
const WINDOW: &str = "user:{id}:cost_5h_rolling";
const PRESENCE: &str = "mcp:connection:state:{id}";

fn setup(users: usize, rows: usize, seed: u64, rules: &[serde_json::Value]) -> (TestPg, TestRedis) {
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, users, rows, seed);
    let path = common::write_rules(rules);
    let redis = TestRedis::start_for(&pg, &path, &[]);
    (pg, redis)
}

fn sid(n: i64) -> Vec<u8> {
    n.to_string().into_bytes()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn del(c: &mut redis::Connection, key: &[u8]) {
    let _: i64 = redis::cmd("DEL").arg(key).query(c).unwrap();
}

fn dbsize(c: &mut redis::Connection) -> i64 {
    redis::cmd("DBSIZE").query(c).unwrap()
}

/// The sum the module computes for a window ZSET: members in score order from
/// `start_ms`, each member's amount after its last ':', added exactly (the
/// amounts are decimal text) and shown without trailing zeros.
fn zset_sum(c: &mut redis::Connection, key: &[u8], start_ms: i64) -> String {
    let members: Vec<Vec<u8>> = redis::cmd("ZRANGEBYSCORE")
        .arg(key)
        .arg(start_ms)
        .arg("+inf")
        .query(c)
        .unwrap();
    let mut sum = 0i128;
    for m in &members {
        let text = std::str::from_utf8(m).unwrap();
        let amount = text.rsplit(':').next().unwrap();
        sum += check_support::plain_decimal(amount)
            .unwrap_or_else(|| panic!("not a plain decimal: {amount:?}"));
    }
    check_support::decimal_text(sum)
}

#[test]
fn window_sum_cuts_both_sides_at_the_window_start() {
    let (pg, redis) = setup(30, 3, 4, &[common::window_rule_json()]);
    let mut c = redis.conn();
    let old_sql = "now() - interval '6 hours'";
    // User 3: an old ledger row, and its old ZSET member: both outside the window.
    pg.exec(&format!(
        "INSERT INTO message_request (user_id, cost_usd, created_at) VALUES (3, 100, {old_sql})"
    ));
    ledger::fill_cache_window(&mut c, &pg);
    let old_ms = now_ms() - 6 * 3600 * 1000;
    let recent_ms = now_ms() - 60_000;
    let zadd = |c: &mut redis::Connection, n: i64, score: i64, member: &str| {
        let _: i64 = redis::cmd("ZADD")
            .arg(key_bytes(WINDOW, &sid(n)))
            .arg(score)
            .arg(member)
            .query(c)
            .unwrap();
    };
    // User 2: an old member only in the ZSET; user 5: an old row only in the ledger.
    zadd(&mut c, 2, old_ms, &format!("{old_ms}:77.5"));
    pg.exec(&format!(
        "INSERT INTO message_request (user_id, cost_usd, created_at) VALUES (5, 55, {old_sql})"
    ));
    // User 4: a recent member the ledger lacks (`<ms>:<amount>` form): drift up.
    zadd(&mut c, 4, recent_ms, &format!("{recent_ms}:50.5"));
    // User 6: a recent ledger row the cache missed: drift down.
    ledger::add_cost(&pg, 6, "20");
    // Users 7 and 8: members whose amount cannot be read; user 9: not a ZSET.
    zadd(&mut c, 7, recent_ms, "garbage");
    zadd(&mut c, 8, recent_ms, &format!("{recent_ms}:req-1:abc"));
    del(&mut c, &key_bytes(WINDOW, &sid(9)));
    set(&mut c, &key_bytes(WINDOW, &sid(9)), b"12");
    // An id the users table does not have.
    zadd(&mut c, 999, recent_ms, &format!("{recent_ms}:req-9:1.25"));

    let r = check(&mut c, Proto::Resp2, &[]);
    let truth = truth_map(&ledger::truth(
        &pg,
        ledger::WINDOW_TRUTH,
        Some("now() - interval '5 hours'"),
    ));
    let start = now_ms() - 5 * 3600 * 1000;
    let mut want = Vec::new();
    for n in [4, 6] {
        let key = key_bytes(WINDOW, &sid(n));
        want.push(
            Entry::new("cost_5h", WINDOW, &sid(n), "drift")
                .cached(zset_sum(&mut c, &key, start))
                .truth(truth[&n].clone())
                .with_diff(),
        );
    }
    want.push(
        Entry::new("cost_5h", WINDOW, &sid(7), "invalid")
            .cached("garbage")
            .truth(truth[&7].clone()),
    );
    want.push(
        Entry::new("cost_5h", WINDOW, &sid(8), "invalid")
            .cached(format!("{recent_ms}:req-1:abc"))
            .truth(truth[&8].clone()),
    );
    want.push(
        Entry::new("cost_5h", WINDOW, &sid(9), "invalid")
            .cached("(string)")
            .truth(truth[&9].clone()),
    );
    want.push(Entry::new("cost_5h", WINDOW, &sid(999), "orphan").cached("1.25"));
    assert_eq!(r.checked, 31, "30 users' ZSETs and the orphan");
    assert_eq!(r.ids, 31);
    r.assert_findings(&want);
    let d4 = want[0].diff.unwrap();
    assert!((d4 - 50.5).abs() < 1e-6, "{d4}");
}

#[test]
fn hash_field_reads_the_field_and_a_hash_without_it_is_missing() {
    let strict = json!({"name": "stats_strict", "kind": "hash_field", "key": "strict:{id}",
        "field": "weekly", "truth": ledger::WEEKLY_TRUTH, "missing": "report"});
    let lax = json!({"name": "stats", "kind": "hash_field", "key": "stats:{id}",
        "field": "weekly", "truth": ledger::WEEKLY_TRUTH, "threshold": 5.0});
    let (pg, redis) = setup(12, 2, 8, &[lax, strict]);
    let mut c = redis.conn();
    let truth = truth_map(&ledger::truth_weekly(&pg));
    for (id, value) in &truth {
        for prefix in ["stats", "strict"] {
            let _: () = redis::cmd("HSET")
                .arg(format!("{prefix}:{id}"))
                .arg("weekly")
                .arg(value)
                .arg("monthly")
                .arg("999")
                .query(&mut c)
                .unwrap();
        }
    }
    let hdel = |c: &mut redis::Connection, key: &str| {
        let _: i64 = redis::cmd("HDEL").arg(key).arg("weekly").query(c).unwrap();
    };
    let hset = |c: &mut redis::Connection, key: &str, v: &str| {
        let _: i64 = redis::cmd("HSET")
            .arg(key)
            .arg("weekly")
            .arg(v)
            .query(c)
            .unwrap();
    };
    let mut want = Vec::new();
    // Lax rule: a hash without the field is a missing key, and missing is ignored.
    hdel(&mut c, "stats:3");
    let high = num(truth[&4].parse::<f64>().unwrap() + 10.0);
    hset(&mut c, "stats:4", &high);
    want.push(
        Entry::new("stats", "stats:{id}", &sid(4), "drift")
            .cached(high)
            .truth(truth[&4].clone())
            .with_diff(),
    );
    del(&mut c, b"stats:5");
    set(&mut c, b"stats:5", truth[&5].as_bytes());
    want.push(
        Entry::new("stats", "stats:{id}", &sid(5), "invalid")
            .cached("(string)")
            .truth(truth[&5].clone()),
    );
    hset(&mut c, "stats:6", "oops");
    want.push(
        Entry::new("stats", "stats:{id}", &sid(6), "invalid")
            .cached("oops")
            .truth(truth[&6].clone()),
    );
    // Strict rule: both a hash without the field and no hash at all are missing.
    hdel(&mut c, "strict:7");
    want.push(
        Entry::new("stats_strict", "strict:{id}", &sid(7), "missing").truth(truth[&7].clone()),
    );
    del(&mut c, b"strict:8");
    want.push(
        Entry::new("stats_strict", "strict:{id}", &sid(8), "missing").truth(truth[&8].clone()),
    );

    let r = check(&mut c, Proto::Resp2, &[]);
    assert_eq!(
        r.checked_by_rule(),
        vec![("stats".to_string(), 12), ("stats_strict".to_string(), 12)]
    );
    r.assert_findings(&want);
    let mut c3 = redis.conn_resp3();
    check(&mut c3, Proto::Resp3, &[]).assert_findings(&want);
    // By id: the same findings for those ids.
    let r = check(&mut c, Proto::Resp2, &["ID", "3", "ID", "7", "ID", "8"]);
    r.assert_findings(&want[3..]);
}

/// Messages on `channel` until `n` arrived or `wait` passed, then any stragglers.
fn collect_messages(pubsub: &mut redis::PubSub<'_>, n: usize, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    pubsub
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while Instant::now() < deadline || out.len() < n {
        match pubsub.get_message() {
            Ok(m) => out.push(m.get_payload::<String>().unwrap()),
            Err(e) if e.is_timeout() => {
                if out.len() >= n || Instant::now() >= deadline {
                    break;
                }
            }
            Err(e) => panic!("pubsub: {e}"),
        }
    }
    // Nothing more may follow.
    thread::sleep(Duration::from_millis(200));
    while let Ok(m) = pubsub.get_message() {
        out.push(m.get_payload::<String>().unwrap());
    }
    out
}

#[test]
fn presence_reports_missing_and_orphans_and_publishes_them() {
    let (pg, redis) = setup(1, 1, 1, &[common::presence_rule_json()]);
    for (id, enabled) in [
        ("ep-1", true),
        ("ep-2", true),
        ("ep-3", true),
        ("ep-5", true),
        ("a*b", true),
        ("[x]", true),
        ("ep-off", false),
        ("ep?", false),
    ] {
        ledger::add_endpoint(&pg, id, enabled);
    }
    let mut c = redis.conn();
    // Any type will do for presence; a TTL is fine.
    set(&mut c, b"mcp:connection:state:ep-1", b"connected");
    let _: () = redis::cmd("HSET")
        .arg("mcp:connection:state:ep-2")
        .arg("since")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("mcp:connection:state:ep-3")
        .arg("x")
        .arg("EX")
        .arg(600)
        .query(&mut c)
        .unwrap();
    set(&mut c, b"mcp:connection:state:a*b", b"connected");
    // Disabled or unknown endpoints with a key: orphans.
    set(&mut c, b"mcp:connection:state:ep-off", b"connected");
    set(&mut c, b"mcp:connection:state:ep?", b"connected");
    set(&mut c, b"mcp:connection:state:ghost", b"connected");
    let rule = "mcp_connection";
    let want = vec![
        Entry::new(rule, PRESENCE, b"ep-5", "missing"),
        Entry::new(rule, PRESENCE, b"[x]", "missing"),
        Entry::new(rule, PRESENCE, b"ep-off", "orphan").cached(""),
        Entry::new(rule, PRESENCE, b"ep?", "orphan").cached(""),
        Entry::new(rule, PRESENCE, b"ghost", "orphan").cached(""),
    ];

    let client = redis::Client::open(redis.url()).unwrap();
    let mut sub = client.get_connection().unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("consistency:events").unwrap();

    let r = check(&mut c, Proto::Resp2, &[]);
    // Enabled endpoints (6) plus orphan keys (3).
    assert_eq!(r.checked, 9);
    r.assert_findings(&want);

    let messages = collect_messages(&mut pubsub, want.len(), Duration::from_secs(3));
    let got: BTreeSet<(String, String, String, String)> = messages
        .iter()
        .map(|m| {
            let v: serde_json::Value =
                serde_json::from_str(m).unwrap_or_else(|e| panic!("event {m:?}: {e}"));
            assert_eq!(v["db"], 0, "{m}");
            assert!(
                v["at_ms"].as_u64().is_some_and(|t| t > 1_700_000_000_000),
                "{m}"
            );
            (
                v["rule"].as_str().unwrap().to_string(),
                v["id"].as_str().unwrap().to_string(),
                v["key"].as_str().unwrap().to_string(),
                v["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String, String)> = want
        .iter()
        .map(|e| (e.rule.clone(), show(&e.id), show(&e.key), e.status.clone()))
        .collect();
    assert_eq!(
        messages.len(),
        want.len(),
        "one event per finding: {messages:?}"
    );
    assert_eq!(got, expected);

    // Another channel when configured; none when it is empty.
    call_ok(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "consistency.notify-channel",
            "other:events",
        ],
    );
    let _ = pubsub.unsubscribe("consistency:events");
    pubsub.subscribe("other:events").unwrap();
    check(&mut c, Proto::Resp2, &["ID", "ep-5"]).assert_findings(&want[..1]);
    let messages = collect_messages(&mut pubsub, 1, Duration::from_secs(3));
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].contains("\"ep-5\""), "{messages:?}");
    call_ok(&mut c, &["CONFIG", "SET", "consistency.notify-channel", ""]);
    check(&mut c, Proto::Resp2, &[]).assert_findings(&want);
    let messages = collect_messages(&mut pubsub, 0, Duration::from_millis(300));
    assert!(messages.is_empty(), "{messages:?}");
}

#[test]
fn require_ttl_reports_keys_without_one() {
    let mut rule = common::weekly_rule_json();
    rule["require_ttl"] = json!(true);
    let (pg, redis) = setup(10, 2, 12, &[rule]);
    let mut c = redis.conn();
    let truth = truth_map(&ledger::truth_weekly(&pg));
    for (id, value) in &truth {
        let _: () = redis::cmd("SET")
            .arg(format!("user:{id}:cost_weekly"))
            .arg(value)
            .arg("EX")
            .arg(3600)
            .query(&mut c)
            .unwrap();
    }
    let t = |n: i64| truth[&n].clone();
    let r_ = "cost_weekly";
    let mut want = Vec::new();
    // Right value, no TTL.
    let _: i64 = redis::cmd("PERSIST")
        .arg("user:2:cost_weekly")
        .query(&mut c)
        .unwrap();
    want.push(
        Entry::new(r_, WEEKLY, &sid(2), "no_ttl")
            .cached(t(2))
            .truth(t(2)),
    );
    // Drifted and no TTL: two entries.
    let high = num(t(3).parse::<f64>().unwrap() + 20.0);
    set(&mut c, b"user:3:cost_weekly", high.as_bytes());
    want.push(
        Entry::new(r_, WEEKLY, &sid(3), "drift")
            .cached(high.clone())
            .truth(t(3))
            .with_diff(),
    );
    want.push(
        Entry::new(r_, WEEKLY, &sid(3), "no_ttl")
            .cached(high)
            .truth(t(3)),
    );
    // Drifted with a TTL: drift only.
    let low = num(t(4).parse::<f64>().unwrap() - 20.0);
    let _: () = redis::cmd("SET")
        .arg("user:4:cost_weekly")
        .arg(&low)
        .arg("KEEPTTL")
        .query(&mut c)
        .unwrap();
    want.push(
        Entry::new(r_, WEEKLY, &sid(4), "drift")
            .cached(low)
            .truth(t(4))
            .with_diff(),
    );
    // Unparseable and no TTL; an orphan without TTL.
    set(&mut c, b"user:5:cost_weekly", b"abc");
    want.push(
        Entry::new(r_, WEEKLY, &sid(5), "invalid")
            .cached("abc")
            .truth(t(5)),
    );
    want.push(
        Entry::new(r_, WEEKLY, &sid(5), "no_ttl")
            .cached("abc")
            .truth(t(5)),
    );
    set(&mut c, b"user:77:cost_weekly", b"1");
    want.push(Entry::new(r_, WEEKLY, &sid(77), "orphan").cached("1"));
    want.push(Entry::new(r_, WEEKLY, &sid(77), "no_ttl").cached("1"));

    let r = check(&mut c, Proto::Resp2, &[]);
    assert_eq!(r.checked, 11);
    r.assert_findings(&want);
    // The RULES listing shows it.
    let rules = call_ok(&mut c, &["CONSISTENCY.RULES"]);
    let first = &common::as_array(&rules)[0];
    assert!(common::as_bool(common::field(first, "require_ttl")));
}

#[test]
fn threshold_pct_needs_both_thresholds_exceeded() {
    let rule = json!({"name": "pct", "kind": "number", "key": "pct:{id}",
        "truth": ledger::WEEKLY_TRUTH, "threshold": 5.0, "threshold_pct": 10.0});
    let (pg, redis) = setup(8, 1, 2, &[rule]);
    for (id, amount) in [(1, "1000"), (2, "1000"), (3, "20"), (4, "20"), (6, "300")] {
        ledger::add_cost(&pg, id, amount);
    }
    let truth = truth_map(&ledger::truth_weekly(&pg));
    let mut c = redis.conn();
    ledger::fill_cache(&mut c, "pct:{id}", &ledger::truth_weekly(&pg));
    let mut want = Vec::new();
    let mut reported = 0;
    for (n, offset) in [
        (1, 7.5),    // beyond 5, within 10% of ~1000
        (2, 150.0),  // beyond both
        (3, 8.0),    // beyond 5 and 10% of ~20
        (4, 4.0),    // beyond 10% of ~20, within 5
        (5, -150.0), // far below a small truth
        (6, -29.0),  // beyond 5, within 10% of ~300
        (7, 5.5),    // small truth: beyond both
    ] {
        let t: f64 = truth[&n].parse().unwrap();
        let cached = num(t + offset);
        set(&mut c, format!("pct:{n}").as_bytes(), cached.as_bytes());
        let e = Entry::new("pct", "pct:{id}", &sid(n), "drift")
            .cached(cached)
            .truth(truth[&n].clone())
            .with_diff();
        let d = e.diff.unwrap().abs();
        if d > 5.0 && d > 0.10 * t.abs() {
            want.push(e);
            reported += 1;
        }
    }
    assert_eq!(
        reported, 4,
        "the cases above cover both sides of each threshold"
    );
    let r = check(&mut c, Proto::Resp2, &[]);
    assert_eq!(r.checked, 8);
    r.assert_findings(&want);
    // THRESHOLD replaces the absolute threshold; the percentage still applies.
    let r = check(&mut c, Proto::Resp2, &["THRESHOLD", "0"]);
    let n4: Vec<&Entry> = r.entries.iter().filter(|e| e.id == b"4").collect();
    assert_eq!(n4.len(), 1, "4 is beyond 10% of its truth: {:?}", r.entries);
    assert!(r.entries.iter().all(|e| e.id != b"1" && e.id != b"6"));
}

#[test]
fn missing_keys_are_reported_only_where_the_rule_asks() {
    let strict = json!({"name": "monthly_strict", "kind": "number", "key": MONTHLY,
        "truth": ledger::MONTHLY_TRUTH, "missing": "report"});
    let (pg, redis) = setup(20, 2, 6, &[common::weekly_rule_json(), strict]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    ledger::fill_cache_monthly(&mut c, &pg);
    let weekly = truth_map(&ledger::truth_weekly(&pg));
    let monthly = truth_map(&ledger::truth_monthly(&pg));
    // Not loaded yet: a cache-aside key that is simply absent, not reported.
    del(&mut c, b"user:3:cost_weekly");
    del(&mut c, b"user:4:cost_weekly");
    // The strict rule reports its absent key.
    del(&mut c, b"user:5:cost_monthly");
    // A soft-deleted user: no truth, so no missing key; its weekly key is an orphan.
    ledger::soft_delete_user(&pg, 6);
    del(&mut c, b"user:6:cost_monthly");
    let want = vec![
        Entry::new("monthly_strict", MONTHLY, &sid(5), "missing").truth(monthly[&5].clone()),
        Entry::new("cost_weekly", WEEKLY, &sid(6), "orphan").cached(weekly[&6].clone()),
    ];
    let r = check(&mut c, Proto::Resp2, &[]);
    assert_eq!(
        r.checked_by_rule(),
        vec![
            ("cost_weekly".to_string(), 18),
            ("monthly_strict".to_string(), 19)
        ]
    );
    r.assert_findings(&want);
    // By id, the same.
    let r = check(&mut c, Proto::Resp2, &["ID", "3", "ID", "5", "ID", "6"]);
    r.assert_findings(&want);
}

#[test]
fn expired_keys_count_as_absent() {
    let strict = json!({"name": "monthly_strict", "kind": "number", "key": MONTHLY,
        "truth": ledger::MONTHLY_TRUTH, "missing": "report"});
    let (pg, redis) = setup(10, 1, 9, &[common::weekly_rule_json(), strict]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    ledger::fill_cache_monthly(&mut c, &pg);
    let monthly = truth_map(&ledger::truth_monthly(&pg));
    // Keep logically expired keys in the keyspace: only a read may find them gone.
    call_ok(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    for key in [
        "user:2:cost_weekly",
        "user:2:cost_monthly",
        "user:555:cost_weekly",
    ] {
        set(&mut c, key.as_bytes(), b"999");
        let _: bool = redis::cmd("PEXPIRE")
            .arg(key)
            .arg(100)
            .query(&mut c)
            .unwrap();
    }
    thread::sleep(Duration::from_millis(300));
    assert_eq!(dbsize(&mut c), 21, "expired keys are still in the keyspace");
    let want =
        vec![Entry::new("monthly_strict", MONTHLY, &sid(2), "missing").truth(monthly[&2].clone())];
    let r = check(&mut c, Proto::Resp2, &["ID", "2", "ID", "555"]);
    r.assert_findings(&want);
    let r = check(&mut c, Proto::Resp2, &[]);
    assert_eq!(
        r.checked_by_rule(),
        vec![
            ("cost_weekly".to_string(), 9),
            ("monthly_strict".to_string(), 10)
        ]
    );
    r.assert_findings(&want);
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn a_key_the_scan_returns_twice_counts_once() {
    // SCAN may return a key more than once when the keyspace's table shrinks
    // mid-scan. Many other keys are deleted while a slow check scans, so Redis
    // resizes its table under the scan; the check must still count each of its
    // keys once and report each finding once. Repeats are rare even so (a client
    // SCAN alongside, printed for reference, sees few or none): the exact counts
    // asserted here would catch a double count whenever one happens.
    const USERS: usize = 3000;
    const FILLER: usize = 120_000;
    let (pg, redis) = setup(USERS, 1, 13, &[common::weekly_rule_json()]);
    let mut c = redis.conn();
    // A slow scan, and a server that resizes its tables promptly.
    call_ok(&mut c, &["CONFIG", "SET", "consistency.scan-batch", "10"]);
    call_ok(&mut c, &["CONFIG", "SET", "hz", "100"]);
    ledger::fill_cache_weekly(&mut c, &pg);
    let truth = truth_map(&ledger::truth_weekly(&pg));
    for chunk in (0..FILLER).collect::<Vec<_>>().chunks(5000) {
        let mut p = redis::pipe();
        for i in chunk {
            p.cmd("SET").arg(format!("filler:{i}")).arg("x").ignore();
        }
        p.query::<()>(&mut c).unwrap();
    }
    let high = num(truth[&42].parse::<f64>().unwrap() + 9.0);
    set(&mut c, b"user:42:cost_weekly", high.as_bytes());
    set(&mut c, b"user:4242:cost_weekly", b"2");
    let want = vec![
        Entry::new("cost_weekly", WEEKLY, &sid(42), "drift")
            .cached(high)
            .truth(truth[&42].clone())
            .with_diff(),
        Entry::new("cost_weekly", WEEKLY, &sid(4242), "orphan").cached("2"),
    ];
    let mut deleter = redis.conn();
    let remover = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        for chunk in (0..FILLER).collect::<Vec<_>>().chunks(2000) {
            let mut p = redis::pipe();
            for i in chunk {
                p.cmd("DEL").arg(format!("filler:{i}")).ignore();
            }
            p.query::<()>(&mut deleter).unwrap();
        }
    });
    // The same situation seen by a client SCAN alongside: how often it repeats keys.
    let mut scanner = redis.conn();
    let client_scan = thread::spawn(move || {
        let mut seen = std::collections::HashSet::new();
        let mut repeats = 0;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(10)
                .query(&mut scanner)
                .unwrap();
            for k in keys {
                if !seen.insert(k) {
                    repeats += 1;
                }
            }
            thread::sleep(Duration::from_micros(100));
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        repeats
    });
    let started = Instant::now();
    let r = check(&mut c, Proto::Resp2, &[]);
    let took = started.elapsed();
    remover.join().unwrap();
    let repeats = client_scan.join().unwrap();
    eprintln!("check while the keyspace shrank: {took:?}; a client SCAN alongside repeated {repeats} keys");
    assert_eq!(r.checked, USERS as i64 + 1);
    assert_eq!(r.ids, USERS as i64 + 1);
    r.assert_findings(&want);
}

#[test]
fn the_callers_selected_db_is_checked() {
    let (pg, redis) = setup(10, 2, 14, &[common::weekly_rule_json()]);
    let truth = truth_map(&ledger::truth_weekly(&pg));
    let mut c0 = redis.conn();
    let mut c1 = redis.conn();
    call_ok(&mut c1, &["SELECT", "1"]);
    ledger::fill_cache_weekly(&mut c0, &pg);
    ledger::fill_cache_weekly(&mut c1, &pg);
    let d3 = num(truth[&3].parse::<f64>().unwrap() + 30.0);
    set(&mut c1, b"user:3:cost_weekly", d3.as_bytes());
    let d4 = num(truth[&4].parse::<f64>().unwrap() + 40.0);
    set(&mut c0, b"user:4:cost_weekly", d4.as_bytes());
    set(&mut c0, b"user:999:cost_weekly", b"1");
    let want1 = vec![Entry::new("cost_weekly", WEEKLY, &sid(3), "drift")
        .cached(d3)
        .truth(truth[&3].clone())
        .with_diff()];
    let want0 = vec![
        Entry::new("cost_weekly", WEEKLY, &sid(4), "drift")
            .cached(d4)
            .truth(truth[&4].clone())
            .with_diff(),
        Entry::new("cost_weekly", WEEKLY, &sid(999), "orphan").cached("1"),
    ];
    let r = check(&mut c1, Proto::Resp2, &[]);
    assert_eq!(r.checked, 10);
    r.assert_findings(&want1);
    check(&mut c1, Proto::Resp2, &["ID", "3", "ID", "4", "ID", "999"]).assert_findings(&want1);
    // db 0 is untouched, and checked on its own.
    assert_eq!(dbsize(&mut c0), 11);
    let r = check(&mut c0, Proto::Resp2, &[]);
    assert_eq!(r.checked, 11);
    r.assert_findings(&want0);
    // A db selected by URL, and RESP3.
    let client = redis::Client::open(format!(
        "redis://127.0.0.1:{}/1?protocol=resp3",
        redis.port()
    ))
    .unwrap();
    let mut c1b = client.get_connection().unwrap();
    check(&mut c1b, Proto::Resp3, &[]).assert_findings(&want1);
    // A db with no keys: nothing checked.
    call_ok(&mut c1, &["SELECT", "5"]);
    let r = check(&mut c1, Proto::Resp2, &[]);
    assert_eq!(r.checked, 0);
    assert_eq!(r.ids, 10, "the truth's ids are still seen");
    r.assert_findings(&[]);
}

#[test]
fn ids_with_glob_characters_and_bytes_that_are_not_utf8() {
    let (pg, redis) = setup(5, 1, 15, &[common::weekly_rule_json()]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    let r_ = "cost_weekly";
    let mut want = Vec::new();
    // Bytes that are not UTF-8, and a NUL: invalid, never sent to PostgreSQL.
    for id in [&b"\xff"[..], b"a\x00b", b"9\xc3"] {
        set(&mut c, &key_bytes(WEEKLY, id), b"1");
        want.push(Entry::new(r_, WEEKLY, id, "invalid").cached("1"));
    }
    // Glob characters: plain ids, here unknown ones.
    for id in ["*", "?", "[1]", "\\"] {
        set(&mut c, &key_bytes(WEEKLY, id.as_bytes()), b"5");
        want.push(Entry::new(r_, WEEKLY, id.as_bytes(), "orphan").cached("5"));
    }
    // An id holds no `:` unless the rule allows it: not this rule's key.
    set(&mut c, &key_bytes(WEEKLY, b"4:x"), b"5");
    let r = check(&mut c, Proto::Resp2, &[]);
    assert_eq!(r.checked, 5 + 7);
    assert_eq!(r.ids, 5 + 7);
    r.assert_findings(&want);
    let mut c3 = redis.conn_resp3();
    check(&mut c3, Proto::Resp3, &[]).assert_findings(&want);
    let rj = check_json(&mut c, &[]);
    rj.assert_findings_json(&want);
    assert!(
        rj.entries
            .iter()
            .any(|e| e.key == b"user:\\xff:cost_weekly"),
        "{:?}",
        rj.entries
    );

    // An id given as `*` names one key, not a pattern.
    let r = check(&mut c, Proto::Resp2, &["ID", "*"]);
    assert_eq!(r.checked, 1);
    r.assert_findings(&want[3..4]);
    // A binary id by ID.
    let v: redis::Value =
        check_support::cmd_bytes(&[b"CONSISTENCY.CHECK", b"ID", b"\xff", b"ID", b"2"])
            .query(&mut c)
            .unwrap();
    let r = check_support::Report::from_value(&v, Proto::Resp2);
    assert_eq!(r.checked, 2);
    r.assert_findings(&want[..1]);
}

fn idletime(c: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("OBJECT")
        .arg("IDLETIME")
        .arg(key)
        .query(c)
        .unwrap()
}

fn freq(c: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("OBJECT").arg("FREQ").arg(key).query(c).unwrap()
}

fn encoding(c: &mut redis::Connection, key: &str) -> String {
    redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(key)
        .query(c)
        .unwrap()
}

#[test]
fn reads_leave_lru_lfu_and_encodings_alone() {
    let hash_rule = json!({"name": "stats", "kind": "hash_field", "key": "stats:{id}",
        "field": "weekly", "truth": ledger::WEEKLY_TRUTH});
    let (pg, redis) = setup(
        6,
        2,
        16,
        &[
            common::weekly_rule_json(),
            common::window_rule_json(),
            hash_rule,
        ],
    );
    // A user whose truth is a whole number, cached as an int-encoded string.
    ledger::add_user(&pg, 100, "whole");
    ledger::add_cost(&pg, 100, "7");
    let mut c = redis.conn();
    call_ok(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    );
    let fill = |c: &mut redis::Connection| {
        ledger::fill_cache_weekly(c, &pg);
        set(c, b"user:100:cost_weekly", b"7");
        ledger::fill_cache_window(c, &pg);
        for (id, value) in ledger::truth_weekly(&pg) {
            let _: () = redis::cmd("HSET")
                .arg(format!("stats:{id}"))
                .arg("weekly")
                .arg(value)
                .query(c)
                .unwrap();
        }
    };
    fill(&mut c);
    let sample = [
        "user:1:cost_weekly",
        "user:100:cost_weekly",
        "user:2:cost_5h_rolling",
        "stats:3",
    ];
    let encodings: BTreeMap<&str, String> =
        sample.iter().map(|k| (*k, encoding(&mut c, k))).collect();
    assert_eq!(encodings["user:1:cost_weekly"], "embstr");
    assert_eq!(encodings["user:100:cost_weekly"], "int");
    thread::sleep(Duration::from_millis(2500));
    let before: BTreeMap<&str, i64> = sample.iter().map(|k| (*k, idletime(&mut c, k))).collect();
    assert!(before.values().all(|i| *i >= 2), "{before:?}");
    let r = check(&mut c, Proto::Resp2, &[]);
    assert_eq!(r.checked, 3 * 7, "7 users' keys for each of 3 rules");
    r.assert_findings(&[]);
    let r = check(
        &mut c,
        Proto::Resp2,
        &["ID", "1", "ID", "2", "ID", "3", "ID", "100"],
    );
    r.assert_findings(&[]);
    for k in sample {
        let idle = idletime(&mut c, k);
        assert!(
            idle >= before[k],
            "{k}: idle {idle} s after CHECK, {} s before: the read touched it",
            before[k]
        );
        assert_eq!(encoding(&mut c, k), encodings[k], "{k}: encoding changed");
    }
    // A GET does touch it: the test can tell.
    let _: String = redis::cmd("GET")
        .arg("user:1:cost_weekly")
        .query(&mut c)
        .unwrap();
    assert_eq!(idletime(&mut c, "user:1:cost_weekly"), 0);

    // LFU: fresh keys start at counter 5, which any access would raise.
    call_ok(
        &mut c,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"],
    );
    call_ok(&mut c, &["FLUSHDB"]);
    fill(&mut c);
    let before: BTreeMap<&str, i64> = sample.iter().map(|k| (*k, freq(&mut c, k))).collect();
    check(&mut c, Proto::Resp2, &[]).assert_findings(&[]);
    check(
        &mut c,
        Proto::Resp2,
        &["ID", "1", "ID", "2", "ID", "3", "ID", "100"],
    )
    .assert_findings(&[]);
    for k in sample {
        let after = freq(&mut c, k);
        assert!(
            after <= before[k],
            "{k}: LFU counter {} -> {after}",
            before[k]
        );
        assert_eq!(encoding(&mut c, k), encodings[k], "{k}: encoding changed");
    }
    let _: String = redis::cmd("GET")
        .arg("user:1:cost_weekly")
        .query(&mut c)
        .unwrap();
    assert!(freq(&mut c, "user:1:cost_weekly") > before["user:1:cost_weekly"]);
}
