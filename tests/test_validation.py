"""docs/design.md, "Faults": every public entry point validates its arguments; each bad
input gets a Python exception whose message names the argument, before any
large allocation; nothing crashes the interpreter."""

import subprocess
import sys

import kronnet as kn
import numpy as np
import pytest


@pytest.fixture
def data():
    return kn.make_kronecker_data(12, dims=(3, 4), seed=0)


@pytest.fixture
def net():
    return kn.TwoLayerNet((3, 4), 32, seed=0)


def factors(n=5, dims=(3, 4)):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((n, d)) for d in dims]


# -- KronData ---------------------------------------------------------------


@pytest.mark.parametrize(
    "make,exc,match",
    [
        (lambda: kn.KronData([np.full((3, 2), np.nan), np.ones((3, 2))]), ValueError, r"factors\[0\].*NaN"),
        (lambda: kn.KronData([np.ones((3, 2)), np.full((3, 2), np.inf)]), ValueError, r"factors\[1\].*infinite"),
        (lambda: kn.KronData([np.ones((3, 2)), np.ones((4, 2))]), ValueError, r"factors\[1\]: has 4 rows"),
        (lambda: kn.KronData([np.ones(3), np.ones((3, 2))]), ValueError, r"factors\[0\]: expected a 2-D"),
        (
            lambda: kn.KronData([np.ones((3, 2, 1, 1)), np.ones((3, 2))]),
            ValueError,
            r"factors\[0\]: expected a 2-D or 3-D",
        ),
        (
            lambda: kn.KronData([np.ones((3, 2, 1)), np.ones((3, 4, 2))]),
            ValueError,
            "factors: 3-D factors must have the same",
        ),
        (lambda: kn.KronData([]), ValueError, "factors: need at least 1"),
        (lambda: kn.KronData(np.ones((2, 3, 2))), TypeError, "factors: expected a list"),
        (lambda: kn.KronData([np.ones((3, 0)), np.ones((3, 2))]), ValueError, r"factors\[0\]: is empty"),
        (lambda: kn.KronData([np.ones((3, 2)) * 1j, np.ones((3, 2))]), TypeError, r"factors\[0\]: expected real"),
        (lambda: kn.KronData([["a", "b"], ["c", "d"]]), TypeError, r"factors\[0\]: expected real"),
        (lambda: kn.KronData(factors(), y=np.ones(4)), ValueError, "y: has 4 targets for 5 points"),
        (lambda: kn.KronData(factors(), y=np.array([1, 2, np.nan, 4, 5.0])), ValueError, "y: contains 1 NaN"),
        (lambda: kn.KronData(factors(), y=np.ones((5, 1, 1))), ValueError, "y: expected a 1-D or 2-D"),
        (lambda: kn.KronData(factors(), y=np.ones((5, 0))), ValueError, "y: is empty"),
    ],
)
def test_kron_data_rejects(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_normalizing_a_zero_row_is_refused():
    f = factors()
    f[1][2] = 0.0
    with pytest.raises(ValueError, match=r"factors\[1\]: row 2 is zero"):
        kn.KronData(f).normalized()


# -- make_kronecker_data ------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(n=0), ValueError, "n: must be positive"),
        (dict(n=-3), ValueError, "n: must be positive"),
        (dict(n=2.5), TypeError, "n: expected a positive integer"),
        (dict(n=True), TypeError, "n: expected a positive integer"),
        (dict(n=4, dims=(3, 0)), ValueError, r"dims\[1\]: must be positive"),
        (dict(n=4, dims=()), ValueError, "dims: need at least 1"),
        (dict(n=4, dims="ab"), TypeError, "dims: expected a tuple"),
        (dict(n=4, seed=-1), ValueError, "seed: must be in"),
        (dict(n=4, labels="nope"), ValueError, "labels: must be one of"),
        (dict(n=4, noise=-1.0), ValueError, "noise: must be >= 0"),
        (dict(n=4, noise=float("nan")), ValueError, "noise: must be finite"),
        (dict(n=4, teacher_width=0), ValueError, "teacher_width: must be positive"),
    ],
)
def test_make_kronecker_data_rejects(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        kn.make_kronecker_data(**kwargs)


# -- TwoLayerNet, predict -----------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(dims=(3, 4), width=0), ValueError, "width: must be positive"),
        (dict(dims=(3, 4), width=-3), ValueError, "width: must be positive"),
        (dict(dims=(3, 4), width=2.5), TypeError, "width: expected a positive integer"),
        (dict(dims=(3, 4), width=True), TypeError, "width: expected a positive integer"),
        (dict(dims=(3, 4), width=2**32), ValueError, "width: must be at most MAX_WIDTH"),
        (dict(dims=(0, 4), width=8), ValueError, r"dims\[0\]: must be positive"),
        (dict(dims=(), width=8), ValueError, "dims: need at least 1"),
        (dict(dims="ab", width=8), TypeError, "dims: expected a tuple"),
        (dict(dims=(3, 4), width=8, threshold=float("nan")), ValueError, "threshold: must be finite"),
        (dict(dims=(3, 4), width=8, threshold="1"), TypeError, "threshold: expected a real"),
        (dict(dims=(3, 4), width=8, seed=2**64), ValueError, "seed: must be in"),
        (dict(dims=(3, 4), width=8, seed=1.0), TypeError, "seed: expected"),
    ],
)
def test_net_rejects(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        kn.TwoLayerNet(**kwargs)


def test_predict_rejects_mismatched_points(net):
    with pytest.raises(ValueError, match=r"X: has factor dimensions \(4, 3\), the net expects \(3, 4\)"):
        net.predict(factors(dims=(4, 3)))
    with pytest.raises(TypeError, match="X: expected a KronData"):
        net.predict(np.ones((5, 12)))
    with pytest.raises(ValueError, match=r"X: factors\[0\].*NaN"):
        net.predict([np.full((2, 3), np.nan), np.ones((2, 4))])


# -- Trainer ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(lr=0.0), ValueError, "lr: must be positive"),
        (dict(lr=-1.0), ValueError, "lr: must be positive"),
        (dict(lr=float("nan")), ValueError, "lr: must be finite"),
        (dict(lr=float("inf")), ValueError, "lr: must be finite"),
        (dict(lr="fast"), TypeError, "lr: expected a real"),
        (dict(batch_size=0), ValueError, "batch_size: must be positive"),
        (dict(batch_size=13), ValueError, "batch_size: 13 exceeds the 12"),
        (dict(index="magic"), ValueError, "index: must be one of"),
        (dict(backend="gpu"), ValueError, "backend: must be one of"),
        (dict(gram="maybe"), ValueError, "gram: must be one of"),
        (dict(seed=-2), ValueError, "seed: must be in"),
    ],
)
def test_trainer_rejects(data, net, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        kn.Trainer(net, data, **kwargs)


def test_trainer_rejects_wrong_objects(data, net):
    with pytest.raises(TypeError, match="net: expected a TwoLayerNet"):
        kn.Trainer("net", data)
    with pytest.raises(TypeError, match="data: expected a KronData"):
        kn.Trainer(net, data.factors)
    with pytest.raises(ValueError, match="data: has no targets"):
        kn.Trainer(net, kn.KronData(data.factors))
    with pytest.raises(ValueError, match=r"data: has factor dimensions \(3, 4\), the net expects \(4, 3\)"):
        kn.Trainer(kn.TwoLayerNet((4, 3), 8), data)


@pytest.mark.parametrize("backend", ["kron", "dense"])
@pytest.mark.parametrize(
    "batch,exc,match",
    [
        ([12], ValueError, "batch: index 12 is out of range for 12"),
        ([-1, 2], ValueError, "batch: index -1 is out of range"),
        ([0.5, 1.0], TypeError, "batch: expected integer indices"),
        ([], ValueError, "batch: is empty"),
        ([[0, 1]], ValueError, "batch: expected a 1-D"),
        (["a"], TypeError, "batch: expected integer"),
    ],
)
def test_step_rejects_bad_batches(data, net, backend, batch, exc, match):
    tr = kn.Trainer(net, data, lr=10.0, batch_size=4, backend=backend)
    with pytest.raises(exc, match=match):
        tr.step(batch)
    assert tr.steps_done == 0


def test_fit_rejects_bad_steps(data, net):
    tr = kn.Trainer(net, data, lr=10.0, batch_size=4)
    for steps, exc in ((0, ValueError), (-5, ValueError), (2.5, TypeError)):
        with pytest.raises(exc, match="steps:"):
            tr.fit(steps)
    with pytest.raises(ValueError, match="eval_every:"):
        tr.fit(3, eval_every=-1)


# -- memory -------------------------------------------------------------------


def test_sizes_that_cannot_fit_are_refused_before_allocating():
    big = kn.TwoLayerNet((2**20, 2**20), 2**20)
    with pytest.raises(MemoryError, match=r"dense_weights\(\): the weight matrix .* needs \d+ bytes \([0-9.]+ GiB\)"):
        big.dense_weights()
    huge = kn.make_kronecker_data(4, dims=(2**17, 2**17), seed=0)  # d = 2^34
    with pytest.raises(MemoryError, match=r"data.dense\(\): .* needs \d+ bytes \([0-9.]+ GiB\)"):
        huge.dense()
    wide = kn.TwoLayerNet((2, 2), 2**20)
    small = kn.make_kronecker_data(2**20, dims=(2, 2), seed=0)  # P alone: 8 TiB
    with pytest.raises(MemoryError, match=r"needs \d+ bytes \([0-9.]+ GiB\)"):
        kn.Trainer(wide, small)
    with pytest.raises(MemoryError, match=r"X: the preactivation matrix .* needs"):
        wide.preactivations(small)
    dense_big = kn.TwoLayerNet((2**12, 2**12), 2**12)
    data = kn.make_kronecker_data(8, dims=(2**12, 2**12), seed=0)
    with pytest.raises(MemoryError, match=r"data, net.width: the dense backend's X .* needs"):
        kn.Trainer(dense_big, data, backend="dense")


def test_core_refuses_impossible_sizes_without_crashing():
    from kronnet import _core

    with pytest.raises(MemoryError, match="needs"):
        _core.initial_weights((0, "gaussian", 1), 2**40, [2**20, 2**20])
    with pytest.raises(ValueError, match="width"):
        _core.preacts(([np.ones((2, 2)), np.ones((2, 2))], 1, [None, None]), (0, "gaussian", 1), 0, [])


# -- divergence and stale trainers -------------------------------------------


@pytest.mark.parametrize("backend", ["kron", "dense"])
def test_divergence_raises_and_keeps_last_finite_state(data, backend):
    net = kn.TwoLayerNet(data.dims, 64, seed=1)
    tr = kn.Trainer(net, data, lr=1e200, batch_size=4, backend=backend)
    raised = False
    for _ in range(50):
        before_pred, before_loss = net.predict(data), tr.full_loss()
        try:
            tr.step()
        except kn.DivergenceError as err:
            assert "last finite state" in str(err)
            raised = True
            break
    assert raised, "lr = 1e200 must diverge"
    assert np.all(np.isfinite(before_pred)) and np.isfinite(before_loss)
    np.testing.assert_array_equal(net.predict(data), before_pred)
    assert tr.full_loss() == before_loss
    with pytest.raises(kn.DivergenceError):
        tr.fit(5)
    np.testing.assert_array_equal(net.predict(data), before_pred)
    assert isinstance(kn.DivergenceError("x"), kn.KronnetError)


def test_stale_trainer_is_refused(data):
    net = kn.TwoLayerNet(data.dims, 32, seed=0)
    first = kn.Trainer(net, data, lr=10.0, batch_size=4)
    first.step()
    second = kn.Trainer(net, data, lr=10.0, batch_size=4)
    second.step()
    with pytest.raises(kn.KronnetError, match="net: its weights were changed by another Trainer"):
        first.step()
    second.step()  # the current trainer goes on


def test_nasty_inputs_do_not_crash_the_interpreter():
    code = (
        "import numpy as np, kronnet as kn\n"
        "from kronnet import _core\n"
        "F = ([np.ones((2, 2))] * 2, 1, [None, None])\n"
        "T = [np.ones((3, 2))] * 2\n"
        "G = (0, 'gaussian', 1)\n"
        "H = _core.Model(np.ones((4, 1)), np.zeros(4), np.zeros(1), 0.0)\n"
        "def core(y=np.ones(2), gram='precomputed', index='scan', coef=None, **kw):\n"
        "    coef = coef if coef is not None else _core.Coefficients(2, 4)\n"
        "    return _core.TrainerCore('kron', F, y, H, G, coef, [], gram, index, **kw)\n"
        "for call in (\n"
        "    lambda: _core.preacts(F, G, 2**62, []),\n"
        "    lambda: _core.preacts(F, (0, 'kron', 0), 2, []),\n"
        "    lambda: _core.preacts(F, (0, 'uniform', 1), 2, []),\n"
        "    lambda: _core.cross_gram(F, ([np.ones((2, 3))] * 2, 1, [None, None])),\n"
        "    lambda: _core.cross_gram(F, (T, 1, [np.array([0, 3]), None])),\n"
        "    lambda: _core.cross_gram(F, (T, 1, [np.array([0, -1]), np.array([0, 1])])),\n"
        "    lambda: _core.cross_gram(F, (T, 1, [np.array([0, 1]), np.array([0, 1, 2])])),\n"
        "    lambda: _core.preacts((T, 1, [np.array([0.0, 1.5]), np.array([0, 1])]), G, 2, []),\n"
        "    lambda: _core.preacts((T, 2, [np.array([0, 1, 2]), np.array([0, 1, 2])]), G, 2, []),\n"
        "    lambda: core(y=np.ones(3)),\n"
        "    lambda: core().step(np.array([5]), (1.0, 0.0, 0.0, 0.0, 0.0)),\n"
        "    lambda: core(gram='x'),\n"
        "    lambda: core(index='tree', gram='columns').run(np.array([0, 1]), np.array([0, 5]), (1.0, 0, 0, 0, 0)),\n"
        "    lambda: core(coef=_core.Coefficients(3, 4)),\n"
        "    lambda: core(state=np.ones((4, 3))),\n"
        "):\n"
        "    try:\n"
        "        call()\n"
        "        print('no error')\n"
        "    except Exception as e:\n"
        "        print(type(e).__name__, isinstance(e, ValueError))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    # Every call is refused with a ValueError, except the float index, a
    # TypeError (ArgumentTypeError): never truncated to an integer.
    assert len(lines) == 15, res.stdout
    assert lines[7] == "TypeError False", res.stdout
    assert all(line.endswith("True") for i, line in enumerate(lines) if i != 7), res.stdout
