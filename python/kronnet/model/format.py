"""A net as members of a kronnet file (docs/format.md): its JSON fields and
its arrays, and back.

Which members hold one row per neuron is said here (``rows``), so that a
sharded net's file is written with every rank's rows in neuron order, and a
sharded restore maps each rank's rows only; the container itself is
``kronnet.fileformat``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..fileformat import Reader
from .state import BlockState, NetState

#: Kinds of points a block may hold in a file.
BLOCK_KINDS = ("kron", "pairs")


def alpha_member(block: int) -> str:
    """The member holding block `block`'s coefficients α, (m, n_j): one row per neuron."""
    return f"block{block}/alpha"


#: Members of the head (format version 3): a (m, C) and the thresholds (m,)
#: hold one row per neuron; the bias (C,) is the whole net's.
A_MEMBER, THRESHOLDS_MEMBER, BIAS_MEMBER = "net/a", "net/thresholds", "net/output_bias"


def beta_member(block: int) -> str:
    """The member holding block `block`'s linear coefficients β̃, (n_j, C)."""
    return f"block{block}/beta"


def members(state: NetState) -> Tuple[Dict[str, Any], Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """(JSON fields, arrays every process holds alike, arrays of one row per
    neuron) of a net's state: the rows are the state's neurons' only."""
    meta = {
        "net": {
            "dims": list(state.dims),
            "width": int(state.width),
            "threshold": float(state.threshold),
            "seed": int(state.seed),
            "init": str(state.init),
            "init_rank": int(state.init_rank),
            "outputs": int(state.outputs),
            "v_scale": float(state.v_scale),
            "blocks": len(state.blocks),
            "block_kinds": [blk.kind for blk in state.blocks],
        }
    }
    arrays: Dict[str, np.ndarray] = {}
    rows: Dict[str, np.ndarray] = {}
    if state.a is not None:
        rows[A_MEMBER] = state.a
    if state.thresholds is not None:
        rows[THRESHOLDS_MEMBER] = state.thresholds
    if state.output_bias is not None:
        arrays[BIAS_MEMBER] = state.output_bias
    for j, blk in enumerate(state.blocks):
        if blk.kind == "pairs":
            for k, t in enumerate(blk.points["tables"]):
                arrays[f"block{j}/table{k}"] = t
            arrays[f"block{j}/pairs"] = blk.points["pairs"]
        else:
            for k, u in enumerate(blk.points["factors"]):
                arrays[f"block{j}/factor{k}"] = u
        if blk.y is not None:
            arrays[f"block{j}/y"] = blk.y
        if blk.beta is not None:
            arrays[beta_member(j)] = blk.beta
        # alpha (m, n) from alpha^T (n, m) without a copy: written from one
        # process, the .npy header records Fortran order.
        rows[alpha_member(j)] = blk.alpha_t.T
    return meta, arrays, rows


def read(r: Reader, neurons: Optional[Tuple[int, int]] = None) -> NetState:
    """The net in an open file (the inverse of :func:`members`). With
    `neurons` = (first, count), the coefficient matrices are mapped, not
    read (``Reader.mapped``), and only those neurons' rows are kept: a rank
    of a sharded restore touches its own rows only. Shapes and values are
    checked when the net is built."""
    m = r.field(r.meta, "net", dict)
    dims = r.field(m, "dims", list, "net")
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise r.fail(f"net: 'dims' must be a list of positive integers, got {dims!r}")
    n_blocks = r.field(m, "blocks", int, "net")
    if n_blocks < 0:
        raise r.fail("net: 'blocks' must be >= 0")
    if n_blocks > len(r.names):
        # Every block has members of its own: a count beyond them is not
        # a block list to build (nor ["kron"] * n_blocks to allocate).
        raise r.fail(f"net: 'blocks' is {n_blocks}, but the file has only {len(r.names)} members")
    kinds = m["block_kinds"] if "block_kinds" in m else ["kron"] * n_blocks
    if not isinstance(kinds, list) or len(kinds) != n_blocks or not all(k in BLOCK_KINDS for k in kinds):
        raise r.fail(f"net: 'block_kinds' must list 'kron' or 'pairs' for each of {n_blocks} blocks, got {kinds!r}")
    width = r.field(m, "width", int, "net")
    blocks: List[BlockState] = []
    for j, kind in enumerate(kinds):
        points: Dict[str, Any]
        if kind == "pairs":
            points = {
                "tables": [r.array(f"block{j}/table{k}", np.float64, 2) for k in range(len(dims))],
                "pairs": r.array(f"block{j}/pairs", np.int64, 2),
            }
        else:
            # (n, d_k), or (n, r, d_k) for points of r terms.
            points = {"factors": [r.array(f"block{j}/factor{k}", np.float64, (2, 3)) for k in range(len(dims))]}
        y = r.array(f"block{j}/y", np.float64, (1, 2), optional=True)
        alpha = (
            r.mapped(alpha_member(j), np.float64, 2) if neurons is not None else r.array(alpha_member(j), np.float64, 2)
        )
        assert alpha is not None
        beta = r.array(beta_member(j), np.float64, 2, optional=True)
        blk = BlockState(kind, points, y, alpha.T, beta)
        blocks.append(blk if neurons is None or alpha.shape[0] != width else blk.neurons(*neurons))
    # Versions 1 and 2 predate the trained head: a from the seed, every
    # threshold the shared one, no bias, no linear term.
    head: Dict[str, Any] = {}
    if A_MEMBER in r.names:
        for name, key, ndim in ((A_MEMBER, "a", 2), (THRESHOLDS_MEMBER, "thresholds", 1)):
            arr = r.mapped(name, np.float64, ndim)
            head[key] = arr if neurons is None or arr.shape[0] != width else arr[neurons[0] : neurons[0] + neurons[1]]
        head["output_bias"] = r.array(BIAS_MEMBER, np.float64, 1)
    state = NetState(
        dims=tuple(dims),
        width=width,
        threshold=r.field(m, "threshold", (int, float), "net"),
        seed=r.field(m, "seed", int, "net"),
        # Version 1 predates Kronecker-factored init.
        init=r.field(m, "init", str, "net") if "init" in m else "gaussian",
        init_rank=r.field(m, "init_rank", int, "net") if "init_rank" in m else 8,
        blocks=blocks,
        outputs=r.field(m, "outputs", int, "net") if "outputs" in m else 1,
        v_scale=float(r.field(m, "v_scale", (int, float), "net")) if "v_scale" in m else 1.0,
        **head,
    )
    if neurons is not None:
        state.neurons = neurons
    return state
