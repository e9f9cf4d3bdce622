"""Where a net's neurons live: the protocol every placement implements, and
the placement of a net held whole by one process.

A net and its trainers never ask whether they are sharded. Everything that
differs between one process and neurons spread over MPI ranks — which
neurons this process holds, how an output sum is completed, how a file is
written, how a run of steps exchanges its figures, how a failure or a
Ctrl-C reaches every process — is a method of the net's :class:`Placement`.
A net starts with :data:`ONE_PROCESS`; a :class:`~kronnet.Trainer` built
with ``comm=`` moves it to a :class:`~kronnet.placement.mpi.ShardedPlacement`
once (docs/mpi.md), and from then on every collective method of the net and
its trainers goes through that object.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Dict, Optional, Protocol, Tuple, TypeVar

import numpy as np

from .. import _core, fileformat

T = TypeVar("T")

#: int64 words of one exact sum (an output's terms, summed without rounding).
EXACT_WORDS: int = int(_core.EXACT_WORDS)

#: One step run's figures: batch losses, |R| and sum |A_i| per step, and the
#: exception that ended the run early (or None).
RunFigures = Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[BaseException]]
#: A step's learning rates: (lr, lr_a, lr_b, lr_c, lr_v).
Rates = Tuple[float, float, float, float, float]


class StepRunner(Protocol):
    """Runs one trainer's steps on its core where the net's neurons live.

    Made by :meth:`Placement.runner` for each trainer; holds what a run needs
    besides the core (for a sharded trainer: the communicator, the bytes and
    seconds of its messages, and whether a rank failed mid-step).
    """

    @property
    def steps_taken(self) -> int:
        """Steps the core has applied so far."""
        ...

    def step(self, batch: np.ndarray, rates: Rates) -> Tuple[float, int, int]:
        """One step on `batch` at `rates` (lr, lr_a, lr_b, lr_c, lr_v):
        (loss, |R|, sum |A_i|); raises on failure."""
        ...

    def run(self, indices: np.ndarray, offsets: np.ndarray, rates: Rates, factors: Optional[np.ndarray]) -> RunFigures:
        """Steps on ``indices[offsets[t]:offsets[t + 1]]``, step t at `rates`
        times ``factors[t]`` (a schedule's values) when given, never raising
        for a step's failure (it is returned) so the caller can record the
        steps taken first."""
        ...

    def last_run(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The figures of the steps the last :meth:`run` took."""
        ...

    def full_loss(self) -> float:
        """The full training loss."""
        ...

    def interrupts(self) -> ContextManager[Any]:
        """A context in which Ctrl-C stops every process after the same step."""
        ...

    def comm_stats(self) -> Dict[str, float]:
        """Seconds and bytes of the steps' messages (empty for one process)."""
        ...


class Placement(Protocol):
    """Where a net's neurons live, and how collective work is done there."""

    #: The mpi4py communicator, or None for one process.
    comm: Any
    #: This process's rank and the number of processes.
    rank: int
    size: int

    @property
    def sharded(self) -> bool:
        """Whether the neurons are spread over the ranks of a communicator."""
        ...

    @property
    def speaks(self) -> bool:
        """Whether this process shows progress bars and prints (rank 0)."""
        ...

    def neurons(self, width: int) -> Tuple[int, int]:
        """The neurons of a net this process holds.

        Parameters
        ----------
        width : int
            m, the net's neurons.

        Returns
        -------
        (int, int)
            (first, count): neurons ``first .. first + count - 1``.
        """
        ...

    def run(self, fn: Callable[[], T]) -> T:
        """Collective: ``fn()`` on every process, failing together.

        Parameters
        ----------
        fn : callable
            Local work (checks, reading a file, building a state).

        Returns
        -------
        object
            What `fn` returned on this process. If it raised on any process,
            every process raises (the others the lowest failing rank's
            exception).
        """
        ...

    def agree(self, **values: Any) -> None:
        """Collective: checks that every process passed equal arguments.

        Parameters
        ----------
        **values : object
            Argument name -> value, compared by digest
            (:func:`kronnet.placement.digest.digest`).

        Raises
        ------
        RankMismatchError
            On every process, naming the first argument (in the order
            given) that differs and which ranks passed which.
        """
        ...

    def max(self, value: float) -> float:
        """Collective: the largest `value` of any process.

        Parameters
        ----------
        value : float
            This process's value.

        Returns
        -------
        float
            The maximum over the processes.
        """
        ...

    def outputs(
        self,
        here: Callable[[], np.ndarray],
        words: Callable[[], np.ndarray],
        finish: Callable[[int, np.ndarray], np.ndarray],
    ) -> np.ndarray:
        """Collective: the net's outputs at q points.

        Parameters
        ----------
        here : callable
            The outputs computed by a process holding every neuron, (q, C).
        words : callable
            This process's exact sums over its neurons, (q, k) int64 (k =
            C · EXACT_WORDS), for a placement that must add every process's.
        finish : callable
            ``finish(start, summed)``: the outputs (k', C) of points
            start .. start + k' from their summed words (k', k).

        Returns
        -------
        ndarray of shape (q, C)
            The same bits on every process, and the same as one process.
        """
        ...

    def gather_rows(self, part: np.ndarray, root: Optional[int] = None) -> Optional[np.ndarray]:
        """Collective: a per-neuron array whole, from every process's rows.

        Parameters
        ----------
        part : ndarray of shape (count, ...)
            This process's neurons' rows.
        root : int, optional
            The only rank that receives the array; None: every rank does.

        Returns
        -------
        ndarray of shape (m, ...) or None
            The rows of every process in rank order (neuron order); None on
            ranks other than `root`.
        """
        ...

    def write_file(
        self, path: Any, kind: str, meta: Dict[str, Any], arrays: Dict[str, np.ndarray], rows: Dict[str, np.ndarray]
    ) -> None:
        """Collective: writes one kronnet file (``kronnet.fileformat``).

        Parameters
        ----------
        path : str or os.PathLike
            The file (replaced atomically).
        kind : str
            "net" or "checkpoint".
        meta : dict
            The JSON fields.
        arrays : dict of str to ndarray
            Members every process holds alike.
        rows : dict of str to ndarray
            Members with one row per neuron: this process's rows, written
            with every process's in neuron order.
        """
        ...

    def runner(self, core: Any, n: int, width: int) -> StepRunner:
        """The runner of a new trainer's steps.

        Parameters
        ----------
        core : kronnet._core.TrainerCore
            The trainer's core, holding this process's neurons.
        n : int
            The training points.
        width : int
            m, the whole net's neurons.

        Returns
        -------
        StepRunner
            Runs the trainer's steps where the neurons live.
        """
        ...


class LocalRunner:
    """A trainer's steps in one process: straight calls into the core."""

    def __init__(self, core: Any) -> None:
        self._core = core

    @property
    def steps_taken(self) -> int:
        return int(self._core.steps_taken)

    def step(self, batch: np.ndarray, rates: Rates) -> Tuple[float, int, int]:
        loss, union, total = self._core.step(batch, rates)
        return float(loss), int(union), int(total)

    def run(self, indices: np.ndarray, offsets: np.ndarray, rates: Rates, factors: Optional[np.ndarray]) -> RunFigures:
        loss, union, total, err = self._core.run(indices, offsets, rates, factors)
        return loss, union, total, err

    def last_run(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        loss, union, total = self._core.last_run()
        return loss, union, total

    def full_loss(self) -> float:
        return float(self._core.full_loss())

    def interrupts(self) -> ContextManager[Any]:
        return contextlib.nullcontext()

    def comm_stats(self) -> Dict[str, float]:
        return {}


class LocalPlacement:
    """Every neuron in this process: collective calls are plain calls.

    Examples
    --------
    >>> from kronnet.placement import ONE_PROCESS
    >>> ONE_PROCESS.neurons(2048), ONE_PROCESS.sharded
    ((0, 2048), False)
    """

    comm: Any = None
    rank = 0
    size = 1

    @property
    def sharded(self) -> bool:
        return False

    @property
    def speaks(self) -> bool:
        return True

    def neurons(self, width: int) -> Tuple[int, int]:
        return 0, width

    def run(self, fn: Callable[[], T]) -> T:
        return fn()

    def agree(self, **values: Any) -> None:
        return None

    def max(self, value: float) -> float:
        return float(value)

    def outputs(
        self,
        here: Callable[[], np.ndarray],
        words: Callable[[], np.ndarray],
        finish: Callable[[int, np.ndarray], np.ndarray],
    ) -> np.ndarray:
        return here()

    def gather_rows(self, part: np.ndarray, root: Optional[int] = None) -> Optional[np.ndarray]:
        return part

    def write_file(
        self, path: Any, kind: str, meta: Dict[str, Any], arrays: Dict[str, np.ndarray], rows: Dict[str, np.ndarray]
    ) -> None:
        fileformat.write(path, kind, meta, {**arrays, **rows})

    def runner(self, core: Any, n: int, width: int) -> StepRunner:
        return LocalRunner(core)

    def __repr__(self) -> str:
        return "LocalPlacement()"


#: The placement of every net until a sharded trainer moves it.
ONE_PROCESS = LocalPlacement()
