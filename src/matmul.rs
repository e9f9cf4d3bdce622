//! Dense matrix products for the places where they dominate the run time
//! (init's per-neuron contraction), through the `gemm` crate: on init's
//! shape (512 × 256 by 256 × 256, one thread) it ran at 48.7 GFLOP/s on the
//! development machine against 35.7 for matrixmultiply (ndarray's default).
//! Single-threaded by design: callers parallelize over neurons, and a fixed
//! summation order per shape keeps results independent of the thread count.

use ndarray::{ArrayView2, ArrayViewMut2};

/// t = a · b for views of any strides (t must not overlap a or b, which the
/// borrow rules already guarantee).
pub fn matmul_into(a: &ArrayView2<'_, f64>, b: &ArrayView2<'_, f64>, t: &mut ArrayViewMut2<'_, f64>) {
    gemm_views(a, b, t, false)
}

/// t += a · b, same conditions as `matmul_into`.
pub fn matmul_acc(a: &ArrayView2<'_, f64>, b: &ArrayView2<'_, f64>, t: &mut ArrayViewMut2<'_, f64>) {
    gemm_views(a, b, t, true)
}

fn gemm_views(a: &ArrayView2<'_, f64>, b: &ArrayView2<'_, f64>, t: &mut ArrayViewMut2<'_, f64>, accumulate: bool) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert_eq!(k, k2, "inner dimensions");
    assert_eq!(t.dim(), (m, n), "output shape");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            t.fill(0.0);
        }
        return;
    }
    let (ars, acs) = (a.strides()[0], a.strides()[1]);
    let (brs, bcs) = (b.strides()[0], b.strides()[1]);
    let (trs, tcs) = (t.strides()[0], t.strides()[1]);
    // SAFETY: each pointer is the first element of a live view whose extent
    // (dims with strides) is exactly what is passed; t is borrowed mutably,
    // so it aliases neither input. t = alpha · t + 1 · a b, and t is read
    // only when accumulating (read_dst).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            t.as_mut_ptr(),
            tcs,
            trs,
            accumulate,
            a.as_ptr(),
            acs,
            ars,
            b.as_ptr(),
            bcs,
            brs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};

    /// Against the textbook triple loop, for odd shapes and strided views.
    #[test]
    fn matches_the_triple_loop() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 2), (17, 9, 33), (64, 256, 40)] {
            let a = Array2::from_shape_fn((2 * m, k), |(i, j)| ((i * 31 + j * 7) % 17) as f64 - 8.0);
            let b = Array2::from_shape_fn((n, k), |(i, j)| ((i * 13 + j * 5) % 11) as f64 * 0.25);
            let a = a.slice(s![..;2, ..]); // row stride 2k
            let bt = b.t(); // column-major k × n
            let mut t = Array2::from_elem((m, n), f64::NAN);
            matmul_into(&a, &bt, &mut t.view_mut());
            let mut acc = Array2::from_shape_fn((m, n), |(i, j)| (i + 2 * j) as f64);
            matmul_acc(&a, &bt, &mut acc.view_mut());
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|q| a[[i, q]] * bt[[q, j]]).sum();
                    assert!((t[[i, j]] - want).abs() <= 1e-12 * want.abs().max(1.0), "({i},{j})");
                    let want = want + (i + 2 * j) as f64;
                    assert!((acc[[i, j]] - want).abs() <= 1e-12 * want.abs().max(1.0), "acc ({i},{j})");
                }
            }
        }
    }
}
