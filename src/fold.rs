//! A trained net's hidden weights folded into one dense matrix,
//! W = W(0) + Σ_blocks αᵀ X (neurons × d), for nets whose m · d is small:
//! predicting through it costs O(m · d) per point, or less through the
//! factors (`init::preacts_t_of_weights`), where predicting through the
//! training points costs O(m · n_train) (docs/design.md, "Prediction").
//!
//! A block's product αᵀ X is grouped by the rows of its first factor: for
//! pairwise data that factor is an entity table of N_0 rows, so each
//! neuron's weights, viewed as a d_0 × (d / d_0) matrix, are
//! T_0ᵀ S with S[a] = Σ_{points i of entity a} α_ri x_i^rest — O(m n d / d_0)
//! for the S's and O(m N_0 d) for the products, against O(m n d) through
//! the materialized points. Unindexed factors are folded a chunk of
//! materialized points at a time. Every product runs in fixed blocks of
//! neurons and points, so the result is the same bits on any thread count,
//! and a shard of whole neuron blocks folds its rows as one process does.

use crate::control::Control;
use crate::error::{invalid, try_array2, Result};
use crate::factors::Factors;
use crate::init::InitialWeights;
use crate::matmul::{matmul_acc, matmul_into};
use crate::predict::Block;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Neurons per task.
const NEURON_BLOCK: usize = 64;
/// Points materialized at once when the first factor is not a table.
const POINT_CHUNK: usize = 1024;

/// W (count × d) of the neurons `first .. first + count` of a net of
/// `width` neurons whose blocks hold α for exactly those neurons.
pub fn folded_weights(
    init: &InitialWeights,
    width: usize,
    first: usize,
    count: usize,
    dims: &[usize],
    blocks: &[Block<'_>],
    ctl: &Control,
) -> Result<Array2<f64>> {
    if first.checked_add(count).is_none_or(|end| end > width) {
        return invalid("neurons", format!("{first}..{} is not within 0..{width}", first + count));
    }
    for (j, b) in blocks.iter().enumerate() {
        if b.factors.dims() != dims {
            return invalid("blocks", format!("block {j} has dims {:?}, the net has {dims:?}", b.factors.dims()));
        }
        if b.coef.alpha_t().dim() != (b.factors.n(), count) {
            return invalid(
                "coefficients",
                format!("have shape {:?}, expected ({}, {count})", b.coef.alpha_t().dim(), b.factors.n()),
            );
        }
    }
    let whole = init.weight_matrix(width, dims, ctl)?;
    let mut w = whole.slice(s![first..first + count, ..]).to_owned();
    drop(whole);
    for b in blocks.iter().filter(|b| b.coef.trained()) {
        ctl.check()?;
        add_block(&mut w, &b.factors, b.coef.alpha_t(), ctl)?;
    }
    Ok(w)
}

/// The linear term's unscaled weights Σ_blocks β̃ᵀ X (C × d), folded like
/// the hidden weights; None when no block has a linear term.
pub fn folded_linear(
    dims: &[usize],
    outputs: usize,
    blocks: &[Block<'_>],
    ctl: &Control,
) -> Result<Option<Array2<f64>>> {
    let Some(d) = dims.iter().try_fold(1usize, |acc, &k| acc.checked_mul(k)) else {
        return invalid("dims", "the product of the dimensions overflows");
    };
    let mut v: Option<Array2<f64>> = None;
    for b in blocks.iter().filter(|b| b.coef.linear()) {
        ctl.check()?;
        if b.factors.dims() != dims {
            return invalid("blocks", format!("a block has dims {:?}, the net has {dims:?}", b.factors.dims()));
        }
        let acc = match v.as_mut() {
            Some(acc) => acc,
            None => v.insert(try_array2(outputs, d, "the linear term's weights")?),
        };
        add_block(acc, &b.factors, b.coef.beta(), ctl)?;
    }
    Ok(v)
}

/// W += coefᵀ X for one block's points and coefficients (n × rows of W).
fn add_block(w: &mut Array2<f64>, factors: &Factors<'_>, coef_t: ArrayView2<'_, f64>, ctl: &Control) -> Result<()> {
    let f = factors.terms();
    let rank = factors.rank();
    if f.p() >= 2 && f.index(0).is_some() {
        add_grouped(w, &f, rank, coef_t, ctl)
    } else {
        add_chunked(w, &f, rank, coef_t, ctl)
    }
}

/// A term's coefficients are its point's: term t of a rank-r point i = t / r.
fn alpha_row<'a>(alpha_t: &ArrayView2<'a, f64>, rank: usize, t: usize) -> ndarray::ArrayView1<'a, f64> {
    (*alpha_t).index_axis_move(Axis(0), t / rank)
}

/// First factor a table: per neuron block, S (N_0 × (b · rest)) with
/// S[a, c·rest + j] = Σ_{terms t of table row a} α[t, c] x_t^rest[j], then
/// W_c (d_0 × rest) += T_0ᵀ S_c in one GEMM for the block.
fn add_grouped(
    w: &mut Array2<f64>,
    f: &Factors<'_>,
    rank: usize,
    alpha_t: ArrayView2<'_, f64>,
    ctl: &Control,
) -> Result<()> {
    let (d0, terms) = (f.mat(0).ncols(), f.n());
    let table = f.mat(0);
    let n0 = table.nrows();
    let rest: usize = (1..f.p()).map(|k| f.mat(k).ncols()).product();
    // x_t^rest for every term (terms × rest), and the terms of each table row.
    let x_rest = rest_rows(f)?;
    let mut start = vec![0usize; n0 + 1];
    let idx = f.index(0).expect("the first factor is a table");
    for &a in idx.iter() {
        start[a as usize + 1] += 1;
    }
    for a in 0..n0 {
        start[a + 1] += start[a];
    }
    let mut next = start.clone();
    let mut order = vec![0usize; terms];
    for (t, &a) in idx.iter().enumerate() {
        order[next[a as usize]] = t;
        next[a as usize] += 1;
    }
    w.axis_chunks_iter_mut(Axis(0), NEURON_BLOCK).into_par_iter().enumerate().try_for_each(|(blk, mut rows)| {
        ctl.check()?;
        let (c0, b) = (blk * NEURON_BLOCK, rows.nrows());
        let mut s_mat = try_array2(n0, b * rest, "the folded weights' per-entity sums")?;
        let mut coefs = Array2::<f64>::zeros((0, 0));
        let mut xs = Array2::<f64>::zeros((0, 0));
        for a in 0..n0 {
            let members = &order[start[a]..start[a + 1]];
            if members.is_empty() {
                continue;
            }
            // S[a] (b × rest) = α[members, block]ᵀ X_rest[members]: one
            // small GEMM per table row, the members in a fixed order.
            coefs = Array2::zeros((b, members.len()));
            xs = Array2::zeros((members.len(), rest));
            for (k, &t) in members.iter().enumerate() {
                let arow = alpha_row(&alpha_t, rank, t);
                for c in 0..b {
                    coefs[[c, k]] = arow[c0 + c];
                }
                xs.row_mut(k).assign(&x_rest.row(t));
            }
            let mut out = ArrayViewMut2::from_shape((b, rest), s_mat.row_mut(a).into_slice().expect("fresh rows"))
                .expect("S[a] holds b × rest");
            matmul_into(&coefs.view(), &xs.view(), &mut out);
        }
        drop((coefs, xs));
        // (d_0 × b·rest) = T_0ᵀ S, then row c of the block is its columns
        // [c·rest, (c+1)·rest) laid out d_0 × rest.
        let mut prod = try_array2(d0, b * rest, "the folded weights of a block of neurons")?;
        matmul_into(&table.t(), &s_mat.view(), &mut prod.view_mut());
        for c in 0..b {
            let mut row = rows.row_mut(c);
            let row = row.as_slice_mut().expect("W is row-major");
            for j0 in 0..d0 {
                let src = &prod.row(j0).to_slice().expect("fresh rows")[c * rest..(c + 1) * rest];
                for (o, v) in row[j0 * rest..(j0 + 1) * rest].iter_mut().zip(src) {
                    *o += v;
                }
            }
        }
        ctl.advance((b * terms) as u64);
        Ok(())
    })
}

/// x_t^rest = u_t^(1) ⊗ … ⊗ u_t^(p-1) for every term (terms × d / d_0).
fn rest_rows(f: &Factors<'_>) -> Result<Array2<f64>> {
    let terms = f.n();
    let rest: usize = (1..f.p()).map(|k| f.mat(k).ncols()).product();
    let mut out = try_array2(terms, rest, "the terms' rest factors")?;
    out.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(t, mut row)| {
        let row = row.as_slice_mut().expect("fresh rows");
        let mut len = 1;
        row[0] = 1.0;
        for k in 1..f.p() {
            let u = f.row(k, t);
            let dk = u.len();
            // Kronecker product in place, from the end so nothing is read
            // after it is overwritten.
            for i in (0..len).rev() {
                let v = row[i];
                for (j, uj) in u.iter().enumerate().rev() {
                    row[i * dk + j] = v * uj;
                }
            }
            len *= dk;
        }
    });
    Ok(out)
}

/// Any block: W += α_chunkᵀ X_chunk over chunks of materialized points.
fn add_chunked(
    w: &mut Array2<f64>,
    f: &Factors<'_>,
    rank: usize,
    alpha_t: ArrayView2<'_, f64>,
    ctl: &Control,
) -> Result<()> {
    let terms = f.n();
    let mut start = 0;
    while start < terms {
        ctl.check()?;
        let stop = (start + POINT_CHUNK).min(terms);
        let x = f.rows(start, stop).materialize()?;
        let mut a = Array2::<f64>::zeros((stop - start, alpha_t.ncols()));
        for t in start..stop {
            a.row_mut(t - start).assign(&alpha_row(&alpha_t, rank, t));
        }
        w.axis_chunks_iter_mut(Axis(0), NEURON_BLOCK).into_par_iter().enumerate().for_each(|(blk, mut rows)| {
            let c0 = blk * NEURON_BLOCK;
            let part = a.slice(s![.., c0..c0 + rows.nrows()]);
            matmul_acc(&part.t(), &x.view(), &mut rows);
        });
        start = stop;
    }
    Ok(())
}

/// Largest folded linear term (C × d) `linear_parts` builds.
pub const LINEAR_FOLD_BYTES: usize = 64 << 20;

/// The unscaled linear parts <Σ_blocks β̃ᵀ X, x'_j> of the query points
/// (q × C) a trainer starts from, or None without a linear term. When d is
/// at most the linear blocks' points and v = Σ β̃ᵀ X is small, through v:
/// O(q·d) instead of the O(q·n) cross-Gram entries of
/// `predict::linear_parts` (a trainer on an 80,000-point block with a
/// linear start would otherwise compute 6.4·10⁹ of them). The two differ by
/// rounding only.
pub fn linear_parts(
    query: &Factors<'_>,
    outputs: usize,
    blocks: &[Block<'_>],
    ctl: &Control,
) -> Result<Option<Array2<f64>>> {
    let linear_n: usize = blocks.iter().filter(|b| b.coef.linear()).map(|b| b.factors.n()).sum();
    let small =
        query.d().filter(|&d| d <= linear_n && d.saturating_mul(outputs).saturating_mul(8) <= LINEAR_FOLD_BYTES);
    let Some(d) = small else {
        return crate::predict::linear_parts(query, outputs, blocks, ctl);
    };
    let Some(v) = folded_linear(&query.dims(), outputs, blocks, ctl)? else {
        return Ok(None);
    };
    ctl.check()?;
    const POINTS: usize = 256;
    let mut out = try_array2(query.n(), outputs, "the linear parts (n × outputs)")?;
    out.axis_chunks_iter_mut(Axis(0), POINTS).into_par_iter().enumerate().for_each(|(blk, mut rows)| {
        let (mut x, mut term) = (vec![0.0; d], Vec::new());
        for (r, mut row) in rows.rows_mut().into_iter().enumerate() {
            query.dense_row_into(blk * POINTS + r, &mut x, &mut term);
            for (c, o) in row.iter_mut().enumerate() {
                *o = v.row(c).iter().zip(&x).map(|(a, b)| a * b).sum();
            }
        }
    });
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coef::Coefficients;
    use crate::factors::views;
    use crate::predict::dense_weights;

    fn pseudo(n: usize, d: usize, salt: u64) -> Array2<f64> {
        let mut z = vec![0.0; n * d];
        crate::rng::initial_weights(salt, 3, &mut z);
        Array2::from_shape_vec((n, d), z).unwrap()
    }

    fn coef(n: usize, m: usize, salt: u64) -> Coefficients {
        Coefficients::from_parts(pseudo(n, m, salt), Array2::zeros((n, 1))).unwrap()
    }

    /// Points' preactivations through given weights, against X Wᵀ with X
    /// materialized: the dense path (small d) and the factored one.
    #[test]
    fn preactivations_of_weights_match_the_materialized_product() {
        use crate::init::preacts_t_of_weights;
        let ctl = Control::new();
        for dims in [[4usize, 5], [70, 70]] {
            let mats = vec![pseudo(9, dims[0], 7), pseudo(9, dims[1], 8)];
            let f = Factors::new(views(&mats)).unwrap();
            let w = pseudo(20, dims[0] * dims[1], 9);
            let got = preacts_t_of_weights(&f, w.view(), &ctl).unwrap();
            let x = f.materialize().unwrap();
            let want = w.dot(&x.t());
            for (g, v) in got.iter().zip(want.iter()) {
                assert!((g - v).abs() <= 1e-12 * (1.0 + v.abs()), "{dims:?}: {g} vs {v}");
            }
        }
    }

    /// Folded weights against `dense_weights` (W(0) plus α X through the
    /// materialized points): tables, rank-two points and plain rows, and a
    /// shard's rows.
    #[test]
    fn folding_matches_the_materialized_product() {
        let (m, dims) = (150, [4usize, 5]);
        let init = InitialWeights::gaussian(11);
        let ctl = Control::new();
        // Pairs over tables of 7 and 9 entities.
        let tables = [pseudo(7, 4, 1), pseudo(9, 5, 2)];
        let idx0: Vec<u64> = (0..40).map(|i| (i * 3 % 7) as u64).collect();
        let idx1: Vec<u64> = (0..40).map(|i| (i * 5 % 9) as u64).collect();
        let (i0, i1) = (ndarray::Array1::from(idx0), ndarray::Array1::from(idx1));
        let pairs = Factors::indexed(views(&tables), vec![Some(i0.view()), Some(i1.view())], 1).unwrap();
        // Rank-two points with their own rows.
        let rank2 = vec![pseudo(60, 4, 3), pseudo(60, 5, 4)];
        let rank2 = Factors::with_rank(views(&rank2), 2).unwrap();
        let (c1, c2) = (coef(40, m, 5), coef(30, m, 6));
        let blocks = vec![Block { factors: pairs, coef: &c1 }, Block { factors: rank2, coef: &c2 }];
        let want = dense_weights(&init, m, &dims, &blocks, &ctl).unwrap();
        let got = folded_weights(&init, m, 0, m, &dims, &blocks, &ctl).unwrap();
        let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        for (g, w) in got.iter().zip(want.iter()) {
            assert!((g - w).abs() <= 1e-12 * scale, "{g} vs {w}");
        }
        // A shard of neurons 64..128: its rows, from its own α columns.
        let (s1, s2) = (
            Coefficients::from_parts(c1.alpha_t().slice(s![.., 64..128]).to_owned(), Array2::zeros((40, 1))).unwrap(),
            Coefficients::from_parts(c2.alpha_t().slice(s![.., 64..128]).to_owned(), Array2::zeros((30, 1))).unwrap(),
        );
        let shard = vec![
            Block { factors: blocks[0].factors.clone(), coef: &s1 },
            Block { factors: blocks[1].factors.clone(), coef: &s2 },
        ];
        let part = folded_weights(&init, m, 64, 64, &dims, &shard, &ctl).unwrap();
        assert_eq!(part, got.slice(s![64..128, ..]));
    }
}
