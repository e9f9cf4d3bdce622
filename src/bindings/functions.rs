//! The free functions of `kronnet._core`: prediction, materialized
//! weights, cross-Grams, init figures, memory planning and machine figures.

use super::arrays::{initial, parse_mode, HeldPoints, PyInit, PyPoints};
use super::coefficients::{HeldBlocks, PyBlocks};
use super::errors::to_py;
use super::model::PyModel;
use super::runtime::{finish, guarded, interruptible, reporting};
use crate::elem::Dtype;
use crate::exact_sum::{write_all, ExactSum, WORDS};
use crate::fold;
use crate::index::IndexKind;
use crate::loss::Loss;
use crate::memory::{self, TrainerShape};
use crate::model::BackendKind;
use crate::predict as prediction;
use crate::step::GramMode;
use crate::{gram, kron_init, rng};
use ndarray::{Array1, Array2};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArray3, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// <w_r, x_j> for every point (q of them) under W(0) + the blocks: (q, width).
#[pyfunction]
#[pyo3(signature = (points, init, width, blocks, progress=None))]
pub(super) fn preacts<'py>(
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

/// f for every point, `chunk_rows` points at a time: (q, outputs).
#[pyfunction]
#[pyo3(signature = (points, model, init, blocks, chunk_rows, progress=None))]
pub(super) fn predict<'py>(
    py: Python<'py>,
    points: PyPoints<'py>,
    model: PyRef<'py, PyModel>,
    init: PyInit,
    blocks: PyBlocks<'py>,
    chunk_rows: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let init = initial(&init)?;
    let points = HeldPoints::hold(&points, "points")?;
    let held = HeldBlocks::hold(&blocks)?;
    let blocks = held.blocks().map_err(|e| to_py(py, e))?;
    let model = &model.inner;
    let total = (points.n() * model.width()) as u64;
    let q = points.n();
    let points = points.views();
    let done = reporting(py, progress.as_ref(), total, |ctl| {
        prediction::predict(&points.factors()?, model, &init, &blocks, chunk_rows, ctl)
    });
    let f = finish(py, done)?;
    Ok(Array2::from_shape_vec((q, model.outputs()), f).expect("q × outputs").into_pyarray(py))
}

/// The net's coefficients folded into dense weights (`fold.rs`): (W of
/// the neurons the head holds (held, d), the linear term's unscaled
/// weights (outputs, d) or None).
#[pyfunction]
#[allow(clippy::type_complexity)]
pub(super) fn fold_weights<'py>(
    py: Python<'py>,
    model: PyRef<'py, PyModel>,
    init: PyInit,
    dims: Vec<usize>,
    blocks: PyBlocks<'py>,
) -> PyResult<(Bound<'py, PyArray2<f64>>, Option<Bound<'py, PyArray2<f64>>>)> {
    let init = initial(&init)?;
    let held = HeldBlocks::hold(&blocks)?;
    let blocks = held.blocks().map_err(|e| to_py(py, e))?;
    let model = &model.inner;
    let done = interruptible(py, |ctl| {
        let w = fold::folded_weights(&init, model.net_width(), model.first(), model.width(), &dims, &blocks, ctl)?;
        let v = fold::folded_linear(&dims, model.outputs(), &blocks, ctl)?;
        Ok((w, v))
    });
    let (w, v) = finish(py, done)?;
    Ok((w.into_pyarray(py), v.map(|v| v.into_pyarray(py))))
}

/// `predict_words` through folded weights (`fold_weights`): the exact sums
/// of the neurons the head holds (q, outputs · EXACT_WORDS) and the
/// points' unscaled linear parts (q, outputs) when `linear` is given.
#[pyfunction]
#[pyo3(signature = (points, model, weights, linear, chunk_rows, progress=None))]
#[allow(clippy::type_complexity)]
pub(super) fn predict_words_folded<'py>(
    py: Python<'py>,
    points: PyPoints<'py>,
    model: PyRef<'py, PyModel>,
    weights: PyReadonlyArray2<'py, f64>,
    linear: Option<PyReadonlyArray2<'py, f64>>,
    chunk_rows: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Bound<'py, PyArray2<i64>>, Option<Bound<'py, PyArray2<f64>>>)> {
    let points = HeldPoints::hold(&points, "points")?;
    let model = &model.inner;
    let c = model.outputs();
    let total = (points.n() * model.width()) as u64;
    let points = points.views();
    let (w, v) = (weights.as_array(), linear.as_ref().map(|l| l.as_array()));
    let done = reporting(py, progress.as_ref(), total, |ctl| {
        let f = points.factors()?;
        let mut words: Vec<i64> = Vec::new();
        let len = f.n() * c * WORDS;
        words.try_reserve_exact(len).map_err(|_| crate::error::out_of_memory("predictions", 8 * len as u128))?;
        words.resize(len, 0);
        let mut lin_out: Option<Vec<f64>> = None;
        let mut at = 0;
        prediction::predict_sums_folded(&f, model, w, v, chunk_rows, ctl, |sums, lin| {
            write_all(sums, &mut words[at..at + sums.len() * WORDS]);
            at += sums.len() * WORDS;
            if let Some(l) = lin {
                lin_out.get_or_insert_with(Vec::new).extend_from_slice(l);
            }
        })?;
        Ok((words, lin_out))
    });
    let (words, lin) = finish(py, done)?;
    let q = words.len() / (WORDS * c);
    let words = Array2::from_shape_vec((q, c * WORDS), words).expect("q · C · WORDS words").into_pyarray(py);
    let lin = lin.map(|l| Array2::from_shape_vec((q, c), l).expect("q × C").into_pyarray(py));
    Ok((words, lin))
}

/// One rank's part of `predict`: the exact sums over the neurons its head
/// holds (the blocks hold α for those neurons only) as int64 words,
/// (q, outputs · EXACT_WORDS), and the points' unscaled linear parts
/// (q, outputs) when the net has a linear term (the same on every rank).
/// Summed element-wise over the ranks, `outputs_from_words` gives f.
#[pyfunction]
#[pyo3(signature = (points, model, init, blocks, chunk_rows, progress=None))]
#[allow(clippy::type_complexity)]
pub(super) fn predict_words<'py>(
    py: Python<'py>,
    points: PyPoints<'py>,
    model: PyRef<'py, PyModel>,
    init: PyInit,
    blocks: PyBlocks<'py>,
    chunk_rows: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Bound<'py, PyArray2<i64>>, Option<Bound<'py, PyArray2<f64>>>)> {
    let init = initial(&init)?;
    let points = HeldPoints::hold(&points, "points")?;
    let held = HeldBlocks::hold(&blocks)?;
    let blocks = held.blocks().map_err(|e| to_py(py, e))?;
    let model = &model.inner;
    let c = model.outputs();
    let total = (points.n() * model.width()) as u64;
    let points = points.views();
    let done = reporting(py, progress.as_ref(), total, |ctl| {
        let f = points.factors()?;
        let mut words: Vec<i64> = Vec::new();
        let len = f.n() * c * WORDS;
        words.try_reserve_exact(len).map_err(|_| crate::error::out_of_memory("predictions", 8 * len as u128))?;
        words.resize(len, 0);
        let mut linear: Option<Vec<f64>> = None;
        let mut at = 0;
        prediction::predict_sums(&f, model, &init, model.first(), &blocks, chunk_rows, ctl, |sums, lin| {
            write_all(sums, &mut words[at..at + sums.len() * WORDS]);
            at += sums.len() * WORDS;
            if let Some(l) = lin {
                linear.get_or_insert_with(Vec::new).extend_from_slice(l);
            }
        })?;
        Ok((words, linear))
    });
    let (words, linear) = finish(py, done)?;
    let q = words.len() / (WORDS * c);
    let words = Array2::from_shape_vec((q, c * WORDS), words).expect("q · C · WORDS words").into_pyarray(py);
    let linear = linear.map(|l| Array2::from_shape_vec((q, c), l).expect("q × C").into_pyarray(py));
    Ok((words, linear))
}

/// f from exact sums summed over ranks: words (k, outputs · EXACT_WORDS)
/// int64 and the points' unscaled linear parts (k, outputs) → (k, outputs):
/// each sum rounded once, scaled by 1/√width, then the head's bias and
/// linear term added.
#[pyfunction]
#[pyo3(signature = (model, words, linear=None))]
pub(super) fn outputs_from_words<'py>(
    py: Python<'py>,
    model: PyRef<'py, PyModel>,
    words: PyReadonlyArray2<'py, i64>,
    linear: Option<PyReadonlyArray2<'py, f64>>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let model = &model.inner;
    let c = model.outputs();
    let words = words.as_array();
    if words.ncols() != c * WORDS {
        return Err(PyValueError::new_err(format!("words: need {} columns, got {}", c * WORDS, words.ncols())));
    }
    let w = words.as_standard_layout();
    let lin = linear.as_ref().map(|l| l.as_array().iter().copied().collect::<Vec<_>>());
    let f = crate::sharded::outputs_from_words(model, w.as_slice().expect("standard layout"), lin.as_deref())
        .map_err(|e| to_py(py, e))?;
    let k = f.len() / c;
    Ok(Array2::from_shape_vec((k, c), f).expect("k × C").into_pyarray(py))
}

/// The mean loss of k points: outputs f (k, C), targets y (k, C) for the
/// squared loss or (k, 1) for the others.
#[pyfunction]
pub(super) fn mean_loss(loss: &str, f: PyReadonlyArray2<'_, f64>, y: PyReadonlyArray2<'_, f64>) -> PyResult<f64> {
    let loss = parse_mode(loss, "loss", &Loss::NAMES)?;
    let (f, y) = (f.as_array(), y.as_array());
    let c = f.ncols();
    if f.nrows() != y.nrows() || y.ncols() != loss.target_width(c) {
        return Err(PyValueError::new_err(format!("y: has shape {:?} for outputs of shape {:?}", y.dim(), f.dim())));
    }
    if f.nrows() == 0 {
        return Ok(0.0);
    }
    let (f, y) = (f.iter().copied().collect::<Vec<_>>(), y.iter().copied().collect::<Vec<_>>());
    Ok(loss.mean(&f, &y, c, None))
}

/// The sum of `values` computed exactly and rounded once (what every
/// output sum uses), for tests against math.fsum.
#[pyfunction]
pub(super) fn exact_sum(values: PyReadonlyArray1<'_, f64>) -> f64 {
    let mut acc = ExactSum::new();
    values.as_array().iter().for_each(|&v| acc.add(v));
    acc.value()
}

/// The trained W materialized: (width, d).
#[pyfunction]
pub(super) fn dense_weights<'py>(
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

/// The linear term's unscaled weights Σ_blocks β̃ᵀ X materialized: (outputs, d).
#[pyfunction]
pub(super) fn dense_linear<'py>(
    py: Python<'py>,
    dims: Vec<usize>,
    outputs: usize,
    blocks: PyBlocks<'py>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let held = HeldBlocks::hold(&blocks)?;
    let blocks = held.blocks().map_err(|e| to_py(py, e))?;
    let done = interruptible(py, |ctl| prediction::dense_linear(&dims, outputs, &blocks, ctl));
    Ok(finish(py, done)?.into_pyarray(py))
}

/// K[i, j] = <x_i, x'_j>: (n_a, n_b).
#[pyfunction]
pub(super) fn cross_gram<'py>(
    py: Python<'py>,
    a: PyPoints<'py>,
    b: PyPoints<'py>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (a, b) = (HeldPoints::hold(&a, "a")?, HeldPoints::hold(&b, "b")?);
    let (a, b) = (a.views(), b.views());
    let k = guarded(py, || gram::cross_gram(&a.factors()?, &b.factors()?))?;
    Ok(k.into_pyarray(py))
}

/// W(0) materialized: (width, d).
#[pyfunction]
pub(super) fn initial_weights(
    py: Python<'_>,
    init: PyInit,
    width: usize,
    dims: Vec<usize>,
) -> PyResult<Bound<'_, PyArray2<f64>>> {
    let init = initial(&init)?;
    let done = interruptible(py, |ctl| init.weight_matrix(width, &dims, ctl));
    Ok(finish(py, done)?.into_pyarray(py))
}

/// Output signs a: (width,).
#[pyfunction]
pub(super) fn output_signs(py: Python<'_>, seed: u64, width: usize) -> PyResult<Bound<'_, PyArray1<f64>>> {
    let a = guarded(py, || rng::try_output_signs(seed, width))?;
    Ok(Array1::from(a).into_pyarray(py))
}

/// Bytes init needs beyond its output (per-thread weights and intermediate).
#[pyfunction]
pub(super) fn init_scratch_bytes(
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
pub(super) fn kron_threshold(py: Python<'_>, gaussian_b: f64, rank: usize, p: usize) -> PyResult<f64> {
    guarded(py, || kron_init::threshold(gaussian_b, rank, p))
}

/// The expected fraction of neurons a rank-one unit-norm point fires at
/// threshold b under Kronecker init of rank R with p factors.
#[pyfunction]
pub(super) fn kron_firing_fraction(py: Python<'_>, b: f64, rank: usize, p: usize) -> PyResult<f64> {
    guarded(py, || kron_init::firing_fraction(b, rank, p))
}

/// Kronecker-factored init's factor vectors: per factor an array (width, R, d_k).
#[pyfunction]
pub(super) fn kron_init_factors<'py>(
    py: Python<'py>,
    seed: u64,
    width: usize,
    dims: Vec<usize>,
    rank: usize,
) -> PyResult<Vec<Bound<'py, PyArray3<f64>>>> {
    let arrays = guarded(py, || kron_init::factor_arrays(seed, width, &dims, rank))?;
    Ok(arrays.into_iter().map(|a| a.into_pyarray(py)).collect())
}

/// Bytes of each structure a trainer will allocate, and their peak
/// (`memory::trainer_memory`): a dict of "preacts", "coefficients",
/// "points", "targets", "init", "gram", "index", "dense_x", "dense_w" and
/// "peak". `index` and `gram` are parsed but ignored by the dense backend.
#[pyfunction]
#[pyo3(signature = (backend, init, dims, n, neurons, rank, table_rows, index, gram, shared_gram, new_block, trained_sizes, points_bytes, threads, outputs=1, linear=false, dtype="float64"))]
#[allow(clippy::too_many_arguments)]
pub(super) fn trainer_memory<'py>(
    py: Python<'py>,
    backend: &str,
    init: PyInit,
    dims: Vec<usize>,
    n: usize,
    neurons: usize,
    rank: usize,
    table_rows: usize,
    index: &str,
    gram: &str,
    shared_gram: bool,
    new_block: bool,
    trained_sizes: Vec<usize>,
    points_bytes: u128,
    threads: usize,
    outputs: usize,
    linear: bool,
    dtype: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let shape = TrainerShape {
        dtype: parse_mode(dtype, "dtype", &Dtype::NAMES)?,
        backend: parse_mode(backend, "backend", &BackendKind::NAMES)?,
        init: initial(&init)?,
        dims: &dims,
        n,
        neurons,
        rank,
        table_rows,
        index: parse_mode(index, "index", &IndexKind::NAMES)?,
        gram: parse_mode(gram, "gram", &GramMode::NAMES)?,
        shared_gram,
        new_block,
        trained_sizes: &trained_sizes,
        points_bytes,
        outputs,
        linear,
        threads,
    };
    let out = PyDict::new(py);
    for (name, bytes) in memory::trainer_memory(&shape).entries() {
        out.set_item(name, bytes)?;
    }
    Ok(out)
}

/// Bytes `preactivations` of q points needs (`memory::preacts_bytes`).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub(super) fn preacts_bytes(
    init: PyInit,
    dims: Vec<usize>,
    q: usize,
    width: usize,
    block_sizes: Vec<usize>,
    rank: usize,
    table_rows: usize,
    threads: usize,
) -> PyResult<u128> {
    Ok(memory::preacts_bytes(&initial(&init)?, &dims, q, width, &block_sizes, rank, table_rows, threads))
}

/// Bytes `dense_weights` needs (`memory::dense_weights_bytes`).
#[pyfunction]
pub(super) fn dense_weights_bytes(dims: Vec<usize>, width: usize, block_sizes: Vec<usize>) -> u128 {
    memory::dense_weights_bytes(&dims, width, &block_sizes)
}

/// Bytes of derived structure an index keeps for n points and width neurons.
#[pyfunction]
pub(super) fn index_memory_bytes(index: &str, n: usize, width: usize) -> PyResult<u128> {
    Ok(parse_mode(index, "index", &IndexKind::NAMES)?.memory_bytes(n, width))
}

/// Points per prediction chunk so that a chunk takes about `budget` bytes.
#[pyfunction]
pub(super) fn predict_chunk_rows(width: usize, block_sizes: Vec<usize>, budget: usize) -> usize {
    prediction::chunk_rows(width, &block_sizes, budget)
}

/// Bytes one prediction chunk of `rows` points needs.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub(super) fn predict_chunk_bytes(
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
pub(super) fn thread_count() -> usize {
    rayon::current_num_threads()
}

/// Float64 GFLOP/s of vector FMAs on all pool threads at once, over about
/// `seconds` (None without AVX2 and FMA).
#[pyfunction]
pub(super) fn fma_peak_gflops(py: Python<'_>, seconds: f64) -> PyResult<Option<f64>> {
    guarded(py, || Ok(crate::roofline::fma_peak_gflops(seconds)))
}

/// Read-plus-write GB/s of streaming passes over a buffer of `bytes` on
/// all pool threads at once, over about `seconds` (None if the buffer
/// cannot be allocated).
#[pyfunction]
pub(super) fn stream_gbytes(py: Python<'_>, bytes: usize, seconds: f64) -> PyResult<Option<f64>> {
    guarded(py, || Ok(crate::roofline::stream_gbytes(bytes, seconds)))
}

/// Standard normals per second the W(0) generator draws on all pool
/// threads at once, over about `seconds`.
#[pyfunction]
pub(super) fn normals_per_second(py: Python<'_>, seconds: f64) -> PyResult<f64> {
    guarded(py, || Ok(crate::roofline::normals_per_second(seconds)))
}
