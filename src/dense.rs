//! The dense backend: the same model trained the textbook way, with X (n × d)
//! and W (m × d) materialized and O(S · m · d) work per step. It is the
//! in-package reference the Kronecker backend must reproduce, and a baseline.

use crate::coef::Coefficients;
use crate::error::{checked_len, into_standard, invalid, try_zeros_of, KronError, Result};
use crate::exact_sum::ExactSum;
use crate::index::scan_row;
use crate::limits::{OUTPUT_BOUND, SAFE_BOUND};
use crate::loss::Loss;
use crate::model::{check_batch, plan_step, Model, Rates, Ridge, StepStats};
use crate::step::Setup;
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Neurons per GEMM task (fixed so results do not depend on thread count).
const NEURON_BLOCK: usize = 64;

/// The full loss takes the points a block at a time, so its transient is
/// one (neurons × block) matrix of about this size rather than the whole
/// (n × neurons) preactivations and their transposed copy. Those two were
/// 16 MiB at n = 512, m = 2048, and glibc keeps a freed buffer that large
/// resident in the malloc arena of whichever worker thread held it (its
/// mmap threshold rises after the first such free), so the measured peak
/// varied by 13 MiB from run to run at 8 threads.
const LOSS_BLOCK_BYTES: usize = 1 << 20;

/// Points per block of the full loss for `neurons` neurons: about
/// `LOSS_BLOCK_BYTES` of preactivations, but never fewer than 64 points,
/// below which the products are too thin to run at speed.
pub fn loss_block_points(neurons: usize) -> usize {
    (LOSS_BLOCK_BYTES / (8 * neurons.max(1))).max(64)
}

pub struct DenseState {
    x: Array2<f64>,
    /// max_i ‖x_i‖₂: |<w, x_i>| ≤ ‖w‖₂ · x_norm bounds every preactivation.
    x_norm: f64,
    /// Targets, n × `loss.target_width(C)`.
    y: Vec<f64>,
    loss: Loss,
    ridge: Ridge,
    outputs: usize,
    w: Array2<f64>,
    /// ṽ (C × d): the linear term is v = s_v ṽ (s_v the head's scale).
    /// None while the net has no linear term.
    v: Option<Array2<f64>>,
    /// A step's new rows of W (|R| × d), kept from step to step and grown
    /// to the largest |R| so far. Rows allocated by each worker thread would
    /// stay in its malloc arena after the step, one step's worth per thread,
    /// and a fresh buffer per step of varying size fragments the heap; one
    /// kept buffer costs its size once (`DENSE_STEP_ROWS` in
    /// python/kronnet/training/memory.py).
    rows: Vec<f64>,
}

/// Z = X Wᵀ (rows of X × neurons), in fixed neuron blocks.
fn preacts(x: ArrayView2<'_, f64>, w: ArrayView2<'_, f64>) -> Array2<f64> {
    let mut z = Array2::zeros((x.nrows(), w.nrows()));
    z.axis_chunks_iter_mut(Axis(1), NEURON_BLOCK).into_par_iter().enumerate().for_each(|(blk, mut zc)| {
        let start = blk * NEURON_BLOCK;
        let wb = w.slice(s![start..start + zc.ncols(), ..]);
        general_mat_mul(1.0, &x, &wb.t(), 0.0, &mut zc);
    });
    z
}

/// Zᵀ = W Xᵀ (neurons × rows of X) into `zt`, in the same neuron blocks.
fn preacts_t_into(x: ArrayView2<'_, f64>, w: ArrayView2<'_, f64>, zt: &mut ArrayViewMut2<'_, f64>) {
    zt.axis_chunks_iter_mut(Axis(0), NEURON_BLOCK).into_par_iter().enumerate().for_each(|(blk, mut zc)| {
        let start = blk * NEURON_BLOCK;
        let wb = w.slice(s![start..start + zc.nrows(), ..]);
        general_mat_mul(1.0, &wb, &x.t(), 0.0, &mut zc);
    });
}

impl DenseState {
    /// The dense state of points `x` (n × d) at weights `w` (m × d) and,
    /// with a linear term, `setup.linear` = ṽ (C × d).
    pub fn new(x: Array2<f64>, setup: Setup, model: &Model, w: Array2<f64>) -> Result<DenseState> {
        let (n, d) = x.dim();
        let Setup { y, loss, ridge, linear } = setup;
        if n == 0 {
            return invalid("data", "has no points");
        }
        let c = model.outputs();
        loss.check(c, &y, n)?;
        ridge.check()?;
        if w.dim() != (model.width(), d) {
            return invalid("weights", format!("have shape {:?}, expected ({}, {d})", w.dim(), model.width()));
        }
        if x.iter().chain(w.iter()).any(|v| !v.is_finite()) {
            return invalid("data", "contains NaN or inf");
        }
        if let Some(v) = &linear {
            if v.dim() != (c, d) || v.iter().any(|v| !v.is_finite()) {
                return invalid("linear", format!("must be finite of shape ({c}, {d}), got {:?}", v.dim()));
            }
        }
        let x_norm = x.rows().into_iter().map(|r| r.dot(&r).sqrt()).fold(0.0, f64::max);
        Ok(DenseState {
            x: into_standard(x),
            x_norm,
            y,
            loss,
            ridge,
            outputs: c,
            w: into_standard(w),
            v: linear.map(into_standard),
            rows: Vec::new(),
        })
    }

    pub fn weights(&self) -> ArrayView2<'_, f64> {
        self.w.view()
    }

    /// ṽ (C × d), when the net has a linear term.
    pub fn linear(&self) -> Option<ArrayView2<'_, f64>> {
        self.v.as_ref().map(|v| v.view())
    }

    /// The unscaled linear parts x ṽᵀ of the rows of `x` (rows × C).
    fn linear_parts(&self, x: ArrayView2<'_, f64>) -> Option<Vec<f64>> {
        self.v.as_ref().map(|v| x.dot(&v.t()).iter().copied().collect())
    }

    pub fn full_loss(&self, model: &Model) -> f64 {
        let (n, m) = (self.x.nrows(), self.w.nrows());
        let block = loss_block_points(m).min(n);
        let mut zt = Array2::zeros((m, block));
        let mut f = Vec::with_capacity(n * self.outputs);
        for start in (0..n).step_by(block) {
            let x = self.x.slice(s![start..(start + block).min(n), ..]);
            let mut z = zt.slice_mut(s![.., ..x.nrows()]);
            preacts_t_into(x, self.w.view(), &mut z);
            f.extend(model.outputs_neuron_major(z.view(), self.linear_parts(x).as_deref()));
        }
        self.loss.mean(&f, &self.y, self.outputs, None)
    }

    /// One SGD step on `batch`: W moves by −Cᵀ X_B, the head and the linear
    /// term by their gradients, and the same updates are recorded in
    /// `alpha` (α and β̃) so that the net keeps W = W(0) + αᵀ X after this
    /// trainer is gone. On `Diverged` nothing changes.
    pub fn step(
        &mut self,
        alpha: &mut Coefficients,
        model: &mut Model,
        batch: &[usize],
        rates: &Rates,
    ) -> Result<StepStats> {
        check_batch(batch, self.x.nrows())?;
        rates.check()?;
        self.ridge.check_with(rates)?;
        let c = self.outputs;
        if model.outputs() != c {
            return invalid("model", format!("has {} outputs, the trainer {c}", model.outputs()));
        }
        alpha.check_shape(self.x.nrows(), model.width(), c)?;
        let xb = self.x.select(Axis(0), batch);
        let z = preacts(xb.view(), self.w.view());
        let fire: Vec<Vec<u32>> =
            z.axis_iter(Axis(0)).map(|row| scan_row(row.as_slice().expect("fresh"), model.b())).collect();
        let tw = self.loss.target_width(c);
        let targets: Vec<f64> = batch.iter().flat_map(|&i| self.y[i * tw..(i + 1) * tw].iter().copied()).collect();
        let fired_values: Vec<Vec<f64>> =
            fire.iter().zip(z.rows()).map(|(a, row)| a.iter().map(|&r| row[r as usize]).collect()).collect();
        let mut sums = vec![ExactSum::new(); batch.len() * c];
        for ((a, v), out) in fire.iter().zip(&fired_values).zip(sums.chunks_mut(c)) {
            model.sum_fired(a, v, out);
        }
        let lin = self.linear_parts(xb.view());
        let plan = plan_step(model, self.loss, &fire, &fired_values, &sums, &targets, lin.as_deref(), rates)?;
        let fired_total = fire.iter().map(|a| a.len()).sum();
        let stats = StepStats { loss: plan.loss, fired_union: plan.neurons.len(), fired_total };
        // New rows and head first, committed only if every output they can
        // produce stays finite: the model never reaches a state whose loss
        // overflows.
        let w = &self.w;
        let coef = &plan.coef;
        // The new rows go to the kept buffer (`rows`), filled by the workers.
        let need = checked_len(plan.neurons.len(), w.ncols(), "the step's new rows of W (|R| × d)")?;
        if self.rows.len() < need {
            self.rows = Vec::new(); // the old buffer goes first: never two at once
            self.rows = try_zeros_of(need, "the step's new rows of W (|R| × d)")?;
        }
        let mut new_rows = ArrayViewMut2::from_shape((plan.neurons.len(), w.ncols()), &mut self.rows[..need])
            .expect("the buffer holds |R| × d values");
        new_rows.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(j, mut row)| {
            row.assign(&w.row(plan.neurons[j] as usize));
            for s in 0..batch.len() {
                let cf = coef[[s, j]];
                if cf != 0.0 {
                    for (o, x) in row.iter_mut().zip(xb.row(s)) {
                        *o -= cf * x;
                    }
                }
            }
        });
        let w_norm =
            new_rows.rows().into_iter().map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt()).fold(0.0, f64::max);
        if !(w_norm * self.x_norm < SAFE_BOUND) {
            return Err(KronError::Diverged(
                "the step could push preactivations past 1e140 (the loss would overflow); the model is left at its last finite state (lower lr)"
                    .into(),
            ));
        }
        let mut head = model.clone();
        head.apply(&plan, rates, &self.ridge);
        let lin_factor = if rates.v > 0.0 { rates.v / (batch.len() as f64 * head.v_scale()) } else { 0.0 };
        let mut v_next = self.v.clone();
        if rates.v > 0.0 {
            let v = v_next.get_or_insert_with(|| Array2::zeros((c, self.x.ncols())));
            for (s, xrow) in xb.axis_iter(Axis(0)).enumerate() {
                for k in 0..c {
                    let step = lin_factor * plan.g[s * c + k];
                    if step != 0.0 {
                        v.row_mut(k).zip_mut_with(&xrow, |o, x| *o -= step * x);
                    }
                }
            }
        }
        let w_max = self.w.rows().into_iter().map(|r| r.dot(&r).sqrt()).fold(w_norm, f64::max);
        let v_max = v_next.as_ref().map_or(0.0, |v| v.rows().into_iter().map(|r| r.dot(&r).sqrt()).fold(0.0, f64::max));
        let out = (model.net_width() as f64).sqrt() * head.a_max() * (w_max * self.x_norm + head.b_max())
            + head.c().iter().fold(0.0f64, |m, v| m.max(v.abs()))
            + head.v_scale() * v_max * self.x_norm;
        if !(out < OUTPUT_BOUND) {
            return Err(KronError::Diverged(format!(
                "the step could push the outputs to {out:.3e} (the loss would overflow); \
                 the model is left at its last finite state (lower the learning rates)"
            )));
        }
        if rates.w > 0.0 {
            alpha.apply(batch, &plan.neurons, &plan.coef)?;
        }
        if rates.v > 0.0 {
            alpha.apply_linear(batch, &plan.g, lin_factor)?;
        }
        alpha.note_step();
        model.note_step();
        model.apply(&plan, rates, &self.ridge);
        self.v = v_next;
        if rates.w > 0.0 {
            for (&r, row) in plan.neurons.iter().zip(new_rows.rows()) {
                self.w.row_mut(r as usize).assign(&row);
            }
        }
        Ok(stats)
    }
}

impl crate::model::Backend for DenseState {
    fn step(
        &mut self,
        coef: &mut Coefficients,
        model: &mut Model,
        batch: &[usize],
        rates: &Rates,
    ) -> Result<StepStats> {
        DenseState::step(self, coef, model, batch, rates)
    }

    fn full_loss(&self, model: &Model) -> f64 {
        DenseState::full_loss(self, model)
    }
}
