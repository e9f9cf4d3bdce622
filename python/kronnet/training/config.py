"""A trainer's settings as one typed, validated value, and the mode names.

Each mode name has one source of truth: the compiled core's tables
(``kronnet._core.BACKENDS``, ``INDEXES``, ``GRAM_MODES``), which it also
parses; the ``Literal`` types below spell the same names for type checkers,
and a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Literal, Tuple

from .. import _core
from .. import _validate as v
from ..errors import ArgumentError
from ..model import gaussian_tail
from .schedules import as_schedule
from .schedules import from_dict as schedule_from_dict

Backend = Literal["kron", "dense"]
IndexKind = Literal["auto", "scan", "tree", "bits"]
GramMode = Literal["auto", "precomputed", "columns"]
LossName = Literal["squared", "logistic", "cross_entropy"]
Dtype = Literal["float64", "float32"]

#: The backends, activation indexes and Gram modes the core implements, and
#: the names a Trainer accepts (the core's plus "auto", which a plan resolves).
BACKENDS: Tuple[str, ...] = tuple(_core.BACKENDS)
#: The losses the core implements (``Trainer(loss=...)``).
LOSSES: Tuple[str, ...] = tuple(_core.LOSSES)
INDEXES: Tuple[str, ...] = ("auto", *_core.INDEXES)
#: The types a Kronecker trainer keeps P in (``Trainer(dtype=...)``).
DTYPES: Tuple[str, ...] = tuple(_core.DTYPES)
GRAM_MODES: Tuple[str, ...] = ("auto", *_core.GRAM_MODES)

#: What a resolved dense-backend plan says for the index and Gram mode it
#: has no use for.
NONE = "none"

#: Default cap on the precomputed n × n Gram matrix; larger data sets compute
#: the S needed columns per step from the factors instead.
GRAM_BUDGET_BYTES = 1 << 30

#: "auto" uses the crossing bits while n · q <= this, where q = P(N(0,1) > b)
#: is the fraction of neurons a unit-norm point fires (docs/indexes.md).
AUTO_BITS_MAX_NQ = 32.0


@dataclass(frozen=True)
class TrainerConfig:
    """A trainer's settings, validated once, when the value is made.

    :class:`~kronnet.Trainer` builds one from its keyword arguments (see
    there for what each means) and keeps it; checkpoints store it. Mode
    names may be "auto" until :meth:`resolved` decides them for a data set.

    Parameters
    ----------
    lr : float, default 0.5
        Learning rate, positive and finite. (:class:`~kronnet.Trainer`'s
        default, "auto", is resolved to :func:`~kronnet.suggest_lr` of its
        net before it makes its config, which always holds a float.)
    batch_size : int, default 8
        S.
    index : {"auto", "scan", "tree", "bits"}, default "auto"
        The activated-neuron index (``"none"`` once resolved for the dense
        backend).
    backend : {"kron", "dense"}, default "kron"
    seed : int, default 0
        Seeds the batch order.
    gram : {"auto", "precomputed", "columns"}, default "auto"
        (``"none"`` once resolved for the dense backend).
    gram_budget_bytes : int, default 2**30
        Cap on the precomputed Gram for ``gram="auto"``.
    lr_a, lr_b, lr_c, lr_v : float, default 0.0
        Learning rates of the output weights a, the thresholds b, the output
        bias c and the linear term v; 0 freezes them (the paper's model).
    loss : {"squared", "logistic", "cross_entropy"}, default "squared"
    ridge_a, ridge_b, ridge_c, ridge_v : float, default 0.0
        Ridge penalties (λ/2)‖θ‖² on a, c, v and (λ/2)‖b − b(0)‖² on the
        thresholds.
    schedule : None, tuple or schedule, default None
        A factor on every rate per step (:mod:`kronnet.training.schedules`).
    dtype : {"float64", "float32"}, default "float64"
        The type the Kronecker backend keeps P in (float32: half the memory
        and traffic; docs/design.md, "float32").

    Raises
    ------
    ArgumentError
        A value is out of range or a mode name is unknown.
    ArgumentTypeError
        A value has the wrong type.

    Examples
    --------
    >>> from kronnet.training import TrainerConfig
    >>> TrainerConfig(lr=20.0, batch_size=4).lr_a
    0.0
    >>> TrainerConfig(lr=20.0, lr_a=0.5, loss="cross_entropy", schedule=("cosine", 1000)).schedule
    Cosine(steps=1000, floor=0.0)
    >>> TrainerConfig(index="fast")
    Traceback (most recent call last):
    ...
    kronnet.errors.ArgumentError: index: must be one of 'auto', 'scan', 'tree', 'bits'; got 'fast'
    """

    lr: float = 0.5
    batch_size: int = 8
    index: str = "auto"
    backend: str = "kron"
    seed: int = 0
    gram: str = "auto"
    gram_budget_bytes: int = GRAM_BUDGET_BYTES
    lr_a: float = 0.0
    lr_b: float = 0.0
    lr_c: float = 0.0
    lr_v: float = 0.0
    loss: str = "squared"
    ridge_a: float = 0.0
    ridge_b: float = 0.0
    ridge_c: float = 0.0
    ridge_v: float = 0.0
    schedule: Any = None
    dtype: str = "float64"

    def __post_init__(self) -> None:
        resolved_dense = self.index == NONE and self.gram == NONE
        checked: Dict[str, Any] = {
            "lr": v.finite_float(self.lr, "lr", positive=True),
            **{name: nonnegative_rate(getattr(self, name), name) for name in RATE_NAMES[1:] + RIDGE_NAMES},
            "loss": v.choice(self.loss, "loss", LOSSES),
            "schedule": as_schedule(self.schedule),
            "batch_size": v.positive_int(self.batch_size, "batch_size"),
            "backend": v.choice(self.backend, "backend", BACKENDS),
            "seed": v.seed_int(self.seed),
            "index": self.index if resolved_dense else v.choice(self.index, "index", INDEXES),
            "gram": self.gram if resolved_dense else v.choice(self.gram, "gram", GRAM_MODES),
            "gram_budget_bytes": v.positive_int(self.gram_budget_bytes, "gram_budget_bytes"),
            "dtype": v.choice(self.dtype, "dtype", DTYPES),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if self.dtype != "float64" and self.backend != "kron":
            raise ArgumentError("dtype", f"{self.dtype} is for the Kronecker backend only (backend={self.backend!r})")
        for part, what in (("a", "a"), ("b", "b - b(0)"), ("c", "c"), ("v", "v")):
            rate, ridge = getattr(self, f"lr_{part}"), getattr(self, f"ridge_{part}")
            if rate * ridge >= 1.0:
                raise ArgumentError(
                    f"ridge_{part}",
                    f"times lr_{part} is {rate * ridge:.4g} >= 1: each step would multiply {what} by "
                    f"1 - lr_{part} * ridge_{part} <= 0; use ridge_{part} < 1 / lr_{part} = {1.0 / rate:.4g}",
                )

    def resolved(self, n: int, width: int, threshold: float) -> TrainerConfig:
        """The same settings with "auto" decided (docs/indexes.md); the
        dense backend's index and Gram mode become "none".

        Parameters
        ----------
        n : int
            Training points.
        width : int
            The net's neurons.
        threshold : float
            The net's initial threshold b.

        Returns
        -------
        TrainerConfig
            No "auto" left.
        """
        if self.backend != "kron":
            return replace(self, index=NONE, gram=NONE)
        index = resolve_index(self.index, n, width, threshold)
        gram = self.gram
        if gram == "auto":
            gram = "precomputed" if 8.0 * n * n <= self.gram_budget_bytes else "columns"
        return replace(self, index=index, gram=gram)

    def unresolved(self) -> TrainerConfig:
        """The settings with "none" (a dense plan's) back to "auto", as a
        restored checkpoint starts from."""
        return replace(
            self, index="auto" if self.index == NONE else self.index, gram="auto" if self.gram == NONE else self.gram
        )

    @property
    def rates(self) -> Tuple[float, float, float, float, float]:
        """(lr, lr_a, lr_b, lr_c, lr_v), as the core takes them."""
        return (self.lr, self.lr_a, self.lr_b, self.lr_c, self.lr_v)

    @property
    def ridge(self) -> Tuple[float, float, float, float]:
        """(ridge_a, ridge_b, ridge_c, ridge_v), as the core takes them."""
        return (self.ridge_a, self.ridge_b, self.ridge_c, self.ridge_v)

    def to_dict(self) -> Dict[str, Any]:
        """The settings as JSON-ready values (for checkpoints)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["schedule"] = self.schedule.to_dict()
        return out

    @classmethod
    def from_dict(cls, doc: Dict[str, Any]) -> TrainerConfig:
        """The inverse of :meth:`to_dict` (missing fields take their defaults,
        as in files written before they existed).

        Parameters
        ----------
        doc : dict
            What :meth:`to_dict` returned (or a checkpoint's ``trainer``).

        Returns
        -------
        TrainerConfig
        """
        known = {f.name for f in fields(cls)}
        args = {k: val for k, val in doc.items() if k in known}
        args["schedule"] = schedule_from_dict(doc.get("schedule"))
        return cls(**args)


#: The learning rates, in the order the core takes them.
RATE_NAMES: Tuple[str, ...] = ("lr", "lr_a", "lr_b", "lr_c", "lr_v")
#: The ridge strengths, in the order the core takes them.
RIDGE_NAMES: Tuple[str, ...] = ("ridge_a", "ridge_b", "ridge_c", "ridge_v")


def nonnegative_rate(value: Any, name: str) -> float:
    """A rate or strength: a finite float >= 0."""
    out = v.finite_float(value, name)
    if out < 0:
        raise ArgumentError(name, f"must be >= 0, got {out}")
    return out


def resolve_index(index: str, n: int, m: int, threshold: float) -> str:
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
