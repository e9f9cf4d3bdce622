//! The PyO3 layer, `kronnet._core`: converts numpy arrays (borrowed views,
//! no copies where the core only reads), releases the GIL around all heavy
//! work, and maps core errors to Python exceptions. Argument checking with
//! user-facing messages happens in the Python package; the core re-checks,
//! and no Rust panic crosses into Python (`guarded`).

use crate::error::KronError;
use crate::factors::Factors;
use crate::bitset::FiredBits;
use crate::index::{ActivationIndex, IndexStats, LinearScan};
use crate::model::{Backend, Model, StepStats};
use crate::tree::AsyncTree;
use crate::{dense, gram, init, rng, step};
use ndarray::{Array1, Array2, ArrayView2};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyMemoryError, PyValueError};
use pyo3::prelude::*;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

create_exception!(kronnet, KronnetError, PyException, "Base class of kronnet's own errors.");
create_exception!(
    kronnet,
    DivergenceError,
    KronnetError,
    "A step would make the loss or the model non-finite; the model is left at its last finite state."
);

fn to_py(e: KronError) -> PyErr {
    match e {
        KronError::Invalid { .. } => PyValueError::new_err(e.to_string()),
        KronError::OutOfMemory { .. } => PyMemoryError::new_err(e.to_string()),
        KronError::Diverged(_) => DivergenceError::new_err(e.to_string()),
    }
}

/// Runs core work with the GIL released, turning errors and any panic into
/// Python exceptions.
fn guarded<T: Send>(py: Python<'_>, f: impl FnOnce() -> crate::Result<T> + Send) -> PyResult<T> {
    let out = py.detach(|| catch_unwind(AssertUnwindSafe(f)));
    match out {
        Ok(r) => r.map_err(to_py),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(KronnetError::new_err(format!("internal error in kronnet's core (please report): {msg}")))
        }
    }
}

fn views<'a>(factors: &'a [PyReadonlyArray2<'_, f64>]) -> Vec<ArrayView2<'a, f64>> {
    factors.iter().map(|f| f.as_array()).collect()
}

fn batch_indices(batch: &PyReadonlyArray1<'_, i64>) -> PyResult<Vec<usize>> {
    batch
        .as_array()
        .iter()
        .map(|&i| usize::try_from(i).map_err(|_| PyValueError::new_err(format!("batch: index {i} is negative"))))
        .collect()
}

/// P(0)[i, r] = <w_r(0), x_i> for the given factors: (n, width).
#[pyfunction]
fn init_preacts<'py>(
    py: Python<'py>,
    factors: Vec<PyReadonlyArray2<'py, f64>>,
    seed: u64,
    width: usize,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let v = views(&factors);
    let p = guarded(py, || init::init_preacts(&Factors::new(v)?, seed, width))?;
    Ok(p.into_pyarray(py))
}

/// K[i, j] = <x_i, x'_j>: (n_a, n_b).
#[pyfunction]
fn cross_gram<'py>(
    py: Python<'py>,
    a: Vec<PyReadonlyArray2<'py, f64>>,
    b: Vec<PyReadonlyArray2<'py, f64>>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (va, vb) = (views(&a), views(&b));
    let k = guarded(py, || gram::cross_gram(&Factors::new(va)?, &Factors::new(vb)?))?;
    Ok(k.into_pyarray(py))
}

/// W(0) materialized: (width, d).
#[pyfunction]
fn initial_weights(py: Python<'_>, seed: u64, width: usize, d: usize) -> PyResult<Bound<'_, PyArray2<f64>>> {
    let w = guarded(py, || init::initial_weight_matrix(seed, width, d))?;
    Ok(w.into_pyarray(py))
}

/// Output signs a: (width,).
#[pyfunction]
fn output_signs(py: Python<'_>, seed: u64, width: usize) -> Bound<'_, PyArray1<f64>> {
    Array1::from(rng::output_signs(seed, width)).into_pyarray(py)
}

/// f for each row of a preactivation matrix (q, width): (q,).
#[pyfunction]
fn outputs<'py>(
    py: Python<'py>,
    preacts: PyReadonlyArray2<'py, f64>,
    a: PyReadonlyArray1<'py, f64>,
    threshold: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (p, a) = (preacts.as_array(), a.as_array().to_vec());
    let f = guarded(py, || Ok(Model::new(a, threshold)?.outputs(p)))?;
    Ok(Array1::from(f).into_pyarray(py))
}

fn make_index(kind: &str, values: ArrayView2<'_, f64>, threshold: f64) -> Box<dyn ActivationIndex> {
    match kind {
        "bits" => Box::new(FiredBits::new(values, threshold)),
        "tree" => Box::new(AsyncTree::new(values)),
        _ => Box::new(LinearScan::default()),
    }
}

fn stats_dict(s: IndexStats) -> HashMap<&'static str, u64> {
    [
        ("queries", s.queries),
        ("rows_synced", s.rows_synced),
        ("full_rebuilds", s.full_rebuilds),
        ("nodes_recomputed", s.nodes_recomputed),
        ("values_read", s.values_read),
    ]
    .into_iter()
    .collect()
}

fn stats_tuple(s: StepStats) -> (f64, usize, usize) {
    (s.loss, s.fired_union, s.fired_total)
}

/// Runs `steps` given as flat indices + offsets (batches may differ in size);
/// returns the per-step figures of the steps done and the error that stopped
/// the run early, if any, so the caller keeps the history of what happened.
fn run_steps(
    mut step: impl FnMut(&[usize]) -> crate::Result<StepStats>,
    indices: &[usize],
    offsets: &[usize],
) -> (Vec<StepStats>, Option<KronError>) {
    let mut out = Vec::with_capacity(offsets.len().saturating_sub(1));
    for w in offsets.windows(2) {
        match step(&indices[w[0]..w[1]]) {
            Ok(s) => out.push(s),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

type RunResult<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>, Option<PyErr>);

fn run_result(py: Python<'_>, stats: Vec<StepStats>, err: Option<KronError>) -> RunResult<'_> {
    let loss = Array1::from_iter(stats.iter().map(|s| s.loss)).into_pyarray(py);
    let union = Array1::from_iter(stats.iter().map(|s| s.fired_union as i64)).into_pyarray(py);
    let total = Array1::from_iter(stats.iter().map(|s| s.fired_total as i64)).into_pyarray(py);
    (loss, union, total, err.map(to_py))
}

fn check_offsets(indices: usize, offsets: &[usize]) -> PyResult<()> {
    let ok = offsets.first() == Some(&0)
        && offsets.last() == Some(&indices)
        && offsets.windows(2).all(|w| w[0] < w[1]);
    if ok {
        Ok(())
    } else {
        Err(PyValueError::new_err("offsets: must start at 0, increase strictly and end at len(indices)"))
    }
}

fn step_on<B: Backend>(py: Python<'_>, st: &mut B, batch: PyReadonlyArray1<'_, i64>, lr: f64) -> PyResult<(f64, usize, usize)> {
    let b = batch_indices(&batch)?;
    guarded(py, || st.step(&b, lr)).map(stats_tuple)
}

fn run_on<'py, B: Backend>(
    py: Python<'py>,
    st: &mut B,
    indices: PyReadonlyArray1<'py, i64>,
    offsets: PyReadonlyArray1<'py, i64>,
    lr: f64,
) -> PyResult<RunResult<'py>> {
    let idx = batch_indices(&indices)?;
    let off = batch_indices(&offsets)?;
    check_offsets(idx.len(), &off)?;
    let (stats, err) = guarded(py, || Ok(run_steps(|b| st.step(b, lr), &idx, &off)))?;
    Ok(run_result(py, stats, err))
}

/// Kronecker-backend training state (see `step.rs`).
#[pyclass(module = "kronnet._core")]
struct KronCore {
    state: step::KronState,
}

#[pymethods]
impl KronCore {
    #[new]
    #[pyo3(signature = (factors, y, a, threshold, p0, gram, index))]
    fn new(
        py: Python<'_>,
        factors: Vec<PyReadonlyArray2<'_, f64>>,
        y: PyReadonlyArray1<'_, f64>,
        a: PyReadonlyArray1<'_, f64>,
        threshold: f64,
        p0: PyReadonlyArray2<'_, f64>,
        gram: &str,
        index: &str,
    ) -> PyResult<Self> {
        let mode = match gram {
            "precomputed" => step::GramMode::Precomputed,
            "columns" => step::GramMode::Columns,
            other => return Err(PyValueError::new_err(format!("gram: unknown mode {other:?}"))),
        };
        if !matches!(index, "scan" | "tree" | "bits") {
            return Err(PyValueError::new_err(format!("index: unknown index {index:?}")));
        }
        let mats: Vec<Array2<f64>> = factors.iter().map(|f| f.as_array().to_owned()).collect();
        let (y, a, p0) = (y.as_array().to_vec(), a.as_array().to_vec(), p0.as_array().to_owned());
        let index = index.to_string();
        let state = guarded(py, || {
            step::KronState::new(mats, y, Model::new(a, threshold)?, p0, mode, |v| make_index(&index, v, threshold))
        })?;
        Ok(KronCore { state })
    }

    /// One step; returns (batch loss before the update, |R|, Σ|A_i|).
    fn step(&mut self, py: Python<'_>, batch: PyReadonlyArray1<'_, i64>, lr: f64) -> PyResult<(f64, usize, usize)> {
        step_on(py, &mut self.state, batch, lr)
    }

    /// Many steps without returning to Python between them.
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        indices: PyReadonlyArray1<'py, i64>,
        offsets: PyReadonlyArray1<'py, i64>,
        lr: f64,
    ) -> PyResult<RunResult<'py>> {
        run_on(py, &mut self.state, indices, offsets, lr)
    }

    fn full_loss(&self, py: Python<'_>) -> PyResult<f64> {
        let st = &self.state;
        guarded(py, || Ok(st.full_loss()))
    }

    /// α (width, n): w_r = w_r(0) + Σ_i α[r, i] x_i.
    fn alpha<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        self.state.alpha().as_standard_layout().into_owned().into_pyarray(py)
    }

    /// P (n, width): P[i, r] = <w_r, x_i>.
    fn preacts<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        self.state.preacts().as_standard_layout().into_owned().into_pyarray(py)
    }

    #[getter]
    fn index_name(&self) -> &'static str {
        self.state.index_name()
    }

    #[getter]
    fn index_memory_bytes(&self) -> usize {
        self.state.index_memory_bytes()
    }

    /// The index's work so far (see `kn.AsyncTree.stats`).
    #[getter]
    fn index_stats(&self) -> HashMap<&'static str, u64> {
        stats_dict(self.state.index_stats())
    }

    /// (seconds, nominal FLOPs 2·n·S·|R|) of the step's GEMM so far.
    #[getter]
    fn update_work(&self) -> (f64, f64) {
        self.state.update_work()
    }

    /// Seconds spent finding fire sets (index syncs and queries) so far.
    #[getter]
    fn index_seconds(&self) -> f64 {
        self.state.index_seconds()
    }

    #[getter]
    fn gram_mode(&self) -> &'static str {
        match self.state.gram_mode() {
            step::GramMode::Precomputed => "precomputed",
            step::GramMode::Columns => "columns",
        }
    }
}

/// Dense-backend training state (see `dense.rs`).
#[pyclass(module = "kronnet._core")]
struct DenseCore {
    state: dense::DenseState,
}

#[pymethods]
impl DenseCore {
    #[new]
    fn new(
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f64>,
        y: PyReadonlyArray1<'_, f64>,
        a: PyReadonlyArray1<'_, f64>,
        threshold: f64,
        w: PyReadonlyArray2<'_, f64>,
    ) -> PyResult<Self> {
        let (x, y, a, w) = (x.as_array().to_owned(), y.as_array().to_vec(), a.as_array().to_vec(), w.as_array().to_owned());
        let state = guarded(py, || dense::DenseState::new(x, y, Model::new(a, threshold)?, w))?;
        Ok(DenseCore { state })
    }

    /// One step; returns (batch loss before the update, |R|, Σ|A_i|).
    fn step(&mut self, py: Python<'_>, batch: PyReadonlyArray1<'_, i64>, lr: f64) -> PyResult<(f64, usize, usize)> {
        step_on(py, &mut self.state, batch, lr)
    }

    /// Many steps without returning to Python between them.
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        indices: PyReadonlyArray1<'py, i64>,
        offsets: PyReadonlyArray1<'py, i64>,
        lr: f64,
    ) -> PyResult<RunResult<'py>> {
        run_on(py, &mut self.state, indices, offsets, lr)
    }

    fn full_loss(&self, py: Python<'_>) -> PyResult<f64> {
        let st = &self.state;
        guarded(py, || Ok(st.full_loss()))
    }

    /// W (width, d).
    fn weights<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        self.state.weights().to_owned().into_pyarray(py)
    }
}

/// The asynchronous tree over a values matrix it owns (n × m), for direct
/// use and testing; training uses the same structure over P.
#[pyclass(name = "AsyncTree", module = "kronnet._core")]
struct PyAsyncTree {
    values: Array2<f64>,
    tree: AsyncTree,
}

#[pymethods]
impl PyAsyncTree {
    #[new]
    fn new(py: Python<'_>, values: PyReadonlyArray2<'_, f64>) -> PyResult<Self> {
        let values = values.as_array().as_standard_layout().into_owned();
        let tree = guarded(py, || Ok(AsyncTree::new(values.view())))?;
        Ok(PyAsyncTree { values, tree })
    }

    /// values[:, cols] = new_values (n × k), then record the change; the
    /// trees resync lazily on their next query. `cols` must be distinct.
    fn update(&mut self, py: Python<'_>, cols: PyReadonlyArray1<'_, i64>, new_values: PyReadonlyArray2<'_, f64>) -> PyResult<()> {
        let (n, m) = self.values.dim();
        let cols: Vec<usize> = cols
            .as_array()
            .iter()
            .map(|&c| {
                usize::try_from(c)
                    .ok()
                    .filter(|&c| c < m)
                    .ok_or_else(|| PyValueError::new_err(format!("cols: index {c} is out of range for {m} columns")))
            })
            .collect::<PyResult<_>>()?;
        let new_values = new_values.as_array();
        if new_values.dim() != (n, cols.len()) {
            return Err(PyValueError::new_err(format!(
                "new_values: has shape {:?}, expected ({n}, {})",
                new_values.dim(),
                cols.len()
            )));
        }
        let mut sorted = cols.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(PyValueError::new_err("cols: indices must be distinct"));
        }
        let (values, tree) = (&mut self.values, &mut self.tree);
        guarded(py, || {
            for (k, &c) in cols.iter().enumerate() {
                values.column_mut(c).assign(&new_values.column(k));
            }
            tree.mark_changed(&sorted.iter().map(|&c| c as u32).collect::<Vec<_>>());
            Ok(())
        })
    }

    /// Sorted r with values[i, r] > tau: int64 array.
    fn query<'py>(&mut self, py: Python<'py>, i: i64, tau: f64) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let n = self.values.nrows();
        let i = usize::try_from(i)
            .ok()
            .filter(|&i| i < n)
            .ok_or_else(|| PyValueError::new_err(format!("i: row {i} is out of range for {n} rows")))?;
        let (values, tree) = (&self.values, &mut self.tree);
        let found = guarded(py, || Ok(tree.query(values.view(), i, tau)))?;
        Ok(Array1::from_iter(found.into_iter().map(i64::from)).into_pyarray(py))
    }

    /// Fire sets of several rows at once (synced and queried in parallel).
    fn query_many<'py>(&mut self, py: Python<'py>, rows: PyReadonlyArray1<'py, i64>, tau: f64) -> PyResult<Vec<Bound<'py, PyArray1<i64>>>> {
        let rows = batch_indices(&rows)?;
        let n = self.values.nrows();
        if let Some(&bad) = rows.iter().find(|&&i| i >= n) {
            return Err(PyValueError::new_err(format!("rows: row {bad} is out of range for {n} rows")));
        }
        let (values, tree) = (&self.values, &mut self.tree);
        let found = guarded(py, || Ok(tree.fire_sets(values.view(), &rows, tau)))?;
        Ok(found.into_iter().map(|f| Array1::from_iter(f.into_iter().map(i64::from)).into_pyarray(py)).collect())
    }

    /// A copy of the current values (n × m).
    #[getter]
    fn values<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        self.values.clone().into_pyarray(py)
    }

    #[getter]
    fn shape(&self) -> (usize, usize) {
        self.values.dim()
    }

    #[getter]
    fn fanout(&self) -> usize {
        self.tree.fanout()
    }

    /// Bytes of the tree's own structure (internal nodes, log, cursors).
    #[getter]
    fn memory_bytes(&self) -> usize {
        self.tree.memory_bytes()
    }

    /// Work so far: dict of queries, rows_synced, full_rebuilds,
    /// nodes_recomputed, values_read.
    #[getter]
    fn stats(&self) -> HashMap<&'static str, u64> {
        stats_dict(self.tree.stats())
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The one place the version is written is Cargo.toml; maturin copies it
    // into the wheel's metadata and this exposes it as kronnet.__version__.
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(init_preacts, m)?)?;
    m.add_function(wrap_pyfunction!(cross_gram, m)?)?;
    m.add_function(wrap_pyfunction!(initial_weights, m)?)?;
    m.add_function(wrap_pyfunction!(output_signs, m)?)?;
    m.add_function(wrap_pyfunction!(outputs, m)?)?;
    m.add_class::<KronCore>()?;
    m.add_class::<DenseCore>()?;
    m.add_class::<PyAsyncTree>()?;
    m.add("KronnetError", m.py().get_type::<KronnetError>())?;
    m.add("DivergenceError", m.py().get_type::<DivergenceError>())?;
    Ok(())
}
