"""The `kronnet` command: `kronnet demo` trains on generated Kronecker data
and compares the Kronecker backend's per-step time with the dense one."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import List, Optional

import numpy as np

from .data import make_kronecker_data
from .net import TwoLayerNet
from .train import Trainer, suggest_lr


def _time_steps(tr: Trainer, steps: int) -> tuple:
    """(seconds per step, batch losses) over `steps` sampled steps."""
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        losses.append(tr.step())
    return (time.perf_counter() - start) / steps, np.array(losses)


def demo(args: argparse.Namespace) -> int:
    dims = tuple(args.dims)
    d = math.prod(dims)
    data = make_kronecker_data(args.n, dims=dims, seed=args.seed)
    net = TwoLayerNet(dims=dims, width=args.width, seed=args.seed)
    lr = args.lr if args.lr is not None else suggest_lr(net, args.batch_size)
    print(
        f"kronnet demo: n={data.n} points, dims={dims} (d={d}), width m={net.width}, "
        f"threshold b={net.threshold:.3f}, batch S={args.batch_size}, lr={lr:.4g}"
    )
    t0 = time.perf_counter()
    tr = Trainer(net, data, lr=lr, batch_size=args.batch_size, seed=args.seed)
    print(f"init (P(0) = <w_r(0), x_i> by regenerated GEMMs, index={tr.index}): {time.perf_counter() - t0:.2f} s")
    hist = tr.fit(args.steps, progress=not args.no_progress, eval_every=max(1, args.steps // 10))
    print("\nfull training loss:")
    for step, loss in hist.full_loss:
        print(f"  step {step:6d}   {loss:.3e}")
    start, end = hist.full_loss[0][1], hist.full_loss[-1][1]
    print(
        f"loss fell {start / end:.3g}x in {hist.steps} steps ({hist.seconds:.1f} s); "
        f"neurons fired per point: {hist.fired_per_point.mean():.0f} of {net.width} "
        f"({hist.fired_per_point.mean() / net.width:.1%}), moved per step: {hist.fired_union.mean():.0f}"
    )

    # Same model, same seed, same batches: the dense backend must agree, and
    # it shows what the d-independent step saves.
    k = args.compare_steps
    kron = Trainer(TwoLayerNet(dims, args.width, seed=args.seed), data, lr=lr, batch_size=args.batch_size, seed=1)
    dense = Trainer(
        TwoLayerNet(dims, args.width, seed=args.seed), data, lr=lr, batch_size=args.batch_size, seed=1, backend="dense"
    )
    kron.step()  # warm-up, mirrored on the dense side so batches stay aligned
    dense.step()
    t_kron, l_kron = _time_steps(kron, k)
    t_dense, l_dense = _time_steps(dense, k)
    rel = float(np.max(np.abs(l_kron - l_dense) / np.maximum(np.abs(l_dense), 1e-300)))
    print(f"\nper-step time over {k} identical steps (same seed, same batches):")
    print(f"  kronecker backend  {t_kron * 1e3:9.3f} ms")
    print(f"  dense backend      {t_dense * 1e3:9.3f} ms   (materialized X: n × {d}, W: {net.width} × {d})")
    print(f"  speedup            {t_dense / t_kron:9.1f}x   max relative loss difference {rel:.1e}")
    return 0


def _pinned(args: argparse.Namespace, argv: List[str]) -> Optional[int]:
    """Re-runs this command in a child whose environment pins rayon, BLAS and
    OpenMP to `--threads` (they read it once, at start-up); returns its exit
    code, or None when already pinned."""
    import os
    import subprocess

    from .bench import pin_threads_env

    if os.environ.get("KRONNET_BENCH_THREADS") == str(args.threads):
        return None
    env = pin_threads_env(args.threads)
    env["KRONNET_BENCH_THREADS"] = str(args.threads)
    if getattr(args, "sweep", None) == "churn":
        # glibc raises its mmap threshold to the size of the last freed
        # block, after which freed arrays stay in the heap and RSS shows the
        # allocator's caching, not the program's live memory. A fixed
        # threshold returns every freed array to the system at once.
        env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    return subprocess.call([sys.executable, "-m", "kronnet", *argv], env=env)


def _table(headers: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _save_json(path: str, payload: dict) -> None:
    import json
    import os

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2)
    print(f"wrote {path}")


def _meta(args: argparse.Namespace) -> dict:
    import datetime
    import platform

    from . import __version__

    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "kronnet": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": args.threads,
    }


def bench_scaling(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from . import bench

    n, m, S = args.n, args.width, args.batch_size
    exps = range(8, 21, 4) if args.quick else range(8, 21, 2)
    ds = [2**k for k in exps if 2**k <= args.max_d]
    torch_ok = bench.torch_available() and not args.no_torch
    results = []
    for d in tqdm(ds, desc="d sweep", unit="d", disable=args.no_progress):
        row = bench.time_kron(d, n, m, S, args.steps)
        if d <= args.dense_max_d:
            row["numpy_step_seconds"] = bench.time_dense_steps("numpy", d, n, m, S)
            row["dense_step_seconds"] = bench.time_dense_steps("dense", d, n, m, S)
            if torch_ok:
                row["torch_step_seconds"] = bench.time_dense_steps("torch", d, n, m, S)
        # The same-shape BLAS references: the step's GEMM and init's X W(0)^T.
        r = max(1, int(round(row["fired_union"])))
        gemm = bench.numpy_gemm_seconds((n, S), (S, r))
        row["numpy_step_gemm_gflops"] = 2.0 * n * S * r / gemm / 1e9
        if d <= args.dense_max_d:
            row["numpy_init_gemm_seconds"] = bench.numpy_gemm_seconds((n, d), (d, m), min_seconds=0.0)
        results.append(row)
    # The step's GEMM alone, with the scan index: the scan reads P before the
    # update, so the update's own cache misses are not counted; with "bits"
    # nothing touches P first and the update absorbs them (see README).
    gemm_scan = bench.time_kron(ds[0], n, m, S, args.steps, index="scan")
    r_scan = max(1, int(round(gemm_scan["fired_union"])))
    gemm_numpy = 2.0 * n * S * r_scan / bench.numpy_gemm_seconds((n, S), (S, r_scan)) / 1e9
    gemm_ratio = gemm_scan["gemm_gflops"] / gemm_numpy
    peak = None
    if not args.quick and args.max_d >= 2**20:
        peak = bench.peak_memory_of_run(2**20, n, m, S, args.steps)
    payload = {
        "meta": _meta(args),
        "n": n,
        "width": m,
        "batch_size": S,
        "results": results,
        "step_gemm_scan": {"gflops": gemm_scan["gemm_gflops"], "numpy_gflops": gemm_numpy, "ratio": gemm_ratio},
        "peak_rss_bytes_d2e20": peak,
    }
    _save_json(f"{args.out}/bench_scaling.json", payload)
    print(f"\nper-step time (ms), n={n}, m={m}, S={S}, {args.threads} thread(s):")
    rows = []
    for r in results:
        k = r["step_seconds"]

        def cell(key: str, r: dict = r, k: float = k) -> str:
            return f"{r[key] * 1e3:.1f} ({r[key] / k:.0f}x)" if key in r else "-"

        rows.append(
            [
                f"2^{int(math.log2(r['d']))}",
                f"{k * 1e3:.3f}",
                cell("dense_step_seconds"),
                cell("numpy_step_seconds"),
                cell("torch_step_seconds"),
                f"{r['gemm_gflops'] / r['numpy_step_gemm_gflops']:.0%}",
                f"{r['init_seconds']:.2f}",
                f"{r['init_seconds'] / r['numpy_init_gemm_seconds']:.2f}x" if "numpy_init_gemm_seconds" in r else "-",
            ]
        )
    print(
        _table(
            [
                "d",
                "kron step",
                "dense backend (ratio)",
                "NumPy dense (ratio)",
                "PyTorch dense (ratio)",
                "step GEMM incl. misses vs NumPy",
                "init s",
                "init / NumPy X W0^T",
            ],
            rows,
        )
    )
    first, last = results[0], results[-1]
    print(
        f"\nstep time at d=2^{int(math.log2(last['d']))} / d=2^{int(math.log2(first['d']))}: "
        f"{last['step_seconds'] / first['step_seconds']:.2f}x"
    )
    print(
        f"step GEMM alone (index=scan, d={ds[0]}): {gemm_scan['gemm_gflops']:.1f} GFLOP/s nominal, "
        f"NumPy matmul on ({n}x{S})@({S}x{r_scan}): {gemm_numpy:.1f} GFLOP/s: {gemm_ratio:.0%}"
    )
    if peak is not None:
        print(f"peak memory of a d=2^20 run (init, {args.steps} steps, predict): {peak / 2**30:.2f} GiB")
    _plot_scaling(results, f"{args.out}/bench_scaling.png")
    return 0


def _plot_scaling(results: list, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'kronnet[plot]'): no plot")
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, label in [
        ("step_seconds", "kronnet (Kronecker)"),
        ("dense_step_seconds", "kronnet dense backend"),
        ("numpy_step_seconds", "NumPy dense"),
        ("torch_step_seconds", "PyTorch dense (CPU)"),
    ]:
        pts = [(r["d"], r[key]) for r in results if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("input dimension d")
    ax.set_ylabel("seconds per SGD step")
    ax.set_title("Per-step time vs d")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def bench_index(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from . import bench

    ms = [2**k for k in (range(10, 19, 4) if args.quick else range(10, 19, 2)) if 2**k <= args.max_width]
    fractions = [None, 0.01, 0.001]
    configs = [(n, m, q) for n in (args.n, 32) for m in ms for q in fractions]
    if not args.quick:
        # Large n, where the bits' O(n |R|) maintenance meets the scan's O(m S).
        configs += [(n, m, None) for n in (2048, 8192) for m in (2**11, 2**14)]
    results = []
    for n, m, q in tqdm(configs, desc="index sweep", unit="shape", disable=args.no_progress):
        b = None if q is None else bench.threshold_for_fraction(q)
        epochs = 16.0 if n < 256 else 2.0 if n <= 512 else 0.25
        for index in ("scan", "tree", "bits"):
            r = bench.time_index(index, n, m, b, batch_size=args.batch_size, epochs=epochs)
            r["fraction"] = q
            results.append(r)
    _save_json(f"{args.out}/bench_index.json", {"meta": _meta(args), "results": results})
    rows = []
    for i in range(0, len(results), 3):
        scan, tree, bits = results[i : i + 3]
        best = min((scan, tree, bits), key=lambda r: r["step_seconds"])
        from .train import _resolve_index

        auto = _resolve_index("auto", scan["n"], scan["width"], scan["threshold"])
        rows.append(
            [
                str(scan["n"]),
                f"2^{int(math.log2(scan['width']))}",
                f"{scan['threshold']:.2f}",
                f"{tree['fired_per_point']:.0f}",
                f"{tree['fired_union']:.0f}",
                *(f"{r['step_seconds'] * 1e3:.2f} / {r['index_seconds'] * 1e3:.2f}" for r in (scan, tree, bits)),
                f"{tree['per_step']['nodes_recomputed']:.0f}",
                f"{tree['per_step']['full_rebuilds']:.1f}",
                best["index"],
                auto + ("" if auto == best["index"] else " (!)"),
            ]
        )
    print(f"\nper-step time / time in the index (ms), S={args.batch_size}, {args.threads} thread(s):")
    print(
        _table(
            [
                "n",
                "m",
                "b",
                "fired/point",
                "|R|",
                "scan",
                "tree",
                "bits",
                "tree nodes/step",
                "tree rebuilds/step",
                "fastest",
                "auto",
            ],
            rows,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kronnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train on generated Kronecker data and compare with dense training")
    p.add_argument("--n", type=int, default=256, help="training points (default 256)")
    p.add_argument("--dims", type=int, nargs="+", default=[128, 128], help="factor dimensions (default 128 128)")
    p.add_argument("--width", type=int, default=2048, help="hidden neurons m (default 2048)")
    p.add_argument("--batch-size", type=int, default=8, help="S (default 8)")
    p.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: kronnet.suggest_lr)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-steps", type=int, default=5, help="steps timed on each backend (default 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=demo)

    b = sub.add_parser("bench", help="measure: per-step time vs d against dense baselines, or the activation indexes")
    b.add_argument("sweep", nargs="?", choices=["scaling", "index", "churn"], default="scaling")
    b.add_argument("--n", type=int, default=512, help="training points (default 512)")
    b.add_argument("--width", type=int, default=2048, help="hidden neurons m for the scaling sweep (default 2048)")
    b.add_argument("--batch-size", type=int, default=8, help="S (default 8)")
    b.add_argument("--steps", type=int, default=128, help="timed Kronecker steps per shape (default 128)")
    b.add_argument("--threads", type=int, default=2, help="threads for rayon, BLAS and PyTorch alike (default 2)")
    b.add_argument("--dense-max-d", type=int, default=2**16, help="largest d for the dense baselines (default 2^16)")
    b.add_argument("--max-d", type=int, default=2**20, help="largest d of the scaling sweep (default 2^20)")
    b.add_argument("--max-width", type=int, default=2**18, help="largest m of the index sweep (default 2^18)")
    b.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    b.add_argument("--quick", action="store_true", help="fewer shapes, no peak-memory run")
    b.add_argument("--out", default="bench_results", help="folder for the JSON and PNG (default bench_results)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=bench_command)
    return parser


def bench_churn(args: argparse.Namespace) -> int:
    from . import bench

    n, m = max(args.n, 1024), max(args.width, 4096)
    print(
        f"trainers built, trained 50 steps and dropped on one net: n={n}, m={m}, dims=(16, 16), predict on 1000 points"
    )
    print(bench.churn_table(bench.trainer_churn(n, m, (16, 16), 6, 50, 1000)))
    return 0


def bench_command(args: argparse.Namespace) -> int:
    return {"index": bench_index, "churn": bench_churn}.get(args.sweep, bench_scaling)(args)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        code = _pinned(args, argv)
        if code is not None:
            return code
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
