"""Progress of init and prediction: the core reports points × neurons done
to a callback while it works, and ``progress=True`` shows a tqdm bar once
the work has run for more than a second."""

import time

import kronnet as kn
import numpy as np
import pytest
from kronnet import _core


def slow_case():
    """Gaussian init at d = 2^16: a few hundred ms per call on 2 cores."""
    data = kn.make_kronecker_data(200, dims=(256, 256), seed=0)
    net = kn.TwoLayerNet(data.dims, 512, seed=0)
    return data, net


def test_the_core_reports_monotone_progress_up_to_the_total():
    data, net = slow_case()
    calls = []
    out = _core.predict(
        data.core_layout, net.head, net.core_init, [], data.n, progress=lambda d, t: calls.append((d, t))
    )
    assert calls, "the work took longer than one poll (20 ms) and reported nothing"
    assert {t for _, t in calls} == {data.n * net.width}
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] <= data.n * net.width
    np.testing.assert_array_equal(out[:, 0], net.predict(data))


def test_a_failing_callback_stops_the_work_and_raises():
    data, net = slow_case()

    def fail(done, total):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        _core.preacts(data.core_layout, net.core_init, net.width, [], progress=fail)


def test_progress_bars_appear_only_after_a_second(capsys):
    data = kn.make_kronecker_data(400, dims=(256, 256), seed=0)
    net = kn.TwoLayerNet(data.dims, 2048, seed=0)
    started = time.perf_counter()
    kn.Trainer(net, data, lr=1.0, progress=True)
    slow = time.perf_counter() - started > 1.5
    err = capsys.readouterr().err
    if slow:
        assert "init" in err and "400/400" in err
    small = kn.make_kronecker_data(4, dims=(4, 4), seed=0)
    kn.TwoLayerNet(small.dims, 16).predict(small, progress=True)
    assert capsys.readouterr().err == ""  # too quick for a bar
    with pytest.raises(kn.ArgumentTypeError, match="progress"):
        net.predict(data.take([0]), progress="yes")
