"""The memory a Trainer says it needs (Trainer.estimate_memory, checked
before allocating) covers what it really takes: the measured peak resident
memory of building and training, in a fresh process, for several shapes."""

import json
import os
import subprocess
import sys

import kronnet.training
import pytest

PEAK = r"""
import ctypes, gc, json, sys, kronnet as kn
libc = ctypes.CDLL("libc.so.6")
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
n, d1, d2, m, backend, index, gram, pretrain = sys.argv[1:9]
n, d1, d2, m, pretrain = int(n), int(d1), int(d2), int(m), int(pretrain)
data = kn.make_kronecker_data(n, dims=(d1, d2), seed=0)
# Warm-up: every code path runs once, so RSS growth below is data only.
warm = kn.make_kronecker_data(16, dims=(d1, d2), seed=3)
wnet = kn.TwoLayerNet(warm.dims, 32, seed=0)
kn.Trainer(wnet, warm, lr=1.0, backend=backend, index=index, gram=gram, batch_size=4).fit(3)
del wnet
net = kn.TwoLayerNet(data.dims, m, seed=0)
if pretrain:
    other = kn.make_kronecker_data(pretrain, dims=(d1, d2), seed=1)
    kn.Trainer(net, other, lr=kn.suggest_lr(net, 8)).fit(20)
estimate = kn.Trainer.estimate_memory(net, data, backend=backend, index=index, gram=gram)
gc.collect()
libc.malloc_trim(0)
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # resets VmHWM to the current RSS
tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), backend=backend, index=index, gram=gram)
tr.fit(50)
tr.full_loss()
print(json.dumps({"estimate": estimate, "peak": status("VmHWM") - base}))
"""

SHAPES = [
    # n, d1, d2, m, backend, index, gram, points of an earlier training set
    (2048, 64, 64, 4096, "kron", "bits", "precomputed", 0),
    (4096, 32, 32, 2048, "kron", "scan", "columns", 1024),
    (1024, 128, 128, 2048, "kron", "tree", "precomputed", 2048),
    (512, 32, 32, 2048, "dense", "auto", "auto", 0),
    (256, 64, 64, 1024, "dense", "auto", "auto", 300),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[4]}-{s[5]}-n{s[0]}-m{s[3]}")
def test_measured_peak_is_within_the_estimate(shape):
    # glibc raises its mmap threshold after a large free, and later large
    # allocations may then reuse heap pages that are already resident, which
    # VmHWM does not see: the same run's peak varied from 38.6 to 42.5 MiB
    # (tree, n = 1024) and once fell below what the looseness check allows.
    # A fixed threshold maps every large allocation afresh (identical runs
    # then agree within 0.2 MiB), so the peak counts what the estimate models.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    res = subprocess.run(
        [sys.executable, "-c", PEAK, *map(str, shape)], capture_output=True, text=True, timeout=300, check=True, env=env
    )
    got = json.loads(res.stdout)
    peak, estimate = got["peak"], got["estimate"]
    assert peak <= estimate, f"peak {peak / 2**20:.1f} MiB exceeds the estimate {estimate / 2**20:.1f} MiB"
    # ...and the estimate is not so loose that it refuses runs that fit.
    # (The estimate's fixed allocator allowance is additive, so it is left out
    # of the ratio: on a 40 MiB run it alone is 40%.)
    slack = kronnet.training.ALLOCATOR_SLACK_BYTES
    assert estimate - slack <= 1.35 * peak, f"estimate {estimate / 2**20:.1f} MiB for a peak of {peak / 2**20:.1f} MiB"
