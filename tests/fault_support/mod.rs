//! Helpers of the reliability suite (tests/fault_*.rs, fuzz.rs, rules_files.rs,
//! soak.rs), on top of `tests/common`:
//!
//! - [`OwnPg`]: a throwaway PostgreSQL cluster of the test's own, which the test
//!   may stop, kill and start again (the system PostgreSQL is never touched);
//! - [`Proxy`]: a loopback TCP proxy that can freeze (stop forwarding, keep the
//!   sockets open: a dropped peer) and cut its connections;
//! - [`Pinger`]: PINGs on a connection of its own while a test does something else;
//! - [`OwnRedis`]: a redis-server whose exit status the test can read;
//! - small readers: DEBUG DIGEST, VmRSS, crash lines in a log.
//!
//! Each file declares `mod common; mod fault_support;`.
#![allow(dead_code)]

use crate::common::is_root;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis::{Connection, Value};

use crate::common::{self, as_str, call_ok, free_port, tail_of, temp_dir, TestRedis};

// ---------------------------------------------------------------------------
// A PostgreSQL cluster of our own
// ---------------------------------------------------------------------------

/// `name` from PATH or PostgreSQL's own bin directories (see the fixture).
fn pg_bin(name: &str) -> PathBuf {
    crate::common::pg_bin(name).unwrap_or_else(|| panic!("{name} not found: install PostgreSQL"))
}

/// A command run as the postgres OS user when we are root (PostgreSQL refuses root).
fn as_postgres(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn chown_postgres(path: &Path) {
    if is_root() {
        let st = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(path)
            .status()
            .expect("run chown");
        assert!(st.success(), "chown postgres {}", path.display());
    }
}

/// One initdb per test process; every [`OwnPg`] starts from a copy of it.
fn template_data() -> &'static PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = temp_dir("pgtemplate");
        chown_postgres(&dir);
        let data = dir.join("data");
        let out = as_postgres(&pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        data
    })
}

/// A throwaway PostgreSQL cluster on a free loopback port, trust auth for user
/// `postgres` (and whatever `pg_hba` lines the test adds). Stopped and removed on
/// drop, and by a watchdog if the test process dies first.
pub struct OwnPg {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    running: bool,
    watchdog: Option<Child>,
}

impl OwnPg {
    /// A running cluster with trust auth.
    pub fn start() -> OwnPg {
        Self::start_with_hba(&[])
    }

    /// A running cluster whose pg_hba.conf is `extra_hba` lines followed by trust
    /// for everyone on loopback and the socket.
    pub fn start_with_hba(extra_hba: &[&str]) -> OwnPg {
        Self::start_configured(extra_hba, &[], &[])
    }

    /// As [`OwnPg::start_with_hba`], with `files` (name, contents) written into
    /// the data directory, mode 0600 (a server key must be), and `conf` lines
    /// appended to postgresql.conf (`ssl = on`, ...).
    pub fn start_configured(extra_hba: &[&str], files: &[(&str, &str)], conf: &[&str]) -> OwnPg {
        let template = template_data();
        let dir = temp_dir("ownpg");
        let data = dir.join("data");
        let st = Command::new("cp")
            .arg("-a")
            .arg(template)
            .arg(&data)
            .status()
            .expect("run cp");
        assert!(st.success(), "copy the template cluster");
        let mut hba = String::new();
        for line in extra_hba {
            hba.push_str(line);
            hba.push('\n');
        }
        hba.push_str("local all all trust\nhost all all 127.0.0.1/32 trust\n");
        fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        for (name, contents) in files {
            let path = data.join(name);
            fs::write(&path, contents).unwrap_or_else(|e| panic!("write {name}: {e}"));
            fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap_or_else(|e| panic!("chmod {name}: {e}"));
        }
        if !conf.is_empty() {
            let mut text = fs::read_to_string(data.join("postgresql.conf")).expect("read conf");
            for line in conf {
                text.push_str(line);
                text.push('\n');
            }
            fs::write(data.join("postgresql.conf"), text).expect("write postgresql.conf");
        }
        chown_postgres(&dir);
        let me = std::process::id();
        let stop = format!(
            "{}'{}' -D '{}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{}'",
            if is_root() {
                "runuser -u postgres -- "
            } else {
                ""
            },
            pg_bin("pg_ctl").display(),
            data.display(),
            dir.display()
        );
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {me} 2>/dev/null; do sleep 1; done; {stop}"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let mut pg = OwnPg {
            dir,
            data,
            port: free_port(),
            running: false,
            watchdog,
        };
        pg.start_again();
        pg
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Libpq key=value string for database `postgres` as user `postgres`.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// A connection as `postgres` (panics if the cluster does not answer).
    pub fn client(&self) -> postgres::Client {
        common::pg_connect(&self.url())
            .unwrap_or_else(|e| panic!("connect to own PostgreSQL on {}: {e}", self.port))
    }

    pub fn exec(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// The first column of the first row, as text.
    pub fn scalar(&self, sql: &str) -> Option<String> {
        let rows = self
            .client()
            .query(&format!("SELECT ({sql})::text"), &[])
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.first().and_then(|r| r.get::<_, Option<String>>(0))
    }

    /// `pg_ctl start` on the same data directory and port.
    pub fn start_again(&mut self) {
        let opts = format!(
            "-p {} -k '{}' -c listen_addresses=127.0.0.1 -c max_connections=50 \
             -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let st = as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "30", "-o", &opts, "start"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl start");
        assert!(
            st.success(),
            "pg_ctl start failed:\n{}",
            tail_of(&self.dir.join("postgres.log"), 30)
        );
        self.running = true;
    }

    /// Stops the cluster at once (`-m immediate`: backends are killed, clients see
    /// their connections drop), as a crash or a kill would.
    pub fn kill(&mut self) {
        self.pg_ctl_stop("immediate");
    }

    /// A clean stop (`-m fast`): sessions are terminated, then the server exits.
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        let _ = as_postgres(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "-t", "30", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.running = false;
    }

    /// Whether a backend runs a statement containing `needle` (other than ours).
    pub fn running_query(&self, needle: &str) -> bool {
        let Ok(mut c) = common::pg_connect(&self.url()) else {
            return false;
        };
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE state = 'active' AND pid <> pg_backend_pid() AND position($1 in query) > 0",
            &[&needle],
        )
        .map(|r| r.get::<_, i64>(0) > 0)
        .unwrap_or(false)
    }
}

impl Drop for OwnPg {
    fn drop(&mut self) {
        if self.running {
            self.kill();
        }
        if let Some(w) = self.watchdog.as_mut() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A small schema for clusters of our own: `users(id, spend)`, and a truth
/// `SELECT id, spend FROM users` for keys `u:{id}:spend`.
pub const SPEND_TRUTH: &str = "SELECT id, spend FROM users";
pub const SPEND_KEY: &str = "u:{id}:spend";

/// Creates `users` with ids 1..=n, spend = id * 10.
pub fn create_spend(pg: &OwnPg, n: usize) {
    pg.exec(&format!(
        "CREATE TABLE users (id integer PRIMARY KEY, spend numeric NOT NULL);
         INSERT INTO users SELECT g, g * 10 FROM generate_series(1, {n}) g;"
    ));
}

/// A fresh database on the shared test PostgreSQL with the spend schema.
pub fn spend_test_pg(n: usize) -> common::TestPg {
    let pg = common::TestPg::fresh();
    pg.exec(&format!(
        "CREATE TABLE users (id integer PRIMARY KEY, spend numeric NOT NULL);
         INSERT INTO users SELECT g, g * 10 FROM generate_series(1, {n}) g;"
    ));
    pg
}

/// Whether a backend of `pg`'s database runs a statement containing `needle`.
pub fn test_pg_running(pg: &common::TestPg, needle: &str) -> bool {
    pg.client()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'active' AND pid <> pg_backend_pid() AND position($1 in query) > 0",
            &[&needle],
        )
        .map(|r| r.get::<_, i64>(0) > 0)
        .unwrap_or(false)
}

/// Runs `args` on a connection of its own in a thread; returns the reply (or the
/// error text) and how long it took.
pub fn in_background(
    redis: &TestRedis,
    args: &[&str],
) -> JoinHandle<(Result<Value, String>, Duration)> {
    let mut c = redis.conn();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    thread::spawn(move || {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let r = common::call(&mut c, &words).map_err(|e| common::error_text(&e));
        (r, started.elapsed())
    })
}

/// The spend rule, under `name`, with `truth`.
pub fn spend_rule(name: &str, truth: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name, "kind": "number", "key": SPEND_KEY, "truth": truth, "threshold": 1.0
    })
}

/// SET `u:<id>:spend` to the truth (id * 10) for ids 1..=n.
pub fn fill_spend(c: &mut Connection, n: usize) {
    let mut p = redis::pipe();
    for id in 1..=n {
        p.cmd("SET")
            .arg(format!("u:{id}:spend"))
            .arg(id * 10)
            .ignore();
    }
    p.query::<()>(c).expect("fill spend");
}

// ---------------------------------------------------------------------------
// A TCP proxy that can play dead
// ---------------------------------------------------------------------------

struct ProxyState {
    backend: SocketAddr,
    frozen: AtomicBool,
    stopped: AtomicBool,
    streams: Mutex<Vec<TcpStream>>,
}

/// Forwards loopback connections to `backend`. Frozen, it keeps every socket
/// open but forwards nothing, like a peer whose cable was pulled: the kernel
/// still acknowledges (and answers keepalives), the application never answers.
pub struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(backend_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(ProxyState {
            backend: SocketAddr::from(([127, 0, 0, 1], backend_port)),
            frozen: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        });
        let st = Arc::clone(&state);
        let accept = thread::spawn(move || {
            while !st.stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(backend) = TcpStream::connect(st.backend) else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        {
                            let mut all = st.streams.lock().unwrap();
                            all.push(client.try_clone().unwrap());
                            all.push(backend.try_clone().unwrap());
                        }
                        let (c2, b2) = (client.try_clone().unwrap(), backend.try_clone().unwrap());
                        let (s1, s2) = (Arc::clone(&st), Arc::clone(&st));
                        thread::spawn(move || pump(client, backend, &s1));
                        thread::spawn(move || pump(b2, c2, &s2));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            state,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stop forwarding in both directions; sockets stay open.
    pub fn freeze(&self) {
        self.state.frozen.store(true, Ordering::SeqCst);
    }

    pub fn thaw(&self) {
        self.state.frozen.store(false, Ordering::SeqCst);
    }

    /// Close every proxied connection (both sides), as a peer that finally resets.
    pub fn cut(&self) {
        for s in self.state.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Proxied connections open now (each counts its two sockets once).
    pub fn connections(&self) -> usize {
        self.state.streams.lock().unwrap().len() / 2
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, st: &ProxyState) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if st.stopped.load(Ordering::SeqCst) {
            break;
        }
        if st.frozen.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                break;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Redis-side helpers
// ---------------------------------------------------------------------------

/// DEBUG DIGEST of the whole dataset.
pub fn digest(c: &mut Connection) -> String {
    as_str(&call_ok(c, &["DEBUG", "DIGEST"])).to_string()
}

pub fn dbsize(c: &mut Connection) -> i64 {
    redis::cmd("DBSIZE").query(c).expect("DBSIZE")
}

/// SET with binary-safe key and value.
pub fn set(c: &mut Connection, key: &[u8], value: &[u8]) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(c)
        .expect("SET");
}

pub fn get(c: &mut Connection, key: &[u8]) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(c).expect("GET")
}

pub fn exists(c: &mut Connection, key: &[u8]) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(c)
        .expect("EXISTS")
        == 1
}

/// Every key (binary) with its DUMP: a snapshot to compare key by key.
pub fn snapshot(c: &mut Connection) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(c).expect("KEYS");
    let mut p = redis::pipe();
    for k in &keys {
        p.cmd("DUMP").arg(k);
    }
    let dumps: Vec<Value> = p.query(c).expect("DUMP");
    keys.into_iter()
        .zip(dumps)
        .map(|(k, v)| match v {
            Value::BulkString(b) => (k, b),
            other => panic!("DUMP: {other:?}"),
        })
        .collect()
}

/// A top-level CONSISTENCY.STATUS field path, e.g. `["lanes", "truth", "workers"]`.
pub fn status_i64(c: &mut Connection, path: &[&str]) -> i64 {
    let status = call_ok(c, &["CONSISTENCY.STATUS"]);
    let mut v = &status;
    for p in path {
        v = common::field(v, p);
    }
    common::as_i64(v)
}

/// PINGs on a connection of its own until finished; counts them and keeps the
/// slowest round trip.
pub struct Pinger {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(u64, Duration)>,
}

impl Pinger {
    pub fn start(redis: &TestRedis) -> Pinger {
        let mut c = redis.conn();
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut n = 0;
            let mut slowest = Duration::ZERO;
            while !st.load(Ordering::Relaxed) {
                let t = Instant::now();
                let pong: String = redis::cmd("PING").query(&mut c).expect("PING");
                slowest = slowest.max(t.elapsed());
                assert_eq!(pong, "PONG");
                n += 1;
                thread::sleep(Duration::from_millis(2));
            }
            (n, slowest)
        });
        Pinger { stop, handle }
    }

    /// Stops and returns (PINGs answered, slowest).
    pub fn finish(self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("pinger panicked")
    }
}

/// The slowest PING a test accepts while the module is busy: Redis must keep
/// serving, and on 2 cores shared with parallel tests a few hundred ms of
/// scheduling noise is not a stall (one would take seconds, or forever).
pub const PING_BOUND: Duration = Duration::from_millis(500);

/// Fewer than this is "at once" for answers that need no work (a full lane).
pub const AT_ONCE: Duration = Duration::from_millis(250);

/// Ends with PINGs answered promptly throughout.
pub fn assert_pings(p: Pinger, at_least: u64, slowest_below: Duration) {
    let (n, slowest) = p.finish();
    eprintln!("[pinger] {n} PINGs answered, slowest {slowest:?}");
    assert!(n >= at_least, "only {n} PINGs were answered meanwhile");
    assert!(slowest < slowest_below, "a PING took {slowest:?}");
}

/// One PING that must answer PONG.
pub fn ping(c: &mut Connection) {
    let pong: String = redis::cmd("PING").query(c).expect("PING");
    assert_eq!(pong, "PONG");
}

/// Lines of a redis log that would mean a crash.
pub fn crash_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            lower.contains("crashed")
                || lower.contains("guru meditation")
                || lower.contains("signal")
                || lower.contains("stack trace")
                || lower.contains("panicked at")
        })
        .map(str::to_string)
        .collect()
}

pub fn assert_no_crash(log: &str) {
    let lines = crash_lines(log);
    assert!(lines.is_empty(), "crash lines in the redis log: {lines:#?}");
}

/// Resident set size of a process in KiB (VmRSS of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc status")
}

/// Sends a raw RESP command on a fresh TCP connection and closes it at once,
/// without reading the answer: a client that disconnects while blocked.
pub fn send_and_hang_up(port: u16, args: &[&[u8]]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut buf = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
    s.write_all(&buf).expect("write");
    // Let Redis read it and block the client before we go.
    thread::sleep(Duration::from_millis(30));
    let _ = s.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------
// A redis-server whose exit status we can read
// ---------------------------------------------------------------------------

/// redis-server with the module, started like `TestRedis` but keeping the child so
/// the test can see how it exited.
pub struct OwnRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl OwnRedis {
    pub fn start(configs: &[(&str, &str)]) -> OwnRedis {
        let port = free_port();
        let dir = temp_dir("ownredis");
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\nlogfile {}\n\
             daemonize no\nenable-debug-command local\nloadmodule {}\n",
            common::quote_conf(&dir.display().to_string()),
            common::quote_conf(&dir.join("redis.log").display().to_string()),
            common::quote_conf(&common::module_path().display().to_string()),
        );
        for (name, value) in configs {
            conf.push_str(&format!(
                "consistency.{name} {}\n",
                common::quote_conf(value)
            ));
        }
        fs::write(dir.join("redis.conf"), conf).expect("write redis.conf");
        let child = Command::new("redis-server")
            .arg(dir.join("redis.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server");
        let r = OwnRedis { child, port, dir };
        let up = common::wait_until(Duration::from_secs(10), || {
            redis::Client::open(r.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        assert!(
            up,
            "redis-server did not start: {}",
            tail_of(&r.dir.join("redis.log"), 30)
        );
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn conn(&self) -> Connection {
        let c = redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect");
        let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
        c
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
