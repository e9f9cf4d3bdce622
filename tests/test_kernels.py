"""Kernel inputs (KernelFeatures, PairData.from_kernels) against independent
NumPy computations: the points' inner products are the Kronecker kernel
prod_k K_k on the pairs, centring is H K H, the Nyström extension is exact
on the training entities and is K_rows F Λ⁻¹ on new ones, and every
refusal names its argument."""

import kronnet as kn
import numpy as np
import pytest
from reference import rel_err

TOL = 1e-10


def linear_kernel(n, rank, seed):
    """X Xᵀ for X (n, rank): PSD of rank min(n, rank)."""
    X = np.random.default_rng(seed).standard_normal((n, rank))
    return X @ X.T, X


def gaussian_kernel(n, dim, seed, width=1.0):
    X = np.random.default_rng(seed).standard_normal((n, dim))
    sq = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return np.exp(-sq / (2 * width * dim)), X


def centred(K):
    """H K H, H = I - 11ᵀ/N, by matrix products."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return H @ K @ H


def kron_kernel_on_pairs(kernels, pairs):
    """G[i, j] = prod_k K_k[pairs[i, k], pairs[j, k]]."""
    pairs = np.asarray(pairs)
    G = np.ones((pairs.shape[0], pairs.shape[0]))
    for k, K in enumerate(kernels):
        G *= K[np.ix_(pairs[:, k], pairs[:, k])]
    return G


def random_pairs(sizes, n, seed):
    rng = np.random.default_rng(seed)
    pairs = np.stack([rng.integers(0, s, n) for s in sizes], axis=1)
    pairs[3] = pairs[0]  # a repeated pair
    return pairs


KERNEL_SETS = {
    "linear x gaussian": lambda: [linear_kernel(12, 4, 0)[0], gaussian_kernel(9, 3, 1)[0]],
    "gaussian x gaussian x linear": lambda: [
        gaussian_kernel(7, 2, 2)[0],
        gaussian_kernel(5, 4, 3, width=0.3)[0],
        linear_kernel(6, 6, 4)[0],
    ],
    "integer x identity": lambda: [np.array([[2, 1, 0], [1, 2, 1], [0, 1, 2]]), np.eye(4)],
    "one table": lambda: [gaussian_kernel(10, 3, 5)[0]],
}


# -- PairData.from_kernels ----------------------------------------------------


@pytest.mark.parametrize("name", sorted(KERNEL_SETS))
@pytest.mark.parametrize("center", [False, True])
def test_from_kernels_reproduces_the_kronecker_kernel_on_the_pairs(name, center):
    kernels = KERNEL_SETS[name]()
    pairs = random_pairs([K.shape[0] for K in kernels], 40, seed=len(kernels))
    y = np.random.default_rng(0).standard_normal(40)
    data = kn.PairData.from_kernels(kernels, pairs, y=y, center=center)
    targets = [centred(np.asarray(K, dtype=float)) if center else K for K in kernels]
    want = kron_kernel_on_pairs(targets, pairs)
    assert rel_err(data.inner_products(), want) < TOL
    if data.d <= 4096:
        dense = data.dense()
        assert rel_err(dense @ dense.T, want) < TOL
    np.testing.assert_array_equal(data.pairs, pairs)
    np.testing.assert_array_equal(data.y, y)
    assert data.n_entities == tuple(K.shape[0] for K in kernels)


def test_from_kernels_tables_are_the_kernel_features():
    kernels = KERNEL_SETS["linear x gaussian"]()
    data = kn.PairData.from_kernels(kernels, [[0, 0], [11, 8]], center=True)
    for K, table in zip(kernels, data.tables):
        np.testing.assert_array_equal(table, kn.KernelFeatures(K, center=True).features)


def test_from_kernels_cold_start_through_transform():
    """A new entity appended to the table through transform has, for a
    linear kernel (new features in the span of the training ones), exactly
    the kernel values against every training pair."""
    K_users, X = linear_kernel(15, 3, 7)
    K_items = gaussian_kernel(8, 2, 8)[0]
    pairs = random_pairs([15, 8], 30, seed=9)
    data = kn.PairData.from_kernels([K_users, K_items], pairs)
    users, items = kn.KernelFeatures(K_users), kn.KernelFeatures(K_items)
    x_new = np.random.default_rng(10).standard_normal((2, 3))
    table = np.vstack([users.features, users.transform(x_new @ X.T)])
    new_pairs = np.array([[15, 0], [16, 5], [16, 7]])
    new = kn.PairData([table, items.features], new_pairs)
    X_all = np.vstack([X, x_new])
    want = (X_all[new_pairs[:, 0]] @ X[pairs[:, 0]].T) * K_items[np.ix_(new_pairs[:, 1], pairs[:, 1])]
    assert rel_err(new.inner_products(data), want) < TOL


# -- KernelFeatures -------------------------------------------------------------


@pytest.mark.parametrize("center", [False, True])
def test_features_factor_the_kernel(center):
    K = gaussian_kernel(30, 5, 11)[0]
    kf = kn.KernelFeatures(K, center=center)
    want = centred(K) if center else K
    F = kf.features
    assert F.shape == (30, kf.rank) and kf.n_entities == 30
    assert rel_err(F @ F.T, want) < TOL
    # Independent eigenvalues: the kept ones are the top r of H K H (or K).
    ref = np.sort(np.linalg.eigvalsh(want))[::-1][: kf.rank]
    assert rel_err(kf.eigenvalues, ref) < TOL
    assert np.all(np.diff(kf.eigenvalues) <= 0)
    assert not F.flags.writeable
    if center:
        # Centred features have zero mean over the training entities, and
        # the constant vector is in H K H's null space: r <= N - 1.
        assert np.max(np.abs(F.mean(axis=0))) < 1e-12 * np.max(np.abs(F))
        assert kf.rank <= 29


def test_centring_is_double_centring():
    K, _ = linear_kernel(10, 10, 12)
    K = K + 5.0  # a large constant part, which centring removes
    kf = kn.KernelFeatures(K, center=True)
    assert kf.center is True
    H = np.eye(10) - 1.0 / 10
    assert rel_err(kf.features @ kf.features.T, H @ K @ H) < TOL
    assert kf.rank == 9


def test_a_conditionally_positive_definite_kernel_needs_centring():
    X = np.random.default_rng(13).standard_normal((12, 3))
    K = -((X[:, None] - X[None]) ** 2).sum(-1)  # -||a - b||^2: only H K H is PSD
    with pytest.raises(kn.ArgumentError, match="not positive semi-definite"):
        kn.KernelFeatures(K)
    kf = kn.KernelFeatures(K, center=True)
    assert rel_err(kf.features @ kf.features.T, centred(K)) < TOL
    assert kf.rank == 3


@pytest.mark.parametrize("center", [False, True])
def test_transform_is_exact_on_training_entities(center):
    K = gaussian_kernel(25, 4, 14)[0]
    kf = kn.KernelFeatures(K, center=center)
    assert rel_err(kf.transform(K), kf.features) < TOL
    # Any subset of the training rows, in any order.
    rows = [4, 0, 4, 24]
    assert rel_err(kf.transform(K[rows]), kf.features[rows]) < TOL


@pytest.mark.parametrize("center", [False, True])
def test_transform_is_the_nystrom_extension_on_new_entities(center):
    rng = np.random.default_rng(15)
    X = rng.standard_normal((20, 3))
    X_new = rng.standard_normal((6, 3))

    def k(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / 4)

    K, K_new = k(X, X), k(X_new, X)
    kf = kn.KernelFeatures(K, center=center)
    got = kf.transform(K_new)
    assert got.shape == (6, kf.rank)
    if center:
        # Centring a new row with the training means: the rows of H-centred
        # [K; K_new] columns, i.e. k - mean(k) - mean_rows(K) + mean(K).
        K_new = K_new - K_new.mean(axis=1, keepdims=True) - K.mean(axis=0)[None, :] + K.mean()
        K = centred(K)
    # K_rows F Λ⁻¹ with the object's own F and Λ ...
    assert rel_err(got, K_new @ kf.features / kf.eigenvalues[None, :]) < TOL
    # ... and, sign-free, against an independent eigendecomposition: the
    # inner products with the training features are K_new projected on the
    # kept eigenvectors.
    values, vectors = np.linalg.eigh(K)
    V = vectors[:, values > 1e-12 * values.max()]
    assert rel_err(got @ kf.features.T, K_new @ V @ V.T) < TOL


def test_transform_of_nothing_is_empty():
    kf = kn.KernelFeatures(np.eye(3))
    assert kf.transform(np.empty((0, 3))).shape == (0, 3)


def test_a_rank_deficient_kernel_gives_fewer_features():
    K, X = linear_kernel(20, 4, 16)
    kf = kn.KernelFeatures(K)
    assert kf.rank == 4 < 20
    assert rel_err(kf.features @ kf.features.T, K) < TOL
    # Repeated entities (identical rows and columns) also lower the rank.
    idx = [0, 1, 1, 2, 0]
    K2 = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.3], [0.2, 0.3, 1.0]])[np.ix_(idx, idx)]
    kf2 = kn.KernelFeatures(K2)
    assert kf2.rank == 3 and rel_err(kf2.features @ kf2.features.T, K2) < TOL
    data = kn.PairData.from_kernels([K, K2], [[0, 0], [19, 4], [5, 2]])
    assert data.dims == (4, 3)
    assert rel_err(data.inner_products(), kron_kernel_on_pairs([K, K2], [[0, 0], [19, 4], [5, 2]])) < TOL


def test_a_larger_tol_truncates_to_the_leading_eigenvalues():
    K = gaussian_kernel(15, 3, 17)[0]
    full = kn.KernelFeatures(K)
    cut = full.eigenvalues[2] / full.eigenvalues[0] * 0.999
    kf = kn.KernelFeatures(K, tol=cut)
    assert kf.rank == 3
    np.testing.assert_allclose(kf.features, full.features[:, :3], rtol=0, atol=1e-12)
    assert kn.KernelFeatures(K, tol=0.0).rank >= full.rank


def test_round_off_is_accepted():
    K, _ = linear_kernel(30, 5, 18)
    values = np.linalg.eigvalsh(K)
    assert values[0] < 0 or values[0] < 1e-12 * values[-1]  # round-off zeros, of either sign
    asym = K.copy()
    asym[0, 1] *= 1 + 1e-15
    for kernel in (K, asym, K.astype(np.float32)):
        kf = kn.KernelFeatures(kernel)
        eps = np.finfo(np.asarray(kernel).dtype).eps
        assert rel_err(kf.features @ kf.features.T, np.asarray(kernel, dtype=float)) < 100 * eps
    assert kn.KernelFeatures(K).rank == 5


def test_equal_kernels_give_equal_features():
    K = gaussian_kernel(12, 3, 19)[0]
    a, b = kn.KernelFeatures(K), kn.KernelFeatures(np.asfortranarray(K.copy()))
    np.testing.assert_array_equal(a.features, b.features)
    # Each column's largest-magnitude entry is positive.
    F = a.features
    assert np.all(F[np.argmax(np.abs(F), axis=0), np.arange(F.shape[1])] > 0)
    assert repr(a) == f"KernelFeatures(N=12, rank={a.rank})"


# -- refusals ---------------------------------------------------------------------

BAD_KERNELS = {
    "not square": (np.ones((3, 4)), "must be square"),
    "not symmetric": (np.array([[2.0, 1.0], [0.5, 2.0]]), "not symmetric"),
    "NaN": (np.array([[1.0, np.nan], [np.nan, 1.0]]), "NaN or infinite"),
    "inf": (np.array([[np.inf, 0.0], [0.0, 1.0]]), "NaN or infinite"),
    "indefinite": (
        np.array([[1.0, 2.0], [2.0, 1.0]]),
        r"smallest eigenvalue is -1, -0\.333 times the largest \|eigenvalue\| \(3\)",
    ),
    "negative definite": (-np.eye(3), "not positive semi-definite"),
    "empty": (np.empty((0, 0)), "is empty"),
    "1-D": (np.ones(4), "2-D"),
    "3-D": (np.ones((2, 2, 2)), "2-D"),
    "zero": (np.zeros((3, 3)), "is zero"),
}


@pytest.mark.parametrize("case", sorted(BAD_KERNELS))
def test_kernel_features_refuses(case):
    K, message = BAD_KERNELS[case]
    with pytest.raises(kn.ArgumentError, match=message) as info:
        kn.KernelFeatures(K)
    assert info.value.arg == "K"
    assert str(info.value).startswith("K: ")


@pytest.mark.parametrize("case", sorted(BAD_KERNELS))
def test_from_kernels_names_the_kernel_it_refuses(case):
    K, message = BAD_KERNELS[case]
    good = np.eye(3)
    with pytest.raises(kn.ArgumentError, match=message) as info:
        kn.PairData.from_kernels([good, K], np.zeros((2, 2), dtype=int))
    assert info.value.arg == "kernels[1]"
    assert str(info.value).startswith("kernels[1]: ")


def test_indefinite_message_says_by_how_much():
    K = np.diag([4.0, 1.0, -0.02])
    with pytest.raises(kn.ArgumentError, match=r"-0\.02, -0\.005 times the largest \|eigenvalue\| \(4\)"):
        kn.KernelFeatures(K)
    # Centring does not hide an indefinite centred kernel.
    with pytest.raises(kn.ArgumentError, match="after centring"):
        kn.KernelFeatures(np.diag([4.0, 1.0, -0.5, 1.0]), center=True)


def test_kernel_features_refuses_bad_options():
    with pytest.raises(kn.ArgumentTypeError) as info:
        kn.KernelFeatures(np.eye(2), center=1)
    assert info.value.arg == "center"
    with pytest.raises(kn.ArgumentError) as info:
        kn.KernelFeatures(np.eye(2), tol=-1e-3)
    assert info.value.arg == "tol"
    with pytest.raises(kn.ArgumentError) as info:
        kn.KernelFeatures(np.eye(2), tol=float("nan"))
    assert info.value.arg == "tol"
    with pytest.raises(kn.ArgumentTypeError) as info:
        kn.KernelFeatures("K")
    assert info.value.arg == "K"
    with pytest.raises(kn.ArgumentTypeError) as info:
        kn.KernelFeatures(np.eye(2, dtype=object))
    assert info.value.arg == "K"


def test_transform_refuses_bad_rows():
    kf = kn.KernelFeatures(np.eye(3) + 0.1)
    for rows, message in [
        (np.ones((2, 4)), "has 4 columns, expected 3"),
        (np.ones(3), "2-D"),
        (np.array([[1.0, np.nan, 0.0]]), "NaN or infinite"),
        (np.array([[1.0, np.inf, 0.0]]), "NaN or infinite"),
    ]:
        with pytest.raises(kn.ArgumentError, match=message) as info:
            kf.transform(rows)
        assert info.value.arg == "K_rows"
    with pytest.raises(kn.ArgumentTypeError) as info:
        kf.transform("rows")
    assert info.value.arg == "K_rows"


def test_from_kernels_refuses_bad_pairs_and_kernel_lists():
    K1, K2 = np.eye(3), np.eye(4)
    with pytest.raises(kn.ArgumentError, match="has 3 columns for 2 kernels") as info:
        kn.PairData.from_kernels([K1, K2], [[0, 0, 0]])
    assert info.value.arg == "pairs"
    with pytest.raises(kn.ArgumentError, match="has 1 columns for 2 kernels") as info:
        kn.PairData.from_kernels([K1, K2], [[0], [1]])
    assert info.value.arg == "pairs"
    for bad in ([[3, 0]], [[0, 4]], [[-1, 0]]):
        with pytest.raises(kn.ArgumentError, match="out of range") as info:
            kn.PairData.from_kernels([K1, K2], bad)
        assert info.value.arg == "pairs"
    with pytest.raises(kn.ArgumentTypeError) as info:
        kn.PairData.from_kernels([K1, K2], [[0.5, 0.0]])
    assert info.value.arg == "pairs"
    with pytest.raises(kn.ArgumentTypeError) as info:
        kn.PairData.from_kernels(np.stack([K1, K1]), [[0, 0]])
    assert info.value.arg == "kernels"
    with pytest.raises(kn.ArgumentError) as info:
        kn.PairData.from_kernels([], np.empty((0, 0), dtype=int))
    assert info.value.arg == "kernels"
    with pytest.raises(kn.ArgumentTypeError) as info:
        kn.PairData.from_kernels([K1, "K2"], [[0, 0]])
    assert info.value.arg == "kernels[1]"
    with pytest.raises(kn.ArgumentError) as info:
        kn.PairData.from_kernels([K1, K2], [[0, 0]], y=[1.0, 2.0])
    assert info.value.arg == "y"
    with pytest.raises(kn.ArgumentTypeError) as info:
        kn.PairData.from_kernels([K1, K2], [[0, 0]], center="yes")
    assert info.value.arg == "center"
