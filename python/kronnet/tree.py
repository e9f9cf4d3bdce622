"""The asynchronous tree (docs/design.md, "The asynchronous tree") as a standalone structure."""

from __future__ import annotations

import numbers
from typing import Any, Dict, List

import numpy as np

from . import _core
from . import _validate as v


def _threshold(tau: Any) -> float:
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real):
        raise TypeError(f"tau: expected a real number, got {type(tau).__name__} {tau!r}")
    t = float(tau)
    if np.isnan(t):
        raise ValueError("tau: must not be NaN (±inf is allowed)")
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
    def shape(self) -> tuple:
        """(n, m)."""
        return tuple(self._tree.shape)

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
        c = np.asarray(cols)
        if c.ndim == 0:
            c = c.reshape(1)
        if c.dtype == object or c.dtype.kind not in "iu":
            if c.size or c.dtype.kind == "b":
                raise TypeError(f"cols: expected integer column indices, got dtype {c.dtype}")
        if c.ndim != 1:
            raise ValueError(f"cols: expected a 1-D array, got shape {c.shape}")
        c = c.astype(np.int64)
        if c.size == 0:
            nv = np.asarray(new_values, dtype=np.float64)
            if nv.size:
                raise ValueError(f"new_values: has shape {nv.shape}, expected ({n}, 0)")
            return
        if c.min() < 0 or c.max() >= m:
            bad = int(c.min()) if c.min() < 0 else int(c.max())
            raise ValueError(f"cols: index {bad} is out of range for {m} columns")
        if np.unique(c).size != c.size:
            raise ValueError("cols: indices must be distinct")
        nv = v.float_array(new_values, "new_values", 2)
        if nv.shape != (n, c.size):
            raise ValueError(f"new_values: has shape {nv.shape}, expected ({n}, {c.size})")
        self._tree.update(c, nv)

    def query(self, i: int, tau: float) -> np.ndarray:
        """Sorted int64 array of every r with values[i, r] > tau (strict)."""
        n = self.shape[0]
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise TypeError(f"i: expected an integer row index, got {type(i).__name__} {i!r}")
        if not 0 <= i < n:
            raise ValueError(f"i: row {i} is out of range for {n} rows")
        return self._tree.query(int(i), _threshold(tau))

    def query_many(self, rows: Any, tau: float) -> List[np.ndarray]:
        """`query` for several rows (repeats allowed), synced in parallel."""
        idx = v.index_array(rows, "rows", self.shape[0])
        return list(self._tree.query_many(idx, _threshold(tau)))

    def __repr__(self) -> str:
        n, m = self.shape
        return f"AsyncTree(n={n}, m={m}, fanout={self.fanout})"
