"""kronnet.sklearn: scikit-learn's own estimator checks, pipelines and grid
searches, cloning and pickling, exactness against a plain Trainer, and the
stopping rule."""

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

import kronnet as kn  # noqa: E402
from kronnet.sklearn import KronNetClassifier, KronNetRegressor  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
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
    reg = KronNetRegressor(width=128, batch_size=8, max_steps=97, n_iter_no_change=1000, random_state=7, tables=tables)
    reg.fit(pairs, y)
    assert reg.t_ == 97 and reg.n_iter_ == 7  # six epochs of 15 steps, then 7

    # The documented equivalent (KronNetRegressor, Notes):
    rs = check_random_state(7)
    rs.randint(0, 2**31 - 1)  # the early-stopping split seed, drawn always
    net_seed, trainer_seed = (int(s) for s in rs.randint(0, 2**31 - 1, size=2))
    net = kn.TwoLayerNet(data.dims, width=128, seed=net_seed)
    lr = kn.suggest_lr(net, 8)  # the tables are unit-norm: "auto" is exactly suggest_lr
    assert reg.lr_ == [lr]
    tr = kn.Trainer(net, kn.PairData(tables, pairs, y), lr=lr, batch_size=8, seed=trainer_seed)
    hist = tr.fit(97)

    test = np.array([[0, 0], [11, 9], [3, 4], [5, 1]])
    np.testing.assert_allclose(reg.predict(test), net.predict(kn.PairData(tables, test)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(reg.predict(pairs), net.predict(data), rtol=0, atol=1e-12)
    np.testing.assert_allclose(reg.loss_curve_[0], hist.loss[:15].mean(), rtol=0, atol=1e-12)

    # Pairs are rows: cross-validation splits them like any samples.
    scores = cross_val_score(clone(reg).set_params(max_steps=60), pairs, y, cv=3)
    assert scores.shape == (3,) and np.isfinite(scores).all()


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
    assert len(clf.nets_) == 4
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
    assert reg.t_ == 3 and reg.n_iter_ == 1


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
    assert reg.best_validation_score_ == max(reg.validation_scores_)
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

    warm = KronNetRegressor(width=64, max_steps=9, warm_start=True, random_state=0).fit(X, y)
    net = warm.net_
    warm.fit(X, y)
    assert warm.net_ is net and warm.t_ == 18
    cold = KronNetRegressor(width=64, max_steps=18, random_state=0).fit(X, y)
    np.testing.assert_allclose(warm.predict(X), cold.predict(X), rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_auto_lr_recovers_from_divergence(monkeypatch):
    import kronnet.sklearn as ks

    # An absurd "auto" rate overflows at once; training goes on from the last
    # finite state at a quarter of the rate each time.
    monkeypatch.setattr(ks, "suggest_lr", lambda net, batch_size: 1e100)
    monkeypatch.setattr(ks, "MAX_LR_RETRIES", 400)
    X = np.repeat(np.eye(4), 8, axis=0)
    y = np.repeat([1.0, -1.0, 2.0, 0.0], 8)
    reg = KronNetRegressor(width=64, max_steps=50, random_state=0).fit(X, y)
    assert reg.lr_[0] < 1e100 and reg.t_ == 50
    assert np.isfinite(reg.predict(X)).all()
    # An explicit rate is the user's choice: its divergence is reported.
    with pytest.raises(kn.DivergenceError):
        KronNetRegressor(width=64, lr=1e100, max_steps=50, random_state=0).fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_auto_lr_scales_with_the_data_norm_and_correlation():
    X = np.eye(32)  # unit norm, uncorrelated: exactly suggest_lr
    y = np.linspace(-1, 1, 32)
    unit = KronNetRegressor(width=64, max_steps=8, random_state=0).fit(X, y)
    assert unit.lr_ == [kn.suggest_lr(unit.net_, 8)]
    big = KronNetRegressor(width=64, max_steps=8, random_state=0).fit(10 * X, y)
    assert big.lr_[0] < unit.lr_[0] / 100
    (block,) = big.net_.coefficients  # the net trains on X itself, not a rescaled copy
    np.testing.assert_allclose(block.data.norms(), 10.0)
    # Unit rows that all point roughly the same way: a batch's kernel has an
    # eigenvalue about S times its diagonal, and the rate drops with it.
    rng = np.random.default_rng(0)
    same = np.ones((64, 10)) + 0.1 * rng.standard_normal((64, 10))
    same /= np.linalg.norm(same, axis=1, keepdims=True)
    corr = KronNetRegressor(width=64, max_steps=8, random_state=0).fit(same, rng.standard_normal(64))
    assert corr.lr_[0] < unit.lr_[0] / 6


def test_unscaled_targets_on_correlated_rows_train_stably():
    # Standardized, then unit-norm rows of 10 features (highly correlated
    # directions) with targets around 150: the diagonal-only rate diverged to
    # predictions of 1e135 while staying finite.
    from sklearn.datasets import load_diabetes
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    X, y = load_diabetes(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), Normalizer(), KronNetRegressor(width=256, max_steps=2000, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(X[:330], y[:330])
    assert pipe.score(X[330:], y[330:]) > 0.0
