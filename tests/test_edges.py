"""Hard edges (issue 26): the default learning rate, inputs far from unit
norm, a net used from two threads, sizes that cannot finish or fit, a
sharded net in one process, and the dense backend's memory estimate."""

import copy
import threading
import time

import kronnet as kn
import numpy as np

# -- 3. threads ---------------------------------------------------------------------


def _fit_in_thread(tr, steps):
    """Starts ``tr.fit(steps)`` in a thread; returns (thread, started, box)
    where box collects the History or the exception."""
    started = threading.Event()
    box = {}

    def target():
        started.set()
        try:
            box["history"] = tr.fit(steps)
        except BaseException as exc:  # reported by the test, not lost in the thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="trainer-thread")
    thread.start()
    started.wait()
    return thread, box


def _wait_until_training(net, thread):
    """Returns once the trainer in `thread` holds the net (a harmless read
    is refused), before any call that could change the net."""
    while thread.is_alive():
        try:
            net.threshold, net.a
        except kn.ConcurrentUseError:
            return
    raise AssertionError("the fit ended before it was seen running")


def test_a_second_thread_during_fit_gets_concurrent_use_error_and_the_fit_is_undisturbed(tmp_path):
    data = kn.make_kronecker_data(256, dims=(16, 16), seed=0)
    net = kn.TwoLayerNet(data.dims, 2048, seed=0)
    twin = copy.deepcopy(net)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8))
    calls = {
        "predict": lambda: net.predict(data),
        "save": lambda: net.save(tmp_path / "net.kronnet"),
        "another fit": lambda: kn.Trainer(net, data, lr=10.0).fit(5),
        "the same fit": lambda: tr.fit(5),
        "full_loss": tr.full_loss,
        "a": lambda: net.a,
        "checkpoint": lambda: tr.checkpoint(tmp_path / "run.ckpt"),
    }
    thread, box = _fit_in_thread(tr, 4000)
    _wait_until_training(net, thread)
    refused, other, succeeded = {}, [], []
    # Until a call succeeds: the fit has let go of the net (it is ending).
    while not succeeded:
        for name, call in calls.items():
            try:
                call()
                succeeded.append(name)
                break
            except kn.ConcurrentUseError as exc:
                refused[name] = exc
            except BaseException as exc:
                other.append((name, exc))
    thread.join()
    assert not other, other
    assert "error" not in box, box.get("error")
    # Every kind of call was refused at least once while the fit ran (the
    # fit takes about a second; each call, milliseconds).
    assert set(refused) == set(calls), sorted(set(calls) - set(refused))
    exc = refused["predict"]
    assert isinstance(exc, RuntimeError) and isinstance(exc, kn.KronnetError)
    assert exc.holder == "trainer-thread" and exc.what == "net.predict()"
    assert "must not be used from another thread while a Trainer works" in str(exc)
    assert "Already" not in str(exc)
    # The fit was not disturbed: bitwise the run of a twin left alone.
    want = kn.Trainer(twin, data, lr=kn.suggest_lr(twin, 8)).fit(4000)
    assert box["history"].loss.tobytes() == want.loss.tobytes()
    if succeeded[0] not in ("another fit", "the same fit"):
        assert tr.steps_done == 4000
        assert net.predict(data).tobytes() == twin.predict(data).tobytes()


def test_a_trainer_does_not_start_while_another_thread_reads_the_net():
    data = kn.make_kronecker_data(256, dims=(16, 16), seed=0)
    net = kn.TwoLayerNet(data.dims, 2048, seed=0)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8))
    big = kn.make_kronecker_data(20000, dims=(16, 16), seed=1)
    started, stop = threading.Event(), threading.Event()
    errors = []

    def reader():
        started.set()
        try:
            while not stop.is_set():
                net.predict(big)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader, name="reader-thread")
    thread.start()
    started.wait()
    refused = None
    deadline = time.monotonic() + 30
    while refused is None and time.monotonic() < deadline:
        try:
            tr.fit(20)
        except kn.ConcurrentUseError as exc:
            refused = exc
    stop.set()
    thread.join()
    assert not errors, errors
    assert refused is not None and refused.holder == "reader-thread" and refused.activity == "reading it"
    # Two threads reading at once is allowed.
    out = []
    readers = [threading.Thread(target=lambda: out.append(net.predict(data))) for _ in range(4)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    assert len(out) == 4 and all(np.array_equal(o, out[0]) for o in out)


def test_concurrent_use_error_pickles_and_is_exported():
    import pickle

    exc = kn.ConcurrentUseError("net.save()", "worker", "training it")
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is kn.ConcurrentUseError and str(again) == str(exc) and again.holder == "worker"
    assert "ConcurrentUseError" in kn.__all__
