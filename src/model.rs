//! The two-layer model's fixed parts and the arithmetic shared by both
//! backends: f(x) = (1/√m) Σ_r a_r σ_b(<w_r, x>), σ_b(z) = max(z − b, 0), and
//! the SGD coefficients of one batch (docs/design.md, "The model", "The algorithm").

use crate::coef::Coefficients;
use crate::control::Control;
use crate::error::{invalid, KronError, Result};
use crate::exact_sum::ExactSum;
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// Largest |preactivation| a step may create. Beyond it the loss could
/// overflow (|f| ≤ √m · max|P|, loss ~ f²; with m < 2^32 and |P| ≤ 1e140,
/// f² < 1e300), so both backends refuse a step that could get there and the
/// model always has a finite loss.
pub const SAFE_BOUND: f64 = 1e140;

/// Largest |target|, |threshold| and ‖x‖ the model accepts. Larger values
/// leave SGD no room below `SAFE_BOUND` (the first steps would already be
/// refused as divergent) or overflow the Gram, so they are refused up front
/// with a message instead of failing every step.
pub const VALUE_BOUND: f64 = 1e100;

/// Checks targets: finite and |y| ≤ `VALUE_BOUND`.
pub fn check_targets(y: &[f64]) -> Result<()> {
    if let Some((i, v)) = y.iter().enumerate().find(|(_, v)| !(v.abs() <= VALUE_BOUND)) {
        return invalid("y", format!("target {i} is {v}; targets must be finite with |y| <= {VALUE_BOUND:e}"));
    }
    Ok(())
}

/// Output signs a (±1, never trained) and threshold b of some of a net's
/// neurons: all of them, or the contiguous range one rank of a sharded
/// trainer owns (`shard`). The outputs' 1/√m and the growth guard's max |a|
/// stay those of the whole net, so a shard's partial sums are exactly its
/// part of the net's.
#[derive(Clone, Debug)]
pub struct Model {
    pub a: Vec<f64>,
    pub b: f64,
    /// m of the whole net.
    net_width: usize,
    /// max |a_r| over the whole net.
    a_max: f64,
}

impl Model {
    pub fn new(a: Vec<f64>, b: f64) -> Result<Model> {
        if a.is_empty() {
            return invalid("width", "must be positive");
        }
        if !b.is_finite() {
            return invalid("threshold", format!("must be finite, got {b}"));
        }
        if a.iter().any(|v| !v.is_finite()) {
            return invalid("a", "output weights must be finite");
        }
        let a_max = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        Ok(Model { net_width: a.len(), a, b, a_max })
    }

    /// Output signs and threshold after checks on everything a caller can
    /// pass in: |b| ≤ `VALUE_BOUND`, so that σ_b(z) and the loss stay finite.
    pub fn checked(a: Vec<f64>, b: f64) -> Result<Model> {
        if !(b.abs() <= VALUE_BOUND) {
            return invalid("threshold", format!("must be finite with |threshold| <= {VALUE_BOUND:e}, got {b}"));
        }
        Model::new(a, b)
    }

    /// Neurons `first .. first + count` of this (whole) net: the part one
    /// rank of a sharded trainer holds.
    pub fn shard(self, first: usize, count: usize) -> Result<Model> {
        let m = self.a.len();
        if count == 0 || first.checked_add(count).is_none_or(|end| end > m) {
            return invalid("neurons", format!("range {first}..{} is not a nonempty part of 0..{m}", first + count));
        }
        Ok(Model { a: self.a[first..first + count].to_vec(), ..self })
    }

    /// Neurons this model holds (m, or a shard's count).
    pub fn width(&self) -> usize {
        self.a.len()
    }

    /// m of the whole net.
    pub fn net_width(&self) -> usize {
        self.net_width
    }

    /// max |a_r| over the whole net.
    pub fn a_max(&self) -> f64 {
        self.a_max
    }

    fn scale(&self) -> f64 {
        1.0 / (self.net_width as f64).sqrt()
    }

    /// Σ a_r (z_r − b) over one point's fire set, exactly: the same sum
    /// whatever the order of the terms or how they are split between ranks.
    pub fn sum_fired(&self, fired: &[u32], values: &[f64]) -> ExactSum {
        let mut acc = ExactSum::new();
        for (&r, &z) in fired.iter().zip(values) {
            acc.add(self.a[r as usize] * (z - self.b));
        }
        acc
    }

    /// f from the exact sum of a point's terms: rounded once, then scaled.
    /// Every path to an output (step, loss, predict; one rank or many)
    /// ends here, so they all give the same bits.
    pub fn output_of(&self, sum: &ExactSum) -> f64 {
        sum.value() * self.scale()
    }

    /// f for each exact sum.
    pub fn outputs_of(&self, sums: &[ExactSum]) -> Vec<f64> {
        sums.iter().map(|s| self.output_of(s)).collect()
    }

    /// The exact Σ_r a_r (z_r − b)_+ of one point's full preactivation row.
    fn sum_row(&self, row: &[f64]) -> ExactSum {
        let mut acc = ExactSum::new();
        for (a, z) in self.a.iter().zip(row) {
            if *z > self.b {
                acc.add(a * (z - self.b));
            }
        }
        acc
    }

    /// f from one point's full preactivation row (m values).
    pub fn output(&self, row: &[f64]) -> f64 {
        self.output_of(&self.sum_row(row))
    }

    /// f for every row of a preactivation matrix (points × m), in any
    /// memory layout.
    pub fn outputs(&self, preacts: ArrayView2<'_, f64>) -> Vec<f64> {
        if preacts.t().is_standard_layout() && !preacts.is_standard_layout() {
            return self.outputs_neuron_major(preacts.t());
        }
        preacts
            .axis_iter(Axis(0))
            .into_par_iter()
            .map(|row| match row.as_slice() {
                Some(s) => self.output(s),
                None => self.output(&row.to_vec()),
            })
            .collect()
    }

    /// acc[i] += Σ_r a_r (P[r, i] − b)_+ exactly over the rows of `pt`,
    /// which are this model's neurons first, first + 1, …: any passes over
    /// any neuron ranges give the same sums.
    pub fn accumulate_outputs(&self, first: usize, pt: ArrayView2<'_, f64>, acc: &mut [ExactSum]) {
        const POINTS: usize = 256;
        acc.par_chunks_mut(POINTS).enumerate().for_each(|(blk, acc)| {
            let start = blk * POINTS;
            for (r, row) in pt.axis_iter(Axis(0)).enumerate() {
                let a = self.a[first + r];
                let row = &row.as_slice().expect("rows of Pᵀ are contiguous")[start..start + acc.len()];
                for (o, &z) in acc.iter_mut().zip(row) {
                    if z > self.b {
                        o.add(a * (z - self.b));
                    }
                }
            }
        });
    }

    /// The exact sums of all this model's neurons for each column of Pᵀ
    /// (m × points, rows contiguous).
    pub fn sums_neuron_major(&self, pt: ArrayView2<'_, f64>) -> Vec<ExactSum> {
        let mut acc = vec![ExactSum::new(); pt.ncols()];
        self.accumulate_outputs(0, pt, &mut acc);
        acc
    }

    /// `outputs` from Pᵀ (m × points, rows contiguous), a few thousand
    /// points at a time so that the exact sums (`WORDS` words each) stay
    /// small next to Pᵀ.
    pub fn outputs_neuron_major(&self, pt: ArrayView2<'_, f64>) -> Vec<f64> {
        const POINTS: usize = 4096;
        let q = pt.ncols();
        let mut out = Vec::with_capacity(q);
        for start in (0..q).step_by(POINTS) {
            let part = pt.slice(ndarray::s![.., start..(start + POINTS).min(q)]);
            out.extend(self.outputs_of(&self.sums_neuron_major(part)));
        }
        out
    }
}

/// (1 / 2k) Σ (f_i − y_i)², summed in order so it is thread-count independent.
pub fn half_mse(f: &[f64], y: &[f64]) -> f64 {
    let sum: f64 = f.iter().zip(y).map(|(f, y)| (f - y) * (f - y)).sum();
    sum / (2.0 * f.len() as f64)
}

/// What one SGD step changes: neurons R (sorted union of the fire sets) and
/// coefficients C (S × |R|), C[s, j] = (lr/S)(1/√m) e_s a_{R_j} 1[R_j ∈ A_s].
/// Neuron R_j moves by −Σ_s C[s, j] x_{B_s}.
pub struct Update {
    pub loss: f64,
    pub neurons: Vec<u32>,
    pub coef: Array2<f64>,
    /// (lr/S)(1/√m) e_s per batch point: |C[s, j]| ≤ |c_s| · max |a|.
    pub c: Vec<f64>,
}

/// Builds the update of a batch from each batch point's fire set, the
/// preactivations at its fired neurons, and its target. Refuses (state
/// untouched) when the loss is not finite.
pub fn plan_update(
    model: &Model,
    fire: &[Vec<u32>],
    fired_values: &[Vec<f64>],
    targets: &[f64],
    lr: f64,
) -> Result<Update> {
    let sums: Vec<ExactSum> = fire.iter().zip(fired_values).map(|(a, v)| model.sum_fired(a, v)).collect();
    plan_update_from(model, fire, &sums, targets, lr)
}

/// `plan_update` from each batch point's exact sum over the whole net
/// (`sums`: this model's terms plus, when sharded, every other rank's) and
/// this model's fire sets.
pub fn plan_update_from(
    model: &Model,
    fire: &[Vec<u32>],
    sums: &[ExactSum],
    targets: &[f64],
    lr: f64,
) -> Result<Update> {
    let s_len = fire.len();
    let f = model.outputs_of(sums);
    let loss = half_mse(&f, targets);
    if !loss.is_finite() {
        return Err(KronError::Diverged(format!(
            "batch loss is {loss}; the model is left at its last finite state (lower lr)"
        )));
    }
    let mut neurons: Vec<u32> = fire.iter().flatten().copied().collect();
    neurons.sort_unstable();
    neurons.dedup();
    let mut coef = Array2::zeros((s_len, neurons.len()));
    let step = lr / s_len as f64 * model.scale();
    let c: Vec<f64> = f.iter().zip(targets).map(|(f, y)| step * (f - y)).collect();
    for s in 0..s_len {
        // Both lists are sorted: walk them together instead of searching.
        let mut j = 0;
        for &r in &fire[s] {
            while neurons[j] != r {
                j += 1;
            }
            coef[[s, j]] = c[s] * model.a[r as usize];
        }
    }
    Ok(Update { loss, neurons, coef, c })
}

/// Which backend a trainer runs (`Trainer(backend=...)`): the Kronecker
/// step (`step.rs`) or the dense reference (`dense.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Kron,
    Dense,
}

impl BackendKind {
    /// Every backend by the name `Trainer(backend=...)` accepts.
    pub const NAMES: [(&'static str, BackendKind); 2] = [("kron", BackendKind::Kron), ("dense", BackendKind::Dense)];
}

/// What both backends offer a training loop. The coefficient block the
/// steps accumulate into belongs to the model and is lent for each call.
pub trait Backend: Send {
    /// One SGD step on `batch`; L_B before the update.
    fn step(&mut self, coef: &mut Coefficients, batch: &[usize], lr: f64) -> Result<StepStats>;
    /// (1/2n) Σ (f(x_i) − y_i)² over the training set.
    fn full_loss(&self) -> f64;
}

/// Runs the batches `indices[offsets[t]..offsets[t + 1]]` in order, checking
/// `ctl` before each step. Returns the figures of the steps taken and the
/// error that stopped the run early, if any (`Interrupted` on a stop
/// request): the state is always at the boundary after the last step taken.
pub fn run_steps(
    backend: &mut dyn Backend,
    coef: &mut Coefficients,
    indices: &[usize],
    offsets: &[usize],
    lr: f64,
    ctl: &Control,
) -> (Vec<StepStats>, Option<KronError>) {
    let mut out = Vec::with_capacity(offsets.len().saturating_sub(1));
    for w in offsets.windows(2) {
        if let Err(e) = ctl.check() {
            return (out, Some(e));
        }
        match backend.step(coef, &indices[w[0]..w[1]], lr) {
            Ok(s) => out.push(s),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// Per-step figures returned to the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    /// Batch loss L_B at the weights before the update.
    pub loss: f64,
    /// |R|: distinct neurons fired by the batch (the neurons that moved).
    pub fired_union: usize,
    /// Σ_i |A_i| over the batch.
    pub fired_total: usize,
}

/// Checks batch indices against n; the message names `batch`.
pub fn check_batch(batch: &[usize], n: usize) -> Result<()> {
    if batch.is_empty() {
        return invalid("batch", "is empty");
    }
    if let Some(&bad) = batch.iter().find(|&&i| i >= n) {
        return invalid("batch", format!("index {bad} is out of range for {n} training points"));
    }
    Ok(())
}

/// Checks lr.
pub fn check_lr(lr: f64) -> Result<()> {
    if !(lr.is_finite() && lr > 0.0) {
        return invalid("lr", format!("must be a positive finite number, got {lr}"));
    }
    Ok(())
}
