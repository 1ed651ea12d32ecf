//! A fresh PostgreSQL database per test, on the server named by
//! `CONSISTENCY_TEST_PG` (a libpq string) or the local default.

#![allow(dead_code)] // each test binary uses a different part of this file

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consistency_bridge::PgSettings;
use postgres::config::Host;
use postgres::{Client, Config, NoTls};

const DEFAULT_PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn base_config() -> Config {
    let url = std::env::var("CONSISTENCY_TEST_PG").unwrap_or_else(|_| DEFAULT_PG.to_string());
    Config::from_str(&url).expect("CONSISTENCY_TEST_PG is not a valid connection string")
}

/// A database created for one test and dropped when it ends.
pub struct TestDb {
    pub name: String,
    base: Config,
}

impl TestDb {
    pub fn new() -> TestDb {
        let base = base_config();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "consistency_bridge_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            nanos
        );
        let mut admin = base
            .connect(NoTls)
            .expect("cannot reach the test PostgreSQL");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create test database");
        TestDb { name, base }
    }

    pub fn config(&self) -> Config {
        let mut c = self.base.clone();
        c.dbname(&self.name);
        c
    }

    pub fn client(&self) -> Client {
        self.config()
            .connect(NoTls)
            .expect("connect to test database")
    }

    /// Settings for the bridge: a key=value url for this database, with the
    /// base's password (if any) passed separately as the module does.
    pub fn settings(&self) -> PgSettings {
        let c = self.config();
        let mut parts = Vec::new();
        if let Some(host) = c.get_hosts().first() {
            let h = match host {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            };
            parts.push(format!("host={}", quote(&h)));
        }
        if let Some(port) = c.get_ports().first() {
            parts.push(format!("port={port}"));
        }
        if let Some(user) = c.get_user() {
            parts.push(format!("user={}", quote(user)));
        }
        parts.push(format!("dbname={}", quote(&self.name)));
        PgSettings {
            url: parts.join(" "),
            password: c
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            pool_size: 2,
            ..PgSettings::default()
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort: a failed drop leaves a uniquely named database behind,
        // which is harmless.
        if let Ok(mut admin) = self.base.connect(NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The seed 000 schema: users and their requests, with enough rows that
/// the planner prefers indexes. Users 1..=3 are hand-made: 1 is live with
/// requests of 10.5 and 2.3 made now, 2 is live without requests, 3 is
/// deleted (with a request). Users 100..=2999 get generated requests.
pub fn seed_costs(client: &mut Client) {
    client
        .batch_execute(
            "CREATE TABLE users (
                 id integer PRIMARY KEY,
                 name text,
                 deleted_at timestamptz
             );
             CREATE TABLE message_request (
                 id bigserial PRIMARY KEY,
                 user_id integer REFERENCES users,
                 cost_usd numeric(21,15),
                 created_at timestamptz DEFAULT now()
             );
             CREATE INDEX message_request_user_created
                 ON message_request (user_id, created_at);
             INSERT INTO users (id, name) VALUES (1, 'one'), (2, 'two');
             INSERT INTO users (id, name, deleted_at) VALUES (3, 'three', now());
             INSERT INTO users (id, name)
                 SELECT g, 'user ' || g FROM generate_series(100, 2999) g;
             INSERT INTO message_request (user_id, cost_usd, created_at) VALUES
                 (1, 10.5, now()),
                 (1, 2.3, now()),
                 (3, 7, now());
             INSERT INTO message_request (user_id, cost_usd, created_at)
                 SELECT 100 + g % 2900, (g % 97) * 0.013, now() - (g % 720) * interval '1 hour'
                 FROM generate_series(1, 5000) g;
             ANALYZE users;
             ANALYZE message_request;",
        )
        .expect("seed cost schema");
}
