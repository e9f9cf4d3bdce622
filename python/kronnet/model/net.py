"""The two-layer model f(W, x) = (1/sqrt(m)) sum_r a_r max(<w_r, x> - b, 0),
and the weights it owns (docs/design.md, "The state, and who owns it")."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np

from .. import _core, fileformat
from .. import _validate as v
from ..data import CoreLayout, FactorsLike, KronPoints, as_points, from_arrays
from ..errors import ArgumentError, ArgumentTypeError
from ..placement import ONE_PROCESS, Placement
from ..progress import PointsBar
from . import format as file_members
from .guard import UseGuard
from .state import BlockState, NetState

#: Memory one chunk of `predict` may use (P of the chunk's points and their
#: cross-Gram with the largest training set): prediction on any number of
#: points stays within about this much beyond its inputs and outputs.
PREDICT_CHUNK_BYTES = 64 << 20

#: `predict` folds the coefficients into dense weights W (width × d, kept
#: until the weights change) when W takes at most this many bytes and d is
#: below the number of training points: a point then costs O(m d) or less
#: instead of O(m n_train) (docs/design.md, "Prediction").
FOLD_BYTES = 256 << 20

#: The kinds of initial weights (``TwoLayerNet(init=...)``), as the core names them.
InitName = Literal["gaussian", "kron"]
INITS: Tuple[str, ...] = tuple(_core.INITS)
#: Largest ``init_rank`` (each neuron draws R * sum_k d_k normals).
MAX_INIT_RANK = 1 << 16
#: Largest width a net may have: 2**28 = 268,435,456 neurons. The head (±1
#: output weights and thresholds) is drawn neuron by neuron at about 0.5 µs
#: each, so this many take minutes and 8 GiB while it is made, and a trainer
#: holds n × m values on top; 2**31 would take half an hour and 64 GiB
#: before the first step.
MAX_WIDTH = 1 << 28
#: Bytes per neuron and output (plus one for the thresholds) while the head
#: is made: the drawn signs and thresholds, and the core's copies of both.
HEAD_BUILD_BYTES = 16


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
        # The guard of the net that holds the block (its own until then).
        self._guard = UseGuard()

    @property
    def data(self) -> KronPoints:
        """The training points of this block (a :class:`KronData` or :class:`PairData`)."""
        return self._data

    @property
    def alpha(self) -> np.ndarray:
        """alpha, shape (m, n), a read-only copy."""
        with self._guard.reading("block.alpha"):
            a: np.ndarray = self._coef.alpha_t().T
            a.flags.writeable = False
            return a

    @property
    def storage(self) -> Any:
        """The core's coefficient storage (``kronnet._core.Coefficients``,
        αᵀ of shape (n, neurons held)), which trainers on these points step
        in place. Low level: read :attr:`alpha` instead."""
        return self._coef

    @property
    def trained(self) -> bool:
        """Whether any coefficient of this block is nonzero."""
        with self._guard.reading("block.trained"):
            return bool(self._coef.trained)

    @property
    def beta(self) -> np.ndarray:
        """β̃, shape (n, C), a read-only copy: the linear term is
        v = s_v Σ_blocks β̃ᵀ X (``net.linear_weights()`` materializes it)."""
        with self._guard.reading("block.beta"):
            b: np.ndarray = self._coef.beta()
            b.flags.writeable = False
            return b

    def neurons(self, first: int, count: int) -> CoefficientBlock:
        """An independent block of neurons first .. first + count of these
        coefficients (an untrained block stays untrained).

        Parameters
        ----------
        first, count : int
            The neurons, counted among those this block holds.

        Returns
        -------
        CoefficientBlock
            The same points, a copy of those neurons' coefficients.
        """
        with self._guard.reading("block.neurons()"):
            if not self._coef.trained and not self._coef.linear:
                return CoefficientBlock(self._data, _core.Coefficients(self._data.n, count, self._coef.outputs))
            return CoefficientBlock(
                self._data,
                _core.Coefficients.from_alpha_t(self._coef.alpha_t()[:, first : first + count], self._coef.beta()),
            )

    def __repr__(self) -> str:
        return f"CoefficientBlock(n={self._data.n}, width={self._coef.width})"


class TwoLayerNet:
    """A two-layer network f(x) = (1/√m) Σ_r a_r max(<w_r, x> − b_r, 0) + c + <v, x>.

    At initialization it is the paper's model: output weights a_r = ±1,
    every threshold b_r = `threshold`, no bias c, no linear term v; a
    :class:`Trainer` trains W, and a, b, c, v as well when given their
    learning rates (``lr_a``, ``lr_b``, ``lr_c``, ``lr_v``).

    Parameters
    ----------
    dims : tuple of int
        (d_1, ..., d_p), p >= 1 (p = 1: plain dense inputs); inputs live in R^d,
        d = prod d_k.
    width : int
        m, the number of hidden neurons: at most ``MAX_WIDTH`` = 2**28.
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
    outputs : int, default 1
        C, the number of outputs: a_r and c are C-vectors, and
        :meth:`predict` returns (q, C) for C > 1 (raw outputs: one per class
        for cross-entropy, C targets for a multi-output squared loss). One
        output draws exactly the a of earlier versions; C outputs draw the
        first m·C signs of the same stream.

    Raises
    ------
    ArgumentError
        A size is not positive, `width` exceeds ``MAX_WIDTH`` (2**28),
        `threshold` is not finite, `init` is unknown or `init_rank` is out of range.
    ArgumentTypeError
        A size or the seed is not an integer.

    Notes
    -----
    The net owns its weights: W = W(0) + sum over training sets s of
    alpha_s^T X_s, kept implicitly (``coefficients``); nothing of size m × d
    is stored unless :meth:`dense_weights` is called. Trainers train the net
    in place; trainers on the same points share one coefficient block, and a
    discarded trainer leaves nothing behind but that block.

    Thread safety: any number of threads may read a net at once
    (:meth:`predict`, :meth:`save`, :meth:`preactivations`, its properties
    and coefficient blocks...). Training needs the net to itself: while a
    :class:`Trainer` is built on it or runs any of its methods (``fit``,
    ``step``, ``run``, ``full_loss``, ``checkpoint``...) in one thread, no
    other thread may use the net or any of its trainers, and a trainer does
    not start while another thread reads the net. A call that breaks the
    rule raises :class:`~kronnet.ConcurrentUseError` at once in the thread
    that made it; it neither waits nor disturbs the training. Give each
    thread its own net (``copy.deepcopy(net)``, made before training) to
    train or predict in parallel.

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
        outputs: int = 1,
    ) -> None:
        self._dims = v.dims_tuple(dims)
        self._width = v.positive_int(width, "width")
        if self._width > MAX_WIDTH:
            raise ArgumentError(
                "width",
                f"must be at most MAX_WIDTH = 2**28 = {MAX_WIDTH}, got {self._width}: its head alone would take "
                f"{HEAD_BUILD_BYTES * 2 * self._width / 2**30:.1f} GiB while it is made and about "
                f"{self._width * 0.5e-6 / 60:.0f} minutes to draw (at 0.5 µs a neuron)",
            )
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
        self._outputs = v.positive_int(outputs, "outputs")
        v.ensure_fits(
            float(HEAD_BUILD_BYTES) * self._width * (self._outputs + 1),
            "the head (a and the thresholds, drawn and copied into the core)",
            "width",
        )
        # ±1 from the seed: one output takes today's a exactly; C outputs
        # take the stream's first m·C signs, row-major.
        signs = _core.output_signs(self._seed, self._width * self._outputs).reshape(self._width, self._outputs)
        self._head = _core.Model(signs, np.full(self._width, self._threshold), np.zeros(self._outputs), self._threshold)
        self._blocks: List[CoefficientBlock] = []
        # (revision, W of this process's neurons, linear weights or None)
        # while `predict` uses folded weights; never saved or copied.
        self._fold_cache: Optional[Tuple[Any, np.ndarray, Optional[np.ndarray]]] = None
        # Where the neurons live: this process, until a Trainer with comm=
        # shards the net (its blocks then hold α of this rank's neurons).
        self._placement: Placement = ONE_PROCESS
        # Which threads use the net: readers, or one trainer (the "Thread
        # safety" rule above; kronnet.model.guard).
        self._guard = UseGuard()

    def _adopt(self, block: CoefficientBlock) -> CoefficientBlock:
        """`block`, now guarded by this net's guard (it holds the block)."""
        block._guard = self._guard
        return block

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
        """The initial shared threshold b of the activation max(z - b, 0)
        (every neuron's until thresholds are trained: :attr:`thresholds`)."""
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

    @property
    def core_init(self) -> Tuple[int, str, int]:
        """W(0) as the compiled core takes it: (seed, init, init_rank)."""
        return (self._seed, self._init, self._init_rank)

    @property
    def outputs(self) -> int:
        """C, the number of outputs."""
        return self._outputs

    @property
    def head(self) -> Any:
        """The trained head as the compiled core keeps it
        (``kronnet._core.Model``: a, thresholds, bias, the linear term's
        scale), for the neurons this process holds. Low level: read
        :attr:`a`, :attr:`thresholds` and :attr:`output_bias` instead."""
        return self._head

    def _whole_head(self, what: str) -> None:
        if self._placement.sharded:
            raise ArgumentError(
                "net",
                f"is sharded over MPI ranks and holds only this rank's neurons: use net.gather().{what}",
            )

    @property
    def a(self) -> np.ndarray:
        """Output weights, read-only: shape (m,) for one output, (m, C)
        otherwise. ±1 at initialization (drawn from the seed); trained when
        a :class:`Trainer` has ``lr_a > 0``."""
        with self._guard.reading("net.a"):
            self._whole_head("a")
            a: np.ndarray = self._head.a()
            out = a[:, 0] if self._outputs == 1 else a
            out.flags.writeable = False
            return out

    @property
    def thresholds(self) -> np.ndarray:
        """The per-neuron thresholds b_r, shape (m,), read-only: neuron r fires
        on x when <w_r, x> > b_r. All equal to :attr:`threshold` at
        initialization; trained when a :class:`Trainer` has ``lr_b > 0``."""
        with self._guard.reading("net.thresholds"):
            self._whole_head("thresholds")
            b: np.ndarray = self._head.thresholds()
            b.flags.writeable = False
            return b

    @property
    def output_bias(self) -> Any:
        """c: a float for one output, shape (C,) otherwise. 0 at
        initialization; trained when a :class:`Trainer` has ``lr_c > 0``."""
        with self._guard.reading("net.output_bias"):
            c: np.ndarray = self._head.output_bias()
            if self._outputs == 1:
                return float(c[0])
            c.flags.writeable = False
            return c

    @property
    def coefficients(self) -> Tuple[CoefficientBlock, ...]:
        """The learned state, one block per training set.

        W = W(0) + sum over blocks of ``block.alpha @ block.data.dense()``;
        read it without materializing W. Empty for an untrained net.
        """
        with self._guard.reading("net.coefficients"):
            return tuple(self._blocks)

    # -- the blocks trainers accumulate into -----------------------------------

    def block_for(self, data: KronPoints) -> CoefficientBlock:
        """The coefficient block of `data`'s points, created (zero) if the net
        has none for them yet. Trainers on the same points (same
        fingerprint) share it.

        Parameters
        ----------
        data : KronData or PairData
            Points with the net's dims.

        Returns
        -------
        CoefficientBlock
            The block every trainer on these points steps.

        Raises
        ------
        OutOfMemoryError
            A new block (n × neurons held) would not fit in memory.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(8, dims=(2, 2), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=16)
        >>> block = net.block_for(data)
        >>> block.alpha.shape, net.block_for(data.with_targets(-data.y)) is block
        ((16, 8), True)
        """
        with self._guard.training("net.block_for()"):
            found = self.find_block(data)
            if found is not None:
                return found
            count = self._placement.neurons(self._width)[1]
            v.ensure_fits(8.0 * data.n * count, "the coefficient block alpha (width × n)", "data")
            block = CoefficientBlock(data, _core.Coefficients(data.n, count, self._outputs))
            self._blocks.append(self._adopt(block))
            return block

    def find_block(self, data: KronPoints) -> Optional[CoefficientBlock]:
        """The coefficient block of `data`'s points (same fingerprint), or None.

        Parameters
        ----------
        data : KronData or PairData
            Points with the net's dims.

        Returns
        -------
        CoefficientBlock or None
            The block, if a trainer on these points has made one.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(8, dims=(2, 2), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=16)
        >>> net.find_block(data) is None
        True
        >>> _ = kn.Trainer(net, data, lr=1.0)
        >>> net.find_block(data)
        CoefficientBlock(n=8, width=16)
        """
        for blk in self._blocks:
            if blk.data.n == data.n and blk.data.fingerprint == data.fingerprint:
                return blk
        return None

    def core_blocks(self) -> List[Tuple[CoreLayout, Any]]:
        """The trained blocks as the compiled core takes them (low level).

        Returns
        -------
        list of (CoreLayout, kronnet._core.Coefficients)
            For every block with a nonzero coefficient (α or β̃): its
            points' :attr:`~kronnet.KronPoints.core_layout` and its storage.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(8, dims=(2, 2), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=16)
        >>> _ = kn.Trainer(net, data, lr=kn.suggest_lr(net, 4), batch_size=4).fit(5)
        >>> len(net.core_blocks())
        1
        """
        with self._guard.reading("net.core_blocks()"):
            return [(blk.data.core_layout, blk.storage) for blk in self._blocks if blk.trained or blk.storage.linear]

    @property
    def revision(self) -> Tuple[Tuple[int, int], ...]:
        """A token that changes whenever the weights do: every step on any
        of the net's blocks, a new block, sharding. A :class:`Trainer`
        compares it with the one it saw after its own last step, to refuse
        stepping from a state another trainer has moved
        (:class:`StaleTrainerError`)."""
        with self._guard.reading("net.revision"):
            return ((self._head.serial, self._head.updates),) + tuple(
                (blk.storage.serial, blk.storage.updates) for blk in self._blocks
            )

    # -- where the neurons live ---------------------------------------------------

    @property
    def guard(self) -> UseGuard:
        """The record of which threads use the net
        (:class:`~kronnet.model.guard.UseGuard`): its trainers hold it while
        they work, readers while they read (the "Thread safety" rule above).
        Low level."""
        return self._guard

    @property
    def placement(self) -> Placement:
        """Where the neurons live (:mod:`kronnet.placement`): this process,
        or the ranks of an MPI communicator once a Trainer with ``comm=``
        has sharded the net."""
        return self._placement

    @property
    def sharded(self) -> bool:
        """Whether a Trainer with ``comm=`` has split this net over MPI ranks.

        A sharded net holds only its rank's neurons' coefficients; its
        :meth:`predict`, :meth:`dense_weights`, :meth:`preactivations`,
        :meth:`save` and :meth:`gather` are collective (every rank must call
        them) and return the same values on every rank.
        """
        return self._placement.sharded

    def shard(self, placement: Placement) -> Tuple[int, int]:
        """Keeps only this process's neurons under `placement` (collective
        under MPI: every rank calls it). Idempotent for the same
        communicator; a :class:`Trainer` with ``comm=`` calls it.

        Parameters
        ----------
        placement : Placement
            Where the neurons go (``kronnet.placement.over(comm)``).

        Returns
        -------
        (int, int)
            (first, count): the neurons this process keeps.

        Raises
        ------
        ArgumentError
            The net is already sharded over another communicator, or has
            more ranks than blocks of neurons to share.

        Examples
        --------
        >>> import kronnet as kn
        >>> from kronnet import placement
        >>> net = kn.TwoLayerNet((2, 2), width=16)
        >>> net.shard(placement.ONE_PROCESS)  # one process keeps every neuron
        (0, 16)

        Under ``mpiexec -n 2``, ``net.shard(placement.over(MPI.COMM_WORLD))``
        keeps neurons (0, 64) on rank 0 of a width-128 net and (64, 64) on rank 1.
        """
        with self._guard.training("net.shard()"):
            if self._placement.sharded or not placement.sharded:
                if self._placement.comm is not placement.comm:
                    raise ArgumentError("comm", "the net is already sharded over another communicator")
                return self._placement.neurons(self._width)
            first, count = placement.neurons(self._width)
            self._blocks = [self._adopt(blk.neurons(first, count)) for blk in self._blocks]
            self._head = self._head.shard(first, count)
            self._placement = placement
            return first, count

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
        with self._guard.reading("net.gather()"):
            if not self._placement.sharded:
                return self
            placement = self._placement
            placement.agree(root=root)
            state = self.to_state(whole=False)
            blocks = []
            for blk in state.blocks:
                rows = placement.gather_rows(blk.alpha_t.T, root=root)
                if rows is not None:
                    blocks.append(BlockState(blk.kind, blk.points, blk.y, rows.T, blk.beta))
            a = placement.gather_rows(np.asarray(state.a), root=root)
            thresholds = placement.gather_rows(np.asarray(state.thresholds), root=root)
            if root is not None and placement.rank != root:
                return None
            state.blocks = blocks
            state.a, state.thresholds = a, thresholds
            state.neurons = (0, self._width)
            return TwoLayerNet.from_state(state)

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
        need = _core.dense_weights_bytes(list(self._dims), self._width, [])
        v.ensure_fits(need, "the weight matrix (width × d)", "initial_weights()")
        return _core.initial_weights(self.core_init, self._width, list(self._dims))

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
        with self._guard.reading("net.dense_weights()"):
            # Every rank gathers, then checks and computes; a refusal on one
            # rank is agreed so that no rank waits in a later message.
            whole = self._whole()
            return self._placement.run(whole._dense_weights_here)

    def linear_weights(self) -> np.ndarray:
        """The linear term v materialized. Only for small d.

        The net's output has a term <v, x> with v in the span of its
        training points, v = s_v Σ_blocks β̃ᵀ X; it is trained when a
        :class:`Trainer` has ``lr_v > 0`` and is 0 otherwise.

        Returns
        -------
        ndarray of shape (d,), or (C, d) for C > 1 outputs
            v.

        Raises
        ------
        OutOfMemoryError
            C × d values (and one block's n × d points) would not fit.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.make_kronecker_data(16, dims=(4, 4), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=64)
        >>> bool((net.linear_weights() == 0).all())  # no linear term yet
        True
        >>> _ = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), lr_v=0.5).fit(20)
        >>> v = net.linear_weights()
        >>> v.shape, bool(np.abs(v).max() > 0)
        ((16,), True)
        """
        with self._guard.reading("net.linear_weights()"):
            whole = self._whole()
            return self._placement.run(whole._linear_weights_here)

    def _linear_weights_here(self) -> np.ndarray:
        need = _core.dense_weights_bytes(list(self._dims), self._outputs, [blk.data.n for blk in self._blocks])
        v.ensure_fits(need, "the linear weights (outputs × d) and one block's X (n × d)", "linear_weights()")
        linear = [(blk.data.core_layout, blk.storage) for blk in self._blocks if blk.storage.linear]
        out: np.ndarray = self._head.v_scale * _core.dense_linear(list(self._dims), self._outputs, linear)
        return out[0] if self._outputs == 1 else out

    def _whole(self) -> TwoLayerNet:
        """The whole net (collective when sharded; itself otherwise)."""
        whole = self.gather()
        assert whole is not None
        return whole

    def _dense_weights_here(self) -> np.ndarray:
        need = _core.dense_weights_bytes(list(self._dims), self._width, [blk.data.n for blk in self._blocks])
        v.ensure_fits(need, "the weight matrix (width × d) and one block's X (n × d)", "dense_weights()")
        return _core.dense_weights(self.core_init, self._width, list(self._dims), self.core_blocks())

    def _points(self, X: FactorsLike, name: str) -> KronPoints:
        data = as_points(X, name)
        if data.dims != self._dims:
            raise ArgumentError(name, f"has factor dimensions {data.dims}, the net expects {self._dims}")
        return data

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
        with self._guard.reading("net.preactivations()"):
            data = self._placement.run(lambda: self._points(X, "X"))
            self._placement.agree(X=data)
            whole = self._whole()
            return self._placement.run(lambda: whole._preactivations_here(data))

    def _preactivations_here(self, data: KronPoints) -> np.ndarray:
        need = _core.preacts_bytes(
            self.core_init,
            list(self._dims),
            data.n,
            self._width,
            [blk.data.n for blk in self._blocks],
            data.rank,
            data.table_rows,
            _core.thread_count(),
        )
        v.ensure_fits(need, "the preactivation matrix (points × width)", "X")
        return _core.preacts(data.core_layout, self.core_init, self._width, self.core_blocks())

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
        ndarray of shape (q,), or (q, C) for C > 1 outputs
            f(x_j) = (1/sqrt m) sum_r a_r max(<w_r, x_j> - b_r, 0) + c +
            <v, x_j>: raw outputs (no sigmoid or softmax). Empty when q = 0.

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
        with self._guard.reading("net.predict()"):
            # Checked on every rank, and agreed, before any message.
            data, rows, progress = self._placement.run(lambda: self._predict_plan(X, progress))
            self._placement.agree(X=data)
            if data.n == 0:
                return np.empty(0) if self._outputs == 1 else np.empty((0, self._outputs))
            blocks = self.core_blocks()
            head = self._head
            linear: List[Optional[np.ndarray]] = []
            # The path depends only on the whole net, so every rank (and a
            # loaded copy) takes the same one.
            folded = self._placement.run(self._folded) if self.folds else None
            if folded is not None:
                # P of a chunk, and the chunk's points materialized unless they
                # go through entity tables.
                per_point = self._width + (0 if data.table_rows > 0 else self.d)
                rows = max(1, min(data.n, PREDICT_CHUNK_BYTES // (8 * per_point)))

            def predict_words() -> Tuple[np.ndarray, Optional[np.ndarray]]:
                with PointsBar(progress and self._placement.speaks, data.n, head.width, "predict") as bar:
                    if folded is not None:
                        w, lin_w = folded
                        out: Tuple[np.ndarray, Optional[np.ndarray]] = _core.predict_words_folded(
                            data.core_layout, head, w, lin_w, rows, progress=bar.callback
                        )
                        return out
                    return _core.predict_words(
                        data.core_layout, head, self.core_init, blocks, rows, progress=bar.callback
                    )

            def here() -> np.ndarray:
                if folded is not None:
                    summed, lin = predict_words()
                    got: np.ndarray = _core.outputs_from_words(head, summed, lin)
                    return got
                with PointsBar(progress, data.n, self._width, "predict") as bar:
                    out: np.ndarray = _core.predict(
                        data.core_layout, head, self.core_init, blocks, rows, progress=bar.callback
                    )
                return out

            def words() -> np.ndarray:
                # All points in one call, chunked by the core exactly as one
                # process would chunk them; the linear parts are every rank's
                # alike.
                summed, lin = predict_words()
                linear.append(lin)
                return summed

            def finish(start: int, summed: np.ndarray) -> np.ndarray:
                lin = linear[0]
                part = None if lin is None else lin[start : start + summed.shape[0]]
                return _core.outputs_from_words(head, summed, part)

            out = self._placement.outputs(here, words, finish)
            # The same outputs on every rank: all raise alike.
            if not np.isfinite(out).all():
                raise ArgumentError("X", "the predictions overflow float64 (the points or weights are too large)")
            return out[:, 0] if self._outputs == 1 else out

    def predict_grid(self, tables: Sequence[Any], progress: bool = False) -> np.ndarray:
        """f for every combination of entities: every user with every item,
        what a recommender ranks.

        The points are the pairs of ``PairData(tables, pairs)`` over all
        N_1 × ... × N_p combinations, predicted as :meth:`predict` does (a
        net that :attr:`folds` costs O(m d) per entity and O(m d_p) per
        pair through the tables, not O(m n_train) per pair).

        Parameters
        ----------
        tables : sequence of p array_like, table k of shape (N_k, d_k)
            Entity features, as for :class:`~kronnet.PairData`; d_k must be
            the net's dims.
        progress : bool, default False
            As for :meth:`predict`.

        Returns
        -------
        ndarray of shape (N_1, ..., N_p), or (N_1, ..., N_p, C) for C > 1 outputs
            Entry [a, b] is f(T_1[a] ⊗ T_2[b]).

        Raises
        ------
        ArgumentError
            As for :class:`~kronnet.PairData` and :meth:`predict`.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.make_pair_data(40, (6, 8), dims=(3, 4), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=64)
        >>> _ = kn.Trainer(net, data, lr=20.0).fit(20)
        >>> grid = net.predict_grid(data.tables)
        >>> grid.shape
        (6, 8)
        >>> bool(np.allclose(grid[2, 5], net.predict(kn.PairData(data.tables, [[2, 5]]))[0]))
        True
        """
        from ..data import PairData

        if not isinstance(tables, (list, tuple)):
            raise ArgumentTypeError("tables", f"expected a list of entity tables, got {type(tables).__name__}")
        sizes = [int(np.shape(t)[0]) if np.ndim(t) == 2 else 0 for t in tables]
        grid = np.indices(sizes).reshape(len(sizes), -1).T if all(sizes) else np.zeros((0, len(sizes)), int)
        out = self.predict(PairData(list(tables), grid), progress=progress)
        shape = tuple(sizes) + (() if self._outputs == 1 else (self._outputs,))
        return out.reshape(shape)

    @property
    def folds(self) -> bool:
        """Whether :meth:`predict` goes through folded weights: W = W(0) +
        Σ αᵀ X (width × d) computed once after each change of the weights,
        so that a point costs O(m d) or less, not O(m n_train). It does when
        the net has trained blocks, W takes at most ``FOLD_BYTES`` and d is
        below the training points' number. The two paths agree to
        rounding (about 1e-12 relative); each is bitwise reproducible on its
        own (threads, save and load, MPI ranks).

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_pair_data(300, (20, 30), dims=(4, 4), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=64)
        >>> net.folds  # nothing trained yet
        False
        >>> _ = kn.Trainer(net, data, lr=20.0).fit(5)
        >>> net.folds  # d = 16 < 300 points, W of 64 × 16
        True
        """
        with self._guard.reading("net.folds"):
            trained = sum(blk.data.n for blk in self._blocks if blk.trained or blk.storage.linear)
            return trained > 0 and self.d <= trained and 8 * self._width * self.d <= FOLD_BYTES

    def _folded(self) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """This process's folded weights, computed again after any change."""
        revision = self.revision
        if self._fold_cache is None or self._fold_cache[0] != revision:
            w, lin = _core.fold_weights(self._head, self.core_init, list(self._dims), self.core_blocks())
            self._fold_cache = (revision, w, lin)
        return self._fold_cache[1], self._fold_cache[2]

    def _predict_plan(self, X: FactorsLike, progress: bool) -> Tuple[KronPoints, int, bool]:
        """The checked points, the points per chunk, and the progress flag."""
        data = self._points(X, "X")
        progress = v.flag(progress, "progress")
        if data.n == 0:
            return data, 0, progress
        sizes = [blk.data.n for blk in self._blocks if blk.trained]
        rows = min(data.n, _core.predict_chunk_rows(self._width, sizes, PREDICT_CHUNK_BYTES))
        need = float(
            _core.predict_chunk_bytes(
                self.core_init,
                list(self._dims),
                self._width,
                sizes,
                rows,
                data.rank,
                data.table_rows,
                _core.thread_count(),
            )
        )
        v.ensure_fits(8.0 * data.n + float(need), "one chunk of prediction", "X")
        return data, rows, progress

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
        with self._guard.reading("net.save()"):
            meta, arrays, rows = file_members.members(self.to_state(whole=False))
            self._placement.agree(path=fileformat.checked_path(path))
            # Sharded, rank 0 writes the file while the ranks' coefficients
            # arrive a piece at a time: it never holds the whole net's α.
            self._placement.write_file(path, "net", meta, arrays, rows)

    def to_state(self, whole: bool = True) -> NetState:
        """The net as plain values and arrays (:class:`~kronnet.model.state.NetState`).

        Parameters
        ----------
        whole : bool, default True
            Refuse a sharded net (which holds only its rank's neurons);
            with False, a sharded net describes this rank's neurons.

        Returns
        -------
        NetState
            Views of the net's arrays (copies of the coefficients).

        Raises
        ------
        ArgumentError
            The net is sharded and `whole` is True.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.make_kronecker_data(8, dims=(2, 2), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=16)
        >>> _ = kn.Trainer(net, data, lr=kn.suggest_lr(net, 4), batch_size=4).fit(5)
        >>> state = net.to_state()
        >>> state.width, len(state.blocks), state.blocks[0].alpha_t.shape
        (16, 1, (8, 16))
        >>> twin = kn.TwoLayerNet.from_state(state)
        >>> bool((twin.predict(data) == net.predict(data)).all())
        True
        """
        with self._guard.reading("net.to_state()"):
            if whole and self._placement.sharded:
                raise ArgumentError(
                    "net",
                    "is sharded over MPI ranks and holds only this rank's neurons: "
                    "use net.gather() for the whole net (net.save gathers by itself)",
                )
            head = self._head
            return NetState(
                dims=self._dims,
                width=self._width,
                threshold=self._threshold,
                seed=self._seed,
                init=self._init,
                init_rank=self._init_rank,
                blocks=[
                    BlockState(
                        blk.data.kind,
                        blk.data.to_arrays(),
                        blk.data.y,
                        blk.storage.alpha_t(),
                        blk.storage.beta() if blk.storage.linear else None,
                    )
                    for blk in self._blocks
                ],
                neurons=self._placement.neurons(self._width),
                outputs=self._outputs,
                a=head.a(),
                thresholds=head.thresholds(),
                output_bias=head.output_bias(),
                v_scale=float(head.v_scale),
            )

    @classmethod
    def from_state(cls, state: NetState, placement: Placement = ONE_PROCESS) -> TwoLayerNet:
        """The net `state` describes (checking every shape and value).

        Parameters
        ----------
        state : NetState
            A whole net; or, with a sharded `placement`, the neurons this
            rank holds under it (``state.neurons``).
        placement : Placement, default one process
            Where the new net's neurons live.

        Returns
        -------
        TwoLayerNet

        Raises
        ------
        ArgumentError
            The state is inconsistent (shapes, dims, values), or is one MPI
            rank's shard while `placement` is one process.

        Examples
        --------
        >>> import kronnet as kn
        >>> net = kn.TwoLayerNet((2, 3), width=8, seed=4)
        >>> kn.TwoLayerNet.from_state(net.to_state())
        TwoLayerNet(dims=(2, 3), width=8, threshold=0.912018, seed=4)
        """
        _check_rows(state)
        net = cls(
            state.dims,
            state.width,
            threshold=state.threshold,
            seed=state.seed,
            init=state.init,  # type: ignore[arg-type]
            init_rank=state.init_rank,
            outputs=state.outputs,
        )
        first, count = state.neurons
        if not placement.sharded and (first, count) != (0, net.width):
            raise ArgumentError(
                "state",
                f"holds neurons {first}..{first + count - 1} of a net of width {net.width}: one MPI rank's shard "
                "of a net sharded over MPI ranks (its to_state(whole=False)), not a whole net; gather() the "
                "sharded net first (net.gather() on every rank), or make the shard with the placement it is "
                "sharded under",
            )
        c = net.outputs
        for j, blk in enumerate(state.blocks):
            data = from_arrays(blk.kind, blk.points, blk.y)
            if data.dims != net.dims:
                raise ArgumentError(f"blocks[{j}]", f"has dims {data.dims}, the net has {net.dims}")
            if np.shape(blk.alpha_t) != (data.n, count):
                raise ArgumentError(
                    f"blocks[{j}].alpha", f"has shape {np.shape(blk.alpha_t)[::-1]}, expected ({count}, {data.n})"
                )
            alpha_t = v.float_array(blk.alpha_t, f"blocks[{j}].alpha", 2, allow_empty=True)
            beta = np.zeros((data.n, c)) if blk.beta is None else blk.beta
            if np.shape(beta) != (data.n, c):
                raise ArgumentError(f"blocks[{j}].beta", f"has shape {np.shape(beta)}, expected ({data.n}, {c})")
            beta = v.float_array(beta, f"blocks[{j}].beta", 2, allow_empty=True)
            net._blocks.append(net._adopt(CoefficientBlock(data, _core.Coefficients.from_alpha_t(alpha_t, beta))))
        # The head: the file's (or the state's), else the initial one from
        # the seed; a shard's rows only.
        if state.a is None:
            a = net._head.a()[first : first + count]
        else:
            a = v.float_array(state.a, "a", 2, allow_empty=True)
        thresholds = np.full(count, net.threshold) if state.thresholds is None else state.thresholds
        thresholds = v.float_array(thresholds, "thresholds", 1, allow_empty=True)
        bias = np.zeros(c) if state.output_bias is None else v.float_array(state.output_bias, "output_bias", 1)
        if np.shape(a) != (count, c) or thresholds.shape != (count,) or bias.shape != (c,):
            raise ArgumentError(
                "a",
                f"the head has shapes {np.shape(a)}, {thresholds.shape}, {bias.shape}; "
                f"expected ({count}, {c}), ({count},), ({c},)",
            )
        v_scale = v.finite_float(state.v_scale, "v_scale", positive=True)
        net._head = _core.Model(a, thresholds, bias, net.threshold, v_scale, first, net.width)
        net._placement = placement
        return net

    def load_state(self, state: NetState) -> None:
        """Sets this net's weights to `state` in place: the head, the
        coefficient blocks and their points, as :meth:`to_state` described
        them (early stopping uses it to go back to the best step).

        Trainers of this net made before the call refuse to step
        (:class:`StaleTrainerError`): their state belongs to the old
        weights.

        Parameters
        ----------
        state : NetState
            A state of this same net: the same dims, width, seed, init,
            threshold and outputs, and (when sharded) this rank's neurons;
            from :meth:`to_state` with ``whole=False`` for a sharded net.

        Raises
        ------
        ArgumentError
            The state is of another net, or inconsistent.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.make_kronecker_data(16, dims=(4, 4), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=64)
        >>> tr = kn.Trainer(net, data, lr=20.0)
        >>> _ = tr.fit(5)
        >>> saved, before = net.to_state(), net.predict(data)
        >>> _ = tr.fit(5)
        >>> net.load_state(saved)
        >>> bool(np.array_equal(net.predict(data), before))
        True
        """
        with self._guard.training("net.load_state()"):
            twin = TwoLayerNet.from_state(state, self._placement)
            ours = (self._dims, self._width, self._seed, self._init, self._init_rank, self._threshold, self._outputs)
            theirs = (twin._dims, twin._width, twin._seed, twin._init, twin._init_rank, twin._threshold, twin._outputs)
            if ours != theirs or tuple(state.neurons) != self._placement.neurons(self._width):
                raise ArgumentError(
                    "state",
                    "describes another net (dims, width, seed, init, init_rank, threshold, outputs "
                    f"{theirs}, neurons {tuple(state.neurons)}); this one has {ours}, "
                    f"neurons {self._placement.neurons(self._width)}",
                )
            self._head, self._blocks = twin._head, [self._adopt(blk) for blk in twin._blocks]

    def __reduce__(self) -> Tuple[Any, ...]:
        return (TwoLayerNet.from_state, (self.to_state(),))

    def __deepcopy__(self, memo: Dict[int, Any]) -> TwoLayerNet:
        """An independent copy. A sharded net copies this rank's shard
        (local, not collective) and stays sharded over the same communicator,
        which is shared, not copied: every rank copying its own shard gives
        a sharded copy of the whole net."""
        twin = TwoLayerNet.from_state(replace(self.to_state(whole=False), blocks=[]), self._placement)
        # The points are immutable and shared; the coefficients and the
        # head are copied.
        count = self._placement.neurons(self._width)[1]
        twin._blocks = [twin._adopt(blk.neurons(0, count)) for blk in self._blocks]
        return twin

    def __repr__(self) -> str:
        return (
            f"TwoLayerNet(dims={self._dims}, width={self._width}, threshold={self._threshold:.6g}, seed={self._seed}"
            + (f", init='kron', init_rank={self._init_rank})" if self._init == "kron" else ")")
        )


def _check_rows(state: NetState) -> None:
    """The per-neuron arrays of `state` have one row per neuron it
    describes: checked before the net (whose head costs time and memory in
    proportion to the claimed width) is made, so that a state or file that
    claims a width its arrays do not have is refused at once."""
    count = state.neurons[1]
    for name, arr in (("a", state.a), ("thresholds", state.thresholds)):
        if arr is not None and (np.ndim(arr) < 1 or np.shape(arr)[0] != count):
            raise ArgumentError(
                name, f"has shape {np.shape(arr)}; the state describes {count} neurons (width {state.width})"
            )
    for j, blk in enumerate(state.blocks):
        if np.ndim(blk.alpha_t) == 2 and np.shape(blk.alpha_t)[1] != count:
            raise ArgumentError(
                f"blocks[{j}].alpha",
                f"has {np.shape(blk.alpha_t)[1]} rows; the state describes {count} neurons (width {state.width})",
            )


def load(path: Any) -> TwoLayerNet:
    """Loads a net saved by :meth:`TwoLayerNet.save` (or the net inside a
    checkpoint written by :meth:`Trainer.checkpoint`).

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :meth:`TwoLayerNet.save` or
        :meth:`Trainer.checkpoint`.

    Returns
    -------
    TwoLayerNet
        A net that predicts bitwise identically to the one saved.

    Raises
    ------
    FileFormatError
        The file is truncated, corrupted, not a kronnet file, or of an
        unsupported format version.
    FileNotFoundError
        There is no file at `path`.

    Examples
    --------
    >>> import os, tempfile, kronnet as kn
    >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
    >>> net = kn.TwoLayerNet(data.dims, width=64)
    >>> _ = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8)).fit(50)
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "net.kronnet")
    >>> net.save(path)
    >>> bool((kn.load(path).predict(data) == net.predict(data)).all())
    True
    >>> tmp.cleanup()
    """
    with fileformat.Reader(path) as r:
        kind = r.field(r.meta, "kind", str)
        if kind not in ("net", "checkpoint"):
            raise r.fail(f"holds a {kind!r}, not a net or checkpoint")
        state = file_members.read(r)
        net: TwoLayerNet = fileformat.build(r, lambda: TwoLayerNet.from_state(state))
        return net
