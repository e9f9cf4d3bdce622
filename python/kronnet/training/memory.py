"""How many bytes a trainer will allocate, asked of the core before anything
is allocated: the same figures drive :meth:`Trainer.estimate_memory` and the
refusal of a trainer that cannot fit (docs/design.md, "Memory")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict

from .. import _core
from ..data import KronPoints
from ..model import TwoLayerNet
from .config import TrainerConfig

#: Added to every memory estimate: what the process's RSS grows by beyond
#: the arrays themselves (glibc keeps freed blocks in per-thread arenas, and
#: the worker threads, GEMM packing buffers and stacks take a few MiB).
#: Measured 5-13 MiB over the arrays' sum in tests/test_memory.py's shapes.
ALLOCATOR_SLACK_BYTES = 16 << 20

#: The dense backend's allowance per worker thread for what the matrix
#: products allocate themselves: matrixmultiply packs blocks of its operands
#: into a buffer of up to (KC·MC + KC·NC) f64 per product (256 KiB for the
#: full loss's 64-neuron blocks), and each thread's malloc arena keeps what
#: its products freed. Measured 1.1 to 1.7 MiB per thread in
#: tests/test_memory.py's dense shapes, from 1 to 16 threads.
DENSE_THREAD_BYTES = 2 << 20


@dataclass(frozen=True)
class MemoryPlan:
    """The bytes of each structure a trainer allocates, and its peak.

    Attributes
    ----------
    parts : dict of str to int
        Bytes by structure, as the core reports them: ``preacts`` (P),
        ``coefficients`` (a new block), ``points`` (a copy of the factors,
        for Gram columns), ``targets``, ``init`` (init's transient buffers),
        ``gram``, ``index``, ``dense_x``, ``dense_w``; for the dense backend
        also ``step_rows`` and ``threads``
        (``_dense_extras``); and ``peak``, the largest total at any moment.
    estimate : int
        ``peak`` plus :data:`ALLOCATOR_SLACK_BYTES`.
    what : str
        What is allocated, for messages.
    """

    parts: Dict[str, int]
    estimate: int
    what: str


def trainer_memory(
    net: TwoLayerNet, data: KronPoints, config: TrainerConfig, held: int, shared_gram: bool = False
) -> MemoryPlan:
    """The memory of a trainer with the resolved `config` on (`net`, `data`),
    holding `held` of the net's neurons (all of them in one process; a
    shard's under MPI, whose P, block and index shrink while the Gram and
    the points do not). `shared_gram`: the Gram is another trainer's."""
    dense = config.backend != "kron"
    parts = {
        str(k): int(val)
        for k, val in _core.trainer_memory(
            config.backend,
            net.core_init,
            list(net.dims),
            data.n,
            held,
            data.rank,
            data.table_rows,
            "scan" if dense else config.index,
            "precomputed" if dense else config.gram,
            shared_gram,
            net.find_block(data) is None,
            [blk.data.n for blk in net.coefficients if blk.trained],
            data.core_nbytes,
            _core.thread_count(),
            outputs=net.outputs,
            linear=config.lr_v > 0 or any(blk.storage.linear for blk in net.coefficients),
            dtype=config.dtype,
        ).items()
    }
    if dense:
        parts.update(_dense_extras(net, config, held))
        parts["peak"] += parts["step_rows"] + parts["threads"]
    what = (
        "the dense backend's X (n × d) and W (width × d)"
        if dense
        else "the training state (P, coefficients, Gram, index)"
    )
    return MemoryPlan(parts, parts["peak"] + ALLOCATOR_SLACK_BYTES, what)


def _dense_extras(net: TwoLayerNet, config: TrainerConfig, held: int) -> Dict[str, int]:
    """What the dense backend allocates beyond the core's plan:

    ``step_rows``
        A step's new rows of W, |R| × d, in a buffer the trainer keeps (it
        grows to the largest |R|). |R| is the union of the batch's fire
        sets: at most S ⌈q m⌉ for q the fraction of neurons a unit-norm point
        fires at initialization (:meth:`TwoLayerNet.firing_fraction`), and
        at most m.
    ``threads``
        :data:`DENSE_THREAD_BYTES` per worker thread.
    """
    fired = min(held, config.batch_size * math.ceil(net.firing_fraction() * held))
    return {
        "step_rows": 8 * fired * net.d,
        "threads": DENSE_THREAD_BYTES * int(_core.thread_count()),
    }
