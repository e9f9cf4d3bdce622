//! The one mapping from the core's errors (`KronError`) and from panics to
//! Python exceptions: the classes of `kronnet.errors`.

use crate::error::KronError;
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;

/// The exception of `kronnet.errors` a core error stands for, carrying its
/// data (argument name, bytes needed) as attributes.
pub(super) fn to_py(py: Python<'_>, e: KronError) -> PyErr {
    let made = (|| -> PyResult<Bound<'_, PyAny>> {
        let errors = py.import("kronnet.errors")?;
        match &e {
            KronError::Invalid { arg, msg } => errors.getattr("ArgumentError")?.call1((arg, msg)),
            KronError::OutOfMemory { what, bytes, .. } => errors.getattr("OutOfMemoryError")?.call1((what, *bytes)),
            KronError::Diverged(msg) => errors.getattr("DivergenceError")?.call1((msg,)),
            KronError::Interrupted => {
                Ok(PyKeyboardInterrupt::new_err("interrupted").into_value(py).into_bound(py).into_any())
            }
        }
    })();
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

pub(super) fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into())
}

pub(super) fn internal_error(py: Python<'_>, msg: String) -> PyErr {
    let made = py
        .import("kronnet.errors")
        .and_then(|m| m.getattr("KronnetError"))
        .and_then(|c| c.call1((format!("internal error in kronnet's core (please report): {msg}"),)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}
