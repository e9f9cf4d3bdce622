//! `AsyncTree`: the asynchronous tree over a values matrix it owns, for
//! direct use and testing (training builds the same structure over P).

use super::arrays::{f64_array, indices};
use super::runtime::guarded;
use super::trainer::stats_dict;
use crate::index::AsyncTree;
use ndarray::{Array1, Array2, Ix2};
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::collections::HashMap;

/// The asynchronous tree over a values matrix it owns (n × m), for direct
/// use and testing; training uses the same structure over P.
#[pyclass(name = "AsyncTree", module = "kronnet._core")]
pub(super) struct PyAsyncTree {
    values: Array2<f64>,
    tree: AsyncTree,
}

fn row_index(i: i64, n: usize, name: &str) -> PyResult<usize> {
    usize::try_from(i)
        .ok()
        .filter(|&i| i < n)
        .ok_or_else(|| PyValueError::new_err(format!("{name}: row {i} is out of range for {n} rows")))
}

#[pymethods]
impl PyAsyncTree {
    #[new]
    fn new(py: Python<'_>, values: &Bound<'_, PyAny>) -> PyResult<Self> {
        let values = f64_array::<Ix2>(values, "values")?.as_array().to_owned();
        let tree = guarded(py, || Ok(AsyncTree::new(values.view())))?;
        Ok(PyAsyncTree { values, tree })
    }

    /// values[:, cols] = new_values (n × k), then record the change; the
    /// trees resync lazily on their next query. `cols` must be distinct.
    fn update(&mut self, py: Python<'_>, cols: &Bound<'_, PyAny>, new_values: &Bound<'_, PyAny>) -> PyResult<()> {
        let (n, m) = self.values.dim();
        let cols = indices(cols, "cols")?;
        if let Some(&bad) = cols.iter().find(|&&c| c >= m) {
            return Err(PyValueError::new_err(format!("cols: index {bad} is out of range for {m} columns")));
        }
        let new_values = f64_array::<Ix2>(new_values, "new_values")?;
        let new_values = new_values.as_array();
        if new_values.dim() != (n, cols.len()) {
            return Err(PyValueError::new_err(format!(
                "new_values: has shape {:?}, expected ({n}, {})",
                new_values.dim(),
                cols.len()
            )));
        }
        let mut sorted = cols.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(PyValueError::new_err("cols: indices must be distinct"));
        }
        let (values, tree) = (&mut self.values, &mut self.tree);
        guarded(py, || {
            for (k, &c) in cols.iter().enumerate() {
                values.column_mut(c).assign(&new_values.column(k));
            }
            tree.log_changed(&sorted.iter().map(|&c| c as u32).collect::<Vec<_>>());
            Ok(())
        })
    }

    /// Sorted r with values[i, r] > tau: int64 array.
    fn query<'py>(&mut self, py: Python<'py>, i: i64, tau: f64) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let i = row_index(i, self.values.nrows(), "i")?;
        let (values, tree) = (&self.values, &mut self.tree);
        let found = guarded(py, || Ok(tree.query(values.view(), i, tau)))?;
        Ok(Array1::from_iter(found.into_iter().map(i64::from)).into_pyarray(py))
    }

    /// Fire sets of several rows at once (synced and queried in parallel).
    fn query_many<'py>(
        &mut self,
        py: Python<'py>,
        rows: &Bound<'py, PyAny>,
        tau: f64,
    ) -> PyResult<Vec<Bound<'py, PyArray1<i64>>>> {
        let rows = indices(rows, "rows")?;
        let n = self.values.nrows();
        if let Some(&bad) = rows.iter().find(|&&i| i >= n) {
            return Err(PyValueError::new_err(format!("rows: row {bad} is out of range for {n} rows")));
        }
        let (values, tree) = (&self.values, &mut self.tree);
        let found = guarded(py, || Ok(tree.query_many(values.view(), &rows, None, tau)))?;
        Ok(found.into_iter().map(|f| Array1::from_iter(f.into_iter().map(i64::from)).into_pyarray(py)).collect())
    }

    /// A copy of the current values (n × m).
    #[getter]
    fn values<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        self.values.clone().into_pyarray(py)
    }

    #[getter]
    fn shape(&self) -> (usize, usize) {
        self.values.dim()
    }

    #[getter]
    fn fanout(&self) -> usize {
        self.tree.fanout()
    }

    /// Bytes of the tree's own structure (internal nodes, log, cursors).
    #[getter]
    fn memory_bytes(&self) -> usize {
        self.tree.bytes()
    }

    /// Work so far: dict of queries, rows_synced, full_rebuilds,
    /// nodes_recomputed, values_read.
    #[getter]
    fn stats(&self) -> HashMap<&'static str, u64> {
        stats_dict(self.tree.work())
    }
}
