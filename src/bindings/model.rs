//! The `Model` class: a net's trained head (output weights a, per-neuron
//! thresholds b, output bias c, the linear term's scale) for the neurons a
//! process holds. Owned by the net; trainers borrow it for each step.

use super::arrays::f64_array;
use super::runtime::guarded;
use crate::model::Model;
use ndarray::{Array1, Array2, Ix1, Ix2};
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::prelude::*;

#[pyclass(name = "Model", module = "kronnet._core")]
pub(super) struct PyModel {
    pub(super) inner: Model,
}

#[pymethods]
impl PyModel {
    /// A whole net's head: a (width, outputs), thresholds (width,),
    /// output_bias (outputs,), the initial shared threshold and the linear
    /// term's scale; with `first` and `net_width`, the head of neurons
    /// first .. first + width of a net of `net_width` (one rank's part).
    #[new]
    #[pyo3(signature = (a, thresholds, output_bias, b_init, v_scale=1.0, first=0, net_width=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        a: &Bound<'_, PyAny>,
        thresholds: &Bound<'_, PyAny>,
        output_bias: &Bound<'_, PyAny>,
        b_init: f64,
        v_scale: f64,
        first: usize,
        net_width: Option<usize>,
    ) -> PyResult<Self> {
        let a = f64_array::<Ix2>(a, "a")?;
        let outputs = a.as_array().ncols();
        let a = a.as_array().iter().copied().collect::<Vec<_>>();
        let b = f64_array::<Ix1>(thresholds, "thresholds")?.as_array().to_vec();
        let c = f64_array::<Ix1>(output_bias, "output_bias")?.as_array().to_vec();
        let width = b.len();
        let inner = guarded(py, || {
            Model::new(a, outputs, b, c, b_init, v_scale)?.placed(first, net_width.unwrap_or(first + width))
        })?;
        Ok(PyModel { inner })
    }

    /// The head of neurons first .. first + count (a whole net's head only).
    fn shard(&self, py: Python<'_>, first: usize, count: usize) -> PyResult<PyModel> {
        let whole = self.inner.clone();
        Ok(PyModel { inner: guarded(py, || whole.shard(first, count))? })
    }

    /// A copy of a, shape (neurons held, outputs).
    fn a<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        let m = &self.inner;
        Array2::from_shape_vec((m.width(), m.outputs()), m.a().to_vec()).expect("width × outputs").into_pyarray(py)
    }

    /// A copy of the thresholds, shape (neurons held,).
    fn thresholds<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        Array1::from(self.inner.b().to_vec()).into_pyarray(py)
    }

    /// A copy of the output bias, shape (outputs,).
    fn output_bias<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        Array1::from(self.inner.c().to_vec()).into_pyarray(py)
    }

    /// Sets a, the thresholds, the bias and the linear term's scale.
    fn set(
        &mut self,
        py: Python<'_>,
        a: &Bound<'_, PyAny>,
        thresholds: &Bound<'_, PyAny>,
        output_bias: &Bound<'_, PyAny>,
        v_scale: f64,
    ) -> PyResult<()> {
        let a = f64_array::<Ix2>(a, "a")?.as_array().iter().copied().collect::<Vec<_>>();
        let b = f64_array::<Ix1>(thresholds, "thresholds")?.as_array().to_vec();
        let c = f64_array::<Ix1>(output_bias, "output_bias")?.as_array().to_vec();
        let inner = &mut self.inner;
        guarded(py, || inner.set(a, b, c, v_scale))
    }

    #[getter]
    fn outputs(&self) -> usize {
        self.inner.outputs()
    }

    #[getter]
    fn width(&self) -> usize {
        self.inner.width()
    }

    #[getter]
    fn first(&self) -> usize {
        self.inner.first()
    }

    #[getter]
    fn net_width(&self) -> usize {
        self.inner.net_width()
    }

    #[getter]
    fn b_init(&self) -> f64 {
        self.inner.b_init()
    }

    #[getter]
    fn v_scale(&self) -> f64 {
        self.inner.v_scale()
    }

    /// A number no other head of this process has.
    #[getter]
    fn serial(&self) -> u64 {
        self.inner.serial()
    }

    /// Steps committed on this head so far.
    #[getter]
    fn updates(&self) -> u64 {
        self.inner.updates()
    }
}
