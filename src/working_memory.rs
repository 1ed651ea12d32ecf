//! The module's own heap, counted: a check's working memory (truth and cache
//! maps, findings) lives outside `maxmemory`, allocated with the system
//! allocator, so Redis's INFO memory never shows it. The allocator wrapper in
//! redis_api/allocator.rs reports every allocation here; a [`Measure`] around a
//! check reads the highest point it reached (`check_memory_peak_bytes`).
//!
//! One counter for the whole module: while checks overlap, each one's peak
//! includes what the others held then, which is what the process held. Each
//! thread adds to it in steps of [`STEP`] bytes, so the check's two threads
//! (scan and truth) do not fight over one cache line at every allocation;
//! figures are exact to within a step per thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How far a thread's own count may run ahead of the shared one.
pub const STEP: isize = 4 << 10;

thread_local! {
    /// This thread's allocations not yet added to `CURRENT` (may be negative).
    static UNCOUNTED: Cell<isize> = const { Cell::new(0) };
}

/// Bytes the module's allocations hold now.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// The highest `CURRENT` since the first of the running measures started.
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Measures running.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// `bytes` were allocated (negative: freed). Most calls only touch the
/// thread's own count.
pub fn allocated(bytes: isize) {
    // A thread being torn down has no count left: add straight to the total.
    let pending = UNCOUNTED
        .try_with(|own| {
            let pending = own.get() + bytes;
            if pending.abs() < STEP {
                own.set(pending);
                0
            } else {
                own.set(0);
                pending
            }
        })
        .unwrap_or(bytes);
    if pending > 0 {
        let now = CURRENT.fetch_add(pending as usize, Ordering::Relaxed) + pending as usize;
        if ACTIVE.load(Ordering::Relaxed) > 0 {
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
    } else if pending < 0 {
        // Frees counted on another thread than their allocation can take the
        // total below zero for a moment: it saturates instead of wrapping.
        let _ = CURRENT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            Some(c.saturating_sub(pending.unsigned_abs()))
        });
    }
}

/// `bytes` were freed.
pub fn freed(bytes: usize) {
    allocated(-(bytes as isize));
}

/// Bytes the module holds now.
pub fn current() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

/// The working memory of one run: what it (and anything overlapping it)
/// allocated above what was held when it started, at the highest point.
pub struct Measure {
    base: usize,
}

impl Measure {
    pub fn start() -> Measure {
        let base = CURRENT.load(Ordering::Relaxed);
        if ACTIVE.fetch_add(1, Ordering::AcqRel) == 0 {
            PEAK.store(base, Ordering::Relaxed);
        } else {
            PEAK.fetch_max(base, Ordering::Relaxed);
        }
        Measure { base }
    }

    /// The peak so far, above the start.
    pub fn peak(&self) -> usize {
        PEAK.load(Ordering::Relaxed).saturating_sub(self.base)
    }
}

impl Drop for Measure {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measure_sees_the_highest_point_not_the_end() {
        // The unit tests' allocator is the counting one too, and other tests
        // run checks meanwhile: compare against a lower bound only.
        let measure = Measure::start();
        let big = vec![0u8; 8 << 20];
        drop(big);
        let small = vec![0u8; 1024];
        // Exact to within a step per thread.
        assert!(
            measure.peak() + STEP as usize >= 8 << 20,
            "{}",
            measure.peak()
        );
        drop(small);
    }
}
