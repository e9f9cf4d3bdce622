//! `TrainerCore`: one training run's state (the Kronecker backend's P,
//! Gram and index, or the dense backend's X and W) over a net's coefficient
//! block, its steps, sharded runs and checkpoint state; and the helpers that
//! turn step and index figures into Python values.

use super::arrays::{f32_array, f64_array, indices, initial, parse_mode, HeldPoints, PyInit, PyPoints};
use super::coefficients::{HeldBlocks, PyBlocks, PyCoefficients};
use super::errors::{internal_error, to_py};
use super::model::PyModel;
use super::runtime::{finish, guarded, interruptible, reporting};
use crate::dense::DenseState;
use crate::elem::{Dtype, Elem};
use crate::exact_sum::WORDS;
use crate::index::{IndexKind, IndexStats};
use crate::loss::Loss;
use crate::model::{check_factors, run_steps, Backend, BackendKind, Bounds, Rates, Ridge, StepStats};
use crate::predict as prediction;
use crate::sharded::{self, RunEnd};
use crate::step::{GramMode, KernelSpec, KronState, Setup};
use ndarray::{Array1, Array2, Ix2};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;

enum Engine {
    Kron(KronState<f64>),
    /// The Kronecker backend with P in float32 (`Trainer(dtype="float32")`).
    Kron32(KronState<f32>),
    Dense(DenseState),
}

/// `$body` with `$k` bound to the Kronecker state, whatever its P's type;
/// `$dense` for the dense backend.
macro_rules! with_kron {
    ($engine:expr, $k:ident => $body:expr, $dense:expr) => {
        match $engine {
            Engine::Kron($k) => $body,
            Engine::Kron32($k) => $body,
            Engine::Dense(_) => $dense,
        }
    };
}

impl Engine {
    fn backend(&mut self) -> &mut dyn Backend {
        match self {
            Engine::Kron(k) => k,
            Engine::Kron32(k) => k,
            Engine::Dense(d) => d,
        }
    }

    fn dtype(&self) -> &'static str {
        match self {
            Engine::Kron32(_) => f32::NAME,
            _ => f64::NAME,
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

/// Targets as the core keeps them: (n,) or (n, k) float64, row-major.
fn targets(y: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    let ndim: usize = y.getattr("ndim")?.extract()?;
    if ndim == 1 {
        return Ok(f64_array::<ndarray::Ix1>(y, "y")?.as_array().to_vec());
    }
    Ok(f64_array::<Ix2>(y, "y")?.as_array().iter().copied().collect())
}

pub(super) fn check_offsets(indices: usize, offsets: &[usize]) -> PyResult<()> {
    let ok = offsets.first() == Some(&0) && offsets.last() == Some(&indices) && offsets.windows(2).all(|w| w[0] < w[1]);
    if ok {
        Ok(())
    } else {
        Err(PyValueError::new_err("offsets: must start at 0, increase strictly and end at len(indices)"))
    }
}

/// A Kronecker state over P in `T`, with the checkpoint's bounds if any.
fn kron_state<T: Elem>(
    f: &crate::factors::Factors<'_>,
    setup: Setup,
    head: &crate::model::Model,
    p_t: Array2<T>,
    kernel: KernelSpec,
    index: IndexKind,
    bounds: Option<Bounds>,
) -> crate::Result<KronState<T>> {
    let mut st = KronState::with_points(f, setup, head, p_t, kernel, |vals, b| index.build(vals, b))?;
    if let Some(b) = bounds {
        st.set_bounds(b, head)?;
    }
    Ok(st)
}

/// A training run's state: the backend's (P, Gram, index; or X and W) and
/// the net's coefficient block and head it moves. Dropping it frees
/// everything but the block and the head.
#[pyclass(module = "kronnet._core", weakref)]
pub(super) struct TrainerCore {
    engine: Engine,
    coef: Py<PyCoefficients>,
    model: Py<PyModel>,
    /// Steps applied so far: the caller reads it after a run to know how
    /// many steps took effect even if an exception cut the call short.
    steps_taken: u64,
    /// The figures of the last `run`, kept for the same reason.
    last_run: Vec<StepStats>,
}

/// Rates as passed from Python: (lr, lr_a, lr_b, lr_c, lr_v).
type PyRates = (f64, f64, f64, f64, f64);

fn rates(r: PyRates) -> Rates {
    Rates { w: r.0, a: r.1, b: r.2, c: r.3, v: r.4 }
}

/// Schedule factors per step, if given.
fn factors(obj: Option<PyReadonlyArray1<'_, f64>>) -> Option<Vec<f64>> {
    obj.map(|f| f.as_array().to_vec())
}

#[pymethods]
impl TrainerCore {
    /// The training state of `points` with targets `y` ((n,) or (n, k)
    /// floats: k = C for the squared loss, 1 otherwise) for the net's head
    /// `model` (whose neurons are those this core holds: a whole net, or one
    /// rank's shard, driven by `run_sharded`) and its coefficient block
    /// `coef`. `state`, when given, continues a checkpoint: Pᵀ (neurons, n)
    /// with `bounds` (p, a, b, l) for the Kronecker backend, W (width, d)
    /// for the dense one, and `linear` (L̃ (n, C), or ṽ (C, d)) when the net
    /// has a linear term. Otherwise the state starts from the net's current
    /// weights: W(0) (from `init`) plus `blocks`, which include `coef`
    /// itself when it is trained.
    #[new]
    #[pyo3(signature = (backend, points, y, model, init, coef, blocks, gram, index, loss="squared", ridge=None, state=None, linear=None, bounds=None, progress=None, gram_from=None, dtype="float64"))]
    #[allow(clippy::too_many_arguments)]
    fn new<'py>(
        py: Python<'py>,
        backend: &str,
        points: PyPoints<'py>,
        y: &Bound<'py, PyAny>,
        model: Bound<'py, PyModel>,
        init: PyInit,
        coef: Bound<'py, PyCoefficients>,
        blocks: PyBlocks<'py>,
        gram: &str,
        index: &str,
        loss: &str,
        ridge: Option<(f64, f64, f64, f64)>,
        state: Option<&Bound<'py, PyAny>>,
        linear: Option<&Bound<'py, PyAny>>,
        bounds: Option<(f64, f64, f64, f64)>,
        progress: Option<Py<PyAny>>,
        gram_from: Option<PyRef<'py, TrainerCore>>,
        dtype: &str,
    ) -> PyResult<Self> {
        let backend = parse_mode(backend, "backend", &BackendKind::NAMES)?;
        let dtype = parse_mode(dtype, "dtype", &Dtype::NAMES)?;
        if dtype == Dtype::F32 && backend != BackendKind::Kron {
            return Err(PyValueError::new_err("dtype: float32 is for the Kronecker backend only"));
        }
        let loss = parse_mode(loss, "loss", &Loss::NAMES)?;
        let (ra, rb, rc, rv) = ridge.unwrap_or_default();
        let ridge = Ridge { a: ra, b: rb, c: rc, v: rv };
        let (first, count, width, outputs) = {
            let m = model.try_borrow()?;
            (m.inner.first(), m.inner.width(), m.inner.net_width(), m.inner.outputs())
        };
        if (first, count) != (0, width) && backend != BackendKind::Kron {
            return Err(PyValueError::new_err("model: only the Kronecker backend can be sharded"));
        }
        // Another trainer's Gram on the same points (the caller checks that
        // they are the same), shared without a copy.
        let kernel: KernelSpec = match &gram_from {
            None => parse_mode(gram, "gram", &GramMode::NAMES)?.into(),
            Some(other) => match with_kron!(&other.engine, k => k.shared_gram(), None) {
                Some(k) => KernelSpec::Shared(k),
                None => return Err(PyValueError::new_err("gram_from: that trainer has no precomputed Gram")),
            },
        };
        drop(gram_from);
        let init = initial(&init)?;
        let index = parse_mode(index, "index", &IndexKind::NAMES)?;
        let points = HeldPoints::hold(&points, "points")?;
        let y = targets(y)?;
        // A float32 trainer's P comes back as float32; everything else is float64.
        let (state, state32) = if dtype == Dtype::F32 {
            (None, state.map(|s| f32_array::<Ix2>(s, "state")).transpose()?)
        } else {
            (state.map(|s| f64_array::<Ix2>(s, "state")).transpose()?, None)
        };
        let linear = linear.map(|s| f64_array::<Ix2>(s, "linear")).transpose()?;
        let held = HeldBlocks::hold(&blocks)?;
        let blocks = held.blocks().map_err(|e| to_py(py, e))?;
        let dims = points.dims();
        {
            let c = coef.try_borrow()?;
            c.inner.check_shape(points.n(), count, outputs).map_err(|e| to_py(py, e))?;
        }
        let state_view = state.as_ref().map(|s| s.as_array());
        let state32_view = state32.as_ref().map(|s| s.as_array());
        let resumed = state_view.is_some() || state32_view.is_some();
        let linear_view = linear.as_ref().map(|s| s.as_array());
        // Progress counts the Kronecker init's points × neurons (the dense
        // backend and a resumed state do not count).
        let counted = !resumed && backend == BackendKind::Kron;
        let total = if counted { (points.n() * count) as u64 } else { 0 };
        let points = points.views();
        let head = model.try_borrow()?;
        let head = &head.inner;
        let done = reporting(py, progress.as_ref(), total, |ctl| -> crate::Result<Engine> {
            let f = points.factors()?;
            match backend {
                BackendKind::Kron => {
                    let lin = match (resumed, linear_view) {
                        (true, l) => l.map(|l| l.to_owned()),
                        (false, _) => crate::fold::linear_parts(&f, outputs, &blocks, ctl)?,
                    };
                    let setup = Setup { y, loss, ridge, linear: lin };
                    let bounds = bounds.map(|(p, a, b, l)| Bounds { p, a, b, l });
                    match dtype {
                        Dtype::F64 => {
                            let p_t = match state_view {
                                Some(s) => s.to_owned(),
                                None => prediction::preacts_t_part_as::<f64>(&f, &init, first, count, &blocks, ctl)?,
                            };
                            Ok(Engine::Kron(kron_state(&f, setup, head, p_t, kernel, index, bounds)?))
                        }
                        Dtype::F32 => {
                            let p_t = match state32_view {
                                Some(s) => s.to_owned(),
                                None => prediction::preacts_t_part_as::<f32>(&f, &init, first, count, &blocks, ctl)?,
                            };
                            Ok(Engine::Kron32(kron_state(&f, setup, head, p_t, kernel, index, bounds)?))
                        }
                    }
                }
                BackendKind::Dense => {
                    let w = match state_view {
                        Some(s) => s.to_owned(),
                        None => prediction::dense_weights(&init, width, &dims, &blocks, ctl)?,
                    };
                    let v = match (state_view, linear_view) {
                        (Some(_), l) => l.map(|l| l.to_owned()),
                        (None, _) if blocks.iter().any(|b| b.coef.linear()) => {
                            Some(prediction::dense_linear(&dims, outputs, &blocks, ctl)?)
                        }
                        (None, _) => None,
                    };
                    let x = f.materialize()?;
                    Ok(Engine::Dense(DenseState::new(x, Setup { y, loss, ridge, linear: v }, head, w)?))
                }
            }
        });
        let engine = finish(py, done)?;
        // `held` borrows every block, `coef`'s too: let go before writing it.
        drop(blocks);
        drop(held);
        {
            let mut c = coef.try_borrow_mut()?;
            let alpha = &mut c.inner;
            guarded(py, || {
                alpha.touch();
                Ok(())
            })?;
        }
        Ok(TrainerCore { engine, coef: coef.unbind(), model: model.unbind(), steps_taken: 0, last_run: Vec::new() })
    }

    /// One step at `rates` (lr, lr_a, lr_b, lr_c, lr_v); returns (batch
    /// loss before the update, |R|, Σ|A_i|).
    fn step(&mut self, py: Python<'_>, batch: &Bound<'_, PyAny>, rates_: PyRates) -> PyResult<(f64, usize, usize)> {
        let b = indices(batch, "batch")?;
        let mut coef = self.coef.bind(py).try_borrow_mut()?;
        let mut model = self.model.bind(py).try_borrow_mut()?;
        let (engine, alpha, head) = (&mut self.engine, &mut coef.inner, &mut model.inner);
        let r = rates(rates_);
        let s: StepStats = guarded(py, || engine.backend().step(alpha, head, &b, &r))?;
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
    #[pyo3(signature = (indices_, offsets, rates_, exchange, factors_=None))]
    fn run_sharded<'py>(
        &mut self,
        py: Python<'py>,
        indices_: &Bound<'py, PyAny>,
        offsets: &Bound<'py, PyAny>,
        rates_: PyRates,
        exchange: Py<PyAny>,
        factors_: Option<PyReadonlyArray1<'py, f64>>,
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
        let fac = factors(factors_);
        let r = rates(rates_);
        let mut coef = self.coef.bind(py).try_borrow_mut()?;
        let mut model = self.model.bind(py).try_borrow_mut()?;
        let (alpha, head) = (&mut coef.inner, &mut model.inner);
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
            with_kron!(
                &mut self.engine,
                state => Ok(sharded::run_sharded(state, alpha, head, &idx, &off, &r, fac.as_deref(), ctl, &mut send)),
                Err(crate::KronError::Invalid {
                    arg: "run_sharded".into(),
                    msg: "only the Kronecker backend can be sharded".into(),
                })
            )
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
    /// (stop − start, outputs · EXACT_WORDS) int64.
    fn output_words<'py>(&self, py: Python<'py>, start: usize, stop: usize) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let model = self.model.bind(py).try_borrow()?;
        let head = &model.inner;
        let words = with_kron!(
            &self.engine,
            state => guarded(py, || state.output_words(head, start, stop))?,
            return Err(PyValueError::new_err("output_words: only the Kronecker backend can be sharded"))
        );
        let cols = head.outputs() * WORDS;
        Ok(Array2::from_shape_vec((stop - start, cols), words).expect("rows · C · WORDS words").into_pyarray(py))
    }

    /// The outputs (k, C) of training points start .. start + k from their
    /// exact sums summed over the ranks (k, C · EXACT_WORDS).
    fn outputs_from_words<'py>(
        &self,
        py: Python<'py>,
        start: usize,
        words: PyReadonlyArray2<'py, i64>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let model = self.model.bind(py).try_borrow()?;
        let head = &model.inner;
        let w = words.as_array().as_standard_layout().into_owned();
        let w = w.as_slice().expect("standard layout");
        let f = with_kron!(
            &self.engine,
            state => guarded(py, || state.outputs_from_words(head, start, w))?,
            return Err(PyValueError::new_err("outputs_from_words: only the Kronecker backend can be sharded"))
        );
        let c = head.outputs();
        Ok(Array2::from_shape_vec((f.len() / c, c), f).expect("k × C").into_pyarray(py))
    }

    /// The mean loss over the training points from their outputs (n, C).
    fn loss_of(&self, py: Python<'_>, f: PyReadonlyArray2<'_, f64>) -> PyResult<f64> {
        let f = f.as_array().iter().copied().collect::<Vec<_>>();
        with_kron!(
            &self.engine,
            state => guarded(py, || state.loss_of(&f)),
            Err(PyValueError::new_err("loss_of: only the Kronecker backend can be sharded"))
        )
    }

    /// The running bounds (max |P|, |a|, |b|, |L̃|) of the Kronecker
    /// backend's overflow guard; zeros for the dense backend.
    #[getter]
    fn bounds(&self) -> (f64, f64, f64, f64) {
        with_kron!(&self.engine, k => {
            let b = k.bounds();
            (b.p, b.a, b.b, b.l)
        }, (0.0, 0.0, 0.0, 0.0))
    }

    /// Sets the running bounds (a sharded trainer sets every rank's to the
    /// maxima over the ranks).
    #[setter]
    fn set_bounds(&mut self, py: Python<'_>, bounds: (f64, f64, f64, f64)) -> PyResult<()> {
        let model = self.model.bind(py).try_borrow()?;
        let (p, a, b, l) = bounds;
        with_kron!(
            &mut self.engine,
            k => k.set_bounds(Bounds { p, a, b, l }, &model.inner).map_err(|e| to_py(py, e)),
            Err(PyValueError::new_err("bounds: only the Kronecker backend has them"))
        )
    }

    /// Many steps without returning to Python between them: the batches are
    /// `indices[offsets[t]:offsets[t + 1]]`, step t at `rates` times
    /// `factors[t]` when given (a schedule's values). Returns the per-step
    /// figures of the steps taken and the exception that stopped the run
    /// early (a divergence, or KeyboardInterrupt between two steps), if any.
    #[pyo3(signature = (indices_, offsets, rates_, factors_=None))]
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        indices_: &Bound<'py, PyAny>,
        offsets: &Bound<'py, PyAny>,
        rates_: PyRates,
        factors_: Option<PyReadonlyArray1<'py, f64>>,
    ) -> PyResult<RunResult<'py>> {
        let idx = indices(indices_, "indices")?;
        let off = indices(offsets, "offsets")?;
        check_offsets(idx.len(), &off)?;
        let fac = factors(factors_);
        let r = rates(rates_);
        let mut coef = self.coef.bind(py).try_borrow_mut()?;
        let mut model = self.model.bind(py).try_borrow_mut()?;
        let (engine, alpha, head) = (&mut self.engine, &mut coef.inner, &mut model.inner);
        let done = interruptible(py, |ctl| {
            check_factors(fac.as_deref(), off.len() - 1)?;
            Ok(run_steps(engine.backend(), alpha, head, &idx, &off, &r, fac.as_deref(), ctl))
        });
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
        let model = self.model.bind(py).try_borrow()?;
        let (engine, head) = (&mut self.engine, &model.inner);
        guarded(py, || Ok(engine.backend().full_loss(head)))
    }

    /// What a checkpoint needs to continue exactly: {"state": Pᵀ (neurons,
    /// n), "bounds": (p, a, b, l), "linear": L̃ (n, C) or None} for the
    /// Kronecker backend, {"state": W (width, d), "linear": ṽ (C, d) or
    /// None} for the dense one. Copies.
    fn export_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        match &self.engine {
            Engine::Kron(k) => {
                out.set_item("state", k.preacts_t().to_owned().into_pyarray(py))?;
                kron_extras(py, &out, k)?;
            }
            Engine::Kron32(k) => {
                out.set_item("state", k.preacts_t().to_owned().into_pyarray(py))?;
                kron_extras(py, &out, k)?;
            }
            Engine::Dense(d) => {
                out.set_item("state", d.weights().to_owned().into_pyarray(py))?;
                out.set_item("linear", d.linear().map(|l| l.to_owned().into_pyarray(py)))?;
            }
        }
        Ok(out)
    }

    /// P (n, width): P[i, r] = <w_r, x_i> (Kronecker backend; a float64
    /// copy whatever the trainer keeps P in).
    fn preacts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        with_kron!(
            &self.engine,
            k => Ok(k.preacts().mapv(|v| v.to_f64()).into_pyarray(py)),
            Err(PyValueError::new_err("preacts: only the Kronecker backend keeps P"))
        )
    }

    /// The type P is kept in: "float64" or "float32".
    #[getter]
    fn dtype(&self) -> &'static str {
        self.engine.dtype()
    }

    #[getter]
    fn index_name(&self) -> &'static str {
        with_kron!(&self.engine, k => k.index_name(), "none")
    }

    #[getter]
    fn index_memory_bytes(&self) -> usize {
        with_kron!(&self.engine, k => k.index_memory_bytes(), 0)
    }

    /// The index's work so far (see `kn.AsyncTree.stats`).
    #[getter]
    fn index_stats(&self) -> HashMap<&'static str, u64> {
        stats_dict(with_kron!(&self.engine, k => k.index_stats(), IndexStats::default()))
    }

    /// (seconds, nominal FLOPs 2·n·S·|R|) of the step's GEMM so far.
    #[getter]
    fn update_work(&self) -> (f64, f64) {
        with_kron!(&self.engine, k => k.update_work(), (0.0, 0.0))
    }

    /// Seconds spent finding fire sets (index syncs and queries) so far.
    #[getter]
    fn index_seconds(&self) -> f64 {
        with_kron!(&self.engine, k => k.index_seconds(), 0.0)
    }

    #[getter]
    fn gram_mode(&self) -> &'static str {
        with_kron!(&self.engine, k => k.gram_mode().name(), "none")
    }
}

/// The Kronecker backend's bounds and linear parts, for `export_state`.
fn kron_extras<T: Elem>(py: Python<'_>, out: &Bound<'_, PyDict>, k: &KronState<T>) -> PyResult<()> {
    let b = k.bounds();
    out.set_item("bounds", (b.p, b.a, b.b, b.l))?;
    out.set_item("linear", k.linear().map(|l| l.to_owned().into_pyarray(py)))
}
