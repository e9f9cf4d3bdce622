"""Handwritten digits as exact Kronecker sums: same trajectory as dense SGD, and a one-vs-rest readout.

scikit-learn's bundled 8 x 8 digits (``sklearn.datasets.load_digits``, no
download) become exact rank-8 Kronecker data through their SVD,
``kn.KronData.from_matrices(images, y, rank=None).normalized()``: every image
is a sum of 8 products u_j (x) v_j with d = 8 x 8 = 64.

1. Exactness. One net per run, same seed, same batches, one-vs-rest target
   (+1 for one digit, -1 for the rest), trained

   (a) with the Kronecker backend on the rank-8 data,
   (b) with ``backend="dense"`` on the same rank-8 KronData (the dense
       backend materializes the 64-dim points and the m x 64 weights),
   (c) with the Kronecker backend on the same normalized points given
       densely, as p = 1 data ``kn.KronData([data.dense()], y)``.

   Prints the largest relative difference of the per-step batch losses of
   (a) and (c) against (b) (rounding only: 1e-9 or less).

2. Test accuracy. A 70/30 train/test split (fixed seed), ten nets (one per
   digit, targets +1/-1) trained with the Kronecker backend, and the
   prediction argmax over the ten outputs on the test images.

Writes docs/gallery_digits.png (loss curves of (a), (b), (c) overlaid on a log
scale; per-digit and overall test accuracy).

Run (about 20 s on 2 cores; needs scikit-learn and matplotlib,
``pip install ".[examples]"``)::

    python3 examples/digits.py [--width 1024] [--steps 3000] [--out docs/gallery_digits.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import kronnet as kn
import numpy as np


def load(seed: int):
    """Normalized rank-8 digits, split 70/30: (train, test, train labels, test labels)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    cut = int(round(0.7 * len(order)))
    data = kn.KronData.from_matrices(digits.images.astype(np.float64), rank=None).normalized()
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = np.sort(order[:cut]), np.sort(order[cut:])
    return data.take(train_idx), data.take(test_idx), labels[train_idx], labels[test_idx]


def with_targets(data: kn.KronData, y: np.ndarray) -> kn.KronData:
    return kn.KronData(data.factors, y, copy=False)


def exactness(train: kn.KronData, labels: np.ndarray, digit: int, width: int, steps: int, every: int):
    """Runs (a), (b), (c) on the one-vs-rest target of `digit`; returns {name: (History, seconds)}."""
    y = np.where(labels == digit, 1.0, -1.0)
    rank8 = with_targets(train, y)
    plain = kn.KronData([rank8.dense()], y)
    runs = {}
    for name, data, backend in [
        ("(a) kron, rank-8 data", rank8, "kron"),
        ("(b) dense backend", rank8, "dense"),
        ("(c) kron, p = 1 data", plain, "kron"),
    ]:
        net = kn.TwoLayerNet(data.dims, width=width, seed=0)
        t0 = time.perf_counter()
        tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), batch_size=8, seed=0, backend=backend)
        hist = tr.fit(steps, eval_every=every)
        runs[name] = (hist, time.perf_counter() - t0)
    return runs


def one_vs_rest(train, test, y_train, y_test, width: int, steps: int):
    """Ten nets, one per digit; returns (test outputs (n_test, 10), final train losses, seconds)."""
    outputs = np.empty((test.n, 10))
    final = []
    t0 = time.perf_counter()
    for digit in range(10):
        data = with_targets(train, np.where(y_train == digit, 1.0, -1.0))
        net = kn.TwoLayerNet(data.dims, width=width, seed=digit)
        tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), batch_size=8, seed=digit)
        hist = tr.fit(steps)
        final.append(hist.full_loss[-1][1])
        outputs[:, digit] = net.predict(test)
    return outputs, final, time.perf_counter() - t0


def plot(runs, every: int, per_digit: np.ndarray, accuracy: float, digit: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    styles = {"(a)": ("C0", "-", 4.0), "(b)": ("C3", "--", 2.0), "(c)": ("k", ":", 1.5)}
    for name, (hist, _) in runs.items():
        color, ls, lw = styles[name[:3]]
        steps = np.arange(1, hist.steps + 1)
        window = every
        smooth = np.convolve(hist.loss, np.ones(window) / window, mode="valid")
        ax0.plot(
            steps[window - 1 :],
            smooth,
            color=color,
            ls=ls,
            lw=lw,
            alpha=0.8,
            label=f"{name}, batch loss (avg {window})",
        )
    hist_b = runs["(b) dense backend"][0]
    s, f = zip(*hist_b.full_loss)
    ax0.plot(s, f, "o", color="C2", ms=3, label="(b) full training loss")
    ax0.set_yscale("log")
    ax0.set_xlabel("SGD step")
    ax0.set_ylabel("loss (1/2 mean squared error)")
    ax0.set_title(f"digit {digit} vs rest: kron and dense overlaid")
    ax0.legend(fontsize=7)
    ax1.bar(range(10), 100 * per_digit, color="C0")
    ax1.axhline(100 * accuracy, color="C3", ls="--", label=f"overall {100 * accuracy:.1f}%")
    ax1.set_ylim(90, 100.5)
    ax1.set_xticks(range(10))
    ax1.set_xlabel("true digit")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title("one-vs-rest, argmax of 10 nets")
    ax1.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3000, help="steps per one-vs-rest net")
    parser.add_argument("--compare-steps", type=int, default=1500, help="steps of the exactness runs")
    parser.add_argument("--digit", type=int, default=3, help="the digit of the exactness runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "gallery_digits.png"
    )
    args = parser.parse_args()

    t0 = time.perf_counter()
    train, test, y_train, y_test = load(args.seed)
    print(f"digits: {train.n} train / {test.n} test images, dims {train.dims} (d = {train.d}), rank {train.rank}")

    every = 50
    runs = exactness(train, y_train, args.digit, args.width, args.compare_steps, every)
    ref = runs["(b) dense backend"][0]
    print(f"\nexactness: digit {args.digit} vs rest, width {args.width}, {args.compare_steps} steps, S = 8, same seed")
    print(f"{'run':26s} {'seconds':>8s} {'full loss start':>16s} {'full loss end':>14s} {'max rel. diff vs (b)':>21s}")
    for name, (hist, sec) in runs.items():
        diff = float(np.max(np.abs(hist.loss - ref.loss) / np.abs(ref.loss)))
        full_diff = max(abs(a - b) / abs(b) for (_, a), (_, b) in zip(hist.full_loss, ref.full_loss))
        diff = max(diff, full_diff)
        shown = "-" if hist is ref else f"{diff:.1e}"
        print(f"{name:26s} {sec:8.2f} {hist.full_loss[0][1]:16.4f} {hist.full_loss[-1][1]:14.2e} {shown:>21s}")

    outputs, final, sec = one_vs_rest(train, test, y_train, y_test, args.width, args.steps)
    pred = outputs.argmax(axis=1)
    accuracy = float(np.mean(pred == y_test))
    per_digit = np.array([np.mean(pred[y_test == k] == k) for k in range(10)])
    print(f"\none-vs-rest: 10 nets, width {args.width}, {args.steps} steps each, lr = suggest_lr(net, 8), {sec:.1f} s")
    print("digit  test images  test accuracy  final train loss")
    for k in range(10):
        print(f"{k:5d}  {int(np.sum(y_test == k)):11d}  {100 * per_digit[k]:12.1f}%  {final[k]:16.2e}")
    print(f"overall test accuracy (argmax of the 10 outputs): {100 * accuracy:.1f}% on {test.n} images")

    plot(runs, every, per_digit, accuracy, args.digit, args.out)
    print(f"\nwrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB); total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
