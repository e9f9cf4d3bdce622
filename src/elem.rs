//! The element type of a trainer's preactivations P (`Trainer(dtype=...)`).
//!
//! P (n × m) is the state a step reads and writes most: every fired
//! neuron's whole column, O(n |R|) values per step, against O(S |R|) for
//! the coefficients and O(n S) for the Gram rows. Keeping it in float32
//! halves the trainer's memory and the step's traffic. Every computation on
//! it still runs in float64: a value is widened when read, a step's update
//! of a value is accumulated in float64 and rounded once when stored, and a
//! fire set compares the stored value, widened exactly, with the
//! threshold. The update's other operand, the rows K[B, :], is read rounded
//! to float32 too (a relative error of 6e-8 in each update, below P's own
//! rounding), since in float64 it would move as many bytes as P. float64 keeps the paper's exactness (docs/design.md, "Why it
//! is exact"); float32 has its own statement (docs/design.md, "float32").

/// A storage type of P: f64 or f32.
pub trait Elem: Copy + Default + Send + Sync + PartialOrd + std::fmt::Debug + 'static {
    /// The type a step reads the rows K[B, :] in: f64 for f64, f32 for f32
    /// (the update's other operand: reading it in f64 would move more
    /// bytes than P itself).
    type Gram: Copy + Default + Send + Sync + 'static;

    /// The NumPy name of the type.
    const NAME: &'static str;
    /// Bytes per value.
    const BYTES: usize;
    /// Largest |P| a step may leave: far enough below the type's overflow
    /// that no stored value, and no sum or product of them in float64, can
    /// become infinite.
    const SAFE_BOUND: f64;

    /// The value, exactly, as f64.
    fn to_f64(self) -> f64;

    /// The nearest value of this type.
    fn from_f64(v: f64) -> Self;

    /// `block[k] -= Σ_t c_t · k_t[start + k]` over the terms (c_t, k_t) in
    /// their order, in f64, rounding each value once when it is stored.
    fn update_block(block: &mut [Self], terms: &[(f64, &[Self::Gram])], start: usize);

    /// `block[k] -= c · k[k]`: `update_block` with one term, `k` aligned
    /// with `block`.
    fn update_one(block: &mut [Self], c: f64, k: &[Self::Gram]);

    /// The rows K[B, :] (f64) as the update reads them: themselves for f64,
    /// rounded into `buf` for f32.
    fn gram_rows<'a>(rows: &'a [f64], buf: &'a mut Vec<Self::Gram>) -> &'a [Self::Gram];

    /// The values themselves when the type is f64 (for code specialised to
    /// it), else None.
    fn as_f64s(values: &[Self]) -> Option<&[f64]>;

    /// An f64 array in this type: itself for f64 (no copy), rounded for f32.
    fn from_f64_array(a: ndarray::Array2<f64>) -> ndarray::Array2<Self>;
}

impl Elem for f64 {
    type Gram = f64;
    const NAME: &'static str = "float64";
    const BYTES: usize = 8;
    const SAFE_BOUND: f64 = crate::limits::SAFE_BOUND;

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }

    #[inline(always)]
    fn from_f64(v: f64) -> f64 {
        v
    }

    fn gram_rows<'a>(rows: &'a [f64], _: &'a mut Vec<f64>) -> &'a [f64] {
        rows
    }

    #[inline(always)]
    fn update_one(block: &mut [f64], c: f64, k: &[f64]) {
        for (o, k) in block.iter_mut().zip(k) {
            *o -= c * k;
        }
    }

    #[inline(always)]
    fn update_block(block: &mut [f64], terms: &[(f64, &[f64])], start: usize) {
        // Two terms per pass over the block (the same subtractions in the
        // same order: ((x − c₀k₀) − c₁k₁) − …), half the loads and stores.
        let len = block.len();
        let mut pairs = terms.chunks_exact(2);
        for pair in pairs.by_ref() {
            let ((c0, k0), (c1, k1)) = (pair[0], pair[1]);
            let (k0, k1) = (&k0[start..start + len], &k1[start..start + len]);
            for ((o, a), b) in block.iter_mut().zip(k0).zip(k1) {
                *o = *o - c0 * a - c1 * b;
            }
        }
        if let [(c, krow)] = pairs.remainder() {
            for (o, k) in block.iter_mut().zip(&krow[start..start + len]) {
                *o -= c * k;
            }
        }
    }

    #[inline(always)]
    fn as_f64s(values: &[f64]) -> Option<&[f64]> {
        Some(values)
    }

    fn from_f64_array(a: ndarray::Array2<f64>) -> ndarray::Array2<f64> {
        a
    }
}

impl Elem for f32 {
    type Gram = f32;
    const NAME: &'static str = "float32";
    const BYTES: usize = 4;
    /// f32 overflows at 3.4e38; products of two values and sums over m
    /// neurons stay far inside f64.
    const SAFE_BOUND: f64 = 1e30;

    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }

    #[inline(always)]
    fn from_f64(v: f64) -> f32 {
        v as f32
    }

    #[inline(always)]
    fn update_one(block: &mut [f32], c: f64, k: &[f32]) {
        for (o, k) in block.iter_mut().zip(k) {
            *o = (*o as f64 - c * *k as f64) as f32;
        }
    }

    fn gram_rows<'a>(rows: &'a [f64], buf: &'a mut Vec<f32>) -> &'a [f32] {
        use rayon::prelude::*;
        buf.resize(rows.len(), 0.0);
        buf.par_chunks_mut(1 << 14).zip(rows.par_chunks(1 << 14)).for_each(|(o, r)| {
            for (o, v) in o.iter_mut().zip(r) {
                *o = *v as f32;
            }
        });
        buf
    }

    #[inline(always)]
    fn update_block(block: &mut [f32], terms: &[(f64, &[f32])], start: usize) {
        // The S terms are accumulated in float64 and the value rounded to
        // float32 once per step, not once per term. A neuron is usually
        // fired by one or two of a batch's points: those cases are one
        // streaming pass (widen, subtract, round) that vectorizes; the
        // general case keeps the sums in a float64 block. Every case
        // subtracts the terms in order, so they give the same bits.
        const MAX: usize = 256;
        let len = block.len();
        match terms {
            [] => {}
            [(c0, k0)] => {
                for (o, a) in block.iter_mut().zip(&k0[start..start + len]) {
                    *o = (*o as f64 - c0 * *a as f64) as f32;
                }
            }
            [(c0, k0), (c1, k1)] => {
                let (k0, k1) = (&k0[start..start + len], &k1[start..start + len]);
                for ((o, a), b) in block.iter_mut().zip(k0).zip(k1) {
                    *o = (*o as f64 - c0 * *a as f64 - c1 * *b as f64) as f32;
                }
            }
            _ => {
                debug_assert!(len <= MAX);
                let mut acc = [0.0f64; MAX];
                let acc = &mut acc[..len];
                for (a, v) in acc.iter_mut().zip(block.iter()) {
                    *a = *v as f64;
                }
                let mut pairs = terms.chunks_exact(2);
                for pair in pairs.by_ref() {
                    let ((c0, k0), (c1, k1)) = (pair[0], pair[1]);
                    let (k0, k1) = (&k0[start..start + len], &k1[start..start + len]);
                    for ((a, x), y) in acc.iter_mut().zip(k0).zip(k1) {
                        *a = *a - c0 * *x as f64 - c1 * *y as f64;
                    }
                }
                if let [(c, krow)] = pairs.remainder() {
                    for (a, k) in acc.iter_mut().zip(&krow[start..start + len]) {
                        *a -= c * *k as f64;
                    }
                }
                for (o, a) in block.iter_mut().zip(acc.iter()) {
                    *o = *a as f32;
                }
            }
        }
    }

    #[inline(always)]
    fn as_f64s(_: &[f32]) -> Option<&[f64]> {
        None
    }

    fn from_f64_array(a: ndarray::Array2<f64>) -> ndarray::Array2<f32> {
        a.mapv(|v| v as f32)
    }
}

/// Which type a trainer keeps P in, parsed once at the binding boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F64,
    F32,
}

impl Dtype {
    /// Every type by the name `Trainer(dtype=...)` accepts.
    pub const NAMES: [(&'static str, Dtype); 2] = [(f64::NAME, Dtype::F64), (f32::NAME, Dtype::F32)];

    /// Bytes per value of P.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F64 => f64::BYTES,
            Dtype::F32 => f32::BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 update accumulates in f64 and rounds once: it equals the f64
    /// update of the widened values, rounded, for any number of terms.
    #[test]
    fn f32_updates_round_once() {
        let rows: Vec<Vec<f64>> =
            (0..5).map(|t| (0..300).map(|i| (i as f64 * (0.37 + 0.1 * t as f64)).sin()).collect()).collect();
        let coefs = [1e-3, -2.5e-4, 7e-2, -1e-5, 3.3e-3];
        // The rows as the f32 update reads them (rounded to f32), and the
        // same values in f64 for the reference.
        let rows32: Vec<Vec<f32>> = rows.iter().map(|r| r.iter().map(|&v| v as f32).collect()).collect();
        let rows64: Vec<Vec<f64>> = rows32.iter().map(|r| r.iter().map(|&v| v as f64).collect()).collect();
        for count in 0..=5 {
            let terms32: Vec<(f64, &[f32])> = (0..count).map(|t| (coefs[t], rows32[t].as_slice())).collect();
            let terms64: Vec<(f64, &[f64])> = (0..count).map(|t| (coefs[t], rows64[t].as_slice())).collect();
            let mut low: Vec<f32> = (0..200).map(|i| 1.0 + i as f32 * 1e-3).collect();
            let mut wide: Vec<f64> = low.iter().map(|&v| v as f64).collect();
            f32::update_block(&mut low, &terms32, 50);
            f64::update_block(&mut wide, &terms64, 50);
            for (l, w) in low.iter().zip(&wide) {
                assert_eq!(*l, *w as f32, "{count} terms");
            }
        }
    }
}
