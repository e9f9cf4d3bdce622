"""The output weights solved exactly at initialization: ridge regression on
the hidden layer's outputs.

At W = W(0) the net is linear in its output weights a:
f(x) = Σ_r a_r φ_r(x) + c + ⟨v, x⟩ with φ_r(x) = σ(⟨w_r(0), x⟩ − b_r) / √m,
a random-features model (Rahimi & Recht 2007). Its best a for the squared
loss is one ridge regression on the n × m matrix Φ of hidden outputs, which
the net computes from the initial inner products without forming any x
(:meth:`~kronnet.TwoLayerNet.preactivations`). SGD from a = 0 reaches it
only slowly: the first epochs of a new net spend themselves on what a
closed form gives at once. The estimators fit it to what the linear start
leaves (docs/design.md, "The output start") and train W from there.

The penalty is chosen by exact leave-one-out error (as scikit-learn's
RidgeCV; averaged over 8,192 of the points when there are more), not GCV: Φ has as many columns as the net has neurons, often more
than there are points, where GCV's n − df denominator vanishes with the
residual and picks an interpolating λ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..data import KronPoints
from ..errors import ArgumentError
from ..model import TwoLayerNet
from .ridge import symmetric_eigen

__all__ = ["MAX_OUTPUT_ENTRIES", "OutputFit", "activate", "hidden_outputs", "ridge_features", "start_output"]

#: Largest n·m solved: Φ and its left singular vectors are n·m floats each
#: (1 GiB apiece at 2^27; MovieLens-100k's 72k training pairs × 1024
#: neurons is 2^26.1).
MAX_OUTPUT_ENTRIES = 2**27
#: The leave-one-out error is averaged over at most this many points (a
#: fixed random subset, all of them below it): each needs its row of U.
LOO_ROWS = 8192
#: The λ grid, relative to the mean eigenvalue trace(Φ_cᵀΦ_c) / m.
RELATIVE_LAMBDAS = tuple(10.0 ** (k / 2.0) for k in range(-12, 5))


@dataclass(frozen=True)
class OutputFit:
    """Ridge regression on features (:func:`ridge_features` makes it).

    Parameters
    ----------
    coef : ndarray of shape (m, C)
        The weights of the m features, one column per output.
    intercept : ndarray of shape (C,)
        Not penalized, as scikit-learn's Ridge.
    lam : float
        The λ chosen by leave-one-out error; ``inf`` for the fit without
        the features (``significance`` in :func:`ridge_features`).
    loo : float
        Its mean squared leave-one-out residual (mean over outputs; over a
        fixed random subset of ``LOO_ROWS`` points when there are more).
    """

    coef: np.ndarray
    intercept: np.ndarray
    lam: float
    loo: float


def ridge_features(
    F: np.ndarray,
    y: np.ndarray,
    lambdas: Optional[Sequence[float]] = None,
    significance: Optional[float] = None,
) -> OutputFit:
    """Ridge regression of `y` on the columns of `F` with an unpenalized
    intercept, λ by exact leave-one-out error.

    Parameters
    ----------
    F : ndarray of shape (n, m)
        The features, finite.
    y : ndarray of shape (n,) or (n, C)
        Finite targets.
    lambdas : sequence of float, optional
        The λ values to choose from; default a grid from 1e-6 to 1e2 times
        trace(F_cᵀF_c) / m (F_c: F with its column means removed).
    significance : float, optional
        With a value, the fit without the features (all weights 0, the
        intercept the mean target: λ = ∞) replaces the best λ when its
        leave-one-out squared error is lower by more than `significance`
        standard errors of the paired per-point differences. Default: the
        features are always used.

    Returns
    -------
    OutputFit
        The weights, intercept, λ and its leave-one-out error (λ ``inf``
        and the weights 0 when the fit without the features was chosen).

    Raises
    ------
    ArgumentError
        Shapes that disagree, or a λ that is not positive and finite.

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.training.output_start import ridge_features
    >>> rng = np.random.default_rng(0)
    >>> F, y = rng.normal(size=(40, 60)), rng.normal(size=40)
    >>> fit = ridge_features(F, y, lambdas=[2.0])
    >>> Fc = F - F.mean(axis=0)
    >>> w = np.linalg.solve(Fc.T @ Fc + 2.0 * np.eye(60), Fc.T @ (y - y.mean()))
    >>> bool(np.allclose(fit.coef[:, 0], w))
    True
    """
    F = np.asarray(F, dtype=np.float64)
    targets = np.asarray(y, dtype=np.float64)
    targets = targets.reshape(len(targets), -1)
    if F.ndim != 2 or F.shape[0] != targets.shape[0] or F.shape[0] < 2:
        raise ArgumentError(
            "F", f"has shape {F.shape} for {targets.shape[0]} targets (need n >= 2 rows, one per target)"
        )
    n, m = F.shape
    mean_f = F.mean(axis=0)
    mean_y = targets.mean(axis=0)
    centred = targets - mean_y
    # The thin SVD F_c = U diag(s) Vᵀ from the smaller of the two Grams
    # (symmetric PSD, so their SVD is their eigendecomposition).
    if n >= m:
        gram = F.T @ F - n * np.outer(mean_f, mean_f)
        V, eig = symmetric_eigen(gram)
        keep = eig > eig[0] * 1e-12 if eig[0] > 0 else np.zeros(len(eig), dtype=bool)
        V, eig = V[:, keep], eig[keep]
        s = np.sqrt(eig)
        # z = Uᵀ(y − ȳ) without U: Vᵀ F_cᵀ (y − ȳ) / s, and F_cᵀ(y − ȳ) = Fᵀ(y − ȳ).
        z = (V.T @ (F.T @ centred)) / s[:, None]
        # The leave-one-out error needs U's rows: at most LOO_ROWS of them
        # (all below that), an n × m product fewer on large n.
        rows = np.arange(n) if n <= LOO_ROWS else np.sort(np.random.default_rng(0).choice(n, LOO_ROWS, replace=False))
        U = (F[rows] @ V - mean_f @ V) / s
    else:
        Fc = F - mean_f
        U, eig = symmetric_eigen(Fc @ Fc.T)
        keep = eig > eig[0] * 1e-12 if eig[0] > 0 else np.zeros(len(eig), dtype=bool)
        U, eig = U[:, keep], eig[keep]
        s = np.sqrt(eig)
        V = (Fc.T @ U) / s
        z = U.T @ centred  # (k, C)
        rows = np.arange(n)
    scale = max(float(eig.sum()) / m, np.finfo(np.float64).tiny)
    grid = [scale * r for r in RELATIVE_LAMBDAS] if lambdas is None else [float(lam) for lam in lambdas]
    if not grid or not all(np.isfinite(lam) and lam > 0 for lam in grid):
        raise ArgumentError("lambdas", "must be positive and finite")
    C = centred.shape[1]
    shrink = eig[:, None] / (eig[:, None] + np.asarray(grid)[None, :])  # (k, L)
    # Every λ at once, as two GEMMs over U rather than 2L passes: the fitted
    # values U diag(shrink) z and the hat matrix's diagonal (the intercept's
    # 1/n included); the leave-one-out residual of point j is
    # residual_j / (1 − h_jj).
    fitted = U @ (shrink[:, :, None] * z[:, None, :]).reshape(len(eig), -1)  # (rows, L·C)
    leverage = (U**2) @ shrink + 1.0 / n  # (rows, L)
    residual = centred[rows, None, :] - fitted.reshape(len(rows), len(grid), C)
    per_point = np.mean((residual / (1.0 - leverage)[:, :, None]) ** 2, axis=2)  # (rows, L)
    loo = per_point.mean(axis=0)
    best = int(np.argmin(loo))
    best_lam, best_loo = grid[best], float(loo[best])
    if significance is not None:
        # Without the features the hat matrix is the intercept's 1/n alone.
        mean_only = np.mean((centred[rows] / (1.0 - 1.0 / n)) ** 2, axis=1)
        gain = per_point[:, best] - mean_only
        if gain.mean() > significance * gain.std() / np.sqrt(len(gain)):
            return OutputFit(np.zeros((m, C)), mean_y, np.inf, float(mean_only.mean()))
    coef = V @ ((s / (eig + best_lam))[:, None] * z)
    return OutputFit(coef, mean_y - mean_f @ coef, best_lam, best_loo)


def hidden_outputs(net: TwoLayerNet, data: KronPoints) -> np.ndarray:
    """Φ: the hidden layer's outputs σ(⟨w_r, x_j⟩ − b_r) / √m on `data`'s
    points, the features the output weights a multiply.

    Parameters
    ----------
    net : TwoLayerNet
        A net on one process (its thresholds are read whole).
    data : KronData or PairData
        n points of the net's dims.

    Returns
    -------
    ndarray of shape (n, m)
        Φ[j, r] = σ(⟨w_r, x_j⟩ − b_r) / √m, so that the net's output is
        Φ a + c + ⟨v, x⟩.

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> from kronnet.training.output_start import hidden_outputs
    >>> data = kn.make_kronecker_data(30, dims=(3, 4), seed=0)
    >>> net = kn.TwoLayerNet(data.dims, width=16, seed=1)
    >>> phi = hidden_outputs(net, data)
    >>> bool(np.allclose(phi @ net.a, net.predict(data)))
    True
    """
    pre = net.preactivations(data)
    return activate(pre, net.thresholds, out=pre)


def activate(preactivations: np.ndarray, thresholds: Any, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Φ from the preactivations: σ(P − b) / √m, the one formula
    :func:`hidden_outputs` and a search over thresholds (on one P, which does
    not depend on b) share.

    Parameters
    ----------
    preactivations : ndarray of shape (n, m)
        P[j, r] = <w_r, x_j>.
    thresholds : float or ndarray of shape (m,)
        b, one for every neuron or each its own.
    out : ndarray of shape (n, m), optional
        Where Φ goes (`preactivations` itself to save the copy); default a
        new array.

    Returns
    -------
    ndarray of shape (n, m)
        Φ[j, r] = max(P[j, r] − b_r, 0) / √m.

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.training.output_start import activate
    >>> activate(np.array([[0.5, 2.0], [3.0, -1.0]]), 1.0) * np.sqrt(2)
    array([[0., 1.],
           [2., 0.]])
    """
    phi: np.ndarray = np.subtract(preactivations, thresholds, out=out)
    np.maximum(phi, 0.0, out=phi)
    phi *= 1.0 / np.sqrt(preactivations.shape[1])
    return phi


def start_output(net: TwoLayerNet, fit: OutputFit) -> None:
    """Sets `net`'s output weights to ``fit.coef`` and adds ``fit.intercept``
    to its output bias, leaving everything else (so fit the features to the
    targets minus the rest of the net's outputs).

    Parameters
    ----------
    net : TwoLayerNet
        A net of m = ``fit.coef.shape[0]`` neurons and C =
        ``fit.coef.shape[1]`` outputs, on one process.
    fit : OutputFit
        From :func:`ridge_features` on :func:`hidden_outputs` of the net.

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> from kronnet.training.output_start import hidden_outputs, ridge_features, start_output
    >>> data = kn.make_kronecker_data(50, dims=(3, 3), seed=0)
    >>> net = kn.TwoLayerNet(data.dims, width=32, seed=0)
    >>> phi = hidden_outputs(net, data)
    >>> fit = ridge_features(phi, data.y)
    >>> start_output(net, fit)
    >>> bool(np.allclose(net.predict(data), phi @ fit.coef[:, 0] + fit.intercept[0]))
    True
    """
    if fit.coef.shape != (net.width, net.outputs):
        raise ArgumentError("fit", f"has coef of shape {fit.coef.shape}, expected ({net.width}, {net.outputs})")
    state = net.to_state(whole=False)
    first, count = state.neurons
    state.a = np.array(fit.coef[first : first + count], dtype=np.float64)
    bias = np.zeros(net.outputs) if state.output_bias is None else state.output_bias
    state.output_bias = bias + fit.intercept
    net.load_state(state)
