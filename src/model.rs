//! The net's head and the arithmetic both backends share (docs/design.md,
//! "The model", "The algorithm"):
//!
//! ```text
//! f(x) = (1/√m) Σ_r a_r max(<w_r, x> − b_r, 0) + c + <v, x>
//! ```
//!
//! with C outputs: output weights a_r ∈ R^C, per-neuron thresholds b_r, the
//! output bias c ∈ R^C and a linear term v = s_v Σ_blocks β̃ᵀ X (its scale s_v
//! here, its coefficients β̃ with the blocks, `coef.rs`). The hidden weights'
//! state (P or W) belongs to the backends; this module plans a step from
//! the batch's fire sets and exact output sums (`plan_step`) and moves the
//! head (`Model::apply`).

use crate::coef::Coefficients;
use crate::control::Control;
use crate::elem::Elem;
use crate::error::{invalid, KronError, Result};
use crate::exact_sum::ExactSum;
use crate::limits::{OUTPUT_BOUND, SAFE_BOUND, VALUE_BOUND};
use crate::loss::Loss;
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// The next head's serial number (process-wide).
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// The trained head of a net, for some of its neurons: all of them, or the
/// contiguous range one rank of a sharded trainer holds (`neurons`). The
/// per-neuron parts (a, b) are those neurons'; the outputs' 1/√m, the bias c
/// and the linear term's scale are the whole net's, so a shard's partial
/// sums are exactly its part of the net's.
#[derive(Debug)]
pub struct Model {
    /// a, neurons held × C, row-major.
    a: Vec<f64>,
    outputs: usize,
    /// b_r of the neurons held.
    b: Vec<f64>,
    /// c (C), the whole net's.
    c: Vec<f64>,
    /// The net's initial shared threshold: b's ridge pulls toward it.
    b_init: f64,
    /// s_v: the linear term is v = s_v Σ_blocks β̃ᵀ X (ridge on v decays it).
    v_scale: f64,
    /// The first neuron held, and m of the whole net.
    first: usize,
    net_width: usize,
    /// Unique in the process, and the steps applied: a trainer compares
    /// them (with the blocks') to tell that another one moved the net.
    serial: u64,
    updates: u64,
}

impl Clone for Model {
    /// A copy is another head: it gets its own serial number.
    fn clone(&self) -> Self {
        Model {
            a: self.a.clone(),
            b: self.b.clone(),
            c: self.c.clone(),
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            updates: 0,
            ..*self
        }
    }
}

impl Model {
    /// The whole net's head: a (m × C, row-major), b (m), c (C), the initial
    /// threshold and the linear term's scale.
    pub fn new(a: Vec<f64>, outputs: usize, b: Vec<f64>, c: Vec<f64>, b_init: f64, v_scale: f64) -> Result<Model> {
        if outputs == 0 {
            return invalid("outputs", "must be positive");
        }
        if b.is_empty() {
            return invalid("width", "must be positive");
        }
        let m = b.len();
        if a.len() != m * outputs {
            return invalid("a", format!("has {} values for {m} neurons × {outputs} outputs", a.len()));
        }
        if c.len() != outputs {
            return invalid("output_bias", format!("has {} values for {outputs} outputs", c.len()));
        }
        if a.iter().chain(&c).any(|v| !v.is_finite()) {
            return invalid("a", "output weights and bias must be finite");
        }
        if let Some(bad) = b.iter().chain([&b_init]).find(|v| !(v.abs() <= VALUE_BOUND)) {
            return invalid("threshold", format!("must be finite with |threshold| <= {VALUE_BOUND:e}, got {bad}"));
        }
        if !(v_scale.is_finite() && v_scale > 0.0) {
            return invalid("v_scale", format!("must be positive and finite, got {v_scale}"));
        }
        Ok(Model {
            a,
            outputs,
            b,
            c,
            b_init,
            v_scale,
            first: 0,
            net_width: m,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            updates: 0,
        })
    }

    /// The paper's head: one output, a = `a`, every threshold `b`, no bias.
    pub fn shared(a: Vec<f64>, b: f64) -> Result<Model> {
        let m = a.len();
        Model::new(a, 1, vec![b; m], vec![0.0], b, 1.0)
    }

    /// Neurons `first .. first + count` of this (whole) net's head: the
    /// part one rank of a sharded trainer holds.
    pub fn shard(self, first: usize, count: usize) -> Result<Model> {
        let m = self.b.len();
        if self.first != 0 || m != self.net_width {
            return invalid("neurons", "only a whole net's head can be sharded");
        }
        if count == 0 || first.checked_add(count).is_none_or(|end| end > m) {
            return invalid("neurons", format!("range {first}..{} is not a nonempty part of 0..{m}", first + count));
        }
        let c = self.outputs;
        Ok(Model {
            a: self.a[first * c..(first + count) * c].to_vec(),
            b: self.b[first..first + count].to_vec(),
            first,
            ..self
        })
    }

    /// Sets which neurons of a width-`net_width` net this head holds (a
    /// shard's head rebuilt from its parts).
    pub fn placed(mut self, first: usize, net_width: usize) -> Result<Model> {
        if first.checked_add(self.b.len()).is_none_or(|end| end > net_width) {
            return invalid("neurons", format!("{} neurons from {first} exceed a net of {net_width}", self.b.len()));
        }
        self.first = first;
        self.net_width = net_width;
        Ok(self)
    }

    /// Neurons this head holds (m, or a shard's count).
    pub fn width(&self) -> usize {
        self.b.len()
    }

    /// m of the whole net.
    pub fn net_width(&self) -> usize {
        self.net_width
    }

    /// The first neuron held.
    pub fn first(&self) -> usize {
        self.first
    }

    /// C.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// a (neurons held × C, row-major).
    pub fn a(&self) -> &[f64] {
        &self.a
    }

    /// Neuron r's output weights (C), r counted among the neurons held.
    pub fn a_row(&self, r: usize) -> &[f64] {
        &self.a[r * self.outputs..(r + 1) * self.outputs]
    }

    /// The thresholds of the neurons held.
    pub fn b(&self) -> &[f64] {
        &self.b
    }

    /// The output bias c (C).
    pub fn c(&self) -> &[f64] {
        &self.c
    }

    /// The initial shared threshold.
    pub fn b_init(&self) -> f64 {
        self.b_init
    }

    /// s_v, the linear term's scale.
    pub fn v_scale(&self) -> f64 {
        self.v_scale
    }

    /// This head's process-wide serial number.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Steps applied to this head so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// max |a| over the neurons held.
    pub fn a_max(&self) -> f64 {
        self.a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
    }

    /// Σ a² and Σ b² over the neurons held, as exact sums whose totals over
    /// any split of the net into whole 64-neuron blocks are the same bits:
    /// each block's squares are added in f64 in a fixed order, and the
    /// blocks' partial sums exactly. Their square roots bound max |a| and
    /// max |b| alike in one process and on any number of ranks.
    pub fn square_sums(&self) -> [ExactSum; 2] {
        const BLOCK: usize = 64;
        let mut out = [ExactSum::new(), ExactSum::new()];
        for chunk in self.a.chunks(BLOCK * self.outputs) {
            out[0].add(chunk.iter().map(|v| v * v).sum::<f64>());
        }
        for chunk in self.b.chunks(BLOCK) {
            out[1].add(chunk.iter().map(|v| v * v).sum::<f64>());
        }
        out
    }

    /// max |b| over the neurons held.
    pub fn b_max(&self) -> f64 {
        self.b.iter().fold(0.0f64, |m, v| m.max(v.abs()))
    }

    fn scale(&self) -> f64 {
        1.0 / (self.net_width as f64).sqrt()
    }

    /// Σ_r a_rk (z_r − b_r) over one point's fire set (neurons held,
    /// `values[j]` = P[·, fired[j]]), exactly, into `out` (C sums): the same
    /// sums whatever the order of the terms or how they are split between
    /// ranks.
    pub fn sum_fired(&self, fired: &[u32], values: &[f64], out: &mut [ExactSum]) {
        let c = self.outputs;
        for (&r, &z) in fired.iter().zip(values) {
            let r = r as usize;
            let h = z - self.b[r];
            for (o, a) in out.iter_mut().zip(&self.a[r * c..(r + 1) * c]) {
                o.add(a * h);
            }
        }
    }

    /// f of k points from their exact sums (k × C) and, when the net has a
    /// linear term, its unscaled part <Σ β̃ x_s, x> (k × C): each sum rounded
    /// once, then scaled, then the bias and s_v times the linear part added.
    /// Every path to an output (step, loss, predict; one rank or many) ends
    /// here, so they all give the same bits; a zero bias and no linear term
    /// add nothing.
    pub fn outputs_of(&self, sums: &[ExactSum], linear: Option<&[f64]>) -> Vec<f64> {
        let (c, scale) = (self.outputs, self.scale());
        sums.iter()
            .enumerate()
            .map(|(j, s)| {
                let mut f = s.value() * scale;
                let bias = self.c[j % c];
                if bias != 0.0 {
                    f += bias;
                }
                if let Some(lin) = linear {
                    f += self.v_scale * lin[j];
                }
                f
            })
            .collect()
    }

    /// acc[i·C + k] += Σ_r a_rk (P[r, i] − b_r)_+ exactly over the rows of
    /// `pt`, which are this head's neurons `first`, `first + 1`, … (counted
    /// among those held): any passes over any neuron ranges give the same
    /// sums.
    pub fn accumulate_outputs<T: Elem>(&self, first: usize, pt: ArrayView2<'_, T>, acc: &mut [ExactSum]) {
        const POINTS: usize = 256;
        let c = self.outputs;
        acc.par_chunks_mut(POINTS * c).enumerate().for_each(|(blk, acc)| {
            let start = blk * POINTS;
            let points = acc.len() / c;
            for (r, row) in pt.axis_iter(Axis(0)).enumerate() {
                let (a, b) = (self.a_row(first + r), self.b[first + r]);
                let row = &row.as_slice().expect("rows of Pᵀ are contiguous")[start..start + points];
                for (i, z) in row.iter().enumerate() {
                    let z = z.to_f64();
                    if z > b {
                        let h = z - b;
                        for (o, a) in acc[i * c..(i + 1) * c].iter_mut().zip(a) {
                            o.add(a * h);
                        }
                    }
                }
            }
        });
    }

    /// The exact sums (points × C) of all neurons held for each column of
    /// Pᵀ (neurons held × points, rows contiguous).
    pub fn sums_neuron_major<T: Elem>(&self, pt: ArrayView2<'_, T>) -> Vec<ExactSum> {
        let mut acc = vec![ExactSum::new(); pt.ncols() * self.outputs];
        self.accumulate_outputs(0, pt, &mut acc);
        acc
    }

    /// f (points × C) from Pᵀ (neurons × points, rows contiguous) and the
    /// points' unscaled linear parts, a few thousand points at a time so
    /// that the exact sums (`WORDS` words each) stay small next to Pᵀ.
    pub fn outputs_neuron_major<T: Elem>(&self, pt: ArrayView2<'_, T>, linear: Option<&[f64]>) -> Vec<f64> {
        const POINTS: usize = 4096;
        let (q, c) = (pt.ncols(), self.outputs);
        let mut out = Vec::with_capacity(q * c);
        for start in (0..q).step_by(POINTS) {
            let stop = (start + POINTS).min(q);
            let part = pt.slice(ndarray::s![.., start..stop]);
            out.extend(self.outputs_of(&self.sums_neuron_major(part), linear.map(|l| &l[start * c..stop * c])));
        }
        out
    }

    /// f for every row of a preactivation matrix (points × neurons held),
    /// in any memory layout, with the points' unscaled linear parts.
    pub fn outputs_of_preacts(&self, preacts: ArrayView2<'_, f64>, linear: Option<&[f64]>) -> Vec<f64> {
        let pt = preacts.t().as_standard_layout().into_owned();
        self.outputs_neuron_major(pt.view(), linear)
    }

    /// Moves the head by a planned step (`plan_step`): a and b of the fired
    /// neurons by their gradients, every a and b by their ridges, c, and the
    /// linear term's scale. `rates` are this step's (scheduled) rates.
    pub fn apply(&mut self, plan: &Plan, rates: &Rates, ridge: &Ridge) {
        let c = self.outputs;
        if rates.a > 0.0 {
            if ridge.a > 0.0 {
                for v in self.a.iter_mut() {
                    *v -= rates.a * (ridge.a * *v);
                }
            }
            for (j, &r) in plan.neurons.iter().enumerate() {
                let r = r as usize;
                for k in 0..c {
                    self.a[r * c + k] -= rates.a * plan.grad_a[j * c + k];
                }
            }
        }
        if rates.b > 0.0 {
            if ridge.b > 0.0 {
                for v in self.b.iter_mut() {
                    *v -= rates.b * (ridge.b * (*v - self.b_init));
                }
            }
            for (j, &r) in plan.neurons.iter().enumerate() {
                self.b[r as usize] -= rates.b * plan.grad_b[j];
            }
        }
        if rates.c > 0.0 {
            for (k, v) in self.c.iter_mut().enumerate() {
                *v -= rates.c * (plan.grad_c[k] + ridge.c * *v);
            }
        }
        if rates.v > 0.0 && ridge.v > 0.0 {
            self.v_scale *= 1.0 - rates.v * ridge.v;
        }
    }

    /// Sets the head's trainable values (a checkpoint's or a file's).
    pub fn set(&mut self, a: Vec<f64>, b: Vec<f64>, c: Vec<f64>, v_scale: f64) -> Result<()> {
        let fresh = Model::new(a, self.outputs, b, c, self.b_init, v_scale)?;
        if fresh.b.len() != self.b.len() {
            return invalid("thresholds", format!("has {} values for {} neurons", fresh.b.len(), self.b.len()));
        }
        self.a = fresh.a;
        self.b = fresh.b;
        self.c = fresh.c;
        self.v_scale = fresh.v_scale;
        Ok(())
    }

    /// Records that a step committed.
    pub fn note_step(&mut self) {
        self.updates += 1;
    }
}

/// One step's learning rates (already times the schedule's factor): W's
/// (`w`), and a's, b's, c's and v's. A rate of 0 freezes its parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub w: f64,
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub v: f64,
}

impl Rates {
    /// The paper's model: only W trains, at rate `lr`.
    pub fn w_only(lr: f64) -> Rates {
        Rates { w: lr, a: 0.0, b: 0.0, c: 0.0, v: 0.0 }
    }

    /// Every rate times `factor` (a schedule's value at this step).
    pub fn scaled(&self, factor: f64) -> Rates {
        Rates { w: self.w * factor, a: self.a * factor, b: self.b * factor, c: self.c * factor, v: self.v * factor }
    }

    /// Checks the rates: finite and >= 0, at least one positive.
    pub fn check(&self) -> Result<()> {
        for (name, r) in [("lr", self.w), ("lr_a", self.a), ("lr_b", self.b), ("lr_c", self.c), ("lr_v", self.v)] {
            if !(r.is_finite() && r >= 0.0) {
                return invalid(name, format!("must be a finite number >= 0, got {r}"));
            }
        }
        Ok(())
    }
}

/// Ridge strengths: a penalty (λ/2)‖θ‖² on a, c and v, and (λ/2)‖b − b_init‖²
/// on the thresholds. The steps' reported losses leave them out.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ridge {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub v: f64,
}

impl Ridge {
    /// Checks the strengths: finite and >= 0.
    pub fn check(&self) -> Result<()> {
        for (name, r) in [("ridge_a", self.a), ("ridge_b", self.b), ("ridge_c", self.c), ("ridge_v", self.v)] {
            if !(r.is_finite() && r >= 0.0) {
                return invalid(name, format!("must be a finite number >= 0, got {r}"));
            }
        }
        Ok(())
    }

    /// Checks that a step at `rates` shrinks what each ridge pulls on: a
    /// decay factor 1 − lr λ ≤ 0 would flip its sign every step (the linear
    /// term's scale would reach 0 or below).
    pub fn check_with(&self, rates: &Rates) -> Result<()> {
        for (name, lr, r) in [
            ("ridge_a", rates.a, self.a),
            ("ridge_b", rates.b, self.b),
            ("ridge_c", rates.c, self.c),
            ("ridge_v", rates.v, self.v),
        ] {
            if lr * r >= 1.0 {
                return invalid(
                    name,
                    format!("times its learning rate is {} >= 1: the decay 1 - lr * ridge would be <= 0", lr * r),
                );
            }
        }
        Ok(())
    }
}

/// What one SGD step changes, planned from the parameters before it (every
/// gradient at the same point):
///
/// * the fired neurons R (sorted union of the fire sets) and the hidden
///   weights' coefficients C (S × |R|), C[s, j] = (lr/S)(1/√m) <g_s, a_{R_j}>
///   1[R_j ∈ A_s]: neuron R_j moves by −Σ_s C[s, j] x_{B_s};
/// * the gradients of a and b at R (∇a_r = (1/S)(1/√m) Σ_s g_s h_sr,
///   ∇b_r = −(1/S)(1/√m) Σ_s <g_s, a_r> 1[r ∈ A_s]), of c ((1/S) Σ_s g_s),
///   and the linear term's per-point coefficients (lr_v/S) g_s.
pub struct Plan {
    pub loss: f64,
    /// S × C: ∂ℓ/∂f of each batch point.
    pub g: Vec<f64>,
    pub neurons: Vec<u32>,
    pub coef: Array2<f64>,
    /// |R| × C.
    pub grad_a: Vec<f64>,
    /// |R|.
    pub grad_b: Vec<f64>,
    /// C.
    pub grad_c: Vec<f64>,
    /// Per batch point, a bound on Σ_j |C[s, j]| / max |a|: (lr/S)(1/√m) ‖g_s‖₁
    /// (for one output, |C-coefficient| / |a| exactly as the paper's step has it).
    pub c_norm: Vec<f64>,
}

/// Plans a step from each batch point's fire set among the neurons held,
/// the preactivations at those neurons, each point's exact sums over the
/// whole net (S × C), its targets and its unscaled linear part. Refuses
/// (nothing changes) when the loss is not finite.
#[allow(clippy::too_many_arguments)]
pub fn plan_step(
    model: &Model,
    loss: Loss,
    fire: &[Vec<u32>],
    fired_values: &[Vec<f64>],
    sums: &[ExactSum],
    targets: &[f64],
    linear: Option<&[f64]>,
    rates: &Rates,
) -> Result<Plan> {
    let (s_len, c) = (fire.len(), model.outputs);
    let f = model.outputs_of(sums, linear);
    let mut g = vec![0.0; s_len * c];
    let value = loss.mean(&f, targets, c, Some(&mut g));
    if !value.is_finite() || g.iter().any(|v| !v.is_finite()) {
        return Err(KronError::Diverged(format!(
            "batch loss is {value}; the model is left at its last finite state (lower lr)"
        )));
    }
    let neurons = union_of(fire, model.width());
    let scale = model.scale();
    // The paper's step: (lr / S)(1/√m) e_s, times a_r per fired neuron.
    let step = rates.w / s_len as f64 * scale;
    let mut coef = Array2::zeros((s_len, neurons.len()));
    let mut grad_a = vec![0.0; neurons.len() * c];
    let mut grad_b = vec![0.0; neurons.len()];
    let head = rates.a > 0.0 || rates.b > 0.0;
    for s in 0..s_len {
        let gs = &g[s * c..(s + 1) * c];
        let cs = if c == 1 { step * gs[0] } else { 0.0 };
        // Both lists are sorted: walk them together instead of searching.
        let mut j = 0;
        for (k, &r) in fire[s].iter().enumerate() {
            while neurons[j] != r {
                j += 1;
            }
            let a = model.a_row(r as usize);
            let ga: f64 = if c == 1 { gs[0] * a[0] } else { gs.iter().zip(a).map(|(g, a)| g * a).sum() };
            coef[[s, j]] = if c == 1 { cs * a[0] } else { step * ga };
            if head {
                let h = fired_values[s][k] - model.b[r as usize];
                for (o, g) in grad_a[j * c..(j + 1) * c].iter_mut().zip(gs) {
                    *o += g * h;
                }
                grad_b[j] += ga;
            }
        }
    }
    let per = scale / s_len as f64;
    grad_a.iter_mut().for_each(|v| *v *= per);
    grad_b.iter_mut().for_each(|v| *v *= -per);
    let mut grad_c = vec![0.0; c];
    for s in 0..s_len {
        for k in 0..c {
            grad_c[k] += g[s * c + k];
        }
    }
    grad_c.iter_mut().for_each(|v| *v /= s_len as f64);
    let c_norm = (0..s_len).map(|s| step * g[s * c..(s + 1) * c].iter().map(|v| v.abs()).sum::<f64>()).collect();
    Ok(Plan { loss: value, g, neurons, coef, grad_a, grad_b, grad_c, c_norm })
}

/// The sorted union of the fire sets (each of neurons below `width`): by a
/// bitmap of the width when it is small beside the sets (a step at n = 1000,
/// m = 512 spent 2% of its time sorting 330 indices), else by sorting.
fn union_of(fire: &[Vec<u32>], width: usize) -> Vec<u32> {
    let total: usize = fire.iter().map(Vec::len).sum();
    let words = width.div_ceil(64);
    if words > 4 * total {
        let mut all: Vec<u32> = fire.iter().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        return all;
    }
    let mut bits = vec![0u64; words];
    for &r in fire.iter().flatten() {
        bits[r as usize / 64] |= 1 << (r % 64);
    }
    let mut out = Vec::with_capacity(total);
    for (w, &word) in bits.iter().enumerate() {
        let mut rest = word;
        while rest != 0 {
            out.push((w * 64) as u32 + rest.trailing_zeros());
            rest &= rest - 1;
        }
    }
    out
}

/// Finite bounds on the state that every rank of a sharded trainer keeps
/// alike (they are advanced from figures all ranks share): max |P| (the
/// hidden preactivations), max |a|, max |b| and max |L̃| (the linear parts)
/// over the whole net. While they stay below the limits no output, loss or
/// update can overflow, so a step updates in place with no copy to roll
/// back, and every rank refuses the same step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    pub p: f64,
    pub a: f64,
    pub b: f64,
    pub l: f64,
}

impl Bounds {
    /// The bounds a step of `plan` leads to: `kb_max[s]` is max_i |K[i, B_s]|.
    /// Refuses a step that could push |P| past `p_limit` (the storage
    /// type's `Elem::SAFE_BOUND`), |a| or |b| past `SAFE_BOUND`, or an output
    /// past `OUTPUT_BOUND`. For the paper's model (only W trains) this is
    /// exactly the guard it always had: |P| grows by at most
    /// max |a| Σ_s |c_s| max_i |K[i, B_s]|.
    pub fn advance(
        &self,
        model: &Model,
        plan: &Plan,
        rates: &Rates,
        ridge: &Ridge,
        kb_max: &[f64],
        p_limit: f64,
    ) -> Result<Bounds> {
        let (c, s_len) = (model.outputs, plan.c_norm.len());
        let growth: f64 = plan.c_norm.iter().zip(kb_max).map(|(n, k)| n * k).sum::<f64>() * self.a;
        // Relative slack covers the rounding of the sums above and of the update.
        let p = (self.p + growth) * (1.0 + 1e-9);
        let per = model.scale() / s_len as f64;
        let g_inf: f64 = (0..s_len).map(|s| max_abs(&plan.g[s * c..(s + 1) * c])).sum();
        let g_one: f64 = (0..s_len).map(|s| plan.g[s * c..(s + 1) * c].iter().map(|v| v.abs()).sum::<f64>()).sum();
        let a = if rates.a > 0.0 {
            (self.a * (1.0 - rates.a * ridge.a).abs() + rates.a * per * g_inf * (self.p + self.b)) * (1.0 + 1e-9)
        } else {
            self.a
        };
        let b = if rates.b > 0.0 {
            (self.b * (1.0 - rates.b * ridge.b).abs()
                + rates.b * ridge.b * model.b_init.abs()
                + rates.b * per * g_one * self.a)
                * (1.0 + 1e-9)
        } else {
            self.b
        };
        let l = if rates.v > 0.0 {
            let scale_next = model.v_scale * (1.0 - rates.v * ridge.v);
            let moved: f64 = (0..s_len).map(|s| max_abs(&plan.g[s * c..(s + 1) * c]) * kb_max[s]).sum();
            (self.l + rates.v / (s_len as f64 * scale_next.abs()) * moved) * (1.0 + 1e-9)
        } else {
            self.l
        };
        if !(p < p_limit) {
            return Err(KronError::Diverged(format!(
                "the step could push preactivations to {p:.3e} (the loss would overflow); \
                 the model is left at its last finite state (lower lr)"
            )));
        }
        let c_max = model.c.iter().zip(&plan.grad_c).map(|(c, g)| c.abs() + rates.c * g.abs()).fold(0.0, f64::max);
        let out = (model.net_width as f64).sqrt() * a * (p + b) + c_max + model.v_scale.abs() * l;
        if !(a < SAFE_BOUND && b < SAFE_BOUND && out < OUTPUT_BOUND) {
            return Err(KronError::Diverged(format!(
                "the step could push the outputs to {out:.3e} (the loss would overflow); \
                 the model is left at its last finite state (lower the learning rates)"
            )));
        }
        Ok(Bounds { p, a, b, l })
    }
}

fn max_abs(values: &[f64]) -> f64 {
    values.iter().fold(0.0, |m, v| m.max(v.abs()))
}

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
/// steps accumulate into and the head belong to the net and are lent for
/// each call.
pub trait Backend: Send {
    /// One SGD step on `batch` at `rates`; L_B before the update.
    fn step(&mut self, coef: &mut Coefficients, model: &mut Model, batch: &[usize], rates: &Rates)
        -> Result<StepStats>;
    /// The mean loss over the training set.
    fn full_loss(&self, model: &Model) -> f64;
}

/// Runs the batches `indices[offsets[t]..offsets[t + 1]]` in order, checking
/// `ctl` before each step; step t runs at `rates` times `factors[t]` (a
/// schedule's values) when given. Returns the figures of the steps taken and
/// the error that stopped the run early, if any (`Interrupted` on a stop
/// request): the state is always at the boundary after the last step taken.
#[allow(clippy::too_many_arguments)]
pub fn run_steps(
    backend: &mut dyn Backend,
    coef: &mut Coefficients,
    model: &mut Model,
    indices: &[usize],
    offsets: &[usize],
    rates: &Rates,
    factors: Option<&[f64]>,
    ctl: &Control,
) -> (Vec<StepStats>, Option<KronError>) {
    let mut out = Vec::with_capacity(offsets.len().saturating_sub(1));
    for (t, w) in offsets.windows(2).enumerate() {
        if let Err(e) = ctl.check() {
            return (out, Some(e));
        }
        let at = step_rates(rates, factors, t);
        match backend.step(coef, model, &indices[w[0]..w[1]], &at) {
            Ok(s) => out.push(s),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// Step t's rates: `rates`, times `factors[t]` when a schedule gives them.
pub fn step_rates(rates: &Rates, factors: Option<&[f64]>, t: usize) -> Rates {
    match factors {
        Some(f) => rates.scaled(f[t]),
        None => *rates,
    }
}

/// Checks a run's schedule factors: one per step, finite and >= 0.
pub fn check_factors(factors: Option<&[f64]>, steps: usize) -> Result<()> {
    let Some(f) = factors else { return Ok(()) };
    if f.len() != steps {
        return invalid("factors", format!("has {} values for {steps} steps", f.len()));
    }
    if let Some(bad) = f.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
        return invalid("schedule", format!("gave the factor {bad}; a schedule must give finite factors >= 0"));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The union by bitmap and by sorting (the branch depends on the
        /// width beside the sets' sizes) is the sorted distinct neurons.
        #[test]
        fn union_is_the_sorted_distinct_neurons(
            width in 1usize..2000,
            sets in proptest::collection::vec(proptest::collection::vec(0u32..2000, 0..40), 0..9),
        ) {
            let fire: Vec<Vec<u32>> = sets.iter().map(|s| {
                let mut s: Vec<u32> = s.iter().map(|&r| r % width as u32).collect();
                s.sort_unstable();
                s.dedup();
                s
            }).collect();
            let want: std::collections::BTreeSet<u32> = fire.iter().flatten().copied().collect();
            proptest::prop_assert_eq!(union_of(&fire, width), want.into_iter().collect::<Vec<_>>());
        }
    }

    /// A ridge whose decay 1 − lr λ would be ≤ 0 is refused; a smaller one,
    /// or any ridge on a frozen part, is not.
    #[test]
    fn a_ridge_must_shrink() {
        let ridge = Ridge { a: 0.5, b: 0.0, c: 0.0, v: 0.1 };
        let rates = |a: f64, v: f64| Rates { a, v, ..Rates::w_only(1.0) };
        assert!(ridge.check_with(&rates(1.9, 9.0)).is_ok());
        assert!(ridge.check_with(&rates(0.0, 0.0)).is_ok());
        assert!(ridge.check_with(&rates(2.0, 0.0)).is_err());
        assert!(ridge.check_with(&rates(1.0, 10.0)).is_err());
    }
}
