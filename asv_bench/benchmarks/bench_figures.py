"""The performance figures (README.md, "Performance") as tracked ratios, each measured side by side in
one process (ratios are steadier than absolute times on a shared machine)."""

from ._common import BATCH, WIDTH, Benchmark, N, bench, kn


class Figures(Benchmark):
    timeout = 1800
    repeat = 1

    def track_speedup_vs_numpy_dense_d16(self):
        """NumPy dense step time / Kronecker step time at d = 2^16 (>= 300)."""
        kron = bench.time_kron(2**16, N, WIDTH, BATCH, 128)["step_seconds"]
        numpy = bench.time_dense_steps("numpy", 2**16, N, WIDTH, BATCH)
        return numpy / kron

    track_speedup_vs_numpy_dense_d16.unit = "x"

    def track_step_d20_over_d8(self):
        """Kronecker step time at d = 2^20 / at d = 2^8 (<= 1.25)."""
        lo = bench.time_kron(2**8, N, WIDTH, BATCH, 256)["step_seconds"]
        hi = bench.time_kron(2**20, N, WIDTH, BATCH, 256)["step_seconds"]
        return hi / lo

    track_step_d20_over_d8.unit = "ratio"

    def track_step_gemm_rate_vs_numpy(self):
        """The step's GEMM FLOP rate / NumPy matmul's on the same shape
        (n × S) @ (S × |R|) (>= 0.5)."""
        r = bench.time_kron(2**8, N, WIDTH, BATCH, 256, index="scan")
        shape = max(1, int(round(r["fired_union"])))
        numpy = bench.numpy_gemm_seconds((N, BATCH), (BATCH, shape))
        return r["gemm_gflops"] / (2.0 * N * BATCH * shape / numpy / 1e9)

    track_step_gemm_rate_vs_numpy.unit = "ratio"

    def track_init_over_numpy_gemm_d16(self):
        """P(0) (normals included) / NumPy X W(0)^T at d = 2^16, median of
        alternating rounds (goal <= 1.3)."""
        return bench.init_over_blas(2**16, N, WIDTH, rounds=3)["ratio"]

    track_init_over_numpy_gemm_d16.unit = "ratio"

    def track_pair_init_over_kron_init_d16(self):
        """PairData init / KronData init of the same 20000 pairs over
        100 x 200 entities at d = 2^16, width 64 (far below 1)."""
        r = bench.pair_init(20000, (100, 200), bench.square_dims(2**16), 64, repeats=3)
        return float(sorted(r["ratio"])[1])

    track_pair_init_over_kron_init_d16.unit = "ratio"


class PeakMemory(Benchmark):
    timeout = 1800

    def setup(self):
        self.data = kn.make_kronecker_data(N, dims=bench.square_dims(2**20), seed=0)

    def peakmem_train_d20(self):
        """Init, 64 steps and a prediction at d = 2^20, m = 2048 (W alone
        would be 16 GiB)."""
        net = kn.TwoLayerNet(self.data.dims, WIDTH, seed=0)
        tr = kn.Trainer(net, self.data, lr=kn.suggest_lr(net, BATCH), batch_size=BATCH)
        tr.fit(64)
        net.predict(self.data.take(list(range(8))))
