"""Kronecker-structured data sets: x_i = u_i^(1) ⊗ … ⊗ u_i^(p)."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import numpy as np

from . import _validate as v


class KronData:
    """Points given by their Kronecker factors, with optional targets.

    Parameters
    ----------
    factors : sequence of p >= 2 arrays, factor k of shape (n, d_k)
        Row i of factor k is u_i^(k); x_i = np.kron(u_i^(1), ..., u_i^(p)).
        Any real dtype and memory layout is accepted and stored as float64.
    y : array of shape (n,), optional
        Targets. Required for training, not for prediction.
    """

    def __init__(self, factors: Sequence[Any], y: Optional[Any] = None) -> None:
        if isinstance(factors, np.ndarray) or not isinstance(factors, (list, tuple)):
            raise TypeError(
                "factors: expected a list of 2-D arrays (one per Kronecker factor), "
                f"got {type(factors).__name__}"
            )
        if len(factors) < 2:
            raise ValueError(f"factors: need at least 2 Kronecker factors, got {len(factors)}")
        mats = [v.float_array(f, f"factors[{k}]", 2) for k, f in enumerate(factors)]
        n = mats[0].shape[0]
        for k, u in enumerate(mats):
            if u.shape[0] != n:
                raise ValueError(f"factors[{k}]: has {u.shape[0]} rows, factors[0] has {n}")
        for u in mats:
            u.setflags(write=False)
        self._factors = mats
        self._y: Optional[np.ndarray] = None
        if y is not None:
            yy = v.float_array(y, "y", 1)
            if yy.shape[0] != n:
                raise ValueError(f"y: has {yy.shape[0]} targets for {n} points")
            yy.setflags(write=False)
            self._y = yy

    @property
    def factors(self) -> list:
        """The p factor arrays, factor k of shape (n, d_k), float64, read-only."""
        return list(self._factors)

    @property
    def y(self) -> Optional[np.ndarray]:
        """Targets, shape (n,), or None."""
        return self._y

    @property
    def n(self) -> int:
        """Number of points."""
        return int(self._factors[0].shape[0])

    @property
    def dims(self) -> tuple:
        """(d_1, ..., d_p)."""
        return tuple(int(u.shape[1]) for u in self._factors)

    @property
    def d(self) -> int:
        """Input dimension d = d_1 * ... * d_p."""
        return math.prod(self.dims)

    @property
    def p(self) -> int:
        """Number of Kronecker factors."""
        return len(self._factors)

    def norms(self) -> np.ndarray:
        """||x_i|| = prod_k ||u_i^(k)||, shape (n,)."""
        out = np.ones(self.n)
        for u in self._factors:
            out *= np.linalg.norm(u, axis=1)
        return out

    def normalized(self) -> "KronData":
        """A copy with every factor row scaled to unit norm (so ||x_i|| = 1)."""
        mats = []
        for k, u in enumerate(self._factors):
            nrm = np.linalg.norm(u, axis=1, keepdims=True)
            if np.any(nrm == 0):
                bad = int(np.flatnonzero(nrm[:, 0] == 0)[0])
                raise ValueError(f"factors[{k}]: row {bad} is zero and cannot be normalized")
            mats.append(u / nrm)
        return KronData(mats, self._y)

    def take(self, indices: Any) -> "KronData":
        """The points at `indices` (1-D ints), with their targets."""
        idx = v.index_array(indices, "indices", self.n)
        return KronData([u[idx] for u in self._factors], None if self._y is None else self._y[idx])

    def dense(self) -> np.ndarray:
        """The materialized rows x_i, shape (n, d). Only for small d."""
        v.ensure_fits(8.0 * self.n * self.d, "the dense data matrix (n × d)", "data.dense()")
        x = self._factors[0]
        for u in self._factors[1:]:
            x = (x[:, :, None] * u[:, None, :]).reshape(self.n, -1)
        return np.array(x, dtype=np.float64, copy=True)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        labelled = "with targets" if self._y is not None else "no targets"
        return f"KronData(n={self.n}, dims={self.dims}, d={self.d}, {labelled})"


FactorsLike = Union[KronData, Sequence[Any]]


def as_kron_data(x: FactorsLike, name: str = "X") -> KronData:
    """A KronData from a KronData or a list of factor arrays."""
    if isinstance(x, KronData):
        return x
    if isinstance(x, (list, tuple)):
        try:
            return KronData(list(x))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name}: {exc}") from None
    raise TypeError(f"{name}: expected a KronData or a list of factor arrays, got {type(x).__name__}")


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    u = rng.standard_normal((n, d))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def make_kronecker_data(
    n: int,
    dims: Sequence[int] = (16, 16),
    seed: int = 0,
    labels: str = "teacher",
    teacher_width: int = 16,
    noise: float = 0.0,
) -> KronData:
    """Random unit-norm Kronecker data with seeded targets.

    Each factor row is uniform on its unit sphere, so ||x_i|| = 1.

    Parameters
    ----------
    n : number of points.
    dims : (d_1, ..., d_p), p >= 2.
    seed : seeds factors and targets (numpy's PCG64).
    labels : "teacher" — y from a random two-layer ReLU teacher whose neurons
        are rank-one Kronecker vectors t_j = g_j1 ⊗ ... ⊗ g_jp (so it can be
        evaluated at any d), standardized to mean 0, standard deviation 1;
        "sign" — independent uniform ±1 labels.
    teacher_width : number of teacher neurons.
    noise : standard deviation of Gaussian noise added to the targets.

    Returns
    -------
    KronData with factors of shapes (n, d_k) and y of shape (n,).
    """
    n = v.positive_int(n, "n")
    if isinstance(dims, (str, bytes)) or not isinstance(dims, (list, tuple)):
        raise TypeError(f"dims: expected a tuple of positive integers, got {type(dims).__name__}")
    dims = tuple(v.positive_int(dk, f"dims[{k}]") for k, dk in enumerate(dims))
    if len(dims) < 2:
        raise ValueError(f"dims: need at least 2 Kronecker factors, got {len(dims)}")
    seed = v.seed_int(seed)
    labels = v.choice(labels, "labels", ("teacher", "sign"))
    teacher_width = v.positive_int(teacher_width, "teacher_width")
    noise = v.finite_float(noise, "noise")
    if noise < 0:
        raise ValueError(f"noise: must be >= 0, got {noise}")
    v.ensure_fits(8.0 * n * sum(dims) * 2, "the factor matrices", "n, dims")
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
    return KronData(factors, y)
