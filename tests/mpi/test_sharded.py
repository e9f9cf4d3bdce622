"""Sharded training under ``mpiexec -n K`` (run by tests/test_mpi.py, or by
hand: ``mpiexec -n 2 python -m pytest tests/mpi``).

Every rank trains the same net twice: sharded over COMM_WORLD, and alone
with a plain single-process Trainer on its own copy. The two must agree bit
for bit: losses, full losses, dense weights, predictions, checkpoints. A
test that passes on some ranks and fails on others fails the run (pytest's
exit code of each rank reaches mpiexec).
"""

import copy
import os
import tempfile

import kronnet as kn
import numpy as np
import pytest
from kronnet.placement import mpi as shard

MPI = pytest.importorskip("mpi4py.MPI")
COMM = MPI.COMM_WORLD
K = COMM.Get_size()


def bitwise(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def same_everywhere(x):
    """x is bitwise the same on every rank."""
    return all(bitwise(x, y) for y in COMM.allgather(np.asarray(x)))


def shared_tmpdir():
    path = tempfile.mkdtemp() if COMM.rank == 0 else None
    return COMM.bcast(path, root=0)


def pair_data(seed):
    data = kn.make_pair_data(300, (40, 50), dims=(8, 8), seed=seed)
    return data


CASES = [
    # (dims, init, index, gram, data kind)
    ((8, 8), "gaussian", "scan", "precomputed", "kron"),
    ((8, 8), "gaussian", "bits", "columns", "kron"),
    ((4, 4, 4), "gaussian", "tree", "precomputed", "kron"),
    ((8, 8), "kron", "tree", "precomputed", "kron"),
    ((4, 4, 4), "kron", "bits", "precomputed", "kron"),
    ((8, 8), "gaussian", "scan", "precomputed", "pairs"),
    ((8, 8), "kron", "tree", "columns", "pairs"),
]


def make(dims, init, kind, seed=0):
    data = pair_data(seed) if kind == "pairs" else kn.make_kronecker_data(200, dims=dims, seed=seed)
    net = kn.TwoLayerNet(data.dims, width=400, seed=7, init=init)
    return data, net


@pytest.mark.parametrize("dims,init,index,gram,kind", CASES)
def test_sharded_training_is_bitwise_the_single_process_run(dims, init, index, gram, kind):
    data, net = make(dims, init, kind)
    _, alone = make(dims, init, kind)
    lr = kn.suggest_lr(net, 8)
    tr = kn.Trainer(net, data, lr=lr, batch_size=8, index=index, gram=gram, comm=COMM)
    ref = kn.Trainer(alone, data, lr=lr, batch_size=8, index=index, gram=gram)
    assert net.sharded and not alone.sharded
    hist = tr.fit(300, eval_every=100)
    want = ref.fit(300, eval_every=100)
    assert ref.full_loss() < 0.5 * want.full_loss[0][1]  # it trains
    assert bitwise(hist.loss, want.loss)
    assert bitwise(hist.fired_union, want.fired_union)
    assert bitwise(hist.fired_total, want.fired_total)
    assert hist.full_loss == want.full_loss
    assert tr.full_loss() == ref.full_loss()
    explicit = [0, 5, 5, 9]
    assert tr.step(explicit) == ref.step(explicit)
    held_out, _ = make(dims, init, kind, seed=1)
    assert bitwise(net.predict(held_out), alone.predict(held_out))
    assert bitwise(net.predict(data), alone.predict(data))
    if kind == "kron":
        assert bitwise(net.dense_weights(), alone.dense_weights())
    assert same_everywhere(net.predict(held_out))
    stats = tr.comm_stats()
    assert stats["allreduce_bytes"] > 0 and stats["allreduce_seconds"] >= 0


@pytest.mark.parametrize("index", ["scan", "bits", "tree"])
def test_the_full_model_trains_sharded_bitwise_as_one_process(index):
    """Trainable a, b, c and v, four softmax outputs, ridges and a schedule:
    every global quantity they touch (the bounds on |a| and |b|, the linear
    term, the schedule's factor) must be agreed across ranks."""
    data = kn.make_kronecker_data(60, dims=(4, 6), seed=0)
    data = data.with_targets(np.random.default_rng(1).integers(0, 4, data.n))
    kw = dict(
        lr=20.0, lr_a=0.5, lr_b=0.1, lr_c=0.5, lr_v=1.0, loss="cross_entropy",
        ridge_a=0.01, ridge_b=0.05, ridge_v=0.02, schedule=("cosine", 200), batch_size=6, index=index,
    )  # fmt: skip
    net = kn.TwoLayerNet(data.dims, 320, seed=3, outputs=4)
    alone = kn.TwoLayerNet(data.dims, 320, seed=3, outputs=4)
    tr = kn.Trainer(net, data, comm=COMM, **kw)
    ref = kn.Trainer(alone, data, **kw)
    hist = tr.fit(150, eval_every=50, validation=data)
    want = ref.fit(150, eval_every=50, validation=data)
    assert want.full_loss[-1][1] < 0.8 * want.full_loss[0][1]  # it trains
    assert bitwise(hist.loss, want.loss)
    assert hist.full_loss == want.full_loss and hist.val_loss == want.val_loss
    assert bitwise(net.predict(data), alone.predict(data))
    whole = net.gather()
    assert bitwise(whole.a, alone.a)
    assert bitwise(whole.thresholds, alone.thresholds)
    assert bitwise(whole.output_bias, alone.output_bias)
    assert bitwise(whole.linear_weights(), alone.linear_weights())
    tmp = shared_tmpdir()
    tr.checkpoint(os.path.join(tmp, "full.ckpt"))
    net.save(os.path.join(tmp, "full.kronnet"))
    COMM.Barrier()
    back = kn.Trainer.restore(os.path.join(tmp, "full.ckpt"), comm=COMM)
    assert bitwise(back.fit(30).loss, ref.fit(30).loss)
    assert bitwise(kn.load(os.path.join(tmp, "full.kronnet")).predict(data), whole.predict(data))


def test_early_stopping_goes_back_on_every_rank_as_one_process_does():
    # A smooth target with noisy training labels: the held-out loss falls,
    # then rises.
    train = kn.make_kronecker_data(300, dims=(6, 6), seed=0)
    held_out = kn.make_kronecker_data(200, dims=(6, 6), seed=1)
    t = np.random.default_rng(9).standard_normal(36) / 6.0
    noise = np.random.default_rng(5).standard_normal(train.n)
    train = train.with_targets(np.tanh(3 * train.dense() @ t) + 0.7 * noise)
    held_out = held_out.with_targets(np.tanh(3 * held_out.dense() @ t))
    kw = dict(lr=50.0, lr_a=5.0, lr_c=0.2, batch_size=8)
    net, alone = (kn.TwoLayerNet(train.dims, 384, seed=2) for _ in range(2))
    tr = kn.Trainer(net, train, comm=COMM, **kw)
    ref = kn.Trainer(alone, train, **kw)
    hist = tr.fit(2000, eval_every=20, validation=held_out, patience=2)
    want = ref.fit(2000, eval_every=20, validation=held_out, patience=2)
    assert want.stopped_early and want.best_step > 0
    assert hist.val_loss == want.val_loss and hist.best_step == want.best_step
    assert hist.stopped_early == want.stopped_early
    assert tr.steps_done == ref.steps_done == want.best_step
    assert bitwise(net.predict(held_out), alone.predict(held_out))
    assert bitwise(tr.fit(30).loss, ref.fit(30).loss)


def test_a_float32_trainer_shards_bitwise_and_its_checkpoint_is_the_single_process_file():
    data, net = make((8, 8), "gaussian", "kron")
    _, alone = make((8, 8), "gaussian", "kron")
    kw = dict(lr=kn.suggest_lr(net, 8), lr_a=1.0, dtype="float32")
    tr = kn.Trainer(net, data, comm=COMM, **kw)
    ref = kn.Trainer(alone, data, **kw)
    assert bitwise(tr.fit(150).loss, ref.fit(150).loss)
    assert bitwise(net.predict(data), alone.predict(data))
    tmp = shared_tmpdir()
    tr.checkpoint(os.path.join(tmp, "f32.ckpt"))
    if COMM.rank == 0:
        ref.checkpoint(os.path.join(tmp, "f32_alone.ckpt"))
    COMM.Barrier()
    got, want = members(os.path.join(tmp, "f32.ckpt")), members(os.path.join(tmp, "f32_alone.ckpt"))
    assert got["trainer/state"].dtype == np.float32
    assert sorted(got) == sorted(want) and all(bitwise(got[k], want[k]) for k in want)
    back = kn.Trainer.restore(os.path.join(tmp, "f32.ckpt"), comm=COMM)
    assert bitwise(back.fit(40).loss, ref.fit(40).loss)


def test_each_rank_holds_its_share_of_the_state():
    data, net = make((8, 8), "gaussian", "kron")
    tr = kn.Trainer(net, data, lr=50.0, comm=COMM, progress=True)
    tr.fit(20, progress=True)
    first, count = shard.neuron_range(net.width, K, COMM.rank)
    (block,) = net.coefficients
    assert block.alpha.shape == (count, data.n)
    assert tr._core.export_state()["state"].shape == (count, data.n)
    assert COMM.allreduce(count) == net.width
    whole = net.gather()
    assert whole.coefficients[0].alpha.shape == (net.width, data.n)
    assert bitwise(whole.predict(data), net.predict(data))


def trained_twice(dims, init, index, steps):
    """The same run sharded over COMM and alone on this rank: (data, sharded
    net and trainer, lone net and trainer)."""
    data, net = make(dims, init, "kron")
    _, alone = make(dims, init, "kron")
    lr = kn.suggest_lr(net, 8)
    tr = kn.Trainer(net, data, lr=lr, index=index, comm=COMM)
    ref = kn.Trainer(alone, data, lr=lr, index=index)
    tr.fit(steps)
    ref.fit(steps)
    return data, net, tr, alone, ref


def test_checkpoint_and_save_write_the_single_process_file_and_resume_on_any_rank_count():
    data, net, tr, alone, ref = trained_twice((8, 8), "kron", "bits", 150)
    tmp = shared_tmpdir()
    ckpt, saved = os.path.join(tmp, "run.ckpt"), os.path.join(tmp, "net.kronnet")
    tr.checkpoint(ckpt)
    net.save(saved)
    COMM.Barrier()
    # One process reads what K ranks wrote...
    alone_again = kn.Trainer.restore(ckpt)
    assert bitwise(kn.load(saved).predict(data), alone.predict(data))
    # ...and K ranks read it back; both continue exactly as the uninterrupted runs.
    sharded_again = kn.Trainer.restore(ckpt, comm=COMM)
    assert sharded_again.net.sharded
    want = ref.fit(100).loss
    assert bitwise(alone_again.fit(100).loss, want)
    assert bitwise(sharded_again.fit(100).loss, want)
    assert bitwise(tr.fit(100).loss, want)
    # A checkpoint of a single-process run resumes sharded, too.
    if COMM.rank == 0:
        ref.checkpoint(os.path.join(tmp, "single.ckpt"))
    COMM.Barrier()
    resumed = kn.Trainer.restore(os.path.join(tmp, "single.ckpt"), comm=COMM)
    assert bitwise(resumed.fit(50).loss, ref.fit(50).loss)


def members(path):
    with np.load(path, allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


def test_a_sharded_checkpoint_is_the_single_process_file_member_for_member(monkeypatch):
    # Pieces of one row: every rank's α and P reach rank 0 in many messages.
    monkeypatch.setattr(shard, "PIECE_VALUES", 64)
    _, net, tr, alone, ref = trained_twice((4, 4, 4), "gaussian", "scan", 120)
    tmp = shared_tmpdir()
    tr.checkpoint(os.path.join(tmp, "sharded.ckpt"))
    net.save(os.path.join(tmp, "sharded.kronnet"))
    if COMM.rank == 0:
        ref.checkpoint(os.path.join(tmp, "alone.ckpt"))
        alone.save(os.path.join(tmp, "alone.kronnet"))
    COMM.Barrier()
    for kind in ("ckpt", "kronnet"):
        got, want = members(os.path.join(tmp, f"sharded.{kind}")), members(os.path.join(tmp, f"alone.{kind}"))
        assert sorted(got) == sorted(want)
        for name in want:
            assert bitwise(got[name], want[name]), name


def test_streamed_rows_arrive_in_rank_order_and_a_failed_write_strands_no_rank(monkeypatch):
    monkeypatch.setattr(shard, "PIECE_VALUES", 10)
    group = shard.ShardedPlacement(COMM)
    q = COMM.rank

    # Rank q holds q + 2 rows of array 0 and 3 rows of array 1; entry (r, c)
    # of rank q's rows is 1000 q + 10 r + c.
    def part(rows, cols):
        return 1000.0 * q + 10.0 * np.arange(rows)[:, None] + np.arange(cols)[None, :]

    def expected(rows_of, cols):
        return np.concatenate([1000.0 * p + 10.0 * np.arange(rows_of(p))[:, None] + np.arange(cols) for p in range(K)])

    got = {}

    def collect(streams):
        for i, (shape, blocks) in enumerate(streams):
            got[i] = (shape, np.concatenate([b.copy() for b in blocks]))

    def fail_midway(streams):
        _, blocks = streams[0]
        next(blocks)
        next(blocks)
        raise OSError("disk full (simulated)")

    parts = [part(q + 2, 7), part(3, 4)]
    with pytest.raises(OSError, match="simulated"):
        shard.stream_rows(group, parts, fail_midway)
    # Nothing of the failed stream is left in flight: the next one is exact.
    shard.stream_rows(group, parts, collect)
    if q == 0:
        assert got[0][0] == (sum(p + 2 for p in range(K)), 7)
        assert bitwise(got[0][1], expected(lambda p: p + 2, 7))
        assert got[1][0] == (3 * K, 4)
        assert bitwise(got[1][1], expected(lambda p: 3, 4))
    else:
        assert got == {}


def test_a_refusal_on_one_rank_raises_on_every_rank():
    data, net = make((8, 8), "gaussian", "kron")
    # Rank 0 alone asks for a batch index out of range.
    tr = kn.Trainer(net, data, lr=50.0, comm=COMM)
    bad = [0, data.n + 5] if COMM.rank == 0 else [0, 1]
    with pytest.raises(kn.ArgumentError, match="batch"):
        tr.step(bad)
    # Nothing moved: the trainer goes on, still equal to one process.
    _, alone = make((8, 8), "gaussian", "kron")
    ref = kn.Trainer(alone, data, lr=50.0)
    assert bitwise(tr.fit(30).loss, ref.fit(30).loss)


def test_ranks_with_different_data_are_refused_before_training():
    seed = COMM.rank if K > 1 else 0
    data = kn.make_kronecker_data(100, dims=(8, 8), seed=seed)
    net = kn.TwoLayerNet(data.dims, width=256)
    if K == 1:
        kn.Trainer(net, data, comm=COMM)
        return
    with pytest.raises(kn.ArgumentError, match="data: every rank must pass the same value") as info:
        kn.Trainer(net, data, comm=COMM)
    assert isinstance(info.value, kn.RankMismatchError) and info.value.groups == [[r] for r in range(K)]


def test_divergence_raises_on_every_rank_and_leaves_the_state():
    data, net = make((8, 8), "gaussian", "kron")
    _, alone = make((8, 8), "gaussian", "kron")
    tr = kn.Trainer(net, data, lr=1e60, comm=COMM)
    ref = kn.Trainer(alone, data, lr=1e60)
    with pytest.raises(kn.DivergenceError) as got:
        tr.fit(50)
    with pytest.raises(kn.DivergenceError) as want:
        ref.fit(50)
    assert bitwise(got.value.history.loss, want.value.history.loss)
    assert tr.steps_done == ref.steps_done
    assert tr.full_loss() == ref.full_loss()


def test_too_many_ranks_for_the_width_is_an_argument_error():
    data = kn.make_kronecker_data(50, dims=(4, 4), seed=0)
    net = kn.TwoLayerNet(data.dims, width=shard.NEURON_BLOCK * (K - 1) or 1)
    if K == 1:
        pytest.skip("one rank always has a block")
    with pytest.raises(kn.ArgumentError, match="blocks"):
        kn.Trainer(net, data, comm=COMM)


def test_ctrl_c_on_one_rank_stops_every_rank_after_the_same_step():
    import signal
    import threading

    data, net = make((8, 8), "gaussian", "kron")
    tr = kn.Trainer(net, data, lr=50.0, comm=COMM)
    if COMM.rank == 0:
        threading.Timer(0.5, lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt) as got:
        tr.fit(10**7)
    steps = tr.steps_done
    assert 0 < steps < 10**7 and same_everywhere(np.array(steps))
    assert got.value.history.steps == steps
    # Consistent and resumable: it goes on exactly like one process that
    # took the same steps.
    _, alone = make((8, 8), "gaussian", "kron")
    ref = kn.Trainer(alone, data, lr=50.0)
    ref.fit(steps)
    assert tr.full_loss() == ref.full_loss()
    assert bitwise(tr.fit(20).loss, ref.fit(20).loss)


def test_a_sharded_net_or_its_state_in_a_local_trainer_is_refused_by_name():
    data, net = make((8, 8), "gaussian", "kron")
    tr = kn.Trainer(net, data, lr=50.0, comm=COMM)
    tr.fit(5)
    with pytest.raises(kn.ArgumentError, match=f"^net: this net's neurons are sharded over {K} MPI rank"):
        kn.Trainer(net, data, lr=50.0)
    state = tr.export_state()
    _, alone = make((8, 8), "gaussian", "kron")
    if K > 1:
        # Was: "preacts: have shape (..., 200), expected (400, 200)".
        with pytest.raises(kn.ArgumentError, match="^state: is one MPI rank's shard of a trainer sharded"):
            kn.Trainer.from_state(alone, data, state)
    # The fixes the messages name work.
    whole = net.gather()
    kn.Trainer(whole, data, lr=50.0).fit(5)
    kn.Trainer.from_state(copy.deepcopy(net), data, state, comm=COMM).fit(5)
