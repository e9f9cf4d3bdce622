"""The full-model NumPy reference (reference.FullReferenceSGD) is itself right:
its gradients match central finite differences of its loss, its step applies
them with the documented rates, ridges and schedules, and its losses are
stable for large outputs. Needs only NumPy: it judges the reference, not
kronnet."""

import math

import numpy as np
import pytest
from reference import (
    FullReferenceSGD,
    ReferenceSGD,
    constant,
    cosine,
    forward,
    inverse_time,
    point_losses,
)

PARAMS = ("W", "a", "b", "c", "V")
RATE_OF = {"W": "lr", "a": "lr_a", "b": "lr_b", "c": "lr_c", "V": "lr_v"}
M, D, N = 6, 5, 7
BATCH = np.array([2, 5, 2])  # S = 3, with a repeated index

# loss, C
LOSS_CASES = [("squared", 1), ("squared", 3), ("logistic", 1), ("cross_entropy", 2), ("cross_entropy", 4)]


def unit_rows(rng, n, d):
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def targets(rng, loss, C, n):
    if loss == "squared":
        return rng.standard_normal((n, C)) if C > 1 else rng.standard_normal(n)
    if loss == "logistic":
        return np.arange(n) % 2 * 1.0
    return np.arange(n) % C


def make_ref(loss, C, seed=0, **rates):
    """A tiny reference with every parameter nonzero and generic, and no
    z_sr of the batch within 1e-3 of its b_r."""
    rng = np.random.default_rng(seed)
    X = unit_rows(rng, N, D)
    W = rng.standard_normal((M, D))
    # Per-neuron thresholds halfway between the neuron's z at the batch's two
    # distinct points, so that every neuron fires on one and not the other.
    z = X[np.unique(BATCH)] @ W.T
    b = z.mean(axis=0)
    a = rng.standard_normal((M, C))
    c = 0.3 * rng.standard_normal(C)
    V = 0.5 * rng.standard_normal((C, D))
    y = targets(rng, loss, C, N)
    kwargs = dict(lr=0.0)
    kwargs.update(rates)
    ref = FullReferenceSGD(W, X, y, a[:, 0] if C == 1 else a, b, c, V, loss=loss, b_init=0.2, **kwargs)
    return ref


def kink_margin(ref, batch):
    return float(np.min(np.abs(ref.X[batch] @ ref.W.T - ref.b)))


def finite_difference(ref, name, batch, h=1e-5):
    """Central differences of L_B in every entry of parameter `name`."""
    p = getattr(ref, name)
    out = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        keep = p[idx]
        p[idx] = keep + h
        up = ref.batch_loss(batch)
        p[idx] = keep - h
        down = ref.batch_loss(batch)
        p[idx] = keep
        out[idx] = (up - down) / (2 * h)
    return out


def snapshot(ref):
    return {k: getattr(ref, k).copy() for k in PARAMS}


@pytest.mark.parametrize("loss,C", LOSS_CASES)
def test_gradients_match_finite_differences(loss, C):
    ref = make_ref(loss, C)
    margin = kink_margin(ref, BATCH)
    assert margin > 1e-3, margin
    fired = ref.X[BATCH] @ ref.W.T > ref.b
    assert fired.any(axis=0).all() and not fired.all(axis=0).any()  # every neuron fires on some, not all
    loss_value, grads = ref.gradients(BATCH)
    assert loss_value == ref.batch_loss(BATCH)
    for name in PARAMS:
        g, fd = grads[name], finite_difference(ref, name, BATCH)
        assert g.shape == getattr(ref, name).shape
        scale = np.max(np.abs(fd))
        assert scale > 1e-3, f"{name}: the gradient is too small to test"
        assert np.max(np.abs(g - fd)) <= 1e-6 * scale, (name, g, fd)


@pytest.mark.parametrize("loss,C", LOSS_CASES)
@pytest.mark.parametrize("name", PARAMS)
def test_step_applies_the_gradient_to_one_parameter(loss, C, name):
    """With rate 1 for one parameter and 0 for the others, a step moves that
    parameter by minus its gradient and leaves the others bit for bit."""
    ref = make_ref(loss, C, **{RATE_OF[name]: 1.0})
    before = snapshot(ref)
    loss_value, grads = ref.gradients(BATCH)
    assert ref.step(BATCH) == loss_value
    assert ref.t == 1
    for other in PARAMS:
        moved = getattr(ref, other) - before[other]
        if other == name:
            np.testing.assert_allclose(moved, -grads[name], rtol=1e-12, atol=1e-14)
        else:
            np.testing.assert_array_equal(getattr(ref, other), before[other])


@pytest.mark.parametrize("loss,C", LOSS_CASES)
def test_all_rates_zero_changes_nothing(loss, C):
    ref = make_ref(loss, C, ridge_a=0.7, ridge_b=0.7, ridge_c=0.7, ridge_v=0.7)
    before = snapshot(ref)
    for batch in (BATCH, [0], [6, 6, 6, 1]):
        ref.step(batch)
    for name in PARAMS:
        np.testing.assert_array_equal(getattr(ref, name), before[name])
    assert ref.t == 3


def one_neuron(**rates):
    """m = 1, d = 2: z = 0.6, h = 0.3, f = 2 * 0.3 + 0.5 + (0.06 - 0.16) = 1.0
    against y = 0.5, so g = 0.5."""
    return FullReferenceSGD(
        [[1.0, 0.0]], [[0.6, 0.8]], [0.5], [2.0], np.array([0.3]), 0.5, [0.1, -0.2], b_init=0.2, **rates
    )


def test_ridges_move_parameters_as_written_by_hand():
    ref = one_neuron(lr=0.1, lr_a=0.2, lr_b=0.3, lr_c=0.4, lr_v=0.5, ridge_a=0.5, ridge_b=2.0, ridge_c=1.5, ridge_v=3.0)
    np.testing.assert_allclose(ref.outputs([[0.6, 0.8]]), [[1.0]], rtol=1e-15)
    # grads: W g a x = [0.6, 0.8]; a g h = 0.15; b -g a = -1; c g = 0.5; V g x = [0.3, 0.4]
    assert ref.step([0]) == pytest.approx(0.125, rel=1e-15)  # (1/2) 0.5^2, no penalty
    np.testing.assert_allclose(ref.W, [[1 - 0.1 * 0.6, -0.1 * 0.8]], rtol=1e-14)
    np.testing.assert_allclose(ref.a, [[2 - 0.2 * (0.15 + 0.5 * 2)]], rtol=1e-14)  # 1.77
    np.testing.assert_allclose(ref.b, [0.3 - 0.3 * (-1.0 + 2.0 * (0.3 - 0.2))], rtol=1e-14)  # 0.54: toward b_init
    np.testing.assert_allclose(ref.c, [0.5 - 0.4 * (0.5 + 1.5 * 0.5)], atol=1e-15)  # 0.0
    np.testing.assert_allclose(ref.V, [[-0.2, -0.1]], rtol=1e-14)


def test_ridge_alone_decays_toward_its_center():
    """At f = y the gradients vanish and only the ridges act: a, c, V shrink
    by (1 - lr ridge), b moves that fraction of the way to b_init."""
    ref = FullReferenceSGD(
        [[1.0, 0.0]], [[0.6, 0.8]], [1.0], [2.0], np.array([0.3]), 0.5, [0.1, -0.2], b_init=0.2,
        lr=0.0, lr_a=0.1, lr_b=0.1, lr_c=0.1, lr_v=0.1, ridge_a=2.0, ridge_b=2.0, ridge_c=2.0, ridge_v=2.0,
    )  # fmt: skip
    assert ref.step([0]) == pytest.approx(0.0, abs=1e-30)
    np.testing.assert_allclose(ref.a, [[2.0 * 0.8]], rtol=1e-15)
    np.testing.assert_allclose(ref.b, [0.2 + 0.1 * 0.8], rtol=1e-15)
    np.testing.assert_allclose(ref.c, [0.5 * 0.8], rtol=1e-15)
    np.testing.assert_allclose(ref.V, [[0.08, -0.16]], rtol=1e-15)


def test_outputs_follow_the_formula_with_one_over_sqrt_m():
    rng = np.random.default_rng(4)
    m, d, C = 4, 3, 2
    W, X = rng.standard_normal((m, d)), unit_rows(rng, 5, d)
    a, b = rng.standard_normal((m, C)), rng.standard_normal(m) * 0.3
    c, V = rng.standard_normal(C), rng.standard_normal((C, d))
    ref = FullReferenceSGD(W, X, np.zeros((5, C)), a, b, c, V, lr=0.0, b_init=0.0)
    expected = np.zeros((5, C))
    for i in range(5):
        for k in range(C):
            s = sum(a[r, k] * max(W[r] @ X[i] - b[r], 0.0) for r in range(m))
            expected[i, k] = s / math.sqrt(m) + c[k] + V[k] @ X[i]
    np.testing.assert_allclose(ref.outputs(X), expected, rtol=1e-13)
    np.testing.assert_allclose(ref.predict(X), expected, rtol=1e-13)
    one = FullReferenceSGD(W, X, np.zeros(5), a[:, 0], b, c[0], V[0], lr=0.0, b_init=0.0)
    assert one.predict(X).shape == (5,) and one.outputs(X).shape == (5, 1)
    np.testing.assert_allclose(one.predict(X), expected[:, 0], rtol=1e-13)


def test_strict_firing_at_the_threshold():
    """A neuron with z exactly b does not fire, so contributes nothing to the
    gradient of w or b."""
    ref = FullReferenceSGD([[1.0, 0.0]], [[0.5, 0.0]], [3.0], [1.0], 0.5, 0.0, lr=1.0, lr_b=1.0)
    ref.step([0])
    np.testing.assert_array_equal(ref.W, [[1.0, 0.0]])
    np.testing.assert_array_equal(ref.b, [0.5])


@pytest.mark.parametrize("loss,C", LOSS_CASES)
def test_losses_by_their_textbook_formulas(loss, C):
    rng = np.random.default_rng(1)
    f = rng.standard_normal((6, C)) * 3
    if loss == "squared":
        y = rng.standard_normal((6, C))
        expected = 0.5 * ((f - y) ** 2).sum(axis=1)
    elif loss == "logistic":
        y = np.array([0, 1, 1, 0, 1, 0.0])
        p = 1 / (1 + np.exp(-f[:, 0]))
        expected = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    else:
        y = np.arange(6) % C
        p = np.exp(f) / np.exp(f).sum(axis=1, keepdims=True)
        expected = -np.log(p[np.arange(6), y])
    np.testing.assert_allclose(point_losses(loss, f, y), expected, rtol=1e-12)


def big_output(loss, C, f, y):
    """A reference whose output is exactly f (nothing fires, V = 0, c = f)."""
    return FullReferenceSGD(
        np.zeros((2, 3)), np.eye(3)[:1], [y], np.ones((2, C)) if C > 1 else np.ones(2), 1.0, f, loss=loss,
        lr=1.0, lr_a=1.0, lr_b=1.0, lr_c=1.0, lr_v=1.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    "loss,C,f,y,value,grad",
    [
        ("logistic", 1, 800.0, 1.0, 0.0, [0.0]),
        ("logistic", 1, 800.0, 0.0, 800.0, [1.0]),
        ("logistic", 1, -800.0, 0.0, 0.0, [0.0]),
        ("logistic", 1, -800.0, 1.0, 800.0, [-1.0]),
        ("cross_entropy", 3, [800.0, -800.0, 0.0], 0, 0.0, [0.0, 0.0, 0.0]),
        ("cross_entropy", 3, [800.0, -800.0, 0.0], 1, 1600.0, [1.0, -1.0, 0.0]),
        ("cross_entropy", 3, [800.0, -800.0, 0.0], 2, 800.0, [1.0, 0.0, -1.0]),
        ("cross_entropy", 2, [800.0, 800.0], 1, math.log(2), [0.5, -0.5]),
        ("cross_entropy", 2, [-800.0, -800.0], 0, math.log(2), [-0.5, 0.5]),
        ("squared", 1, 800.0, 0.0, 320000.0, [800.0]),
    ],
)
def test_losses_are_stable_for_large_outputs(loss, C, f, y, value, grad):
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        ref = big_output(loss, C, f, y)
        assert ref.full_loss() == pytest.approx(value, rel=1e-12, abs=1e-300)
        L, g = ref.gradients([0])
        assert L == pytest.approx(value, rel=1e-12, abs=1e-300)
        np.testing.assert_allclose(g["c"], grad, rtol=1e-15, atol=1e-300)
        assert ref.step([0]) == pytest.approx(value, rel=1e-12, abs=1e-300)
        np.testing.assert_allclose(ref.c, np.asarray(f, dtype=float).reshape(-1) - grad, rtol=1e-15)


def test_schedules_give_the_documented_factors():
    assert [constant()(t) for t in (0, 1, 10**6)] == [1.0, 1.0, 1.0]
    inv = inverse_time(10)
    assert [inv(t) for t in (0, 10, 30, 90)] == pytest.approx([1.0, 0.5, 0.25, 0.1], rel=1e-15)
    cos = cosine(100)
    assert [cos(t) for t in (0, 50, 100, 150, 10**6)] == pytest.approx([1.0, 0.5, 0.0, 0.0, 0.0], abs=1e-15)
    assert cos(25) == pytest.approx((1 + math.cos(math.pi / 4)) / 2, rel=1e-15)
    assert cos(100) == 0.0 and cos(101) == 0.0


@pytest.mark.parametrize("schedule", [inverse_time(2.0), cosine(3)])
def test_step_scales_every_rate_by_the_schedule_at_steps_taken(schedule):
    rates = dict(lr=0.7, lr_a=0.3, lr_b=0.2, lr_c=0.4, lr_v=0.5, ridge_a=0.1, ridge_b=0.3, ridge_c=0.2, ridge_v=0.4)
    ref = make_ref("squared", 3, schedule=schedule, **rates)
    for t, batch in enumerate([BATCH, [1, 4], [0], [3, 3, 6], [5]]):
        assert ref.t == t
        before = snapshot(ref)
        _, g = ref.gradients(batch)
        ref.step(batch)
        phi = schedule(t)
        center = {"W": 0.0, "a": 0.0, "b": ref.b_init, "c": 0.0, "V": 0.0}
        ridge = {"W": 0.0, "a": 0.1, "b": 0.3, "c": 0.2, "V": 0.4}
        lr = {"W": 0.7, "a": 0.3, "b": 0.2, "c": 0.4, "V": 0.5}
        for name in PARAMS:
            expected = before[name] - lr[name] * phi * (g[name] + ridge[name] * (before[name] - center[name]))
            np.testing.assert_allclose(getattr(ref, name), expected, rtol=1e-14, atol=1e-15)
    # cosine(3) from t = 3 on: phi = 0 and nothing moves.
    if schedule(3) == 0.0:
        assert ref.t == 5
        before = snapshot(ref)
        ref.step(BATCH)
        for name in PARAMS:
            np.testing.assert_array_equal(getattr(ref, name), before[name])


def test_default_full_model_is_the_old_reference():
    """All extra rates 0, c = 0, V = 0, squared, C = 1: bit for bit the
    losses, weights and outputs of ReferenceSGD."""
    rng = np.random.default_rng(8)
    X, W0 = unit_rows(rng, 9, 12), rng.standard_normal((40, 12))
    y, a = rng.standard_normal(9), rng.choice([-1.0, 1.0], 40)
    old = ReferenceSGD(W0, X, y, a, 0.9, 6.0)
    new = FullReferenceSGD(W0, X, y, a, 0.9, 0.0, lr=6.0)
    for _ in range(50):
        batch = rng.integers(0, 9, 3)
        np.testing.assert_allclose(new.step(batch), old.step(batch), rtol=1e-13)
    np.testing.assert_allclose(new.W, old.W, rtol=1e-13)
    np.testing.assert_allclose(new.full_loss(), old.full_loss(), rtol=1e-13)
    np.testing.assert_allclose(new.predict(X), forward(old.W, X, a, 0.9), rtol=1e-13)
    assert new.full_loss() < 0.5 * FullReferenceSGD(W0, X, y, a, 0.9, 0.0, lr=6.0).full_loss()


def test_repeated_indices_count_as_often_as_they_appear():
    ref = make_ref("cross_entropy", 4)
    L, g = ref.gradients([1, 1, 1, 3])
    L1, g1 = ref.gradients([1])
    L3, g3 = ref.gradients([3])
    assert L == pytest.approx(0.75 * L1 + 0.25 * L3, rel=1e-14)
    for name in PARAMS:
        np.testing.assert_allclose(g[name], 0.75 * g1[name] + 0.25 * g3[name], rtol=1e-12, atol=1e-15)


def test_arguments_are_checked():
    W, X = np.ones((2, 3)), np.eye(3)
    with pytest.raises(ValueError):
        FullReferenceSGD(W, X, [0.0, 1.0, 2.0], np.ones(2), np.zeros(2), 0.0, loss="logistic", lr=1.0, b_init=0.0)
    with pytest.raises(ValueError):  # b0 an array without b_init
        FullReferenceSGD(W, X, np.zeros(3), np.ones(2), np.zeros(2), 0.0, lr=1.0)
    with pytest.raises(ValueError):  # cross-entropy with one output
        FullReferenceSGD(W, X, [0, 0, 0], np.ones(2), 0.0, 0.0, loss="cross_entropy", lr=1.0)
    with pytest.raises(ValueError):  # label out of range
        FullReferenceSGD(W, X, [0, 1, 2], np.ones((2, 2)), 0.0, 0.0, loss="cross_entropy", lr=1.0)
    with pytest.raises(ValueError):
        FullReferenceSGD(W, X, np.zeros((3, 2)), np.ones(2), 0.0, 0.0, lr=1.0)
