//! Initial inner products P(0)[i, r] = <w_r(0), x_i> without ever holding an
//! m × d weight matrix: neuron r's weights are regenerated from (seed, r)
//! (`rng.rs`), contracted with the factors, and dropped.
//!
//! Contraction order: w_r viewed as a d_1 × … × d_p tensor is first
//! contracted with one of the two outer factors by one GEMM over a block of
//! its rows (U_1 · W_r or U_p · W_rᵀ), leaving rows × d/d_k numbers; the
//! remaining factors are then contracted point by point. For an indexed
//! factor (an entity table shared by many points) the GEMM runs over the
//! table's N_k rows, not the n points: O(N_k d + n d/d_k) per neuron instead
//! of O(n d). Memory per worker is O(d + block · d/d_k), never O(m · d).

use crate::control::Control;
use crate::error::{invalid, try_array2, try_zeros, Result};
use crate::factors::Factors;
use crate::matmul::matmul_into;
use crate::rng::initial_weights;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Neurons per parallel task: fixed so results do not depend on thread count.
const NEURON_BLOCK: usize = 16;
/// Bound on the per-worker intermediate (rows × neurons × remaining dims), in f64s.
const MAX_INTERMEDIATE: usize = 1 << 20;
/// Columns one GEMM should have at least: at small d one neuron's W_r has
/// few columns (d / d_k), and a GEMM that narrow runs far below the
/// machine's rate, so several neurons share one GEMM.
const TARGET_COLUMNS: usize = 256;

/// How W(0) is drawn (`TwoLayerNet(init=...)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitKind {
    /// w_r(0) ~ N(0, I_d), regenerated from (seed, r) (this module).
    Gaussian,
    /// w_r(0) = R^{-1/2} Σ_j ⊗_k g_rj^(k) (`kron_init.rs`).
    Kron { rank: usize },
}

/// The kinds of W(0) by the name `TwoLayerNet(init=...)` accepts; the
/// Kronecker init's rank R comes separately (`InitKind::Kron`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitName {
    Gaussian,
    Kron,
}

impl InitName {
    /// Every init kind by its name.
    pub const NAMES: [(&'static str, InitName); 2] = [("gaussian", InitName::Gaussian), ("kron", InitName::Kron)];
}

/// The initial weights of a net: a pure function of (seed, kind), never stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitialWeights {
    pub seed: u64,
    pub kind: InitKind,
}

impl InitialWeights {
    /// Gaussian W(0) from `seed`.
    pub fn gaussian(seed: u64) -> Self {
        InitialWeights { seed, kind: InitKind::Gaussian }
    }

    /// P(0)ᵀ (m × n) of the points in `f`.
    pub fn preacts_t(&self, f: &Factors<'_>, width: usize, ctl: &Control) -> Result<Array2<f64>> {
        self.preacts_t_range(f, 0, width, ctl)
    }

    /// Rows `first .. first + count` of P(0)ᵀ: the neurons of that range
    /// only, each regenerated once for all the points.
    pub fn preacts_t_range(&self, f: &Factors<'_>, first: usize, count: usize, ctl: &Control) -> Result<Array2<f64>> {
        match self.kind {
            InitKind::Gaussian => init_preacts_range(f, self.seed, first, count, ctl),
            InitKind::Kron { rank } => crate::kron_init::preacts_range(f, self.seed, first, count, rank, ctl),
        }
    }

    /// W(0) materialized (m × d): only for small d.
    pub fn weight_matrix(&self, width: usize, dims: &[usize], ctl: &Control) -> Result<Array2<f64>> {
        match self.kind {
            InitKind::Gaussian => {
                let Some(d) = dims.iter().try_fold(1usize, |acc, &k| acc.checked_mul(k)) else {
                    return invalid("dims", "the product of the dimensions overflows");
                };
                initial_weight_matrix(self.seed, width, d, ctl)
            }
            InitKind::Kron { rank } => crate::kron_init::weight_matrix(self.seed, width, dims, rank, ctl),
        }
    }

    /// Bytes `preacts_t` needs beyond its output for n points of `rank`
    /// terms whose indexed tables have at most `table_rows` rows.
    pub fn scratch_bytes(&self, dims: &[usize], n: usize, rank: usize, table_rows: usize, threads: usize) -> u128 {
        match self.kind {
            InitKind::Gaussian => scratch_bytes(dims, n, rank, threads),
            InitKind::Kron { rank: r } => crate::kron_init::scratch_bytes(dims, table_rows, r, threads),
        }
    }
}

/// Checks width and d = Π d_k before any allocation.
fn check_shape(f: &Factors<'_>, width: usize) -> Result<usize> {
    let Some(d) = f.d() else {
        return invalid("dims", "the product of the dimensions overflows");
    };
    if width == 0 {
        return invalid("width", "must be positive");
    }
    if width > u32::MAX as usize {
        return invalid("width", "must be below 2^32");
    }
    Ok(d)
}

/// Bytes init needs beyond its output for n points of `rank` terms: per
/// worker thread, one neuron's weights (d), the GEMM's intermediate (rows ×
/// d / d_k, capped) and, for rank > 1, the per-term inner products. Either
/// outer factor may be chosen (it depends on table sizes for indexed data),
/// so the larger intermediate of the two is counted.
pub fn scratch_bytes(dims: &[usize], n: usize, rank: usize, threads: usize) -> u128 {
    // Saturating throughout: absurd sizes give a huge figure, never a panic.
    let d: u128 = dims.iter().fold(1u128, |acc, &k| acc.saturating_mul(k as u128));
    let Some(d_usize) = usize::try_from(d).ok() else {
        return u128::MAX;
    };
    if d_usize <= DENSE_MAX_D && n.saturating_mul(d_usize) <= DENSE_MAX_X {
        // X once, and one block of W(0) per thread (the general GEMM's
        // path; the drawn path holds Xᵀ packed and a small workspace).
        let gemm = 8 * (n as u128 * d + (DENSE_NEURON_BLOCK as u128) * d * threads.max(1) as u128);
        let drawn =
            crate::packed::PackedRhs::bytes(n, d_usize) + crate::packed::Workspace::bytes() * threads.max(1) as u128;
        return gemm.max(drawn);
    }
    let terms = n.saturating_mul(rank.max(1));
    let (mut intermediate, mut batch) = (0u128, 1usize);
    for dk in [dims[0], dims[dims.len() - 1]] {
        let rest = d_usize / dk;
        let b = neurons_per_gemm(rest);
        let rows = (MAX_INTERMEDIATE / (b * rest).max(1)).max(1);
        intermediate = intermediate.max(rows.min(terms.max(1)) as u128 * b as u128 * rest as u128 + rest as u128);
        batch = batch.max(b);
    }
    let per_term = if rank > 1 { batch as u128 * terms as u128 } else { 0 };
    // The batch's weights, and their copy in the GEMM's layout.
    let weights = if batch > 1 { 2 * batch as u128 * d } else { d };
    (weights + intermediate + per_term).saturating_mul(8).saturating_mul(threads.max(1) as u128)
}

/// Neurons whose weights share one GEMM when d / d_k = `rest`.
fn neurons_per_gemm(rest: usize) -> usize {
    TARGET_COLUMNS.div_ceil(rest.max(1)).clamp(1, NEURON_BLOCK)
}

/// P(0)ᵀ for the points in `f`: an m × n matrix, P(0)ᵀ[r, i] = <w_r(0), x_i>.
/// Each neuron's row is contiguous, so each task regenerates its neurons'
/// weights and writes their rows. Points of r terms are contracted term by
/// term (every term is a rank-one point) and the r values summed in term
/// order. Checks `ctl` between neurons.
pub fn init_preacts_t(f: &Factors<'_>, seed: u64, width: usize, ctl: &Control) -> Result<Array2<f64>> {
    init_preacts_range(f, seed, 0, width, ctl)
}

/// Rows `first .. first + count` of `init_preacts_t`'s result.
pub fn init_preacts_range(
    f: &Factors<'_>,
    seed: u64,
    first: usize,
    count: usize,
    ctl: &Control,
) -> Result<Array2<f64>> {
    let Some(end) = first.checked_add(count) else {
        return invalid("width", "must be below 2^32");
    };
    let d = check_shape(f, end)?;
    let n = f.n();
    let mut p_t = try_array2(count, n, "preactivation matrix P (n × width)")?;
    if n == 0 || count == 0 {
        return Ok(p_t);
    }
    if d <= DENSE_MAX_D && n.saturating_mul(d) <= DENSE_MAX_X {
        dense_init(f, seed, first, &mut p_t, ctl)?;
    } else {
        factored_init(f, d, &mut p_t, ctl, &|r, wc| initial_weights(seed, first + r, wc))?;
    }
    Ok(p_t)
}

/// Pᵀ (count × n) of the points for given weights W (count × d): the
/// contraction init does for W(0), with the rows of W in place of the drawn
/// ones (a net whose coefficients were folded into dense weights, `fold.rs`,
/// predicts this way in O(count · d) per point or less).
pub fn preacts_t_of_weights(f: &Factors<'_>, w: ArrayView2<'_, f64>, ctl: &Control) -> Result<Array2<f64>> {
    let count = w.nrows();
    let d = check_shape(f, count.max(1))?;
    if w.ncols() != d {
        return invalid("weights", format!("have {} columns, the points have d = {d}", w.ncols()));
    }
    let n = f.n();
    let mut p_t = try_array2(count, n, "preactivation matrix P (n × width)")?;
    if n == 0 || count == 0 {
        return Ok(p_t);
    }
    // Points over entity tables go through the tables (a GEMM per entity
    // used, then O(d / d_k) per point); the dense product would cost O(d)
    // per point and neuron.
    if !f.is_indexed() && d <= DENSE_MAX_D && n.saturating_mul(d) <= DENSE_MAX_X {
        let x = f.materialize()?;
        p_t.axis_chunks_iter_mut(Axis(0), DENSE_NEURON_BLOCK).into_par_iter().enumerate().try_for_each(
            |(blk, mut rows)| {
                ctl.check()?;
                let start = blk * DENSE_NEURON_BLOCK;
                matmul_into(&w.slice(s![start..start + rows.nrows(), ..]), &x.t(), &mut rows);
                ctl.advance((rows.nrows() * n) as u64);
                Ok::<(), crate::KronError>(())
            },
        )?;
    } else {
        let fill = |r: usize, wc: &mut [f64]| {
            let row = w.row(r);
            match row.as_slice() {
                Some(src) => wc.copy_from_slice(src),
                None => wc.iter_mut().zip(row.iter()).for_each(|(o, v)| *o = *v),
            }
        };
        factored(f, d, &mut p_t, ctl, &fill, true)?;
    }
    Ok(p_t)
}

/// The weights of neuron r (counted from the first row of Pᵀ) into a
/// d-long buffer.
type FillWeights<'a> = dyn Fn(usize, &mut [f64]) + Sync + 'a;

/// Init through the factors (module docs): any d. `fill` gives each
/// neuron's weights (W(0) drawn from its stream, or a stored row).
fn factored_init(
    f: &Factors<'_>,
    d: usize,
    p_t: &mut Array2<f64>,
    ctl: &Control,
    fill: &FillWeights<'_>,
) -> Result<()> {
    factored(f, d, p_t, ctl, fill, false)
}

/// `factored_init`; with `grouped`, two-factor points over an entity
/// table are contracted a table row at a time by one GEMM (the row's
/// intermediate with all its points' other factors) instead of one dot
/// product per point and neuron: the same sums in another order, so it is
/// used only where no earlier result must be reproduced bit for bit
/// (prediction through folded weights).
fn factored(
    f: &Factors<'_>,
    d: usize,
    p_t: &mut Array2<f64>,
    ctl: &Control,
    fill: &FillWeights<'_>,
    grouped: bool,
) -> Result<()> {
    let (n, rank) = (f.n(), f.rank());
    let terms = f.terms();
    let mut plan = Plan::new(&terms, d);
    if grouped && terms.p() == 2 {
        // The grouped contraction's GEMMs have one row per neuron of the
        // batch: a whole neuron block keeps them efficient.
        plan = plan.with_batch(NEURON_BLOCK);
    }
    let order = Order::new(&terms, plan.outer)?;
    // For the grouped contraction: the other factor's rows in the order of
    // the terms grouped by table row, once for every neuron batch.
    let sorted: Option<Array2<f64>> = match &order {
        Order::ByTableRow { terms: by_row, .. } if grouped && terms.p() == 2 => {
            let last = if plan.first { 1 } else { 0 };
            let mut x = try_array2(by_row.len(), terms.mat(last).ncols(), "the points' grouped factor rows")?;
            for (mut row, &t) in x.rows_mut().into_iter().zip(by_row) {
                row.assign(&terms.row(last, t));
            }
            Some(x)
        }
        _ => None,
    };
    p_t.axis_chunks_iter_mut(Axis(0), NEURON_BLOCK).into_par_iter().enumerate().try_for_each(|(blk, mut rows)| {
        ctl.check()?;
        let what = "the initial weights of a batch of neurons (d values each, per thread)";
        let mut w = try_zeros(plan.batch * d, what)?;
        let mut laid_out = if plan.batch > 1 { try_zeros(plan.batch * d, what)? } else { Vec::new() };
        let mut scratch = Scratch::new(&plan)?;
        let mut per_term = if rank > 1 {
            try_array2(plan.batch, terms.n(), "per-term inner products")?
        } else {
            Array2::zeros((0, 0))
        };
        let mut c0 = 0;
        while c0 < rows.nrows() {
            ctl.check()?;
            let b = plan.batch.min(rows.nrows() - c0);
            for (c, wc) in w.chunks_exact_mut(d).take(b).enumerate() {
                fill(blk * NEURON_BLOCK + c0 + c, wc);
            }
            let weights = if plan.batch > 1 {
                plan.lay_out(&w[..b * d], b, &mut laid_out[..b * d]);
                &laid_out[..b * d]
            } else {
                &w[..d]
            };
            if rank == 1 {
                let out = rows.slice_mut(s![c0..c0 + b, ..]);
                contract_neurons(&terms, &plan, &order, weights, b, &mut scratch, out, sorted.as_ref());
            } else {
                let mut out = per_term.slice_mut(s![..b, ..]);
                contract_neurons(&terms, &plan, &order, weights, b, &mut scratch, out.view_mut(), sorted.as_ref());
                for (mut row, t) in rows.slice_mut(s![c0..c0 + b, ..]).rows_mut().into_iter().zip(out.rows()) {
                    let t = t.as_slice().expect("fresh scratch is standard layout");
                    for (o, terms) in row.iter_mut().zip(t.chunks_exact(rank)) {
                        *o = terms.iter().sum();
                    }
                }
            }
            c0 += b;
            ctl.advance((b * n) as u64);
        }
        Ok(())
    })
}

/// A table row's points are contracted by one GEMM (`factored` with
/// `grouped`) when there are at least this many of them.
const GROUP_GEMM_MIN: usize = 8;

/// Up to this d, init materializes the points (below).
const DENSE_MAX_D: usize = 1 << 12;
/// ... as long as X (n × d) has at most this many values (64 MiB).
const DENSE_MAX_X: usize = 1 << 23;
/// Neurons per task of the dense path.
const DENSE_NEURON_BLOCK: usize = 256;

/// Init at small d: each task's block of W(0) multiplied by all the points
/// at once, W_B Xᵀ. At d ≤ 2^12 the factored contraction's per-point work
/// (n · m dot products of length d / d_k) costs as much as the product
/// itself; building X costs n · d once, a 1/m share of the product. Where
/// the CPU allows, W_B is drawn inside the product (`packed.rs`).
fn dense_init(f: &Factors<'_>, seed: u64, first: usize, p_t: &mut Array2<f64>, ctl: &Control) -> Result<()> {
    if crate::packed::supported() {
        dense_init_drawn(f, seed, first, p_t, ctl)
    } else {
        dense_init_gemm(f, seed, first, p_t, ctl)
    }
}

/// `dense_init` through `matmul`'s general GEMM, on X materialized once
/// and shared by all tasks.
fn dense_init_gemm(f: &Factors<'_>, seed: u64, first: usize, p_t: &mut Array2<f64>, ctl: &Control) -> Result<()> {
    let x = f.materialize()?;
    let (n, d) = x.dim();
    p_t.axis_chunks_iter_mut(Axis(0), DENSE_NEURON_BLOCK).into_par_iter().enumerate().try_for_each(|(blk, mut rows)| {
        ctl.check()?;
        let b = rows.nrows();
        let mut w = try_array2(b, d, "the initial weights of a block of neurons")?;
        for (c, mut row) in w.rows_mut().into_iter().enumerate() {
            initial_weights(seed, first + blk * DENSE_NEURON_BLOCK + c, row.as_slice_mut().expect("fresh array"));
        }
        matmul_into(&w.view(), &x.t(), &mut rows);
        ctl.advance((b * n) as u64);
        Ok(())
    })
}

/// `dense_init` with Xᵀ packed once and W_B drawn block by block inside
/// the product, never stored.
fn dense_init_drawn(f: &Factors<'_>, seed: u64, first: usize, p_t: &mut Array2<f64>, ctl: &Control) -> Result<()> {
    use crate::packed::{multiply_drawn, PackedRhs, Workspace};
    let xt = PackedRhs::points_of(f)?;
    let n = f.n();
    p_t.axis_chunks_iter_mut(Axis(0), DENSE_NEURON_BLOCK).into_par_iter().enumerate().try_for_each_init(
        Workspace::new,
        |work, (blk, mut rows)| {
            ctl.check()?;
            let work = work.as_mut().map_err(|e| e.clone())?;
            let mut weights =
                WeightRows { seed, base: first + blk * DENSE_NEURON_BLOCK, first: 0, streams: Vec::new() };
            multiply_drawn(rows.nrows(), &mut weights, &xt, &mut rows, work);
            ctl.advance((rows.nrows() * n) as u64);
            Ok(())
        },
    )
}

/// Rows of W(0) for `packed::multiply_drawn`: row r is neuron base + r,
/// drawn from its own stream.
struct WeightRows {
    seed: u64,
    base: usize,
    /// The first started row, and the started rows' streams.
    first: usize,
    streams: Vec<crate::rng::KeyedStream>,
}

impl crate::packed::DrawnRows for WeightRows {
    fn start(&mut self, first: usize, count: usize) {
        self.first = first;
        self.streams.clear();
        self.streams.extend((first..first + count).map(|r| crate::rng::weight_stream(self.seed, self.base + r)));
    }

    fn draw(&mut self, r: usize, out: &mut [f64]) {
        self.streams[r - self.first].fill_normal(out);
    }
}

/// Which outer factor the GEMM contracts, and the shape that remains.
struct Plan {
    /// true: contract factor 0 (W as d_1 × rest); false: the last factor.
    first: bool,
    /// The factor contracted by the GEMM (0 or p - 1).
    outer: usize,
    dk: usize,
    rest: usize,
    /// Rows of the outer factor's matrix (terms, or table rows when
    /// indexed) contracted by one GEMM: the intermediate stays under
    /// MAX_INTERMEDIATE.
    rows: usize,
    /// Rows of the outer factor's matrix.
    total: usize,
    /// Neurons whose weights are contracted by one GEMM.
    batch: usize,
}

impl Plan {
    /// Per neuron, contracting factor k costs (its matrix's rows) · d for
    /// the GEMM plus terms · d / d_k for the rest; the cheaper outer factor
    /// is chosen. For unindexed factors that is the larger d_k (the first
    /// on ties); for indexed ones a small entity table can win over a large
    /// d_k.
    fn new(f: &Factors<'_>, d: usize) -> Plan {
        let (p, terms) = (f.p(), f.n() as f64);
        let cost = |k: usize| f.mat(k).nrows() as f64 * d as f64 + terms * (d / f.mat(k).ncols()) as f64;
        let first = p == 1 || cost(0) <= cost(p - 1);
        let outer = if first { 0 } else { p - 1 };
        let dk = f.mat(outer).ncols();
        let rest = d / dk;
        let total = f.mat(outer).nrows();
        let batch = neurons_per_gemm(rest);
        let rows = (MAX_INTERMEDIATE / (batch * rest).max(1)).max(1).min(total.max(1));
        Plan { first, outer, dk, rest, rows, total, batch }
    }

    /// The same plan with `batch` neurons per GEMM (and the rows per GEMM
    /// that keep the intermediate under MAX_INTERMEDIATE).
    fn with_batch(self, batch: usize) -> Plan {
        let rows = (MAX_INTERMEDIATE / (batch * self.rest).max(1)).max(1).min(self.total.max(1));
        Plan { batch, rows, ..self }
    }

    /// The weights of `b` neurons (each d values, row-major d_1 × … × d_p)
    /// as the one matrix the GEMM multiplies: d_k × (b · rest), neuron c in
    /// columns [c · rest, (c + 1) · rest) — W_c (d_1 × rest) when the first
    /// factor is contracted, W_cᵀ (rest × d_p, transposed) for the last.
    fn lay_out(&self, w: &[f64], b: usize, out: &mut [f64]) {
        let (dk, rest) = (self.dk, self.rest);
        let d = dk * rest;
        let cols = b * rest;
        for (c, wc) in w.chunks_exact(d).take(b).enumerate() {
            if self.first {
                for a in 0..dk {
                    out[a * cols + c * rest..a * cols + (c + 1) * rest].copy_from_slice(&wc[a * rest..(a + 1) * rest]);
                }
            } else {
                for a in 0..rest {
                    for (bb, &v) in wc[a * dk..(a + 1) * dk].iter().enumerate() {
                        out[bb * cols + c * rest + a] = v;
                    }
                }
            }
        }
    }
}

/// The terms grouped by the outer factor's row: for an indexed outer factor
/// the terms using table rows [a, b) are `terms[start[a]..start[b]]` (a
/// counting sort, O(N + n), once per init); otherwise term t uses row t.
enum Order {
    Rows,
    ByTableRow { terms: Vec<usize>, start: Vec<usize> },
}

impl Order {
    fn new(f: &Factors<'_>, outer: usize) -> Result<Order> {
        let Some(idx) = f.index(outer) else {
            return Ok(Order::Rows);
        };
        let rows = f.mat(outer).nrows();
        let mut start = try_zeros_usize(rows + 1)?;
        for &a in idx.iter() {
            start[a as usize + 1] += 1;
        }
        for a in 0..rows {
            start[a + 1] += start[a];
        }
        let mut next = start.clone();
        let mut terms = try_zeros_usize(idx.len())?;
        for (t, &a) in idx.iter().enumerate() {
            terms[next[a as usize]] = t;
            next[a as usize] += 1;
        }
        Ok(Order::ByTableRow { terms, start })
    }
}

fn try_zeros_usize(len: usize) -> Result<Vec<usize>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| crate::error::out_of_memory("init's grouping of terms", 8 * len as u128))?;
    v.resize(len, 0);
    Ok(v)
}

struct Scratch {
    t: Array2<f64>,
    vec: Vec<f64>,
    /// The grouped contraction's products (neurons × a table row's points).
    prod: Vec<f64>,
}

impl Scratch {
    fn new(plan: &Plan) -> Result<Scratch> {
        let what = "init's intermediate (rows × d / d_k per thread)";
        let t = try_array2(plan.rows, plan.batch * plan.rest, what)?;
        let mut vec = Vec::new();
        vec.try_reserve_exact(plan.rest).map_err(|_| crate::error::out_of_memory(what, 8 * plan.rest as u128))?;
        Ok(Scratch { t, vec, prod: Vec::new() })
    }
}

/// out[c, i] = <w_c, x_i> for the `b` neurons whose weights are `w`: laid
/// out by `Plan::lay_out` when the plan batches neurons, else one neuron's
/// row-major d values.
#[allow(clippy::too_many_arguments)]
fn contract_neurons(
    f: &Factors<'_>,
    plan: &Plan,
    order: &Order,
    w: &[f64],
    b: usize,
    scratch: &mut Scratch,
    mut out: ArrayViewMut2<'_, f64>,
    sorted: Option<&Array2<f64>>,
) {
    let p = f.p();
    let remaining: Vec<usize> = if plan.first { (1..p).collect() } else { (0..p - 1).collect() };
    let outer = f.mat(plan.outer);
    let (rest, cols) = (plan.rest, b * plan.rest);
    let wm = if plan.batch > 1 || plan.first {
        ArrayView2::from_shape((plan.dk, cols), w).expect("weights are d_k × (b · rest)")
    } else {
        ArrayView2::from_shape((rest, plan.dk), w).expect("d = rest · d_k").reversed_axes()
    };
    let mut start = 0;
    while start < plan.total {
        let stop = (start + plan.rows).min(plan.total);
        let members = match order {
            Order::Rows => None,
            Order::ByTableRow { terms, start: first } => {
                let m = &terms[first[start]..first[stop]];
                if m.is_empty() {
                    // No term uses these table rows: no GEMM for them.
                    start = stop;
                    continue;
                }
                Some(m)
            }
        };
        let mut t: ArrayViewMut2<f64> = scratch.t.slice_mut(s![..stop - start, ..cols]);
        matmul_into(&outer.slice(s![start..stop, ..]), &wm, &mut t);
        let (vec, prodbuf) = (&mut scratch.vec, &mut scratch.prod);
        let t = t.view();
        let mut visit = |out: &mut ArrayViewMut2<'_, f64>, i: usize, local: usize| {
            let row = t.row(local);
            let row = row.as_slice().expect("scratch rows are contiguous");
            for c in 0..b {
                let part = ndarray::ArrayView1::from(&row[c * rest..(c + 1) * rest]);
                out[[c, i]] = contract_rest(part, f, &remaining, i, vec);
            }
        };
        match (members, order) {
            (Some(_), Order::ByTableRow { terms, start: first }) if sorted.is_some() => {
                let sorted = sorted.expect("checked by the guard");
                for a in start..stop {
                    let (g0, g1) = (first[a], first[a + 1]);
                    let group = &terms[g0..g1];
                    if group.len() < GROUP_GEMM_MIN {
                        group.iter().for_each(|&i| visit(&mut out, i, a - start));
                        continue;
                    }
                    // out[c, group] = T_a (b × rest) · X_lastᵀ (rest × |group|).
                    let ta = ArrayView2::from_shape(
                        (b, rest),
                        &t.row(a - start).to_slice().expect("contiguous")[..b * rest],
                    )
                    .expect("the row holds b · rest values");
                    let xs = sorted.slice(s![g0..g1, ..]);
                    let len = b * group.len();
                    if prodbuf.len() < len {
                        prodbuf.resize(len, 0.0);
                    }
                    let mut prod = ArrayViewMut2::from_shape((b, group.len()), &mut prodbuf[..len])
                        .expect("the scratch holds the product");
                    matmul_into(&ta, &xs.t(), &mut prod);
                    for (k, &i) in group.iter().enumerate() {
                        for c in 0..b {
                            out[[c, i]] = prod[[c, k]];
                        }
                    }
                }
            }
            (None, _) => (start..stop).for_each(|i| visit(&mut out, i, i - start)),
            (Some(m), _) => m.iter().for_each(|&i| visit(&mut out, i, f.table_row(plan.outer, i) - start)),
        }
        start = stop;
    }
}

/// Contracts a row-major tensor over the `remaining` factors' axes with
/// term i's rows, last axis first, down to a scalar. The first contraction
/// reads `t` directly (for p = 2 it is the whole job: one dot product per
/// term, called n · m times, so no copying on the way).
fn contract_rest(
    t: ndarray::ArrayView1<'_, f64>,
    f: &Factors<'_>,
    remaining: &[usize],
    i: usize,
    buf: &mut Vec<f64>,
) -> f64 {
    let t = t.as_slice().expect("scratch rows are contiguous");
    let Some((&last, inner)) = remaining.split_last() else {
        return t[0];
    };
    let mut owned = Vec::new();
    let last_row = f.row(last, i);
    let last = row_slice(&last_row, &mut owned);
    if inner.is_empty() {
        return dot(t, last);
    }
    buf.clear();
    buf.extend(t.chunks_exact(last.len()).map(|chunk| dot(chunk, last)));
    for &k in inner.iter().rev() {
        let mut owned = Vec::new();
        let row = f.row(k, i);
        let ui = row_slice(&row, &mut owned);
        let len = buf.len() / ui.len();
        for q in 0..len {
            buf[q] = dot(&buf[q * ui.len()..(q + 1) * ui.len()], ui);
        }
        buf.truncate(len);
    }
    buf[0]
}

/// A row as a slice, copied into `owned` only if it is strided.
fn row_slice<'b>(row: &'b ndarray::ArrayView1<'_, f64>, owned: &'b mut Vec<f64>) -> &'b [f64] {
    match row.as_slice() {
        Some(r) => r,
        None => {
            *owned = row.to_vec();
            owned
        }
    }
}

/// Dot product with four running sums: one chain of dependent adds would
/// cost a full add latency per element, and init makes n · m · d / d_k of them.
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4.remainder().iter().zip(b4.remainder()).map(|(x, y)| x * y).sum();
    let mut acc = [0.0; 4];
    for (x, y) in a4.zip(b4) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// W(0) materialized (m × d): only for small d (`dense_weights`, dense backend).
pub fn initial_weight_matrix(seed: u64, width: usize, d: usize, ctl: &Control) -> Result<Array2<f64>> {
    let mut w = try_array2(width, d, "weight matrix (width × d)")?;
    w.axis_iter_mut(Axis(0)).into_par_iter().enumerate().try_for_each(|(r, mut row)| {
        ctl.check()?;
        let slice = row.as_slice_mut().expect("fresh array is standard layout");
        initial_weights(seed, r, slice);
        Ok(())
    })?;
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factors::views;
    use ndarray::Array1;

    /// P(0)ᵀ through the factors whatever d is (at small d the public
    /// function materializes the points instead).
    fn factored(f: &Factors<'_>, seed: u64, width: usize, ctl: &Control) -> Array2<f64> {
        let d = check_shape(f, width).unwrap();
        let mut p_t = Array2::zeros((width, f.n()));
        factored_init(f, d, &mut p_t, ctl, &|r, wc| initial_weights(seed, r, wc)).unwrap();
        p_t
    }

    fn pseudo(n: usize, d: usize, salt: u64) -> Array2<f64> {
        let mut z = vec![0.0; n * d];
        crate::rng::initial_weights(salt, 1, &mut z);
        Array2::from_shape_vec((n, d), z).unwrap()
    }

    fn check(dims: &[usize], n: usize, m: usize) {
        let mats: Vec<_> = dims.iter().enumerate().map(|(k, &dk)| pseudo(n, dk, 100 + k as u64)).collect();
        let f = Factors::new(views(&mats)).unwrap();
        let d = f.d().unwrap();
        let ctl = Control::new();
        let p = init_preacts_t(&f, 5, m, &ctl).unwrap().reversed_axes();
        let pf = factored(&f, 5, m, &ctl).reversed_axes();
        let w = initial_weight_matrix(5, m, d, &ctl).unwrap();
        let mut x = Vec::new();
        for i in 0..n {
            f.dense_row(i, &mut x);
            for r in 0..m {
                let brute: f64 = w.row(r).iter().zip(&x).map(|(a, b)| a * b).sum();
                let scale: f64 = w.row(r).iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                assert!((p[[i, r]] - brute).abs() <= 1e-12 * scale, "dims {dims:?} i {i} r {r}");
                assert!((pf[[i, r]] - brute).abs() <= 1e-12 * scale, "factored: dims {dims:?} i {i} r {r}");
            }
        }
    }

    /// Points of several terms against their materialized sums.
    #[test]
    fn init_of_rank_r_points_matches_dense_product() {
        for (dims, rank) in [(vec![3usize, 4], 3usize), (vec![2, 3, 2], 2), (vec![5], 4)] {
            let (n, m) = (5, 9);
            let mats: Vec<_> = dims.iter().enumerate().map(|(k, &dk)| pseudo(n * rank, dk, 200 + k as u64)).collect();
            let f = Factors::with_rank(views(&mats), rank).unwrap();
            let d = f.d().unwrap();
            let ctl = Control::new();
            let p = factored(&f, 3, m, &ctl).reversed_axes();
            let pd = init_preacts_t(&f, 3, m, &ctl).unwrap().reversed_axes();
            assert!((&p - &pd).iter().all(|v| v.abs() <= 1e-12), "{dims:?} r={rank}: paths differ");
            let w = initial_weight_matrix(3, m, d, &ctl).unwrap();
            let mut x = Vec::new();
            for i in 0..n {
                f.dense_row(i, &mut x);
                for r in 0..m {
                    let brute: f64 = w.row(r).iter().zip(&x).map(|(a, b)| a * b).sum();
                    let scale: f64 = w.row(r).iter().zip(&x).map(|(a, b)| (a * b).abs()).sum::<f64>() * rank as f64;
                    assert!((p[[i, r]] - brute).abs() <= 1e-12 * scale.max(1e-300), "{dims:?} r={rank} i {i} n {r}");
                }
            }
        }
    }

    /// Entity tables with an index against the same points gathered into
    /// rows: small tables make the plan contract a table by the GEMM
    /// (either outer factor), and unused table rows are skipped.
    #[test]
    fn init_of_indexed_points_matches_gathered_rows() {
        for (dims, sizes) in
            [(vec![4usize, 6], vec![3usize, 50]), (vec![6, 4], vec![50, 3]), (vec![3, 2, 5], vec![2, 9, 4])]
        {
            let tables: Vec<_> =
                dims.iter().zip(&sizes).enumerate().map(|(k, (&dk, &nk))| pseudo(nk, dk, 300 + k as u64)).collect();
            let n = 23;
            let idx: Vec<Array1<u64>> = sizes
                .iter()
                .enumerate()
                .map(|(k, &nk)| (0..n).map(|i| ((i * (2 * k + 3) + i / 4) % nk.min(7)) as u64).collect())
                .collect();
            let f = Factors::indexed(views(&tables), idx.iter().map(|i| Some(i.view())).collect(), 1).unwrap();
            let ctl = Control::new();
            let got = factored(&f, 9, 13, &ctl);
            let want = factored(&f.gathered().view(), 9, 13, &ctl);
            let err = (&got - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err <= 1e-12, "{dims:?}: {err}");
        }
    }

    #[test]
    fn a_stop_request_interrupts_init() {
        let mats = vec![pseudo(4, 3, 1), pseudo(4, 2, 2)];
        let f = Factors::new(views(&mats)).unwrap();
        let ctl = Control::new();
        ctl.request_stop();
        assert_eq!(init_preacts_t(&f, 1, 64, &ctl).unwrap_err(), crate::error::KronError::Interrupted);
        let d = check_shape(&f, 64).unwrap();
        let mut p_t = Array2::zeros((64, f.n()));
        assert_eq!(
            factored_init(&f, d, &mut p_t, &ctl, &|r, wc| initial_weights(1, r, wc)).unwrap_err(),
            crate::error::KronError::Interrupted
        );
    }

    #[test]
    fn init_matches_dense_product() {
        check(&[3, 4], 5, 11);
        check(&[4, 3], 5, 9);
        check(&[2, 17], 7, 3);
        check(&[2, 5, 3], 6, 10);
        check(&[3, 1, 2], 4, 17);
        check(&[6], 3, 4);
        // One neuron per GEMM (d / d_k >= TARGET_COLUMNS), either outer factor.
        check(&[300, 256], 3, 2);
        check(&[256, 300], 3, 2);
        // A batch of neurons per GEMM with a partial last batch.
        check(&[8, 8], 4, NEURON_BLOCK + 3);
        // The dense path: two tasks, the first of several blocks of rows.
        check(&[8, 8], 4, DENSE_NEURON_BLOCK + 44);
    }

    /// The two dense paths (W(0) drawn inside the product, and the general
    /// GEMM on X materialized) on the same rows of P(0)ᵀ, for a range that
    /// starts mid-task and points of two terms.
    #[test]
    fn the_dense_paths_agree() {
        if !crate::packed::supported() {
            return;
        }
        let mats = vec![pseudo(2 * 9, 12, 41), pseudo(2 * 9, 25, 42)];
        let f = Factors::with_rank(views(&mats), 2).unwrap();
        let ctl = Control::new();
        let (first, count) = (7, DENSE_NEURON_BLOCK + 101);
        let mut gemm = Array2::zeros((count, f.n()));
        dense_init_gemm(&f, 3, first, &mut gemm, &ctl).unwrap();
        let mut drawn = Array2::from_elem((count, f.n()), f64::NAN);
        dense_init_drawn(&f, 3, first, &mut drawn, &ctl).unwrap();
        let err = (&gemm - &drawn).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let size = gemm.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(err <= 1e-12 * size, "{err} against {size}");
    }
}
