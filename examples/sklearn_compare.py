"""KronNetRegressor against scikit-learn's MLPRegressor and SGDRegressor on dense data.

Three regression problems with n <= 2000 rows, each split 75/25 with a fixed
seed: scikit-learn's bundled diabetes data (442 x 10, no download),
``make_friedman1`` (2000 x 10, noise 1.0) and p = 1 structured data from
``kn.make_kronecker_data(2000, dims=(256,), latent_dim=8)`` turned into a
plain matrix (2000 x 256). Every model standardizes the targets
(``TransformedTargetRegressor`` with a ``StandardScaler``) and the features
(``StandardScaler``); kronnet's pipeline then also scales each row to unit
norm (``Normalizer``), the input scale its model and ``lr="auto"`` assume
(none of the three models has an output bias):

* ``KronNetRegressor(width=W)``: kronnet's two-layer net (threshold ReLU,
  fixed +-1 output weights, no biases, only the first layer trained) by
  exact minibatch SGD, lr="auto", 5000 steps at most;
* the same with ``early_stopping=True`` (10% held out of the training part,
  the best weights kept);
* ``MLPRegressor(hidden_layer_sizes=(W,), solver="sgd")``: both layers and
  biases trained, ReLU, scikit-learn's defaults otherwise (max_iter=200);
* ``SGDRegressor()``: a linear model.

Prints a Markdown table of held-out R^2 and fit time (medians over model
seeds 0-2, with the min-max spread).

Run (about two minutes on 2 cores; needs scikit-learn)::

    python3 examples/sklearn_compare.py [--width 1024]
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any, Callable, Dict, List, Tuple

import kronnet as kn
import numpy as np
from kronnet.sklearn import KronNetRegressor
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_diabetes, make_friedman1
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDRegressor
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler


def datasets() -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    latent = kn.make_kronecker_data(2000, dims=(256,), seed=0, latent_dim=8)
    return {
        "diabetes (442 x 10)": load_diabetes(return_X_y=True),
        "friedman1 (2000 x 10)": make_friedman1(2000, 10, noise=1.0, random_state=0),
        "latent, p = 1 (2000 x 256)": (latent.dense(), np.asarray(latent.y)),
    }


def models(width: int) -> Dict[str, Callable[[int], Any]]:
    def standardized(*steps: Any) -> Any:
        return TransformedTargetRegressor(
            regressor=make_pipeline(StandardScaler(), *steps), transformer=StandardScaler()
        )

    return {
        "KronNetRegressor": lambda s: standardized(
            Normalizer(), KronNetRegressor(width=width, max_steps=5000, random_state=s)
        ),
        "KronNetRegressor (early_stopping)": lambda s: standardized(
            Normalizer(), KronNetRegressor(width=width, max_steps=5000, early_stopping=True, random_state=s)
        ),
        "MLPRegressor (sgd)": lambda s: standardized(
            MLPRegressor(hidden_layer_sizes=(width,), solver="sgd", random_state=s)
        ),
        "SGDRegressor": lambda s: standardized(SGDRegressor(random_state=s)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    rows: List[str] = []
    start = time.perf_counter()
    for name, (X, y) in datasets().items():
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0)
        for label, make in models(args.width).items():
            scores, seconds = [], []
            for seed in range(args.seeds):
                pipe = make(seed)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    pipe.fit(X_tr, y_tr)
                seconds.append(time.perf_counter() - t0)
                scores.append(pipe.score(X_te, y_te))
            s, t = np.array(scores), np.array(seconds)
            rows.append(
                f"| {name} | {label} | {np.median(s):.3f} ({s.min():.3f} to {s.max():.3f}) "
                f"| {np.median(t):.2f} ({t.min():.2f}-{t.max():.2f}) |"
            )
            print(rows[-1], flush=True)
    print()
    print(f"width {args.width}, seeds 0-{args.seeds - 1}, 75/25 split (random_state=0), standardized X and y")
    print("| data | model | held-out R^2 | fit seconds |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
