//! Cooperative cancellation of long core work (init, many steps,
//! prediction). The core never sees Python: the caller holds a [`Control`]
//! and may set its stop flag from another thread (the bindings do on
//! Ctrl-C); the work checks the flag at
//! boundaries where its state is consistent — between steps, between neurons
//! of init, between chunks of points — and returns `Interrupted` there.
//! Long work also counts what it has done, so a caller can show progress.

use crate::error::{KronError, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Control {
    stop: AtomicBool,
    /// Units of work done and expected, in the work's own unit (init and
    /// prediction count points × neurons whose initial inner product is
    /// computed).
    done: AtomicU64,
    total: AtomicU64,
}

impl Control {
    pub fn new() -> Control {
        Control::default()
    }

    /// Asks the work to stop at its next check.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Expects `units` more units of work.
    pub fn add_total(&self, units: u64) {
        self.total.fetch_add(units, Ordering::Relaxed);
    }

    /// Records `units` units of work done.
    pub fn advance(&self, units: u64) {
        self.done.fetch_add(units, Ordering::Relaxed);
    }

    /// (done, expected) units so far.
    pub fn progress(&self) -> (u64, u64) {
        (self.done.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed))
    }

    /// `Err(Interrupted)` once a stop was requested.
    pub fn check(&self) -> Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            Err(KronError::Interrupted)
        } else {
            Ok(())
        }
    }
}
