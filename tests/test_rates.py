"""suggest_rates: its kernels against an independent computation (closed
forms written here, and the empirical tangent kernels of a wide net built
from its dense weights), and the rates it gives train every part without
tripping the overflow guard."""

import math

import kronnet as kn
import numpy as np
import pytest


def tail(x):
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def phi(x):
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def test_w_alone_without_data_is_suggest_lr():
    for width, s in [(2048, 8), (512, 1), (64, 32)]:
        net = kn.TwoLayerNet((4, 4), width=width)
        rates = kn.suggest_rates(net, s, parts="w")
        assert rates == {"lr": kn.suggest_lr(net, s), "lr_a": 0.0, "lr_b": 0.0, "lr_c": 0.0, "lr_v": 0.0}


@pytest.mark.parametrize("s", [1, 8, 64])
def test_orthogonal_points_give_the_closed_forms(s):
    net = kn.TwoLayerNet((4, 4), width=2048)
    b = net.threshold
    q = tail(b)
    # Diagonals and the kernels at rho = 0 (independent z, z').
    want_h = {
        "lr": q / s,
        "lr_a": ((1 + b * b) * q - b * phi(b)) / s + (phi(b) - b * q) ** 2 * (s - 1) / s,
        "lr_b": q / s + q * q * (s - 1) / s,
        "lr_c": 1.0,
        "lr_v": 1.0 / s,
    }
    rates = kn.suggest_rates(net, s, parts="wabcv")
    for name, h in want_h.items():
        assert rates[name] == pytest.approx(1.0 / (2 * 5 * h), rel=2e-3), name


def test_losses_scale_by_their_curvature():
    net = kn.TwoLayerNet((4, 4), width=512, outputs=3)
    sq = kn.suggest_rates(net, 8, parts="wac")
    ce = kn.suggest_rates(net, 8, parts="wac", loss="cross_entropy")
    lo = kn.suggest_rates(net, 8, parts="wac", loss="logistic")
    for name in ("lr", "lr_a", "lr_c"):
        assert ce[name] == pytest.approx(2 * sq[name])
        assert lo[name] == pytest.approx(4 * sq[name])


def empirical_spread(k):
    """lambda of a kernel matrix: top eigenvalue of its off-diagonal part / s."""
    k = k.copy()
    np.fill_diagonal(k, 0.0)
    return np.linalg.eigvalsh(k)[-1] / k.shape[0]


def test_data_kernels_match_a_wide_nets_empirical_tangent_kernels():
    # Correlated unit-norm points (a shared direction), so the off-diagonal
    # kernels matter; every one of the 300 points is in the sample.
    rng = np.random.default_rng(0)
    n, dims = 300, (6, 6)
    mats = [rng.standard_normal((n, dk)) + 1.5 * rng.standard_normal(dk) for dk in dims]
    data = kn.KronData(mats).normalized()
    x = data.dense()
    m, s = 40000, 8
    net = kn.TwoLayerNet(dims, width=m, seed=3)
    z = x @ net.dense_weights().T  # (n, m) preactivations
    b = net.threshold
    fired = (z > b).astype(float)
    relu = np.maximum(z - b, 0.0)
    gram = x @ x.T
    kernels = {
        "lr": (fired @ fired.T) / m * gram,
        "lr_a": (relu @ relu.T) / m,
        "lr_b": (fired @ fired.T) / m,
        "lr_c": np.ones((n, n)),
        "lr_v": gram,
    }
    rates = kn.suggest_rates(net, s, data, parts="wabcv")
    for name, k in kernels.items():
        h = np.mean(np.diag(k)) / s + empirical_spread(k) * (s - 1) / s
        assert rates[name] == pytest.approx(1.0 / (2 * 5 * h), rel=0.05), name
    # The shared direction makes the points far from orthogonal: the data
    # lowers the rates of the parts whose kernels reach across points.
    blind = kn.suggest_rates(net, s, parts="wabcv")
    assert rates["lr"] < 0.8 * blind["lr"] and rates["lr_v"] < 0.5 * blind["lr_v"]


def test_points_of_other_norms_use_the_largest_diagonal():
    # Norms from 0.6 to 1.6: a point of larger norm fires more neurons, and
    # the rates must keep the step stable at the largest diagonal.
    rng = np.random.default_rng(0)
    n, dims = 300, (6, 6)
    mats = [rng.standard_normal((n, dk)) + rng.standard_normal(dk) for dk in dims]
    unit = kn.KronData(mats).normalized()
    scale = np.exp(rng.uniform(-0.5, 0.5, n))
    data = kn.KronData([unit.factors[0] * scale[:, None], unit.factors[1]])
    x = data.dense()
    m, s = 40000, 8
    net = kn.TwoLayerNet(dims, width=m, seed=3)
    z = x @ net.dense_weights().T
    fired = (z > net.threshold).astype(float)
    relu = np.maximum(z - net.threshold, 0.0)
    gram = x @ x.T
    kernels = {
        "lr": (fired @ fired.T) / m * gram,
        "lr_a": (relu @ relu.T) / m,
        "lr_b": (fired @ fired.T) / m,
        "lr_c": np.ones((n, n)),
        "lr_v": gram,
    }
    rates = kn.suggest_rates(net, s, data, parts="wabcv")
    for name, k in kernels.items():
        h = np.max(np.diag(k)) / s + empirical_spread(k) * (s - 1) / s
        # Off the diagonal, unequal norms are an approximation (within 15%).
        assert rates[name] == pytest.approx(1.0 / (2 * 5 * h), rel=0.15), name
    assert rates["lr_v"] == pytest.approx(1.0 / (2 * 5 * (np.max(np.diag(gram)) / s + empirical_spread(gram) * 7 / 8)))


@pytest.mark.parametrize(
    "loss,outputs,make_y",
    [
        ("squared", 1, lambda d, rng: d.y),
        ("squared", 3, lambda d, rng: np.stack([d.y, -d.y, d.y**2], axis=1)),
        ("logistic", 1, lambda d, rng: (d.y > 0).astype(float)),
        ("cross_entropy", 4, lambda d, rng: np.digitize(d.y, np.quantile(d.y, [0.25, 0.5, 0.75]))),
    ],
)
def test_suggested_rates_train_every_part_without_tripping_the_guard(loss, outputs, make_y):
    # Before the guard capped its bounds on |a| and |b| at their maxima,
    # trained a and W made the running bounds compound and this run was
    # refused as divergent after ~350 steps while its loss kept falling.
    data = kn.make_kronecker_data(400, dims=(8, 8), seed=0)
    data = data.with_targets(make_y(data, np.random.default_rng(0)))
    net = kn.TwoLayerNet(data.dims, 1024, seed=1, outputs=outputs)
    rates = kn.suggest_rates(net, 8, data, parts="wabcv", loss=loss)
    tr = kn.Trainer(net, data, batch_size=8, loss=loss, **rates)
    hist = tr.fit(3000)
    assert hist.full_loss[-1][1] < 0.3 * hist.full_loss[0][1]
    p_bound, a_bound, b_bound, _ = tr.export_state().core.bounds
    assert a_bound >= np.abs(net.a).max() and b_bound >= np.abs(net.thresholds).max()
    # Capped at ||a||_2 (the same bits on any number of MPI ranks) before
    # each step's growth: it no longer compounds.
    assert a_bound < 100 * np.linalg.norm(net.a)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(parts=""), "parts"),
        (dict(parts="wx"), "parts"),
        (dict(parts="ww"), "parts"),
        (dict(loss="hinge"), "loss"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    net = kn.TwoLayerNet((4, 4), width=64)
    with pytest.raises(kn.ArgumentError, match=match):
        kn.suggest_rates(net, **kwargs)


def test_bad_data_is_refused():
    net = kn.TwoLayerNet((4, 4), width=64)
    with pytest.raises(kn.ArgumentError, match="dims"):
        kn.suggest_rates(net, 8, kn.make_kronecker_data(10, dims=(4, 5)))
    with pytest.raises(kn.ArgumentTypeError, match="data"):
        kn.suggest_rates(net, 8, np.ones((10, 16)))
    with pytest.raises(kn.ArgumentTypeError, match="parts"):
        kn.suggest_rates(net, 8, parts=["w"])


def test_every_loss_has_a_curvature():
    from kronnet import _core
    from kronnet.training import lr

    assert set(lr._CURVATURE) == set(_core.LOSSES)
