//! Worker lanes: a bounded queue with its own threads, so that one kind of
//! work (queries to a slow or dead PostgreSQL) never holds up another.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

/// A unit of work for a lane.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long `Drop` waits for workers to finish their current job.
const DROP_WAIT: Duration = Duration::from_millis(100);

/// A lane refused a job: its queue is full (or it has been shut down).
#[derive(Debug, Clone, PartialEq)]
pub struct LaneFull {
    /// The lane's name.
    pub lane: String,
    /// Jobs waiting when the job was refused.
    pub queued: usize,
}

impl fmt::Display for LaneFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "busy: {} lane full ({} queued)", self.lane, self.queued)
    }
}

impl std::error::Error for LaneFull {}

/// Counters shared between the lane and its workers.
#[derive(Default)]
struct Shared {
    running: AtomicUsize,
    live: AtomicUsize,
    /// Set by `shutdown`: workers drop queued jobs instead of running them.
    closing: AtomicBool,
}

/// A bounded job queue served by a fixed set of worker threads.
pub struct Lane {
    name: String,
    /// `None` once shut down; dropping the last sender closes the channel.
    sender: RwLock<Option<Sender<Job>>>,
    receiver: Receiver<Job>,
    shared: Arc<Shared>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// Disconnects when the last worker exits (each holds a sender and
    /// never sends), which lets `shutdown` wait with a deadline.
    exited: Receiver<()>,
}

impl fmt::Debug for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lane")
            .field("name", &self.name)
            .field("queued", &self.queued())
            .field("running", &self.running())
            .field("workers", &self.workers())
            .finish()
    }
}

impl Lane {
    /// Starts `workers` threads (at least one) named
    /// `consistency-<name>-<i>`, fed by a queue of `capacity` jobs. With
    /// capacity 0 a job is accepted only when a worker is idle.
    pub fn start(name: &str, workers: usize, capacity: usize) -> Lane {
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(capacity);
        let (exit_tx, exited) = crossbeam_channel::bounded::<()>(0);
        let shared = Arc::new(Shared::default());
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let rx = receiver.clone();
            let shared_w = Arc::clone(&shared);
            let exit_tx = exit_tx.clone();
            let lane = name.to_string();
            shared.live.fetch_add(1, Ordering::SeqCst);
            let spawned = std::thread::Builder::new()
                .name(format!("consistency-{name}-{i}"))
                .spawn(move || worker_loop(&lane, &rx, &shared_w, exit_tx));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    // Run with fewer workers rather than not at all.
                    shared.live.fetch_sub(1, Ordering::SeqCst);
                    log::error!("cannot start worker {i} of lane {name}: {e}");
                }
            }
        }
        Lane {
            name: name.to_string(),
            sender: RwLock::new(Some(sender)),
            receiver,
            shared,
            handles: Mutex::new(handles),
            exited,
        }
    }

    /// Queues a job without blocking; a full or shut-down lane refuses it.
    pub fn try_submit(&self, job: Job) -> Result<(), LaneFull> {
        let guard = self.sender.read().unwrap_or_else(|p| p.into_inner());
        let refused = || LaneFull {
            lane: self.name.clone(),
            queued: self.queued(),
        };
        match guard.as_ref() {
            Some(sender) => sender.try_send(job).map_err(|e| match e {
                TrySendError::Full(_) | TrySendError::Disconnected(_) => refused(),
            }),
            None => Err(refused()),
        }
    }

    /// Jobs waiting to be picked up.
    pub fn queued(&self) -> usize {
        self.receiver.len()
    }

    /// Jobs executing right now.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Live worker threads.
    pub fn workers(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// The lane's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops the lane: refuses new jobs, drops queued ones unrun, lets each
    /// worker finish its current job, and joins the workers for up to
    /// `wait`. Workers still busy after that are left to exit on their own.
    /// Safe to call more than once.
    pub fn shutdown(&self, wait: Duration) {
        self.shared.closing.store(true, Ordering::SeqCst);
        // Dropping the only sender closes the channel: idle workers wake up
        // and exit.
        drop(
            self.sender
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        // Queued jobs are dropped here rather than run: at shutdown nobody
        // should wait for them. Dropping a job releases what it captured.
        while self.receiver.try_recv().is_ok() {}
        match self.exited.recv_timeout(wait) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => log::warn!(
                "lane {}: {} worker(s) still busy after {} ms; not waiting",
                self.name,
                self.workers(),
                wait.as_millis()
            ),
        }
        let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        let (done, busy): (Vec<_>, Vec<_>) = handles.drain(..).partition(|h| h.is_finished());
        for handle in done {
            let _ = handle.join();
        }
        *handles = busy;
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.shutdown(DROP_WAIT);
    }
}

/// Decrements the live count however the worker exits.
struct LiveGuard<'a>(&'a Shared);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

fn worker_loop(lane: &str, rx: &Receiver<Job>, shared: &Shared, exit_tx: Sender<()>) {
    // Held, never used: its drop on exit tells `shutdown` this worker is gone.
    // Declared before the guard so it drops after it: by the time `shutdown`
    // wakes, `workers()` already counts this worker out.
    let _exit_tx = exit_tx;
    let _live = LiveGuard(shared);
    while let Ok(job) = rx.recv() {
        if shared.closing.load(Ordering::SeqCst) {
            continue;
        }
        shared.running.fetch_add(1, Ordering::SeqCst);
        // A panicking job must not take the worker with it: the lane would
        // silently lose capacity.
        let outcome = catch_unwind(AssertUnwindSafe(job));
        shared.running.fetch_sub(1, Ordering::SeqCst);
        if let Err(payload) = outcome {
            log::error!("job on lane {lane} panicked: {}", panic_message(&*payload));
        }
    }
}

/// The text of a caught panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}
