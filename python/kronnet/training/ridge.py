"""The linear term solved exactly: ridge regression on the points, λ by GCV.

The model's linear term ⟨v, x⟩ lives in the span of the training points
(v = Σ_j β_j x_j), and so does the ridge solution with an unpenalized
intercept, w = (X_cᵀX_c + λI)⁻¹ X_cᵀ(y − ȳ) for the centred points
X_c = X − 1x̄ᵀ and c = ȳ − x̄ᵀw: w = Xᵀβ with β = (y − ȳ − X_c w) / λ,
whose entries sum to 0 so that X_cᵀβ = Xᵀβ. When d is
small enough for the d × d matrix XᵀX, that solution is exact and cheap, and
it is what a linear model (RidgeCV, Kronecker kernel ridge with linear entity
kernels) would reach; SGD on v gets there only slowly. Estimators start from
it and train the hidden layer on what it leaves (see docs/design.md,
"The linear start").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from ..data import KronPoints, PairData
from ..errors import ArgumentError
from ..model import TwoLayerNet
from ..model.state import BlockState

__all__ = [
    "MAX_DUAL_ENTRIES",
    "MAX_RIDGE_D",
    "RidgeFit",
    "predict_linear",
    "ridge_linear",
    "ridge_pairs_dual",
    "start_linear",
    "symmetric_eigen",
]

#: Largest d solved exactly: XᵀX is d × d (128 MiB at d = 4096) and its
#: eigendecomposition O(d³).
MAX_RIDGE_D = 4096
#: Rows of X materialized at a time (CHUNK × d floats).
CHUNK = 4096
#: The λ grid, relative to the mean eigenvalue trace(XᵀX) / d.
RELATIVE_LAMBDAS = tuple(10.0 ** (k / 2.0) for k in range(-12, 5))


@dataclass(frozen=True)
class RidgeFit:
    """The ridge solution of the linear term (:func:`ridge_linear` makes it).

    Parameters
    ----------
    beta : ndarray of shape (n, C)
        Dual coefficients: v = Σ_j beta[j] x_j (one column per output).
    intercept : ndarray of shape (C,)
        c = ȳ − x̄ᵀw (not penalized), as scikit-learn's Ridge.
    lam : float
        The λ chosen, by generalized cross-validation.
    gcv : float
        Its GCV score, n·RSS / (n − 1 − df)², per output (mean over
        outputs); df = tr X_c(X_cᵀX_c + λI)⁻¹X_cᵀ, and the intercept counts
        one more.
    weights : ndarray of shape (d, C)
        The primal solution w = Xᵀ beta.
    """

    beta: np.ndarray
    intercept: np.ndarray
    lam: float
    gcv: float
    weights: np.ndarray


def _moments(data: KronPoints, centred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(XᵀX (d × d), Σ_j x_j (d,), Xᵀ centred (d × C)) of the points."""
    if isinstance(data, PairData) and data.p == 2:
        return _pair_moments(data, centred)
    d = data.d
    gram, total, rhs = np.zeros((d, d)), np.zeros(d), np.zeros((d, centred.shape[1]))
    for start, X in _chunks(data):
        gram += X.T @ X
        total += X.sum(axis=0)
        rhs += X.T @ centred[start : start + len(X)]
    return gram, total, rhs


def _pair_moments(data: PairData, centred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_moments` of pairs u_j ⊗ i_j through the tables: with C_u = Σ_{j of
    user u} i_j i_jᵀ, XᵀX = Σ_u (u uᵀ) ⊗ C_u is one GEMM of
    N_users × d_u² by N_users × d_i² (80× fewer flops than XᵀX from the
    rows on MovieLens), and Xᵀy = Σ_u u ⊗ (Σ_j y_j i_j)."""
    (U, V), pairs = data.tables, data.pairs
    (nu, du), (_, dv) = U.shape, V.shape
    order = np.argsort(pairs[:, 0], kind="stable")
    users, items = pairs[order, 0], pairs[order, 1]
    weighted = np.concatenate([np.ones((data.n, 1)), centred[order]], axis=1)  # (n, 1 + C)
    bounds = np.searchsorted(users, np.arange(nu + 1))
    by_user = np.zeros((nu, dv, dv))
    sums = np.zeros((nu, dv, weighted.shape[1]))
    for u in range(nu):
        a, b = bounds[u], bounds[u + 1]
        if a < b:
            rows = V[items[a:b]]
            by_user[u] = rows.T @ rows
            sums[u] = rows.T @ weighted[a:b]
    outer_u = (U[:, :, None] * U[:, None, :]).reshape(nu, du * du)
    gram = (outer_u.T @ by_user.reshape(nu, dv * dv)).reshape(du, du, dv, dv)
    gram = gram.transpose(0, 2, 1, 3).reshape(du * dv, du * dv)
    both = np.einsum("ua,ubc->abc", U, sums).reshape(du * dv, weighted.shape[1])
    return gram, both[:, 0], both[:, 1:]


def _predict(data: KronPoints, weights: np.ndarray) -> np.ndarray:
    """X w (n × C)."""
    if isinstance(data, PairData) and data.p == 2:
        (U, V), pairs = data.tables, data.pairs
        W = weights.reshape(U.shape[1], V.shape[1], -1)
        left = np.einsum("ua,abc->ubc", U, W)  # (N_users, d_i, C)
        pred: np.ndarray = np.einsum("nbc,nb->nc", left[pairs[:, 0]], V[pairs[:, 1]])
        return pred
    out = np.empty((data.n, weights.shape[1]))
    for start, X in _chunks(data):
        out[start : start + len(X)] = X @ weights
    return out


def predict_linear(data: KronPoints, fit: RidgeFit) -> np.ndarray:
    """The fitted linear model's outputs on `data`'s points, X w + c (n × C).

    Parameters
    ----------
    data : KronData or PairData
        Points of the fit's dims (any number).
    fit : RidgeFit
        From :func:`ridge_linear`.

    Returns
    -------
    ndarray of shape (n, C)
        X w + c.

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> from kronnet.training.ridge import predict_linear, ridge_linear
    >>> data = kn.make_pair_data(50, 10, dims=(2, 3), seed=0)
    >>> fit = ridge_linear(data, data.y)
    >>> out = predict_linear(data, fit)
    >>> bool(np.allclose(out[:, 0], data.dense() @ fit.weights[:, 0] + fit.intercept[0]))
    True
    """
    out: np.ndarray = _predict(data, fit.weights) + fit.intercept
    return out


def _chunks(data: KronPoints) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, data.n, CHUNK):
        stop = min(start + CHUNK, data.n)
        yield start, data.take(np.arange(start, stop)).dense()


def symmetric_eigen(gram: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The eigenvectors (columns) and eigenvalues of a symmetric positive
    semi-definite matrix, largest first, round-off negatives at 0.

    Its SVD would be the same, but eigh is 3x faster on this machine's
    OpenBLAS (MovieLens u1's moments, d = 1596: 0.46 s against 1.45 s; a
    1024 x 1024 Gram of hidden outputs: 0.18 s against 0.65 s).

    Parameters
    ----------
    gram : ndarray of shape (k, k)
        Symmetric positive semi-definite.

    Returns
    -------
    vectors : ndarray of shape (k, k)
        Orthonormal eigenvectors, one per column, in the order of `values`.
    values : ndarray of shape (k,)
        The eigenvalues, non-increasing, non-negative.

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.training.ridge import symmetric_eigen
    >>> vectors, values = symmetric_eigen(np.array([[2.0, 0.0], [0.0, 5.0]]))
    >>> values.tolist(), np.abs(vectors[:, 0]).tolist()
    ([5.0, 2.0], [0.0, 1.0])
    """
    values, vectors = np.linalg.eigh(gram)
    return vectors[:, ::-1], np.maximum(values[::-1], 0.0)


def ridge_linear(data: KronPoints, y: np.ndarray, lambdas: Optional[Sequence[float]] = None) -> RidgeFit:
    """Ridge regression of `y` on the points of `data`, exactly.

    Parameters
    ----------
    data : KronData or PairData
        n points of dimension d <= ``MAX_RIDGE_D``.
    y : ndarray of shape (n,) or (n, C)
        Finite targets.
    lambdas : sequence of float, optional
        The λ values to choose from by generalized cross-validation
        (Golub, Heath & Wahba 1979); default a grid from 1e-6 to 1e2 times
        trace(XᵀX) / d.

    Returns
    -------
    RidgeFit
        The dual coefficients, intercept, weights and the λ chosen.

    Raises
    ------
    ArgumentError
        d above ``MAX_RIDGE_D``, or `y` of the wrong length.

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> from kronnet.training.ridge import ridge_linear
    >>> data = kn.make_kronecker_data(200, dims=(3, 4), seed=0)
    >>> fit = ridge_linear(data, data.y)
    >>> X = data.dense()
    >>> Xc = X - X.mean(axis=0)
    >>> w = np.linalg.solve(Xc.T @ Xc + fit.lam * np.eye(12), Xc.T @ (data.y - data.y.mean()))
    >>> bool(np.allclose(fit.weights[:, 0], w)), bool(np.allclose(X.T @ fit.beta[:, 0], w))
    (True, True)
    """
    if data.d > MAX_RIDGE_D:
        raise ArgumentError("data", f"has d = {data.d}; the exact linear solve needs d <= {MAX_RIDGE_D}")
    targets = np.asarray(y, dtype=np.float64)
    targets = targets.reshape(len(targets), -1)
    if targets.shape[0] != data.n:
        raise ArgumentError("y", f"has {targets.shape[0]} rows for {data.n} points")
    n, d = data.n, data.d
    mean_y = targets.mean(axis=0)
    centred = targets - mean_y
    # Xᵀ(y − ȳ) = X_cᵀ(y − ȳ): the targets are centred.
    gram, total_x, rhs = _moments(data, centred)
    mean_x = total_x / n
    gram -= n * np.outer(mean_x, mean_x)
    vecs, eig = symmetric_eigen(gram)
    z = vecs.T @ rhs  # (d, C)
    total = float(np.sum(centred**2))
    scale = max(float(eig.sum()) / d, np.finfo(np.float64).tiny)
    grid = [scale * r for r in RELATIVE_LAMBDAS] if lambdas is None else [float(lam) for lam in lambdas]
    if not grid or not all(np.isfinite(lam) and lam > 0 for lam in grid):
        raise ArgumentError("lambdas", "must be positive and finite")
    best_lam, best_gcv = grid[0], np.inf
    z2 = np.sum(z**2, axis=1)
    for lam in grid:
        shrink = 1.0 / (eig + lam)
        # ‖y − Xw‖² = ‖y‖² − 2 wᵀXᵀy + wᵀXᵀXw in the eigenbasis.
        rss = max(total - float(np.sum(z2 * shrink * (2.0 - eig * shrink))), 0.0)
        df = float(np.sum(eig * shrink))
        gcv = n * rss / max(n - 1.0 - df, 1.0) ** 2 / targets.shape[1]
        if gcv < best_gcv:
            best_lam, best_gcv = lam, gcv
    weights = vecs @ (z / (eig + best_lam)[:, None])
    offset = mean_x @ weights  # x̄ᵀw, (C,)
    beta = (centred - (_predict(data, weights) - offset)) / best_lam
    return RidgeFit(beta, mean_y - offset, best_lam, best_gcv, weights)


def start_linear(net: TwoLayerNet, data: KronPoints, fit: RidgeFit) -> None:
    """Sets `net`'s linear term to the ridge solution over `data`'s points
    and its output bias c to the fit's intercept, leaving everything else
    (so fit the ridge to the targets minus the net's current outputs).

    The coefficients go into the block of `data`'s points (the one a
    :class:`~kronnet.Trainer` on `data` then steps), so they are saved,
    checkpointed and sharded like any trained coefficients.

    Parameters
    ----------
    net : TwoLayerNet
        A net with C = ``fit.beta.shape[1]`` outputs and `data`'s dims.
    data : KronData or PairData
        The points `fit` was solved on.
    fit : RidgeFit
        From :func:`ridge_linear` on `data`.

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> from kronnet.training.ridge import ridge_linear, start_linear
    >>> data = kn.make_kronecker_data(100, dims=(3, 3), seed=0)
    >>> net = kn.TwoLayerNet(data.dims, width=8)
    >>> initial = net.predict(data)   # the hidden layer's part of f
    >>> fit = ridge_linear(data, data.y - initial)
    >>> start_linear(net, data, fit)
    >>> want = initial + data.dense() @ fit.weights[:, 0] + fit.intercept[0]
    >>> bool(np.allclose(net.predict(data), want))
    True
    """
    if fit.beta.shape != (data.n, net.outputs):
        raise ArgumentError("fit", f"has beta of shape {fit.beta.shape}, expected ({data.n}, {net.outputs})")
    state = net.to_state(whole=False)
    beta = fit.beta / state.v_scale
    found = net.find_block(data)
    if found is None:
        count = state.neurons[1]
        state.blocks.append(BlockState(data.kind, data.to_arrays(), data.y, np.zeros((data.n, count)), beta))
    else:
        # to_state lists the blocks in the net's order.
        j = next(j for j, blk in enumerate(net.coefficients) if blk is found)
        state.blocks[j] = replace(state.blocks[j], beta=beta)
    state.output_bias = np.asarray(fit.intercept, dtype=np.float64).reshape(net.outputs)
    net.load_state(state)


#: Largest N_1·N_2 for the dual solve: the pair grid is scattered into an
#: N_1 × N_2 matrix (and one product of it) at every conjugate-gradient step.
MAX_DUAL_ENTRIES = 2**25
#: The dual λ grid, relative to the mean diagonal of the centred kernel.
DUAL_RELATIVE_LAMBDAS = tuple(10.0 ** (k / 2.0) for k in range(-8, 3))
#: Conjugate gradients stop at this relative residual, or after MAX_CG_STEPS.
CG_TOLERANCE = 1e-8
MAX_CG_STEPS = 1000
#: The share of the pairs held out to choose the dual λ.
DUAL_HOLDOUT = 0.2


class _KroneckerKernel:
    """K[j, j'] = G_1[a_j, a_j'] G_2[b_j, b_j'] on pairs (a_j, b_j), applied
    without forming it: K β = (G_1 B G_2)[a_j, b_j] with B the N_1 × N_2
    scatter of β (Kronecker kernel ridge's matrix-vector product), so a
    product costs O(N_1 N_2 (N_1 + N_2)), free of d = d_1 d_2."""

    def __init__(self, grams: tuple[np.ndarray, np.ndarray], pairs: np.ndarray) -> None:
        self.g1, self.g2 = grams
        self.a, self.b = pairs[:, 0], pairs[:, 1]
        # Each pair's place in the row-major N_1 × N_2 grid: bincount and a
        # flat take on it are 5× and 4× faster than np.add.at and 2-D fancy
        # indexing, with the same sums in the same order (CG applies the
        # kernel hundreds of times per λ).
        self.flat = self.a.astype(np.int64) * self.g2.shape[0] + self.b

    def scatter(self, beta: np.ndarray) -> np.ndarray:
        """B (N_1 × N_2): β of these pairs at their entities (repeats add)."""
        size = self.g1.shape[0] * self.g2.shape[0]
        return np.bincount(self.flat, weights=beta, minlength=size).reshape(self.g1.shape[0], self.g2.shape[0])

    def spread(self, beta: np.ndarray) -> np.ndarray:
        """G_1 B G_2 for β of these pairs: row a, column b is Σ_j β_j K((a, b), x_j)."""
        spread: np.ndarray = self.g1 @ self.scatter(beta) @ self.g2
        return spread

    def centred(self, beta: np.ndarray) -> np.ndarray:
        """C K C β with C = I − 11ᵀ/n: the kernel of the centred points."""
        inner = beta - beta.mean()
        out = self.spread(inner).ravel()[self.flat]
        centred: np.ndarray = out - out.mean()
        return centred


def _conjugate_gradients(kernel: _KroneckerKernel, lam: float, rhs: np.ndarray, start: np.ndarray) -> np.ndarray:
    """(C K C + λI) β = rhs for rhs in the range of C (sums to 0), from `start`."""
    beta: np.ndarray = start.copy()
    residual = rhs - (kernel.centred(beta) + lam * beta)
    direction = residual.copy()
    stop = CG_TOLERANCE * max(float(np.linalg.norm(rhs)), np.finfo(np.float64).tiny)
    rr = float(residual @ residual)
    for _ in range(MAX_CG_STEPS):
        if np.sqrt(rr) <= stop:
            break
        applied = kernel.centred(direction) + lam * direction
        step = rr / float(direction @ applied)
        beta += step * direction
        residual -= step * applied
        rr, previous = float(residual @ residual), rr
        direction = residual + (rr / previous) * direction
    return beta


def ridge_pairs_dual(
    data: PairData, y: np.ndarray, lambdas: Optional[Sequence[float]] = None, seed: int = 0
) -> RidgeFit:
    """Ridge regression of `y` on the pairs of `data` in the dual, for any d:
    Kronecker kernel ridge regression (KronRLS) with an unpenalized
    intercept, by conjugate gradients.

    With K the points' Gram (K[j, j'] = G_1[a_j, a_j'] G_2[b_j, b_j'], G_k
    the tables' Grams) and C = I − 11ᵀ/n, β = (C K C + λI)⁻¹ C y is the
    ridge solution of :func:`ridge_linear` written in the dual (v = Xᵀβ,
    c = ȳ − mean(K β)); its products with K go through the two Grams, so no
    d-sized object is formed except the weights (d_1 × d_2, for
    :func:`predict_linear`). λ is chosen on a held-out fifth of the pairs
    (no trace of the hat matrix is at hand for GCV), then the fit is solved
    again on every pair.

    Parameters
    ----------
    data : PairData
        p = 2 tables with N_1·N_2 <= ``MAX_DUAL_ENTRIES``.
    y : ndarray of shape (n,) or (n, C)
        Finite targets.
    lambdas : sequence of float, optional
        The λ values to choose from; default ``DUAL_RELATIVE_LAMBDAS`` times
        the mean diagonal of C K C.
    seed : int, default 0
        Seed of the held-out fifth.

    Returns
    -------
    RidgeFit
        Dual coefficients, intercept, weights and the λ chosen; ``gcv`` is
        the held-out mean squared error at that λ.

    Raises
    ------
    ArgumentError
        Not two tables, too many entities, or `y` of the wrong length.

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> from kronnet.training.ridge import ridge_linear, ridge_pairs_dual
    >>> data = kn.make_pair_data(300, 30, dims=(3, 4), seed=0)
    >>> dual = ridge_pairs_dual(data, data.y, lambdas=[0.5])
    >>> primal = ridge_linear(data, data.y, lambdas=[0.5])
    >>> bool(np.allclose(dual.weights, primal.weights)), bool(np.allclose(dual.intercept, primal.intercept))
    (True, True)
    """
    if not isinstance(data, PairData) or data.p != 2:
        raise ArgumentError("data", "the dual solve takes PairData over two tables")
    (U, V), pairs = data.tables, np.asarray(data.pairs)
    if U.shape[0] * V.shape[0] > MAX_DUAL_ENTRIES:
        raise ArgumentError(
            "data", f"has {U.shape[0]} × {V.shape[0]} entities; the dual solve needs at most {MAX_DUAL_ENTRIES}"
        )
    targets = np.asarray(y, dtype=np.float64)
    targets = targets.reshape(len(targets), -1)
    if targets.shape[0] != data.n:
        raise ArgumentError("y", f"has {targets.shape[0]} rows for {data.n} points")
    grams = (U @ U.T, V @ V.T)

    def solve(kernel: _KroneckerKernel, t: np.ndarray, lam: float, start: Optional[np.ndarray]) -> np.ndarray:
        """β on the kernel's pairs for targets `t`, one column per output."""
        beta = np.zeros(t.shape) if start is None else start.copy()
        for c in range(t.shape[1]):
            beta[:, c] = _conjugate_gradients(kernel, lam, t[:, c] - t[:, c].mean(), beta[:, c])
        return beta

    n = data.n
    whole = _KroneckerKernel(grams, pairs)
    diag = grams[0][pairs[:, 0], pairs[:, 0]] * grams[1][pairs[:, 1], pairs[:, 1]]
    # trace(C K C) / n = mean diag(K) − mean(K): the second term by one product.
    mean_k = float(whole.spread(np.ones(n))[pairs[:, 0], pairs[:, 1]].mean()) / n
    scale = max(float(diag.mean()) - mean_k, np.finfo(np.float64).tiny)
    grid = [scale * r for r in DUAL_RELATIVE_LAMBDAS] if lambdas is None else [float(lam) for lam in lambdas]
    if not grid or not all(np.isfinite(lam) and lam > 0 for lam in grid):
        raise ArgumentError("lambdas", "must be positive and finite")
    best_lam, best_err = grid[0], float("nan")
    if len(grid) > 1 and n >= 10:
        order = np.random.default_rng(seed).permutation(n)
        held, kept = np.sort(order[: int(DUAL_HOLDOUT * n)]), np.sort(order[int(DUAL_HOLDOUT * n) :])
        best_err = np.inf
        start = None
        kernel = _KroneckerKernel(grams, pairs[kept])
        # Largest λ first: each solve starts from the previous one's β.
        for lam in sorted(grid, reverse=True):
            beta = start = solve(kernel, targets[kept], lam, start)
            errors = []
            for c in range(targets.shape[1]):
                spread = kernel.spread(beta[:, c])
                fitted_kept = spread[pairs[kept, 0], pairs[kept, 1]]
                intercept = targets[kept, c].mean() - fitted_kept.mean()
                pred = spread[pairs[held, 0], pairs[held, 1]] + intercept
                errors.append(float(np.mean((targets[held, c] - pred) ** 2)))
            # The mean over outputs, the figure stored: comparing a sum with
            # it favoured the first λ whenever there were several outputs.
            err = float(np.mean(errors))
            if err < best_err:
                best_lam, best_err = lam, err
    beta = solve(whole, targets, best_lam, None)
    intercept = np.empty(targets.shape[1])
    weights = np.empty((U.shape[1] * V.shape[1], targets.shape[1]))
    for c in range(targets.shape[1]):
        fitted = whole.spread(beta[:, c])[pairs[:, 0], pairs[:, 1]]
        intercept[c] = targets[:, c].mean() - fitted.mean()
        weights[:, c] = (U.T @ whole.scatter(beta[:, c]) @ V).reshape(-1)
    return RidgeFit(beta, intercept, best_lam, best_err, weights)
