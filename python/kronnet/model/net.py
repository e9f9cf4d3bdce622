"""The two-layer model f(W, x) = (1/sqrt(m)) sum_r a_r max(<w_r, x> - b, 0),
and the weights it owns (docs/design.md, "The state, and who owns it")."""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

from . import _core
from . import _validate as v
from . import points as _points
from .data import FactorsLike, as_points
from .errors import ArgumentError
from .points import CoreLayout, KronPoints
from .progress import PointsBar

#: Memory one chunk of `predict` may use (P of the chunk's points and their
#: cross-Gram with the largest training set): prediction on any number of
#: points stays within about this much beyond its inputs and outputs.
PREDICT_CHUNK_BYTES = 64 << 20

#: The kinds of initial weights (``TwoLayerNet(init=...)``).
INITS = ("gaussian", "kron")
InitName = Literal["gaussian", "kron"]
#: Largest ``init_rank`` (each neuron draws R * sum_k d_k normals).
MAX_INIT_RANK = 1 << 16


def _table_rows(data: KronPoints) -> int:
    """Rows of the largest entity table of `data` (0 without tables)."""
    mats, _, index = data.core_layout
    return max((int(u.shape[0]) for u, i in zip(mats, index) if i is not None), default=0)


def gaussian_tail(z: float) -> float:
    """P(N(0, 1) > z): the fraction of neurons a unit-norm point fires at
    threshold z under Gaussian init."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def default_threshold(width: int) -> float:
    """The default threshold b = sqrt(0.4 ln m).

    Each unit-norm input then fires about m^(4/5) neurons at initialization
    (docs/design.md, "The model"): a few percent for widths in the thousands.

    Parameters
    ----------
    width : int
        m, the number of hidden neurons.

    Returns
    -------
    float
        b = sqrt(0.4 ln m).

    Raises
    ------
    ArgumentError
        `width` is not positive.

    Examples
    --------
    >>> import kronnet as kn
    >>> round(kn.default_threshold(2048), 4)
    1.7464
    """
    return math.sqrt(0.4 * math.log(v.positive_int(width, "width")))


class CoefficientBlock:
    """The learned weights over one training set: W gains alpha @ data.dense().

    A net holds one block per set of training points
    (:attr:`TwoLayerNet.coefficients`); trainers create and update them.
    There is no need to build one directly.

    Parameters
    ----------
    data : KronData or PairData
        The training points x_i (n of them).
    coef : kronnet._core.Coefficients
        The core's coefficient storage (alpha^T, n × m), shared with the
        trainers on these points.

    Attributes
    ----------
    data : KronData or PairData
        The training points x_i (n of them).
    alpha : ndarray of shape (m, n)
        The coefficients (read-only copy): w_r = w_r(0) + sum over blocks of
        sum_i alpha[r, i] x_i.

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> data = kn.make_kronecker_data(16, dims=(4, 4), seed=0)
    >>> net = kn.TwoLayerNet(data.dims, width=64, seed=0)
    >>> _ = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8)).fit(20)
    >>> (block,) = net.coefficients
    >>> block
    CoefficientBlock(n=16, width=64)
    >>> W = net.initial_weights() + block.alpha @ block.data.dense()
    >>> bool(np.allclose(W, net.dense_weights()))
    True
    """

    def __init__(self, data: KronPoints, coef: Any) -> None:
        self._data = data
        self._coef = coef

    @property
    def data(self) -> KronPoints:
        """The training points of this block (a :class:`KronData` or :class:`PairData`)."""
        return self._data

    @property
    def alpha(self) -> np.ndarray:
        """alpha, shape (m, n), a read-only copy."""
        a: np.ndarray = self._coef.alpha_t().T
        a.flags.writeable = False
        return a

    def _neurons(self, first: int, count: int) -> CoefficientBlock:
        """An independent block of neurons first .. first + count of these
        coefficients (an untrained block stays untrained)."""
        if not self._coef.trained:
            return CoefficientBlock(self._data, _core.Coefficients(self._data.n, count))
        return CoefficientBlock(
            self._data, _core.Coefficients.from_alpha_t(self._coef.alpha_t()[:, first : first + count])
        )

    def __repr__(self) -> str:
        return f"CoefficientBlock(n={self._data.n}, width={self._coef.width})"


class TwoLayerNet:
    """A two-layer network with fixed ±1 output weights and threshold ReLU.

    Parameters
    ----------
    dims : tuple of int
        (d_1, ..., d_p), p >= 1 (p = 1: plain dense inputs); inputs live in R^d,
        d = prod d_k.
    width : int
        m, the number of hidden neurons.
    threshold : float, optional
        b in sigma_b(z) = max(z - b, 0). Default: sqrt(0.4 ln m) for
        Gaussian init; for ``init="kron"`` the b at which a unit-norm
        rank-one point fires the same expected fraction of neurons as under
        Gaussian init at sqrt(0.4 ln m) (docs/guide.md, "Kronecker-factored
        initialization").
    seed : int, default 0
        Keys the counter-based stream: a_r and w_r(0) are pure functions of
        (seed, r).
    init : {"gaussian", "kron"}, default "gaussian"
        "gaussian": w_r(0) ~ N(0, I_d); init and prediction cost O(m d) per
        point. "kron": w_r(0) = R^(-1/2) sum_{j<R} g_rj^(1) ⊗ ... ⊗ g_rj^(p)
        with every g ~ N(0, I_{d_k}); init and prediction cost
        O(m R sum_k d_k) per point, free of d. Both give <w_r(0), x> mean 0
        and variance ||x||^2; under "kron" its kurtosis is
        3 + (3^p - 3) / R for a rank-one unit x.
    init_rank : int, default 8
        R, the number of Kronecker products per neuron under
        ``init="kron"`` (ignored for "gaussian"), at most 65536.

    Raises
    ------
    ArgumentError
        A size is not positive, `width` >= 2**32, `threshold` is not
        finite, `init` is unknown or `init_rank` is out of range.
    ArgumentTypeError
        A size or the seed is not an integer.

    Notes
    -----
    The net owns its weights: W = W(0) + sum over training sets s of
    alpha_s^T X_s, kept implicitly (``coefficients``); nothing of size m × d
    is stored unless :meth:`dense_weights` is called. Trainers train the net
    in place; trainers on the same points share one coefficient block, and a
    discarded trainer leaves nothing behind but that block.

    Examples
    --------
    >>> import kronnet as kn
    >>> data = kn.make_kronecker_data(64, dims=(8, 8), seed=0)
    >>> net = kn.TwoLayerNet(data.dims, width=256, seed=0)
    >>> tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8))
    >>> _ = tr.fit(200)
    >>> net.predict(data).shape
    (64,)
    >>> len(net.coefficients), net.coefficients[0].alpha.shape
    (1, (256, 64))
    """

    def __init__(
        self,
        dims: Sequence[int],
        width: int,
        threshold: Optional[float] = None,
        seed: int = 0,
        init: InitName = "gaussian",
        init_rank: int = 8,
    ) -> None:
        self._dims = v.dims_tuple(dims)
        self._width = v.positive_int(width, "width")
        if self._width >= 2**32:
            raise ArgumentError("width", f"must be below 2**32, got {self._width}")
        v.ensure_fits(8.0 * self._width, "the output weights a (width values)", "width")
        self._init = v.choice(init, "init", INITS)
        self._init_rank = v.positive_int(init_rank, "init_rank")
        if self._init_rank > MAX_INIT_RANK:
            raise ArgumentError("init_rank", f"must be at most {MAX_INIT_RANK}, got {self._init_rank}")
        if threshold is None:
            self._threshold = default_threshold(self._width)
            if self._init == "kron":
                self._threshold = float(_core.kron_threshold(self._threshold, self._init_rank, len(self._dims)))
        else:
            self._threshold = v.finite_float(threshold, "threshold", bound=v.VALUE_BOUND)
        self._seed = v.seed_int(seed)
        a = _core.output_signs(self._seed, self._width)
        a.flags.writeable = False
        self._a = a
        self._blocks: List[CoefficientBlock] = []
        # (group, first, count) once a sharded Trainer has split the net
        # over an MPI communicator (kronnet.shard): the blocks then hold α
        # of neurons first .. first + count only.
        self._shard: Optional[Tuple[Any, int, int]] = None
        # Bumped by every change of the weights, so a trainer can tell when
        # another trainer has moved the net under it.
        self._version = 0

    @property
    def dims(self) -> Tuple[int, ...]:
        """The factor dimensions (d_1, ..., d_p)."""
        return self._dims

    @property
    def d(self) -> int:
        """The input dimension d = prod d_k."""
        return math.prod(self._dims)

    @property
    def width(self) -> int:
        """m, the number of hidden neurons."""
        return self._width

    @property
    def threshold(self) -> float:
        """The threshold b of the activation max(z - b, 0)."""
        return self._threshold

    @property
    def seed(self) -> int:
        """The seed of a and W(0)."""
        return self._seed

    @property
    def init(self) -> str:
        """How W(0) is drawn: "gaussian" or "kron"."""
        return self._init

    @property
    def init_rank(self) -> int:
        """R, the Kronecker products per neuron under ``init="kron"``."""
        return self._init_rank

    def firing_fraction(self) -> float:
        """The expected fraction of neurons a unit-norm rank-one point fires
        at initialization.

        P(<w_r(0), x> > b): P(N(0, 1) > b) for Gaussian init; for
        ``init="kron"`` the tail of R^(-1/2) sum_j prod_k xi_jk (xi iid
        N(0, 1)), computed deterministically (docs/guide.md,
        "Kronecker-factored initialization").

        Returns
        -------
        float
            In [0, 1].

        Examples
        --------
        >>> import kronnet as kn
        >>> round(kn.TwoLayerNet((8, 8), width=2048).firing_fraction(), 4)
        0.0404
        >>> round(kn.TwoLayerNet((8, 8), width=2048, init="kron").firing_fraction(), 4)
        0.0404
        """
        if self._init == "kron":
            return float(_core.kron_firing_fraction(self._threshold, self._init_rank, len(self._dims)))
        return gaussian_tail(self._threshold)

    def _core_init(self) -> Tuple[int, str, int]:
        """W(0) as the core takes it: (seed, init, init_rank)."""
        return (self._seed, self._init, self._init_rank)

    @property
    def a(self) -> np.ndarray:
        """Output weights, shape (m,), entries ±1, read-only."""
        return self._a

    @property
    def coefficients(self) -> Tuple[CoefficientBlock, ...]:
        """The learned state, one block per training set.

        W = W(0) + sum over blocks of ``block.alpha @ block.data.dense()``;
        read it without materializing W. Empty for an untrained net.
        """
        return tuple(self._blocks)

    # -- the block a trainer accumulates into ---------------------------------

    def _block_index(self, data: KronPoints) -> Optional[int]:
        """Which block holds `data`'s points (same fingerprint), if any."""
        for j, blk in enumerate(self._blocks):
            if blk.data.n == data.n and blk.data.fingerprint == data.fingerprint:
                return j
        return None

    def _block_for(self, data: KronPoints) -> Any:
        """The coefficients of `data`'s points, created (zero) if new."""
        j = self._block_index(data)
        if j is not None:
            return self._blocks[j]._coef
        width = self._width if self._shard is None else self._shard[2]
        v.ensure_fits(8.0 * data.n * width, "the coefficient block alpha (width × n)", "data")
        coef = _core.Coefficients(data.n, width)
        self._blocks.append(CoefficientBlock(data, coef))
        return coef

    def _core_blocks(self) -> List[Tuple[CoreLayout, Any]]:
        return [(blk.data.core_layout, blk._coef) for blk in self._blocks if blk._coef.trained]

    # -- sharding over MPI ranks (kronnet.shard) --------------------------------

    @property
    def sharded(self) -> bool:
        """Whether a Trainer with ``comm=`` has split this net over MPI ranks.

        A sharded net holds only its rank's neurons' coefficients; its
        :meth:`predict`, :meth:`dense_weights`, :meth:`preactivations`,
        :meth:`save` and :meth:`gather` are collective (every rank must call
        them) and return the same values on every rank.
        """
        return self._shard is not None

    def _shard_over(self, group: Any) -> Tuple[int, int]:
        """Keeps only this rank's neurons (first, count); idempotent for the same group."""
        from .shard import neuron_range

        if self._shard is not None:
            if self._shard[0].comm is not group.comm:
                raise ArgumentError("comm", "the net is already sharded over another communicator")
            return self._shard[1], self._shard[2]
        first, count = neuron_range(self._width, group.size, group.rank)
        self._blocks = [blk._neurons(first, count) for blk in self._blocks]
        self._shard = (group, first, count)
        self._version += 1
        return first, count

    def _whole(self) -> TwoLayerNet:
        whole = self.gather()
        assert whole is not None
        return whole

    def gather(self, root: Optional[int] = None) -> Optional[TwoLayerNet]:
        """The whole net from a sharded one, as a plain (unsharded) net.

        Collective: every rank of the communicator must call it.

        Parameters
        ----------
        root : int, optional
            The rank that receives the net; None: every rank does.

        Returns
        -------
        TwoLayerNet or None
            A new net with every neuron's coefficients, equal to the sharded
            one (its predictions are bitwise the same); None on ranks other
            than `root`. An unsharded net returns itself.

        Notes
        -----
        The receiving ranks hold all coefficients (m × n per block) at once.

        Examples
        --------
        >>> import kronnet as kn
        >>> net = kn.TwoLayerNet((4, 4), width=64)
        >>> net.gather() is net  # not sharded: nothing to gather
        True

        Under ``mpiexec -n 2``, after ``kn.Trainer(net, data, comm=MPI.COMM_WORLD)``,
        ``net.gather()`` returns on every rank a plain net with all 64 neurons.
        """
        if self._shard is None:
            return self
        group = self._shard[0]
        state = self._state_local()
        full = []
        for blk in state["blocks"]:
            parts = (
                group.comm.allgather(blk["alpha_t"]) if root is None else group.comm.gather(blk["alpha_t"], root=root)
            )
            if parts is not None:
                full.append({**blk, "alpha_t": np.concatenate(parts, axis=1)})
        if root is not None and group.rank != root:
            return None
        return TwoLayerNet._from_state({**state, "blocks": full})

    # -- weights and predictions ----------------------------------------------

    def initial_weights(self) -> np.ndarray:
        """W(0), regenerated from the seed. Only for small d.

        Row r is w_r(0) ~ N(0, I_d), a pure function of (seed, r); the net
        itself never stores it.

        Returns
        -------
        ndarray of shape (m, d)
            The initial hidden weights.

        Raises
        ------
        OutOfMemoryError
            The m × d matrix would not fit in memory.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> net = kn.TwoLayerNet((4, 4), width=32, seed=7)
        >>> W0 = net.initial_weights()
        >>> W0.shape
        (32, 16)
        >>> bool((W0 == kn.TwoLayerNet((4, 4), width=32, seed=7).initial_weights()).all())
        True
        """
        v.ensure_fits(8.0 * self._width * self.d, "the weight matrix (width × d)", "initial_weights()")
        return _core.initial_weights(self._core_init(), self._width, list(self._dims))

    def initial_factors(self) -> List[np.ndarray]:
        """The factor vectors of a Kronecker-factored W(0) (``init="kron"``).

        Row r of W(0) is ``R**-0.5 * sum_j kron(F[0][r, j], ..., F[p-1][r, j])``
        for the returned arrays F; regenerated from the seed.

        Returns
        -------
        list of p ndarray, array k of shape (m, R, d_k)
            g_rj^(k) ~ N(0, I_{d_k}).

        Raises
        ------
        ArgumentError
            The net uses Gaussian init.
        OutOfMemoryError
            The arrays would not fit in memory.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> net = kn.TwoLayerNet((3, 4), width=5, init="kron", init_rank=2)
        >>> F = net.initial_factors()
        >>> [f.shape for f in F]
        [(5, 2, 3), (5, 2, 4)]
        >>> w0 = (np.kron(F[0][0, 0], F[1][0, 0]) + np.kron(F[0][0, 1], F[1][0, 1])) / np.sqrt(2)
        >>> bool(np.allclose(net.initial_weights()[0], w0))
        True
        """
        if self._init != "kron":
            raise ArgumentError("init", "the net uses Gaussian init, which has no factors (use initial_weights())")
        v.ensure_fits(
            8.0 * self._width * self._init_rank * sum(self._dims), "the initial factor vectors", "initial_factors()"
        )
        return list(_core.kron_init_factors(self._seed, self._width, list(self._dims), self._init_rank))

    def dense_weights(self) -> np.ndarray:
        """The current W, materialized. Only for small d.

        Returns
        -------
        ndarray of shape (m, d)
            W(0) + sum over blocks of alpha @ X.

        Raises
        ------
        OutOfMemoryError
            The m × d matrix (and one block's n × d points) would not fit in
            memory.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.make_kronecker_data(16, dims=(4, 4), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=64)
        >>> bool((net.dense_weights() == net.initial_weights()).all())  # untrained
        True
        >>> _ = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8)).fit(20)
        >>> W = net.dense_weights()
        >>> W.shape
        (64, 16)
        >>> bool(np.allclose(data.dense() @ W.T, net.preactivations(data)))
        True
        """
        if self._shard is not None:
            # Every rank gathers, then checks and computes; a refusal on
            # one rank is agreed so that no rank waits in a later message.
            whole = self._whole()
            return self._shard[0].run(whole.dense_weights)  # type: ignore[no-any-return]
        largest = max((blk.data.n for blk in self._blocks), default=0)
        need = 8.0 * self.d * (self._width + largest)
        v.ensure_fits(need, "the weight matrix (width × d) and one block's X (n × d)", "dense_weights()")
        return _core.dense_weights(self._core_init(), self._width, list(self._dims), self._core_blocks())

    def _points(self, X: FactorsLike, name: str) -> KronPoints:
        data = as_points(X, name)
        if data.dims != self._dims:
            raise ArgumentError(name, f"has factor dimensions {data.dims}, the net expects {self._dims}")
        return data

    def _scratch_bytes(self, data: KronPoints) -> float:
        """Bytes init needs beyond P for `data`'s points."""
        return float(
            _core.init_scratch_bytes(
                self._core_init(), list(self._dims), data.n, data.rank, _table_rows(data), _core.thread_count()
            )
        )

    def preactivations(self, X: FactorsLike) -> np.ndarray:
        """<w_r, x_j> for every point j of X and neuron r.

        Parameters
        ----------
        X : KronData, PairData or list of array_like of shapes (q, d_k)
            The points, as a data set or as KronData's factor matrices; the dims
            must equal the net's.

        Returns
        -------
        ndarray of shape (q, m)
            Entry [j, r] is <w_r, x_j>. Costs O(q m d) for the regenerated
            W(0) part and O(q n m) per training set.

        Raises
        ------
        ArgumentError
            X has the wrong dims, NaN/inf, or points beyond ||x|| <= 1e100.
        OutOfMemoryError
            The q × m result would not fit in memory.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.make_kronecker_data(16, dims=(4, 4), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=64)
        >>> P = net.preactivations(data)
        >>> P.shape
        (16, 64)
        >>> bool(np.allclose(P, data.dense() @ net.initial_weights().T))
        True
        """
        if self._shard is not None:
            whole = self._whole()
            return self._shard[0].run(lambda: whole.preactivations(X))  # type: ignore[no-any-return]
        data = self._points(X, "X")
        largest = max((blk.data.n for blk in self._blocks), default=0)
        need = 8.0 * data.n * (self._width + largest) + self._scratch_bytes(data)
        v.ensure_fits(need, "the preactivation matrix (points × width)", "X")
        return _core.preacts(data.core_layout, self._core_init(), self._width, self._core_blocks())

    def predict(self, X: FactorsLike, progress: bool = False) -> np.ndarray:
        """f(W, x_j) for every point of X.

        The points are processed in chunks (``PREDICT_CHUNK_BYTES`` each), so
        memory stays bounded whatever their number. Ctrl-C stops it within a
        fraction of a second.

        Parameters
        ----------
        X : KronData, PairData or list of array_like of shapes (q, d_k)
            The points, as a data set or as KronData's factor matrices; the dims
            must equal the net's. Targets, if any, are ignored.
        progress : bool, default False
            Show a tqdm progress bar over the points once prediction has run
            for more than a second.

        Returns
        -------
        ndarray of shape (q,)
            f(W, x_j) = (1/sqrt m) sum_r a_r max(<w_r, x_j> - b, 0). Empty
            when q = 0.

        Raises
        ------
        ArgumentError
            X has the wrong dims, NaN/inf, or points beyond ||x|| <= 1e100.
        OutOfMemoryError
            A chunk (at least one point) would not fit in memory.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.make_kronecker_data(16, dims=(4, 4), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=64)
        >>> y_hat = net.predict(data)
        >>> y_hat.shape
        (16,)
        >>> P = net.preactivations(data)
        >>> f = np.maximum(P - net.threshold, 0.0) @ net.a / np.sqrt(net.width)
        >>> bool(np.allclose(y_hat, f))
        True
        >>> net.predict(data.factors).shape  # the factor matrices work too
        (16,)
        """
        if self._shard is not None:
            # Checked on every rank, and agreed, before any message.
            data, rows, progress = self._shard[0].run(lambda: self._predict_plan(X, progress))
        else:
            data, rows, progress = self._predict_plan(X, progress)
        if data.n == 0:
            return np.empty(0)
        if self._shard is not None:
            out = self._predict_sharded(data, rows, progress)
        else:
            with PointsBar(progress, data.n, self._width, "predict") as bar:
                out = _core.predict(
                    data.core_layout,
                    self._a,
                    self._threshold,
                    self._core_init(),
                    self._core_blocks(),
                    rows,
                    progress=bar.callback,
                )
        # The same outputs on every rank: all raise alike.
        if not np.isfinite(out).all():
            raise ArgumentError("X", "the predictions overflow float64 (the points or weights are too large)")
        return out

    def _predict_plan(self, X: FactorsLike, progress: bool) -> Tuple[KronPoints, int, bool]:
        """The checked points, the points per chunk, and the progress flag."""
        data = self._points(X, "X")
        progress = v.flag(progress, "progress")
        if data.n == 0:
            return data, 0, progress
        sizes = [blk.data.n for blk in self._blocks if blk._coef.trained]
        rows = min(data.n, _core.predict_chunk_rows(self._width, sizes, PREDICT_CHUNK_BYTES))
        need = float(
            _core.predict_chunk_bytes(
                self._core_init(),
                list(self._dims),
                self._width,
                sizes,
                rows,
                data.rank,
                _table_rows(data),
                _core.thread_count(),
            )
        )

        v.ensure_fits(8.0 * data.n + float(need), "one chunk of prediction", "X")
        return data, rows, progress

    def _predict_sharded(self, data: KronPoints, rows: int, progress: bool) -> np.ndarray:
        """Collective: this rank's exact sums for its neurons, summed over the ranks."""
        from .shard import output_sums

        group, first, count = self._shard  # type: ignore[misc]
        blocks = self._core_blocks()

        def words() -> np.ndarray:
            # All points in one call, chunked by the core exactly as one
            # process would chunk them.
            with PointsBar(progress and group.rank == 0, data.n, count, "predict") as bar:
                return _core.predict_words(
                    data.core_layout,
                    self._a,
                    self._threshold,
                    self._core_init(),
                    (first, count),
                    blocks,
                    rows,
                    progress=bar.callback,
                )

        return output_sums(group, self._width, words)

    def __call__(self, X: FactorsLike) -> np.ndarray:
        """Same as :meth:`predict`."""
        return self.predict(X)

    # -- persistence ------------------------------------------------------------

    def save(self, path: Any) -> None:
        """Writes the net to one file (format: docs/format.md).

        The file holds everything needed to predict: dims, width, threshold,
        seed and every coefficient block with its training points. The write
        is atomic: a crash leaves any previous file at `path` intact.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (replaced if it exists). Any name works;
            ``.kronnet`` is a convention.

        Examples
        --------
        >>> import os, tempfile, kronnet as kn
        >>> net = kn.TwoLayerNet((4, 4), width=32)
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = os.path.join(tmp.name, "net.kronnet")
        >>> net.save(path)
        >>> kn.load(path).width
        32
        >>> tmp.cleanup()
        """
        from . import storage

        if self._shard is None:
            storage.save_net(self, path)
            return
        # Rank 0 writes the file while the ranks' coefficients arrive a
        # piece at a time: it never holds the whole net's α.
        state = self._state_local()
        alphas = [storage.alpha_member(j) for j in range(len(state["blocks"]))]
        meta = {"net": storage.net_meta(state)}
        storage.write_sharded(self._shard[0], path, "net", meta, storage.net_arrays(state), alphas)

    def _state(self) -> Dict[str, Any]:
        """Plain values and arrays describing the net (for pickle and files)."""
        if self._shard is not None:
            raise ArgumentError(
                "net",
                "is sharded over MPI ranks and holds only this rank's neurons: "
                "use net.gather() for the whole net (net.save gathers by itself)",
            )
        return self._state_local()

    def _state_local(self) -> Dict[str, Any]:
        return {
            "dims": list(self._dims),
            "width": self._width,
            "threshold": self._threshold,
            "seed": self._seed,
            "init": self._init,
            "init_rank": self._init_rank,
            "blocks": [
                {"kind": blk.data.kind, **blk.data._state_arrays(), "y": blk.data.y, "alpha_t": blk._coef.alpha_t()}
                for blk in self._blocks
            ],
        }

    @classmethod
    def _from_state(cls, state: Dict[str, Any], shard: Any = None) -> TwoLayerNet:
        """The net `state` describes; with `shard` = (group, first, count),
        sharded from the start: only neurons first .. first + count of each
        coefficient matrix are read (a restore on many ranks)."""
        net = cls(
            state["dims"],
            state["width"],
            threshold=state["threshold"],
            seed=state["seed"],
            init=state.get("init", "gaussian"),
            init_rank=state.get("init_rank", 8),
        )
        for j, blk in enumerate(state["blocks"]):
            data = _points.from_state(blk.get("kind", "kron"), blk, blk["y"])
            if data.dims != net.dims:
                raise ArgumentError(f"blocks[{j}]", f"has dims {data.dims}, the net has {net.dims}")
            alpha_t = blk["alpha_t"]
            if np.shape(alpha_t) != (data.n, net.width):
                raise ArgumentError(
                    f"blocks[{j}].alpha", f"has shape {np.shape(alpha_t)[::-1]}, expected ({net.width}, {data.n})"
                )
            if shard is not None:
                alpha_t = alpha_t[:, shard[1] : shard[1] + shard[2]]
            alpha_t = v.float_array(alpha_t, f"blocks[{j}].alpha", 2, allow_empty=True)
            net._blocks.append(CoefficientBlock(data, _core.Coefficients.from_alpha_t(alpha_t)))
        if shard is not None:
            net._shard = (shard[0], int(shard[1]), int(shard[2]))
        return net

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_net_from_state, (self._state(),))

    def __deepcopy__(self, memo: Dict[int, Any]) -> TwoLayerNet:
        """An independent copy. A sharded net copies this rank's shard
        (local, not collective) and stays sharded over the same communicator,
        which is shared, not copied: every rank copying its own shard gives
        a sharded copy of the whole net."""
        if self._shard is None:
            return _net_from_state(copy.deepcopy(self._state(), memo))
        # (copy.copy would go through __reduce__, which refuses shards.)
        twin = object.__new__(TwoLayerNet)
        twin.__dict__.update(self.__dict__)
        twin._blocks = [blk._neurons(0, self._shard[2]) for blk in self._blocks]
        twin._version = 0
        return twin

    def __repr__(self) -> str:
        return (
            f"TwoLayerNet(dims={self._dims}, width={self._width}, threshold={self._threshold:.6g}, seed={self._seed}"
            + (f", init='kron', init_rank={self._init_rank})" if self._init == "kron" else ")")
        )


def _net_from_state(state: Dict[str, Any]) -> TwoLayerNet:
    """Unpickles a TwoLayerNet (module-level so pickle can find it)."""
    return TwoLayerNet._from_state(state)
