"""Heavy Rust calls release the GIL: another Python thread keeps running."""

import threading
import time

import kronnet as kn


def python_progress_during(work):
    """Iterations a pure-Python loop makes while `work` runs in a thread."""
    done = threading.Event()
    started = threading.Event()

    errors = []

    def target():
        started.set()
        try:
            work()
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=target)
    t.start()
    started.wait()
    count, t0 = 0, time.perf_counter()
    while not done.is_set():
        count += 1
    elapsed = time.perf_counter() - t0
    t.join()
    if errors:
        raise errors[0]
    return count, elapsed


def test_init_releases_gil():
    data = kn.make_kronecker_data(256, dims=(96, 96), seed=0)
    net = kn.TwoLayerNet(data.dims, 2048, seed=0)
    count, elapsed = python_progress_during(lambda: net.preactivations(data))
    assert elapsed > 0.05, "the workload is too small to tell"
    # Holding the GIL, the loop could run only in the switch intervals
    # before the call; released, it spins freely the whole time.
    assert count > 10_000


def test_fit_releases_gil():
    data = kn.make_kronecker_data(256, dims=(16, 16), seed=0)
    net = kn.TwoLayerNet(data.dims, 4096, seed=0)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8))
    count, elapsed = python_progress_during(lambda: tr.fit(600))
    assert elapsed > 0.05, "the workload is too small to tell"
    assert count > 10_000
