"""Init (P(0) by regenerated GEMMs) and prediction on new points."""

from ._common import WIDTH, Benchmark, N, bench, kn, trainer


class Init(Benchmark):
    """P(0) for the reference shape: Gaussian W(0) costs O(m d) per point,
    Kronecker-factored W(0) (R = 8) O(m R sum_k d_k)."""

    params = ([2**8, 2**12, 2**16, 2**20], ["gaussian", "kron"])
    param_names = ["d", "init"]

    def setup(self, d, init):
        if init == "gaussian" and d > 2**16:
            raise NotImplementedError("Gaussian init at d = 2^20 takes half a minute per call")
        dims = bench.square_dims(d)
        self.data = kn.make_kronecker_data(N, dims=dims, seed=0)
        self.net = kn.TwoLayerNet(dims, WIDTH, seed=0, init=init)

    def time_init_preactivations(self, d, init):
        self.net.preactivations(self.data)


class Predict(Benchmark):
    params = ([2**8, 2**16],)
    param_names = ["d"]

    def setup(self, d):
        self.tr = trainer(d=d)
        self.new = kn.make_kronecker_data(256, dims=bench.square_dims(d), seed=1)

    def time_predict_256(self, d):
        self.tr.net.predict(self.new)


class PairInit(Benchmark):
    """Init on 20000 pairs over 100 x 200 entities: PairData (one GEMM per
    entity of the smaller table) against KronData of the same points (one
    GEMM per point)."""

    params = (["pairs", "kron"], [2**12, 2**16])
    param_names = ["data", "d"]

    def setup(self, data, d):
        pairs = kn.make_pair_data(20000, (100, 200), dims=bench.square_dims(d), seed=0)
        self.data = pairs if data == "pairs" else pairs.to_kron_data()
        self.net = kn.TwoLayerNet(pairs.dims, 64, seed=0)

    def time_init_preactivations(self, data, d):
        self.net.preactivations(self.data)
