"""The linear start in the dual for pairs of any d: Kronecker kernel ridge
regression by conjugate gradients, against the primal solve and a dense
NumPy kernel ridge on K_1 ⊗ K_2."""

import warnings

import kronnet as kn
import numpy as np
import pytest
from kronnet.training import ridge
from kronnet.training.ridge import ridge_linear, ridge_pairs_dual

sklearn = pytest.importorskip("sklearn")
from kronnet.sklearn import KronNetRegressor  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402


def rbf(points, gamma):
    sq = np.sum((points[:, None, :] - points[None, :, :]) ** 2, axis=2)
    return np.exp(-gamma * sq)


@pytest.fixture(scope="module")
def kernel_pairs():
    """Two full-rank RBF entity kernels (d = 70 · 90 = 6300 > MAX_RIDGE_D)."""
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(70, 2)), rng.normal(size=(90, 2))
    K1, K2 = rbf(z1, 0.5), rbf(z2, 0.5)
    grid = np.array([(a, b) for a in range(70) for b in range(90)])
    pairs = grid[rng.choice(len(grid), size=900, replace=False)]
    y = np.sin(z1[pairs[:, 0], 0] * z2[pairs[:, 1], 1]) + 0.1 * rng.normal(size=900)
    return K1, K2, pairs, y


def dense_kernel_ridge(K1, K2, pairs, y, lam):
    """β = (C K C + λI)⁻¹ C y and c = ȳ − mean(K β), K formed entry by entry."""
    K = K1[np.ix_(pairs[:, 0], pairs[:, 0])] * K2[np.ix_(pairs[:, 1], pairs[:, 1])]
    n = len(y)
    C = np.eye(n) - 1.0 / n
    beta = np.linalg.solve(C @ K @ C + lam * np.eye(n), C @ y)
    return beta, y.mean() - np.mean(K @ beta)


def test_the_dual_is_the_primal_ridge():
    data = kn.make_pair_data(250, 25, dims=(3, 5), seed=2)
    Y = np.column_stack([data.y, np.cos(2 * data.y)])
    dual = ridge_pairs_dual(data, Y, lambdas=[0.3])
    primal = ridge_linear(data, Y, lambdas=[0.3])
    np.testing.assert_allclose(dual.weights, primal.weights, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dual.intercept, primal.intercept, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dual.beta, primal.beta, rtol=1e-6, atol=1e-8)


def test_the_dual_is_kernel_ridge_on_the_kronecker_kernel(kernel_pairs):
    K1, K2, pairs, y = kernel_pairs
    data = kn.PairData.from_kernels([K1, K2], pairs, y)
    assert data.d > ridge.MAX_RIDGE_D
    fit = ridge_pairs_dual(data, y, lambdas=[0.05])
    beta, c = dense_kernel_ridge(K1, K2, pairs, y, 0.05)
    np.testing.assert_allclose(fit.beta[:, 0], beta, rtol=1e-5, atol=1e-6)
    assert fit.intercept[0] == pytest.approx(c, abs=1e-6)
    # Its weights predict new pairs as the kernel expansion does.
    new = np.array([[0, 0], [69, 89], [5, 17]])
    want = (K1[np.ix_(new[:, 0], pairs[:, 0])] * K2[np.ix_(new[:, 1], pairs[:, 1])]) @ beta + c
    got = ridge.predict_linear(kn.PairData(data.tables, new), fit)[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("outputs", [1, 2])
def test_lambda_is_chosen_on_a_held_out_fifth(kernel_pairs, outputs):
    K1, K2, pairs, y = kernel_pairs
    # A second output of another smoothness: λ minimizes the mean held-out error over both.
    Y = np.column_stack([y, 3.0 * np.cos(2.0 * y)])[:, :outputs]
    data = kn.PairData.from_kernels([K1, K2], pairs, y)
    grid = [1e-3, 1e-2, 1e-1, 1.0]
    fit = ridge_pairs_dual(data, Y, lambdas=grid, seed=3)
    order = np.random.default_rng(3).permutation(len(y))
    held, kept = np.sort(order[: len(y) // 5]), np.sort(order[len(y) // 5 :])
    cross = K1[np.ix_(pairs[held, 0], pairs[kept, 0])] * K2[np.ix_(pairs[held, 1], pairs[kept, 1])]
    errors = []
    for lam in grid:
        per_output = []
        for c in range(outputs):
            beta, icpt = dense_kernel_ridge(K1, K2, pairs[kept], Y[kept, c], lam)
            per_output.append(np.mean((Y[held, c] - cross @ beta - icpt) ** 2))
        errors.append(np.mean(per_output))
    assert fit.lam == grid[int(np.argmin(errors))]
    assert fit.gcv == pytest.approx(min(errors), rel=1e-5)


def test_the_regressor_starts_from_kronecker_kernel_ridge_above_d_4096(kernel_pairs):
    K1, K2, pairs, y = kernel_pairs
    tiny = dict(lr=1e-12, lr_a=1e-12, lr_c=1e-12)
    reg = KronNetRegressor(
        kernels=[K1, K2], width=32, max_steps=1, early_stopping=False, output_start="none", random_state=0, **tiny
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(pairs, y)
    assert reg.ridge_lambda_ is not None
    # The estimator scales the points by s (their Gram by s²) and
    # standardizes the targets; its start is kernel ridge on those.
    s2 = reg.input_scale_**2
    t = (y - reg.y_mean_) / reg.y_scale_
    beta, c = dense_kernel_ridge(s2 * K1, K2, pairs, t, reg.ridge_lambda_)
    new = np.array([[0, 0], [69, 89], [5, 17], [33, 1]])
    want = reg.y_mean_ + reg.y_scale_ * (s2 * _k(K1, K2, new, pairs) @ beta + c)
    np.testing.assert_allclose(reg.predict(new), want, rtol=0, atol=1e-4)


def _k(K1, K2, rows, cols):
    return K1[np.ix_(rows[:, 0], cols[:, 0])] * K2[np.ix_(rows[:, 1], cols[:, 1])]


def test_the_dual_refuses_what_it_cannot_solve():
    data = kn.make_kronecker_data(20, dims=(3, 3), seed=0)
    with pytest.raises(kn.ArgumentError, match="two tables"):
        ridge_pairs_dual(data, data.y)
    pairs = kn.make_pair_data(30, 10, dims=(2, 2), seed=0)
    with pytest.raises(kn.ArgumentError, match="lambdas"):
        ridge_pairs_dual(pairs, pairs.y, lambdas=[-1.0])
    with pytest.raises(kn.ArgumentError, match="rows"):
        ridge_pairs_dual(pairs, pairs.y[:5])
