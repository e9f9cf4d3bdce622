"""The full model's state goes everywhere the paper's model goes: saved
files, pickles, deep copies, checkpoints and restores continue bitwise; bad
settings and targets are refused before anything trains, with the argument
named (the formulas themselves: tests/test_full_model.py)."""

import copy
import pickle

import kronnet as kn
import numpy as np
import pytest

FULL = dict(lr_a=0.4, lr_b=0.1, lr_c=0.4, lr_v=0.8, ridge_a=0.01, ridge_b=0.05, ridge_c=0.01, ridge_v=0.02)


def problem(loss, outputs, n=48, seed=0):
    data = kn.make_kronecker_data(n, dims=(4, 6), seed=seed)
    rng = np.random.default_rng(seed + 10)
    if loss == "cross_entropy":
        y = rng.integers(0, outputs, n)
    elif loss == "logistic":
        y = rng.integers(0, 2, n).astype(float)
    else:
        y = rng.standard_normal((n, outputs)) if outputs > 1 else rng.standard_normal(n)
    return data.with_targets(y)


CASES = [("squared", 1), ("squared", 3), ("logistic", 1), ("cross_entropy", 4)]


def bitwise(a, b):
    return np.asarray(a).tobytes() == np.asarray(b).tobytes()


@pytest.mark.parametrize("loss,outputs", CASES)
@pytest.mark.parametrize("backend", ["kron", "dense"])
def test_checkpoints_and_files_continue_bitwise(tmp_path, loss, outputs, backend):
    data = problem(loss, outputs)
    net = kn.TwoLayerNet(data.dims, 96, seed=2, outputs=outputs)
    tr = kn.Trainer(
        net, data, lr=kn.suggest_lr(net, 6), batch_size=6, loss=loss, backend=backend, schedule=("cosine", 300), **FULL
    )
    tr.fit(40)
    tr.checkpoint(tmp_path / "run.ckpt")
    net.save(tmp_path / "net.kronnet")
    want_pred = net.predict(data)
    again = kn.Trainer.restore(tmp_path / "run.ckpt")
    assert again.config == tr.config
    assert bitwise(again.fit(30).loss, tr.fit(30).loss)
    assert bitwise(again.net.predict(data), net.predict(data))
    for other in (kn.load(tmp_path / "net.kronnet"), pickle.loads(pickle.dumps(tr.net)), copy.deepcopy(tr.net)):
        assert other.outputs == outputs
    loaded = kn.load(tmp_path / "net.kronnet")
    assert bitwise(loaded.predict(data), want_pred)
    for twin in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        assert bitwise(twin.predict(data), net.predict(data))
        assert bitwise(twin.a, net.a) and bitwise(twin.thresholds, net.thresholds)
        assert bitwise(twin.output_bias, net.output_bias)
        assert bitwise(twin.linear_weights(), net.linear_weights())


def test_a_copy_is_independent_of_its_original():
    data = problem("squared", 3)
    net = kn.TwoLayerNet(data.dims, 64, seed=1, outputs=3)
    kn.Trainer(net, data, lr=10.0, **FULL).fit(10)
    twin = copy.deepcopy(net)
    before = (net.a.copy(), net.thresholds.copy(), net.output_bias.copy(), net.predict(data))
    kn.Trainer(twin, data, lr=10.0, **FULL).fit(10)
    assert bitwise(net.a, before[0]) and bitwise(net.thresholds, before[1])
    assert bitwise(net.output_bias, before[2]) and bitwise(net.predict(data), before[3])
    assert not bitwise(twin.predict(data), before[3])


def test_the_initial_head():
    one = kn.TwoLayerNet((3, 4), 50, seed=5)
    three = kn.TwoLayerNet((3, 4), 50, seed=5, outputs=3)
    assert one.a.shape == (50,) and three.a.shape == (50, 3)
    assert set(np.unique(three.a)) == {-1.0, 1.0}
    # One output: the a every earlier version drew.
    from kronnet import _core

    assert bitwise(one.a, _core.output_signs(5, 50))
    assert bitwise(one.thresholds, np.full(50, one.threshold))
    assert one.output_bias == 0.0 and bitwise(three.output_bias, np.zeros(3))
    assert bitwise(one.linear_weights(), np.zeros(12)) and three.linear_weights().shape == (3, 12)


def test_the_default_trainer_moves_only_w():
    data = problem("squared", 1)
    net = kn.TwoLayerNet(data.dims, 64, seed=1)
    a, b = net.a.copy(), net.thresholds.copy()
    kn.Trainer(net, data, lr=10.0).fit(30)
    assert bitwise(net.a, a) and bitwise(net.thresholds, b) and net.output_bias == 0.0
    assert not np.any(net.linear_weights())


def test_the_validation_loss_is_the_trainers_loss():
    data = problem("cross_entropy", 3)
    held = problem("cross_entropy", 3, n=20, seed=5)
    net = kn.TwoLayerNet(data.dims, 64, seed=1, outputs=3)
    hist = kn.Trainer(net, data, lr=10.0, loss="cross_entropy", lr_c=0.3).fit(20, validation=held)
    f = net.predict(held)
    top = f.max(axis=1, keepdims=True)
    want = np.mean(top[:, 0] + np.log(np.exp(f - top).sum(axis=1)) - f[np.arange(held.n), held.y.astype(int)])
    assert abs(hist.val_loss[-1][1] - want) <= 1e-12 * abs(want)


# -- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,outputs,targets,arg,match",
    [
        (dict(loss="hinge"), 1, "squared", "loss", "must be one of"),
        (dict(loss="logistic"), 2, "squared2", "loss", "needs a net with outputs=1"),
        (dict(loss="cross_entropy"), 1, "labels", "loss", "outputs >= 2"),
        (
            dict(loss="cross_entropy"),
            3,
            "labels_out",
            "data.y",
            r"label 0 is 3; cross-entropy needs integer labels in \[0, 3\)",
        ),
        (dict(loss="cross_entropy"), 3, "labels_half", "data.y", "needs integer labels"),
        (dict(loss="cross_entropy"), 3, "labels_negative", "data.y", "label 1 is -1"),
        (dict(loss="logistic"), 1, "half", "data.y", "target 0 is 0.5; the logistic loss needs targets 0 or 1"),
        (dict(), 3, "squared", "data.y", r"needs \(48, 3\)"),
        (dict(), 1, "squared2", "data.y", r"needs \(48,\)"),
        (dict(lr_a=-0.1), 1, "squared", "lr_a", "must be >= 0"),
        (dict(lr_b=float("nan")), 1, "squared", "lr_b", "must be finite"),
        (dict(lr_c=float("inf")), 1, "squared", "lr_c", "must be finite"),
        (dict(lr_v=-1.0), 1, "squared", "lr_v", "must be >= 0"),
        (dict(ridge_b=-1.0), 1, "squared", "ridge_b", "must be >= 0"),
        (dict(lr_b=2.0, ridge_b=0.5), 1, "squared", "ridge_b", "times lr_b is 1 >= 1"),
        (dict(lr_v=10.0, ridge_v=0.2), 1, "squared", "ridge_v", "1 - lr_v \\* ridge_v <= 0"),
        (dict(schedule=("inverse_time", -5)), 1, "squared", "schedule tau", "must be positive"),
        (dict(schedule=("cosine", 0)), 1, "squared", "schedule steps", "must be positive"),
        (dict(schedule=("cosine", 10, 2.0)), 1, "squared", "schedule floor", r"must be in \[0, 1\]"),
        (dict(schedule="exponential"), 1, "squared", "schedule", "unknown schedule"),
        (dict(schedule=("step", 3)), 1, "squared", "schedule", "unknown schedule"),
    ],
)
def test_bad_settings_and_targets_are_refused_before_training(kwargs, outputs, targets, arg, match):
    data = kn.make_kronecker_data(48, dims=(4, 6), seed=0)
    y = {
        "squared": np.zeros(48),
        "squared2": np.zeros((48, 2)),
        "labels": np.zeros(48, dtype=int),
        "labels_out": np.full(48, 3),
        "labels_half": np.full(48, 1.5),
        "labels_negative": np.r_[0, -1, np.zeros(46)],
        "half": np.r_[0.5, np.zeros(47)],
    }[targets]
    net = kn.TwoLayerNet(data.dims, 32, outputs=outputs)
    before = net.predict(data)
    with pytest.raises(kn.ArgumentError, match=match) as info:
        kn.Trainer(net, data.with_targets(y), lr=1.0, **kwargs)
    assert info.value.arg == arg
    assert bitwise(net.predict(data), before) and not net.coefficients


def test_bad_schedule_types_and_outputs_are_refused():
    data = kn.make_kronecker_data(8, dims=(2, 2), seed=0)
    with pytest.raises(kn.ArgumentTypeError, match="schedule"):
        kn.Trainer(kn.TwoLayerNet(data.dims, 8), data, lr=1.0, schedule=3.5)
    for bad in (0, -2):
        with pytest.raises(kn.ArgumentError, match="outputs"):
            kn.TwoLayerNet((2, 2), 8, outputs=bad)
    with pytest.raises(kn.ArgumentTypeError, match="outputs"):
        kn.TwoLayerNet((2, 2), 8, outputs=2.0)


def test_a_bad_validation_set_is_refused_before_any_step():
    data = problem("cross_entropy", 3)
    net = kn.TwoLayerNet(data.dims, 32, outputs=3)
    tr = kn.Trainer(net, data, lr=1.0, loss="cross_entropy")
    bad = problem("cross_entropy", 5, n=10)  # labels up to 4 for 3 classes
    with pytest.raises(kn.ArgumentError, match="validation.y"):
        tr.fit(5, validation=bad)
    assert tr.steps_done == 0
