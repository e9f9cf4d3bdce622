//! `TrainerCore`: one training run's state (the Kronecker backend's P,
//! Gram and index, or the dense backend's X and W) over a net's coefficient
//! block, its steps, sharded runs and checkpoint state; and the helpers that
//! turn step and index figures into Python values.

use super::arrays::{f64_array, indices, initial, parse_mode, HeldPoints, PyInit, PyPoints};
use super::coefficients::{HeldBlocks, PyBlocks, PyCoefficients};
use super::errors::{internal_error, to_py};
use super::runtime::{finish, guarded, interruptible, reporting};
use crate::dense::DenseState;
use crate::exact_sum::WORDS;
use crate::index::{IndexKind, IndexStats};
use crate::model::{run_steps, Backend, BackendKind, Model, StepStats};
use crate::predict as prediction;
use crate::sharded::{self, RunEnd};
use crate::step::{GramMode, KernelSpec, KronState};
use ndarray::{Array1, Array2, Ix1, Ix2};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;

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

pub(super) fn stats_dict(s: IndexStats) -> HashMap<&'static str, u64> {
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
pub(super) type StatsArrays<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);

pub(super) fn stats_arrays<'py>(py: Python<'py>, stats: &[StepStats]) -> StatsArrays<'py> {
    let loss = Array1::from_iter(stats.iter().map(|s| s.loss)).into_pyarray(py);
    let union = Array1::from_iter(stats.iter().map(|s| s.fired_union as i64)).into_pyarray(py);
    let total = Array1::from_iter(stats.iter().map(|s| s.fired_total as i64)).into_pyarray(py);
    (loss, union, total)
}

pub(super) fn check_offsets(indices: usize, offsets: &[usize]) -> PyResult<()> {
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
pub(super) struct TrainerCore {
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
        let backend = parse_mode(backend, "backend", &BackendKind::NAMES)?;
        let (first, count) = neurons.unwrap_or((0, a.len()?));
        if (first, count) != (0, a.len()?) && backend != BackendKind::Kron {
            return Err(PyValueError::new_err("neurons: only the Kronecker backend can be sharded"));
        }
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
        let dims = points.dims();
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
    /// (`sharded::run_sharded`), run in the core's thread pool like `run`.
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
                        Ok(_) => match arr.try_readonly() {
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
            Ok(sharded::run_sharded(state, alpha, &idx, &off, lr, ctl, &mut send))
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
        self.engine.kron().map_or("none", |k| k.gram_mode().name())
    }
}
