"""Kronecker-factored initialization (``TwoLayerNet(init="kron")``): W(0)
built independently from its factor vectors with np.kron, training exact
against the dense backend and the NumPy reference, the threshold's firing
fraction, d-free init and prediction at d = 2^30, and persistence."""

import math
import pickle

import kronnet as kn
import numpy as np
import pytest
from reference import RTOL, ReferenceSGD, forward, kron_rows, kron_sum_rows, rel_err


def w0_from_factors(net):
    """W(0) row r = R^-1/2 sum_j kron(F_1[r, j], ..., F_p[r, j]) by np.kron."""
    factors = net.initial_factors()
    return kron_sum_rows(factors) / math.sqrt(factors[0].shape[1])


@pytest.mark.parametrize("dims", [(3, 4), (2, 3, 2)])
@pytest.mark.parametrize("rank", [1, 8])
@pytest.mark.parametrize("backend,index", [("kron", "scan"), ("kron", "bits"), ("dense", "auto")])
def test_training_matches_the_numpy_reference(dims, rank, backend, index):
    data = kn.make_kronecker_data(14, dims=dims, seed=rank)
    net = kn.TwoLayerNet(dims, 60, seed=3, init="kron", init_rank=rank)
    W0 = w0_from_factors(net)
    np.testing.assert_allclose(net.initial_weights(), W0, rtol=0, atol=1e-13)
    X = kron_rows(data.factors)
    np.testing.assert_allclose(net.preactivations(data), X @ W0.T, rtol=0, atol=1e-12)
    lr = kn.suggest_lr(net, 4)
    ref = ReferenceSGD(W0, X, data.y, net.a, net.threshold, lr)
    tr = kn.Trainer(net, data, lr=lr, batch_size=4, backend=backend, index=index)
    rng = np.random.default_rng(7)
    batches = [rng.integers(0, data.n, 4) for _ in range(150)]
    start = ref.full_loss()
    got = np.array([tr.step(b) for b in batches])
    want = np.array([ref.step(b) for b in batches])
    assert ref.full_loss() < 0.5 * start, "the run must train for agreement to mean much"
    assert np.all(np.abs(got - want) <= RTOL * np.abs(want) + 1e-14 * np.sqrt(np.abs(want)))
    assert rel_err(net.dense_weights(), ref.W) < RTOL
    unseen = kn.make_kronecker_data(6, dims=dims, seed=50)
    expected = forward(ref.W, kron_rows(unseen.factors), net.a, net.threshold)
    assert rel_err(net.predict(unseen), expected) < RTOL


def test_kron_init_composes_with_pairs_and_rank_r_points():
    net = kn.TwoLayerNet((4, 5), 40, seed=1, init="kron", init_rank=3)
    W0 = net.initial_weights()
    pairs = kn.make_pair_data(30, (5, 7), dims=(4, 5), seed=0)
    np.testing.assert_allclose(net.preactivations(pairs), pairs.dense() @ W0.T, rtol=0, atol=1e-12)
    rng = np.random.default_rng(0)
    sums = kn.KronData([rng.standard_normal((9, 3, 4)), rng.standard_normal((9, 3, 5))]).normalized()
    np.testing.assert_allclose(net.preactivations(sums), sums.dense() @ W0.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dims,rank", [((8, 8), 1), ((8, 8), 8), ((4, 4, 4), 1), ((4, 4, 4), 8)])
def test_default_threshold_fires_like_gaussian_init(dims, rank):
    width = 2048
    gauss = kn.TwoLayerNet(dims, width, seed=0)
    kron = kn.TwoLayerNet(dims, width, seed=0, init="kron", init_rank=rank)
    assert kron.threshold == kn.TwoLayerNet(dims, width, seed=5, init="kron", init_rank=rank).threshold
    data = kn.make_kronecker_data(400, dims=dims, seed=1)
    q = 0.5 * math.erfc(gauss.threshold / math.sqrt(2))
    fired = float(np.mean(kron.preactivations(data) > kron.threshold))
    # 400 points × 2048 neurons, but correlated through shared neurons: 10%.
    assert abs(fired - q) < 0.1 * q, (fired, q)
    if len(dims) == 3 and rank == 1:
        # Here the calibration matters: a product of three normals at the
        # Gaussian b fires far fewer neurons (b = 1.55 instead of 1.75).
        off = float(np.mean(kron.preactivations(data) > gauss.threshold))
        assert off < 0.8 * q, (off, q)


def test_preactivation_moments_follow_r_and_p():
    # One unit rank-one point, many neurons: variance 1, kurtosis 3 + (3^p - 3)/R.
    for dims, rank in [((5, 5), 2), ((3, 3, 3), 4)]:
        net = kn.TwoLayerNet(dims, 200_000, seed=2, init="kron", init_rank=rank)
        u = [np.eye(d)[1] for d in dims]
        z = net.preactivations([x[None, :] for x in u])[0]
        var = float(np.mean(z**2))
        kurt = float(np.mean(z**4)) / var**2
        want = 3 + (3 ** len(dims) - 3) / rank
        assert abs(var - 1) < 0.02 and abs(kurt - want) < 0.1 * want, (var, kurt, want)


def test_billion_dimensional_inputs_init_and_predict_without_d():
    dims = (1024, 1024, 1024)  # d = 2^30
    data = kn.make_kronecker_data(64, dims=dims, seed=0)
    net = kn.TwoLayerNet(dims, 256, seed=0, init="kron", init_rank=4)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8))
    hist = tr.fit(200)
    assert hist.loss[-1] < hist.loss[0]
    # The same net through an independent computation of P(0) for 3 points:
    # <w_r(0), x> = R^-1/2 sum_j prod_k <g_rj^(k), u^(k)>.
    fresh = kn.TwoLayerNet(dims, 256, seed=0, init="kron", init_rank=4)
    F = fresh.initial_factors()
    few = data.take([0, 5, 9])
    want = np.ones((3, 256, 4))
    for f, u in zip(F, few.factors):
        want *= np.einsum("rjd,id->irj", f, u)
    np.testing.assert_allclose(fresh.preactivations(few), want.sum(axis=2) / 2.0, rtol=0, atol=1e-12)
    assert net.predict(kn.make_kronecker_data(10, dims=dims, seed=1)).shape == (10,)


def test_kron_nets_save_load_pickle_and_resume_bitwise(tmp_path):
    data = kn.make_kronecker_data(40, dims=(4, 6), seed=0)
    net = kn.TwoLayerNet(data.dims, 128, seed=2, init="kron", init_rank=5)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8))
    tr.fit(30)
    tr.checkpoint(tmp_path / "c.kronnet")
    net.save(tmp_path / "n.kronnet")
    query = kn.make_kronecker_data(7, dims=(4, 6), seed=3)
    for other in (kn.load(tmp_path / "n.kronnet"), pickle.loads(pickle.dumps(net))):
        assert (other.init, other.init_rank, other.threshold) == ("kron", 5, net.threshold)
        assert np.array_equal(other.predict(query), net.predict(query))
    more = tr.fit(30).loss
    resumed = kn.Trainer.restore(tmp_path / "c.kronnet")
    assert np.array_equal(resumed.fit(30).loss, more)
    assert "init='kron', init_rank=5" in repr(net)


def test_bad_init_arguments_are_refused_by_name():
    with pytest.raises(kn.ArgumentError, match="init"):
        kn.TwoLayerNet((2, 2), 4, init="uniform")
    with pytest.raises(kn.ArgumentError, match="init_rank"):
        kn.TwoLayerNet((2, 2), 4, init="kron", init_rank=0)
    with pytest.raises(kn.ArgumentError, match="init_rank"):
        kn.TwoLayerNet((2, 2), 4, init="kron", init_rank=2**17)
    with pytest.raises(kn.ArgumentError, match="Gaussian init"):
        kn.TwoLayerNet((2, 2), 4).initial_factors()


@pytest.mark.parametrize("init", ["gaussian", "kron"])
def test_predicting_many_points_regenerates_w0_once_and_agrees(monkeypatch, init):
    # With a small chunk budget the points need several chunks but their
    # cross-Grams fit it: predict then loops over neurons and regenerates
    # W(0) once. Same numbers as the dense formula, to rounding.
    import kronnet.model.net as knet

    data = kn.make_kronecker_data(40, dims=(4, 6), seed=0)
    net = kn.TwoLayerNet(data.dims, 300, seed=1, init=init, init_rank=3)
    kn.Trainer(net, data, lr=kn.suggest_lr(net, 8)).fit(100)
    query = kn.make_kronecker_data(900, dims=(4, 6), seed=2)
    want = forward(net.dense_weights(), kron_rows(query.factors), net.a, net.threshold)
    whole = net.predict(query)
    # 200 points per chunk: 900 points need 5 chunks, while their cross-Grams
    # with the 40 training points (36 000 values) fit one chunk's 68 000.
    monkeypatch.setattr(knet, "PREDICT_CHUNK_BYTES", 8 * 340 * 200)
    by_neurons = net.predict(query)
    assert rel_err(whole, want) < 1e-12 and rel_err(by_neurons, want) < 1e-12
