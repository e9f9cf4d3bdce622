"""kronnet.sklearn: scikit-learn's own estimator checks, pipelines and grid
searches, cloning and pickling, exactness against a plain Trainer, and the
stopping rule."""

import math
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

import kronnet as kn  # noqa: E402
from kronnet.sklearn import KronNetClassifier, KronNetRegressor  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils import check_random_state  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402


def _regression(n=80, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * 3.0 + 1.0
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1]
    return X, y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([KronNetRegressor(width=64, max_steps=200), KronNetClassifier(width=64, max_steps=200)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_grid_search_over_pipeline(n_jobs):
    X, y = _regression()
    pipe = make_pipeline(StandardScaler(), KronNetRegressor(max_steps=150, random_state=0))
    grid = GridSearchCV(
        pipe,
        {"kronnetregressor__width": [32, 64], "kronnetregressor__batch_size": [4, 8]},
        cv=3,
        n_jobs=n_jobs,
    )
    grid.fit(X, y)
    assert set(grid.best_params_) == {"kronnetregressor__width", "kronnetregressor__batch_size"}
    assert grid.predict(X).shape == (X.shape[0],)
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_grid_search_results_do_not_depend_on_n_jobs():
    X, y = _regression(n=48)
    pipe = make_pipeline(StandardScaler(), KronNetRegressor(max_steps=60, random_state=0))
    params = {"kronnetregressor__width": [32, 64]}
    scores = [
        GridSearchCV(pipe, params, cv=2, n_jobs=n_jobs).fit(X, y).cv_results_["mean_test_score"] for n_jobs in (1, 2)
    ]
    np.testing.assert_array_equal(scores[0], scores[1])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    "make",
    [
        lambda: KronNetRegressor(width=64, max_steps=120, random_state=3),
        lambda: KronNetClassifier(width=64, max_steps=120, random_state=3),
    ],
)
def test_clone_and_pickle_keep_predictions_bitwise(make):
    X, y = _regression(n=60)
    X = StandardScaler().fit_transform(X)
    est = make()
    if isinstance(est, KronNetClassifier):
        y = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    est.fit(X, y)
    out = est.decision_function(X) if isinstance(est, KronNetClassifier) else est.predict(X)

    refit = clone(est).fit(X, y)
    again = refit.decision_function(X) if isinstance(est, KronNetClassifier) else refit.predict(X)
    np.testing.assert_array_equal(out, again)

    loaded = pickle.loads(pickle.dumps(est))
    back = loaded.decision_function(X) if isinstance(est, KronNetClassifier) else loaded.predict(X)
    np.testing.assert_array_equal(out, back)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    # A pickled estimator keeps training (its trainers are rebuilt).
    loaded.partial_fit(X, y)
    assert loaded.n_iter_ == est.n_iter_ + 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_pair_indices_match_a_plain_trainer():
    data = kn.make_pair_data(120, (12, 10), dims=(4, 5), seed=1)
    tables, pairs, y = data.tables, np.asarray(data.pairs), np.asarray(data.y)
    reg = KronNetRegressor(
        width=128,
        batch_size=8,
        max_steps=97,
        n_iter_no_change=1000,
        random_state=7,
        tables=tables,
        linear_start="none",
        output_start="none",
        early_stopping=False,
    )
    reg.fit(pairs, y)
    assert reg.t_ == 97 and reg.n_iter_ == 7  # six epochs of 15 steps, then 7

    # The documented equivalent (KronNetRegressor, Notes):
    rs = check_random_state(7)
    rs.randint(0, 2**31 - 1)  # the early-stopping split seed, drawn always
    net_seed, trainer_seed = (int(s) for s in rs.randint(0, 2**31 - 1, size=2))
    rms = np.sqrt(np.mean(data.norms() ** 2))
    assert reg.input_scale_ == 1.0 / rms
    assert reg.y_mean_ == y.mean() and reg.y_scale_ == y.std()
    points = kn.PairData(tables, pairs).scaled(reg.input_scale_).with_targets((y - y.mean()) / y.std())
    net = kn.TwoLayerNet(data.dims, width=128, seed=net_seed)
    assert reg.rates_ == kn.suggest_rates(net, 8, points, parts="wac")
    tr = kn.Trainer(net, points, batch_size=8, seed=trainer_seed, **reg.rates_)
    hist = tr.fit(97)

    test = np.array([[0, 0], [11, 9], [3, 4], [5, 1]])
    expect = y.mean() + y.std() * net.predict(kn.PairData(tables, test).scaled(reg.input_scale_))
    np.testing.assert_allclose(reg.predict(test), expect, rtol=0, atol=1e-12)
    np.testing.assert_allclose(reg.loss_curve_[0], hist.loss[:15].mean(), rtol=0, atol=1e-12)

    # Pairs are rows: cross-validation splits them like any samples.
    scores = cross_val_score(clone(reg).set_params(max_steps=60), pairs, y, cv=3)
    assert scores.shape == (3,) and np.isfinite(scores).all()


def test_an_auto_bias_rate_after_the_exact_start_averages_over_an_epoch():
    """Once the start has fitted the output bias c, an "auto" lr_c is
    suggest_rates's times min(1, 2 G S / n) (the docstring's formula,
    computed here from a fit without a start, whose rates are uncapped);
    given rates and small data are left alone."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(1000, 6)), rng.normal(size=1000)
    common = dict(width=64, threshold=1.0, max_steps=5, early_stopping=False, random_state=0)
    started = KronNetRegressor(**common).fit(X, y)
    plain = KronNetRegressor(**common, linear_start="none", output_start="none").fit(X, y)
    assert started.ridge_lambda_ is not None and plain.ridge_lambda_ is None and plain.output_lambda_ is None
    groups = sum(1 for rate in plain.rates_.values() if rate > 0)
    assert groups == 3  # W, a and c
    assert started.rates_["lr_c"] == pytest.approx(plain.rates_["lr_c"] * 2 * groups * 8 / 1000, rel=1e-12)
    for name in ("lr", "lr_a", "lr_b", "lr_v"):
        assert started.rates_[name] == plain.rates_[name]
    given = KronNetRegressor(**common, lr_c=0.25).fit(X, y)
    assert given.rates_["lr_c"] == 0.25
    small = KronNetRegressor(**common).fit(X[:40], y[:40])  # 40 <= 2 G S: unchanged
    small_plain = KronNetRegressor(**common, linear_start="none", output_start="none").fit(X[:40], y[:40])
    assert small.rates_["lr_c"] == small_plain.rates_["lr_c"]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sgd_from_the_start_does_not_swing_the_bias_with_batch_noise():
    """Targets of pure noise: the exact start's bias is their mean, and SGD
    on c alone (a frozen, W at a negligible rate) can only add batch noise
    to it. At the suggested rate (two groups: contraction 1/4 a step,
    S = 8) c wandered 0.12 standard deviations from the start on average
    over these five seeds; averaged over an epoch, 0.011 (about
    1/sqrt(2 n) = 0.016).
    Measured against the start's own c (the same fit with c frozen)."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(2000, 6)), rng.normal(size=2000)
    drift = []
    for seed in range(5):
        common = dict(width=64, threshold=1.0, lr=1e-300, lr_a=0.0, early_stopping=False, random_state=seed)
        moved = KronNetRegressor(**common, max_steps=600).fit(X, y)
        frozen = KronNetRegressor(**common, max_steps=1, lr_c=1e-300).fit(X, y)
        drift.append(abs(float(moved.net_.to_state().output_bias[0] - frozen.net_.to_state().output_bias[0])))
    assert np.mean(drift) < 0.05, drift


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_classifier_is_one_softmax_net_as_a_plain_trainer_trains_it():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 6))
    y = np.array(["b", "a", "c"])[np.argmax(X[:, :3], axis=1)]
    clf = KronNetClassifier(
        width=128,
        max_steps=60,
        n_iter_no_change=1000,
        random_state=4,
        early_stopping=False,
        linear_start="none",
        output_start="none",
    ).fit(X, y)
    assert clf.classes_.tolist() == ["a", "b", "c"] and clf.net_.outputs == 3

    rs = check_random_state(4)
    rs.randint(0, 2**31 - 1)
    net_seed, trainer_seed = (int(s) for s in rs.randint(0, 2**31 - 1, size=2))
    labels = np.searchsorted(["a", "b", "c"], y).astype(float)
    points = kn.KronData([X]).scaled(clf.input_scale_).with_targets(labels)
    net = kn.TwoLayerNet((6,), width=128, seed=net_seed, outputs=3)
    assert clf.rates_ == kn.suggest_rates(net, 8, points, parts="wac", loss="cross_entropy")
    kn.Trainer(net, points, batch_size=8, seed=trainer_seed, loss="cross_entropy", **clf.rates_).fit(60)
    logits = net.predict(kn.KronData([X]).scaled(clf.input_scale_))
    np.testing.assert_allclose(clf.decision_function(X), logits, rtol=0, atol=1e-12)
    # Probabilities: the softmax of the logits, computed here independently.
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(clf.predict_proba(X), e / e.sum(axis=1, keepdims=True), rtol=1e-12, atol=1e-15)
    assert (clf.predict(X) == np.array(["a", "b", "c"])[np.argmax(logits, axis=1)]).all()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_binary_classifier_is_one_logistic_output():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 5))
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    clf = KronNetClassifier(width=128, max_steps=400, random_state=0).fit(X, y)
    f = clf.decision_function(X)
    assert f.shape == (80,) and clf.net_.outputs == 1
    p_yes, p_no = 1.0 / (1.0 + np.exp(-f)), 1.0 / (1.0 + np.exp(f))
    np.testing.assert_allclose(clf.predict_proba(X), np.stack([p_no, p_yes], axis=1), rtol=1e-12)
    assert (clf.predict(X) == np.where(f > 0, "yes", "no")).all()
    assert clf.score(X, y) > 0.9


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_regressor_learns_several_targets_with_one_net():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 4))
    Y = np.stack([np.sin(X[:, 0]), 100.0 + 30.0 * X[:, 1], np.cos(X[:, 2])], axis=1)
    reg = KronNetRegressor(width=512, max_steps=3000, random_state=0).fit(X[:150], Y[:150])
    assert reg.net_.outputs == 3 and reg.n_outputs_ == 3
    pred = reg.predict(X[150:])
    assert pred.shape == (50, 3)
    # Each column learnt in its own units (the 100 + 30 x column too).
    for k in range(3):
        assert r2_score(Y[150:, k], pred[:, k]) > 0.5, k
    # A one-column y keeps its shape.
    one = KronNetRegressor(width=64, max_steps=50, random_state=0).fit(X, Y[:, :1])
    assert one.predict(X[:4]).shape == (4, 1) and one.net_.outputs == 1


def test_kronecker_data_inputs():
    data = kn.make_kronecker_data(64, dims=(4, 4), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = KronNetRegressor(width=64, max_steps=40, random_state=0).fit(data)  # y from the data
        b = KronNetRegressor(width=64, max_steps=40, random_state=0).fit(data.factors, data.y)
    np.testing.assert_array_equal(a.predict(data), b.predict(data.factors))
    assert not hasattr(a, "n_features_in_")


def test_multiclass_classifier_separates_classes():
    rng = np.random.default_rng(0)
    centers = np.eye(4)
    labels = rng.integers(0, 4, size=200)
    X = centers[labels] + 0.15 * rng.normal(size=(200, 4))
    names = np.array(["w", "x", "y", "z"])[labels]
    clf = KronNetClassifier(width=256, max_steps=2000, random_state=0).fit(X[:150], names[:150])
    assert clf.classes_.tolist() == ["w", "x", "y", "z"]
    assert clf.net_.outputs == 4
    assert clf.decision_function(X).shape == (200, 4)
    assert clf.score(X[150:], names[150:]) >= 0.95


def test_binary_classifier_decision_function_is_1d():
    X = np.repeat(np.eye(3), 10, axis=0)
    y = np.repeat([0, 1, 1], 10)
    clf = KronNetClassifier(width=64, max_steps=300, random_state=0).fit(X, y)
    assert clf.decision_function(X).shape == (30,)
    assert clf.score(X, y) == 1.0


def test_convergence_warning_when_max_steps_is_tiny():
    X, y = _regression(n=40)
    X = StandardScaler().fit_transform(X)
    with pytest.warns(ConvergenceWarning, match="max_steps=3"):
        reg = KronNetRegressor(width=32, max_steps=3, random_state=0).fit(X, y)
    # Three steps on the 36 training points; then, if that epoch won, as many again on all 40 (the refit).
    assert reg.n_iter_ == 1 and reg.refit_ and reg.t_ in (3, 3 + math.ceil(3 * 40 / 36))


def test_stops_without_improvement():
    X = np.eye(8)
    y = np.linspace(-1, 1, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        reg = KronNetRegressor(width=64, max_steps=100000, n_iter_no_change=3, random_state=0).fit(X, y)
    assert reg.t_ < 100000
    assert len(reg.loss_curve_) == reg.n_iter_
    assert reg.best_loss_ == min(reg.loss_curve_)
    assert reg.validation_scores_ is None


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_early_stopping_records_validation_r2():
    X, y = _regression(n=100)
    X = StandardScaler().fit_transform(X)
    reg = KronNetRegressor(width=64, max_steps=400, early_stopping=True, n_iter_no_change=2, random_state=0)
    reg.fit(X, y)
    assert len(reg.validation_scores_) == reg.n_iter_
    # The kept weights are the start's or an epoch's (an epoch replaces them only on a
    # significant gain: test_output_start.py), and never score below the start.
    assert reg.best_validation_score_ in reg.validation_scores_ or reg.refit_
    assert reg.best_loss_ is None


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_partial_fit_runs_one_epoch_and_warm_start_continues():
    X, y = _regression(n=20)
    X = StandardScaler().fit_transform(X)
    reg = KronNetRegressor(width=64, batch_size=8, random_state=0)
    reg.partial_fit(X, y)
    assert (reg.n_iter_, reg.t_) == (1, 3)
    net = reg.net_
    reg.partial_fit(X, y)
    assert (reg.n_iter_, reg.t_) == (2, 6) and reg.net_ is net

    warm = KronNetRegressor(width=64, max_steps=9, warm_start=True, random_state=0, early_stopping=False).fit(X, y)
    net = warm.net_
    warm.fit(X, y)
    assert warm.net_ is net and warm.t_ == 18
    cold = KronNetRegressor(width=64, max_steps=18, random_state=0, early_stopping=False).fit(X, y)
    np.testing.assert_allclose(warm.predict(X), cold.predict(X), rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_auto_rates_recover_from_divergence(monkeypatch):
    import kronnet.sklearn as ks

    # Absurd "auto" rates overflow at once; training starts over at a
    # quarter of every rate each time.
    def absurd(net, batch_size, data, parts, loss):
        return {name: (1e100 if p in parts else 0.0) for p, name in zip("wabcv", ks.RATE_PARAMS)}

    monkeypatch.setattr(ks, "suggest_rates", absurd)
    monkeypatch.setattr(ks, "MAX_LR_RETRIES", 400)
    X = np.repeat(np.eye(4), 8, axis=0)
    y = np.repeat([1.0, -1.0, 2.0, 0.0], 8)
    reg = KronNetRegressor(width=64, max_steps=50, random_state=0, linear_start="none", output_start="none").fit(X, y)
    assert reg.rates_["lr"] < 1e100 and reg.rates_["lr_b"] == 0.0 and reg.t_ == 50
    assert np.isfinite(reg.predict(X)).all()
    # Explicit rates are the user's choice: their divergence is reported.
    with pytest.raises(kn.DivergenceError):
        KronNetRegressor(width=64, lr=1e100, lr_a=0.0, lr_c=0.0, max_steps=50, random_state=0).fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("seed", [73, 170])
def test_a_first_partial_fit_starts_over_when_its_epoch_diverges(seed, monkeypatch):
    import kronnet.sklearn as ks
    from sklearn.datasets import make_blobs

    # The data of scikit-learn's check_estimators_partial_fit_n_features: at
    # these seeds the first epoch diverged, and lower rates from its last
    # finite state could not bring it back (DivergenceError, or an R² of
    # -5.6e40). The call that starts the net starts over instead, as fit does.
    X, y = make_blobs(n_samples=50, random_state=1)
    reg = KronNetRegressor(width=64, max_steps=200, random_state=seed).partial_fit(X, y)
    assert (reg.n_iter_, reg.t_, len(reg.loss_curve_)) == (1, 7, 1)  # one epoch, counted once
    pred = reg.predict(X)
    assert np.isfinite(pred).all() and r2_score(y, pred) > -1.0

    def absurd(net, batch_size, data, parts, loss):
        return {name: (1e100 if p in parts else 0.0) for p, name in zip("wabcv", ks.RATE_PARAMS)}

    monkeypatch.setattr(ks, "suggest_rates", absurd)
    monkeypatch.setattr(ks, "MAX_LR_RETRIES", 400)
    reg = KronNetRegressor(width=64, random_state=seed).partial_fit(X, y)
    assert reg.rates_["lr"] < 1e100 and np.isfinite(reg.predict(X)).all()
    net = reg.net_
    reg.partial_fit(X, y)  # a later call continues the same net
    assert reg.net_ is net and reg.n_iter_ == 2


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_inputs_scale_is_taken_out_and_the_rates_follow_the_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = np.sin(X[:, 0])
    # Without a held-out split the net's block holds exactly the points the scale came from.
    unit = KronNetRegressor(width=64, max_steps=40, random_state=0, early_stopping=False).fit(X, y)
    big = KronNetRegressor(width=64, max_steps=40, random_state=0, early_stopping=False).fit(1000 * X, y)
    assert big.input_scale_ == pytest.approx(unit.input_scale_ / 1000, rel=1e-12)
    np.testing.assert_allclose(big.predict(1000 * X), unit.predict(X), rtol=1e-8, atol=1e-8)
    (block,) = unit.net_.coefficients  # the net sees points of RMS norm one
    assert np.sqrt(np.mean(block.data.norms() ** 2)) == pytest.approx(1.0)
    # Without the scaling, points of norm ~1000 fire most neurons: far
    # smaller rates keep the steps stable.
    raw = KronNetRegressor(width=64, max_steps=8, input_scale=1.0, random_state=0).fit(1000 * X, y)
    assert raw.input_scale_ == 1.0 and raw.rates_["lr"] < unit.rates_["lr"] / 1e4
    # Unit rows that all point roughly the same way: the rates drop.
    same = np.ones((64, 10)) + 0.1 * rng.standard_normal((64, 10))
    orth = np.eye(64)[:, :64]
    a = KronNetRegressor(width=64, max_steps=8, random_state=0).fit(same, rng.standard_normal(64))
    b = KronNetRegressor(width=64, max_steps=8, random_state=0).fit(orth, rng.standard_normal(64))
    assert a.rates_["lr"] < b.rates_["lr"] / 4 and a.rates_["lr_c"] == pytest.approx(b.rates_["lr_c"], rel=0.1)


def test_standardized_features_train_without_a_normalizer():
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), KronNetRegressor(width=256, max_steps=2000, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(X[:330], y[:330])
    assert pipe.score(X[330:], y[330:]) > 0.3


@pytest.mark.parametrize(
    "params,match",
    [
        (dict(lr=-1.0), "lr must be"),
        (dict(lr_a="fast"), "lr_a must be"),
        (dict(lr=0.0, lr_a=0.0, lr_c=0.0), "at least one"),
        (dict(alpha=-0.1), "alpha"),
        (dict(input_scale=0.0), "input_scale"),
        (dict(schedule="warmup"), "schedule"),
        (dict(lr_v=float("nan")), "lr_v must be"),
    ],
)
def test_bad_parameters_are_refused_at_fit(params, match):
    with pytest.raises(ValueError, match=match):
        KronNetRegressor(**params).fit(np.eye(4), np.arange(4.0))
