"""The sweeps behind `kronnet bench`: each runs its measurements
(``kronnet.cli.bench``), writes the raw figures as JSON, prints a Markdown table and,
for the scaling sweep, plots per-step time against d."""

from __future__ import annotations

import argparse
import math
from typing import Any, Dict, List, Optional

import numpy as np

from . import bench


def pinned(args: argparse.Namespace, argv: List[str]) -> Optional[int]:
    """Re-runs this command in a child whose environment pins rayon, BLAS and
    OpenMP to `--threads` (they read it once, at start-up); returns its exit
    code, or None when already pinned."""
    import os
    import subprocess
    import sys

    if os.environ.get("KRONNET_BENCH_THREADS") == str(args.threads):
        return None
    env = bench.pin_threads_env(args.threads)
    env["KRONNET_BENCH_THREADS"] = str(args.threads)
    if getattr(args, "sweep", None) == "churn":
        # glibc raises its mmap threshold to the size of the last freed
        # block, after which freed arrays stay in the heap and RSS shows the
        # allocator's caching, not the program's live memory. A fixed
        # threshold returns every freed array to the system at once.
        env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    return subprocess.call([sys.executable, "-m", "kronnet", *argv], env=env)


def table(headers: List[str], rows: List[List[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def save_json(path: str, payload: Dict[str, Any]) -> None:
    """Writes `payload` as indented JSON, creating the folder."""
    import json
    import os

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2)
    print(f"wrote {path}")


def meta(args: argparse.Namespace) -> Dict[str, Any]:
    """When, with what and on how many threads the figures were measured."""
    import datetime
    import platform

    from kronnet import __version__

    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "kronnet": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": args.threads,
    }


def scaling(args: argparse.Namespace) -> int:
    """Per-step time, init and the step's GEMM against d, beside the dense
    baselines (README "Performance")."""
    from tqdm.auto import tqdm

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
        fired = max(1, int(round(row["fired_union"])))
        gemm = bench.numpy_gemm_seconds((n, S), (S, fired))
        row["numpy_step_gemm_gflops"] = 2.0 * n * S * fired / gemm / 1e9
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
        "meta": meta(args),
        "n": n,
        "width": m,
        "batch_size": S,
        "results": results,
        "step_gemm_scan": {"gflops": gemm_scan["gemm_gflops"], "numpy_gflops": gemm_numpy, "ratio": gemm_ratio},
        "peak_rss_bytes_d2e20": peak,
    }
    save_json(f"{args.out}/bench_scaling.json", payload)
    print(f"\nper-step time (ms), n={n}, m={m}, S={S}, {args.threads} thread(s):")
    rows = []
    for res in results:
        k = res["step_seconds"]

        def cell(key: str, r: Dict[str, Any] = res, k: float = k) -> str:
            return f"{r[key] * 1e3:.1f} ({r[key] / k:.0f}x)" if key in r else "-"

        r = res

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
        table(
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
    plot_scaling(results, f"{args.out}/bench_scaling.png")
    return 0


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or None (with a note) when
    matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'kronnet[plot]'): no plot")
        return None
    return plt


def plot_scaling(results: List[Dict[str, Any]], path: str) -> None:
    """Per-step time against d, one line per implementation (needs matplotlib)."""
    plt = pyplot()
    if plt is None:
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


def index(args: argparse.Namespace) -> int:
    """The activation indexes against n, m and the firing fraction
    (docs/indexes.md)."""
    from tqdm.auto import tqdm

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
    save_json(f"{args.out}/bench_index.json", {"meta": meta(args), "results": results})
    rows = []
    for i in range(0, len(results), 3):
        scan, tree, bits = results[i : i + 3]
        best = min((scan, tree, bits), key=lambda r: r["step_seconds"])
        from kronnet.training.config import resolve_index

        auto = resolve_index("auto", scan["n"], scan["width"], scan["threshold"])
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
        table(
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


def churn(args: argparse.Namespace) -> int:
    """Memory and predict time after trainers are built and dropped on one net."""
    n, m = max(args.n, 1024), max(args.width, 4096)
    print(
        f"trainers built, trained 50 steps and dropped on one net: n={n}, m={m}, dims=(16, 16), predict on 1000 points"
    )
    print(bench.churn_table(bench.trainer_churn(n, m, (16, 16), 6, 50, 1000)))
    return 0


def pairs(args: argparse.Namespace) -> int:
    """PairData init against KronData init of the same points (docs/guide.md,
    "Pairwise data"): the per-entity GEMM against the per-point one."""
    shapes = [(20000, (100, 200), (256, 256))]
    if not args.quick:
        shapes += [(20000, (100, 200), (64, 64)), (20000, (1000, 1000), (256, 256))]
    results = [
        bench.pair_init(n, sizes, dims, args.init_width, repeats=3 if args.quick else 5) for n, sizes, dims in shapes
    ]
    save_json(f"{args.out}/bench_pairs.json", {"meta": meta(args), "results": results})
    rows = []
    for r in results:
        ratio = np.array(r["ratio"])
        rows.append(
            [
                str(r["n_pairs"]),
                " x ".join(map(str, r["entities"])),
                f"2^{int(math.log2(math.prod(r['dims'])))}",
                f"{np.median(r['pair_seconds']) * 1e3:.1f}",
                f"{np.median(r['kron_seconds']) * 1e3:.0f}",
                f"{np.median(ratio):.4f} ({ratio.min():.4f}-{ratio.max():.4f})",
                f"{r['max_abs_diff']:.1e} (|P0| <= {r['max_abs_p0']:.1f})",
                f"{r['pair_bytes'] / 2**20:.1f} / {r['kron_bytes'] / 2**20:.1f}",
            ]
        )
    print(f"\ninit of P(0), width {args.init_width}, {args.threads} thread(s), medians over rounds (spread):")
    print(
        table(
            [
                "pairs",
                "entities",
                "d",
                "PairData ms",
                "KronData ms",
                "ratio (min-max)",
                "max |dP0|",
                "data MiB (pair / kron)",
            ],
            rows,
        )
    )
    return 0


def endtoend(args: argparse.Namespace) -> int:
    """The whole pipeline against d (data, init, training, prediction), with
    Kronecker-factored and Gaussian init (docs/guide.md, "Kronecker-factored
    initialization")."""
    from tqdm.auto import tqdm

    n, m, rank = args.n, args.width, args.init_rank
    results: List[Dict[str, Any]] = []
    headline = [((1024, 1024, 1024), 1000)] if args.quick else [((1024, 1024, 1024), 1000), ((32768, 32768), 100)]
    for dims, q in headline:
        results.append(bench.end_to_end(dims, n, m, "kron", rank, args.e2e_steps, q))
    exps = range(12, 31, 6) if args.quick else range(12, 31, 2)
    limit = args.gaussian_max_seconds
    last_gaussian: Optional[Dict[str, Any]] = None
    for k in tqdm(list(exps), desc="d sweep", unit="d", disable=args.no_progress):
        dims = bench.square_dims(2**k)
        results.append(bench.end_to_end(dims, n, m, "kron", rank, args.e2e_steps, 100))
        # Gaussian init stops after the first d whose pipeline takes more
        # than the limit (a minute by default), and before a d its last run,
        # scaled linearly in d, projects past 4x the limit (the quick sweep's
        # 64x steps in d ran Gaussian init at 2^24 for about 12 minutes).
        if last_gaussian is None or (
            last_gaussian["total"] <= limit and last_gaussian["total"] * 2**k / last_gaussian["d"] <= 4 * limit
        ):
            last_gaussian = bench.end_to_end(dims, n, m, "gaussian", rank, args.e2e_steps, 100)
            results.append(last_gaussian)
    # The machine's BLAS on the headline p = 2 init's block GEMM, in the same
    # run, as the ceiling its init rate is read against.
    block = (n, 32768), (32768, 256)
    blas = 2.0 * n * 32768 * 256 / bench.numpy_gemm_seconds(*block, min_seconds=1.0) / 1e9
    # What the p = 2 runs would take with every product at that BLAS rate.
    for r in results:
        if r["dims"] == [32768, 32768] and r["init_kind"] == "kron":
            r["at_blas_rate"] = bench.pipeline_at_rate(r, blas)
    payload = {"meta": meta(args), "results": results, "numpy_block_gemm_gflops": blas}
    save_json(f"{args.out}/bench_endtoend.json", payload)
    print(f"\nend to end, n={n}, m={m}, {args.e2e_steps} steps, R={rank}, {args.threads} thread(s); seconds per phase:")
    print(endtoend_table(results))
    print(f"NumPy's BLAS on the p = 2 headline's block GEMM ({n} x 32768 by 32768 x 256): {blas:.0f} GF/s")
    for r in results:
        if "at_blas_rate" in r:
            print(
                f"p = 2 (32768 x 32768) with every product at that rate: {r['at_blas_rate']:.1f} s"
                f" (measured {r['total']:.1f} s; data and training as measured, normals at the generator's rate)"
            )
    print(
        "init+predict floor: their flops at the FMA peak plus their two passes of normals at the"
        " generator's rate, both measured in each run's process just before it"
    )
    plot_endtoend(results, f"{args.out}/bench_endtoend.png")
    return 0


def init(args: argparse.Namespace) -> int:
    """Gaussian init's P(0) against NumPy's X W(0)^T from d = 2^8 to
    `--dense-max-d` (docs/guide.md, "Initialization speed")."""
    from tqdm.auto import tqdm

    from kronnet import roofline

    exps = range(8, 17, 4) if args.quick else range(8, 17, 2)
    ds = [2**k for k in exps if 2**k <= args.dense_max_d]
    rounds = 3 if args.quick else 9
    # What the machine allows, measured before the sweep (roofline.rs): the
    # FMA peak NumPy's rate is read against, and the normal generator's
    # rate, at which W(0)'s m d normals alone take a share of NumPy's time
    # that kronnet must fit into its 1.3x as well.
    budget = 0.2 if args.quick else 1.0
    peak = roofline.fma_peak_gflops(budget)
    normals_rate = roofline.normals_per_second(budget)
    results = []
    for d in tqdm(ds, desc="d sweep", unit="d", disable=args.no_progress):
        r = bench.init_over_blas(d, args.n, args.width, rounds=rounds if d <= 2**12 else max(3, rounds // 2))
        r["numpy_gflops"] = 2.0 * args.n * d * args.width / r["numpy_seconds"] / 1e9
        r["normals_share"] = args.width * d / normals_rate / r["numpy_seconds"]
        results.append(r)
    payload = {"meta": meta(args), "fma_peak_gflops": peak, "normals_per_second": normals_rate, "results": results}
    save_json(f"{args.out}/bench_init.json", payload)
    print(f"\nP(0) of n={args.n} points, m={args.width}, Gaussian W(0), {args.threads} thread(s); medians:")
    rows = [
        [
            f"2^{int(math.log2(r['d']))}",
            f"{r['kronnet_seconds'] * 1e3:.1f}",
            f"{r['numpy_seconds'] * 1e3:.1f} ({r['numpy_gflops']:.0f} GF/s)",
            f"{r['ratio']:.2f} ({r['ratio_q1']:.2f}-{r['ratio_q3']:.2f})",
            f"{r['normals_share']:.2f}",
        ]
        for r in results
    ]
    header = ["d", "kronnet P(0) ms", "NumPy X W0^T ms (rate)", "ratio (quartiles)", "normals / NumPy time"]
    print(table(header, rows))
    print("machine: FMA peak " + (f"{peak:.0f} GF/s" if peak else "n/a") + f", {normals_rate / 1e6:.0f} M normals/s")
    return 0


def mpi(args: argparse.Namespace) -> int:
    """Sharded training (docs/mpi.md): seconds per step of the single-process
    Trainer, of one rank and of two ranks side by side, round by round, with
    each rank's Allreduce time and peak memory; then the bytes a step sends
    at several n, m, d and S."""
    from . import mpi_bench

    shapes = [(512, 2048, 64)] if args.quick else [(512, 2048, 64), (8192, 2**16, 8)]
    rounds = 1 if args.quick else args.rounds
    jobs = [("one process", None, args.threads), ("1 rank", 1, args.threads), ("2 ranks", 2, max(1, args.threads // 2))]
    results: List[Dict[str, Any]] = []
    for n, m, steps_scale in shapes:
        cfg = dict(
            n=n,
            width=m,
            dims=[16, 16],
            batch_size=args.batch_size,
            index="auto",
            warmup=20,
            steps=args.steps * steps_scale // 8,
        )
        for r in range(rounds):
            for label, ranks, threads in jobs:
                res = mpi_bench.run(cfg, ranks, threads)
                res.update(job=label, round=r)
                results.append(res)
                print(f"n={n} m={m} {label}: {1e3 * res['seconds_per_step']:.3f} ms/step", flush=True)
    traffic = []
    for n, m, d, size in [(512, 2048, 2**8, 8), (2048, 8192, 2**12, 8), (512, 2048, 2**16, 8), (512, 2048, 2**8, 64)]:
        dims = list(bench.square_dims(d))
        cfg = dict(n=n, width=m, dims=dims, batch_size=size, index="auto", warmup=5, steps=50)
        res = mpi_bench.run(cfg, 2, 1)
        traffic.append(res)
    save_json(f"{args.out}/bench_mpi.json", {"meta": meta(args), "results": results, "traffic": traffic})
    print(f"\nsharded training, S={args.batch_size}, dims 16 x 16, {rounds} round(s), median (min-max):")
    print(mpi_table(results))
    print("\nbytes each rank sends per step (one Allreduce of S exact sums + 5 counters):")
    rows = [
        [
            str(r["n"]),
            str(r["width"]),
            f"2^{int(math.log2(r['d']))}",
            str(r["batch_size"]),
            f"{r['per_rank'][0]['bytes_per_step']:.0f}",
        ]
        for r in traffic
    ]
    print(table(["n", "m", "d", "S", "bytes/step"], rows))
    return 0


def mpi_table(results: List[Dict[str, Any]]) -> str:
    """Per shape and job: ms/step, the share of a step a rank spends in the
    step's Allreduce (waiting for the other ranks included), the same message
    alone in lockstep, and peak memory per rank."""

    def spread(values: List[float], scale: float = 1.0) -> str:
        v = np.array(values) * scale
        return f"{np.median(v):.3g} ({v.min():.3g}-{v.max():.3g})"

    rows = []
    for n, m in sorted({(r["n"], r["width"]) for r in results}):
        for job in dict.fromkeys(r["job"] for r in results):
            rs = [r for r in results if (r["n"], r["width"], r["job"]) == (n, m, job)]
            if not rs:
                continue
            single = [r for r in results if (r["n"], r["width"], r["job"]) == (n, m, "one process")]
            ratio = [a["seconds_per_step"] / b["seconds_per_step"] for a, b in zip(rs, single)]
            allreduce = [max(x["allreduce_per_step"] for x in r["per_rank"]) / r["seconds_per_step"] for r in rs]
            alone = [max(x.get("message_alone_seconds", 0.0) for x in r["per_rank"]) for r in rs]
            peak = [max(x["peak_rss_bytes"] for x in r["per_rank"]) for r in rs]
            rows.append(
                [
                    str(n),
                    str(m),
                    job,
                    spread([r["seconds_per_step"] for r in rs], 1e3),
                    spread(ratio),
                    spread(allreduce, 100.0) if rs[0]["sharded"] else "-",
                    spread(alone, 1e6) if rs[0]["sharded"] else "-",
                    f"{np.median(peak) / 2**30:.2f}",
                ]
            )
    return table(
        [
            "n",
            "m",
            "job",
            "ms/step",
            "vs one process",
            "in Allreduce, % of step (max rank)",
            "message alone, µs",
            "peak GiB per rank",
        ],
        rows,
    )


def endtoend_table(results: List[Dict[str, Any]]) -> str:
    """The end-to-end runs as a Markdown table."""
    rows = []
    for r in results:
        init_rate = r["init_flops"] / r["init"] / 1e9
        predict_rate = r["predict_flops"] / r["predict"] / 1e9
        rows.append(
            [
                f"2^{int(math.log2(r['d']))}",
                " x ".join(map(str, r["dims"])),
                r["init_kind"] + (f" R={r['init_rank']}" if r["init_kind"] == "kron" else ""),
                f"{r['data']:.2f}",
                f"{r['init']:.2f} ({init_rate:.0f} GF/s)",
                f"{r['train']:.2f}",
                f"{r['predict']:.2f} ({r['predicted']} pts, {predict_rate:.0f} GF/s)",
                f"{r['total']:.2f}",
                floor_cell(r),
                f"{r['peak_rss_bytes'] / 2**20:.0f}",
                f"{r['loss_start']:.3g} -> {r['loss_end']:.2g}",
            ]
        )
    header = ["d", "dims", "init", "data", "init (rate)", "train", "predict (rate)", "total"]
    return table(header + ["init+predict floor (FMA peak)", "peak MiB", "loss"], rows)


def floor_cell(r: Dict[str, Any]) -> str:
    """An end-to-end run's `contraction_floor` with the FMA peak it used."""
    floor = r.get("floor")
    if floor is None:
        return "n/a"
    return f"{floor:.2f} ({r['fma_peak_gflops']:.0f} GF/s)"


def plot_endtoend(results: List[Dict[str, Any]], path: str) -> None:
    """Total end-to-end time against d for each init (needs matplotlib)."""
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for init, label in [("kron", "init='kron'"), ("gaussian", "init='gaussian'")]:
        pts = sorted((r["d"], r["total"]) for r in results if r["init_kind"] == init and len(r["dims"]) == 2)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=f"{label}, p = 2")
    for r in results:
        if len(r["dims"]) == 3:
            ax.plot(
                [r["d"]],
                [r["total"]],
                marker="*",
                markersize=12,
                linestyle="none",
                label=f"init='kron', p = 3 ({r['predicted']} predicted)",
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("input dimension d")
    ax.set_ylabel("seconds: data + init + training + prediction")
    ax.set_title("End-to-end time vs d")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def model(args: argparse.Namespace) -> int:
    """The full model's step against the paper's, across d, and the fired
    fraction over a long run with trained thresholds (docs/guide.md,
    "The full model's step")."""
    from tqdm.auto import tqdm

    n, m, S = args.n, args.width, args.batch_size
    exps = range(8, 21, 4) if args.quick else range(8, 21, 2)
    ds = [2**k for k in exps if 2**k <= args.max_d]
    results = [
        bench.time_models(d, n, m, S, args.steps) for d in tqdm(ds, desc="d sweep", unit="d", disable=args.no_progress)
    ]
    long_steps = 2000 if args.quick else 10000
    fired = bench.fired_over_training(n, m, S, long_steps)
    save_json(
        f"{args.out}/bench_model.json",
        {"meta": meta(args), "n": n, "width": m, "batch_size": S, "results": results, "fired_over_training": fired},
    )
    cases = list(bench.MODEL_CASES)
    print(
        f"\nper-step time in ms (neurons fired per point), n={n}, m={m}, S={S}, {args.threads} thread(s), medians of {bench.ROUNDS} rounds:"
    )
    rows = []
    for r in results:
        t, f = r["step_seconds"], r["fired_per_point"]
        rows.append([f"2^{int(math.log2(r['d']))}"] + [f"{t[c] * 1e3:.3f} ({f[c]:.0f})" for c in cases])
    print(table(["d"] + cases, rows))
    print("\nratios to the paper's step at the same d (time; time per fired neuron):")
    rows = []
    for r in results:
        t, f = r["step_seconds"], r["fired_per_point"]
        rows.append(
            [f"2^{int(math.log2(r['d']))}"]
            + [
                f"{t[c] / t['paper']:.2f}x; {t[c] / f[c] / (t['paper'] / f['paper']):.2f}x"
                for c in cases
                if c != "paper"
            ]
        )
    print(table(["d"] + [c for c in cases if c != "paper"], rows))
    for case in cases:
        steps = [r["step_seconds"][case] for r in results]
        print(f"{case}: slowest d / fastest d {max(steps) / min(steps):.2f}x")
    print(f"\nfraction of neurons a point fires over {long_steps} steps (full C=10, d=2^12, windows of the run):")
    rows = []
    for name, f in fired.items():
        frac = f["fired_fraction"]
        rows.append(
            [
                name,
                f"{frac[0]:.3%}",
                f"{frac[len(frac) // 2]:.3%}",
                f"{frac[-1]:.3%}",
                f"{f['threshold_start']:.3f} -> {f['threshold_mean_end']:.3f} (min {f['threshold_min_end']:.3f})",
                f"{f['step_seconds'] * 1e3:.3f}",
                f"{f['loss_first']:.3g} -> {f['loss_last']:.3g}",
            ]
        )
    print(
        table(
            ["thresholds", "first window", "middle", "last window", "b: start -> mean (min)", "ms/step", "full loss"],
            rows,
        )
    )
    return 0


def roofline(args: argparse.Namespace) -> int:
    """Per-step time against its lower bound (bytes over the stream
    bandwidth of the memory P lives in, flops over the FMA peak), for n
    from 10^3 to 10^5 and m from 512 to 8192, float64 and float32; then
    steps/s and points/s against the batch size, and predict time against
    n_train (docs/guide.md, "Steps against the machine's limit")."""
    from tqdm.auto import tqdm

    ns = [1000, 10_000] if args.quick else [1000, 10_000, 100_000]
    ms = [512, 2048] if args.quick else [512, 2048, 8192]
    cells = [(n, m, dt) for n in ns for m in ms for dt in ("float64", "float32")]
    results = []
    for n, m, dt in tqdm(cells, desc="roofline", disable=args.no_progress):
        steps = max(20, min(400, int(4e8 / (n * m))))
        cell = bench.roofline_cell(n, m, dt, steps)
        if cell is not None:
            results.append(cell)
    batch_n = 10_000 if args.quick else 50_000
    sizes = [1, 8, 64, 256] if args.quick else [1, 2, 8, 32, 64, 128, 256]
    scaling = bench.batch_scaling(batch_n, 1024, sizes, seconds=1.0 if args.quick else 3.0)
    predict = bench.predict_times([10_000] if args.quick else [10_000, 30_000, 90_000], (64, 64), 1024)
    save_json(
        f"{args.out}/bench_roofline.json",
        {"meta": meta(args), "results": results, "batch_scaling": scaling, "predict": predict},
    )
    print(
        f"\nstep time against its lower bound ({args.threads} threads, S = 8, pairwise data, 64 x 64 features;"
        f" medians of {bench.ROUNDS} rounds, each step time over the bound from that round's bandwidth, and their range):"
    )
    rows = []
    for r in results:
        rows.append(
            [
                f"{r['n']:,}",
                str(r["width"]),
                r["dtype"],
                f"{r['index']}/{r['gram']}",
                f"{r['fired_union']:.0f}",
                f"{r['bytes'] / 1e6:.2f}",
                f"{r['stream_gbytes']:.0f}",
                f"{r['bound_seconds'] * 1e3:.3f}",
                f"{r['step_seconds'] * 1e3:.3f}",
                f"{r['ratio']:.2f}x",
                f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}",
                f"{r['working_stream_gbytes']:.0f}",
                f"{r['ratio_cached']:.2f}x ({r['ratio_cached_min']:.2f}-{r['ratio_cached_max']:.2f})",
                f"{r['bytes'] / r['step_seconds'] / 1e9:.1f}",
            ]
        )
    print(
        table(
            [
                "n",
                "m",
                "P in",
                "index/gram",
                "|R|",
                "MB moved",
                "stream GB/s",
                "bound ms",
                "step ms",
                "step / bound",
                "range",
                "step's rows GB/s",
                "step / cached bound (range)",
                "GB/s",
            ],
            rows,
        )
    )
    print(f"\nbatch size against throughput (n = {batch_n:,}, m = 1024, float32, lr = suggest_lr(net, S)):")
    print(
        table(
            ["S", "lr", "steps/s", "points/s", "|R|", "|R| per point"],
            [
                [
                    str(r["batch_size"]),
                    f"{r['lr']:.4g}",
                    f"{r['steps_per_second']:.1f}",
                    f"{r['points_per_second']:.0f}",
                    f"{r['fired_union']:.0f}",
                    f"{r['union_per_point']:.1f}",
                ]
                for r in scaling
            ],
        )
    )
    print("\npredicting 10,000 new pairs (64 x 64 features, m = 1024) after training on n_train pairs:")
    print(
        table(
            [
                "n_train",
                "folded, first call s",
                "folded, again s",
                "through the training points s",
                "speed-up (first)",
                "max rel diff",
            ],
            [
                [
                    f"{r['n_train']:,}",
                    f"{r['folded_first_seconds']:.2f}",
                    f"{r['folded_again_seconds']:.2f}",
                    f"{r['scan_seconds']:.2f}",
                    f"{r['scan_seconds'] / r['folded_first_seconds']:.0f}x",
                    f"{r['max_rel_diff']:.1e}",
                ]
                for r in predict
            ],
        )
    )
    return 0


def large(args: argparse.Namespace) -> int:
    """Training on 10^6 pairs (`--n`) with m = 1024 (`--width`), float32:
    build time, time per step and per epoch, peak memory; under
    ``mpiexec -n K`` every rank trains its shard and reports its own."""
    comm = None
    try:
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_size() > 1:
            comm = MPI.COMM_WORLD
    except ImportError:
        pass
    n, width = args.n, args.width
    row = bench.large_run(n, width, seconds=20.0 if args.quick else 60.0, comm=comm)
    rows = [row] if comm is None else comm.gather(row, root=0)
    if comm is not None and comm.rank != 0:
        return 0
    assert rows is not None
    save_json(f"{args.out}/bench_large.json", {"meta": meta(args), "ranks": rows})
    print(f"\ntraining on {n:,} pairs, m = {width}, float32, S = 8, {args.threads} thread(s) per process:")
    print(
        table(
            ["rank", "gram", "build s", "steps timed", "ms/step", "epoch (n/S steps)", "peak GiB", "batch loss"],
            [
                [
                    f"{k} of {r['ranks']}",
                    r["gram"],
                    f"{r['build_seconds']:.1f}",
                    str(r["steps"]),
                    f"{r['step_seconds'] * 1e3:.1f}",
                    f"{r['epoch_seconds'] / 3600:.2f} h",
                    f"{r['peak_rss_bytes'] / 2**30:.2f}",
                    f"{r['loss_first']:.3g} -> {r['loss_last']:.3g}",
                ]
                for k, r in enumerate(rows)
            ],
        )
    )
    return 0
