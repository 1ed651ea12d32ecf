//! Truth queries against a real PostgreSQL.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use common::{seed_costs, TestDb};
use consistency_bridge::{BridgeError, TruthQuery, TruthRow, TruthShape};

const WEEKLY: &str = include_str!("../sql/cost_weekly.sql");
const MONTHLY: &str = include_str!("../sql/cost_monthly.sql");
const ROLLING: &str = include_str!("../sql/cost_5h_rolling.sql");
const MCP: &str = include_str!("../sql/mcp_connection.sql");

const LIMIT: Duration = Duration::from_secs(30);

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn by_id(rows: Vec<TruthRow>) -> BTreeMap<String, Option<String>> {
    rows.into_iter().map(|r| (r.id, r.value)).collect()
}

#[test]
fn run_all_returns_every_live_user_with_exact_numeric_text() {
    let db = TestDb::new();
    let mut client = db.client();
    seed_costs(&mut client);
    let live: i64 = client
        .query_one("SELECT count(*) FROM users WHERE deleted_at IS NULL", &[])
        .unwrap()
        .get(0);

    for sql in [WEEKLY, MONTHLY] {
        let truth = TruthQuery::new(sql, TruthShape::IdValue, false);
        let rows = by_id(truth.run_all(&mut client, None, LIMIT).unwrap());
        assert_eq!(rows.len() as i64, live);
        assert_eq!(rows["1"].as_deref(), Some("12.800000000000000"));
        assert_eq!(rows["2"].as_deref(), Some("0"));
        assert!(!rows.contains_key("3"), "deleted user returned");
        assert_eq!(truth.id_type(), Some("int4"));
    }
}

#[test]
fn null_value_is_none() {
    let db = TestDb::new();
    let mut client = db.client();
    seed_costs(&mut client);
    let truth = TruthQuery::new(
        "SELECT u.id, SUM(m.cost_usd) FROM users u \
         LEFT JOIN message_request m ON m.user_id = u.id \
         WHERE u.id IN (1, 2) GROUP BY u.id",
        TruthShape::IdValue,
        false,
    );
    let rows = by_id(truth.run_all(&mut client, None, LIMIT).unwrap());
    assert_eq!(rows["1"].as_deref(), Some("12.800000000000000"));
    assert_eq!(rows["2"], None);
}

#[test]
fn run_ids_returns_exactly_the_asked_ids() {
    let db = TestDb::new();
    let mut client = db.client();
    seed_costs(&mut client);
    let truth = TruthQuery::new(WEEKLY, TruthShape::IdValue, false);
    // 3 is deleted, 99999 unknown; "abc", "007", "1.0" and an out-of-range
    // number cannot be int4 ids and must be dropped without an error.
    let asked = ids(&[
        "1",
        "2",
        "3",
        "99999",
        "abc",
        "007",
        "1.0",
        "4294967296",
        "150",
    ]);
    let rows = by_id(truth.run_ids(&mut client, &asked, None, LIMIT).unwrap());
    assert_eq!(
        rows.keys().map(String::as_str).collect::<Vec<_>>(),
        ["1", "150", "2"]
    );
    assert_eq!(rows["1"].as_deref(), Some("12.800000000000000"));

    let none = truth
        .run_ids(&mut client, &ids(&["abc", "x1"]), None, LIMIT)
        .unwrap();
    assert!(none.is_empty());
}

#[test]
fn empty_id_list_does_not_query() {
    let db = TestDb::new();
    let mut client = db.client();
    // Broken SQL proves nothing was prepared or run.
    let truth = TruthQuery::new("SELEC nonsense", TruthShape::IdValue, false);
    let rows = truth.run_ids(&mut client, &[], None, LIMIT).unwrap();
    assert!(rows.is_empty());
    assert_eq!(truth.id_type(), None);
}

#[test]
fn window_start_cuts_the_sum() {
    let db = TestDb::new();
    let mut client = db.client();
    seed_costs(&mut client);
    client
        .batch_execute(
            "INSERT INTO users (id, name) VALUES (4, 'four');
             INSERT INTO message_request (user_id, cost_usd, created_at) VALUES
                 (4, 100, now() - interval '6 hours'),
                 (4, 1.25, now() - interval '1 hour'),
                 (4, 0.5, now() - interval '4 hours 59 minutes');",
        )
        .unwrap();
    let truth = TruthQuery::new(ROLLING, TruthShape::IdValue, true);
    let start = SystemTime::now() - Duration::from_secs(5 * 3600);

    let all = by_id(truth.run_all(&mut client, Some(start), LIMIT).unwrap());
    assert_eq!(all["4"].as_deref(), Some("1.750000000000000"));
    assert_eq!(all["2"].as_deref(), Some("0"));

    let some = truth
        .run_ids(&mut client, &ids(&["4"]), Some(start), LIMIT)
        .unwrap();
    assert_eq!(
        some,
        vec![TruthRow {
            id: "4".into(),
            value: Some("1.750000000000000".into()),
            named: Vec::new(),
        }]
    );

    // A start seven hours back takes the old request in as well.
    let earlier = SystemTime::now() - Duration::from_secs(7 * 3600);
    let wide = truth
        .run_ids(&mut client, &ids(&["4"]), Some(earlier), LIMIT)
        .unwrap();
    assert_eq!(wide[0].value.as_deref(), Some("101.750000000000000"));

    // The window start is required when the SQL takes one.
    assert!(matches!(
        truth.run_all(&mut client, None, LIMIT),
        Err(BridgeError::BadTruth(_))
    ));
}

#[test]
fn id_restricted_query_uses_the_primary_key_index() {
    let db = TestDb::new();
    let mut client = db.client();
    seed_costs(&mut client);
    let truth = TruthQuery::new(WEEKLY, TruthShape::IdValue, false);
    let plan = truth
        .explain_ids(&mut client, &ids(&["1", "2", "150"]), None)
        .unwrap();
    assert!(plan.contains("Index"), "{plan}");
    assert!(!plan.contains("Seq Scan on users"), "{plan}");

    let rolling = TruthQuery::new(ROLLING, TruthShape::IdValue, true);
    let plan = rolling
        .explain_ids(&mut client, &ids(&["1"]), Some(SystemTime::now()))
        .unwrap();
    assert!(plan.contains("Index"), "{plan}");
    assert!(!plan.contains("Seq Scan on users"), "{plan}");

    // The twin that must fail: compared through its text form, the id
    // cannot use the index, and the assertion above would catch it.
    let as_text = TruthQuery::new(
        "SELECT u.id::numeric, u.name FROM users u",
        TruthShape::IdValue,
        false,
    );
    let plan = as_text
        .explain_ids(&mut client, &ids(&["1"]), None)
        .unwrap();
    assert!(plan.contains("Seq Scan on users"), "{plan}");
}

#[test]
fn text_ids_work_and_use_the_index() {
    let db = TestDb::new();
    let mut client = db.client();
    client
        .batch_execute(
            "CREATE TABLE devices (id text PRIMARY KEY, label varchar(40));
             INSERT INTO devices SELECT 'dev-' || g, 'label ' || g
                 FROM generate_series(1, 3000) g;
             INSERT INTO devices VALUES ('with space', NULL), ('it''s', 'quote');
             ANALYZE devices;",
        )
        .unwrap();
    let truth = TruthQuery::new("SELECT id, label FROM devices", TruthShape::IdValue, false);
    let asked = ids(&["dev-5", "nope", "with space", "it's", "dev-7", "nul\0byte"]);
    let rows = by_id(truth.run_ids(&mut client, &asked, None, LIMIT).unwrap());
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows["dev-5"].as_deref(), Some("label 5"));
    assert_eq!(rows["with space"], None);
    assert_eq!(rows["it's"].as_deref(), Some("quote"));
    assert_eq!(truth.id_type(), Some("text"));

    let plan = truth.explain_ids(&mut client, &asked, None).unwrap();
    assert!(plan.contains("devices_pkey"), "{plan}");

    // varchar ids compare as text too.
    let by_label = TruthQuery::new("SELECT label, id FROM devices", TruthShape::IdValue, false);
    let rows = by_label
        .run_ids(&mut client, &ids(&["label 9"]), None, LIMIT)
        .unwrap();
    assert_eq!(rows[0].value.as_deref(), Some("dev-9"));
    assert_eq!(by_label.id_type(), Some("varchar"));
}

#[test]
fn uuid_ids_work_and_bad_ones_are_dropped() {
    let db = TestDb::new();
    let mut client = db.client();
    client
        .batch_execute(
            "CREATE TABLE xiaozhi_mcp_endpoints (id uuid PRIMARY KEY, is_enabled boolean);
             INSERT INTO xiaozhi_mcp_endpoints VALUES
                 ('0e6f1b2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b', true),
                 ('11111111-2222-3333-4444-555555555555', false),
                 ('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', true);",
        )
        .unwrap();
    let truth = TruthQuery::new(MCP, TruthShape::IdOnly, false);
    let all = by_id(truth.run_all(&mut client, None, LIMIT).unwrap());
    assert_eq!(all.len(), 2);
    assert_eq!(all["aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"], None);

    let asked = ids(&[
        "0e6f1b2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
        "11111111-2222-3333-4444-555555555555",
        "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE",
        "not-a-uuid",
    ]);
    let rows = truth.run_ids(&mut client, &asked, None, LIMIT).unwrap();
    assert_eq!(
        rows,
        vec![TruthRow {
            id: "0e6f1b2a-3c4d-4e5f-8a9b-0c1d2e3f4a5b".into(),
            value: None,
            named: Vec::new(),
        }]
    );
    assert_eq!(truth.id_type(), Some("uuid"));
}

#[test]
fn other_id_types_compare_as_text() {
    let db = TestDb::new();
    let mut client = db.client();
    seed_costs(&mut client);
    let truth = TruthQuery::new(
        "SELECT id::numeric(10,1), name FROM users",
        TruthShape::IdValue,
        false,
    );
    let rows = truth
        .run_ids(&mut client, &ids(&["1.0", "1", "abc"]), None, LIMIT)
        .unwrap();
    assert_eq!(
        rows,
        vec![TruthRow {
            id: "1.0".into(),
            value: Some("one".into()),
            named: Vec::new(),
        }]
    );
    assert_eq!(truth.id_type(), Some("numeric"));
}

#[test]
fn extra_columns_semicolons_and_comments_are_fine() {
    let db = TestDb::new();
    let mut client = db.client();
    seed_costs(&mut client);
    // Extra columns, one of them named like the first two: only the first
    // two are used, and the names cannot clash with the wrapper's.
    let truth = TruthQuery::new(
        "SELECT u.id, u.name, 'x' AS id, 'y' AS value FROM users u WHERE u.id < 3 -- note\n;",
        TruthShape::IdValue,
        false,
    );
    let rows = by_id(truth.run_all(&mut client, None, LIMIT).unwrap());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows["2"].as_deref(), Some("two"));
    let rows = truth
        .run_ids(&mut client, &ids(&["1"]), None, LIMIT)
        .unwrap();
    assert_eq!(rows[0].value.as_deref(), Some("one"));
}

#[test]
fn syntax_error_and_missing_table_are_query_errors() {
    let db = TestDb::new();
    let mut client = db.client();
    let bad = TruthQuery::new("SELECT id, FROM users", TruthShape::IdValue, false);
    match bad.run_all(&mut client, None, LIMIT) {
        Err(BridgeError::Query(r)) => assert!(r.contains("syntax error"), "{r}"),
        other => panic!("expected Query, got {other:?}"),
    }
    let missing = TruthQuery::new("SELECT id, 1 FROM nope", TruthShape::IdValue, false);
    let err = missing.run_all(&mut client, None, LIMIT).unwrap_err();
    assert_eq!(
        err.to_string(),
        "truth query failed: relation \"nope\" does not exist (SQLSTATE 42P01)"
    );
    // The connection is still usable.
    client.simple_query("SELECT 1").unwrap();
}

#[test]
fn wrong_shapes_are_bad_truth() {
    let db = TestDb::new();
    let mut client = db.client();
    let one_column = TruthQuery::new("SELECT 1", TruthShape::IdValue, false);
    match one_column.run_all(&mut client, None, LIMIT) {
        Err(BridgeError::BadTruth(r)) => assert!(r.contains("1 column"), "{r}"),
        other => panic!("expected BadTruth, got {other:?}"),
    }
    // A statement with no result columns is never run.
    client.batch_execute("CREATE TABLE t (id int)").unwrap();
    let no_columns = TruthQuery::new("DELETE FROM t", TruthShape::IdOnly, false);
    assert!(matches!(
        no_columns.prepare(&mut client),
        Err(BridgeError::BadTruth(_))
    ));
    // $1 without a window, or a second parameter with one.
    let stray = TruthQuery::new("SELECT $1::int, 1", TruthShape::IdValue, false);
    assert!(matches!(
        stray.prepare(&mut client),
        Err(BridgeError::BadTruth(_))
    ));
    let two = TruthQuery::new(
        "SELECT 1, 2 WHERE now() > $1 AND $2::int = 1",
        TruthShape::IdValue,
        true,
    );
    assert!(matches!(
        two.prepare(&mut client),
        Err(BridgeError::BadTruth(_))
    ));
    // IdOnly needs just one.
    let id_only = TruthQuery::new("SELECT 1", TruthShape::IdOnly, false);
    assert_eq!(
        id_only.run_all(&mut client, None, LIMIT).unwrap(),
        vec![TruthRow {
            id: "1".into(),
            value: None,
            named: Vec::new(),
        }]
    );
}

#[test]
fn statement_timeout_gives_timeout_quickly() {
    let db = TestDb::new();
    let mut client = db.client();
    let slow = TruthQuery::new("SELECT pg_sleep(5), 1", TruthShape::IdValue, false);
    let started = Instant::now();
    let err = slow
        .run_all(&mut client, None, Duration::from_millis(200))
        .unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        BridgeError::Timeout(r) => assert!(r.contains("200 ms"), "{r}"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(err.to_string().starts_with("postgres timeout: "));
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    // The timeout is per call: the next call with a larger one succeeds.
    let quick = TruthQuery::new("SELECT pg_sleep(0.3), 1", TruthShape::IdValue, false);
    assert!(quick
        .run_all(&mut client, None, Duration::from_secs(5))
        .is_ok());
}

#[test]
fn learned_type_is_shared_across_connections() {
    let db = TestDb::new();
    let mut first = db.client();
    seed_costs(&mut first);
    let truth = TruthQuery::new(WEEKLY, TruthShape::IdValue, false);
    truth.prepare(&mut first).unwrap();
    drop(first);
    let mut second = db.client();
    let rows = truth
        .run_ids(&mut second, &ids(&["1"]), None, LIMIT)
        .unwrap();
    assert_eq!(rows[0].value.as_deref(), Some("12.800000000000000"));
}

#[test]
fn works_inside_a_transaction() {
    let db = TestDb::new();
    let mut client = db.client();
    seed_costs(&mut client);
    let truth = TruthQuery::new(WEEKLY, TruthShape::IdValue, false);
    let mut tx = client.transaction().unwrap();
    let rows = truth.run_ids(&mut tx, &ids(&["2"]), None, LIMIT).unwrap();
    assert_eq!(rows[0].value.as_deref(), Some("0"));
    tx.rollback().unwrap();
}

#[test]
fn named_columns_come_back_by_name_whatever_their_order() {
    let db = TestDb::new();
    let mut client = db.client();
    let named = |required: &[&str]| TruthShape::Named {
        required: required.iter().map(|s| s.to_string()).collect(),
    };
    // A column name that is not an identifier (a dot, a quote) is quoted, never SQL.
    let sql = r#"SELECT r AS "reset", v AS "stats.total", i AS id, q AS "a""b"
                 FROM (VALUES (1, '0000', 2.50, NULL), (2, '1800', 3.0, 'x')) AS s(i, r, v, q)"#;
    let truth = TruthQuery::new(sql, named(&["reset"]), false);
    let mut rows = truth.run_all(&mut client, None, LIMIT).unwrap();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let names: Vec<&str> = truth.names().unwrap().iter().map(|n| &**n).collect();
    assert_eq!(names, ["reset", "stats.total", "a\"b"]);
    assert_eq!(truth.id_type(), Some("int4"));
    let shown: Vec<(String, Vec<Option<String>>)> = rows
        .iter()
        .map(|r| {
            (
                r.id.clone(),
                r.named.iter().map(|(_, v)| v.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            (
                "1".into(),
                vec![Some("0000".into()), Some("2.50".into()), None]
            ),
            (
                "2".into(),
                vec![Some("1800".into()), Some("3.0".into()), Some("x".into())]
            ),
        ]
    );
    assert!(rows.iter().all(|r| r.value.is_none()));
    // Restricted to ids, through the id column's own type.
    let two = truth
        .run_ids(&mut client, &ids(&["2", "abc"]), None, LIMIT)
        .unwrap();
    assert_eq!(two.len(), 1);
    assert_eq!(two[0].id, "2");

    // A missing column is named; nothing runs.
    let missing = TruthQuery::new(sql, named(&["reset", "type"]), false);
    let err = missing.run_all(&mut client, None, LIMIT).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad truth query: truth has no column 'type' (columns: reset, stats.total, id, a\"b); columns are matched by name"
    );
    let no_id = TruthQuery::new("SELECT 1 AS user_id, 2 AS value", named(&[]), false);
    let err = no_id.run_all(&mut client, None, LIMIT).unwrap_err();
    assert!(err.to_string().contains("no column 'id'"), "{err}");
    let twice = TruthQuery::new("SELECT 1 AS id, 2 AS v, 3 AS v", named(&[]), false);
    let err = twice.run_all(&mut client, None, LIMIT).unwrap_err();
    assert!(err.to_string().contains("column 'v' twice"), "{err}");
}
