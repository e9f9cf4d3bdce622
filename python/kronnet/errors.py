"""The exceptions kronnet raises.

Each derives from the standard exception a Python user already catches for
that kind of fault (``ValueError``, ``TypeError``, ``MemoryError``,
``FloatingPointError``, ``RuntimeError``) and from :class:`KronnetError`, and carries the facts
of the fault as attributes, so that code can react to them without parsing
messages. The Rust core raises the same classes (``src/bindings/errors.rs``).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple


class KronnetError(Exception):
    """Base class of every exception kronnet defines.

    Catch it to handle any fault kronnet reports; each subclass also derives
    from the matching standard exception.

    Examples
    --------
    >>> import kronnet as kn
    >>> issubclass(kn.DivergenceError, kn.KronnetError)
    True
    """


class _NamedArgument(KronnetError):
    """What the argument errors share: the argument's name first in the
    message, and `arg` / `reason` attributes that survive pickling."""

    def __init__(self, arg: str, reason: str) -> None:
        super().__init__(f"{arg}: {reason}")
        self.arg = arg
        self.reason = reason

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.arg, self.reason))


class ArgumentError(_NamedArgument, ValueError):
    """An argument has a bad value (shape, size, range, NaN...).

    Parameters
    ----------
    arg : str
        The argument's name, as the caller spelled it (``"factors[1]"``,
        ``"batch"``...). Also the start of the message.
    reason : str
        What is wrong with it.

    Examples
    --------
    >>> import kronnet as kn
    >>> try:
    ...     kn.TwoLayerNet((4, 4), width=0)
    ... except ValueError as exc:
    ...     print(exc.arg, "|", exc)
    width | width: must be positive, got 0
    """


class RankMismatchError(ArgumentError):
    """The ranks of an MPI job passed different arguments to a collective call.

    Every rank of a sharded net or trainer must make the same collective
    calls with the same arguments (a batch, a number of steps, the points to
    predict, a file path...). kronnet checks that first, from a digest of
    the arguments, and raises this on every rank at once instead of letting
    the ranks diverge silently, wait for each other forever, or abort in
    MPI.

    Parameters
    ----------
    arg : str
        The argument the ranks disagree on.
    groups : list of list of int
        The ranks, grouped by the value they passed (the ranks of one group
        agree with each other); at least two groups.

    Examples
    --------
    >>> import kronnet as kn
    >>> exc = kn.RankMismatchError("batch", [[0, 2], [1]])
    >>> print(exc)
    batch: every rank must pass the same value; ranks 0, 2 and rank 1 passed different ones
    >>> isinstance(exc, ValueError), exc.groups
    (True, [[0, 2], [1]])
    """

    def __init__(self, arg: str, groups: List[List[int]]) -> None:
        def name(ranks: List[int]) -> str:
            return ("ranks " if len(ranks) > 1 else "rank ") + ", ".join(str(r) for r in ranks)

        parts = [name(g) for g in groups]
        listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        super().__init__(arg, f"every rank must pass the same value; {listed} passed different ones")
        self.groups = [list(g) for g in groups]

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.arg, self.groups))


class ArgumentTypeError(_NamedArgument, TypeError):
    """An argument has the wrong type (a float where an int is needed, a
    string where an array is needed...).

    Parameters
    ----------
    arg : str
        The argument's name.
    reason : str
        What was expected and what was given.

    Examples
    --------
    >>> import kronnet as kn
    >>> try:
    ...     kn.TwoLayerNet((4, 4), width=2.5)
    ... except TypeError as exc:
    ...     print(exc.arg, "|", exc)
    width | width: expected a positive integer, got float 2.5
    """


class OutOfMemoryError(KronnetError, MemoryError):
    """An array would not fit in memory; raised before allocating it.

    Parameters
    ----------
    what : str
        What would be allocated.
    nbytes : int
        Bytes it needs.
    available : int, optional
        Bytes the machine had available when it was checked.
    arg : str, optional
        The argument whose size asked for it.

    Examples
    --------
    >>> import kronnet as kn
    >>> net = kn.TwoLayerNet((2**20, 2**20), width=256)  # d = 2^40: fine, W is never stored
    >>> try:
    ...     net.initial_weights()  # but materializing W(0) is not
    ... except MemoryError as exc:
    ...     print(exc.arg, exc.nbytes)
    initial_weights() 2251799813685248
    """

    def __init__(self, what: str, nbytes: int, available: Optional[int] = None, arg: Optional[str] = None) -> None:
        gib = float(nbytes) / 2**30
        msg = f"{what} needs {int(nbytes)} bytes ({gib:.2f} GiB)"
        if available is not None:
            msg += f", but only {available / 2**30:.2f} GiB is available"
        else:
            msg += ", which cannot be allocated"
        super().__init__(f"{arg}: {msg}" if arg else msg)
        self.what = what
        self.nbytes = int(nbytes)
        self.available = available
        self.arg = arg

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.what, self.nbytes, self.available, self.arg))


class DivergenceError(KronnetError, FloatingPointError):
    """A step would make the loss or the weights non-finite.

    Raised too when a step would push them past the bound that keeps them
    finite. The model is left at its last finite state, at the step
    boundary before the failing step; a smaller learning rate is the usual
    remedy.

    Parameters
    ----------
    message : str
        What would have overflowed.

    Attributes
    ----------
    history : History or None
        Set by :meth:`Trainer.fit`: the record of the steps that completed
        in that call before the failing one.

    Examples
    --------
    >>> import kronnet as kn
    >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
    >>> tr = kn.Trainer(kn.TwoLayerNet(data.dims, width=64), data, lr=1e200)
    >>> try:
    ...     tr.fit(10)
    ... except FloatingPointError as exc:
    ...     print(type(exc).__name__, exc.history.steps, tr.steps_done)
    DivergenceError 0 0
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.history: Any = None

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (str(self),))


class FileFormatError(KronnetError, ValueError):
    """A file is not a readable kronnet file.

    It is truncated, corrupted, of another kind, or of an unsupported format
    version (docs/format.md).

    Parameters
    ----------
    path : str
        The file.
    problem : str
        What is wrong with it.

    Examples
    --------
    >>> import os, tempfile, kronnet as kn
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "notes.txt")
    >>> with open(path, "w") as fh:
    ...     _ = fh.write("not a model")
    >>> try:
    ...     kn.load(path)
    ... except ValueError as exc:
    ...     print(type(exc).__name__, exc.path == path, exc.problem)
    FileFormatError True is not a kronnet file (...)
    >>> tmp.cleanup()
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.path, self.problem))


class StaleTrainerError(KronnetError):
    """The net was changed by another trainer since this trainer last ran.

    This trainer's state no longer matches the net's weights, so it refuses
    to step; create a new :class:`Trainer` to continue from the current
    weights.

    Examples
    --------
    >>> import kronnet as kn
    >>> data = kn.make_kronecker_data(32, dims=(4, 4), seed=0)
    >>> net = kn.TwoLayerNet(data.dims, width=64)
    >>> first = kn.Trainer(net, data, lr=20.0)
    >>> second = kn.Trainer(net, data, lr=20.0)
    >>> _ = second.step()
    >>> try:
    ...     first.step()
    ... except kn.StaleTrainerError:
    ...     print("stale")
    stale
    """


class ConcurrentUseError(KronnetError, RuntimeError):
    """A net or trainer was used from a second thread while a trainer works on it.

    kronnet's contract (the "Thread safety" paragraphs of
    :class:`~kronnet.TwoLayerNet` and :class:`~kronnet.Trainer`): several
    threads may read one net at once (:meth:`~kronnet.TwoLayerNet.predict`,
    :meth:`~kronnet.TwoLayerNet.save`...), but while a :class:`~kronnet.Trainer`
    builds, steps, fits or reads its state in one thread, neither the net
    nor any of its trainers may be used from another thread. Such a call
    raises this at once, in the thread that made it, instead of waiting or
    corrupting the state; the training is not disturbed. Nothing is changed
    by the refused call: wait for the training to finish (join its thread)
    and call again, or give each thread its own net (``copy.deepcopy(net)``).

    Parameters
    ----------
    what : str
        The refused call (``"net.predict()"``...).
    holder : str
        The thread that is using the net (its name).
    activity : str
        What that thread is doing (``"training it"``, ``"reading it"``).

    Examples
    --------
    >>> import kronnet as kn
    >>> exc = kn.ConcurrentUseError("net.predict()", "Thread-1", "training it")
    >>> isinstance(exc, RuntimeError), exc.holder
    (True, 'Thread-1')
    """

    def __init__(self, what: str, holder: str, activity: str) -> None:
        super().__init__(
            f"{what}: thread {holder!r} is {activity}; a net and its trainers must not be used from another "
            "thread while a Trainer works on them (kronnet's thread-safety rule). Wait for that thread to "
            "finish (join it), or give each thread its own net (copy.deepcopy(net))"
        )
        self.what = what
        self.holder = holder
        self.activity = activity

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.what, self.holder, self.activity))


__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "ConcurrentUseError",
    "DivergenceError",
    "FileFormatError",
    "KronnetError",
    "OutOfMemoryError",
    "RankMismatchError",
    "StaleTrainerError",
]
