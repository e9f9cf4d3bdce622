"""Collective calls given different arguments on different ranks (run under
``mpiexec -n 2`` and ``-n 3`` by tests/test_mpi.py).

Every rank must raise the same RankMismatchError, naming the argument and
the ranks that differ, within seconds: never train different models
silently, wait forever, or abort inside MPI. After the refusal the objects
still work with agreeing arguments.
"""

import os
import tempfile
import time

import kronnet as kn
import numpy as np
import pytest

MPI = pytest.importorskip("mpi4py.MPI")
COMM = MPI.COMM_WORLD
K = COMM.Get_size()
RANK = COMM.Get_rank()

#: A refusal must reach every rank within this many seconds.
DEADLINE = 10.0


def shared_tmpdir():
    path = tempfile.mkdtemp() if RANK == 0 else None
    return COMM.bcast(path, root=0)


def refused(arg, call):
    """Runs `call` on every rank; checks that every rank raised the same
    RankMismatchError about `arg`, quickly, with the ranks split as they
    passed their values."""
    COMM.Barrier()
    started = time.perf_counter()
    with pytest.raises(kn.RankMismatchError) as info:
        call()
    elapsed = time.perf_counter() - started
    exc = info.value
    assert exc.arg == arg, str(exc)
    assert isinstance(exc, ValueError) and isinstance(exc, kn.KronnetError)
    assert elapsed < DEADLINE, f"{arg}: {elapsed:.1f} s"
    everyone = COMM.allgather((str(exc), exc.groups))
    assert all(e == everyone[0] for e in everyone), everyone
    assert sorted(r for g in exc.groups for r in g) == list(range(K))
    return exc


@pytest.fixture(scope="module")
def data():
    return kn.make_kronecker_data(64, dims=(4, 4), seed=0)


@pytest.fixture()
def trainer(data):
    net = kn.TwoLayerNet(data.dims, width=256, seed=1)
    return kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), comm=COMM)


def test_trainers_on_different_data_or_settings_are_refused(data):
    mine = kn.make_kronecker_data(64, dims=(4, 4), seed=RANK)
    net = kn.TwoLayerNet(data.dims, width=256, seed=1)
    exc = refused("data", lambda: kn.Trainer(net, mine, lr=10.0, comm=COMM))
    assert exc.groups == [[r] for r in range(K)]
    refused("data", lambda: kn.Trainer(net, data.with_targets(data.y + RANK), lr=10.0, comm=COMM))
    refused("config", lambda: kn.Trainer(net, data, lr=10.0 + RANK, comm=COMM))
    refused("net", lambda: kn.Trainer(kn.TwoLayerNet(data.dims, 256, seed=RANK), data, lr=10.0, comm=COMM))
    # Agreeing arguments still build a working trainer on the same net.
    tr = kn.Trainer(net, data, lr=10.0, comm=COMM)
    assert np.isfinite(tr.fit(3).loss).all()


def test_step_with_different_batches_is_refused(trainer):
    exc = refused("batch", lambda: trainer.step([0, 1 + RANK]))
    assert exc.groups == [[r] for r in range(K)]
    # Only rank 0 differs: the message groups the others together.
    exc = refused("batch", lambda: trainer.step([0, 1] if RANK else [2, 3]))
    if K > 2:
        assert exc.groups == [[0], list(range(1, K))]
    assert trainer.steps_done == 0
    trainer.step([0, 1])
    assert trainer.steps_done == 1


def test_fit_with_different_steps_or_settings_is_refused(trainer, data):
    refused("steps", lambda: trainer.fit(10 + RANK))
    refused("eval_every", lambda: trainer.fit(4, eval_every=1 + RANK))
    held_out = kn.make_kronecker_data(16, dims=data.dims, seed=100 + RANK)
    refused("validation", lambda: trainer.fit(4, validation=held_out))
    refused("batches", lambda: trainer.run([[0, 1], [2, RANK]]))
    assert trainer.steps_done == 0
    assert trainer.fit(4).steps == 4


def test_predict_with_different_points_is_refused(trainer, data):
    trainer.fit(5)
    net = trainer.net
    # A different number of points per rank (once: MPICH's "Message truncated").
    refused("X", lambda: net.predict(data.take(np.arange(10 + RANK))))
    # Same sizes, other values.
    refused("X", lambda: net.predict(kn.make_kronecker_data(12, dims=data.dims, seed=RANK)))
    refused("X", lambda: net.preactivations(kn.make_kronecker_data(12, dims=data.dims, seed=RANK)))
    refused("root", lambda: net.gather(root=RANK))
    same = net.predict(data)
    assert all(np.array_equal(same, other) for other in COMM.allgather(same))


def test_saving_to_different_paths_is_refused(trainer):
    folder = shared_tmpdir()
    mine = os.path.join(folder, f"rank{RANK}.kronnet")
    refused("path", lambda: trainer.net.save(mine))
    refused("path", lambda: trainer.checkpoint(mine))
    assert not any(os.path.exists(os.path.join(folder, f"rank{r}.kronnet")) for r in range(K))
    path = os.path.join(folder, "run.ckpt")
    trainer.checkpoint(path)
    refused("path", lambda: kn.Trainer.restore(path if RANK == 0 else mine, comm=COMM))
    again = kn.Trainer.restore(path, comm=COMM)
    assert again.steps_done == trainer.steps_done


def test_estimators_with_different_data_are_refused():
    from kronnet.sklearn import KronNetRegressor

    rng = np.random.default_rng(RANK)
    X = rng.standard_normal((40, 5))
    y = rng.standard_normal(40)
    est = KronNetRegressor(width=256, max_steps=20, random_state=0, comm=COMM)
    refused("data", lambda: est.fit(X, y))
