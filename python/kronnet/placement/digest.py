"""Short digests of call arguments, for checking that every rank of an MPI
job passed the same ones (:meth:`ShardedPlacement.agree`).

A digest must be cheap next to the call it guards and equal exactly when
the arguments are: arrays by dtype, shape and bytes; data sets by kind, size
and their cached fingerprint (and targets, when they have any); paths by
their string; numbers and strings by their repr.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np


def digest(value: Any) -> str:
    """A 32-character hex digest of `value` (see the module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.placement.digest import digest
    >>> digest(np.arange(3)) == digest(np.arange(3)), digest(np.arange(3)) == digest(np.arange(4))
    (True, False)
    >>> digest(10) == digest(11)
    False
    """
    h = hashlib.blake2b(digest_size=16)
    _feed(h, value)
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic)):
        h.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        h.update(f"array:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.data.cast("B") if arr.size else b"")
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}:{len(value)}[".encode())
        for item in value:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(value, dict):
        h.update(f"dict:{len(value)}{{".encode())
        for key in sorted(value, key=repr):
            _feed(h, key)
            _feed(h, value[key])
        h.update(b"}")
    elif isinstance(value, os.PathLike):
        h.update(f"path:{os.fspath(value)!r};".encode())
    elif hasattr(value, "fingerprint") and hasattr(value, "n"):
        # A data set: its points by their digest (computed once, cached),
        # and its targets, which the fingerprint leaves out.
        h.update(f"points:{type(value).__name__}:{value.n}:{value.fingerprint};".encode())
        _feed(h, getattr(value, "y", None))
    else:
        h.update(f"{type(value).__name__}:{value!r};".encode())
