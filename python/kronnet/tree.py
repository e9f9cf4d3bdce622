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
    """One max-tree per row of `values` over its m entries, answering
    "which r have values[i, r] > tau" by descending only into subtrees whose
    maximum exceeds tau. Updates are recorded, and each row's tree is
    brought up to date lazily, on its next query, coalescing every change
    since its last one.

    Parameters
    ----------
    values : array of shape (n, m), finite floats (copied).

    Memory: about m/7 float64 internal nodes per row (fan-out 8), i.e. 14% of
    the values, plus a change log of O(m) entries.
    """

    def __init__(self, values: Any) -> None:
        vals = v.float_array(values, "values", 2)
        self._tree = _core.AsyncTree(vals)

    @property
    def shape(self) -> Tuple[int, int]:
        """(n, m)."""
        n, m = self._tree.shape
        return (int(n), int(m))

    @property
    def values(self) -> np.ndarray:
        """A copy of the current values, shape (n, m)."""
        return self._tree.values

    @property
    def fanout(self) -> int:
        """Children per internal node."""
        return int(self._tree.fanout)

    @property
    def memory_bytes(self) -> int:
        """Bytes of the tree's own structure (beyond the values)."""
        return int(self._tree.memory_bytes)

    @property
    def stats(self) -> Dict[str, int]:
        """Maintenance work so far: rows_synced, full_rebuilds,
        nodes_recomputed, leaves_read."""
        return dict(self._tree.stats)

    def update(self, cols: Any, new_values: Any) -> None:
        """Set values[:, cols] = new_values.

        cols : (k,) distinct column indices in [0, m).
        new_values : (n, k) finite floats.
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
        """Sorted int64 array of every r with values[i, r] > tau (strict)."""
        n = self.shape[0]
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise ArgumentTypeError("i", f"expected an integer row index, got {type(i).__name__} {i!r}")
        if not 0 <= i < n:
            raise ArgumentError("i", f"row {i} is out of range for {n} rows")
        return self._tree.query(int(i), _threshold(tau))

    def query_many(self, rows: Any, tau: float) -> List[np.ndarray]:
        """`query` for several rows (repeats allowed), synced in parallel."""
        idx = v.index_array(rows, "rows", self.shape[0], what="rows")
        return list(self._tree.query_many(idx, _threshold(tau)))

    def __repr__(self) -> str:
        n, m = self.shape
        return f"AsyncTree(n={n}, m={m}, fanout={self.fanout})"
