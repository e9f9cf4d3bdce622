"""The net owns its weights: trainers on the same points accumulate into one
coefficient block, a dropped trainer frees its P, Gram and index, and the
learned state is readable without materializing W (docs/design.md)."""

import gc
import os
import subprocess
import sys
import weakref

import kronnet as kn
import numpy as np
import pytest
from reference import kron_rows


def test_trainers_on_the_same_points_share_one_block():
    data = kn.make_kronecker_data(30, dims=(4, 3), seed=0)
    same_points = kn.KronData([np.array(u) for u in data.factors], -data.y)  # other targets
    net = kn.TwoLayerNet(data.dims, 80, seed=1)
    for d in (data, same_points, data):
        kn.Trainer(net, d, lr=kn.suggest_lr(net, 8)).fit(20)
    assert len(net.coefficients) == 1
    other = kn.make_kronecker_data(30, dims=(4, 3), seed=5)
    kn.Trainer(net, other, lr=kn.suggest_lr(net, 8)).fit(20)
    assert len(net.coefficients) == 2


def test_coefficients_give_the_weights_without_materializing_them():
    data = kn.make_kronecker_data(25, dims=(3, 5), seed=2)
    second = kn.make_kronecker_data(10, dims=(3, 5), seed=3)
    net = kn.TwoLayerNet(data.dims, 60, seed=4)
    assert net.coefficients == ()
    kn.Trainer(net, data, lr=kn.suggest_lr(net, 8)).fit(100)
    kn.Trainer(net, second, lr=kn.suggest_lr(net, 4), batch_size=4, backend="dense").fit(30)
    w = net.initial_weights()
    for blk in net.coefficients:
        assert blk.alpha.shape == (net.width, blk.data.n)
        assert not blk.alpha.flags.writeable
        w = w + blk.alpha @ kron_rows(blk.data.factors)
    np.testing.assert_allclose(net.dense_weights(), w, rtol=0, atol=1e-12 * np.abs(w).max())


def test_a_dropped_trainer_frees_its_state():
    data = kn.make_kronecker_data(40, dims=(4, 4), seed=0)
    net = kn.TwoLayerNet(data.dims, 100, seed=0)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8))
    tr.fit(10)
    core = weakref.ref(tr._core)
    del tr
    gc.collect()
    assert core() is None, "the net (or something else) still holds the trainer's state"
    assert net.predict(data).shape == (40,)


def test_training_resumes_from_the_shared_block_exactly():
    # Two trainers in turn on one net == one trainer taking the same batches.
    data = kn.make_kronecker_data(32, dims=(4, 4), seed=1)
    batches = [np.random.default_rng(s).integers(0, 32, 8) for s in range(60)]
    net_a = kn.TwoLayerNet(data.dims, 90, seed=2)
    tr = kn.Trainer(net_a, data, lr=40.0)
    want = [tr.step(b) for b in batches]
    net_b = kn.TwoLayerNet(data.dims, 90, seed=2)
    got = [kn.Trainer(net_b, data, lr=40.0).step(b) for b in batches[:1]]
    for b in batches[1:]:
        got.append(kn.Trainer(net_b, data, lr=40.0).step(b))
    np.testing.assert_allclose(got, want, rtol=1e-10)
    np.testing.assert_allclose(net_b.predict(data), net_a.predict(data), rtol=1e-9, atol=1e-12)


CHURN = r"""
import ctypes, gc, sys, numpy as np, kronnet as kn
libc = ctypes.CDLL("libc.so.6")
def rss():
    # Freed arrays below glibc's (dynamic) mmap threshold stay in the heap
    # until trimmed: trim first, so that RSS counts live memory only.
    gc.collect()
    libc.malloc_trim(0)
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
data = kn.make_kronecker_data(1024, dims=(16, 16), seed=0)
net = kn.TwoLayerNet(data.dims, 4096, seed=0)
out = []
for k in range(1, 7):
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), index="bits")
    tr.fit(20)
    del tr
    gc.collect()
    out.append(rss())
print(" ".join(map(str, out)), len(net.coefficients))
"""


def test_building_and_dropping_trainers_leaves_memory_flat():
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20))  # see kronnet/cli/sweeps.py, pinned
    res = subprocess.run(
        [sys.executable, "-c", CHURN], capture_output=True, text=True, timeout=300, check=True, env=env
    )
    *sizes, blocks = map(int, res.stdout.split())
    assert blocks == 1
    # n m = 4M: P alone is 32 MiB; four live trainers used to make the
    # process 4x larger. After k = 6 it must be within 10% of k = 1.
    assert sizes[-1] <= 1.10 * sizes[0], sizes


def test_predict_on_no_points_returns_an_empty_array():
    net = kn.TwoLayerNet((3, 4), 16)
    out = net.predict([np.empty((0, 3)), np.empty((0, 4))])
    assert out.shape == (0,) and out.dtype == np.float64
    with pytest.raises(ValueError, match="data: has no points"):
        kn.Trainer(net, kn.KronData([np.empty((0, 3)), np.empty((0, 4))], np.empty(0)))


def test_predict_is_chunked_and_chunks_do_not_change_results(monkeypatch):
    from kronnet.model import net as net_module

    data = kn.make_kronecker_data(50, dims=(4, 5), seed=3)
    probe = kn.make_kronecker_data(301, dims=(4, 5), seed=4)
    net = kn.TwoLayerNet(data.dims, 70, seed=5)
    kn.Trainer(net, data, lr=kn.suggest_lr(net, 8)).fit(50)
    whole = net.predict(probe)
    # About 3 points per chunk: about a hundred chunks.
    monkeypatch.setattr(net_module, "PREDICT_CHUNK_BYTES", 8 * 3 * (70 + 50))
    chunked = net.predict(probe)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-14)
    ref = net.preactivations(probe)
    f = np.maximum(ref - net.threshold, 0) @ net.a / np.sqrt(net.width)
    np.testing.assert_allclose(whole, f, rtol=1e-12, atol=1e-14)
