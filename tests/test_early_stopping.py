"""Early stopping (fit(..., patience=k)) and TwoLayerNet.load_state: the
trainer goes back to the step of the lowest validation loss exactly as a run
that stopped there would be, and continues from it like that run."""

import kronnet as kn
import numpy as np
import pytest


def bitwise(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def noisy_problem():
    """A smooth target with noisy training labels, so the validation loss
    falls and then rises as the net memorises the noise."""
    train = kn.make_kronecker_data(300, dims=(6, 6), seed=0)
    held_out = kn.make_kronecker_data(200, dims=(6, 6), seed=1)
    t = np.random.default_rng(9).standard_normal(36)
    t /= np.linalg.norm(t)
    noise = np.random.default_rng(5).standard_normal(train.n)
    train = train.with_targets(np.tanh(3 * train.dense() @ t) + 0.7 * noise)
    return train, held_out.with_targets(np.tanh(3 * held_out.dense() @ t))


KW = dict(lr=20.0, lr_a=5.0, lr_c=0.2, batch_size=8)


def trained(steps=None, **fit):
    train, held_out = noisy_problem()
    net = kn.TwoLayerNet(train.dims, 512, seed=2)
    tr = kn.Trainer(net, train, **KW)
    hist = tr.fit(steps, validation=held_out, **fit) if fit else tr.fit(steps)
    return net, tr, hist, train, held_out


def test_it_goes_back_to_the_best_step_bitwise_as_a_run_that_stopped_there():
    net, tr, hist, train, held_out = trained(3000, eval_every=20, patience=3)
    steps = [s for s, _ in hist.val_loss]
    losses = [v for _, v in hist.val_loss]
    best = int(np.argmin(losses))
    assert hist.stopped_early and hist.best_step == steps[best] > 0
    # It waited exactly `patience` evaluations past the best one.
    assert len(losses) == best + 1 + 3 and hist.steps == steps[-1]
    assert tr.steps_done == hist.best_step
    # An independent run of exactly best_step steps.
    twin, ref, _, _, _ = trained(hist.best_step)
    assert bitwise(net.predict(held_out), twin.predict(held_out))
    assert bitwise(net.a, twin.a) and bitwise(net.output_bias, twin.output_bias)
    assert tr.full_loss() == ref.full_loss()
    # ...and it continues like that run: the sampler went back too.
    assert bitwise(tr.fit(40).loss, ref.fit(40).loss)
    assert bitwise(net.predict(held_out), twin.predict(held_out))


def test_without_a_stop_it_still_ends_at_the_best_step():
    net, tr, hist, _, held_out = trained(400, eval_every=100, patience=50)
    assert not hist.stopped_early and hist.steps == 400
    best_step, best_loss = min(hist.val_loss, key=lambda sv: sv[1])
    assert hist.best_step == best_step == tr.steps_done
    twin, _, _, _, _ = trained(best_step) if best_step else (None,) * 5
    if twin is not None:
        assert bitwise(net.predict(held_out), twin.predict(held_out))


def test_the_validation_loss_at_the_best_step_is_what_the_net_now_has():
    net, tr, hist, _, held_out = trained(3000, eval_every=25, patience=2)
    f = net.predict(held_out)
    assert 0.5 * np.mean((f - held_out.y) ** 2) == pytest.approx(dict(hist.val_loss)[hist.best_step], rel=1e-12)


def test_cross_entropy_early_stopping_is_on_the_cross_entropy():
    train, held_out = noisy_problem()
    labels = lambda d: np.digitize(d.y, [-0.3, 0.3])  # noqa: E731
    train, held_out = train.with_targets(labels(train)), held_out.with_targets(labels(held_out))
    net = kn.TwoLayerNet(train.dims, 512, seed=2, outputs=3)
    tr = kn.Trainer(net, train, loss="cross_entropy", **KW)
    hist = tr.fit(2000, eval_every=25, validation=held_out, patience=3)
    f = net.predict(held_out)
    f = f - f.max(axis=1, keepdims=True)
    ce = np.log(np.exp(f).sum(axis=1)) - f[np.arange(held_out.n), held_out.y.astype(int)]
    assert ce.mean() == pytest.approx(dict(hist.val_loss)[hist.best_step], rel=1e-10)


def test_other_trainers_of_the_net_are_stale_after_it_goes_back():
    train, held_out = noisy_problem()
    net = kn.TwoLayerNet(train.dims, 256, seed=2)
    other = kn.Trainer(net, train, **KW)
    other.fit(5)
    tr = kn.Trainer(net, train, **KW)
    hist = tr.fit(300, eval_every=10, validation=held_out, patience=1)
    assert hist.best_step != tr.steps_done + hist.steps or hist.stopped_early
    with pytest.raises(kn.StaleTrainerError):
        other.fit(1)


@pytest.mark.parametrize(
    "fit,match",
    [
        (dict(patience=2), "patience"),  # no validation
        (dict(patience=2, validation="held"), "patience"),  # eval_every = 0
        (dict(patience=0, validation="held", eval_every=5), "patience"),
        (dict(patience=-1, validation="held", eval_every=5), "patience"),
    ],
)
def test_bad_patience_is_refused_before_any_step(fit, match):
    train, held_out = noisy_problem()
    net = kn.TwoLayerNet(train.dims, 128, seed=2)
    tr = kn.Trainer(net, train, **KW)
    if fit.get("validation") == "held":
        fit["validation"] = held_out
    with pytest.raises(kn.ArgumentError, match=match):
        tr.fit(10, **fit)
    assert tr.steps_done == 0


def test_load_state_refuses_another_nets_state():
    net = kn.TwoLayerNet((4, 4), width=64, seed=1)
    for other in [
        kn.TwoLayerNet((4, 4), width=64, seed=2),
        kn.TwoLayerNet((4, 4), width=128, seed=1),
        kn.TwoLayerNet((4, 4), width=64, seed=1, outputs=2),
        kn.TwoLayerNet((2, 8), width=64, seed=1),
    ]:
        with pytest.raises(kn.ArgumentError, match="another net"):
            net.load_state(other.to_state())


def test_load_state_restores_the_weights_and_the_head():
    train, held_out = noisy_problem()
    net = kn.TwoLayerNet(train.dims, 128, seed=2)
    tr = kn.Trainer(net, train, lr_b=1.0, **KW)
    tr.fit(20)
    saved = net.to_state()
    f, a, b, c = net.predict(held_out), net.a.copy(), net.thresholds.copy(), net.output_bias
    tr.fit(20)
    assert not bitwise(net.predict(held_out), f)
    net.load_state(saved)
    assert bitwise(net.predict(held_out), f)
    assert bitwise(net.a, a) and bitwise(net.thresholds, b) and net.output_bias == c
