"""Argument checks shared by the public entry points.

Every message starts with the argument's name, so a user sees at once which
argument is wrong and why. Sizes are checked against available memory before
anything is allocated.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, Sequence

import numpy as np

GIB = float(1 << 30)


def positive_int(value: Any, name: str) -> int:
    """`value` as a Python int > 0 (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a positive integer, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name}: must be positive, got {value}")
    return int(value)


def seed_int(value: Any, name: str = "seed") -> int:
    """A seed: an int in [0, 2**64)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a non-negative integer, got {type(value).__name__} {value!r}")
    if not 0 <= value < 2**64:
        raise ValueError(f"{name}: must be in [0, 2**64), got {value}")
    return int(value)


def finite_float(value: Any, name: str, positive: bool = False) -> float:
    """`value` as a finite float (optionally > 0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name}: must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name}: must be positive, got {v}")
    return v


def choice(value: Any, name: str, options: Sequence[str]) -> str:
    """One of `options`."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name}: must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def float_array(value: Any, name: str, ndim: int) -> np.ndarray:
    """A finite, non-empty float64 array with `ndim` dimensions (a copy only
    when the input is not already float64)."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name}: expected a numeric array, got {type(value).__name__}")
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected real numbers, got an array of dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name}: contains {bad} NaN or infinite value(s)")
    return arr


def index_array(value: Any, name: str, n: int) -> np.ndarray:
    """A non-empty 1-D int64 array of indices in [0, n)."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype == object or arr.dtype.kind not in "iu":
        if arr.dtype.kind == "b" or arr.size:
            raise TypeError(f"{name}: expected integer indices, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of indices, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: is empty")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name}: index {bad} is out of range for {n} training points")
    return np.ascontiguousarray(arr, dtype=np.int64)


def available_bytes() -> int:
    """Memory the process can still allocate (MemAvailable), best effort."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def ensure_fits(nbytes: float, what: str, name: str) -> None:
    """Refuse, before allocating, a size that cannot fit in memory."""
    avail = available_bytes()
    if nbytes > avail:
        raise MemoryError(
            f"{name}: {what} needs {nbytes / GIB:.2f} GiB ({int(nbytes)} bytes), "
            f"but only {avail / GIB:.2f} GiB is available"
        )
