//! Array conversion at the boundary: float64 arrays read in place where
//! they are aligned, native and C-contiguous (a copy otherwise, so the core
//! never reads misaligned or oddly strided memory), integer indices, mode
//! strings parsed against the core's name tables, a net's init, and data
//! sets held while the core reads them.

use crate::factors::Factors;
use crate::init::{InitKind, InitName, InitialWeights};
use crate::kron_init;
use ndarray::{Array1, ArrayView1, ArrayView2, Ix2};
use numpy::{PyReadonlyArray, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// A float64 array of `D` dimensions the core can read in place: the input
/// itself when it is aligned, native-endian and C-contiguous; otherwise a
/// copy made by numpy (`np.require`). Only float64 is accepted here — the
/// Python package converts other dtypes, so no cast happens silently.
pub(super) fn f64_array<'py, D: ndarray::Dimension>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<PyReadonlyArray<'py, f64, D>> {
    let py = obj.py();
    let np = py.import("numpy")?;
    let is_array = obj.is_instance(&np.getattr("ndarray")?)?;
    let is_f64 = is_array && {
        let dt = obj.getattr("dtype")?;
        dt.getattr("kind")?.extract::<String>()? == "f" && dt.getattr("itemsize")?.extract::<usize>()? == 8
    };
    if !is_f64 {
        return Err(PyTypeError::new_err(format!("{name}: expected a float64 numpy array")));
    }
    let fixed = np.call_method1("require", (obj, "float64", ("C", "A")))?;
    fixed
        .extract::<PyReadonlyArray<'py, f64, D>>()
        .map_err(|_| PyValueError::new_err(format!("{name}: expected a {}-D array", D::NDIM.unwrap_or(0))))
}

/// `f64_array` for float32 (a float32 trainer's P from a checkpoint).
pub(super) fn f32_array<'py, D: ndarray::Dimension>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<PyReadonlyArray<'py, f32, D>> {
    let py = obj.py();
    let np = py.import("numpy")?;
    let is_array = obj.is_instance(&np.getattr("ndarray")?)?;
    let is_f32 = is_array && {
        let dt = obj.getattr("dtype")?;
        dt.getattr("kind")?.extract::<String>()? == "f" && dt.getattr("itemsize")?.extract::<usize>()? == 4
    };
    if !is_f32 {
        return Err(PyTypeError::new_err(format!("{name}: expected a float32 numpy array")));
    }
    let fixed = np.call_method1("require", (obj, "float32", ("C", "A")))?;
    fixed
        .extract::<PyReadonlyArray<'py, f32, D>>()
        .map_err(|_| PyValueError::new_err(format!("{name}: expected a {}-D array", D::NDIM.unwrap_or(0))))
}

pub(super) fn f64_matrices<'py>(objs: &[Bound<'py, PyAny>], name: &str) -> PyResult<Vec<PyReadonlyArray2<'py, f64>>> {
    objs.iter().enumerate().map(|(k, o)| f64_array::<Ix2>(o, &format!("{name}[{k}]"))).collect()
}

pub(super) fn views<'a>(arrays: &'a [PyReadonlyArray2<'_, f64>]) -> Vec<ArrayView2<'a, f64>> {
    arrays.iter().map(|a| a.as_array()).collect()
}

/// 1-D integer indices, each converted to usize (negative ones refused;
/// floats refused rather than truncated).
pub(super) fn indices(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<usize>> {
    let py = obj.py();
    let np = py.import("numpy")?;
    let kind = np.call_method1("asarray", (obj,))?.getattr("dtype")?.getattr("kind")?.extract::<String>()?;
    if kind != "i" && kind != "u" {
        return Err(PyTypeError::new_err(format!("{name}: expected integer indices")));
    }
    let arr = np.call_method1("require", (obj, "int64", ("C", "A")))?;
    let arr: PyReadonlyArray1<'_, i64> =
        arr.extract().map_err(|_| PyValueError::new_err(format!("{name}: expected a 1-D array of indices")))?;
    arr.as_array()
        .iter()
        .map(|&i| usize::try_from(i).map_err(|_| PyValueError::new_err(format!("{name}: index {i} is negative"))))
        .collect()
}

/// Parses a mode string into one of `options`, naming the argument.
pub(super) fn parse_mode<T: Copy>(value: &str, name: &str, options: &[(&str, T)]) -> PyResult<T> {
    options.iter().find(|(k, _)| *k == value).map(|(_, v)| *v).ok_or_else(|| {
        let names: Vec<String> = options.iter().map(|(k, _)| format!("{k:?}")).collect();
        PyValueError::new_err(format!("{name}: must be one of {}; got {value:?}", names.join(", ")))
    })
}

/// The names of a mode table, in its order (exported as the module's
/// `BACKENDS`, `INDEXES`, ...).
pub(super) fn mode_names<T>(options: &[(&'static str, T)]) -> Vec<&'static str> {
    options.iter().map(|(k, _)| *k).collect()
}

/// A net's initial weights as passed from Python: (seed, "gaussian" or
/// "kron", rank R of the Kronecker init).
pub(super) type PyInit = (u64, String, usize);

/// Parses `PyInit` into the core's description of W(0).
pub(super) fn initial(init: &PyInit) -> PyResult<InitialWeights> {
    let (seed, kind, rank) = init;
    let kind = match parse_mode(kind, "init", &InitName::NAMES)? {
        InitName::Gaussian => InitKind::Gaussian,
        InitName::Kron if (1..=kron_init::MAX_RANK).contains(rank) => InitKind::Kron { rank: *rank },
        InitName::Kron => {
            return Err(PyValueError::new_err(format!(
                "init_rank: must be in [1, {}]; got {rank}",
                kron_init::MAX_RANK
            )))
        }
    };
    Ok(InitialWeights { seed: *seed, kind })
}

/// A data set as passed from Python: (matrices, terms per point r, one
/// entry per factor: None when the matrix holds the (n·r) term rows, or an
/// index array (n·r,) into the matrix as an entity table).
pub(super) type PyPoints<'py> = (Vec<Bound<'py, PyAny>>, usize, Vec<Option<Bound<'py, PyAny>>>);

/// Converted points: arrays held while the core reads them.
pub(super) struct HeldPoints<'py> {
    mats: Vec<PyReadonlyArray2<'py, f64>>,
    index: Vec<Option<Array1<u64>>>,
    rank: usize,
}

impl<'py> HeldPoints<'py> {
    pub(super) fn hold(points: &PyPoints<'py>, name: &str) -> PyResult<Self> {
        let (mats, rank, index) = points;
        let mats = f64_matrices(mats, &format!("{name}.factors"))?;
        let index = index
            .iter()
            .enumerate()
            .map(|(k, idx)| {
                idx.as_ref()
                    .map(|i| Ok(indices(i, &format!("{name}.index[{k}]"))?.into_iter().map(|a| a as u64).collect()))
                    .transpose()
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(HeldPoints { mats, index, rank: *rank })
    }

    /// The arrays as plain views (which, unlike the held Python arrays,
    /// may cross into the worker that runs with the GIL released).
    pub(super) fn views(&self) -> PointViews<'_> {
        let index = self.index.iter().map(|i| i.as_ref().map(|i| i.view())).collect();
        PointViews { mats: views(&self.mats), index, rank: self.rank }
    }

    /// The points, checked.
    pub(super) fn factors(&self) -> crate::Result<Factors<'_>> {
        self.views().factors()
    }

    /// Points, before any check (for error messages on shapes).
    pub(super) fn n(&self) -> usize {
        let terms = match self.index.first() {
            Some(Some(idx)) => idx.len(),
            _ => self.mats.first().map_or(0, |u| u.as_array().nrows()),
        };
        terms / self.rank.max(1)
    }

    /// The factor dimensions d_k, before any check.
    pub(super) fn dims(&self) -> Vec<usize> {
        self.mats.iter().map(|u| u.as_array().ncols()).collect()
    }
}

/// Views of held points.
pub(super) struct PointViews<'a> {
    mats: Vec<ArrayView2<'a, f64>>,
    index: Vec<Option<ArrayView1<'a, u64>>>,
    rank: usize,
}

impl<'a> PointViews<'a> {
    /// The points, checked (O(Σ table sizes + n p)).
    pub(super) fn factors(&self) -> crate::Result<Factors<'a>> {
        Factors::indexed(self.mats.clone(), self.index.clone(), self.rank)
    }
}
