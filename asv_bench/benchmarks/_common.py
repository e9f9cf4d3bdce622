"""Shared set-up of the kronnet asv suite: thread pinning, the reference
shape, and the `Benchmark` base class every benchmark derives from (as in
NumPy's and SciPy's `benchmarks/`).

Threads are pinned before numpy or kronnet is imported: rayon, OpenBLAS,
MKL and OpenMP all read their variables once, at start-up, so every
baseline in a run uses the same thread count (KRONNET_BENCH_THREADS,
default 2). The variables are kronnet's own list (`kronnet/cli/threads.py`),
loaded by path because importing the kronnet package would load NumPy.
"""

import importlib.util
import os


def _load_threads_module():
    package = importlib.util.find_spec("kronnet")
    path = os.path.join(package.submodule_search_locations[0], "cli", "threads.py")
    spec = importlib.util.spec_from_file_location("kronnet_threads_early", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


THREADS = int(os.environ.get("KRONNET_BENCH_THREADS", "2"))
os.environ.update(_load_threads_module().pinned_env(THREADS))

import math  # noqa: E402

import kronnet as kn  # noqa: E402
import numpy as np  # noqa: E402
from kronnet.cli import bench  # noqa: E402

# The reference shape of README.md, "Performance".
N, WIDTH, BATCH = 512, 2048, 8


class Benchmark:
    """Settings every kronnet benchmark shares: generous timeouts (init at
    d = 2^20 takes tens of seconds), a few repeats, and samples that are
    long enough to outweigh timer noise on a shared machine."""

    timeout = 900
    number = 1
    repeat = (1, 3, 120.0)
    warmup_time = 0.0


def trainer(d=2**8, n=N, width=WIDTH, batch_size=BATCH, index="auto", threshold=None, seed=0):
    """A warmed-up Kronecker trainer (one epoch taken) on generated data."""
    dims = bench.square_dims(d)
    data = kn.make_kronecker_data(n, dims=dims, seed=seed)
    net = kn.TwoLayerNet(dims, width, threshold=threshold, seed=seed)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, batch_size), batch_size=batch_size, index=index, seed=seed)
    tr.fit(math.ceil(n / batch_size))
    return tr


__all__ = ["BATCH", "N", "WIDTH", "Benchmark", "bench", "kn", "math", "np", "trainer"]
