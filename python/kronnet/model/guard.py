"""Who may use a net, from which thread (the "Thread safety" rule of
:class:`~kronnet.TwoLayerNet` and :class:`~kronnet.Trainer`).

The compiled core keeps a net's weights in objects that one call may borrow
mutably (a trainer's steps, with the GIL released) while another borrows
them; the core refuses the second borrow, but with PyO3's bare
``RuntimeError: Already mutably borrowed``. A :class:`UseGuard` per net makes
the rule explicit before any borrow: any number of threads may *read* the
net at once; *training* (building a trainer, its steps, its state) needs the
net to itself. A call that would break the rule raises
:class:`~kronnet.ConcurrentUseError` at once in the thread that made it.
Nothing ever waits, so nothing can deadlock, and the same thread may nest
calls freely (a fit that computes a validation loss reads the net it
trains).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Dict, Iterator, Optional

from ..errors import ConcurrentUseError


class UseGuard:
    """The threads using one net: readers, and at most one trainer.

    The state changes under a private lock held for a few instructions,
    never while the guarded work runs.

    Examples
    --------
    >>> from kronnet.model.guard import UseGuard
    >>> guard = UseGuard()
    >>> with guard.training("Trainer.fit()"):
    ...     with guard.reading("net.predict()"):  # the same thread may read
    ...         pass
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writer: Optional[int] = None
        self._depth = 0
        self._readers: Dict[int, int] = {}
        self._names: Dict[int, str] = {}

    def _holder(self, ident: int) -> str:
        return self._names.get(ident, str(ident))

    @contextlib.contextmanager
    def reading(self, what: str) -> Iterator[None]:
        """Reads the net: refused while another thread trains it.

        Parameters
        ----------
        what : str
            The call, for the message.
        """
        me = threading.get_ident()
        with self._lock:
            if self._writer is not None and self._writer != me:
                raise ConcurrentUseError(what, self._holder(self._writer), "training it")
            self._readers[me] = self._readers.get(me, 0) + 1
            self._names[me] = threading.current_thread().name
        try:
            yield
        finally:
            with self._lock:
                left = self._readers[me] - 1
                if left:
                    self._readers[me] = left
                else:
                    del self._readers[me]
                    self._forget(me)

    @contextlib.contextmanager
    def training(self, what: str) -> Iterator[None]:
        """Trains (or otherwise changes) the net: refused while another
        thread trains or reads it.

        Parameters
        ----------
        what : str
            The call, for the message.
        """
        me = threading.get_ident()
        with self._lock:
            if self._writer is not None and self._writer != me:
                raise ConcurrentUseError(what, self._holder(self._writer), "training it")
            others = [ident for ident in self._readers if ident != me]
            if others:
                raise ConcurrentUseError(what, self._holder(others[0]), "reading it")
            self._writer = me
            self._depth += 1
            self._names[me] = threading.current_thread().name
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._writer = None
                    self._forget(me)

    def _forget(self, ident: int) -> None:
        """Drops a thread's name once it holds nothing (under the lock)."""
        if ident not in self._readers and self._writer != ident:
            self._names.pop(ident, None)
