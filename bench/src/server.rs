//! A redis-server with the module loaded, on a free loopback port, stopped on drop.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::Result;

pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub pid: u32,
    pub log: PathBuf,
}

/// A loopback port nobody listens on right now (never 6379: the kernel hands
/// out ephemeral ports).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub struct ServerConfig<'a> {
    pub redis_server: &'a str,
    pub module: &'a Path,
    pub rules_file: &'a Path,
    pub pg_url: &'a str,
    pub dir: &'a Path,
    pub name: &'a str,
    /// More redis.conf lines (`cluster-enabled yes`, ...), or empty.
    pub extra: &'a str,
}

impl RedisServer {
    pub fn start(cfg: &ServerConfig<'_>) -> Result<RedisServer> {
        let port = free_port()?;
        let log = cfg.dir.join(format!("redis-{}.log", cfg.name));
        let pidfile = cfg.dir.join(format!("redis-{}.pid", cfg.name));
        let conf = cfg.dir.join(format!("redis-{}.conf", cfg.name));
        // Defaults for everything the module tunes, except the two timeouts:
        // the largest truth query must not hit the 30 s statement timeout.
        let text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode yes\ndaemonize no\nsave \"\"\n\
             appendonly no\nlatency-monitor-threshold 1\ndir {dir}\npidfile {pidfile}\nlogfile {log}\n\
             loadmodule {module}\n\
             consistency.rules-file {rules}\n\
             consistency.pg-url {pg}\n\
             consistency.pg-statement-timeout-ms 600000\n\
             consistency.job-timeout-ms 1800000\n{extra}",
            dir = quote(&cfg.dir.display().to_string()),
            pidfile = quote(&pidfile.display().to_string()),
            log = quote(&log.display().to_string()),
            module = quote(&cfg.module.display().to_string()),
            rules = quote(&cfg.rules_file.display().to_string()),
            pg = quote(cfg.pg_url),
            extra = cfg.extra,
        );
        fs::write(&conf, text)?;
        let child = Command::new(cfg.redis_server)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", cfg.redis_server))?;
        let pid = child.id();
        let mut server = RedisServer {
            child,
            port,
            pid,
            log,
        };
        server.wait_ready()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn connect(&self) -> Result<redis::Connection> {
        Ok(redis::Client::open(self.url())?.get_connection()?)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!("redis-server exited ({status}); log:\n{log}").into());
            }
            if let Ok(mut con) = self.connect() {
                let modules: redis::RedisResult<redis::Value> =
                    redis::cmd("MODULE").arg("LIST").query(&mut con);
                if let Ok(modules) = modules {
                    if !format!("{modules:?}").contains("consistency") {
                        return Err(
                            "redis-server is up but the consistency module is not loaded".into(),
                        );
                    }
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer within 20 s".into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The module's log lines (warnings about rules, etc.).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Ok(mut con) = self.connect() {
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").arg("NOSAVE").query(&mut con);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
