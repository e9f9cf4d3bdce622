"""Cold start with entity kernels: what the estimator's hold-out judges.

Two RBF entity kernels (120 "drugs" and 100 "targets" at random latent
points in R^3), 40% of the drug-target pairs observed, a target with a
sign interaction, sign(z_a1 z_b1) + 0.3 z_a2, plus noise (sd 0.3 of the
signal's). The test pairs are every pair of a fifth of the drugs, none of
which occurs in training (cold start). Methods:

* ``KronNetRegressor(kernels=..., random_state=r)`` at its defaults: early
  stopping holds out random training pairs, whose drugs training has seen;
* the same with ``validation_entities=0``: it holds out whole drugs, as the
  test does;
* KronRLS (Kronecker kernel ridge regression, λ on a held-out fifth,
  ``kronnet.training.ridge.ridge_pairs_dual``), which has no epochs to
  choose.

Prints test MSE / var(y) and the concordance index of each, for two
random states. Run (about 40 s on 2 cores; needs scikit-learn)::

    python3 examples/cold_start.py

``--sweep`` runs ten kernel sets of this kind (``SWEEP``: sizes, RBF
widths, noise levels and four targets: an interaction, a draw from
N(0, K_1 ⊗ K_2), the sign interaction, main effects only), each split at
random pairs and at new drugs, and counts the fits at or below KronRLS's
test MSE: kronnet at its defaults on both splits, and with
``validation_entities=0`` on the cold start (about 12 minutes)::

    python3 examples/cold_start.py --sweep
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
from kronnet import PairData
from kronnet.cli.real import concordance_index, synthetic_kernels
from kronnet.sklearn import KronNetRegressor
from kronnet.training.ridge import predict_linear, ridge_pairs_dual
from sklearn.exceptions import ConvergenceWarning

#: (seed, drugs, targets, RBF width γ, noise sd / signal sd, target).
SWEEP = (
    (2, 160, 120, 0.3, 0.3, "interaction"),
    (3, 80, 60, 0.3, 0.3, "interaction"),
    (4, 160, 120, 1.0, 0.3, "interaction"),
    (5, 160, 120, 0.1, 0.3, "interaction"),
    (6, 160, 120, 0.3, 0.05, "interaction"),
    (7, 160, 120, 0.3, 1.0, "interaction"),
    (8, 120, 100, 0.3, 0.3, "kronecker draw"),
    (9, 120, 100, 0.3, 0.3, "sign"),
    (10, 120, 100, 0.3, 0.3, "main effects"),
    (11, 200, 40, 0.5, 0.2, "interaction"),
)


def kernel_set(seed=9, drugs=120, targets=100, gamma=0.3, noise=0.3, target="sign"):
    """Kernels, the observed pairs, their targets (``synthetic_kernels``,
    the bench's generator, at these sizes, width and noise), and the test
    masks of a random-pair split and of the cold start (a fifth of the
    drugs)."""
    kernels, pairs, y, _ = synthetic_kernels(seed, target, (drugs, targets), gamma, noise)
    split = np.random.default_rng(seed + 100)
    random_pairs = split.random(len(pairs)) < 0.2
    new_drugs = split.permutation(drugs)[: drugs // 5]
    return kernels, pairs, y, random_pairs, np.isin(pairs[:, 0], new_drugs)


def kronrls(kernels, pairs, y, train, test):
    data = PairData.from_kernels(kernels, pairs, y)
    fit = ridge_pairs_dual(data.take(np.flatnonzero(train)), y[train])
    return predict_linear(data.take(np.flatnonzero(test)), fit)[:, 0]


def kronnet(kernels, pairs, y, train, test, **params):
    reg = KronNetRegressor(kernels=kernels, **params).fit(pairs[train], y[train])
    return np.asarray(reg.predict(pairs[test]))


def one_set() -> None:
    kernels, pairs, y, _, test = kernel_set()
    train = ~test
    var = float(np.var(y[test]))
    print(f"{train.sum()} training pairs, {test.sum()} test pairs of {len(np.unique(pairs[test, 0]))} new drugs\n")
    print("| method | random_state | test MSE / var | C-index |")
    print("|---|---|---|---|")
    pred = kronrls(kernels, pairs, y, train, test)
    print(f"| KronRLS | - | {np.mean((pred - y[test]) ** 2) / var:.4f} | {concordance_index(y[test], pred):.4f} |")
    for name, params in (("kronnet, defaults", {}), ("kronnet, validation_entities=0", {"validation_entities": 0})):
        for state in (0, 1):
            pred = kronnet(kernels, pairs, y, train, test, random_state=state, **params)
            mse = np.mean((pred - y[test]) ** 2) / var
            print(f"| {name} | {state} | {mse:.4f} | {concordance_index(y[test], pred):.4f} |")


def sweep() -> None:
    at_or_below: dict = {}
    print("| set | split | method | random_state | MSE / KronRLS's - 1 |")
    print("|---|---|---|---|---|")
    for config in SWEEP:
        kernels, pairs, y, random_pairs, new_drugs = kernel_set(*config)
        for split, test in (("random pairs", random_pairs), ("new drugs", new_drugs)):
            train = ~test
            base = np.mean((kronrls(kernels, pairs, y, train, test) - y[test]) ** 2)
            methods = [("defaults", {})]
            if split == "new drugs":
                methods.append(("validation_entities=0", {"validation_entities": 0}))
            for name, params in methods:
                for state in (0, 1):
                    pred = kronnet(kernels, pairs, y, train, test, random_state=state, **params)
                    rel = np.mean((pred - y[test]) ** 2) / base - 1
                    # 1e-6: the two solve the same ridge problem along
                    # different rounding paths.
                    ok = at_or_below.setdefault((split, name), [0, 0])
                    ok[0] += int(rel <= 1e-6)
                    ok[1] += 1
                    print(f"| {config} | {split} | {name} | {state} | {rel:+.2e} |", flush=True)
    print()
    for (split, name), (good, total) in at_or_below.items():
        print(f"{split}, kronnet {name}: at or below KronRLS in {good} of {total} fits")


def main() -> None:
    warnings.simplefilter("ignore", ConvergenceWarning)
    if "--sweep" in sys.argv[1:]:
        sweep()
    else:
        one_set()


if __name__ == "__main__":
    main()
