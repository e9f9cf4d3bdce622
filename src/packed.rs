//! A matrix product whose left operand is generated while it is multiplied,
//! for Gaussian init at small d: P(0)ᵀ_B = W_B Xᵀ for a block of neurons,
//! where W_B's rows are random streams (`rng.rs`). The loops are those of
//! Goto & van de Geijn's GEMM, with two differences from a general GEMM
//! (`matmul.rs`):
//!
//! - Xᵀ is packed into the micro-kernel's panels once and shared by every
//!   task, where a general GEMM repacks its operand in every call.
//! - W_B is never stored: each MC × KC block of it is drawn from the rows'
//!   streams (each continuing where its last block stopped) straight into
//!   panel order, multiplied while it sits in L2, and overwritten by the
//!   next. A stored W_B (8 MiB for 256 neurons at d = 2^12) goes out to
//!   memory and comes back once for packing.
//!
//! The blocking is fixed, so the summation order, and so the result, does
//! not depend on the number of threads. The kernel needs x86_64 with AVX2
//! and FMA ([`supported`]); elsewhere init uses `matmul`.

use crate::error::{invalid, try_zeros, Result};
use crate::factors::Factors;
use ndarray::ArrayViewMut2;
use rayon::prelude::*;

/// Rows and columns of the micro-kernel's tile of C: 6 × 8 uses 12 of the
/// 16 AVX2 registers for accumulators, leaving room for two B loads and
/// one broadcast.
const MR: usize = 6;
const NR: usize = 8;
/// The depth of one panel: an MR × KC panel of A and a KC × NR panel of B
/// (12 + 16 KiB) stay in L1 while the kernel runs.
const KC: usize = 256;
/// Rows of A per block: MC × KC (192 KiB) stays in L2 while every panel of
/// B passes by.
const MC: usize = 96;

/// True when this CPU runs the kernel.
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A k × n right operand in panels: the columns in groups of NR, each
/// group k × NR values, row by row (columns past n are zeros). Built from
/// points, so k = d ≥ 1 (`Factors` refuses a zero dimension).
pub struct PackedRhs {
    k: usize,
    n: usize,
    data: Vec<f64>,
}

impl PackedRhs {
    /// Xᵀ packed, for the points x_i of `f` (the rows of X, n × d): the
    /// points become columns. Each group of NR points is built from its
    /// factors (`Factors::dense_row_into`, as `materialize` does) and then
    /// interleaved into its panel by sequential writes, so X itself is
    /// never held; the panels are packed in parallel.
    pub fn points_of(f: &Factors<'_>) -> Result<PackedRhs> {
        let Some(k) = f.d() else {
            return invalid("dims", "the product of the dimensions overflows");
        };
        let n = f.n();
        let mut data = try_zeros(n.next_multiple_of(NR) * k, "the points packed for init's product (n × d)")?;
        data.par_chunks_mut(NR * k).enumerate().for_each_init(
            || (vec![0.0; NR * k], Vec::new()),
            |(rows, term), (j, panel)| {
                let cols = NR.min(n - j * NR);
                for (c, row) in rows.chunks_exact_mut(k).take(cols).enumerate() {
                    f.dense_row_into(j * NR + c, row, term);
                }
                for (q, group) in panel.chunks_exact_mut(NR).enumerate() {
                    for (c, v) in group.iter_mut().take(cols).enumerate() {
                        *v = rows[c * k + q];
                    }
                }
            },
        );
        Ok(PackedRhs { k, n, data })
    }

    /// Bytes of the packed Xᵀ for n points of dimension d.
    pub fn bytes(n: usize, d: usize) -> u128 {
        8 * n.next_multiple_of(NR) as u128 * d as u128
    }
}

/// A worker's buffers for [`multiply_drawn`], reused across its calls.
pub struct Workspace {
    /// One MC × KC block of A in panels (MR rows each, column by column).
    block: Vec<f64>,
    /// One row's next KC values, before they are interleaved.
    chunk: Vec<f64>,
}

impl Workspace {
    pub fn new() -> Result<Workspace> {
        let what = "a block of initial weights";
        Ok(Workspace { block: try_zeros(MC * KC, what)?, chunk: try_zeros(KC, what)? })
    }

    /// Bytes of one workspace.
    pub fn bytes() -> u128 {
        8 * (MC * KC + KC) as u128
    }
}

/// The rows of a left operand that is drawn rather than stored.
pub trait DrawnRows {
    /// Rows first .. first + count are about to be drawn (to open their
    /// streams).
    fn start(&mut self, first: usize, count: usize);
    /// Writes the next `out.len()` values of row r (one of the started
    /// ones), continuing where the previous call for r stopped.
    fn draw(&mut self, r: usize, out: &mut [f64]);
}

/// c = A · b for the m × k matrix A whose rows `a` draws: MC rows at a
/// time are started, then drawn KC values at a time, each row in order
/// and k values in all. c (m × n) may have any strides.
pub fn multiply_drawn(
    m: usize,
    a: &mut impl DrawnRows,
    b: &PackedRhs,
    c: &mut ArrayViewMut2<'_, f64>,
    work: &mut Workspace,
) {
    let (n, k) = (b.n, b.k);
    assert_eq!(c.dim(), (m, n), "output shape");
    assert!(supported(), "the packed kernel needs AVX2 and FMA");
    if m == 0 || n == 0 {
        return;
    }
    let (rs, cs) = (c.strides()[0], c.strides()[1]);
    for ic in (0..m).step_by(MC) {
        let mc = MC.min(m - ic);
        a.start(ic, mc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            // Row r of this block goes to panel r / MR, lane r % MR; a
            // partial last panel keeps stale lanes, whose rows of the tile
            // are computed and dropped.
            for r in 0..mc {
                let values = &mut work.chunk[..kc];
                a.draw(ic + r, values);
                let panel = &mut work.block[(r / MR) * MR * kc..][..MR * kc];
                for (p, &v) in values.iter().enumerate() {
                    panel[p * MR + r % MR] = v;
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX2 and FMA (asserted); c's pointer and
            // strides describe a live m × n view borrowed mutably, and the
            // block's writes go to its rows ic .. ic + mc, columns < n.
            unsafe {
                let dst = c.as_mut_ptr().offset(ic as isize * rs);
                block_avx2(mc, kc, work.block.as_ptr(), b, pc, dst, rs, cs, pc > 0)
            }
        }
    }
}

/// One block of A (mc × kc, in panels) times rows pc .. pc + kc of b, into
/// (or, with `add`, onto) the mc rows of c starting at `c`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(
    mc: usize,
    kc: usize,
    a: *const f64,
    b: &PackedRhs,
    pc: usize,
    c: *mut f64,
    rs: isize,
    cs: isize,
    add: bool,
) {
    let (n, k) = (b.n, b.k);
    for jr in (0..n).step_by(NR) {
        let cols = NR.min(n - jr);
        let b_panel = b.data.as_ptr().add(jr * k + pc * NR);
        for ir in (0..mc).step_by(MR) {
            let rows = MR.min(mc - ir);
            let a_panel = a.add(ir * kc);
            let dst = c.offset(ir as isize * rs + jr as isize * cs);
            if rows == MR && cols == NR && cs == 1 {
                kernel(kc, a_panel, b_panel, dst, rs, add);
            } else {
                let mut tile = [0.0f64; MR * NR];
                kernel(kc, a_panel, b_panel, tile.as_mut_ptr(), NR as isize, false);
                for i in 0..rows {
                    for j in 0..cols {
                        let e = dst.offset(i as isize * rs + j as isize * cs);
                        *e = if add { *e + tile[i * NR + j] } else { tile[i * NR + j] };
                    }
                }
            }
        }
    }
}

/// One MR × NR tile: c (=|+=) the kc-long product of an A panel and a B
/// panel; c's rows are `rs` apart and contiguous.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel(kc: usize, a: *const f64, b: *const f64, c: *mut f64, rs: isize, add: bool) {
    use std::arch::x86_64::*;
    // C's rows are read or written only after the loop: fetching them now
    // hides that latency behind the kc multiply-adds.
    for r in 0..MR {
        let row = c.offset(r as isize * rs) as *const i8;
        _mm_prefetch::<_MM_HINT_T0>(row);
        _mm_prefetch::<_MM_HINT_T0>(row.add(56));
    }
    let mut acc = [[_mm256_setzero_pd(); 2]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        let b0 = _mm256_loadu_pd(b);
        let b1 = _mm256_loadu_pd(b.add(4));
        for (r, acc) in acc.iter_mut().enumerate() {
            let ar = _mm256_broadcast_sd(&*a.add(r));
            acc[0] = _mm256_fmadd_pd(ar, b0, acc[0]);
            acc[1] = _mm256_fmadd_pd(ar, b1, acc[1]);
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    for (r, acc) in acc.iter().enumerate() {
        let row = c.offset(r as isize * rs);
        let (mut v0, mut v1) = (acc[0], acc[1]);
        if add {
            v0 = _mm256_add_pd(v0, _mm256_loadu_pd(row));
            v1 = _mm256_add_pd(v1, _mm256_loadu_pd(row.add(4)));
        }
        _mm256_storeu_pd(row, v0);
        _mm256_storeu_pd(row.add(4), v1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};

    /// A's rows, handed out in order; records what was asked.
    struct Rows<'a> {
        a: &'a Array2<f64>,
        next: Vec<usize>,
        started: Vec<(usize, usize)>,
    }

    impl DrawnRows for Rows<'_> {
        fn start(&mut self, first: usize, count: usize) {
            self.started.push((first, count));
        }
        fn draw(&mut self, r: usize, out: &mut [f64]) {
            let q = self.next[r];
            out.copy_from_slice(&self.a.row(r).as_slice().unwrap()[q..q + out.len()]);
            self.next[r] += out.len();
        }
    }

    /// Against the textbook triple loop on points of two factors: shapes
    /// with partial tiles and blocks on every axis, and a strided output.
    #[test]
    fn matches_the_triple_loop() {
        if !supported() {
            return;
        }
        for &(m, (d1, d2), n) in
            &[(1, (1, 1), 1), (5, (1, 3), 7), (6, (16, 16), 8), (13, (12, 25), 17), (200, (19, 27), 33)]
        {
            let k = d1 * d2;
            let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 31 + j * 7) % 17) as f64 - 8.0);
            let u1 = Array2::from_shape_fn((n, d1), |(i, j)| ((i * 13 + j * 5) % 11) as f64 * 0.25);
            let u2 = Array2::from_shape_fn((n, d2), |(i, j)| ((i * 3 + j * 7) % 5) as f64 - 2.0);
            let f = Factors::new(vec![u1.view(), u2.view()]).unwrap();
            let x = f.materialize().unwrap();
            let packed_x = PackedRhs::points_of(&f).unwrap();
            let mut work = Workspace::new().unwrap();
            let mut run = |c: &mut ArrayViewMut2<'_, f64>| {
                let mut rows = Rows { a: &a, next: vec![0; m], started: Vec::new() };
                multiply_drawn(m, &mut rows, &packed_x, c, &mut work);
                assert!(rows.next.iter().all(|&q| q == k), "every row drawn once, in order");
                let blocks: Vec<_> = (0..m).step_by(MC).map(|i| (i, MC.min(m - i))).collect();
                assert_eq!(rows.started, blocks);
            };
            let mut c = Array2::from_elem((m, n), f64::NAN);
            run(&mut c.view_mut());
            let mut wide = Array2::from_elem((m, 3 * n), f64::NAN);
            run(&mut wide.slice_mut(s![.., 1..;3]));
            let strided = wide.slice(s![.., 1..;3]);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|q| a[[i, q]] * x[[j, q]]).sum();
                    for got in [c[[i, j]], strided[[i, j]]] {
                        assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "({m}, {k}, {n}) at ({i}, {j})");
                    }
                }
            }
            for skipped in [0, 2] {
                assert!(wide.slice(s![.., skipped..;3]).iter().all(|v| v.is_nan()), "writes stay inside the view");
            }
        }
    }
}
