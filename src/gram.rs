//! Inner products of Kronecker points from their factors alone:
//! <x_i, x'_j> = Π_k <u_i^(k), u'_j^(k)>, so a Gram (or cross-Gram) block is
//! the Hadamard product of the per-factor Grams U_k U'_kᵀ: O(n n' Σ d_k)
//! work and no d anywhere.

use crate::error::{invalid, try_array2, Result};
use crate::factors::Factors;
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, Axis};
use rayon::prelude::*;

/// Rows of the output computed per task. Fixed (not derived from the thread
/// count) so that every element is computed the same way on any pool size.
const ROW_BLOCK: usize = 64;

/// K[i, j] = <x_i, x'_j> for x in `a` (n × ·) and x' in `b` (n' × ·): n × n'.
pub fn cross_gram(a: &Factors<'_>, b: &Factors<'_>) -> Result<Array2<f64>> {
    if a.dims() != b.dims() {
        return invalid("factors", format!("dimensions {:?} do not match {:?}", b.dims(), a.dims()));
    }
    let (n, nb) = (a.n(), b.n());
    let mut out = try_array2(n, nb, "cross-Gram matrix")?;
    out.axis_chunks_iter_mut(Axis(0), ROW_BLOCK).into_par_iter().enumerate().for_each(|(blk, mut rows)| {
        let start = blk * ROW_BLOCK;
        let stop = start + rows.nrows();
        let mut g = Array2::<f64>::zeros(rows.raw_dim());
        for (k, (ua, ub)) in a.mats().iter().zip(b.mats()).enumerate() {
            let ua = ua.slice(s![start..stop, ..]);
            if k == 0 {
                general_mat_mul(1.0, &ua, &ub.t(), 0.0, &mut rows);
            } else {
                general_mat_mul(1.0, &ua, &ub.t(), 0.0, &mut g);
                rows.zip_mut_with(&g, |r, v| *r *= v);
            }
        }
    });
    Ok(out)
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
    let picked = Factors::assume_checked(crate::factors::views(&picked));
    cross_gram(&picked, f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

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
    fn mismatched_dims_are_refused() {
        let a = vec![pseudo(3, 2, 1), pseudo(3, 3, 2)];
        let b = vec![pseudo(3, 3, 1), pseudo(3, 2, 2)];
        let fa = Factors::new(crate::factors::views(&a)).unwrap();
        let fb = Factors::new(crate::factors::views(&b)).unwrap();
        assert!(cross_gram(&fa, &fb).is_err());
    }
}
