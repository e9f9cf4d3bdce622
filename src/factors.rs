//! Kronecker-factored inputs: point i is x_i = u_i^(1) ⊗ … ⊗ u_i^(p), given as
//! p matrices U_k (n × d_k), row i of U_k being u_i^(k). Row-major ⊗, as
//! `np.kron`: coordinate (a_1, …, a_p) of x_i sits at a_1 d_2…d_p + … + a_p.

use crate::error::{invalid, Result};
use crate::model::VALUE_BOUND;
use ndarray::{Array2, ArrayView2};

/// Borrowed factors of one data set, checked for consistent shapes.
#[derive(Clone, Debug)]
pub struct Factors<'a> {
    mats: Vec<ArrayView2<'a, f64>>,
}

impl<'a> Factors<'a> {
    pub fn new(mats: Vec<ArrayView2<'a, f64>>) -> Result<Self> {
        if mats.is_empty() {
            return invalid("factors", "need at least one factor matrix");
        }
        let n = mats[0].nrows();
        for (k, u) in mats.iter().enumerate() {
            if u.nrows() != n {
                return invalid("factors", format!("factor {k} has {} rows, factor 0 has {n}", u.nrows()));
            }
            if u.ncols() == 0 {
                return invalid("factors", format!("factor {k} has dimension 0"));
            }
            if u.iter().any(|v| !v.is_finite()) {
                return invalid("factors", format!("factor {k} contains NaN or inf"));
            }
        }
        // ‖x_i‖ = Π_k ‖u_i^(k)‖, summed as logs so that the check itself
        // cannot overflow; beyond the bound the Gram could. Each factor's
        // own inner products must stay finite too (the Python data layer
        // rebalances factor norms well inside this, `data.py`).
        let (limit, factor_limit) = (VALUE_BOUND.ln(), FACTOR_BOUND.ln());
        for i in 0..n {
            let mut log_norm = 0.0;
            for (k, u) in mats.iter().enumerate() {
                let l = log_norm_of(u.row(i));
                if !(l <= factor_limit) {
                    return invalid("factors", format!("row {i} of factor {k} has norm e^{l:.1} > {FACTOR_BOUND:e}"));
                }
                log_norm += l;
            }
            if !(log_norm <= limit) {
                return invalid(
                    "factors",
                    format!("point {i} has norm e^{log_norm:.1}; kronnet needs ||x_i|| <= {VALUE_BOUND:e} (normalize the data)"),
                );
            }
        }
        Ok(Factors { mats })
    }

    /// Factors already checked by `new` (the same arrays, or rows of them):
    /// skips the O(n Σ d_k) scan, which a step in `GramMode::Columns` would
    /// otherwise repeat every time.
    pub(crate) fn assume_checked(mats: Vec<ArrayView2<'a, f64>>) -> Self {
        debug_assert!(!mats.is_empty() && mats.iter().all(|u| u.nrows() == mats[0].nrows()));
        Factors { mats }
    }

    /// Rows [start, stop) of every factor, without copying or re-checking.
    pub fn rows(&self, start: usize, stop: usize) -> Factors<'_> {
        Factors { mats: self.mats.iter().map(|u| u.slice(ndarray::s![start..stop, ..])).collect() }
    }

    pub fn n(&self) -> usize {
        self.mats[0].nrows()
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

    /// The factors of a subset of points (rows may repeat).
    pub fn select(&self, rows: &[usize]) -> Vec<Array2<f64>> {
        self.mats.iter().map(|u| u.select(ndarray::Axis(0), rows)).collect()
    }

    /// x_i materialized (length d); only for small d (tests, dense backend).
    pub fn dense_row(&self, i: usize, out: &mut Vec<f64>) {
        out.clear();
        out.push(1.0);
        for u in &self.mats {
            let row = u.row(i);
            let prev = std::mem::take(out);
            out.reserve(prev.len() * row.len());
            for p in &prev {
                out.extend(row.iter().map(|v| p * v));
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
