"""The asynchronous tree (docs/design.md, "The asynchronous tree") as a standalone structure."""

from __future__ import annotations

import numbers
from typing import Any, Dict, List, Tuple, cast

import numpy as np

from . import _core
from . import _validate as v
from .errors import ArgumentError, ArgumentTypeError


def _threshold(tau: Any) -> float:
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real):
        raise ArgumentTypeError("tau", f"expected a real number, got {type(tau).__name__} {tau!r}")
    try:
        t = float(tau)
    except OverflowError:  # an int beyond float64: above or below every value
        t = float("inf") if cast(Any, tau) > 0 else float("-inf")
    if np.isnan(t):
        raise ArgumentError("tau", "must not be NaN (±inf is allowed)")
    return t


class AsyncTree:
    """The asynchronous tree: which entries of a row exceed a threshold.

    One max-tree per row of `values` over its m entries, answering "which r
    have values[i, r] > tau" by descending only into subtrees whose maximum
    exceeds tau. Updates are recorded, and each row's tree is brought up to
    date lazily, on its next query, coalescing every change since its last
    one. This is the structure behind ``Trainer(index="tree")``, exposed on
    its own (docs/design.md, "The asynchronous tree").

    Parameters
    ----------
    values : array_like of shape (n, m)
        Finite floats (copied), n >= 1 rows and m >= 1 columns.

    Raises
    ------
    ArgumentError
        `values` is not 2-D, is empty, or holds NaN or inf.

    Notes
    -----
    Memory: about m/7 float64 internal nodes per row (fan-out 8), i.e. 14%
    of the values, plus a change log of O(m) entries.

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> tree = kn.AsyncTree(np.array([[0.5, 2.0, -1.0, 3.0], [1.0, 0.0, 0.0, 0.2]]))
    >>> tree
    AsyncTree(n=2, m=4, fanout=8)
    >>> tree.query(0, 1.0)
    array([1, 3])
    >>> tree.update([1, 2], [[0.0, 5.0], [7.0, 0.0]])  # columns 1 and 2 of every row
    >>> tree.query(0, 1.0)
    array([2, 3])
    """

    def __init__(self, values: Any) -> None:
        vals = v.float_array(values, "values", 2)
        self._tree = _core.AsyncTree(vals)

    @property
    def shape(self) -> Tuple[int, int]:
        """The shape (n, m) of the values.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> kn.AsyncTree(np.zeros((3, 5))).shape
        (3, 5)
        """
        n, m = self._tree.shape
        return (int(n), int(m))

    @property
    def values(self) -> np.ndarray:
        """A copy of the current values, shape (n, m), updates included."""
        return self._tree.values

    @property
    def fanout(self) -> int:
        """The number of children per internal node (8)."""
        return int(self._tree.fanout)

    @property
    def memory_bytes(self) -> int:
        """Bytes of the tree's own structure (beyond the values)."""
        return int(self._tree.memory_bytes)

    @property
    def stats(self) -> Dict[str, int]:
        """The maintenance and query work so far, as counters.

        ``rows_synced``, ``full_rebuilds``, ``nodes_recomputed``,
        ``values_read`` and ``queries``.
        """
        return dict(self._tree.stats)

    def update(self, cols: Any, new_values: Any) -> None:
        """Sets ``values[:, cols] = new_values``.

        The change is logged; each row's tree catches up on its next query.

        Parameters
        ----------
        cols : array_like of int, shape (k,)
            Distinct column indices in [0, m); k = 0 changes nothing.
        new_values : array_like of shape (n, k)
            Finite floats: column j of it replaces column ``cols[j]``.

        Raises
        ------
        ArgumentError
            A column is out of range or repeated, `new_values` has the wrong
            shape, or holds NaN or inf.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> tree = kn.AsyncTree(np.zeros((2, 4)))
        >>> tree.update([3], [[1.0], [2.0]])
        >>> tree.values
        array([[0., 0., 0., 1.],
               [0., 0., 0., 2.]])
        """
        n, m = self.shape
        c = v.index_array(cols, "cols", m, what="columns", allow_empty=True)
        if np.unique(c).size != c.size:
            raise ArgumentError("cols", "indices must be distinct")
        nv = v.float_array(new_values, "new_values", 2, allow_empty=True)
        if nv.shape != (n, c.size):
            raise ArgumentError("new_values", f"has shape {nv.shape}, expected ({n}, {c.size})")
        if c.size:
            self._tree.update(c, nv)

    def query(self, i: int, tau: float) -> np.ndarray:
        """Every column r with ``values[i, r] > tau`` (strict).

        Parameters
        ----------
        i : int
            The row, in [0, n).
        tau : float
            The threshold; ±inf is allowed, NaN is not.

        Returns
        -------
        ndarray of shape (k,)
            The columns, sorted, int64.

        Raises
        ------
        ArgumentError
            `i` is out of range, or `tau` is NaN.
        ArgumentTypeError
            `i` is not an integer, or `tau` is not a real number.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> tree = kn.AsyncTree(np.array([[0.5, 2.0, -1.0, 3.0]]))
        >>> tree.query(0, 0.5)  # strict: 0.5 itself is not above 0.5
        array([1, 3])
        >>> tree.query(0, float("-inf"))
        array([0, 1, 2, 3])
        """
        n = self.shape[0]
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise ArgumentTypeError("i", f"expected an integer row index, got {type(i).__name__} {i!r}")
        if not 0 <= i < n:
            raise ArgumentError("i", f"row {i} is out of range for {n} rows")
        return self._tree.query(int(i), _threshold(tau))

    def query_many(self, rows: Any, tau: float) -> List[np.ndarray]:
        """:meth:`query` for several rows, synced in parallel.

        Parameters
        ----------
        rows : array_like of int, shape (k,)
            Rows in [0, n); repeats are allowed.
        tau : float
            The threshold; ±inf is allowed, NaN is not.

        Returns
        -------
        list of ndarray
            k sorted int64 arrays, the answer for ``rows[j]`` at position j.

        Raises
        ------
        ArgumentError
            A row is out of range, or `tau` is NaN.
        ArgumentTypeError
            `tau` is not a real number.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> tree = kn.AsyncTree(np.array([[0.5, 2.0, -1.0, 3.0], [1.0, 0.0, 0.0, 0.2]]))
        >>> tree.query_many([1, 0, 1], 0.1)
        [array([0, 3]), array([0, 1, 3]), array([0, 3])]
        """
        idx = v.index_array(rows, "rows", self.shape[0], what="rows")
        return list(self._tree.query_many(idx, _threshold(tau)))

    def __repr__(self) -> str:
        n, m = self.shape
        return f"AsyncTree(n={n}, m={m}, fanout={self.fanout})"
