//! Cooperative cancellation of long core work (init, many steps,
//! prediction). The core never sees Python: the caller holds a [`Control`]
//! and may set its stop flag from another thread (the bindings do on
//! Ctrl-C); the work checks the flag at
//! boundaries where its state is consistent — between steps, between neurons
//! of init, between chunks of points — and returns `Interrupted` there.

use crate::error::{KronError, Result};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Control {
    stop: AtomicBool,
}

impl Control {
    pub fn new() -> Control {
        Control::default()
    }

    /// Asks the work to stop at its next check.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
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
