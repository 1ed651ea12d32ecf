//! The synchronous path for Lua and MULTI, where a command cannot block: only
//! small, ID-scoped work, on the main thread, with its own PostgreSQL connection
//! and the short `sync-timeout-ms` statement timeout.
//!
//! PostgreSQL's statement timeout only works on a server that answers. A peer
//! that keeps the TCP connection open but never answers (a frozen server, a
//! stalled link) would hold the main thread, and so all of Redis, forever: the
//! driver has no read timeout, and its connect timeout covers the TCP connect
//! but not the startup handshake. So the connection lives on a helper thread, and
//! the main thread waits for each answer at most `sync-timeout-ms` plus a grace;
//! past that the connection is abandoned to its thread, and the command answers
//! `ERR postgres timeout: ...`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use consistency_bridge::{connect_direct, BridgeError, PgSettings, TruthRow};

use crate::config;
use crate::drift_check::{record_truth, TruthSource};
use crate::error::CommandError;
use crate::state::{self, LoadedRule};
use crate::store::{Access, Keyspace};

/// How long past `sync-timeout-ms` the main thread waits for an answer: the
/// server's own cancellation takes a moment to arrive.
const GRACE: Duration = Duration::from_millis(150);

/// Helper threads alive, each holding one connection. Normally at most one (the
/// current command's); more only while abandoned ones still wait on a peer that
/// does not answer. Past this many, new sync work is refused at once instead of
/// leaving yet another thread behind.
const MAX_HELPERS: usize = 8;
static HELPERS: AtomicUsize = AtomicUsize::new(0);

/// One question for the helper thread.
enum Request {
    All(Arc<LoadedRule>, Option<SystemTime>),
    Ids(Arc<LoadedRule>, Vec<String>, Option<SystemTime>),
}

type Answer = Result<Vec<TruthRow>, BridgeError>;

/// Truth over one direct connection, for the length of one command, owned by a
/// helper thread that the main thread waits on with a deadline.
pub struct DirectTruth {
    /// None once the helper was given up on (or has gone).
    requests: Option<Sender<Request>>,
    answers: Receiver<Answer>,
    timeout: Duration,
}

impl DirectTruth {
    pub fn connect() -> Result<DirectTruth, BridgeError> {
        let mut settings = state::pg_settings()?;
        let timeout = config::sync_timeout();
        // The main thread waits on this connection: bound it by the sync timeout too.
        settings.connect_timeout = settings.connect_timeout.min(timeout);
        let started = Instant::now();
        let connected = DirectTruth::start(settings, timeout);
        record_truth(started, &connected);
        connected
    }

    fn start(settings: PgSettings, timeout: Duration) -> Result<DirectTruth, BridgeError> {
        let helpers = HELPERS.fetch_add(1, Ordering::SeqCst);
        if helpers >= MAX_HELPERS {
            HELPERS.fetch_sub(1, Ordering::SeqCst);
            return Err(BridgeError::Unavailable(format!(
                "{helpers} earlier connections from scripts or MULTI still wait for PostgreSQL to answer"
            )));
        }
        let (requests, inbox) = mpsc::channel();
        let (outbox, answers) = mpsc::channel();
        let spawned = thread::Builder::new()
            .name("consistency-sync".into())
            .spawn(move || {
                let _alive = HelperAlive;
                serve(&settings, timeout, &inbox, &outbox);
            });
        if let Err(e) = spawned {
            HELPERS.fetch_sub(1, Ordering::SeqCst);
            return Err(BridgeError::Unavailable(format!(
                "cannot start a connection thread: {e}"
            )));
        }
        let mut truth = DirectTruth {
            requests: Some(requests),
            answers,
            timeout,
        };
        truth.answer()?;
        Ok(truth)
    }

    fn ask(&mut self, request: Request) -> Answer {
        let sent = match &self.requests {
            Some(requests) => requests.send(request).is_ok(),
            None => false,
        };
        if !sent {
            self.requests = None;
            return Err(BridgeError::Unavailable(
                "the connection was given up on earlier in this command".into(),
            ));
        }
        self.answer()
    }

    /// The helper's next answer, waiting at most the sync timeout and its grace.
    fn answer(&mut self) -> Answer {
        match self.answers.recv_timeout(self.timeout + GRACE) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => {
                // Abandon the connection: its thread ends once the peer answers
                // or the connection breaks (TCP keepalives are on).
                self.requests = None;
                Err(BridgeError::Timeout(format!(
                    "no answer from PostgreSQL within consistency.sync-timeout-ms ({} ms)",
                    self.timeout.as_millis()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.requests = None;
                Err(BridgeError::Unavailable(
                    "the connection thread ended".into(),
                ))
            }
        }
    }
}

/// Counts a helper thread out however it ends.
struct HelperAlive;

impl Drop for HelperAlive {
    fn drop(&mut self) {
        HELPERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The helper thread: connect, answer `Ok(empty)` or the error, then serve
/// requests until the command drops its end.
fn serve(
    settings: &PgSettings,
    timeout: Duration,
    inbox: &Receiver<Request>,
    outbox: &Sender<Answer>,
) {
    let mut client = match connect_direct(settings, timeout) {
        Ok(client) => client,
        Err(e) => {
            let _ = outbox.send(Err(e));
            return;
        }
    };
    if outbox.send(Ok(Vec::new())).is_err() {
        return;
    }
    while let Ok(request) = inbox.recv() {
        let answer = match request {
            Request::All(rule, window) => rule
                .truth
                .prepare(&mut client)
                .and_then(|()| rule.truth.run_all(&mut client, window, timeout)),
            Request::Ids(rule, ids, window) => rule
                .truth
                .prepare(&mut client)
                .and_then(|()| rule.truth.run_ids(&mut client, &ids, window, timeout)),
        };
        if outbox.send(answer).is_err() {
            return;
        }
    }
}

/// The loaded rule `rule` points into, shared, so the helper thread can own it:
/// a sync command runs entirely on the main thread, so the rules it selected are
/// still the loaded ones. Should that ever not hold, a copy does the same work.
fn shared(rule: &LoadedRule) -> Arc<LoadedRule> {
    state::rules()
        .rules
        .iter()
        .find(|r| std::ptr::eq(Arc::as_ptr(r), rule))
        .cloned()
        .unwrap_or_else(|| Arc::new(LoadedRule::new(rule.rule.clone())))
}

impl TruthSource for DirectTruth {
    fn all(
        &mut self,
        rule: &LoadedRule,
        window_start: Option<SystemTime>,
    ) -> Result<Vec<TruthRow>, BridgeError> {
        let started = Instant::now();
        let result = self.ask(Request::All(shared(rule), window_start));
        record_truth(started, &result);
        result
    }

    fn ids(
        &mut self,
        rule: &LoadedRule,
        ids: &[String],
        window_start: Option<SystemTime>,
    ) -> Result<Vec<TruthRow>, BridgeError> {
        let started = Instant::now();
        let result = self.ask(Request::Ids(shared(rule), ids.to_vec(), window_start));
        record_truth(started, &result);
        result
    }

    /// CHANGED checks never run inside a script or MULTI (their size is not
    /// known before they start), so nothing asks this.
    fn changed(
        &mut self,
        _rule: &LoadedRule,
        _since: SystemTime,
    ) -> Result<Vec<String>, BridgeError> {
        Err(BridgeError::Query(
            "CHANGED does not run inside a script or MULTI".to_string(),
        ))
    }
}

/// Refuses work too large to run on the main thread.
pub fn ensure_small(
    access: &impl Access,
    ids: usize,
    scans_for_ids: bool,
    limit: usize,
    command: &'static str,
) -> Result<(), CommandError> {
    let keys = || access.hold(|ks| ks.db_size());
    let what = if ids == 0 {
        format!("a whole-keyspace run over {} keys", keys())
    } else if ids > limit {
        format!("{ids} ids")
    } else if scans_for_ids && keys() > limit as u64 {
        format!(
            "a scan for the ids' keys (a template with several placeholders) over {} keys",
            keys()
        )
    } else {
        return Ok(());
    };
    Err(CommandError::TooLargeForScript {
        what,
        limit,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::{MemoryAccess, MemoryStore};

    #[test]
    fn scripts_refuse_whole_keyspace_runs_and_too_many_ids() {
        let mut store = MemoryStore::default();
        for i in 0..7 {
            store.set(&format!("k:{i}"), "1");
        }
        let access = MemoryAccess::new(store);
        assert_eq!(
            ensure_small(&access, 3, false, 3, "CONSISTENCY.CHECK"),
            Ok(())
        );
        assert_eq!(
            ensure_small(&access, 3, true, 7, "CONSISTENCY.CHECK"),
            Ok(())
        );
        let err = ensure_small(&access, 3, true, 6, "CONSISTENCY.CHECK").unwrap_err();
        assert_eq!(
            err.to_string(),
            "too large for a script or MULTI: a scan for the ids' keys (a template with several placeholders) over 7 keys over sync-max-keys 6; call CONSISTENCY.CHECK directly"
        );
        let err = ensure_small(&access, 4, false, 3, "CONSISTENCY.FIX").unwrap_err();
        assert_eq!(
            err.to_string(),
            "too large for a script or MULTI: 4 ids over sync-max-keys 3; call CONSISTENCY.FIX directly"
        );
        let err = ensure_small(&access, 0, false, 1000, "CONSISTENCY.FIX ALL").unwrap_err();
        assert_eq!(
            err.to_string(),
            "too large for a script or MULTI: a whole-keyspace run over 7 keys over sync-max-keys 1000; call CONSISTENCY.FIX ALL directly"
        );
    }
}
