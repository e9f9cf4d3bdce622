"""Progress bars (tqdm) for long work: training steps, and the initial inner
products that init and prediction compute for every point and neuron."""

from __future__ import annotations

from typing import Any, Callable, Optional

#: A bar appears only once the work has run this long, so short calls stay
#: silent even with ``progress=True``.
DELAY_SECONDS = 1.0


def steps_bar(total: int, enabled: bool) -> Any:
    """A bar over `total` training steps, or None when not `enabled`."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True)


class PointsBar:
    """A bar over points for core work that reports (done, total) units of
    points × neurons (`_core` calls' ``progress=`` callback).

    Use as a context manager; `callback` is None when the bar is disabled,
    so it can be passed to the core as is.
    """

    def __init__(self, enabled: bool, points: int, width: int, desc: str) -> None:
        self._bar: Any = None
        self._width = max(width, 1)
        if enabled and points > 0:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=points, unit="pt", desc=desc, delay=DELAY_SECONDS, dynamic_ncols=True)

    @property
    def callback(self) -> Optional[Callable[[int, int], None]]:
        """The function the core calls with (done, total), or None."""
        return self._report if self._bar is not None else None

    def _report(self, done: int, total: int) -> None:
        points = min(done // self._width, self._bar.total)
        if points > self._bar.n:
            self._bar.update(points - self._bar.n)

    def __enter__(self) -> PointsBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            if exc[0] is None:
                self._bar.update(self._bar.total - self._bar.n)
            self._bar.close()
