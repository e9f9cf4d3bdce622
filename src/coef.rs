//! The learned part of the weights over one training set: coefficients α
//! (m × n) with w_r = w_r(0) + Σ_s Σ_i α_s[r, i] x_{s,i} (docs/design.md,
//! "The state, and who owns it"). Every SGD update lies in the span of the batch
//! inputs, so a step only adds to α[R, B].
//!
//! A block belongs to the model, not to a trainer: trainers on the same
//! points accumulate into one block, and dropping a trainer (its P, Gram
//! and index) leaves the block. Stored as αᵀ (n × m): a step writes α[R, B_s]
//! at sorted positions of one row of αᵀ, and prediction multiplies by αᵀ.

use crate::error::{into_standard, invalid, try_array2, try_array2_untouched, KronError, Result};
use ndarray::{Array2, ArrayView2};
use std::sync::atomic::{AtomicU64, Ordering};

/// The next block's serial number (process-wide).
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

fn next_serial() -> u64 {
    NEXT_SERIAL.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug)]
pub struct Coefficients {
    alpha_t: Array2<f64>,
    /// β̃ (n × C): the linear term's coefficients, v = s_v Σ_blocks β̃ᵀ X
    /// (the scale s_v is the head's, `model.rs`). Every rank of a sharded
    /// net holds all of it.
    beta: Array2<f64>,
    /// Whether any β̃ is nonzero.
    linear: bool,
    /// Whether any coefficient is nonzero: prediction skips a block that is
    /// still zero without scanning its n · m values.
    trained: bool,
    /// Unique in the process, and the steps applied so far: together they
    /// tell a trainer whether another one has moved the weights since it
    /// last ran (`revision` in Python), without a counter kept beside the
    /// block that every caller would have to remember to bump.
    serial: u64,
    updates: u64,
}

impl Clone for Coefficients {
    /// A copy is another block: it gets its own serial number.
    fn clone(&self) -> Self {
        Coefficients {
            alpha_t: self.alpha_t.clone(),
            beta: self.beta.clone(),
            linear: self.linear,
            trained: self.trained,
            serial: next_serial(),
            updates: 0,
        }
    }
}

impl Coefficients {
    /// Zero coefficients for `n` points, `width` neurons and `outputs` outputs.
    pub fn zeros(n: usize, width: usize, outputs: usize) -> Result<Coefficients> {
        Ok(Coefficients {
            alpha_t: try_array2_untouched(n, width, "coefficient matrix alpha (width × n)")?,
            beta: try_array2(n, outputs, "linear coefficients beta (n × outputs)")?,
            linear: false,
            trained: false,
            serial: next_serial(),
            updates: 0,
        })
    }

    /// Coefficients from αᵀ (n × m) and β̃ (n × C), e.g. read from a saved model.
    pub fn from_parts(alpha_t: Array2<f64>, beta: Array2<f64>) -> Result<Coefficients> {
        if alpha_t.iter().any(|v| !v.is_finite()) {
            return invalid("alpha", "contains NaN or inf");
        }
        check_beta(&beta, alpha_t.nrows())?;
        let trained = alpha_t.iter().any(|&v| v != 0.0);
        let linear = beta.iter().any(|&v| v != 0.0);
        Ok(Coefficients {
            alpha_t: into_standard(alpha_t),
            beta: into_standard(beta),
            linear,
            trained,
            serial: next_serial(),
            updates: 0,
        })
    }

    /// Zero αᵀ (n × width) with the linear coefficients β̃ (n × C): a block
    /// a linear start fills before any step. The zeros are fresh pages,
    /// mapped only if a trainer starts on the block (`touch`); `from_parts`
    /// would copy and scan all n × width of them (0.5-1.6 s for MovieLens'
    /// 80,000 × 1024, whose refitted start no trainer ever steps).
    pub fn from_beta(n: usize, width: usize, beta: Array2<f64>) -> Result<Coefficients> {
        check_beta(&beta, n)?;
        let linear = beta.iter().any(|&v| v != 0.0);
        Ok(Coefficients {
            alpha_t: try_array2_untouched(n, width, "coefficient matrix alpha (width × n)")?,
            beta: into_standard(beta),
            linear,
            trained: false,
            serial: next_serial(),
            updates: 0,
        })
    }

    /// Maps every page of αᵀ by writing it, its values unchanged. A new
    /// block's zeros are the allocator's (`zeros`, `from_beta`), cleared by
    /// the kernel page by page on first write; a trainer calls this when it
    /// starts, so that cost is paid there, as when the zeros were written
    /// eagerly, and not inside its first steps (n = 10^4, m = 2048: its
    /// first 200 steps took 4.9-5.0 ms each instead of 2.5-3.0 without it).
    pub fn touch(&mut self) {
        const PAGE: usize = 4096 / std::mem::size_of::<f64>();
        if let Some(a) = self.alpha_t.as_slice_mut() {
            for i in (0..a.len()).step_by(PAGE) {
                // black_box: the store of the value just read must happen.
                a[i] = std::hint::black_box(a[i]);
            }
        }
    }

    /// Number of training points n.
    pub fn n(&self) -> usize {
        self.alpha_t.nrows()
    }

    pub fn width(&self) -> usize {
        self.alpha_t.ncols()
    }

    /// αᵀ (n × m), row-major.
    pub fn alpha_t(&self) -> ArrayView2<'_, f64> {
        self.alpha_t.view()
    }

    /// Whether training has moved any coefficient.
    pub fn trained(&self) -> bool {
        self.trained
    }

    /// β̃ (n × C).
    pub fn beta(&self) -> ArrayView2<'_, f64> {
        self.beta.view()
    }

    /// C.
    pub fn outputs(&self) -> usize {
        self.beta.ncols()
    }

    /// Whether the linear term has any nonzero coefficient here.
    pub fn linear(&self) -> bool {
        self.linear
    }

    /// β̃[B_s] −= `factor` · g_s for each batch point (g: S × C), in batch
    /// order so that repeated indices accumulate. Checked first and then
    /// written, so on an error nothing has changed.
    pub fn apply_linear(&mut self, batch: &[usize], g: &[f64], factor: f64) -> Result<()> {
        let c = self.beta.ncols();
        // The batch's rows, updated in a scratch copy in batch order.
        let mut rows: Vec<(usize, Vec<f64>)> = Vec::new();
        for (s, &i) in batch.iter().enumerate() {
            let slot = match rows.iter().position(|(r, _)| *r == i) {
                Some(k) => k,
                None => {
                    rows.push((i, self.beta.row(i).to_vec()));
                    rows.len() - 1
                }
            };
            for (k, v) in rows[slot].1.iter_mut().enumerate() {
                *v -= factor * g[s * c + k];
            }
        }
        if rows.iter().any(|(_, r)| r.iter().any(|v| !v.is_finite())) {
            return Err(KronError::Diverged(
                "the step would make the linear term non-finite; the model is left at its last finite state \
                 (lower lr_v)"
                    .into(),
            ));
        }
        for (i, values) in rows {
            self.linear |= values.iter().any(|&v| v != 0.0);
            self.beta.row_mut(i).assign(&ndarray::ArrayView1::from(&values));
        }
        Ok(())
    }

    /// This block's process-wide serial number.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Steps applied to this block so far (`note_step`).
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Records that a step on these points committed (whether or not it
    /// moved a coefficient: the trainer's state moved with it).
    pub fn note_step(&mut self) {
        self.updates += 1;
    }

    /// α[R_j, B_s] −= C[s, j] for every nonzero C, in batch order so that
    /// repeated indices accumulate. Undone exactly (old values restored) if
    /// any value turns non-finite, so the block is then as before the call.
    pub fn apply(&mut self, batch: &[usize], neurons: &[u32], coef: &Array2<f64>) -> Result<()> {
        let mut undo = Vec::with_capacity(neurons.len());
        let mut finite = true;
        for (s, &i) in batch.iter().enumerate() {
            for (j, &r) in neurons.iter().enumerate() {
                let c = coef[[s, j]];
                if c != 0.0 {
                    let slot = &mut self.alpha_t[[i, r as usize]];
                    undo.push((i, r as usize, *slot));
                    *slot -= c;
                    finite &= slot.is_finite();
                }
            }
        }
        if finite {
            self.trained |= !undo.is_empty();
            return Ok(());
        }
        for (i, r, old) in undo.into_iter().rev() {
            self.alpha_t[[i, r]] = old;
        }
        Err(KronError::Diverged(
            "the step would make the weights non-finite; the model is left at its last finite state (lower lr)".into(),
        ))
    }

    /// Checks that this block fits a data set of `n` points and a head of
    /// `width` neurons and `outputs` outputs.
    pub fn check_shape(&self, n: usize, width: usize, outputs: usize) -> Result<()> {
        if self.alpha_t.dim() != (n, width) || self.beta.ncols() != outputs {
            return invalid(
                "coefficients",
                format!(
                    "have shape (n={}, width={}, outputs={}), expected (n={n}, width={width}, outputs={outputs})",
                    self.n(),
                    self.width(),
                    self.outputs()
                ),
            );
        }
        Ok(())
    }
}

/// β̃ must be finite, with a row per point and at least one output.
fn check_beta(beta: &Array2<f64>, n: usize) -> Result<()> {
    if beta.iter().any(|v| !v.is_finite()) {
        return invalid("beta", "contains NaN or inf");
    }
    if beta.nrows() != n || beta.ncols() == 0 {
        return invalid("beta", format!("has shape {:?}, expected ({n}, outputs >= 1)", beta.dim()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_from_its_linear_coefficients_is_the_block_of_zero_alpha() {
        let beta = ndarray::array![[0.5, 0.0], [0.0, 0.0], [-1.0, 2.0]];
        let new = Coefficients::from_beta(3, 4, beta.clone()).unwrap();
        let parts = Coefficients::from_parts(Array2::zeros((3, 4)), beta.clone()).unwrap();
        assert_eq!(new.alpha_t(), parts.alpha_t());
        assert_eq!(new.beta(), parts.beta());
        assert_eq!((new.linear(), new.trained()), (parts.linear(), parts.trained()));
        assert!(!Coefficients::from_beta(3, 4, Array2::zeros((3, 1))).unwrap().linear());
        assert!(Coefficients::from_beta(2, 4, beta.clone()).is_err());
        let mut bad = beta;
        bad[[1, 1]] = f64::NAN;
        assert!(Coefficients::from_beta(3, 4, bad).is_err());
    }

    #[test]
    fn touching_a_block_keeps_every_value() {
        // 3 × 700: more than one 4 KiB page, its values' bits all distinct.
        let alpha =
            Array2::from_shape_fn((3, 700), |(i, j)| if (i + j) % 7 == 0 { -0.0 } else { (i * 700 + j) as f64 });
        let mut c = Coefficients::from_parts(alpha.clone(), Array2::zeros((3, 1))).unwrap();
        c.touch();
        let bits = |a: ArrayView2<'_, f64>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(c.alpha_t()), bits(alpha.view()));
        let mut z = Coefficients::zeros(3, 700, 1).unwrap();
        z.touch();
        assert!(z.alpha_t().iter().all(|v| v.to_bits() == 0));
    }

    #[test]
    fn repeated_batch_indices_accumulate_and_overflow_is_undone() {
        let mut c = Coefficients::zeros(3, 4, 1).unwrap();
        let coef = ndarray::array![[1.0, 0.0], [2.0, 3.0]];
        c.apply(&[1, 1], &[0, 2], &coef).unwrap();
        assert_eq!(c.alpha_t()[[1, 0]], -3.0);
        assert_eq!(c.alpha_t()[[1, 2]], -3.0);
        let before = c.clone();
        let huge = ndarray::array![[f64::MAX, 0.0], [f64::MAX, 0.0]];
        assert!(matches!(c.apply(&[0, 0], &[0, 2], &huge), Err(KronError::Diverged(_))));
        assert_eq!(c.alpha_t(), before.alpha_t());
    }
}
