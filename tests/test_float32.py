"""Trainer(dtype="float32"): P kept in float32, every computation in
float64. Its exactness statement: it follows an independent float32 dense
SGD (NumPy, W in float32) and the float64 path to float32 round-off over
hundreds of steps; and it is as reproducible as the float64 path (the
indexes agree bitwise, checkpoints continue bitwise, threads do not
matter)."""

import math
import os

import kronnet as kn
import numpy as np
import pytest
from reference import FullReferenceSGD


def float32_dense_losses(net, data, lr, batches):
    """Textbook SGD of the paper's model with W (m × d), X and every
    product in float32: the batch losses."""
    X = data.dense().astype(np.float32)
    y = np.asarray(data.y, dtype=np.float32)
    W = net.initial_weights().astype(np.float32)
    a = np.asarray(net.a, dtype=np.float32)
    b, scale = np.float32(net.threshold), np.float32(1.0 / math.sqrt(net.width))
    losses = []
    for batch in batches:
        xb = X[batch]
        z = xb @ W.T
        e = (np.maximum(z - b, 0) @ a) * scale - y[batch]
        losses.append(0.5 * float(np.mean(e.astype(np.float64) ** 2)))
        coef = (e[:, None] * (z > b) * a[None, :]) * np.float32(lr / len(batch)) * scale
        W -= coef.T @ xb
    return np.array(losses)


def batches(n, s, count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.choice(n, size=s, replace=False) for _ in range(count)]


@pytest.mark.parametrize("index", ["scan", "tree", "bits"])
def test_float32_follows_a_float32_dense_reference(index):
    data = kn.make_kronecker_data(120, dims=(6, 8), seed=3)
    net = kn.TwoLayerNet(data.dims, 400, seed=4)
    lr = kn.suggest_lr(net, 6)
    plan = batches(data.n, 6, 300)
    want = float32_dense_losses(net, data, lr, plan)
    tr = kn.Trainer(net, data, lr=lr, batch_size=6, index=index, dtype="float32")
    got = np.array([tr.step(b) for b in plan])
    assert want[-1] < 0.05 * want[0]  # it trains
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6 * want[0])


def test_float32_large_batches_follow_the_float32_dense_reference():
    # S = 128 rows of K over n = 2500 points outgrow the update's cache
    # budget and a fired row has ~10 terms, so the update runs in column
    # tiles (src/step.rs, column_tile; the Rust tests check the path runs).
    data = kn.make_kronecker_data(2500, dims=(6, 8), seed=5)
    net = kn.TwoLayerNet(data.dims, 100, seed=6)
    lr = kn.suggest_lr(net, 128)
    plan = batches(data.n, 128, 30, seed=1)
    want = float32_dense_losses(net, data, lr, plan)
    tr = kn.Trainer(net, data, lr=lr, batch_size=128, dtype="float32")
    hist = tr.run(plan)
    assert np.mean(hist.fired_total / hist.fired_union) > 8
    assert want[-1] < 0.5 * want[0]  # it trains
    np.testing.assert_allclose(hist.loss, want, rtol=2e-4, atol=1e-6 * want[0])


def test_float32_follows_the_float64_path_for_the_full_model():
    data = kn.make_kronecker_data(150, dims=(5, 7), seed=1)
    labels = np.digitize(data.y, np.quantile(data.y, [1 / 3, 2 / 3])).astype(float)
    data = data.with_targets(labels)
    kw = dict(lr=30.0, lr_a=2.0, lr_b=0.5, lr_c=0.2, lr_v=0.5, loss="cross_entropy", batch_size=5)
    runs = {}
    for dtype in ("float64", "float32"):
        net = kn.TwoLayerNet(data.dims, 320, seed=2, outputs=3)
        tr = kn.Trainer(net, data, dtype=dtype, **kw)
        hist = tr.fit(400, eval_every=100)
        runs[dtype] = (hist, tr, net)
    h64, t64, n64 = runs["float64"]
    h32, t32, n32 = runs["float32"]
    assert h64.full_loss[-1][1] < 0.2 * h64.full_loss[0][1]
    np.testing.assert_allclose(h32.loss, h64.loss, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose([v for _, v in h32.full_loss], [v for _, v in h64.full_loss], rtol=1e-4)
    # P's drift from float64: float32 round-off, not growing with the steps.
    p64 = t64.export_state().core.state
    p32 = t32.export_state().core.state
    assert p32.dtype == np.float32 and p64.dtype == np.float64
    assert np.linalg.norm(p32 - p64) <= 1e-5 * np.linalg.norm(p64)
    np.testing.assert_allclose(n32.a, n64.a, rtol=1e-4, atol=1e-6)


def test_float32_agrees_with_the_independent_full_reference():
    """The full model in float32 against tests/reference.py's float64
    reference (every gradient by hand in NumPy): float32 round-off."""
    data = kn.make_kronecker_data(80, dims=(4, 6), seed=5)
    net = kn.TwoLayerNet(data.dims, 256, seed=6)
    kw = dict(lr=20.0, lr_a=1.0, lr_c=0.3)
    ref = FullReferenceSGD(net.initial_weights(), data.dense(), data.y, net.a, net.threshold, 0.0, **kw)
    tr = kn.Trainer(net, data, batch_size=4, dtype="float32", **kw)
    for b in batches(data.n, 4, 150, seed=2):
        want = ref.step(b)
        got = tr.step(b)
        assert got == pytest.approx(want, rel=2e-4, abs=1e-7)


def test_indexes_agree_bitwise_and_checkpoints_continue_bitwise(tmp_path):
    data = kn.make_kronecker_data(100, dims=(6, 6), seed=7)
    losses = []
    for index in ("scan", "tree", "bits"):
        net = kn.TwoLayerNet(data.dims, 300, seed=8)
        tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), index=index, dtype="float32", lr_a=1.0)
        losses.append(tr.fit(200).loss)
    assert all(loss.tobytes() == losses[0].tobytes() for loss in losses)
    path = os.fspath(tmp_path / "run.ckpt")
    tr.checkpoint(path)
    with np.load(path) as z:
        assert z["trainer/state"].dtype == np.float32
    back = kn.Trainer.restore(path)
    assert back.config.dtype == "float32"
    assert back.fit(100).loss.tobytes() == tr.fit(100).loss.tobytes()


def test_float32_halves_the_state_and_its_estimate():
    data = kn.make_kronecker_data(256, dims=(8, 8), seed=0)
    net = kn.TwoLayerNet(data.dims, 1024)
    full = kn.Trainer.estimate_memory(net, data, gram="columns", index="scan")
    half = kn.Trainer.estimate_memory(net, data, gram="columns", index="scan", dtype="float32")
    p_bytes = 8 * data.n * net.width
    # P halves; the coefficients (float64) stay; init's float64 chunk adds.
    assert full - half == pytest.approx(p_bytes / 2 - 8 * data.n * 256, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dtype="float16"), "dtype"),
        (dict(dtype="float32", backend="dense"), "dtype"),
    ],
)
def test_bad_dtypes_are_refused(kwargs, match):
    data = kn.make_kronecker_data(20, dims=(2, 3), seed=0)
    net = kn.TwoLayerNet(data.dims, 16)
    with pytest.raises(kn.ArgumentError, match=match):
        kn.Trainer(net, data, **kwargs)
