//! The Kronecker backend's training state and SGD step (docs/design.md, "The algorithm").
//!
//! The trainer's state is P (n × m, P[i, r] = <w_r, x_i>), the Gram and the
//! index; the coefficients α (m × n, w_r = w_r(0) + Σ_i α[r, i] x_i,
//! `coef.rs`) belong to the model and are lent to each step. No
//! d-dimensional array exists. A step on batch B finds
//! the fired neurons through an `ActivationIndex`, then moves P by the rank-S
//! product K[:, B] · C, the only O(n · S · |R|) work, with no d in it.

use crate::coef::Coefficients;
use crate::elem::Elem;
use crate::error::{into_standard, invalid, Result};
use crate::exact_sum::{write_all, ExactSum, WORDS};
use crate::factors::{views, Factors, OwnedFactors};
use crate::gram::{gram, gram_rows_into};
use crate::index::{ActivationIndex, IndexStats};
use crate::limits::SAFE_BOUND;
use crate::loss::Loss;
use crate::model::{check_batch, plan_step, Bounds, Model, Plan, Rates, Ridge, StepStats};
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;
use std::sync::Arc;

/// How the step obtains K[:, B] (`Trainer(gram=...)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GramMode {
    /// K (n × n) computed once; a step gathers S columns.
    Precomputed,
    /// K[:, B] recomputed from the factors each step (n · S · Σ d_k).
    Columns,
}

impl GramMode {
    /// Every mode by the name `Trainer(gram=...)` accepts.
    pub const NAMES: [(&'static str, GramMode); 2] =
        [("precomputed", GramMode::Precomputed), ("columns", GramMode::Columns)];

    /// This mode's name in `NAMES`.
    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, mode)| *mode == self).map_or("", |(name, _)| name)
    }
}

/// Where a new state's Gram comes from.
pub enum KernelSpec {
    /// Computed by the state itself, in this mode.
    Compute(GramMode),
    /// Another state's Gram of the same points, shared without a copy
    /// (one-vs-rest nets on one data set). Only its shape is checked.
    Shared(Arc<Array2<f64>>),
}

impl From<GramMode> for KernelSpec {
    fn from(mode: GramMode) -> Self {
        KernelSpec::Compute(mode)
    }
}

/// Where a step gets K[B, :] from.
enum Kernel {
    /// The n × n Gram (possibly shared with other states on the same
    /// points), and max_j |K[i, j]| for each row i: a step's growth guard
    /// needs it at each batch point, and reading it back costs nothing where
    /// a pass over K[B, :] was a tenth of a step at n = 1000.
    Gram { k: Arc<Array2<f64>>, row_max: Vec<f64> },
    /// The trainer's own copy of the points (rows, or tables and indexes),
    /// K[B, :] computed per step. Only this mode keeps the factors: with the
    /// Gram precomputed no step reads them, and at large d_k they can be
    /// the largest array there is.
    Columns(OwnedFactors),
}

impl Kernel {
    fn gram(k: Arc<Array2<f64>>) -> Kernel {
        let row_max = k.axis_iter(Axis(0)).into_par_iter().map(|row| max_abs(row.iter())).collect();
        Kernel::Gram { k, row_max }
    }
}

pub struct KronState<T: Elem = f64> {
    /// Targets, n × `loss.target_width(C)`.
    y: Vec<f64>,
    loss: Loss,
    ridge: Ridge,
    /// C, the outputs of the head this state trains.
    outputs: usize,
    /// Pᵀ (m × n), neuron-major: a step rewrites whole rows P[:, r] for the
    /// fired neurons r ∈ R, so each is one contiguous n-vector updated by S
    /// axpys. Point-major P would touch every cache line of P for |R| ≳ m/8.
    p_t: Array2<T>,
    /// L̃ (n × C): each training point's unscaled linear part <Σ β̃ x, x_i>
    /// (the linear term is s_v times it), kept like P: a step moves it by
    /// K[:, B] times its coefficients. None while the net has no linear term.
    lin: Option<Array2<f64>>,
    kernel: Kernel,
    index: Box<dyn ActivationIndex<T>>,
    /// K[B, :] of the current step (S × n, row-major) and the scratch its
    /// computation needs, kept across steps: allocating S · n doubles per
    /// step cost a page fault per 4 KiB, a tenth of a step at large n.
    kb: Vec<f64>,
    kb_scratch: Vec<f64>,
    /// K[B, :] as the update reads it (`Elem::gram_rows`), for float32.
    kb_typed: Vec<T::Gram>,
    /// Bounds on |P|, |a|, |b| and |L̃| that keep every output finite
    /// (`model::Bounds`): the step updates in place with nothing to roll back.
    bounds: Bounds,
    /// Wall time spent in the index (syncs and queries), for measurements.
    index_seconds: f64,
    /// Wall time of the step's GEMM (the update of P[:, R]) and its nominal
    /// FLOP count 2 · n · S · |R|, for comparing its rate with a BLAS GEMM.
    update_seconds: f64,
    update_flops: f64,
    /// Steps whose update ran in column tiles (tests check the path ran).
    tiled_updates: u64,
}

/// A step between its two halves (`KronState::begin_step`). A sharded
/// trainer's ranks exchange it as words (`Pending::words`, in `sharded.rs`).
pub struct Pending {
    batch: Vec<usize>,
    rates: Rates,
    fire: Vec<Vec<u32>>,
    /// P at each batch point's fired neurons.
    values: Vec<Vec<f64>>,
    /// This state's exact part of each batch point's C output sums (S × C).
    sums: Vec<ExactSum>,
    /// Σ a² and Σ b² over this state's neurons before the step
    /// (`Model::square_sums`), when the step trains a or b (else zero):
    /// summed over the ranks, the whole net's, the same bits on any number
    /// of ranks (`head_caps`).
    head: [ExactSum; 2],
}

impl Pending {
    /// The batch, as passed to `begin_step`.
    pub fn batch(&self) -> &[usize] {
        &self.batch
    }

    /// This state's fire set of each batch point (sorted neuron numbers).
    pub fn fire_sets(&self) -> &[Vec<u32>] {
        &self.fire
    }

    /// This state's exact part of each batch point's output sums (S × C).
    pub fn sums(&self) -> &[ExactSum] {
        &self.sums
    }

    /// This state's Σ a² and Σ b² before the step (zero unless the step
    /// trains a or b).
    pub fn head_squares(&self) -> &[ExactSum; 2] {
        &self.head
    }
}

/// The whole net's figures for a step's batch when the net is sharded: the
/// element-wise sum over the ranks of each one's `Pending` (the exchange
/// itself is `sharded.rs`'s).
#[derive(Clone, Debug)]
pub struct Reduced {
    /// Each batch point's exact output sums over every neuron of the net (S × C).
    pub sums: Vec<ExactSum>,
    /// |R| and Σ|A_i| over every neuron of the net.
    pub fired_union: usize,
    pub fired_total: usize,
    /// The whole net's ‖a‖₂ and ‖b‖₂ (the square roots of the ranks'
    /// `Pending::head_squares` summed): at least max |a| and max |b|, and
    /// the same bits on every rank and in one process.
    pub head_norms: (f64, f64),
}

/// (‖a‖₂, ‖b‖₂) from their exact sums of squares, a hair up so that
/// rounding never takes them below max |a| or max |b|.
pub(crate) fn norms_of(squares: &[ExactSum; 2]) -> (f64, f64) {
    let up = |s: &ExactSum| s.value().sqrt() * (1.0 + 1e-12);
    (up(&squares[0]), up(&squares[1]))
}

fn max_abs<'a, T: Elem>(values: impl IntoIterator<Item = &'a T>) -> f64 {
    values.into_iter().fold(0.0, |m, v| m.max(v.to_f64().abs()))
}

/// What a training state is built from besides its points and P.
pub struct Setup {
    /// Targets, n × `loss.target_width(C)`.
    pub y: Vec<f64>,
    pub loss: Loss,
    pub ridge: Ridge,
    /// L̃ (n × C) when the net already has a linear term.
    pub linear: Option<Array2<f64>>,
}

impl Setup {
    /// The paper's model: squared loss on one output, no ridge, no linear term.
    pub fn squared(y: Vec<f64>) -> Setup {
        Setup { y, loss: Loss::Squared, ridge: Ridge::default(), linear: None }
    }
}

impl<T: Elem> KronState<T> {
    /// `p_t` are the current preactivations of the training points,
    /// transposed (m × n, any layout; taken over without a copy when
    /// row-major), e.g. from `predict::preacts_t`; `make_index` builds the
    /// activation index over P (an n × m view of the neuron-major storage)
    /// at the head's thresholds.
    pub fn new(
        factors: Vec<Array2<f64>>,
        setup: Setup,
        model: &Model,
        p_t: Array2<T>,
        mode: GramMode,
        make_index: impl FnOnce(ArrayView2<'_, T>, &[f64]) -> Box<dyn ActivationIndex<T>>,
    ) -> Result<KronState<T>> {
        Self::with_rank(factors, 1, setup, model, p_t, mode, make_index)
    }

    /// `new` for points of `rank` terms each (factor k: (n·rank) × d_k).
    pub fn with_rank(
        factors: Vec<Array2<f64>>,
        rank: usize,
        setup: Setup,
        model: &Model,
        p_t: Array2<T>,
        mode: GramMode,
        make_index: impl FnOnce(ArrayView2<'_, T>, &[f64]) -> Box<dyn ActivationIndex<T>>,
    ) -> Result<KronState<T>> {
        Self::with_points(&Factors::with_rank(views(&factors), rank)?, setup, model, p_t, mode.into(), make_index)
    }

    /// `new` for any points (rank r, indexed factors), copied as needed.
    pub fn with_points(
        f: &Factors<'_>,
        setup: Setup,
        model: &Model,
        p_t: Array2<T>,
        kernel: KernelSpec,
        make_index: impl FnOnce(ArrayView2<'_, T>, &[f64]) -> Box<dyn ActivationIndex<T>>,
    ) -> Result<KronState<T>> {
        let n = f.n();
        let Setup { y, loss, ridge, linear } = setup;
        if n == 0 {
            return invalid("data", "has no points");
        }
        let c = model.outputs();
        loss.check(c, &y, n)?;
        ridge.check()?;
        if p_t.dim() != (model.width(), n) {
            return invalid("preacts", format!("have shape {:?}, expected ({}, {n})", p_t.dim(), model.width()));
        }
        if p_t.iter().any(|v| !(v.to_f64().abs() < T::SAFE_BOUND)) {
            return invalid("preacts", format!("must be finite with |P| < {:e}", T::SAFE_BOUND));
        }
        if let Some(l) = &linear {
            if l.dim() != (n, c) || l.iter().any(|v| !(v.abs() < SAFE_BOUND)) {
                return invalid("linear", format!("must be finite of shape ({n}, {c}), got {:?}", l.dim()));
            }
        }
        let kernel = match kernel {
            KernelSpec::Compute(GramMode::Precomputed) => Kernel::gram(Arc::new(gram(f)?)),
            KernelSpec::Compute(GramMode::Columns) => Kernel::Columns(f.to_owned()),
            KernelSpec::Shared(k) if k.dim() == (n, n) => Kernel::gram(k),
            KernelSpec::Shared(k) => {
                return invalid("gram_from", format!("has a Gram of shape {:?}, these points need ({n}, {n})", k.dim()))
            }
        };
        let p_t = into_standard(p_t);
        let index = make_index(p_t.t(), model.b());
        let lin = linear.map(into_standard);
        let bounds = Bounds {
            p: max_abs(p_t.iter()),
            a: model.a_max(),
            b: model.b_max(),
            l: lin.as_ref().map_or(0.0, |l| max_abs(l.iter())),
        };
        Ok(KronState {
            kb: Vec::new(),
            kb_scratch: Vec::new(),
            kb_typed: Vec::new(),
            y,
            loss,
            ridge,
            outputs: c,
            p_t,
            lin,
            kernel,
            index,
            bounds,
            index_seconds: 0.0,
            update_seconds: 0.0,
            update_flops: 0.0,
            tiled_updates: 0,
        })
    }

    pub fn n(&self) -> usize {
        self.p_t.ncols()
    }

    /// P (n × m): P[i, r] = <w_r, x_i> (a transposed view of the storage).
    pub fn preacts(&self) -> ArrayView2<'_, T> {
        self.p_t.t()
    }

    /// Pᵀ (m × n), the storage itself (row-major).
    pub fn preacts_t(&self) -> ArrayView2<'_, T> {
        self.p_t.view()
    }

    /// L̃ (n × C), when the net has a linear term.
    pub fn linear(&self) -> Option<ArrayView2<'_, f64>> {
        self.lin.as_ref().map(|l| l.view())
    }

    /// The running bounds the overflow guard uses. Part of the state: a
    /// restored trainer that starts from the same bounds refuses exactly the
    /// steps the uninterrupted one would.
    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// Restores the running bounds (from a checkpoint, or the whole net's
    /// under MPI); never below the state's own maxima.
    pub fn set_bounds(&mut self, bounds: Bounds, model: &Model) -> Result<()> {
        let exact = Bounds {
            p: max_abs(self.p_t.iter()),
            a: model.a_max(),
            b: model.b_max(),
            l: self.lin.as_ref().map_or(0.0, |l| max_abs(l.iter())),
        };
        for (name, set, low) in [
            ("p_bound", bounds.p, exact.p),
            ("a_bound", bounds.a, exact.a),
            ("b_bound", bounds.b, exact.b),
            ("l_bound", bounds.l, exact.l),
        ] {
            let limit = if name == "p_bound" { T::SAFE_BOUND } else { SAFE_BOUND };
            if !(set >= low && set < limit) {
                return invalid(name, format!("must lie in [{low:e}, {limit:e}), got {set}"));
            }
        }
        self.bounds = bounds;
        Ok(())
    }

    /// The running bounds, with those on |a| and |b| lowered to the head's
    /// norms ‖a‖₂ ≥ max |a| and ‖b‖₂ ≥ max |b| when the step trains a or b.
    /// Without this the bounds compound: |P|'s growth scales with the bound
    /// on |a| and |a|'s with the bound on |P|, so two running bounds grow
    /// geometrically while the values stay put, and the guard refuses sound
    /// steps. The norms are the same bits in one process and on any number
    /// of ranks, so a sharded run refuses exactly the steps one process
    /// would and writes the same bounds; without trained a or b the bounds
    /// are the exact maxima already and stay as they were.
    fn head_caps(&self, rates: &Rates, (a_norm, b_norm): (f64, f64)) -> Bounds {
        if rates.a > 0.0 || rates.b > 0.0 {
            Bounds { a: self.bounds.a.min(a_norm), b: self.bounds.b.min(b_norm), ..self.bounds }
        } else {
            self.bounds
        }
    }

    pub fn index_name(&self) -> &'static str {
        self.index.name()
    }

    pub fn index_memory_bytes(&self) -> usize {
        self.index.memory_bytes()
    }

    pub fn index_stats(&self) -> IndexStats {
        self.index.stats()
    }

    pub fn index_seconds(&self) -> f64 {
        self.index_seconds
    }

    /// (seconds, nominal FLOPs) spent in the step's GEMM so far.
    pub fn update_work(&self) -> (f64, f64) {
        (self.update_seconds, self.update_flops)
    }

    /// The precomputed Gram, for another state on the same points.
    pub fn shared_gram(&self) -> Option<Arc<Array2<f64>>> {
        match &self.kernel {
            Kernel::Gram { k, .. } => Some(Arc::clone(k)),
            Kernel::Columns(_) => None,
        }
    }

    pub fn gram_mode(&self) -> GramMode {
        match self.kernel {
            Kernel::Gram { .. } => GramMode::Precomputed,
            Kernel::Columns(_) => GramMode::Columns,
        }
    }

    fn check_head(&self, coef: &Coefficients, model: &Model) -> Result<()> {
        if model.outputs() != self.outputs {
            return invalid("model", format!("has {} outputs, the trainer {}", model.outputs(), self.outputs));
        }
        coef.check_shape(self.n(), model.width(), self.outputs)
    }

    /// Fire sets {r : P[i, r] > b_r} of `rows` through the index.
    pub fn fire_sets(&mut self, model: &Model, rows: &[usize]) -> Result<Vec<Vec<u32>>> {
        check_batch(rows, self.n())?;
        Ok(self.index.fire_sets(self.p_t.t(), rows, model.b()))
    }

    /// The mean loss over all n training points, from P in O(n · m).
    pub fn full_loss(&self, model: &Model) -> f64 {
        let lin = self.lin.as_ref().map(|l| l.as_slice().expect("standard layout"));
        let f = model.outputs_neuron_major(self.p_t.view(), lin);
        self.loss.mean(&f, &self.y, self.outputs, None)
    }

    /// One SGD step on `batch` (indices may repeat), accumulating into
    /// `coef` and moving `model`'s head. Returns L_B before the update. On
    /// `Diverged` the state, `coef` and `model` are exactly as before.
    pub fn step(
        &mut self,
        coef: &mut Coefficients,
        model: &mut Model,
        batch: &[usize],
        rates: &Rates,
    ) -> Result<StepStats> {
        let pending = self.begin_step(coef, model, batch, rates)?;
        self.finish_step(coef, model, pending, None)
    }

    /// The first half of a step: checks the arguments, finds this state's
    /// fire sets of `batch` and returns them with this state's exact part of
    /// each point's output sums. A sharded trainer sums every rank's part
    /// over the ranks (`sharded::run_sharded`) and passes the totals to
    /// `finish_step`; one state alone passes None.
    pub fn begin_step(
        &mut self,
        coef: &Coefficients,
        model: &Model,
        batch: &[usize],
        rates: &Rates,
    ) -> Result<Pending> {
        check_batch(batch, self.n())?;
        rates.check()?;
        self.ridge.check_with(rates)?;
        self.check_head(coef, model)?;
        let started = std::time::Instant::now();
        let fire = self.index.fire_sets(self.p_t.t(), batch, model.b());
        self.index_seconds += started.elapsed().as_secs_f64();
        let c = self.outputs;
        let mut sums = vec![ExactSum::new(); batch.len() * c];
        let values: Vec<Vec<f64>> = fire
            .iter()
            .zip(batch)
            .zip(sums.chunks_mut(c))
            .map(|((a, &i), out)| {
                let values: Vec<f64> = a.iter().map(|&r| self.p_t[[r as usize, i]].to_f64()).collect();
                model.sum_fired(a, &values, out);
                values
            })
            .collect();
        let head =
            if rates.a > 0.0 || rates.b > 0.0 { model.square_sums() } else { [ExactSum::new(), ExactSum::new()] };
        Ok(Pending { batch: batch.to_vec(), rates: *rates, fire, values, sums, head })
    }

    /// The second half of a step. `reduced` is the whole net's figures for
    /// this batch when the net is sharded (every rank's `Pending` summed);
    /// None when this state holds the whole net (its own sums are the
    /// totals). Plans the step from the exact sums, checks the bounds, then
    /// moves the head, the linear term and this state's fired neurons.
    pub fn finish_step(
        &mut self,
        coef: &mut Coefficients,
        model: &mut Model,
        pending: Pending,
        reduced: Option<Reduced>,
    ) -> Result<StepStats> {
        let Pending { batch, rates, fire, values, sums, head } = pending;
        let c = self.outputs;
        // The whole net's sums, fired counts and head norms: this state's
        // own, or the ranks' summed ones.
        let (sums, counts, head_norms) = match reduced {
            None => (sums, None, norms_of(&head)),
            Some(Reduced { sums, fired_union, fired_total, head_norms }) => {
                if sums.len() != batch.len() * c {
                    return invalid("reduced", format!("has {} sums for a batch of {} × {c}", sums.len(), batch.len()));
                }
                (sums, Some((fired_union, fired_total)), head_norms)
            }
        };
        let tw = self.loss.target_width(c);
        let targets: Vec<f64> = batch.iter().flat_map(|&i| self.y[i * tw..(i + 1) * tw].iter().copied()).collect();
        let lin_b: Option<Vec<f64>> =
            self.lin.as_ref().map(|l| batch.iter().flat_map(|&i| l.row(i).to_vec()).collect());
        let plan = plan_step(model, self.loss, &fire, &values, &sums, &targets, lin_b.as_deref(), &rates)?;
        let (fired_union, fired_total) =
            counts.unwrap_or_else(|| (plan.neurons.len(), fire.iter().map(|a| a.len()).sum()));
        let stats = StepStats { loss: plan.loss, fired_union, fired_total };
        // K[B, :] (= K[:, B]ᵀ, K symmetric) as S contiguous rows of n: the
        // step's axpy operands. Every rank needs it for the growth guard,
        // even one whose neurons did not fire.
        let mut kb = std::mem::take(&mut self.kb);
        let filled = fill_kernel_rows(&self.kernel, &batch, &mut kb, &mut self.kb_scratch);
        // The buffer goes back into the state whatever happens next.
        let result = filled.and_then(|()| {
            let kb_t = ArrayView2::from_shape((batch.len(), self.n()), &kb[..batch.len() * self.n()])
                .expect("the buffer holds S rows of n");
            self.finish_with_rows(coef, model, batch, rates, plan, stats, head_norms, kb_t)
        });
        self.kb = kb;
        result
    }

    /// `finish_step` once K[B, :] (`kb_t`, S × n) is known.
    #[allow(clippy::too_many_arguments)]
    fn finish_with_rows(
        &mut self,
        coef: &mut Coefficients,
        model: &mut Model,
        batch: Vec<usize>,
        rates: Rates,
        plan: Plan,
        stats: StepStats,
        head_norms: (f64, f64),
        kb_t: ArrayView2<'_, f64>,
    ) -> Result<StepStats> {
        // max_i |K[i, B_s]| per batch point (K symmetric: its row's max),
        // in parallel over pieces of each row when the Gram is not kept (a
        // max is the same whatever the split).
        let kb_max: Vec<f64> = match &self.kernel {
            Kernel::Gram { row_max, .. } => batch.iter().map(|&i| row_max[i]).collect(),
            Kernel::Columns(_) => kb_t
                .axis_iter(Axis(0))
                .map(|row| {
                    let row = row.to_slice().expect("rows of K[B, :] are contiguous");
                    row.par_chunks(1 << 14).map(|c| max_abs(c.iter())).reduce(|| 0.0, f64::max)
                })
                .collect(),
        };
        let bounds =
            self.head_caps(&rates, head_norms).advance(model, &plan, &rates, &self.ridge, &kb_max, T::SAFE_BOUND)?;
        // The linear term's coefficients: φ = lr_v / (S s_v) with s_v already
        // decayed by its ridge.
        let lin_factor = if rates.v > 0.0 {
            rates.v / (batch.len() as f64 * model.v_scale() * (1.0 - rates.v * self.ridge.v))
        } else {
            0.0
        };
        // Nothing has changed yet. α may still refuse (non-finite), and then
        // β̃ is checked before anything else moves; after that every change
        // is committed.
        if rates.w > 0.0 && !plan.neurons.is_empty() {
            coef.apply(&batch, &plan.neurons, &plan.coef)?;
        }
        if rates.v > 0.0 {
            coef.apply_linear(&batch, &plan.g, lin_factor)?;
            self.move_linear(&plan, kb_t, lin_factor);
        }
        self.bounds = bounds;
        coef.note_step();
        model.note_step();
        model.apply(&plan, &rates, &self.ridge);
        // The rows whose preactivations or thresholds moved: the fired
        // neurons, or every neuron when a ridge moved every threshold.
        let every = rates.b > 0.0 && self.ridge.b > 0.0;
        let moved = rates.w > 0.0 || rates.b > 0.0;
        if !moved || (plan.neurons.is_empty() && !every) {
            return Ok(stats);
        }
        let (changed, coefs): (Vec<u32>, Array2<f64>) = if every {
            let m = model.width();
            let mut all = Array2::zeros((batch.len(), m));
            for (j, &r) in plan.neurons.iter().enumerate() {
                all.column_mut(r as usize).assign(&plan.coef.column(j));
            }
            ((0..m as u32).collect(), all)
        } else {
            (plan.neurons.clone(), plan.coef)
        };
        let started = std::time::Instant::now();
        let track = self.index.tracks_crossings();
        let masks = self.update_preacts(kb_t, &changed, &coefs, if track { Some(model.b()) } else { None });
        self.update_seconds += started.elapsed().as_secs_f64();
        self.update_flops += 2.0 * (self.n() * batch.len() * plan.neurons.len()) as f64;
        if track {
            self.index.record_masks(&changed, &masks, model.b());
        }
        self.index.mark_changed(&changed);
        Ok(stats)
    }

    /// The linear parts' step, L̃ −= Σ_s φ K[:, B_s] g_sᵀ (β̃ moved by the
    /// same φ g_s at the batch points).
    fn move_linear(&mut self, plan: &Plan, kb_t: ArrayView2<'_, f64>, factor: f64) {
        let (n, c) = (self.n(), self.outputs);
        let lin = self.lin.get_or_insert_with(|| Array2::zeros((n, c)));
        for (s, krow) in kb_t.axis_iter(Axis(0)).enumerate() {
            for k in 0..c {
                let step = factor * plan.g[s * c + k];
                if step != 0.0 {
                    lin.column_mut(k).zip_mut_with(&krow, |l, kv| *l -= step * kv);
                }
            }
        }
    }

    /// The exact sums Σ_r a_rk (P[i, r] − b_r)_+ over this state's neurons
    /// for the training points `start .. stop`, as words (C rows of `WORDS`
    /// per point): summed over every rank, `outputs_from_words` gives f there.
    pub fn output_words(&self, model: &Model, start: usize, stop: usize) -> Result<Vec<i64>> {
        if !(start <= stop && stop <= self.n()) {
            return invalid("points", format!("range {start}..{stop} is not within 0..{}", self.n()));
        }
        let sums = model.sums_neuron_major(self.p_t.slice(ndarray::s![.., start..stop]));
        let mut words = vec![0i64; sums.len() * WORDS];
        write_all(&sums, &mut words);
        Ok(words)
    }

    /// The outputs of the training points `start ..` from their summed exact
    /// sums (`words`: C rows of `WORDS` per point, every rank's added).
    pub fn outputs_from_words(&self, model: &Model, start: usize, words: &[i64]) -> Result<Vec<f64>> {
        let c = self.outputs;
        if words.len() % (WORDS * c) != 0 || start + words.len() / (WORDS * c) > self.n() {
            return invalid("words", format!("{} words do not fit points from {start}", words.len()));
        }
        let stop = start + words.len() / (WORDS * c);
        let lin = self.lin.as_ref().map(|l| l.slice(ndarray::s![start..stop, ..]).iter().copied().collect::<Vec<_>>());
        Ok(model.outputs_of(&crate::exact_sum::read_all(words), lin.as_deref()))
    }

    /// The mean loss over all n training points from their outputs (n × C).
    pub fn loss_of(&self, f: &[f64]) -> Result<f64> {
        if f.len() != self.n() * self.outputs {
            return invalid("outputs", format!("has {} values for {} points", f.len(), self.n()));
        }
        Ok(self.loss.mean(f, &self.y, self.outputs, None))
    }

    /// P[:, R_j] −= Σ_s C[s, j] K[:, B_s] in place: the step's update
    /// (n × S × |R|, with the zero coefficients — neuron not fired by point
    /// s — skipped), one contiguous row of Pᵀ per fired neuron. With
    /// `thresholds` it also returns each new row's mask of P[:, r] > b_r
    /// (⌈n/64⌉ words per neuron), computed while the values are in L1.
    ///
    fn update_preacts(
        &mut self,
        kb_t: ArrayView2<'_, f64>,
        neurons: &[u32],
        coef: &Array2<f64>,
        thresholds: Option<&[f64]>,
    ) -> Vec<u64> {
        let n = self.n();
        let s_len = kb_t.nrows();
        let kb = kb_t.as_slice().expect("standard layout");
        // Each fired row's nonzero terms (c, s), in s order.
        let mut terms: Vec<(f64, usize)> = Vec::with_capacity(neurons.len() * 2);
        let mut starts: Vec<usize> = Vec::with_capacity(neurons.len() + 1);
        for j in 0..neurons.len() {
            starts.push(terms.len());
            for s in 0..s_len {
                let c = coef[[s, j]];
                if c != 0.0 {
                    terms.push((c, s));
                }
            }
        }
        starts.push(terms.len());
        // Disjoint &mut rows of Pᵀ for the sorted neurons.
        let mut rows: Vec<&mut [T]> = Vec::with_capacity(neurons.len());
        let mut rest = self.p_t.as_slice_mut().expect("Pᵀ is standard layout");
        let mut next = 0usize;
        for &r in neurons {
            let skip = (r as usize - next) * n;
            let (row, tail) = std::mem::take(&mut rest)[skip..].split_at_mut(n);
            rows.push(row);
            rest = tail;
            next = r as usize + 1;
        }
        let words = if thresholds.is_some() { n.div_ceil(64).max(1) } else { 0 };
        let mut masks = vec![0u64; words * neurons.len()];
        let mask_slots: Vec<&mut [u64]> = if words == 0 {
            neurons.iter().map(|_| <&mut [u64]>::default()).collect()
        } else {
            masks.chunks_mut(words).collect()
        };
        // Each term with its row of K[B, :] (as the update reads it), once
        // for every row.
        let mut typed = std::mem::take(&mut self.kb_typed);
        let kb = T::gram_rows(kb, &mut typed);
        let with_rows: Vec<(f64, &[T::Gram])> = terms.iter().map(|&(c, s)| (c, &kb[s * n..(s + 1) * n])).collect();
        let (terms, starts) = (&with_rows, &starts);
        let one = |(j, (row, mask)): (usize, (&mut [T], &mut [u64]))| {
            let track = thresholds.map(|b| b[neurons[j] as usize]);
            update_row(row, &terms[starts[j]..starts[j + 1]], 0, track, mask)
        };
        let tile = column_tile(n, s_len, std::mem::size_of::<T::Gram>());
        if tile < n && terms.len() >= MIN_TILE_TERMS * neurons.len() {
            self.tiled_updates += 1;
            update_tiled(rows, mask_slots, tile, terms, starts, neurons, thresholds);
        } else if n * neurons.len() * std::mem::size_of::<T>() < MIN_PARALLEL_BYTES {
            rows.into_iter().zip(mask_slots).enumerate().for_each(one);
        } else {
            // Rows are the tasks, several per task when they are short
            // (small n): rayon splits the rest adaptively.
            let min_rows = (MIN_TASK_VALUES / n.max(1)).max(8);
            rows.into_par_iter().zip(mask_slots.into_par_iter()).with_min_len(min_rows).enumerate().for_each(one);
        }
        drop(with_rows);
        self.kb_typed = typed;
        masks
    }
}

impl<T: Elem> crate::model::Backend for KronState<T> {
    fn step(
        &mut self,
        coef: &mut Coefficients,
        model: &mut Model,
        batch: &[usize],
        rates: &Rates,
    ) -> Result<StepStats> {
        KronState::step(self, coef, model, batch, rates)
    }

    fn full_loss(&self, model: &Model) -> f64 {
        KronState::full_loss(self, model)
    }
}

/// Values of P a task of the step's update covers at least: below that,
/// waking a worker costs more than the work it takes over.
const MIN_TASK_VALUES: usize = 1 << 12;

/// Bytes of K[B, :] the update may read per tile of columns: about half
/// of a core's L2 on the machines kronnet is measured on (2 MiB), so the
/// tile stays cached while the fired rows stream through it.
const K_TILE_BYTES: usize = 1 << 20;

/// The update of the fired `rows` (with their `masks`) in column tiles of
/// `tile` values: a large batch's K[B, :] outgrows the cache, and a row
/// updated whole would read its terms' rows of K from memory again for
/// every fired neuron. Each tile keeps K[B, tile] cached while every fired
/// row's part in it is updated; each value still sees its terms in s order
/// (the same bits as the untiled update).
fn update_tiled<T: Elem>(
    rows: Vec<&mut [T]>,
    masks: Vec<&mut [u64]>,
    tile: usize,
    terms: &[(f64, &[T::Gram])],
    starts: &[usize],
    neurons: &[u32],
    thresholds: Option<&[f64]>,
) {
    let count = rows.first().map_or(0, |r| r.len().div_ceil(tile));
    let mut tiles: Vec<Vec<RowPart<'_, T>>> = (0..count).map(|_| Vec::with_capacity(rows.len())).collect();
    for (j, (row, mask)) in rows.into_iter().zip(masks).enumerate() {
        let mut mask_parts = mask.chunks_mut(tile / 64);
        for (t, part) in row.chunks_mut(tile).enumerate() {
            tiles[t].push((j, part, mask_parts.next().unwrap_or_default()));
        }
    }
    // Tasks of up to TILE_TASK_ROWS rows of one tile, tile by tile: a few
    // tiles alone would leave a thread idle.
    let mut tasks = Vec::new();
    for (t, parts) in tiles.into_iter().enumerate() {
        let mut parts = parts.into_iter().peekable();
        while parts.peek().is_some() {
            tasks.push((t, parts.by_ref().take(TILE_TASK_ROWS).collect::<Vec<_>>()));
        }
    }
    tasks.into_par_iter().with_max_len(1).for_each(|(t, parts)| {
        for (j, part, mask) in parts {
            let track = thresholds.map(|b| b[neurons[j] as usize]);
            update_row(part, &terms[starts[j]..starts[j + 1]], t * tile, track, mask);
        }
    });
}

/// A fired row's part in one column tile: the row's place among the fired
/// rows, its values in the tile and their mask words.
type RowPart<'a, T> = (usize, &'a mut [T], &'a mut [u64]);

/// Mean terms per fired row from which the update is tiled: with fewer,
/// re-reading a row's few rows of K costs less than cutting P's rows into
/// short pieces (n = 10^4, m = 1024, float64: S = 64, 4.6 terms a row, is
/// 10% slower tiled; S = 256, 19.5 terms a row, 20% faster).
const MIN_TILE_TERMS: usize = 8;

/// Fired rows a task of the tiled update covers: enough to amortise the
/// task, few enough that every thread gets work at any tile count.
const TILE_TASK_ROWS: usize = 32;

/// The width of the column tiles of a step's update: n (no tiling) while
/// the S rows of K[B, :] fit `K_TILE_BYTES`, else the widest multiple of
/// 256 values that does (at least 256; a multiple of 64, so each tile owns
/// whole words of the masks).
fn column_tile(n: usize, s: usize, elem: usize) -> usize {
    let values = K_TILE_BYTES / (s * elem).max(1);
    if values >= n {
        n
    } else {
        (values / 256 * 256).max(256)
    }
}

/// Bytes of P a step's update must cover before it is split across the
/// pool; below this one thread does it all. Waking a sleeping worker costs
/// tens of microseconds on the virtual machines kronnet is measured on,
/// more than a second core saves on a small update (n = 1000, m = 512,
/// 1.8 MB: 0.125 ms a step instead of 0.139). Bitwise the same either way:
/// each row is updated by one thread, in the same order.
const MIN_PARALLEL_BYTES: usize = 2 << 20;

/// One fired neuron's row P[:, r] −= Σ_s c_s K[B_s, :] over its nonzero
/// `terms` (c_s with K's row s), then the row's mask of values above τ_r
/// when `track` is set. `row` may be the part of the row from column
/// `offset` on (a multiple of 64, `mask` that part's words). Dispatches at
/// run time to an AVX-512 or AVX2 build of the same code where the CPU has
/// it: wider vectors, the same operations in the same order, the same bits
/// (no FMA contraction is ever applied to these separate multiply and
/// subtract).
fn update_row<T: Elem>(
    row: &mut [T],
    terms: &[(f64, &[T::Gram])],
    offset: usize,
    track: Option<f64>,
    mask: &mut [u64],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { update_row_avx512(row, terms, offset, track, mask) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { update_row_avx2(row, terms, offset, track, mask) };
        }
    }
    update_row_generic(row, terms, offset, track, mask, above_mask)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn update_row_avx512<T: Elem>(
    row: &mut [T],
    terms: &[(f64, &[T::Gram])],
    offset: usize,
    track: Option<f64>,
    mask: &mut [u64],
) {
    update_row_generic(row, terms, offset, track, mask, above_mask)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn update_row_avx2<T: Elem>(
    row: &mut [T],
    terms: &[(f64, &[T::Gram])],
    offset: usize,
    track: Option<f64>,
    mask: &mut [u64],
) {
    // SAFETY (for the closure): this function only runs where AVX2 exists.
    update_row_generic(row, terms, offset, track, mask, |chunk: &[T], tau| match T::as_f64s(chunk) {
        Some(values) => unsafe { above_mask_avx2(values, tau) },
        None => above_mask(chunk, tau),
    })
}

/// Bit k set iff chunk[k] > tau, four lanes per compare + move-mask.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn above_mask_avx2(chunk: &[f64], tau: f64) -> u64 {
    use std::arch::x86_64::{_mm256_cmp_pd, _mm256_loadu_pd, _mm256_movemask_pd, _mm256_set1_pd, _CMP_GT_OQ};
    debug_assert!(chunk.len() <= 64);
    let t = _mm256_set1_pd(tau);
    let quads = chunk.len() / 4;
    let mut bits = 0u64;
    for q in 0..quads {
        // SAFETY: 4q + 3 < chunk.len(); unaligned loads are allowed.
        let v = unsafe { _mm256_loadu_pd(chunk.as_ptr().add(4 * q)) };
        // Ordered ">" is false for NaN, exactly like f64's `>`.
        bits |= (_mm256_movemask_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(v, t)) as u64) << (4 * q);
    }
    for (k, v) in chunk.iter().enumerate().skip(4 * quads) {
        bits |= ((*v > tau) as u64) << k;
    }
    bits
}

/// Bit k set iff chunk[k] > tau (the stored value, widened exactly).
#[inline(always)]
fn above_mask<T: Elem>(chunk: &[T], tau: f64) -> u64 {
    chunk.iter().enumerate().fold(0u64, |bits, (k, v)| bits | ((v.to_f64() > tau) as u64) << k)
}

#[inline(always)]
fn update_row_generic<T: Elem>(
    row: &mut [T],
    terms: &[(f64, &[T::Gram])],
    offset: usize,
    track: Option<f64>,
    mask: &mut [u64],
    above: impl Fn(&[T], f64) -> u64,
) {
    // Blocks of 256 values (2 KiB of f64): every axpy and then the mask run
    // while the block is in L1, however long the row (n) is. Per value the
    // terms are subtracted in s order whatever the thread count: bitwise
    // reproducible; skipping c = 0 changes no bits (x − 0·k = x).
    const BLOCK: usize = 256;
    // A neuron is usually fired by one point of the batch: that row is one
    // streaming pass, dispatched once per row rather than once per block.
    if let [(c, k)] = terms {
        for (b, block) in row.chunks_mut(BLOCK).enumerate() {
            let start = b * BLOCK;
            T::update_one(block, *c, &k[offset + start..offset + start + block.len()]);
            record_mask(block, start, track, mask, &above);
        }
        return;
    }
    for (b, block) in row.chunks_mut(BLOCK).enumerate() {
        let start = b * BLOCK;
        T::update_block(block, terms, offset + start);
        record_mask(block, start, track, mask, &above);
    }
}

/// The mask words of `block` (the row's values from `start`, a multiple
/// of 64): bit k of a word set iff the value is above τ, when `track` is τ.
#[inline(always)]
fn record_mask<T: Elem>(
    block: &[T],
    start: usize,
    track: Option<f64>,
    mask: &mut [u64],
    above: &impl Fn(&[T], f64) -> u64,
) {
    if let Some(tau) = track {
        for (w, chunk) in block.chunks(64).enumerate() {
            mask[start / 64 + w] = above(chunk, tau);
        }
    }
}

/// K[B, :] (S × n, row-major) into `out`: rows of the precomputed Gram, or
/// computed from the factors (`scratch` for the per-factor products).
fn fill_kernel_rows(kernel: &Kernel, batch: &[usize], out: &mut Vec<f64>, scratch: &mut Vec<f64>) -> Result<()> {
    match kernel {
        Kernel::Gram { k, .. } => {
            let n = k.ncols();
            out.clear();
            out.reserve(batch.len() * n);
            for &b in batch {
                out.extend_from_slice(k.row(b).as_slice().expect("the Gram is row-major"));
            }
            Ok(())
        }
        Kernel::Columns(f) => gram_rows_into(&f.view(), batch, out, scratch),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::control::Control;
    use crate::dense::DenseState;
    use crate::error::KronError;
    use crate::index::LinearScan;
    use crate::init::{init_preacts_t, initial_weight_matrix};
    use crate::rng::{initial_weights, output_signs};
    use ndarray::Array1;

    fn scan(_: ArrayView2<'_, f64>, _: &[f64]) -> Box<dyn ActivationIndex> {
        Box::new(LinearScan::default())
    }

    /// n rows of dimension d, each of unit norm, drawn from `salt`.
    pub(crate) fn unit_rows(n: usize, d: usize, salt: u64) -> Array2<f64> {
        let mut z = vec![0.0; n * d];
        initial_weights(salt, 9, &mut z);
        let mut u = Array2::from_shape_vec((n, d), z).unwrap();
        for mut row in u.rows_mut() {
            let norm = row.dot(&row).sqrt();
            row.mapv_inplace(|v| v / norm);
        }
        u
    }

    fn materialize(f: &Factors<'_>) -> Array2<f64> {
        let d = f.d().unwrap();
        let mut x = Array2::zeros((f.n(), d));
        let mut row = Vec::new();
        for i in 0..f.n() {
            f.dense_row(i, &mut row);
            x.row_mut(i).assign(&ndarray::ArrayView1::from(&row));
        }
        x
    }

    pub(crate) fn batches(n: usize, steps: usize, s: usize) -> Vec<Vec<usize>> {
        // Deterministic pseudo-random batches with repeats.
        (0..steps).map(|t| (0..s).map(|j| (t * 7919 + j * j * 31 + (t * j) % 5) % n).collect()).collect()
    }

    fn run_both(dims: &[usize], n: usize, m: usize, mode: GramMode) {
        run_both_rank(dims, 1, n, m, mode)
    }

    fn run_both_rank(dims: &[usize], rank: usize, n: usize, m: usize, mode: GramMode) {
        let mats: Vec<_> = dims.iter().enumerate().map(|(k, &dk)| unit_rows(n * rank, dk, 40 + k as u64)).collect();
        run_both_points(&Factors::with_rank(views(&mats), rank).unwrap(), m, mode);
    }

    /// Kron and dense backends on the same points (rows or tables), step by step.
    fn run_both_points(f: &Factors<'_>, m: usize, mode: GramMode) {
        run_both_batched(f, m, mode, 150, 4);
    }

    /// `run_both_points` with `steps` batches of `s`; the number of steps
    /// whose update ran in column tiles.
    fn run_both_batched(f: &Factors<'_>, m: usize, mode: GramMode, steps: usize, s: usize) -> u64 {
        let n = f.n();
        let y: Vec<f64> = (0..n).map(|i| ((i * 37 % 11) as f64 / 5.0) - 1.0).collect();
        let b = (0.4 * (m as f64).ln()).sqrt();
        let mut model = Model::shared(output_signs(3, m), b).unwrap();
        let mut dense_model = model.clone();
        let seed = 3;
        let p0 = init_preacts_t(f, seed, m, &Control::new()).unwrap();
        let mut kron = KronState::with_points(f, Setup::squared(y.clone()), &model, p0, mode.into(), scan).unwrap();
        let mut alpha = Coefficients::zeros(n, m, 1).unwrap();
        let mut dense_alpha = Coefficients::zeros(n, m, 1).unwrap();
        let x = materialize(f);
        let w0 = initial_weight_matrix(seed, m, x.ncols(), &Control::new()).unwrap();
        let mut dense = DenseState::new(x.clone(), Setup::squared(y), &model, w0.clone()).unwrap();
        let rates = Rates::w_only(4.0);
        let mut moved = 0;
        for batch in batches(n, steps, s) {
            let a = kron.step(&mut alpha, &mut model, &batch, &rates).unwrap();
            let b = dense.step(&mut dense_alpha, &mut dense_model, &batch, &rates).unwrap();
            // Relative, except where the loss has cancelled down to the
            // rounding of f itself (|e| ~ eps |f|): then absolute in sqrt(L).
            let tol = 1e-10 * b.loss.abs() + 1e-14 * b.loss.abs().sqrt();
            assert!((a.loss - b.loss).abs() <= tol, "{} vs {}", a.loss, b.loss);
            assert_eq!(a.fired_union, b.fired_union);
            moved += a.fired_union;
        }
        assert!(moved > 0, "no neuron ever fired: the test would prove nothing");
        let w_kron = &w0 + &alpha.alpha_t().t().dot(&x);
        // The dense backend records the same coefficients as it goes.
        let w_dense_alpha = &w0 + &dense_alpha.alpha_t().t().dot(&x);
        let err = (&w_dense_alpha - &dense.weights()).iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert!(err <= 1e-10, "dense coefficients differ by {err}");
        let err = (&w_kron - &dense.weights()).iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert!(err <= 1e-10, "weights differ by {err}");
        let (lk, ld) = (kron.full_loss(&model), dense.full_loss(&dense_model));
        assert!((lk - ld).abs() <= 1e-10 * ld + 1e-14 * ld.sqrt(), "{lk} vs {ld}");
        kron.tiled_updates
    }

    /// Large batches, whose update runs in column tiles, in both Gram modes.
    #[test]
    fn kron_equals_dense_in_column_tiles() {
        let n = 2600;
        let mats = vec![unit_rows(n, 12, 50), unit_rows(n, 10, 51)];
        let f = Factors::new(views(&mats)).unwrap();
        for mode in [GramMode::Precomputed, GramMode::Columns] {
            let tiled = run_both_batched(&f, 100, mode, 12, 128);
            assert!(tiled > 0, "no step ran in tiles: the test would prove nothing");
        }
    }

    /// Pairwise points over entity tables, with repeated entities and
    /// repeated pairs (batches repeat points too), and a mix of an indexed
    /// factor with a plain one.
    #[test]
    fn kron_equals_dense_on_indexed_points() {
        let tables = [unit_rows(4, 3, 61), unit_rows(6, 5, 62), unit_rows(3, 2, 63)];
        let n = 14;
        let idx: Vec<Array1<u64>> =
            (0..3).map(|k| (0..n).map(|i| ((i * (k + 2) + i / 3) % tables[k].nrows()) as u64).collect()).collect();
        for mode in [GramMode::Precomputed, GramMode::Columns] {
            let pair =
                Factors::indexed(views(&tables[..2]), vec![Some(idx[0].view()), Some(idx[1].view())], 1).unwrap();
            run_both_points(&pair, 30, mode);
            let triple = Factors::indexed(views(&tables), idx.iter().map(|i| Some(i.view())).collect(), 1).unwrap();
            run_both_points(&triple, 25, mode);
            let rows = unit_rows(n, 5, 64);
            let mixed =
                Factors::indexed(vec![tables[0].view(), rows.view()], vec![Some(idx[0].view()), None], 1).unwrap();
            run_both_points(&mixed, 30, mode);
        }
    }

    #[test]
    fn gram_modes_are_named_by_their_table() {
        for (name, mode) in GramMode::NAMES {
            assert_eq!(mode.name(), name);
        }
    }

    #[test]
    fn kron_equals_dense_two_factors() {
        run_both(&[3, 5], 12, 40, GramMode::Precomputed);
        run_both(&[2, 17], 9, 33, GramMode::Columns);
    }

    #[test]
    fn kron_equals_dense_for_points_of_several_terms() {
        run_both_rank(&[3, 4], 3, 10, 40, GramMode::Precomputed);
        run_both_rank(&[2, 3, 2], 2, 9, 30, GramMode::Columns);
        run_both_rank(&[7], 4, 8, 25, GramMode::Precomputed);
    }

    #[test]
    fn kron_equals_dense_three_factors() {
        run_both(&[2, 3, 4], 10, 50, GramMode::Precomputed);
        run_both(&[5, 1, 3], 7, 21, GramMode::Columns);
    }

    #[test]
    fn bit_identical_across_thread_counts() {
        // n = 150: the update and the scan run on one thread whatever the
        // pool; n = 3000: both split across it (MIN_PARALLEL_BYTES).
        // n = 3000, S = 128: in column tiles (K_TILE_BYTES).
        for (n, s, m) in [(150, 8, 700), (3000, 8, 700), (3000, 128, 100)] {
            let tiled = bit_identical_at(n, s, m);
            assert_eq!(tiled > 0, s == 128, "n = {n}, S = {s}: {tiled} tiled steps");
        }
    }

    /// Runs at 1 and 2 threads give the same bits; the number of steps
    /// whose update ran in column tiles.
    fn bit_identical_at(n: usize, s: usize, m: usize) -> u64 {
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let mats = vec![unit_rows(n, 16, 1), unit_rows(n, 12, 2)];
                let f = Factors::new(views(&mats)).unwrap();
                let mut model = Model::shared(output_signs(1, m), (0.4 * (m as f64).ln()).sqrt()).unwrap();
                let p0 = init_preacts_t(&f, 1, m, &Control::new()).unwrap();
                let y = vec![0.5; n];
                let mut st =
                    KronState::new(mats.clone(), Setup::squared(y), &model, p0, GramMode::Precomputed, scan).unwrap();
                let mut alpha = Coefficients::zeros(n, m, 1).unwrap();
                let rates = Rates::w_only(20.0);
                let losses: Vec<u64> = batches(n, 40, s)
                    .iter()
                    .map(|b| st.step(&mut alpha, &mut model, b, &rates).unwrap().loss.to_bits())
                    .collect();
                (losses, st.preacts().to_owned(), alpha.alpha_t().to_owned(), st.tiled_updates)
            })
        };
        let (l1, p1, a1, tiled) = run(1);
        let (l2, p2, a2, _) = run(2);
        assert_eq!(l1, l2);
        assert!(p1.iter().zip(p2.iter()).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(a1.iter().zip(a2.iter()).all(|(a, b)| a.to_bits() == b.to_bits()));
        tiled
    }

    #[test]
    fn every_index_gives_the_same_trajectory() {
        // (n, S, steps, m): small, and a batch whose K[B, :] outgrows
        // K_TILE_BYTES so the update (and the masks `bits` records) runs
        // in column tiles.
        for (n, s, steps, m) in [(40, 6, 200, 300), (1500, 128, 20, 100)] {
            same_trajectory_every_index(n, s, steps, m);
        }
    }

    fn same_trajectory_every_index(n: usize, s: usize, steps: usize, m: usize) {
        use crate::index::{AsyncTree, FiredBits};
        let mats = vec![unit_rows(n, 6, 1), unit_rows(n, 5, 2)];
        let f = Factors::new(views(&mats)).unwrap();
        let b = (0.4 * (m as f64).ln()).sqrt();
        let y: Vec<f64> = (0..n).map(|i| (i % 5) as f64 / 2.0 - 1.0).collect();
        let run = |kind: &str| {
            let mut model = Model::shared(output_signs(4, m), b).unwrap();
            let p0 = init_preacts_t(&f, 4, m, &Control::new()).unwrap();
            let mut st = KronState::new(
                mats.clone(),
                Setup::squared(y.clone()),
                &model,
                p0,
                GramMode::Precomputed,
                |v, t| -> Box<dyn ActivationIndex> {
                    match kind {
                        "tree" => Box::new(AsyncTree::with_offsets(v, t)),
                        "bits" => Box::new(FiredBits::new(v, t)),
                        _ => Box::new(LinearScan::default()),
                    }
                },
            )
            .unwrap();
            let mut alpha = Coefficients::zeros(n, m, 1).unwrap();
            let rates = Rates::w_only(60.0);
            let stats: Vec<(u64, usize, usize)> = batches(n, steps, s)
                .iter()
                .map(|bt| st.step(&mut alpha, &mut model, bt, &rates).unwrap())
                .map(|s| (s.loss.to_bits(), s.fired_union, s.fired_total))
                .collect();
            let all: Vec<usize> = (0..n).collect();
            (stats, st.fire_sets(&model, &all).unwrap(), st.preacts().to_owned(), st.tiled_updates)
        };
        let (scan, scan_sets, p, tiled) = run("scan");
        assert_eq!(tiled > 0, n == 1500, "n = {n}: {tiled} tiled steps");
        assert!(scan.iter().map(|s| s.1).sum::<usize>() > 0);
        // Ground truth for the final sets, from P itself.
        let truth: Vec<Vec<u32>> = (0..n).map(|i| crate::index::scan_row(&p.row(i).to_vec(), &vec![b; m])).collect();
        assert_eq!(scan_sets, truth);
        for kind in ["tree", "bits"] {
            let (other, sets, _, _) = run(kind);
            assert_eq!(other, scan, "{kind} trajectory differs");
            assert_eq!(sets, truth, "{kind} final fire sets differ");
        }
    }

    #[test]
    fn divergence_leaves_state_untouched() {
        let n = 6;
        let mats = vec![unit_rows(n, 3, 1), unit_rows(n, 2, 2)];
        let f = Factors::new(views(&mats)).unwrap();
        let m = 30;
        let mut model = Model::shared(output_signs(1, m), 0.0).unwrap();
        let p0 = init_preacts_t(&f, 1, m, &Control::new()).unwrap();
        let mut st =
            KronState::new(mats.clone(), Setup::squared(vec![1.0; n]), &model, p0, GramMode::Precomputed, scan)
                .unwrap();
        let mut alpha = Coefficients::zeros(n, m, 1).unwrap();
        st.step(&mut alpha, &mut model, &[0, 1], &Rates::w_only(1.0)).unwrap();
        let mut failed = false;
        let huge = Rates::w_only(1e300);
        for _ in 0..50 {
            if let Err(e) = st.step(&mut alpha, &mut model, &[2, 3], &huge) {
                assert!(matches!(e, KronError::Diverged(_)));
                failed = true;
                break;
            }
        }
        assert!(failed, "a step with lr = 1e300 should diverge");
        let (p2, a2) = (st.preacts().to_owned(), alpha.alpha_t().to_owned());
        assert!(p2.iter().chain(a2.iter()).all(|v| v.is_finite()));
        // One more failing step changes nothing at all.
        assert!(st.step(&mut alpha, &mut model, &[2, 3], &huge).is_err());
        assert_eq!(st.preacts(), p2.view());
        assert_eq!(alpha.alpha_t(), a2.view());
    }

    #[test]
    fn bad_batches_are_refused() {
        let mats = vec![unit_rows(4, 2, 1), unit_rows(4, 2, 2)];
        let f = Factors::new(views(&mats)).unwrap();
        let mut model = Model::shared(output_signs(1, 5), 0.5).unwrap();
        let p0 = init_preacts_t(&f, 1, 5, &Control::new()).unwrap();
        let mut st =
            KronState::new(mats.clone(), Setup::squared(vec![0.0; 4]), &model, p0, GramMode::Columns, scan).unwrap();
        let mut alpha = Coefficients::zeros(4, 5, 1).unwrap();
        let one = Rates::w_only(1.0);
        assert!(st.step(&mut alpha, &mut model, &[], &one).is_err());
        assert!(st.step(&mut alpha, &mut model, &[4], &one).is_err());
        assert!(st.step(&mut alpha, &mut model, &[0], &Rates::w_only(f64::NAN)).is_err());
        assert!(st.step(&mut alpha, &mut model, &[0], &Rates::w_only(-1.0)).is_err());
        assert!(st.step(&mut alpha, &mut model, &[0], &Rates { a: -1.0, ..one }).is_err());
        let mut wrong = Coefficients::zeros(3, 5, 1).unwrap();
        assert!(st.step(&mut wrong, &mut model, &[0], &one).is_err());
        let mut two = Coefficients::zeros(4, 5, 2).unwrap();
        assert!(st.step(&mut two, &mut model, &[0], &one).is_err());
    }

    /// The full model on both backends, step by step: three outputs and each
    /// loss, every head part and the linear term trained, ridges on, and
    /// every index: the same losses, fired counts, head, weights and linear
    /// term (the two backends are the same algorithm).
    #[test]
    fn full_model_kron_equals_dense() {
        use crate::index::IndexKind;
        let n = 18;
        let mats = vec![unit_rows(n, 4, 81), unit_rows(n, 3, 82)];
        let f = Factors::new(views(&mats)).unwrap();
        let x = materialize(&f);
        let (m, seed) = (70, 5);
        for (loss, c) in [(Loss::Squared, 3), (Loss::Logistic, 1), (Loss::CrossEntropy, 4)] {
            let y: Vec<f64> = match loss {
                Loss::Squared => (0..n * c).map(|j| ((j * 7 % 11) as f64 / 5.0) - 1.0).collect(),
                Loss::Logistic => (0..n).map(|i| (i % 2) as f64).collect(),
                Loss::CrossEntropy => (0..n).map(|i| (i * 5 % c) as f64).collect(),
            };
            let a: Vec<f64> = output_signs(seed, m * c);
            let head = Model::new(a, c, vec![0.6; m], vec![0.0; c], 0.6, 1.0).unwrap();
            let ridge = Ridge { a: 0.05, b: 0.1, c: 0.2, v: 0.1 };
            let rates = Rates { w: 6.0, a: 0.3, b: 0.1, c: 0.3, v: 0.5 };
            let setup = || Setup { y: y.clone(), loss, ridge, linear: None };
            for index in [IndexKind::Scan, IndexKind::Tree, IndexKind::Bits] {
                let mut km = head.clone();
                let mut dm = head.clone();
                let p0 = init_preacts_t(&f, seed, m, &Control::new()).unwrap();
                let mut kron = KronState::with_points(&f, setup(), &km, p0, GramMode::Precomputed.into(), |v, t| {
                    index.build(v, t)
                })
                .unwrap();
                let w0 = initial_weight_matrix(seed, m, x.ncols(), &Control::new()).unwrap();
                let mut dense = DenseState::new(x.clone(), setup(), &dm, w0.clone()).unwrap();
                let mut ka = Coefficients::zeros(n, m, c).unwrap();
                let mut da = Coefficients::zeros(n, m, c).unwrap();
                let mut moved = 0;
                for batch in batches(n, 120, 4) {
                    let s = kron.step(&mut ka, &mut km, &batch, &rates).unwrap();
                    let t = dense.step(&mut da, &mut dm, &batch, &rates).unwrap();
                    let tol = 1e-9 * t.loss.abs() + 1e-13;
                    assert!((s.loss - t.loss).abs() <= tol, "{loss:?} {index:?}: {} vs {}", s.loss, t.loss);
                    assert_eq!((s.fired_union, s.fired_total), (t.fired_union, t.fired_total));
                    moved += s.fired_union;
                }
                assert!(moved > 0);
                let close = |u: &[f64], v: &[f64]| {
                    let scale = v.iter().fold(1e-300f64, |s, x| s.max(x.abs()));
                    u.iter().zip(v).all(|(p, q)| (p - q).abs() <= 1e-9 * scale)
                };
                assert!(close(km.a(), dm.a()) && close(km.b(), dm.b()) && close(km.c(), dm.c()));
                assert_eq!(km.v_scale().to_bits(), dm.v_scale().to_bits());
                let w = &w0 + &ka.alpha_t().t().dot(&x);
                assert!(close(w.as_slice().unwrap(), dense.weights().as_standard_layout().as_slice().unwrap()));
                let v = ka.beta().t().dot(&x);
                assert!(close(v.as_slice().unwrap(), dense.linear().unwrap().as_standard_layout().as_slice().unwrap()));
                let (lk, ld) = (kron.full_loss(&km), dense.full_loss(&dm));
                assert!((lk - ld).abs() <= 1e-9 * ld.abs() + 1e-13, "{lk} vs {ld}");
            }
        }
    }
}
