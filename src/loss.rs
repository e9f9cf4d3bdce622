//! The losses a net trains on, one small type each (value and gradient at a
//! batch of outputs), and the targets they read (docs/design.md, "Losses").
//!
//! Outputs are C per point, row-major (point s's at `f[s·C .. (s+1)·C]`).
//! Targets are `target_width(C)` per point: C floats for the squared loss, one
//! 0/1 value for the logistic loss, one integer label in [0, C) (held as an
//! exact f64) for cross-entropy. Every batch loss is a mean over the points.

use crate::error::{invalid, Result};

/// Which loss (`Trainer(loss=...)`), parsed once at the binding boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// ½ ‖f − y‖², any C.
    Squared,
    /// log(1 + e^f) − y f, C = 1, y ∈ {0, 1}.
    Logistic,
    /// logsumexp(f) − f_y, C ≥ 2, y ∈ {0, …, C − 1}.
    CrossEntropy,
}

impl Loss {
    /// Every loss by the name `Trainer(loss=...)` accepts.
    pub const NAMES: [(&'static str, Loss); 3] =
        [("squared", Loss::Squared), ("logistic", Loss::Logistic), ("cross_entropy", Loss::CrossEntropy)];

    /// Target values per point for a net of `outputs` outputs.
    pub fn target_width(self, outputs: usize) -> usize {
        match self {
            Loss::Squared => outputs,
            Loss::Logistic | Loss::CrossEntropy => 1,
        }
    }

    /// Checks that this loss fits `outputs` outputs and that `y` (n ×
    /// `target_width`) holds targets it can take: finite floats within
    /// `VALUE_BOUND`, 0/1 values, or integer labels in range.
    pub fn check(self, outputs: usize, y: &[f64], n: usize) -> Result<()> {
        match self {
            Loss::Logistic if outputs != 1 => {
                return invalid("loss", format!("\"logistic\" needs a net with 1 output, this one has {outputs}"))
            }
            Loss::CrossEntropy if outputs < 2 => {
                return invalid("loss", format!("\"cross_entropy\" needs a net with 2 or more outputs, got {outputs}"))
            }
            _ => {}
        }
        let width = self.target_width(outputs);
        if y.len() != n * width {
            return invalid("y", format!("has {} values for {n} points × {width} targets", y.len()));
        }
        match self {
            Loss::Squared => crate::limits::check_targets(y),
            Loss::Logistic => match y.iter().position(|&v| v != 0.0 && v != 1.0) {
                Some(i) => invalid("y", format!("target {i} is {}; the logistic loss needs targets 0 or 1", y[i])),
                None => Ok(()),
            },
            Loss::CrossEntropy => match y.iter().position(|&v| !(v >= 0.0 && v < outputs as f64 && v.fract() == 0.0)) {
                Some(i) => {
                    invalid("y", format!("label {i} is {}; cross-entropy needs integer labels in [0, {outputs})", y[i]))
                }
                None => Ok(()),
            },
        }
    }

    /// The mean loss of k points (outputs `f`, k × C; targets `y`, k ×
    /// `target_width`), and with `grad` (k × C) each point's ∂ℓ/∂f. The
    /// squared loss sums the squared errors in order and divides once, so a
    /// one-output net gives the bits of (1/2k) Σ (f − y)² whatever else
    /// trains.
    pub fn mean(self, f: &[f64], y: &[f64], outputs: usize, mut grad: Option<&mut [f64]>) -> f64 {
        let c = outputs;
        let k = f.len() / c.max(1);
        match self {
            Loss::Squared => {
                let mut sum = 0.0;
                for (j, (f, y)) in f.iter().zip(y).enumerate() {
                    let e = f - y;
                    sum += e * e;
                    if let Some(g) = grad.as_deref_mut() {
                        g[j] = e;
                    }
                }
                sum / (2.0 * k as f64)
            }
            Loss::Logistic => {
                let mut sum = 0.0;
                for (s, (&f, &y)) in f.iter().zip(y).enumerate() {
                    // log(1 + e^f) without overflow for large |f|.
                    sum += f.max(0.0) + (-f.abs()).exp().ln_1p() - y * f;
                    if let Some(g) = grad.as_deref_mut() {
                        g[s] = sigmoid(f) - y;
                    }
                }
                sum / k as f64
            }
            Loss::CrossEntropy => {
                let mut sum = 0.0;
                for s in 0..k {
                    let row = &f[s * c..(s + 1) * c];
                    let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = row.iter().map(|v| (v - top).exp()).sum();
                    let label = y[s] as usize;
                    sum += top + total.ln() - row[label];
                    if let Some(g) = grad.as_deref_mut() {
                        for (j, v) in row.iter().enumerate() {
                            g[s * c + j] = (v - top).exp() / total - if j == label { 1.0 } else { 0.0 };
                        }
                    }
                }
                sum / k as f64
            }
        }
    }
}

/// 1 / (1 + e^−f), without overflow either way.
fn sigmoid(f: f64) -> f64 {
    if f >= 0.0 {
        1.0 / (1.0 + (-f).exp())
    } else {
        let e = f.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each loss against its formula, its gradient against central
    /// differences, and large outputs that would overflow a naive form.
    #[test]
    fn values_gradients_and_stability() {
        let f = [0.3, -1.2, 2.0, 0.7, -0.4, 0.1];
        let cases: [(Loss, usize, Vec<f64>); 4] = [
            (Loss::Squared, 1, vec![0.5, -1.0, 1.5, 0.0, 0.2, 0.3]),
            (Loss::Squared, 3, vec![0.5, -1.0, 1.5, 0.0, 0.2, 0.3]),
            (Loss::Logistic, 1, vec![1.0, 0.0, 1.0, 1.0, 0.0, 0.0]),
            (Loss::CrossEntropy, 3, vec![2.0, 0.0]),
        ];
        for (loss, c, y) in cases {
            let mut g = vec![0.0; f.len()];
            let value = loss.mean(&f, &y, c, Some(&mut g));
            let k = (f.len() / c) as f64;
            for j in 0..f.len() {
                let h = 1e-6;
                let (mut up, mut down) = (f, f);
                up[j] += h;
                down[j] -= h;
                let numeric = (loss.mean(&up, &y, c, None) - loss.mean(&down, &y, c, None)) / (2.0 * h) * k;
                assert!((numeric - g[j]).abs() < 1e-6, "{loss:?} {j}: {numeric} vs {}", g[j]);
            }
            assert!(value.is_finite());
        }
        assert_eq!(Loss::Squared.mean(&[3.0, 1.0], &[1.0, 1.0], 1, None), 1.0);
        let big = Loss::Logistic.mean(&[800.0, -800.0], &[0.0, 1.0], 1, None);
        assert_eq!(big, 800.0);
        let ce = Loss::CrossEntropy.mean(&[900.0, -900.0, 0.0], &[1.0], 3, None);
        assert_eq!(ce, 1800.0);
    }

    #[test]
    fn targets_are_checked() {
        assert!(Loss::Logistic.check(1, &[0.0, 1.0], 2).is_ok());
        assert!(Loss::Logistic.check(1, &[0.0, 0.5], 2).is_err());
        assert!(Loss::Logistic.check(2, &[0.0, 1.0], 2).is_err());
        assert!(Loss::CrossEntropy.check(3, &[0.0, 2.0], 2).is_ok());
        assert!(Loss::CrossEntropy.check(3, &[0.0, 3.0], 2).is_err());
        assert!(Loss::CrossEntropy.check(3, &[0.0, 1.5], 2).is_err());
        assert!(Loss::CrossEntropy.check(1, &[0.0], 1).is_err());
        assert!(Loss::Squared.check(2, &[0.0; 4], 2).is_ok());
        assert!(Loss::Squared.check(2, &[0.0; 3], 2).is_err());
        assert!(Loss::Squared.check(1, &[f64::NAN], 1).is_err());
    }
}
