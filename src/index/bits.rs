//! The threshold-crossing index: one bit per (point, neuron) saying whether
//! P[i, r] > b_r, kept exact by the step itself.
//!
//! The step already holds every changed value P[:, r] (r ∈ R) in L1 while it
//! updates it, so it compares the new row against b_r and hands over the bit
//! mask (`record_masks`, n/64 words per neuron). The index keeps the same
//! masks neuron-major, so the XOR with the stored mask gives exactly the
//! points whose firing flipped — rare, since a step moves a preactivation by
//! a tiny amount — and only those bits are flipped in the point-major copy
//! that queries read. A query is a walk over the set bits of one point's
//! row: m/64 contiguous words plus O(k) for k results, instead of m strided
//! reads of P. Memory: 2 · n·m/8 bytes (1/32 of P), and the m thresholds
//! the bits are for. Queries at other thresholds fall back to reading P, so
//! answers are exact for any thresholds.

use super::activation::{scan_row, ActivationIndex, IndexStats};
use crate::elem::Elem;
use ndarray::ArrayView2;
use rayon::prelude::*;

pub struct FiredBits {
    n: usize,
    m: usize,
    words: usize,
    /// The thresholds the bits are for (b_r).
    tau: Vec<f64>,
    /// n × words, bit r of row i set iff P[i, r] > tau[r] (for queries).
    bits: Vec<u64>,
    /// m × ⌈n/64⌉, bit i of neuron r set iff P[i, r] > tau[r] (for diffing).
    by_neuron: Vec<u64>,
    stats: IndexStats,
}

impl FiredBits {
    /// Its name, as accepted by `Trainer(index=...)` (`IndexKind::NAMES`).
    pub const NAME: &'static str = "bits";

    /// Builds the bits of `values` (n × m) at the per-neuron `thresholds` (m).
    pub fn new<T: Elem>(values: ArrayView2<'_, T>, thresholds: &[f64]) -> FiredBits {
        let (n, m) = values.dim();
        let tau = thresholds.to_vec();
        let words = m.div_ceil(64).max(1);
        let mut bits = vec![0u64; n * words];
        bits.par_chunks_mut(words).enumerate().for_each(|(i, row_bits)| {
            let row = values.row(i);
            for (r, (v, t)) in row.iter().zip(&tau).enumerate() {
                if v.to_f64() > *t {
                    row_bits[r / 64] |= 1 << (r % 64);
                }
            }
        });
        let point_words = n.div_ceil(64).max(1);
        let mut by_neuron = vec![0u64; m * point_words];
        by_neuron.par_chunks_mut(point_words).enumerate().for_each(|(r, mask)| {
            for (i, v) in values.column(r).iter().enumerate() {
                if v.to_f64() > tau[r] {
                    mask[i / 64] |= 1 << (i % 64);
                }
            }
        });
        FiredBits { n, m, words, tau, bits, by_neuron, stats: IndexStats::default() }
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

impl<T: Elem> ActivationIndex<T> for FiredBits {
    fn fire_sets(&mut self, values: ArrayView2<'_, T>, rows: &[usize], thresholds: &[f64]) -> Vec<Vec<u32>> {
        self.stats.queries += rows.len() as u64;
        // (Comparing m thresholds costs far less than the query it answers.)
        if thresholds == self.tau.as_slice() {
            return rows.iter().map(|&i| self.row_set(i)).collect();
        }
        self.stats.values_read += (rows.len() * self.m) as u64;
        rows.par_iter().map(|&i| scan_row(&values.row(i).to_vec(), thresholds)).collect()
    }

    fn mark_changed(&mut self, _cols: &[u32]) {}

    fn tracks_crossings(&self) -> bool {
        true
    }

    fn record_masks(&mut self, neurons: &[u32], masks: &[u64], thresholds: &[f64]) {
        let pw = self.n.div_ceil(64).max(1);
        for (&r, new) in neurons.iter().zip(masks.chunks_exact(pw)) {
            let r = r as usize;
            self.tau[r] = thresholds[r];
            let old = &mut self.by_neuron[r * pw..(r + 1) * pw];
            for (w, (o, nw)) in old.iter_mut().zip(new).enumerate() {
                let mut flipped = *o ^ nw;
                *o = *nw;
                while flipped != 0 {
                    let i = w * 64 + flipped.trailing_zeros() as usize;
                    self.bits[i * self.words + r / 64] ^= 1 << (r % 64);
                    self.stats.rows_synced += 1;
                    flipped &= flipped - 1;
                }
            }
        }
    }

    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn memory_bytes(&self) -> usize {
        (self.bits.len() + self.by_neuron.len() + self.tau.len()) * 8
    }

    fn stats(&self) -> IndexStats {
        self.stats
    }
}
