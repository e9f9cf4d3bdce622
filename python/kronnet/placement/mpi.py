"""Neuron-sharded training over MPI (docs/mpi.md).

Rank q of K holds neurons ``[q m / K, (q + 1) m / K)`` of the net: their
columns of P, their coefficients, their part of the activation index. Every
rank holds the data (factors or entity tables) and the Gram, and draws the
same batches. A step sends one message: each rank's exact sums of its
neurons' terms of f(x_i) for the S batch points (``EXACT_WORDS`` int64 words
each), summed with one ``Allreduce``. Integer sums are associative, and the
words hold the terms' sum exactly, so every rank rounds the same total to
the same double whatever K is: a run on K ranks is bitwise the run on one
rank and the run of the single-process :class:`~kronnet.Trainer`.

Failures are collective too: a rank that raises makes every rank raise the
same exception (:meth:`ShardedPlacement.fail_together`), and Ctrl-C stops every rank after the
same step.
"""

from __future__ import annotations

import contextlib
import pickle
import signal
import threading
import time
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from .. import _core, fileformat
from ..errors import ArgumentError, ArgumentTypeError, RankMismatchError
from .base import Rates, RunFigures, StepRunner
from .digest import digest

T = TypeVar("T")
#: Points per ``Allreduce`` of output sums in ``full_loss`` and ``predict``
#: (about 2 MiB of words), so no rank holds the words of all points at once.
POINTS_PER_MESSAGE = 4096


#: Shards start at multiples of this many neurons: the core computes
#: products with the coefficients in blocks of it, and a shard made of whole
#: blocks runs the same products as one process, so it rounds the same.
NEURON_BLOCK: int = int(_core.NEURON_BLOCK)


def neuron_range(width: int, size: int, rank: int) -> Tuple[int, int]:
    """The neurons one rank of a sharded trainer holds.

    The B = ``ceil(width / NEURON_BLOCK)`` blocks of ``NEURON_BLOCK``
    neurons are split as evenly as possible: rank q of K holds blocks
    ``[q B / K, (q + 1) B / K)``.

    Parameters
    ----------
    width : int
        m, the net's neurons.
    size : int
        K, the communicator's ranks.
    rank : int
        q, this rank (0 <= q < K).

    Returns
    -------
    (int, int)
        (first, count): the rank holds neurons ``first .. first + count - 1``.

    Raises
    ------
    ArgumentError
        K exceeds B: some rank would get no block.

    Examples
    --------
    >>> from kronnet.placement.mpi import neuron_range
    >>> [neuron_range(2048, 3, q) for q in range(3)]
    [(0, 640), (640, 704), (1344, 704)]
    """
    blocks = -(-width // NEURON_BLOCK)
    if size > blocks:
        raise ArgumentError(
            "comm",
            f"has {size} ranks, but a net of width {width} has only {blocks} blocks of {NEURON_BLOCK} "
            "neurons to share (each rank needs at least one)",
        )
    first = NEURON_BLOCK * (blocks * rank // size)
    stop = min(width, NEURON_BLOCK * (blocks * (rank + 1) // size))
    return first, stop - first


class ShardedPlacement:
    """A net's neurons spread over the ranks of an mpi4py communicator
    (:class:`~kronnet.placement.Placement`).

    Rank q holds the neurons :func:`neuron_range` gives it; every collective
    method must be called by every rank, in the same order, with the same
    arguments (which :meth:`agree` checks where it matters).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        An intracommunicator; every rank of it must make the same calls.

    Raises
    ------
    ArgumentTypeError
        `comm` is not an mpi4py intracommunicator.
    ImportError
        mpi4py is not installed (``pip install "kronnet[mpi]"``).
    """

    def __init__(self, comm: Any) -> None:
        try:
            from mpi4py import MPI
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError('comm= needs mpi4py: pip install "kronnet[mpi]"') from e
        if not isinstance(comm, MPI.Intracomm):
            raise ArgumentTypeError("comm", f"expected an mpi4py intracommunicator, got {type(comm).__name__}")
        self.comm = comm
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()
        self._mpi = MPI

    @property
    def sharded(self) -> bool:
        return True

    @property
    def speaks(self) -> bool:
        return self.rank == 0

    def neurons(self, width: int) -> Tuple[int, int]:
        return neuron_range(width, self.size, self.rank)

    def fail_together(self, error: Optional[BaseException]) -> None:
        """Collective: raises on every rank if any rank passes an error.

        Each rank passes the exception it caught (or None). When any did,
        every rank raises: a failing rank its own exception, the others the
        exception of the lowest failing rank (same type and message, with a
        note naming that rank).
        """
        reports = self.comm.allgather(None if error is None else _portable(error))
        failed = [(r, e) for r, e in enumerate(reports) if e is not None]
        if not failed:
            return
        if error is not None:
            raise error
        rank, exc = failed[0]
        note = f"(raised on rank {rank} of {self.size}; every rank raises it)"
        if hasattr(exc, "add_note"):  # Python >= 3.11
            exc.add_note(note)
        raise exc

    def run(self, fn: Callable[[], T]) -> T:
        """Collective: ``fn()`` on every rank, raising everywhere if it raised anywhere."""
        result: Any = None
        error: Optional[BaseException] = None
        try:
            result = fn()
        except BaseException as e:  # every rank must reach `fail_together`
            error = e
        self.fail_together(error)
        return result  # type: ignore[no-any-return]

    def agree(self, **values: Any) -> None:
        """Collective: raises :class:`~kronnet.RankMismatchError` on every
        rank, naming the first argument (in the order given) whose digest
        differs between ranks and which ranks passed which. One message of
        a few bytes per argument."""
        mine = [digest(value) for value in values.values()]
        everyone = self.comm.allgather(mine)
        for k, arg in enumerate(values):
            groups: Dict[str, List[int]] = {}
            for rank, theirs in enumerate(everyone):
                groups.setdefault(theirs[k], []).append(rank)
            if len(groups) > 1:
                raise RankMismatchError(arg, sorted(groups.values()))

    def sum_words(self, words: np.ndarray) -> None:
        """Collective: `words` (int64, contiguous) becomes its sum over the ranks, in place."""
        if self.size > 1:
            self.comm.Allreduce(self._mpi.IN_PLACE, words, op=self._mpi.SUM)

    def max(self, value: float) -> float:
        """Collective: the largest `value` of any rank."""
        return float(self.comm.allreduce(float(value), op=self._mpi.MAX))

    def outputs(
        self,
        here: Callable[[], np.ndarray],
        words: Callable[[], np.ndarray],
        finish: Callable[[int, np.ndarray], np.ndarray],
    ) -> np.ndarray:
        """Collective: f at q points from each rank's exact sums (``words()``,
        (q, C · EXACT_WORDS)), summed a message of at most
        ``POINTS_PER_MESSAGE`` points at a time and finished into outputs."""
        mine = self.run(lambda: np.ascontiguousarray(words(), dtype=np.int64))
        parts: List[np.ndarray] = []
        for start in range(0, mine.shape[0], POINTS_PER_MESSAGE):
            part = mine[start : start + POINTS_PER_MESSAGE]
            self.sum_words(part)
            parts.append(self.run(partial(finish, start, part)))
        return np.concatenate(parts) if parts else finish(0, mine)

    def gather_rows(self, part: np.ndarray, root: Optional[int] = None) -> Optional[np.ndarray]:
        """Collective: every rank's rows, in rank order (on `root` only if given)."""
        parts = self.comm.allgather(part) if root is None else self.comm.gather(part, root=root)
        return None if parts is None else np.concatenate(parts, axis=0)

    def write_file(
        self, path: Any, kind: str, meta: Dict[str, Any], arrays: Dict[str, np.ndarray], rows: Dict[str, np.ndarray]
    ) -> None:
        """Collective: rank 0 writes the file while the `rows` of the other
        ranks arrive a piece at a time (:func:`stream_rows`), so it never
        holds another rank's rows whole; the other members are rank 0's."""
        names = list(rows)
        # Per-neuron vectors (the thresholds) travel as one-column rows and
        # are written back as vectors.
        flat = {name for name in names if np.ndim(rows[name]) == 1}

        def write(streams: List[RowStream]) -> None:
            shaped: Dict[str, fileformat.Streamed] = {
                name: (((shape[0],), blocks) if name in flat else (shape, blocks))
                for name, (shape, blocks) in zip(names, streams)
            }
            fileformat.write(path, kind, meta, arrays, shaped)

        stream_rows(self, [np.reshape(rows[name], (np.shape(rows[name])[0], -1)) for name in names], write)

    def runner(self, core: Any, n: int, width: int) -> StepRunner:
        return ShardedRunner(core, self, width, n)

    def __repr__(self) -> str:
        return f"ShardedPlacement(rank={self.rank}, size={self.size})"


def _portable(error: BaseException) -> BaseException:
    """`error` if it survives pickling (to be sent to the other ranks), else a RuntimeError saying what it was."""
    try:
        back = pickle.loads(pickle.dumps(error))
        if isinstance(back, BaseException):
            return back
    except Exception:
        pass
    return RuntimeError(f"{type(error).__name__}: {error}")


#: float64 values per message when rows are streamed to one rank (64 MiB):
#: the receiving rank holds one such piece of another rank's rows at a time.
PIECE_VALUES = 1 << 23
#: MPI tags of streamed rows: array i of a stream travels under tag ROWS_TAG + i.
ROWS_TAG = 7100

#: One streamed array on the receiving rank: its whole shape, and its row
#: blocks in order (rank 0's rows, then rank 1's, ...).
RowStream = Tuple[Tuple[int, int], Iterator[np.ndarray]]


def _pieces(rows: int, cols: int) -> List[Tuple[int, int]]:
    """The row ranges one rank's part of `rows` × `cols` travels in."""
    step = max(1, PIECE_VALUES // max(cols, 1))
    return [(r, min(rows, r + step)) for r in range(0, rows, step)] if cols else []


def stream_rows(
    group: ShardedPlacement, parts: Sequence[np.ndarray], write: Callable[[List[RowStream]], None], root: int = 0
) -> None:
    """Collective: arrays split by rows over the ranks, handed to `write` on
    `root` a piece at a time, as they arrive.

    Rank q's ``parts[i]`` is the q-th row block of array i (the rows of the
    whole array are rank 0's, then rank 1's, ...). Pieces hold at most
    ``PIECE_VALUES`` values, so the root never holds another rank's block
    whole: writing a sharded net or checkpoint needs no more memory on the
    root than on any rank.

    Parameters
    ----------
    group : ShardedPlacement
        The ranks; every one must call with the same number of arrays.
    parts : sequence of array_like, each of shape (rows_q, cols_i)
        This rank's row block of each array (float32 stays float32, any
        other type becomes float64; every rank's blocks of an array must
        have the same type; any layout: each piece is made contiguous as it
        is sent).
    write : callable
        Called on `root` only, with one ``((rows, cols_i), blocks)`` per
        array: the whole shape and an iterator over its row blocks in
        order. It must consume the arrays in order.
    root : int, default 0
        The rank that calls `write`.

    Raises
    ------
    ArgumentError
        On every rank, when the ranks' blocks of an array differ in width.
    Exception
        Whatever `write` raised, on every rank. The root still receives
        every piece first, so no rank is left waiting in a send.
    """
    # Views stay views (α arrives as a transposed view): each piece is made
    # contiguous only when it is sent or written.
    mine = group.run(lambda: [_row_array(p) for p in parts])
    shapes = group.comm.allgather([a.shape for a in mine])
    kinds = group.comm.allgather([a.dtype.str for a in mine])
    for i in range(len(mine)):
        if any(len(s[i]) != 2 for s in shapes) or len({s[i][1] for s in shapes}) != 1:
            raise ArgumentError("parts", f"array {i} has row blocks of shapes {[s[i] for s in shapes]} on the ranks")
        if len({k[i] for k in kinds}) != 1:
            raise ArgumentError("parts", f"array {i} has row blocks of dtypes {[k[i] for k in kinds]} on the ranks")
    comm = group.comm
    if group.rank != root:
        for i, a in enumerate(mine):
            for start, stop in _pieces(*a.shape):
                comm.Send(np.ascontiguousarray(a[start:stop]), dest=root, tag=ROWS_TAG + i)
        group.fail_together(None)
        return
    # Every piece the root must receive, in the order the senders send them.
    pending = [
        (i, q, start, stop)
        for i in range(len(mine))
        for q in range(group.size)
        if q != root
        for start, stop in _pieces(*shapes[q][i])
    ]
    cursor = 0
    buffers: Dict[str, np.ndarray] = {}

    def receive(i: int, q: int, start: int, stop: int) -> np.ndarray:
        cols, kind = shapes[q][i][1], kinds[q][i]
        buffer = buffers.get(kind, np.empty(0, dtype=kind))
        if buffer.size < (stop - start) * cols:
            buffer = buffers[kind] = np.empty((stop - start) * cols, dtype=kind)
        piece = buffer[: (stop - start) * cols].reshape(stop - start, cols)
        comm.Recv(piece, source=q, tag=ROWS_TAG + i)
        return piece

    def blocks(i: int) -> Iterator[np.ndarray]:
        nonlocal cursor
        for q in range(group.size):
            if q == root:
                for start, stop in _pieces(*mine[i].shape):
                    yield np.ascontiguousarray(mine[i][start:stop])
                continue
            while cursor < len(pending) and pending[cursor][:2] == (i, q):
                piece = receive(*pending[cursor])
                cursor += 1
                yield piece

    error: Optional[BaseException] = None
    try:
        write([((sum(s[i][0] for s in shapes), shapes[root][i][1]), blocks(i)) for i in range(len(mine))])
    except BaseException as e:  # the other ranks are still sending
        error = e
    while cursor < len(pending):
        receive(*pending[cursor])
        cursor += 1
    group.fail_together(error)


def _row_array(part: Any) -> np.ndarray:
    """A row block as sent: float32 stays float32 (a float32 trainer's P),
    anything else becomes float64."""
    arr = np.asarray(part)
    return arr if arr.dtype == np.float32 else np.asarray(arr, dtype=np.float64)


class _Interrupt:
    """Turns SIGINT into a flag for the duration of a sharded run (main thread
    only), so that every rank can stop after the same step instead of one
    rank leaving a collective the others are in."""

    def __init__(self) -> None:
        self.flag = False
        self._old: Any = None

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.flag = True

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class ShardedRunner:
    """One rank's part of a sharded trainer's steps (:class:`~kronnet.placement.StepRunner`). The core's
    ``run_sharded`` runs the steps in Rust; each step is ``begin_step``, one
    message (:meth:`_exchange`: an ``Allreduce`` of the words), and
    ``finish_step``.

    Every message ends with three status words, summed over the ranks like
    the rest: ranks that failed before the message, ranks that failed after
    the last one (their state may differ from the others'), and ranks asked
    to stop (Ctrl-C). A closing message ends every run, so a failure in its
    last step reaches every rank too.
    """

    def __init__(self, core: Any, group: ShardedPlacement, width: int, n: int) -> None:
        self._core = core
        self._group = group
        self._width = width
        self._n = n
        #: Set when a rank failed after changing its state while the others
        #: went on: the states may differ, so the trainer refuses to go on.
        self._broken: Optional[str] = None
        #: Seconds spent in the steps' Allreduce, and its bytes, so far.
        self.allreduce_seconds = 0.0
        self.allreduce_bytes = 0
        self._intr: Optional[_Interrupt] = None
        # P(0), a and b were bounded per rank; the guard needs the whole
        # net's bounds (L̃ is every rank's alike).
        core.bounds = tuple(group.max(b) for b in core.bounds)

    @property
    def steps_taken(self) -> int:
        return int(self._core.steps_taken)

    def _check(self) -> None:
        if self._broken is not None:
            raise RuntimeError(self._broken)

    def _exchange(self, words: np.ndarray) -> None:
        """One message of a run (called by the core for every step, and once
        to close the run): raises the stop word on Ctrl-C, then sums the
        words over the ranks."""
        if self._intr is not None and self._intr.flag:
            words[-1] = max(words[-1], 1)
        started = time.perf_counter()
        self._group.sum_words(words)
        self.allreduce_seconds += time.perf_counter() - started
        self.allreduce_bytes += words.nbytes

    def step(self, batch: np.ndarray, rates: Rates) -> Tuple[float, int, int]:
        """Collective: one step; raises on every rank if it fails anywhere."""
        batch = np.asarray(batch, dtype=np.int64)
        (loss, union, total), err = self._run(batch, np.array([0, len(batch)], dtype=np.int64), rates, None)
        if err is not None:
            raise err
        return float(loss[0]), int(union[0]), int(total[0])

    def _run(
        self, indices: np.ndarray, offsets: np.ndarray, rates: Rates, factors: Optional[np.ndarray]
    ) -> Tuple[Any, Optional[BaseException]]:
        """The core's sharded run, its end turned into the exception every rank raises."""
        self._check()
        with self.interrupts():
            loss, union, total, end, err, changed = self._core.run_sharded(
                indices, offsets, rates, self._exchange, factors
            )
        if end == "failed":
            if changed:
                self._broken = (
                    "a rank failed during a step and the others went on, so the ranks' states may differ: "
                    "this sharded trainer cannot continue (restore a checkpoint)"
                )
            try:
                self._group.fail_together(err)
            except BaseException as e:  # the same exception on every rank
                err = e
        elif end == "stopped":
            err = KeyboardInterrupt()
        return (loss, union, total), err

    @contextlib.contextmanager
    def interrupts(self) -> Iterator[_Interrupt]:
        """While active, SIGINT only sets a flag that the next message
        carries to every rank (the Trainer holds it over a whole `fit`, so a
        Ctrl-C between two runs of steps is not lost either)."""
        if self._intr is not None:
            yield self._intr
            return
        with _Interrupt() as intr:
            self._intr = intr
            try:
                yield intr
            finally:
                self._intr = None

    def run(self, indices: np.ndarray, offsets: np.ndarray, rates: Rates, factors: Optional[np.ndarray]) -> RunFigures:
        """Collective: the steps on ``indices[offsets[t]:offsets[t + 1]]``;
        returns (losses, |R|, Σ|A_i|, error or None) like the single-process core."""
        (loss, union, total), err = self._run(indices, offsets, rates, factors)
        return loss, union, total, err

    def last_run(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._core.last_run()  # type: ignore[no-any-return]

    def full_loss(self) -> float:
        """Collective: (1/2n) Σ (f(x_i) − y_i)², bitwise the single-process value."""
        self._check()
        f = self._group.outputs(
            lambda: np.empty(0),
            lambda: self._core.output_words(0, self._n),
            lambda start, summed: self._core.outputs_from_words(start, summed),
        )
        return float(self._group.run(lambda: self._core.loss_of(f)))

    def comm_stats(self) -> Dict[str, float]:
        """Seconds this rank spent in the steps' Allreduce (waiting for the
        other ranks included) and the bytes it contributed."""
        return {"allreduce_seconds": float(self.allreduce_seconds), "allreduce_bytes": float(self.allreduce_bytes)}
