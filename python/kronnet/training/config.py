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
from ..model import gaussian_tail

Backend = Literal["kron", "dense"]
IndexKind = Literal["auto", "scan", "tree", "bits"]
GramMode = Literal["auto", "precomputed", "columns"]

#: The backends, activation indexes and Gram modes the core implements, and
#: the names a Trainer accepts (the core's plus "auto", which a plan resolves).
BACKENDS: Tuple[str, ...] = tuple(_core.BACKENDS)
INDEXES: Tuple[str, ...] = ("auto", *_core.INDEXES)
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
        Learning rate, positive and finite.
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

    Raises
    ------
    ArgumentError
        A value is out of range or a mode name is unknown.
    ArgumentTypeError
        A value has the wrong type.

    Examples
    --------
    >>> from kronnet.training import TrainerConfig
    >>> TrainerConfig(lr=20.0, batch_size=4)
    TrainerConfig(lr=20.0, batch_size=4, index='auto', backend='kron', seed=0, gram='auto', gram_budget_bytes=1073741824)
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

    def __post_init__(self) -> None:
        resolved_dense = self.index == NONE and self.gram == NONE
        checked: Dict[str, Any] = {
            "lr": v.finite_float(self.lr, "lr", positive=True),
            "batch_size": v.positive_int(self.batch_size, "batch_size"),
            "backend": v.choice(self.backend, "backend", BACKENDS),
            "seed": v.seed_int(self.seed),
            "index": self.index if resolved_dense else v.choice(self.index, "index", INDEXES),
            "gram": self.gram if resolved_dense else v.choice(self.gram, "gram", GRAM_MODES),
            "gram_budget_bytes": v.positive_int(self.gram_budget_bytes, "gram_budget_bytes"),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def resolved(self, n: int, width: int, threshold: float) -> TrainerConfig:
        """The same settings with "auto" decided for n points and a net of
        `width` neurons and `threshold` b (docs/indexes.md); the dense
        backend's index and Gram mode become "none"."""
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

    def to_dict(self) -> Dict[str, Any]:
        """The settings as JSON-ready values (for checkpoints)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


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
