//! The threshold-crossing index: one bit per (point, neuron) saying whether
//! P[i, r] > b, kept exact by the step itself.
//!
//! The step already holds every changed value P[:, r] (r ∈ R) in L1 while it
//! updates it, so it compares the new row against b and hands over the bit
//! mask (`record_masks`, n/64 words per neuron). The index keeps the same
//! masks neuron-major, so the XOR with the stored mask gives exactly the
//! points whose firing flipped — rare, since a step moves a preactivation by
//! a tiny amount — and only those bits are flipped in the point-major copy
//! that queries read. A query is a walk over the set bits of one point's
//! row: m/64 contiguous words plus O(k) for k results, instead of m strided
//! reads of P. Memory: 2 · n·m/8 bytes (1/32 of P). Queries at a threshold
//! other than b fall back to reading P, so answers are exact for every τ.

use super::activation::{scan_row, ActivationIndex, IndexStats};
use ndarray::ArrayView2;
use rayon::prelude::*;

pub struct FiredBits {
    n: usize,
    m: usize,
    words: usize,
    tau: f64,
    /// n × words, bit r of row i set iff P[i, r] > tau (for queries).
    bits: Vec<u64>,
    /// m × ⌈n/64⌉, bit i of neuron r set iff P[i, r] > tau (for diffing).
    by_neuron: Vec<u64>,
    stats: IndexStats,
}

impl FiredBits {
    /// Its name, as accepted by `Trainer(index=...)` (`IndexKind::NAMES`).
    pub const NAME: &'static str = "bits";

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
        let point_words = n.div_ceil(64).max(1);
        let mut by_neuron = vec![0u64; m * point_words];
        by_neuron.par_chunks_mut(point_words).enumerate().for_each(|(r, mask)| {
            for (i, v) in values.column(r).iter().enumerate() {
                if *v > tau {
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

    fn record_masks(&mut self, neurons: &[u32], masks: &[u64]) {
        let pw = self.n.div_ceil(64).max(1);
        for (&r, new) in neurons.iter().zip(masks.chunks_exact(pw)) {
            let r = r as usize;
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
        (self.bits.len() + self.by_neuron.len()) * 8
    }

    fn stats(&self) -> IndexStats {
        self.stats
    }
}
