"""Measurements of sharded training (`kronnet bench mpi`, docs/mpi.md).

`run` starts one measured job — ``mpiexec -n K python -m kronnet.cli.mpi_bench
CONFIG`` for a sharded trainer, or a plain process for the single-process
Trainer — and returns what its rank 0 printed: the wall time of each phase,
seconds per step, the time each rank spent in the steps' Allreduce, the
bytes per step, and each rank's peak resident memory. The driver alternates
the kinds of job round by round, so the machine's noise reaches them alike.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from .bench import pin_threads_env


def mpiexec() -> str:
    """The mpiexec next to this interpreter (the mpich wheel's), else on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = local if os.path.exists(local) else shutil.which("mpiexec")
    if not found:
        raise RuntimeError('mpiexec not found: pip install "kronnet[mpi]"')
    return found


def run(config: Dict[str, Any], ranks: Optional[int], threads: int, timeout: float = 3600.0) -> Dict[str, Any]:
    """One job: sharded over `ranks` MPI ranks, or the single-process Trainer
    (``ranks=None``), each process with `threads` threads."""
    cmd = [sys.executable, "-m", "kronnet.cli.mpi_bench", json.dumps({**config, "sharded": ranks is not None})]
    if ranks is not None:
        cmd = [mpiexec(), "-n", str(ranks), *cmd]
    env = pin_threads_env(threads)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    res: Dict[str, Any] = json.loads(lines[-1])
    res.update(ranks=ranks or 1, sharded=ranks is not None, threads=threads)
    return res


def _peak_rss() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM"))


def _worker(config: Dict[str, Any]) -> None:
    """The measured job, on every rank."""
    import numpy as np

    import kronnet as kn
    from kronnet import placement

    comm = None
    if config["sharded"]:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    rank = 0 if comm is None else comm.Get_rank()
    t = [time.perf_counter()]
    data = kn.make_kronecker_data(config["n"], dims=tuple(config["dims"]), seed=0)
    net = kn.TwoLayerNet(data.dims, config["width"], seed=0)
    t.append(time.perf_counter())
    S = config["batch_size"]
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, S), batch_size=S, index=config["index"], comm=comm)
    t.append(time.perf_counter())
    steps = config["steps"]

    def batches(k: int) -> Any:
        return [tr.next_batch() for _ in range(k)]

    # The steps as `fit` runs them, without its full-loss checkpoints.
    tr.run(batches(config["warmup"]))
    drawn = batches(steps)
    before = tr.comm_stats()
    t.append(time.perf_counter())
    hist = tr.run(drawn)
    t.append(time.perf_counter())
    losses, union, total = hist.loss, hist.fired_union, hist.fired_total
    after = tr.comm_stats()
    loss = tr.full_loss()
    t.append(time.perf_counter())
    allreduce = (after.get("allreduce_seconds", 0.0) - before.get("allreduce_seconds", 0.0)) / steps
    sent = (after.get("allreduce_bytes", 0.0) - before.get("allreduce_bytes", 0.0)) / steps
    mine = {
        "allreduce_per_step": allreduce,
        "bytes_per_step": sent,
        "peak_rss_bytes": _peak_rss(),
        # Rows of P this rank holds (without copying P to count them).
        "p_rows": placement.over(comm).neurons(config["width"])[1],
    }
    if comm is not None:
        # The message alone, in lockstep: what a step's Allreduce costs
        # without waiting for a slower rank.
        from mpi4py import MPI

        # A step's message at one output: S exact sums, the head's two
        # maxima, two fired counts and three status words.
        buf = np.zeros((S + 2) * placement.EXACT_WORDS + 5, dtype=np.int64)
        comm.Barrier()
        started = time.perf_counter()
        for _ in range(1000):
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        mine["message_alone_seconds"] = (time.perf_counter() - started) / 1000
    ranks: Optional[List[Dict[str, Any]]] = [mine] if comm is None else comm.gather(mine, root=0)
    if rank == 0:
        out = {
            "n": config["n"],
            "width": config["width"],
            "dims": config["dims"],
            "d": int(np.prod(config["dims"])),
            "batch_size": S,
            "index": tr.index,
            "steps": steps,
            "data_seconds": t[1] - t[0],
            "build_seconds": t[2] - t[1],
            "seconds_per_step": (t[4] - t[3]) / steps,
            "full_loss_seconds": t[5] - t[4],
            "loss": loss,
            "last_batch_loss": float(losses[-1]),
            "fired_union_mean": float(np.mean(union)),
            "fired_per_point_mean": float(np.sum(total) / sum(len(b) for b in drawn)),
            "per_rank": ranks,
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
