//! Memory planning: the bytes of each structure a trainer will allocate,
//! worked out before it is built, so that a run too large for the machine is
//! refused up front (`Trainer.estimate_memory`). Pure arithmetic on sizes,
//! in u128 and saturating: absurd sizes give huge figures, never an overflow
//! or a panic.

use crate::elem::Dtype;
use crate::index::IndexKind;
use crate::init::InitialWeights;
use crate::model::BackendKind;
use crate::step::GramMode;

/// What a trainer is to be built for: the backend and its settings, the
/// net's init and the training points' sizes.
#[derive(Clone, Copy, Debug)]
pub struct TrainerShape<'a> {
    pub backend: BackendKind,
    /// The net's W(0) (its init's scratch buffers).
    pub init: InitialWeights,
    /// The factor dimensions d_k (d = Π d_k).
    pub dims: &'a [usize],
    /// Training points.
    pub n: usize,
    /// Neurons this trainer holds (the whole width, or one rank's shard).
    pub neurons: usize,
    /// Terms per point.
    pub rank: usize,
    /// Rows of the largest entity table of indexed points.
    pub table_rows: usize,
    /// Kronecker backend only.
    pub index: IndexKind,
    /// Kronecker backend only.
    pub gram: GramMode,
    /// The Gram is another trainer's (`gram_from`): no n × n matrix of its own.
    pub shared_gram: bool,
    /// The net has no coefficient block for these points yet.
    pub new_block: bool,
    /// Points of each of the net's trained blocks.
    pub trained_sizes: &'a [usize],
    /// Bytes of the trainer's own copy of the points (gram = columns).
    pub points_bytes: u128,
    /// C, the net's outputs (targets and the linear term have C per point).
    pub outputs: usize,
    /// Whether the trainer keeps a linear term's parts (n × C, or C × d).
    pub linear: bool,
    /// Worker threads.
    pub threads: usize,
    /// The type P is kept in.
    pub dtype: Dtype,
}

/// Bytes of each structure (0 for what the backend does not have) and the
/// peak they add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrainerMemory {
    /// P (n × neurons): the Kronecker state; for the dense backend, the full
    /// loss's preactivations of one block of points (neurons × block).
    pub preacts: u128,
    /// The coefficient block, when the net has none for these points.
    pub coefficients: u128,
    /// The trainer's copy of the points (Gram columns recomputed per step).
    pub points: u128,
    /// The targets y.
    pub targets: u128,
    /// Init's transient: its per-thread buffers, or one trained block's
    /// cross-Gram (n × n_s), whichever is larger.
    pub init: u128,
    /// The precomputed Gram (n × n) and its per-thread buffers.
    pub gram: u128,
    /// The index's derived structure.
    pub index: u128,
    /// The linear term: L̃ (n × C), or the dense backend's ṽ (C × d).
    pub linear: u128,
    /// The dense backend's X (n × d), or a trained block's X_s before it.
    pub dense_x: u128,
    /// The dense backend's W (neurons × d).
    pub dense_w: u128,
    /// The most bytes alive at once.
    pub peak: u128,
}

impl TrainerMemory {
    /// (name, bytes) of every field, in declaration order.
    pub fn entries(&self) -> [(&'static str, u128); 11] {
        [
            ("preacts", self.preacts),
            ("coefficients", self.coefficients),
            ("points", self.points),
            ("targets", self.targets),
            ("init", self.init),
            ("gram", self.gram),
            ("index", self.index),
            ("linear", self.linear),
            ("dense_x", self.dense_x),
            ("dense_w", self.dense_w),
            ("peak", self.peak),
        ]
    }
}

/// What the `gemm` crate keeps in each thread that has run a product: a
/// packing buffer the size of the L2 cache, held for the thread's life
/// (gemm-common's `L2_SLAB`). A trained block's cross-Gram products run in
/// every worker, so at 8 threads of a 2 MiB L2 they add 16 MiB beside the
/// cross-Gram (a trainer at n = 1024, m = 2048, d = 2^14 peaked 10 MiB over
/// its estimate without it).
pub fn gemm_thread_bytes() -> u128 {
    gemm_common::cache::CACHE_INFO[1].cache_bytes as u128
}

/// 8 · Π factors, saturating: the bytes of that many f64.
fn f64_bytes(factors: &[usize]) -> u128 {
    factors.iter().fold(8u128, |acc, &k| acc.saturating_mul(k as u128))
}

/// The bytes a trainer of `shape` allocates.
///
/// Kronecker backend: P, the new block, the points' copy and the targets
/// span the whole build; two phases follow each other within it: init (its
/// scratch, or one trained block's cross-Gram) and then the Gram and the
/// index, which stay. Dense backend: W (neurons × d) stays; a trained
/// block's X_s lives only while W is built and this trainer's X only after,
/// never both; the full loss adds one block of its points' preactivations
/// (`dense::loss_block_points`).
pub fn trainer_memory(shape: &TrainerShape<'_>) -> TrainerMemory {
    let (n, m, c) = (shape.n, shape.neurons, shape.outputs.max(1));
    let largest_trained = shape.trained_sizes.iter().copied().max().unwrap_or(0);
    // A new block: α (n × neurons) and β̃ (n × C).
    let coefficients = if shape.new_block { f64_bytes(&[n, m.saturating_add(c)]) } else { 0 };
    let preacts = f64_bytes(&[n, m]) / 8 * shape.dtype.bytes() as u128;
    match shape.backend {
        BackendKind::Kron => {
            let points = if shape.gram == GramMode::Columns { shape.points_bytes } else { 0 };
            let targets = f64_bytes(&[n, c]);
            let linear = if shape.linear { f64_bytes(&[n, c]) } else { 0 };
            let scratch = shape.init.scratch_bytes(shape.dims, n, shape.rank, shape.table_rows, shape.threads);
            let cross = if largest_trained > 0 {
                f64_bytes(&[n, largest_trained]).saturating_add(gemm_thread_bytes() * shape.threads.max(1) as u128)
            } else {
                0
            };
            let mut init = scratch.max(cross);
            if shape.dtype != Dtype::F64 {
                // Float64 rows before they are rounded: 256 neurons at a
                // time for a fresh net, the whole P when a block is trained
                // (`predict::preacts_t_part_as`).
                let rows = if largest_trained > 0 { m } else { m.min(256) };
                init = init.saturating_add(f64_bytes(&[n, rows]));
            }
            let gram = if shape.gram == GramMode::Precomputed && !shape.shared_gram {
                f64_bytes(&[n, n]).saturating_add(f64_bytes(&[64, n, shape.threads]))
            } else {
                0
            };
            let index = shape.index.memory_bytes(n, m);
            let peak = [preacts, coefficients, points, targets, linear, init.max(gram.saturating_add(index))]
                .into_iter()
                .fold(0u128, u128::saturating_add);
            TrainerMemory {
                preacts,
                coefficients,
                points,
                targets,
                init,
                gram,
                index,
                linear,
                peak,
                ..Default::default()
            }
        }
        BackendKind::Dense => {
            let d = shape.dims.iter().fold(1u128, |acc, &k| acc.saturating_mul(k as u128));
            let dense_w = d.saturating_mul(f64_bytes(&[m]));
            let dense_x = d.saturating_mul(f64_bytes(&[n.max(largest_trained)]));
            let linear = if shape.linear { d.saturating_mul(f64_bytes(&[c])) } else { 0 };
            let preacts = f64_bytes(&[m, n.min(crate::dense::loss_block_points(m))]);
            let peak = [dense_w, dense_x, coefficients, preacts, linear].into_iter().fold(0u128, u128::saturating_add);
            TrainerMemory { preacts, coefficients, dense_x, dense_w, linear, peak, ..Default::default() }
        }
    }
}

/// Bytes `net.preactivations` of q points needs: P (q × width), the
/// largest trained block's cross-Gram (q × n_s), and init's per-thread
/// scratch for those points.
#[allow(clippy::too_many_arguments)]
pub fn preacts_bytes(
    init: &InitialWeights,
    dims: &[usize],
    q: usize,
    width: usize,
    block_sizes: &[usize],
    rank: usize,
    table_rows: usize,
    threads: usize,
) -> u128 {
    let largest = block_sizes.iter().copied().max().unwrap_or(0) as u128;
    (8 * q as u128)
        .saturating_mul((width as u128).saturating_add(largest))
        .saturating_add(init.scratch_bytes(dims, q, rank, table_rows, threads))
}

/// Bytes `net.dense_weights()` needs: W (width × d) and, while a block is
/// added, that block's points X (n_s × d), the largest of `block_sizes`.
pub fn dense_weights_bytes(dims: &[usize], width: usize, block_sizes: &[usize]) -> u128 {
    let d = dims.iter().fold(1u128, |acc, &k| acc.saturating_mul(k as u128));
    let largest = block_sizes.iter().copied().max().unwrap_or(0) as u128;
    (8 * d).saturating_mul((width as u128).saturating_add(largest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::InitKind;

    fn shape<'a>(backend: BackendKind, dims: &'a [usize], trained: &'a [usize]) -> TrainerShape<'a> {
        TrainerShape {
            backend,
            init: InitialWeights::gaussian(7),
            dims,
            n: 1000,
            neurons: 512,
            rank: 1,
            table_rows: 0,
            index: IndexKind::Bits,
            gram: GramMode::Precomputed,
            shared_gram: false,
            new_block: true,
            trained_sizes: trained,
            points_bytes: 123_456,
            outputs: 1,
            linear: false,
            dtype: Dtype::F64,
            threads: 2,
        }
    }

    /// The Kronecker backend's figures, worked out by hand: n = 1000, m = 512.
    #[test]
    fn kron_backend_by_hand() {
        let dims = [100, 100];
        let s = shape(BackendKind::Kron, &dims, &[300, 2000]);
        let scratch = s.init.scratch_bytes(&dims, 1000, 1, 0, 2);
        // A trained block of 2000 points: its cross-Gram (1000 × 2000) is
        // 16 MB, more than init's buffers here; each of the 2 threads keeps
        // gemm's packing buffer beside it.
        assert!(scratch < 16_000_000, "{scratch}");
        let cross = 16_000_000 + 2 * gemm_thread_bytes();
        let got = trainer_memory(&s);
        let want = TrainerMemory {
            preacts: 4_096_000,      // 8 · 1000 · 512
            coefficients: 4_104_000, // a new block: 8 · 1000 · (512 + 1)
            points: 0,               // the Gram is precomputed
            targets: 8_000,
            init: cross, // max(scratch, 8 · 1000 · 2000 + gemm's buffers)
            // 8 · 1000² + 8 · 64 · 1000 · 2 threads
            gram: 8_000_000 + 1_024_000,
            // 8 · (1000 · ⌈512/64⌉ + 512 · ⌈1000/64⌉ + 512 thresholds)
            index: 8 * (1000 * 8 + 512 * 16 + 512),
            linear: 0,
            dense_x: 0,
            dense_w: 0,
            // P + block + targets + max(init, gram + index)
            peak: 4_096_000 + 4_104_000 + 8_000 + cross,
        };
        assert_eq!(got, want);
        // Gram columns: the points' copy instead of the Gram; a shared Gram
        // costs nothing; no new block, no trained block, a scan.
        let columns = TrainerShape { gram: GramMode::Columns, index: IndexKind::Scan, new_block: false, ..s };
        let columns = TrainerShape { trained_sizes: &[], ..columns };
        let got = trainer_memory(&columns);
        assert_eq!((got.points, got.gram, got.index, got.coefficients), (123_456, 0, 0, 0));
        assert_eq!(got.init, scratch);
        assert_eq!(got.peak, 4_096_000 + 123_456 + 8_000 + scratch);
        let shared = TrainerShape { shared_gram: true, ..s };
        assert_eq!(trainer_memory(&shared).gram, 0);
    }

    /// The dense backend's figures, worked out by hand: d = 60, n = 1000,
    /// m = 512.
    #[test]
    fn dense_backend_by_hand() {
        let dims = [6, 10];
        let s = shape(BackendKind::Dense, &dims, &[300, 2000]);
        let want = TrainerMemory {
            preacts: 1_048_576,      // the full loss's 256 points at a time (1 MiB / 8 m)
            coefficients: 4_104_000, // a new block (α and β̃)
            dense_w: 245_760,        // 8 · 60 · 512
            dense_x: 960_000,        // 8 · 60 · max(1000, 2000)
            peak: 245_760 + 960_000 + 4_104_000 + 1_048_576,
            ..Default::default()
        };
        assert_eq!(trainer_memory(&s), want);
        // float32 P: half of P, and its rounding's float64 rows (256 of the
        // 512 neurons of this fresh net) during init.
        let k = TrainerShape { backend: BackendKind::Kron, trained_sizes: &[], ..s };
        let half = trainer_memory(&TrainerShape { dtype: Dtype::F32, ..k });
        let full = trainer_memory(&k);
        assert_eq!(half.preacts * 2, full.preacts);
        assert_eq!(half.init, full.init + 8 * 1000 * 256);
        // Three outputs with a linear term: β̃, the targets and ṽ grow with C.
        let multi = TrainerShape { outputs: 3, linear: true, ..s };
        let got = trainer_memory(&multi);
        assert_eq!((got.coefficients, got.linear), (8 * 1000 * 515, 8 * 60 * 3));
        let kron = trainer_memory(&TrainerShape { backend: BackendKind::Kron, ..multi });
        assert_eq!((kron.targets, kron.linear), (8 * 1000 * 3, 8 * 1000 * 3));
        let none = TrainerShape { new_block: false, trained_sizes: &[], ..s };
        assert_eq!(trainer_memory(&none).dense_x, 480_000);
        assert_eq!(trainer_memory(&none).peak, 245_760 + 480_000 + 1_048_576);
    }

    /// Absurd sizes saturate instead of overflowing or panicking.
    #[test]
    fn absurd_sizes_saturate() {
        let dims = [usize::MAX, usize::MAX, usize::MAX];
        let trained = [usize::MAX];
        for backend in [BackendKind::Kron, BackendKind::Dense] {
            for init in [InitialWeights::gaussian(1), InitialWeights { seed: 1, kind: InitKind::Kron { rank: 3 } }] {
                for (index, gram) in [(IndexKind::Tree, GramMode::Precomputed), (IndexKind::Bits, GramMode::Columns)] {
                    let s = TrainerShape {
                        backend,
                        init,
                        dims: &dims,
                        n: usize::MAX,
                        neurons: usize::MAX,
                        rank: usize::MAX,
                        table_rows: usize::MAX,
                        index,
                        gram,
                        shared_gram: false,
                        outputs: usize::MAX,
                        linear: true,
                        new_block: true,
                        trained_sizes: &trained,
                        points_bytes: u128::MAX,
                        dtype: Dtype::F32,
                        threads: usize::MAX,
                    };
                    assert_eq!(trainer_memory(&s).peak, u128::MAX);
                }
            }
        }
    }

    #[test]
    fn preactivations_and_dense_weights() {
        let init = InitialWeights::gaussian(0);
        let scratch = init.scratch_bytes(&[4, 8], 10, 1, 0, 2);
        assert_eq!(preacts_bytes(&init, &[4, 8], 10, 16, &[5, 30, 7], 1, 0, 2), 8 * 10 * (16 + 30) + scratch);
        assert_eq!(dense_weights_bytes(&[4, 8], 16, &[]), 8 * 32 * 16);
        assert_eq!(dense_weights_bytes(&[4, 8], 16, &[3, 9]), 8 * 32 * 25);
        assert_eq!(dense_weights_bytes(&[usize::MAX, usize::MAX], usize::MAX, &[usize::MAX]), u128::MAX);
    }
}
