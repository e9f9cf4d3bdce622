//! Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11).
//!
//! A counter-based generator maps (key, counter) to random bits with no hidden
//! state, so neuron r's initial weights are a pure function of (seed, r): any
//! neuron can be regenerated alone, in any order, on any thread, and init,
//! prediction and `dense_weights()` all see the same w_r(0) without storing it.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// One Philox4x32-10 block.
pub fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        c = [
            ((p1 >> 32) as u32) ^ c[1] ^ k[0],
            p1 as u32,
            ((p0 >> 32) as u32) ^ c[3] ^ k[1],
            p0 as u32,
        ];
    }
    c
}

/// Independent streams of one seed, so weights and signs never share bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stream {
    Weights = 0,
    Signs = 1,
}

/// The random stream keyed by (seed, stream, index): block b of it is
/// Philox(counter = (b_lo, b_hi, index, stream), key = seed).
pub struct KeyedStream {
    key: [u32; 2],
    index: u32,
    stream: u32,
    block: u64,
}

impl KeyedStream {
    pub fn new(seed: u64, stream: Stream, index: u32) -> Self {
        KeyedStream { key: [seed as u32, (seed >> 32) as u32], index, stream: stream as u32, block: 0 }
    }

    fn next_block(&mut self) -> [u32; 4] {
        let b = self.block;
        self.block += 1;
        philox4x32([b as u32, (b >> 32) as u32, self.index, self.stream], self.key)
    }

    /// Two uniforms in (0, 1), 53 bits each, never exactly 0 (safe for ln).
    fn uniform_pair(&mut self) -> (f64, f64) {
        let x = self.next_block();
        let to_unit = |hi: u32, lo: u32| {
            let bits = (((hi as u64) << 32) | lo as u64) >> 11;
            (bits as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
        };
        (to_unit(x[0], x[1]), to_unit(x[2], x[3]))
    }

    /// Fills `out` with standard normals (Box–Muller; each block gives two).
    pub fn fill_normal(&mut self, out: &mut [f64]) {
        let mut chunks = out.chunks_exact_mut(2);
        for pair in &mut chunks {
            let (z0, z1) = self.normal_pair();
            pair[0] = z0;
            pair[1] = z1;
        }
        if let [last] = chunks.into_remainder() {
            *last = self.normal_pair().0;
        }
    }

    fn normal_pair(&mut self) -> (f64, f64) {
        let (u1, u2) = self.uniform_pair();
        let radius = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        (radius * c, radius * s)
    }

    /// A fair sign in {-1, +1}.
    pub fn sign(&mut self) -> f64 {
        if self.next_block()[0] & 1 == 0 {
            1.0
        } else {
            -1.0
        }
    }
}

/// w_r(0) ~ N(0, I_d): neuron r's initial weights, regenerated from (seed, r).
pub fn initial_weights(seed: u64, neuron: usize, out: &mut [f64]) {
    KeyedStream::new(seed, Stream::Weights, neuron as u32).fill_normal(out);
}

/// The output signs a_r in {-1, +1}, one independent stream per neuron.
pub fn output_signs(seed: u64, width: usize) -> Vec<f64> {
    (0..width).map(|r| KeyedStream::new(seed, Stream::Signs, r as u32).sign()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answers() {
        // Known-answer vectors published with Random123 (kat_vectors).
        assert_eq!(philox4x32([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(
            philox4x32([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn neuron_weights_are_regenerable_and_distinct() {
        let mut a = vec![0.0; 37];
        let mut b = vec![0.0; 37];
        initial_weights(7, 3, &mut a);
        initial_weights(7, 3, &mut b);
        assert_eq!(a, b);
        initial_weights(7, 4, &mut b);
        assert_ne!(a, b);
        initial_weights(8, 3, &mut b);
        assert_ne!(a, b);
        // A prefix of a longer draw is the shorter draw: d does not reshuffle.
        let mut long = vec![0.0; 80];
        initial_weights(7, 3, &mut long);
        assert_eq!(&long[..36], &a[..36]);
    }

    #[test]
    fn normals_have_unit_moments() {
        let mut z = vec![0.0; 400_000];
        initial_weights(1, 0, &mut z);
        let n = z.len() as f64;
        let mean = z.iter().sum::<f64>() / n;
        let var = z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let kurt = z.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n / (var * var);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
        let tail = z.iter().filter(|v| **v > 1.96).count() as f64 / n;
        assert!((tail - 0.025).abs() < 0.002, "tail {tail}");
    }

    #[test]
    fn signs_are_balanced() {
        let a = output_signs(3, 20_000);
        assert!(a.iter().all(|v| *v == 1.0 || *v == -1.0));
        let s: f64 = a.iter().sum();
        assert!(s.abs() < 500.0, "sum {s}");
    }
}
