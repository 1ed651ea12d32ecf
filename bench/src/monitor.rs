//! What a run costs Redis: the longest PING round trip seen by a second client,
//! and the peak RSS of redis-server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::util::{proc_status_kb, reset_peak_rss, Result};

/// A PING slower than this counts as slow (the budget).
pub const SLOW_PING: Duration = Duration::from_millis(5);

/// The pause between two PINGs: short enough to catch any stall of 1 ms or
/// more, long enough not to load the server.
const PING_GAP: Duration = Duration::from_millis(1);

pub struct Monitor {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Sampled, redis::Connection)>,
    pid: u32,
    hwm_reset: bool,
    start_rss_kb: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Sampled {
    pub pings: u64,
    pub slow_pings: u64,
    pub longest_ping: Duration,
    /// Largest VmRSS sampled during the run, kB.
    pub rss_sampled_kb: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub pings: u64,
    /// PINGs that took `SLOW_PING` or longer.
    pub slow_pings: u64,
    pub longest_ping: Duration,
    /// Peak RSS of redis-server during the run, kB: VmHWM after a reset, or
    /// the sampled maximum where the reset is not allowed.
    pub peak_rss_kb: u64,
    /// How far the peak rose above the RSS at the start of the run, kB.
    pub rss_growth_kb: u64,
    /// Redis's own latency monitor (threshold 1 ms): the longest stall per
    /// event, e.g. `module-acquire-GIL` (the main thread waiting for a module
    /// thread to release the lock) or `command`.
    pub stalls: Vec<(String, u64)>,
}

impl Observed {
    /// The worse of two observations.
    pub fn worst(self, other: Observed) -> Observed {
        Observed {
            pings: self.pings + other.pings,
            slow_pings: self.slow_pings + other.slow_pings,
            longest_ping: self.longest_ping.max(other.longest_ping),
            peak_rss_kb: self.peak_rss_kb.max(other.peak_rss_kb),
            rss_growth_kb: self.rss_growth_kb.max(other.rss_growth_kb),
            stalls: merge_stalls(self.stalls, other.stalls),
        }
    }
}

fn merge_stalls(mut a: Vec<(String, u64)>, b: Vec<(String, u64)>) -> Vec<(String, u64)> {
    for (event, ms) in b {
        match a.iter_mut().find(|(e, _)| *e == event) {
            Some(slot) => slot.1 = slot.1.max(ms),
            None => a.push((event, ms)),
        }
    }
    a.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    a
}

/// `LATENCY LATEST`: (event, max ms) per event since the last reset.
fn latency_latest(con: &mut redis::Connection) -> Vec<(String, u64)> {
    let rows: Vec<(String, u64, u64, u64)> = redis::cmd("LATENCY")
        .arg("LATEST")
        .query(con)
        .unwrap_or_default();
    merge_stalls(
        Vec::new(),
        rows.into_iter().map(|(e, _, _, max)| (e, max)).collect(),
    )
}

impl Monitor {
    /// Connects, then PINGs in a loop on its own connection until stopped.
    pub fn start(redis_url: &str, pid: u32) -> Result<Monitor> {
        let mut con = redis::Client::open(redis_url)?.get_connection()?;
        let _: String = redis::cmd("PING").query(&mut con)?;
        let _: () = redis::cmd("LATENCY").arg("RESET").query(&mut con)?;
        let start_rss_kb = proc_status_kb(pid, "VmRSS").unwrap_or(0);
        let hwm_reset = reset_peak_rss(pid);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut s = Sampled::default();
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut con);
                let rtt = started.elapsed();
                if pong.is_err() {
                    break;
                }
                s.pings += 1;
                s.slow_pings += u64::from(rtt >= SLOW_PING);
                s.longest_ping = s.longest_ping.max(rtt);
                if s.pings % 16 == 1 {
                    if let Some(rss) = proc_status_kb(pid, "VmRSS") {
                        s.rss_sampled_kb = s.rss_sampled_kb.max(rss);
                    }
                }
                thread::sleep(PING_GAP);
            }
            (s, con)
        });
        Ok(Monitor {
            stop,
            handle,
            pid,
            hwm_reset,
            start_rss_kb,
        })
    }

    pub fn stop(self) -> Observed {
        let hwm = proc_status_kb(self.pid, "VmHWM").unwrap_or(0);
        let rss = proc_status_kb(self.pid, "VmRSS").unwrap_or(0);
        self.stop.store(true, Ordering::Relaxed);
        let (s, stalls) = match self.handle.join() {
            Ok((s, mut con)) => (s, latency_latest(&mut con)),
            Err(_) => (Sampled::default(), Vec::new()),
        };
        let sampled = s.rss_sampled_kb.max(rss);
        let peak_rss_kb = if self.hwm_reset {
            hwm.max(sampled)
        } else {
            sampled
        };
        Observed {
            pings: s.pings,
            slow_pings: s.slow_pings,
            longest_ping: s.longest_ping,
            peak_rss_kb,
            rss_growth_kb: peak_rss_kb.saturating_sub(self.start_rss_kb),
            stalls,
        }
    }
}

/// Runs `f` under a monitor and returns its result, wall time and what the
/// monitor saw.
pub fn observe<T>(
    redis_url: &str,
    pid: u32,
    f: impl FnOnce() -> Result<T>,
) -> Result<(T, Duration, Observed)> {
    let monitor = Monitor::start(redis_url, pid)?;
    // Let the monitor take its first sample before the run starts.
    thread::sleep(Duration::from_millis(20));
    let started = Instant::now();
    let result = f();
    let wall = started.elapsed();
    let observed = monitor.stop();
    Ok((result?, wall, observed))
}
