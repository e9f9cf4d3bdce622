//! The Kronecker backend's training state and SGD step (docs/design.md, "The algorithm").
//!
//! The trainer's state is P (n × m, P[i, r] = <w_r, x_i>), the Gram and the
//! index; the coefficients α (m × n, w_r = w_r(0) + Σ_i α[r, i] x_i,
//! `coef.rs`) belong to the model and are lent to each step. No
//! d-dimensional array exists. A step on batch B finds
//! the fired neurons through an `ActivationIndex`, then moves P by the rank-S
//! product K[:, B] · C, the only O(n · S · |R|) work, with no d in it.

use crate::coef::Coefficients;
use crate::error::{into_standard, invalid, KronError, Result};
use crate::exact_sum::{write_all, ExactSum, WORDS};
use crate::factors::{views, Factors, OwnedFactors};
use crate::gram::{gram, gram_rows};
use crate::index::{ActivationIndex, IndexStats};
use crate::model::{check_batch, check_lr, check_targets, half_mse, plan_update_from, Model, StepStats, SAFE_BOUND};
use ndarray::{Array2, ArrayView1, ArrayView2, Axis};
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
    /// The n × n Gram (possibly shared with other states on the same points).
    Gram(Arc<Array2<f64>>),
    /// The trainer's own copy of the points (rows, or tables and indexes),
    /// K[B, :] computed per step. Only this mode keeps the factors: with the
    /// Gram precomputed no step reads them, and at large d_k they can be
    /// the largest array there is.
    Columns(OwnedFactors),
}

pub struct KronState {
    y: Vec<f64>,
    model: Model,
    /// Pᵀ (m × n), neuron-major: a step rewrites whole rows P[:, r] for the
    /// fired neurons r ∈ R, so each is one contiguous n-vector updated by S
    /// axpys. Point-major P would touch every cache line of P for |R| ≳ m/8.
    p_t: Array2<f64>,
    kernel: Kernel,
    index: Box<dyn ActivationIndex>,
    /// An upper bound on max |P[i, r]|. While bound + the step's largest
    /// possible change stays below `SAFE_BOUND`, no entry can overflow, so
    /// the step updates P in place with no copy to roll back.
    p_bound: f64,
    /// Wall time spent in the index (syncs and queries), for measurements.
    index_seconds: f64,
    /// Wall time of the step's GEMM (the update of P[:, R]) and its nominal
    /// FLOP count 2 · n · S · |R|, for comparing its rate with a BLAS GEMM.
    update_seconds: f64,
    update_flops: f64,
}

/// A step between its two halves (`KronState::begin_step`). A sharded
/// trainer's ranks exchange it as words (`Pending::words`, in `sharded.rs`).
pub struct Pending {
    batch: Vec<usize>,
    lr: f64,
    fire: Vec<Vec<u32>>,
    /// This state's exact part of each batch point's output sum.
    sums: Vec<ExactSum>,
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

    /// This state's exact part of each batch point's output sum.
    pub fn sums(&self) -> &[ExactSum] {
        &self.sums
    }
}

/// The whole net's figures for a step's batch when the net is sharded: the
/// element-wise sum over the ranks of each one's `Pending` (the exchange
/// itself is `sharded.rs`'s).
#[derive(Clone, Debug)]
pub struct Reduced {
    /// Each batch point's exact output sum over every neuron of the net.
    pub sums: Vec<ExactSum>,
    /// |R| and Σ|A_i| over every neuron of the net.
    pub fired_union: usize,
    pub fired_total: usize,
}

fn max_abs<'a>(values: impl IntoIterator<Item = &'a f64>) -> f64 {
    values.into_iter().fold(0.0, |m, v| m.max(v.abs()))
}

impl KronState {
    /// `p_t` are the current preactivations of the training points,
    /// transposed (m × n, any layout; taken over without a copy when
    /// row-major), e.g. from `predict::preacts_t`; `make_index` builds the
    /// activation index over P (an n × m view of the neuron-major storage).
    pub fn new(
        factors: Vec<Array2<f64>>,
        y: Vec<f64>,
        model: Model,
        p_t: Array2<f64>,
        mode: GramMode,
        make_index: impl FnOnce(ArrayView2<'_, f64>) -> Box<dyn ActivationIndex>,
    ) -> Result<KronState> {
        Self::with_rank(factors, 1, y, model, p_t, mode, make_index)
    }

    /// `new` for points of `rank` terms each (factor k: (n·rank) × d_k).
    pub fn with_rank(
        factors: Vec<Array2<f64>>,
        rank: usize,
        y: Vec<f64>,
        model: Model,
        p_t: Array2<f64>,
        mode: GramMode,
        make_index: impl FnOnce(ArrayView2<'_, f64>) -> Box<dyn ActivationIndex>,
    ) -> Result<KronState> {
        Self::with_points(&Factors::with_rank(views(&factors), rank)?, y, model, p_t, mode.into(), make_index)
    }

    /// `new` for any points (rank r, indexed factors), copied as needed.
    pub fn with_points(
        f: &Factors<'_>,
        y: Vec<f64>,
        model: Model,
        p_t: Array2<f64>,
        kernel: KernelSpec,
        make_index: impl FnOnce(ArrayView2<'_, f64>) -> Box<dyn ActivationIndex>,
    ) -> Result<KronState> {
        let n = f.n();
        if n == 0 {
            return invalid("data", "has no points");
        }
        if y.len() != n {
            return invalid("y", format!("has {} targets for {n} points", y.len()));
        }
        check_targets(&y)?;
        if p_t.dim() != (model.width(), n) {
            return invalid("preacts", format!("have shape {:?}, expected ({}, {n})", p_t.dim(), model.width()));
        }
        if p_t.iter().any(|v| !(v.abs() < SAFE_BOUND)) {
            return invalid("preacts", format!("must be finite with |P| < {SAFE_BOUND:e}"));
        }
        let kernel = match kernel {
            KernelSpec::Compute(GramMode::Precomputed) => Kernel::Gram(Arc::new(gram(f)?)),
            KernelSpec::Compute(GramMode::Columns) => Kernel::Columns(f.to_owned()),
            KernelSpec::Shared(k) if k.dim() == (n, n) => Kernel::Gram(k),
            KernelSpec::Shared(k) => {
                return invalid("gram_from", format!("has a Gram of shape {:?}, these points need ({n}, {n})", k.dim()))
            }
        };
        let p_t = into_standard(p_t);
        let index = make_index(p_t.t());
        let p_bound = max_abs(p_t.iter());
        Ok(KronState {
            y,
            model,
            p_t,
            kernel,
            index,
            p_bound,
            index_seconds: 0.0,
            update_seconds: 0.0,
            update_flops: 0.0,
        })
    }

    pub fn n(&self) -> usize {
        self.y.len()
    }

    /// P (n × m): P[i, r] = <w_r, x_i> (a transposed view of the storage).
    pub fn preacts(&self) -> ArrayView2<'_, f64> {
        self.p_t.t()
    }

    /// Pᵀ (m × n), the storage itself (row-major).
    pub fn preacts_t(&self) -> ArrayView2<'_, f64> {
        self.p_t.view()
    }

    /// The running bound on max |P| the overflow guard uses. Part of the
    /// state: a restored trainer that starts from the same bound refuses
    /// exactly the steps the uninterrupted one would.
    pub fn p_bound(&self) -> f64 {
        self.p_bound
    }

    /// Restores the running bound (from a checkpoint); never below max |P|.
    pub fn set_p_bound(&mut self, bound: f64) -> Result<()> {
        let exact = max_abs(self.p_t.iter());
        if !(bound >= exact && bound < SAFE_BOUND) {
            return invalid("p_bound", format!("must lie in [max |P| = {exact:e}, {SAFE_BOUND:e}), got {bound}"));
        }
        self.p_bound = bound;
        Ok(())
    }

    pub fn model(&self) -> &Model {
        &self.model
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
            Kernel::Gram(k) => Some(Arc::clone(k)),
            Kernel::Columns(_) => None,
        }
    }

    pub fn gram_mode(&self) -> GramMode {
        match self.kernel {
            Kernel::Gram(_) => GramMode::Precomputed,
            Kernel::Columns(_) => GramMode::Columns,
        }
    }

    /// Fire sets {r : P[i, r] > b} of `rows` through the index.
    pub fn fire_sets(&mut self, rows: &[usize]) -> Result<Vec<Vec<u32>>> {
        check_batch(rows, self.n())?;
        Ok(self.index.fire_sets(self.p_t.t(), rows, self.model.b))
    }

    /// Full training loss (1/2n) Σ (f(x_i) − y_i)², from P in O(n · m).
    pub fn full_loss(&self) -> f64 {
        half_mse(&self.model.outputs_neuron_major(self.p_t.view()), &self.y)
    }

    /// One SGD step on `batch` (indices may repeat), accumulating into
    /// `coef` (n × m). Returns L_B before the update. On `Diverged` the
    /// state and `coef` are exactly as before the call.
    pub fn step(&mut self, coef: &mut Coefficients, batch: &[usize], lr: f64) -> Result<StepStats> {
        let pending = self.begin_step(coef, batch, lr)?;
        self.finish_step(coef, pending, None)
    }

    /// The first half of a step: checks the arguments, finds this state's
    /// fire sets of `batch` and returns them with this state's exact part of
    /// each point's output sum. A sharded trainer sums every rank's part
    /// over the ranks (`sharded::run_sharded`) and passes the totals to
    /// `finish_step`; one state alone passes None.
    pub fn begin_step(&mut self, coef: &Coefficients, batch: &[usize], lr: f64) -> Result<Pending> {
        check_batch(batch, self.n())?;
        check_lr(lr)?;
        coef.check_shape(self.n(), self.model.width())?;
        let started = std::time::Instant::now();
        let fire = self.index.fire_sets(self.p_t.t(), batch, self.model.b);
        self.index_seconds += started.elapsed().as_secs_f64();
        let sums = fire
            .iter()
            .zip(batch)
            .map(|(a, &i)| {
                let values: Vec<f64> = a.iter().map(|&r| self.p_t[[r as usize, i]]).collect();
                self.model.sum_fired(a, &values)
            })
            .collect();
        Ok(Pending { batch: batch.to_vec(), lr, fire, sums })
    }

    /// The second half of a step. `reduced` is the whole net's figures for
    /// this batch when the net is sharded (every rank's `Pending` summed);
    /// None when this state holds the whole net (its own sums are the
    /// totals). Computes the outputs and the loss from the exact sums, then
    /// moves this state's fired neurons.
    pub fn finish_step(
        &mut self,
        coef: &mut Coefficients,
        pending: Pending,
        reduced: Option<Reduced>,
    ) -> Result<StepStats> {
        let Pending { batch, lr, fire, sums } = pending;
        // The whole net's sums and fired counts: this state's own, or the
        // ranks' summed ones.
        let (sums, counts) = match reduced {
            None => (sums, None),
            Some(Reduced { sums, fired_union, fired_total }) => {
                if sums.len() != batch.len() {
                    return invalid("reduced", format!("has {} sums for a batch of {}", sums.len(), batch.len()));
                }
                (sums, Some((fired_union, fired_total)))
            }
        };
        let targets: Vec<f64> = batch.iter().map(|&i| self.y[i]).collect();
        let upd = plan_update_from(&self.model, &fire, &sums, &targets, lr)?;
        let (fired_union, fired_total) =
            counts.unwrap_or_else(|| (upd.neurons.len(), fire.iter().map(|a| a.len()).sum()));
        let stats = StepStats { loss: upd.loss, fired_union, fired_total };
        // K[B, :] (= K[:, B]ᵀ, K symmetric) as S contiguous rows of n: the
        // step's axpy operands. Every rank needs it for the growth guard,
        // even one whose neurons did not fire.
        let kb_t = match &self.kernel {
            Kernel::Gram(k) => k.select(Axis(0), &batch),
            Kernel::Columns(f) => gram_rows(&f.view(), &batch)?,
        };
        self.check_growth(&kb_t, &upd.c)?;
        coef.note_step();
        if upd.neurons.is_empty() {
            return Ok(stats);
        }
        coef.apply(&batch, &upd.neurons, &upd.coef)?;
        let started = std::time::Instant::now();
        let masks = self.update_preacts(&kb_t, &upd.neurons, &upd.coef, self.index.crossing_threshold());
        self.update_seconds += started.elapsed().as_secs_f64();
        self.update_flops += 2.0 * (self.n() * batch.len() * upd.neurons.len()) as f64;
        if !masks.is_empty() {
            self.index.record_masks(&upd.neurons, &masks);
        }
        self.index.mark_changed(&upd.neurons);
        Ok(stats)
    }

    /// The exact sums Σ_r a_r (P[i, r] − b)_+ over this state's neurons for
    /// the training points `start .. stop`, as words (one `WORDS` row per
    /// point): summed over every rank, `sharded::outputs_from_words` gives
    /// f there.
    pub fn output_words(&self, start: usize, stop: usize) -> Result<Vec<i64>> {
        if !(start <= stop && stop <= self.n()) {
            return invalid("points", format!("range {start}..{stop} is not within 0..{}", self.n()));
        }
        let sums = self.model.sums_neuron_major(self.p_t.slice(ndarray::s![.., start..stop]));
        let mut words = vec![0i64; (stop - start) * WORDS];
        write_all(&sums, &mut words);
        Ok(words)
    }

    /// (1/2n) Σ (f_i − y_i)² from the outputs of all n training points.
    pub fn loss_of(&self, f: &[f64]) -> Result<f64> {
        if f.len() != self.n() {
            return invalid("outputs", format!("has {} values for {} points", f.len(), self.n()));
        }
        Ok(half_mse(f, &self.y))
    }

    /// Refuses a step that could push |P| to `SAFE_BOUND` (so the in-place
    /// update can never produce inf/NaN), and advances the bound. The bound
    /// on the step's change, max |a| · Σ_s |c_s| · max_i |K[i, B_s]|, uses
    /// only figures every rank of a sharded trainer has (the batch's
    /// outputs, the Gram rows, the whole net's max |a|), so all ranks take
    /// the same decision and keep the same bound with no further message.
    fn check_growth(&mut self, kb_t: &Array2<f64>, c: &[f64]) -> Result<()> {
        let growth: f64 = kb_t.axis_iter(Axis(0)).zip(c).map(|(row, c)| c.abs() * max_abs(row.iter())).sum::<f64>()
            * self.model.a_max();
        // Relative slack covers the rounding of the sums above and of the update.
        let next = (self.p_bound + growth) * (1.0 + 1e-9);
        if next < SAFE_BOUND {
            self.p_bound = next;
            return Ok(());
        }
        Err(KronError::Diverged(format!(
            "the step could push preactivations to {next:.3e} (the loss would overflow); \
             the model is left at its last finite state (lower lr)"
        )))
    }

    /// P[:, R_j] −= Σ_s C[s, j] K[:, B_s] in place: the step's GEMM
    /// (n × S × |R|), one contiguous row of Pᵀ per fired neuron, with the
    /// zero coefficients (neuron not fired by point s) skipped. With
    /// `track = Some(τ)` it also returns each new row's mask of P > τ
    /// (⌈n/64⌉ words per neuron), computed while the row is in L1.
    fn update_preacts(
        &mut self,
        kb_t: &Array2<f64>,
        neurons: &[u32],
        coef: &Array2<f64>,
        track: Option<f64>,
    ) -> Vec<u64> {
        let n = self.n();
        // Disjoint &mut rows of Pᵀ for the sorted neurons, so the rows are
        // updated in parallel without unsafe code.
        let mut rows: Vec<&mut [f64]> = Vec::with_capacity(neurons.len());
        let mut rest = self.p_t.as_slice_mut().expect("Pᵀ is standard layout");
        let mut next = 0usize;
        for &r in neurons {
            let skip = (r as usize - next) * n;
            let (row, tail) = std::mem::take(&mut rest)[skip..].split_at_mut(n);
            rows.push(row);
            rest = tail;
            next = r as usize + 1;
        }
        let kb = kb_t.as_slice().expect("standard layout");
        let words = if track.is_some() { n.div_ceil(64).max(1) } else { 0 };
        let mut masks = vec![0u64; words * neurons.len()];
        let mask_slots: Vec<&mut [u64]> = if words == 0 {
            neurons.iter().map(|_| <&mut [u64]>::default()).collect()
        } else {
            masks.chunks_mut(words).collect()
        };
        rows.into_par_iter()
            .zip(mask_slots.into_par_iter())
            .with_min_len(8)
            .enumerate()
            .for_each(|(j, (row, mask))| update_row(row, kb, coef.column(j), track, mask));
        masks
    }
}

impl crate::model::Backend for KronState {
    fn step(&mut self, coef: &mut Coefficients, batch: &[usize], lr: f64) -> Result<StepStats> {
        KronState::step(self, coef, batch, lr)
    }

    fn full_loss(&self) -> f64 {
        KronState::full_loss(self)
    }
}

/// One fired neuron's row P[:, r] −= Σ_s c_s K[:, B_s] (only the nonzero
/// c_s), returning the (i, r) whose P[i, r] > τ flipped when `track` is set.
/// Dispatches at run time to an AVX2 build of the same code where the CPU
/// has it: wider vectors, same operations in the same order, same bits (no
/// FMA contraction is ever applied to these separate multiply and subtract).
fn update_row(row: &mut [f64], kb: &[f64], coefs: ArrayView1<'_, f64>, track: Option<f64>, mask: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { update_row_avx2(row, kb, coefs, track, mask) };
        }
    }
    update_row_generic(row, kb, coefs, track, mask, above_mask)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn update_row_avx2(
    row: &mut [f64],
    kb: &[f64],
    coefs: ArrayView1<'_, f64>,
    track: Option<f64>,
    mask: &mut [u64],
) {
    // SAFETY (for the closure): this function only runs where AVX2 exists.
    update_row_generic(row, kb, coefs, track, mask, |chunk, tau| unsafe { above_mask_avx2(chunk, tau) })
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

/// Bit k set iff chunk[k] > tau.
fn above_mask(chunk: &[f64], tau: f64) -> u64 {
    chunk.iter().enumerate().fold(0u64, |bits, (k, v)| bits | ((*v > tau) as u64) << k)
}

#[inline(always)]
fn update_row_generic(
    row: &mut [f64],
    kb: &[f64],
    coefs: ArrayView1<'_, f64>,
    track: Option<f64>,
    mask: &mut [u64],
    above: impl Fn(&[f64], f64) -> u64,
) {
    let n = row.len();
    let terms: Vec<(f64, &[f64])> =
        coefs.iter().zip(kb.chunks_exact(n)).filter(|(c, _)| **c != 0.0).map(|(c, k)| (*c, k)).collect();
    // Blocks of 256 values (2 KiB): every axpy and then the mask run while
    // the block is in L1, however long the row (n) is. Per value the
    // additions still run in s order whatever the thread count: bitwise
    // reproducible; skipping c = 0 changes no bits (x − 0·k = x).
    const BLOCK: usize = 256;
    for (b, block) in row.chunks_mut(BLOCK).enumerate() {
        let (start, len) = (b * BLOCK, block.len());
        for (c, krow) in &terms {
            for (o, k) in block.iter_mut().zip(&krow[start..start + len]) {
                *o -= c * k;
            }
        }
        if let Some(tau) = track {
            for (w, chunk) in block.chunks(64).enumerate() {
                mask[start / 64 + w] = above(chunk, tau);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::control::Control;
    use crate::dense::DenseState;
    use crate::index::LinearScan;
    use crate::init::{init_preacts_t, initial_weight_matrix};
    use crate::rng::{initial_weights, output_signs};
    use ndarray::Array1;

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
        let n = f.n();
        let y: Vec<f64> = (0..n).map(|i| ((i * 37 % 11) as f64 / 5.0) - 1.0).collect();
        let b = (0.4 * (m as f64).ln()).sqrt();
        let model = Model::new(output_signs(3, m), b).unwrap();
        let seed = 3;
        let p0 = init_preacts_t(f, seed, m, &Control::new()).unwrap();
        let mut kron =
            KronState::with_points(f, y.clone(), model.clone(), p0, mode.into(), |_| Box::new(LinearScan::default()))
                .unwrap();
        let mut alpha = Coefficients::zeros(n, m).unwrap();
        let mut dense_alpha = Coefficients::zeros(n, m).unwrap();
        let x = materialize(f);
        let w0 = initial_weight_matrix(seed, m, x.ncols(), &Control::new()).unwrap();
        let mut dense = DenseState::new(x.clone(), y, model, w0.clone()).unwrap();
        let lr = 4.0;
        let mut moved = 0;
        for batch in batches(n, 150, 4) {
            let a = kron.step(&mut alpha, &batch, lr).unwrap();
            let b = dense.step(&mut dense_alpha, &batch, lr).unwrap();
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
        let (lk, ld) = (kron.full_loss(), dense.full_loss());
        assert!((lk - ld).abs() <= 1e-10 * ld + 1e-14 * ld.sqrt(), "{lk} vs {ld}");
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
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let n = 150;
                let mats = vec![unit_rows(n, 16, 1), unit_rows(n, 12, 2)];
                let f = Factors::new(views(&mats)).unwrap();
                let m = 700;
                let model = Model::new(output_signs(1, m), (0.4 * (m as f64).ln()).sqrt()).unwrap();
                let p0 = init_preacts_t(&f, 1, m, &Control::new()).unwrap();
                let y = vec![0.5; n];
                let mut st = KronState::new(mats.clone(), y, model, p0, GramMode::Precomputed, |_| {
                    Box::new(LinearScan::default())
                })
                .unwrap();
                let mut alpha = Coefficients::zeros(n, m).unwrap();
                let losses: Vec<u64> =
                    batches(n, 40, 8).iter().map(|b| st.step(&mut alpha, b, 20.0).unwrap().loss.to_bits()).collect();
                (losses, st.preacts().to_owned(), alpha.alpha_t().to_owned())
            })
        };
        let (l1, p1, a1) = run(1);
        let (l2, p2, a2) = run(2);
        assert_eq!(l1, l2);
        assert!(p1.iter().zip(p2.iter()).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(a1.iter().zip(a2.iter()).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn every_index_gives_the_same_trajectory() {
        use crate::index::{AsyncTree, FiredBits};
        let n = 40;
        let mats = vec![unit_rows(n, 6, 1), unit_rows(n, 5, 2)];
        let f = Factors::new(views(&mats)).unwrap();
        let m = 300;
        let b = (0.4 * (m as f64).ln()).sqrt();
        let y: Vec<f64> = (0..n).map(|i| (i % 5) as f64 / 2.0 - 1.0).collect();
        let run = |kind: &str| {
            let model = Model::new(output_signs(4, m), b).unwrap();
            let p0 = init_preacts_t(&f, 4, m, &Control::new()).unwrap();
            let mut st = KronState::new(
                mats.clone(),
                y.clone(),
                model,
                p0,
                GramMode::Precomputed,
                |v| -> Box<dyn ActivationIndex> {
                    match kind {
                        "tree" => Box::new(AsyncTree::new(v)),
                        "bits" => Box::new(FiredBits::new(v, b)),
                        _ => Box::new(LinearScan::default()),
                    }
                },
            )
            .unwrap();
            let mut alpha = Coefficients::zeros(n, m).unwrap();
            let stats: Vec<(u64, usize, usize)> = batches(n, 200, 6)
                .iter()
                .map(|bt| st.step(&mut alpha, bt, 60.0).unwrap())
                .map(|s| (s.loss.to_bits(), s.fired_union, s.fired_total))
                .collect();
            let all: Vec<usize> = (0..n).collect();
            (stats, st.fire_sets(&all).unwrap(), st.preacts().to_owned())
        };
        let (scan, scan_sets, p) = run("scan");
        assert!(scan.iter().map(|s| s.1).sum::<usize>() > 0);
        // Ground truth for the final sets, from P itself.
        let truth: Vec<Vec<u32>> = (0..n).map(|i| crate::index::scan_row(&p.row(i).to_vec(), b)).collect();
        assert_eq!(scan_sets, truth);
        for kind in ["tree", "bits"] {
            let (other, sets, _) = run(kind);
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
        let model = Model::new(output_signs(1, m), 0.0).unwrap();
        let p0 = init_preacts_t(&f, 1, m, &Control::new()).unwrap();
        let mut st = KronState::new(mats.clone(), vec![1.0; n], model, p0, GramMode::Precomputed, |_| {
            Box::new(LinearScan::default())
        })
        .unwrap();
        let mut alpha = Coefficients::zeros(n, m).unwrap();
        st.step(&mut alpha, &[0, 1], 1.0).unwrap();
        let mut failed = false;
        for _ in 0..50 {
            if let Err(e) = st.step(&mut alpha, &[2, 3], 1e300) {
                assert!(matches!(e, KronError::Diverged(_)));
                failed = true;
                break;
            }
        }
        assert!(failed, "a step with lr = 1e300 should diverge");
        let (p2, a2) = (st.preacts().to_owned(), alpha.alpha_t().to_owned());
        assert!(p2.iter().chain(a2.iter()).all(|v| v.is_finite()));
        // One more failing step changes nothing at all.
        assert!(st.step(&mut alpha, &[2, 3], 1e300).is_err());
        assert_eq!(st.preacts(), p2.view());
        assert_eq!(alpha.alpha_t(), a2.view());
    }

    #[test]
    fn bad_batches_are_refused() {
        let mats = vec![unit_rows(4, 2, 1), unit_rows(4, 2, 2)];
        let f = Factors::new(views(&mats)).unwrap();
        let model = Model::new(output_signs(1, 5), 0.5).unwrap();
        let p0 = init_preacts_t(&f, 1, 5, &Control::new()).unwrap();
        let mut st = KronState::new(mats.clone(), vec![0.0; 4], model, p0, GramMode::Columns, |_| {
            Box::new(LinearScan::default())
        })
        .unwrap();
        let mut alpha = Coefficients::zeros(4, 5).unwrap();
        assert!(st.step(&mut alpha, &[], 1.0).is_err());
        assert!(st.step(&mut alpha, &[4], 1.0).is_err());
        assert!(st.step(&mut alpha, &[0], f64::NAN).is_err());
        assert!(st.step(&mut alpha, &[0], -1.0).is_err());
        let mut wrong = Coefficients::zeros(3, 5).unwrap();
        assert!(st.step(&mut wrong, &[0], 1.0).is_err());
    }
}
