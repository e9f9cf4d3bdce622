//! The contract every activated-neuron index meets (`ActivationIndex`), its
//! work counters (`IndexStats`) and the honest baseline (`LinearScan`).
//!
//! The step writes P eagerly and then tells the index which neurons changed
//! (`mark_changed`); an index may use that to keep derived structure lazily up
//! to date (the asynchronous tree, `index/tree.rs`). Every index must return exactly
//! the same, sorted fire sets: they are interchangeable, only speed differs.

use crate::elem::Elem;
use ndarray::ArrayView2;
use rayon::prelude::*;

/// Work counters of an index, for measuring its maintenance and query cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Queries answered (one per distinct batch row per step).
    pub queries: u64,
    /// Rows brought up to date by a sync (incremental or full).
    pub rows_synced: u64,
    /// Rows rebuilt from scratch.
    pub full_rebuilds: u64,
    /// Internal nodes recomputed by syncs.
    pub nodes_recomputed: u64,
    /// Entries of P read (leaves by syncs and queries, or scanned values).
    pub values_read: u64,
}

impl IndexStats {
    pub fn add(&mut self, o: &IndexStats) {
        self.queries += o.queries;
        self.rows_synced += o.rows_synced;
        self.full_rebuilds += o.full_rebuilds;
        self.nodes_recomputed += o.nodes_recomputed;
        self.values_read += o.values_read;
    }
}

pub trait ActivationIndex<T: Elem = f64>: Send + Sync {
    /// Fire sets of `rows` (indices into P, may repeat), each sorted ascending,
    /// in the order of `rows`. Strict: r fires when P[i, r] > thresholds[r]
    /// (one threshold per neuron, the net's b_r).
    fn fire_sets(&mut self, values: ArrayView2<'_, T>, rows: &[usize], thresholds: &[f64]) -> Vec<Vec<u32>>;

    /// Neurons `cols` (sorted, distinct) changed in every row of P: their
    /// preactivations, their thresholds, or both.
    fn mark_changed(&mut self, cols: &[u32]);

    /// Whether the step must report, for every changed neuron r, the bit
    /// mask of the points with P[i, r] > b_r (`record_masks`), before
    /// `mark_changed`.
    fn tracks_crossings(&self) -> bool {
        false
    }

    /// `masks` holds ⌈n/64⌉ words per neuron of `neurons` (sorted, distinct):
    /// bit i of neuron j's words is set iff P[i, neurons[j]] >
    /// thresholds[neurons[j]] now (`thresholds`: every neuron's, as the next
    /// queries will pass them).
    fn record_masks(&mut self, _neurons: &[u32], _masks: &[u64], _thresholds: &[f64]) {}

    /// Short name, as accepted by `Trainer(index=...)`.
    fn name(&self) -> &'static str;

    /// Bytes of derived structure the index keeps beyond P itself.
    fn memory_bytes(&self) -> usize;

    /// Work done so far.
    fn stats(&self) -> IndexStats;
}

/// The honest baseline: read row i in full, O(m) per query, no state.
#[derive(Default, Clone, Debug)]
pub struct LinearScan {
    stats: IndexStats,
}

impl LinearScan {
    /// Its name, as accepted by `Trainer(index=...)` (`IndexKind::NAMES`).
    pub const NAME: &'static str = "scan";
}

/// Below this size of P the scan runs on the calling thread: its few
/// thousand reads take less time than waking a worker of the pool, which
/// the step then usually does not need either (its update is serial below
/// 2 MiB of fired rows). Above it the reads, scattered over P, are
/// latency-bound and two threads halve them (n = 1000, m = 2048: 0.08 ms
/// against 0.10).
const SERIAL_BYTES: usize = 4 << 20;

/// `{r : row[r] > thresholds[r]}`, sorted.
pub fn scan_row<T: Elem>(row: &[T], thresholds: &[f64]) -> Vec<u32> {
    row.iter().zip(thresholds).enumerate().filter(|(_, (v, t))| v.to_f64() > **t).map(|(r, _)| r as u32).collect()
}

impl<T: Elem> ActivationIndex<T> for LinearScan {
    fn fire_sets(&mut self, values: ArrayView2<'_, T>, rows: &[usize], thresholds: &[f64]) -> Vec<Vec<u32>> {
        self.stats.queries += rows.len() as u64;
        self.stats.values_read += (rows.len() * values.ncols()) as u64;
        let one = |&i: &usize| {
            let row = values.row(i);
            match row.as_slice() {
                Some(s) => scan_row(s, thresholds),
                None => scan_row(&row.to_vec(), thresholds),
            }
        };
        // A small P is scanned by this thread alone (see SERIAL_BYTES).
        if values.len() * std::mem::size_of::<T>() < SERIAL_BYTES {
            return rows.iter().map(one).collect();
        }
        rows.par_iter().map(one).collect()
    }

    fn mark_changed(&mut self, _cols: &[u32]) {}

    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn memory_bytes(&self) -> usize {
        0
    }

    fn stats(&self) -> IndexStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn scan_is_strict_and_sorted() {
        let p = array![[0.5, 2.0, 1.0, 3.0], [1.0, 1.0, 1.0, 1.0]];
        let mut s = LinearScan::default();
        let f = s.fire_sets(p.view(), &[0, 1, 0], &[1.0; 4]);
        assert_eq!(f, vec![vec![1, 3], vec![], vec![1, 3]]);
        assert_eq!(s.fire_sets(p.view(), &[1], &[f64::NEG_INFINITY; 4]), vec![vec![0, 1, 2, 3]]);
        assert_eq!(s.fire_sets(p.view(), &[1], &[f64::INFINITY; 4]), vec![Vec::<u32>::new()]);
        // One threshold per neuron.
        assert_eq!(s.fire_sets(p.view(), &[0, 1], &[0.0, 2.0, 0.5, 3.5]), vec![vec![0, 2], vec![0, 2]]);
    }
}
