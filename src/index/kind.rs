//! Which index a trainer uses (`Trainer(index=...)`): the names the bindings
//! parse, the index each builds, and what it costs in memory.

use super::activation::{ActivationIndex, LinearScan};
use super::bits::FiredBits;
use super::tree::{nodes_per_row, AsyncTree};
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

    /// The index over P (n × m) for fire sets at threshold `tau`.
    pub fn build(self, values: ArrayView2<'_, f64>, tau: f64) -> Box<dyn ActivationIndex> {
        match self {
            IndexKind::Scan => Box::new(LinearScan::default()),
            IndexKind::Tree => Box::new(AsyncTree::new(values)),
            IndexKind::Bits => Box::new(FiredBits::new(values, tau)),
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
            // Point-major and neuron-major bits.
            IndexKind::Bits => (n * m.div_ceil(64).max(1)).saturating_add(m * n.div_ceil(64).max(1)).saturating_mul(8),
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
            let index = kind.build(values.view(), 0.5);
            assert_eq!(index.name(), *name);
            assert!(index.memory_bytes() as u128 <= kind.memory_bytes(3, 70), "{name}");
        }
        assert_eq!(IndexKind::Tree.memory_bytes(usize::MAX, usize::MAX), u128::MAX);
        assert!(IndexKind::Bits.memory_bytes(usize::MAX, usize::MAX) > 0);
    }
}
