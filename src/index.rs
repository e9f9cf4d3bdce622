//! Activated-neuron indexes: given the preactivations P (n × m, row-major,
//! P[i, r] = <w_r, x_i>), find each batch point's fire set {r : P[i, r] > τ}.
//!
//! The step writes P eagerly and then tells the index which neurons changed
//! (`mark_changed`); an index may use that to keep derived structure lazily up
//! to date (the asynchronous tree, `tree.rs`). Every index must return exactly
//! the same, sorted fire sets: they are interchangeable, only speed differs.

use ndarray::ArrayView2;
use rayon::prelude::*;

pub trait ActivationIndex: Send + Sync {
    /// Fire sets of `rows` (indices into P, may repeat), each sorted ascending,
    /// in the order of `rows`. Strict: r fires when P[i, r] > tau.
    fn fire_sets(&mut self, values: ArrayView2<'_, f64>, rows: &[usize], tau: f64) -> Vec<Vec<u32>>;

    /// Neurons `cols` (sorted, distinct) changed in every row of P.
    fn mark_changed(&mut self, cols: &[u32]);

    /// Short name, as accepted by `Trainer(index=...)`.
    fn name(&self) -> &'static str;

    /// Bytes of derived structure the index keeps beyond P itself.
    fn memory_bytes(&self) -> usize;
}

/// The honest baseline: read row i in full, O(m) per query, no state.
#[derive(Default, Clone, Debug)]
pub struct LinearScan;

/// `{r : row[r] > tau}`, sorted.
pub fn scan_row(row: &[f64], tau: f64) -> Vec<u32> {
    row.iter().enumerate().filter(|(_, v)| **v > tau).map(|(r, _)| r as u32).collect()
}

impl ActivationIndex for LinearScan {
    fn fire_sets(&mut self, values: ArrayView2<'_, f64>, rows: &[usize], tau: f64) -> Vec<Vec<u32>> {
        rows.par_iter()
            .map(|&i| {
                let row = values.row(i);
                match row.as_slice() {
                    Some(s) => scan_row(s, tau),
                    None => scan_row(&row.to_vec(), tau),
                }
            })
            .collect()
    }

    fn mark_changed(&mut self, _cols: &[u32]) {}

    fn name(&self) -> &'static str {
        "scan"
    }

    fn memory_bytes(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn scan_is_strict_and_sorted() {
        let p = array![[0.5, 2.0, 1.0, 3.0], [1.0, 1.0, 1.0, 1.0]];
        let mut s = LinearScan;
        let f = s.fire_sets(p.view(), &[0, 1, 0], 1.0);
        assert_eq!(f, vec![vec![1, 3], vec![], vec![1, 3]]);
        assert_eq!(s.fire_sets(p.view(), &[1], f64::NEG_INFINITY), vec![vec![0, 1, 2, 3]]);
        assert_eq!(s.fire_sets(p.view(), &[1], f64::INFINITY), vec![Vec::<u32>::new()]);
    }
}
