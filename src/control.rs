//! Cooperative cancellation and progress for long core work (init, many
//! steps, prediction). The core never sees Python: the caller holds a
//! [`Control`], may set its stop flag from another thread (the bindings do
//! on Ctrl-C), and reads the progress counter; the work checks the flag at
//! boundaries where its state is consistent — between steps, between neurons
//! of init, between chunks of points — and returns `Interrupted` there.

use crate::error::{KronError, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Control {
    stop: AtomicBool,
    done: AtomicU64,
}

impl Control {
    pub fn new() -> Control {
        Control::default()
    }

    /// Asks the work to stop at its next check.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// `Err(Interrupted)` once a stop was requested.
    pub fn check(&self) -> Result<()> {
        if self.stop_requested() {
            Err(KronError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Records `units` more of the work as done (neurons, steps, points).
    pub fn advance(&self, units: u64) {
        self.done.fetch_add(units, Ordering::Relaxed);
    }

    /// Units done so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

/// A control nobody stops: for callers that run work to completion.
pub fn unstoppable() -> Control {
    Control::new()
}
