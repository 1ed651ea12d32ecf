//! The pool, one-off connections and secrets, against a real PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{seed_costs, TestDb};
use consistency_bridge::{
    connect_direct, read_password_file, redact_url, BridgeError, PgPool, PgSettings, TruthQuery,
    TruthShape,
};

fn closed_port_settings(connect_timeout: Duration) -> PgSettings {
    PgSettings {
        url: "host=127.0.0.1 port=1 user=postgres dbname=postgres".to_string(),
        password: Some("hunter2".to_string()),
        connect_timeout,
        statement_timeout: Duration::from_secs(1),
        pool_size: 2,
        ..PgSettings::default()
    }
}

#[test]
fn pool_starts_while_postgres_is_down_and_get_fails_in_time() {
    let timeout = Duration::from_millis(800);
    let settings = closed_port_settings(timeout);
    let pool = PgPool::new(&settings).expect("creating the pool must not connect");
    assert_eq!(pool.state().connections, 0);

    for _ in 0..2 {
        let started = Instant::now();
        let err = pool.get().map(|_| ()).unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            elapsed < timeout + Duration::from_secs(1),
            "took {elapsed:?}"
        );
        match &err {
            BridgeError::Unavailable(r) => assert!(r.contains("connection refused"), "{r}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.starts_with("postgres unavailable: "), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[test]
fn connect_direct_to_closed_port_is_unavailable() {
    let settings = closed_port_settings(Duration::from_millis(500));
    let started = Instant::now();
    match connect_direct(&settings, Duration::from_millis(250)) {
        Err(BridgeError::Unavailable(r)) => assert_eq!(r, "connection refused"),
        other => panic!("expected Unavailable, got {:?}", other.map(|_| ())),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn pool_checks_out_and_returns_connections() {
    let db = TestDb::new();
    let mut settings = db.settings();
    settings.connect_timeout = Duration::from_millis(500);
    let pool = PgPool::new(&settings).unwrap();
    {
        let mut a = pool.get().unwrap();
        let mut b = pool.get().unwrap();
        let one: i32 = a.query_one("SELECT 1", &[]).unwrap().get(0);
        let two: i32 = b.query_one("SELECT 2", &[]).unwrap().get(0);
        assert_eq!((one, two), (1, 2));
        assert_eq!(pool.state().connections, 2);
        assert_eq!(pool.state().idle, 0);

        // Pool exhausted: the reason says so rather than blaming PostgreSQL.
        let started = Instant::now();
        match pool.get().map(|_| ()) {
            Err(BridgeError::Unavailable(r)) => assert!(r.contains("in use"), "{r}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(started.elapsed() < pool.settings().connect_timeout + Duration::from_secs(1));
    }
    assert_eq!(pool.state().idle, 2);
    // Connections say who they are in pg_stat_activity.
    let mut c = pool.get().unwrap();
    let name: String = c
        .query_one("SELECT current_setting('application_name')", &[])
        .unwrap()
        .get(0);
    assert_eq!(name, "redis-consistency");
}

#[test]
fn pool_runs_truth_queries() {
    let db = TestDb::new();
    seed_costs(&mut db.client());
    let pool = PgPool::new(&db.settings()).unwrap();
    let truth = TruthQuery::new(
        include_str!("../sql/cost_weekly.sql"),
        TruthShape::IdValue,
        false,
    );
    let mut conn = pool.get().unwrap();
    let rows = truth
        .run_ids(
            &mut *conn,
            &["1".to_string()],
            None,
            pool.settings().statement_timeout,
        )
        .unwrap();
    assert_eq!(rows[0].value.as_deref(), Some("12.800000000000000"));
}

#[test]
fn unknown_database_is_unavailable_with_the_servers_reason() {
    let db = TestDb::new();
    let mut settings = db.settings();
    settings.url.push_str(" dbname=consistency_no_such_db");
    settings.connect_timeout = Duration::from_millis(500);
    let pool = PgPool::new(&settings).unwrap();
    match pool.get().map(|_| ()) {
        Err(BridgeError::Unavailable(r)) => assert!(r.contains("does not exist"), "{r}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn connect_direct_sets_the_statement_timeout() {
    let db = TestDb::new();
    let mut client = connect_direct(&db.settings(), Duration::from_millis(250)).unwrap();
    let shown: String = client
        .query_one("SHOW statement_timeout", &[])
        .unwrap()
        .get(0);
    assert_eq!(shown, "250ms");
}

#[test]
fn broken_connection_is_unavailable() {
    let db = TestDb::new();
    let mut victim = db.client();
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    db.client()
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let truth = TruthQuery::new("SELECT 1, 2", TruthShape::IdValue, false);
    match truth.run_all(&mut victim, None, Duration::from_secs(1)) {
        Err(BridgeError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn bad_url_is_a_config_error() {
    let settings = PgSettings {
        url: "host=127.0.0.1 port=notaport password=hunter2".to_string(),
        ..PgSettings::default()
    };
    match PgPool::new(&settings) {
        Err(e @ BridgeError::Config(_)) => {
            let text = e.to_string();
            assert!(text.starts_with("postgres config: "), "{text}");
            assert!(text.contains("port") && !text.contains("hunter2"), "{text}");
        }
        other => panic!("expected Config, got {other:?}"),
    }
    assert!(matches!(
        connect_direct(&settings, Duration::from_secs(1)),
        Err(BridgeError::Config(_))
    ));
}

#[test]
fn password_file_is_read_and_trimmed() {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("consistency-bridge-pw-{}", std::process::id()));
    let path_str = path.to_str().unwrap();

    std::fs::write(&path, "s3cret pass\n").unwrap();
    assert_eq!(read_password_file(path_str).unwrap(), "s3cret pass");
    std::fs::write(&path, "crlf\r\n").unwrap();
    assert_eq!(read_password_file(path_str).unwrap(), "crlf");
    std::fs::write(&path, "no-newline").unwrap();
    assert_eq!(read_password_file(path_str).unwrap(), "no-newline");
    std::fs::write(&path, "\n").unwrap();
    assert!(matches!(
        read_password_file(path_str),
        Err(BridgeError::Config(_))
    ));
    std::fs::remove_file(&path).unwrap();

    match read_password_file(path_str) {
        Err(BridgeError::Config(r)) => assert!(r.contains("no such file"), "{r}"),
        other => panic!("expected Config, got {other:?}"),
    }
}

#[test]
fn redact_url_hides_passwords_in_both_forms() {
    assert_eq!(
        redact_url("host=db user=app password='x y' dbname=costs"),
        "host=db user=app dbname=costs password=***"
    );
    assert_eq!(redact_url("host=db password=plain"), "host=db password=***");
    assert_eq!(
        redact_url("postgres://u:secret@h/db"),
        "host=h port=5432 user=u dbname=db password=***"
    );
    assert_eq!(redact_url("host=db user=app"), "host=db user=app");
}
