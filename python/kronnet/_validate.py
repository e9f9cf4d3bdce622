"""Argument checks shared by the public entry points.

Every message starts with the argument's name, and every exception carries
it (``exc.arg``), so a user sees at once which argument is wrong and why.
Arrays handed on to the Rust core are always owned, aligned, native-endian,
C-contiguous float64 (or int64) arrays, whatever the caller passed: a
structured-array field, a negative stride, Fortran order, big-endian data
and read-only memory all give the same result as a plain contiguous copy.
Sizes are checked against available memory before anything is allocated.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, List, Sequence, Tuple, Union

import numpy as np

from .errors import ArgumentError, ArgumentTypeError, OutOfMemoryError

__all__ = [
    "VALUE_BOUND",
    "ArgumentError",
    "ArgumentTypeError",
    "available_bytes",
    "choice",
    "dims_tuple",
    "ensure_fits",
    "finite_float",
    "float_array",
    "flag",
    "index_array",
    "row_log_norms",
    "nonnegative_int",
    "positive_int",
    "seed_int",
    "targets",
    "trainable_targets",
]

GIB = float(1 << 30)

#: Largest |target|, |threshold| and ||x_i|| accepted (the core's VALUE_BOUND,
#: src/model.rs): beyond it SGD has no room before the overflow guard.
VALUE_BOUND = 1e100


def positive_int(value: Any, name: str) -> int:
    """`value` as a Python int > 0 (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(name, f"expected a positive integer, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ArgumentError(name, f"must be positive, got {value}")
    return int(value)


def nonnegative_int(value: Any, name: str) -> int:
    """`value` as a Python int >= 0 (bools, floats and strings are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(name, f"expected a non-negative integer, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ArgumentError(name, f"must be >= 0, got {value}")
    return int(value)


def seed_int(value: Any, name: str = "seed") -> int:
    """A seed: an int in [0, 2**64)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(name, f"expected a non-negative integer, got {type(value).__name__} {value!r}")
    seed = int(value)
    if not 0 <= seed < 2**64:
        raise ArgumentError(name, f"must be in [0, 2**64), got {seed}")
    return seed


def finite_float(value: Any, name: str, positive: bool = False, bound: float = float("inf")) -> float:
    """`value` as a finite float (optionally > 0, optionally |value| <= bound)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(name, f"expected a real number, got {type(value).__name__} {value!r}")
    try:
        v = float(value)
    except OverflowError:
        raise ArgumentError(
            name, f"must be finite, got a number beyond float64's range ({str(value)[:20]}...)"
        ) from None
    if not np.isfinite(v):
        raise ArgumentError(name, f"must be finite, got {v}")
    if positive and v <= 0:
        raise ArgumentError(name, f"must be positive, got {v}")
    if abs(v) > bound:
        raise ArgumentError(name, f"must satisfy |{name}| <= {bound:g}, got {v}")
    return v


def dims_tuple(dims: Any, name: str = "dims") -> Tuple[int, ...]:
    """(d_1, ..., d_p): p >= 1 positive ints."""
    if isinstance(dims, (str, bytes)) or not isinstance(dims, (list, tuple)):
        raise ArgumentTypeError(name, f"expected a tuple of positive integers, got {type(dims).__name__}")
    out = tuple(positive_int(dk, f"{name}[{k}]") for k, dk in enumerate(dims))
    if len(out) < 1:
        raise ArgumentError(name, "need at least 1 Kronecker factor, got 0")
    return out


def choice(value: Any, name: str, options: Sequence[str]) -> str:
    """One of `options`."""
    if not isinstance(value, str) or value not in options:
        raise ArgumentError(name, f"must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def _as_array(value: Any, name: str, what: str) -> np.ndarray:
    """np.asarray(value), refusing strings, None and ragged input by name."""
    if isinstance(value, (str, bytes)) or value is None:
        raise ArgumentTypeError(name, f"expected {what}, got {type(value).__name__}")
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ArgumentTypeError(name, f"cannot be read as {what} ({exc})") from None


def _numeric(value: Any, name: str) -> np.ndarray:
    arr = _as_array(value, name, "a numeric array")
    if arr.dtype.names is not None or arr.dtype == object or arr.dtype.kind not in "fiub":
        raise ArgumentTypeError(name, f"expected real numbers, got an array of dtype {arr.dtype}")
    if arr.dtype.kind == "b":
        raise ArgumentTypeError(name, "expected real numbers, got booleans")
    return arr


def float_array(
    value: Any, name: str, ndim: Union[int, Tuple[int, ...]], copy: bool = True, allow_empty: bool = False
) -> np.ndarray:
    """A finite float64 array with `ndim` dimensions, owned and laid out for
    the core (aligned, native-endian, C-contiguous).

    With ``copy=True`` (the default) the result never shares memory with
    `value`, so later changes to the caller's array cannot reach it. With
    ``copy=False`` an input that already has that layout is used as is (the
    caller hands it over); anything else is still copied.
    """
    arr = _numeric(value, name)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in allowed:
        want = " or ".join(f"{k}-D" for k in allowed)
        raise ArgumentError(name, f"expected a {want} array, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise ArgumentError(name, f"is empty (shape {arr.shape})")
    if copy:
        out = np.array(arr, dtype=np.float64, order="C", copy=True)
    else:
        out = np.require(arr, dtype=np.float64, requirements=["C", "A", "W", "O"])
    if not np.isfinite(out).all():
        bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        raise ArgumentError(name, f"contains {bad} NaN or infinite value(s)")
    return out


def flag(value: Any, name: str) -> bool:
    """`value` as a bool (Python or NumPy bool only)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(name, f"expected True or False, got {type(value).__name__} {value!r}")
    return bool(value)


#: Squared norms inside this range cannot have lost precision to overflow or
#: underflow of the squares (their largest entry's square is at least
#: sq / d_k >= 2^-900 / 2^63, far above the subnormals).
_SQ_SAFE_LOW, _SQ_SAFE_HIGH = 2.0**-900, 2.0**900


def row_log_norms(u: np.ndarray) -> np.ndarray:
    """ln ||u_i|| for every row of `u`, without overflow or underflow: each
    row is scaled by its largest |entry| before squaring (-inf for a zero
    row)."""
    # One pass when every squared norm is a normal float (all real data);
    # the scaled pass below only for rows that could overflow or underflow.
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", u, u)
    if u.shape[1] and np.all((sq >= _SQ_SAFE_LOW) & (sq <= _SQ_SAFE_HIGH)):
        fast: np.ndarray = 0.5 * np.log(sq)
        return fast
    peak = np.max(np.abs(u), axis=1) if u.shape[1] else np.zeros(u.shape[0])
    safe = np.where(peak > 0, peak, 1.0)
    scaled = u / safe[:, None]
    with np.errstate(divide="ignore"):
        out: np.ndarray = np.log(peak) + 0.5 * np.log(np.einsum("ij,ij->i", scaled, scaled))
    return np.where(peak > 0, out, -np.inf)


def index_array(value: Any, name: str, n: int, what: str = "training points", allow_empty: bool = False) -> np.ndarray:
    """A 1-D int64 array of indices in [0, n) (a fresh copy), non-empty
    unless `allow_empty`; `what` names what is indexed, for messages."""
    arr = _as_array(value, name, "integer indices")
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype.names is not None or arr.dtype == object or arr.dtype.kind not in "iu":
        if arr.dtype.kind == "b" or arr.size or arr.dtype.names is not None:
            raise ArgumentTypeError(name, f"expected integer indices, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ArgumentError(name, f"expected a 1-D array of indices, got shape {arr.shape}")
    if arr.size == 0:
        if allow_empty:
            return np.empty(0, dtype=np.int64)
        raise ArgumentError(name, "is empty")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise ArgumentError(name, f"index {bad} is out of range for {n} {what}")
    return np.array(arr, dtype=np.int64, order="C", copy=True)


def index_matrix(value: Any, name: str, sizes: Sequence[int]) -> List[np.ndarray]:
    """The columns of an (n, p) integer array, column k in [0, sizes[k]): p
    fresh C-contiguous int64 arrays of length n (n = 0 allowed)."""
    arr = _as_array(value, name, "an (n, p) array of integer indices")
    p = len(sizes)
    if arr.size == 0 and arr.dtype.kind not in "iu":
        arr = arr.astype(np.int64).reshape(0, p)
    if arr.dtype.names is not None or arr.dtype == object or arr.dtype.kind not in "iu":
        raise ArgumentTypeError(name, f"expected integer indices, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != p:
        raise ArgumentError(name, f"expected shape (n, {p}) (one column per table), got {arr.shape}")
    columns = []
    for k, size in enumerate(sizes):
        col = arr[:, k]
        if col.size:
            lo, hi = int(col.min()), int(col.max())
            if lo < 0 or hi >= size:
                bad = lo if lo < 0 else hi
                raise ArgumentError(name, f"column {k} has index {bad}, out of range for table {k} of {size} rows")
        columns.append(np.array(col, dtype=np.int64, order="C", copy=True))
    return columns


def targets(value: Any, name: str, n: int, copy: bool = True) -> np.ndarray:
    """Targets, finite: (n,) (one per point: a value, a 0/1 target or an
    integer class label), or (n, C) (C values per point, for a net of C
    outputs)."""
    y = float_array(value, name, (1, 2), copy=copy, allow_empty=n == 0)
    if y.shape[0] != n:
        raise ArgumentError(name, f"has {y.shape[0]} targets for {n} points")
    if y.ndim == 2 and y.shape[1] == 0:
        raise ArgumentError(name, f"has shape {y.shape}: no targets per point")
    return y


def trainable_targets(y: np.ndarray, name: str = "y") -> None:
    """Refuses targets no SGD run can fit without overflow (|y| > VALUE_BOUND)."""
    if y.size and float(np.max(np.abs(y))) > VALUE_BOUND:
        i = int(np.argmax(np.abs(y)))
        raise ArgumentError(
            name, f"target {i} is {y[i]:g}; training needs |y| <= {VALUE_BOUND:g} (rescale the targets)"
        )


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
        raise OutOfMemoryError(what, int(nbytes), available=avail, arg=name)
