"""Learning-rate schedules: a factor φ(t) that multiplies every learning rate
(lr, lr_a, lr_b, lr_c, lr_v) at step t, counted over the trainer's life
(``Trainer.steps_done`` before the step: it goes on across ``fit`` calls,
checkpoints and restores).

A schedule is a small frozen value with ``factor(t)`` and a name; the
trainer hands the core one factor per step, so a run of steps in Rust
follows it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from .. import _validate as v
from ..errors import ArgumentError, ArgumentTypeError


@dataclass(frozen=True)
class Constant:
    """φ(t) = 1: the rates as given.

    Examples
    --------
    >>> from kronnet.training.schedules import Constant
    >>> Constant().factor(1000)
    1.0
    """

    name = "constant"

    def factor(self, t: int) -> float:
        """φ(t).

        Parameters
        ----------
        t : int
            Steps taken before this one.

        Returns
        -------
        float
            1.0.
        """
        return 1.0

    def to_dict(self) -> Dict[str, Any]:
        """The schedule as JSON-ready values (for checkpoints)."""
        return {"name": self.name}


@dataclass(frozen=True)
class InverseTime:
    """φ(t) = 1 / (1 + t / tau): halves the rates after tau steps, then
    decays like tau / t (the Robbins–Monro rate, for convergence of SGD on a
    fixed objective).

    Parameters
    ----------
    tau : float
        Steps to the half rate, positive.

    Examples
    --------
    >>> from kronnet.training.schedules import InverseTime
    >>> s = InverseTime(100)
    >>> s.factor(0), s.factor(100), s.factor(300)
    (1.0, 0.5, 0.25)
    """

    tau: float
    name = "inverse_time"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tau", v.finite_float(self.tau, "schedule tau", positive=True))

    def factor(self, t: int) -> float:
        """φ(t).

        Parameters
        ----------
        t : int
            Steps taken before this one.

        Returns
        -------
        float
            1 / (1 + t / tau).
        """
        return 1.0 / (1.0 + t / self.tau)

    def to_dict(self) -> Dict[str, Any]:
        """The schedule as JSON-ready values (for checkpoints)."""
        return {"name": self.name, "tau": self.tau}


@dataclass(frozen=True)
class Cosine:
    """φ(t) = floor + (1 − floor) · ½ (1 + cos(π min(t, T) / T)): from 1 down
    to `floor` over T steps, then flat.

    Parameters
    ----------
    steps : int
        T, positive.
    floor : float, default 0.0
        The factor from step T on, in [0, 1].

    Examples
    --------
    >>> from kronnet.training.schedules import Cosine
    >>> s = Cosine(100)
    >>> s.factor(0), s.factor(50), s.factor(100), s.factor(500)
    (1.0, 0.5, 0.0, 0.0)
    """

    steps: int
    floor: float = 0.0
    name = "cosine"

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", v.positive_int(self.steps, "schedule steps"))
        floor = v.finite_float(self.floor, "schedule floor")
        if not 0.0 <= floor <= 1.0:
            raise ArgumentError("schedule floor", f"must be in [0, 1], got {floor}")
        object.__setattr__(self, "floor", floor)

    def factor(self, t: int) -> float:
        """φ(t).

        Parameters
        ----------
        t : int
            Steps taken before this one.

        Returns
        -------
        float
            The cosine factor, `floor` from step T on.
        """
        c = 0.5 * (1.0 + math.cos(math.pi * min(t, self.steps) / self.steps))
        # The plain half cosine when there is no floor (its exact values).
        return c if self.floor == 0.0 else self.floor + (1.0 - self.floor) * c

    def to_dict(self) -> Dict[str, Any]:
        """The schedule as JSON-ready values (for checkpoints)."""
        return {"name": self.name, "steps": self.steps, "floor": self.floor}


Schedule = Union[Constant, InverseTime, Cosine]
#: What ``Trainer(schedule=...)`` accepts.
ScheduleLike = Union[None, str, Tuple[Any, ...], Schedule]


def as_schedule(value: ScheduleLike) -> Schedule:
    """A schedule from what ``Trainer(schedule=...)`` accepts: None or
    "constant"; ("inverse_time", tau); ("cosine", T) or ("cosine", T,
    floor); or a schedule object.

    Parameters
    ----------
    value : None, str, tuple or schedule
        The schedule's description.

    Returns
    -------
    Constant, InverseTime or Cosine

    Raises
    ------
    ArgumentError
        An unknown name or a bad parameter.
    ArgumentTypeError
        Neither of the forms above.

    Examples
    --------
    >>> from kronnet.training.schedules import as_schedule
    >>> as_schedule(("cosine", 1000))
    Cosine(steps=1000, floor=0.0)
    >>> as_schedule(None)
    Constant()
    """
    if value is None or value == "constant":
        return Constant()
    if isinstance(value, (Constant, InverseTime, Cosine)):
        return value
    if isinstance(value, str):
        raise ArgumentError(
            "schedule", f'unknown schedule {value!r}; use None, ("inverse_time", tau) or ("cosine", steps)'
        )
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], str):
        name, args = value[0], tuple(value[1:])
        makers = {"inverse_time": (InverseTime, 1), "cosine": (Cosine, 2), "constant": (Constant, 0)}
        if name not in makers:
            raise ArgumentError("schedule", f"unknown schedule {name!r}; known: {', '.join(makers)}")
        make, most = makers[name]
        if len(args) > most or (most and not args):
            raise ArgumentError("schedule", f"{name!r} takes {most} parameter(s), got {len(args)}")
        return make(*args)  # type: ignore[no-any-return]
    raise ArgumentTypeError(
        "schedule", f"expected None, a (name, parameter) tuple or a schedule, got {type(value).__name__}"
    )


def from_dict(doc: Optional[Dict[str, Any]]) -> Schedule:
    """The inverse of ``to_dict`` (a checkpoint's schedule; None: constant)."""
    if doc is None:
        return Constant()
    name = doc.get("name")
    if name == "inverse_time":
        return InverseTime(doc["tau"])
    if name == "cosine":
        return Cosine(doc["steps"], doc.get("floor", 0.0))
    if name == "constant":
        return Constant()
    raise ArgumentError("schedule", f"unknown schedule {name!r}")


def factors(schedule: Schedule, start: int, count: int) -> Optional[np.ndarray]:
    """φ(start), …, φ(start + count − 1) for a run of steps, or None for the
    constant schedule (the rates as given, bit for bit)."""
    if isinstance(schedule, Constant):
        return None
    return np.array([schedule.factor(start + t) for t in range(count)], dtype=np.float64)
