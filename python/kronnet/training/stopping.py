"""Early stopping: when to stop and which step to go back to."""

from __future__ import annotations

from typing import Any, Optional


class EarlyStopping:
    """Watches the validation losses of one fit.

    Keeps the lowest loss seen and a snapshot of the state at it (whatever
    the caller's `snapshot` returns); :meth:`observe` says when `patience`
    evaluations in a row have not improved on it.

    Parameters
    ----------
    patience : int
        Evaluations without improvement that end the fit.
    snapshot : callable
        Returns what :meth:`best` gives back; called at each new best.

    Examples
    --------
    >>> from kronnet.training.stopping import EarlyStopping
    >>> stop = EarlyStopping(2, snapshot=lambda: "state")
    >>> [stop.observe(step, loss) for step, loss in [(0, 3.0), (10, 2.0), (20, 2.5), (30, 2.0)]]
    [False, False, False, True]
    >>> stop.best_step, stop.best
    (10, 'state')
    """

    def __init__(self, patience: int, snapshot: Any) -> None:
        self.patience = patience
        self._snapshot = snapshot
        self.best_step: Optional[int] = None
        self.best_loss = float("inf")
        self.best: Any = None
        self._waited = 0

    def observe(self, step: int, loss: float) -> bool:
        """Records the validation loss at `step`; True when the fit should
        stop. A loss must be strictly lower to count as an improvement, so
        a plateau stops too; the first evaluation is always the best so far."""
        if self.best_step is None or loss < self.best_loss:
            self.best_step, self.best_loss, self._waited = step, loss, 0
            self.best = self._snapshot()
            return False
        self._waited += 1
        return self._waited >= self.patience
