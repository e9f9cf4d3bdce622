"""Training: :class:`Trainer` (minibatch SGD on a net's weights, in place),
its settings (:class:`TrainerConfig`), record (:class:`History`), memory
plan, checkpoints, and :func:`suggest_lr`."""

from .config import BACKENDS, GRAM_BUDGET_BYTES, GRAM_MODES, INDEXES, Backend, GramMode, IndexKind, TrainerConfig
from .history import History
from .lr import suggest_lr, suggest_rates
from .memory import ALLOCATOR_SLACK_BYTES, MemoryPlan
from .state import CoreState, TrainerState
from .trainer import Trainer

__all__ = [
    "ALLOCATOR_SLACK_BYTES",
    "BACKENDS",
    "GRAM_BUDGET_BYTES",
    "GRAM_MODES",
    "INDEXES",
    "Backend",
    "CoreState",
    "GramMode",
    "History",
    "IndexKind",
    "MemoryPlan",
    "Trainer",
    "TrainerConfig",
    "TrainerState",
    "suggest_lr",
    "suggest_rates",
]
