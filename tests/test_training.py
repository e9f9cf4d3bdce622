"""Training behaviour: the loss falls, batches are epochs without
replacement, histories expose the sparsity, the net is trained in place."""

import kronnet as kn
import numpy as np
import pytest


def test_full_loss_falls_100x_with_suggested_lr():
    data = kn.make_kronecker_data(128, dims=(16, 16), seed=0)
    net = kn.TwoLayerNet(data.dims, 512, seed=0)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), batch_size=8)
    hist = tr.fit(1500, eval_every=500)
    start, end = hist.full_loss[0][1], hist.full_loss[-1][1]
    assert end < start / 100
    assert [s for s, _ in hist.full_loss] == [0, 500, 1000, 1500]
    # The net itself is trained: its predictions fit the targets.
    assert np.mean((net.predict(data) - data.y) ** 2) / 2 == pytest.approx(end, rel=1e-6)


def test_history_records_every_step_and_sparse_firing():
    data = kn.make_kronecker_data(50, dims=(8, 8), seed=1)
    net = kn.TwoLayerNet(data.dims, 1024, seed=1)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), batch_size=8)
    hist = tr.fit(100)
    assert hist.steps == 100 == tr.steps_done
    for arr in (hist.loss, hist.fired_union, hist.fired_total, hist.batch_sizes):
        assert arr.shape == (100,)
    # 50 = 6 * 8 + 2: every seventh batch closes an epoch with 2 points.
    assert list(hist.batch_sizes[:7]) == [8] * 6 + [2]
    frac = hist.fired_per_point.mean() / net.width
    assert 0.005 < frac < 0.2  # o(m): b = sqrt(0.4 ln m) fires a few percent
    assert np.all(hist.fired_union <= hist.fired_total)
    assert np.all(hist.fired_union <= net.width)


def test_batches_are_epochs_without_replacement_and_seeded():
    data = kn.make_kronecker_data(30, dims=(3, 3), seed=0)

    def order(seed):
        tr = kn.Trainer(kn.TwoLayerNet(data.dims, 16), data, batch_size=7, seed=seed)
        return [tr.next_batch() for _ in range(10)]  # 5 batches an epoch (7*4 + 2)

    batches = order(4)
    for epoch in (batches[:5], batches[5:]):
        assert sorted(np.concatenate(epoch).tolist()) == list(range(30))
    assert not np.array_equal(np.concatenate(batches[:5]), np.concatenate(batches[5:]))
    assert all(np.array_equal(a, b) for a, b in zip(batches, order(4)))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, order(5)))


def test_step_returns_loss_before_update():
    data = kn.make_kronecker_data(20, dims=(4, 4), seed=2)
    net = kn.TwoLayerNet(data.dims, 256, seed=2)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 4), batch_size=4)
    batch = np.array([3, 1, 4, 1])
    expected = np.mean((net.predict(data.take(batch)) - data.y[batch]) ** 2) / 2
    assert tr.step(batch) == pytest.approx(expected, rel=1e-12)
    assert np.mean((net.predict(data.take(batch)) - data.y[batch]) ** 2) / 2 < expected


def test_fit_and_step_interleave_and_continue():
    data = kn.make_kronecker_data(40, dims=(4, 5), seed=3)
    nets = [kn.TwoLayerNet(data.dims, 200, seed=3) for _ in range(2)]
    a = kn.Trainer(nets[0], data, lr=50.0, seed=1)
    b = kn.Trainer(nets[1], data, lr=50.0, seed=1)
    la = list(a.fit(10).loss) + [a.step() for _ in range(5)] + list(a.fit(7).loss)
    lb = list(b.fit(22).loss)
    assert la == lb


def test_gram_modes_agree():
    data = kn.make_kronecker_data(60, dims=(5, 6), seed=4)
    nets = [kn.TwoLayerNet(data.dims, 300, seed=4) for _ in range(2)]
    pre = kn.Trainer(nets[0], data, lr=60.0, gram="precomputed")
    cols = kn.Trainer(nets[1], data, lr=60.0, gram="auto", gram_budget_bytes=1000)
    np.testing.assert_allclose(pre.fit(200).loss, cols.fit(200).loss, rtol=1e-9)


def test_index_choices_give_identical_trajectories():
    data = kn.make_kronecker_data(64, dims=(6, 6), seed=5)
    hists = []
    for index in ("scan", "tree", "bits", "auto"):
        net = kn.TwoLayerNet(data.dims, 700, seed=5)
        tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), index=index, seed=2)
        assert tr.index in ("scan", "tree", "bits")
        hists.append(tr.fit(300))
    for h in hists[1:]:
        assert h.loss.tobytes() == hists[0].loss.tobytes()
        assert np.array_equal(h.fired_total, hists[0].fired_total)


def test_a_shared_gram_trains_exactly_like_an_own_one():
    data = kn.make_kronecker_data(60, dims=(4, 5), seed=0)
    other = kn.KronData(data.factors, -data.y)  # same points, other targets
    nets = [kn.TwoLayerNet(data.dims, 128, seed=s) for s in (1, 2, 2)]
    lr = kn.suggest_lr(nets[0], 8)
    first = kn.Trainer(nets[0], data, lr=lr, gram="precomputed")
    shared = kn.Trainer(nets[1], other, lr=lr, gram_from=first)
    own = kn.Trainer(nets[2], other, lr=lr, gram="precomputed")
    assert shared.gram == "precomputed"
    assert np.array_equal(shared.fit(200).loss, own.fit(200).loss)
    assert np.array_equal(nets[1].predict(data), nets[2].predict(data))
    first.fit(10)  # the owner goes on unaffected
    with pytest.raises(kn.ArgumentError, match="other points"):
        kn.Trainer(nets[1], data.take(range(59)), lr=lr, gram_from=first)
    with pytest.raises(kn.ArgumentError, match="precomputed"):
        kn.Trainer(nets[1], data, lr=lr, gram_from=kn.Trainer(nets[0], data, lr=lr, gram="columns"))
    with pytest.raises(kn.ArgumentTypeError, match="Trainer"):
        kn.Trainer(nets[1], data, lr=lr, gram_from="first")
