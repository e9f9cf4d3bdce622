"""The paper's claims as measurements: sparse firing, a step cost free of d, wider nets.

Song & Ye (arXiv 2305.08001) claim, for the two-layer net trained here:

(a) with threshold b = sqrt(0.4 ln m), each unit-norm input fires o(m) of the
    m neurons, about m^(4/5) asymptotically. Measured: the mean number of
    fired neurons per point for m = 2^10 ... 2^16 (n = 256 points, dims
    16 x 16) at initialization (from ``net.preactivations``, and from the
    first steps' ``History.fired_per_point``) and during training (the last
    half of the steps), with the log-log slope fitted over m and compared
    with 4/5 and with the exact expectation m * P(N(0, 1) > b).
(b) the per-step cost does not depend on d. Measured: median time per step
    of ``tr.fit(k)`` (after a warm-up, a few repeats) for d = 2^8 ... 2^18
    (two equal factors; n = 512, m = 2048, S = 8), and the init time.
(c) wider nets converge faster. Measured: the full training loss against
    steps for m in {n, 4n, 16n} on ``make_kronecker_data(n, dims,
    latent_dim=8)``, n = 256, each with lr = ``kn.suggest_lr(net, 8)``.

Prints a table per claim and writes docs/gallery_claims.png (three panels).

Run (about a minute on 2 cores; ``--max-log-d 20`` adds d = 2^20, whose
init alone takes about 30 s)::

    python3 examples/paper_claims.py [--max-log-d 18] [--out docs/gallery_claims.png]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import kronnet as kn
import numpy as np


def expected_fired(m: int) -> float:
    """m * P(N(0, 1) > b) at the default threshold b = sqrt(0.4 ln m)."""
    b = kn.default_threshold(m)
    return m * 0.5 * math.erfc(b / math.sqrt(2.0))


def slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def claim_a(widths, n: int, dims, steps: int):
    data = kn.make_kronecker_data(n, dims=dims, seed=0)
    rows = []
    for m in widths:
        net = kn.TwoLayerNet(dims, width=m, seed=0)
        at_init = float(np.mean(np.sum(net.preactivations(data) > net.threshold, axis=1)))
        tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), batch_size=8, seed=0)
        hist = tr.fit(steps)
        fpp = hist.fired_per_point
        rows.append(
            {
                "m": m,
                "b": net.threshold,
                "expected": expected_fired(m),
                "init": at_init,
                "first_epoch": float(fpp[: n // 8].mean()),
                "training": float(fpp[steps // 2 :].mean()),
                "loss": (hist.full_loss[0][1], hist.full_loss[-1][1]),
            }
        )
    return rows


def claim_b(log_ds, n: int, m: int, steps: int, repeats: int):
    rows = []
    for log_d in log_ds:
        d1 = 2 ** (log_d // 2)
        dims = (d1, 2**log_d // d1)
        data = kn.make_kronecker_data(n, dims=dims, seed=0)
        net = kn.TwoLayerNet(dims, width=m, seed=0)
        t0 = time.perf_counter()
        tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), batch_size=8, seed=0)
        init = time.perf_counter() - t0
        tr.fit(50)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            tr.fit(steps)
            times.append((time.perf_counter() - t0) / steps)
        rows.append(
            {"log_d": log_d, "dims": dims, "init": init, "step_ms": 1e3 * float(np.median(times)), "index": tr.index}
        )
        del tr, net
    return rows


def claim_c(n: int, dims, multiples, steps: int, every: int):
    data = kn.make_kronecker_data(n, dims=dims, seed=0, latent_dim=8)
    held_out = kn.make_kronecker_data(n, dims=dims, seed=1, latent_dim=8)
    runs = {}
    for k in multiples:
        m = k * n
        net = kn.TwoLayerNet(dims, width=m, seed=0)
        lr = kn.suggest_lr(net, 8)
        t0 = time.perf_counter()
        tr = kn.Trainer(net, data, lr=lr, batch_size=8, seed=0)
        hist = tr.fit(steps, eval_every=every, validation=held_out)
        runs[m] = {"lr": lr, "hist": hist, "seconds": time.perf_counter() - t0, "label": f"{m}"}
    # Control: the widest net at the narrowest net's learning rate, to see
    # how much of the speed-up is only the larger lr that suggest_lr gives.
    m, lr = multiples[-1] * n, runs[multiples[0] * n]["lr"]
    net = kn.TwoLayerNet(dims, width=m, seed=0)
    t0 = time.perf_counter()
    hist = kn.Trainer(net, data, lr=lr, batch_size=8, seed=0).fit(steps, eval_every=every, validation=held_out)
    runs["control"] = {"lr": lr, "hist": hist, "seconds": time.perf_counter() - t0, "label": f"{m}*"}
    return runs, float(data.y.var()), float(held_out.y.var())


def steps_to(hist, level: float):
    for step, loss in hist.full_loss:
        if loss <= level:
            return step
    return None


def plot(rows_a, rows_b, runs_c, n_c: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    ax = axes[0]
    ms = np.array([r["m"] for r in rows_a], dtype=float)
    fine = np.geomspace(ms[0], ms[-1], 50)
    ax.plot(fine, [expected_fired(int(m)) for m in fine], "k-", lw=1, label="m P(N(0,1) > b)")
    ax.plot(ms, [r["init"] for r in rows_a], "o", color="C0", label="at init")
    ax.plot(ms, [r["training"] for r in rows_a], "s", mfc="none", color="C3", label="training (last half)")
    ref = rows_a[0]["init"] * (fine / ms[0]) ** 0.8
    ax.plot(fine, ref, "--", color="grey", lw=1, label="slope 4/5")
    ax.plot(fine, fine, ":", color="grey", lw=1, label="all m neurons")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("width m")
    ax.set_ylabel("fired neurons per point")
    ax.set_title("(a) firing is o(m), b = sqrt(0.4 ln m)")
    ax.legend(fontsize=7)

    ax = axes[1]
    ds = [2 ** r["log_d"] for r in rows_b]
    ax.plot(ds, [r["step_ms"] for r in rows_b], "o-", color="C0", label="kron step (ms)")
    ax.plot(ds, [1e3 * r["init"] for r in rows_b], "s--", color="C1", label="trainer init (ms)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("input dimension d")
    ax.set_ylabel("milliseconds")
    ax.set_title("(b) step time vs d (n=512, m=2048, S=8)")
    ax.legend(fontsize=7)

    ax = axes[2]
    for i, (m, run) in enumerate(runs_c.items()):
        s, f = zip(*run["hist"].full_loss)
        if m == "control":
            label, ls = f"m = {run['label'][:-1]} at lr = {run['lr']:.0f} (control)", "-."
        else:
            label, ls = f"m = {m // n_c}n = {m}, lr = {run['lr']:.0f}", "-"
        ax.plot(s, f, ls, color=f"C{i}", label=label)
        s, f = zip(*run["hist"].val_loss)
        ax.plot(s, f, ":", color=f"C{i}", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("full training loss (dotted: held-out)")
    ax.set_title(f"(c) wider nets, latent_dim=8, n={n_c}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-log-d", type=int, default=18, help="largest d = 2^this in (b); 20 adds ~30 s of init")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "gallery_claims.png"
    )
    args = parser.parse_args()
    start = time.perf_counter()

    # (a) fired neurons per point against m
    t0 = time.perf_counter()
    widths = [2**k for k in range(10, 17)]
    rows_a = claim_a(widths, n=256, dims=(16, 16), steps=400)
    print(
        f"(a) fired neurons per point, n = 256, dims (16, 16), 400 steps per width ({time.perf_counter() - t0:.1f} s)"
    )
    print("     m       b   m P(z>b)   at init  1st epoch  training  fraction  full loss start -> end")
    for r in rows_a:
        lo, hi = r["loss"]
        print(
            f"{r['m']:6d}  {r['b']:.3f}  {r['expected']:9.1f}  {r['init']:8.1f}  {r['first_epoch']:9.1f}  "
            f"{r['training']:8.1f}  {r['training'] / r['m']:8.4f}  {lo:.3f} -> {hi:.2e}"
        )
    ms = [r["m"] for r in rows_a]
    fits = {
        "m P(z>b) (exact)": slope(ms, [r["expected"] for r in rows_a]),
        "measured at init": slope(ms, [r["init"] for r in rows_a]),
        "measured in training": slope(ms, [r["training"] for r in rows_a]),
    }
    for name, value in fits.items():
        print(f"log-log slope over m = 2^10..2^16, {name}: {value:.3f}")
    print(
        "asymptotic slope implied by b = sqrt(0.4 ln m): 0.8 (local slope of m P(z>b) at m = 2^16: "
        f"{slope([2**16, 2**16 * 1.01], [expected_fired(2**16), expected_fired(int(2**16 * 1.01))]):.3f})"
    )

    # (b) step time against d
    t0 = time.perf_counter()
    rows_b = claim_b(range(8, args.max_log_d + 1, 2), n=512, m=2048, steps=300, repeats=5)
    print(
        f"\n(b) step time against d, n = 512, m = 2048, S = 8, median of 5 x 300 steps ({time.perf_counter() - t0:.1f} s)"
    )
    print(" d       dims         init s   step ms   index")
    for r in rows_b:
        print(f"2^{r['log_d']:<4d}  {str(r['dims']):12s}  {r['init']:7.2f}  {r['step_ms']:8.3f}   {r['index']}")
    step_ms = [r["step_ms"] for r in rows_b]
    print(
        f"step time at the largest d / at the smallest: {step_ms[-1] / step_ms[0]:.2f}x over a {2 ** (rows_b[-1]['log_d'] - rows_b[0]['log_d'])}x larger d"
    )

    # (c) training loss against steps for m in {n, 4n, 16n}
    t0 = time.perf_counter()
    n_c = 256
    runs_c, var_y, var_val = claim_c(n_c, dims=(32, 32), multiples=(1, 4, 16), steps=3000, every=50)
    print(
        f"\n(c) wider nets, n = {n_c}, dims (32, 32), latent_dim = 8, 3000 steps, S = 8 ({time.perf_counter() - t0:.1f} s)"
    )
    print(
        "      m      lr   loss@0  loss@500  loss@1000  loss@3000  steps to <1e-4  to <1e-8  held-out MSE/var@3000  seconds"
    )
    for run in runs_c.values():
        full = dict(run["hist"].full_loss)
        val = run["hist"].val_loss[-1][1]
        reach4, reach8 = steps_to(run["hist"], 1e-4), steps_to(run["hist"], 1e-8)
        print(
            f"{run['label']:>7s}  {run['lr']:6.1f}  {full[0]:7.3f}  {full[500]:8.2e}  {full[1000]:9.2e}  {full[3000]:9.2e}  "
            f"{str(reach4):>14s}  {str(reach8):>8s}  {2 * val / var_val:21.3f}  {run['seconds']:7.1f}"
        )

    print("(* the widest net at the narrowest net's lr: a control for the effect of the larger lr)")

    plot(rows_a, rows_b, runs_c, n_c, args.out)
    print(f"\nwrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB); total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
