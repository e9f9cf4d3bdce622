"""Faults are reported in Python's own terms and leave the model usable:
DivergenceError is a FloatingPointError carrying the partial History, the
sampler rewinds to the first step not taken, argument errors carry the
argument's name, and inputs that could only fail later are refused up front."""

import kronnet as kn
import numpy as np
import pytest


@pytest.fixture
def data():
    return kn.make_kronecker_data(40, dims=(4, 5), seed=0)


def test_exception_classes_follow_python_conventions():
    assert issubclass(kn.DivergenceError, FloatingPointError)
    assert issubclass(kn.ArgumentError, ValueError) and issubclass(kn.ArgumentTypeError, TypeError)
    assert issubclass(kn.OutOfMemoryError, MemoryError) and issubclass(kn.FileFormatError, ValueError)
    for cls in (kn.DivergenceError, kn.ArgumentError, kn.OutOfMemoryError, kn.FileFormatError):
        assert issubclass(cls, kn.KronnetError)
    with pytest.raises(kn.ArgumentError) as info:
        kn.TwoLayerNet((3, 4), width=-1)
    assert info.value.arg == "width"
    with pytest.raises(kn.ArgumentTypeError) as info:
        kn.TwoLayerNet((3, 4), width=2.5)
    assert info.value.arg == "width"
    with pytest.raises(kn.OutOfMemoryError) as info:
        kn.TwoLayerNet((2**20, 2**20), 2**20).dense_weights()
    assert info.value.nbytes >= 8 * 2**60


def diverging_trainer(data, seed=3):
    net = kn.TwoLayerNet(data.dims, 64, seed=1)
    return kn.Trainer(net, data, lr=1e200, batch_size=4, seed=seed)


def test_divergence_in_fit_carries_the_partial_history_and_rewinds_the_sampler(data):
    tr = diverging_trainer(data)
    twin = diverging_trainer(data)
    with pytest.raises(kn.DivergenceError) as info:
        tr.fit(1000)
    hist = info.value.history
    assert isinstance(hist, kn.History)
    taken = hist.steps
    assert tr.steps_done == taken and taken < 1000
    assert np.all(np.isfinite(hist.loss))
    assert hist.full_loss[-1] == (taken, tr.full_loss())
    # The batches the twin draws: the first `taken` were used, the next is
    # the one that failed and must be drawn again.
    expected = [twin.next_batch() for _ in range(taken + 1)]
    np.testing.assert_array_equal(tr.next_batch(), expected[-1])


def test_divergence_in_step_does_not_consume_the_batch(data):
    tr = diverging_trainer(data)
    twin = diverging_trainer(data)
    steps = 0
    with pytest.raises(kn.DivergenceError):
        for _ in range(100):
            tr.step()
            steps += 1
    expected = [twin.next_batch() for _ in range(steps + 1)]
    np.testing.assert_array_equal(tr.next_batch(), expected[-1])


@pytest.mark.parametrize(
    "value,exc",
    [
        ("2", kn.ArgumentTypeError),
        (1.7, kn.ArgumentTypeError),
        (True, kn.ArgumentTypeError),
        (None, kn.ArgumentTypeError),
        (-1, kn.ArgumentError),
    ],
)
def test_fit_validates_eval_every(data, value, exc):
    net = kn.TwoLayerNet(data.dims, 32)
    tr = kn.Trainer(net, data, lr=10.0)
    with pytest.raises(exc) as info:
        tr.fit(3, eval_every=value)
    assert info.value.arg == "eval_every"
    assert tr.steps_done == 0


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_fit_validates_progress(data, value):
    tr = kn.Trainer(kn.TwoLayerNet(data.dims, 32), data, lr=10.0)
    with pytest.raises(kn.ArgumentTypeError, match="progress"):
        tr.fit(3, progress=value)


def test_targets_no_training_can_fit_are_refused(data):
    y = np.array(data.y)
    y[3] = 1e200
    huge = kn.KronData(data.factors, y)  # fine for prediction...
    net = kn.TwoLayerNet(data.dims, 32)
    with pytest.raises(kn.ArgumentError, match=r"data.y: target 3 is 1e\+200") as info:
        kn.Trainer(net, huge, lr=1.0)  # ...refused for training
    assert info.value.arg == "data.y"
    y[3] = 1e100  # at the bound: accepted
    kn.Trainer(net, kn.KronData(data.factors, y), lr=1e-3).fit(2)


def test_points_and_thresholds_beyond_the_bound_are_refused(data):
    with pytest.raises(kn.ArgumentError, match="factors: point 0 has norm"):
        kn.KronData([np.full((2, 3), 1e60), np.full((2, 2), 1e60)])
    with pytest.raises(kn.ArgumentError, match="threshold"):
        kn.TwoLayerNet((3, 4), 8, threshold=1e200)
