"""The record of a training run (:meth:`Trainer.fit` returns one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

import numpy as np


@dataclass
class History:
    """Per-step record of :meth:`Trainer.fit`.

    :meth:`Trainer.fit` returns one (and attaches one to the exception when
    it stops early); there is no need to build one directly. Every
    parameter is kept as the attribute of the same name.

    Parameters
    ----------
    loss : ndarray of shape (steps,)
        Batch loss L_B before each update, float64.
    fired_union : ndarray of shape (steps,)
        ``|R|``, the distinct neurons fired by each batch (those that moved):
        the o(m) sparsity the algorithm exploits, int64.
    fired_total : ndarray of shape (steps,)
        Sum over the batch of ``|A_i|``, int64.
    batch_sizes : ndarray of shape (steps,)
        ``|B|``, the size of each step's batch, int64.
    full_loss : list of (int, float), optional
        (step, full training loss) checkpoints, including before the first
        and after the last step; steps count from the trainer's start.
    seconds : float, default 0.0
        Wall time of the fit.
    val_loss : list of (int, float), optional
        (step, validation loss) at the same checkpoints as `full_loss`, when
        :meth:`Trainer.fit` was given `validation`; empty otherwise.
    best_step : int or None, default None
        With early stopping (``fit(..., patience=k)``): the step of the
        lowest validation loss, whose parameters the trainer went back to.
    stopped_early : bool, default False
        Early stopping ended the fit before its `steps`.

    Examples
    --------
    >>> import kronnet as kn
    >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
    >>> net = kn.TwoLayerNet(data.dims, width=64)
    >>> tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), batch_size=8)
    >>> hist = tr.fit(10, eval_every=5)
    >>> hist.steps, hist.loss.shape, hist.batch_sizes.tolist()
    (10, (10,), [8, 8, 8, 8, 8, 8, 8, 8, 8, 8])
    >>> [step for step, _ in hist.full_loss]
    [0, 5, 10]
    >>> hist.val_loss  # fit(..., validation=held_out) fills it
    []
    """

    loss: np.ndarray
    fired_union: np.ndarray
    fired_total: np.ndarray
    batch_sizes: np.ndarray
    full_loss: List[Tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    val_loss: List[Tuple[int, float]] = field(default_factory=list)
    best_step: Optional[int] = None
    stopped_early: bool = False

    @property
    def steps(self) -> int:
        """The number of steps recorded."""
        return int(self.loss.shape[0])

    @property
    def fired_per_point(self) -> np.ndarray:
        """The mean ``|A_i|`` per batch point of each step, shape (steps,)."""
        out: np.ndarray = self.fired_total / np.maximum(self.batch_sizes, 1)
        return out

    def __repr__(self) -> str:
        if self.full_loss:
            val = ""
            if self.val_loss:
                val = f", val_loss {self.val_loss[0][1]:.4g} -> {self.val_loss[-1][1]:.4g}"
            if self.best_step is not None:
                val += f", best_step={self.best_step}" + (" (stopped early)" if self.stopped_early else "")
            return (
                f"History(steps={self.steps}, full_loss {self.full_loss[0][1]:.4g} -> "
                f"{self.full_loss[-1][1]:.4g}{val}, seconds={self.seconds:.3g})"
            )
        return f"History(steps={self.steps}, seconds={self.seconds:.3g})"


def from_runs(
    parts: List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    checkpoints: List[Tuple[int, float]],
    seconds: float,
    val_checkpoints: Optional[List[Tuple[int, float]]] = None,
    best_step: Optional[int] = None,
    stopped_early: bool = False,
) -> History:
    """A History from the per-run arrays (loss, |R|, sum |A_i|, batch
    sizes) of the runs of one fit, and its checkpoints."""

    def cat(k: int, dtype: Any) -> np.ndarray:
        return np.concatenate([p[k] for p in parts]).astype(dtype) if parts else np.empty(0, dtype=dtype)

    return History(
        loss=cat(0, np.float64),
        fired_union=cat(1, np.int64),
        fired_total=cat(2, np.int64),
        batch_sizes=cat(3, np.int64),
        full_loss=list(checkpoints),
        seconds=seconds,
        val_loss=list(val_checkpoints or []),
        best_step=best_step,
        stopped_early=stopped_early,
    )
