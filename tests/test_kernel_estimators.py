"""Estimators on entity kernels (``kernels=``): the same model as tables of
kernel features, starting as Kronecker kernel ridge regression, cold-start
pairs included."""

import warnings

import kronnet as kn
import numpy as np
import pytest

pytest.importorskip("sklearn")
from kronnet.sklearn import KronNetRegressor  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402


def gaussian_kernel(points, width):
    sq = ((points[:, None] - points[None]) ** 2).sum(-1)
    return np.exp(-sq / width)


@pytest.fixture
def pairwise():
    rng = np.random.default_rng(0)
    drugs, targets = rng.normal(size=(12, 3)), rng.normal(size=(9, 2))
    K1, K2 = gaussian_kernel(drugs, 3.0), gaussian_kernel(targets, 2.0)
    every = np.array([(a, b) for a in range(12) for b in range(9)])
    y = np.sin(drugs[every[:, 0], 0] + targets[every[:, 1], 1]) + drugs[every[:, 0], 1] * targets[every[:, 1], 0]
    # Drug 11 appears in no training pair: its pairs are cold-start.
    train = every[:, 0] != 11
    return K1, K2, every, y, train


def features(K):
    """F with F Fᵀ = K, by numpy's eigh (independent of KernelFeatures)."""
    lam, V = np.linalg.eigh(K)
    keep = lam > 1e-12 * lam.max()
    return V[:, keep] * np.sqrt(lam[keep])


def test_kernels_are_the_tables_of_their_features(pairwise):
    K1, K2, pairs, y, train = pairwise
    tables = [kn.KernelFeatures(K1).features, kn.KernelFeatures(K2).features]
    common = dict(width=32, max_steps=30, random_state=0)
    by_kernels = KronNetRegressor(kernels=[K1, K2], **common).fit(pairs[train], y[train])
    by_tables = KronNetRegressor(tables=tables, **common).fit(pairs[train], y[train])
    np.testing.assert_array_equal(by_kernels.predict(pairs), by_tables.predict(pairs))
    assert by_kernels.kernel_ranks_ == (tables[0].shape[1], tables[1].shape[1])


def test_the_start_is_kronecker_kernel_ridge_regression_cold_start_included(pairwise):
    K1, K2, pairs, y, train = pairwise
    tiny = dict(lr=1e-12, lr_a=1e-12, lr_c=1e-12)
    reg = KronNetRegressor(
        kernels=[K1, K2], width=16, max_steps=1, early_stopping=False, output_start="none", random_state=0, **tiny
    )
    reg.fit(pairs[train], y[train])
    F1, F2 = features(K1), features(K2)
    X = np.einsum("ni,nj->nij", F1[pairs[:, 0]], F2[pairs[:, 1]]).reshape(len(pairs), -1) * reg.input_scale_
    ref = Ridge(alpha=reg.ridge_lambda_).fit(X[train], (y[train] - reg.y_mean_) / reg.y_scale_)
    want = reg.y_mean_ + reg.y_scale_ * ref.predict(X)
    np.testing.assert_allclose(reg.predict(pairs), want, rtol=0, atol=1e-6)
    cold = ~train
    assert np.corrcoef(reg.predict(pairs[cold]), y[cold])[0, 1] > 0.5


def test_kernels_and_tables_together_or_a_bad_kernel_are_refused(pairwise):
    K1, K2, pairs, y, train = pairwise
    with pytest.raises(ValueError, match="not both"):
        KronNetRegressor(kernels=[K1, K2], tables=[K1, K2]).fit(pairs, y)
    with pytest.raises(kn.ArgumentError, match="symmetric"):
        KronNetRegressor(kernels=[K1 + np.triu(np.ones_like(K1), 1), K2]).fit(pairs, y)
    with pytest.raises(ValueError, match="kernels"):
        KronNetRegressor(kernels=K1).fit(pairs, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("change", [{"width": 32}, {"threshold": 0.3}, {"init": "kron"}])
def test_a_warm_start_refuses_a_changed_net_shape(change):
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(40, 3)), rng.normal(size=40)
    reg = KronNetRegressor(width=16, max_steps=5, warm_start=True, random_state=0).fit(X, y)
    reg.set_params(**change)
    with pytest.raises(ValueError, match=next(iter(change))):
        reg.fit(X, y)
    with pytest.raises(ValueError, match=next(iter(change))):
        reg.partial_fit(X, y)
    # Unchanged, it continues; with warm_start off it starts the new shape.
    reg.set_params(**{k: KronNetRegressor(width=16).get_params()[k] for k in change})
    reg.fit(X, y)
    reg.set_params(warm_start=False, **change).fit(X, y)
    if "width" in change:
        assert reg.net_.width == 32


def two_users():
    """Two first entities with opposite ratings (+1, -1) and orthogonal
    features, so nothing about one predicts the other; 30 items whose
    features barely matter (a constant feature gives each user its main
    effect). A model validated on known users scores well; on a new user,
    far below the mean (R² < 0)."""
    rng = np.random.default_rng(4)
    items = np.column_stack([rng.normal(size=(30, 3)), np.ones(30)])
    pairs = np.array([(u, i) for u in range(2) for i in range(30)])
    y = np.where(pairs[:, 0] == 0, 1.0, -1.0) + 0.05 * items[pairs[:, 1], 0] + 0.05 * rng.normal(size=len(pairs))
    return [np.eye(2), items], pairs, y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_validation_entities_judges_entities_new_to_training():
    tables, pairs, y = two_users()
    common = dict(tables=tables, width=16, max_steps=20, validation_fraction=0.2, random_state=0)
    # Held out: one of the two users, every one of its points.
    new_user = KronNetRegressor(validation_entities=0, **common).fit(pairs, y)
    assert new_user.best_validation_score_ < 0
    # Random points, or whole items (which carry little): known users.
    for held in (None, 1):
        assert KronNetRegressor(validation_entities=held, **common).fit(pairs, y).best_validation_score_ > 0.5
    # The chosen model is fitted again on every point: both users are known.
    pred = new_user.predict(pairs)
    assert new_user.refit_
    np.testing.assert_allclose(pred, np.where(pairs[:, 0] == 0, 1.0, -1.0), atol=0.3)


def test_validation_entities_needs_pairs_and_a_table_they_index():
    tables, pairs, y = two_users()
    with pytest.raises(ValueError, match="needs pairs over entity tables"):
        KronNetRegressor(validation_entities=0, max_steps=5).fit(np.random.default_rng(0).normal(size=(60, 3)), y)
    with pytest.raises(ValueError, match="validation_entities=2 but the pairs index 2 tables"):
        KronNetRegressor(tables=tables, validation_entities=2, max_steps=5).fit(pairs, y)
    for bad in (-1, True, 0.5, "0"):
        with pytest.raises(ValueError, match="validation_entities must be None or a table index"):
            KronNetRegressor(tables=tables, validation_entities=bad, max_steps=5).fit(pairs, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_classifier_holds_out_whole_entities_too():
    from kronnet.sklearn import KronNetClassifier

    tables, pairs, y = two_users()
    labels = (y > 0).astype(int) ^ (tables[1][pairs[:, 1], 0] > 0)
    clf = KronNetClassifier(tables=tables, width=16, max_steps=20, validation_entities=1, random_state=0)
    clf.fit(pairs, labels)
    assert clf.best_validation_score_ is not None and clf.score(pairs, labels) > 0.5


def test_with_entities_held_out_a_gain_must_hold_across_entities():
    """Two held-out entities, one much improved and one worse: point by
    point a clear gain (z ≈ 13); over the two entities, no evidence. Ten
    entities all improved: a gain either way."""
    rng = np.random.default_rng(0)
    reg = KronNetRegressor(tol=0.0)
    best = np.ones(100)
    one_sided = best - np.where(np.arange(100) < 50, 1.0, -0.2) - 0.01 * rng.normal(size=100)
    everywhere = best - 1.0 - 0.1 * rng.normal(size=100)
    for groups, gains in ((None, (True, True)), (np.repeat([3, 7], 50), (False, True))):
        assert reg._beats(1.0, one_sided, 0.0, best, groups) is gains[0]
        ten = None if groups is None else np.repeat(np.arange(10), 10)
        assert reg._beats(1.0, everywhere, 0.0, best, ten) is gains[1]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_predicting_for_new_entities_warns_when_the_epochs_were_chosen_on_known_ones():
    tables, pairs, y = two_users()
    tables = [np.eye(3), tables[1]]
    new = np.column_stack([np.full(30, 2), np.arange(30)])  # user 2: in no training pair
    # No exact start: the epochs are the model, chosen on random held-out pairs.
    common = dict(tables=tables, width=16, max_steps=20, linear_start="none", output_start="none", random_state=0)
    reg = KronNetRegressor(**common).fit(pairs, y)
    with pytest.warns(UserWarning, match="30 of these 30 pairs have an entity of table 0 that no training pair"):
        reg.predict(new)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)  # a UserWarning too
        reg.predict(pairs)  # known users
        # Chosen on held-out users, or not chosen at all: nothing to say.
        KronNetRegressor(validation_entities=0, **common).fit(pairs, y).predict(new)
        KronNetRegressor(early_stopping=False, **common).fit(pairs, y).predict(new)
