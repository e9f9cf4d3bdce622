"""kn.AsyncTree against brute force (numpy), under random interleavings of
updates and queries (docs/design.md, "The asynchronous tree")."""

import kronnet as kn
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# A small value set makes ties (and ties exactly at tau) frequent.
VALUES = st.one_of(st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0]), st.floats(-4, 4, allow_nan=False))
TAUS = st.one_of(st.sampled_from([np.inf, -np.inf, 0.0, 0.5, -0.5]), st.floats(-4, 4, allow_nan=False))


def brute(values, i, tau):
    return np.flatnonzero(values[i] > tau)


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 5))
    m = draw(st.one_of(st.sampled_from([1, 7, 8, 9, 64, 65]), st.integers(1, 200)))
    init = np.array(draw(st.lists(VALUES, min_size=n * m, max_size=n * m))).reshape(n, m)
    ops = []
    for _ in range(draw(st.integers(1, 40))):
        if draw(st.booleans()):
            cols = draw(st.lists(st.integers(0, m - 1), min_size=0, max_size=min(m, 30), unique=True))
            vals = np.array(draw(st.lists(VALUES, min_size=n * len(cols), max_size=n * len(cols)))).reshape(
                n, len(cols)
            )
            ops.append(("update", cols, vals))
        else:
            ops.append(("query", draw(st.integers(0, n - 1)), draw(TAUS)))
    return init, ops


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_random_interleavings_match_brute_force(scenario):
    init, ops = scenario
    values = init.copy()
    tree = kn.AsyncTree(init)
    for op in ops:
        if op[0] == "update":
            _, cols, vals = op
            tree.update(np.array(cols, dtype=np.int64), vals)
            values[:, cols] = vals
        else:
            _, i, tau = op
            got = tree.query(i, tau)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, brute(values, i, tau))
    np.testing.assert_array_equal(tree.values, values)
    # Rows never queried during the run answer exactly at the end.
    for i in range(values.shape[0]):
        for tau in (-np.inf, 0.0, np.inf):
            np.testing.assert_array_equal(tree.query(i, tau), brute(values, i, tau))


def test_long_lagging_rows_and_many_updates():
    rng = np.random.default_rng(0)
    n, m = 6, 1000
    values = rng.standard_normal((n, m))
    tree = kn.AsyncTree(values)
    for step in range(300):
        cols = rng.choice(m, size=20, replace=False)
        vals = rng.standard_normal((n, 20)) * 2
        tree.update(cols, vals)
        values[:, cols] = vals
        if step % 7 == 0:  # row 0 is queried often, the others lag for ever
            np.testing.assert_array_equal(tree.query(0, 1.5), brute(values, 0, 1.5))
    for i in range(n):
        np.testing.assert_array_equal(tree.query(i, 1.5), brute(values, i, 1.5))
    stats = tree.stats
    assert stats["full_rebuilds"] >= n - 1  # rows 1.. fell more than m/8 behind
    many = tree.query_many([3, 0, 3], 2.0)
    for got, i in zip(many, [3, 0, 3]):
        np.testing.assert_array_equal(got, brute(values, i, 2.0))


def test_ties_are_strict_and_infinite_thresholds():
    tree = kn.AsyncTree(np.array([[1.0, 2.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(tree.query(0, 2.0), [3])
    np.testing.assert_array_equal(tree.query(0, -np.inf), [0, 1, 2, 3])
    assert tree.query(0, np.inf).size == 0
    single = kn.AsyncTree(np.array([[5.0], [-5.0]]))
    np.testing.assert_array_equal(single.query(0, 4.99), [0])
    assert single.query(1, 4.99).size == 0


def test_memory_overhead_is_reported():
    tree = kn.AsyncTree(np.zeros((10, 4096)))
    assert 0.14 < tree.memory_bytes / (10 * 4096 * 8) < 0.15
    assert tree.fanout == 8


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda t: t.query(5, 0.0), ValueError, "i:"),
        (lambda t: t.query(-1, 0.0), ValueError, "i:"),
        (lambda t: t.query(0.5, 0.0), TypeError, "i:"),
        (lambda t: t.query(0, float("nan")), ValueError, "tau:"),
        (lambda t: t.query(0, "x"), TypeError, "tau:"),
        (lambda t: t.update([7], np.zeros((2, 1))), ValueError, "cols:"),
        (lambda t: t.update([0, 0], np.zeros((2, 2))), ValueError, "cols:"),
        (lambda t: t.update([0.5], np.zeros((2, 1))), TypeError, "cols:"),
        (lambda t: t.update([0], np.zeros((3, 1))), ValueError, "new_values:"),
        (lambda t: t.update([0], np.full((2, 1), np.nan)), ValueError, "new_values:"),
        (lambda t: t.query_many([0, 9], 0.0), ValueError, "rows:"),
    ],
)
def test_bad_arguments_are_named(call, exc, match):
    tree = kn.AsyncTree(np.zeros((2, 3)))
    with pytest.raises(exc, match=match):
        call(tree)


@pytest.mark.parametrize(
    "values,exc",
    [(np.zeros((0, 3)), ValueError), (np.zeros(3), ValueError), (np.array([[np.inf]]), ValueError), ("ab", TypeError)],
)
def test_bad_values_are_refused(values, exc):
    with pytest.raises(exc, match="values:"):
        kn.AsyncTree(values)
