"""Prediction through folded weights (TwoLayerNet.folds): W = W(0) + Σ αᵀ X
computed once per change of the weights. Checked against the path through
the training points and against a dense NumPy forward pass, and for its
own reproducibility (save and load, refreshing after training)."""

import os

import kronnet as kn
import numpy as np
import pytest
from kronnet.model import net as net_module


def scan_predict(net, data, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(net_module, "FOLD_BYTES", 0)
        assert not net.folds
        return net.predict(data)


def dense_forward(net, x):
    """f by NumPy from the materialized weights: independent of both paths."""
    z = x @ net.dense_weights().T
    h = np.maximum(z - net.thresholds, 0.0)
    a = net.a if net.a.ndim == 2 else net.a[:, None]
    v = np.reshape(net.linear_weights(), (net.outputs, -1))
    f = h @ a / np.sqrt(net.width) + net.output_bias + x @ v.T
    return f[:, 0] if net.outputs == 1 else f


CASES = {
    "pairs": lambda: (
        kn.make_pair_data(400, (30, 40), dims=(5, 6), seed=1),
        kn.make_pair_data(120, (30, 40), dims=(5, 6), seed=2),
    ),
    "rank two": lambda: (
        kn.KronData.from_matrices(
            np.random.default_rng(3).standard_normal((300, 5, 6)), np.zeros(300), rank=2
        ).normalized(),
        kn.KronData.from_matrices(np.random.default_rng(4).standard_normal((90, 5, 6)), rank=2).normalized(),
    ),
    "plain rows": lambda: (
        kn.KronData([np.random.default_rng(5).standard_normal((300, 24))], np.zeros(300)).normalized(),
        kn.KronData([np.random.default_rng(6).standard_normal((90, 24))]).normalized(),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("outputs", [1, 3])
def test_folded_predictions_match_the_training_point_path_and_a_dense_forward_pass(case, outputs, monkeypatch):
    train, test = CASES[case]()
    rng = np.random.default_rng(7)
    y = rng.standard_normal((train.n, outputs)) if outputs > 1 else rng.standard_normal(train.n)
    train = train.with_targets(y)
    net = kn.TwoLayerNet(train.dims, 200, seed=8, outputs=outputs)
    kn.Trainer(net, train, lr=10.0, lr_a=0.5, lr_c=0.2, lr_v=0.3, batch_size=6).fit(150)
    assert net.folds
    got = net.predict(test)
    want = scan_predict(net, test, monkeypatch)
    scale = np.max(np.abs(want))
    assert np.max(np.abs(got - want)) <= 1e-12 * scale
    np.testing.assert_allclose(got, dense_forward(net, test.dense()), rtol=1e-10, atol=1e-10 * scale)


def test_the_folded_weights_follow_training_and_loading(tmp_path, monkeypatch):
    train, test = CASES["pairs"]()
    net = kn.TwoLayerNet(train.dims, 128, seed=1)
    tr = kn.Trainer(net, train, lr=20.0, lr_a=0.5)
    tr.fit(50)
    first = net.predict(test)
    assert first.tobytes() == net.predict(test).tobytes()  # the cached fold
    tr.fit(50)
    moved = net.predict(test)
    assert not np.array_equal(moved, first)
    assert np.max(np.abs(moved - scan_predict(net, test, monkeypatch))) <= 1e-12 * np.max(np.abs(moved))
    path = os.fspath(tmp_path / "net.kronnet")
    net.save(path)
    back = kn.load(path)
    assert back.folds and back.predict(test).tobytes() == moved.tobytes()


def test_nets_that_do_not_fold_predict_through_their_training_points():
    # d = 4096 exceeds the 300 training points: folding would not pay.
    train = kn.make_kronecker_data(300, dims=(64, 64), seed=0)
    net = kn.TwoLayerNet(train.dims, 64)
    kn.Trainer(net, train, lr=20.0).fit(20)
    assert not net.folds
    test = kn.make_kronecker_data(10, dims=(64, 64), seed=1)
    np.testing.assert_allclose(net.predict(test), dense_forward(net, test.dense()), rtol=1e-10, atol=1e-12)
