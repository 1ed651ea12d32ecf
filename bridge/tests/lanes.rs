//! Worker lanes: no PostgreSQL involved.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consistency_bridge::{Lane, LaneFull};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

const WAIT: Duration = Duration::from_secs(5);

/// A job that reports it started, then waits until `release` says go.
fn blocker(started: &Sender<()>, release: &Receiver<()>) -> Box<dyn FnOnce() + Send> {
    let started = started.clone();
    let release = release.clone();
    Box::new(move || {
        started.send(()).unwrap();
        let _ = release.recv_timeout(WAIT);
    })
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn jobs_run_on_named_workers() {
    let lane = Lane::start("truth", 2, 8);
    assert_eq!(lane.name(), "truth");
    assert_eq!(lane.workers(), 2);
    let (tx, rx) = unbounded();
    for i in 0..6 {
        let tx = tx.clone();
        lane.try_submit(Box::new(move || {
            let name = std::thread::current().name().unwrap_or("").to_string();
            tx.send((i, name)).unwrap();
        }))
        .unwrap();
    }
    let mut seen: Vec<(i32, String)> = (0..6).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    seen.sort();
    assert_eq!(
        seen.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    for (_, name) in &seen {
        assert!(
            name == "consistency-truth-0" || name == "consistency-truth-1",
            "{name}"
        );
    }
}

#[test]
fn full_lane_refuses_at_once() {
    let lane = Lane::start("truth", 1, 2);
    let (started_tx, started_rx) = unbounded();
    let (release_tx, release_rx) = unbounded();

    lane.try_submit(blocker(&started_tx, &release_rx)).unwrap();
    started_rx.recv_timeout(WAIT).unwrap();
    assert_eq!(lane.running(), 1);
    lane.try_submit(blocker(&started_tx, &release_rx)).unwrap();
    lane.try_submit(blocker(&started_tx, &release_rx)).unwrap();
    assert_eq!(lane.queued(), 2);

    let t = Instant::now();
    let refused = lane.try_submit(Box::new(|| {})).unwrap_err();
    assert!(t.elapsed() < Duration::from_millis(50));
    assert_eq!(
        refused,
        LaneFull {
            lane: "truth".into(),
            queued: 2
        }
    );
    assert_eq!(refused.to_string(), "busy: truth lane full (2 queued)");

    for _ in 0..3 {
        release_tx.send(()).unwrap();
    }
    wait_until("the queue to drain", || {
        lane.queued() == 0 && lane.running() == 0
    });
    lane.try_submit(Box::new(|| {})).unwrap();
}

#[test]
fn panicking_jobs_do_not_kill_workers() {
    let lane = Lane::start("keyspace", 2, 16);
    for i in 0..6 {
        lane.try_submit(Box::new(move || panic!("job {i} blew up")))
            .unwrap();
    }
    wait_until("the panics to be handled", || {
        lane.queued() == 0 && lane.running() == 0
    });
    assert_eq!(lane.workers(), 2);

    // Both workers still serve: two jobs run at the same time.
    let (started_tx, started_rx) = unbounded();
    let (release_tx, release_rx) = unbounded();
    lane.try_submit(blocker(&started_tx, &release_rx)).unwrap();
    lane.try_submit(blocker(&started_tx, &release_rx)).unwrap();
    started_rx.recv_timeout(WAIT).unwrap();
    started_rx.recv_timeout(WAIT).unwrap();
    assert_eq!(lane.running(), 2);
    release_tx.send(()).unwrap();
    release_tx.send(()).unwrap();
}

#[test]
fn shutdown_finishes_current_jobs_drops_queued_and_joins() {
    let lane = Lane::start("truth", 1, 4);
    let (started_tx, started_rx) = unbounded();
    let finished = Arc::new(AtomicBool::new(false));
    let queued_ran = Arc::new(AtomicBool::new(false));

    let f = Arc::clone(&finished);
    let started = started_tx.clone();
    lane.try_submit(Box::new(move || {
        started.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        f.store(true, Ordering::SeqCst);
    }))
    .unwrap();
    started_rx.recv_timeout(WAIT).unwrap();
    let q = Arc::clone(&queued_ran);
    lane.try_submit(Box::new(move || q.store(true, Ordering::SeqCst)))
        .unwrap();

    lane.shutdown(WAIT);
    assert!(finished.load(Ordering::SeqCst), "current job was cut short");
    assert!(
        !queued_ran.load(Ordering::SeqCst),
        "queued job ran after shutdown"
    );
    assert_eq!(lane.workers(), 0);
    assert_eq!(lane.queued(), 0);
    assert!(lane.try_submit(Box::new(|| {})).is_err());
    lane.shutdown(WAIT); // idempotent
}

#[test]
fn shutdown_waits_no_longer_than_asked() {
    let lane = Lane::start("slow", 1, 1);
    let (started_tx, started_rx) = unbounded();
    let (release_tx, release_rx) = bounded::<()>(1);
    lane.try_submit(blocker(&started_tx, &release_rx)).unwrap();
    started_rx.recv_timeout(WAIT).unwrap();

    let t = Instant::now();
    lane.shutdown(Duration::from_millis(100));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(lane.workers(), 1, "the busy worker is still finishing");

    release_tx.send(()).unwrap();
    wait_until("the worker to exit", || lane.workers() == 0);
    lane.shutdown(WAIT); // joins the late worker
}

#[test]
fn drop_shuts_the_lane_down() {
    let (tx, rx) = unbounded::<()>();
    {
        let lane = Lane::start("dropped", 2, 2);
        lane.try_submit(Box::new(move || drop(tx))).unwrap();
    }
    // Every worker, and so every job's captures, is gone.
    assert!(rx.recv_timeout(WAIT).is_err());
}
