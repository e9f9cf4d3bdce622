"""The Kronecker backend, the dense backend and an independent NumPy
reference are the same algorithm: every step's loss, the trained weights and
predictions on unseen points agree to 1e-9 relative (docs/design.md, "The algorithm")."""

import kronnet as kn
import numpy as np
import pytest
from reference import RTOL, ReferenceSGD, assert_losses_close, forward, kron_rows, rel_err


def explicit_batches(n, steps, size, seed):
    rng = np.random.default_rng(seed)
    out = [rng.integers(0, n, size=size) for _ in range(steps)]
    out[0] = np.array([0, 0, 1, 0][:size] if size >= 2 else [0])  # repeats accumulate
    out[1] = np.full(size, n - 1)
    return out


CASES = [
    # dims, n, width, batch size, backend, index, gram
    ((3, 5), 11, 64, 4, "kron", "scan", "precomputed"),
    ((2, 17), 9, 37, 3, "kron", "tree", "columns"),
    ((17, 2), 13, 50, 5, "kron", "scan", "columns"),
    ((2, 3, 4), 10, 48, 4, "kron", "tree", "precomputed"),
    ((5, 1, 3), 7, 29, 2, "kron", "bits", "precomputed"),
    ((4, 4), 12, 40, 4, "kron", "bits", "columns"),
    # A large batch: most fired neurons fired by several of its points (the
    # update's multi-term rows).
    ((4, 6), 300, 80, 96, "kron", "bits", "precomputed"),
    ((2, 17), 9, 37, 3, "dense", "auto", "auto"),
    ((2, 3, 4), 10, 48, 4, "dense", "auto", "auto"),
]


@pytest.mark.parametrize("dims,n,width,size,backend,index,gram", CASES)
def test_training_matches_numpy_reference(dims, n, width, size, backend, index, gram):
    data = kn.make_kronecker_data(n, dims=dims, seed=3)
    unseen = kn.make_kronecker_data(6, dims=dims, seed=4)
    net = kn.TwoLayerNet(dims, width, seed=11)
    # The data-aware rate: for a large batch of low-dimensional points the
    # batch's kernel is far from diagonal.
    lr = kn.suggest_rates(net, size, data, parts="w")["lr"]
    X = kron_rows(data.factors)
    ref = ReferenceSGD(net.initial_weights(), X, data.y, net.a, net.threshold, lr)
    tr = kn.Trainer(net, data, lr=lr, batch_size=size, backend=backend, index=index, gram=gram)
    start_loss = ref.full_loss()
    losses, ref_losses = [], []
    for batch in explicit_batches(n, 200, size, seed=5):
        losses.append(tr.step(batch))
        ref_losses.append(ref.step(batch))
    losses, ref_losses = np.array(losses), np.array(ref_losses)
    # The run must actually train, or agreement would prove little.
    assert ref.full_loss() < 0.5 * start_loss
    assert_losses_close(losses, ref_losses)
    assert rel_err(net.dense_weights(), ref.W) < RTOL
    assert rel_err(net.predict(unseen), forward(ref.W, kron_rows(unseen.factors), net.a, net.threshold)) < RTOL
    assert_losses_close([tr.full_loss()], [ref.full_loss()])


@pytest.mark.parametrize("dims", [(4, 6), (2, 3, 2)])
def test_kron_and_dense_backends_agree_on_sampled_batches(dims):
    data = kn.make_kronecker_data(40, dims=dims, seed=1)
    nets = [kn.TwoLayerNet(dims, 96, seed=2) for _ in range(2)]
    lr = kn.suggest_lr(nets[0], 8)
    kron = kn.Trainer(nets[0], data, lr=lr, batch_size=8, seed=9)
    dense = kn.Trainer(nets[1], data, lr=lr, batch_size=8, seed=9, backend="dense")
    hk, hd = kron.fit(300), dense.fit(300)
    assert_losses_close(hk.loss, hd.loss)
    np.testing.assert_array_equal(hk.fired_union, hd.fired_union)
    np.testing.assert_array_equal(hk.fired_total, hd.fired_total)
    assert rel_err(nets[0].dense_weights(), nets[1].dense_weights()) < RTOL
    probe = kn.make_kronecker_data(5, dims=dims, seed=7)
    assert rel_err(nets[0].predict(probe), nets[1].predict(probe)) < RTOL


def test_initial_preactivations_equal_dense_product():
    data = kn.make_kronecker_data(12, dims=(3, 7, 2), seed=0)
    net = kn.TwoLayerNet(data.dims, 33, seed=5)
    expected = kron_rows(data.factors) @ net.initial_weights().T
    assert rel_err(net.preactivations(data), expected) < 1e-12


def test_predict_accepts_factor_lists_and_untrained_net_matches_reference():
    data = kn.make_kronecker_data(8, dims=(5, 4), seed=2)
    net = kn.TwoLayerNet(data.dims, 70, seed=1)
    expected = forward(net.initial_weights(), kron_rows(data.factors), net.a, net.threshold)
    assert rel_err(net.predict(data.factors), expected) < 1e-12
    assert rel_err(net.predict(data), expected) < 1e-12


def test_training_on_two_datasets_in_turn_matches_reference():
    dims = (3, 4)
    first = kn.make_kronecker_data(10, dims=dims, seed=1)
    second = kn.make_kronecker_data(12, dims=dims, seed=2)
    net = kn.TwoLayerNet(dims, 60, seed=3)
    lr = kn.suggest_lr(net, 4)
    ref_w = net.initial_weights()
    for data, seed in ((first, 0), (second, 1)):
        ref = ReferenceSGD(ref_w, kron_rows(data.factors), data.y, net.a, net.threshold, lr)
        tr = kn.Trainer(net, data, lr=lr, batch_size=4)
        for batch in explicit_batches(data.n, 60, 4, seed):
            assert_losses_close(tr.step(batch), ref.step(batch))
        ref_w = ref.W
    assert rel_err(net.dense_weights(), ref_w) < RTOL
    # A dense trainer continues from the same weights, then the Kronecker
    # backend again, on top of the dense-trained weights.
    ref = ReferenceSGD(ref_w, kron_rows(first.factors), first.y, net.a, net.threshold, lr)
    tr = kn.Trainer(net, first, lr=lr, batch_size=4, backend="dense")
    for batch in explicit_batches(first.n, 30, 4, 7):
        assert_losses_close(tr.step(batch), ref.step(batch))
    tr = kn.Trainer(net, second, lr=lr, batch_size=4)
    ref = ReferenceSGD(ref.W, kron_rows(second.factors), second.y, net.a, net.threshold, lr)
    for batch in explicit_batches(second.n, 30, 4, 8):
        assert_losses_close(tr.step(batch), ref.step(batch))
    assert rel_err(net.dense_weights(), ref.W) < RTOL
