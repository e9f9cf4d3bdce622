"""Per-step time of the Kronecker backend against d, m, n, S, per index."""

from ._common import Benchmark, trainer

INDEXES = ["scan", "tree", "bits"]


class StepVsD(Benchmark):
    """d from 2^8 to 2^20 at n = 512, m = 2048, S = 8: flat if d-independent."""

    params = ([2**8, 2**12, 2**16, 2**20],)
    param_names = ["d"]
    number = 20

    def setup(self, d):
        self.tr = trainer(d=d)

    def time_step(self, d):
        self.tr.step()


class _StepSweep(Benchmark):
    """One shape parameter (named by param_names[0]) against the index."""

    number = 10
    repeat = (1, 3, 60.0)

    def setup(self, value, index):
        self.tr = trainer(index=index, **{self.param_names[0]: value})

    def time_step(self, value, index):
        self.tr.step()


class StepVsWidth(_StepSweep):
    params = ([2**10, 2**12, 2**14, 2**16], INDEXES)
    param_names = ["width", "index"]


class StepVsN(_StepSweep):
    params = ([128, 512, 2048, 8192], INDEXES)
    param_names = ["n", "index"]


class StepVsBatch(_StepSweep):
    params = ([1, 4, 16, 64], INDEXES)
    param_names = ["batch_size", "index"]


class IndexMaintenance(Benchmark):
    """Seconds per step spent in the index (syncs + queries) at the
    reference shape."""

    params = (INDEXES,)
    param_names = ["index"]
    unit = "seconds"

    def setup(self, index):
        self.tr = trainer(index=index)

    def track_index_seconds_per_step(self, index):
        before = self.tr.index_stats()
        self.tr.fit(128)
        return (self.tr.index_stats()["seconds"] - before["seconds"]) / 128
