"""Kronecker-structured data sets: x_i = u_i^(1) ⊗ … ⊗ u_i^(p)."""

from __future__ import annotations

import hashlib
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _validate as v
from .errors import ArgumentError, ArgumentTypeError
from .points import CoreLayout, KronPoints
from .points import frozen as _frozen


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
    y : array_like of shape (n,), optional
        Targets. Required for training, not for prediction.
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
        self._mats = [_frozen(u) for u in mats]
        self._y: Optional[np.ndarray] = None
        if y is not None:
            self._y = _frozen(v.targets(y, "y", n, copy=copy))
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
        y : array_like of shape (n,), optional
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

    def _state_arrays(self) -> Dict[str, Any]:
        return {"factors": self.factors}

    @classmethod
    def _from_state_arrays(cls, arrays: Dict[str, Any], y: Optional[np.ndarray]) -> KronData:
        return cls(list(arrays["factors"]), y, copy=False)

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


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    u: np.ndarray = rng.standard_normal((n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u


def make_kronecker_data(
    n: int,
    dims: Sequence[int] = (16, 16),
    seed: int = 0,
    labels: str = "teacher",
    teacher_width: int = 16,
    noise: float = 0.0,
    latent_dim: Optional[int] = None,
) -> KronData:
    """Random unit-norm Kronecker data with seeded targets.

    By default each factor row is uniform on its unit sphere, so
    ||x_i|| = 1, and nothing can be learned that generalizes to new points.
    With `latent_dim` the points lie near a low-dimensional manifold and the
    targets are a fixed function of where on it: a held-out set drawn with
    another seed comes from the same distribution and target function.

    Parameters
    ----------
    n : int
        Number of points, n >= 1.
    dims : tuple of int, default (16, 16)
        (d_1, ..., d_p), p >= 1; the input dimension is d = prod d_k.
    seed : int, default 0
        Seeds factors and targets (NumPy's PCG64).
    labels : {"teacher", "sign"}, default "teacher"
        "teacher": y from a random two-layer ReLU teacher whose neurons are
        rank-one Kronecker vectors t_j = g_j1 ⊗ ... ⊗ g_jp (so it can be
        evaluated at any d), standardized to mean 0, standard deviation 1.
        "sign": independent uniform ±1 labels.
    teacher_width : int, default 16
        Number of teacher neurons.
    noise : float, default 0.0
        Standard deviation of Gaussian noise added to the targets (>= 0).
    latent_dim : int, optional
        k. When given, point i comes from a latent z_i ~ N(0, I_k): factor
        row j is u_i^(j) = normalize(M_j z_i + eps_j g), with M_j a fixed
        random d_j × k map, g ~ N(0, I) and eps_j = 0.05 / sqrt(d_j) (about
        5% noise per factor). The maps, and the teacher below, depend only
        on (k, dims, teacher_width), never on `seed`, so data sets drawn with
        different seeds share them; `seed` draws the z_i, g and the label
        noise. "teacher" labels are then the even part of a fixed random
        two-layer ReLU teacher on the latent direction z_i / ||z_i||
        (``y = sum_r c_r |<t_r, z_i / ||z_i||>|``; the points determine
        z_i only up to scale, and up to sign when p is even), standardized
        by its mean and standard deviation over a fixed reference sample of
        16384 latent points (so y has mean about 0 and sd about 1 on any
        sample, the same function on every one). "sign" labels are that
        target's sign. None (the default) gives the uniform data above, bit
        for bit as before.

    Returns
    -------
    KronData
        n points with factors of shapes (n, d_k) and targets y of shape (n,).

    Raises
    ------
    ArgumentError
        A size or `latent_dim` is not positive, p < 2, `labels` is unknown
        or `noise` < 0.
    ArgumentTypeError
        A size, `seed` or `latent_dim` is not an integer.
    OutOfMemoryError
        The factors or the teacher would not fit in memory.

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> data = kn.make_kronecker_data(100, dims=(4, 8), seed=0)
    >>> data
    KronData(n=100, dims=(4, 8), d=32, with targets)
    >>> bool(np.allclose(data.norms(), 1.0))
    True
    >>> round(float(data.y.mean()), 6), round(float(data.y.std()), 6)
    (0.0, 1.0)
    >>> signs = kn.make_kronecker_data(20, dims=(2, 2), labels="sign")
    >>> sorted(set(signs.y.tolist()))
    [-1.0, 1.0]

    Structured data, with a held-out set from the same generator:

    >>> train = kn.make_kronecker_data(256, dims=(16, 16), seed=0, latent_dim=4)
    >>> test = kn.make_kronecker_data(128, dims=(16, 16), seed=1, latent_dim=4)
    >>> bool(np.allclose(test.norms(), 1.0))
    True
    >>> net = kn.TwoLayerNet(train.dims, width=1024, seed=0)
    >>> _ = kn.Trainer(net, train, lr=kn.suggest_lr(net, 8)).fit(2000)
    >>> held_out = float(np.mean((net.predict(test) - test.y) ** 2))
    >>> held_out < 0.5 * float(test.y.var())
    True
    """
    n = v.positive_int(n, "n")
    dims = v.dims_tuple(dims)
    seed = v.seed_int(seed)
    labels = v.choice(labels, "labels", ("teacher", "sign"))
    teacher_width = v.positive_int(teacher_width, "teacher_width")
    v.ensure_fits(
        8.0 * teacher_width * (n + sum(dims)) * 2, "the teacher's weights and preactivations", "teacher_width"
    )
    noise = v.finite_float(noise, "noise")
    if noise < 0:
        raise ArgumentError("noise", f"must be >= 0, got {noise}")
    v.ensure_fits(8.0 * n * sum(dims) * 2, "the factor matrices", "n, dims")
    if latent_dim is not None:
        k = v.positive_int(latent_dim, "latent_dim")
        return _latent_data(n, dims, seed, labels, teacher_width, noise, k)
    rng = np.random.default_rng(seed)
    factors = [_unit_rows(rng, n, dk) for dk in dims]
    if labels == "sign":
        y = rng.choice(np.array([-1.0, 1.0]), size=n)
    else:
        # <t_j, x_i> = prod_k <g_jk, u_ik>; each factor is rescaled by sqrt(d_k)
        # so the teacher's preactivations are O(1) whatever d is.
        z = np.ones((n, teacher_width))
        for dk, u in zip(dims, factors):
            g = _unit_rows(rng, teacher_width, dk)
            z *= math.sqrt(dk) * (u @ g.T)
        c = rng.choice(np.array([-1.0, 1.0]), size=teacher_width) / math.sqrt(teacher_width)
        y = np.maximum(z, 0.0) @ c
        y = y - y.mean()
        sd = y.std()
        if sd > 0:
            y = y / sd
    if noise > 0:
        y = y + noise * rng.standard_normal(n)
    return KronData(factors, y, copy=False)


#: Latent points the standardization of latent teachers is computed over.
LATENT_REFERENCE_POINTS = 1 << 14


def _latent_teacher(z: np.ndarray, t: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The even part of the ReLU teacher sum_r c_r relu(<t_r, z / ||z||>), times 2."""
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    out: np.ndarray = np.abs((z / np.where(norm > 0, norm, 1.0)) @ t.T) @ c
    return out


def _latent_data(
    n: int, dims: Tuple[int, ...], seed: int, labels: str, teacher_width: int, noise: float, k: int
) -> KronData:
    """make_kronecker_data with latent_dim=k (its docstring): maps, teacher and
    standardization from a generator keyed by (k, dims) only; points and
    noise from `seed`."""
    v.ensure_fits(
        8.0 * (sum(dims) * k + LATENT_REFERENCE_POINTS * (k + teacher_width)), "the latent maps", "latent_dim"
    )
    fixed = np.random.default_rng([0x6B726F6E, k, *dims])
    maps = [fixed.standard_normal((dk, k)) / math.sqrt(dk * k) for dk in dims]
    t = _unit_rows(fixed, teacher_width, k)
    c = fixed.choice(np.array([-1.0, 1.0]), size=teacher_width) / math.sqrt(teacher_width)
    ref = _latent_teacher(fixed.standard_normal((LATENT_REFERENCE_POINTS, k)), t, c)
    mean, sd = float(ref.mean()), float(ref.std())
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k))
    factors = []
    for dk, mk in zip(dims, maps):
        u = z @ mk.T + (0.05 / math.sqrt(dk)) * rng.standard_normal((n, dk))
        factors.append(u / np.linalg.norm(u, axis=1, keepdims=True))
    y = _latent_teacher(z, t, c) - mean
    if sd > 0:
        y = y / sd
    if labels == "sign":
        y = np.where(y >= 0, 1.0, -1.0)
    if noise > 0:
        y = y + noise * rng.standard_normal(n)
    return KronData(factors, y, copy=False)
