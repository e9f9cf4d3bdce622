//! The `Coefficients` class (a net's learned α for one training set) and
//! the net's blocks, (points, coefficients) pairs, as the core reads them.
//! The blocks live here rather than in `arrays.rs` because they hold
//! `Coefficients` objects, and `Coefficients` itself reads arrays.

use super::arrays::{f64_array, HeldPoints, PyPoints};
use super::runtime::guarded;
use crate::coef::Coefficients;
use crate::predict::Block;
use ndarray::Ix2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;

/// The learned coefficients of one training set: αᵀ (n, width). Owned by
/// the net; trainers borrow it for each step.
#[pyclass(name = "Coefficients", module = "kronnet._core")]
pub(super) struct PyCoefficients {
    pub(super) inner: Coefficients,
}

#[pymethods]
impl PyCoefficients {
    /// Zero coefficients for n points, width neurons and `outputs` outputs.
    #[new]
    #[pyo3(signature = (n, width, outputs=1))]
    fn new(py: Python<'_>, n: usize, width: usize, outputs: usize) -> PyResult<Self> {
        Ok(PyCoefficients { inner: guarded(py, || Coefficients::zeros(n, width, outputs))? })
    }

    /// Coefficients from αᵀ, shape (n, width), and β̃, shape (n, outputs)
    /// (zeros of one output when None); both copied.
    #[staticmethod]
    #[pyo3(signature = (alpha_t, beta=None))]
    fn from_alpha_t(py: Python<'_>, alpha_t: &Bound<'_, PyAny>, beta: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let held = f64_array::<Ix2>(alpha_t, "alpha")?;
        let a = held.as_array();
        let b = match beta {
            Some(b) => f64_array::<Ix2>(b, "beta")?.as_array().to_owned(),
            None => ndarray::Array2::zeros((a.nrows(), 1)),
        };
        // All bits zero (not -0.0, which must come back as itself): a new
        // block with only its linear coefficients, built without a copy.
        if a.iter().all(|v| v.to_bits() == 0) {
            let (n, width) = a.dim();
            return Ok(PyCoefficients { inner: guarded(py, || Coefficients::from_beta(n, width, b))? });
        }
        let a = a.to_owned();
        Ok(PyCoefficients { inner: guarded(py, || Coefficients::from_parts(a, b))? })
    }

    /// A copy of αᵀ, shape (n, width).
    fn alpha_t<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        self.inner.alpha_t().to_owned().into_pyarray(py)
    }

    /// A copy of β̃, shape (n, outputs).
    fn beta<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        self.inner.beta().to_owned().into_pyarray(py)
    }

    #[getter]
    fn outputs(&self) -> usize {
        self.inner.outputs()
    }

    /// Whether the linear term has a nonzero coefficient here.
    #[getter]
    fn linear(&self) -> bool {
        self.inner.linear()
    }

    #[getter]
    fn n(&self) -> usize {
        self.inner.n()
    }

    #[getter]
    fn width(&self) -> usize {
        self.inner.width()
    }

    /// Whether training has moved any coefficient.
    #[getter]
    fn trained(&self) -> bool {
        self.inner.trained()
    }

    /// A number no other block of this process has.
    #[getter]
    fn serial(&self) -> u64 {
        self.inner.serial()
    }

    /// Steps committed on this block so far.
    #[getter]
    fn updates(&self) -> u64 {
        self.inner.updates()
    }
}

/// The net's blocks as passed from Python: (points, coefficients).
pub(super) type PyBlocks<'py> = Vec<(PyPoints<'py>, Bound<'py, PyCoefficients>)>;

/// Borrowed, converted blocks: arrays held while the core reads them.
pub(super) struct HeldBlocks<'py> {
    points: Vec<HeldPoints<'py>>,
    coefs: Vec<PyRef<'py, PyCoefficients>>,
}

impl<'py> HeldBlocks<'py> {
    pub(super) fn hold(blocks: &PyBlocks<'py>) -> PyResult<Self> {
        let mut points = Vec::with_capacity(blocks.len());
        let mut coefs = Vec::with_capacity(blocks.len());
        for (j, (f, c)) in blocks.iter().enumerate() {
            points.push(HeldPoints::hold(f, &format!("blocks[{j}]"))?);
            coefs.push(c.try_borrow()?);
        }
        Ok(HeldBlocks { points, coefs })
    }

    pub(super) fn blocks(&self) -> crate::Result<Vec<Block<'_>>> {
        self.points.iter().zip(&self.coefs).map(|(f, c)| Ok(Block { factors: f.factors()?, coef: &c.inner })).collect()
    }
}
