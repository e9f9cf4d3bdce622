"""A classifier's exact start (kronnet.training.classifier_start): the
cross-validated choice between LogisticRegression on the points and ridge on
the class indicators over [x, Φ], checked against scikit-learn's own
cross-validated LogisticRegression and RidgeCV, and the choice's effect on
data a linear model cannot separate."""

import warnings

import kronnet as kn
import numpy as np
import pytest
from kronnet.training.classifier_start import (
    TEMPERATURES,
    choose_start,
    predicted_classes,
    temperature,
    training_loss,
)
from kronnet.training.output_start import RELATIVE_LAMBDAS, activate
from kronnet.training.ridge import ridge_linear

sklearn = pytest.importorskip("sklearn")
from kronnet.sklearn import KronNetClassifier  # noqa: E402
from sklearn.datasets import make_circles  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression, RidgeCV  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_val_predict  # noqa: E402


def _problem(n=90, d=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    labels = np.argmax(X[:, :classes] + 0.5 * rng.normal(size=(n, classes)), axis=1).astype(np.float64)
    return kn.KronData([X]), X, labels


def _onehot(labels, classes):
    return np.eye(classes)[labels.astype(int)]


def test_the_logistic_candidate_is_sklearns_cross_validated_logistic_regression():
    data, X, labels = _problem()
    net = kn.TwoLayerNet(data.dims, width=16, seed=0)
    choice = choose_start(data, labels, _onehot(labels, 3), 0.0, net.preactivations(data), [0.0], None, 2.0, seed=5)
    splitter = StratifiedKFold(5, shuffle=True, random_state=5)
    reference = LogisticRegression(C=2.0, max_iter=2000, tol=1e-8)
    proba = cross_val_predict(reference, X, labels.astype(int), cv=splitter, method="predict_proba")
    assert choice.accuracy["logistic"] == pytest.approx(np.mean(np.argmax(proba, axis=1) == labels))
    # Its loss is the held-out log-loss at the best temperature: at s = 1 the
    # logits are LogisticRegression's own, so it can only be lower.
    assert choice.loss["logistic"] <= log_loss(labels, proba) + 1e-9


def test_the_indicator_candidate_is_ridgecv_on_the_hidden_outputs_fold_by_fold():
    data, X, labels = _problem(n=80, classes=2, seed=1)
    labels = labels.clip(0, 1)
    targets = labels[:, None]
    net = kn.TwoLayerNet(data.dims, width=24, seed=2)
    pre = net.preactivations(data)
    b = 0.3
    choice = choose_start(data, labels, targets, 0.5, pre, [b], None, None, seed=3)
    assert list(choice.accuracy) == ["indicators@0.3"]
    # Independently: RidgeCV (leave-one-out) on Φ of each fold's fitting
    # points over the same relative λ grid, scored on the held-out fold.
    phi = np.maximum(X @ net.dense_weights().T - b, 0.0) / np.sqrt(24)
    np.testing.assert_allclose(activate(pre, b), phi, atol=1e-12)
    held = np.zeros((80, 1))
    for fit_rows, test_rows in StratifiedKFold(5, shuffle=True, random_state=3).split(X, labels):
        F = phi[fit_rows]
        Fc = F - F.mean(axis=0)
        grid = [np.trace(Fc.T @ Fc) / 24 * r for r in RELATIVE_LAMBDAS]
        model = RidgeCV(alphas=grid).fit(F, targets[fit_rows])
        held[test_rows] = model.predict(phi[test_rows]).reshape(-1, 1) - 0.5
    assert choice.accuracy["indicators@0.3"] == pytest.approx(np.mean((held[:, 0] > 0) == labels))
    best = min(training_loss(s * held, targets, "logistic") for s in TEMPERATURES)
    assert choice.loss["indicators@0.3"] == pytest.approx(best, rel=1e-8)
    assert choice.indicators and choice.threshold == b


def test_no_stratified_split_means_no_choice():
    data, _, labels = _problem(n=30)
    labels[:] = 0.0
    labels[0] = 1.0  # one point of class 1
    net = kn.TwoLayerNet(data.dims, width=8, seed=0)
    assert choose_start(data, labels, labels[:, None], 0.5, net.preactivations(data), [0.0], None, 1.0, seed=0) is None


def test_temperature_and_loss_against_sklearns_log_loss():
    rng = np.random.default_rng(4)
    raw = rng.normal(size=(50, 3))
    labels = np.argmax(raw + rng.normal(size=(50, 3)), axis=1)
    onehot = np.eye(3)[labels]
    s = temperature(raw, onehot, "cross_entropy")
    z = s * raw
    proba = np.exp(z - z.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    assert training_loss(z, onehot, "cross_entropy") == pytest.approx(log_loss(labels, proba), rel=1e-10)
    # Brute force over the same grid.
    assert s == min(TEMPERATURES, key=lambda t: log_loss(labels, _softmax(t * raw)))
    binary = raw[:, :1]
    y = (binary[:, 0] + rng.normal(size=50) > 0).astype(float)
    p = 1.0 / (1.0 + np.exp(-binary[:, 0]))
    assert training_loss(binary, y[:, None], "logistic") == pytest.approx(log_loss(y, p), rel=1e-10)
    assert predicted_classes(binary).tolist() == (binary[:, 0] > 0).astype(int).tolist()


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_on_classes_no_line_separates_the_classifier_starts_from_the_hidden_outputs():
    X, y = make_circles(400, noise=0.08, factor=0.5, random_state=0)
    train, test = slice(0, 300), slice(300, 400)
    linear = LogisticRegression().fit(X[train], y[train]).score(X[test], y[test])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = KronNetClassifier(width=128, max_steps=50, random_state=0).fit(X[train], y[train])
    assert linear < 0.7
    assert clf.output_lambda_ is not None  # the indicator start was chosen
    assert clf.score(X[test], y[test]) > 0.9
    # Its probabilities are logits of the indicator scores, not the scores.
    proba = clf.predict_proba(X[test])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert log_loss(y[test], proba) < 0.4


def test_the_indicator_start_replaces_the_logistic_one_only_when_significantly_more_accurate():
    X, y = make_circles(200, noise=0.25, factor=0.6, random_state=1)
    data, labels = kn.KronData([X]), y.astype(np.float64)
    net = kn.TwoLayerNet(data.dims, width=64, seed=0)
    pre = net.preactivations(data)
    args = (data, labels, labels[:, None], 0.5, pre, [0.0, 0.5])
    free = choose_start(*args, ridge_linear, 1.0, seed=0, significance=0.0)
    best = max(free.accuracy[name] for name in ("indicators@0", "indicators@0.5"))
    assert free.indicators == (best > free.accuracy["logistic"])
    assert free.indicators  # circles: no line separates them
    # The same folds with an unreachable bar keep the logistic start, and
    # report the same cross-validated figures.
    strict = choose_start(*args, ridge_linear, 1.0, seed=0, significance=1e9)
    assert not strict.indicators and strict.threshold is None
    assert strict.accuracy == free.accuracy and strict.loss == free.loss
    # The most accurate indicator start is the one chosen, the lower loss
    # between equals.
    rank = {b: (-free.accuracy[f"indicators@{b:.4g}"], free.loss[f"indicators@{b:.4g}"]) for b in (0.0, 0.5)}
    assert free.threshold == min(rank, key=lambda b: rank[b])


@pytest.mark.parametrize("absent", [0, 1, 2])
@pytest.mark.parametrize("output_start", ["ridge", "none"])
def test_a_first_partial_fit_batch_may_lack_classes(absent, output_start):
    # LogisticRegression on the labels present would model fewer classes
    # than the net has outputs (it used to fail on a missing middle class);
    # the start is then the indicator ridge, whose absent column scores 0.
    rng = np.random.default_rng(5)
    X = rng.normal(size=(90, 4))
    y = np.argmax(X[:, :3], axis=1)
    seen = y != absent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = KronNetClassifier(width=32, random_state=0, output_start=output_start)
        clf.partial_fit(X[seen], y[seen], classes=[0, 1, 2])
    assert clf.net_.outputs == 3
    assert set(np.unique(clf.predict(X))) <= {0, 1, 2} - {absent}
    assert clf.score(X[seen], y[seen]) > 0.8
    proba = clf.predict_proba(X)
    assert proba[:, absent].max() < 0.5
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
