"""The estimators' linear start: the exact ridge fit of the linear term,
checked against scikit-learn's Ridge and a brute-force GCV."""

import kronnet as kn
import numpy as np
import pytest
from kronnet.training.ridge import RELATIVE_LAMBDAS, ridge_linear, start_linear

sklearn = pytest.importorskip("sklearn")
from kronnet.sklearn import KronNetRegressor  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402


def brute_gcv(X, y, lam):
    """n·RSS / (n − tr H)² with the hat matrix H formed explicitly."""
    n, d = X.shape
    Xc = X - X.mean(axis=0)
    H = Xc @ np.linalg.solve(Xc.T @ Xc + lam * np.eye(d), Xc.T)
    r = y - y.mean() - H @ (y - y.mean())
    return n * float(r @ r) / (n - 1 - np.trace(H)) ** 2


@pytest.mark.parametrize("kind", ["kron", "pairs"])
def test_ridge_matches_sklearn_and_gcv_picks_the_brute_force_minimum(kind):
    if kind == "kron":
        data = kn.make_kronecker_data(150, dims=(3, 4), seed=1)
    else:
        data = kn.make_pair_data(150, 20, dims=(3, 4), seed=1)
    X, y = data.dense(), data.y
    fit = ridge_linear(data, y)
    yc = y - y.mean()
    Xc = X - X.mean(axis=0)
    scale = np.trace(Xc.T @ Xc) / X.shape[1]
    scores = [brute_gcv(X, y, scale * r) for r in RELATIVE_LAMBDAS]
    assert fit.lam == pytest.approx(scale * RELATIVE_LAMBDAS[int(np.argmin(scores))], rel=1e-12)
    assert fit.gcv == pytest.approx(min(scores), rel=1e-8)
    ref = Ridge(alpha=fit.lam).fit(X, y)
    np.testing.assert_allclose(fit.weights[:, 0], ref.coef_, rtol=1e-9, atol=1e-12)
    # The dual coefficients reproduce the same weights (v lives in the span of the points).
    np.testing.assert_allclose(X.T @ fit.beta[:, 0], ref.coef_, rtol=1e-9, atol=1e-12)
    assert fit.intercept[0] == pytest.approx(ref.intercept_, rel=1e-9)
    del yc


def test_multi_output_ridge_is_per_column():
    data = kn.make_kronecker_data(80, dims=(2, 3), seed=2)
    Y = np.column_stack([data.y, np.cos(3 * data.y)])
    fit = ridge_linear(data, Y, lambdas=[0.3])
    ref = Ridge(alpha=0.3).fit(data.dense(), Y)
    np.testing.assert_allclose(fit.weights, ref.coef_.T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit.intercept, ref.intercept_, rtol=1e-9)


def test_start_linear_sets_the_nets_linear_term_and_bias():
    data = kn.make_pair_data(120, 20, dims=(3, 3), seed=3)
    net = kn.TwoLayerNet(data.dims, width=32, seed=0)
    hidden = net.predict(data)
    fit = ridge_linear(data, data.y - hidden, lambdas=[0.05])
    start_linear(net, data, fit)
    ref = Ridge(alpha=0.05).fit(data.dense(), data.y - hidden)
    linear = ref.predict(data.dense())
    np.testing.assert_allclose(net.predict(data), hidden + linear, atol=1e-10)
    # A trainer on those points continues from it: its first loss is the start's.
    tr = kn.Trainer(net, data, lr=1e-9, batch_size=8)
    want = 0.5 * np.mean((hidden + linear - data.y) ** 2)
    assert tr.full_loss() == pytest.approx(want, rel=1e-9)


def test_the_regressor_starts_from_ridge_on_its_scaled_standardized_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = X @ rng.normal(size=5) + 0.1 * rng.normal(size=200)
    tiny = dict(lr=1e-12, lr_a=1e-12, lr_c=1e-12)
    reg = KronNetRegressor(
        width=64, max_steps=1, random_state=0, early_stopping=False, output_start="none", **tiny
    ).fit(X, y)
    assert reg.ridge_lambda_ is not None
    Xs = X * reg.input_scale_
    ref = Ridge(alpha=reg.ridge_lambda_).fit(Xs, (y - reg.y_mean_) / reg.y_scale_)
    want = reg.y_mean_ + reg.y_scale_ * ref.predict(Xs)
    np.testing.assert_allclose(reg.predict(X), want, rtol=0, atol=1e-6)
    # The start alone is a good linear model here.
    assert reg.score(X, y) > 0.99
    # "none" starts v at zero: far from it after one tiny step.
    none = KronNetRegressor(
        width=64,
        max_steps=1,
        random_state=0,
        linear_start="none",
        output_start="none",
        early_stopping=False,
        **tiny,
    ).fit(X, y)
    assert none.ridge_lambda_ is None and none.score(X, y) < 0.5


def test_a_classifiers_start_is_the_logistic_regression_of_its_labels():
    from kronnet.sklearn import KronNetClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 4))
    y = np.argmax(X[:, :3] + 0.5 * rng.normal(size=(90, 3)), axis=1)
    tiny = dict(lr=1e-12, lr_a=1e-12, lr_c=1e-12)
    for labels in (y, (y == 0).astype(int)):  # multinomial, then logistic
        # output_start="none": the logistic start, never the indicator one.
        clf = KronNetClassifier(
            width=16, max_steps=1, random_state=0, early_stopping=False, output_start="none", **tiny
        ).fit(X, labels)
        # LogisticRegression() on the unscaled features: the penalty C = 1 there.
        ref = LogisticRegression(max_iter=5000, tol=1e-10).fit(X, labels)
        np.testing.assert_allclose(clf.decision_function(X), ref.decision_function(X), rtol=0, atol=1e-4)
        np.testing.assert_array_equal(clf.predict(X), ref.predict(X))


def test_a_classifier_on_large_n_d_starts_from_calibrated_ridge():
    from kronnet import sklearn as ks
    from kronnet.sklearn import KronNetClassifier
    from kronnet.training.classifier_start import TEMPERATURES

    rng = np.random.default_rng(2)
    X = rng.normal(size=(90, 4))
    y = np.argmax(X[:, :3], axis=1)
    tiny = dict(lr=1e-12, lr_a=1e-12, lr_c=1e-12)
    old = ks.LOGISTIC_START_ENTRIES
    ks.LOGISTIC_START_ENTRIES = 0
    try:
        clf = KronNetClassifier(
            width=16, max_steps=1, random_state=0, early_stopping=False, output_start="none", **tiny
        ).fit(X, y)
    finally:
        ks.LOGISTIC_START_ENTRIES = old
    Xs = X * clf.input_scale_
    onehot = np.eye(3)[y]
    ref = Ridge(alpha=clf.ridge_lambda_).fit(Xs, onehot).predict(Xs)

    def ce(z):
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - np.sum(onehot * z, axis=1)))

    s = min(TEMPERATURES, key=lambda t: ce(t * ref))
    np.testing.assert_allclose(clf.decision_function(X), s * ref, rtol=0, atol=1e-6)


def test_a_large_d_has_no_linear_start():
    data = kn.make_kronecker_data(20, dims=(80, 80), seed=0)  # d = 6400 > MAX_RIDGE_D
    reg = KronNetRegressor(width=16, max_steps=2, random_state=0, early_stopping=False).fit(data)
    assert reg.ridge_lambda_ is None


def test_a_bad_linear_start_is_refused():
    with pytest.raises(ValueError, match="linear_start"):
        KronNetRegressor(linear_start="lasso").fit(np.eye(3), np.ones(3))
