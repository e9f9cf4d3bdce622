"""The estimators' output start: the output weights solved by ridge on the
hidden layer's outputs at initialization, checked against scikit-learn's
RidgeCV/Ridge, brute-force leave-one-out and a dense NumPy net."""

import warnings

import kronnet as kn
import numpy as np
import pytest
from kronnet.training.output_start import RELATIVE_LAMBDAS, hidden_outputs, ridge_features, start_output

sklearn = pytest.importorskip("sklearn")
from kronnet.sklearn import KronNetClassifier, KronNetRegressor  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import Ridge, RidgeCV  # noqa: E402

TINY = dict(lr=1e-12, lr_a=1e-12, lr_c=1e-12)


@pytest.mark.parametrize("n,m,outputs", [(40, 90, 1), (200, 30, 1), (60, 25, 3)])
def test_ridge_features_is_ridgecv_with_leave_one_out(n, m, outputs):
    rng = np.random.default_rng(n + m)
    F = np.maximum(rng.normal(size=(n, m)) - 0.5, 0.0)  # sparse, like hidden outputs
    y = F[:, :outputs] @ np.ones((outputs, outputs)) + 0.3 * rng.normal(size=(n, outputs))
    grid = [10.0**k for k in range(-3, 4)]
    fit = ridge_features(F, y, lambdas=grid)
    ref = RidgeCV(alphas=grid).fit(F, y)
    assert fit.lam == ref.alpha_
    np.testing.assert_allclose(fit.coef, ref.coef_.reshape(outputs, m).T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.intercept, np.atleast_1d(ref.intercept_), rtol=1e-8, atol=1e-10)


def test_the_leave_one_out_error_is_the_brute_force_one():
    rng = np.random.default_rng(3)
    F, y = rng.normal(size=(25, 40)), rng.normal(size=25)
    fit = ridge_features(F, y, lambdas=[0.7])
    errors = []
    for j in range(25):
        keep = np.arange(25) != j
        model = Ridge(alpha=0.7).fit(F[keep], y[keep])
        errors.append((y[j] - model.predict(F[j : j + 1])[0]) ** 2)
    assert fit.loo == pytest.approx(np.mean(errors), rel=1e-9)


def test_the_default_grid_is_relative_to_the_mean_eigenvalue():
    rng = np.random.default_rng(4)
    F, y = 5.0 * rng.normal(size=(50, 8)), rng.normal(size=50)
    Fc = F - F.mean(axis=0)
    scale = np.trace(Fc.T @ Fc) / 8
    fit = ridge_features(F, y)
    assert any(fit.lam == pytest.approx(scale * r, rel=1e-12) for r in RELATIVE_LAMBDAS)
    with pytest.raises(kn.ArgumentError, match="lambdas"):
        ridge_features(F, y, lambdas=[0.0])
    with pytest.raises(kn.ArgumentError, match="F"):
        ridge_features(F[:10], y)


@pytest.mark.parametrize("kind", ["kron", "pairs"])
def test_hidden_outputs_are_the_dense_nets(kind):
    if kind == "kron":
        data = kn.make_kronecker_data(40, dims=(3, 4), seed=0)
    else:
        data = kn.make_pair_data(40, 9, dims=(3, 4), seed=0)
    net = kn.TwoLayerNet(data.dims, width=48, threshold=0.3, seed=2)
    want = np.maximum(data.dense() @ net.initial_weights().T - 0.3, 0.0) / np.sqrt(48)
    np.testing.assert_allclose(hidden_outputs(net, data), want, rtol=1e-12, atol=1e-13)


def test_start_output_sets_a_and_adds_to_the_bias():
    data = kn.make_kronecker_data(60, dims=(2, 5), seed=1)
    net = kn.TwoLayerNet(data.dims, width=32, threshold=0.2, seed=0)
    phi = hidden_outputs(net, data)
    fit = ridge_features(phi, data.y, lambdas=[0.01])
    start_output(net, fit)
    dense = np.maximum(data.dense() @ net.initial_weights().T - 0.2, 0.0) / np.sqrt(32)
    ref = Ridge(alpha=0.01).fit(dense, data.y)
    np.testing.assert_allclose(net.predict(data), ref.predict(dense), rtol=0, atol=1e-9)
    # A trainer continues from it: its first loss is the start's.
    tr = kn.Trainer(net, data, lr=1e-9, lr_a=1e-9, batch_size=8)
    assert tr.full_loss() == pytest.approx(0.5 * np.mean((ref.predict(dense) - data.y) ** 2), rel=1e-9)


def _start_reference(reg, X, y):
    """The regressor's start in dense NumPy and scikit-learn: Ridge on the
    scaled points, then Ridge on the hidden outputs at W(0) of what it leaves."""
    Xs = X * reg.input_scale_
    t = (y - reg.y_mean_) / reg.y_scale_
    linear = Ridge(alpha=reg.ridge_lambda_).fit(Xs, t)
    m = reg.net_.width
    W0 = kn.TwoLayerNet(reg.net_.dims, width=m, threshold=reg.net_.threshold, seed=reg.net_.seed).initial_weights()

    def phi(Z):
        return np.maximum(Z * reg.input_scale_ @ W0.T - reg.net_.threshold, 0.0) / np.sqrt(m)

    output = Ridge(alpha=reg.output_lambda_).fit(phi(X), t - linear.predict(Xs))
    return lambda Z: reg.y_mean_ + reg.y_scale_ * (linear.predict(Z * reg.input_scale_) + output.predict(phi(Z)))


def test_the_regressor_starts_from_both_ridge_fits():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(150, 4))
    y = X[:, 0] + np.abs(X[:, 1]) + 0.1 * rng.normal(size=150)
    reg = KronNetRegressor(width=96, max_steps=1, early_stopping=False, random_state=0, **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(X, y)
    assert reg.ridge_lambda_ is not None and reg.output_lambda_ is not None
    want = _start_reference(reg, X, y)
    test = rng.normal(size=(20, 4))
    np.testing.assert_allclose(reg.predict(test), want(test), rtol=0, atol=1e-6)
    # The hidden layer's part is there: |x_1| is not linear.
    linear_only = KronNetRegressor(
        width=96, max_steps=1, early_stopping=False, random_state=0, output_start="none", **TINY
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        linear_only.fit(X, y)
    assert linear_only.output_lambda_ is None
    assert reg.score(X, y) > linear_only.score(X, y) + 0.05


def test_when_no_epoch_beats_the_start_it_is_refitted_on_every_point():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(120, 3))
    y = X[:, 0] - np.abs(X[:, 2]) + 0.1 * rng.normal(size=120)
    # Rates of 1e-12 cannot beat the start on the held-out tenth.
    reg = KronNetRegressor(width=64, max_steps=200, n_iter_no_change=2, random_state=0, **TINY).fit(X, y)
    assert reg.refit_ and reg.validation_scores_ and reg.t_ < 200
    (block,) = reg.net_.coefficients
    assert block.data.n == 120
    want = _start_reference(reg, X, y)
    np.testing.assert_allclose(reg.predict(X), want(X), rtol=0, atol=1e-6)


def test_the_output_start_applies_only_to_trained_output_weights():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = KronNetClassifier(width=32, max_steps=2, lr_a=0.0, random_state=0).fit(X, X[:, 0] > 0)
        frozen = KronNetRegressor(width=32, max_steps=2, lr_a=0.0, random_state=0).fit(X, X[:, 1])
    assert clf.output_lambda_ is None and frozen.output_lambda_ is None
    # Frozen output weights stay the net's ±1.
    assert set(np.unique(frozen.net_.a)) <= {-1.0, 1.0}
    with pytest.raises(ValueError, match="output_start"):
        KronNetRegressor(output_start="lasso").fit(X, X[:, 0])


def test_on_many_points_the_leave_one_out_error_is_averaged_over_a_subset(monkeypatch):
    from kronnet.training import output_start

    monkeypatch.setattr(output_start, "LOO_ROWS", 40)
    rng = np.random.default_rng(8)
    F, y = rng.normal(size=(120, 10)), rng.normal(size=120)
    fit = ridge_features(F, y, lambdas=[0.4, 40.0])
    rows = np.sort(np.random.default_rng(0).choice(120, 40, replace=False))

    def loo(lam):
        errors = []
        for j in rows:
            keep = np.arange(120) != j
            model = Ridge(alpha=lam).fit(F[keep], y[keep])
            errors.append((y[j] - model.predict(F[j : j + 1])[0]) ** 2)
        return np.mean(errors)

    best = min((0.4, 40.0), key=loo)
    assert fit.lam == best and fit.loo == pytest.approx(loo(best), rel=1e-9)
    # The weights are the full solve's, whatever the subset.
    ref = Ridge(alpha=best).fit(F, y)
    np.testing.assert_allclose(fit.coef[:, 0], ref.coef_, rtol=1e-9, atol=1e-12)


def test_an_epoch_replaces_the_best_only_on_a_significant_held_out_gain():
    from kronnet.sklearn import SIGNIFICANCE

    reg = KronNetRegressor(tol=1e-4)
    rng = np.random.default_rng(9)
    best = rng.uniform(0.5, 1.5, size=400)
    # Below best + tol: never, whatever the errors.
    assert not reg._beats(0.50005, best - 0.1, 0.5, best)
    # Without per-point errors (a classifier, or no start): the score decides.
    assert reg._beats(0.6, None, 0.5, None)
    # A clear gain on every point.
    assert reg._beats(0.6, best - 0.1, 0.5, best)
    # The same mean gain buried in noise: mean 0.01, standard error 0.05.
    noisy = best - 0.01 + rng.normal(scale=1.0, size=400)
    gain = best - noisy
    assert gain.mean() < SIGNIFICANCE * gain.std() / np.sqrt(400)
    assert not reg._beats(0.6, noisy, 0.5, best)


def test_the_fit_without_features_replaces_a_significantly_worse_one():
    rng = np.random.default_rng(10)
    n, m = 120, 100
    F, noise = rng.normal(size=(n, m)), rng.normal(size=n)
    # A small λ on pure noise overfits: its leave-one-out error is far above
    # the mean's, which for point j is (y_j − mean of the others)².
    mean_loo = np.mean([(noise[j] - np.delete(noise, j).mean()) ** 2 for j in range(n)])
    kept = ridge_features(F, noise, lambdas=[1e-2])
    assert kept.lam == 1e-2 and kept.loo > 1.5 * mean_loo
    dropped = ridge_features(F, noise, lambdas=[1e-2], significance=2.0)
    assert dropped.lam == np.inf and dropped.loo == pytest.approx(mean_loo, rel=1e-12)
    assert not dropped.coef.any() and dropped.coef.shape == (m, 1)
    np.testing.assert_allclose(dropped.intercept, [noise.mean()], rtol=1e-14)
    # Features that carry the target are kept at the same significance.
    signal = F[:, 0] + 0.3 * noise
    assert np.isfinite(ridge_features(F, signal, significance=2.0).lam)


def _small_kernel_set(seed=0):
    """40 × 30 RBF entity kernels, 40% of the pairs, a nonlinear target."""
    rng = np.random.default_rng(seed)
    z1, z2 = rng.normal(size=(40, 3)), rng.normal(size=(30, 3))

    def rbf(z):
        return np.exp(-0.3 * np.sum((z[:, None] - z[None]) ** 2, axis=2))

    grid = np.array([(i, j) for i in range(40) for j in range(30)])
    pairs = grid[np.sort(rng.choice(len(grid), size=480, replace=False))]
    za, zb = z1[pairs[:, 0]], z2[pairs[:, 1]]
    y = np.tanh(np.sum(za * zb, axis=1)) + 0.2 * rng.normal(size=480)
    return [rbf(z1), rbf(z2)], pairs, y


def test_a_dropped_output_start_leaves_the_linear_start_alone():
    # On entity kernels the hidden outputs at W(0) only fit the noise the
    # kernel ridge leaves (the benchmark's kernel set): the start is then
    # the linear start, exactly as with output_start="none".
    kernels, pairs, y = _small_kernel_set()
    settings = dict(kernels=kernels, max_steps=1, early_stopping=False, random_state=0, **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg = KronNetRegressor(**settings).fit(pairs, y)
        linear_only = KronNetRegressor(output_start="none", **settings).fit(pairs, y)
    assert reg.output_lambda_ == np.inf and linear_only.output_lambda_ is None
    assert reg.ridge_lambda_ == linear_only.ridge_lambda_
    assert np.abs(reg.net_.a).max() < 1e-15  # 0 at the start, one step of 1e-12 rates
    grid = np.array([(i, j) for i in range(40) for j in range(30)])
    np.testing.assert_allclose(reg.predict(grid), linear_only.predict(grid), rtol=0, atol=1e-9)


def test_the_convergence_warning_says_when_the_start_outlasted_every_epoch():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(120, 3))
    y = X[:, 0] - np.abs(X[:, 2]) + 0.1 * rng.normal(size=120)
    settings = dict(width=64, max_steps=30, n_iter_no_change=100, random_state=0)
    with pytest.warns(ConvergenceWarning, match="the model is the start") as record:
        kept = KronNetRegressor(**settings, **TINY).fit(X, y)
    assert kept.refit_ and len(record) == 1
    # Without a start there is nothing to outlast.
    with pytest.warns(ConvergenceWarning) as record:
        KronNetRegressor(**settings, linear_start="none", output_start="none").fit(X, y)
    assert "the start" not in str(record[0].message)
