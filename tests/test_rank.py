"""Points that are sums of r Kronecker products (factors (n, r, d_k)),
images through their SVD, and plain dense data (p = 1): every step exact
against the dense backend and the independent NumPy reference."""

import kronnet as kn
import numpy as np
import pytest
from reference import RTOL, ReferenceSGD, assert_losses_close, forward, kron_sum_rows, rel_err


def rank_data(n, dims, rank, seed):
    rng = np.random.default_rng(seed)
    shape = (lambda d: (n, rank, d)) if rank > 1 else (lambda d: (n, d))
    factors = [rng.standard_normal(shape(d)) for d in dims]
    y = np.tanh(rng.standard_normal(n))
    return kn.KronData(factors, y).normalized()


CASES = [((3, 4), 1), ((3, 4), 3), ((4, 3), 8), ((2, 3, 2), 3), ((2, 2, 3), 8), ((7,), 1), ((6,), 3)]


@pytest.mark.parametrize("dims,rank", CASES)
@pytest.mark.parametrize("backend,index", [("kron", "scan"), ("kron", "bits"), ("kron", "tree"), ("dense", "auto")])
def test_training_matches_the_numpy_reference(dims, rank, backend, index):
    data = rank_data(14, dims, rank, seed=rank)
    unseen = rank_data(5, dims, rank, seed=100 + rank)
    X = kron_sum_rows(data.factors)
    np.testing.assert_allclose(X, data.dense(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-12)
    net = kn.TwoLayerNet(dims, 60, seed=3)
    lr = kn.suggest_lr(net, 4)
    ref = ReferenceSGD(net.initial_weights(), X, data.y, net.a, net.threshold, lr)
    tr = kn.Trainer(net, data, lr=lr, batch_size=4, backend=backend, index=index)
    rng = np.random.default_rng(7)
    batches = [rng.integers(0, data.n, 4) for _ in range(150)]
    batches[0] = np.array([2, 2, 0, 2])  # repeated points accumulate
    start = ref.full_loss()
    got = [tr.step(b) for b in batches]
    want = [ref.step(b) for b in batches]
    assert ref.full_loss() < 0.5 * start, "the run must train for agreement to mean much"
    assert_losses_close(got, want)
    assert rel_err(net.dense_weights(), ref.W) < RTOL
    expected = forward(ref.W, kron_sum_rows(unseen.factors), net.a, net.threshold)
    assert rel_err(net.predict(unseen), expected) < RTOL
    assert rel_err(net.preactivations(unseen), kron_sum_rows(unseen.factors) @ ref.W.T) < RTOL


def test_gram_columns_mode_matches_precomputed_for_rank_r():
    data = rank_data(30, (3, 5), 4, seed=1)
    nets = [kn.TwoLayerNet(data.dims, 80, seed=2) for _ in range(2)]
    lr = kn.suggest_lr(nets[0], 8)
    pre = kn.Trainer(nets[0], data, lr=lr, gram="precomputed").fit(100)
    cols = kn.Trainer(nets[1], data, lr=lr, gram="columns").fit(100)
    np.testing.assert_allclose(cols.loss, pre.loss, rtol=1e-9, atol=1e-15)


def test_images_through_their_svd_are_the_images_exactly():
    images = np.random.default_rng(0).standard_normal((6, 5, 7))
    data = kn.KronData.from_matrices(images, y=np.arange(6.0))
    assert (data.dims, data.rank, data.n) == ((5, 7), 5, 6)
    np.testing.assert_allclose(data.dense(), images.reshape(6, 35), rtol=0, atol=1e-13)
    # A truncated SVD is the best rank-r approximation (Eckart-Young).
    low = kn.KronData.from_matrices(images, rank=2)
    u, s, vt = np.linalg.svd(images)
    best = np.einsum("nik,nk,nkj->nij", u[:, :, :2], s[:, :2], vt[:, :2, :]).reshape(6, 35)
    np.testing.assert_allclose(low.dense(), best, rtol=0, atol=1e-13)
    with pytest.raises(kn.ArgumentError, match="rank: must be at most"):
        kn.KronData.from_matrices(images, rank=6)
    with pytest.raises(kn.ArgumentError, match="images"):
        kn.KronData.from_matrices(np.ones((2, 3)))


def test_rank_r_data_object():
    rng = np.random.default_rng(4)
    u, v = rng.standard_normal((5, 3, 2)), rng.standard_normal((5, 4))  # v: the same in every term
    data = kn.KronData([u, v], y=np.arange(5.0))
    assert data.rank == 3 and [f.shape for f in data.factors] == [(5, 3, 2), (5, 3, 4)]
    assert [f.shape for f in data.term_factors] == [(15, 2), (15, 4)]
    X = kron_sum_rows([u, v])
    np.testing.assert_allclose(data.dense(), X, rtol=0, atol=1e-13)
    np.testing.assert_allclose(data.norms(), np.linalg.norm(X, axis=1), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(data.normalized().dense(), axis=1), 1.0, rtol=1e-12)
    part = data.take([4, 1, 4])
    np.testing.assert_allclose(part.dense(), X[[4, 1, 4]], rtol=0, atol=1e-13)
    assert part.y.tolist() == [4.0, 1.0, 4.0]
    # The same points in rank one and in rank r are different data sets.
    assert data.fingerprint != kn.KronData([u[:, 0], v]).fingerprint


def test_rank_r_nets_save_load_and_checkpoint_bitwise(tmp_path):
    data = rank_data(20, (3, 4), 3, seed=5)
    probe = rank_data(7, (3, 4), 3, seed=6)
    net = kn.TwoLayerNet(data.dims, 50, seed=1)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 4), batch_size=4)
    tr.fit(40)
    net.save(tmp_path / "net")
    assert kn.load(tmp_path / "net").predict(probe).tobytes() == net.predict(probe).tobytes()
    tr.checkpoint(tmp_path / "ckpt")
    want = tr.fit(30).loss
    assert kn.Trainer.restore(tmp_path / "ckpt").fit(30).loss.tobytes() == want.tobytes()


def test_plain_dense_data_is_an_ordinary_two_layer_network():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((40, 9))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    data = kn.KronData([X], rng.standard_normal(40))
    assert (data.dims, data.p, data.rank) == ((9,), 1, 1)
    net = kn.TwoLayerNet((9,), 200, seed=0)
    hist = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8)).fit(400)
    assert hist.full_loss[-1][1] < 0.1 * hist.full_loss[0][1]
    np.testing.assert_allclose(net.predict([X]), forward(net.dense_weights(), X, net.a, net.threshold), rtol=1e-9)
