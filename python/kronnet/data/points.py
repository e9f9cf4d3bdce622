"""What every kind of data kronnet trains on provides (the base class).

A data set is n points x_i in R^d, d = d_1 * ... * d_p, each a sum of
Kronecker products of small vectors, stored without ever forming x_i. The
kinds differ in how the factor vectors are stored: :class:`~kronnet.KronData`
keeps one row per point and factor, :class:`~kronnet.PairData` keeps entity
tables and an index into them. Nets and trainers only use the interface
below, so any kind works wherever another does.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import numpy as np

from .. import _core
from .. import _validate as v
from ..errors import ArgumentError, ArgumentTypeError

#: The arrays the core reads: (matrices, terms per point r, one entry per
#: factor: None when the matrix holds the n * r term rows, else an int64
#: index (n * r,) into the matrix as an entity table).
CoreLayout = Tuple[List[np.ndarray], int, List[Optional[np.ndarray]]]

_KINDS: Dict[str, type] = {}


def frozen(arr: np.ndarray) -> np.ndarray:
    """A read-only view of an array the data object owns; the flag is set on
    the view, never on an array the caller holds."""
    view: np.ndarray = arr.view()
    view.flags.writeable = False
    return view


class KronPoints(ABC):
    """Base class of kronnet's data kinds (:class:`~kronnet.KronData`,
    :class:`~kronnet.PairData`): n points with optional targets.

    Not constructed directly. Use it in type hints and ``isinstance`` checks
    for "any kronnet data set".

    Examples
    --------
    >>> import kronnet as kn
    >>> isinstance(kn.make_kronecker_data(4, dims=(2, 2)), kn.KronPoints)
    True
    >>> isinstance(kn.make_pair_data(4, 3, dims=(2, 2)), kn.KronPoints)
    True
    """

    #: The name of the kind in saved files.
    kind: ClassVar[str]
    _y: Optional[np.ndarray]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _KINDS[cls.kind] = cls

    @property
    def y(self) -> Optional[np.ndarray]:
        """Targets, read-only, or None: shape (n,) (values, 0/1 targets or
        integer class labels, stored as float64) or (n, C) (C values per
        point)."""
        return self._y

    @property
    @abstractmethod
    def n(self) -> int:
        """Number of points."""

    @property
    @abstractmethod
    def dims(self) -> Tuple[int, ...]:
        """(d_1, ..., d_p)."""

    @property
    def rank(self) -> int:
        """r, the number of Kronecker products each point is a sum of."""
        return 1

    @property
    def d(self) -> int:
        """Input dimension d = d_1 * ... * d_p."""
        return math.prod(self.dims)

    @property
    def p(self) -> int:
        """Number of Kronecker factors."""
        return len(self.dims)

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """A digest of the points (not the targets): equal for two data sets
        of this kind holding the same points, so a net keeps one
        coefficient block for them."""

    @property
    @abstractmethod
    def core_layout(self) -> CoreLayout:
        """The arrays as kronnet's core reads them (low level): a list of
        float64 matrices, the terms per point r, and per factor None (the
        matrix holds the n * r term rows) or an int64 index (n * r,) into
        the matrix as a table."""

    @property
    def table_rows(self) -> int:
        """Rows of the largest entity table in :attr:`core_layout` (0 when
        no factor is an entity table)."""
        mats, _, index = self.core_layout
        return max((int(u.shape[0]) for u, i in zip(mats, index) if i is not None), default=0)

    @property
    def core_nbytes(self) -> int:
        """Bytes of the arrays in :attr:`core_layout` (what a trainer copies)."""
        mats, _, index = self.core_layout
        return sum(int(u.nbytes) for u in mats) + sum(int(i.nbytes) for i in index if i is not None)

    def inner_products(self, other: Optional[KronPoints] = None) -> np.ndarray:
        """<x_i, x'_j> for every point of this set and of `other` (default:
        this set), from the factors alone (no d-dimensional vector is formed).

        Parameters
        ----------
        other : KronPoints, optional
            q points with the same dims; default ``self``.

        Returns
        -------
        ndarray of shape (n, q)
            The (cross-)Gram matrix.

        Raises
        ------
        ArgumentError
            `other` has other dims.
        OutOfMemoryError
            The n × q matrix would not fit in memory.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.make_pair_data(6, 3, dims=(2, 3), seed=0)
        >>> G = data.inner_products()
        >>> bool(np.allclose(G, data.dense() @ data.dense().T))
        True
        """
        other = self if other is None else other
        if not isinstance(other, KronPoints):
            raise ArgumentTypeError("other", f"expected a KronData or PairData, got {type(other).__name__}")
        if other.dims != self.dims:
            raise ArgumentError("other", f"has factor dimensions {other.dims}, this data set {self.dims}")
        v.ensure_fits(8.0 * self.n * other.n, "the Gram matrix (n × q)", "other")
        gram: np.ndarray = _core.cross_gram(self.core_layout, other.core_layout)
        return gram

    @abstractmethod
    def norms(self) -> np.ndarray:
        """||x_i|| for every point, computed from the factors.

        Returns
        -------
        ndarray of shape (n,)
            ||x_i|| for every point i.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> bool(np.allclose(kn.make_pair_data(5, 3, dims=(2, 2)).norms(), 1.0))
        True
        """

    @abstractmethod
    def scaled(self, factor: float) -> KronPoints:
        """A copy of the points multiplied by `factor` (x_i -> factor * x_i),
        same kind, same targets; d-free (one factor scaled).

        Parameters
        ----------
        factor : float
            Positive and finite.

        Returns
        -------
        KronPoints
            Norms multiplied by `factor`.

        Raises
        ------
        ArgumentError
            `factor` is not positive and finite.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(3, dims=(2, 2), seed=0)
        >>> data.scaled(2.0).norms() / data.norms()
        array([2., 2., 2.])
        """

    @abstractmethod
    def dense(self) -> np.ndarray:
        """The materialized points. Only for small d.

        Returns
        -------
        ndarray of shape (n, d)
            Row i is x_i.

        Examples
        --------
        >>> import kronnet as kn
        >>> kn.make_kronecker_data(5, dims=(2, 3)).dense().shape
        (5, 6)
        """

    @abstractmethod
    def take(self, indices: Any) -> KronPoints:
        """The points at `indices` (repeats allowed), with their targets.

        Parameters
        ----------
        indices : array_like of int, shape (k,)
            Indices in [0, n).

        Returns
        -------
        KronPoints
            k points of the same kind.

        Examples
        --------
        >>> import kronnet as kn
        >>> kn.make_pair_data(10, 4, dims=(2, 2)).take([0, 0, 3]).n
        3
        """

    def with_targets(self, y: Optional[Any]) -> KronPoints:
        """The same points with other targets (the point arrays are shared,
        not copied).

        Parameters
        ----------
        y : array_like of shape (n,), or None
            The new targets; None for none.

        Returns
        -------
        KronPoints
            A data set of the same kind and points (same fingerprint).

        Raises
        ------
        ArgumentError
            `y` has the wrong shape or holds NaN/inf.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_pair_data(10, 4, dims=(2, 2), seed=0)
        >>> other = data.with_targets(-data.y)
        >>> other.fingerprint == data.fingerprint, bool((other.y == -data.y).all())
        (True, True)
        """
        return self._retargeted(None if y is None else v.targets(y, "y", self.n))

    @abstractmethod
    def _retargeted(self, y: Optional[np.ndarray]) -> KronPoints:
        """These points with the checked targets `y` (arrays shared)."""

    @abstractmethod
    def to_arrays(self) -> Dict[str, Any]:
        """The arrays that rebuild the points (for saved files and pickles):
        ``{"factors": [...]}`` for KronData, ``{"tables": [...], "pairs":
        ...}`` for PairData. :func:`from_arrays` is the inverse.

        Returns
        -------
        dict of str to ndarray or list of ndarray
            Views of the data set's own (read-only) arrays.

        Examples
        --------
        >>> import kronnet as kn
        >>> sorted(kn.make_pair_data(10, 4, dims=(2, 2)).to_arrays())
        ['pairs', 'tables']
        """

    def __len__(self) -> int:
        return self.n


def from_arrays(kind: str, arrays: Dict[str, Any], y: Optional[np.ndarray]) -> KronPoints:
    """Rebuilds points of a registered kind from :meth:`KronPoints.to_arrays`
    (validating everything, as the constructor does).

    Parameters
    ----------
    kind : str
        :attr:`KronPoints.kind` of the data set ("kron" or "pairs").
    arrays : dict
        What :meth:`KronPoints.to_arrays` returned.
    y : ndarray of shape (n,), optional
        The targets.

    Returns
    -------
    KronPoints
        A data set of that kind.

    Raises
    ------
    ArgumentError
        An unknown kind, or arrays the constructor refuses.
    """
    cls = _KINDS.get(kind)
    if cls is None:
        raise ArgumentError("kind", f"unknown kind of data {kind!r}; known: {sorted(_KINDS)}")
    points: KronPoints = cls.from_arrays(arrays, y)  # type: ignore[attr-defined]
    return points
