"""The environment that pins every thread pool kronnet's measurements touch.

rayon, OpenBLAS, MKL and OpenMP (so NumPy and PyTorch) each read their
thread count once, when they start, so it has to be in the environment
before they load. This module imports nothing heavy, so the asv suite can
load it (by path) before NumPy is imported; `kronnet bench` uses it to
re-run itself pinned.
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional

#: Every variable that sets a thread pool's size.
THREAD_VARS = ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pinned_env(threads: int, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """`base` (default: this process's environment) with every pool pinned
    to `threads`."""
    env = dict(os.environ if base is None else base)
    for var in THREAD_VARS:
        env[var] = str(threads)
    # PyTorch's OpenMP workers otherwise spin on the cores after every op,
    # stealing them from whatever is timed next (NumPy's BLAS, rayon).
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env
