//! Running core work with the GIL released: short work (`guarded`), and
//! long work that Ctrl-C can stop and a progress callback can follow
//! (`interruptible`, `reporting`, then `finish`). No panic crosses into
//! Python.

use super::errors::{internal_error, panic_message, to_py};
use crate::control::Control;
use pyo3::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::Duration;

/// Runs short core work with the GIL released; errors and any panic become
/// Python exceptions.
pub(super) fn guarded<T: Send>(py: Python<'_>, f: impl FnOnce() -> crate::Result<T> + Send) -> PyResult<T> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(r) => r.map_err(|e| to_py(py, e)),
        Err(panic) => Err(internal_error(py, panic_message(panic))),
    }
}

/// How often the calling thread looks for Python signals while core work
/// runs: a Ctrl-C is acted on within this plus the work's own granularity
/// (one step, one neuron of init, one chunk of prediction).
pub(super) const POLL: Duration = Duration::from_millis(20);

/// What long work ended with: its own result, and the exception a signal
/// handler raised meanwhile (KeyboardInterrupt on Ctrl-C), if any.
pub(super) struct Finished<T> {
    pub(super) result: Result<crate::Result<T>, String>,
    pub(super) signal: Option<PyErr>,
}

/// Runs `work` as a task of the rayon pool with the GIL released while the
/// calling thread, which Python delivers signals to, polls for them every
/// `POLL`. A signal handler's exception asks the work to stop (`Control`);
/// the work then returns at its next consistent boundary. The pool's own
/// long-lived threads run it (not a fresh thread per call), so the
/// allocator's per-thread arenas stay few and memory does not fragment
/// across calls.
pub(super) fn interruptible<T: Send>(
    py: Python<'_>,
    work: impl FnOnce(&Control) -> crate::Result<T> + Send,
) -> Finished<T> {
    reporting(py, None, 0, work)
}

/// `interruptible`, and at every poll `progress(done, total)` is called with
/// the work's count of units done (`Control::advance`) and `total`. An
/// exception from the callback stops the work like a signal.
pub(super) fn reporting<T: Send>(
    py: Python<'_>,
    progress: Option<&Py<PyAny>>,
    total: u64,
    work: impl FnOnce(&Control) -> crate::Result<T> + Send,
) -> Finished<T> {
    let ctl = Control::new();
    ctl.add_total(total);
    let mut signal: Option<PyErr> = None;
    let mut slot: Option<Result<crate::Result<T>, String>> = None;
    py.detach(|| {
        let (tx, rx) = channel::<()>();
        let (ctl, slot, signal) = (&ctl, &mut slot, &mut signal);
        rayon::in_place_scope(|scope| {
            scope.spawn(move |_| {
                let r = catch_unwind(AssertUnwindSafe(|| work(ctl)));
                *slot = Some(r.map_err(panic_message));
                let _ = tx.send(());
            });
            // Until the task reports (or its sender is dropped by a panic).
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(POLL) {
                if signal.is_none() {
                    let checked = Python::attach(|py| {
                        py.check_signals()?;
                        if let Some(cb) = progress {
                            cb.call1(py, ctl.progress())?;
                        }
                        Ok::<(), PyErr>(())
                    });
                    if let Err(e) = checked {
                        *signal = Some(e);
                        ctl.request_stop();
                    }
                }
            }
        });
    });
    let result = slot.unwrap_or_else(|| Err("the work did not report a result".into()));
    Finished { result, signal }
}

/// The value of interruptible work, or the exception to raise: a signal's
/// exception wins (the work's partial result is dropped).
pub(super) fn finish<T>(py: Python<'_>, done: Finished<T>) -> PyResult<T> {
    if let Some(sig) = done.signal {
        return Err(sig);
    }
    match done.result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(py, e)),
        Err(msg) => Err(internal_error(py, msg)),
    }
}
