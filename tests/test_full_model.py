"""The full model (C outputs, trainable output weights a, per-neuron
thresholds b, output bias c and linear term V; squared, logistic and
cross-entropy losses; ridge penalties; learning-rate schedules) is the same
algorithm on every backend and index as the independent NumPy reference
reference.FullReferenceSGD: every step's loss, the trained parameters and
predictions on unseen points agree to 1e-9 relative. The reference itself is
checked against finite differences in tests/test_reference.py."""

import itertools

import kronnet as kn
import numpy as np
import pytest
from reference import (
    RTOL,
    FullReferenceSGD,
    ReferenceSGD,
    assert_full_losses_close,
    assert_losses_close,
    cosine,
    forward,
    inverse_time,
    kron_rows,
    rel_err,
)

DIMS, N, WIDTH, S, STEPS = (4, 6), 24, 64, 4, 120
DATA_SEED, UNSEEN_SEED, NET_SEED, BATCH_SEED, TARGET_SEED = 3, 4, 11, 5, 7

# (loss, C): every loss with its valid numbers of outputs.
LOSS_CASES = [("squared", 1), ("squared", 3), ("logistic", 1), ("cross_entropy", 2), ("cross_entropy", 4)]

# Rates of a, b, c when trained (W's is kn.suggest_lr). They train visibly
# (a moves by ~0.3-0.9, b by ~0.05-0.1, c by ~0.1-1 over the run) and no step
# diverges; the logistic and cross-entropy gradients are bounded by 1 per
# output, so they take larger rates than the squared loss.
RATES = {
    "squared": dict(lr_a=0.3, lr_b=0.1, lr_c=0.3),
    "logistic": dict(lr_a=0.5, lr_b=0.2, lr_c=0.5),
    "cross_entropy": dict(lr_a=0.5, lr_b=0.2, lr_c=0.5),
}
LR_V = {"squared": 0.5, "logistic": 1.0, "cross_entropy": 1.0}
EXTRA = ("lr_a", "lr_b", "lr_c", "lr_v")
SUBSETS = ["".join(s) for k in range(4) for s in itertools.combinations("abc", k)]  # "", "a", ..., "abc"
INDEXES = ("scan", "tree", "bits")


def explicit_batches(n, steps, size, seed):
    rng = np.random.default_rng(seed)
    out = [rng.integers(0, n, size=size) for _ in range(steps)]
    out[0] = np.array([0, 0, 1, 0][:size] if size >= 2 else [0])  # repeats accumulate
    out[1] = np.full(size, n - 1)
    return out


def make_targets(loss, C, data):
    """squared: the teacher targets (C = 1) or Gaussian (n, C) floats;
    logistic: the teacher's sign as 0/1 floats; cross-entropy: int64 labels
    with every class present."""
    rng = np.random.default_rng(TARGET_SEED)
    if loss == "squared":
        return data.y.copy() if C == 1 else rng.standard_normal((data.n, C))
    if loss == "logistic":
        y = (data.y > 0).astype(np.float64)
        assert 0 < y.sum() < data.n
        return y
    y = rng.integers(0, C, data.n).astype(np.int64)
    assert len(np.unique(y)) == C
    return y


def rates_for(loss, trained, lr_v=False):
    """lr_a, lr_b, lr_c (and lr_v) for the parameters named in `trained`, 0 for the others."""
    rates = {name: (RATES[loss][name] if name[-1] in trained else 0.0) for name in ("lr_a", "lr_b", "lr_c")}
    rates["lr_v"] = LR_V[loss] if lr_v else 0.0
    return rates


def reference_schedule(schedule):
    if schedule is None:
        return None
    name, value = schedule
    return {"inverse_time": inverse_time, "cosine": cosine}[name](value)


def check_initial_state(net, C):
    """What a new net holds: C outputs, a of ±1, every threshold at the
    scalar threshold, c = 0 and V = 0."""
    m, d = WIDTH, int(np.prod(DIMS))
    assert net.outputs == C
    a = np.asarray(net.a)
    assert a.shape == ((m,) if C == 1 else (m, C))
    assert np.all(np.abs(a) == 1.0)
    thresholds = np.asarray(net.thresholds)
    assert thresholds.shape == (m,)
    assert np.all(thresholds == net.threshold)
    if C == 1:
        assert isinstance(net.output_bias, float) and net.output_bias == 0.0
    else:
        np.testing.assert_array_equal(net.output_bias, np.zeros(C))
    V = np.asarray(net.linear_weights())
    assert V.shape == ((d,) if C == 1 else (C, d))
    assert np.all(V == 0.0)


class Run:
    """A net, its trainer and the reference, started from the net's initial
    state with the same rates."""

    def __init__(self, loss, C, backend="kron", index="scan", gram="precomputed", schedule=None, width=WIDTH, **rates):
        data = kn.make_kronecker_data(N, dims=DIMS, seed=DATA_SEED)
        self.y = make_targets(loss, C, data)
        self.data = data.with_targets(self.y)
        self.unseen = kn.make_kronecker_data(6, dims=DIMS, seed=UNSEEN_SEED)
        self.net = kn.TwoLayerNet(DIMS, width, outputs=C, seed=NET_SEED)
        check_initial_state(self.net, C)
        self.C, self.m = C, width
        self.lr = kn.suggest_lr(self.net, S)
        self.W0 = self.net.initial_weights()
        self.a0 = np.array(self.net.a, dtype=np.float64, copy=True)
        self.ref = FullReferenceSGD(
            self.W0,
            kron_rows(self.data.factors),
            self.y,
            self.a0,
            self.net.threshold,
            0.0,
            loss=loss,
            lr=self.lr,
            schedule=reference_schedule(schedule),
            **rates,
        )
        self.tr = kn.Trainer(
            self.net,
            self.data,
            lr=self.lr,
            loss=loss,
            batch_size=S,
            backend=backend,
            index=index,
            gram=gram,
            schedule=schedule,
            **rates,
        )
        self.start_loss = self.ref.full_loss()
        # How far each extra parameter of the reference got from its start
        # during the run (a final value may have come back near it).
        self.start = {name: getattr(self.ref, name).copy() for name in ("a", "b", "c", "V")}
        self.excursion = dict.fromkeys(self.start, 0.0)

    def train(self, steps=STEPS, seed=BATCH_SEED):
        losses, ref_losses = [], []
        for batch in explicit_batches(N, steps, S, seed):
            losses.append(self.tr.step(batch))
            ref_losses.append(self.ref.step(batch))
            for name, start in self.start.items():
                moved = float(np.max(np.abs(getattr(self.ref, name) - start)))
                self.excursion[name] = max(self.excursion[name], moved)
        assert np.all(np.isfinite(ref_losses))
        assert_full_losses_close(losses, ref_losses)
        return np.array(ref_losses)

    def assert_trained(self, factor=0.5):
        """The run must actually train, or agreement would prove little."""
        assert self.ref.full_loss() < factor * self.start_loss, (self.ref.full_loss(), self.start_loss)

    def assert_moved(self, names, by=1e-2):
        """Each trained extra parameter moved visibly from its start during the run."""
        for name in names:
            assert self.excursion[name] > by, f"{name} moved only {self.excursion[name]}"

    def assert_close(self, actual, name):
        """Like rel_err(actual, desired) < RTOL, but relative to the larger of
        the parameter's final size and how far it travelled during the run
        (c can end near 0 after a run that moved it, and its error scales
        with the whole path). An untrained 0 must stay exactly 0."""
        desired = getattr(self.ref, name)
        assert np.shape(actual) == desired.shape, name
        scale = max(float(np.max(np.abs(desired))), self.excursion[name])
        err = float(np.max(np.abs(actual - desired)))
        assert err <= RTOL * scale, f"{name}: error {err} against scale {scale}"

    def assert_parameters_match(self):
        net, ref, m, C = self.net, self.ref, self.m, self.C
        d = ref.W.shape[1]
        W = net.dense_weights()
        assert rel_err(W, ref.W) < RTOL
        assert rel_err(W - self.W0, ref.W - self.W0) < RTOL  # the trained part on its own
        a = np.asarray(net.a)
        assert a.shape == ((m,) if C == 1 else (m, C))
        self.assert_close(a.reshape(m, C), "a")
        thresholds = np.asarray(net.thresholds)
        assert thresholds.shape == (m,)
        self.assert_close(thresholds, "b")
        c = net.output_bias
        if C == 1:
            assert isinstance(c, float)
        else:
            assert np.shape(c) == (C,)
        self.assert_close(np.reshape(c, C), "c")
        V = np.asarray(net.linear_weights())
        assert V.shape == ((d,) if C == 1 else (C, d))
        self.assert_close(V.reshape(C, d), "V")
        expected = ref.predict(kron_rows(self.unseen.factors))
        predicted = np.asarray(net.predict(self.unseen))
        assert predicted.shape == expected.shape
        assert rel_err(predicted, expected) < RTOL
        assert_full_losses_close([self.tr.full_loss()], [ref.full_loss()])


def case_id(loss, C, trained, backend, index):
    return f"{loss}-C{C}-{trained or 'none'}-{backend}-{index}"


KRON_CASES = [
    pytest.param(
        loss,
        C,
        trained,
        "kron",
        index,
        "precomputed" if (SUBSETS.index(trained) + INDEXES.index(index)) % 2 == 0 else "columns",
        id=case_id(loss, C, trained, "kron", index),
    )  # fmt: skip
    for loss, C in LOSS_CASES
    for trained in SUBSETS
    for index in INDEXES
]
DENSE_CASES = [
    pytest.param(loss, C, trained, "dense", "auto", "auto", id=case_id(loss, C, trained, "dense", "auto"))
    for loss, C in LOSS_CASES
    for trained in ("", "abc")
]


@pytest.mark.parametrize("loss,C,trained,backend,index,gram", KRON_CASES + DENSE_CASES)
def test_full_model_matches_numpy_reference(loss, C, trained, backend, index, gram):
    run = Run(loss, C, backend, index, gram, **rates_for(loss, trained))
    run.train()
    run.assert_trained()
    run.assert_moved(trained)
    run.assert_parameters_match()


@pytest.mark.parametrize("loss,C", [("squared", 3), ("cross_entropy", 3), ("logistic", 1)])
def test_the_dense_full_loss_over_several_blocks_of_points_matches_numpy(loss, C):
    """The dense backend's full loss takes 64 points at a time at width
    4096 (about 1 MiB of preactivations a block): 150 points are three
    blocks, the last one short, each with its own linear parts."""
    n, width = 150, 4096
    data = kn.make_kronecker_data(n, dims=DIMS, seed=DATA_SEED)
    y = make_targets(loss, C, data)
    net = kn.TwoLayerNet(DIMS, width, outputs=C, seed=NET_SEED)
    lr = kn.suggest_lr(net, S)
    rates = rates_for(loss, "abc", lr_v=True)
    X = kron_rows(data.factors)
    ref = FullReferenceSGD(net.initial_weights(), X, y, np.array(net.a, dtype=np.float64), net.threshold, 0.0,
                           loss=loss, lr=lr, **rates)  # fmt: skip
    tr = kn.Trainer(net, data.with_targets(y), lr=lr, loss=loss, batch_size=S, backend="dense", **rates)
    start = ref.full_loss()
    assert_full_losses_close([tr.full_loss()], [start])
    for batch in explicit_batches(n, 60, S, BATCH_SEED):
        tr.step(batch)
        ref.step(batch)
    assert ref.full_loss() < 0.9 * start
    assert float(np.max(np.abs(ref.V))) > 1e-3  # the linear parts count in every block
    assert_full_losses_close([tr.full_loss()], [ref.full_loss()])


LINEAR_CASES = [("squared", 1), ("squared", 3), ("cross_entropy", 3)]


@pytest.mark.parametrize("loss,C", LINEAR_CASES)
@pytest.mark.parametrize("backend,index,gram", [("kron", "tree", "columns"), ("dense", "auto", "auto")])
def test_linear_term_matches_numpy_reference(loss, C, backend, index, gram):
    run = Run(loss, C, backend, index, gram, **rates_for(loss, "abc", lr_v=True))
    run.train()
    run.assert_trained()
    run.assert_moved("abcV")
    run.assert_parameters_match()


RIDGES = dict(ridge_a=0.05, ridge_b=0.2, ridge_c=0.5, ridge_v=0.2)


@pytest.mark.parametrize("backend,index,gram", [("kron", "scan", "precomputed"), ("dense", "auto", "auto")])
def test_ridge_penalties_match_numpy_reference(backend, index, gram):
    rates = rates_for("squared", "abc", lr_v=True)
    run = Run("squared", 3, backend, index, gram, **rates, **RIDGES)
    run.train()
    run.assert_trained()
    run.assert_moved("abcV")
    run.assert_parameters_match()
    # The ridges changed the run enough that ignoring them would fail.
    free = FullReferenceSGD(run.W0, run.ref.X, run.y, run.a0, run.net.threshold, 0.0, lr=run.lr, **rates)
    for batch in explicit_batches(N, STEPS, S, BATCH_SEED):
        free.step(batch)
    for name in ("a", "b", "c", "V"):
        assert rel_err(getattr(free, name), getattr(run.ref, name)) > 1e-4, name


@pytest.mark.parametrize("schedule", [("inverse_time", 30.0), ("cosine", 100)])
def test_schedules_match_numpy_reference(schedule):
    run = Run("squared", 1, "kron", "tree", "columns", schedule=schedule, **rates_for("squared", "abc", lr_v=True))
    run.train()
    run.assert_trained()
    run.assert_moved("abcV")
    run.assert_parameters_match()
    assert run.ref.t == STEPS


@pytest.mark.parametrize("loss,C", LOSS_CASES)
@pytest.mark.parametrize("backend,index,gram", [("kron", "scan", "precomputed"), ("dense", "auto", "auto")])
def test_zero_rates_leave_extra_parameters_exactly_at_init(loss, C, backend, index, gram):
    """Rates 0 (with every ridge positive, which a rate of 0 also switches
    off): a, the thresholds, c and V stay bit for bit where they started,
    while W trains as the reference does."""
    zero = dict(lr_a=0.0, lr_b=0.0, lr_c=0.0, lr_v=0.0, ridge_a=0.3, ridge_b=0.3, ridge_c=0.3, ridge_v=0.3)
    run = Run(loss, C, backend, index, gram, **zero)
    run.train(steps=40)
    net = run.net
    np.testing.assert_array_equal(np.asarray(net.a).reshape(WIDTH, C), run.a0.reshape(WIDTH, C))
    np.testing.assert_array_equal(net.thresholds, np.full(WIDTH, net.threshold))
    if C == 1:
        assert net.output_bias == 0.0
    else:
        np.testing.assert_array_equal(net.output_bias, np.zeros(C))
    assert np.all(np.asarray(net.linear_weights()) == 0.0)
    run.assert_parameters_match()


DEFAULT_CASES = [
    # dims, n, width, batch size, backend, index, gram
    ((3, 5), 11, 64, 4, "kron", "scan", "precomputed"),
    ((2, 3, 4), 10, 48, 4, "kron", "tree", "columns"),
    ((4, 4), 12, 40, 4, "kron", "bits", "precomputed"),
    ((2, 3, 4), 10, 48, 4, "dense", "auto", "auto"),
]


@pytest.mark.parametrize("dims,n,width,size,backend,index,gram", DEFAULT_CASES)
@pytest.mark.parametrize("explicit", [False, True], ids=["omitted", "explicit"])
def test_default_is_the_old_model(dims, n, width, size, backend, index, gram, explicit):
    """All extra rates 0, squared loss, C = 1 (omitted, or spelled out):
    the losses, weights and predictions of the old ReferenceSGD."""
    data = kn.make_kronecker_data(n, dims=dims, seed=3)
    unseen = kn.make_kronecker_data(6, dims=dims, seed=4)
    if explicit:
        net = kn.TwoLayerNet(dims, width, outputs=1, seed=11)
        extra = dict(loss="squared", lr_a=0.0, lr_b=0.0, lr_c=0.0, lr_v=0.0, schedule=None)
        extra.update(ridge_a=0.0, ridge_b=0.0, ridge_c=0.0, ridge_v=0.0)
    else:
        net, extra = kn.TwoLayerNet(dims, width, seed=11), {}
    assert net.outputs == 1
    np.testing.assert_array_equal(net.a, kn.TwoLayerNet(dims, width, seed=11).a)
    lr = kn.suggest_lr(net, size)
    X = kron_rows(data.factors)
    ref = ReferenceSGD(net.initial_weights(), X, data.y, net.a, net.threshold, lr)
    full = FullReferenceSGD(net.initial_weights(), X, data.y, net.a, net.threshold, 0.0, lr=lr)
    tr = kn.Trainer(net, data, lr=lr, batch_size=size, backend=backend, index=index, gram=gram, **extra)
    start_loss = ref.full_loss()
    losses, ref_losses, full_losses = [], [], []
    for batch in explicit_batches(n, 200, size, seed=5):
        losses.append(tr.step(batch))
        ref_losses.append(ref.step(batch))
        full_losses.append(full.step(batch))
    assert ref.full_loss() < 0.5 * start_loss
    assert_losses_close(losses, ref_losses)
    assert_losses_close(full_losses, ref_losses)
    assert rel_err(net.dense_weights(), ref.W) < RTOL
    predicted = net.predict(unseen)
    assert predicted.shape == (6,)
    assert rel_err(predicted, forward(ref.W, kron_rows(unseen.factors), net.a, net.threshold)) < RTOL
    assert_losses_close([tr.full_loss()], [ref.full_loss()])
    np.testing.assert_array_equal(net.thresholds, np.full(width, net.threshold))
    assert net.output_bias == 0.0
    assert np.all(np.asarray(net.linear_weights()) == 0.0)


@pytest.mark.parametrize("C", [1, 2, 3, 4])
def test_new_net_state_and_untrained_predictions(C):
    net = kn.TwoLayerNet(DIMS, WIDTH, outputs=C, seed=NET_SEED)
    check_initial_state(net, C)
    np.testing.assert_array_equal(net.dense_weights(), net.initial_weights())
    if C == 1:
        plain = kn.TwoLayerNet(DIMS, WIDTH, seed=NET_SEED)
        np.testing.assert_array_equal(net.a, plain.a)
        np.testing.assert_array_equal(net.initial_weights(), plain.initial_weights())
    probe = kn.make_kronecker_data(7, dims=DIMS, seed=UNSEEN_SEED)
    X = kron_rows(probe.factors)
    ref = FullReferenceSGD(net.initial_weights(), X, np.zeros((7, C)), net.a, net.threshold, 0.0, lr=0.0)
    predicted = np.asarray(net.predict(probe))
    assert predicted.shape == ((7,) if C == 1 else (7, C))
    assert rel_err(predicted, ref.predict(X)) < 1e-12
