//! The Kronecker backend's training state and SGD step (DESIGN.md §3).
//!
//! The state is P (n × m, P[i, r] = <w_r, x_i>) and α (m × n, w_r = w_r(0) +
//! Σ_i α[r, i] x_i); no d-dimensional array exists. A step on batch B finds
//! the fired neurons through an `ActivationIndex`, then moves P by the rank-S
//! product K[:, B] · C, the only O(n · S · |R|) work, with no d in it.

use crate::error::{invalid, try_array2, KronError, Result};
use crate::factors::{views, Factors};
use crate::gram::{gram, gram_columns};
use crate::index::ActivationIndex;
use crate::model::{check_batch, check_lr, half_mse, plan_update, Model, StepStats};
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// How the step obtains K[:, B].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GramMode {
    /// K (n × n) computed once; a step gathers S columns.
    Precomputed,
    /// K[:, B] recomputed from the factors each step (n · S · Σ d_k).
    Columns,
}

pub struct KronState {
    factors: Vec<Array2<f64>>,
    y: Vec<f64>,
    model: Model,
    p: Array2<f64>,
    alpha: Array2<f64>,
    gram: Option<Array2<f64>>,
    index: Box<dyn ActivationIndex>,
    /// Reused n × |R| buffer for the new values of P[:, R].
    work: Vec<f64>,
}

impl KronState {
    /// `p0` are the current preactivations of the training points (n × m),
    /// e.g. `init::init_preacts`; `index` is built over them.
    pub fn new(
        factors: Vec<Array2<f64>>,
        y: Vec<f64>,
        model: Model,
        p0: Array2<f64>,
        mode: GramMode,
        make_index: impl FnOnce(ArrayView2<'_, f64>) -> Box<dyn ActivationIndex>,
    ) -> Result<KronState> {
        let f = Factors::new(views(&factors))?;
        let n = f.n();
        if n == 0 {
            return invalid("data", "has no points");
        }
        if y.len() != n {
            return invalid("y", format!("has {} targets for {n} points", y.len()));
        }
        if y.iter().any(|v| !v.is_finite()) {
            return invalid("y", "contains NaN or inf");
        }
        if p0.dim() != (n, model.width()) {
            return invalid("p0", format!("has shape {:?}, expected ({n}, {})", p0.dim(), model.width()));
        }
        let gram = match mode {
            GramMode::Precomputed => Some(gram(&f)?),
            GramMode::Columns => None,
        };
        let alpha = try_array2(model.width(), n, "coefficient matrix alpha (width × n)")?;
        let p0 = p0.as_standard_layout().into_owned();
        let index = make_index(p0.view());
        Ok(KronState { factors, y, model, p: p0, alpha, gram, index, work: Vec::new() })
    }

    pub fn n(&self) -> usize {
        self.y.len()
    }

    pub fn preacts(&self) -> ArrayView2<'_, f64> {
        self.p.view()
    }

    pub fn alpha(&self) -> ArrayView2<'_, f64> {
        self.alpha.view()
    }

    pub fn index_name(&self) -> &'static str {
        self.index.name()
    }

    pub fn index_memory_bytes(&self) -> usize {
        self.index.memory_bytes()
    }

    pub fn gram_mode(&self) -> GramMode {
        if self.gram.is_some() {
            GramMode::Precomputed
        } else {
            GramMode::Columns
        }
    }

    /// Full training loss (1/2n) Σ (f(x_i) − y_i)², from P in O(n · m).
    pub fn full_loss(&self) -> f64 {
        half_mse(&self.model.outputs(self.p.view()), &self.y)
    }

    /// One SGD step on `batch` (indices may repeat). Returns L_B before the
    /// update. On `Diverged` the state is exactly as before the call.
    pub fn step(&mut self, batch: &[usize], lr: f64) -> Result<StepStats> {
        check_batch(batch, self.n())?;
        check_lr(lr)?;
        let fire = self.index.fire_sets(self.p.view(), batch, self.model.b);
        let targets: Vec<f64> = batch.iter().map(|&i| self.y[i]).collect();
        let p = &self.p;
        let rows = |s: usize| p.row(batch[s]).to_slice().expect("P is standard layout");
        let upd = plan_update(&self.model, rows, &fire, &targets, lr)?;
        let stats = StepStats { loss: upd.loss, fired_union: upd.neurons.len(), fired_total: upd.fired_total };
        if upd.neurons.is_empty() {
            return Ok(stats);
        }
        let kb = match &self.gram {
            Some(k) => k.select(Axis(1), batch),
            None => gram_columns(&Factors::new(views(&self.factors))?, batch)?,
        };
        self.compute_new_preacts(&kb, &upd.neurons, &upd.coef)?;
        self.apply_alpha(batch, &upd.neurons, &upd.coef)?;
        self.commit_preacts(&upd.neurons);
        self.index.mark_changed(&upd.neurons);
        Ok(stats)
    }

    /// work[i, j] = P[i, R_j] − Σ_s K[i, B_s] C[s, j]; refuses non-finite.
    fn compute_new_preacts(&mut self, kb: &Array2<f64>, neurons: &[u32], coef: &Array2<f64>) -> Result<()> {
        let nr = neurons.len();
        let n = self.n();
        let len = n * nr;
        if self.work.len() < len {
            self.work.clear();
            self.work.try_reserve_exact(len).map_err(|_| KronError::OutOfMemory {
                what: "step buffer (n × fired neurons)".into(),
                bytes: len as u128 * 8,
                gib: len as f64 * 8.0 / (1u64 << 30) as f64,
            })?;
            self.work.resize(len, 0.0);
        }
        let coef = coef.as_standard_layout();
        let p = &self.p;
        let finite = self.work[..len]
            .par_chunks_mut(nr)
            .enumerate()
            .map(|(i, out)| {
                let prow = p.row(i);
                let prow = prow.as_slice().expect("P is standard layout");
                for (o, &r) in out.iter_mut().zip(neurons) {
                    *o = prow[r as usize];
                }
                // S axpys over a row that stays in L1: vectorizes, and the
                // summation order is fixed by s, not by the thread count.
                for (s, c) in coef.axis_iter(Axis(0)).enumerate() {
                    let k = kb[[i, s]];
                    let c = c.as_slice().expect("standard layout");
                    for (o, cv) in out.iter_mut().zip(c) {
                        *o -= k * cv;
                    }
                }
                out.iter().all(|v| v.is_finite())
            })
            .reduce(|| true, |a, b| a && b);
        if finite {
            Ok(())
        } else {
            Err(KronError::Diverged(
                "the step would make preactivations non-finite; the model is left at its last finite state (lower lr)"
                    .into(),
            ))
        }
    }

    /// α[R_j, B_s] −= C[s, j], in batch order so repeated indices accumulate;
    /// undone exactly (old values restored) if anything turns non-finite.
    fn apply_alpha(&mut self, batch: &[usize], neurons: &[u32], coef: &Array2<f64>) -> Result<()> {
        let mut undo = Vec::with_capacity(neurons.len());
        let mut finite = true;
        for (s, &i) in batch.iter().enumerate() {
            for (j, &r) in neurons.iter().enumerate() {
                let c = coef[[s, j]];
                if c != 0.0 {
                    let slot = &mut self.alpha[[r as usize, i]];
                    undo.push((r as usize, i, *slot));
                    *slot -= c;
                    finite &= slot.is_finite();
                }
            }
        }
        if finite {
            return Ok(());
        }
        for (r, i, old) in undo.into_iter().rev() {
            self.alpha[[r, i]] = old;
        }
        Err(KronError::Diverged(
            "the step would make the weights non-finite; the model is left at its last finite state (lower lr)"
                .into(),
        ))
    }

    fn commit_preacts(&mut self, neurons: &[u32]) {
        let nr = neurons.len();
        let work = &self.work[..self.y.len() * nr];
        self.p.axis_iter_mut(Axis(0)).into_par_iter().zip(work.par_chunks(nr)).for_each(|(mut prow, new)| {
            let prow = prow.as_slice_mut().expect("P is standard layout");
            for (&r, v) in neurons.iter().zip(new) {
                prow[r as usize] = *v;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dense::DenseState;
    use crate::index::LinearScan;
    use crate::init::{init_preacts, initial_weight_matrix};
    use crate::rng::{initial_weights, output_signs};

    fn unit_rows(n: usize, d: usize, salt: u64) -> Array2<f64> {
        let mut z = vec![0.0; n * d];
        initial_weights(salt, 9, &mut z);
        let mut u = Array2::from_shape_vec((n, d), z).unwrap();
        for mut row in u.rows_mut() {
            let norm = row.dot(&row).sqrt();
            row.mapv_inplace(|v| v / norm);
        }
        u
    }

    fn materialize(f: &Factors<'_>) -> Array2<f64> {
        let d = f.d().unwrap();
        let mut x = Array2::zeros((f.n(), d));
        let mut row = Vec::new();
        for i in 0..f.n() {
            f.dense_row(i, &mut row);
            x.row_mut(i).assign(&ndarray::ArrayView1::from(&row));
        }
        x
    }

    fn batches(n: usize, steps: usize, s: usize) -> Vec<Vec<usize>> {
        // Deterministic pseudo-random batches with repeats.
        (0..steps).map(|t| (0..s).map(|j| (t * 7919 + j * j * 31 + (t * j) % 5) % n).collect()).collect()
    }

    fn run_both(dims: &[usize], n: usize, m: usize, mode: GramMode) {
        let mats: Vec<_> = dims.iter().enumerate().map(|(k, &dk)| unit_rows(n, dk, 40 + k as u64)).collect();
        let f = Factors::new(views(&mats)).unwrap();
        let y: Vec<f64> = (0..n).map(|i| ((i * 37 % 11) as f64 / 5.0) - 1.0).collect();
        let b = (0.4 * (m as f64).ln()).sqrt();
        let model = Model::new(output_signs(3, m), b).unwrap();
        let seed = 3;
        let p0 = init_preacts(&f, seed, m).unwrap();
        let mut kron = KronState::new(mats.clone(), y.clone(), model.clone(), p0, mode, |_| Box::new(LinearScan)).unwrap();
        let x = materialize(&f);
        let w0 = initial_weight_matrix(seed, m, x.ncols()).unwrap();
        let mut dense = DenseState::new(x.clone(), y, model, w0.clone()).unwrap();
        let lr = 4.0;
        let mut moved = 0;
        for batch in batches(n, 150, 4) {
            let a = kron.step(&batch, lr).unwrap();
            let b = dense.step(&batch, lr).unwrap();
            assert!((a.loss - b.loss).abs() <= 1e-10 * b.loss.abs().max(1e-300), "{} vs {}", a.loss, b.loss);
            assert_eq!(a.fired_union, b.fired_union);
            moved += a.fired_union;
        }
        assert!(moved > 0, "no neuron ever fired: the test would prove nothing");
        let w_kron = &w0 + &kron.alpha().dot(&x);
        let err = (&w_kron - &dense.weights()).iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert!(err <= 1e-10, "weights differ by {err}");
        assert!((kron.full_loss() - dense.full_loss()).abs() <= 1e-10 * dense.full_loss());
    }

    #[test]
    fn kron_equals_dense_two_factors() {
        run_both(&[3, 5], 12, 40, GramMode::Precomputed);
        run_both(&[2, 17], 9, 33, GramMode::Columns);
    }

    #[test]
    fn kron_equals_dense_three_factors() {
        run_both(&[2, 3, 4], 10, 50, GramMode::Precomputed);
        run_both(&[5, 1, 3], 7, 21, GramMode::Columns);
    }

    #[test]
    fn bit_identical_across_thread_counts() {
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let n = 150;
                let mats = vec![unit_rows(n, 16, 1), unit_rows(n, 12, 2)];
                let f = Factors::new(views(&mats)).unwrap();
                let m = 700;
                let model = Model::new(output_signs(1, m), (0.4 * (m as f64).ln()).sqrt()).unwrap();
                let p0 = init_preacts(&f, 1, m).unwrap();
                let y = vec![0.5; n];
                let mut st =
                    KronState::new(mats.clone(), y, model, p0, GramMode::Precomputed, |_| Box::new(LinearScan)).unwrap();
                let losses: Vec<u64> =
                    batches(n, 40, 8).iter().map(|b| st.step(b, 20.0).unwrap().loss.to_bits()).collect();
                (losses, st.preacts().to_owned(), st.alpha().to_owned())
            })
        };
        let (l1, p1, a1) = run(1);
        let (l2, p2, a2) = run(2);
        assert_eq!(l1, l2);
        assert!(p1.iter().zip(p2.iter()).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(a1.iter().zip(a2.iter()).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn divergence_leaves_state_untouched() {
        let n = 6;
        let mats = vec![unit_rows(n, 3, 1), unit_rows(n, 2, 2)];
        let f = Factors::new(views(&mats)).unwrap();
        let m = 30;
        let model = Model::new(output_signs(1, m), 0.0).unwrap();
        let p0 = init_preacts(&f, 1, m).unwrap();
        let mut st = KronState::new(mats.clone(), vec![1.0; n], model, p0, GramMode::Precomputed, |_| Box::new(LinearScan))
            .unwrap();
        st.step(&[0, 1], 1.0).unwrap();
        let mut failed = false;
        for _ in 0..50 {
            if let Err(e) = st.step(&[2, 3], 1e300) {
                assert!(matches!(e, KronError::Diverged(_)));
                failed = true;
                break;
            }
        }
        assert!(failed, "a step with lr = 1e300 should diverge");
        let (p2, a2) = (st.preacts().to_owned(), st.alpha().to_owned());
        assert!(p2.iter().chain(a2.iter()).all(|v| v.is_finite()));
        // One more failing step changes nothing at all.
        assert!(st.step(&[2, 3], 1e300).is_err());
        assert_eq!(st.preacts(), p2.view());
        assert_eq!(st.alpha(), a2.view());
    }

    #[test]
    fn bad_batches_are_refused() {
        let mats = vec![unit_rows(4, 2, 1), unit_rows(4, 2, 2)];
        let f = Factors::new(views(&mats)).unwrap();
        let model = Model::new(output_signs(1, 5), 0.5).unwrap();
        let p0 = init_preacts(&f, 1, 5).unwrap();
        let mut st = KronState::new(mats.clone(), vec![0.0; 4], model, p0, GramMode::Columns, |_| Box::new(LinearScan)).unwrap();
        assert!(st.step(&[], 1.0).is_err());
        assert!(st.step(&[4], 1.0).is_err());
        assert!(st.step(&[0], f64::NAN).is_err());
        assert!(st.step(&[0], -1.0).is_err());
    }
}
