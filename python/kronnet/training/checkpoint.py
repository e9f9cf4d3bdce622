"""Training checkpoints: a trainer written to one file and continued from it
bitwise exactly (docs/format.md, kind "checkpoint").

A checkpoint is a saved net (every coefficient block with its points) plus
what the trainer alone knows: its data's targets (in the net's block), lr,
batch size, index, backend, Gram mode, the sampler's generator state, epoch
order and position, the step count, and the training state itself — P for
the Kronecker backend (recomputing it from the coefficients would round
differently), W for the dense one.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from . import storage
from .errors import FileFormatError


def write(trainer: Any, path: Any) -> None:
    """Writes `trainer` (see `Trainer.checkpoint`). A sharded trainer writes
    the same file one process would: rank 0 writes it while the coefficients
    and P arrive from the ranks a piece at a time (`storage.write_sharded`)."""
    group = trainer._group
    if group is None:
        storage.write(path, "checkpoint", *_members(trainer, trainer.net._state()))
        return
    state = trainer.net._state_local()
    # Neuron-major rows on each rank: α as (neurons, n_j), P as (neurons, n).
    rows = [storage.alpha_member(j) for j in range(len(state["blocks"]))] + ["trainer/state"]
    # Agreed first: a rank that cannot copy out its state must not leave the
    # others waiting for its rows.
    meta, arrays = group.run(lambda: _members(trainer, state))
    storage.write_sharded(group, path, "checkpoint", meta, arrays, rows)


def _members(trainer: Any, state: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """The JSON document and the arrays of `trainer`'s checkpoint, whose
    net's state is `state` (a sharded trainer's: this rank's neurons)."""
    core_state = trainer._core.export_state()
    block = trainer.net._block_index(trainer.data)
    assert block is not None  # a trainer creates its block when it is built
    arrays = storage.net_arrays(state)
    # The trainer's own targets, which may differ from those stored with the
    # block when another data set with the same points made it.
    arrays["trainer/y"] = trainer.data.y
    arrays["trainer/state"] = core_state["state"]
    sampler = trainer._sampler.state()
    arrays["trainer/order"] = sampler["order"]
    rng = sampler["rng"]
    meta: Dict[str, Any] = {
        "net": storage.net_meta(state),
        "trainer": {
            "block": block,
            "backend": trainer.backend,
            "index": trainer.index,
            "gram": trainer.gram,
            "lr": trainer.lr,
            "batch_size": trainer.batch_size,
            "seed": trainer.seed,
            "gram_budget_bytes": trainer._gram_budget_bytes,
            "steps_done": trainer.steps_done,
            "sampler_pos": int(sampler["pos"]),
            "sampler_rng": rng,
        },
    }
    if "p_bound" in core_state:
        meta["trainer"]["p_bound"] = float(core_state["p_bound"])
    return meta, arrays


def restore(cls: Any, path: Any, comm: Any = None) -> Any:
    """A Trainer continued from the checkpoint at `path` (sharded over `comm`
    if given: every rank maps the file and reads only its neurons' rows)."""
    if comm is None:
        return _read(cls, path, None)
    from .shard import Group

    group = Group(comm)
    net, data, resume, args = group.run(lambda: _read(cls, path, group))
    tr = cls.__new__(cls)
    tr._setup(net, data, resume=resume, comm=comm, **args)
    return tr


def _read(cls: Any, path: Any, group: Any) -> Any:
    """The trainer (or, for one sharded over `group`, what it is built from)
    in the file at `path`. A rank of a sharded restore maps the coefficient
    matrices and P (`storage.Reader.mapped`) and reads only its neurons' rows."""
    from . import points
    from .net import TwoLayerNet
    from .shard import neuron_range

    with storage.Reader(path) as r:
        if r.field(r.meta, "kind", str) != "checkpoint":
            raise r.fail(f"holds a {r.meta['kind']!r}, not a training checkpoint (use kronnet.load for nets)")
        net_state = storage.read_net_state(r, mapped=group is not None)
        t = r.field(r.meta, "trainer", dict)
        block = r.field(t, "block", int, "trainer")
        if not 0 <= block < len(net_state["blocks"]):
            raise r.fail(f"trainer: block {block} does not exist")
        backend = r.field(t, "backend", str, "trainer")
        y = r.array("trainer/y", np.float64, 1)
        core_state = (
            r.mapped("trainer/state", np.float64, 2) if group is not None else r.array("trainer/state", np.float64, 2)
        )
        order = r.array("trainer/order", np.int64, 1)
        resume = {
            "state": core_state,
            "p_bound": float(r.field(t, "p_bound", (int, float), "trainer")) if backend == "kron" else None,
            "steps_done": r.field(t, "steps_done", int, "trainer"),
            "sampler": {
                "rng": r.field(t, "sampler_rng", dict, "trainer"),
                "order": order,
                "pos": r.field(t, "sampler_pos", int, "trainer"),
            },
        }
        args = {
            "lr": r.field(t, "lr", (int, float), "trainer"),
            "batch_size": r.field(t, "batch_size", int, "trainer"),
            "index": r.field(t, "index", str, "trainer"),
            "backend": backend,
            "seed": r.field(t, "seed", int, "trainer"),
            "gram": r.field(t, "gram", str, "trainer"),
            "gram_budget_bytes": r.field(t, "gram_budget_bytes", int, "trainer"),
        }

        # Outside `build`: too many ranks is the caller's error, not the file's.
        # (A width below 1 is refused as the file's error when the net is built.)
        width = net_state["width"]
        shard = None if group is None or width < 1 else (group, *neuron_range(width, group.size, group.rank))

        def make() -> Any:
            net = TwoLayerNet._from_state(net_state, shard=shard)
            saved = net_state["blocks"][block]
            data = points.from_state(saved["kind"], saved, y)
            _check_resume(r, resume, data.n, net.width, data.d, backend)
            if args["index"] == "none":
                args["index"] = "auto"
            if args["gram"] == "none":
                args["gram"] = "auto"
            if group is not None:
                return net, data, resume, args
            tr = cls.__new__(cls)
            tr._setup(net, data, resume=resume, **args)
            return tr

        return storage.build(r, make)


def _check_resume(r: Any, resume: Dict[str, Any], n: int, width: int, d: int, backend: str) -> None:
    """Shapes and ranges of the trainer's own state, before any allocation."""
    expected = (width, n) if backend == "kron" else (width, d)
    if resume["state"].shape != expected:
        raise r.fail(f"trainer/state has shape {resume['state'].shape}, expected {expected}")
    order, pos = resume["sampler"]["order"], resume["sampler"]["pos"]
    if order.size and not np.array_equal(np.sort(order), np.arange(n)):
        raise r.fail("trainer/order is not a permutation of the training points")
    if not 0 <= pos <= order.size:
        raise r.fail(f"trainer: sampler position {pos} is outside the epoch of {order.size} points")
    if resume["steps_done"] < 0:
        raise r.fail("trainer: steps_done is negative")
    try:
        np.random.default_rng().bit_generator.state = resume["sampler"]["rng"]
    except (TypeError, ValueError, KeyError) as exc:
        raise FileFormatError(r.path, f"trainer: the sampler's generator state is invalid ({exc})") from None
