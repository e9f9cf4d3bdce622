//! Which index a trainer uses (`Trainer(index=...)`): the names the bindings
//! parse, the index each builds, and what it costs in memory.

use super::activation::{ActivationIndex, LinearScan};
use super::bits::FiredBits;
use super::tree::{nodes_per_row, AsyncTree};
use crate::elem::Elem;
use ndarray::ArrayView2;

/// Which index a trainer uses (`Trainer(index=...)`), parsed once at the
/// binding boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    Scan,
    Tree,
    Bits,
}

impl IndexKind {
    /// Every index by the name `Trainer(index=...)` accepts, the one list of
    /// them (each name is the index's own `ActivationIndex::name`).
    pub const NAMES: [(&'static str, IndexKind); 3] =
        [(LinearScan::NAME, IndexKind::Scan), (AsyncTree::NAME, IndexKind::Tree), (FiredBits::NAME, IndexKind::Bits)];

    /// The index over P (n × m) for fire sets at the per-neuron
    /// `thresholds` (m).
    pub fn build<T: Elem>(self, values: ArrayView2<'_, T>, thresholds: &[f64]) -> Box<dyn ActivationIndex<T>> {
        match self {
            IndexKind::Scan => Box::new(LinearScan::default()),
            IndexKind::Tree => Box::new(AsyncTree::with_offsets(values, thresholds)),
            IndexKind::Bits => Box::new(FiredBits::new(values, thresholds)),
        }
    }

    /// Bytes of derived structure `build` allocates for n points and m
    /// neurons (saturating: absurd sizes give `u128::MAX`, never a panic).
    pub fn memory_bytes(self, n: usize, m: usize) -> u128 {
        let (n, m) = (n as u128, m as u128);
        match self {
            IndexKind::Scan => 0,
            // Internal nodes ≈ m/7 per point, the log ≤ 2⌈m/8⌉ + m u32, cursors.
            IndexKind::Tree => (8 * n)
                .saturating_mul(nodes_per_row(m as usize) as u128)
                .saturating_add(4 * (3 * m))
                .saturating_add(8 * n),
            // Point-major and neuron-major bits, and the thresholds they are for.
            IndexKind::Bits => (n * m.div_ceil(64).max(1))
                .saturating_add(m * n.div_ceil(64).max(1))
                .saturating_add(m)
                .saturating_mul(8),
        }
    }
}

#[cfg(test)]
mod per_neuron_thresholds {
    //! Every index against brute force with one threshold per neuron,
    //! thresholds and values changing between queries as a trainer changes
    //! them: a changed b_r is reported exactly like a changed P[:, r].
    use super::*;
    use crate::index::activation::scan_row;
    use ndarray::Array2;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// New values of these neurons' columns (every row).
        Values(Vec<usize>, Vec<f64>),
        /// New thresholds of these neurons.
        Thresholds(Vec<usize>, Vec<f64>),
        /// Query these rows (may repeat).
        Query(Vec<usize>),
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![(-3i32..4).prop_map(|k| k as f64 * 0.5), -5.0..5.0f64]
    }

    fn case() -> impl Strategy<Value = (usize, usize, Vec<f64>, Vec<f64>, Vec<Op>)> {
        (1usize..6, prop_oneof![Just(1usize), Just(8), Just(65), 1usize..200]).prop_flat_map(|(n, m)| {
            let cols = move || {
                prop::collection::vec(0..m, 1..m.min(20) + 1).prop_map(|mut c| {
                    c.sort_unstable();
                    c.dedup();
                    c
                })
            };
            let op = prop_oneof![
                (cols(), prop::collection::vec(value(), n * 20)).prop_map(|(c, v)| Op::Values(c, v)),
                (cols(), prop::collection::vec(value(), 20)).prop_map(|(c, v)| Op::Thresholds(c, v)),
                prop::collection::vec(0..n, 1..5).prop_map(Op::Query),
            ];
            (
                Just(n),
                Just(m),
                prop::collection::vec(value(), n * m),
                prop::collection::vec(value(), m),
                prop::collection::vec(op, 1..40),
            )
        })
    }

    /// What the step reports to an index after changing neurons `cols`.
    fn report(index: &mut dyn ActivationIndex, values: &Array2<f64>, cols: &[usize], thresholds: &[f64]) {
        let n = values.nrows();
        let words = n.div_ceil(64).max(1);
        let neurons: Vec<u32> = cols.iter().map(|&c| c as u32).collect();
        if index.tracks_crossings() {
            let mut masks = vec![0u64; words * cols.len()];
            for (j, &r) in cols.iter().enumerate() {
                for i in 0..n {
                    if values[[i, r]] > thresholds[r] {
                        masks[j * words + i / 64] |= 1 << (i % 64);
                    }
                }
            }
            index.record_masks(&neurons, &masks, thresholds);
        }
        index.mark_changed(&neurons);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn every_index_matches_brute_force((n, m, init, b0, ops) in case()) {
            for kind in [IndexKind::Scan, IndexKind::Tree, IndexKind::Bits] {
                let mut values = Array2::from_shape_vec((n, m), init.clone()).unwrap();
                let mut b = b0.clone();
                let mut index = kind.build(values.view(), &b);
                for op in &ops {
                    match op {
                        Op::Values(cols, new) => {
                            for (k, &c) in cols.iter().enumerate() {
                                for i in 0..n {
                                    values[[i, c]] = new[(k * n + i) % new.len()];
                                }
                            }
                            report(index.as_mut(), &values, cols, &b);
                        }
                        Op::Thresholds(cols, new) => {
                            for (k, &c) in cols.iter().enumerate() {
                                b[c] = new[k % new.len()];
                            }
                            report(index.as_mut(), &values, cols, &b);
                        }
                        Op::Query(rows) => {
                            let got = index.fire_sets(values.view(), rows, &b);
                            let want: Vec<Vec<u32>> =
                                rows.iter().map(|&i| scan_row(&values.row(i).to_vec(), &b)).collect();
                            prop_assert_eq!(got, want, "{:?}", kind);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// The names are distinct, each is the built index's own name, and a
    /// fresh index keeps no more than `memory_bytes` plans for it.
    #[test]
    fn names_are_the_indexes_own() {
        let values = Array2::<f64>::zeros((3, 70));
        for (k, (name, kind)) in IndexKind::NAMES.iter().enumerate() {
            assert!(IndexKind::NAMES[..k].iter().all(|(other, _)| other != name));
            let index = kind.build(values.view(), &[0.5; 70]);
            assert_eq!(index.name(), *name);
            assert!(index.memory_bytes() as u128 <= kind.memory_bytes(3, 70), "{name}");
        }
        assert_eq!(IndexKind::Tree.memory_bytes(usize::MAX, usize::MAX), u128::MAX);
        assert!(IndexKind::Bits.memory_bytes(usize::MAX, usize::MAX) > 0);
    }
}
