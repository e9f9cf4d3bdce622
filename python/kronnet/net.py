"""The two-layer model f(W, x) = (1/sqrt(m)) sum_r a_r max(<w_r, x> - b, 0)."""

from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

from . import _core
from . import _validate as v
from .data import FactorsLike, KronData, as_kron_data


def default_threshold(width: int) -> float:
    """b = sqrt(0.4 ln m): each unit-norm input then fires about m^(4/5)
    neurons at initialization (DESIGN.md §2)."""
    return math.sqrt(0.4 * math.log(width))


class _Segment:
    """Trained displacement sum_i alpha[r, i] x_i over one training set; alpha
    is read live from the trainer that owns it."""

    def __init__(self, data: KronData, alpha: Callable[[], np.ndarray]) -> None:
        self.data = data
        self.alpha = alpha


class TwoLayerNet:
    """A two-layer network with fixed ±1 output weights and threshold ReLU.

    Parameters
    ----------
    dims : (d_1, ..., d_p), p >= 2; inputs live in R^d, d = prod d_k.
    width : m, the number of hidden neurons.
    threshold : b in sigma_b(z) = max(z - b, 0); default sqrt(0.4 ln m).
    seed : keys the counter-based stream: a_r and w_r(0) ~ N(0, I_d) are pure
        functions of (seed, r).

    The weights are W = W(0) + sum over training sets of alpha X, kept
    implicitly: nothing of size m × d is stored unless `dense_weights()` is
    called. A `Trainer` trains the net in place.
    """

    def __init__(self, dims: Sequence[int], width: int, threshold: Optional[float] = None, seed: int = 0) -> None:
        if isinstance(dims, (str, bytes)) or not isinstance(dims, (list, tuple)):
            raise TypeError(f"dims: expected a tuple of positive integers, got {type(dims).__name__}")
        self._dims = tuple(v.positive_int(dk, f"dims[{k}]") for k, dk in enumerate(dims))
        if len(self._dims) < 2:
            raise ValueError(f"dims: need at least 2 Kronecker factors, got {len(self._dims)}")
        self._width = v.positive_int(width, "width")
        if self._width >= 2**32:
            raise ValueError(f"width: must be below 2**32, got {self._width}")
        self._threshold = default_threshold(self._width) if threshold is None else v.finite_float(threshold, "threshold")
        self._seed = v.seed_int(seed)
        a = _core.output_signs(self._seed, self._width)
        a.setflags(write=False)
        self._a = a
        # Dense weights replacing W(0) after dense-backend training.
        self._base: Optional[Callable[[], np.ndarray]] = None
        self._segments: List[_Segment] = []
        # Bumped by every change of the weights, so a trainer can tell when
        # another trainer has moved the net under it.
        self._version = 0

    @property
    def dims(self) -> tuple:
        """(d_1, ..., d_p)."""
        return self._dims

    @property
    def d(self) -> int:
        """Input dimension prod d_k."""
        return math.prod(self._dims)

    @property
    def width(self) -> int:
        """m, the number of hidden neurons."""
        return self._width

    @property
    def threshold(self) -> float:
        """b."""
        return self._threshold

    @property
    def seed(self) -> int:
        """The seed of a and W(0)."""
        return self._seed

    @property
    def a(self) -> np.ndarray:
        """Output weights, shape (m,), entries ±1, read-only."""
        return self._a

    def initial_weights(self) -> np.ndarray:
        """W(0), shape (m, d), regenerated from the seed. Only for small d."""
        v.ensure_fits(8.0 * self._width * self.d, "the weight matrix (width × d)", "initial_weights()")
        return _core.initial_weights(self._seed, self._width, self.d)

    def dense_weights(self) -> np.ndarray:
        """The current W, shape (m, d), materialized. Only for small d."""
        extra = sum(8.0 * s.data.n * (self.d + self._width) for s in self._segments)
        v.ensure_fits(8.0 * self._width * self.d + extra, "the weight matrix (width × d)", "dense_weights()")
        w = np.array(self._base(), copy=True) if self._base is not None else self.initial_weights()
        for seg in self._segments:
            w += seg.alpha() @ seg.data.dense()
        return w

    def _kron_data(self, X: FactorsLike, name: str) -> KronData:
        data = as_kron_data(X, name)
        if data.dims != self._dims:
            raise ValueError(f"{name}: has factor dimensions {data.dims}, the net expects {self._dims}")
        return data

    def preactivations(self, X: FactorsLike) -> np.ndarray:
        """<w_r, x_j> for every point j of X and neuron r: shape (q, m).

        X is a KronData or a list of factor arrays (q, d_k). Costs
        O(q m d) for the regenerated W(0) part and O(q n m) per training set.
        """
        data = self._kron_data(X, "X")
        v.ensure_fits(8.0 * data.n * self._width * 2, "the preactivation matrix (points × width)", "X")
        if self._base is not None:
            q = data.dense() @ self._base().T
        else:
            q = _core.init_preacts(data.factors, self._seed, self._width)
        for seg in self._segments:
            q += _core.cross_gram(data.factors, seg.data.factors) @ seg.alpha().T
        return q

    def predict(self, X: FactorsLike) -> np.ndarray:
        """f(W, x_j) for every point of X (a KronData or a list of factor
        arrays of shapes (q, d_k)): shape (q,)."""
        return _core.outputs(self.preactivations(X), self._a, self._threshold)

    def __call__(self, X: FactorsLike) -> np.ndarray:
        return self.predict(X)

    def __repr__(self) -> str:
        return (
            f"TwoLayerNet(dims={self._dims}, width={self._width}, "
            f"threshold={self._threshold:.6g}, seed={self._seed})"
        )
