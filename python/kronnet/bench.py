"""Measurement helpers shared by `kronnet bench` and the asv suite.

Everything here times whole operations side by side in one process, so the
figures that matter are ratios (Kronecker vs dense, tree vs scan), which are
far steadier than absolute times on a shared machine.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .data import KronData, make_kronecker_data
from .net import TwoLayerNet
from .train import Trainer, suggest_lr

THREAD_VARS = ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pin_threads_env(threads: int) -> Dict[str, str]:
    """Environment pinning rayon, OpenMP/OpenBLAS/MKL (and so NumPy and
    PyTorch) to `threads`; they read it once, at start-up."""
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    return env


def median_time(fn: Callable[[], Any], min_seconds: float = 0.2, repeats: int = 5, max_calls: int = 10_000) -> float:
    """Median over `repeats` rounds of the mean seconds per call, each round
    calling `fn` until `min_seconds` have passed."""
    fn()  # warm-up: page faults, lazy pools, caches
    rounds = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds or calls >= max_calls:
                break
        rounds.append(elapsed / calls)
    return float(np.median(rounds))


def square_dims(d: int) -> tuple:
    """(d1, d2) with d1 * d2 = d and d1 = d2 (or d2 = 2 d1): for d = 2^k."""
    k = int(round(math.log2(d)))
    if 2**k != d:
        raise ValueError(f"d: expected a power of two, got {d}")
    return (2 ** (k // 2), 2 ** (k - k // 2))


class NumpyDenseSGD:
    """The straightforward NumPy SGD step of the same model: materialized X
    (n × d) and W (m × d), O(S m d) per step."""

    def __init__(self, net: TwoLayerNet, data: KronData, lr: float, W: Optional[np.ndarray] = None) -> None:
        self.X = data.dense()
        self.y = np.asarray(data.y)
        self.W = net.initial_weights() if W is None else W
        self.a, self.b, self.lr = np.asarray(net.a), net.threshold, lr
        self.scale = 1.0 / math.sqrt(net.width)

    def step(self, batch: np.ndarray) -> float:
        xb = self.X[batch]
        z = xb @ self.W.T
        e = np.maximum(z - self.b, 0.0) @ self.a * self.scale - self.y[batch]
        coef = (e[:, None] * (z > self.b) * self.a[None, :]) * (self.scale / len(batch))
        self.W -= self.lr * (coef.T @ xb)
        return float(e @ e / (2 * len(batch)))


class TorchDenseSGD:
    """The same step in PyTorch on the CPU (float64)."""

    def __init__(self, net: TwoLayerNet, data: KronData, lr: float, W: Optional[np.ndarray] = None) -> None:
        import torch

        self.torch = torch
        self.X = torch.from_numpy(data.dense())
        self.y = torch.from_numpy(np.array(data.y))
        self.W = torch.from_numpy(net.initial_weights() if W is None else W)
        self.a = torch.from_numpy(np.array(net.a))
        self.b, self.lr, self.scale = net.threshold, lr, 1.0 / math.sqrt(net.width)

    def step(self, batch: np.ndarray) -> float:
        torch = self.torch
        with torch.no_grad():
            idx = torch.from_numpy(batch)
            xb = self.X[idx]
            z = xb @ self.W.T
            e = torch.clamp(z - self.b, min=0.0) @ self.a * self.scale - self.y[idx]
            coef = (e[:, None] * (z > self.b) * self.a[None, :]) * (self.scale / len(batch))
            self.W -= self.lr * (coef.T @ xb)
            return float(e @ e / (2 * len(batch)))


def torch_available() -> bool:
    """Whether PyTorch can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def batches(n: int, size: int, count: int, seed: int = 0) -> List[np.ndarray]:
    """`count` fixed batches for repeatable timing."""
    rng = np.random.default_rng(seed)
    return [rng.choice(n, size=size, replace=False).astype(np.int64) for _ in range(count)]


def cycle(items: Sequence[Any]) -> Callable[[], Any]:
    """A callable returning the items in turn, forever."""
    state = {"i": 0}

    def nxt() -> Any:
        item = items[state["i"] % len(items)]
        state["i"] += 1
        return item

    return nxt
