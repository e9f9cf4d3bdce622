"""Kronecker-structured data sets: x_i = u_i^(1) ⊗ … ⊗ u_i^(p)."""

from __future__ import annotations

import copy as copy_module
import hashlib
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _validate as v
from ..errors import ArgumentError, ArgumentTypeError
from .points import CoreLayout, KronPoints, frozen


class KronData(KronPoints):
    """Points given by their Kronecker factors, with optional targets.

    Parameters
    ----------
    factors : sequence of p >= 1 array_like, factor k of shape (n, d_k) or (n, r, d_k)
        Rank one: row i of factor k is u_i^(k) and
        x_i = np.kron(u_i^(1), ..., u_i^(p)). Rank r (3-D factors, the same
        r for all): x_i = sum_j np.kron(U_1[i, j], ..., U_p[i, j]), a sum of
        r Kronecker products (a 2-D factor among 3-D ones is the same vector
        in every term). p = 1 is plain dense data X (n, d). Any real dtype
        and memory layout is accepted and stored as float64.
    y : array_like of shape (n,) or (n, C), optional
        Targets: values, 0/1 targets or integer class labels (n,), or C
        values per point (n, C); stored as float64. Required for training,
        not for prediction.
    copy : bool, default True
        The data object owns its arrays: by default they are copied, so
        changing the caller's arrays later changes nothing here. With
        ``copy=False`` arrays that are already float64, aligned and
        C-contiguous are taken over without a copy: the caller hands them
        over and must not change them afterwards.

    Raises
    ------
    ArgumentError
        No factor, an empty factor, factors with different numbers of rows
        or terms, NaN/inf, a point with ||x_i|| > 1e100, or targets of the
        wrong shape.
    ArgumentTypeError
        `factors` is not a list or tuple of arrays.

    Notes
    -----
    ``n = 0`` points is allowed (prediction on nothing returns nothing);
    training needs at least one. Every point needs ``||x_i|| <= 1e100``.

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> u = np.array([[1.0, 0.0], [0.6, 0.8]])
    >>> v = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    >>> data = kn.KronData([u, v], y=[1.0, -1.0])
    >>> data.n, data.dims, data.d
    (2, (2, 3), 6)
    >>> data.dense()[1]
    array([0.6, 0. , 0. , 0.8, 0. , 0. ])
    """

    kind = "kron"

    def __init__(self, factors: Sequence[Any], y: Optional[Any] = None, copy: bool = True) -> None:
        if isinstance(factors, np.ndarray) or not isinstance(factors, (list, tuple)):
            raise ArgumentTypeError(
                "factors",
                f"expected a list of 2-D arrays (one per Kronecker factor), got {type(factors).__name__}",
            )
        if len(factors) < 1:
            raise ArgumentError("factors", "need at least 1 Kronecker factor, got 0")
        copy = v.flag(copy, "copy")
        arrays = [v.float_array(f, f"factors[{k}]", (2, 3), copy=copy, allow_empty=True) for k, f in enumerate(factors)]
        ranks = {u.shape[1] for u in arrays if u.ndim == 3}
        if len(ranks) > 1:
            raise ArgumentError("factors", f"3-D factors must have the same number of terms, got {sorted(ranks)}")
        rank = ranks.pop() if ranks else 1
        if rank == 0:
            raise ArgumentError("factors", "has 0 terms per point")
        n = arrays[0].shape[0]
        for k, u in enumerate(arrays):
            if u.shape[-1] == 0:
                raise ArgumentError(f"factors[{k}]", f"is empty (shape {u.shape}): every factor needs d_k >= 1")
            if u.shape[0] != n:
                raise ArgumentError(f"factors[{k}]", f"has {u.shape[0]} rows, factors[0] has {n}")
        # Stored with every term as a row, term j of point i at i·r + j (a
        # view of a C-contiguous (n, r, d_k) array; a 2-D factor among 3-D
        # ones is repeated for every term).
        mats = [
            u.reshape(n * rank, u.shape[-1]) if u.ndim == 3 else u if rank == 1 else np.repeat(u, rank, axis=0)
            for u in arrays
        ]
        _balance(mats, copy or rank > 1, rank)
        self._rank = rank
        self._mats = [frozen(u) for u in mats]
        self._y: Optional[np.ndarray] = None
        if y is not None:
            self._y = frozen(v.targets(y, "y", n, copy=copy))
        self._fingerprint: Optional[str] = None

    @property
    def factors(self) -> List[np.ndarray]:
        """The p factor arrays, float64, read-only: factor k of shape (n, d_k)
        for rank one, (n, r, d_k) for rank r.

        Examples
        --------
        >>> import kronnet as kn
        >>> [u.shape for u in kn.make_kronecker_data(5, dims=(2, 3)).factors]
        [(5, 2), (5, 3)]
        """
        if self._rank == 1:
            return list(self._mats)
        return [u.reshape(self.n, self._rank, u.shape[1]) for u in self._mats]

    @property
    def term_factors(self) -> List[np.ndarray]:
        """The factors with every term as a row: factor k of shape
        (n * rank, d_k), term j of point i at row i * rank + j (read-only).
        This is the layout the core reads.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.KronData([np.ones((4, 3, 2)), np.ones((4, 3, 5))])
        >>> [u.shape for u in data.term_factors]
        [(12, 2), (12, 5)]
        """
        return list(self._mats)

    @property
    def rank(self) -> int:
        """r, the number of Kronecker products each point is a sum of (1 for
        rank-one data)."""
        return self._rank

    @property
    def n(self) -> int:
        """Number of points."""
        return int(self._mats[0].shape[0] // self._rank)

    @property
    def dims(self) -> Tuple[int, ...]:
        """(d_1, ..., d_p)."""
        return tuple(int(u.shape[1]) for u in self._mats)

    @property
    def core_layout(self) -> CoreLayout:
        """The term rows as the core reads them: (term_factors, rank,
        [None] * p)."""
        return list(self._mats), self._rank, [None] * len(self._mats)

    @property
    def fingerprint(self) -> str:
        """A digest of the points (dims and factor values, not the targets).

        Two data sets with the same fingerprint hold the same points, so a
        net keeps one coefficient block for them however many trainers, or
        saved and reloaded copies, train on them.

        Examples
        --------
        >>> import kronnet as kn
        >>> a = kn.make_kronecker_data(8, dims=(2, 2), seed=0)
        >>> b = kn.KronData(a.factors, y=-a.y)  # same points, other targets
        >>> a.fingerprint == b.fingerprint
        True
        """
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=20)
            h.update(repr(self.dims).encode())
            h.update(f"{self.n} {self._rank}".encode())
            for u in self._mats:
                h.update(u.tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def norms(self) -> np.ndarray:
        """The norms of the points: ||x_i|| = prod_k ||u_i^(k)|| for rank one,
        sqrt(sum_{j,j'} prod_k <U_k[i,j], U_k[i,j']>) for rank r.

        Computed from the factors, without materializing x_i.

        Returns
        -------
        ndarray of shape (n,)
            ||x_i|| for every point i.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> u = np.array([[3.0, 4.0], [0.6, 0.8]])
        >>> v = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        >>> kn.KronData([u, v]).norms()
        array([10.,  1.])
        """
        if self._rank == 1:
            out = np.ones(self.n)
            for u in self._mats:
                out *= np.linalg.norm(u, axis=1)
            return out
        gram = np.ones((self.n, self._rank, self._rank))
        for u in self.factors:
            gram *= np.einsum("ijd,ild->ijl", u, u)
        norms: np.ndarray = np.sqrt(np.maximum(gram.sum(axis=(1, 2)), 0.0))
        return norms

    def normalized(self) -> KronData:
        """A copy with every factor row scaled to unit norm (so ||x_i|| = 1).

        kronnet's model and :func:`~kronnet.suggest_lr` assume unit-norm
        inputs; call this on your own data before training. The targets are
        kept.

        Returns
        -------
        KronData
            Same n, dims and targets; factor k of shape (n, d_k) with unit
            rows.

        Raises
        ------
        ArgumentError
            A factor row is zero (that point cannot be normalized).

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> u = np.array([[3.0, 4.0], [0.6, 0.8]])
        >>> v = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        >>> kn.KronData([u, v], y=[1.0, 2.0]).normalized().norms()
        array([1., 1.])
        """
        if self._rank > 1:
            norms = self.norms()
            if np.any(norms == 0):
                raise ArgumentError(
                    "factors", f"point {int(np.flatnonzero(norms == 0)[0])} is zero and cannot be normalized"
                )
            first = self._mats[0] / np.repeat(norms, self._rank)[:, None]
            scaled = [first.reshape(self.n, self._rank, -1)] + self.factors[1:]
            return KronData(scaled, self._y, copy=False)
        mats = []
        for k, u in enumerate(self._mats):
            log_norm = v.row_log_norms(u)
            if np.any(np.isneginf(log_norm)):
                bad = int(np.flatnonzero(np.isneginf(log_norm))[0])
                raise ArgumentError(f"factors[{k}]", f"row {bad} is zero and cannot be normalized")
            # Scaled by the largest entry first, so tiny or huge rows neither
            # underflow nor overflow on the way to unit norm.
            peak = np.max(np.abs(u), axis=1, keepdims=True)
            scaled = u / peak
            mats.append(scaled / np.linalg.norm(scaled, axis=1, keepdims=True))
        return KronData(mats, self._y, copy=False)

    def scaled(self, factor: float) -> KronData:
        """A copy of the points multiplied by `factor` (the first factor of
        every term scaled), with the same targets.

        Parameters
        ----------
        factor : float
            Positive and finite.

        Returns
        -------
        KronData
            Same n, dims, rank and targets; norms times `factor`.

        Raises
        ------
        ArgumentError
            `factor` is not positive and finite.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> kn.KronData([np.array([[3.0, 4.0]]), np.array([[1.0]])]).scaled(0.2).norms()
        array([1.])
        """
        factor = v.finite_float(factor, "factor", positive=True)
        mats = [self._mats[0] * factor] + list(self._mats[1:])
        if self._rank == 1:
            return KronData(mats, self._y, copy=False)
        terms = [mats[0].reshape(self.n, self._rank, -1)] + self.factors[1:]
        return KronData(terms, self._y, copy=False)

    def take(self, indices: Any) -> KronData:
        """The points at `indices`, with their targets.

        Parameters
        ----------
        indices : array_like of int, shape (k,)
            Indices in [0, n); repeats and any order are allowed.

        Returns
        -------
        KronData
            k points: factor j of shape (k, d_j), y of shape (k,) (or None).

        Raises
        ------
        ArgumentError
            An index is out of range, or `indices` is not 1-D.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(10, dims=(2, 3), seed=0)
        >>> part = data.take([4, 0, 4])
        >>> part
        KronData(n=3, dims=(2, 3), d=6, with targets)
        >>> bool((part.y == data.y[[4, 0, 4]]).all())
        True
        """
        idx = v.index_array(indices, "indices", self.n)
        y = None if self._y is None else self._y[idx]
        if self._rank == 1:
            return KronData([u[idx] for u in self._mats], y, copy=False)
        return KronData([u[idx] for u in self.factors], y, copy=False)

    @classmethod
    def from_matrices(cls, images: Any, y: Optional[Any] = None, rank: Optional[int] = None) -> KronData:
        """Matrix-shaped points (images) as sums of Kronecker products.

        An h × w matrix A with SVD A = sum_j s_j u_j v_j^T is, as the
        row-major vector vec(A) = A.reshape(h * w), exactly
        sum_j s_j u_j ⊗ v_j: rank-r Kronecker data with factors (n, r, h)
        and (n, r, w). Keeping the r largest singular values gives the best
        rank-r approximation.

        Parameters
        ----------
        images : array_like of shape (n, h, w)
            n matrices; point i is ``images[i].reshape(h * w)`` (row-major).
        y : array_like of shape (n,) or (n, C), optional
            Targets.
        rank : int, optional
            Terms kept per image, at most min(h, w). None keeps all of them,
            so the data are the images exactly (up to rounding).

        Returns
        -------
        KronData
            dims (h, w), rank r; ``data.dense()[i]`` is
            ``images[i].reshape(h * w)`` (rank=None) or its best rank-r
            approximation.

        Raises
        ------
        ArgumentError
            `images` is not 3-D, holds NaN/inf, or `rank` is out of range.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> images = np.random.default_rng(0).standard_normal((4, 3, 5))
        >>> data = kn.KronData.from_matrices(images)
        >>> data.dims, data.rank
        ((3, 5), 3)
        >>> bool(np.allclose(data.dense(), images.reshape(4, 15)))
        True
        """
        imgs = v.float_array(images, "images", 3, allow_empty=True)
        n, h, w = imgs.shape
        if h == 0 or w == 0:
            raise ArgumentError("images", f"has empty matrices (shape {imgs.shape})")
        full = min(h, w)
        r = full if rank is None else v.positive_int(rank, "rank")
        if r > full:
            raise ArgumentError("rank", f"must be at most min(h, w) = {full}, got {r}")
        u, sv, vt = np.linalg.svd(imgs, full_matrices=False)  # (n, h, k), (n, k), (n, k, w)
        left = np.ascontiguousarray(np.transpose(u[:, :, :r] * sv[:, None, :r], (0, 2, 1)))
        right = np.ascontiguousarray(vt[:, :r, :])
        return cls([left, right], y, copy=False)

    def dense(self) -> np.ndarray:
        """The materialized rows x_i = u_i^(1) ⊗ ... ⊗ u_i^(p). Only for small d.

        Returns
        -------
        ndarray of shape (n, d)
            Row i is ``np.kron(u_i^(1), ..., u_i^(p))``.

        Raises
        ------
        OutOfMemoryError
            The n × d matrix would not fit in memory.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.make_kronecker_data(3, dims=(2, 3), seed=0)
        >>> x = data.dense()
        >>> x.shape
        (3, 6)
        >>> bool(np.allclose(x[0], np.kron(data.factors[0][0], data.factors[1][0])))
        True
        """
        v.ensure_fits(8.0 * self.n * self.d, "the dense data matrix (n × d)", "data.dense()")
        rows = self._mats[0].shape[0]
        x = self._mats[0]
        for u in self._mats[1:]:
            x = (x[:, :, None] * u[:, None, :]).reshape(rows, x.shape[1] * u.shape[1])
        if self._rank > 1:
            return np.array(x.reshape(self.n, self._rank, -1).sum(axis=1), dtype=np.float64)
        return np.array(x, dtype=np.float64, copy=True)

    def to_arrays(self) -> Dict[str, Any]:
        """The arrays that rebuild these points (:meth:`KronPoints.to_arrays`).

        Returns
        -------
        dict of str to ndarray or list of ndarray
            Views of this data set's (read-only) arrays.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(5, dims=(2, 3), seed=0)
        >>> sorted(data.to_arrays())
        ['factors']
        >>> kn.KronData.from_arrays(data.to_arrays(), data.y).fingerprint == data.fingerprint
        True

        Notes
        -----
        ``{"factors": self.factors}``: rank-r points keep their 3-D factors.
        """
        return {"factors": self.factors}

    @classmethod
    def from_arrays(cls, arrays: Dict[str, Any], y: Optional[np.ndarray]) -> KronData:
        """The points :meth:`to_arrays` described, validated as by the constructor.

        Parameters
        ----------
        arrays : dict
            What :meth:`to_arrays` returned.
        y : ndarray of shape (n,), optional
            Targets.

        Returns
        -------
        KronData

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(5, dims=(2, 3), seed=0)
        >>> kn.KronData.from_arrays(data.to_arrays(), None).y is None
        True
        """
        return cls(list(arrays["factors"]), y, copy=False)

    def _retargeted(self, y: Optional[np.ndarray]) -> KronData:
        out = copy_module.copy(self)
        out._y = None if y is None else frozen(y)
        return out

    def __getstate__(self) -> Dict[str, Any]:
        return {"factors": [np.array(u) for u in self.factors], "y": None if self._y is None else np.array(self._y)}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(state["factors"], state["y"], copy=False)  # type: ignore[misc]

    def __repr__(self) -> str:
        labelled = "with targets" if self._y is not None else "no targets"
        rank = f", rank={self._rank}" if self._rank > 1 else ""
        return f"KronData(n={self.n}, dims={self.dims}, d={self.d}{rank}, {labelled})"


#: Factor rows whose norm lies outside [1/FACTOR_SPREAD, FACTOR_SPREAD] are
#: rebalanced (below).
FACTOR_SPREAD = 1e50


def _balance(mats: List[np.ndarray], copied: bool, rank: int = 1) -> None:
    """Checks ||x_i|| <= VALUE_BOUND (in logs, so the check cannot overflow)
    and rebalances points whose factors have extreme norms, in place.

    x_i = u^(1) ⊗ ... ⊗ u^(p) is unchanged when u^(k) is scaled by c_k with
    prod c_k = 1, but the core's per-factor Grams <u^(k), u'^(k)> and their
    running product overflow (or underflow into 0 · inf) when one factor is
    ~1e200 and another ~1e-200 even though ||x_i|| = 1. Such a point's factor
    rows are scaled to the same norm ||x_i||^(1/p); x_i changes only by
    rounding (about 1e-16 relative). Points whose factor norms all lie
    within 1e±50 (all real data) are left bit for bit as given. With r terms
    per point (rows i·r ... i·r + r - 1) each term is rebalanced on its own,
    and ||x_i|| <= sum_j ||term_j|| is what is bounded.
    """
    if mats[0].shape[0] == 0:
        return
    logs = np.array([v.row_log_norms(u) for u in mats])  # (p, n·r)
    log_norm = np.sum(logs, axis=0)
    per_point = log_norm.reshape(-1, rank)
    with np.errstate(over="ignore", divide="ignore"):
        top = np.max(per_point, axis=1)
        safe_top = np.where(np.isfinite(top), top, 0.0)
        bound = np.where(np.isfinite(top), safe_top + np.log(np.exp(per_point - safe_top[:, None]).sum(axis=1)), top)
    bad = np.flatnonzero(~(bound <= math.log(v.VALUE_BOUND)))
    if bad.size:
        i = int(bad[0])
        raise ArgumentError(
            "factors",
            f"point {i} has norm e^{float(bound[i]):.1f}; kronnet needs ||x_i|| <= 1e100 (normalize the data)",
        )
    # A point with a zero factor row is x_i = 0 whatever the others are; its
    # nonzero rows are brought to unit norm (x_i stays exactly 0).
    nonzero = np.isfinite(log_norm)
    extreme = np.any(np.abs(logs) > math.log(FACTOR_SPREAD), axis=0) & np.any(np.isfinite(logs), axis=0)
    if not extreme.any():
        return
    rows = np.flatnonzero(extreme)
    target = np.where(nonzero[rows], log_norm[rows] / len(mats), 0.0)
    for k, u in enumerate(mats):
        if not copied:
            # Never rescale memory the caller handed over.
            mats[k] = u = np.array(u, copy=True)
        peak = np.max(np.abs(u[rows]), axis=1, keepdims=True)
        zero = peak[:, 0] == 0
        unit = u[rows] / np.where(zero, 1.0, peak[:, 0])[:, None]
        unit /= np.where(zero, 1.0, np.linalg.norm(unit, axis=1))[:, None]
        u[rows] = unit * np.exp(target)[:, None]


FactorsLike = Union[KronPoints, Sequence[Any]]


def as_points(x: FactorsLike, name: str = "X") -> KronPoints:
    """Any kronnet data set as is, or a KronData from a list of factor arrays."""
    if isinstance(x, KronPoints):
        return x
    if isinstance(x, (list, tuple)):
        try:
            return KronData(list(x))
        except (ArgumentError, ArgumentTypeError) as exc:
            raise type(exc)(name, f"{exc.arg}: {exc.reason}") from None
    raise ArgumentTypeError(name, f"expected a KronData, a PairData or a list of factor arrays, got {type(x).__name__}")
