//! `consistency.db` names an existing database: a value at or above `databases`
//! is refused on CONFIG SET and at load (scheduled runs would otherwise select
//! nothing and check and repair db 0).
//!
//! Run: `cargo test --release --features test-hooks --test integration config_db::`

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{as_array, as_str, call_err, call_ok, TestRedis};

#[test]
fn config_set_refuses_a_db_past_databases() {
    let r = TestRedis::start_with(&[], &["databases 4"]);
    let mut c = r.conn();
    call_ok(&mut c, &["CONFIG", "SET", "consistency.db", "3"]);
    for bad in ["4", "16", "1000000"] {
        let err = call_err(&mut c, &["CONFIG", "SET", "consistency.db", bad]);
        assert!(err.contains("db must name an existing database"), "{err}");
        assert!(err.contains(bad), "{err}");
    }
    let v = call_ok(&mut c, &["CONFIG", "GET", "consistency.db"]);
    assert_eq!(
        as_str(&as_array(&v)[1]),
        "3",
        "a refused value changes nothing"
    );
}

#[test]
fn load_refuses_a_db_past_databases() {
    let dir = common::temp_dir("db-at-load");
    let log = dir.join("redis.log");
    let module = common::module_path();
    let port = common::free_port().to_string();
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--databases",
            "4",
        ])
        .arg("--logfile")
        .arg(&log)
        .arg("--loadmodule")
        .arg(&module)
        .args(["db", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("redis-server started with consistency.db 4 of 4 databases");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("db must name an existing database"), "{text}");
}
