//! The dense backend: the same model trained the textbook way, with X (n × d)
//! and W (m × d) materialized and O(S · m · d) work per step. It is the
//! in-package reference the Kronecker backend must reproduce, and a baseline.

use crate::coef::Coefficients;
use crate::error::{into_standard, invalid, KronError, Result};
use crate::index::scan_row;
use crate::model::{check_batch, check_lr, check_targets, half_mse, plan_update, Model, StepStats, SAFE_BOUND};
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// Neurons per GEMM task (fixed so results do not depend on thread count).
const NEURON_BLOCK: usize = 64;

pub struct DenseState {
    x: Array2<f64>,
    /// max_i ‖x_i‖₂: |<w, x_i>| ≤ ‖w‖₂ · x_norm bounds every preactivation.
    x_norm: f64,
    y: Vec<f64>,
    model: Model,
    w: Array2<f64>,
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

impl DenseState {
    pub fn new(x: Array2<f64>, y: Vec<f64>, model: Model, w: Array2<f64>) -> Result<DenseState> {
        let (n, d) = x.dim();
        if n == 0 {
            return invalid("data", "has no points");
        }
        if y.len() != n {
            return invalid("y", format!("has {} targets for {n} points", y.len()));
        }
        if w.dim() != (model.width(), d) {
            return invalid("weights", format!("have shape {:?}, expected ({}, {d})", w.dim(), model.width()));
        }
        if x.iter().chain(w.iter()).any(|v| !v.is_finite()) {
            return invalid("data", "contains NaN or inf");
        }
        check_targets(&y)?;
        let x_norm = x.rows().into_iter().map(|r| r.dot(&r).sqrt()).fold(0.0, f64::max);
        Ok(DenseState { x: into_standard(x), x_norm, y, model, w: into_standard(w) })
    }

    pub fn weights(&self) -> ArrayView2<'_, f64> {
        self.w.view()
    }

    pub fn full_loss(&self) -> f64 {
        half_mse(&self.model.outputs(preacts(self.x.view(), self.w.view()).view()), &self.y)
    }

    /// One SGD step on `batch`: W moves by −Cᵀ X_B, and the same update is
    /// recorded in `alpha` (n × m) so that the model keeps W = W(0) + αᵀ X
    /// after this trainer is gone. On `Diverged` neither changes.
    pub fn step(&mut self, alpha: &mut Coefficients, batch: &[usize], lr: f64) -> Result<StepStats> {
        check_batch(batch, self.y.len())?;
        check_lr(lr)?;
        alpha.check_shape(self.y.len(), self.model.width())?;
        let xb = self.x.select(Axis(0), batch);
        let z = preacts(xb.view(), self.w.view());
        let fire: Vec<Vec<u32>> =
            z.axis_iter(Axis(0)).map(|row| scan_row(row.as_slice().expect("fresh"), self.model.b)).collect();
        let targets: Vec<f64> = batch.iter().map(|&i| self.y[i]).collect();
        let fired_values: Vec<Vec<f64>> =
            fire.iter().zip(z.rows()).map(|(a, row)| a.iter().map(|&r| row[r as usize]).collect()).collect();
        let upd = plan_update(&self.model, &fire, &fired_values, &targets, lr)?;
        let fired_total = fire.iter().map(|a| a.len()).sum();
        let stats = StepStats { loss: upd.loss, fired_union: upd.neurons.len(), fired_total };
        // New rows first, committed only if every preactivation they can
        // produce stays below SAFE_BOUND: the model never reaches a state
        // whose loss overflows.
        let w = &self.w;
        let coef = &upd.coef;
        let new_rows: Vec<Vec<f64>> = upd
            .neurons
            .par_iter()
            .enumerate()
            .map(|(j, &r)| {
                let mut row = w.row(r as usize).to_vec();
                for s in 0..batch.len() {
                    let c = coef[[s, j]];
                    if c != 0.0 {
                        for (o, x) in row.iter_mut().zip(xb.row(s)) {
                            *o -= c * x;
                        }
                    }
                }
                row
            })
            .collect();
        let w_norm = new_rows.iter().map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt()).fold(0.0, f64::max);
        if !(w_norm * self.x_norm < SAFE_BOUND) {
            return Err(KronError::Diverged(
                "the step could push preactivations past 1e140 (the loss would overflow); the model is left at its last finite state (lower lr)"
                    .into(),
            ));
        }
        alpha.apply(batch, &upd.neurons, &upd.coef)?;
        alpha.note_step();
        for (&r, row) in upd.neurons.iter().zip(new_rows) {
            self.w.row_mut(r as usize).assign(&ndarray::ArrayView1::from(&row));
        }
        Ok(stats)
    }
}

impl crate::model::Backend for DenseState {
    fn step(&mut self, coef: &mut Coefficients, batch: &[usize], lr: f64) -> Result<StepStats> {
        DenseState::step(self, coef, batch, lr)
    }

    fn full_loss(&self) -> f64 {
        DenseState::full_loss(self)
    }
}
