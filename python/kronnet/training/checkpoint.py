"""Training checkpoints: a trainer written to one file and continued from it
bitwise exactly (docs/format.md, kind "checkpoint").

A checkpoint is a saved net (every coefficient block with its points) plus
the trainer's own state (:class:`~kronnet.training.state.TrainerState`):
its targets, settings, the sampler's generator state, epoch order and
position, the step count, and the training state itself — P for the
Kronecker backend (recomputing it from the coefficients would round
differently), W for the dense one.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .. import fileformat
from ..data import KronPoints, from_arrays
from ..errors import FileFormatError
from ..model import NetState, TwoLayerNet
from ..model import format as net_members
from ..placement import Placement
from .config import TrainerConfig
from .state import MAX_STEPS, CoreState, TrainerState

#: The member holding the core's state: Pᵀ (one row per neuron) or W.
STATE_MEMBER = "trainer/state"
#: The linear term's training state: L̃ (n × C) or ṽ (C × d).
LINEAR_MEMBER = "trainer/linear"


def checked_path(path: Any) -> str:
    """`path` as a str (any os.PathLike), or ArgumentTypeError."""
    return fileformat.checked_path(path)


def write(path: Any, net: NetState, trainer: TrainerState, placement: Placement) -> None:
    """Writes a checkpoint of a trainer (`trainer`) and its net (`net`)
    through `placement`: sharded, rank 0 writes the file while the
    coefficients and P arrive from the ranks a piece at a time."""
    meta, arrays, rows = net_members.members(net)
    config = trainer.config
    meta["trainer"] = {
        "block": trainer.block,
        **config.to_dict(),
        "steps_done": trainer.steps_done,
        "sampler_pos": int(trainer.sampler["pos"]),
        "sampler_rng": trainer.sampler["rng"],
    }
    if trainer.core.bounds is not None:
        # p_bound alone is what versions 1 and 2 kept.
        meta["trainer"]["p_bound"] = float(trainer.core.bounds[0])
        meta["trainer"]["bounds"] = [float(b) for b in trainer.core.bounds]
    if trainer.core.linear is not None:
        arrays[LINEAR_MEMBER] = trainer.core.linear
    # The trainer's own targets, which may differ from those stored with the
    # block when another data set with the same points made it.
    arrays["trainer/y"] = trainer.y
    arrays["trainer/order"] = trainer.sampler["order"]
    rows[STATE_MEMBER] = trainer.core.state
    placement.write_file(path, "checkpoint", meta, arrays, rows)


def read(path: Any, placement: Placement) -> Tuple[TwoLayerNet, KronPoints, TrainerState]:
    """The net, the training data and the trainer's state in the checkpoint
    at `path`, the net placed by `placement` (a rank of a sharded restore
    maps the coefficient matrices and P and reads only its neurons' rows)."""
    with fileformat.Reader(path) as r:
        if r.field(r.meta, "kind", str) != "checkpoint":
            raise r.fail(f"holds a {r.meta['kind']!r}, not a training checkpoint (use kronnet.load for nets)")
        width = r.field(r.field(r.meta, "net", dict), "width", int, "net")
        # Outside `build`: too many ranks is the caller's error, not the file's.
        # (A width below 1 is refused as the file's error when the net is built.)
        neurons = placement.neurons(width) if width >= 1 else (0, width)
        net_state = net_members.read(r, neurons)
        t = r.field(r.meta, "trainer", dict)
        block = r.field(t, "block", int, "trainer")
        if not 0 <= block < len(net_state.blocks):
            raise r.fail(f"trainer: block {block} does not exist")
        backend = r.field(t, "backend", str, "trainer")
        y = r.array("trainer/y", np.float64, (1, 2))
        # Pᵀ in the type the trainer kept it in (float32 or float64).
        core_state = r.mapped(STATE_MEMBER, (np.float64, np.float32), 2)
        linear = r.array(LINEAR_MEMBER, np.float64, 2, optional=True)
        order = r.array("trainer/order", np.int64, 1)
        assert y is not None and order is not None
        bounds: Optional[Tuple[Optional[float], ...]] = None
        if backend == "kron":
            if "bounds" in t:
                saved = r.field(t, "bounds", list, "trainer")
                if len(saved) != 4 or not all(isinstance(b, (int, float)) for b in saved):
                    raise r.fail(f"trainer: 'bounds' must be 4 numbers, got {saved!r}")
                bounds = tuple(float(b) for b in saved)
            else:
                # Versions 1 and 2: the paper's model, whose a (±1) and b
                # never moved and which had no linear term.
                bounds = (float(r.field(t, "p_bound", (int, float), "trainer")), None, None, 0.0)
        steps_done = r.field(t, "steps_done", int, "trainer")
        sampler = {
            "rng": r.field(t, "sampler_rng", dict, "trainer"),
            "order": order,
            "pos": r.field(t, "sampler_pos", int, "trainer"),
        }
        settings = {
            "lr": r.field(t, "lr", (int, float), "trainer"),
            "batch_size": r.field(t, "batch_size", int, "trainer"),
            "index": r.field(t, "index", str, "trainer"),
            "backend": backend,
            "seed": r.field(t, "seed", int, "trainer"),
            "gram": r.field(t, "gram", str, "trainer"),
            "gram_budget_bytes": r.field(t, "gram_budget_bytes", int, "trainer"),
        }
        # Fields version 3 added (their defaults before it).
        for key, kind in (
            ("lr_a", (int, float)),
            ("lr_b", (int, float)),
            ("lr_c", (int, float)),
            ("lr_v", (int, float)),
            ("loss", str),
            ("ridge_a", (int, float)),
            ("ridge_b", (int, float)),
            ("ridge_c", (int, float)),
            ("ridge_v", (int, float)),
            ("schedule", dict),
            ("dtype", str),
        ):
            if key in t:
                settings[key] = r.field(t, key, kind, "trainer")

        def make() -> Tuple[TwoLayerNet, KronPoints, TrainerState]:
            net = TwoLayerNet.from_state(net_state, placement)
            saved = net_state.blocks[block]
            data = from_arrays(saved.kind, saved.points, y)
            expected = (width, data.n) if backend == "kron" else (width, data.d)
            if core_state.shape != expected:
                raise r.fail(f"{STATE_MEMBER} has shape {core_state.shape}, expected {expected}")
            _check_sampler(r, sampler, data.n, steps_done)
            # Only the neurons this process holds (all of them in one process).
            first, count = neurons
            # A float32 trainer's P is stored as float64 (exactly its values).
            kind = np.float32 if settings.get("dtype") == "float32" else np.float64
            mine = np.ascontiguousarray(core_state[first : first + count], kind)
            held = bounds
            if held is not None and held[1] is None:
                # This process's a and b; a sharded trainer agrees on the
                # maxima over the ranks.
                a, b = net.head.a(), net.head.thresholds()
                held = (held[0], float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)), 0.0)
            state = TrainerState(
                config=TrainerConfig.from_dict(settings),
                steps_done=steps_done,
                sampler=sampler,
                core=CoreState(mine, held, linear),  # type: ignore[arg-type]
                block=block,
                y=y,
            )
            return net, data, state

        made: Tuple[TwoLayerNet, KronPoints, TrainerState] = fileformat.build(r, make)
        return made


def _check_sampler(r: fileformat.Reader, sampler: Any, n: int, steps_done: int) -> None:
    """Ranges of the sampler's state, before any allocation."""
    order, pos = sampler["order"], sampler["pos"]
    if order.size and not np.array_equal(np.sort(order), np.arange(n)):
        raise r.fail("trainer/order is not a permutation of the training points")
    if not 0 <= pos <= order.size:
        raise r.fail(f"trainer: sampler position {pos} is outside the epoch of {order.size} points")
    if not 0 <= steps_done <= MAX_STEPS:
        raise r.fail(f"trainer: steps_done {steps_done} is outside [0, 2**63 - 1] (the step counter is an int64)")
    try:
        np.random.default_rng().bit_generator.state = sampler["rng"]
    except (TypeError, ValueError, KeyError, OverflowError, AttributeError) as exc:
        # (A negative or too large 128-bit state word is an OverflowError.)
        raise FileFormatError(r.path, f"trainer: the sampler's generator state is invalid ({exc})") from None
