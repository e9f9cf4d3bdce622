"""Pairwise data in the three split settings: kronnet against kernel ridge, linear ridge and an MLP.

``kn.make_pair_data`` draws entity tables (e.g. drugs x proteins), 100 row
and 150 column entities with unit-norm feature vectors u_a, v_b of dimension
1024 each, and 4000 distinct pairs x = u_a (x) v_b (d = 2^20) whose target
is an interaction of the two entities' latent points. Each data set is split
three ways with ``data.split(kind, test_size=0.2, seed=0)``:

* ``random_pair``: random pairs held out; their entities occur in training;
* ``new_row``: 20% of the row entities held out with all their pairs;
* ``new_both``: cold start, no entity of a test pair occurs in training.

Methods, each timed from the tables to the test predictions:

* kronnet: ``TwoLayerNet(dims, width=1024)`` trained by
  ``Trainer(net, train, lr=suggest_lr(net, 8), batch_size=8).fit(3000)``;
  the time is split into trainer construction (the Gaussian init, O(N_k d)
  per neuron), fit and predict;
* Kronecker-kernel ridge: linear ridge on x = u (x) v, solved in the dual
  with K[(a, b), (a', b')] = G_1[a, a'] G_2[b, b'], G_k = T_k T_k^T (NumPy;
  no d in the cost); lambda from a grid by an inner split of the training
  set of the same kind;
* concatenated ridge: ``sklearn.linear_model.RidgeCV`` on [u_a, v_b], which
  cannot model interactions. The columns are expressed in an orthonormal
  basis of the tables' row space (an exact rotation: the same fit and
  predictions as on the raw 2 x 1024 columns, at a cost free of d);
* ``sklearn.neural_network.MLPRegressor`` on the materialized pairs, when
  they fit (``--mlp-max-gib``); at d = 2^20 they would need tens of GiB, so
  the whole comparison is repeated at dims (32, 32) (d = 1024), where it
  runs. Solver "adam": it converges at its default learning rate, while
  "sgd" at its default (1e-3) is far from converged after 200 epochs.

Prints one Markdown table per d (rows: methods; columns: the splits; cells:
held-out MSE / var(y_test) and seconds) and writes docs/gallery_pairwise.png
(grouped bars of MSE / var(y) per split and method, one panel per d).

Run (about two minutes on 2 cores; needs scikit-learn and matplotlib,
``pip install ".[examples]"``)::

    python3 examples/pairwise.py [--width 1024] [--steps 3000] [--out docs/gallery_pairwise.png]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import kronnet as kn
import numpy as np

KINDS = ("random_pair", "new_row", "new_both")
METHODS = ("kronnet", "Kronecker-kernel ridge", "concatenated ridge", "MLPRegressor")
LAMBDAS = 10.0 ** np.arange(-4, 2)

# One result: (held-out MSE / var(y_test), seconds, note), or None if not run.
Result = Optional[Tuple[float, float, str]]


def relative_mse(pred: np.ndarray, test: kn.PairData) -> float:
    """Held-out MSE as a fraction of var(y_test): 1.0 is predicting the test mean."""
    return float(np.mean((pred - test.y) ** 2) / np.var(test.y))


def run_kronnet(train: kn.PairData, test: kn.PairData, width: int, steps: int) -> Tuple[float, float, str]:
    net = kn.TwoLayerNet(train.dims, width=width, seed=0)
    lr = kn.suggest_lr(net, 8)
    t0 = time.perf_counter()
    tr = kn.Trainer(net, train, lr=lr, batch_size=8, seed=0)
    t1 = time.perf_counter()
    hist = tr.fit(steps)
    t2 = time.perf_counter()
    pred = net.predict(test)
    t3 = time.perf_counter()
    train_rel = 2 * hist.full_loss[-1][1] / float(np.var(train.y))
    note = f"init {t1 - t0:.1f} s, fit {t2 - t1:.1f} s, predict {t3 - t2:.1f} s; train MSE/var {train_rel:.1e}"
    return relative_mse(pred, test), t3 - t0, note


def kron_kernel(grams: Sequence[np.ndarray], rows: kn.PairData, cols: kn.PairData) -> np.ndarray:
    """K[i, j] = prod_k G_k[rows.pairs[i, k], cols.pairs[j, k]] = <x_i, x'_j>."""
    out = np.ones((rows.n, cols.n))
    for k, g in enumerate(grams):
        out *= g[np.ix_(rows.pairs[:, k], cols.pairs[:, k])]
    return out


def kernel_ridge_fit(grams: Sequence[np.ndarray], train: kn.PairData, lam: float) -> Tuple[np.ndarray, float]:
    """Dual coefficients alpha = (K + lam I)^-1 (y - mean y), and the mean (the intercept)."""
    from scipy.linalg import cho_factor, cho_solve

    mean = float(np.mean(train.y))
    kernel = kron_kernel(grams, train, train)
    kernel[np.diag_indices_from(kernel)] += lam
    return cho_solve(cho_factor(kernel, overwrite_a=True), train.y - mean), mean


def run_kernel_ridge(train: kn.PairData, test: kn.PairData, kind: str, seed: int) -> Tuple[float, float, str]:
    t0 = time.perf_counter()
    grams = [t @ t.T for t in train.tables]
    inner_train, inner_val = train.split(kind, test_size=0.2, seed=seed + 1)
    scores = {}
    for lam in LAMBDAS:
        alpha, mean = kernel_ridge_fit(grams, inner_train, lam)
        scores[lam] = relative_mse(kron_kernel(grams, inner_val, inner_train) @ alpha + mean, inner_val)
    lam = min(scores, key=lambda k: scores[k])
    alpha, mean = kernel_ridge_fit(grams, train, lam)
    pred = kron_kernel(grams, test, train) @ alpha + mean
    return (
        relative_mse(pred, test),
        time.perf_counter() - t0,
        f"lambda = {lam:g} ({inner_train.n}/{inner_val.n} inner split)",
    )


def run_concat_ridge(train: kn.PairData, test: kn.PairData) -> Tuple[float, float, str]:
    from sklearn.linear_model import RidgeCV

    t0 = time.perf_counter()
    # T_k = U S V^T: the rows U S are the table's rows in the orthonormal
    # basis V of its row space, so ridge on them fits and predicts exactly
    # as on the raw columns (the penalty and the Gram are unchanged).
    rotated = []
    for t in train.tables:
        u, s, _ = np.linalg.svd(t, full_matrices=False)
        rotated.append(u * s)

    def features(data: kn.PairData) -> np.ndarray:
        return np.hstack([r[data.pairs[:, k]] for k, r in enumerate(rotated)])

    model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(features(train), train.y)
    pred = model.predict(features(test))
    return relative_mse(pred, test), time.perf_counter() - t0, f"alpha = {model.alpha_:g}"


def run_mlp(
    train: kn.PairData, test: kn.PairData, hidden: int, max_iter: int, max_gib: float
) -> Tuple[float, float, str]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    need = 8.0 * (train.n + test.n) * train.d
    if need > max_gib * 2**30:
        return (
            float("nan"),
            0.0,
            f"not run, does not fit: the materialized pairs, ({train.n} + {test.n}) x {train.d} float64, "
            f"would need {need:.3g} bytes ({need / 2**30:.1f} GiB > --mlp-max-gib {max_gib:g})",
        )
    t0 = time.perf_counter()
    x_train, x_test = train.dense(), test.dense()
    model = MLPRegressor(hidden_layer_sizes=(hidden,), solver="adam", max_iter=max_iter, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, train.y)
    pred = model.predict(x_test)
    return relative_mse(pred, test), time.perf_counter() - t0, f"{model.n_iter_} epochs"


def run(
    method: str, train: kn.PairData, test: kn.PairData, kind: str, args: argparse.Namespace
) -> Tuple[float, float, str]:
    if method == "kronnet":
        return run_kronnet(train, test, args.width, args.steps)
    if method == "Kronecker-kernel ridge":
        return run_kernel_ridge(train, test, kind, args.seed)
    if method == "concatenated ridge":
        return run_concat_ridge(train, test)
    return run_mlp(train, test, args.mlp_hidden, args.mlp_max_iter, args.mlp_max_gib)


def compare(args: argparse.Namespace, dims: Tuple[int, ...]) -> Dict[str, Dict[str, Result]]:
    data = kn.make_pair_data(args.n_pairs, tuple(args.entities), dims=dims, seed=0, latent_dim=args.latent_dim)
    print(f"\n### {data}\n")
    results: Dict[str, Dict[str, Result]] = {m: {} for m in METHODS}
    for kind in KINDS:
        train, test = data.split(kind, test_size=args.test_size, seed=args.seed)
        print(f"{kind}: {train.n} train / {test.n} test pairs")
        for method in METHODS:
            rel, sec, note = run(method, train, test, kind, args)
            results[method][kind] = (rel, sec, note)
            shown = "-" if np.isnan(rel) else f"{rel:.3f} ({sec:.1f} s)"
            print(f"  {method:24s} {shown:>18s}  {note}")
    return results


def table(results: Dict[str, Dict[str, Result]], dims: Tuple[int, ...]) -> str:
    d = int(np.prod(dims))
    lines = [
        f"| d = 2^{d.bit_length() - 1} ({' x '.join(map(str, dims))}) | " + " | ".join(KINDS) + " |",
        "|---" * (len(KINDS) + 1) + "|",
    ]
    for method, row in results.items():
        cells = []
        for kind in KINDS:
            r = row.get(kind)
            cells.append("–" if r is None or np.isnan(r[0]) else f"{r[0]:.3f} ({r[1]:.1f} s)")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(panels: List[Tuple[Tuple[int, ...], Dict[str, Dict[str, Result]]]], title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.0), sharey=True, squeeze=False)
    width = 0.8 / len(METHODS)
    top = max(r[0] for _, res in panels for row in res.values() for r in row.values() if r and not np.isnan(r[0]))
    for ax, (dims, results) in zip(axes[0], panels):
        for j, method in enumerate(METHODS):
            x = np.arange(len(KINDS)) + (j - (len(METHODS) - 1) / 2) * width
            values = [results[method][kind] for kind in KINDS]
            heights = [np.nan if r is None else r[0] for r in values]
            bars = ax.bar(x, np.nan_to_num(heights), width, color=f"C{j}", label=method)
            for bar, h, r in zip(bars, heights, values):
                if np.isnan(h):
                    label = "does not fit" if r is not None and "not run" in r[2] else ""
                    ax.text(bar.get_x() + width / 2, 0.02, label, rotation=90, ha="center", va="bottom", fontsize=7)
                else:
                    ax.text(
                        bar.get_x() + width / 2,
                        h + 0.01,
                        f"{h:.2f}",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        bbox={"fc": "white", "ec": "none", "pad": 0.5},
                    )
        ax.axhline(1.0, color="k", ls="--", lw=1, label="predicting the mean")
        ax.set_xticks(np.arange(len(KINDS)))
        ax.set_xticklabels(KINDS)
        d = int(np.prod(dims))
        ax.set_title(f"dims {dims[0]} x {dims[1]} (d = 2^{d.bit_length() - 1})")
        ax.set_ylim(0, max(1.15, 1.08 * top))
    axes[0][0].set_ylabel("held-out MSE / var(y_test)")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-pairs", type=int, default=4000)
    parser.add_argument("--entities", type=int, nargs=2, default=[100, 150], help="row and column entities")
    parser.add_argument("--dims", type=int, nargs=2, default=[1024, 1024], help="the large size")
    parser.add_argument("--small-dims", type=int, nargs=2, default=[32, 32], help="the size the MLP can run at")
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--width", type=int, default=1024, help="kronnet width")
    parser.add_argument("--steps", type=int, default=3000, help="kronnet SGD steps (batch size 8)")
    parser.add_argument("--mlp-hidden", type=int, default=256)
    parser.add_argument("--mlp-max-iter", type=int, default=100)
    parser.add_argument("--mlp-max-gib", type=float, default=2.0, help="run the MLP if its inputs fit in this")
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "gallery_pairwise.png"
    )
    args = parser.parse_args()

    start = time.perf_counter()
    print(
        f"{args.n_pairs} pairs over {tuple(args.entities)} entities, latent_dim {args.latent_dim}; "
        f"kronnet width {args.width}, {args.steps} steps, S = 8, lr = suggest_lr(net, 8); "
        f"MLPRegressor hidden {args.mlp_hidden}, adam, max_iter {args.mlp_max_iter}; {os.cpu_count()} cores"
    )
    panels = []
    for dims in (tuple(args.dims), tuple(args.small_dims)):
        t0 = time.perf_counter()
        results = compare(args, dims)
        d = int(np.prod(dims))
        print(f"\nheld-out MSE / var(y_test) (seconds), d = {d} ({time.perf_counter() - t0:.1f} s)\n")
        print(table(results, dims))
        panels.append((dims, results))

    title = (
        f"held-out error of make_pair_data, {args.n_pairs} pairs over {args.entities[0]} x {args.entities[1]} entities, "
        f"test_size {args.test_size}"
    )
    plot(panels, title, args.out)
    print(f"\nwrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB); total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
