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


class StepOverRoofline(Benchmark):
    """The step time over its lower bound (`kronnet bench roofline`): the
    bytes a step must move over the stream bandwidth of a buffer the size
    of P (`track_ratio`) or of the rows one step touches
    (`track_ratio_cached`, the lower of the two bounds where P outgrows the
    cache and a step's rows do not), measured in the same rounds; medians
    of the cell's 5 rounds. 1.0 would be the machine's limit."""

    params = ([1000, 10_000], [512, 2048], ["float64", "float32"])
    param_names = ["n", "width", "dtype"]
    unit = "step / bound"
    repeat = (1, 1, 300.0)

    def setup(self, n, width, dtype):
        from kronnet.cli import bench

        self.cell = bench.roofline_cell(n, width, dtype, steps=max(20, min(400, int(4e8 / (n * width)))))

    def track_ratio(self, n, width, dtype):
        return float("nan") if self.cell is None else self.cell["ratio"]

    def track_ratio_cached(self, n, width, dtype):
        return float("nan") if self.cell is None else self.cell["ratio_cached"]


class BatchThroughput(Benchmark):
    """Points per second at batch size S over points per second at S = 8,
    in the same run (`kronnet bench roofline`'s batch table: n = 10^4,
    m = 1024, float32, `suggest_lr(net, S)` each). Above 1 a larger batch
    trains more points per second; S = 256 runs in column tiles."""

    params = ([64, 256],)
    param_names = ["batch_size"]
    unit = "points/s over S = 8"
    repeat = (1, 1, 300.0)

    def track_points_per_second_ratio(self, batch_size):
        from kronnet.cli import bench

        small, large = bench.batch_scaling(10_000, 1024, [8, batch_size], seconds=2.0)
        return large["points_per_second"] / small["points_per_second"]


class PredictFolded(Benchmark):
    """Predicting 10,000 new pairs after training on 30,000 (64 x 64
    features, m = 1024): through the training points over through folded
    weights, first call included."""

    unit = "speed-up"
    repeat = (1, 1, 600.0)

    def track_speedup(self):
        from kronnet.cli import bench

        (row,) = bench.predict_times([30_000], (64, 64), 1024)
        return row["scan_seconds"] / row["folded_first_seconds"]
