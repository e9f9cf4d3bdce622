"""The exact sums behind every output (one process or many ranks): against
math.fsum, the correctly rounded sum, and invariant under any split."""

import math

import kronnet as kn
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kronnet import _core

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)


@settings(max_examples=300, deadline=None)
@given(st.lists(finite, max_size=60))
def test_equals_math_fsum(values):
    assert _core.exact_sum(np.array(values, dtype=np.float64)) == math.fsum(values)


@pytest.mark.parametrize(
    "values",
    [
        [1.0, 1e-300, -1.0],
        [2.0**53, 1.0, 2.0**-40],
        [0.1] * 10,
        [5e-324] * 7,
        [1e16, 1.0, -1e16],
        [],
    ],
)
def test_hard_cases(values):
    assert _core.exact_sum(np.array(values, dtype=np.float64)) == math.fsum(values)


def test_words_of_any_split_sum_to_the_same_outputs():
    data = kn.make_kronecker_data(40, dims=(4, 8), seed=2)
    net = kn.TwoLayerNet(data.dims, width=300, seed=1)
    whole = net.predict(data)
    # Rank-like parts of the neurons, each summed exactly on its own.
    for cuts in ([0, 64, 300], [0, 128, 192, 300], [0, 300]):
        words = sum(
            _core.predict_words(data.core_layout, net.head.shard(a, b - a), net.core_init, [], 40)[0]
            for a, b in zip(cuts[:-1], cuts[1:])
        )
        assert _core.outputs_from_words(net.head, words)[:, 0].tobytes() == whole.tobytes()
    # And f is the rounded exact sum of the terms, scaled: against fsum.
    P = net.preactivations(data)
    terms = np.where(P > net.threshold, net.a * (P - net.threshold), 0.0)
    want = np.array([math.fsum(row) for row in terms]) * (1.0 / math.sqrt(net.width))
    assert np.array_equal(whole, want)
