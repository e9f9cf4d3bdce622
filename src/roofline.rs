//! The machine's ceilings that benchmarks read achieved rates against,
//! measured on every worker thread at once: the float64 fused multiply-add
//! peak, the read-plus-write bandwidth of a buffer of a given size (the
//! memory level a step's P lives in), and the throughput of the normal
//! generator that init and prediction draw W(0) from. A contraction of F flops that also draws N
//! normals cannot take less than F / peak + N / rate on this machine at
//! that moment (the two compete for the same cores), whatever its GEMM.

use crate::rng::{KeyedStream, Stream};
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// Independent accumulators per thread: enough to cover the FMA latency on
/// both pipes of current x86 cores (4 cycles × 2 pipes = 8 in flight).
const ACCUMULATORS: usize = 12;
/// FMA rounds per timed burst (each round is ACCUMULATORS vector FMAs).
const ROUNDS_PER_BURST: usize = 1 << 20;
/// Normals per buffer: one that stays in L1/L2, so the figure is the
/// generator's, not the memory system's.
const NORMALS_PER_FILL: usize = 1 << 12;
/// Buffer fills per thread per burst (a burst long against the pool's
/// dispatch cost).
const FILLS_PER_BURST: usize = 64;

/// Float64 GFLOP/s of 256-bit fused multiply-adds on all rayon threads
/// together, run for about `seconds`; None where AVX2 and FMA are not
/// available (the only vector path kronnet's kernels have).
pub fn fma_peak_gflops(seconds: f64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        let per_burst = (ROUNDS_PER_BURST * ACCUMULATORS * 4 * 2) as f64;
        // SAFETY: AVX2 and FMA are present, checked just above.
        let (bursts, elapsed) = run_bursts(seconds, || unsafe { fma_burst(ROUNDS_PER_BURST) });
        return Some(bursts as f64 * per_burst / elapsed / 1e9);
    }
    let _ = seconds;
    None
}

/// Standard normals per second that `KeyedStream::fill_normal` draws on all
/// rayon threads together, run for about `seconds`.
pub fn normals_per_second(seconds: f64) -> f64 {
    let (bursts, elapsed) = run_bursts(seconds, || {
        let mut buf = vec![0.0; NORMALS_PER_FILL];
        let index = rayon::current_thread_index().unwrap_or(0) as u32;
        let mut stream = KeyedStream::new(0, Stream::Weights, index);
        let mut sink = 0.0;
        for _ in 0..FILLS_PER_BURST {
            stream.fill_normal(&mut buf);
            sink += buf[0];
        }
        sink
    });
    (bursts * FILLS_PER_BURST * NORMALS_PER_FILL) as f64 / elapsed
}

/// Values a task of `stream_gbytes` covers: 256 KiB, long against the
/// pool's dispatch and short against any one cache.
const STREAM_CHUNK: usize = 1 << 15;

/// Read-plus-write bandwidth, in GB/s, of in-place streaming passes
/// (x ← 0.999 x + 0.001, which a step's update of P resembles: every value
/// read once and written once) over a buffer of `bytes` on all rayon
/// threads at once, for about `seconds`; the best of the passes. The
/// buffer's size picks the memory level: a few MiB measures the caches,
/// far more than the last-level cache measures DRAM. None when the buffer
/// cannot be allocated.
pub fn stream_gbytes(bytes: usize, seconds: f64) -> Option<f64> {
    let len = (bytes / 8).max(1);
    let mut buf = crate::error::try_zeros(len, "stream buffer").ok()?;
    // First touch (page faults) outside the timed passes.
    buf.par_chunks_mut(STREAM_CHUNK).for_each(|c| c.iter_mut().for_each(|v| *v = 1.0));
    let budget = if seconds.is_finite() && seconds > 0.0 { seconds.min(3600.0) } else { 0.0 };
    let start = Instant::now();
    let mut best = f64::INFINITY;
    loop {
        let pass = Instant::now();
        buf.par_chunks_mut(STREAM_CHUNK).for_each(|c| c.iter_mut().for_each(|v| *v = 0.999 * *v + 0.001));
        best = best.min(pass.elapsed().as_secs_f64());
        if start.elapsed().as_secs_f64() >= budget {
            break;
        }
    }
    std::hint::black_box(&buf);
    Some(2.0 * (len * 8) as f64 / best.max(1e-9) / 1e9)
}

/// Runs `burst` on every rayon thread at once, again and again, until
/// `seconds` have passed; returns the bursts run and the seconds taken.
fn run_bursts(seconds: f64, burst: impl Fn() -> f64 + Sync) -> (usize, f64) {
    let threads = rayon::current_num_threads();
    // At least one burst; a budget that is not a sane number of seconds
    // (NaN, negative, infinite) runs just that one, or at most an hour.
    let budget = if seconds.is_finite() && seconds > 0.0 {
        Duration::from_secs_f64(seconds.min(3600.0))
    } else {
        Duration::ZERO
    };
    let start = Instant::now();
    let mut bursts = 0;
    loop {
        let sink: f64 = (0..threads).into_par_iter().with_max_len(1).map(|_| burst()).sum();
        std::hint::black_box(sink);
        bursts += threads;
        if start.elapsed() >= budget {
            return (bursts, start.elapsed().as_secs_f64());
        }
    }
}

/// `rounds` × ACCUMULATORS independent 4-wide FMAs; returns a value that
/// depends on all of them so none is optimized away.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_burst(rounds: usize) -> f64 {
    use std::arch::x86_64::*;
    // x ← x · b + c stays finite for any number of rounds (b < 1).
    let (b, c) = (_mm256_set1_pd(0.999_999), _mm256_set1_pd(1e-6));
    let mut acc = [_mm256_setzero_pd(); ACCUMULATORS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm256_set1_pd(i as f64);
    }
    for _ in 0..rounds {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_pd(*a, b, c);
        }
    }
    let mut total = _mm256_setzero_pd();
    for a in acc {
        total = _mm256_add_pd(total, a);
    }
    let mut lanes = [0.0; 4];
    _mm256_storeu_pd(lanes.as_mut_ptr(), total);
    lanes.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both rates are finite and positive for a short budget (a burst that
    /// counted no work or timed nothing would give 0, NaN or inf).
    #[test]
    fn rates_are_finite_and_positive() {
        if let Some(peak) = fma_peak_gflops(0.02) {
            assert!(peak.is_finite() && peak > 0.0, "{peak}");
        }
        let rate = normals_per_second(0.02);
        assert!(rate.is_finite() && rate > 0.0, "{rate}");
        // Budgets that are not numbers of seconds run one burst.
        for seconds in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(normals_per_second(seconds) > 0.0);
            assert!(stream_gbytes(1 << 16, seconds).is_some_and(|g| g.is_finite() && g > 0.0));
        }
        let rate = stream_gbytes(1 << 20, 0.02).expect("1 MiB allocates");
        assert!(rate.is_finite() && rate > 0.0, "{rate}");
    }

    /// The burst computes what its recurrence says (so the timed work is
    /// the work counted).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn burst_follows_its_recurrence() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            return;
        }
        let rounds = 1000;
        // SAFETY: features checked above.
        let got = unsafe { fma_burst(rounds) };
        let want: f64 = (0..ACCUMULATORS)
            .map(|i| {
                let mut x = i as f64;
                for _ in 0..rounds {
                    x = x.mul_add(0.999_999, 1e-6);
                }
                4.0 * x
            })
            .sum();
        assert!((got - want).abs() <= 1e-9 * want.abs(), "{got} vs {want}");
    }
}
