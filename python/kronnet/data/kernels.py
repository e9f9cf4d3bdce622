"""Entity kernels as entity tables: features F with F Fᵀ = K.

A pairwise model over kernels K_1, ..., K_p (drug similarities, protein
similarities...) is a model over the Kronecker kernel K_1 ⊗ ... ⊗ K_p.
kronnet trains on feature vectors, so each entity kernel is factored once,
K = F Fᵀ, and the rows of F become an entity table: the points
x_i = F_1[a_i] ⊗ F_2[b_i] ⊗ ... then have exactly the inner products
K_1[a_i, a_j] K_2[b_i, b_j] ... . New entities enter through the Nyström
extension of their kernel rows (:meth:`KernelFeatures.transform`).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import _validate as v
from ..errors import ArgumentError, ArgumentTypeError
from .points import frozen

__all__ = ["KernelFeatures"]

#: The default round-off tolerance is this many times N times the input's
#: machine epsilon: a symmetric perturbation with entries of a few epsilon
#: times max|K| moves the eigenvalues by at most about N * epsilon * max|K|.
ROUNDOFF_FACTOR = 10.0


class KernelFeatures:
    """Features F (N × r) of a positive semi-definite entity kernel K (N × N),
    with F Fᵀ = K up to round-off.

    K is diagonalised (``numpy.linalg.eigh``), K = V Λ Vᵀ, and F = V_r Λ_r^½
    keeps the r eigenvalues above a relative cut-off, largest first; so
    r ≤ N, and r is the numerical rank of K. New entities are mapped by the
    Nyström extension (:meth:`transform`), which is exact for the training
    entities.

    Parameters
    ----------
    K : array_like, shape (N, N)
        The kernel between the N training entities: symmetric and positive
        semi-definite up to round-off, finite, N >= 1. Any real dtype; the
        input's precision sets the default round-off tolerance.
    center : bool, default False
        Centre the kernel first (double centring, H K H with
        H = I - 11ᵀ/N): the features then have zero mean over the training
        entities, and :meth:`transform` centres new rows the same way (with
        the training means). Also makes a conditionally positive definite
        kernel (such as -||a - b||²) usable: only H K H must be positive
        semi-definite.
    tol : float, optional
        Relative cut-off: eigenvalues up to ``tol * λ_max`` are dropped.
        Default ``10 * N * eps``, eps the machine epsilon of K's dtype
        (float64 for integers), the size of eigenvalue round-off. A larger
        value truncates K to its leading eigenvalues (then F Fᵀ is the best
        rank-r approximation, no longer K). Asymmetry up to
        ``max(tol, default) * max|K|`` and negative eigenvalues down to
        ``-max(tol, default) * λ_max`` count as round-off.

    Raises
    ------
    ArgumentError
        K is empty, not square, not finite, not symmetric beyond round-off,
        indefinite beyond round-off (the message gives its most negative
        eigenvalue relative to the largest), or zero; `tol` is negative or
        not finite.
    ArgumentTypeError
        K is not a numeric array, `center` not a bool, `tol` not a number.

    See Also
    --------
    PairData.from_kernels : pairwise data whose tables are these features.

    Notes
    -----
    Each feature column is signed so that its largest-magnitude entry is
    positive, so equal kernels give equal features. For new entities,
    ``transform(K_rows) @ features.T`` is K_rows projected on the span of
    the kept eigenvectors: equal to K_rows whenever the new entities' kernel
    functions lie in the span of the training entities' (always for a
    linear kernel of rank r).

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> X = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> K = X @ X.T                      # a rank-2 kernel of 3 entities
    >>> kf = kn.KernelFeatures(K)
    >>> kf.features.shape                # r = 2 < N = 3
    (3, 2)
    >>> bool(np.allclose(kf.features @ kf.features.T, K))
    True
    >>> new = np.array([[2.0, -1.0]]) @ X.T          # a new entity's kernel row (1, 3)
    >>> f_new = kf.transform(new)
    >>> bool(np.allclose(f_new @ kf.features.T, new))
    True
    >>> try:
    ...     kn.KernelFeatures(np.array([[1.0, 2.0], [2.0, 1.0]]))   # eigenvalues 3 and -1
    ... except ValueError as exc:
    ...     print(exc)
    K: is not positive semi-definite: its smallest eigenvalue is -1, -0.333 times the largest |eigenvalue| (3);
    round-off allows down to -4.4e-15 times it
    """

    def __init__(self, K: Any, center: bool = False, tol: Optional[float] = None) -> None:
        self._center = v.flag(center, "center")
        eps = _input_epsilon(K)
        kernel = v.float_array(K, "K", 2)
        n = int(kernel.shape[0])
        if kernel.shape[1] != n:
            raise ArgumentError("K", f"must be square (N × N, one row and column per entity), got shape {kernel.shape}")
        default = ROUNDOFF_FACTOR * n * eps
        if tol is None:
            cut = default
        else:
            cut = v.finite_float(tol, "tol")
            if cut < 0:
                raise ArgumentError("tol", f"must be >= 0, got {cut}")
        slack = max(cut, default)

        scale = float(np.max(np.abs(kernel)))
        asym = float(np.max(np.abs(kernel - kernel.T)))
        if asym > slack * scale:
            i, j = np.unravel_index(int(np.argmax(np.abs(kernel - kernel.T))), kernel.shape)
            raise ArgumentError(
                "K",
                f"is not symmetric: K[{i}, {j}] - K[{j}, {i}] = {kernel[i, j] - kernel[j, i]:.3g}, "
                f"{asym / scale:.3g} times max|K| (round-off allows {slack:.2g})",
            )
        # The lower and upper triangles can differ by round-off: factor their mean.
        sym = 0.5 * (kernel + kernel.T)
        if self._center:
            self._column_means = sym.mean(axis=0)
            self._grand_mean = float(self._column_means.mean())
            sym = sym - self._column_means[:, None] - self._column_means[None, :] + self._grand_mean
            sym = 0.5 * (sym + sym.T)
        else:
            self._column_means = np.zeros(n)
            self._grand_mean = 0.0

        values, vectors = np.linalg.eigh(sym)
        top = float(max(values[-1], -values[0], 0.0))
        if values[0] < -slack * top:
            raise ArgumentError(
                "K",
                f"is not positive semi-definite{' after centring' if self._center else ''}: its smallest eigenvalue "
                f"is {values[0]:.3g}, {values[0] / top:.3g} times the largest |eigenvalue| ({top:.3g}); round-off "
                f"allows down to -{slack:.2g} times it",
            )
        keep = values > cut * top
        if top == 0.0 or not keep.any():
            raise ArgumentError(
                "K",
                f"is zero up to round-off{' after centring' if self._center else ''} (largest |eigenvalue| {top:.3g})",
            )
        values, vectors = values[keep][::-1], vectors[:, keep][:, ::-1]
        # Eigenvectors are defined up to sign; fix it so equal kernels give equal features.
        peak = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])]
        vectors = vectors * np.where(peak < 0, -1.0, 1.0)[None, :]
        self._features = frozen(np.ascontiguousarray(vectors * np.sqrt(values)[None, :]))
        # transform maps a kernel row k to k V Λ^{-1/2} = k F Λ^{-1}.
        self._projection = vectors / np.sqrt(values)[None, :]
        self._eigenvalues = frozen(values.copy())

    @property
    def center(self) -> bool:
        """Whether the kernel was centred (H K H) before factoring."""
        return self._center

    @property
    def features(self) -> np.ndarray:
        """F, float64 of shape (N, r), read-only: F Fᵀ = K (or H K H)."""
        return self._features

    @property
    def eigenvalues(self) -> np.ndarray:
        """The kept eigenvalues, float64 of shape (r,), decreasing, read-only."""
        return self._eigenvalues

    @property
    def rank(self) -> int:
        """r, the number of features (columns of :attr:`features`)."""
        return int(self._features.shape[1])

    @property
    def n_entities(self) -> int:
        """N, the number of training entities (rows of :attr:`features`)."""
        return int(self._features.shape[0])

    def transform(self, K_rows: Any) -> np.ndarray:
        """Features of new entities from their kernel rows (Nyström extension).

        Parameters
        ----------
        K_rows : array_like, shape (M, N)
            Row j holds k(new_j, e) for the N training entities e, in the
            order of the kernel this was built from (uncentred: the
            training means are subtracted here when ``center=True``). M = 0
            is allowed.

        Returns
        -------
        ndarray of shape (M, r)
            ``K_rows @ features @ diag(1 / eigenvalues)`` (after centring).
            For the training entities themselves (``K_rows = K``) this is
            :attr:`features`, up to round-off.

        Raises
        ------
        ArgumentError
            `K_rows` is not 2-D, has a number of columns other than N, or
            holds NaN or infinite values.
        ArgumentTypeError
            `K_rows` is not a numeric array.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_normal((6, 3))
        >>> kf = kn.KernelFeatures(X @ X.T, center=True)
        >>> bool(np.allclose(kf.transform(X @ X.T), kf.features))
        True
        >>> kf.transform(rng.standard_normal((2, 3)) @ X.T).shape      # two new entities, r = 3
        (2, 3)
        """
        rows = v.float_array(K_rows, "K_rows", 2, allow_empty=True)
        n = self.n_entities
        if rows.shape[1] != n:
            raise ArgumentError(
                "K_rows", f"has {rows.shape[1]} columns, expected {n} (one per training entity); shape {rows.shape}"
            )
        if self._center:
            rows = rows - rows.mean(axis=1, keepdims=True) - self._column_means[None, :] + self._grand_mean
        out: np.ndarray = rows @ self._projection
        return out

    def __repr__(self) -> str:
        centred = ", centred" if self._center else ""
        return f"KernelFeatures(N={self.n_entities}, rank={self.rank}{centred})"


def _input_epsilon(K: Any) -> float:
    """Machine epsilon of K's own precision (float64 for integers and
    anything that is not a floating array): a float32 kernel carries
    float32 round-off, whatever it is converted to."""
    if isinstance(K, (str, bytes)) or K is None:
        raise ArgumentTypeError("K", f"expected a 2-D array (N × N), got {type(K).__name__}")
    dtype = getattr(K, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return float(np.finfo(dtype).eps)
    return float(np.finfo(np.float64).eps)
