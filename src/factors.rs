//! Kronecker-structured inputs: point i is a sum of r Kronecker products,
//! x_i = Σ_{j<r} u_{ij}^(1) ⊗ … ⊗ u_{ij}^(p), given as p matrices U_k of
//! (n·r) × d_k rows, term j of point i at row i·r + j (r = 1: the rank-one
//! points u_i^(1) ⊗ … ⊗ u_i^(p)). Row-major ⊗, as `np.kron`: coordinate
//! (a_1, …, a_p) of a term sits at a_1 d_2…d_p + … + a_p.

use crate::error::{invalid, Result};
use crate::model::VALUE_BOUND;
use ndarray::{s, Array2, ArrayView2};

/// Borrowed factors of one data set, checked for consistent shapes.
#[derive(Clone, Debug)]
pub struct Factors<'a> {
    mats: Vec<ArrayView2<'a, f64>>,
    /// Terms per point.
    rank: usize,
}

impl<'a> Factors<'a> {
    /// Rank-one points: factor k is n × d_k.
    pub fn new(mats: Vec<ArrayView2<'a, f64>>) -> Result<Self> {
        Self::with_rank(mats, 1)
    }

    /// Points with `rank` terms each: factor k is (n·rank) × d_k.
    pub fn with_rank(mats: Vec<ArrayView2<'a, f64>>, rank: usize) -> Result<Self> {
        if mats.is_empty() {
            return invalid("factors", "need at least one factor matrix");
        }
        if rank == 0 {
            return invalid("rank", "must be positive");
        }
        let rows = mats[0].nrows();
        if rows % rank != 0 {
            return invalid("factors", format!("{rows} rows are not a whole number of points of {rank} terms"));
        }
        for (k, u) in mats.iter().enumerate() {
            if u.nrows() != rows {
                return invalid("factors", format!("factor {k} has {} rows, factor 0 has {rows}", u.nrows()));
            }
            if u.ncols() == 0 {
                return invalid("factors", format!("factor {k} has dimension 0"));
            }
            if u.iter().any(|v| !v.is_finite()) {
                return invalid("factors", format!("factor {k} contains NaN or inf"));
            }
        }
        // ‖x_i‖ ≤ Σ_j Π_k ‖u_ij^(k)‖, each product summed as logs so that
        // the check itself cannot overflow; beyond the bound the Gram could.
        // Each factor's own inner products must stay finite too (the Python
        // data layer rebalances factor norms well inside this, `data.py`).
        let factor_limit = FACTOR_BOUND.ln();
        for i in 0..rows / rank {
            let mut norm = 0.0;
            for t in i * rank..(i + 1) * rank {
                let mut log_norm = 0.0;
                for (k, u) in mats.iter().enumerate() {
                    let l = log_norm_of(u.row(t));
                    if !(l <= factor_limit) {
                        return invalid(
                            "factors",
                            format!("row {t} of factor {k} has norm e^{l:.1} > {FACTOR_BOUND:e}"),
                        );
                    }
                    log_norm += l;
                }
                norm += log_norm.min(VALUE_BOUND.ln() + 1.0).exp();
            }
            if !(norm <= VALUE_BOUND) {
                return invalid(
                    "factors",
                    format!("point {i} has norm up to {norm:e}; kronnet needs ||x_i|| <= {VALUE_BOUND:e} (normalize the data)"),
                );
            }
        }
        Ok(Factors { mats, rank })
    }

    /// Factors already checked by `new` (the same arrays, or rows of them):
    /// skips the O(n Σ d_k) scan, which a step in `GramMode::Columns` would
    /// otherwise repeat every time.
    pub(crate) fn assume_checked(mats: Vec<ArrayView2<'a, f64>>, rank: usize) -> Self {
        debug_assert!(!mats.is_empty() && mats.iter().all(|u| u.nrows() == mats[0].nrows()));
        Factors { mats, rank }
    }

    /// Points [start, stop), without copying or re-checking.
    pub fn rows(&self, start: usize, stop: usize) -> Factors<'_> {
        let (a, b) = (start * self.rank, stop * self.rank);
        Factors { mats: self.mats.iter().map(|u| u.slice(s![a..b, ..])).collect(), rank: self.rank }
    }

    /// Number of points.
    pub fn n(&self) -> usize {
        self.mats[0].nrows() / self.rank
    }

    /// Terms per point.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Every term as a rank-one point of its own (n·r of them, point i's
    /// term j at i·r + j): the same arrays.
    pub fn terms(&self) -> Factors<'a> {
        Factors { mats: self.mats.clone(), rank: 1 }
    }

    /// Term j of every point, rank one (n points; a strided view).
    pub fn term(&self, j: usize) -> Factors<'_> {
        let r = self.rank as isize;
        Factors { mats: self.mats.iter().map(|u| u.slice(s![j..;r, ..])).collect(), rank: 1 }
    }

    pub fn dims(&self) -> Vec<usize> {
        self.mats.iter().map(|u| u.ncols()).collect()
    }

    /// d = Π d_k, or None when it overflows usize.
    pub fn d(&self) -> Option<usize> {
        self.mats.iter().try_fold(1usize, |acc, u| acc.checked_mul(u.ncols()))
    }

    pub fn mats(&self) -> &[ArrayView2<'a, f64>] {
        &self.mats
    }

    /// The factors of a subset of points (points may repeat), with their terms.
    pub fn select(&self, points: &[usize]) -> Vec<Array2<f64>> {
        let rows: Vec<usize> = points.iter().flat_map(|&i| i * self.rank..(i + 1) * self.rank).collect();
        self.mats.iter().map(|u| u.select(ndarray::Axis(0), &rows)).collect()
    }

    /// x_i materialized (length d): the sum of its terms; only for small d
    /// (tests, dense backend).
    pub fn dense_row(&self, i: usize, out: &mut Vec<f64>) {
        let mut term = Vec::new();
        out.clear();
        for t in i * self.rank..(i + 1) * self.rank {
            term.clear();
            term.push(1.0);
            for u in &self.mats {
                let row = u.row(t);
                let prev = std::mem::take(&mut term);
                term.reserve(prev.len() * row.len());
                for p in &prev {
                    term.extend(row.iter().map(|v| p * v));
                }
            }
            if out.is_empty() {
                out.extend_from_slice(&term);
            } else {
                out.iter_mut().zip(&term).for_each(|(o, v)| *o += v);
            }
        }
    }
}

/// Largest norm of one factor row: the products of two such stay finite.
pub const FACTOR_BOUND: f64 = 1e150;

/// ln ‖row‖, scaled by the largest |entry| first so that squaring neither
/// overflows nor underflows (−inf for a zero row).
fn log_norm_of(row: ndarray::ArrayView1<'_, f64>) -> f64 {
    let peak = row.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if peak == 0.0 {
        return f64::NEG_INFINITY;
    }
    let ss: f64 = row.iter().map(|v| (v / peak) * (v / peak)).sum();
    peak.ln() + 0.5 * ss.ln()
}

/// Views of owned factor matrices.
pub fn views(mats: &[Array2<f64>]) -> Vec<ArrayView2<'_, f64>> {
    mats.iter().map(|u| u.view()).collect()
}
