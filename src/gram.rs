//! Inner products of Kronecker points from their factors alone:
//! <x_i, x'_j> = Π_k <u_i^(k), u'_j^(k)>, so a Gram (or cross-Gram) block is
//! the Hadamard product of the per-factor Grams U_k U'_kᵀ: O(n n' Σ d_k)
//! work and no d anywhere.

use crate::error::{invalid, try_array2, Result};
use crate::factors::Factors;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Rows of the output computed per task. Fixed (not derived from the thread
/// count) so that every element is computed the same way on any pool size.
const ROW_BLOCK: usize = 64;

/// K[i, j] = <x_i, x'_j> for x in `a` (n × ·) and x' in `b` (n' × ·): n × n'.
/// For points of r and r' terms, K[i, j] = Σ_{t, t'} Π_k <u_it^(k), u'_jt'^(k)>:
/// r r' Hadamard products of the per-factor Grams, accumulated in (t, t')
/// order (a fixed order: the result does not depend on the thread count).
pub fn cross_gram(a: &Factors<'_>, b: &Factors<'_>) -> Result<Array2<f64>> {
    if a.dims() != b.dims() {
        return invalid("factors", format!("dimensions {:?} do not match {:?}", b.dims(), a.dims()));
    }
    let (n, nb) = (a.n(), b.n());
    let mut out = try_array2(n, nb, "cross-Gram matrix")?;
    // An indexed factor of `b` is used through its table (one GEMM with the
    // N_k table rows, then a gather), which pays only while the table is
    // no larger than the terms that use it; otherwise `b` is gathered once.
    let b_rows;
    let b = if (0..b.p()).any(|k| b.index(k).is_some() && b.mat(k).nrows() > nb * b.rank()) {
        b_rows = b.gathered();
        b_rows.view()
    } else {
        b.rows(0, nb)
    };
    let single = a.rank() == 1 && b.rank() == 1;
    out.axis_chunks_iter_mut(Axis(0), ROW_BLOCK).into_par_iter().enumerate().for_each(|(blk, mut rows)| {
        let start = blk * ROW_BLOCK;
        let stop = start + rows.nrows();
        // The block's own terms are gathered (ROW_BLOCK · r rows per
        // factor) so that each factor's Gram with `b` is one GEMM.
        let a_rows;
        let mut block = a.rows(start, stop);
        if block.is_indexed() {
            a_rows = block.gathered();
            block = a_rows.view();
        }
        let mut g = Array2::<f64>::zeros(rows.raw_dim());
        if single {
            hadamard_of_grams(&block, &b, &mut rows, &mut g);
            return;
        }
        let mut term = Array2::<f64>::zeros(rows.raw_dim());
        rows.fill(0.0);
        for ta in 0..a.rank() {
            for tb in 0..b.rank() {
                hadamard_of_grams(&block.term(ta), &b.term(tb), &mut term.view_mut(), &mut g);
                rows += &term;
            }
        }
    });
    Ok(out)
}

/// out = ∘_k U_k U'_kᵀ for rank-one `a` (unindexed) and `b` (`g`: scratch
/// of out's shape).
fn hadamard_of_grams(a: &Factors<'_>, b: &Factors<'_>, out: &mut ArrayViewMut2<'_, f64>, g: &mut Array2<f64>) {
    for k in 0..a.p() {
        if k == 0 {
            factor_gram(a, b, k, out);
        } else {
            factor_gram(a, b, k, &mut g.view_mut());
            out.zip_mut_with(g, |r, v| *r *= v);
        }
    }
}

/// target[i, j] = <u_i^(k), u'_j^(k)>. For an indexed factor of `b`: the
/// Gram with its table, C = U_k T_kᵀ, then target[i, j] = C[i, index[j]].
fn factor_gram(a: &Factors<'_>, b: &Factors<'_>, k: usize, target: &mut ArrayViewMut2<'_, f64>) {
    let ua = a.mat(k);
    match b.index(k) {
        None => general_mat_mul(1.0, &ua, &b.mat(k).t(), 0.0, target),
        Some(idx) => {
            let table = b.mat(k);
            let mut c = Array2::<f64>::zeros((ua.nrows(), table.nrows()));
            general_mat_mul(1.0, &ua, &table.t(), 0.0, &mut c);
            for (mut t, c) in target.rows_mut().into_iter().zip(c.rows()) {
                t.iter_mut().zip(idx.iter()).for_each(|(o, &j)| *o = c[j as usize]);
            }
        }
    }
}

/// The full training Gram K = ∘_k U_k U_kᵀ (n × n), made exactly
/// symmetric (lower triangle mirrored from the upper) so that a step can
/// read the contiguous rows K[B, :] in place of the columns K[:, B].
pub fn gram(f: &Factors<'_>) -> Result<Array2<f64>> {
    let mut k = cross_gram(f, f)?;
    let n = k.nrows();
    for i in 0..n {
        for j in 0..i {
            k[[i, j]] = k[[j, i]];
        }
    }
    Ok(k)
}

/// Rows K[rows, :] (|rows| × n) computed on the fly from the factors, for
/// when the n × n Gram does not fit the memory budget.
pub fn gram_rows(f: &Factors<'_>, rows: &[usize]) -> Result<Array2<f64>> {
    let picked = f.select(rows);
    let picked = Factors::assume_checked(crate::factors::views(&picked), vec![None; f.p()], f.rank());
    cross_gram(&picked, f)
}

/// Columns of K[rows, :] computed per task by `gram_rows_into`: a task's
/// per-factor products (|rows| × this) stay in L2.
const COLUMN_BLOCK: usize = 2048;

/// `gram_rows` into `out` (|rows| × n, row-major), reusing its allocation
/// across calls, and in parallel over blocks of columns (a step's few rows
/// are one task for `cross_gram`). The same products in the same order as
/// `gram_rows`: a factor's Gram with the rows is the same GEMM (or table
/// GEMM and gather), and the factors are multiplied in k order. `scratch`
/// holds the tables' products between calls.
pub fn gram_rows_into(f: &Factors<'_>, rows: &[usize], out: &mut Vec<f64>, scratch: &mut Vec<f64>) -> Result<()> {
    let (s, n) = (rows.len(), f.n());
    if f.rank() != 1 {
        let k = gram_rows(f, rows)?;
        out.clear();
        out.extend_from_slice(k.as_slice().expect("a fresh array is row-major"));
        return Ok(());
    }
    let picked = f.select(rows);
    // Each indexed factor's Gram with its table, C_k = U_k[rows] T_kᵀ
    // (|rows| × N_k), once for all column blocks.
    let mut table_offsets = vec![usize::MAX; f.p()];
    scratch.clear();
    for k in 0..f.p() {
        if f.index(k).is_some() {
            let table = f.mat(k);
            table_offsets[k] = scratch.len();
            scratch.resize(scratch.len() + s * table.nrows(), 0.0);
            let start = table_offsets[k];
            let mut c =
                ndarray::ArrayViewMut2::from_shape((s, table.nrows()), &mut scratch[start..start + s * table.nrows()])
                    .expect("the scratch holds the product");
            general_mat_mul(1.0, &picked[k].view(), &table.t(), 0.0, &mut c);
        }
    }
    if out.len() != s * n {
        out.clear();
        out.resize(s * n, 0.0);
    }
    // Disjoint pieces of the output: for each block of columns, its part of
    // every row.
    let blocks = n.div_ceil(COLUMN_BLOCK).max(1);
    let mut parts: Vec<Vec<&mut [f64]>> = (0..blocks).map(|_| Vec::with_capacity(s)).collect();
    for row in out.chunks_mut(n.max(1)) {
        for (b, part) in row.chunks_mut(COLUMN_BLOCK).enumerate() {
            parts[b].push(part);
        }
    }
    let tables: &[f64] = scratch;
    parts.into_par_iter().enumerate().for_each(|(b, mut parts)| {
        let j0 = b * COLUMN_BLOCK;
        let len = parts.first().map_or(0, |p| p.len());
        let mut g = vec![0.0; if (0..f.p()).any(|k| f.index(k).is_none()) { s * len } else { 0 }];
        for k in 0..f.p() {
            match f.index(k) {
                Some(idx) => {
                    let nk = f.mat(k).nrows();
                    let c = &tables[table_offsets[k]..table_offsets[k] + s * nk];
                    for (si, part) in parts.iter_mut().enumerate() {
                        let crow = &c[si * nk..(si + 1) * nk];
                        let idx = idx.slice(ndarray::s![j0..j0 + len]);
                        if k == 0 {
                            part.iter_mut().zip(idx.iter()).for_each(|(o, &j)| *o = crow[j as usize]);
                        } else {
                            part.iter_mut().zip(idx.iter()).for_each(|(o, &j)| *o *= crow[j as usize]);
                        }
                    }
                }
                None => {
                    let mut gv = ndarray::ArrayViewMut2::from_shape((s, len), &mut g[..]).expect("g holds the block");
                    let cols = f.mat(k).slice_move(ndarray::s![j0..j0 + len, ..]);
                    general_mat_mul(1.0, &picked[k].view(), &cols.t(), 0.0, &mut gv);
                    for (si, part) in parts.iter_mut().enumerate() {
                        let grow = &g[si * len..(si + 1) * len];
                        if k == 0 {
                            part.copy_from_slice(grow);
                        } else {
                            part.iter_mut().zip(grow).for_each(|(o, v)| *o *= v);
                        }
                    }
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    fn pseudo(n: usize, d: usize, salt: u64) -> Array2<f64> {
        let mut z = vec![0.0; n * d];
        crate::rng::initial_weights(salt, 0, &mut z);
        Array2::from_shape_vec((n, d), z).unwrap()
    }

    #[test]
    fn gram_matches_materialized_points() {
        let mats = vec![pseudo(9, 2, 1), pseudo(9, 3, 2), pseudo(9, 5, 3)];
        let f = Factors::new(crate::factors::views(&mats)).unwrap();
        let k = gram(&f).unwrap();
        let (mut xi, mut xj) = (Vec::new(), Vec::new());
        for i in 0..9 {
            f.dense_row(i, &mut xi);
            assert_eq!(xi.len(), 30);
            for j in 0..9 {
                f.dense_row(j, &mut xj);
                let brute: f64 = xi.iter().zip(&xj).map(|(a, b)| a * b).sum();
                assert!((k[[i, j]] - brute).abs() <= 1e-12 * (1.0 + brute.abs()));
            }
        }
        assert_eq!(k, k.t());
        let rows = gram_rows(&f, &[3, 3, 0]).unwrap();
        for i in 0..9 {
            for (c, &j) in [3usize, 3, 0].iter().enumerate() {
                assert!((rows[[c, i]] - k[[j, i]]).abs() <= 1e-12);
            }
        }
    }

    #[test]
    fn gram_of_points_of_several_terms_matches_materialized_points() {
        let (n, nb) = (7, 5);
        let a = vec![pseudo(n * 3, 2, 11), pseudo(n * 3, 4, 12)];
        let b = vec![pseudo(nb * 2, 2, 13), pseudo(nb * 2, 4, 14)];
        let fa = Factors::with_rank(crate::factors::views(&a), 3).unwrap();
        let fb = Factors::with_rank(crate::factors::views(&b), 2).unwrap();
        let k = cross_gram(&fa, &fb).unwrap();
        let (mut xi, mut xj) = (Vec::new(), Vec::new());
        for i in 0..n {
            fa.dense_row(i, &mut xi);
            for j in 0..nb {
                fb.dense_row(j, &mut xj);
                let brute: f64 = xi.iter().zip(&xj).map(|(p, q)| p * q).sum();
                assert!((k[[i, j]] - brute).abs() <= 1e-12 * (1.0 + brute.abs()), "{i} {j}");
            }
        }
        let rows = gram_rows(&fa, &[4, 0, 4]).unwrap();
        let full = gram(&fa).unwrap();
        for (c, &i) in [4usize, 0, 4].iter().enumerate() {
            for j in 0..n {
                assert!((rows[[c, j]] - full[[i, j]]).abs() <= 1e-12);
            }
        }
    }

    /// Entity tables with an index (repeats, unused rows, a table larger
    /// than its uses) against the same points gathered into rows.
    #[test]
    fn indexed_points_match_their_gathered_rows() {
        let tables = [pseudo(5, 3, 21), pseudo(40, 4, 22)];
        let n = 11;
        let ia: Array1<u64> = (0..n).map(|i| (i * 3 % 4) as u64).collect();
        let ib: Array1<u64> = (0..n).map(|i| (i * 7 % 13 + i / 5) as u64).collect();
        let f = Factors::indexed(crate::factors::views(&tables), vec![Some(ia.view()), Some(ib.view())], 1).unwrap();
        let rows = f.gathered();
        let g = rows.view();
        let want = gram(&g).unwrap();
        assert_eq!(gram(&f).unwrap(), want);
        let picked = [3usize, 3, 10, 0];
        assert_eq!(gram_rows(&f, &picked).unwrap(), gram_rows(&g, &picked).unwrap());
        // Indexed on the left only, on the right only, and two terms per point.
        let q = pseudo(4, 3, 23);
        let other = [q.view(), tables[1].slice(ndarray::s![..4, ..])];
        let fq = Factors::new(other.to_vec()).unwrap();
        let close =
            |x: &Array2<f64>, y: &Array2<f64>| x.iter().zip(y).all(|(a, b)| (a - b).abs() <= 1e-12 * (1.0 + b.abs()));
        assert!(close(&cross_gram(&fq, &f).unwrap(), &cross_gram(&fq, &g).unwrap()));
        assert!(close(&cross_gram(&f, &fq).unwrap(), &cross_gram(&g, &fq).unwrap()));
        let f2 = Factors::indexed(
            crate::factors::views(&tables),
            vec![Some(ia.slice(ndarray::s![..10])), Some(ib.slice(ndarray::s![..10]))],
            2,
        )
        .unwrap();
        let g2 = f2.gathered();
        assert!(close(&gram(&f2).unwrap(), &gram(&g2.view()).unwrap()));
        let bad: Array1<u64> = (0..n).map(|i| if i == 7 { 5 } else { 0 }).collect();
        assert!(Factors::indexed(crate::factors::views(&tables), vec![Some(bad.view()), Some(ib.view())], 1).is_err());
    }

    #[test]
    fn mismatched_dims_are_refused() {
        let a = vec![pseudo(3, 2, 1), pseudo(3, 3, 2)];
        let b = vec![pseudo(3, 3, 1), pseudo(3, 2, 2)];
        let fa = Factors::new(crate::factors::views(&a)).unwrap();
        let fb = Factors::new(crate::factors::views(&b)).unwrap();
        assert!(cross_gram(&fa, &fb).is_err());
    }
}
