"""What Kronecker-factored initialization changes in training, against Gaussian init.

On ``make_kronecker_data(..., latent_dim=8)`` (train and held-out sets from
the same generator), nets of the same width, the same learning rate and the
same batches are trained from Gaussian W(0) and from Kronecker-factored W(0)
with R = 1, 4 and 16 terms per neuron, each with its default threshold (the
Kronecker one keeps Gaussian init's firing fraction at init). For several
net seeds it records the full training loss and the held-out MSE at fixed
checkpoints and the fraction of neurons each point fires at every step.

Prints a Markdown table (medians over seeds, with the min-max spread) and
writes docs/gallery_init.png: training loss, held-out MSE / var(y) and fired
fraction against steps.

Run (about a minute on 2 cores; matplotlib from the ``examples`` extra)::

    python3 examples/init_compare.py [--steps 6000] [--seeds 3] [--out docs/gallery_init.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Dict, List

import kronnet as kn
import numpy as np

INITS = [("gaussian", 8), ("kron", 1), ("kron", 4), ("kron", 16)]


def label(init: str, rank: int) -> str:
    return "Gaussian" if init == "gaussian" else f"kron R={rank}"


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    dims = tuple(args.dims)
    train = kn.make_kronecker_data(args.n, dims=dims, seed=0, latent_dim=args.latent_dim)
    test = kn.make_kronecker_data(args.held_out, dims=dims, seed=1, latent_dim=args.latent_dim)
    var = float(test.y.var())
    # One learning rate for every run: the Gaussian net's suggestion.
    lr = kn.suggest_lr(kn.TwoLayerNet(dims, args.width), 8)
    print(
        f"n={train.n}, held-out {test.n}, dims={dims} (d={train.d}), latent_dim={args.latent_dim}, "
        f"width={args.width}, lr={lr:.4g} for all, {args.steps} steps, seeds 0..{args.seeds - 1}"
    )
    runs = []
    for init, rank in INITS:
        for seed in range(args.seeds):
            net = kn.TwoLayerNet(dims, args.width, seed=seed, init=init, init_rank=rank)
            start = time.perf_counter()
            tr = kn.Trainer(net, train, lr=lr, batch_size=8, seed=0)  # same batches for every net
            hist = tr.fit(args.steps, eval_every=args.steps // args.checkpoints, validation=test)
            runs.append(
                {
                    "init": init,
                    "rank": rank,
                    "seed": seed,
                    "threshold": net.threshold,
                    "seconds": time.perf_counter() - start,
                    "full": np.array(hist.full_loss),
                    "val": np.array([(s, 2 * v / var) for s, v in hist.val_loss]),
                    "fired": hist.fired_per_point / args.width,
                }
            )
    return runs


def summary(runs: List[Dict[str, Any]]) -> str:
    lines = [
        "| init | threshold b | fired fraction, first 100 steps | last 100 steps | train loss at end "
        "| held-out MSE / var(y) at end | best held-out MSE / var(y) | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(values: List[float], fmt: str) -> str:
        arr = np.array(values)
        return f"{np.median(arr):{fmt}} ({arr.min():{fmt}}-{arr.max():{fmt}})"

    for init, rank in INITS:
        rs = [r for r in runs if r["init"] == init and r["rank"] == rank]
        lines.append(
            f"| {label(init, rank)} | {rs[0]['threshold']:.4f} "
            f"| {cell([float(r['fired'][:100].mean()) for r in rs], '.4f')} "
            f"| {cell([float(r['fired'][-100:].mean()) for r in rs], '.4f')} "
            f"| {cell([float(r['full'][-1, 1]) for r in rs], '.2e')} "
            f"| {cell([float(r['val'][-1, 1]) for r in rs], '.3f')} "
            f"| {cell([float(r['val'][:, 1].min()) for r in rs], '.3f')} "
            f"| {cell([r['seconds'] for r in rs], '.1f')} |"
        )
    return "\n".join(lines)


def plot(runs: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    colors = dict(zip([label(*i) for i in INITS], ["black", "tab:red", "tab:orange", "tab:blue"]))
    for init, rank in INITS:
        name = label(init, rank)
        rs = [r for r in runs if r["init"] == init and r["rank"] == rank]
        for j, r in enumerate(rs):
            kw = {"color": colors[name], "alpha": 0.8, "label": name if j == 0 else None}
            axes[0].plot(r["full"][:, 0], r["full"][:, 1], marker=".", **kw)
            axes[1].plot(r["val"][:, 0], r["val"][:, 1], marker=".", **kw)
            window = 100
            smooth = np.convolve(r["fired"], np.ones(window) / window, mode="valid")
            axes[2].plot(np.arange(window, window + smooth.size), smooth, **kw)
    axes[0].set(yscale="log", xlabel="step", ylabel="full training loss", title="training loss")
    axes[1].set(yscale="log", xlabel="step", ylabel="held-out MSE / var(y)", title="held-out error")
    axes[1].axhline(1.0, color="gray", lw=0.8, ls="--")
    axes[2].set(xlabel="step", ylabel="fraction of neurons fired per point", title="fired fraction (100-step mean)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Gaussian vs Kronecker-factored W(0): same width, lr and batches (each line one net seed)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--held-out", type=int, default=500)
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 32])
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--checkpoints", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "gallery_init.png"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    runs = run(args)
    print(summary(runs))
    plot(runs, args.out)
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
