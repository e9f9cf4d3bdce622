"""scikit-learn estimators around :class:`~kronnet.TwoLayerNet` and :class:`~kronnet.Trainer`.

:class:`KronNetRegressor` and :class:`KronNetClassifier` follow scikit-learn's
conventions (``fit``/``partial_fit``/``predict``/``score``, ``get_params``,
``clone``, pickling, pipelines and grid searches) and train by epochs with the
same stopping rule as :class:`sklearn.neural_network.MLPRegressor`.

Inputs, for ``fit``, ``partial_fit`` and ``predict``:

* a dense 2-D float array ``X`` of shape (n, d): the points are the rows
  (``KronData([X], y)``, p = 1);
* a :class:`~kronnet.KronData` or :class:`~kronnet.PairData` (``y`` may then
  be omitted and is taken from the data);
* a list of factor arrays, each of ndim >= 2 (``KronData(X, y)``);
* with the ``tables=[T_1, ..., T_p]`` parameter, an integer array of shape
  (n, p) of entity indices, one row per pair (``PairData(tables, X, y)``), so
  that cross-validation and grid searches split pairs as rows.

The data are never rescaled: kronnet's model is made for inputs of norm about
one, so put a scaler in a :class:`~sklearn.pipeline.Pipeline` in front when
the features are not. Only the automatic learning rate adapts to the data's
scale (see ``lr`` below). Requires scikit-learn >= 1.4 (the ``sklearn``
extra).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin  # type: ignore[import-untyped]
from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
from sklearn.metrics import accuracy_score, r2_score  # type: ignore[import-untyped]
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]
from sklearn.utils import check_random_state  # type: ignore[import-untyped]
from sklearn.utils.multiclass import check_classification_targets  # type: ignore[import-untyped]
from sklearn.utils.validation import check_is_fitted, column_or_1d  # type: ignore[import-untyped]

from .data import KronData, KronPoints, PairData
from .errors import DivergenceError
from .model import TwoLayerNet, gaussian_tail
from .training import IndexKind, Trainer, suggest_lr

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _validate_data = None

__all__ = ["KronNetClassifier", "KronNetRegressor"]

#: Seeds are drawn from [0, SEED_BOUND) by ``check_random_state(random_state).randint``.
SEED_BOUND = 2**31 - 1
#: How often ``lr="auto"`` divides the learning rate by 4 after a divergence
#: before giving up.
MAX_LR_RETRIES = 12
#: An epoch whose mean loss exceeds the first epoch's by this factor is a
#: divergence even while every number is finite: as the weights grow with
#: targets far from the unit scale, more neurons fire, the tangent kernel
#: grows with them, and a rate chosen at initialization can become unstable.
LOSS_GROWTH = 1e3


class _LossGrowth(Exception):
    """Training loss grew LOSS_GROWTH-fold: diverging, though finite."""


Targets = Optional[Any]


#: Points sampled (evenly spaced) to estimate how correlated a batch is.
LR_SAMPLE = 256


def _auto_lr(net: TwoLayerNet, batch_size: int, data: KronPoints) -> float:
    """S / (2 lam), lam an estimate of the largest eigenvalue of a batch's
    tangent kernel K(x, x') = <x, x'> P(both fire).

    lam = max_i k_i + (S - 1) q_max max(0, mean_{i != j} <x_i, x_j>) over a
    sample of the points, with k_i = r_i^2 q(r_i) the kernel's diagonal at a
    point of norm r_i (q(r) = P(N(0, 1) > b / r), scaled so that q(1) is the
    net's own firing fraction) and q_max the largest q(r_i). On unit-norm,
    uncorrelated points lam = q(1) and the rate is exactly
    ``suggest_lr(net, S)``; points of larger norm, or many points pointing
    the same way (low-dimensional, uncentred data), lower it, as SGD on a
    least-squares problem needs lr * lam / S < 2 to be stable. Never above
    ``suggest_lr(net, S)``.
    """
    lr = suggest_lr(net, batch_size)
    if data.n == 0:
        return lr
    b = net.threshold
    unit = gaussian_tail(b)
    scale = net.firing_fraction() / unit if unit > 0 else 1.0
    sample = data.take(np.unique(np.linspace(0, data.n - 1, min(data.n, LR_SAMPLE)).astype(np.int64)))
    gram = sample.inner_products()
    r = np.sqrt(np.maximum(np.diag(gram), 0.0))
    q = np.array([scale * gaussian_tail(b / x) if x > 0 else 0.0 for x in r])
    diag = float(np.max(r * r * q))
    k = gram.shape[0]
    off = 0.0
    if k > 1:
        off = max(0.0, (float(gram.sum()) - float(np.trace(gram))) / (k * (k - 1)))
    lam = diag + (min(batch_size, data.n) - 1) * float(np.max(q)) * off
    # suggest_lr is S / (2 q(1)): divide it by lam / q(1) when that exceeds
    # 1 (so unit, uncorrelated points get it bit for bit).
    ratio = lam / (scale * unit) if unit > 0 else 1.0
    return lr / ratio if ratio > 1.0 + 1e-9 else lr


def _is_factor_list(X: Any) -> bool:
    return isinstance(X, (list, tuple)) and len(X) > 0 and all(isinstance(u, np.ndarray) and u.ndim >= 2 for u in X)


class _KronNetBase(BaseEstimator):  # type: ignore[misc]
    """What the regressor and the classifier share: input handling and the epoch loop."""

    _is_classifier = False

    def __init__(
        self,
        width: int = 2048,
        threshold: Optional[float] = None,
        init: str = "gaussian",
        init_rank: int = 8,
        lr: Union[str, float] = "auto",
        batch_size: int = 8,
        max_steps: int = 5000,
        tol: float = 1e-4,
        n_iter_no_change: int = 10,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        index: str = "auto",
        warm_start: bool = False,
        random_state: Any = None,
        verbose: bool = False,
        tables: Optional[Sequence[Any]] = None,
        comm: Any = None,
    ) -> None:
        self.width = width
        self.threshold = threshold
        self.init = init
        self.init_rank = init_rank
        self.lr = lr
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.index = index
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.tables = tables
        self.comm = comm

    # -- parameters and inputs ------------------------------------------------

    def _check_params(self) -> None:
        def positive_int(name: str) -> None:
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")

        for name in ("width", "init_rank", "batch_size", "max_steps", "n_iter_no_change"):
            positive_int(name)
        if isinstance(self.lr, str):
            if self.lr != "auto":
                raise ValueError(f"lr must be 'auto' or a positive float, got {self.lr!r}")
        elif not (isinstance(self.lr, (int, float, np.number)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be 'auto' or a positive float, got {self.lr!r}")
        if not (isinstance(self.tol, (int, float, np.number)) and self.tol >= 0):
            raise ValueError(f"tol must be a non-negative float, got {self.tol!r}")
        if not (isinstance(self.validation_fraction, (int, float, np.number)) and 0 < self.validation_fraction < 1):
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        if self.init not in ("gaussian", "kron"):
            raise ValueError(f"init must be 'gaussian' or 'kron', got {self.init!r}")
        if self.index not in ("auto", "scan", "tree", "bits"):
            raise ValueError(f"index must be one of 'auto', 'scan', 'tree', 'bits', got {self.index!r}")

    def _validate_array(self, X: Any, y: Any, reset: bool, **kwargs: Any) -> Any:
        """scikit-learn's own checks: validate_data, or check_X_y/check_array before 1.6."""
        if _validate_data is not None:
            if y is None:
                return _validate_data(self, X, reset=reset, **kwargs)
            return _validate_data(self, X, y, reset=reset, **kwargs)
        if y is None:  # pragma: no cover - older scikit-learn
            return self._validate_data(X, reset=reset, **kwargs)
        return self._validate_data(X, y, reset=reset, **kwargs)  # pragma: no cover

    def _points(self, X: Any, y: Any, reset: bool) -> Tuple[KronPoints, Optional[np.ndarray]]:
        """The points of X as a kronnet data set (without targets) and the
        raw targets (None when there are none)."""
        fitting = y is not None or reset
        if isinstance(X, KronPoints):
            target = y if y is not None else X.y
            if fitting and target is None:
                raise ValueError(
                    f"{type(self).__name__} requires y to be passed, but the target y is None (X has no targets)"
                )
            if reset and hasattr(self, "n_features_in_"):
                del self.n_features_in_
            return X, None if target is None else column_or_1d(target, warn=True)
        if _is_factor_list(X):
            if fitting and y is None:
                raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
            if reset and hasattr(self, "n_features_in_"):
                del self.n_features_in_
            return KronData(list(X)), None if y is None else column_or_1d(y, warn=True)
        numeric = not self._is_classifier
        if self.tables is not None:
            if y is not None:
                X, y = self._validate_array(X, y, reset, dtype=None, y_numeric=numeric, ensure_min_features=1)
            else:
                X = self._validate_array(X, None, reset, dtype=None)
            if not np.issubdtype(X.dtype, np.integer):
                if np.issubdtype(X.dtype, np.floating) and np.all(X == np.round(X)):
                    X = X.astype(np.int64)
                else:
                    raise ValueError(f"with tables=..., X must hold integer entity indices, got dtype {X.dtype}")
            return PairData(list(self.tables), X), y
        if y is not None:
            X, y = self._validate_array(X, y, reset, dtype=np.float64, order="C", y_numeric=numeric)
        else:
            X = self._validate_array(X, None, reset, dtype=np.float64, order="C")
        return KronData([X]), y

    # -- training ---------------------------------------------------------------

    def _encode(self, y: np.ndarray) -> List[np.ndarray]:
        """The float targets of each net's problem."""
        raise NotImplementedError

    def _validation_score(self, data: KronPoints, y: np.ndarray) -> float:
        raise NotImplementedError

    def _lr_for(self, net: TwoLayerNet, batch_size: int, data: KronPoints) -> float:
        if isinstance(self.lr, str):
            return _auto_lr(net, batch_size, data)
        return float(self.lr)

    def _start(self, data: KronPoints, targets: List[np.ndarray], rs: np.random.RandomState) -> None:
        """New nets and trainers, one per problem."""
        self.batch_size_ = min(int(self.batch_size), data.n)
        self.nets_: List[TwoLayerNet] = []
        self.trainer_seeds_: List[int] = []
        self._trainers: List[Optional[Trainer]] = []
        for _ in targets:
            net_seed, trainer_seed = (int(s) for s in rs.randint(0, SEED_BOUND, size=2))
            net = TwoLayerNet(
                data.dims,
                int(self.width),
                threshold=self.threshold,
                seed=net_seed,
                init=self.init,  # type: ignore[arg-type]
                init_rank=int(self.init_rank),
            )
            self.nets_.append(net)
            self.trainer_seeds_.append(trainer_seed)
            self._trainers.append(None)
        # The rate depends on the data, the width and the threshold, which
        # all nets share (not on their seeds): estimated once.
        rate = self._lr_for(self.nets_[0], self.batch_size_, data) * self._lr_scale
        self.lr_ = [rate for _ in self.nets_]
        self._train_points: Optional[KronPoints] = None
        self.t_ = 0
        self.n_iter_ = 0
        self.loss_curve_: List[float] = []
        self.best_loss_: Optional[float] = np.inf
        self.validation_scores_: Optional[List[float]] = None
        self.best_validation_score_: Optional[float] = None
        self._no_improvement_count = 0

    def _ensure_trainers(self, data: KronPoints, targets: List[np.ndarray]) -> None:
        """Trainers on `data` (kept across epochs and calls while the points
        and targets stay the same, so the batch order continues)."""
        same = (
            self._train_points is not None
            and self._train_points.n == data.n
            and self._train_points.fingerprint == data.fingerprint
            and all(tr is not None for tr in self._trainers)
            and all(
                tr is not None and tr.data.y is not None and np.array_equal(tr.data.y, t)
                for tr, t in zip(self._trainers, targets)
            )
        )
        if same:
            return
        batch = min(self.batch_size_, data.n)
        trainers: List[Optional[Trainer]] = []
        first: Optional[Trainer] = None
        for net, t, lr, seed in zip(self.nets_, targets, self.lr_, self.trainer_seeds_):
            # One-vs-rest nets train on the same points: the first trainer's
            # Gram serves them all (no copy).
            tr = Trainer(
                net,
                data.with_targets(t),
                lr=lr,
                batch_size=batch,
                index=self._index_kind(),
                seed=seed,
                gram_from=self._gram_source(first),
                comm=self.comm,
            )
            first = first or tr
            trainers.append(tr)
        self._trainers = trainers
        self._train_points = data

    def _gram_source(self, tr: Optional[Trainer]) -> Optional[Trainer]:
        """`tr` when a new trainer on its points may share its Gram
        (``gram_from=``): when it has a precomputed one."""
        return tr if tr is not None and tr.gram == "precomputed" else None

    def _speaks(self) -> bool:
        """Whether this process prints the epochs (`verbose`): the one that
        shows the trainers' progress bars (rank 0 when sharded)."""
        return bool(self.verbose) and self.nets_[0].placement.speaks

    def _index_kind(self) -> IndexKind:
        return cast(IndexKind, self.index)  # checked by _check_params

    def _epoch(self, steps: int) -> float:
        """One epoch (or `steps` steps) of every net; the mean batch loss."""
        losses: List[float] = []
        for j, tr in enumerate(self._trainers):
            assert tr is not None
            done = 0
            retries = 0
            while done < steps:
                try:
                    hist = tr.fit(steps - done)
                    losses.extend(hist.loss.tolist())
                    done = steps
                except DivergenceError as exc:
                    taken = getattr(exc, "history", None)
                    if taken is not None:
                        losses.extend(taken.loss.tolist())
                        done += taken.steps
                    if not isinstance(self.lr, str) or retries >= MAX_LR_RETRIES:
                        raise
                    # lr="auto": a quarter of the rate, from the last finite state.
                    retries += 1
                    self.lr_[j] /= 4.0
                    tr = Trainer(
                        tr.net,
                        tr.data,
                        lr=self.lr_[j],
                        batch_size=tr.batch_size,
                        index=self._index_kind(),
                        seed=tr.seed,
                        gram_from=self._gram_source(tr),
                        comm=self.comm,
                    )
                    self._trainers[j] = tr
        self.t_ += steps
        finite = [x for x in losses if math.isfinite(x)]
        return float(np.mean(finite)) if finite else float("nan")

    def _fit(self, X: Any, y: Any, incremental: bool, classes: Any = None) -> Any:
        starting = not (incremental or self.warm_start) or not hasattr(self, "nets_")
        for attempt in range(MAX_LR_RETRIES + 1):
            try:
                return self._fit_once(X, y, incremental, classes, 0.25**attempt)
            except _LossGrowth as exc:
                # lr="auto" on a fresh start: start over at a quarter of the rate.
                if not (starting and isinstance(self.lr, str)) or attempt == MAX_LR_RETRIES:
                    raise DivergenceError(
                        f"{type(self).__name__}: {exc}; lower lr (or scale the targets, e.g. with "
                        "sklearn.compose.TransformedTargetRegressor)"
                    ) from None
        raise AssertionError("unreachable")

    def _fit_once(self, X: Any, y: Any, incremental: bool, classes: Any, lr_scale: float) -> Any:
        self._check_params()
        first = not (incremental or self.warm_start) or not hasattr(self, "nets_")
        data, y_arr = self._points(X, y, reset=first)
        if not first and data.dims != self.nets_[0].dims:
            raise ValueError(
                f"X has factor dimensions {data.dims}, but {type(self).__name__} was fitted on {self.nets_[0].dims}"
            )
        if y_arr is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        if data.n == 0:
            raise ValueError("Found array with 0 sample(s) (shape=(0, ...)) while a minimum of 1 is required.")
        if first:
            self._set_targets(y_arr, classes)
        else:
            self._check_targets(y_arr, classes)
        rs = check_random_state(self.random_state)
        split_seed = int(rs.randint(0, SEED_BOUND))
        val_data: Optional[KronPoints] = None
        y_val: Optional[np.ndarray] = None
        train, y_train = data, y_arr
        if self.early_stopping and not incremental:
            stratify = y_arr if self._is_classifier else None
            idx_train, idx_val = train_test_split(
                np.arange(data.n), test_size=self.validation_fraction, random_state=split_seed, stratify=stratify
            )
            train, y_train = data.take(idx_train), y_arr[idx_train]
            val_data, y_val = data.take(idx_val), y_arr[idx_val]
        targets = self._encode(y_train)
        train = train.with_targets(targets[0])
        if first:
            self._lr_scale = lr_scale
            self._start(train, targets, rs)
        self._ensure_trainers(train, targets)
        per_epoch = math.ceil(train.n / self.batch_size_)
        if incremental:
            self.loss_curve_.append(self._epoch(per_epoch))
            self.n_iter_ += 1
            return self
        budget = int(self.max_steps)
        converged = False
        if val_data is not None:
            self.validation_scores_ = [] if self.validation_scores_ is None else self.validation_scores_
            self.best_validation_score_ = (
                -np.inf if self.best_validation_score_ is None else self.best_validation_score_
            )
            self.best_loss_ = None
            best_nets = self.nets_
        self._no_improvement_count = 0
        while budget > 0:
            steps = min(per_epoch, budget)
            loss = self._epoch(steps)
            budget -= steps
            self.n_iter_ += 1
            self.loss_curve_.append(loss)
            if loss > LOSS_GROWTH * self.loss_curve_[0]:
                raise _LossGrowth(
                    f"the training loss grew from {self.loss_curve_[0]:.3g} to {loss:.3g} in {self.n_iter_} epochs"
                )
            if val_data is not None:
                assert y_val is not None and self.validation_scores_ is not None
                score = self._validation_score(val_data, y_val)
                self.validation_scores_.append(score)
                if self._speaks():
                    print(f"Epoch {self.n_iter_}, loss = {loss:.8f}, validation score = {score:.6f}")
                best = float(self.best_validation_score_)  # type: ignore[arg-type]
                self._no_improvement_count = self._no_improvement_count + 1 if score < best + self.tol else 0
                if score > best:
                    self.best_validation_score_ = score
                    best_nets = [copy.deepcopy(net) for net in self.nets_]
            else:
                if self._speaks():
                    print(f"Epoch {self.n_iter_}, loss = {loss:.8f}")
                best_loss = float(self.best_loss_)  # type: ignore[arg-type]
                self._no_improvement_count = self._no_improvement_count + 1 if loss > best_loss - self.tol else 0
                if loss < best_loss:
                    self.best_loss_ = loss
            if self._no_improvement_count > self.n_iter_no_change:
                converged = True
                break
        if val_data is not None:
            # As MLPRegressor: keep the weights of the best validation score.
            if best_nets is not self.nets_:
                self.nets_ = best_nets
                self._trainers = [None for _ in self.nets_]
                self._train_points = None
        if not converged:
            warnings.warn(
                f"{type(self).__name__}: max_steps={self.max_steps} reached and the optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def _set_targets(self, y: np.ndarray, classes: Any) -> None:
        raise NotImplementedError

    def _check_targets(self, y: np.ndarray, classes: Any) -> None:
        pass

    # -- prediction -------------------------------------------------------------

    def _outputs(self, X: Any) -> np.ndarray:
        """The nets' outputs on X, shape (n, number of nets)."""
        check_is_fitted(self, "nets_")
        if isinstance(X, KronPoints):
            data = X
        else:
            data, _ = self._points(X, None, reset=False)
        if data.dims != self.nets_[0].dims:
            raise ValueError(
                f"X has factor dimensions {data.dims}, but {type(self).__name__} expects {self.nets_[0].dims}"
            )
        return np.stack([net.predict(data) for net in self.nets_], axis=1)

    # -- pickling: trainers hold native state and are rebuilt on demand ----------

    def __getstate__(self) -> Dict[str, Any]:
        """The estimator without its trainers. A sharded estimator (``comm``)
        pickles as a single-process one: its nets are gathered, which is
        collective (every rank must pickle it), and ``comm`` becomes None,
        since a communicator belongs to its processes."""
        state: Dict[str, Any] = super().__getstate__()
        state = dict(state)
        if "_trainers" in state:
            state["_trainers"] = [None for _ in state["_trainers"]]
            state["_train_points"] = None
        state["comm"] = None
        if "nets_" in state:
            state["nets_"] = [net.gather() for net in state["nets_"]]
        return state


class KronNetRegressor(RegressorMixin, _KronNetBase):  # type: ignore[misc]
    """A two-layer kronnet network as a scikit-learn regressor.

    Trains a :class:`~kronnet.TwoLayerNet` by exact minibatch SGD
    (:class:`~kronnet.Trainer`) on the squared loss, in epochs, stopping as
    :class:`sklearn.neural_network.MLPRegressor` does.

    Parameters
    ----------
    width : int, default 2048
        m, the number of hidden neurons.
    threshold : float, optional
        b of the activation max(z - b, 0); default as :class:`~kronnet.TwoLayerNet`.
    init : {"gaussian", "kron"}, default "gaussian"
        How W(0) is drawn (:class:`~kronnet.TwoLayerNet`).
    init_rank : int, default 8
        R for ``init="kron"``.
    lr : "auto" or float, default "auto"
        Learning rate. "auto": ``kn.suggest_lr(net, S)`` (S the batch size
        used), exactly so on data of norm <= 1; on points of larger norm r it
        is divided by the factor the largest r^2 P(N(0,1) > b/r) exceeds
        P(N(0,1) > b), and after a divergence training goes on from the last
        finite state at a quarter of the rate. The rate used is ``lr_``.
    batch_size : int, default 8
        S; ``min(batch_size, n)`` is used.
    max_steps : int, default 5000
        Most SGD steps per ``fit``.
    tol : float, default 1e-4
        Improvement the stopping rule asks for.
    n_iter_no_change : int, default 10
        Epochs without an improvement by `tol` before stopping.
    early_stopping : bool, default False
        Hold out `validation_fraction` of the data and stop on its R^2
        instead of the training loss; the best-scoring weights are kept.
    validation_fraction : float, default 0.1
        The held-out share for `early_stopping`.
    index : {"auto", "scan", "tree", "bits"}, default "auto"
        The trainer's activated-neuron finder (speed only).
    warm_start : bool, default False
        ``fit`` continues the current nets instead of starting over.
    random_state : int, RandomState instance or None, default None
        Source of the seeds: ``rs = check_random_state(random_state)``
        draws ``split_seed = rs.randint(0, 2**31 - 1)``, then the net's
        seed and the trainer's seed ``rs.randint(0, 2**31 - 1, size=2)``.
    verbose : bool, default False
        Print the loss of every epoch.
    tables : list of array_like, optional
        Entity tables: X is then an integer array (n, p) of entity indices
        and the points are ``PairData(tables, X)``.
    comm : mpi4py.MPI.Comm, optional
        Train sharded over this communicator's ranks (``Trainer(comm=)``,
        docs/mpi.md): every rank runs the same script with the same data
        and arguments, ``fit``, ``partial_fit``, ``predict`` and ``score``
        are collective, and every rank ends with the same model, bitwise
        equal to the single-process fit. ``sklearn.base.clone`` deep-copies
        it, which keeps ``MPI.COMM_WORLD``. Pickling a fitted sharded
        estimator is collective too and gives a single-process one.

    Attributes
    ----------
    net_ : TwoLayerNet
        The trained net.
    nets_ : list of TwoLayerNet
        ``[net_]``.
    lr_ : list of float
        The learning rate in use (one per net).
    batch_size_ : int
        The batch size in use.
    trainer_seeds_ : list of int
        The trainers' batch-order seeds.
    loss_curve_ : list of float
        Mean batch loss (1/2 mean squared error) of each epoch.
    validation_scores_ : list of float or None
        R^2 on the held-out fraction after each epoch with `early_stopping`,
        else None.
    best_validation_score_ : float or None
        The best of `validation_scores_`.
    best_loss_ : float or None
        Lowest of `loss_curve_` (None with `early_stopping`).
    n_iter_ : int
        Epochs run.
    t_ : int
        SGD steps taken.
    n_features_in_ : int
        Columns of X (array inputs only).

    Notes
    -----
    Training is deterministic for a fixed integer `random_state`. Without
    `early_stopping` or `warm_start`, and when ``lr="auto"`` needed no
    reduction, ``fit(X, y)`` leaves ``net_`` exactly as::

        rs = check_random_state(random_state)
        rs.randint(0, 2**31 - 1)  # the split seed
        net_seed, trainer_seed = rs.randint(0, 2**31 - 1, size=2)
        net = kn.TwoLayerNet(data.dims, width, threshold, seed=net_seed, init=init, init_rank=init_rank)
        kn.Trainer(net, data, lr=lr_[0], batch_size=min(batch_size, n), index=index,
                   seed=trainer_seed).fit(t_)

    with ``data`` the kronnet data set of (X, y): the epochs are successive
    ``Trainer.fit`` calls on one trainer, which draw the same batches as one
    call.

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.sklearn import KronNetRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(64, 4)) / 2
    >>> y = np.sin(X[:, 0])
    >>> reg = KronNetRegressor(width=256, max_steps=400, random_state=0).fit(X, y)
    >>> reg.predict(X[:3]).shape
    (3,)
    >>> reg.score(X, y) > 0.5
    True
    """

    def fit(self, X: Any, y: Targets = None) -> KronNetRegressor:
        """Trains the net on (X, y), from scratch unless `warm_start`.

        Parameters
        ----------
        X : array_like of shape (n, d), KronData, PairData or list of factor arrays
            The points (an (n, p) integer array of entity indices with `tables`).
        y : array_like of shape (n,), optional
            Targets; taken from X when X is a data set with targets.

        Returns
        -------
        KronNetRegressor
            self.

        Examples
        --------
        >>> import kronnet as kn
        >>> from kronnet.sklearn import KronNetRegressor
        >>> data = kn.make_kronecker_data(64, dims=(4, 4), seed=0)
        >>> reg = KronNetRegressor(width=128, max_steps=80, n_iter_no_change=100, random_state=0)
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # max_steps is reached: a ConvergenceWarning
        ...     reg = reg.fit(data)
        >>> reg.n_iter_, reg.t_
        (10, 80)
        """
        return self._fit(X, y, incremental=False)  # type: ignore[no-any-return]

    def partial_fit(self, X: Any, y: Targets = None) -> KronNetRegressor:
        """One epoch (ceil(n / batch_size) steps) on (X, y), continuing the net.

        Parameters
        ----------
        X : array_like of shape (n, d), KronData, PairData or list of factor arrays
            The points.
        y : array_like of shape (n,), optional
            Targets; taken from X when X is a data set with targets.

        Returns
        -------
        KronNetRegressor
            self.

        Examples
        --------
        >>> import numpy as np
        >>> from kronnet.sklearn import KronNetRegressor
        >>> X = np.eye(8)
        >>> reg = KronNetRegressor(width=64, random_state=0)
        >>> for _ in range(3):
        ...     reg = reg.partial_fit(X, np.arange(8.0))
        >>> reg.n_iter_, reg.t_
        (3, 3)
        """
        return self._fit(X, y, incremental=True)  # type: ignore[no-any-return]

    @property
    def net_(self) -> TwoLayerNet:
        """The trained net."""
        check_is_fitted(self, "nets_")
        return self.nets_[0]

    def _set_targets(self, y: np.ndarray, classes: Any) -> None:
        pass

    def _encode(self, y: np.ndarray) -> List[np.ndarray]:
        return [np.asarray(y, dtype=np.float64)]

    def _validation_score(self, data: KronPoints, y: np.ndarray) -> float:
        return float(r2_score(y, self._outputs(data)[:, 0]))

    def predict(self, X: Any) -> np.ndarray:
        """f(W, x) for every point of X.

        Parameters
        ----------
        X : array_like of shape (n, d), KronData, PairData or list of factor arrays
            The points, in the form used for ``fit``.

        Returns
        -------
        ndarray of shape (n,)
            The predictions.

        Examples
        --------
        >>> import numpy as np
        >>> from kronnet.sklearn import KronNetRegressor
        >>> X = np.eye(8)
        >>> reg = KronNetRegressor(width=64, max_steps=20, random_state=0).fit(X, np.ones(8))
        >>> reg.predict(X).shape
        (8,)
        """
        out: np.ndarray = self._outputs(X)[:, 0]
        return out


class KronNetClassifier(ClassifierMixin, _KronNetBase):  # type: ignore[misc]
    """A two-layer kronnet network as a scikit-learn classifier.

    Binary targets are trained as ±1 regression (+1 for ``classes_[1]``);
    more classes one-vs-rest, one net per class, all on the same points.
    Parameters, training and stopping as :class:`KronNetRegressor`, the
    validation score of `early_stopping` being the accuracy.

    Parameters
    ----------
    width : int, default 2048
        m, the number of hidden neurons of each net.
    threshold : float, optional
        b of the activation; default as :class:`~kronnet.TwoLayerNet`.
    init : {"gaussian", "kron"}, default "gaussian"
        How W(0) is drawn.
    init_rank : int, default 8
        R for ``init="kron"``.
    lr : "auto" or float, default "auto"
        Learning rate, as for :class:`KronNetRegressor`.
    batch_size : int, default 8
        S; ``min(batch_size, n)`` is used.
    max_steps : int, default 5000
        Most SGD steps per net per ``fit``.
    tol : float, default 1e-4
        Improvement the stopping rule asks for.
    n_iter_no_change : int, default 10
        Epochs without improvement before stopping.
    early_stopping : bool, default False
        Stop on the accuracy of a held-out (stratified) fraction.
    validation_fraction : float, default 0.1
        The held-out share for `early_stopping`.
    index : {"auto", "scan", "tree", "bits"}, default "auto"
        The trainers' activated-neuron finder.
    warm_start : bool, default False
        ``fit`` continues the current nets.
    random_state : int, RandomState instance or None, default None
        Source of the seeds: ``rs.randint(0, 2**31 - 1)`` for the split,
        then ``rs.randint(0, 2**31 - 1, size=2)`` (net seed, trainer seed)
        for each net in turn.
    verbose : bool, default False
        Print the loss of every epoch.
    tables : list of array_like, optional
        Entity tables: X is then an integer array (n, p) of entity indices.
    comm : mpi4py.MPI.Comm, optional
        Train every class's net sharded over this communicator's ranks, as
        :class:`KronNetRegressor` does (``decision_function`` is collective
        too).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    nets_ : list of TwoLayerNet
        One net for two classes, else one per class (one-vs-rest).
    lr_ : list of float
        The learning rate of each net.
    batch_size_ : int
        The batch size in use.
    trainer_seeds_ : list of int
        The trainers' batch-order seeds.
    loss_curve_ : list of float
        Mean batch loss over all nets of each epoch.
    validation_scores_ : list of float or None
        Held-out accuracy after each epoch with `early_stopping`, else None.
    best_validation_score_ : float or None
        The best of `validation_scores_`.
    best_loss_ : float or None
        Lowest of `loss_curve_` (None with `early_stopping`).
    n_iter_ : int
        Epochs run.
    t_ : int
        SGD steps taken by each net.
    n_features_in_ : int
        Columns of X (array inputs only).

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.sklearn import KronNetClassifier
    >>> X = np.repeat(np.eye(3), 10, axis=0)
    >>> y = np.repeat(["a", "b", "c"], 10)
    >>> clf = KronNetClassifier(width=128, max_steps=200, random_state=0).fit(X, y)
    >>> clf.classes_.tolist()
    ['a', 'b', 'c']
    >>> clf.decision_function(X).shape
    (30, 3)
    >>> clf.score(X, y)
    1.0
    """

    _is_classifier = True

    def fit(self, X: Any, y: Targets = None) -> KronNetClassifier:
        """Trains the nets on (X, y), from scratch unless `warm_start`.

        Parameters
        ----------
        X : array_like of shape (n, d), KronData, PairData or list of factor arrays
            The points (an (n, p) integer array of entity indices with `tables`).
        y : array_like of shape (n,), optional
            Class labels; taken from X when X is a data set with targets.

        Returns
        -------
        KronNetClassifier
            self.

        Examples
        --------
        >>> import numpy as np
        >>> from kronnet.sklearn import KronNetClassifier
        >>> X = np.repeat(np.eye(2), 8, axis=0)
        >>> clf = KronNetClassifier(width=64, max_steps=100, random_state=0).fit(X, np.repeat([0, 1], 8))
        >>> len(clf.nets_)
        1
        """
        return self._fit(X, y, incremental=False)  # type: ignore[no-any-return]

    def partial_fit(self, X: Any, y: Targets = None, classes: Any = None) -> KronNetClassifier:
        """One epoch (ceil(n / batch_size) steps) of every net on (X, y).

        Parameters
        ----------
        X : array_like of shape (n, d), KronData, PairData or list of factor arrays
            The points.
        y : array_like of shape (n,), optional
            Class labels; taken from X when X is a data set with targets.
        classes : array_like of shape (n_classes,), optional
            All the classes; required on the first call.

        Returns
        -------
        KronNetClassifier
            self.

        Examples
        --------
        >>> import numpy as np
        >>> from kronnet.sklearn import KronNetClassifier
        >>> X = np.repeat(np.eye(2), 4, axis=0)
        >>> clf = KronNetClassifier(width=64, random_state=0)
        >>> clf = clf.partial_fit(X, np.repeat([0, 1], 4), classes=[0, 1])
        >>> clf.n_iter_
        1
        """
        if not hasattr(self, "classes_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        return self._fit(X, y, incremental=True, classes=classes)  # type: ignore[no-any-return]

    def _set_targets(self, y: np.ndarray, classes: Any) -> None:
        check_classification_targets(y)
        self.classes_ = np.unique(y) if classes is None else np.unique(np.asarray(classes))
        if classes is not None and not np.isin(y, self.classes_).all():
            raise ValueError(f"y holds labels not in classes={self.classes_.tolist()}")
        if self.classes_.shape[0] < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in the data, got 1 class")

    def _check_targets(self, y: np.ndarray, classes: Any) -> None:
        check_classification_targets(y)
        if classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes={classes!r} differs from the classes of the first call {self.classes_.tolist()}")
        if not np.isin(y, self.classes_).all():
            raise ValueError(f"y holds labels not in classes_={self.classes_.tolist()}")

    def _encode(self, y: np.ndarray) -> List[np.ndarray]:
        if self.classes_.shape[0] == 2:
            return [np.where(y == self.classes_[1], 1.0, -1.0)]
        return [np.where(y == c, 1.0, -1.0) for c in self.classes_]

    def _validation_score(self, data: KronPoints, y: np.ndarray) -> float:
        return float(accuracy_score(y, self._labels(self._outputs(data))))

    def _labels(self, out: np.ndarray) -> np.ndarray:
        if out.shape[1] == 1:
            labels: np.ndarray = self.classes_[(out[:, 0] > 0).astype(np.int64)]
            return labels
        picked: np.ndarray = self.classes_[np.argmax(out, axis=1)]
        return picked

    def decision_function(self, X: Any) -> np.ndarray:
        """The nets' outputs: positive for ``classes_[1]`` (binary), or one
        column per class (one-vs-rest).

        Parameters
        ----------
        X : array_like of shape (n, d), KronData, PairData or list of factor arrays
            The points, in the form used for ``fit``.

        Returns
        -------
        ndarray of shape (n,) or (n, n_classes)
            Shape (n,) for two classes.

        Examples
        --------
        >>> import numpy as np
        >>> from kronnet.sklearn import KronNetClassifier
        >>> X = np.repeat(np.eye(2), 8, axis=0)
        >>> clf = KronNetClassifier(width=64, max_steps=100, random_state=0).fit(X, np.repeat([0, 1], 8))
        >>> clf.decision_function(X).shape
        (16,)
        """
        out = self._outputs(X)
        if out.shape[1] == 1:
            col: np.ndarray = out[:, 0]
            return col
        return out

    def predict(self, X: Any) -> np.ndarray:
        """The predicted class of every point of X.

        Parameters
        ----------
        X : array_like of shape (n, d), KronData, PairData or list of factor arrays
            The points, in the form used for ``fit``.

        Returns
        -------
        ndarray of shape (n,)
            Labels from ``classes_``.

        Examples
        --------
        >>> import numpy as np
        >>> from kronnet.sklearn import KronNetClassifier
        >>> X = np.repeat(np.eye(2), 8, axis=0)
        >>> y = np.repeat(["no", "yes"], 8)
        >>> KronNetClassifier(width=64, max_steps=100, random_state=0).fit(X, y).predict(X[[0, 8]]).tolist()
        ['no', 'yes']
        """
        return self._labels(self._outputs(X))
