//! Reliability: what the cache holds can be anything.
//!
//! - keys of the wrong type for their rule: `invalid`, repaired only by a verified
//!   FIX ALL, never rewritten in place;
//! - huge values (a 10 MB string, a 200k-member window ZSET) and values that are
//!   no number: `invalid` (or summed), with Redis answering PING throughout;
//! - ids with glob characters (`*`, `?`, `[`, `\`) and binary bytes: matched as
//!   the exact bytes they are, never as patterns: `FIX *` touches the key
//!   `user:*:cost_weekly` only, PURGE RULE of a template with glob characters
//!   only that template's keys.
//!
//! Run: `cargo test --release --features test-hooks --test integration fault_keys::`

use crate::check_support;
use crate::common;
use crate::fault_support;

use std::collections::BTreeMap;
use std::time::Instant;

use common::{as_array, as_bytes, as_i64, as_str, call_ok, field, ledger, opt_str, TestRedis};
use fault_support::{
    assert_no_crash, assert_pings, digest, exists, get, set, snapshot, Pinger, PING_BOUND,
};
use redis::{Connection, Value};
use serde_json::json;

const WEEKLY: &str = "user:{id}:cost_weekly";

fn env(users: usize, rules: &[serde_json::Value]) -> (common::TestPg, TestRedis) {
    let pg = common::TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, users, 2, 21);
    let path = common::write_rules(rules);
    let redis = TestRedis::start_for(&pg, &path, &[]);
    (pg, redis)
}

fn key(template: &str, id: &[u8]) -> Vec<u8> {
    let (pre, post) = template.split_once("{id}").unwrap();
    [pre.as_bytes(), id, post.as_bytes()].concat()
}

/// (key, status, cached) of every entry of a CHECK / FIX ALL reply.
fn findings(reply: &Value) -> BTreeMap<Vec<u8>, (String, Option<String>)> {
    as_array(field(reply, "entries"))
        .iter()
        .map(|e| {
            (
                as_bytes(field(e, "key")).to_vec(),
                (
                    as_str(field(e, "status")).to_string(),
                    opt_str(field(e, "cached")),
                ),
            )
        })
        .collect()
}

fn cmd(c: &mut Connection, args: &[&[u8]]) -> Value {
    let mut command = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        command.arg(*a);
    }
    command
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?}: {}", common::error_text(&e)))
}

// ---------------------------------------------------------------------------
// Wrong types
// ---------------------------------------------------------------------------

#[test]
fn keys_of_the_wrong_type_are_invalid_and_only_a_verified_fix_removes_them() {
    let quota = json!({
        "name": "quota", "kind": "hash_field", "key": "quota:{id}", "field": "weekly",
        "truth": ledger::WEEKLY_TRUTH
    });
    let (pg, redis) = env(
        12,
        &[
            common::weekly_rule_json(),
            common::window_rule_json(),
            quota,
        ],
    );
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    let weekly: BTreeMap<i64, String> = ledger::truth_weekly(&pg).into_iter().collect();
    for id in 1..=12 {
        cmd(
            &mut c,
            &[
                b"HSET",
                format!("quota:{id}").as_bytes(),
                b"weekly",
                weekly[&id].as_bytes(),
            ],
        );
    }
    // The wrong type for each kind.
    // (key, the type it holds, the command and arguments that make it).
    type Wrong<'a> = (Vec<u8>, &'a str, Vec<&'a [u8]>);
    let wrong: Vec<Wrong> = vec![
        (b"user:1:cost_weekly".to_vec(), "list", vec![b"RPUSH", b"x"]),
        (
            b"user:2:cost_weekly".to_vec(),
            "hash",
            vec![b"HSET", b"f", b"1"],
        ),
        (b"user:3:cost_weekly".to_vec(), "set", vec![b"SADD", b"1"]),
        (
            b"user:4:cost_weekly".to_vec(),
            "zset",
            vec![b"ZADD", b"1", b"1"],
        ),
        (
            b"user:5:cost_weekly".to_vec(),
            "stream",
            vec![b"XADD", b"*", b"f", b"1"],
        ),
        (
            b"user:6:cost_5h_rolling".to_vec(),
            "string",
            vec![b"SET", b"12"],
        ),
        (
            b"user:7:cost_5h_rolling".to_vec(),
            "hash",
            vec![b"HSET", b"a", b"1"],
        ),
        (b"quota:8".to_vec(), "string", vec![b"SET", b"12"]),
        (b"quota:9".to_vec(), "list", vec![b"RPUSH", b"12"]),
    ];
    for (k, _, how) in &wrong {
        cmd(&mut c, &[b"DEL", k]);
        let mut args: Vec<&[u8]> = vec![how[0], k];
        args.extend_from_slice(&how[1..]);
        cmd(&mut c, &args);
    }
    let before = snapshot(&mut c);
    let before_digest = digest(&mut c);

    let report = call_ok(&mut c, &["CONSISTENCY.CHECK"]);
    let found = findings(&report);
    let expect: BTreeMap<Vec<u8>, (String, Option<String>)> = wrong
        .iter()
        .map(|(k, t, _)| (k.clone(), ("invalid".to_string(), Some(format!("({t})")))))
        .collect();
    assert_eq!(found, expect, "{report:?}");
    assert_eq!(digest(&mut c), before_digest, "CHECK changed a key");

    // REWRITE of given ids never writes over a key of another type.
    let r = call_ok(
        &mut c,
        &[
            "CONSISTENCY.FIX",
            "1",
            "2",
            "RULE",
            "cost_weekly",
            "REWRITE",
            "DRYRUN",
        ],
    );
    for e in as_array(field(&r, "entries")) {
        assert_eq!(as_str(field(e, "action")), "would_delete", "{r:?}");
    }
    assert_eq!(digest(&mut c), before_digest);

    // FIX ALL DRYRUN says what it would do; FIX ALL deletes exactly those keys.
    let dry = call_ok(&mut c, &["CONSISTENCY.FIX", "ALL", "DRYRUN"]);
    assert_eq!(as_i64(field(&dry, "changed")), 0);
    assert_eq!(digest(&mut c), before_digest);
    let fixed = call_ok(&mut c, &["CONSISTENCY.FIX", "ALL", "REWRITE"]);
    assert_eq!(
        as_i64(field(&fixed, "changed")),
        wrong.len() as i64,
        "{fixed:?}"
    );
    let mut expect_after = before;
    for (k, _, _) in &wrong {
        expect_after.remove(k);
    }
    assert_eq!(snapshot(&mut c), expect_after);
    let clean = call_ok(&mut c, &["CONSISTENCY.CHECK"]);
    assert_eq!(as_i64(field(&clean, "drifted")), 0);
    assert_no_crash(&redis.log());
}

// ---------------------------------------------------------------------------
// Huge and strange values
// ---------------------------------------------------------------------------

#[test]
fn huge_and_unparseable_values_are_invalid_and_redis_keeps_answering() {
    let (pg, redis) = env(
        30,
        &[common::weekly_rule_json(), common::window_rule_json()],
    );
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    let big = vec![b'7'; 10 * 1024 * 1024];
    set(&mut c, b"user:1:cost_weekly", &big);
    let mut big_text = vec![b'x'; 10 * 1024 * 1024];
    big_text[0] = b'1';
    set(&mut c, b"user:2:cost_weekly", &big_text);
    let strange: [(&[u8], &str); 9] = [
        (b"user:3:cost_weekly", "abc"),
        (b"user:4:cost_weekly", ""),
        (b"user:5:cost_weekly", "nan"),
        (b"user:6:cost_weekly", "inf"),
        (b"user:7:cost_weekly", "-inf"),
        (b"user:8:cost_weekly", "1e999"),
        (b"user:9:cost_weekly", "12abc"),
        (b"user:10:cost_weekly", "0x10"),
        (b"user:11:cost_weekly", "1,5"),
    ];
    for (k, v) in strange {
        set(&mut c, k, v.as_bytes());
    }
    // A window ZSET of 200k members, all in the window, 0.001 each: sum 200.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for chunk in 0..20 {
        let mut p = redis::pipe();
        let mut z = p.cmd("ZADD");
        z = z.arg("user:12:cost_5h_rolling");
        for i in 0..10_000 {
            let n = chunk * 10_000 + i;
            z = z
                .arg(now_ms - 1000)
                .arg(format!("{}:{n}:0.001", now_ms - 1000));
        }
        z.ignore();
        p.query::<()>(&mut c).unwrap();
    }
    // And a window member whose amount is no number.
    cmd(
        &mut c,
        &[
            b"ZADD",
            b"user:13:cost_5h_rolling",
            (now_ms - 1000).to_string().as_bytes(),
            format!("{}:oops", now_ms - 1000).as_bytes(),
        ],
    );
    let before = digest(&mut c);

    let pings = Pinger::start(&redis);
    let started = Instant::now();
    let report = call_ok(&mut c, &["CONSISTENCY.CHECK", "LIMIT", "1000"]);
    let took = started.elapsed();
    let found = findings(&report);
    // A 10 MB run of 7s overflows a double: invalid, like the 10 MB text.
    assert_eq!(found[&b"user:1:cost_weekly".to_vec()].0, "invalid");
    assert_eq!(found[&b"user:2:cost_weekly".to_vec()].0, "invalid");
    assert_eq!(
        found[&b"user:2:cost_weekly".to_vec()]
            .1
            .as_ref()
            .map(String::len),
        Some(big_text.len()),
        "the cached value is shown as stored"
    );
    for (k, v) in strange {
        let (status, cached) = &found
            .get(k)
            .unwrap_or_else(|| panic!("{} not reported", String::from_utf8_lossy(k)));
        assert_eq!(status, "invalid", "{v:?}");
        assert_eq!(cached.as_deref(), Some(v));
    }
    let (status, cached) = &found[&b"user:12:cost_5h_rolling".to_vec()];
    assert_eq!(status, "drift", "the 200k-member window sums to 200");
    assert!((cached.as_ref().unwrap().parse::<f64>().unwrap() - 200.0).abs() < 1e-6);
    assert_eq!(
        found[&b"user:13:cost_5h_rolling".to_vec()],
        (
            "invalid".to_string(),
            Some(format!("{}:oops", now_ms - 1000))
        )
    );
    assert_eq!(found.len(), 2 + strange.len() + 2, "{found:?}");
    eprintln!("CHECK over a 10 MB value and a 200k-member ZSET took {took:?}");
    assert_pings(pings, 5, PING_BOUND);
    assert_eq!(digest(&mut c), before);
    // JSON too: the report stays valid JSON around a 10 MB value.
    let json_text = call_ok(&mut c, &["CONSISTENCY.CHECK", "ID", "2", "FORMAT", "json"]);
    let parsed: serde_json::Value = serde_json::from_str(as_str(&json_text)).unwrap();
    assert_eq!(parsed["entries"][0]["status"], "invalid");
    // FIX of the id clears the huge key; the log line stays one bounded line.
    let fixed = call_ok(&mut c, &["CONSISTENCY.FIX", "2", "RULE", "cost_weekly"]);
    assert_eq!(as_i64(field(&fixed, "changed")), 1);
    assert!(!exists(&mut c, b"user:2:cost_weekly"));
    let log = redis.log();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 64 * 1024, "a log line of {longest} bytes");
    assert_no_crash(&log);
}

// ---------------------------------------------------------------------------
// Glob characters and binary bytes
// ---------------------------------------------------------------------------

#[test]
fn ids_with_glob_characters_and_binary_bytes_are_never_matched_as_patterns() {
    let globby = json!({
        "name": "globby", "kind": "number", "key": "c[a]che:?:{id}",
        "truth": ledger::WEEKLY_TRUTH
    });
    let backslash = json!({
        "name": "backslash", "kind": "number", "key": "k\\{id}",
        "truth": ledger::WEEKLY_TRUTH
    });
    let (pg, redis) = env(5, &[common::weekly_rule_json(), globby, backslash]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    let weekly: BTreeMap<i64, String> = ledger::truth_weekly(&pg).into_iter().collect();
    // Ids that are glob patterns or bytes; every one would match the others, or
    // user 1..5's keys, if read as a pattern.
    let odd_ids: [&[u8]; 9] = [
        b"*", b"?", b"[12]", b"[", b"\\", b"1*", b"\xff", b"a\x00b", b"*\xfe?",
    ];
    for id in odd_ids {
        set(&mut c, &key(WEEKLY, id), b"5000");
    }
    // Keys that would match the templates if their literal parts were globs.
    for k in [
        &b"cache:x:1"[..],
        b"cache:?:1",
        b"c[a]che:xx:1",
        b"k1",
        b"kk1",
    ] {
        set(&mut c, k, b"1");
    }
    set(&mut c, b"c[a]che:?:1", weekly[&1].as_bytes());
    set(&mut c, b"k\\2", weekly[&2].as_bytes());
    set(&mut c, b"other:*", b"x");
    let before = snapshot(&mut c);

    // CHECK: glob-character ids are plain unknown ids (orphans), binary ids are
    // invalid; the templates' look-alikes are not theirs.
    let report = call_ok(&mut c, &["CONSISTENCY.CHECK", "LIMIT", "100"]);
    let found = findings(&report);
    for id in odd_ids {
        let k = key(WEEKLY, id);
        let status = &found
            .get(&k)
            .unwrap_or_else(|| panic!("{} not reported", check_support::show(&k)))
            .0;
        let want = if std::str::from_utf8(id).is_ok() && !id.contains(&0) {
            "orphan"
        } else {
            "invalid"
        };
        assert_eq!(status, want, "{}", check_support::show(&k));
    }
    assert_eq!(found.len(), odd_ids.len(), "{found:?}");
    let by_rule = field(&report, "by_rule");
    assert_eq!(as_i64(field(field(by_rule, "globby"), "checked")), 1);
    assert_eq!(as_i64(field(field(by_rule, "backslash"), "checked")), 1);
    assert_eq!(
        as_i64(field(field(by_rule, "cost_weekly"), "checked")),
        5 + odd_ids.len() as i64
    );

    // CHECK ID * reads the one key named with '*'.
    let one = call_ok(
        &mut c,
        &["CONSISTENCY.CHECK", "RULE", "cost_weekly", "ID", "*"],
    );
    assert_eq!(as_i64(field(&one, "checked")), 1);
    assert_eq!(as_i64(field(&one, "drifted")), 1);

    // FIX of each odd id deletes exactly its own key.
    let mut expect = before.clone();
    for id in odd_ids {
        let r = cmd(
            &mut c,
            &[b"CONSISTENCY.FIX", b"ID", id, b"RULE", b"cost_weekly"],
        );
        assert_eq!(as_i64(field(&r, "changed")), 1, "{r:?}");
        expect.remove(&key(WEEKLY, id));
        assert_eq!(
            snapshot(&mut c),
            expect,
            "FIX {} touched another key",
            check_support::show(id)
        );
    }
    // FIX * again: the key is gone; nobody else's key is touched.
    let r = call_ok(&mut c, &["CONSISTENCY.FIX", "*", "?", "[12]"]);
    assert_eq!(as_i64(field(&r, "changed")), 0, "{r:?}");
    assert_eq!(snapshot(&mut c), expect);

    // PURGE RULE of templates with glob characters: only their literal keys.
    let dry = call_ok(&mut c, &["CONSISTENCY.PURGE", "RULE", "globby", "DRYRUN"]);
    assert_eq!(as_i64(field(&dry, "matched")), 1);
    let r = call_ok(&mut c, &["CONSISTENCY.PURGE", "RULE", "globby"]);
    assert_eq!(as_i64(field(&r, "deleted")), 1);
    expect.remove(b"c[a]che:?:1".as_slice());
    let r = call_ok(&mut c, &["CONSISTENCY.PURGE", "RULE", "backslash"]);
    assert_eq!(as_i64(field(&r, "deleted")), 1);
    expect.remove(b"k\\2".as_slice());
    assert_eq!(snapshot(&mut c), expect);
    // PURGE MATCH with an escaped star deletes the literal key only.
    set(&mut c, b"user:*:cost_weekly", b"1");
    let r = call_ok(
        &mut c,
        &["CONSISTENCY.PURGE", "MATCH", "user:\\*:cost_weekly"],
    );
    assert_eq!(as_i64(field(&r, "deleted")), 1);
    assert_eq!(snapshot(&mut c), expect);
    assert!(get(&mut c, b"other:*").is_some());
    assert_no_crash(&redis.log());
}
