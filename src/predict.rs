//! Preactivations and outputs of any points under the trained weights
//! W = W(0) + Σ_s α_sᵀ X_s (docs/design.md, "The algorithm"):
//! <w_r, x'> = <w_r(0), x'> + Σ_s Σ_i α_s[r, i] <x_{s,i}, x'>, the first term
//! by regenerating W(0) (`init.rs`), the second by per-factor cross-Grams
//! (`gram.rs`). No m × d array exists; `predict` works through the points in
//! chunks so that its memory is bounded whatever their number.

use crate::coef::Coefficients;
use crate::control::Control;
use crate::error::{invalid, Result};
use crate::exact_sum::{ExactSum, WORDS};
use crate::factors::Factors;
use crate::gram::cross_gram;
use crate::init::InitialWeights;
use crate::matmul::matmul_acc;
use crate::model::Model;
use ndarray::{s, Array2, ArrayView2, Axis};
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

fn check_blocks(query: &Factors<'_>, width: usize, blocks: &[Block<'_>]) -> Result<()> {
    for (j, b) in blocks.iter().enumerate() {
        if b.factors.dims() != query.dims() {
            return invalid(
                "blocks",
                format!("block {j} has dims {:?}, the points have {:?}", b.factors.dims(), query.dims()),
            );
        }
        b.coef.check_shape(b.factors.n(), width)?;
    }
    Ok(())
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
    check_blocks(query, count, blocks)?;
    let mut p_t = init.preacts_t_range(query, first, count, ctl)?;
    for b in blocks {
        ctl.check()?;
        add_trained(&mut p_t, query, b)?;
    }
    Ok(p_t)
}

/// Pᵀ += α_sᵀ-part: Pᵀ[r, j] += Σ_i αᵀ[i, r] K[j, i], K = cross-Gram (q × n_s),
/// in fixed blocks of neurons.
fn add_trained(p_t: &mut Array2<f64>, query: &Factors<'_>, b: &Block<'_>) -> Result<()> {
    if query.n() == 0 || !b.coef.trained() {
        return Ok(());
    }
    let k = cross_gram(query, &b.factors)?;
    add_alpha_gram(p_t, 0, b.coef.alpha_t(), &k);
    Ok(())
}

/// Pᵀ[r, j] += Σ_i αᵀ[i, first + r] K[j, i] for the rows r of `p_t`
/// (neurons first, first + 1, …; K the q × n_s cross-Gram), in fixed blocks
/// of neurons.
fn add_alpha_gram(p_t: &mut Array2<f64>, first: usize, alpha_t: ArrayView2<'_, f64>, k: &Array2<f64>) {
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

/// f(W, x'_j) for every point of `query`, `rows` points at a time (q,).
/// Checks `ctl` between chunks and inside init.
pub fn predict(
    query: &Factors<'_>,
    model: &Model,
    init: &InitialWeights,
    blocks: &[Block<'_>],
    rows: usize,
    ctl: &Control,
) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    out.try_reserve_exact(query.n()).map_err(|_| crate::error::out_of_memory("predictions", 8 * query.n() as u128))?;
    predict_sums(query, model, init, 0, blocks, rows, ctl, |sums| out.extend(model.outputs_of(sums)))?;
    Ok(out)
}

/// The exact sums Σ_r a_r (<w_r, x'_j> − b)_+ over `model`'s neurons (the
/// net's `first .. first + model.width()`; the blocks hold their α) for
/// every point of `query`, handed to `sink` in order, a chunk of points at
/// a time: `predict` on one rank, each rank's part of it when sharded.
#[allow(clippy::too_many_arguments)]
pub fn predict_sums(
    query: &Factors<'_>,
    model: &Model,
    init: &InitialWeights,
    first: usize,
    blocks: &[Block<'_>],
    rows: usize,
    ctl: &Control,
    mut sink: impl FnMut(&[ExactSum]),
) -> Result<()> {
    let width = model.width();
    check_blocks(query, width, blocks)?;
    let q = query.n();
    // The whole net's width decides the path, so that every rank of a
    // sharded net groups the points as one process would (GEMMs of other
    // shapes may round differently).
    if let Some(neurons) = neurons_per_pass(q, model.net_width(), blocks, rows) {
        sink(&predict_by_neurons(query, model, init, first, blocks, neurons, ctl)?);
        return Ok(());
    }
    let mut start = 0;
    while start < q {
        ctl.check()?;
        let stop = (start + rows.max(1)).min(q);
        let p_t = preacts_t_part(&query.rows(start, stop), init, first, width, blocks, ctl)?;
        sink(&model.sums_neuron_major(p_t.view()));
        start = stop;
    }
    Ok(())
}

/// When the points need several chunks of `rows` but the cross-Grams of all
/// of them and their exact sums fit the chunk budget (rows × (m + largest
/// n_s) values), the neurons per pass of `predict_by_neurons`, which
/// regenerates W(0) once per call instead of once per chunk: the budget
/// left after the cross-Grams and sums, divided among the points.
fn neurons_per_pass(q: usize, width: usize, blocks: &[Block<'_>], rows: usize) -> Option<usize> {
    if q <= rows {
        return None;
    }
    let trained: Vec<usize> = blocks.iter().filter(|b| b.coef.trained()).map(|b| b.factors.n()).collect();
    let largest = trained.iter().copied().max().unwrap_or(0);
    let budget = rows.checked_mul(width + largest)?;
    let grams = q.checked_mul(trained.iter().sum::<usize>() + WORDS)?;
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
) -> Result<Vec<ExactSum>> {
    let q = query.n();
    let mut grams = Vec::new();
    for b in blocks.iter().filter(|b| b.coef.trained()) {
        ctl.check()?;
        grams.push((cross_gram(query, &b.factors)?, b.coef.alpha_t()));
    }
    let mut acc = Vec::new();
    acc.try_reserve_exact(q).map_err(|_| crate::error::out_of_memory("predictions", (8 * WORDS * q) as u128))?;
    acc.resize(q, ExactSum::new());
    let width = model.width();
    let mut done = 0;
    while done < width {
        ctl.check()?;
        let count = neurons.min(width - done);
        let mut p_t = init.preacts_t_range(query, first + done, count, ctl)?;
        for (k, alpha_t) in &grams {
            add_alpha_gram(&mut p_t, done, *alpha_t, k);
        }
        model.accumulate_outputs(done, p_t.view(), &mut acc);
        done += count;
    }
    Ok(acc)
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
        b.coef.check_shape(b.factors.n(), width)?;
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
            let coef = Coefficients::from_alpha_t(alpha_t).unwrap();
            let blocks = [Block { factors: ft.clone(), coef: &coef }];
            let ctl = Control::new();
            let w = dense_weights(&init, m, &[3, 4], &blocks, &ctl).unwrap();
            let xq = fq.materialize().unwrap();
            let want = xq.dot(&w.t()); // q × m
            let got = preacts_t(&fq, &init, m, &blocks, &ctl).unwrap();
            let err = (&got.t() - &want).iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(err < 1e-12, "{err}");
            let model = Model::new(output_signs(7, m), 0.3).unwrap();
            let whole = model.outputs(want.view());
            // Room for every cross-Gram and exact sum plus a few neurons per
            // point: neurons outermost, W(0) regenerated once, in passes.
            let by_neurons = (q * (n + WORDS + 7)).div_ceil(m + n);
            let passes = neurons_per_pass(q, m, &blocks, by_neurons).expect("neurons outermost");
            assert_eq!(passes, NEURON_BLOCK);
            assert_eq!(neurons_per_pass(q, m, &blocks, 1), None);
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
}
