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
        // cannot overflow; beyond the bound the Gram could.
        let limit = VALUE_BOUND.ln();
        for i in 0..n {
            let log_norm: f64 = mats.iter().map(|u| 0.5 * u.row(i).iter().map(|v| v * v).sum::<f64>().ln()).sum();
            if !(log_norm <= limit) {
                return invalid(
                    "factors",
                    format!("point {i} has norm e^{log_norm:.1}; kronnet needs ||x_i|| <= {VALUE_BOUND:e} (normalize the data)"),
                );
            }
        }
        Ok(Factors { mats })
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

/// Views of owned factor matrices.
pub fn views(mats: &[Array2<f64>]) -> Vec<ArrayView2<'_, f64>> {
    mats.iter().map(|u| u.view()).collect()
}
