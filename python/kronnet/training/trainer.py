"""SGD training of a TwoLayerNet on KronData or PairData (docs/design.md, "The algorithm")."""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Tuple

import numpy as np

from . import _core
from . import _validate as v
from .errors import ArgumentError, ArgumentTypeError, DivergenceError, StaleTrainerError
from .net import TwoLayerNet, gaussian_tail
from .points import KronPoints
from .progress import PointsBar, steps_bar

BACKENDS = ("kron", "dense")
INDEXES = ("auto", "scan", "tree", "bits")
GRAM_MODES = ("auto", "precomputed", "columns")

Backend = Literal["kron", "dense"]
IndexKind = Literal["auto", "scan", "tree", "bits"]
GramMode = Literal["auto", "precomputed", "columns"]

#: Added to every memory estimate: what the process's RSS grows by beyond
#: the arrays themselves (glibc keeps freed blocks in per-thread arenas, and
#: the worker threads, GEMM packing buffers and stacks take a few MiB).
#: Measured 5-13 MiB over the arrays' sum in tests/test_memory.py's shapes.
ALLOCATOR_SLACK_BYTES = 16 << 20

#: Default cap on the precomputed n × n Gram matrix; larger data sets compute
#: the S needed columns per step from the factors instead.
GRAM_BUDGET_BYTES = 1 << 30


def suggest_lr(net: TwoLayerNet, batch_size: int = 8) -> float:
    """A learning rate of the right scale for this model on unit-norm inputs.

    An SGD step on a batch of S points moves each point's output by about
    -(lr / S) * q * e_i, where q = P(<w_r(0), x> > b) is the fraction of
    neurons a unit-norm input fires (the diagonal of the model's tangent
    kernel). lr = S / (2 q) halves a point's residual each time it is
    sampled, and stays well inside the stable range lr < 2 S / q.

    Parameters
    ----------
    net : TwoLayerNet
        The net to train; only its threshold b and width m are used.
    batch_size : int, default 8
        S, the batch size the trainer will use.

    Returns
    -------
    float
        S / (2 q), with q = :meth:`TwoLayerNet.firing_fraction` (P(N(0, 1) > b)
        for Gaussian init) floored at 1/m. Far above the
        usual 0.1: about 99 for m = 2048 and S = 8.

    Raises
    ------
    ArgumentError
        `batch_size` is not positive.

    Examples
    --------
    >>> import kronnet as kn
    >>> net = kn.TwoLayerNet((4, 4), width=2048)
    >>> round(kn.suggest_lr(net, 8), 1)
    99.1
    >>> round(kn.suggest_lr(net, 16) / kn.suggest_lr(net, 8), 6)  # linear in S
    2.0
    """
    batch_size = v.positive_int(batch_size, "batch_size")
    q = net.firing_fraction()
    return batch_size / (2.0 * max(q, 1.0 / net.width))


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

    @property
    def steps(self) -> int:
        """The number of steps recorded."""
        return int(self.loss.shape[0])

    @property
    def fired_per_point(self) -> np.ndarray:
        """The mean ``|A_i|`` per batch point of each step, shape (steps,)."""
        out: np.ndarray = self.fired_total / np.maximum(self.batch_sizes, 1)
        return out

    @classmethod
    def _join(
        cls,
        parts: List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
        checkpoints: List[Tuple[int, float]],
        seconds: float,
        val_checkpoints: Optional[List[Tuple[int, float]]] = None,
    ) -> History:
        def cat(k: int, dtype: Any) -> np.ndarray:
            return np.concatenate([p[k] for p in parts]).astype(dtype) if parts else np.empty(0, dtype=dtype)

        return cls(
            loss=cat(0, np.float64),
            fired_union=cat(1, np.int64),
            fired_total=cat(2, np.int64),
            batch_sizes=cat(3, np.int64),
            full_loss=list(checkpoints),
            seconds=seconds,
            val_loss=list(val_checkpoints or []),
        )

    def __repr__(self) -> str:
        if self.full_loss:
            val = ""
            if self.val_loss:
                val = f", val_loss {self.val_loss[0][1]:.4g} -> {self.val_loss[-1][1]:.4g}"
            return (
                f"History(steps={self.steps}, full_loss {self.full_loss[0][1]:.4g} -> "
                f"{self.full_loss[-1][1]:.4g}{val}, seconds={self.seconds:.3g})"
            )
        return f"History(steps={self.steps}, seconds={self.seconds:.3g})"


class _Sampler:
    """Batches without replacement within an epoch: a seeded reshuffle at each
    epoch start; the last batch of an epoch is smaller when S does not
    divide n. Its state (generator state, order, position) is part of a
    checkpoint, so a restored trainer draws exactly the batches the
    uninterrupted one would have."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n = n
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.order = np.empty(0, dtype=np.int64)
        self.pos = 0

    def draw(self) -> np.ndarray:
        if self.pos >= self.order.shape[0]:
            # A new array (never mutated in place), so a saved state may
            # keep a reference to the old one instead of a copy.
            self.order = self.rng.permutation(self.n).astype(np.int64)
            self.pos = 0
        batch = self.order[self.pos : self.pos + self.batch_size]
        self.pos += batch.shape[0]
        return batch

    def state(self) -> Dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "order": self.order, "pos": self.pos}

    def set_state(self, state: Dict[str, Any], advance: int = 0) -> None:
        """Back to `state`, then `advance` batches further."""
        self.rng.bit_generator.state = state["rng"]
        self.order = state["order"]
        self.pos = state["pos"]
        for _ in range(advance):
            self.draw()


class Trainer:
    """Trains `net` in place on `data` by minibatch SGD.

    Parameters
    ----------
    net : TwoLayerNet
        The net to train; its dims must equal ``data.dims``.
    data : KronData or PairData
        Training points with targets y (n,).
    lr : float, default 0.5
        Learning rate; see :func:`suggest_lr` for the scale this model needs
        (for m = 2048 and S = 8 it is about 100, far above the usual 0.1).
    batch_size : int, default 8
        S. Batches are drawn without replacement within an epoch (a seeded
        reshuffle each epoch); the last batch of an epoch is smaller when S
        does not divide n.
    index : {"auto", "scan", "tree", "bits"}, default "auto"
        Activated-neuron finder for the Kronecker backend: "scan" (read
        P[i, :]), "tree" (the asynchronous tree), "bits" (fired bits kept
        exact by the step's threshold crossings) or "auto" (docs/indexes.md).
        All return the same fire sets; only speed differs.
    backend : {"kron", "dense"}, default "kron"
        "kron" (per-step cost independent of d) or "dense" (textbook,
        materialized X and W; the reference and a baseline, small d only).
    seed : int, default 0
        Seeds the batch order.
    gram : {"auto", "precomputed", "columns"}, default "auto"
        "precomputed" (n × n Gram once), "columns" (K[:, B] from the factors
        each step), or "auto" (precomputed when it fits `gram_budget_bytes`).
    gram_budget_bytes : int, default 2**30
        Cap on the precomputed Gram for ``gram="auto"`` (1 GiB).
    progress : bool, default False
        Show a tqdm progress bar over the points while the initial inner
        products P(0) are computed, once that has taken more than a second.
    gram_from : Trainer, optional
        A Kronecker trainer on the same points (same fingerprint) with a
        precomputed Gram: this trainer uses that Gram without a copy (e.g.
        one net per class on one data set, other targets). Implies
        ``gram="precomputed"``.
    comm : mpi4py.MPI.Comm, optional
        Shard the net's neurons over this communicator's ranks (docs/mpi.md):
        rank q of K holds neurons [q m / K, (q + 1) m / K) of P, of the
        coefficients and of the index; every rank holds the data and the
        Gram and must build the trainer with the same arguments. Every
        method is then collective and returns the same values on every rank,
        bitwise those of a single-process trainer; progress bars show on
        rank 0 only. Kronecker backend only; needs mpi4py
        (``pip install "kronnet[mpi]"``).

    Raises
    ------
    ArgumentError
        An argument has a bad value: `data` has no targets, other dims than
        the net, non-finite targets, or fewer than `batch_size` points; a
        size or `lr` is not positive; an unknown mode name.
    ArgumentTypeError
        `net` is not a TwoLayerNet, `data` not a KronData or PairData, or a number has
        the wrong type.
    OutOfMemoryError
        The training state (:meth:`estimate_memory`) would not fit in memory.

    Notes
    -----
    The trainer holds P (n × m), the Gram and the index (or X and W for the
    dense backend); the net holds the coefficients, in one block per set of
    training points. Dropping a trainer frees its state; the net keeps what
    it learned. :meth:`estimate_memory` tells the peak before building one.

    Examples
    --------
    >>> import kronnet as kn
    >>> data = kn.make_kronecker_data(128, dims=(8, 8), seed=0)
    >>> net = kn.TwoLayerNet(data.dims, width=512, seed=0)
    >>> tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), batch_size=8)
    >>> hist = tr.fit(500)
    >>> hist.full_loss[-1][1] < hist.full_loss[0][1] / 10
    True
    """

    # The core: the Rust TrainerCore, or a kronnet.shard.ShardedCore with the same methods.
    _core: Any

    def __init__(
        self,
        net: TwoLayerNet,
        data: KronPoints,
        lr: float = 0.5,
        batch_size: int = 8,
        index: IndexKind = "auto",
        backend: Backend = "kron",
        seed: int = 0,
        gram: GramMode = "auto",
        gram_budget_bytes: int = GRAM_BUDGET_BYTES,
        progress: bool = False,
        gram_from: Optional[Trainer] = None,
        comm: Any = None,
    ) -> None:
        progress = v.flag(progress, "progress")
        if gram_from is not None:
            gram = _shared_gram_mode(gram_from, data, backend)
        self._setup(
            net, data, lr, batch_size, index, backend, seed, gram, gram_budget_bytes, None, progress, gram_from, comm
        )

    def _setup(
        self,
        net: TwoLayerNet,
        data: KronPoints,
        lr: float,
        batch_size: int,
        index: str,
        backend: str,
        seed: int,
        gram: str,
        gram_budget_bytes: int,
        resume: Optional[Dict[str, Any]],
        progress: bool = False,
        gram_from: Optional[Trainer] = None,
        comm: Any = None,
    ) -> None:
        if comm is not None:
            self._setup_sharded(
                comm,
                net,
                data,
                lr,
                batch_size,
                index,
                backend,
                seed,
                gram,
                gram_budget_bytes,
                resume,
                gram_from,
                progress,
            )
            return
        plan = _plan(net, data, lr, batch_size, index, backend, seed, gram, gram_budget_bytes, gram_from is not None)
        v.ensure_fits(plan.estimate, plan.what, "data, net.width")
        with PointsBar(progress and resume is None, data.n, net.width, "init") as bar:
            core = _make_core(
                plan,
                net,
                data,
                resume,
                progress=bar.callback,
                gram_from=None if gram_from is None else gram_from._core_handle(),
            )
        self._adopt(plan, net, data, core, None, resume)

    def _adopt(
        self, plan: _Plan, net: TwoLayerNet, data: KronPoints, core: Any, group: Any, resume: Optional[Dict[str, Any]]
    ) -> None:
        """Takes over a built core: the plan's settings, a fresh or resumed sampler."""
        self._group = group
        self._lr = plan.lr
        self._batch_size = plan.batch_size
        self._backend = plan.backend
        self._index = plan.index
        self._gram = plan.gram
        self._seed = plan.seed
        self._gram_budget_bytes = plan.gram_budget_bytes
        self._net = net
        self._data = data
        self._sampler = _Sampler(data.n, self._batch_size, self._seed)
        self._steps = 0
        self._core = core
        if resume is not None:
            self._sampler.set_state(resume["sampler"])
            self._steps = resume["steps_done"]
        net._version += 1
        self._version = net._version

    def _setup_sharded(
        self,
        comm: Any,
        net: TwoLayerNet,
        data: KronPoints,
        lr: float,
        batch_size: int,
        index: str,
        backend: str,
        seed: int,
        gram: str,
        gram_budget_bytes: int,
        resume: Optional[Dict[str, Any]],
        gram_from: Optional[Trainer],
        progress: bool,
    ) -> None:
        """`_setup` for one rank of a sharded trainer: collective. Each phase
        runs locally and is agreed on before the next message, so a rank
        that refuses makes every rank raise instead of leaving them waiting."""
        from .shard import Group, ShardedCore, neuron_range

        group = Group(comm)

        def plan_locally() -> Tuple[_Plan, int, int]:
            if backend != "kron":
                raise ArgumentError("backend", f"only the Kronecker backend can be sharded (comm=), got {backend!r}")
            if gram_from is not None:
                raise ArgumentError("gram_from", "cannot be combined with comm=")
            if not isinstance(net, TwoLayerNet):
                raise ArgumentTypeError("net", f"expected a TwoLayerNet, got {type(net).__name__}")
            first, count = neuron_range(net.width, group.size, group.rank)
            plan = _plan(net, data, lr, batch_size, index, backend, seed, gram, gram_budget_bytes, held=count)
            v.ensure_fits(plan.estimate, plan.what + " of this rank", "data, net.width")
            return plan, first, count

        plan, first, count = group.run(plan_locally)
        # Every rank must train the same net on the same data the same way,
        # or their shards would silently belong to different models.
        assert data.y is not None  # checked by _plan
        group.same(
            (
                net.dims,
                net.width,
                net.seed,
                net.init,
                net.init_rank,
                net.threshold,
                net.sharded,
                data.n,
                data.fingerprint,
                hashlib.sha256(np.ascontiguousarray(data.y).tobytes()).hexdigest(),
                plan.lr,
                plan.batch_size,
                plan.index,
                plan.gram,
                plan.seed,
                None if resume is None else resume["steps_done"],
            ),
            "net, data and trainer arguments",
            "comm",
        )

        def build_locally() -> Any:
            net._shard_over(group)
            # Rank 0's bar stands for all: the shards are alike in size.
            with PointsBar(progress and resume is None and group.rank == 0, data.n, count, "init") as bar:
                return _make_core(plan, net, data, resume, neurons=(first, count), progress=bar.callback)

        # (A resumed state's p_bound is the whole net's already: the max over
        # ranks that ShardedCore takes leaves it as it is.)
        core = ShardedCore(group.run(build_locally), group, net.width, data.n)
        self._adopt(plan, net, data, core, group, resume)

    def _core_handle(self) -> Any:
        """The core trainer (for sharing its Gram with another trainer)."""
        return self._core

    @staticmethod
    def estimate_memory(
        net: TwoLayerNet,
        data: KronPoints,
        backend: Backend = "kron",
        index: IndexKind = "auto",
        gram: GramMode = "auto",
        gram_budget_bytes: int = GRAM_BUDGET_BYTES,
    ) -> int:
        """Peak bytes a Trainer on (net, data) allocates, before building it.

        Kronecker backend: P (8 n m), the coefficient block when the net has
        none for these points yet (8 n m), the Gram (8 n^2 when
        precomputed), the index (``bits``: n m / 4 bytes; ``tree``: about
        8 n m / 7), a copy of the factors, and the largest transient (init's
        per-thread buffers, a trained block's cross-Gram). Dense backend:
        X (8 n d), W (8 m d), the block, one trained block's X and the
        (n, m) preactivations of a full loss. Both add
        ``ALLOCATOR_SLACK_BYTES`` for what the allocator and threads keep.
        Checked against measured peaks in tests/test_memory.py.

        Parameters
        ----------
        net : TwoLayerNet
            The net the trainer would train.
        data : KronData or PairData
            The training data (with targets).
        backend : {"kron", "dense"}, default "kron"
            As for :class:`Trainer`.
        index : {"auto", "scan", "tree", "bits"}, default "auto"
            As for :class:`Trainer`.
        gram : {"auto", "precomputed", "columns"}, default "auto"
            As for :class:`Trainer`.
        gram_budget_bytes : int, default 2**30
            As for :class:`Trainer`.

        Returns
        -------
        int
            Bytes.

        Raises
        ------
        ArgumentError
            The arguments are invalid, as :class:`Trainer` would find them.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=64)
        >>> need = kn.Trainer.estimate_memory(net, data)
        >>> need > 8 * 32 * 64  # at least P, n × m float64
        True
        """
        return int(_plan(net, data, 1.0, 1, index, backend, 0, gram, gram_budget_bytes).estimate)

    @classmethod
    def restore(cls, path: Any, comm: Any = None) -> Trainer:
        """A trainer continued from a file written by :meth:`checkpoint`.

        Its net (``restored.net``) and data (``restored.data``) are loaded
        from the file too. Continuing it gives bitwise the same losses and
        weights as the run that was checkpointed would have.

        Parameters
        ----------
        path : str or os.PathLike
            A file written by :meth:`checkpoint`.
        comm : mpi4py.MPI.Comm, optional
            Continue sharded over this communicator (collective: every rank
            reads the file, then keeps its neurons). Any number of ranks
            works, whatever the number that wrote the file.

        Returns
        -------
        Trainer
            A new trainer, with a new net and data loaded from the file.

        Raises
        ------
        FileFormatError
            The file is truncated, corrupted, not a checkpoint, or of an
            unsupported format version.
        FileNotFoundError
            There is no file at `path`.

        Examples
        --------
        >>> import os, tempfile, kronnet as kn
        >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
        >>> tr = kn.Trainer(kn.TwoLayerNet(data.dims, width=64), data, lr=20.0)
        >>> _ = tr.fit(10)
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = os.path.join(tmp.name, "run.ckpt")
        >>> tr.checkpoint(path)
        >>> again = kn.Trainer.restore(path)
        >>> again.steps_done, again.lr, again.net.width
        (10, 20.0, 64)
        >>> again.full_loss() == tr.full_loss()
        True
        >>> tmp.cleanup()
        """
        from . import checkpoint

        restored: Trainer = checkpoint.restore(cls, path, comm)
        return restored

    def checkpoint(self, path: Any) -> None:
        """Writes everything needed to continue training exactly to one file.

        That is the net (all its coefficient blocks), the training data, lr,
        batch size, index, backend, Gram mode, the batch sampler's position
        and generator state, the step count, and the training state (P for
        the Kronecker backend, W for the dense one). The write is atomic
        (temporary file, fsync, rename). Format: docs/format.md.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (replaced if it exists).

        Raises
        ------
        StaleTrainerError
            Another trainer changed the net since this one last ran.

        Examples
        --------
        >>> import os, tempfile, kronnet as kn
        >>> data = kn.make_kronecker_data(64, dims=(4, 8), seed=1)
        >>> net = kn.TwoLayerNet(data.dims, width=128)
        >>> tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8))
        >>> _ = tr.fit(100)
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = os.path.join(tmp.name, "run.ckpt")
        >>> tr.checkpoint(path)
        >>> again = kn.Trainer.restore(path)
        >>> bool((again.fit(50).loss == tr.fit(50).loss).all())
        True
        >>> tmp.cleanup()
        """
        from . import checkpoint

        self._agreed(self._check_current)
        checkpoint.write(self, path)

    # -- properties ---------------------------------------------------------

    @property
    def net(self) -> TwoLayerNet:
        """The net being trained (in place), a :class:`TwoLayerNet`."""
        return self._net

    @property
    def data(self) -> KronPoints:
        """The training data (a :class:`KronData` or :class:`PairData`)."""
        return self._data

    @property
    def lr(self) -> float:
        """The learning rate; may be set between steps (a positive float)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = v.finite_float(value, "lr", positive=True)

    @property
    def batch_size(self) -> int:
        """S, the batch size."""
        return self._batch_size

    @property
    def backend(self) -> str:
        """The backend: "kron" or "dense"."""
        return self._backend

    @property
    def index(self) -> str:
        """The activated-neuron index in use ("scan", "tree", "bits"; "none"
        for the dense backend)."""
        return self._index

    @property
    def gram(self) -> str:
        """How steps get Gram columns ("precomputed", "columns"; "none" for
        the dense backend)."""
        return self._gram

    @property
    def seed(self) -> int:
        """The seed of the batch order."""
        return self._seed

    @property
    def steps_done(self) -> int:
        """Steps taken so far."""
        return self._steps

    # -- batches ------------------------------------------------------------

    def next_batch(self) -> np.ndarray:
        """Draws the next sampled batch, consuming it.

        Batches are drawn without replacement within an epoch, reshuffled
        (seeded) at each epoch start; the last batch of an epoch is smaller
        when S does not divide n. :meth:`step` and :meth:`fit` draw from the
        same sampler, so a batch drawn here is not drawn by them.

        Returns
        -------
        ndarray of shape (k,), k <= S
            int64 indices into the training data.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(10, dims=(2, 2), seed=0)
        >>> tr = kn.Trainer(kn.TwoLayerNet(data.dims, width=32), data, lr=5.0, batch_size=4)
        >>> epoch = [tr.next_batch() for _ in range(3)]
        >>> [len(b) for b in epoch]
        [4, 4, 2]
        >>> sorted(int(i) for b in epoch for i in b) == list(range(10))
        True
        """
        return self._sampler.draw()

    # -- training -----------------------------------------------------------

    def _agreed(self, fn: Any) -> Any:
        """``fn()``, agreed on by every rank when sharded (kronnet.shard.Group.run)."""
        return fn() if self._group is None else self._group.run(fn)

    @property
    def comm(self) -> Any:
        """The mpi4py communicator the net is sharded over, or None."""
        return None if self._group is None else self._group.comm

    def comm_stats(self) -> Dict[str, float]:
        """The steps' messages so far (sharded trainers; empty otherwise).

        Returns
        -------
        dict of str to float
            ``allreduce_seconds``: wall time this rank spent in the steps'
            ``Allreduce`` (waiting for the other ranks included);
            ``allreduce_bytes``: bytes this rank contributed to them.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
        >>> kn.Trainer(kn.TwoLayerNet(data.dims, width=64), data).comm_stats()  # one process
        {}
        """
        if self._group is None:
            return {}
        return {
            "allreduce_seconds": float(self._core.allreduce_seconds),
            "allreduce_bytes": float(self._core.allreduce_bytes),
        }

    def _check_current(self) -> None:
        if self._net._version != self._version:
            raise StaleTrainerError(
                "net: its weights were changed by another Trainer since this one last ran; "
                "create a new Trainer to continue training from the current weights"
            )

    def _committed(self, steps: int) -> None:
        self._steps += steps
        if steps:
            self._net._version += 1
            self._version = self._net._version

    def step(self, batch: Optional[Any] = None) -> float:
        """One SGD step.

        Parameters
        ----------
        batch : array_like of int, optional
            1-D indices into the training data (repeats allowed; they
            accumulate). None draws the next sampled batch.

        Returns
        -------
        float
            The batch loss L_B before the update.

        Raises
        ------
        ArgumentError
            An index of `batch` is out of range, or `batch` is empty.
        DivergenceError
            The loss or the update would be non-finite; the model is left at
            its last finite state and a sampled batch is not consumed.
        StaleTrainerError
            Another trainer changed the net since this one last ran.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=64)
        >>> tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8))
        >>> loss = tr.step()  # the next sampled batch
        >>> loss = tr.step([0, 1, 1])  # explicit indices; point 1 counts twice
        >>> tr.steps_done
        2
        """
        self._check_current()
        if batch is None:
            before = self._sampler.state()
            b = self._sampler.draw()
        else:
            before = None
            b = self._agreed(lambda: v.index_array(batch, "batch", self._data.n))
        try:
            loss, _, _ = self._core.step(b, self._lr)
        except BaseException:
            if before is not None:
                self._sampler.set_state(before)
            raise
        self._committed(1)
        return float(loss)

    def fit(
        self, steps: int, progress: bool = False, eval_every: int = 0, validation: Optional[KronPoints] = None
    ) -> History:
        """Takes `steps` sampled SGD steps.

        Parameters
        ----------
        steps : int
            Number of steps.
        progress : bool, default False
            Show a tqdm progress bar with the running batch loss.
        eval_every : int, default 0
            Also record the full training loss every this many steps (0: only
            before the first and after the last step).
        validation : KronData or PairData, optional
            Held-out points with targets and the net's dims. At every
            checkpoint of the full training loss, the validation loss
            (1/2q) sum_j (f(x'_j) - y'_j)^2 over its q points is recorded
            too (:attr:`History.val_loss`, computed with
            :meth:`TwoLayerNet.predict`) and shown on the progress bar.

        Returns
        -------
        History
            Per-step losses and fired-neuron counts.

        Raises
        ------
        ArgumentError
            `validation` has no targets, no points, non-finite targets or
            other dims than the net (checked before any step).
        ArgumentTypeError
            `validation` is not a KronData or PairData.
        DivergenceError
            A step would be non-finite. The steps before it stay applied, the
            sampler is left at the failing step, and ``exc.history`` holds
            the History of the steps taken.
        KeyboardInterrupt
            On Ctrl-C, within a fraction of a second, between two steps; the
            trainer stays consistent and usable, and ``exc.history`` holds
            the steps taken.
        StaleTrainerError
            Another trainer changed the net since this one last ran.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(64, dims=(4, 4), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=128)
        >>> tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8))
        >>> hist = tr.fit(100)
        >>> hist.steps, tr.steps_done
        (100, 100)
        >>> hist.full_loss[-1][1] < hist.full_loss[0][1]
        True

        With a held-out set from the same generator:

        >>> held_out = kn.make_kronecker_data(32, dims=(4, 4), seed=1)
        >>> hist = tr.fit(50, eval_every=25, validation=held_out)
        >>> [step for step, _ in hist.val_loss] == [step for step, _ in hist.full_loss]
        True
        >>> [step for step, _ in hist.val_loss]
        [100, 125, 150]
        """

        def check() -> Tuple[int, int, bool, Optional[KronPoints]]:
            self._check_current()
            return (
                v.positive_int(steps, "steps"),
                v.nonnegative_int(eval_every, "eval_every"),
                v.flag(progress, "progress"),
                _validation_set(validation, self._net),
            )

        steps, eval_every, progress, val = self._agreed(check)
        # Sharded, Ctrl-C must stop every rank after the same step: it only
        # sets a flag that the next step's message carries to all ranks.
        interrupts = self._core.interrupts() if self._group is not None else contextlib.nullcontext()
        with interrupts:
            return self._fit(steps, eval_every, progress, val)

    def _fit(self, steps: int, eval_every: int, progress: bool, val: Optional[KronPoints]) -> History:
        start = time.perf_counter()
        parts: List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        checkpoints: List[Tuple[int, float]] = []
        val_checkpoints: List[Tuple[int, float]] = []
        bar: Any = None
        postfix: Dict[str, str] = {}

        def checkpoint() -> None:
            # Both losses first, then both records: an interrupt in between
            # leaves the two lists with the same steps.
            loss = self.full_loss()
            val_loss = None if val is None else _validation_loss(self._net, val)
            checkpoints.append((self._steps, loss))
            if val_loss is not None:
                val_checkpoints.append((self._steps, val_loss))
                postfix["val_loss"] = f"{val_loss:.3e}"
                if bar is not None:
                    bar.set_postfix(postfix)

        checkpoint()
        # Steps run in Rust in chunks: no Python between steps, the GIL
        # released, and still a live progress bar and checkpoints.
        chunk = max(1, min(steps // 100, 256))
        bar = steps_bar(steps, progress and (self._group is None or self._group.rank == 0))
        done = 0
        try:
            try:
                while done < steps:
                    k = min(chunk, steps - done)
                    if eval_every:
                        k = min(k, eval_every - done % eval_every)
                    ran, err = self._run_chunk(k, parts)
                    done += ran
                    if bar is not None:
                        bar.update(ran)
                        if ran:
                            postfix["batch_loss"] = f"{float(parts[-1][0][-1]):.3e}"
                            bar.set_postfix(postfix)
                    if err is not None:
                        raise err
                    if eval_every and (done % eval_every == 0) and done < steps:
                        checkpoint()
            except (DivergenceError, KeyboardInterrupt) as exc:
                # Wherever it landed (in Rust between two steps, or in Python
                # between two chunks), the trainer is at a step boundary:
                # report the steps this call took with the exception.
                checkpoint()
                exc.history = History._join(  # type: ignore[union-attr]
                    parts, checkpoints, time.perf_counter() - start, val_checkpoints
                )
                raise
            checkpoint()  # the last one, while the bar still shows
        finally:
            if bar is not None:
                bar.close()
        return History._join(parts, checkpoints, time.perf_counter() - start, val_checkpoints)

    def _run_chunk(self, k: int, parts: List[Any]) -> Tuple[int, Optional[BaseException]]:
        """Draws k batches and runs them in Rust. On an early stop the sampler
        is put back to the first step not taken, so a retry draws it again."""
        before, taken = self._sampler.state(), self._core.steps_taken
        err, recorded = None, len(parts)
        offsets = np.zeros(k + 1, dtype=np.int64)
        try:
            batches = [self._sampler.draw() for _ in range(k)]
            np.cumsum([b.shape[0] for b in batches], out=offsets[1:])
            loss, union, total, err = self._core.run(np.concatenate(batches), offsets, self._lr)
            parts.append((loss, union, total, np.diff(offsets)[: loss.shape[0]]))
        finally:
            # Counted and kept by the core, so the count and the history are
            # right even when Ctrl-C lands in Python just after the run.
            ran = self._core.steps_taken - taken
            if ran and len(parts) == recorded:
                loss, union, total = self._core.last_run()
                parts.append((loss, union, total, np.diff(offsets)[:ran]))
            if ran < k:
                self._sampler.set_state(before, advance=ran)
            self._committed(ran)
        return ran, err

    def index_stats(self) -> Dict[str, float]:
        """The work of the activation index so far.

        Returns
        -------
        dict of str to float
            ``seconds`` spent finding fire sets, ``memory_bytes`` of the
            index, and the index's counters (``queries``, ``values_read``;
            the tree adds ``rows_synced``, ``full_rebuilds`` and
            ``nodes_recomputed``). Empty for the dense backend.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
        >>> tr = kn.Trainer(kn.TwoLayerNet(data.dims, width=64), data, lr=20.0, index="tree")
        >>> _ = tr.fit(10)
        >>> stats = tr.index_stats()
        >>> stats["queries"] >= 80, stats["memory_bytes"] > 0
        (True, True)
        """
        if self._backend != "kron":
            return {}
        out: Dict[str, float] = dict(self._core.index_stats)
        out["seconds"] = float(self._core.index_seconds)
        out["memory_bytes"] = int(self._core.index_memory_bytes)
        return out

    def full_loss(self) -> float:
        """The full training loss (1/2n) sum_i (f(x_i) - y_i)^2.

        Returns
        -------
        float
            The loss over all n training points at the current weights.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=64)
        >>> tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8))
        >>> loss = tr.full_loss()
        >>> bool(np.isclose(loss, 0.5 * np.mean((net.predict(data) - data.y) ** 2)))
        True
        """
        return float(self._core.full_loss())

    def __repr__(self) -> str:
        return (
            f"Trainer(backend={self._backend!r}, index={self._index!r}, lr={self._lr:g}, "
            f"batch_size={self._batch_size}, n={self._data.n}, width={self._net.width}, steps_done={self._steps})"
        )


def _make_core(
    plan: Any,
    net: TwoLayerNet,
    data: KronPoints,
    resume: Optional[Dict[str, Any]],
    neurons: Optional[Tuple[int, int]] = None,
    progress: Any = None,
    gram_from: Any = None,
) -> Any:
    """The Rust trainer core for `plan`: from the net's current weights, or
    from a checkpoint's state (`resume`); for neurons first .. first + count
    only when sharded (`neurons`)."""
    assert data.y is not None  # checked by _plan
    coef = net._block_for(data)
    state, p_bound = (None, None) if resume is None else (resume["state"], resume.get("p_bound"))
    if state is not None and neurons is not None:
        state = np.ascontiguousarray(state[neurons[0] : neurons[0] + neurons[1]], np.float64)
    return _core.TrainerCore(
        plan.backend,
        data.core_layout,
        data.y,
        net.a,
        net.threshold,
        net._core_init(),
        coef,
        net._core_blocks(),
        plan.gram if plan.gram != "none" else "precomputed",
        plan.index if plan.index != "none" else "scan",
        state,
        p_bound,
        progress=progress,
        gram_from=gram_from,
        neurons=neurons,
    )


@dataclass(frozen=True)
class _Plan:
    """A trainer's validated arguments, resolved modes and peak memory."""

    lr: float
    batch_size: int
    backend: str
    index: str
    gram: str
    seed: int
    gram_budget_bytes: int
    estimate: float
    what: str


def _plan(
    net: Any,
    data: Any,
    lr: Any,
    batch_size: Any,
    index: Any,
    backend: Any,
    seed: Any,
    gram: Any,
    gram_budget_bytes: Any,
    shared_gram: bool = False,
    held: Optional[int] = None,
) -> _Plan:
    """Validates a trainer's arguments and works out its index, Gram mode
    and peak memory (of one rank holding `held` of the neurons, when
    sharded: its P, block and index shrink, the Gram and points do not)."""
    if not isinstance(net, TwoLayerNet):
        raise ArgumentTypeError("net", f"expected a TwoLayerNet, got {type(net).__name__}")
    if not isinstance(data, KronPoints):
        raise ArgumentTypeError("data", f"expected a KronData or PairData, got {type(data).__name__}")
    if data.y is None:
        raise ArgumentError("data", "has no targets y; training needs data with targets, e.g. KronData(factors, y)")
    if data.n == 0:
        raise ArgumentError("data", "has no points")
    if data.dims != net.dims:
        raise ArgumentError("data", f"has factor dimensions {data.dims}, the net expects {net.dims}")
    v.trainable_targets(data.y, "data.y")
    lr = v.finite_float(lr, "lr", positive=True)
    batch_size = v.positive_int(batch_size, "batch_size")
    backend = v.choice(backend, "backend", BACKENDS)
    seed = v.seed_int(seed)
    gram_budget_bytes = v.positive_int(gram_budget_bytes, "gram_budget_bytes")
    index = v.choice(index, "index", INDEXES)
    gram = v.choice(gram, "gram", GRAM_MODES)
    if batch_size > data.n:
        raise ArgumentError("batch_size", f"{batch_size} exceeds the {data.n} training points")
    n, m = data.n, net.width
    mine = m if held is None else held
    threads = _core.thread_count()
    block = 0.0 if net._block_index(data) is not None else 8.0 * n * mine
    trained = [b.data.n for b in net.coefficients if b._coef.trained]
    if backend == "kron":
        index = _resolve_index(index, n, m, net.threshold)
        if gram == "auto":
            gram = "precomputed" if 8.0 * n * n <= gram_budget_bytes else "columns"
        # Two phases follow each other: init (its per-thread buffers, or one
        # trained block's cross-Gram, n × n_s), then the Gram and the index,
        # which stay. P, the block and the points' copy span both.
        init_phase = max(
            net._scratch_bytes(data),
            8.0 * n * max(trained, default=0),
        )
        # A shared Gram is another trainer's: no new n × n matrix.
        own_gram = gram == "precomputed" and not shared_gram
        gram_bytes = 8.0 * n * n + 8.0 * 64 * n * threads if own_gram else 0.0
        state_phase = gram_bytes + float(_core.index_memory_bytes(index, n, mine))
        # The trainer copies the points only to recompute Gram columns.
        points = float(data.core_nbytes) if gram == "columns" else 0.0
        estimate = 8.0 * n * mine + block + points + 8.0 * n + max(init_phase, state_phase)
        what = "the training state (P, coefficients, Gram, index)"
    else:
        index, gram = "none", "none"
        # W (m × d) stays; a trained block's X_s (n_s × d) lives only while
        # W is built, and this trainer's X (n × d) only after: never both.
        estimate = 8.0 * data.d * (m + max(n, max(trained, default=0))) + block + 8.0 * n * m
        what = "the dense backend's X (n × d) and W (width × d)"
    return _Plan(lr, batch_size, backend, index, gram, seed, gram_budget_bytes, estimate + ALLOCATOR_SLACK_BYTES, what)


def _shared_gram_mode(gram_from: Any, data: Any, backend: Any) -> GramMode:
    """Checks ``Trainer(gram_from=...)``: a Kronecker trainer with a
    precomputed Gram of the same points. Returns the Gram mode to use."""
    if not isinstance(gram_from, Trainer):
        raise ArgumentTypeError("gram_from", f"expected a Trainer, got {type(gram_from).__name__}")
    if backend != "kron" or gram_from.backend != "kron" or gram_from.gram != "precomputed":
        raise ArgumentError(
            "gram_from", 'both trainers must use backend="kron", and gram_from a precomputed Gram (gram="precomputed")'
        )
    if not isinstance(data, KronPoints) or data.n != gram_from.data.n or data.fingerprint != gram_from.data.fingerprint:
        raise ArgumentError(
            "gram_from", "trains on other points; its Gram can only be shared by trainers on the same points"
        )
    return "precomputed"


#: "auto" uses the crossing bits while n · q <= this, where q = P(N(0,1) > b)
#: is the fraction of neurons a unit-norm point fires (docs/indexes.md).
AUTO_BITS_MAX_NQ = 32.0


def _resolve_index(index: str, n: int, m: int, threshold: float) -> str:
    """The index "auto" stands for, from `kronnet bench index` (docs/indexes.md).

    The scan costs m strided reads of P per batch point, independent of n;
    the crossing bits make queries almost free but add a mask pass over
    every changed row of P, O(n · |R|) with |R| ≈ S · q · m, to the update.
    So bits win while n · q is small: it was fastest in 29 of 30 shapes with
    n <= 512 (n · q <= 24), and the scan was faster at n = 2048 and 8192 with
    the default threshold (n · q = 50 to 330). The tree was never the fastest
    by more than noise: between two queries of a point, n/S steps each change
    |R| of its m values, so it mostly rebuilds.
    """
    if index != "auto":
        return index
    q = gaussian_tail(threshold)
    return "bits" if n * q <= AUTO_BITS_MAX_NQ else "scan"


def _validation_set(validation: Any, net: TwoLayerNet) -> Optional[KronPoints]:
    """Checks `fit`'s validation argument: None or a data set with finite
    targets, at least one point and the net's dims."""
    if validation is None:
        return None
    if not isinstance(validation, KronPoints):
        raise ArgumentTypeError("validation", f"expected a KronData or PairData, got {type(validation).__name__}")
    if validation.y is None:
        raise ArgumentError("validation", "has no targets y; the validation loss needs targets")
    if validation.n == 0:
        raise ArgumentError("validation", "has no points")
    if validation.dims != net.dims:
        raise ArgumentError("validation", f"has factor dimensions {validation.dims}, the net expects {net.dims}")
    v.trainable_targets(validation.y, "validation.y")
    return validation


def _validation_loss(net: TwoLayerNet, data: KronPoints) -> float:
    """(1/2q) sum_j (f(x'_j) - y'_j)^2 over the q points of `data`."""
    assert data.y is not None  # checked by _validation_set
    try:
        pred = net.predict(data)
    except ArgumentError:
        # The points were checked by _validation_set: the predictions
        # overflow float64, near a divergence. The loss is then infinite,
        # and fit goes on to report the DivergenceError, not this.
        return float("inf")
    e = pred - data.y
    with np.errstate(over="ignore"):
        return float(e @ e) / (2.0 * data.n)
