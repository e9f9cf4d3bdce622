//! The PyO3 layer, `kronnet._core` (docs/design.md, "Bindings").
//!
//! It converts arrays (borrowed views where the input is already an aligned,
//! native, C-contiguous float64 array; a copy otherwise, so the core never
//! reads misaligned or oddly strided memory), parses mode strings into the
//! core's enums, releases the GIL around heavy work, lets Ctrl-C stop long
//! work at a consistent boundary, and maps core errors to the exception
//! classes of `kronnet.errors`. No Rust panic crosses into Python.
//! User-facing argument checks happen in the Python package; the core
//! re-checks everything it relies on.
//!
//! One concern per file, each naming the sibling it imports from, so that
//! imports run one way: `errors` maps core errors and panics to exceptions;
//! `runtime` (using errors) runs core work with the GIL released; `arrays`
//! converts arguments; `coefficients` (arrays, runtime) is the
//! `Coefficients` class and the net's blocks; `functions` and `trainer`
//! (all of the above) are the free functions and `TrainerCore`; `tree`
//! (arrays, runtime, trainer's `stats_dict`) is `AsyncTree`. This file
//! registers them all.

mod arrays;
mod coefficients;
mod errors;
mod functions;
mod model;
mod runtime;
mod trainer;
mod tree;

use crate::elem::Dtype;
use crate::exact_sum::WORDS;
use crate::index::IndexKind;
use crate::init::InitName;
use crate::loss::Loss;
use crate::model::BackendKind;
use crate::predict::NEURON_BLOCK;
use crate::step::GramMode;
use arrays::mode_names;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The one place the version is written is Cargo.toml; maturin copies it
    // into the wheel's metadata and this exposes it as kronnet.__version__.
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(functions::preacts, m)?)?;
    m.add_function(wrap_pyfunction!(functions::predict, m)?)?;
    m.add_function(wrap_pyfunction!(functions::predict_words, m)?)?;
    m.add_function(wrap_pyfunction!(functions::outputs_from_words, m)?)?;
    m.add_function(wrap_pyfunction!(functions::exact_sum, m)?)?;
    m.add_function(wrap_pyfunction!(functions::mean_loss, m)?)?;
    m.add_function(wrap_pyfunction!(functions::stream_gbytes, m)?)?;
    m.add_function(wrap_pyfunction!(functions::fold_weights, m)?)?;
    m.add_function(wrap_pyfunction!(functions::predict_words_folded, m)?)?;
    m.add("EXACT_WORDS", WORDS)?;
    m.add("NEURON_BLOCK", NEURON_BLOCK)?;
    // The mode names, in the order of the core's tables (the one place
    // they are written).
    m.add("BACKENDS", PyTuple::new(m.py(), mode_names(&BackendKind::NAMES))?)?;
    m.add("INDEXES", PyTuple::new(m.py(), mode_names(&IndexKind::NAMES))?)?;
    m.add("GRAM_MODES", PyTuple::new(m.py(), mode_names(&GramMode::NAMES))?)?;
    m.add("INITS", PyTuple::new(m.py(), mode_names(&InitName::NAMES))?)?;
    m.add("LOSSES", PyTuple::new(m.py(), mode_names(&Loss::NAMES))?)?;
    m.add("DTYPES", PyTuple::new(m.py(), mode_names(&Dtype::NAMES))?)?;
    m.add_function(wrap_pyfunction!(functions::dense_weights, m)?)?;
    m.add_function(wrap_pyfunction!(functions::dense_linear, m)?)?;
    m.add_function(wrap_pyfunction!(functions::cross_gram, m)?)?;
    m.add_function(wrap_pyfunction!(functions::initial_weights, m)?)?;
    m.add_function(wrap_pyfunction!(functions::output_signs, m)?)?;
    m.add_function(wrap_pyfunction!(functions::init_scratch_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(functions::index_memory_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(functions::trainer_memory, m)?)?;
    m.add_function(wrap_pyfunction!(functions::preacts_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(functions::dense_weights_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(functions::predict_chunk_rows, m)?)?;
    m.add_function(wrap_pyfunction!(functions::predict_chunk_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(functions::thread_count, m)?)?;
    m.add_function(wrap_pyfunction!(functions::fma_peak_gflops, m)?)?;
    m.add_function(wrap_pyfunction!(functions::normals_per_second, m)?)?;
    m.add_function(wrap_pyfunction!(functions::kron_threshold, m)?)?;
    m.add_function(wrap_pyfunction!(functions::kron_firing_fraction, m)?)?;
    m.add_function(wrap_pyfunction!(functions::kron_init_factors, m)?)?;
    m.add_class::<coefficients::PyCoefficients>()?;
    m.add_class::<model::PyModel>()?;
    m.add_class::<trainer::TrainerCore>()?;
    m.add_class::<tree::PyAsyncTree>()?;
    Ok(())
}
