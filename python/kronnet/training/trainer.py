"""SGD training of a TwoLayerNet on KronData or PairData (docs/design.md, "The algorithm")."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import replace
from typing import Any, ContextManager, Dict, List, Literal, Optional, Sequence, Tuple, Union, cast

import numpy as np

from .. import _core
from .. import _validate as v
from .. import placement as placements
from ..data import KronPoints
from ..errors import (
    ArgumentError,
    ArgumentTypeError,
    DivergenceError,
    FileFormatError,
    RankMismatchError,
    StaleTrainerError,
)
from ..model import TwoLayerNet
from ..model.state import NetState
from ..placement import Placement, StepRunner
from ..progress import PointsBar, steps_bar
from . import checkpoint as checkpoint_file
from .config import GRAM_BUDGET_BYTES, NONE, Backend, GramMode, IndexKind, LossName, TrainerConfig
from .config import Dtype as DtypeName
from .history import History, from_runs
from .lr import suggest_lr
from .memory import MemoryPlan, trainer_memory
from .sampler import BatchSampler
from .schedules import ScheduleLike, factors
from .state import MAX_STEPS, CoreState, TrainerState
from .stopping import EarlyStopping


class Trainer:
    """Trains `net` in place on `data` by minibatch SGD.

    Parameters
    ----------
    net : TwoLayerNet
        The net to train; its dims must equal ``data.dims``.
    data : KronData or PairData
        Training points with targets: y (n,) floats (one output), (n, C)
        floats (the squared loss on C outputs), 0/1 values (the logistic
        loss) or integer labels in [0, C) (cross-entropy).
    lr : float or "auto", default "auto"
        Learning rate. "auto" is ``suggest_lr(net, batch_size)``: S / (2 q),
        with q the fraction of the m neurons a unit-norm input fires at
        initialization (about 99 for m = 2048 and S = 8, far above the usual
        0.1; the old default 0.5 was some 200 times too small). It is
        resolved to that float here, so :attr:`lr`, :attr:`config`,
        :meth:`export_state` and checkpoints hold the float, and a restored
        run continues bitwise. A float is used as given.
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
    lr_a, lr_b, lr_c, lr_v : float, default 0.0
        Learning rates of the output weights a, the per-neuron thresholds b,
        the output bias c and the linear term <v, x> (v in the span of the
        training points): every parameter whose rate is positive moves by
        plain SGD, all gradients taken at the same point. 0 freezes it: the
        defaults train W alone, the paper's model, bit for bit.
        :func:`suggest_rates` gives rates of the right scale.
    loss : {"squared", "logistic", "cross_entropy"}, default "squared"
        The batch loss L_B, a mean over the batch: ½‖f − y‖²;
        log(1 + e^f) − y f (one output, y ∈ {0, 1}); logsumexp(f) − f_y
        (C ≥ 2 outputs, integer labels).
    ridge_a, ridge_b, ridge_c, ridge_v : float, default 0.0
        Ridge penalties added to L_B for the gradients (not to the reported
        losses): (λ/2)‖a‖², (λ/2)‖b − b(0)‖² (b(0) = ``net.threshold``),
        (λ/2)‖c‖², (λ/2)‖v‖². Each acts only while its rate is positive.
        (Weight decay on W: docs/design.md, "Regularisation".)
    schedule : None, tuple or schedule, default None
        A factor on every rate at each step: None (constant),
        ``("inverse_time", tau)`` (1 / (1 + t / tau)), ``("cosine", T)``
        (half a cosine from 1 to 0 over T steps), or a schedule object
        (:mod:`kronnet.training.schedules`); t counts the trainer's steps.
    dtype : {"float64", "float32"}, default "float64"
        The type the Kronecker backend keeps P (n × m) in. "float32" halves
        the trainer's largest array and the traffic of every step; values
        are widened for every computation and each step's update of a value
        is rounded once (docs/design.md, "float32", for what it changes).
        The coefficients, the Gram and everything saved with the net stay
        float64.

    Raises
    ------
    ArgumentError
        An argument has a bad value: `data` has no targets, other dims than
        the net, non-finite targets, or fewer than `batch_size` points; a
        size or `lr` is not positive; an unknown mode name; `net` is sharded
        over MPI ranks by a trainer with another (or no) `comm`.
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

    Thread safety: a trainer and its net are not shared across threads
    while it works. While this trainer is being built or runs any of its
    methods in one thread (:meth:`fit`, :meth:`step`, :meth:`run`,
    :meth:`full_loss`, :meth:`checkpoint`, :meth:`export_state`...), every
    use of the net (``predict``, ``save``, another trainer...) or of this
    trainer from another thread raises :class:`~kronnet.ConcurrentUseError`
    at once, and the training goes on undisturbed; the trainer likewise
    refuses to start while another thread reads the net. Several threads
    may read an idle net together (:class:`TwoLayerNet`). Steps release the
    GIL, so other Python threads keep running meanwhile.

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

    def __init__(
        self,
        net: TwoLayerNet,
        data: KronPoints,
        lr: Union[float, Literal["auto"]] = "auto",
        batch_size: int = 8,
        index: IndexKind = "auto",
        backend: Backend = "kron",
        seed: int = 0,
        gram: GramMode = "auto",
        gram_budget_bytes: int = GRAM_BUDGET_BYTES,
        progress: bool = False,
        gram_from: Optional[Trainer] = None,
        comm: Any = None,
        lr_a: float = 0.0,
        lr_b: float = 0.0,
        lr_c: float = 0.0,
        lr_v: float = 0.0,
        loss: LossName = "squared",
        ridge_a: float = 0.0,
        ridge_b: float = 0.0,
        ridge_c: float = 0.0,
        ridge_v: float = 0.0,
        schedule: ScheduleLike = None,
        dtype: DtypeName = "float64",
    ) -> None:
        progress = v.flag(progress, "progress")
        config = TrainerConfig(
            _auto_lr(lr, net, batch_size),
            batch_size,
            index,
            backend,
            seed,
            gram,
            gram_budget_bytes,
            lr_a=lr_a,
            lr_b=lr_b,
            lr_c=lr_c,
            lr_v=lr_v,
            loss=loss,
            ridge_a=ridge_a,
            ridge_b=ridge_b,
            ridge_c=ridge_c,
            ridge_v=ridge_v,
            schedule=schedule,
            dtype=dtype,
        )
        if gram_from is not None:
            config = replace(config, gram=_shared_gram_mode(gram_from, data, config.backend))
        self._build(net, data, config, placements.over(comm), None, progress, gram_from)
        scale = _far_scale(data)
        if scale is not None and self._placement.speaks:
            warnings.warn(scale.warning(), UserWarning, stacklevel=2)

    @classmethod
    def from_state(cls, net: TwoLayerNet, data: KronPoints, state: TrainerState, comm: Any = None) -> Trainer:
        """A trainer that continues from `state` (what :meth:`export_state`
        returned, or a checkpoint held): bitwise the run that was saved.

        Parameters
        ----------
        net : TwoLayerNet
            The net at the state's weights (for a sharded trainer: already
            sharded over `comm`, holding this rank's neurons).
        data : KronData or PairData
            The training points, with the state's targets.
        state : TrainerState
            The trainer's own state.
        comm : mpi4py.MPI.Comm, optional
            Continue sharded over this communicator (collective).

        Returns
        -------
        Trainer

        Raises
        ------
        ArgumentError
            The state does not fit the net and data: among others, a state
            exported by a trainer sharded over MPI ranks on a net held whole
            by this process (continue it with `comm`, or through a
            checkpoint).

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
        >>> net = kn.TwoLayerNet(data.dims, width=64)
        >>> tr = kn.Trainer(net, data, lr=20.0)
        >>> _ = tr.fit(10)
        >>> twin_net = kn.TwoLayerNet.from_state(net.to_state())
        >>> twin = kn.Trainer.from_state(twin_net, data, tr.export_state())
        >>> bool(np.array_equal(twin.fit(5).loss, tr.fit(5).loss))
        True
        """
        trainer = cls.__new__(cls)
        trainer._build(
            net, data, state.config.unresolved(), net.placement if comm is None else placements.over(comm), state
        )
        return trainer

    def _build(
        self,
        net: TwoLayerNet,
        data: KronPoints,
        config: TrainerConfig,
        placement: Placement,
        resume: Optional[TrainerState],
        progress: bool = False,
        gram_from: Optional[Trainer] = None,
    ) -> None:
        """Plans, checks and builds the core where `placement` puts the
        neurons. Collective under MPI: each phase runs locally and is agreed
        on before the next message, so a rank that refuses makes every rank
        raise instead of leaving the others waiting."""
        with _training(net, "Trainer()"):

            def plan_locally() -> Tuple[TrainerConfig, MemoryPlan]:
                if not isinstance(net, TwoLayerNet):
                    raise ArgumentTypeError("net", f"expected a TwoLayerNet, got {type(net).__name__}")
                _check_data(data, net, "data", loss=config.loss)
                if net.placement.sharded and net.placement.comm is not placement.comm:
                    other = " of another communicator than comm=" if placement.sharded else ""
                    raise ArgumentError(
                        "net",
                        f"this net's neurons are sharded over {net.placement.size} MPI "
                        f"rank{'s' if net.placement.size != 1 else ''}{other} (a Trainer with comm= trained it; "
                        f"this rank holds {net.placement.neurons(net.width)[1]} of its {net.width}); train it with "
                        "Trainer(..., comm=...) on the same communicator, or gather() it first "
                        "(net.gather() on every rank) and train the whole net in one process",
                    )
                if resume is not None:
                    _check_resumed_neurons(resume, config, net, placement)
                if placement.sharded and config.backend != "kron":
                    raise ArgumentError(
                        "backend", f"only the Kronecker backend can be sharded (comm=), got {config.backend!r}"
                    )
                if gram_from is not None and gram_from.comm is not placement.comm:
                    raise ArgumentError("gram_from", "is sharded over another communicator than this trainer (comm=)")
                if config.batch_size > data.n:
                    raise ArgumentError("batch_size", f"{config.batch_size} exceeds the {data.n} training points")
                if resume is not None and not 0 <= resume.steps_done <= MAX_STEPS:
                    raise ArgumentError(
                        "state.steps_done",
                        f"must be in [0, 2**63 - 1] (the step counter is an int64), got {resume.steps_done}",
                    )
                resolved = config.resolved(data.n, net.width, net.threshold)
                held = placement.neurons(net.width)[1]
                memory = trainer_memory(net, data, resolved, held, shared_gram=gram_from is not None)
                where = " of this rank" if placement.sharded else ""
                v.ensure_fits(memory.estimate, memory.what + where, "data, net.width")
                return resolved, memory

            config, _ = placement.run(plan_locally)
            # Every rank must train the same net on the same data the same way,
            # or their shards would silently belong to different models.
            placement.agree(
                net=(net.dims, net.width, net.seed, net.init, net.init_rank, net.threshold, net.sharded),
                data=data,
                config=config.to_dict(),
                steps_done=None if resume is None else resume.steps_done,
            )

            def build_locally() -> Any:
                net.shard(placement)
                first, count = placement.neurons(net.width)
                # Rank 0's bar stands for all: the shards are alike in size.
                with PointsBar(progress and resume is None and placement.speaks, data.n, count, "init") as bar:
                    return _make_core(
                        config,
                        net,
                        data,
                        resume,
                        (first, count),
                        progress=bar.callback,
                        gram_from=None if gram_from is None else gram_from._core,
                    )

            core = placement.run(build_locally)
            self._placement = placement
            self._config = config
            self._net = net
            self._data = data
            self._core = core
            # (A resumed state's p_bound is the whole net's already: the max over
            # ranks that a sharded runner takes leaves it as it is.)
            self._runner: StepRunner = placement.runner(core, data.n, net.width)
            self._sampler = BatchSampler(data.n, config.batch_size, config.seed)
            self._steps = 0
            if resume is not None:
                self._sampler.set_state(resume.sampler)
                self._steps = resume.steps_done
            self._revision = net.revision

    @staticmethod
    def estimate_memory(
        net: TwoLayerNet,
        data: KronPoints,
        backend: Backend = "kron",
        index: IndexKind = "auto",
        gram: GramMode = "auto",
        gram_budget_bytes: int = GRAM_BUDGET_BYTES,
        dtype: DtypeName = "float64",
    ) -> int:
        """Peak bytes a Trainer on (net, data) allocates, before building it.

        Kronecker backend: P (8 n m, or 4 n m in float32), the coefficient block when the net has
        none for these points yet (8 n m), the Gram (8 n^2 when
        precomputed), the index (``bits``: n m / 4 bytes; ``tree``: about
        8 n m / 7), a copy of the factors, and the largest transient (init's
        per-thread buffers, a trained block's cross-Gram). Dense backend:
        X (8 n d), W (8 m d), the block, one trained block's X, a full
        loss's preactivations of one block of points (about 1 MiB), a step's
        new rows of W (``|R|`` × d, ``|R|`` <= S q m) and ``DENSE_THREAD_BYTES`` per
        worker thread for the matrix products' own buffers. Both add
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
        dtype : {"float64", "float32"}, default "float64"
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
        if not isinstance(net, TwoLayerNet):
            raise ArgumentTypeError("net", f"expected a TwoLayerNet, got {type(net).__name__}")
        if not isinstance(data, KronPoints):
            raise ArgumentTypeError("data", f"expected a KronData or PairData, got {type(data).__name__}")
        if data.n == 0 or data.dims != net.dims:
            raise ArgumentError("data", f"has {data.n} points of dims {data.dims}; the net expects dims {net.dims}")
        config = TrainerConfig(1.0, 1, index, backend, 0, gram, gram_budget_bytes, dtype=dtype)
        resolved = config.resolved(data.n, net.width, net.threshold)
        with net.guard.reading("Trainer.estimate_memory()"):
            return trainer_memory(net, data, resolved, net.placement.neurons(net.width)[1]).estimate

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
            The file is truncated, corrupted, not a checkpoint, of an
            unsupported format version, or its parts do not fit together.
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
        placement = placements.over(comm)
        placement.agree(path=placement.run(lambda: checkpoint_file.checked_path(path)))
        net, data, state = placement.run(lambda: checkpoint_file.read(path, placement))
        trainer = cls.__new__(cls)
        try:
            trainer._build(net, data, state.config.unresolved(), placement, state)
        except (ValueError, TypeError) as exc:
            # The file's parts are each valid but do not fit together (a
            # bound the core refuses, settings the data cannot take...): a
            # fault of the file, not of an argument.
            if isinstance(exc, (FileFormatError, RankMismatchError)):
                raise
            raise FileFormatError(os.fspath(path), f"inconsistent contents: {exc}") from None
        return trainer

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
        with self._net.guard.training("Trainer.checkpoint()"):
            self._placement.run(self._check_current)
            self._placement.agree(path=checkpoint_file.checked_path(path))
            # Agreed first: a rank that cannot copy out its state must not leave
            # the others waiting for its rows.
            net_state, state = self._placement.run(lambda: (self._net.to_state(whole=False), self.export_state()))
            checkpoint_file.write(path, net_state, state, self._placement)

    def export_state(self) -> TrainerState:
        """Everything this trainer alone knows, as plain values and arrays:
        its settings, step count, the sampler's position and generator
        state, its targets, the core's state (Pᵀ of the neurons this
        process holds and the overflow guard's bound for the Kronecker
        backend, W for the dense one) and which of the net's blocks it
        trains. With the net's state it continues training bitwise
        (:meth:`from_state`).

        Returns
        -------
        TrainerState
            Copies, independent of the trainer.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
        >>> tr = kn.Trainer(kn.TwoLayerNet(data.dims, width=64), data, lr=20.0)
        >>> _ = tr.fit(5)
        >>> state = tr.export_state()
        >>> state.steps_done, state.core.state.shape
        (5, (64, 32))
        """
        with self._net.guard.training("Trainer.export_state()"):
            core = self._core.export_state()
            block = next(j for j, blk in enumerate(self._net.coefficients) if blk is self._net.find_block(self._data))
            assert self._data.y is not None  # checked when the trainer was built
            return TrainerState(
                config=self._config,
                steps_done=self._steps,
                sampler=self._sampler.state(),
                core=CoreState(state=core["state"], bounds=core.get("bounds"), linear=core.get("linear")),
                block=block,
                y=np.array(self._data.y),
            )

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
    def config(self) -> TrainerConfig:
        """The settings, with "auto" resolved (:class:`~kronnet.training.TrainerConfig`)."""
        return self._config

    @property
    def lr(self) -> float:
        """The learning rate; may be set between steps (a positive float, or
        "auto" for :func:`suggest_lr` of the net and batch size)."""
        return self._config.lr

    @lr.setter
    def lr(self, value: Union[float, Literal["auto"]]) -> None:
        self._config = replace(self._config, lr=_auto_lr(value, self._net, self._config.batch_size))

    @property
    def batch_size(self) -> int:
        """S, the batch size."""
        return self._config.batch_size

    @property
    def backend(self) -> str:
        """The backend: "kron" or "dense"."""
        return self._config.backend

    @property
    def index(self) -> str:
        """The activated-neuron index in use ("scan", "tree", "bits"; "none"
        for the dense backend)."""
        return self._config.index

    @property
    def gram(self) -> str:
        """How steps get Gram columns ("precomputed", "columns"; "none" for
        the dense backend)."""
        return self._config.gram

    @property
    def seed(self) -> int:
        """The seed of the batch order."""
        return self._config.seed

    @property
    def steps_done(self) -> int:
        """Steps taken so far."""
        return self._steps

    @property
    def comm(self) -> Any:
        """The mpi4py communicator the net is sharded over, or None."""
        return self._placement.comm

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
        with self._net.guard.training("Trainer.next_batch()"):
            return self._sampler.draw()

    # -- training -----------------------------------------------------------

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
        with self._net.guard.training("Trainer.comm_stats()"):
            return self._runner.comm_stats()

    def _rates_at(self, t: int) -> Tuple[float, float, float, float, float]:
        """Step t's rates: the settings' times the schedule's factor."""
        phi = factors(self._config.schedule, t, 1)
        rates = self._config.rates
        return (
            rates
            if phi is None
            else (
                rates[0] * phi[0],
                rates[1] * phi[0],
                rates[2] * phi[0],
                rates[3] * phi[0],
                rates[4] * phi[0],
            )
        )

    def _check_current(self) -> None:
        if self._net.revision != self._revision:
            raise StaleTrainerError(
                "net: its weights were changed by another Trainer since this one last ran; "
                "create a new Trainer to continue training from the current weights"
            )

    def _check_room(self, count: Optional[int], arg: str) -> None:
        """Refuses `count` more steps (None: more than any int64) when
        steps_done would pass :data:`MAX_STEPS` (the step counter is an
        int64)."""
        room = MAX_STEPS - self._steps
        if count is None or count > room:
            many = "more than 2**63 - 1" if count is None else str(count)
            raise ArgumentError(
                arg,
                f"{many} more step{'' if count == 1 else 's'} would take steps_done from {self._steps} past "
                f"2**63 - 1 = {MAX_STEPS}, the limit of the step counter (int64); at most {room} more fit",
            )

    def _committed(self, steps: int) -> None:
        self._steps += steps
        self._revision = self._net.revision

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
            An index of `batch` is out of range, `batch` is empty, or
            :attr:`steps_done` is already 2**63 - 1, the step counter's limit.
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
        with self._net.guard.training("Trainer.step()"):
            self._check_current()
            self._check_room(1, "steps_done")
            if batch is None:
                before = self._sampler.state()
                b = self._sampler.draw()
            else:
                before = None
                b = self._placement.run(lambda: v.index_array(batch, "batch", self._data.n))
                self._placement.agree(batch=b)
            try:
                loss, _, _ = self._runner.step(b, self._rates_at(self._steps))
            except BaseException as exc:
                if before is not None:
                    self._sampler.set_state(before)
                _explain_divergence(exc, self._data)
                raise
            self._committed(1)
            return float(loss)

    def fit(
        self,
        steps: int,
        progress: bool = False,
        eval_every: int = 0,
        validation: Optional[KronPoints] = None,
        patience: Optional[int] = None,
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
        patience : int, optional
            Early stopping: end the fit once this many validation losses in
            a row (one every `eval_every` steps) have not been lower than
            the lowest so far, and in any case go back to the step of the
            lowest one (counting the loss before the first step), as if
            restored from a checkpoint taken then: the net's weights, the
            step count and the sampler's position
            (:attr:`History.best_step`, :attr:`History.stopped_early`).
            Needs `validation` and `eval_every`. Keeps one copy of the
            training state (P and the coefficients) for the best step.

        Returns
        -------
        History
            Per-step losses and fired-neuron counts.

        Raises
        ------
        ArgumentError
            `validation` has no targets, no points, non-finite targets or
            other dims than the net, `patience` is not positive or lacks
            `validation` and `eval_every`, or `steps` would take
            :attr:`steps_done` past 2**63 - 1, the step counter's limit
            (checked before any step).
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

        Early stopping goes back to the step of the lowest validation loss:

        >>> hist = tr.fit(2000, eval_every=50, validation=held_out, patience=3)
        >>> best = min(hist.val_loss, key=lambda sv: sv[1])
        >>> hist.best_step == best[0] == tr.steps_done
        True
        """
        with self._net.guard.training("Trainer.fit()"):

            def check() -> Tuple[int, int, bool, Optional[KronPoints], Optional[int]]:
                self._check_current()
                out = (
                    v.positive_int(steps, "steps"),
                    v.nonnegative_int(eval_every, "eval_every"),
                    v.flag(progress, "progress"),
                    _validation_set(validation, self._net, self._config.loss),
                    None if patience is None else v.positive_int(patience, "patience"),
                )
                self._check_room(out[0], "steps")
                if out[4] is not None and (out[3] is None or out[1] == 0):
                    raise ArgumentError(
                        "patience", "early stopping needs validation= (held-out points) and eval_every > 0"
                    )
                return out

            n_steps, every, shown, val, wait = self._placement.run(check)
            self._placement.agree(steps=n_steps, eval_every=every, validation=val, patience=wait)
            # Sharded, Ctrl-C must stop every rank after the same step: it only
            # sets a flag that the next step's message carries to all ranks.
            with self._runner.interrupts():
                return self._fit(n_steps, every, shown, val, wait)

    def _fit(
        self, steps: int, eval_every: int, progress: bool, val: Optional[KronPoints], patience: Optional[int]
    ) -> History:
        start = time.perf_counter()
        parts: List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        checkpoints: List[Tuple[int, float]] = []
        val_checkpoints: List[Tuple[int, float]] = []
        bar: Any = None
        postfix: Dict[str, str] = {}
        watch = None if patience is None else EarlyStopping(patience, self._snapshot)

        def checkpoint() -> bool:
            """Records the losses; True when early stopping ends the fit."""
            # Both losses first, then both records: an interrupt in between
            # leaves the two lists with the same steps.
            loss = self.full_loss()
            val_loss = None if val is None else _validation_loss(self._net, val, self._config.loss)
            checkpoints.append((self._steps, loss))
            if val_loss is not None:
                val_checkpoints.append((self._steps, val_loss))
                postfix["val_loss"] = f"{val_loss:.3e}"
                if bar is not None:
                    bar.set_postfix(postfix)
                if watch is not None:
                    return watch.observe(self._steps, val_loss)
            return False

        checkpoint()
        # Steps run in Rust in chunks: no Python between steps, the GIL
        # released, and still a live progress bar and checkpoints. At least
        # MIN_CHUNK steps a call: a call costs about 0.2 ms besides its
        # steps, as much as a step at digits' size (m = 1024), whose
        # estimator epochs of 162 steps ran one step a call (1600 steps as
        # 10 fits of 160 took 1.7-1.9x as long as one fit of 1600).
        chunk = min(steps, max(MIN_CHUNK, min(steps // 100, 256)))
        bar = steps_bar(steps, progress and self._placement.speaks)
        done, stopped = 0, False
        try:
            try:
                while done < steps and not stopped:
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
                        stopped = checkpoint()
            except (DivergenceError, KeyboardInterrupt) as exc:
                # Wherever it landed (in Rust between two steps, or in Python
                # between two chunks), the trainer is at a step boundary:
                # report the steps this call took with the exception.
                checkpoint()
                exc.history = from_runs(  # type: ignore[union-attr]
                    parts, checkpoints, time.perf_counter() - start, val_checkpoints
                )
                _explain_divergence(exc, self._data)
                raise
            if not stopped:
                checkpoint()  # the last one, while the bar still shows
        finally:
            if bar is not None:
                bar.close()
        best_step = None
        if watch is not None:
            best_step = watch.best_step
            if best_step != self._steps:
                self._go_back(watch.best)
        return from_runs(parts, checkpoints, time.perf_counter() - start, val_checkpoints, best_step, stopped)

    def _snapshot(self) -> Tuple[NetState, TrainerState]:
        """Copies of the net's and this trainer's state (this rank's part)."""
        return self._net.to_state(whole=False), self.export_state()

    def _go_back(self, snapshot: Tuple[NetState, TrainerState]) -> None:
        """Returns the net and this trainer to a `_snapshot` of this run, as
        a restore from a checkpoint taken then would."""
        net_state, state = snapshot
        self._net.load_state(net_state)
        # The old core's state goes before the new one is built, so the
        # peak is the snapshot plus one core, as while training.
        self._core = self._runner = None  # type: ignore[assignment]
        self._build(self._net, self._data, state.config.unresolved(), self._placement, state)

    def _run_chunk(self, k: int, parts: List[Any]) -> Tuple[int, Optional[BaseException]]:
        """Draws k batches and runs them in Rust. On an early stop the sampler
        is put back to the first step not taken, so a retry draws it again."""
        before, taken = self._sampler.state(), self._runner.steps_taken
        err, recorded = None, len(parts)
        offsets = np.zeros(k + 1, dtype=np.int64)
        try:
            batches = [self._sampler.draw() for _ in range(k)]
            np.cumsum([b.shape[0] for b in batches], out=offsets[1:])
            loss, union, total, err = self._runner.run(
                np.concatenate(batches), offsets, self._config.rates, factors(self._config.schedule, self._steps, k)
            )
            parts.append((loss, union, total, np.diff(offsets)[: loss.shape[0]]))
        finally:
            # Counted and kept by the core, so the count and the history are
            # right even when Ctrl-C lands in Python just after the run.
            ran = self._runner.steps_taken - taken
            if ran and len(parts) == recorded:
                loss, union, total = self._runner.last_run()
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
        with self._net.guard.training("Trainer.index_stats()"):
            if self._config.backend != "kron":
                return {}
            out: Dict[str, float] = dict(self._core.index_stats)
            out["seconds"] = float(self._core.index_seconds)
            out["memory_bytes"] = int(self._core.index_memory_bytes)
            return out

    def update_stats(self) -> Dict[str, float]:
        """The work of the steps' update of P (their n × S × ``|R|`` product) so far.

        Returns
        -------
        dict of str to float
            ``seconds`` spent in it and its nominal ``flops``
            (2 · n · S · ``|R|`` per step). Empty for the dense backend.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
        >>> tr = kn.Trainer(kn.TwoLayerNet(data.dims, width=64), data, lr=20.0)
        >>> _ = tr.fit(10)
        >>> sorted(tr.update_stats())
        ['flops', 'seconds']
        """
        with self._net.guard.training("Trainer.update_stats()"):
            if self._config.backend != "kron":
                return {}
            seconds, flops = self._core.update_work
            return {"seconds": float(seconds), "flops": float(flops)}

    def run(self, batches: Sequence[Any]) -> History:
        """One SGD step per batch of `batches`, in order, with no Python
        between the steps and no loss evaluated: what :meth:`fit` does
        between its checkpoints, on batches of your choosing.

        Parameters
        ----------
        batches : sequence of array_like of int
            Each a non-empty 1-D array of indices into the training data
            (repeats allowed; they accumulate).

        Returns
        -------
        History
            The steps' batch losses and fired counts (``full_loss`` empty).

        Raises
        ------
        ArgumentError
            A batch is empty or has an index out of range, or there are
            more batches than steps left before :attr:`steps_done` reaches
            2**63 - 1.
        DivergenceError
            A step would be non-finite; the steps before it stay applied
            and ``exc.history`` holds them.
        StaleTrainerError
            Another trainer changed the net since this one last ran.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
        >>> tr = kn.Trainer(kn.TwoLayerNet(data.dims, width=64), data, lr=20.0)
        >>> hist = tr.run([[0, 1], [2, 3, 3]])
        >>> hist.steps, hist.batch_sizes.tolist(), tr.steps_done
        (2, [2, 3], 2)
        """
        with self._net.guard.training("Trainer.run()"):

            def check() -> Tuple[np.ndarray, np.ndarray]:
                self._check_current()
                if isinstance(batches, (str, bytes)) or not hasattr(batches, "__len__"):
                    raise ArgumentTypeError(
                        "batches", f"expected a sequence of index arrays, got {type(batches).__name__}"
                    )
                self._check_room(_length(batches), "batches")
                drawn = [v.index_array(b, f"batches[{t}]", self._data.n) for t, b in enumerate(batches)]
                offsets = np.zeros(len(drawn) + 1, dtype=np.int64)
                np.cumsum([b.shape[0] for b in drawn], out=offsets[1:])
                return (np.concatenate(drawn) if drawn else np.empty(0, dtype=np.int64)), offsets

            indices, offsets = self._placement.run(check)
            self._placement.agree(batches=(indices, offsets))
            start = time.perf_counter()
            if offsets.shape[0] == 1:
                return from_runs([], [], 0.0)
            taken = self._runner.steps_taken
            schedule = factors(self._config.schedule, self._steps, offsets.shape[0] - 1)
            loss, union, total, err = self._runner.run(indices, offsets, self._config.rates, schedule)
            ran = self._runner.steps_taken - taken
            self._committed(ran)
            hist = from_runs([(loss, union, total, np.diff(offsets)[:ran])], [], time.perf_counter() - start)
            if err is not None:
                err.history = hist  # type: ignore[attr-defined]
                _explain_divergence(err, self._data)
                raise err
            return hist

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
        with self._net.guard.training("Trainer.full_loss()"):
            return self._runner.full_loss()

    def __repr__(self) -> str:
        return (
            f"Trainer(backend={self.backend!r}, index={self.index!r}, lr={self.lr:g}, "
            f"batch_size={self.batch_size}, n={self._data.n}, width={self._net.width}, steps_done={self._steps})"
        )


#: Fewest steps one call into the core runs (fewer only when fewer are
#: asked for); see `Trainer._fit`.
MIN_CHUNK = 16
#: Training points whose median norm lies outside this range are far from
#: the unit norm the model's threshold and :func:`suggest_lr` assume: a
#: Trainer warns, and a divergence names the input scale first.
UNIT_NORM_RANGE = (0.5, 2.0)
#: The median norm is taken over at most this many points, evenly spaced.
NORM_SAMPLE = 4096


class _Scale:
    """Training points' median norm, when it is far from 1."""

    def __init__(self, median: float) -> None:
        self.median = median

    def advice(self) -> str:
        fix = "data.normalized() (every point to unit norm)"
        if self.median > 0:
            fix += f" or data.scaled({1.0 / self.median:.3g}) (the median to 1)"
        return fix

    def warning(self) -> str:
        lo, hi = UNIT_NORM_RANGE
        return (
            f"data: the training points' median norm is {self.median:.3g}, far from 1 (outside [{lo:g}, {hi:g}]); "
            "the model's threshold and suggest_lr assume unit-norm points, so the learning rate and the "
            f"fraction of neurons that fire are off scale. Train on {self.advice()}"
        )

    def divergence(self) -> str:
        return (
            f"the training points' median norm is {self.median:.3g}, far from 1: the model and suggest_lr "
            f"assume unit-norm points, and a step at this input scale overshoots; train on {self.advice()} "
            "rather than only lowering the learning rate. Diverged: "
        )


def _far_scale(data: KronPoints) -> Optional[_Scale]:
    """The points' median norm, if outside :data:`UNIT_NORM_RANGE` (from at
    most :data:`NORM_SAMPLE` points, the factors' norms only: O(sample ·
    sum d_k))."""
    sample = data if data.n <= NORM_SAMPLE else data.take(np.linspace(0, data.n - 1, NORM_SAMPLE).astype(np.int64))
    median = float(np.median(sample.norms()))
    lo, hi = UNIT_NORM_RANGE
    return None if lo <= median <= hi else _Scale(median)


def _explain_divergence(exc: BaseException, data: KronPoints) -> None:
    """Puts the input scale first in a DivergenceError's message when the
    training points are far from unit norm (the likely cause)."""
    if not isinstance(exc, DivergenceError) or "median norm" in str(exc):
        return
    scale = _far_scale(data)
    if scale is not None:
        exc.args = (scale.divergence() + str(exc),)


def _length(batches: Any) -> Optional[int]:
    """len(batches), or None when the length does not even fit a C
    ssize_t (``range(2**70)``)."""
    try:
        return len(batches)
    except OverflowError:
        return None


def _auto_lr(lr: Any, net: Any, batch_size: Any) -> Any:
    """`lr`, with "auto" resolved to ``suggest_lr(net, batch_size)`` (the
    other values are checked by TrainerConfig)."""
    if not (isinstance(lr, str) and lr == "auto"):
        return lr
    if not isinstance(net, TwoLayerNet):
        raise ArgumentTypeError("net", f"expected a TwoLayerNet, got {type(net).__name__}")
    return suggest_lr(net, batch_size)


def _check_resumed_neurons(state: TrainerState, config: TrainerConfig, net: TwoLayerNet, placement: Placement) -> None:
    """A Kronecker trainer's state (Pᵀ of the neurons its process held)
    continues only where this process holds as many of the net's neurons:
    a shard's state on a whole net, or a whole state on a shard, is refused
    here, naming the cause, instead of by the core's shape check."""
    if config.backend != "kron":
        return
    rows, (first, held) = int(np.shape(state.core.state)[0]), placement.neurons(net.width)
    if rows == held:
        return
    if rows < net.width:
        what = f"one MPI rank's shard of a trainer sharded over MPI ranks ({rows} of the net's {net.width} neurons)"
    else:
        what = f"a single-process trainer's state of all {net.width} neurons"
    here = (
        f"this rank of {placement.size} holds neurons {first}..{first + held - 1}"
        if placement.sharded
        else f"this process holds all {net.width}"
    )
    raise ArgumentError(
        "state",
        f"is {what}, but {here}: a state exported by a sharded trainer continues only with "
        "Trainer.from_state(net, data, state, comm=...) on the net sharded the same way; to change the number "
        "of processes, go through a checkpoint (Trainer.checkpoint, then Trainer.restore(path, comm=...))",
    )


def _training(net: Any, what: str) -> ContextManager[None]:
    """The net's guard for `what`, a call that trains it (nothing for an
    argument that is not a net: the checks refuse it)."""
    if isinstance(net, TwoLayerNet):
        return net.guard.training(what)
    return contextlib.nullcontext()


def _make_core(
    config: TrainerConfig,
    net: TwoLayerNet,
    data: KronPoints,
    resume: Optional[TrainerState],
    neurons: Tuple[int, int],
    progress: Any = None,
    gram_from: Any = None,
) -> Any:
    """The core for the resolved `config`: from the net's current weights,
    or from a saved state (`resume`); for `neurons` = (first, count) of the
    net (every neuron in one process), which the net's head holds."""
    assert data.y is not None  # checked by _check_data
    block = net.block_for(data)
    state = linear = bounds = None
    if resume is not None:
        state, linear = resume.core.state, resume.core.linear
        bounds = resume.core.bounds
    # The plan resolved every "auto"; the dense backend ignores the index
    # and Gram mode (the core still parses a valid name).
    backend = cast(Backend, config.backend)
    gram = cast(Literal["precomputed", "columns"], config.gram if config.gram != NONE else "precomputed")
    index = cast(Literal["scan", "tree", "bits"], config.index if config.index != NONE else "scan")
    return _core.TrainerCore(
        backend,
        data.core_layout,
        data.y,
        net.head,
        net.core_init,
        block.storage,
        net.core_blocks(),
        gram,
        index,
        loss=cast(LossName, config.loss),
        ridge=config.ridge,
        state=state,
        linear=linear,
        bounds=bounds,
        progress=progress,
        gram_from=gram_from,
        dtype=config.dtype,
    )


def _check_data(
    data: Any,
    net: TwoLayerNet,
    name: str,
    need: str = "training needs data with targets, e.g. KronData(factors, y)",
    loss: str = "squared",
) -> None:
    """`data` can train `net` on `loss`: a data set with at least one point,
    the net's dims and targets that fit the loss and the net's outputs
    (`need` says why targets are needed, for the message)."""
    if not isinstance(data, KronPoints):
        raise ArgumentTypeError(name, f"expected a KronData or PairData, got {type(data).__name__}")
    if data.y is None:
        raise ArgumentError(name, f"has no targets y; {need}")
    if data.n == 0:
        raise ArgumentError(name, "has no points")
    if data.dims != net.dims:
        raise ArgumentError(name, f"has factor dimensions {data.dims}, the net expects {net.dims}")
    check_targets(data.y, net.outputs, loss, f"{name}.y")


def check_targets(y: np.ndarray, outputs: int, loss: str, name: str = "y") -> None:
    """Refuses targets that do not fit `loss` on a net of `outputs` outputs,
    naming the problem: a shape that is not (n,) or (n, C), logistic
    targets other than 0 and 1, labels that are not integers in [0, C), a
    loss that does not fit C, or |y| beyond what training can fit."""
    c = outputs
    if loss == "logistic" and c != 1:
        raise ArgumentError("loss", f'"logistic" needs a net with outputs=1, this one has {c}')
    if loss == "cross_entropy" and c < 2:
        raise ArgumentError("loss", f'"cross_entropy" needs a net with outputs >= 2 (one per class), got {c}')
    want = (y.shape[0],) if loss != "squared" or c == 1 else (y.shape[0], c)
    if y.shape != want:
        what = "one target per point" if len(want) == 1 else f"{c} targets per point"
        raise ArgumentError(name, f"has shape {y.shape}; the {loss} loss on {c} output(s) needs {want} ({what})")
    if loss == "logistic":
        bad = np.flatnonzero((y != 0) & (y != 1))
        if bad.size:
            raise ArgumentError(name, f"target {int(bad[0])} is {y[bad[0]]:g}; the logistic loss needs targets 0 or 1")
    elif loss == "cross_entropy":
        bad = np.flatnonzero((y != np.round(y)) | (y < 0) | (y >= c))
        if bad.size:
            raise ArgumentError(
                name, f"label {int(bad[0])} is {y[bad[0]]:g}; cross-entropy needs integer labels in [0, {c})"
            )
    v.trainable_targets(y.reshape(-1), name)


def _shared_gram_mode(gram_from: Any, data: Any, backend: Any) -> str:
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


def _validation_set(validation: Any, net: TwoLayerNet, loss: str) -> Optional[KronPoints]:
    """Checks `fit`'s validation argument: None or a data set with targets
    that fit `loss`, at least one point and the net's dims."""
    if validation is None:
        return None
    _check_data(validation, net, "validation", "the validation loss needs targets", loss)
    return validation  # type: ignore[no-any-return]


def _validation_loss(net: TwoLayerNet, data: KronPoints, loss: str) -> float:
    """The mean loss over the q points of `data` (the trainer's loss)."""
    assert data.y is not None  # checked by _validation_set
    try:
        pred = net.predict(data)
    except ArgumentError:
        # The points were checked by _validation_set: the predictions
        # overflow float64, near a divergence. The loss is then infinite,
        # and fit goes on to report the DivergenceError, not this.
        return float("inf")
    return float(_core.mean_loss(loss, pred.reshape(data.n, -1), np.asarray(data.y).reshape(data.n, -1)))
