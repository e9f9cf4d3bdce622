"""A trainer's own state as plain values and arrays: what a checkpoint holds
beside the net, and what :meth:`Trainer.from_state` continues from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .config import TrainerConfig

#: The most steps a trainer counts (``steps_done`` is an int64): ``fit``,
#: ``run`` and ``step`` refuse, before any step, what would pass it.
MAX_STEPS = 2**63 - 1


@dataclass
class CoreState:
    """The compiled core's training state.

    Attributes
    ----------
    state : ndarray
        Pᵀ (neurons held × n) for the Kronecker backend: P itself, since
        recomputing it from the coefficients would round differently; W
        (m × d) for the dense backend.
    bounds : (float, float, float, float) or None
        The Kronecker backend's running bounds on max |P|, |a|, |b| and |L̃|
        (its overflow guard), so a continued run refuses exactly the steps
        the uninterrupted one would; None for the dense backend.
    linear : ndarray or None
        The linear term's training state: L̃ (n × C), each training point's
        unscaled linear part, for the Kronecker backend; ṽ (C × d) for the
        dense one; None while the net has no linear term.
    """

    state: np.ndarray
    bounds: Optional[Tuple[float, float, float, float]]
    linear: Optional[np.ndarray] = None


@dataclass
class TrainerState:
    """Everything a trainer knows beyond its net and data.

    Attributes
    ----------
    config : TrainerConfig
        The settings, resolved.
    steps_done : int
        Steps taken.
    sampler : dict
        The batch sampler's generator state (``rng``), epoch order
        (``order``, int64) and position (``pos``).
    core : CoreState
        The core's state.
    block : int
        Which of the net's coefficient blocks the trainer steps.
    y : ndarray of shape (n,)
        The trainer's targets (another data set on the same points may have
        created the block with other targets).
    """

    config: TrainerConfig
    steps_done: int
    sampler: Dict[str, Any]
    core: CoreState
    block: int
    y: np.ndarray
