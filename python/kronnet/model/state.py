"""A net described by plain values and arrays: what saved files, pickles,
copies and the gathering of shards carry (the inverse of building a net)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


@dataclass
class BlockState:
    """One coefficient block: its points and the coefficients of its neurons.

    Attributes
    ----------
    kind : str
        The points' :attr:`~kronnet.KronPoints.kind` ("kron" or "pairs").
    points : dict
        :meth:`~kronnet.KronPoints.to_arrays` of the points.
    y : ndarray of shape (n,), optional
        The points' targets, if they had any.
    alpha_t : ndarray of shape (n, count)
        αᵀ for the neurons described (every neuron, or one rank's).
    beta : ndarray of shape (n, C), optional
        β̃, the linear term's coefficients over these points (every rank
        holds all of them); None for zeros.
    """

    kind: str
    points: Dict[str, Any]
    y: Optional[np.ndarray]
    alpha_t: np.ndarray
    beta: Optional[np.ndarray] = None

    def neurons(self, first: int, count: int) -> BlockState:
        """The same block for neurons first .. first + count only (a view)."""
        return replace(self, alpha_t=self.alpha_t[:, first : first + count])


@dataclass
class NetState:
    """A whole net (or the neurons one MPI rank holds of it), as plain values.

    Attributes
    ----------
    dims : tuple of int
        (d_1, ..., d_p).
    width : int
        m, the neurons of the whole net.
    threshold : float
        b.
    seed : int
        The seed of a and W(0).
    init : str
        "gaussian" or "kron".
    init_rank : int
        R of the Kronecker-factored init.
    blocks : list of BlockState
        The coefficient blocks.
    neurons : (int, int)
        (first, count): which neurons the blocks' coefficients and the
        per-neuron head (a, thresholds) hold.
    outputs : int
        C.
    a : ndarray of shape (count, C), optional
        The output weights of the neurons described; None: the initial ±1
        drawn from the seed.
    thresholds : ndarray of shape (count,), optional
        Their thresholds; None: all equal to `threshold`.
    output_bias : ndarray of shape (C,), optional
        c; None: zeros.
    v_scale : float
        The linear term's scale s_v (v = s_v Σ_blocks β̃ᵀ X).
    """

    dims: Tuple[int, ...]
    width: int
    threshold: float
    seed: int
    init: str
    init_rank: int
    blocks: List[BlockState] = field(default_factory=list)
    neurons: Tuple[int, int] = (0, 0)
    outputs: int = 1
    a: Optional[np.ndarray] = None
    thresholds: Optional[np.ndarray] = None
    output_bias: Optional[np.ndarray] = None
    v_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.neurons == (0, 0):
            self.neurons = (0, int(self.width))

    def whole(self) -> bool:
        """Whether the blocks hold every neuron's coefficients."""
        return self.neurons == (0, int(self.width))
