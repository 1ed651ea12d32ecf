//! CONSISTENCY.CHECK options: bad input answered at once with a precise `ERR`,
//! LIMIT, THRESHOLD, ID and RULE, and a module started without usable rules.

use crate::check_support;
use crate::common;

use check_support::{check, check_json, num, truth_map, Entry, Proto};
use common::{call_err, ledger, TestPg, TestRedis};

const WEEKLY: &str = "user:{id}:cost_weekly";
const MONTHLY: &str = "user:{id}:cost_monthly";

/// What a test injected: (rule, template, id, offset from the truth).
struct Injected {
    entries: Vec<(Entry, f64)>,
    orphan: Entry,
}

impl Injected {
    /// The entries a check with `threshold` (overriding every rule's), restricted to
    /// `rules` (all if empty) and `ids` (all if empty), must report.
    fn expected(&self, threshold: Option<f64>, rules: &[&str], ids: &[&str]) -> Vec<Entry> {
        let keep = |e: &Entry| {
            (rules.is_empty() || rules.contains(&e.rule.as_str()))
                && (ids.is_empty() || ids.iter().any(|i| i.as_bytes() == e.id.as_slice()))
        };
        let mut out: Vec<Entry> = self
            .entries
            .iter()
            .filter(|(e, offset)| offset.abs() > threshold.unwrap_or(5.0) && keep(e))
            .map(|(e, _)| e.clone())
            .collect();
        if keep(&self.orphan) {
            out.push(self.orphan.clone());
        }
        out
    }
}

struct Setup {
    _pg: TestPg,
    redis: TestRedis,
    injected: Injected,
    users: i64,
}

fn setup() -> Setup {
    const USERS: usize = 60;
    let pg = TestPg::fresh();
    ledger::create_schema(&pg);
    ledger::load(&pg, USERS, 2, 11);
    let rules = common::write_rules(&[common::weekly_rule_json(), common::monthly_rule_json()]);
    let redis = TestRedis::start_for(&pg, &rules, &[]);
    let mut c = redis.conn();
    ledger::fill_cache_weekly(&mut c, &pg);
    ledger::fill_cache_monthly(&mut c, &pg);
    let weekly = truth_map(&ledger::truth_weekly(&pg));
    let monthly = truth_map(&ledger::truth_monthly(&pg));
    let mut entries = Vec::new();
    for (rule, template, truth, n, offset) in [
        ("cost_weekly", WEEKLY, &weekly, 3, 10.0),
        ("cost_weekly", WEEKLY, &weekly, 4, 20.0),
        ("cost_weekly", WEEKLY, &weekly, 5, -30.0),
        ("cost_monthly", MONTHLY, &monthly, 6, 6.0),
        ("cost_monthly", MONTHLY, &monthly, 4, 3.0),
    ] {
        let t: f64 = truth[&n].parse().unwrap();
        let cached = num(t + offset);
        let id = n.to_string();
        check_support::set(
            &mut c,
            &check_support::key_bytes(template, id.as_bytes()),
            cached.as_bytes(),
        );
        entries.push((
            Entry::new(rule, template, id.as_bytes(), "drift")
                .cached(cached)
                .truth(truth[&n].clone())
                .with_diff(),
            offset,
        ));
    }
    check_support::set(&mut c, b"user:9999:cost_weekly", b"1");
    let orphan = Entry::new("cost_weekly", WEEKLY, b"9999", "orphan").cached("1");
    Setup {
        _pg: pg,
        redis,
        injected: Injected { entries, orphan },
        users: USERS as i64,
    }
}

#[test]
fn bad_input_is_refused_at_once_naming_the_option() {
    let s = setup();
    let mut c = s.redis.conn();
    let cases: &[(&[&str], &str)] = &[
        (&["BOGUS"], "ERR unknown option 'BOGUS'"),
        (
            &["RULE", "cost_weekly", "EXTRA"],
            "ERR unknown option 'EXTRA'",
        ),
        (&["THRESHOLD"], "ERR THRESHOLD needs a value"),
        (
            &["THRESHOLD", "-1"],
            "ERR THRESHOLD must be a non-negative number, got '-1'",
        ),
        (
            &["THRESHOLD", "abc"],
            "ERR THRESHOLD must be a non-negative number, got 'abc'",
        ),
        (
            &["THRESHOLD", "nan"],
            "ERR THRESHOLD must be a non-negative number, got 'nan'",
        ),
        (&["LIMIT"], "ERR LIMIT needs a value"),
        (
            &["LIMIT", "-1"],
            "ERR LIMIT must be a non-negative integer, got '-1'",
        ),
        (
            &["LIMIT", "ten"],
            "ERR LIMIT must be a non-negative integer, got 'ten'",
        ),
        (
            &["LIMIT", "1.5"],
            "ERR LIMIT must be a non-negative integer, got '1.5'",
        ),
        (&["ID"], "ERR ID needs a value"),
        (&["RULE"], "ERR RULE needs a value"),
        (
            &["RULE", "nope"],
            "ERR unknown rule 'nope' (loaded: cost_weekly, cost_monthly)",
        ),
        (
            &["RULE", "cost_weekly", "RULE", "cost_5h"],
            "ERR unknown rule 'cost_5h' (loaded: cost_weekly, cost_monthly)",
        ),
        // A client's name is shown cut and escaped, not echoed whole.
        (
            &["RULE", &"\r".repeat(100)],
            "ERR unknown rule '\\x0d\\x0d\\x0d\\x0d\\x0d\\x0d\\x0d\\x0d\\x0d\\x0d\\x0d\\x0d\\x0d\\x0d\\x0d\\x0d...(100 bytes)' (loaded: cost_weekly, cost_monthly)",
        ),
        (
            &["FORMAT", "xml"],
            "ERR FORMAT must be resp or json, got 'xml'",
        ),
        (&["FORMAT"], "ERR FORMAT needs a value"),
    ];
    for (args, want) in cases {
        let mut full = vec!["CONSISTENCY.CHECK"];
        full.extend_from_slice(args);
        let started = std::time::Instant::now();
        let got = call_err(&mut c, &full);
        assert_eq!(&got, want, "{full:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "{full:?} took {:?}",
            started.elapsed()
        );
    }
    // The connection is still usable and the module still answers.
    let r = check(&mut c, Proto::Resp2, &[]);
    r.assert_findings(&s.injected.expected(None, &[], &[]));
}

#[test]
fn limit_threshold_id_and_rule_select_what_is_reported() {
    let s = setup();
    let mut c = s.redis.conn();
    let all = s.injected.expected(None, &[], &[]);
    let keys = 2 * s.users + 1;

    // Default: everything injected beyond 5.0.
    let r = check(&mut c, Proto::Resp2, &[]);
    assert_eq!(r.checked, keys);
    r.assert_findings(&all);
    let full_order = r.entries.clone();

    // LIMIT cuts the entries, not the counts; keywords are case-insensitive.
    for limit in [0usize, 1, 2] {
        let l = limit.to_string();
        let r = check(&mut c, Proto::Resp2, &["limit", &l]);
        assert_eq!(r.drifted, all.len() as i64);
        assert_eq!(r.truncated, all.len() as i64 - limit as i64);
        assert_eq!(r.entries, full_order[..limit], "LIMIT {limit}");
        let total: i64 = r.by_status.iter().map(|(_, n)| n).sum();
        assert_eq!(total, all.len() as i64, "by_status counts every entry");
    }
    let r = check_json(&mut c, &["LIMIT", "1"]);
    assert_eq!(r.truncated, r.drifted - 1);
    assert_eq!(r.entries.len(), 1);

    // THRESHOLD overrides every rule's threshold.
    for t in ["0", "7", "15", "25", "100"] {
        let tv: f64 = t.parse().unwrap();
        let r = check(&mut c, Proto::Resp2, &["THRESHOLD", t]);
        assert_eq!(r.checked, keys);
        r.assert_findings(&s.injected.expected(Some(tv), &[], &[]));
    }

    // RULE selects rules; by_rule lists only those.
    let r = check(&mut c, Proto::Resp2, &["RULE", "cost_monthly"]);
    assert_eq!(
        r.checked_by_rule(),
        vec![("cost_monthly".to_string(), s.users)]
    );
    assert_eq!(r.checked, s.users);
    r.assert_findings(&s.injected.expected(None, &["cost_monthly"], &[]));
    let r = check(
        &mut c,
        Proto::Resp2,
        &[
            "RULE",
            "cost_monthly",
            "RULE",
            "cost_weekly",
            "RULE",
            "cost_monthly",
        ],
    );
    assert_eq!(
        r.checked_by_rule()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["cost_monthly", "cost_weekly"]
    );
    r.assert_findings(&all);

    // ID reads just those keys: nothing is scanned, so the orphan is not seen.
    let r = check(&mut c, Proto::Resp2, &["ID", "3", "ID", "6", "ID", "3"]);
    assert_eq!(r.ids, 2);
    assert_eq!(r.checked, 4, "two ids, both keys present for each");
    r.assert_findings(&s.injected.expected(None, &[], &["3", "6"]));
    // The orphan when asked for by id; an id with no key and no truth is not checked.
    let r = check(&mut c, Proto::Resp2, &["ID", "9999", "ID", "123456"]);
    assert_eq!(r.checked, 1);
    assert_eq!(r.ids, 2);
    r.assert_findings(&s.injected.expected(None, &[], &["9999"]));
    // Everything together.
    let r = check(
        &mut c,
        Proto::Resp2,
        &[
            "RULE",
            "cost_weekly",
            "ID",
            "4",
            "ID",
            "5",
            "THRESHOLD",
            "25",
        ],
    );
    assert_eq!(r.checked, 2);
    r.assert_findings(
        &s.injected
            .expected(Some(25.0), &["cost_weekly"], &["4", "5"]),
    );
}

#[test]
fn without_rules_redis_starts_and_check_says_why() {
    let pg = TestPg::fresh();
    let missing = common::temp_dir("norules").join("does-not-exist.json");
    let redis = TestRedis::start_for(&pg, &missing, &[]);
    let mut c = redis.conn();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let path = missing.display().to_string();
    let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
    assert!(
        err.starts_with(&format!("ERR no rules loaded: {path}: cannot read")),
        "{err}"
    );
    // Also with options, and for an unknown rule.
    let err = call_err(&mut c, &["CONSISTENCY.CHECK", "RULE", "cost_weekly"]);
    assert!(err.starts_with("ERR no rules loaded: "), "{err}");
    // The log says so once, naming the file.
    assert!(redis.log().contains(&path), "{}", redis.log());
    let status = common::call_ok(&mut c, &["CONSISTENCY.STATUS"]);
    assert_eq!(common::as_i64(common::field(&status, "rules")), 0);
    let why = common::opt_str(common::field(&status, "rules_error")).expect("rules_error");
    assert!(why.contains(&path), "{why}");

    // A file that is there but broken: same, with the rule and the problem.
    let bad = common::write_rules_json(&serde_json::json!({"rules": [
        {"name": "cost_weekly", "kind": "number", "key": "user:{id}:cost_weekly",
         "truth": ledger::WEEKLY_TRUTH, "threshold": -1}
    ]}));
    let redis = TestRedis::start_for(&pg, &bad, &[]);
    let mut c = redis.conn();
    let err = call_err(&mut c, &["CONSISTENCY.CHECK"]);
    let bad_path = bad.display().to_string();
    assert!(
        err.starts_with(&format!(
            "ERR no rules loaded: {bad_path}: rule 'cost_weekly': "
        )),
        "{err}"
    );
    assert!(err.contains("threshold"), "{err}");
}
