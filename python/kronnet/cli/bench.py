"""Measurement helpers shared by `kronnet bench` and the asv suite.

Everything here times whole operations side by side in one process, so the
figures that matter are ratios (Kronecker vs dense, tree vs scan), which are
far steadier than absolute times on a shared machine.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from kronnet import KronData, Trainer, TwoLayerNet, make_kronecker_data, suggest_lr

from .threads import pinned_env

#: Rounds a per-step timing is repeated for its median (`time_models`,
#: `roofline_cell`): one round on this shared machine is not a measurement.
ROUNDS = 5


def pin_threads_env(threads: int) -> Dict[str, str]:
    """This process's environment with rayon, OpenMP/OpenBLAS/MKL (and so
    NumPy and PyTorch) pinned to `threads` (`kronnet.cli.threads`)."""
    return pinned_env(threads)


def median_time(fn: Callable[[], Any], min_seconds: float = 0.2, repeats: int = 5, max_calls: int = 10_000) -> float:
    """Median over `repeats` rounds of the mean seconds per call, each round
    calling `fn` until `min_seconds` have passed."""
    fn()  # warm-up: page faults, lazy pools, caches
    rounds = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds or calls >= max_calls:
                break
        rounds.append(elapsed / calls)
    return float(np.median(rounds))


def square_dims(d: int) -> Tuple[int, int]:
    """(d1, d2) with d1 * d2 = d and d1 = d2 (or d2 = 2 d1): for d = 2^k."""
    k = int(round(math.log2(d)))
    if 2**k != d:
        raise ValueError(f"d: expected a power of two, got {d}")
    return (2 ** (k // 2), 2 ** (k - k // 2))


class NumpyDenseSGD:
    """The straightforward NumPy SGD step of the same model: materialized X
    (n × d) and W (m × d), O(S m d) per step."""

    def __init__(self, net: TwoLayerNet, data: KronData, lr: float, W: Optional[np.ndarray] = None) -> None:
        self.X = data.dense()
        self.y = np.asarray(data.y)
        self.W = net.initial_weights() if W is None else W
        self.a, self.b, self.lr = np.asarray(net.a), net.threshold, lr
        self.scale = 1.0 / math.sqrt(net.width)

    def step(self, batch: np.ndarray) -> float:
        xb = self.X[batch]
        z = xb @ self.W.T
        e = np.maximum(z - self.b, 0.0) @ self.a * self.scale - self.y[batch]
        coef = (e[:, None] * (z > self.b) * self.a[None, :]) * (self.scale / len(batch))
        self.W -= self.lr * (coef.T @ xb)
        return float(e @ e / (2 * len(batch)))


class TorchDenseSGD:
    """The same step in PyTorch on the CPU (float64)."""

    def __init__(self, net: TwoLayerNet, data: KronData, lr: float, W: Optional[np.ndarray] = None) -> None:
        import torch

        self.torch = torch
        self.X = torch.from_numpy(data.dense())
        self.y = torch.from_numpy(np.array(data.y))
        self.W = torch.from_numpy(net.initial_weights() if W is None else W)
        self.a = torch.from_numpy(np.array(net.a))
        self.b, self.lr, self.scale = net.threshold, lr, 1.0 / math.sqrt(net.width)

    def step(self, batch: np.ndarray) -> float:
        torch = self.torch
        with torch.no_grad():
            idx = torch.from_numpy(batch)
            xb = self.X[idx]
            z = xb @ self.W.T
            e = torch.clamp(z - self.b, min=0.0) @ self.a * self.scale - self.y[idx]
            coef = (e[:, None] * (z > self.b) * self.a[None, :]) * (self.scale / len(batch))
            self.W -= self.lr * (coef.T @ xb)
            return float(e @ e / (2 * len(batch)))


def torch_available() -> bool:
    """Whether PyTorch is installed (without importing it: loading torch's
    OpenMP runtime into this process slows NumPy's BLAS down several-fold,
    so PyTorch is only ever timed in a child process)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def batches(n: int, size: int, count: int, seed: int = 0) -> List[np.ndarray]:
    """`count` fixed batches for repeatable timing."""
    rng = np.random.default_rng(seed)
    return [rng.choice(n, size=size, replace=False).astype(np.int64) for _ in range(count)]


def cycle(items: Sequence[Any]) -> Callable[[], Any]:
    """A callable returning the items in turn, forever."""
    state = {"i": 0}

    def nxt() -> Any:
        item = items[state["i"] % len(items)]
        state["i"] += 1
        return item

    return nxt


def threshold_for_fraction(q: float) -> float:
    """b with P(N(0, 1) > b) = q: unit-norm inputs then fire a fraction q of
    the neurons at initialization."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(1.0 - q)


def time_index(
    index: str,
    n: int,
    width: int,
    threshold: Optional[float],
    batch_size: int = 8,
    dims: Tuple[int, ...] = (16, 16),
    epochs: float = 2.0,
    seed: int = 0,
) -> Dict[str, Any]:
    """Steady-state per-step figures of one activation index: one epoch of
    warm-up (at most 256 steps; enough for lazily synced structures to reach
    their steady lag), then `epochs` epochs (at least 128 steps) timed."""
    data = make_kronecker_data(n, dims=dims, seed=seed)
    net = TwoLayerNet(dims, width, threshold=threshold, seed=seed)
    tr = Trainer(net, data, lr=suggest_lr(net, batch_size), batch_size=batch_size, index=index, seed=seed)  # type: ignore[arg-type]
    per_epoch = math.ceil(n / batch_size)
    tr.fit(min(per_epoch, 256))
    before = tr.index_stats()
    steps = max(128, int(epochs * per_epoch))
    hist = tr.fit(steps)
    after = tr.index_stats()
    per_step = {k: (after[k] - before[k]) / steps for k in after if k != "memory_bytes"}
    return {
        "index": index,
        "n": n,
        "width": width,
        "threshold": net.threshold,
        "batch_size": batch_size,
        "fired_per_point": float(hist.fired_per_point.mean()),
        "fired_union": float(hist.fired_union.mean()),
        "step_seconds": hist.seconds / steps,
        "index_seconds": per_step.pop("seconds"),
        "per_step": per_step,
        "index_memory_bytes": after["memory_bytes"],
        "steps": steps,
    }


def numpy_gemm_seconds(
    shape_a: Tuple[int, int], shape_b: Tuple[int, int], seed: int = 0, min_seconds: float = 0.2
) -> float:
    """Median seconds of NumPy's A @ B for random float64 A, B."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    return median_time(lambda: a @ b, min_seconds=min_seconds, repeats=5)


def init_over_blas(d: int, n: int, width: int, rounds: int = 9, pause: float = 0.25, seed: int = 0) -> Dict[str, Any]:
    """P(0) against the machine's BLAS at input dimension d (two equal
    factors): kronnet's `preactivations` (W(0) regenerated, normals
    included, never held whole) and NumPy's X @ W(0)^T on materialized
    random arrays of the same shapes, timed alternately for `rounds` rounds.

    Each timed call follows a `pause`: OpenBLAS's worker threads spin for
    about 0.1 s after a call, and a kronnet call started inside that window
    shares its cores with them. Returns both medians and the per-round
    ratio's median and quartiles."""
    dims = square_dims(d)
    data = make_kronecker_data(n, dims=dims, seed=seed)
    net = TwoLayerNet(dims, width, seed=seed)
    rng = np.random.default_rng(seed)
    x, w_t = rng.standard_normal((n, d)), rng.standard_normal((d, width))
    net.preactivations(data)
    _ = x @ w_t
    ours, blas = [], []
    for _ in range(rounds):
        time.sleep(pause)
        start = time.perf_counter()
        net.preactivations(data)
        ours.append(time.perf_counter() - start)
        time.sleep(pause)
        start = time.perf_counter()
        _ = x @ w_t
        blas.append(time.perf_counter() - start)
    ratio = np.array(ours) / np.array(blas)
    return {
        "d": d,
        "dims": list(dims),
        "n": n,
        "width": width,
        "rounds": rounds,
        "kronnet_seconds": float(np.median(ours)),
        "numpy_seconds": float(np.median(blas)),
        "ratio": float(np.median(ratio)),
        "ratio_q1": float(np.percentile(ratio, 25)),
        "ratio_q3": float(np.percentile(ratio, 75)),
    }


def time_kron(
    d: int, n: int, width: int, batch_size: int, steps: int, index: str = "auto", seed: int = 0
) -> Dict[str, Any]:
    """Init time, steady per-step time and the step-GEMM rate of the
    Kronecker backend at input dimension d (two equal factors)."""
    dims = square_dims(d)
    data = make_kronecker_data(n, dims=dims, seed=seed)
    net = TwoLayerNet(dims, width, seed=seed)
    start = time.perf_counter()
    tr = Trainer(net, data, lr=suggest_lr(net, batch_size), batch_size=batch_size, index=index, seed=seed)  # type: ignore[arg-type]
    init = time.perf_counter() - start
    tr.fit(min(steps, math.ceil(n / batch_size)))  # warm-up
    # Five rounds, medians: one noisy stretch on a shared machine moves
    # one round, not the figure.
    rounds = []
    for _ in range(5):
        upd0 = tr.update_stats()
        hist = tr.fit(steps)
        upd1 = tr.update_stats()
        rounds.append(
            (
                hist.seconds / steps,
                (upd1["seconds"] - upd0["seconds"]) / steps,
                (upd1["flops"] - upd0["flops"]) / steps,
                hist,
            )
        )
    step_seconds = float(np.median([r[0] for r in rounds]))
    gemm_seconds = float(np.median([r[1] for r in rounds]))
    gemm_flops = float(np.median([r[2] for r in rounds]))
    mean_r = float(np.mean([r[3].fired_union.mean() for r in rounds]))
    hist = rounds[-1][3]
    return {
        "d": d,
        "dims": list(dims),
        "index": tr.index,
        "init_seconds": init,
        "step_seconds": step_seconds,
        "fired_union": mean_r,
        "fired_per_point": float(hist.fired_per_point.mean()),
        "gemm_seconds": gemm_seconds,
        "gemm_gflops": gemm_flops / gemm_seconds / 1e9 if gemm_seconds > 0 else float("nan"),
        "loss_first": float(hist.loss[0]),
        "loss_last": float(hist.loss[-1]),
    }


def time_dense_steps(kind: str, d: int, n: int, width: int, batch_size: int, seed: int = 0) -> float:
    """Median per-step seconds of a dense SGD step: "numpy", the in-package
    dense backend ("dense"), or "torch" (timed in a child process, which runs
    this function with "torch-inprocess"; see `torch_available`)."""
    if kind == "torch":
        return _in_child(f"time_dense_steps('torch-inprocess', {d}, {n}, {width}, {batch_size}, {seed})")
    dims = square_dims(d)
    data = make_kronecker_data(n, dims=dims, seed=seed)
    net = TwoLayerNet(dims, width, seed=seed)
    lr = suggest_lr(net, batch_size)
    nb = cycle(batches(n, batch_size, 16, seed))
    if kind == "dense":
        tr = Trainer(net, data, lr=lr, batch_size=batch_size, backend="dense", seed=seed)
        return median_time(lambda: tr.step(nb()), min_seconds=0.3, repeats=3)
    sgd = NumpyDenseSGD(net, data, lr) if kind == "numpy" else TorchDenseSGD(net, data, lr)
    return median_time(lambda: sgd.step(nb()), min_seconds=0.3, repeats=3)


def _child_output(code: str) -> str:
    """Runs `code` in a fresh Python with this environment and returns the
    last line it printed."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def _in_child(call: str) -> float:
    """Evaluates `call` (an expression over this module) in a fresh Python
    and returns its float result."""
    return float(_child_output(f"from kronnet.cli.bench import *\nprint(repr({call}))\n"))


def peak_memory_of_run(d: int, n: int, width: int, batch_size: int, steps: int) -> int:
    """Peak resident bytes of a fresh process that trains the Kronecker
    backend at dimension d (init, `steps` steps, a prediction)."""
    code = (
        "import kronnet as kn\n"
        f"data = kn.make_kronecker_data({n}, dims={square_dims(d)}, seed=0)\n"
        f"net = kn.TwoLayerNet(data.dims, {width}, seed=0)\n"
        f"tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, {batch_size}), batch_size={batch_size})\n"
        f"tr.fit({steps})\n"
        "net.predict(data.take(list(range(8))))\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so
        # a child would report its parent's peak (here the dense baselines').
        "print([int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0])\n"
    )
    return int(_child_output(code))


def trainer_churn(
    n: int, width: int, dims: Tuple[int, ...], trainers: int, steps: int, probe_points: int
) -> List[Dict[str, float]]:
    """Builds and drops `trainers` trainers on one net, one after another,
    on the same data; after each, the process's resident memory (glibc
    trimmed, so freed blocks do not count) and the median time of
    `net.predict` on `probe_points` fresh points. Flat figures show that a
    dropped trainer leaves nothing behind but the net's one coefficient block.
    """
    import ctypes
    import gc

    try:
        trim: Optional[Callable[[int], int]] = ctypes.CDLL("libc.so.6").malloc_trim
    except OSError:
        trim = None

    def rss() -> int:
        gc.collect()
        if trim is not None:
            trim(0)
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    data = make_kronecker_data(n, dims=dims, seed=0)
    probe = make_kronecker_data(probe_points, dims=dims, seed=1)
    net = TwoLayerNet(dims, width, seed=0)
    rows = []
    for k in range(1, trainers + 1):
        tr = Trainer(net, data, lr=suggest_lr(net, 8))
        tr.fit(steps)
        del tr
        rows.append(
            {
                "trainers": k,
                "rss_bytes": rss(),
                "predict_seconds": median_time(lambda: net.predict(probe), min_seconds=1.0, repeats=7),
                "blocks": len(net.coefficients),
            }
        )
    return rows


def churn_table(rows: List[Dict[str, float]]) -> str:
    """The churn measurement as a Markdown table, relative to k = 1."""
    first = rows[0]
    lines = [
        "| trainers built and dropped | RSS MiB | vs k=1 | predict ms | vs k=1 | blocks |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['trainers']} | {r['rss_bytes'] / 2**20:.1f} | {r['rss_bytes'] / first['rss_bytes']:.3f} | "
            f"{r['predict_seconds'] * 1e3:.2f} | {r['predict_seconds'] / first['predict_seconds']:.3f} | {r['blocks']} |"
        )
    return "\n".join(lines)


def pair_init(n_pairs: int, sizes: Sequence[int], dims: Sequence[int], width: int, repeats: int = 3) -> Dict[str, Any]:
    """Initialization on PairData against KronData of the same points: each
    round times one PairData init and one KronData init back to back (so
    both see the same machine load), then the median ratio and the largest
    difference between the two P(0)."""
    from kronnet import make_pair_data

    pairs = make_pair_data(n_pairs, list(sizes), dims=dims, seed=0)
    kron = pairs.to_kron_data()
    net = TwoLayerNet(pairs.dims, width, seed=0)
    p_pair, p_kron = net.preactivations(pairs), net.preactivations(kron)  # also the warm-up
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        net.preactivations(pairs)
        mid = time.perf_counter()
        net.preactivations(kron)
        rounds.append((mid - start, time.perf_counter() - mid))
    pair_s, kron_s = np.array(rounds).T
    return {
        "n_pairs": n_pairs,
        "entities": list(sizes),
        "dims": list(dims),
        "width": width,
        "pair_seconds": pair_s.tolist(),
        "kron_seconds": kron_s.tolist(),
        "ratio": (pair_s / kron_s).tolist(),
        "max_abs_diff": float(np.max(np.abs(p_pair - p_kron))),
        "max_abs_p0": float(np.max(np.abs(p_kron))),
        "pair_bytes": pairs.core_nbytes,
        "kron_bytes": kron.core_nbytes,
    }


def end_to_end(
    dims: Sequence[int],
    n: int,
    width: int,
    init: str,
    init_rank: int,
    steps: int,
    predicted: int,
    batch_size: int = 8,
    roofline_seconds: float = 1.0,
) -> Dict[str, Any]:
    """The whole pipeline in a fresh process — generate the data, build the
    trainer (init and Gram), train `steps` steps, generate and predict
    `predicted` new points — with each phase's wall time, the process's
    peak resident memory (VmHWM), and the machine's FMA peak and normal
    rate measured for `roofline_seconds` each just before the run (see
    `contraction_floor`)."""
    code = (
        "import json, time, kronnet as kn, kronnet.roofline\n"
        # The machine's ceilings, measured in the same process just before
        # the run (roofline.rs).
        f"peak = kn.roofline.fma_peak_gflops({roofline_seconds})\n"
        f"normals = kn.roofline.normals_per_second({roofline_seconds})\n"
        "t = [time.perf_counter()]\n"
        f"data = kn.make_kronecker_data({n}, dims={tuple(dims)}, seed=0)\n"
        "t.append(time.perf_counter())\n"
        f"net = kn.TwoLayerNet(data.dims, {width}, seed=0, init={init!r}, init_rank={init_rank})\n"
        f"tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, {batch_size}), batch_size={batch_size})\n"
        "t.append(time.perf_counter())\n"
        f"hist = tr.fit({steps})\n"
        "t.append(time.perf_counter())\n"
        f"new = kn.make_kronecker_data({predicted}, dims={tuple(dims)}, seed=1)\n"
        "t.append(time.perf_counter())\n"
        "out = net.predict(new)\n"
        "t.append(time.perf_counter())\n"
        "rss = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "phases = ['data', 'init', 'train', 'new_data', 'predict']\n"
        "res = {p: t[i + 1] - t[i] for i, p in enumerate(phases)}\n"
        "res.update(total=t[-1] - t[0], peak_rss_bytes=rss, loss_start=float(hist.loss[0]),\n"
        "           loss_end=float(hist.loss[-1]), threshold=net.threshold,\n"
        "           fma_peak_gflops=peak, normals_per_second=normals)\n"
        "print(json.dumps(res))\n"
    )
    import json

    res: Dict[str, Any] = json.loads(_child_output(code))
    d = math.prod(dims)
    res.update(
        dims=list(dims), d=d, n=n, width=width, init_kind=init, init_rank=init_rank, steps=steps, predicted=predicted
    )
    # Multiply-adds of init and prediction: per point and neuron, R sum_k d_k
    # (kron) or d (Gaussian); times 2 for flops.
    per_point = init_rank * sum(dims) if init == "kron" else d
    res["init_flops"] = 2.0 * n * width * per_point
    res["predict_flops"] = 2.0 * predicted * width * per_point
    # Init and prediction each regenerate every neuron's W(0) (or factor
    # vectors) once: width * per_point normals per pass.
    res["normals_per_pass"] = float(width * per_point)
    res["floor"] = contraction_floor(res)
    return res


def contraction_floor(run: Dict[str, Any], gflops: Optional[float] = None) -> Optional[float]:
    """The least time init and prediction of an `end_to_end` run could take
    on its machine at that moment: their flops at the FMA peak plus their
    two passes of normals at the generator's rate, both measured in the run's
    process (whatever the GEMM, these compete for the same cores). None
    where the peak could not be measured. With `gflops`, the flops run at
    that rate instead of the peak (`pipeline_at_rate`)."""
    rate = gflops if gflops is not None else run.get("fma_peak_gflops")
    if not rate:
        return None
    flops = run["init_flops"] + run["predict_flops"]
    return float(flops / (rate * 1e9) + 2.0 * run["normals_per_pass"] / run["normals_per_second"])


def pipeline_at_rate(run: Dict[str, Any], gflops: float) -> float:
    """Seconds an `end_to_end` run would take if init's and prediction's
    products all ran at `gflops` and cost nothing else but their normals:
    the measured data and training phases plus `contraction_floor` at that
    rate. At the machine's BLAS rate, a bound no GEMM library short of a
    better BLAS than the machine's could beat."""
    floor = contraction_floor(run, gflops)
    assert floor is not None, "a positive rate always gives a floor"
    return float(run["data"] + run["new_data"] + run["train"] + floor)


#: The models `kronnet bench model` times side by side: the paper's (W
#: alone, one output, squared loss) and the full model with every part
#: trained, with one output and with ten softmax outputs.
MODEL_CASES: Dict[str, Dict[str, Any]] = {
    "paper": {"outputs": 1, "loss": "squared", "parts": "w"},
    "full C=1": {"outputs": 1, "loss": "squared", "parts": "wabcv"},
    "full C=1, b frozen": {"outputs": 1, "loss": "squared", "parts": "wacv"},
    "full C=10": {"outputs": 10, "loss": "cross_entropy", "parts": "wabcv"},
    "full C=10, b frozen": {"outputs": 10, "loss": "cross_entropy", "parts": "wacv"},
}


def model_trainer(
    case: str, data: KronData, width: int, batch_size: int, seed: int = 0, ridge_b: float = 0.0, **overrides: float
) -> Trainer:
    """A trainer of MODEL_CASES[case] on `data` (regression targets; ten
    classes by the targets' deciles for a softmax case) at the rates
    `suggest_rates` gives, `overrides` replacing any of them."""
    from kronnet import suggest_rates

    spec = MODEL_CASES[case]
    if spec["loss"] == "cross_entropy":
        y = np.asarray(data.y)
        labels = np.digitize(y, np.quantile(y, np.linspace(0, 1, spec["outputs"] + 1)[1:-1]))
        data = data.with_targets(labels.astype(np.float64))  # type: ignore[assignment]
    net = TwoLayerNet(data.dims, width, seed=seed, outputs=spec["outputs"])
    rates = suggest_rates(net, batch_size, data, parts=spec["parts"], loss=spec["loss"])
    rates.update(overrides)
    return Trainer(
        net,
        data,
        batch_size=batch_size,
        seed=seed,
        loss=spec["loss"],
        ridge_b=ridge_b,
        lr=rates["lr"],
        lr_a=rates["lr_a"],
        lr_b=rates["lr_b"],
        lr_c=rates["lr_c"],
        lr_v=rates["lr_v"],
    )


def time_models(d: int, n: int, width: int, batch_size: int, steps: int, rounds: int = ROUNDS) -> Dict[str, Any]:
    """Per-step seconds of every MODEL_CASES model at input dimension d (two
    equal factors), on the same points: an epoch of warm-up each, then
    `rounds` rounds that time `steps` steps of each model in turn (so a
    noisy stretch of the machine hits every model alike); medians."""
    data = make_kronecker_data(n, dims=square_dims(d), seed=0)
    trainers = {case: model_trainer(case, data, width, batch_size) for case in MODEL_CASES}
    for tr in trainers.values():
        tr.fit(math.ceil(n / batch_size))
    times: Dict[str, List[float]] = {case: [] for case in MODEL_CASES}
    fired: Dict[str, List[float]] = {case: [] for case in MODEL_CASES}
    for _ in range(rounds):
        for case, tr in trainers.items():
            hist = tr.fit(steps)
            times[case].append(hist.seconds / steps)
            fired[case].append(float(hist.fired_per_point.mean()))
    return {
        "d": d,
        "step_seconds": {case: float(np.median(t)) for case, t in times.items()},
        "step_seconds_range": {case: [float(min(t)), float(max(t))] for case, t in times.items()},
        "fired_per_point": {case: float(np.mean(f)) for case, f in fired.items()},
    }


def fired_over_training(
    n: int, width: int, batch_size: int, steps: int, windows: int = 10, d: int = 2**12
) -> Dict[str, Any]:
    """The fraction of neurons a point fires, window by window over a long
    run of the full C = 10 model, with the thresholds trained (at the
    suggested rate, and at that rate with a ridge pulling them back to
    b(0)) and frozen; with the thresholds' mean and minimum at the end."""
    data = make_kronecker_data(n, dims=square_dims(d), seed=0)
    out: Dict[str, Any] = {}
    for name in ("b trained", "b trained, ridge_b", "b frozen"):
        tr = model_trainer("full C=10", data, width, batch_size)
        if name != "b trained":
            # The ridge pulls every threshold 1% of the way back to b(0) per step.
            lr_b = tr.config.lr_b
            tr = model_trainer(
                "full C=10",
                data,
                width,
                batch_size,
                ridge_b=0.01 / lr_b if name.endswith("ridge_b") else 0.0,
                lr_b=lr_b if name.endswith("ridge_b") else 0.0,
            )
        hist = tr.fit(steps)
        per = hist.fired_per_point / width
        chunks = np.array_split(per, windows)
        b = tr.net.thresholds
        out[name] = {
            "fired_fraction": [float(c.mean()) for c in chunks],
            "step_seconds": hist.seconds / steps,
            "threshold_start": tr.net.threshold,
            "threshold_mean_end": float(b.mean()),
            "threshold_min_end": float(b.min()),
            "loss_first": float(hist.full_loss[0][1]),
            "loss_last": float(hist.full_loss[-1][1]),
        }
    return out


def timed_steps(tr: Trainer, steps: int) -> Tuple[float, Any]:
    """Seconds for `steps` steps on the sampler's next batches, through
    ``Trainer.run`` (no full loss evaluated, unlike ``fit``), and the
    History."""
    batches = [tr.next_batch() for _ in range(steps)]
    start = time.perf_counter()
    hist = tr.run(batches)
    return time.perf_counter() - start, hist


def step_traffic(
    n: int, width: int, batch: int, union: float, total: float, dtype: str, gram: str, index: str
) -> Dict[str, float]:
    """The bytes a Kronecker step must move and the flops it must do, from
    its shape and its fired neurons (|R| = `union`, Σ|A_i| = `total`, means
    per step): P[:, R] read and written, K[B, :] read (and written first
    when computed from the factors), the index's share, α at the batch;
    2 n flops per nonzero coefficient (one axpy over n each)."""
    elem = 4 if dtype == "float32" else 8
    p_bytes = 2.0 * n * union * elem
    k_bytes = batch * n * 8.0 * (2 if gram == "columns" else 1)
    if dtype == "float32":
        k_bytes += batch * n * 4.0  # the rows rounded to float32
    if index == "bits":
        index_bytes = 3.0 * union * n / 8  # the new masks, the stored ones read and written
    elif index == "scan":
        index_bytes = batch * width * 64.0  # one cache line per neuron of each batch row
    else:
        index_bytes = batch * width * 8.0
    alpha_bytes = 2.0 * batch * union * 8
    return {
        "bytes": p_bytes + k_bytes + index_bytes + alpha_bytes,
        "p_bytes": p_bytes,
        "flops": 2.0 * n * total,
    }


def roofline_cell(
    n: int, width: int, dtype: str, steps: int, batch: int = 8, seed: int = 0, rounds: int = ROUNDS
) -> Optional[Dict[str, Any]]:
    """One (n, m, dtype) cell of `kronnet bench roofline`: a trainer on
    pairwise data (tables of 64-dimensional entities), its step time, the
    step's bytes and flops, the stream bandwidth of a buffer the size of its
    P and the FMA peak, and the lower bound max(bytes / bandwidth,
    flops / peak).

    Each of `rounds` rounds times `steps` further steps and then measures
    the bandwidth and the peak, and its ratio (step time over bound) uses
    its own measurements: on a shared machine the bandwidth varies by up to
    2x from one run to the next, and a ratio of one run's step to another
    run's bandwidth is not a measurement. The cell reports the medians over
    the rounds, the ratio's range (``ratio_min``, ``ratio_max``) and every
    round (``rounds``). None when the trainer would not fit in 60% of the
    available memory.

    A second bound (``bound_cached_seconds``, ``ratio_cached``) uses the
    bandwidth of a buffer the size of what one step touches (its fired rows
    of P and its rows of K) instead of all of P: the rows consecutive steps
    share can stay in the last-level cache, so where P outgrows the cache
    but a step's rows do not, the P-sized bound is no lower bound (a step
    can beat it) and this one is."""
    from kronnet import make_pair_data
    from kronnet.roofline import fma_peak_gflops, stream_gbytes

    side = max(64, int(math.ceil(math.sqrt(2.0 * n))))
    data = make_pair_data(n, (side, side), dims=(64, 64), seed=seed)
    net = TwoLayerNet(data.dims, width, seed=seed)
    need = Trainer.estimate_memory(net, data, dtype=dtype)  # type: ignore[arg-type]
    import os

    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > 0.6 * avail:
        return None
    start = time.perf_counter()
    tr = Trainer(net, data, lr=suggest_lr(net, batch), batch_size=batch, seed=seed, dtype=dtype)  # type: ignore[arg-type]
    build = time.perf_counter() - start
    timed_steps(tr, 5)
    elem = 4 if dtype == "float32" else 8
    state = n * width * elem
    measured: List[Dict[str, float]] = []
    for _ in range(max(1, int(rounds))):
        seconds, hist = timed_steps(tr, steps)
        bandwidth = stream_gbytes(min(state, 1 << 30), 0.3) or float("nan")
        peak = fma_peak_gflops(0.1) or float("nan")
        union, total = float(hist.fired_union.mean()), float(hist.fired_total.mean())
        # What one step touches: its fired rows of P and its rows of K.
        working = int(union * n * elem + batch * n * 8)
        cached = stream_gbytes(min(max(working, 1 << 16), 1 << 30), 0.3) or float("nan")
        traffic = step_traffic(n, width, batch, union, total, dtype, tr.gram, tr.index)
        bound = max(traffic["bytes"] / (bandwidth * 1e9), traffic["flops"] / (peak * 1e9))
        bound_cached = max(traffic["bytes"] / (cached * 1e9), traffic["flops"] / (peak * 1e9))
        measured.append(
            {
                "step_seconds": seconds / steps,
                "fired_union": union,
                "fired_total": total,
                "stream_gbytes": bandwidth,
                "working_bytes": float(working),
                "working_stream_gbytes": cached,
                "fma_gflops": peak,
                **traffic,
                "bound_seconds": bound,
                "ratio": seconds / steps / bound,
                "bound_cached_seconds": bound_cached,
                "ratio_cached": seconds / steps / bound_cached,
            }
        )
    medians = {key: float(np.median([r[key] for r in measured])) for key in measured[0]}
    ratios = [r["ratio"] for r in measured]
    cached_ratios = [r["ratio_cached"] for r in measured]
    return {
        "n": n,
        "width": width,
        "dtype": dtype,
        "gram": tr.gram,
        "index": tr.index,
        "build_seconds": build,
        "state_bytes": state,
        **medians,
        "ratio_min": float(min(ratios)),
        "ratio_max": float(max(ratios)),
        "ratio_cached_min": float(min(cached_ratios)),
        "ratio_cached_max": float(max(cached_ratios)),
        "rounds": measured,
    }


def batch_scaling(
    n: int, width: int, sizes: Sequence[int], seconds: float = 2.0, dtype: str = "float32"
) -> List[Dict[str, Any]]:
    """Steps/s and points/s against the batch size S on one pairwise data
    set: the fired union grows slower than S, so larger batches move fewer
    bytes per point; each S at `suggest_lr(net, S)`."""
    from kronnet import make_pair_data

    side = max(64, int(math.ceil(math.sqrt(2.0 * n))))
    data = make_pair_data(n, (side, side), dims=(64, 64), seed=0)
    out = []
    for s in sizes:
        net = TwoLayerNet(data.dims, width, seed=0)
        tr = Trainer(net, data, lr=suggest_lr(net, s), batch_size=s, seed=0, dtype=dtype)  # type: ignore[arg-type]
        timed_steps(tr, 3)
        done, spent, unions = 0, 0.0, []
        while spent < seconds:
            took, hist = timed_steps(tr, max(1, min(50, int(4096 / s))))
            done += hist.steps
            spent += took
            unions.append(float(hist.fired_union.mean()))
        out.append(
            {
                "batch_size": s,
                "lr": tr.lr,
                "steps_per_second": done / spent,
                "points_per_second": done * s / spent,
                "fired_union": float(np.mean(unions)),
                "union_per_point": float(np.mean(unions)) / s,
            }
        )
    return out


def predict_times(
    n_trains: Sequence[int], dims: Tuple[int, int], width: int, queries: int = 10_000
) -> List[Dict[str, Any]]:
    """Predict time of `queries` new pairs after training on n_train pairs
    (a trained block of that size; 200 steps), through folded weights (the
    first call, with the fold, and a second) and through the training
    points, side by side."""
    from kronnet import PairData, make_pair_data
    from kronnet.model import net as net_module

    out = []
    for n in n_trains:
        side = max(64, int(math.ceil(math.sqrt(2.0 * n))))
        data = make_pair_data(n, (side, side), dims=dims, seed=0)
        rng = np.random.default_rng(1)
        test = PairData(data.tables, np.stack([rng.integers(0, side, queries), rng.integers(0, side, queries)], axis=1))
        net = TwoLayerNet(data.dims, width, seed=0)
        Trainer(net, data, lr=suggest_lr(net, 8), batch_size=8).fit(200)
        row: Dict[str, Any] = {"n_train": n, "dims": list(dims), "width": width, "queries": queries, "folds": net.folds}
        start = time.perf_counter()
        fold_first = net.predict(test)
        row["folded_first_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        net.predict(test)
        row["folded_again_seconds"] = time.perf_counter() - start
        saved = net_module.FOLD_BYTES
        net_module.FOLD_BYTES = 0
        try:
            start = time.perf_counter()
            scan = net.predict(test)
            row["scan_seconds"] = time.perf_counter() - start
        finally:
            net_module.FOLD_BYTES = saved
        row["max_rel_diff"] = float(np.max(np.abs(fold_first - scan)) / max(np.max(np.abs(scan)), 1e-300))
        out.append(row)
    return out


def large_run(n: int, width: int, seconds: float, dtype: str = "float32", comm: Any = None) -> Dict[str, Any]:
    """Training on `n` pairs (tables of ~sqrt(2n) entities of 64 values
    each, d = 4096), never an n × n matrix (K[B, :] from the tables per
    step): build time, steps timed for about `seconds`, the epoch time they
    imply, and this process's peak resident memory. Under MPI (`comm`)
    every rank reports its own."""
    import resource

    from kronnet import make_pair_data

    side = int(math.ceil(math.sqrt(2.0 * n)))
    data = make_pair_data(n, (side, side), dims=(64, 64), seed=0)
    net = TwoLayerNet(data.dims, width, seed=0)
    start = time.perf_counter()
    tr = Trainer(net, data, lr=suggest_lr(net, 8), batch_size=8, dtype=dtype, comm=comm)  # type: ignore[arg-type]
    build = time.perf_counter() - start
    timed_steps(tr, 3)
    done, spent, losses = 0, 0.0, []
    while spent < seconds:
        took, hist = timed_steps(tr, 20)
        done += hist.steps
        spent += took
        losses.extend(hist.loss.tolist())
    per_step = spent / done
    return {
        "n": n,
        "width": width,
        "dtype": dtype,
        "ranks": 1 if comm is None else comm.Get_size(),
        "gram": tr.gram,
        "index": tr.index,
        "build_seconds": build,
        "steps": done,
        "step_seconds": per_step,
        "epoch_seconds": per_step * math.ceil(n / 8),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "loss_first": float(np.mean(losses[:20])),
        "loss_last": float(np.mean(losses[-20:])),
    }
