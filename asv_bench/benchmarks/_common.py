"""Shared set-up of the kronnet asv suite.

Threads are pinned before numpy or kronnet is imported: rayon, OpenBLAS,
MKL and OpenMP all read these variables once, at start-up, so every
baseline in a run uses the same thread count (KRONNET_BENCH_THREADS,
default 2).
"""

import os

THREADS = os.environ.get("KRONNET_BENCH_THREADS", "2")
for _var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = THREADS

import math  # noqa: E402

import kronnet as kn  # noqa: E402
import numpy as np  # noqa: E402
from kronnet import bench  # noqa: E402

# The reference shape of README.md, "Performance".
N, WIDTH, BATCH = 512, 2048, 8


def trainer(d=2**8, n=N, width=WIDTH, batch_size=BATCH, index="auto", threshold=None, seed=0):
    """A warmed-up Kronecker trainer (one epoch taken) on generated data."""
    dims = bench.square_dims(d)
    data = kn.make_kronecker_data(n, dims=dims, seed=seed)
    net = kn.TwoLayerNet(dims, width, threshold=threshold, seed=seed)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, batch_size), batch_size=batch_size, index=index, seed=seed)
    tr.fit(math.ceil(n / batch_size))
    return tr


__all__ = ["BATCH", "N", "WIDTH", "bench", "kn", "math", "np", "trainer"]
