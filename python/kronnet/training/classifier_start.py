"""A classifier's exact start, and the choice between its two kinds.

Logits are not targets, so a classifier cannot start as a regressor does
(ridge on the targets). It has two closed-form starts:

- ``"logistic"``: the linear term is scikit-learn's L2 logistic (or
  multinomial) regression on the points, the output weights a = 0. Best
  where the classes are close to linearly separable (breast cancer).
- ``"indicators"``: ridge regression of the class indicators on the points,
  then of what it leaves on the hidden outputs Φ at W(0) (as
  RidgeClassifier on [x, Φ]), the sum scaled into logits by one
  temperature. Random ReLU features carry what a linear model cannot
  (digits: 0.98 against logistic regression's 0.97).

Neither wins everywhere, so on small data :func:`choose_start` picks one
(and the threshold) by stratified cross-validation within the training
points, keeping the logistic start unless the other is significantly better (docs/design.md, "The classifier's start").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ..data import KronPoints
from .output_start import activate, ridge_features
from .ridge import RidgeFit, predict_linear

__all__ = [
    "CV_FOLDS",
    "LOGISTIC_START_ENTRIES",
    "TEMPERATURES",
    "StartChoice",
    "choose_start",
    "logistic_fit",
    "point_losses",
    "predicted_classes",
    "scaled_fit",
    "temperature",
    "training_loss",
]

#: Temperatures tried when indicator scores become logits: s · (ŷ − offset).
TEMPERATURES = tuple(10.0 ** (k / 10.0) for k in range(-10, 21))
#: Largest n·d for which the logistic start is fitted (on the dense points,
#: n × d floats, 256 MiB).
LOGISTIC_START_ENTRIES = 2**25
#: Folds of the cross-validation in :func:`choose_start` (fewer when the
#: rarest class has fewer points).
CV_FOLDS = 5

LinearSolver = Callable[[KronPoints, np.ndarray], RidgeFit]


def logistic_fit(train: KronPoints, labels: np.ndarray, C: float) -> RidgeFit:
    """The L2-penalized logistic (two classes) or multinomial regression of
    the labels on the points (scikit-learn's LogisticRegression with this
    C), as dual coefficients.

    At its optimum w = C Σ_j (Y_j − P_j) x_j, so v = Xᵀβ with β = C (Y − P)
    is the same linear model (to the solver's tolerance) and lies in the
    span of the points, as v must.

    Parameters
    ----------
    train : KronData or PairData
        n points of dimension d (made dense: n·d floats).
    labels : ndarray of shape (n,)
        Class positions 0 … K−1 (0/1 for two classes).
    C : float
        Inverse penalty, as LogisticRegression's.

    Returns
    -------
    RidgeFit
        beta (n, C') with C' = 1 for two classes else K, the intercepts,
        lam = 1 / C (gcv NaN) and the weights Xᵀβ (d, C').

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> from kronnet.training.classifier_start import logistic_fit
    >>> from kronnet.training.ridge import predict_linear
    >>> data = kn.make_kronecker_data(60, dims=(3, 2), seed=0)
    >>> labels = (data.y > np.median(data.y)).astype(float)
    >>> fit = logistic_fit(data, labels, C=1.0)
    >>> predict_linear(data, fit).shape
    (60, 1)
    """
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    X = train.dense()
    y = labels.astype(np.int64)
    # One BLAS thread: L-BFGS's products are n × d by d × K, K at most the
    # classes, too thin for threads to pay. On the 2-core machine the
    # benchmarks run on, OpenBLAS's two threads made the same fit 12-17x
    # slower on digits (2.2-2.5 s vs 0.14-0.15; on a synthetic set of its
    # shape, same iterations, 1.2-1.5 s vs 0.09-0.13) and 1.2-2x slower up
    # to n·d = 2^25 (LOGISTIC_START_ENTRIES).
    with threadpool_limits(limits=1, user_api="blas"):
        model = LogisticRegression(C=C, max_iter=2000, tol=1e-8).fit(X, y)
    proba = model.predict_proba(X)
    if proba.shape[1] == 2:
        residual = (y - proba[:, 1])[:, None]
    else:
        residual = np.eye(proba.shape[1])[y] - proba
    beta = C * residual
    return RidgeFit(beta, np.asarray(model.intercept_, dtype=np.float64), 1.0 / C, float("nan"), X.T @ beta)


def temperature(raw: np.ndarray, targets: np.ndarray, loss: str) -> float:
    """The one number s over ``TEMPERATURES`` that makes s · raw the best
    logits for `targets` by the training loss: a ridge fit on class
    indicators ranks the classes, s sets how sure its logits are.

    Parameters
    ----------
    raw : ndarray of shape (n, C)
        Indicator scores minus their offset (C = 1 for two classes).
    targets : ndarray of shape (n, C)
        0/1 targets (one column, "logistic") or one-hot rows
        ("cross_entropy").
    loss : {"logistic", "cross_entropy"}
        The training loss s is judged by.

    Returns
    -------
    float
        The best s.

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.training.classifier_start import temperature
    >>> raw = np.array([[-0.4], [0.5], [0.45], [-0.5]])
    >>> temperature(raw, np.array([[0.0], [1.0], [1.0], [0.0]]), "logistic")
    100.0
    """
    losses = [training_loss(s * raw, targets, loss) for s in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def training_loss(logits: np.ndarray, targets: np.ndarray, loss: str) -> float:
    """The mean logistic or softmax cross-entropy loss of `logits`.

    Parameters
    ----------
    logits : ndarray of shape (n, C)
        One column for two classes, else one per class.
    targets : ndarray of shape (n, C)
        0/1 targets (one column) or one-hot rows.
    loss : {"logistic", "cross_entropy"}
        Which of the two.

    Returns
    -------
    float
        The mean loss over the n points.

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.training.classifier_start import training_loss
    >>> round(training_loss(np.zeros((2, 1)), np.array([[0.0], [1.0]]), "logistic"), 4)
    0.6931
    """
    return float(np.mean(point_losses(logits, targets, loss)))


def point_losses(logits: np.ndarray, targets: np.ndarray, loss: str) -> np.ndarray:
    """Each point's logistic or softmax cross-entropy loss.

    Parameters
    ----------
    logits : ndarray of shape (n, C)
        One column for two classes, else one per class.
    targets : ndarray of shape (n, C)
        0/1 targets (one column) or one-hot rows.
    loss : {"logistic", "cross_entropy"}
        Which of the two.

    Returns
    -------
    ndarray of shape (n,)
        The loss of every point.

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.training.classifier_start import point_losses
    >>> point_losses(np.array([[0.0], [50.0]]), np.array([[1.0], [1.0]]), "logistic").round(4)
    array([0.6931, 0.    ])
    """
    if loss == "logistic":
        values: np.ndarray = np.logaddexp(0.0, logits[:, 0]) - targets.reshape(-1) * logits[:, 0]
        return values
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.sum(np.exp(logits - top), axis=1))
    per_point: np.ndarray = lse - np.sum(targets * logits, axis=1)
    return per_point


def scaled_fit(fit: RidgeFit, s: float, offset: float) -> RidgeFit:
    """The linear fit of s · (ŷ − offset): a fit of indicators as logits.

    Parameters
    ----------
    fit : RidgeFit
        A fit of class indicators.
    s : float
        The temperature (:func:`temperature`).
    offset : float
        The indicator score that means a logit of 0 (1/2 for 0/1 targets,
        0 for one-hot rows).

    Returns
    -------
    RidgeFit
        beta, weights and intercept of s · (ŷ − offset).

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.training.classifier_start import scaled_fit
    >>> from kronnet.training.ridge import RidgeFit
    >>> fit = RidgeFit(np.ones((2, 1)), np.array([0.75]), 1.0, 0.0, np.ones((3, 1)))
    >>> scaled_fit(fit, 4.0, 0.5).intercept
    array([1.])
    """
    return replace(fit, beta=s * fit.beta, intercept=s * (fit.intercept - offset), weights=s * fit.weights)


def predicted_classes(scores: np.ndarray) -> np.ndarray:
    """Class positions from logits or indicator scores minus their offset.

    Parameters
    ----------
    scores : ndarray of shape (n, C)
        One column for two classes (positive means class 1), else one per
        class.

    Returns
    -------
    ndarray of shape (n,)
        The predicted positions (int).

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.training.classifier_start import predicted_classes
    >>> predicted_classes(np.array([[0.3], [-0.2]])).tolist()
    [1, 0]
    """
    if scores.shape[1] == 1:
        return (scores[:, 0] > 0).astype(np.int64)
    best: np.ndarray = np.argmax(scores, axis=1)
    return best


@dataclass(frozen=True)
class StartChoice:
    """What :func:`choose_start` chose, and on what.

    Parameters
    ----------
    indicators : bool
        True for the indicator start, False for the logistic one.
    threshold : float or None
        The indicator start's threshold (None with the logistic start).
    accuracy : dict
        Cross-validation accuracy of every candidate: "logistic" and, for
        each threshold tried, ``f"indicators@{b:.4g}"``.
    loss : dict
        Their cross-validation loss (logistic or softmax cross-entropy, at
        each one's best temperature), which breaks ties in accuracy.
    """

    indicators: bool
    threshold: Optional[float]
    accuracy: Dict[str, float]
    loss: Dict[str, float]


def choose_start(
    train: KronPoints,
    labels: np.ndarray,
    targets: np.ndarray,
    offset: float,
    preactivations: np.ndarray,
    thresholds: Sequence[float],
    solver: Optional[LinearSolver],
    C: Optional[float],
    seed: int,
    significance: float = 0.0,
) -> Optional[StartChoice]:
    """Chooses a classifier's start by stratified k-fold cross-validation
    within the training points.

    Among the indicator starts (one per threshold) the one that classifies
    most held-out points right wins (ties: the lower held-out loss at its
    best temperature, then the earlier threshold). It replaces the logistic
    start (when `C` is given) only if it classifies more points right by
    more than `significance` standard errors of the paired per-point
    differences: the logistic start is the plainer model, and a choice made
    on a few hundred points is itself noisy.

    Parameters
    ----------
    train : KronData or PairData
        The n training points, scaled as the net sees them.
    labels : ndarray of shape (n,)
        Class positions 0 … K−1.
    targets : ndarray of shape (n, C)
        The class indicators (0/1 for two classes, C = 1; else one-hot).
    offset : float
        The indicator score of a logit of 0 (:func:`scaled_fit`).
    preactivations : ndarray of shape (n, m)
        ⟨w_r(0), x_j⟩, which do not depend on the threshold.
    thresholds : sequence of float
        The indicator start's candidate thresholds.
    solver : callable or None
        The ridge solver of the linear term (None: no linear term).
    C : float or None
        The logistic start's inverse penalty (None: no logistic candidate).
    seed : int
        Seeds the folds.
    significance : float, default 0.0
        Standard errors (of the paired per-point held-out losses) by which
        the best indicator start must beat the logistic start to be chosen;
        also the bar by which an indicator start's hidden outputs must lose
        to no features in leave-one-out error to be dropped, as the
        estimators' fit drops them (:func:`~kronnet.training.output_start.ridge_features`).

    Returns
    -------
    StartChoice or None
        None when the rarest class present has fewer than two points (no
        stratified split exists).

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> from kronnet.training.classifier_start import choose_start
    >>> from kronnet.training.ridge import ridge_linear
    >>> data = kn.make_kronecker_data(80, dims=(3, 2), seed=0)
    >>> labels = (np.abs(data.y) > np.median(np.abs(data.y))).astype(float)
    >>> net = kn.TwoLayerNet(data.dims, width=32, seed=0)
    >>> pre = net.preactivations(data)
    >>> choice = choose_start(data, labels, labels[:, None], 0.5, pre, [0.0], ridge_linear, 1.0, seed=0)
    >>> sorted(choice.accuracy)
    ['indicators@0', 'logistic']
    """
    from sklearn.model_selection import StratifiedKFold  # type: ignore[import-untyped]

    classes = labels.astype(np.int64)
    counts = np.bincount(classes)
    # Classes absent from these labels (a first partial_fit batch) do not
    # limit the folds: their indicator column is 0 in every fold.
    folds = min(CV_FOLDS, int(counts[counts > 0].min()))
    if folds < 2:
        return None
    phis = [activate(preactivations, b) for b in thresholds]
    names = (["logistic"] if C is not None else []) + [_name(b) for b in thresholds]
    # Every candidate's held-out scores, pooled over the folds.
    held = {name: np.zeros(targets.shape) for name in names}
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_rows, test_rows in splitter.split(np.zeros(len(classes)), classes):
        fit_points, test_points = train.take(fit_rows), train.take(test_rows)
        if C is not None:
            held["logistic"][test_rows] = predict_linear(test_points, logistic_fit(fit_points, labels[fit_rows], C))
        fitted, scores = _linear_parts(solver, fit_points, test_points, targets[fit_rows])
        for b, phi in zip(thresholds, phis):
            # The start the fit would build: its features dropped as the fit
            # drops them (`ridge_features`' significance).
            output = ridge_features(phi[fit_rows], targets[fit_rows] - fitted, significance=significance)
            held[_name(b)][test_rows] = scores + phi[test_rows] @ output.coef + output.intercept - offset
    loss = "logistic" if targets.shape[1] == 1 else "cross_entropy"
    accuracy = {name: float(np.mean(predicted_classes(z) == classes)) for name, z in held.items()}
    # Each candidate's held-out loss at its best temperature: indicator
    # scores are not logits until scaled, and the logistic start is given
    # the same one-number recalibration, so neither is judged by its scale.
    points = {name: _calibrated_losses(z, targets, loss) for name, z in held.items()}
    calibrated = {name: float(np.mean(values)) for name, values in points.items()}
    indicator_names = [_name(b) for b in thresholds]
    # The indicator start that classifies most held-out points right (the
    # lower loss among equals: a finer ranking), then the first.
    best = min(indicator_names, key=lambda name: (-accuracy[name], calibrated[name]))
    if C is not None:
        # The richer start must classify more held-out points correctly,
        # by more than their noise: paired, point by point (McNemar's
        # comparison). Accuracy, not the loss: one temperature calibrates
        # ridge scores less well than LogisticRegression's own, so on
        # digits, 1.5% more points right was only 1.4-2 standard errors of
        # the loss.
        right = {name: (predicted_classes(held[name]) == classes).astype(np.float64) for name in ("logistic", best)}
        gain = right[best] - right["logistic"]
        if not gain.mean() > significance * gain.std() / np.sqrt(len(gain)):
            return StartChoice(False, None, accuracy, calibrated)
    return StartChoice(True, float(thresholds[indicator_names.index(best)]), accuracy, calibrated)


def _calibrated_losses(scores: np.ndarray, targets: np.ndarray, loss: str) -> np.ndarray:
    """Each point's loss of s · scores at the s over TEMPERATURES with the
    lowest mean."""
    candidates = [point_losses(s * scores, targets, loss) for s in TEMPERATURES]
    return candidates[int(np.argmin([float(np.mean(c)) for c in candidates]))]


def _name(b: float) -> str:
    return f"indicators@{b:.4g}"


def _linear_parts(
    solver: Optional[LinearSolver], fit_points: KronPoints, test_points: KronPoints, targets: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """The linear term's indicator fit on the fitting points and its scores
    on the held-out ones (zeros without a linear term)."""
    if solver is None:
        return np.zeros_like(targets), np.zeros((test_points.n, targets.shape[1]))
    linear = solver(fit_points, targets)
    return predict_linear(fit_points, linear), predict_linear(test_points, linear)
