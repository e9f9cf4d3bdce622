"""`kronnet bench real`: kronnet's estimators at their defaults against the
tools users already have, on real data, side by side in one run.

* MovieLens-100k, the five official folds u1-u5 (``--movielens`` names the
  ``ml-100k`` folder; skipped, with the download address, when absent):
  ``KronNetRegressor()`` on the loader's tables, against Kronecker kernel
  ridge regression (KronRLS) on the same entity kernels (the linear kernels
  of the tables, solved exactly, λ by GCV), the baseline μ + b_u + b_i, and
  Surprise's ``SVD`` when Surprise is installed. Test RMSE and NDCG@10.
* scikit-learn's bundled tabular sets, 5-fold cross-validation, every method
  in ``make_pipeline(StandardScaler(), est)``: diabetes (R²) against RidgeCV
  and MLPRegressor; digits, breast cancer, wine and iris (accuracy) against
  LogisticRegression and MLPClassifier.
* Pairwise data given as entity kernels: synthetic drug-target-like sets
  (two RBF kernels over latent entity positions; an interaction target, a
  sign interaction, a draw from KronRLS's own prior, main effects only) in
  a random-pair split and a cold-start split (test pairs whose first entity
  is in no training pair): ``KronNetRegressor(kernels=...)`` (on the
  cold-start split also with ``validation_entities=0``) against KronRLS
  (Kronecker kernel ridge regression by conjugate gradients, λ on a
  held-out fifth). Test MSE and concordance index.
* The float32 training state's drift from float64 on MovieLens u1.
* How the loader's default rank was chosen: for each fold, a tenth of
  ``<fold>.base`` held out before the tables are built
  (``movielens_100k(..., validation=0.1)``), KronRLS fitted on the rest at
  each rank and scored on that tenth; beside it the same tenth scored with
  tables built from the whole base file, which have seen its ratings.

Nothing is tuned per fold or per data set: every estimator runs at its
defaults (MLPs and LogisticRegression with a larger ``max_iter`` so that
they converge).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import os
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .sweeps import meta, pinned, save_json, table

#: The folds of GroupLens's 5-fold cross-validation.
FOLDS = ("u1", "u2", "u3", "u4", "u5")


def real(args: argparse.Namespace) -> int:
    """Real data: MovieLens-100k's five folds (``--movielens`` folder) against
    KronRLS, main effects and Surprise SVD; scikit-learn's tabular sets by
    5-fold CV against RidgeCV / LogisticRegression and MLP; float32 drift."""
    code = pinned(args, ["bench", "real", *_argv(args)])
    if code is not None:
        return code
    warnings.filterwarnings("ignore", category=UserWarning)
    from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    out: Dict[str, Any] = {"meta": meta(args)}
    folds = FOLDS[:1] if args.quick else FOLDS
    out["movielens"] = movielens(args.movielens, folds)
    out["tabular"] = tabular(quick=args.quick)
    out["pairwise"] = pairwise_kernels()
    if out["movielens"]:
        out["rank"] = rank_choice(args.movielens, folds)
        out["float32"] = float32_drift(args.movielens)
        if not args.quick:
            out["threshold"] = threshold_curve(args.movielens)
    save_json(os.path.join(args.out, "bench_real.json"), out)
    print(report(out))
    return 0


def _argv(args: argparse.Namespace) -> List[str]:
    argv = ["--threads", str(args.threads), "--out", args.out, "--movielens", args.movielens]
    return argv + (["--quick"] if args.quick else [])


# -- MovieLens ----------------------------------------------------------------


def ndcg_at(k: int, users: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean over users of NDCG@k: each user's test items ranked by `pred`,
    gain 2^rating − 1, discount log2(rank + 1), normalized by the ideal
    ranking by `truth` (ties in `pred` broken by item order)."""
    order = np.lexsort((-pred, users))
    users, truth, pred = users[order], truth[order], pred[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    scores = []
    for a, b in zip(starts, ends):
        gains = 2.0 ** truth[a:b] - 1.0
        top = min(k, b - a)
        discount = 1.0 / np.log2(np.arange(2, top + 2))
        ideal = float(np.sort(gains)[::-1][:top] @ discount)
        if ideal > 0:
            scores.append(float(gains[:top] @ discount) / ideal)
    return float(np.mean(scores))


def rmse(pred: np.ndarray, y: Any) -> float:
    """Root mean squared error of `pred` against `y`."""
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def _timed(fn: Callable[[], np.ndarray]) -> Tuple[np.ndarray, float]:
    start = time.perf_counter()
    pred = fn()
    return pred, time.perf_counter() - start


def movielens(path: str, folds: Tuple[str, ...]) -> List[Dict[str, Any]]:
    """Per fold and method: RMSE, NDCG@10, seconds (fit + predict)."""
    from kronnet.datasets import movielens_100k

    rows: List[Dict[str, Any]] = []
    try:
        movielens_100k(path, split=folds[0])
    except FileNotFoundError as exc:
        print(f"MovieLens-100k skipped: {exc}")
        return rows
    for fold in folds:
        start = time.perf_counter()
        train, test = movielens_100k(path, split=fold)
        load_seconds = time.perf_counter() - start

        methods: Dict[str, Callable[[Any, Any], np.ndarray]] = {
            "kronnet": _kronnet,
            "KronRLS": _kronrls,
            "mu + b_u + b_i": _effects,
        }
        if _has_surprise():
            methods["Surprise SVD"] = _surprise_svd
        elif fold == folds[0]:
            print("  Surprise not installed (pip install scikit-surprise): its SVD is left out")
        for name, fn in methods.items():
            pred, seconds = _timed(functools.partial(fn, train, test))
            rows.append(
                {
                    "fold": fold,
                    "method": name,
                    "rmse": rmse(pred, test.y),
                    "ndcg10": ndcg_at(10, test.pairs[:, 0], np.asarray(test.y), pred),
                    "seconds": seconds,
                    "load_seconds": load_seconds,
                }
            )
            print(f"  {fold} {name}: RMSE {rows[-1]['rmse']:.4f} in {seconds:.1f} s", flush=True)
    return rows


def _effects(train: Any, test: Any) -> np.ndarray:
    """μ + b_u + b_i, the effects the loader computes (training split only)."""
    from kronnet.datasets import main_effects

    mu, b_u, b_i = main_effects((train.pairs, train.y), train.n_entities)
    return np.asarray(mu + b_u[test.pairs[:, 0]] + b_i[test.pairs[:, 1]])


def _kronnet(train: Any, test: Any) -> np.ndarray:
    """KronNetRegressor at its defaults on the loader's points."""
    from kronnet.sklearn import KronNetRegressor

    pred: np.ndarray = KronNetRegressor(random_state=0).fit(train).predict(test)
    return pred


def _kronrls(train: Any, test: Any) -> np.ndarray:
    """Kronecker kernel ridge regression with the tables' linear kernels:
    the exact ridge fit of the points (λ by GCV)."""
    from kronnet.training.ridge import predict_linear, ridge_linear

    return predict_linear(test, ridge_linear(train, train.y))[:, 0]


#: The ranks of the loader's "ratings" block that `rank_choice` compares.
RANKS = (2, 3, 4, 6, 8, 16)


def rank_choice(path: str, folds: Tuple[str, ...], ranks: Tuple[int, ...] = RANKS) -> List[Dict[str, Any]]:
    """Validation RMSE of KronRLS per fold and rank of the "ratings" block:
    "validation" on a tenth of the base file held out before the tables are
    built, "seen" on the same tenth with tables built from the whole base
    file (its ratings included), as a validation split taken after loading
    would be. The test files are not read for this."""
    from kronnet import PairData
    from kronnet.datasets import movielens_100k

    def kronrls_rmse(train: Any, val: Any) -> float:
        return rmse(_kronrls(train, val), val.y)

    rows: List[Dict[str, Any]] = []
    for fold in folds:
        for rank in ranks:
            fit, val, _ = movielens_100k(path, split=fold, rank=rank, validation=0.1)
            seen_tables = movielens_100k(path, split=fold, rank=rank)[0].tables
            rows.append(
                {
                    "fold": fold,
                    "rank": rank,
                    "validation_rmse": kronrls_rmse(fit, val),
                    "seen_rmse": kronrls_rmse(
                        PairData(seen_tables, fit.pairs, fit.y, copy=False),
                        PairData(seen_tables, val.pairs, val.y, copy=False),
                    ),
                }
            )
        best = min((r for r in rows if r["fold"] == fold), key=lambda r: r["validation_rmse"])
        print(f"  {fold}: validation RMSE lowest at rank {best['rank']} ({best['validation_rmse']:.4f})", flush=True)
    return rows


def _has_surprise() -> bool:
    return importlib.util.find_spec("surprise") is not None


def _surprise_svd(train: Any, test: Any) -> np.ndarray:
    """Surprise's SVD (biased matrix factorisation by SGD) at its defaults."""
    import pandas as pd  # type: ignore[import-untyped]

    # Imported by name: Surprise is optional and has no type information.
    surprise: Any = importlib.import_module("surprise")
    SVD, Dataset, Reader = surprise.SVD, surprise.Dataset, surprise.Reader

    frame = pd.DataFrame({"u": train.pairs[:, 0], "i": train.pairs[:, 1], "r": train.y})
    data = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5)))
    algo = SVD(random_state=0).fit(data.build_full_trainset())
    return np.array([algo.predict(int(u), int(i)).est for u, i in test.pairs])


def float32_drift(path: str) -> Dict[str, Any]:
    """The same KronNetRegressor fit on u1 with a float64 and a float32
    trainer, early stopping off: with it, the start (computed in float64
    either way) can win and be refitted, and the comparison would not see
    the trainer at all."""
    from kronnet.datasets import movielens_100k
    from kronnet.sklearn import KronNetRegressor

    train, test = movielens_100k(path, split="u1")
    preds = {}
    seconds = {}
    for dtype in ("float64", "float32"):
        start = time.perf_counter()
        reg = KronNetRegressor(random_state=0, dtype=dtype, early_stopping=False).fit(train)
        preds[dtype] = reg.predict(test)
        seconds[dtype] = time.perf_counter() - start
    a, b = preds["float64"], preds["float32"]
    return {
        "max_abs_diff": float(np.max(np.abs(a - b))),
        "rel_diff": float(np.linalg.norm(a - b) / np.linalg.norm(a)),
        "rmse": {k: rmse(p, test.y) for k, p in preds.items()},
        "seconds": seconds,
    }


#: Thresholds b of the threshold curve (the default for m = 1024 is added).
THRESHOLDS = (0.5, 1.0, 2.5)


def threshold_curve(path: str) -> List[Dict[str, Any]]:
    """Test error and step cost against the threshold b, the model's central
    trade-off: KronNetRegressor defaults but `threshold` on MovieLens u1
    (RMSE, ms per step, the fraction of neurons a point fires), and
    KronNetClassifier on digits (5-fold accuracy)."""
    from sklearn import datasets  # type: ignore[import-untyped]
    from sklearn.model_selection import StratifiedKFold, cross_val_score  # type: ignore[import-untyped]
    from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped]
    from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

    from kronnet import default_threshold
    from kronnet.datasets import movielens_100k
    from kronnet.sklearn import KronNetClassifier, KronNetRegressor

    train, test = movielens_100k(path, split="u1")
    X, y = datasets.load_digits(return_X_y=True)
    rows: List[Dict[str, Any]] = []
    for b in sorted({*THRESHOLDS, default_threshold(1024)}):
        start = time.perf_counter()
        reg = KronNetRegressor(random_state=0, threshold=b).fit(train)
        fit_seconds = time.perf_counter() - start
        pred = reg.predict(test)
        sample = test.take(np.arange(2000)).scaled(reg.input_scale_)
        fired = float(np.mean(reg.net_.preactivations(sample) > reg.net_.thresholds))
        start = time.perf_counter()
        clf = make_pipeline(StandardScaler(), KronNetClassifier(random_state=0, threshold=b))
        scores = cross_val_score(clf, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0))
        rows.append(
            {
                "threshold": b,
                "rmse": rmse(pred, test.y),
                # What the default was chosen by: R² on the estimator's own held-out tenth of u1.base.
                "validation": float(reg.best_validation_score_ or float("nan")),
                "fit_seconds": fit_seconds,
                "ms_per_step": 1e3 * fit_seconds / max(reg.t_, 1),
                "fired": fired,
                "digits": float(scores.mean()),
                "digits_seconds": time.perf_counter() - start,
            }
        )
        print(f"  b = {b:.3g}: u1 RMSE {rows[-1]['rmse']:.4f}, digits {scores.mean():.4f}", flush=True)
    return rows


# -- scikit-learn's tabular sets ---------------------------------------------------


def tabular(quick: bool = False) -> List[Dict[str, Any]]:
    """Per data set and method: mean and spread of the 5-fold CV score, seconds."""
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression, RidgeCV  # type: ignore[import-untyped]
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.neural_network import MLPClassifier, MLPRegressor  # type: ignore[import-untyped]
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from kronnet.sklearn import KronNetClassifier, KronNetRegressor

    sets: List[Tuple[str, Callable[..., Any], bool]] = [
        ("diabetes", datasets.load_diabetes, False),
        ("digits", datasets.load_digits, True),
        ("breast cancer", datasets.load_breast_cancer, True),
        ("wine", datasets.load_wine, True),
        ("iris", datasets.load_iris, True),
    ]
    if quick:
        sets = sets[:2]
    rows: List[Dict[str, Any]] = []
    for name, loader, classify in sets:
        X, y = loader(return_X_y=True)
        if classify:
            cv: Any = StratifiedKFold(5, shuffle=True, random_state=0)
            methods = {
                "kronnet": KronNetClassifier(random_state=0),
                "LogisticRegression": LogisticRegression(max_iter=5000),
                "MLPClassifier": MLPClassifier(max_iter=2000, random_state=0),
            }
            metric = "accuracy"
        else:
            cv = KFold(5, shuffle=True, random_state=0)
            methods = {
                "kronnet": KronNetRegressor(random_state=0),
                "RidgeCV": RidgeCV(),
                "MLPRegressor": MLPRegressor(max_iter=2000, random_state=0),
            }
            metric = "r2"
        for method, est in methods.items():
            start = time.perf_counter()
            scores = cross_val_score(make_pipeline(StandardScaler(), est), X, y, cv=cv, scoring=metric)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "data": name,
                    "n": int(X.shape[0]),
                    "d": int(X.shape[1]),
                    "metric": metric,
                    "method": method,
                    "mean": float(scores.mean()),
                    "std": float(scores.std()),
                    "scores": scores.tolist(),
                    "seconds": seconds,
                }
            )
            print(
                f"  {name} {method}: {metric} {scores.mean():.4f} ± {scores.std():.4f} in {seconds:.1f} s", flush=True
            )
    return rows


# -- pairwise data given as kernels ----------------------------------------------


def concordance_index(truth: np.ndarray, pred: np.ndarray) -> float:
    """The share of pairs of test points with different targets that `pred`
    orders as `truth` does (ties in `pred` count one half)."""
    num = den = 0.0
    for start in range(0, len(truth), 1024):
        t, p = truth[start : start + 1024, None], pred[start : start + 1024, None]
        ordered = t > truth[None, :]
        den += float(ordered.sum())
        num += float(np.sum(ordered & (p > pred[None, :]))) + 0.5 * float(np.sum(ordered & (p == pred[None, :])))
    return num / den if den else float("nan")


#: The targets of the synthetic kernel sets: the bench's main set, then
#: three that test "at or below KronRLS on any kernels": a sign interaction
#: (far from what a smooth kernel fits), a draw from KronRLS's own Gaussian
#: process prior (nothing to gain over it) and main effects only.
KERNEL_TARGETS = ("interaction", "sign", "kronecker draw", "main effects")


def synthetic_kernels(
    seed: int = 0,
    target: str = "interaction",
    entities: Tuple[int, int] = (160, 120),
    gamma: float = 0.3,
    noise: Optional[float] = None,
) -> Tuple[List[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Two RBF entity kernels exp(-γ |z - z'|²) over `entities` (160 and
    120) entities at latent positions z in R^3, 40% of the entity pairs
    observed, and a target of the two positions, with noise: kernels,
    pairs, y, the first entities' latent positions. `target` (one of
    ``KERNEL_TARGETS``): "interaction" tanh(z_a · z_b) + 0.5 max(z_a1 +
    z_b2, 0), "sign" sign(z_a1 z_b1) + 0.3 z_a2, "kronecker draw" a draw
    of N(0, K_1 ⊗ K_2) on the grid, "main effects" sin(z_a1) + cos(z_b2).
    `noise` None (the bench's sets): "interaction" with noise of sd 0.2,
    the others standardized with noise of sd 0.3; a number: the signal
    as it is, with noise of sd `noise` times the signal's."""
    if target not in KERNEL_TARGETS:
        raise ValueError(f"target must be one of {KERNEL_TARGETS}, got {target!r}")
    rng = np.random.default_rng(seed)
    n1, n2 = entities
    z1, z2 = rng.normal(size=(n1, 3)), rng.normal(size=(n2, 3))

    def rbf(z: np.ndarray) -> np.ndarray:
        sq = np.sum((z[:, None, :] - z[None, :, :]) ** 2, axis=2)
        return np.asarray(np.exp(-gamma * sq))

    grid = np.array([(a, b) for a in range(n1) for b in range(n2)])
    pairs = grid[np.sort(rng.choice(len(grid), size=int(0.4 * len(grid)), replace=False))]
    za, zb = z1[pairs[:, 0]], z2[pairs[:, 1]]
    kernels = [rbf(z1), rbf(z2)]
    if target == "interaction":
        signal = np.tanh(np.sum(za * zb, axis=1)) + 0.5 * np.maximum(za[:, 0] + zb[:, 1], 0.0)
    elif target == "sign":
        signal = np.sign(za[:, 0] * zb[:, 0]) + 0.3 * za[:, 1]
    elif target == "kronecker draw":
        # L_1 Z L_2ᵀ has covariance K_1 ⊗ K_2 (jitter: the RBF Grams are
        # numerically singular).
        roots = [np.linalg.cholesky(K + 1e-8 * np.eye(len(K))) for K in kernels]
        signal = (roots[0] @ rng.normal(size=(n1, n2)) @ roots[1].T)[pairs[:, 0], pairs[:, 1]]
    else:
        signal = np.sin(za[:, 0]) + np.cos(zb[:, 1])
    if noise is not None:
        return kernels, pairs, signal + noise * np.std(signal) * rng.normal(size=len(pairs)), z1
    if target == "interaction":
        return kernels, pairs, signal + 0.2 * rng.normal(size=len(pairs)), z1
    signal = (signal - signal.mean()) / signal.std()
    return kernels, pairs, signal + 0.3 * rng.normal(size=len(pairs)), z1


def pairwise_kernels() -> List[Dict[str, Any]]:
    """KronNetRegressor(kernels=...) against KronRLS on each synthetic kernel
    set (``KERNEL_TARGETS``), random-pair and cold-start splits: test MSE,
    concordance, seconds. On the cold-start split kronnet runs twice: at its
    defaults, and with ``validation_entities=0``, the documented setting
    for predicting new first entities."""
    return [row for target in KERNEL_TARGETS for row in _kernel_set(target)]


def _kernel_set(target: str) -> List[Dict[str, Any]]:
    """The rows of :func:`pairwise_kernels` for one synthetic kernel set."""
    from kronnet import PairData
    from kronnet.sklearn import KronNetRegressor
    from kronnet.training.ridge import predict_linear, ridge_pairs_dual

    kernels, pairs, y, _ = synthetic_kernels(target=target)
    data = PairData.from_kernels(kernels, pairs, y)
    rng = np.random.default_rng(1)
    random_test = rng.random(len(pairs)) < 0.2
    held_entities = rng.permutation(kernels[0].shape[0])[: kernels[0].shape[0] // 5]
    cold_test = np.isin(pairs[:, 0], held_entities)
    rows: List[Dict[str, Any]] = []
    for split, test in (("random pairs", random_test), ("cold start (new first entity)", cold_test)):
        train = ~test

        def kronrls(train: np.ndarray = train, test: np.ndarray = test) -> np.ndarray:
            fit = ridge_pairs_dual(data.take(np.flatnonzero(train)), y[train])
            return predict_linear(data.take(np.flatnonzero(test)), fit)[:, 0]

        def kronnet(train: np.ndarray = train, test: np.ndarray = test, **params: Any) -> np.ndarray:
            reg = KronNetRegressor(kernels=kernels, random_state=0, **params).fit(pairs[train], y[train])
            return np.asarray(reg.predict(pairs[test]))

        methods: List[Tuple[str, Callable[[], np.ndarray]]] = [("kronnet", kronnet)]
        if split.startswith("cold"):
            methods.append(("kronnet, validation_entities=0", functools.partial(kronnet, validation_entities=0)))
        for method, fn in methods + [("KronRLS", kronrls)]:
            pred, seconds = _timed(fn)
            mse = float(np.mean((pred - y[test]) ** 2))
            cindex = concordance_index(y[test], pred)
            rows.append(
                {
                    "set": target,
                    "split": split,
                    "n_train": int(train.sum()),
                    "n_test": int(test.sum()),
                    "method": method,
                    "mse": mse,
                    "mse_over_var": mse / float(np.var(y[test])),
                    "cindex": cindex,
                    "seconds": seconds,
                }
            )
            print(f"  {target}, {split}, {method}: MSE {mse:.4f}, C-index {cindex:.4f} in {seconds:.1f} s", flush=True)
    return rows


# -- the report -------------------------------------------------------------------


def report(out: Dict[str, Any]) -> str:
    """Markdown tables of the run."""
    parts: List[str] = []
    ml = out.get("movielens") or []
    if ml:
        methods = list(dict.fromkeys(r["method"] for r in ml))
        folds = list(dict.fromkeys(r["fold"] for r in ml))
        body = []
        for method in methods:
            mine = [r for r in ml if r["method"] == method]
            body.append(
                [method]
                + [f"{r['rmse']:.4f}" for r in mine]
                + [
                    f"**{np.mean([r['rmse'] for r in mine]):.4f}**",
                    f"{np.mean([r['ndcg10'] for r in mine]):.4f}",
                    f"{np.median([r['seconds'] for r in mine]):.1f}",
                ]
            )
        parts.append("MovieLens-100k, test RMSE per fold (fit on <fold>.base, scored on <fold>.test):\n")
        parts.append(table(["method", *folds, "mean RMSE", "mean NDCG@10", "median s/fold"], body))
    tab = out.get("tabular") or []
    if tab:
        body = [
            [
                r["data"],
                f"{r['n']} × {r['d']}",
                r["metric"],
                r["method"],
                f"{r['mean']:.4f} ± {r['std']:.4f}",
                f"{r['seconds']:.1f}",
            ]
            for r in tab
        ]
        parts.append("\nscikit-learn data sets, 5-fold CV, make_pipeline(StandardScaler(), est):\n")
        parts.append(table(["data", "n × d", "metric", "method", "mean ± std", "seconds (5 folds)"], body))
    pw = out.get("pairwise") or []
    if pw:
        body = [
            [
                r.get("set", KERNEL_TARGETS[0]),
                r["split"],
                f"{r['n_train']} / {r['n_test']}",
                r["method"],
                f"{r['mse']:.4f}",
                f"{r['mse_over_var']:.4f}",
                f"{r['cindex']:.4f}",
                f"{r['seconds']:.1f}",
            ]
            for r in pw
        ]
        parts.append("\npairwise data as entity kernels (synthetic, two RBF kernels, d = 160 · 120):\n")
        parts.append(
            table(["target", "split", "train / test pairs", "method", "MSE", "MSE / var", "C-index", "seconds"], body)
        )
    ranks = out.get("rank") or []
    if ranks:
        folds = list(dict.fromkeys(r["fold"] for r in ranks))
        body = []
        for rank in dict.fromkeys(r["rank"] for r in ranks):
            mine = [r for r in ranks if r["rank"] == rank]
            body.append(
                [str(rank)]
                + [f"{r['validation_rmse']:.4f}" for r in mine]
                + [
                    f"**{np.mean([r['validation_rmse'] for r in mine]):.4f}**",
                    f"{np.mean([r['seen_rmse'] for r in mine]):.4f}",
                ]
            )
        parts.append(
            "\nthe ratings block's rank: KronRLS RMSE on a tenth of each base file held out before the "
            "tables are built (movielens_100k(validation=0.1)); last column, the same tenth with tables "
            "that have seen its ratings:\n"
        )
        parts.append(table(["rank", *folds, "mean", "mean, tables have seen it"], body))
    curve = out.get("threshold") or []
    if curve:
        body = [
            [
                f"{r['threshold']:.3g}",
                f"{r.get('validation', float('nan')):.4f}",
                f"{r['rmse']:.4f}",
                f"{r['ms_per_step']:.1f}",
                f"{100 * r['fired']:.1f}%",
                f"{r['digits']:.4f}",
            ]
            for r in curve
        ]
        parts.append("\nthe threshold b (u1 with KronNetRegressor, digits with KronNetClassifier, other defaults):\n")
        parts.append(
            table(
                [
                    "b",
                    "u1 validation R²",
                    "u1 RMSE",
                    "ms/step (fit / steps)",
                    "neurons fired per point",
                    "digits accuracy",
                ],
                body,
            )
        )
    drift = out.get("float32")
    if drift:
        parts.append(
            "\nfloat32 against float64 (KronNetRegressor defaults but early_stopping=False, u1): relative "
            "difference of the test "
            f"predictions {drift['rel_diff']:.2e} (max {drift['max_abs_diff']:.2e} stars); RMSE "
            f"{drift['rmse']['float64']:.5f} vs {drift['rmse']['float32']:.5f}; "
            f"{drift['seconds']['float64']:.1f} s vs {drift['seconds']['float32']:.1f} s"
        )
    return "\n".join(parts)
