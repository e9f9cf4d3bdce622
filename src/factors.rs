//! Kronecker-structured inputs: point i is a sum of r Kronecker products,
//! x_i = Σ_{j<r} u_{ij}^(1) ⊗ … ⊗ u_{ij}^(p). Each factor k is either
//!
//! - rows: a matrix U_k of (n·r) × d_k rows, term j of point i at row i·r + j
//!   (r = 1: the rank-one points u_i^(1) ⊗ … ⊗ u_i^(p)); or
//! - indexed: a table T_k (N_k × d_k) of entity vectors shared by many
//!   points, and an index (n·r) of which table row each term uses, so that
//!   pairwise data (x_i = T_1[a_i] ⊗ T_2[b_i]) take O(Σ N_k d_k + n p) memory.
//!
//! Row-major ⊗, as `np.kron`: coordinate (a_1, …, a_p) of a term sits at
//! a_1 d_2…d_p + … + a_p.

use crate::error::{invalid, Result};
use crate::limits::VALUE_BOUND;
use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;

/// Borrowed factors of one data set, checked for consistent shapes.
#[derive(Clone, Debug)]
pub struct Factors<'a> {
    /// Factor k's rows (n·r × d_k), or its table (N_k × d_k) when indexed.
    mats: Vec<ArrayView2<'a, f64>>,
    /// Factor k's table row for every term (length n·r), when indexed.
    index: Vec<Option<ArrayView1<'a, u64>>>,
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
        let index = vec![None; mats.len()];
        Self::indexed(mats, index, rank)
    }

    /// Points with `rank` terms each whose factor k is `mats[k]`'s rows in
    /// order (index None) or the rows `index[k]` of the table `mats[k]`.
    pub fn indexed(
        mats: Vec<ArrayView2<'a, f64>>,
        index: Vec<Option<ArrayView1<'a, u64>>>,
        rank: usize,
    ) -> Result<Self> {
        if mats.is_empty() {
            return invalid("factors", "need at least one factor matrix");
        }
        if index.len() != mats.len() {
            return invalid("index", format!("has {} entries for {} factors", index.len(), mats.len()));
        }
        if rank == 0 {
            return invalid("rank", "must be positive");
        }
        let f = Factors { mats, index, rank };
        let rows = f.term_count(0);
        if rows % rank != 0 {
            return invalid("factors", format!("{rows} rows are not a whole number of points of {rank} terms"));
        }
        for (k, u) in f.mats.iter().enumerate() {
            if f.term_count(k) != rows {
                return invalid("factors", format!("factor {k} has {} rows, factor 0 has {rows}", f.term_count(k)));
            }
            if u.ncols() == 0 {
                return invalid("factors", format!("factor {k} has dimension 0"));
            }
            if u.iter().any(|v| !v.is_finite()) {
                return invalid("factors", format!("factor {k} contains NaN or inf"));
            }
            if let Some(idx) = &f.index[k] {
                if let Some((t, &bad)) = idx.iter().enumerate().find(|(_, &a)| a >= u.nrows() as u64) {
                    return invalid(
                        "index",
                        format!("term {t} of factor {k} uses row {bad}, the table has {} rows", u.nrows()),
                    );
                }
            }
        }
        f.check_norms()?;
        Ok(f)
    }

    /// ‖x_i‖ ≤ Σ_j Π_k ‖u_ij^(k)‖, each product summed as logs so that the
    /// check itself cannot overflow; beyond the bound the Gram could. Each
    /// factor's own inner products must stay finite too (the Python data
    /// layer rebalances factor norms well inside this, `kronnet/data/kron.py`). A table's
    /// row norms are computed once, however many terms use them.
    fn check_norms(&self) -> Result<()> {
        let factor_limit = FACTOR_BOUND.ln();
        let mut logs = Vec::with_capacity(self.mats.len());
        for (k, u) in self.mats.iter().enumerate() {
            let l: Vec<f64> = u.rows().into_iter().map(log_norm_of).collect();
            if let Some((t, bad)) = l.iter().enumerate().find(|(_, &v)| !(v <= factor_limit)) {
                return invalid("factors", format!("row {t} of factor {k} has norm e^{bad:.1} > {FACTOR_BOUND:e}"));
            }
            logs.push(l);
        }
        for i in 0..self.n() {
            let mut norm = 0.0;
            for t in i * self.rank..(i + 1) * self.rank {
                let log_norm: f64 = logs.iter().enumerate().map(|(k, l)| l[self.table_row(k, t)]).sum();
                norm += log_norm.min(VALUE_BOUND.ln() + 1.0).exp();
            }
            if !(norm <= VALUE_BOUND) {
                return invalid(
                    "factors",
                    format!("point {i} has norm up to {norm:e}; kronnet needs ||x_i|| <= {VALUE_BOUND:e} (normalize the data)"),
                );
            }
        }
        Ok(())
    }

    /// Factors already checked by `indexed` (the same arrays, or rows of
    /// them): skips the O(n Σ d_k) scan, which a step in `GramMode::Columns`
    /// would otherwise repeat every time.
    pub(crate) fn assume_checked(
        mats: Vec<ArrayView2<'a, f64>>,
        index: Vec<Option<ArrayView1<'a, u64>>>,
        rank: usize,
    ) -> Self {
        let f = Factors { mats, index, rank };
        debug_assert!(!f.mats.is_empty() && (0..f.p()).all(|k| f.term_count(k) == f.term_count(0)));
        f
    }

    /// Terms of factor k (rows, or index entries).
    fn term_count(&self, k: usize) -> usize {
        self.index[k].as_ref().map_or(self.mats[k].nrows(), |idx| idx.len())
    }

    /// Which row of `mats()[k]` term row t of factor k is.
    #[inline]
    pub fn table_row(&self, k: usize, t: usize) -> usize {
        match &self.index[k] {
            Some(idx) => idx[t] as usize,
            None => t,
        }
    }

    /// Term row t of factor k (d_k values).
    #[inline]
    pub fn row(&self, k: usize, t: usize) -> ArrayView1<'_, f64> {
        self.mats[k].row(self.table_row(k, t))
    }

    /// Points [start, stop), without copying or re-checking.
    pub fn rows(&self, start: usize, stop: usize) -> Factors<'_> {
        let (a, b) = (start * self.rank, stop * self.rank);
        self.map_terms(|u| u.slice(s![a..b, ..]), |idx| idx.slice(s![a..b]), self.rank)
    }

    /// Applies `rows` to unindexed matrices and `entries` to indexes.
    fn map_terms<'b>(
        &'b self,
        rows: impl Fn(&'b ArrayView2<'a, f64>) -> ArrayView2<'b, f64>,
        entries: impl Fn(&'b ArrayView1<'a, u64>) -> ArrayView1<'b, u64>,
        rank: usize,
    ) -> Factors<'b> {
        let mut mats = Vec::with_capacity(self.mats.len());
        let mut index = Vec::with_capacity(self.mats.len());
        for (u, idx) in self.mats.iter().zip(&self.index) {
            match idx {
                Some(idx) => {
                    mats.push(u.view());
                    index.push(Some(entries(idx)));
                }
                None => {
                    mats.push(rows(u));
                    index.push(None);
                }
            }
        }
        Factors { mats, index, rank }
    }

    /// Number of points.
    pub fn n(&self) -> usize {
        self.term_count(0) / self.rank
    }

    /// Number of factors p.
    pub fn p(&self) -> usize {
        self.mats.len()
    }

    /// Terms per point.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Every term as a rank-one point of its own (n·r of them, point i's
    /// term j at i·r + j): the same arrays.
    pub fn terms(&self) -> Factors<'a> {
        Factors { mats: self.mats.clone(), index: self.index.clone(), rank: 1 }
    }

    /// Term j of every point, rank one (n points; strided views).
    pub fn term(&self, j: usize) -> Factors<'_> {
        let r = self.rank as isize;
        self.map_terms(|u| u.slice(s![j..;r, ..]), |idx| idx.slice(s![j..;r]), 1)
    }

    pub fn dims(&self) -> Vec<usize> {
        self.mats.iter().map(|u| u.ncols()).collect()
    }

    /// d = Π d_k, or None when it overflows usize.
    pub fn d(&self) -> Option<usize> {
        self.mats.iter().try_fold(1usize, |acc, u| acc.checked_mul(u.ncols()))
    }

    /// Factor k's matrix: its term rows, or its table when indexed.
    pub fn mat(&self, k: usize) -> ArrayView2<'_, f64> {
        self.mats[k].view()
    }

    /// Factor k's index into its table, if indexed.
    pub fn index(&self, k: usize) -> Option<ArrayView1<'_, u64>> {
        self.index[k].as_ref().map(|idx| idx.view())
    }

    /// Whether any factor is indexed.
    pub fn is_indexed(&self) -> bool {
        self.index.iter().any(Option::is_some)
    }

    /// The term rows of a subset of points (points may repeat), gathered
    /// from the tables where indexed: p matrices of |points|·r rows.
    pub fn select(&self, points: &[usize]) -> Vec<Array2<f64>> {
        let terms: Vec<usize> = points.iter().flat_map(|&i| i * self.rank..(i + 1) * self.rank).collect();
        (0..self.p())
            .map(|k| {
                let rows: Vec<usize> = terms.iter().map(|&t| self.table_row(k, t)).collect();
                self.mats[k].select(Axis(0), &rows)
            })
            .collect()
    }

    /// The same points with every indexed factor gathered into term rows.
    pub fn gathered(&self) -> OwnedFactors {
        let all: Vec<usize> = (0..self.n()).collect();
        OwnedFactors { mats: self.select(&all), index: vec![None; self.p()], rank: self.rank }
    }

    /// An owned copy (tables and indexes as they are).
    pub fn to_owned(&self) -> OwnedFactors {
        OwnedFactors {
            mats: self.mats.iter().map(|u| u.to_owned()).collect(),
            index: self.index.iter().map(|idx| idx.as_ref().map(|i| i.to_owned())).collect(),
            rank: self.rank,
        }
    }

    /// X (n × d) with rows x_i, materialized in parallel: only for small d
    /// (the dense backend, init at small d, `dense_weights`).
    pub fn materialize(&self) -> Result<Array2<f64>> {
        let Some(d) = self.d() else {
            return invalid("dims", "the product of the dimensions overflows");
        };
        let mut x = crate::error::try_array2(self.n(), d, "the dense data matrix (n × d)")?;
        x.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each_init(Vec::new, |term, (i, mut out)| {
            self.dense_row_into(i, out.as_slice_mut().expect("rows of a fresh array"), term);
        });
        Ok(x)
    }

    /// x_i materialized (length d): the sum of its terms; only for small d
    /// (tests, dense backend).
    pub fn dense_row(&self, i: usize, out: &mut Vec<f64>) {
        out.clear();
        out.resize(self.d().expect("dense_row is for small d, whose product fits in usize"), 0.0);
        self.dense_row_into(i, out, &mut Vec::new());
    }

    /// x_i into `out` (length d), with `term` as scratch for points of
    /// several terms. Each Kronecker product is expanded in place, last
    /// entry first (entry a moves to a · d_k and later, so nothing unread is
    /// overwritten): every value is ((1 · u_1[a_1]) · u_2[a_2]) · …, and
    /// terms are summed in order.
    pub fn dense_row_into(&self, i: usize, out: &mut [f64], term: &mut Vec<f64>) {
        debug_assert_eq!(Some(out.len()), self.d(), "out holds one point (d values)");
        for t in i * self.rank..(i + 1) * self.rank {
            let dst: &mut [f64] = if t == i * self.rank {
                out
            } else {
                term.resize(out.len(), 0.0);
                term
            };
            dst[0] = 1.0;
            let mut len = 1;
            for k in 0..self.p() {
                let row = self.row(k, t);
                let dk = row.len();
                for a in (0..len).rev() {
                    let v = dst[a];
                    for (o, &u) in dst[a * dk..(a + 1) * dk].iter_mut().zip(row.iter()) {
                        *o = v * u;
                    }
                }
                len *= dk;
            }
            if t != i * self.rank {
                out.iter_mut().zip(term.iter()).for_each(|(o, v)| *o += v);
            }
        }
    }
}

/// Factors that own their arrays (a trainer's copy of its data); made only
/// from checked `Factors`, so `view` need not check again.
#[derive(Clone, Debug)]
pub struct OwnedFactors {
    mats: Vec<Array2<f64>>,
    index: Vec<Option<Array1<u64>>>,
    rank: usize,
}

impl OwnedFactors {
    fn index_views(&self) -> Vec<Option<ArrayView1<'_, u64>>> {
        self.index.iter().map(|idx| idx.as_ref().map(|i| i.view())).collect()
    }

    /// Borrowed view; the arrays were checked when these factors were made.
    pub fn view(&self) -> Factors<'_> {
        Factors::assume_checked(views(&self.mats), self.index_views(), self.rank)
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
