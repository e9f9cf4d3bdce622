//! Kronecker-factored initial weights: w_r(0) = R^{-1/2} Σ_{j<R} g_rj^(1) ⊗ …
//! ⊗ g_rj^(p), every g_rj^(k) ~ N(0, I_{d_k}) drawn from neuron r's own
//! counter-based stream (`rng.rs`, `Stream::KronFactors`), term j's factors
//! in order. Each neuron stores R Σ_k d_k numbers instead of d, so init and
//! prediction cost O(m R Σ_k d_k) per point and never depend on d:
//!
//!   <w_r(0), x> = R^{-1/2} Σ_j Π_k <g_rj^(k), u^(k)>   (x = u^(1) ⊗ … ⊗ u^(p)),
//!
//! one GEMM per factor between the points' factor rows (or an entity table)
//! and the neurons' factor vectors.
//!
//! For any x, E<w_r(0), x> = 0 and E<w_r(0), x>² = ‖x‖² (E[G Gᵀ] = I_d for
//! G = ⊗_k g^(k)), exactly as with Gaussian W(0). The shape differs: for a
//! rank-one unit-norm x, <w_r(0), x> = R^{-1/2} Σ_j Π_k ξ_jk with ξ iid
//! N(0, 1), whose kurtosis is 3 + (3^p − 3)/R (a product of p normals has
//! fourth moment 3^p; averaging R iid terms divides the excess by R), so it
//! approaches the Gaussian's 3 as R grows. `threshold` calibrates b so that
//! the firing fraction at init matches Gaussian init's.

use crate::control::Control;
use crate::error::{invalid, try_array2, try_zeros, Result};
use crate::factors::Factors;
use crate::matmul::matmul_into;
use crate::rng::{KeyedStream, Stream};
use ndarray::{s, Array2, Axis};
use rayon::prelude::*;

/// Neurons × terms (columns of the per-factor GEMMs) per parallel task, at
/// most: wide GEMMs run faster, but the block's factor vectors take
/// columns × Σ d_k numbers. A function of the shape only, so results do not
/// depend on the thread count.
const MAX_BLOCK_COLUMNS: usize = 256;
/// Bound on a block's factor vectors (columns × Σ d_k), in f64s.
const MAX_BLOCK_FACTORS: usize = 1 << 24;
/// Points per chunk of the per-factor GEMMs (bounds the intermediates).
const CHUNK_POINTS: usize = 1024;

/// Largest rank R accepted (each neuron draws R Σ d_k normals).
pub const MAX_RANK: usize = 1 << 16;

/// Neurons per task for rank R and Σ d_k = `sum_d`.
fn neurons_per_block(rank: usize, sum_d: usize) -> usize {
    let columns = (MAX_BLOCK_FACTORS / sum_d.max(1)).clamp(1, MAX_BLOCK_COLUMNS);
    (columns / rank).max(1)
}

/// Checks the rank and the neuron count.
pub fn check(width: usize, rank: usize) -> Result<()> {
    if width == 0 {
        return invalid("width", "must be positive");
    }
    if width > u32::MAX as usize {
        return invalid("width", "must be below 2^32");
    }
    if rank == 0 || rank > MAX_RANK {
        return invalid("init_rank", format!("must be in [1, {MAX_RANK}], got {rank}"));
    }
    Ok(())
}

/// Neuron r's factor vectors: R Σ_k d_k values, term j's factor k at offset
/// j Σ_k d_k + Σ_{k'<k} d_k'.
pub fn neuron_factors(seed: u64, neuron: usize, out: &mut [f64]) {
    neuron_stream(seed, neuron).fill_normal(out);
}

/// The stream `neuron_factors` reads, for callers that draw each factor
/// vector straight into its place (successive draws continue the stream).
fn neuron_stream(seed: u64, neuron: usize) -> KeyedStream {
    KeyedStream::new(seed, Stream::KronFactors, neuron as u32)
}

/// Bytes per worker thread beyond the output (`Workspace`): a block's
/// factor vectors and the per-factor products for one chunk of points (or
/// whole entity tables).
pub fn scratch_bytes(dims: &[usize], table_rows: usize, rank: usize, threads: usize) -> u128 {
    let sum_d: u128 = dims.iter().map(|&k| k as u128).sum();
    let cols = (neurons_per_block(rank, sum_d as usize) * rank) as u128;
    let rows = (table_rows.max(CHUNK_POINTS)) as u128;
    // Saturating: absurd sizes give a huge figure, never a panic.
    (cols * sum_d)
        .saturating_add(rows.saturating_mul(cols).saturating_mul(dims.len() as u128))
        .saturating_mul(8)
        .saturating_mul(threads.max(1) as u128)
}

/// P(0)ᵀ (m × n) under Kronecker-factored init of rank `rank`. Points of r
/// terms are contracted term by term and the terms summed in order; indexed
/// factors are multiplied through their tables. Checks `ctl` between
/// neuron blocks and chunks.
pub fn preacts_t(f: &Factors<'_>, seed: u64, width: usize, rank: usize, ctl: &Control) -> Result<Array2<f64>> {
    preacts_range(f, seed, 0, width, rank, ctl)
}

/// Rows `first .. first + count` of `preacts_t`'s result.
pub fn preacts_range(
    f: &Factors<'_>,
    seed: u64,
    first: usize,
    count: usize,
    rank: usize,
    ctl: &Control,
) -> Result<Array2<f64>> {
    let Some(end) = first.checked_add(count) else {
        return invalid("width", "must be below 2^32");
    };
    check(end, rank)?;
    let n = f.n();
    let mut p_t = try_array2(count, n, "preactivation matrix P (n × width)")?;
    if n == 0 || count == 0 {
        return Ok(p_t);
    }
    let dims = f.dims();
    let sum_d: usize = dims.iter().sum();
    let scale = 1.0 / (rank as f64).sqrt();
    let block = neurons_per_block(rank, sum_d);
    let terms_per_point = f.rank();
    let shape = BlockShape { cols: block.min(count) * rank, points: CHUNK_POINTS.min(n) * terms_per_point };
    let blocks = p_t.axis_chunks_iter_mut(Axis(0), block).into_par_iter().enumerate();
    blocks.try_for_each_init(
        || None,
        |work: &mut Option<Workspace>, (blk, mut rows)| {
            ctl.check()?;
            let work = match work {
                Some(w) => w,
                None => work.insert(Workspace::new(f, shape)?),
            };
            let b = rows.nrows();
            let cols = b * rank;
            work.draw_factors(seed, first + blk * block, b, rank);
            let g: Vec<_> = work.g.iter().map(|gk| gk.slice(s![..cols, ..])).collect();
            // Indexed factors: the table's products once per block.
            for (k, gk) in g.iter().enumerate() {
                if let Some(a) = work.tables[k].as_mut() {
                    matmul_into(&f.mat(k), &gk.t(), &mut a.slice_mut(s![.., ..cols]));
                }
            }
            let mut start = 0;
            while start < n {
                ctl.check()?;
                let stop = (start + CHUNK_POINTS).min(n);
                let (t0, t1) = (start * terms_per_point, stop * terms_per_point);
                for (k, gk) in g.iter().enumerate() {
                    if f.index(k).is_none() {
                        let u = f.mat(k);
                        matmul_into(
                            &u.slice(s![t0..t1, ..]),
                            &gk.t(),
                            &mut work.chunk[k].slice_mut(s![..t1 - t0, ..cols]),
                        );
                    }
                }
                for i in start..stop {
                    for c in 0..b {
                        let mut point = 0.0;
                        for t in i * terms_per_point..(i + 1) * terms_per_point {
                            let mut term = 0.0;
                            for j in 0..rank {
                                let col = c * rank + j;
                                let mut prod = 1.0;
                                for (k, table) in work.tables.iter().enumerate() {
                                    prod *= match table {
                                        Some(a) => a[[f.table_row(k, t), col]],
                                        None => work.chunk[k][[t - t0, col]],
                                    };
                                }
                                term += prod;
                            }
                            point += term;
                        }
                        rows[[c, i]] = scale * point;
                    }
                }
                ctl.advance(((stop - start) * b) as u64);
                start = stop;
            }
            Ok(())
        },
    )?;
    Ok(p_t)
}

/// The largest block a worker runs: factor-vector columns (neurons × R)
/// and rows of the per-factor products (points of a chunk × their terms).
#[derive(Clone, Copy)]
struct BlockShape {
    cols: usize,
    points: usize,
}

/// One worker's buffers, allocated once and reused for every block it runs:
/// at d_k = 2^15 a block's factor vectors take 128 MiB, and allocating them
/// afresh per block (the kernel zeroing every new page) cost about as much
/// as drawing the normals that fill them.
struct Workspace {
    /// Per factor, (cols × d_k): row c·R + j is g_{first+c, j}^(k).
    g: Vec<Array2<f64>>,
    /// Per factor: an indexed factor's table times the factor vectors.
    tables: Vec<Option<Array2<f64>>>,
    /// Per unindexed factor: a chunk of points' products with the vectors.
    chunk: Vec<Array2<f64>>,
}

impl Workspace {
    fn new(f: &Factors<'_>, shape: BlockShape) -> Result<Workspace> {
        let (mut g, mut tables, mut chunk) = (Vec::new(), Vec::new(), Vec::new());
        for (k, &dk) in f.dims().iter().enumerate() {
            g.push(try_array2(shape.cols, dk, "the initial factor vectors of a block of neurons")?);
            let indexed = f.index(k).is_some();
            tables.push(match indexed {
                true => Some(try_array2(f.mat(k).nrows(), shape.cols, "a table's products with the factor vectors")?),
                false => None,
            });
            let rows = if indexed { 0 } else { shape.points };
            chunk.push(try_array2(rows, shape.cols, "per-factor products")?);
        }
        Ok(Workspace { g, tables, chunk })
    }

    /// Draws the factor vectors of neurons first .. first + b into `g`,
    /// straight from each neuron's stream in its order (term j's factors
    /// in turn), which is `neuron_factors`' layout: no staging copy.
    fn draw_factors(&mut self, seed: u64, first: usize, b: usize, rank: usize) {
        for c in 0..b {
            let mut stream = neuron_stream(seed, first + c);
            for j in 0..rank {
                for gk in self.g.iter_mut() {
                    stream.fill_normal(gk.row_mut(c * rank + j).as_slice_mut().expect("rows of a fresh array"));
                }
            }
        }
    }
}

/// The factor vectors of every neuron: per factor an (m, R, d_k) array, for
/// inspection and independent checks.
pub fn factor_arrays(seed: u64, width: usize, dims: &[usize], rank: usize) -> Result<Vec<ndarray::Array3<f64>>> {
    check(width, rank)?;
    let mut out = Vec::with_capacity(dims.len());
    for &dk in dims {
        let len = width.checked_mul(rank).and_then(|v| v.checked_mul(dk));
        let Some(len) = len else {
            return invalid("width", "the factor arrays' size overflows");
        };
        let data = try_zeros(len, "the initial factor vectors (width × R × d_k)")?;
        out.push(ndarray::Array3::from_shape_vec((width, rank, dk), data).expect("sizes match"));
    }
    for r in 0..width {
        let mut stream = neuron_stream(seed, r);
        for j in 0..rank {
            for a in out.iter_mut() {
                stream.fill_normal(a.slice_mut(s![r, j, ..]).as_slice_mut().expect("rows of a fresh array"));
            }
        }
    }
    Ok(out)
}

/// W(0) materialized (m × d): row r = R^{-1/2} Σ_j ⊗_k g_rj^(k). Only for
/// small d (`dense_weights`, the dense backend).
pub fn weight_matrix(seed: u64, width: usize, dims: &[usize], rank: usize, ctl: &Control) -> Result<Array2<f64>> {
    check(width, rank)?;
    let Some(d) = dims.iter().try_fold(1usize, |acc, &k| acc.checked_mul(k)) else {
        return invalid("dims", "the product of the dimensions overflows");
    };
    let sum_d: usize = dims.iter().sum();
    let scale = 1.0 / (rank as f64).sqrt();
    let mut w = try_array2(width, d, "weight matrix (width × d)")?;
    w.axis_iter_mut(Axis(0)).into_par_iter().enumerate().try_for_each(|(r, mut row)| {
        ctl.check()?;
        let mut buf = vec![0.0; rank * sum_d];
        neuron_factors(seed, r, &mut buf);
        let row = row.as_slice_mut().expect("fresh array is standard layout");
        let mut term = Vec::with_capacity(d);
        for j in 0..rank {
            term.clear();
            term.push(1.0);
            let mut offset = j * sum_d;
            for &dk in dims {
                let g = &buf[offset..offset + dk];
                let prev = std::mem::take(&mut term);
                term.reserve(prev.len() * dk);
                for p in &prev {
                    term.extend(g.iter().map(|v| p * v));
                }
                offset += dk;
            }
            row.iter_mut().zip(&term).for_each(|(o, v)| *o += v);
        }
        row.iter_mut().for_each(|v| *v *= scale);
        Ok(())
    })?;
    Ok(w)
}

/// Samples of the conditional variance behind `threshold` (fixed, so the
/// threshold is a deterministic function of its arguments).
const CALIBRATION_SAMPLES: usize = 1 << 16;
/// The calibration's own stream key (no user seed is involved).
const CALIBRATION_SEED: u64 = 0x6B72_6F6E_6361_6C69;

/// The tail P(Z > b) of Z = R^{-1/2} Σ_{j<R} Π_{k<p} ξ_jk (ξ iid N(0, 1)),
/// the preactivation of a rank-one unit-norm point under Kronecker init.
///
/// Computed deterministically by conditioning: given c_j = Π_{k<p-1} ξ_jk,
/// Z is normal with variance ‖c‖²/R, so P(Z > b) = E[Φ̄(b √R / ‖c‖)]. The
/// expectation is the mean over a fixed sample of 2^16 vectors c (drawn
/// from a fixed Philox stream, no user seed): smooth and decreasing in b.
/// For p = 1, Z is standard normal and the tail is exact.
struct KronTail {
    /// √R / ‖c‖ per sample; empty for p = 1.
    inv_sd: Vec<f64>,
}

impl KronTail {
    fn new(rank: usize, p: usize) -> Result<KronTail> {
        if rank == 0 || rank > MAX_RANK {
            return invalid("init_rank", format!("must be in [1, {MAX_RANK}], got {rank}"));
        }
        if p == 0 {
            return invalid("dims", "need at least one factor");
        }
        if p == 1 {
            return Ok(KronTail { inv_sd: Vec::new() });
        }
        let mut stream = KeyedStream::new(CALIBRATION_SEED, Stream::KronFactors, ((rank << 8) | p.min(255)) as u32);
        let mut xi = vec![0.0; rank * (p - 1)];
        let mut inv_sd = Vec::with_capacity(CALIBRATION_SAMPLES);
        for _ in 0..CALIBRATION_SAMPLES {
            stream.fill_normal(&mut xi);
            let norm2: f64 = xi.chunks_exact(p - 1).map(|c| c.iter().product::<f64>().powi(2)).sum();
            inv_sd.push((rank as f64).sqrt() / norm2.sqrt());
        }
        Ok(KronTail { inv_sd })
    }

    fn at(&self, b: f64) -> f64 {
        if self.inv_sd.is_empty() {
            return upper_tail(b);
        }
        self.inv_sd.iter().map(|&s| upper_tail(b * s)).sum::<f64>() / self.inv_sd.len() as f64
    }
}

/// The expected fraction of neurons a rank-one unit-norm point fires at
/// threshold b under Kronecker init of rank R with p factors (`KronTail`).
pub fn firing_fraction(b: f64, rank: usize, p: usize) -> Result<f64> {
    if b.is_nan() {
        return invalid("threshold", "must not be NaN");
    }
    Ok(KronTail::new(rank, p)?.at(b))
}

/// The threshold b at which a rank-one unit-norm point fires the same
/// expected fraction of neurons under Kronecker-factored init of rank R
/// with p factors as under Gaussian init at `gaussian_b`: the b with
/// `firing_fraction(b) = Φ̄(gaussian_b)`, by bisection to 1e-12 (the tail
/// is decreasing in b). For p = 1 it is `gaussian_b` exactly.
pub fn threshold(gaussian_b: f64, rank: usize, p: usize) -> Result<f64> {
    let tail = KronTail::new(rank, p)?;
    if !gaussian_b.is_finite() {
        return invalid("threshold", "must be finite");
    }
    if p == 1 {
        return Ok(gaussian_b);
    }
    let target = upper_tail(gaussian_b);
    let (mut lo, mut hi) = (-64.0f64, 64.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if tail.at(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 {
            break;
        }
    }
    Ok(0.5 * (lo + hi))
}

/// Φ̄(x) = P(N(0, 1) > x).
fn upper_tail(x: f64) -> f64 {
    0.5 * libm::erfc(x / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factors::views;

    fn pseudo(n: usize, d: usize, salt: u64) -> Array2<f64> {
        let mut z = vec![0.0; n * d];
        crate::rng::initial_weights(salt, 3, &mut z);
        Array2::from_shape_vec((n, d), z).unwrap()
    }

    /// Init against the materialized W(0) times the materialized points.
    fn check_against_dense(f: &Factors<'_>, m: usize, rank: usize) {
        let ctl = Control::new();
        let p = preacts_t(f, 7, m, rank, &ctl).unwrap().reversed_axes();
        let w = weight_matrix(7, m, &f.dims(), rank, &ctl).unwrap();
        let mut x = Vec::new();
        for i in 0..f.n() {
            f.dense_row(i, &mut x);
            for r in 0..m {
                let brute: f64 = w.row(r).iter().zip(&x).map(|(a, b)| a * b).sum();
                let scale: f64 = w.row(r).iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                assert!((p[[i, r]] - brute).abs() <= 1e-12 * scale.max(1e-300), "i {i} r {r}");
            }
        }
    }

    #[test]
    fn kron_init_matches_the_materialized_weights() {
        for (dims, rank, m) in
            [(vec![3usize, 4], 1usize, 9usize), (vec![3, 4], 8, 70), (vec![2, 3, 2], 5, 30), (vec![6], 3, 4)]
        {
            let mats: Vec<_> = dims.iter().enumerate().map(|(k, &dk)| pseudo(11, dk, 40 + k as u64)).collect();
            check_against_dense(&Factors::new(views(&mats)).unwrap(), m, rank);
            // Points of two terms each.
            let mats: Vec<_> = dims.iter().enumerate().map(|(k, &dk)| pseudo(12, dk, 50 + k as u64)).collect();
            check_against_dense(&Factors::with_rank(views(&mats), 2).unwrap(), m, rank);
        }
    }

    #[test]
    fn kron_init_of_indexed_points_matches_gathered_rows() {
        let tables = [pseudo(4, 3, 1), pseudo(7, 5, 2)];
        let ia: ndarray::Array1<u64> = (0..20).map(|i| (i % 4) as u64).collect();
        let ib: ndarray::Array1<u64> = (0..20).map(|i| (i * 3 % 7) as u64).collect();
        let f = Factors::indexed(views(&tables), vec![Some(ia.view()), Some(ib.view())], 1).unwrap();
        let ctl = Control::new();
        let a = preacts_t(&f, 1, 33, 4, &ctl).unwrap();
        let b = preacts_t(&f.gathered().view(), 1, 33, 4, &ctl).unwrap();
        assert!((&a - &b).iter().all(|v| v.abs() <= 1e-13));
        check_against_dense(&f, 33, 4);
    }

    #[test]
    fn variance_is_the_squared_norm_and_kurtosis_follows_r_and_p() {
        // P(0) of one unit rank-one point over many neurons: mean 0, variance
        // 1, kurtosis 3 + (3^p - 3)/R.
        for (p, rank) in [(2usize, 1usize), (2, 4), (3, 2)] {
            let dims = vec![4usize; p];
            let mats: Vec<_> = dims
                .iter()
                .map(|&dk| {
                    let mut u = Array2::zeros((1, dk));
                    u[[0, 0]] = 1.0;
                    u
                })
                .collect();
            let f = Factors::new(views(&mats)).unwrap();
            let m = 400_000;
            let z = preacts_t(&f, 11, m, rank, &Control::new()).unwrap();
            let n = m as f64;
            let mean = z.sum() / n;
            let var = z.iter().map(|v| v * v).sum::<f64>() / n;
            let kurt = z.iter().map(|v| v.powi(4)).sum::<f64>() / n / (var * var);
            let want = 3.0 + (3f64.powi(p as i32) - 3.0) / rank as f64;
            assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.02, "p {p} R {rank}: mean {mean} var {var}");
            assert!((kurt - want).abs() < 0.08 * want, "p {p} R {rank}: kurtosis {kurt}, expected {want}");
        }
    }

    #[test]
    fn threshold_matches_the_gaussian_firing_fraction() {
        let b = (0.4 * (2048f64).ln()).sqrt();
        assert_eq!(threshold(b, 8, 1).unwrap(), b);
        for (p, rank) in [(2usize, 1usize), (2, 8), (3, 8)] {
            let kb = threshold(b, rank, p).unwrap();
            assert_eq!(kb, threshold(b, rank, p).unwrap(), "deterministic");
            // Empirical firing fraction of a unit rank-one point over many neurons.
            let mats: Vec<_> = (0..p)
                .map(|_| {
                    let mut u = Array2::zeros((1, 3));
                    u[[0, 1]] = 1.0;
                    u
                })
                .collect();
            let f = Factors::new(views(&mats)).unwrap();
            let m = 400_000;
            let z = preacts_t(&f, 5, m, rank, &Control::new()).unwrap();
            let fired = z.iter().filter(|&&v| v > kb).count() as f64 / m as f64;
            let want = upper_tail(b);
            assert!((fired - want).abs() < 0.05 * want, "p {p} R {rank}: fired {fired}, Gaussian {want}");
        }
        assert!(threshold(b, 0, 2).is_err());
        for (p, rank) in [(2usize, 3usize), (4, 1)] {
            let kb = threshold(b, rank, p).unwrap();
            assert!((firing_fraction(kb, rank, p).unwrap() - upper_tail(b)).abs() < 1e-10);
        }
        assert_eq!(firing_fraction(b, 5, 1).unwrap(), upper_tail(b));
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let mats = vec![pseudo(300, 5, 1), pseudo(300, 7, 2)];
        let f = Factors::new(views(&mats)).unwrap();
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let a = one.install(|| preacts_t(&f, 3, 100, 8, &Control::new()).unwrap());
        let b = preacts_t(&f, 3, 100, 8, &Control::new()).unwrap();
        assert_eq!(a, b);
    }
}
