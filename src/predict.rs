//! Preactivations and outputs of any points under the trained weights
//! W = W(0) + Σ_s α_sᵀ X_s (docs/design.md, "The algorithm"):
//! <w_r, x'> = <w_r(0), x'> + Σ_s Σ_i α_s[r, i] <x_{s,i}, x'>, the first term
//! by regenerating W(0) (`init.rs`), the second by per-factor cross-Grams
//! (`gram.rs`). No m × d array exists; `predict` works through the points in
//! chunks so that its memory is bounded whatever their number.

use crate::coef::Coefficients;
use crate::control::Control;
use crate::elem::Elem;
use crate::error::{invalid, try_array2_of, Result};
use crate::exact_sum::{ExactSum, WORDS};
use crate::factors::Factors;
use crate::gram::cross_gram;
use crate::init::InitialWeights;
use crate::matmul::matmul_acc;
use crate::model::Model;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Neurons per task of the α · K product: fixed, so results do not depend on
/// the thread count. Shards of a sharded net start at multiples of it
/// (`kronnet.placement.mpi.neuron_range`), so their blocks are the same GEMMs.
pub const NEURON_BLOCK: usize = 64;

/// One training set's part of the weights: its points and their α.
pub struct Block<'a> {
    pub factors: Factors<'a>,
    pub coef: &'a Coefficients,
}

fn check_blocks(query: &Factors<'_>, width: usize, outputs: usize, blocks: &[Block<'_>]) -> Result<()> {
    for (j, b) in blocks.iter().enumerate() {
        if b.factors.dims() != query.dims() {
            return invalid(
                "blocks",
                format!("block {j} has dims {:?}, the points have {:?}", b.factors.dims(), query.dims()),
            );
        }
        b.coef.check_shape(b.factors.n(), width, outputs)?;
    }
    Ok(())
}

/// Whether any block carries a linear term.
fn has_linear(blocks: &[Block<'_>]) -> bool {
    blocks.iter().any(|b| b.coef.linear())
}

/// out (q × C) += K β̃ for a block's cross-Gram K (q × n_s), in fixed
/// blocks of points (so the same bits on any thread count and any rank).
fn add_linear(out: &mut ArrayViewMut2<'_, f64>, k: &Array2<f64>, beta: ArrayView2<'_, f64>) {
    const POINTS: usize = 64;
    out.axis_chunks_iter_mut(Axis(0), POINTS).into_par_iter().enumerate().for_each(|(blk, mut rows)| {
        let start = blk * POINTS;
        let kb = k.slice(s![start..start + rows.nrows(), ..]);
        matmul_acc(&kb, &beta, &mut rows.view_mut());
    });
}

/// The unscaled linear parts <Σ_blocks β̃ᵀ X, x'_j> of the points of
/// `query` (q × C), or None when no block has a linear term.
pub fn linear_parts(
    query: &Factors<'_>,
    outputs: usize,
    blocks: &[Block<'_>],
    ctl: &Control,
) -> Result<Option<Array2<f64>>> {
    if !has_linear(blocks) {
        return Ok(None);
    }
    let mut out = Array2::zeros((query.n(), outputs));
    for b in blocks.iter().filter(|b| b.coef.linear()) {
        for (start, stop) in gram_chunks(query.n(), b.factors.n()) {
            ctl.check()?;
            let k = cross_gram(&query.rows(start, stop), &b.factors)?;
            add_linear(&mut out.slice_mut(s![start..stop, ..]), &k, b.coef.beta());
        }
    }
    Ok(Some(out))
}

/// Bytes of cross-Gram (query rows × block points) one pass may hold: a
/// trainer on a large trained block (n × n would be tens of GiB at
/// n = 80,000) works through its points in row chunks under this.
pub const GRAM_CHUNK_BYTES: usize = 256 << 20;

/// Row ranges of the query for cross-Grams against `block_n` points: one
/// range when the whole cross-Gram fits `GRAM_CHUNK_BYTES` (the GEMMs are
/// then those of an unchunked pass), else chunks of a multiple of 64 rows.
fn gram_chunks(query_n: usize, block_n: usize) -> Vec<(usize, usize)> {
    let whole = query_n.saturating_mul(block_n).saturating_mul(8);
    let rows = if whole <= GRAM_CHUNK_BYTES {
        query_n.max(1)
    } else {
        ((GRAM_CHUNK_BYTES / 8 / block_n.max(1)) / 64 * 64).max(64)
    };
    (0..query_n).step_by(rows).map(|a| (a, (a + rows).min(query_n))).collect()
}

/// Pᵀ (m × q) of the points in `query`: P[j, r] = <w_r, x'_j>.
pub fn preacts_t(
    query: &Factors<'_>,
    init: &InitialWeights,
    width: usize,
    blocks: &[Block<'_>],
    ctl: &Control,
) -> Result<Array2<f64>> {
    preacts_t_part(query, init, 0, width, blocks, ctl)
}

/// Rows `first .. first + count` of Pᵀ: the neurons of one rank's shard,
/// whose blocks hold α for exactly those neurons (n_s × count).
pub fn preacts_t_part(
    query: &Factors<'_>,
    init: &InitialWeights,
    first: usize,
    count: usize,
    blocks: &[Block<'_>],
    ctl: &Control,
) -> Result<Array2<f64>> {
    preacts_t_phases(query, init, first, count, blocks, ctl, || {})
}

/// `preacts_t_part` in its two phases, init's W(0) part and then each
/// trained block's cross-Gram part, calling `between` in between when a
/// block is trained.
fn preacts_t_phases(
    query: &Factors<'_>,
    init: &InitialWeights,
    first: usize,
    count: usize,
    blocks: &[Block<'_>],
    ctl: &Control,
    between: impl Fn(),
) -> Result<Array2<f64>> {
    for (j, b) in blocks.iter().enumerate() {
        if b.factors.dims() != query.dims() {
            return invalid(
                "blocks",
                format!("block {j} has dims {:?}, the points have {:?}", b.factors.dims(), query.dims()),
            );
        }
        if b.coef.alpha_t().dim() != (b.factors.n(), count) {
            return invalid(
                "coefficients",
                format!("have shape {:?}, expected ({}, {count})", b.coef.alpha_t().dim(), b.factors.n()),
            );
        }
    }
    let mut p_t = init.preacts_t_range(query, first, count, ctl)?;
    if blocks.iter().any(|b| b.coef.trained()) {
        between();
    }
    for b in blocks {
        ctl.check()?;
        add_trained(&mut p_t, query, b)?;
    }
    Ok(p_t)
}

/// A trainer's starting Pᵀ: `preacts_t_part` stored as `T`, with the free
/// memory handed back (`pages::release_free_memory`) after init and after
/// the cross-Grams, so that neither phase's transients stay resident beside
/// the next (the cross-Grams, then the trainer's Gram and index). For
/// float32 and a net with no trained block (a new trainer's usual start),
/// the rows are computed 256 neurons at a time (whole 64-neuron blocks, as
/// one process computes them) and rounded, so the float64 Pᵀ never exists
/// whole: its peak is the float32 array plus one chunk.
pub fn preacts_t_part_as<T: Elem>(
    query: &Factors<'_>,
    init: &InitialWeights,
    first: usize,
    count: usize,
    blocks: &[Block<'_>],
    ctl: &Control,
) -> Result<Array2<T>> {
    use crate::pages::release_free_memory;
    if T::BYTES == 8 || blocks.iter().any(|b| b.coef.trained()) {
        let p_t = preacts_t_phases(query, init, first, count, blocks, ctl, release_free_memory)?;
        release_free_memory();
        return Ok(T::from_f64_array(p_t));
    }
    const CHUNK: usize = 256;
    let mut out = try_array2_of::<T>(count, query.n(), "preactivations")?;
    for j0 in (0..count).step_by(CHUNK) {
        let c = CHUNK.min(count - j0);
        let part = init.preacts_t_range(query, first + j0, c, ctl)?;
        out.slice_mut(ndarray::s![j0..j0 + c, ..]).zip_mut_with(&part, |o, v| *o = T::from_f64(*v));
    }
    release_free_memory();
    Ok(out)
}

/// Pᵀ += α_sᵀ-part: Pᵀ[r, j] += Σ_i αᵀ[i, r] K[j, i], K = cross-Gram (q × n_s),
/// in fixed blocks of neurons.
fn add_trained(p_t: &mut Array2<f64>, query: &Factors<'_>, b: &Block<'_>) -> Result<()> {
    if query.n() == 0 || !b.coef.trained() {
        return Ok(());
    }
    for (start, stop) in gram_chunks(query.n(), b.factors.n()) {
        let k = cross_gram(&query.rows(start, stop), &b.factors)?;
        add_alpha_gram(&mut p_t.slice_mut(s![.., start..stop]), 0, b.coef.alpha_t(), &k);
    }
    Ok(())
}

/// Pᵀ[r, j] += Σ_i αᵀ[i, first + r] K[j, i] for the rows r of `p_t`
/// (neurons first, first + 1, …; K the q × n_s cross-Gram), in fixed blocks
/// of neurons.
fn add_alpha_gram(p_t: &mut ArrayViewMut2<'_, f64>, first: usize, alpha_t: ArrayView2<'_, f64>, k: &Array2<f64>) {
    p_t.axis_chunks_iter_mut(Axis(0), NEURON_BLOCK).into_par_iter().enumerate().for_each(|(blk, mut rows)| {
        let start = first + blk * NEURON_BLOCK;
        let a = alpha_t.slice(s![.., start..start + rows.nrows()]);
        matmul_acc(&a.t(), &k.t(), &mut rows.view_mut());
    });
}

/// Bytes one chunk of `rows` points of `rank` terms needs: Pᵀ (m × rows),
/// each block's cross-Gram (rows × n_s) one at a time, init's per-thread
/// scratch (`table_rows`: the largest entity table of indexed points).
#[allow(clippy::too_many_arguments)]
pub fn chunk_bytes(
    init: &InitialWeights,
    dims: &[usize],
    width: usize,
    block_sizes: &[usize],
    rows: usize,
    rank: usize,
    table_rows: usize,
    threads: usize,
) -> u128 {
    let biggest = block_sizes.iter().copied().max().unwrap_or(0) as u128;
    8 * rows as u128 * (width as u128 + biggest) + init.scratch_bytes(dims, rows, rank, table_rows, threads)
}

/// Points per chunk so that a chunk's arrays take about `budget` bytes (at
/// least one point).
pub fn chunk_rows(width: usize, block_sizes: &[usize], budget: usize) -> usize {
    let per_row = 8 * (width + block_sizes.iter().copied().max().unwrap_or(0));
    (budget / per_row.max(1)).max(1)
}

/// f(x'_j) for every point of `query` (q × C, row-major), `rows` points
/// at a time. Checks `ctl` between chunks and inside init.
pub fn predict(
    query: &Factors<'_>,
    model: &Model,
    init: &InitialWeights,
    blocks: &[Block<'_>],
    rows: usize,
    ctl: &Control,
) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    let len = query.n() * model.outputs();
    out.try_reserve_exact(len).map_err(|_| crate::error::out_of_memory("predictions", 8 * len as u128))?;
    predict_sums(query, model, init, 0, blocks, rows, ctl, |sums, lin| out.extend(model.outputs_of(sums, lin)))?;
    Ok(out)
}

/// The exact sums Σ_r a_rk (<w_r, x'_j> − b_r)_+ over `model`'s neurons
/// (the net's `first .. first + model.width()`; the blocks hold their α)
/// for every point of `query` (C per point), handed to `sink` in order with
/// the points' unscaled linear parts (when the net has a linear term), a
/// chunk of points at a time: `predict` on one rank, each rank's part of it
/// when sharded (the linear parts are the same on every rank).
#[allow(clippy::too_many_arguments)]
pub fn predict_sums(
    query: &Factors<'_>,
    model: &Model,
    init: &InitialWeights,
    first: usize,
    blocks: &[Block<'_>],
    rows: usize,
    ctl: &Control,
    mut sink: impl FnMut(&[ExactSum], Option<&[f64]>),
) -> Result<()> {
    let width = model.width();
    check_blocks(query, width, model.outputs(), blocks)?;
    let q = query.n();
    // The whole net's width decides the path, so that every rank of a
    // sharded net groups the points as one process would (GEMMs of other
    // shapes may round differently).
    if let Some(neurons) = neurons_per_pass(q, model.net_width(), model.outputs(), blocks, rows) {
        let (sums, lin) = predict_by_neurons(query, model, init, first, blocks, neurons, ctl)?;
        sink(&sums, lin.as_ref().map(|l| l.as_slice().expect("standard layout")));
        return Ok(());
    }
    let mut start = 0;
    while start < q {
        ctl.check()?;
        let stop = (start + rows.max(1)).min(q);
        let part = query.rows(start, stop);
        let p_t = preacts_t_part(&part, init, first, width, blocks, ctl)?;
        let lin = linear_parts(&part, model.outputs(), blocks, ctl)?;
        sink(&model.sums_neuron_major(p_t.view()), lin.as_ref().map(|l| l.as_slice().expect("standard layout")));
        start = stop;
    }
    Ok(())
}

/// `predict_sums` through folded weights (`fold.rs`): Pᵀ = W X'ᵀ of
/// `model`'s neurons (W: neurons held × d) through the factors, and the
/// linear parts through the folded linear weights `v` (C × d, unscaled),
/// `rows` points at a time. No training point is read: O(m · d) per point
/// or less, where `predict_sums` costs O(m · n_train).
#[allow(clippy::too_many_arguments)]
pub fn predict_sums_folded(
    query: &Factors<'_>,
    model: &Model,
    w: ArrayView2<'_, f64>,
    v: Option<ArrayView2<'_, f64>>,
    rows: usize,
    ctl: &Control,
    mut sink: impl FnMut(&[ExactSum], Option<&[f64]>),
) -> Result<()> {
    if w.nrows() != model.width() {
        return invalid("weights", format!("have {} rows for {} neurons", w.nrows(), model.width()));
    }
    if let Some(v) = v {
        if v.dim() != (model.outputs(), w.ncols()) {
            return invalid(
                "linear",
                format!("has shape {:?}, expected ({}, {})", v.dim(), model.outputs(), w.ncols()),
            );
        }
    }
    let q = query.n();
    let mut start = 0;
    while start < q {
        ctl.check()?;
        let stop = (start + rows.max(1)).min(q);
        let part = query.rows(start, stop);
        let p_t = crate::init::preacts_t_of_weights(&part, w, ctl)?;
        let lin = match v {
            Some(v) => Some(
                crate::init::preacts_t_of_weights(&part, v, ctl)?.reversed_axes().as_standard_layout().into_owned(),
            ),
            None => None,
        };
        sink(&model.sums_neuron_major(p_t.view()), lin.as_ref().map(|l| l.as_slice().expect("standard layout")));
        start = stop;
    }
    Ok(())
}

/// When the points need several chunks of `rows` but the cross-Grams of all
/// of them and their exact sums fit the chunk budget (rows × (m + largest
/// n_s) values), the neurons per pass of `predict_by_neurons`, which
/// regenerates W(0) once per call instead of once per chunk: the budget
/// left after the cross-Grams and sums, divided among the points.
fn neurons_per_pass(q: usize, width: usize, outputs: usize, blocks: &[Block<'_>], rows: usize) -> Option<usize> {
    if q <= rows {
        return None;
    }
    let trained: Vec<usize> =
        blocks.iter().filter(|b| b.coef.trained() || b.coef.linear()).map(|b| b.factors.n()).collect();
    let largest = trained.iter().copied().max().unwrap_or(0);
    let budget = rows.checked_mul(width + largest)?;
    let grams = q.checked_mul(trained.iter().sum::<usize>() + WORDS * outputs)?;
    let neurons = budget.checked_sub(grams)? / q;
    // Whole blocks of NEURON_BLOCK, so that passes start where the α · K
    // blocks of a one-pass run (and of every shard, which starts at a
    // multiple of NEURON_BLOCK) start.
    (neurons >= 1).then_some(neurons.next_multiple_of(NEURON_BLOCK).min(width))
}

/// `predict_sums` with the neurons in the outer loop: each pass regenerates
/// `neurons` neurons' W(0) for all the points (`InitialWeights::
/// preacts_t_range`), adds the trained part from cross-Grams computed once,
/// and adds a_r (P − b)_+ to every point's exact sum. Its GEMMs group the
/// points differently from the chunked path's, so the two agree to
/// rounding, not bit for bit; which path runs depends only on the whole
/// net's width, never on a shard's.
fn predict_by_neurons(
    query: &Factors<'_>,
    model: &Model,
    init: &InitialWeights,
    first: usize,
    blocks: &[Block<'_>],
    neurons: usize,
    ctl: &Control,
) -> Result<(Vec<ExactSum>, Option<Array2<f64>>)> {
    let (q, c) = (query.n(), model.outputs());
    let mut grams = Vec::new();
    let mut lin = has_linear(blocks).then(|| Array2::zeros((q, c)));
    for b in blocks.iter().filter(|b| b.coef.trained() || b.coef.linear()) {
        ctl.check()?;
        let k = cross_gram(query, &b.factors)?;
        if let (Some(out), true) = (lin.as_mut(), b.coef.linear()) {
            add_linear(&mut out.view_mut(), &k, b.coef.beta());
        }
        if b.coef.trained() {
            grams.push((k, b.coef.alpha_t()));
        }
    }
    let mut acc = Vec::new();
    acc.try_reserve_exact(q * c)
        .map_err(|_| crate::error::out_of_memory("predictions", (8 * WORDS * q * c) as u128))?;
    acc.resize(q * c, ExactSum::new());
    let width = model.width();
    let mut done = 0;
    while done < width {
        ctl.check()?;
        let count = neurons.min(width - done);
        let mut p_t = init.preacts_t_range(query, first + done, count, ctl)?;
        for (k, alpha_t) in &grams {
            add_alpha_gram(&mut p_t.view_mut(), done, *alpha_t, k);
        }
        model.accumulate_outputs(done, p_t.view(), &mut acc);
        done += count;
    }
    Ok((acc, lin))
}

/// The trained W (m × d), materialized: only for small d.
pub fn dense_weights(
    init: &InitialWeights,
    width: usize,
    dims: &[usize],
    blocks: &[Block<'_>],
    ctl: &Control,
) -> Result<Array2<f64>> {
    let mut w = init.weight_matrix(width, dims, ctl)?;
    for (j, b) in blocks.iter().enumerate() {
        ctl.check()?;
        if b.factors.dims() != dims {
            return invalid("blocks", format!("block {j} has dims {:?}, the net has {dims:?}", b.factors.dims()));
        }
        if b.coef.alpha_t().dim() != (b.factors.n(), width) {
            return invalid(
                "coefficients",
                format!("have shape {:?}, expected ({}, {width})", b.coef.alpha_t().dim(), b.factors.n()),
            );
        }
        let x = b.factors.materialize()?;
        // W[R, :] += α[R, :] X in fixed neuron blocks.
        let alpha_t = b.coef.alpha_t();
        w.axis_chunks_iter_mut(Axis(0), NEURON_BLOCK).into_par_iter().enumerate().for_each(|(blk, mut rows)| {
            let start = blk * NEURON_BLOCK;
            let a = alpha_t.slice(s![.., start..start + rows.nrows()]);
            matmul_acc(&a.t(), &x.view(), &mut rows.view_mut());
        });
    }
    Ok(w)
}

/// The linear term's unscaled weights Σ_blocks β̃ᵀ X (C × d), materialized:
/// only for small d. The linear term is v = s_v times it.
pub fn dense_linear(dims: &[usize], outputs: usize, blocks: &[Block<'_>], ctl: &Control) -> Result<Array2<f64>> {
    let d = dims
        .iter()
        .try_fold(1usize, |acc, &k| acc.checked_mul(k))
        .ok_or_else(|| crate::error::out_of_memory("the linear weights (outputs × d)", u128::MAX))?;
    let mut v = crate::error::try_array2(outputs, d, "the linear weights (outputs × d)")?;
    for b in blocks.iter().filter(|b| b.coef.linear()) {
        ctl.check()?;
        if b.coef.outputs() != outputs {
            return invalid("blocks", format!("a block has {} outputs, the net {outputs}", b.coef.outputs()));
        }
        let x = b.factors.materialize()?;
        matmul_acc(&b.coef.beta().t(), &x.view(), &mut v.view_mut());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factors::views;
    use crate::model::Model;
    use crate::rng::output_signs;

    fn pseudo(n: usize, d: usize, salt: u64) -> Array2<f64> {
        let mut z = vec![0.0; n * d];
        crate::rng::initial_weights(salt, 2, &mut z);
        Array2::from_shape_vec((n, d), z).unwrap()
    }

    /// Against W = W(0) + αᵀ X materialized, for any chunking, under both
    /// kinds of initial weights.
    #[test]
    fn predictions_equal_the_materialized_weights_for_any_chunk_size() {
        use crate::init::InitKind;
        for kind in [InitKind::Gaussian, InitKind::Kron { rank: 3 }] {
            let init = InitialWeights { seed: 7, kind };
            let (m, n, q) = (151, 9, 11);
            let train = vec![pseudo(n, 3, 1), pseudo(n, 4, 2)];
            let query = vec![pseudo(q, 3, 3), pseudo(q, 4, 4)];
            let (ft, fq) = (Factors::new(views(&train)).unwrap(), Factors::new(views(&query)).unwrap());
            let alpha_t = pseudo(n, m, 5);
            let coef = Coefficients::from_parts(alpha_t, Array2::zeros((n, 1))).unwrap();
            let blocks = [Block { factors: ft.clone(), coef: &coef }];
            let ctl = Control::new();
            let w = dense_weights(&init, m, &[3, 4], &blocks, &ctl).unwrap();
            let xq = fq.materialize().unwrap();
            let want = xq.dot(&w.t()); // q × m
            let got = preacts_t(&fq, &init, m, &blocks, &ctl).unwrap();
            let err = (&got.t() - &want).iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(err < 1e-12, "{err}");
            let model = Model::shared(output_signs(7, m), 0.3).unwrap();
            let whole = model.outputs_of_preacts(want.view(), None);
            // Room for every cross-Gram and exact sum plus a few neurons per
            // point: neurons outermost, W(0) regenerated once, in passes.
            let by_neurons = (q * (n + WORDS + 7)).div_ceil(m + n);
            let passes = neurons_per_pass(q, m, 1, &blocks, by_neurons).expect("neurons outermost");
            assert_eq!(passes, NEURON_BLOCK);
            assert_eq!(neurons_per_pass(q, m, 1, &blocks, 1), None);
            for rows in [1, 4, 11, 100, by_neurons] {
                let f = predict(&fq, &model, &init, &blocks, rows, &ctl).unwrap();
                let err = f.iter().zip(&whole).fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
                assert!(err < 1e-12, "rows {rows}: {err}");
            }
            let empty = vec![pseudo(0, 3, 1), pseudo(0, 4, 1)];
            assert!(predict(&Factors::new(views(&empty)).unwrap(), &model, &init, &blocks, 4, &ctl)
                .unwrap()
                .is_empty());
        }
    }

    /// Three outputs, per-neuron thresholds, a bias and a linear term:
    /// predictions against the formula on materialized weights, on both
    /// prediction paths (chunks of points, or neurons outermost).
    #[test]
    fn full_head_predictions_equal_the_formula() {
        let init = InitialWeights { seed: 3, kind: crate::init::InitKind::Gaussian };
        let (m, n, q, c) = (130, 8, 13, 3);
        let train = vec![pseudo(n, 3, 11), pseudo(n, 2, 12)];
        let query = vec![pseudo(q, 3, 13), pseudo(q, 2, 14)];
        let (ft, fq) = (Factors::new(views(&train)).unwrap(), Factors::new(views(&query)).unwrap());
        let coef = Coefficients::from_parts(pseudo(n, m, 15), pseudo(n, c, 16)).unwrap();
        let blocks = [Block { factors: ft.clone(), coef: &coef }];
        let ctl = Control::new();
        let a: Vec<f64> = pseudo(m, c, 17).iter().copied().collect();
        let b: Vec<f64> = pseudo(m, 1, 18).iter().map(|v| 0.5 * v).collect();
        let model = Model::new(a.clone(), c, b.clone(), vec![0.25, -1.0, 0.5], 0.3, 0.7).unwrap();
        let w = dense_weights(&init, m, &[3, 2], &blocks, &ctl).unwrap();
        let v = dense_linear(&[3, 2], c, &blocks, &ctl).unwrap();
        let xq = fq.materialize().unwrap();
        let z = xq.dot(&w.t());
        let lin = xq.dot(&v.t());
        let mut want = vec![0.0; q * c];
        for j in 0..q {
            for k in 0..c {
                let hidden: f64 = (0..m).map(|r| a[r * c + k] * (z[[j, r]] - b[r]).max(0.0)).sum();
                want[j * c + k] = hidden / (m as f64).sqrt() + model.c()[k] + 0.7 * lin[[j, k]];
            }
        }
        let by_neurons = (q * (n + WORDS * c + 7)).div_ceil(m + n);
        for rows in [1, 5, 100, by_neurons] {
            let f = predict(&fq, &model, &init, &blocks, rows, &ctl).unwrap();
            let err = f.iter().zip(&want).fold(0.0f64, |e, (x, y)| e.max((x - y).abs()));
            assert!(err < 1e-12, "rows {rows}: {err}");
        }
    }
}
