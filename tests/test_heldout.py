"""Held-out evaluation: Trainer.fit(validation=...) against an independent
dense computation, and the latent-structure generator
(make_kronecker_data(latent_dim=k)): deterministic, unit norm, the old
default untouched, and learnable from a few hundred points."""

import pickle

import kronnet as kn
import numpy as np
import pytest
from reference import forward, kron_rows

DIMS = (4, 5)


def make(n, seed, dims=DIMS, **kw):
    return kn.make_kronecker_data(n, dims=dims, seed=seed, latent_dim=3, **kw)


def reference_val_loss(net, data):
    """(1/2q) sum_j (f(x'_j) - y'_j)^2 from the materialized points and W."""
    X = kron_rows(data.factors)
    e = forward(net.dense_weights(), X, net.a, net.threshold) - data.y
    return e @ e / (2 * data.n)


@pytest.mark.parametrize("backend", ["kron", "dense"])
def test_val_loss_matches_the_dense_reference_at_every_checkpoint(backend):
    train, held_out = make(60, seed=0), make(25, seed=1)
    net = kn.TwoLayerNet(DIMS, width=128, seed=2)
    tr = kn.Trainer(net, train, lr=kn.suggest_lr(net, 8), backend=backend)
    seen = []
    for steps in (7, 5):  # checkpoints land at 0, 3, 6, 7, then 7, 10, 12
        hist = tr.fit(steps, eval_every=3, validation=held_out)
        assert [s for s, _ in hist.val_loss] == [s for s, _ in hist.full_loss]
        seen.append([s for s, _ in hist.val_loss])
        # The weights at the last checkpoint are the current ones.
        step, loss = hist.val_loss[-1]
        assert step == tr.steps_done
        assert loss == pytest.approx(reference_val_loss(net, held_out), rel=1e-9)
    assert seen == [[0, 3, 6, 7], [7, 10, 12]]


def test_every_checkpoint_is_the_loss_of_the_weights_at_that_step():
    train, held_out = make(60, seed=0), make(25, seed=1)
    net = kn.TwoLayerNet(DIMS, width=128, seed=2)
    twin = kn.TwoLayerNet(DIMS, width=128, seed=2)
    lr = kn.suggest_lr(net, 8)
    hist = kn.Trainer(net, train, lr=lr).fit(20, eval_every=4, validation=held_out)
    assert [s for s, _ in hist.val_loss] == [0, 4, 8, 12, 16, 20]
    # The same steps one checkpoint at a time on a twin, checked densely.
    tr = kn.Trainer(twin, train, lr=lr)
    for step, loss in hist.val_loss:
        if step:
            tr.fit(4)
        assert tr.steps_done == step
        assert loss == pytest.approx(reference_val_loss(twin, held_out), rel=1e-9)


def test_no_validation_leaves_val_loss_empty_and_history_pickles():
    data = make(40, seed=0)
    net = kn.TwoLayerNet(DIMS, width=64)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8))
    assert tr.fit(10).val_loss == []
    hist = tr.fit(10, eval_every=5, validation=make(10, seed=1))
    assert len(hist.val_loss) == 3
    back = pickle.loads(pickle.dumps(hist))
    assert back.val_loss == hist.val_loss and back.full_loss == hist.full_loss
    assert "val_loss" in repr(hist)


def test_divergence_keeps_the_val_loss_of_the_partial_history():
    data = kn.make_kronecker_data(40, dims=DIMS, seed=0)
    tr = kn.Trainer(kn.TwoLayerNet(DIMS, 64, seed=1), data, lr=1e200, batch_size=4, seed=3)
    with pytest.raises(kn.DivergenceError) as info:
        tr.fit(1000, validation=kn.make_kronecker_data(10, dims=DIMS, seed=1))
    hist = info.value.history
    assert [s for s, _ in hist.val_loss] == [s for s, _ in hist.full_loss] == [0, hist.steps]
    assert hist.steps == tr.steps_done < 1000


def test_progress_bar_shows_the_val_loss(capsys):
    pytest.importorskip("tqdm")
    data = make(40, seed=0)
    net = kn.TwoLayerNet(DIMS, width=64)
    kn.Trainer(net, data, lr=kn.suggest_lr(net, 8)).fit(20, progress=True, eval_every=10, validation=make(10, seed=1))
    assert "val_loss=" in capsys.readouterr().err


@pytest.mark.parametrize(
    "validation,exc,fragment",
    [
        ("held", kn.ArgumentTypeError, "KronData"),
        ([np.ones((3, 4)), np.ones((3, 5))], kn.ArgumentTypeError, "KronData"),
        (kn.KronData([np.ones((3, 4)), np.ones((3, 5))]), kn.ArgumentError, "no targets"),
        (kn.KronData([np.ones((0, 4)), np.ones((0, 5))], y=np.ones(0)), kn.ArgumentError, "no points"),
        (kn.make_kronecker_data(5, dims=(5, 4)), kn.ArgumentError, "(5, 4)"),
        (kn.make_kronecker_data(5, dims=(4, 5, 1)), kn.ArgumentError, "dimensions"),
    ],
)
def test_validation_argument_errors_come_before_any_step(validation, exc, fragment):
    data = make(20, seed=0)
    tr = kn.Trainer(kn.TwoLayerNet(DIMS, width=32), data, lr=1.0)
    with pytest.raises(exc) as info:
        tr.fit(5, validation=validation)
    assert info.value.arg == "validation" and fragment in str(info.value)
    assert tr.steps_done == 0


# -- the latent generator ------------------------------------------------------


def test_latent_none_is_the_old_generator_bit_for_bit():
    for kw in ({}, {"labels": "sign"}, {"noise": 0.3, "teacher_width": 5}):
        a = kn.make_kronecker_data(30, dims=(3, 4, 2), seed=5, **kw)
        b = kn.make_kronecker_data(30, dims=(3, 4, 2), seed=5, latent_dim=None, **kw)
        assert a.y.tobytes() == b.y.tobytes()
        for u, w in zip(a.factors, b.factors):
            assert u.tobytes() == w.tobytes()


@pytest.mark.parametrize("dims", [(4, 5), (2, 3, 7), (1, 9)])
def test_latent_data_is_seeded_and_unit_norm(dims):
    a, b, c = make(50, 7, dims), make(50, 7, dims), make(50, 8, dims)
    assert a.dims == dims and a.n == 50
    assert a.y.tobytes() == b.y.tobytes()
    for u, w in zip(a.factors, b.factors):
        assert u.tobytes() == w.tobytes()
        np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(a.norms(), 1.0, rtol=1e-12)
    assert not np.array_equal(a.y, c.y)


def test_latent_targets_are_one_function_standardized_on_a_fixed_sample():
    big = kn.make_kronecker_data(4000, dims=(8, 8), seed=3, latent_dim=4)
    assert abs(big.y.mean()) < 0.1 and big.y.std() == pytest.approx(1.0, abs=0.1)
    # The first points of a larger draw are the points of a smaller one with
    # the same seed, with the same targets: no per-sample standardization.
    small = kn.make_kronecker_data(10, dims=(8, 8), seed=3, latent_dim=4)
    np.testing.assert_array_equal(small.y, big.y[:10])
    signs = kn.make_kronecker_data(200, dims=(8, 8), seed=3, latent_dim=4, labels="sign")
    np.testing.assert_array_equal(signs.y, np.where(big.y[:200] >= 0, 1.0, -1.0))
    noisy = kn.make_kronecker_data(10, dims=(8, 8), seed=3, latent_dim=4, noise=0.5)
    assert 0 < np.abs(noisy.y - small.y).max() < 5


@pytest.mark.parametrize(
    "value,exc",
    [(0, kn.ArgumentError), (-2, kn.ArgumentError), (2.0, kn.ArgumentTypeError), (True, kn.ArgumentTypeError)],
)
def test_latent_dim_is_validated(value, exc):
    with pytest.raises(exc) as info:
        kn.make_kronecker_data(5, dims=(2, 2), latent_dim=value)
    assert info.value.arg == "latent_dim"


@pytest.mark.parametrize("dims,k", [((16, 16), 4), ((8, 4, 8), 3)])
def test_latent_data_is_learnable_on_held_out_points(dims, k):
    train = kn.make_kronecker_data(256, dims=dims, seed=0, latent_dim=k)
    held_out = kn.make_kronecker_data(200, dims=dims, seed=1, latent_dim=k)
    net = kn.TwoLayerNet(dims, width=1024, seed=0)
    hist = kn.Trainer(net, train, lr=kn.suggest_lr(net, 8)).fit(2000, validation=held_out)
    mse = 2 * hist.val_loss[-1][1]
    assert mse == pytest.approx(np.mean((net.predict(held_out) - held_out.y) ** 2), rel=1e-12)
    assert mse < 0.5 * held_out.y.var()


def test_demo_reports_train_and_held_out_loss():
    import re
    import subprocess
    import sys

    args = ["demo", "--n", "64", "--dims", "8", "8", "--width", "256", "--steps", "400", "--compare-steps", "2"]
    out = subprocess.run(
        [sys.executable, "-m", "kronnet", *args, "--no-progress"], capture_output=True, text=True, check=True
    ).stdout
    assert "loss fell" in out and "dense training" in out
    section = out[out.index("Predicting new points") :]
    rows = re.findall(r"^\s+(\d+)\s+([0-9.e+-]+)\s+([0-9.e+-]+)$", section, re.M)
    assert [int(r[0]) for r in rows] == [0, 400]
    assert float(rows[1][1]) < float(rows[0][1])
    found = re.search(r"mean squared error ([0-9.]+) on held-out targets of variance ([0-9]+\.?[0-9]*)", section)
    r2 = re.search(r"held-out R² = (-?[0-9.]+)", section)
    assert found and r2
    assert float(r2.group(1)) == pytest.approx(1 - float(found.group(1)) / float(found.group(2)), abs=0.02)
