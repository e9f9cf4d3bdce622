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

use crate::coef::Coefficients;
use crate::control::Control;
use crate::dense::DenseState;
use crate::error::KronError;
use crate::exact_sum::{write_all, ExactSum, WORDS};
use crate::factors::Factors;
use crate::index::{ActivationIndex, IndexKind, IndexStats};
use crate::init::{InitKind, InitialWeights};
use crate::model::{run_steps, Backend, Model, StepStats};
use crate::predict::{self as prediction, Block};
use crate::step::{GramMode, KernelSpec, KronState, RunEnd};
use crate::tree::AsyncTree;
use crate::{gram, kron_init, rng};
use ndarray::{Array1, Array2, ArrayView2, Ix1, Ix2};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{PyKeyboardInterrupt, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::Duration;

// ---------------------------------------------------------------- errors

/// The exception of `kronnet.errors` a core error stands for, carrying its
/// data (argument name, bytes needed) as attributes.
fn to_py(py: Python<'_>, e: KronError) -> PyErr {
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

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into())
}

fn internal_error(py: Python<'_>, msg: String) -> PyErr {
    let made = py
        .import("kronnet.errors")
        .and_then(|m| m.getattr("KronnetError"))
        .and_then(|c| c.call1((format!("internal error in kronnet's core (please report): {msg}"),)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

/// Runs short core work with the GIL released; errors and any panic become
/// Python exceptions.
fn guarded<T: Send>(py: Python<'_>, f: impl FnOnce() -> crate::Result<T> + Send) -> PyResult<T> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(r) => r.map_err(|e| to_py(py, e)),
        Err(panic) => Err(internal_error(py, panic_message(panic))),
    }
}

/// How often the calling thread looks for Python signals while core work
/// runs: a Ctrl-C is acted on within this plus the work's own granularity
/// (one step, one neuron of init, one chunk of prediction).
const POLL: Duration = Duration::from_millis(20);

/// What long work ended with: its own result, and the exception a signal
/// handler raised meanwhile (KeyboardInterrupt on Ctrl-C), if any.
struct Finished<T> {
    result: Result<crate::Result<T>, String>,
    signal: Option<PyErr>,
}

/// Runs `work` as a task of the rayon pool with the GIL released while the
/// calling thread, which Python delivers signals to, polls for them every
/// `POLL`. A signal handler's exception asks the work to stop (`Control`);
/// the work then returns at its next consistent boundary. The pool's own
/// long-lived threads run it (not a fresh thread per call), so the
/// allocator's per-thread arenas stay few and memory does not fragment
/// across calls.
fn interruptible<T: Send>(py: Python<'_>, work: impl FnOnce(&Control) -> crate::Result<T> + Send) -> Finished<T> {
    reporting(py, None, 0, work)
}

/// `interruptible`, and at every poll `progress(done, total)` is called with
/// the work's count of units done (`Control::advance`) and `total`. An
/// exception from the callback stops the work like a signal.
fn reporting<T: Send>(
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
fn finish<T>(py: Python<'_>, done: Finished<T>) -> PyResult<T> {
    if let Some(sig) = done.signal {
        return Err(sig);
    }
    match done.result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(py, e)),
        Err(msg) => Err(internal_error(py, msg)),
    }
}

// ---------------------------------------------------------------- arrays

/// A float64 array of `D` dimensions the core can read in place: the input
/// itself when it is aligned, native-endian and C-contiguous; otherwise a
/// copy made by numpy (`np.require`). Only float64 is accepted here — the
/// Python package converts other dtypes, so no cast happens silently.
fn f64_array<'py, D: ndarray::Dimension>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<PyReadonlyArray<'py, f64, D>> {
    let py = obj.py();
    let np = py.import("numpy")?;
    let is_array = obj.is_instance(&np.getattr("ndarray")?)?;
    let is_f64 = is_array && {
        let dt = obj.getattr("dtype")?;
        dt.getattr("kind")?.extract::<String>()? == "f" && dt.getattr("itemsize")?.extract::<usize>()? == 8
    };
    if !is_f64 {
        return Err(PyTypeError::new_err(format!("{name}: expected a float64 numpy array")));
    }
    let fixed = np.call_method1("require", (obj, "float64", ("C", "A")))?;
    fixed
        .extract::<PyReadonlyArray<'py, f64, D>>()
        .map_err(|_| PyValueError::new_err(format!("{name}: expected a {}-D array", D::NDIM.unwrap_or(0))))
}

fn f64_matrices<'py>(objs: &[Bound<'py, PyAny>], name: &str) -> PyResult<Vec<PyReadonlyArray2<'py, f64>>> {
    objs.iter().enumerate().map(|(k, o)| f64_array::<Ix2>(o, &format!("{name}[{k}]"))).collect()
}

fn views<'a>(arrays: &'a [PyReadonlyArray2<'_, f64>]) -> Vec<ArrayView2<'a, f64>> {
    arrays.iter().map(|a| a.as_array()).collect()
}

/// 1-D integer indices, each converted to usize (negative ones refused;
/// floats refused rather than truncated).
fn indices(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<usize>> {
    let py = obj.py();
    let np = py.import("numpy")?;
    let kind = np.call_method1("asarray", (obj,))?.getattr("dtype")?.getattr("kind")?.extract::<String>()?;
    if kind != "i" && kind != "u" {
        return Err(PyTypeError::new_err(format!("{name}: expected integer indices")));
    }
    let arr = np.call_method1("require", (obj, "int64", ("C", "A")))?;
    let arr: PyReadonlyArray1<'_, i64> =
        arr.extract().map_err(|_| PyValueError::new_err(format!("{name}: expected a 1-D array of indices")))?;
    arr.as_array()
        .iter()
        .map(|&i| usize::try_from(i).map_err(|_| PyValueError::new_err(format!("{name}: index {i} is negative"))))
        .collect()
}

/// Parses a mode string into one of `options`, naming the argument.
fn parse_mode<T: Copy>(value: &str, name: &str, options: &[(&str, T)]) -> PyResult<T> {
    options.iter().find(|(k, _)| *k == value).map(|(_, v)| *v).ok_or_else(|| {
        let names: Vec<String> = options.iter().map(|(k, _)| format!("{k:?}")).collect();
        PyValueError::new_err(format!("{name}: must be one of {}; got {value:?}", names.join(", ")))
    })
}

/// A net's initial weights as passed from Python: (seed, "gaussian" or
/// "kron", rank R of the Kronecker init).
type PyInit = (u64, String, usize);

/// Parses `PyInit` into the core's description of W(0).
fn initial(init: &PyInit) -> PyResult<InitialWeights> {
    let (seed, kind, rank) = init;
    let kind = match kind.as_str() {
        "gaussian" => InitKind::Gaussian,
        "kron" if (1..=kron_init::MAX_RANK).contains(rank) => InitKind::Kron { rank: *rank },
        "kron" => {
            return Err(PyValueError::new_err(format!(
                "init_rank: must be in [1, {}]; got {rank}",
                kron_init::MAX_RANK
            )))
        }
        other => {
            return Err(PyValueError::new_err(format!("init: must be one of \"gaussian\", \"kron\"; got {other:?}")))
        }
    };
    Ok(InitialWeights { seed: *seed, kind })
}

/// Which backend a trainer runs (`Trainer(backend=...)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackendKind {
    Kron,
    Dense,
}

const BACKENDS: [(&str, BackendKind); 2] = [("kron", BackendKind::Kron), ("dense", BackendKind::Dense)];

// ---------------------------------------------------------- coefficients

/// The learned coefficients of one training set: αᵀ (n, width). Owned by
/// the net; trainers borrow it for each step.
#[pyclass(name = "Coefficients", module = "kronnet._core")]
struct PyCoefficients {
    inner: Coefficients,
}

#[pymethods]
impl PyCoefficients {
    /// Zero coefficients for n points and width neurons.
    #[new]
    fn new(py: Python<'_>, n: usize, width: usize) -> PyResult<Self> {
        Ok(PyCoefficients { inner: guarded(py, || Coefficients::zeros(n, width))? })
    }

    /// Coefficients from αᵀ, shape (n, width) (copied).
    #[staticmethod]
    fn from_alpha_t(py: Python<'_>, alpha_t: &Bound<'_, PyAny>) -> PyResult<Self> {
        let a = f64_array::<Ix2>(alpha_t, "alpha")?;
        let owned = a.as_array().to_owned();
        Ok(PyCoefficients { inner: guarded(py, || Coefficients::from_alpha_t(owned))? })
    }

    /// A copy of αᵀ, shape (n, width).
    fn alpha_t<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        self.inner.alpha_t().to_owned().into_pyarray(py)
    }

    #[getter]
    fn n(&self) -> usize {
        self.inner.n()
    }

    #[getter]
    fn width(&self) -> usize {
        self.inner.width()
    }

    /// Whether training has moved any coefficient.
    #[getter]
    fn trained(&self) -> bool {
        self.inner.trained()
    }
}

/// A data set as passed from Python: (matrices, terms per point r, one
/// entry per factor: None when the matrix holds the (n·r) term rows, or an
/// index array (n·r,) into the matrix as an entity table).
type PyPoints<'py> = (Vec<Bound<'py, PyAny>>, usize, Vec<Option<Bound<'py, PyAny>>>);

/// Converted points: arrays held while the core reads them.
struct HeldPoints<'py> {
    mats: Vec<PyReadonlyArray2<'py, f64>>,
    index: Vec<Option<Array1<u64>>>,
    rank: usize,
}

impl<'py> HeldPoints<'py> {
    fn hold(points: &PyPoints<'py>, name: &str) -> PyResult<Self> {
        let (mats, rank, index) = points;
        let mats = f64_matrices(mats, &format!("{name}.factors"))?;
        let index = index
            .iter()
            .enumerate()
            .map(|(k, idx)| {
                idx.as_ref()
                    .map(|i| Ok(indices(i, &format!("{name}.index[{k}]"))?.into_iter().map(|a| a as u64).collect()))
                    .transpose()
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(HeldPoints { mats, index, rank: *rank })
    }

    /// The arrays as plain views (which, unlike the held Python arrays,
    /// may cross into the worker that runs with the GIL released).
    fn views(&self) -> PointViews<'_> {
        let index = self.index.iter().map(|i| i.as_ref().map(|i| i.view())).collect();
        PointViews { mats: views(&self.mats), index, rank: self.rank }
    }

    /// The points, checked.
    fn factors(&self) -> crate::Result<Factors<'_>> {
        self.views().factors()
    }

    /// Points, before any check (for error messages on shapes).
    fn n(&self) -> usize {
        let terms = match self.index.first() {
            Some(Some(idx)) => idx.len(),
            _ => self.mats.first().map_or(0, |u| u.as_array().nrows()),
        };
        terms / self.rank.max(1)
    }
}

/// Views of held points.
struct PointViews<'a> {
    mats: Vec<ArrayView2<'a, f64>>,
    index: Vec<Option<ndarray::ArrayView1<'a, u64>>>,
    rank: usize,
}

impl<'a> PointViews<'a> {
    /// The points, checked (O(Σ table sizes + n p)).
    fn factors(&self) -> crate::Result<Factors<'a>> {
        Factors::indexed(self.mats.clone(), self.index.clone(), self.rank)
    }
}

/// The net's blocks as passed from Python: (points, coefficients).
type PyBlocks<'py> = Vec<(PyPoints<'py>, Bound<'py, PyCoefficients>)>;

/// Borrowed, converted blocks: arrays held while the core reads them.
struct HeldBlocks<'py> {
    points: Vec<HeldPoints<'py>>,
    coefs: Vec<PyRef<'py, PyCoefficients>>,
}

impl<'py> HeldBlocks<'py> {
    fn hold(blocks: &PyBlocks<'py>) -> PyResult<Self> {
        let mut points = Vec::with_capacity(blocks.len());
        let mut coefs = Vec::with_capacity(blocks.len());
        for (j, (f, c)) in blocks.iter().enumerate() {
            points.push(HeldPoints::hold(f, &format!("blocks[{j}]"))?);
            coefs.push(c.try_borrow()?);
        }
        Ok(HeldBlocks { points, coefs })
    }

    fn blocks(&self) -> crate::Result<Vec<Block<'_>>> {
        self.points.iter().zip(&self.coefs).map(|(f, c)| Ok(Block { factors: f.factors()?, coef: &c.inner })).collect()
    }
}

// ------------------------------------------------------------- functions

/// <w_r, x_j> for every point (q of them) under W(0) + the blocks: (q, width).
#[pyfunction]
#[pyo3(signature = (points, init, width, blocks, progress=None))]
fn preacts<'py>(
    py: Python<'py>,
    points: PyPoints<'py>,
    init: PyInit,
    width: usize,
    blocks: PyBlocks<'py>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let init = initial(&init)?;
    let points = HeldPoints::hold(&points, "points")?;
    let held = HeldBlocks::hold(&blocks)?;
    let blocks = held.blocks().map_err(|e| to_py(py, e))?;
    let total = (points.n() * width) as u64;
    let points = points.views();
    let done = reporting(py, progress.as_ref(), total, |ctl| {
        prediction::preacts_t(&points.factors()?, &init, width, &blocks, ctl)
    });
    Ok(finish(py, done)?.reversed_axes().into_pyarray(py))
}

/// f(W, x_j) for every point, `chunk_rows` points at a time: (q,).
#[pyfunction]
#[pyo3(signature = (points, a, threshold, init, blocks, chunk_rows, progress=None))]
#[allow(clippy::too_many_arguments)]
fn predict<'py>(
    py: Python<'py>,
    points: PyPoints<'py>,
    a: &Bound<'py, PyAny>,
    threshold: f64,
    init: PyInit,
    blocks: PyBlocks<'py>,
    chunk_rows: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let init = initial(&init)?;
    let points = HeldPoints::hold(&points, "points")?;
    let a = f64_array::<Ix1>(a, "a")?.as_array().to_vec();
    let held = HeldBlocks::hold(&blocks)?;
    let blocks = held.blocks().map_err(|e| to_py(py, e))?;
    let total = (points.n() * a.len()) as u64;
    let points = points.views();
    let done = reporting(py, progress.as_ref(), total, |ctl| {
        let model = Model::checked(a, threshold)?;
        prediction::predict(&points.factors()?, &model, &init, &blocks, chunk_rows, ctl)
    });
    Ok(Array1::from(finish(py, done)?).into_pyarray(py))
}

/// One rank's part of `predict`: the exact sums over the net's neurons
/// `first .. first + count` (`a` and `threshold` are the whole net's; the
/// blocks hold α for those neurons only) as int64 words, (q, EXACT_WORDS).
/// Summed element-wise over the ranks, `outputs_from_words` gives f.
#[pyfunction]
#[pyo3(signature = (points, a, threshold, init, neurons, blocks, chunk_rows, progress=None))]
#[allow(clippy::too_many_arguments)]
fn predict_words<'py>(
    py: Python<'py>,
    points: PyPoints<'py>,
    a: &Bound<'py, PyAny>,
    threshold: f64,
    init: PyInit,
    neurons: (usize, usize),
    blocks: PyBlocks<'py>,
    chunk_rows: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let init = initial(&init)?;
    let points = HeldPoints::hold(&points, "points")?;
    let a = f64_array::<Ix1>(a, "a")?.as_array().to_vec();
    let held = HeldBlocks::hold(&blocks)?;
    let blocks = held.blocks().map_err(|e| to_py(py, e))?;
    let (first, count) = neurons;
    let total = (points.n() * count) as u64;
    let points = points.views();
    let done = reporting(py, progress.as_ref(), total, |ctl| {
        let model = Model::checked(a, threshold)?.shard(first, count)?;
        let f = points.factors()?;
        let mut words: Vec<i64> = Vec::new();
        let len = f.n() * WORDS;
        words.try_reserve_exact(len).map_err(|_| crate::error::out_of_memory("predictions", 8 * len as u128))?;
        words.resize(len, 0);
        let mut at = 0;
        prediction::predict_sums(&f, &model, &init, first, &blocks, chunk_rows, ctl, |sums| {
            write_all(sums, &mut words[at..at + sums.len() * WORDS]);
            at += sums.len() * WORDS;
        })?;
        Ok(words)
    });
    let words: Vec<i64> = finish(py, done)?;
    let q = words.len() / WORDS;
    Ok(Array2::from_shape_vec((q, WORDS), words).expect("q · WORDS words").into_pyarray(py))
}

/// f from exact sums summed over ranks: (k, EXACT_WORDS) int64 → (k,),
/// f = (the sum rounded once) / √width.
#[pyfunction]
fn outputs_from_words<'py>(
    py: Python<'py>,
    words: PyReadonlyArray2<'py, i64>,
    width: usize,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let model = Model::new(vec![1.0; width.max(1)], 0.0).map_err(|e| to_py(py, e))?;
    let words = words.as_array();
    if words.ncols() != WORDS {
        return Err(PyValueError::new_err(format!("words: need {WORDS} columns, got {}", words.ncols())));
    }
    let w = words.as_standard_layout();
    let f =
        crate::step::outputs_from_words(&model, w.as_slice().expect("standard layout")).map_err(|e| to_py(py, e))?;
    Ok(Array1::from(f).into_pyarray(py))
}

/// The sum of `values` computed exactly and rounded once (what every
/// output sum uses), for tests against math.fsum.
#[pyfunction]
fn exact_sum(values: PyReadonlyArray1<'_, f64>) -> f64 {
    let mut acc = ExactSum::new();
    values.as_array().iter().for_each(|&v| acc.add(v));
    acc.value()
}

/// The trained W materialized: (width, d).
#[pyfunction]
fn dense_weights<'py>(
    py: Python<'py>,
    init: PyInit,
    width: usize,
    dims: Vec<usize>,
    blocks: PyBlocks<'py>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let held = HeldBlocks::hold(&blocks)?;
    let blocks = held.blocks().map_err(|e| to_py(py, e))?;
    let init = initial(&init)?;
    let done = interruptible(py, |ctl| prediction::dense_weights(&init, width, &dims, &blocks, ctl));
    Ok(finish(py, done)?.into_pyarray(py))
}

/// K[i, j] = <x_i, x'_j>: (n_a, n_b).
#[pyfunction]
fn cross_gram<'py>(py: Python<'py>, a: PyPoints<'py>, b: PyPoints<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (a, b) = (HeldPoints::hold(&a, "a")?, HeldPoints::hold(&b, "b")?);
    let (a, b) = (a.views(), b.views());
    let k = guarded(py, || gram::cross_gram(&a.factors()?, &b.factors()?))?;
    Ok(k.into_pyarray(py))
}

/// W(0) materialized: (width, d).
#[pyfunction]
fn initial_weights(py: Python<'_>, init: PyInit, width: usize, dims: Vec<usize>) -> PyResult<Bound<'_, PyArray2<f64>>> {
    let init = initial(&init)?;
    let done = interruptible(py, |ctl| init.weight_matrix(width, &dims, ctl));
    Ok(finish(py, done)?.into_pyarray(py))
}

/// Output signs a: (width,).
#[pyfunction]
fn output_signs(py: Python<'_>, seed: u64, width: usize) -> PyResult<Bound<'_, PyArray1<f64>>> {
    let a = guarded(py, || rng::try_output_signs(seed, width))?;
    Ok(Array1::from(a).into_pyarray(py))
}

/// Bytes init needs beyond its output (per-thread weights and intermediate).
#[pyfunction]
fn init_scratch_bytes(
    init: PyInit,
    dims: Vec<usize>,
    n: usize,
    rank: usize,
    table_rows: usize,
    threads: usize,
) -> PyResult<u128> {
    Ok(initial(&init)?.scratch_bytes(&dims, n, rank, table_rows, threads))
}

/// The threshold at which Kronecker-factored init of rank R with p factors
/// fires the same fraction of neurons as Gaussian init at `gaussian_b`.
#[pyfunction]
fn kron_threshold(py: Python<'_>, gaussian_b: f64, rank: usize, p: usize) -> PyResult<f64> {
    guarded(py, || kron_init::threshold(gaussian_b, rank, p))
}

/// The expected fraction of neurons a rank-one unit-norm point fires at
/// threshold b under Kronecker init of rank R with p factors.
#[pyfunction]
fn kron_firing_fraction(py: Python<'_>, b: f64, rank: usize, p: usize) -> PyResult<f64> {
    guarded(py, || kron_init::firing_fraction(b, rank, p))
}

/// Kronecker-factored init's factor vectors: per factor an array (width, R, d_k).
#[pyfunction]
fn kron_init_factors<'py>(
    py: Python<'py>,
    seed: u64,
    width: usize,
    dims: Vec<usize>,
    rank: usize,
) -> PyResult<Vec<Bound<'py, numpy::PyArray3<f64>>>> {
    let arrays = guarded(py, || kron_init::factor_arrays(seed, width, &dims, rank))?;
    Ok(arrays.into_iter().map(|a| a.into_pyarray(py)).collect())
}

/// Bytes of derived structure an index keeps for n points and width neurons.
#[pyfunction]
fn index_memory_bytes(index: &str, n: usize, width: usize) -> PyResult<u128> {
    Ok(parse_mode(index, "index", &IndexKind::NAMES)?.memory_bytes(n, width))
}

/// Points per prediction chunk so that a chunk takes about `budget` bytes.
#[pyfunction]
fn predict_chunk_rows(width: usize, block_sizes: Vec<usize>, budget: usize) -> usize {
    prediction::chunk_rows(width, &block_sizes, budget)
}

/// Bytes one prediction chunk of `rows` points needs.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn predict_chunk_bytes(
    init: PyInit,
    dims: Vec<usize>,
    width: usize,
    block_sizes: Vec<usize>,
    rows: usize,
    rank: usize,
    table_rows: usize,
    threads: usize,
) -> PyResult<u128> {
    Ok(prediction::chunk_bytes(&initial(&init)?, &dims, width, &block_sizes, rows, rank, table_rows, threads))
}

/// The rayon pool's thread count.
#[pyfunction]
fn thread_count() -> usize {
    rayon::current_num_threads()
}

/// Float64 GFLOP/s of vector FMAs on all pool threads at once, over about
/// `seconds` (None without AVX2 and FMA).
#[pyfunction]
fn fma_peak_gflops(py: Python<'_>, seconds: f64) -> PyResult<Option<f64>> {
    guarded(py, || Ok(crate::roofline::fma_peak_gflops(seconds)))
}

/// Standard normals per second the W(0) generator draws on all pool
/// threads at once, over about `seconds`.
#[pyfunction]
fn normals_per_second(py: Python<'_>, seconds: f64) -> PyResult<f64> {
    guarded(py, || Ok(crate::roofline::normals_per_second(seconds)))
}

// --------------------------------------------------------------- trainer

enum Engine {
    Kron(KronState),
    Dense(DenseState),
}

impl Engine {
    fn backend(&mut self) -> &mut dyn Backend {
        match self {
            Engine::Kron(k) => k,
            Engine::Dense(d) => d,
        }
    }

    fn kron(&self) -> Option<&KronState> {
        match self {
            Engine::Kron(k) => Some(k),
            Engine::Dense(_) => None,
        }
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

type RunResult<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>, Option<PyErr>);
type StatsArrays<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);

fn stats_arrays<'py>(py: Python<'py>, stats: &[StepStats]) -> StatsArrays<'py> {
    let loss = Array1::from_iter(stats.iter().map(|s| s.loss)).into_pyarray(py);
    let union = Array1::from_iter(stats.iter().map(|s| s.fired_union as i64)).into_pyarray(py);
    let total = Array1::from_iter(stats.iter().map(|s| s.fired_total as i64)).into_pyarray(py);
    (loss, union, total)
}

fn check_offsets(indices: usize, offsets: &[usize]) -> PyResult<()> {
    let ok = offsets.first() == Some(&0) && offsets.last() == Some(&indices) && offsets.windows(2).all(|w| w[0] < w[1]);
    if ok {
        Ok(())
    } else {
        Err(PyValueError::new_err("offsets: must start at 0, increase strictly and end at len(indices)"))
    }
}

/// A training run's state: the backend's (P, Gram, index; or X and W) and
/// the net's coefficient block it accumulates into. Dropping it frees
/// everything but the block.
#[pyclass(module = "kronnet._core", weakref)]
struct TrainerCore {
    engine: Engine,
    coef: Py<PyCoefficients>,
    /// Steps applied so far: the caller reads it after a run to know how
    /// many steps took effect even if an exception cut the call short.
    steps_taken: u64,
    /// The figures of the last `run`, kept for the same reason.
    last_run: Vec<StepStats>,
}

#[pymethods]
impl TrainerCore {
    /// `state`, when given, continues a checkpoint: Pᵀ (width, n) and
    /// `p_bound` for the Kronecker backend, W (width, d) for the dense one.
    /// Otherwise the state starts from the net's current weights: W(0) (from
    /// `seed`) plus `blocks`, which include `coef` itself when it is trained.
    #[new]
    ///
    /// `neurons` = (first, count) makes this core one rank's shard of a
    /// sharded trainer: it holds neurons first .. first + count of the net
    /// (`a` is the whole net's; `coef` and the blocks hold α for those
    /// neurons only) and is driven by `run_sharded`.
    #[pyo3(signature = (backend, points, y, a, threshold, init, coef, blocks, gram, index, state=None, p_bound=None, progress=None, gram_from=None, neurons=None))]
    #[allow(clippy::too_many_arguments)]
    fn new<'py>(
        py: Python<'py>,
        backend: &str,
        points: PyPoints<'py>,
        y: &Bound<'py, PyAny>,
        a: &Bound<'py, PyAny>,
        threshold: f64,
        init: PyInit,
        coef: Bound<'py, PyCoefficients>,
        blocks: PyBlocks<'py>,
        gram: &str,
        index: &str,
        state: Option<&Bound<'py, PyAny>>,
        p_bound: Option<f64>,
        progress: Option<Py<PyAny>>,
        gram_from: Option<PyRef<'py, TrainerCore>>,
        neurons: Option<(usize, usize)>,
    ) -> PyResult<Self> {
        let backend = parse_mode(backend, "backend", &BACKENDS)?;
        if neurons.is_some() && backend != BackendKind::Kron {
            return Err(PyValueError::new_err("neurons: only the Kronecker backend can be sharded"));
        }
        let (first, count) = neurons.unwrap_or((0, a.len()?));
        // Another trainer's Gram on the same points (the caller checks that
        // they are the same), shared without a copy.
        let kernel: KernelSpec = match &gram_from {
            None => parse_mode(gram, "gram", &GramMode::NAMES)?.into(),
            Some(other) => match other.engine.kron().and_then(|k| k.shared_gram()) {
                Some(k) => KernelSpec::Shared(k),
                None => return Err(PyValueError::new_err("gram_from: that trainer has no precomputed Gram")),
            },
        };
        drop(gram_from);
        let init = initial(&init)?;
        let index = parse_mode(index, "index", &IndexKind::NAMES)?;
        let points = HeldPoints::hold(&points, "points")?;
        let y = f64_array::<Ix1>(y, "y")?.as_array().to_vec();
        let a = f64_array::<Ix1>(a, "a")?.as_array().to_vec();
        let state = state.map(|s| f64_array::<Ix2>(s, "state")).transpose()?;
        let held = HeldBlocks::hold(&blocks)?;
        let blocks = held.blocks().map_err(|e| to_py(py, e))?;
        let dims: Vec<usize> = points.mats.iter().map(|u| u.as_array().ncols()).collect();
        {
            let c = coef.try_borrow()?;
            c.inner.check_shape(points.n(), count).map_err(|e| to_py(py, e))?;
        }
        let state_view = state.as_ref().map(|s| s.as_array());
        // Progress counts the Kronecker init's points × neurons (the dense
        // backend and a resumed state do not count).
        let counted = state_view.is_none() && backend == BackendKind::Kron;
        let total = if counted { (points.n() * count) as u64 } else { 0 };
        let points = points.views();
        let done = reporting(py, progress.as_ref(), total, |ctl| -> crate::Result<Engine> {
            let f = points.factors()?;
            let model = Model::checked(a, threshold)?;
            let width = model.width();
            match backend {
                BackendKind::Kron => {
                    let model = model.shard(first, count)?;
                    let p_t = match state_view {
                        Some(s) => s.to_owned(),
                        None => prediction::preacts_t_part(&f, &init, first, count, &blocks, ctl)?,
                    };
                    let b = model.b;
                    let mut st = KronState::with_points(&f, y, model, p_t, kernel, |vals| index.build(vals, b))?;
                    if let Some(bound) = p_bound {
                        st.set_p_bound(bound)?;
                    }
                    Ok(Engine::Kron(st))
                }
                BackendKind::Dense => {
                    let w = match state_view {
                        Some(s) => s.to_owned(),
                        None => prediction::dense_weights(&init, width, &dims, &blocks, ctl)?,
                    };
                    let x = f.materialize()?;
                    Ok(Engine::Dense(DenseState::new(x, y, model, w)?))
                }
            }
        });
        let engine = finish(py, done)?;
        Ok(TrainerCore { engine, coef: coef.unbind(), steps_taken: 0, last_run: Vec::new() })
    }

    /// One step; returns (batch loss before the update, |R|, Σ|A_i|).
    fn step(&mut self, py: Python<'_>, batch: &Bound<'_, PyAny>, lr: f64) -> PyResult<(f64, usize, usize)> {
        let b = indices(batch, "batch")?;
        let mut coef = self.coef.bind(py).try_borrow_mut()?;
        let (engine, alpha) = (&mut self.engine, &mut coef.inner);
        let s: StepStats = guarded(py, || engine.backend().step(alpha, &b, lr))?;
        self.steps_taken += 1;
        Ok((s.loss, s.fired_union, s.fired_total))
    }

    /// A sharded trainer's steps on `indices[offsets[t]:offsets[t + 1]]`
    /// (`step::run_sharded`), run in the core's thread pool like `run`.
    /// `exchange(words)` is called once per message with an int64 array it
    /// must sum over the ranks in place (and may set the last word, the
    /// stop request). Returns (losses, |R|, Σ|A_i|, end, error, changed):
    /// end is "done", "stopped", "diverged" (error: the DivergenceError),
    /// "failed" (error: this rank's exception or None; changed: whether the
    /// ranks' states may now differ) or "exchange" (error: what `exchange`
    /// raised).
    #[allow(clippy::type_complexity)]
    fn run_sharded<'py>(
        &mut self,
        py: Python<'py>,
        indices_: &Bound<'py, PyAny>,
        offsets: &Bound<'py, PyAny>,
        lr: f64,
        exchange: Py<PyAny>,
    ) -> PyResult<(
        Bound<'py, PyArray1<f64>>,
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<i64>>,
        &'static str,
        Option<PyErr>,
        bool,
    )> {
        let idx = indices(indices_, "indices")?;
        let off = indices(offsets, "offsets")?;
        check_offsets(idx.len(), &off)?;
        let mut coef = self.coef.bind(py).try_borrow_mut()?;
        let Engine::Kron(state) = &mut self.engine else {
            return Err(PyValueError::new_err("run_sharded: only the Kronecker backend can be sharded"));
        };
        let alpha = &mut coef.inner;
        let mut failed_exchange: Option<PyErr> = None;
        let slot = &mut failed_exchange;
        let done = interruptible(py, |ctl| {
            let mut send = |words: &mut [i64]| -> bool {
                Python::attach(|py| {
                    let arr = PyArray1::from_slice(py, words);
                    match exchange.call1(py, (arr.clone(),)) {
                        Ok(_) => match numpy::PyArrayMethods::try_readonly(&arr) {
                            Ok(back) => {
                                words.copy_from_slice(back.as_slice().expect("a fresh contiguous array"));
                                true
                            }
                            Err(e) => {
                                *slot = Some(e.into());
                                false
                            }
                        },
                        Err(e) => {
                            *slot = Some(e);
                            false
                        }
                    }
                })
            };
            Ok(crate::step::run_sharded(state, alpha, &idx, &off, lr, ctl, &mut send))
        });
        let (stats, end) = match done.result {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(to_py(py, e)),
            Err(msg) => return Err(internal_error(py, msg)),
        };
        self.steps_taken += stats.len() as u64;
        self.last_run = stats;
        let (loss, union, total) = stats_arrays(py, &self.last_run);
        let (name, err, changed) = match end {
            RunEnd::Done => ("done", None, false),
            RunEnd::Stopped => ("stopped", None, false),
            RunEnd::Diverged(e) => ("diverged", Some(to_py(py, e)), false),
            RunEnd::Failed { local, changed } => ("failed", local.map(|e| to_py(py, e)), changed),
            RunEnd::Exchange => ("exchange", failed_exchange, false),
        };
        // A signal that arrived meanwhile (no handler of the sharded trainer's
        // own was installed) is this rank's alone: it is raised after the
        // run's figures are recorded, like `run` does.
        let err = match (done.signal, name) {
            (Some(sig), "done") => Some(sig),
            (_, _) => err,
        };
        Ok((loss, union, total, name, err, changed))
    }

    /// This shard's exact output sums for training points start .. stop:
    /// (stop − start, EXACT_WORDS) int64.
    fn output_words<'py>(&self, py: Python<'py>, start: usize, stop: usize) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let Some(state) = self.engine.kron() else {
            return Err(PyValueError::new_err("output_words: only the Kronecker backend can be sharded"));
        };
        let words = guarded(py, || state.output_words(start, stop))?;
        Ok(Array2::from_shape_vec((stop - start, WORDS), words).expect("rows · WORDS words").into_pyarray(py))
    }

    /// (1/2n) Σ (f_i − y_i)² for the outputs f (n,) of the training points.
    fn loss_of(&self, py: Python<'_>, f: PyReadonlyArray1<'_, f64>) -> PyResult<f64> {
        let Some(state) = self.engine.kron() else {
            return Err(PyValueError::new_err("loss_of: only the Kronecker backend can be sharded"));
        };
        let f = f.as_array().to_vec();
        guarded(py, || state.loss_of(&f))
    }

    /// The running bound on max |P| (Kronecker backend).
    #[getter]
    fn p_bound(&self) -> f64 {
        self.engine.kron().map_or(0.0, |k| k.p_bound())
    }

    /// Sets the running bound (a sharded trainer sets every rank's to the
    /// maximum over ranks).
    #[setter]
    fn set_p_bound(&mut self, py: Python<'_>, bound: f64) -> PyResult<()> {
        match &mut self.engine {
            Engine::Kron(k) => k.set_p_bound(bound).map_err(|e| to_py(py, e)),
            Engine::Dense(_) => Err(PyValueError::new_err("p_bound: only the Kronecker backend has one")),
        }
    }

    /// Many steps without returning to Python between them: the batches are
    /// `indices[offsets[t]:offsets[t + 1]]`. Returns the per-step figures of
    /// the steps taken and the exception that stopped the run early (a
    /// divergence, or KeyboardInterrupt between two steps), if any.
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        indices_: &Bound<'py, PyAny>,
        offsets: &Bound<'py, PyAny>,
        lr: f64,
    ) -> PyResult<RunResult<'py>> {
        let idx = indices(indices_, "indices")?;
        let off = indices(offsets, "offsets")?;
        check_offsets(idx.len(), &off)?;
        let mut coef = self.coef.bind(py).try_borrow_mut()?;
        let (engine, alpha) = (&mut self.engine, &mut coef.inner);
        let done = interruptible(py, |ctl| Ok(run_steps(engine.backend(), alpha, &idx, &off, lr, ctl)));
        let (stats, err) = match done.result {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => (Vec::new(), Some(e)),
            Err(msg) => return Err(internal_error(py, msg)),
        };
        self.steps_taken += stats.len() as u64;
        self.last_run = stats;
        let stats = &self.last_run;
        // A signal that arrived as the run finished is still raised, after
        // the caller has recorded the steps that were taken.
        let err = match (err, done.signal) {
            (_, Some(sig)) => Some(sig),
            (Some(e), None) => Some(to_py(py, e)),
            (None, None) => None,
        };
        let (loss, union, total) = stats_arrays(py, stats);
        Ok((loss, union, total, err))
    }

    /// Steps applied by this core so far.
    #[getter]
    fn steps_taken(&self) -> u64 {
        self.steps_taken
    }

    /// (losses, |R|, Σ|A_i|) of the steps the last `run` took: what `run`
    /// returned, for a caller that was interrupted before reading it.
    fn last_run<'py>(&self, py: Python<'py>) -> StatsArrays<'py> {
        stats_arrays(py, &self.last_run)
    }

    fn full_loss(&mut self, py: Python<'_>) -> PyResult<f64> {
        let engine = &mut self.engine;
        guarded(py, || Ok(engine.backend().full_loss()))
    }

    /// What a checkpoint needs to continue exactly: {"state": Pᵀ (width, n),
    /// "p_bound": float} for the Kronecker backend, {"state": W (width, d)}
    /// for the dense one. Copies.
    fn export_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        match &self.engine {
            Engine::Kron(k) => {
                out.set_item("state", k.preacts_t().to_owned().into_pyarray(py))?;
                out.set_item("p_bound", k.p_bound())?;
            }
            Engine::Dense(d) => out.set_item("state", d.weights().to_owned().into_pyarray(py))?,
        }
        Ok(out)
    }

    /// P (n, width): P[i, r] = <w_r, x_i> (Kronecker backend; a copy).
    fn preacts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        match self.engine.kron() {
            Some(k) => Ok(k.preacts().as_standard_layout().into_owned().into_pyarray(py)),
            None => Err(PyValueError::new_err("preacts: only the Kronecker backend keeps P")),
        }
    }

    #[getter]
    fn index_name(&self) -> &'static str {
        self.engine.kron().map_or("none", |k| k.index_name())
    }

    #[getter]
    fn index_memory_bytes(&self) -> usize {
        self.engine.kron().map_or(0, |k| k.index_memory_bytes())
    }

    /// The index's work so far (see `kn.AsyncTree.stats`).
    #[getter]
    fn index_stats(&self) -> HashMap<&'static str, u64> {
        stats_dict(self.engine.kron().map_or(IndexStats::default(), |k| k.index_stats()))
    }

    /// (seconds, nominal FLOPs 2·n·S·|R|) of the step's GEMM so far.
    #[getter]
    fn update_work(&self) -> (f64, f64) {
        self.engine.kron().map_or((0.0, 0.0), |k| k.update_work())
    }

    /// Seconds spent finding fire sets (index syncs and queries) so far.
    #[getter]
    fn index_seconds(&self) -> f64 {
        self.engine.kron().map_or(0.0, |k| k.index_seconds())
    }

    #[getter]
    fn gram_mode(&self) -> &'static str {
        match self.engine.kron().map(|k| k.gram_mode()) {
            Some(GramMode::Precomputed) => "precomputed",
            Some(GramMode::Columns) => "columns",
            None => "none",
        }
    }
}

// ------------------------------------------------------------------ tree

/// The asynchronous tree over a values matrix it owns (n × m), for direct
/// use and testing; training uses the same structure over P.
#[pyclass(name = "AsyncTree", module = "kronnet._core")]
struct PyAsyncTree {
    values: Array2<f64>,
    tree: AsyncTree,
}

fn row_index(i: i64, n: usize, name: &str) -> PyResult<usize> {
    usize::try_from(i)
        .ok()
        .filter(|&i| i < n)
        .ok_or_else(|| PyValueError::new_err(format!("{name}: row {i} is out of range for {n} rows")))
}

#[pymethods]
impl PyAsyncTree {
    #[new]
    fn new(py: Python<'_>, values: &Bound<'_, PyAny>) -> PyResult<Self> {
        let values = f64_array::<Ix2>(values, "values")?.as_array().to_owned();
        let tree = guarded(py, || Ok(AsyncTree::new(values.view())))?;
        Ok(PyAsyncTree { values, tree })
    }

    /// values[:, cols] = new_values (n × k), then record the change; the
    /// trees resync lazily on their next query. `cols` must be distinct.
    fn update(&mut self, py: Python<'_>, cols: &Bound<'_, PyAny>, new_values: &Bound<'_, PyAny>) -> PyResult<()> {
        let (n, m) = self.values.dim();
        let cols = indices(cols, "cols")?;
        if let Some(&bad) = cols.iter().find(|&&c| c >= m) {
            return Err(PyValueError::new_err(format!("cols: index {bad} is out of range for {m} columns")));
        }
        let new_values = f64_array::<Ix2>(new_values, "new_values")?;
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
        let i = row_index(i, self.values.nrows(), "i")?;
        let (values, tree) = (&self.values, &mut self.tree);
        let found = guarded(py, || Ok(tree.query(values.view(), i, tau)))?;
        Ok(Array1::from_iter(found.into_iter().map(i64::from)).into_pyarray(py))
    }

    /// Fire sets of several rows at once (synced and queried in parallel).
    fn query_many<'py>(
        &mut self,
        py: Python<'py>,
        rows: &Bound<'py, PyAny>,
        tau: f64,
    ) -> PyResult<Vec<Bound<'py, PyArray1<i64>>>> {
        let rows = indices(rows, "rows")?;
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
    m.add_function(wrap_pyfunction!(preacts, m)?)?;
    m.add_function(wrap_pyfunction!(predict, m)?)?;
    m.add_function(wrap_pyfunction!(predict_words, m)?)?;
    m.add_function(wrap_pyfunction!(outputs_from_words, m)?)?;
    m.add_function(wrap_pyfunction!(exact_sum, m)?)?;
    m.add("EXACT_WORDS", WORDS)?;
    m.add("NEURON_BLOCK", prediction::NEURON_BLOCK)?;
    m.add_function(wrap_pyfunction!(dense_weights, m)?)?;
    m.add_function(wrap_pyfunction!(cross_gram, m)?)?;
    m.add_function(wrap_pyfunction!(initial_weights, m)?)?;
    m.add_function(wrap_pyfunction!(output_signs, m)?)?;
    m.add_function(wrap_pyfunction!(init_scratch_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(index_memory_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(predict_chunk_rows, m)?)?;
    m.add_function(wrap_pyfunction!(predict_chunk_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(thread_count, m)?)?;
    m.add_function(wrap_pyfunction!(fma_peak_gflops, m)?)?;
    m.add_function(wrap_pyfunction!(normals_per_second, m)?)?;
    m.add_function(wrap_pyfunction!(kron_threshold, m)?)?;
    m.add_function(wrap_pyfunction!(kron_firing_fraction, m)?)?;
    m.add_function(wrap_pyfunction!(kron_init_factors, m)?)?;
    m.add_class::<PyCoefficients>()?;
    m.add_class::<TrainerCore>()?;
    m.add_class::<PyAsyncTree>()?;
    Ok(())
}
