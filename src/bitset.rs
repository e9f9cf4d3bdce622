//! The threshold-crossing index: one bit per (point, neuron) saying whether
//! P[i, r] > b, kept exact by the step itself.
//!
//! The step already holds every changed value P[:, r] (r ∈ R) in L1 while it
//! updates it, so it compares each row against b before and after and
//! reports only the bits that flipped (`record_crossings`); crossings are
//! rare, since one step moves a preactivation by a tiny amount. A query is
//! then a walk over the set bits of one point's row: m/64 contiguous words
//! plus O(k) for k results, instead of m strided reads of P. Memory: n·m/8
//! bytes (1/64 of P). Queries at any threshold other than b fall back to
//! reading P, so the answers are exact for every τ.

use crate::index::{scan_row, ActivationIndex, IndexStats};
use ndarray::ArrayView2;
use rayon::prelude::*;

pub struct FiredBits {
    n: usize,
    m: usize,
    words: usize,
    tau: f64,
    /// n × words, bit r of row i set iff P[i, r] > tau.
    bits: Vec<u64>,
    stats: IndexStats,
}

impl FiredBits {
    /// Builds the bits of `values` (n × m) at threshold `tau`.
    pub fn new(values: ArrayView2<'_, f64>, tau: f64) -> FiredBits {
        let (n, m) = values.dim();
        let words = m.div_ceil(64).max(1);
        let mut bits = vec![0u64; n * words];
        bits.par_chunks_mut(words).enumerate().for_each(|(i, row_bits)| {
            let row = values.row(i);
            for (r, v) in row.iter().enumerate() {
                if *v > tau {
                    row_bits[r / 64] |= 1 << (r % 64);
                }
            }
        });
        FiredBits { n, m, words, tau, bits, stats: IndexStats::default() }
    }

    fn row_set(&self, i: usize) -> Vec<u32> {
        let mut out = Vec::new();
        for (w, &word) in self.bits[i * self.words..(i + 1) * self.words].iter().enumerate() {
            let mut rest = word;
            while rest != 0 {
                out.push((w * 64 + rest.trailing_zeros() as usize) as u32);
                rest &= rest - 1;
            }
        }
        out
    }
}

impl ActivationIndex for FiredBits {
    fn fire_sets(&mut self, values: ArrayView2<'_, f64>, rows: &[usize], tau: f64) -> Vec<Vec<u32>> {
        self.stats.queries += rows.len() as u64;
        if tau == self.tau {
            return rows.iter().map(|&i| self.row_set(i)).collect();
        }
        self.stats.values_read += (rows.len() * self.m) as u64;
        rows.par_iter().map(|&i| scan_row(&values.row(i).to_vec(), tau)).collect()
    }

    fn mark_changed(&mut self, _cols: &[u32]) {}

    fn crossing_threshold(&self) -> Option<f64> {
        Some(self.tau)
    }

    fn record_crossings(&mut self, crossings: &[(u32, u32)]) {
        for &(i, r) in crossings {
            let (i, r) = (i as usize, r as usize);
            debug_assert!(i < self.n && r < self.m);
            self.bits[i * self.words + r / 64] ^= 1 << (r % 64);
        }
        self.stats.rows_synced += crossings.len() as u64;
    }

    fn name(&self) -> &'static str {
        "bits"
    }

    fn memory_bytes(&self) -> usize {
        self.bits.len() * 8
    }

    fn stats(&self) -> IndexStats {
        self.stats
    }
}
