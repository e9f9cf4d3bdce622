"""Results are bitwise identical with 1 and 2 rayon threads (README.md, "Performance")."""

import os
import subprocess
import sys

SCRIPT = r"""
import hashlib, numpy as np, kronnet as kn
data = kn.make_kronecker_data(300, dims=(24, 20), seed=1)
net = kn.TwoLayerNet(data.dims, 1500, seed=2)
h = hashlib.sha256()
h.update(net.preactivations(data).tobytes())
for index in ("scan", "tree", "bits"):
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), index=index, seed=3)
    h.update(tr.fit(150).loss.tobytes())
h.update(net.predict(kn.make_kronecker_data(40, dims=(24, 20), seed=9)).tobytes())
dense = kn.Trainer(kn.TwoLayerNet(data.dims, 300, seed=2), data, lr=30.0, backend="dense")
h.update(dense.fit(40).loss.tobytes())
print(h.hexdigest())
"""


def run_with_threads(k):
    env = dict(os.environ, RAYON_NUM_THREADS=str(k))
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_one_and_two_threads_are_bitwise_identical():
    one, two = run_with_threads(1), run_with_threads(2)
    assert len(one) == 64
    assert one == two
