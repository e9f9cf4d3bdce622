"""scikit-learn estimators around :class:`~kronnet.TwoLayerNet` and :class:`~kronnet.Trainer`.

:class:`KronNetRegressor` (squared loss, one or several outputs) and
:class:`KronNetClassifier` (one softmax network; logistic for two classes)
follow scikit-learn's conventions (``fit``/``partial_fit``/``predict``/
``score``, ``get_params``, ``clone``, pickling, pipelines and grid searches)
and train by epochs with the same stopping rule as
:class:`sklearn.neural_network.MLPRegressor`.

Inputs, for ``fit``, ``partial_fit`` and ``predict``:

* a dense 2-D float array ``X`` of shape (n, d): the points are the rows
  (``KronData([X], y)``, p = 1);
* a :class:`~kronnet.KronData` or :class:`~kronnet.PairData` (``y`` may then
  be omitted and is taken from the data);
* a list of factor arrays, each of ndim >= 2 (``KronData(X, y)``);
* with the ``tables=[T_1, ..., T_p]`` parameter, an integer array of shape
  (n, p) of entity indices, one row per pair (``PairData(tables, X, y)``), so
  that cross-validation and grid searches split pairs as rows.

kronnet's model is made for points of norm about one (its threshold b is
on that scale). With ``input_scale="auto"`` (the default) the estimators
multiply every point by one number, 1 / (root mean square norm of the
training points), so standardized features need no Normalizer: the
geometry of the data is kept, only its scale changes (``input_scale_``).
Requires scikit-learn >= 1.4 (the ``sklearn`` extra).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin  # type: ignore[import-untyped]
from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
from sklearn.metrics import accuracy_score, r2_score  # type: ignore[import-untyped]
from sklearn.model_selection import GroupShuffleSplit, train_test_split  # type: ignore[import-untyped]
from sklearn.utils import check_random_state  # type: ignore[import-untyped]
from sklearn.utils.multiclass import check_classification_targets  # type: ignore[import-untyped]
from sklearn.utils.validation import check_is_fitted, column_or_1d  # type: ignore[import-untyped]

from .data import KernelFeatures, KronData, KronPoints, PairData
from .errors import DivergenceError
from .model import TwoLayerNet, default_threshold
from .placement import over
from .training import IndexKind, Trainer, suggest_rates
from .training.classifier_start import LOGISTIC_START_ENTRIES, choose_start, logistic_fit, scaled_fit, temperature
from .training.lr import epoch_averaged_rate
from .training.output_start import MAX_OUTPUT_ENTRIES, activate, hidden_outputs, ridge_features, start_output
from .training.ridge import (
    MAX_DUAL_ENTRIES,
    MAX_RIDGE_D,
    RidgeFit,
    predict_linear,
    ridge_linear,
    ridge_pairs_dual,
    start_linear,
)
from .training.schedules import Constant, Cosine, InverseTime, Schedule, as_schedule

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _validate_data = None

__all__ = ["KronNetClassifier", "KronNetRegressor"]

#: Seeds are drawn from [0, SEED_BOUND) by ``check_random_state(random_state).randint``.
SEED_BOUND = 2**31 - 1
#: How often the "auto" rates are divided by 4 after a divergence before
#: giving up.
MAX_LR_RETRIES = 12
#: An epoch whose mean loss exceeds the first epoch's by this factor is a
#: divergence even while every number is finite: as the weights grow with
#: targets far from the unit scale, more neurons fire, the tangent kernel
#: grows with them, and a rate chosen at initialization can become unstable.
LOSS_GROWTH = 1e3
#: The estimator parameters of the five learning rates, in the order of
#: ``kronnet.training.lr.PARTS`` ("wabcv").
RATE_PARAMS = ("lr", "lr_a", "lr_b", "lr_c", "lr_v")
#: Largest n·m at which ``threshold=None`` is chosen by leave-one-out error
#: (THRESHOLD_SHARES of the default): a step then costs little whatever
#: share of the neurons fires (4096 points at width 1024).
THRESHOLD_SEARCH_ENTRIES = 2**22
#: The candidate thresholds, as shares of ``default_threshold(width)``: 0
#: is the plain ReLU, 1 the sparse default.
THRESHOLD_SHARES = (0.0, 0.5, 1.0)
#: A regressor's threshold on larger data, as a share of the default: on
#: MovieLens-100k's u1 and u2 it validated as well as the default (held-out
#: R² 0.5234 / 0.5364 against 0.5233 / 0.5357) with steps 1.9× cheaper (4.3
#: against 8.3 ms), since 2% of the neurons fire instead of 5%. That tenth
#: was one the loader's tables had seen; on a tenth held out before they
#: are built the default is 0.0004-0.0006 RMSE better, for 1.6-1.7x the
#: fit time (docs/gallery.md, "The threshold b"): speed is kept.
LARGE_THRESHOLD_SHARE = 1.5
#: Standard errors by which a regressor's epoch must improve the held-out
#: squared error (paired per point) to replace the best weights: on the
#: kernel benchmark's cold start a smaller gain did not carry to new
#: entities (docs/gallery.md). The output start's features must lose to
#: the mean by as much in leave-one-out error to be dropped.
SIGNIFICANCE = 2.0
#: The schedules the estimators name, over their `max_steps`.
SCHEDULES = ("constant", "inverse_time", "cosine")


class _LossGrowth(Exception):
    """Training loss grew LOSS_GROWTH-fold: diverging, though finite."""


Targets = Optional[Any]


def _is_factor_list(X: Any) -> bool:
    return isinstance(X, (list, tuple)) and len(X) > 0 and all(isinstance(u, np.ndarray) and u.ndim >= 2 for u in X)


def _is_rate(value: Any) -> bool:
    return value == "auto" if isinstance(value, str) else _is_nonnegative(value)


def _is_nonnegative(value: Any) -> bool:
    return bool(
        isinstance(value, (int, float, np.number))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


class _KronNetBase(BaseEstimator):  # type: ignore[misc]
    """What the regressor and the classifier share: input handling, the
    rates and the epoch loop."""

    _is_classifier = False
    #: After a fit whose kept epochs were chosen on random held-out pairs:
    #: per table, which entities the training pairs have (`_outputs` warns
    #: on pairs with others), else None.
    _seen_entities: Optional[List[np.ndarray]] = None

    def __init__(
        self,
        width: int = 1024,
        threshold: Optional[float] = None,
        init: str = "gaussian",
        init_rank: int = 8,
        lr: Union[str, float] = "auto",
        lr_a: Union[str, float] = "auto",
        lr_b: Union[str, float] = 0.0,
        lr_c: Union[str, float] = "auto",
        lr_v: Union[str, float] = 0.0,
        linear_start: str = "ridge",
        output_start: str = "ridge",
        alpha: float = 0.0,
        schedule: Any = "constant",
        input_scale: Union[str, float] = "auto",
        batch_size: int = 8,
        max_steps: int = 5000,
        tol: float = 1e-4,
        n_iter_no_change: int = 10,
        early_stopping: bool = True,
        validation_fraction: float = 0.1,
        validation_entities: Optional[int] = None,
        index: str = "auto",
        dtype: str = "float64",
        warm_start: bool = False,
        random_state: Any = None,
        verbose: bool = False,
        tables: Optional[Sequence[Any]] = None,
        kernels: Optional[Sequence[Any]] = None,
        comm: Any = None,
    ) -> None:
        self.width = width
        self.threshold = threshold
        self.init = init
        self.init_rank = init_rank
        self.lr = lr
        self.lr_a = lr_a
        self.lr_b = lr_b
        self.lr_c = lr_c
        self.lr_v = lr_v
        self.linear_start = linear_start
        self.output_start = output_start
        self.alpha = alpha
        self.schedule = schedule
        self.input_scale = input_scale
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.validation_entities = validation_entities
        self.index = index
        self.dtype = dtype
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.tables = tables
        self.kernels = kernels
        self.comm = comm

    # -- parameters and inputs ------------------------------------------------

    def _check_params(self) -> None:
        def positive_int(name: str) -> None:
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")

        for name in ("width", "init_rank", "batch_size", "max_steps", "n_iter_no_change"):
            positive_int(name)
        for name in RATE_PARAMS:
            if not _is_rate(getattr(self, name)):
                raise ValueError(f"{name} must be 'auto' or a non-negative float, got {getattr(self, name)!r}")
        if all(getattr(self, name) in (0, 0.0) and not isinstance(getattr(self, name), str) for name in RATE_PARAMS):
            raise ValueError(f"at least one of {', '.join(RATE_PARAMS)} must be 'auto' or positive (all are 0)")
        if self.linear_start not in ("ridge", "none"):
            raise ValueError(f"linear_start must be 'ridge' or 'none', got {self.linear_start!r}")
        if self.output_start not in ("ridge", "none"):
            raise ValueError(f"output_start must be 'ridge' or 'none', got {self.output_start!r}")
        if not _is_nonnegative(self.alpha):
            raise ValueError(f"alpha must be a non-negative float, got {self.alpha!r}")
        if isinstance(self.input_scale, str):
            if self.input_scale != "auto":
                raise ValueError(f"input_scale must be 'auto' or a positive float, got {self.input_scale!r}")
        elif not (_is_nonnegative(self.input_scale) and self.input_scale > 0):
            raise ValueError(f"input_scale must be 'auto' or a positive float, got {self.input_scale!r}")
        if not _is_nonnegative(self.tol):
            raise ValueError(f"tol must be a non-negative float, got {self.tol!r}")
        if not (isinstance(self.validation_fraction, (int, float, np.number)) and 0 < self.validation_fraction < 1):
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}")
        k = self.validation_entities
        if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0):
            raise ValueError(f"validation_entities must be None or a table index (an int >= 0), got {k!r}")
        if self.init not in ("gaussian", "kron"):
            raise ValueError(f"init must be 'gaussian' or 'kron', got {self.init!r}")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        if self.index not in ("auto", "scan", "tree", "bits"):
            raise ValueError(f"index must be one of 'auto', 'scan', 'tree', 'bits', got {self.index!r}")
        self._schedule()  # raises on a bad one

    def _schedule(self) -> Schedule:
        """The trainer's schedule: a name of SCHEDULES over `max_steps`, or
        anything ``Trainer(schedule=...)`` takes."""
        if isinstance(self.schedule, str) and self.schedule in SCHEDULES:
            steps = int(self.max_steps)
            if self.schedule == "cosine":
                return Cosine(steps)
            if self.schedule == "inverse_time":
                return InverseTime(max(1.0, steps / 10.0))
            return Constant()
        try:
            return as_schedule(self.schedule)
        except Exception as exc:
            raise ValueError(
                f"schedule must be one of {SCHEDULES} or a kronnet schedule, got {self.schedule!r} ({exc})"
            ) from None

    def _validate_array(self, X: Any, y: Any, reset: bool, **kwargs: Any) -> Any:
        """scikit-learn's own checks: validate_data, or check_X_y/check_array before 1.6."""
        if _validate_data is not None:
            if y is None:
                return _validate_data(self, X, reset=reset, **kwargs)
            return _validate_data(self, X, y, reset=reset, **kwargs)
        if y is None:  # pragma: no cover - older scikit-learn
            return self._validate_data(X, reset=reset, **kwargs)
        return self._validate_data(X, y, reset=reset, **kwargs)  # pragma: no cover

    def _targets_of(self, y: Any) -> np.ndarray:
        """y as given with a data set or factor list: 1-D, or 2-D for a
        multi-output regressor."""
        out: np.ndarray = column_or_1d(y, warn=True)
        return out

    def _points(self, X: Any, y: Any, reset: bool) -> Tuple[KronPoints, Optional[np.ndarray]]:
        """The points of X as a kronnet data set (without targets, not yet
        scaled) and the raw targets (None when there are none)."""
        fitting = y is not None or reset
        if isinstance(X, KronPoints):
            target = y if y is not None else X.y
            if fitting and target is None:
                raise ValueError(
                    f"{type(self).__name__} requires y to be passed, but the target y is None (X has no targets)"
                )
            if reset and hasattr(self, "n_features_in_"):
                del self.n_features_in_
            return X.with_targets(None), None if target is None else self._targets_of(target)
        if _is_factor_list(X):
            if fitting and y is None:
                raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
            if reset and hasattr(self, "n_features_in_"):
                del self.n_features_in_
            return KronData(list(X)), None if y is None else self._targets_of(y)
        numeric = not self._is_classifier
        multi = not self._is_classifier
        tables = self._entity_tables(reset)
        if tables is not None:
            if y is not None:
                X, y = self._validate_array(
                    X, y, reset, dtype=None, y_numeric=numeric, ensure_min_features=1, multi_output=multi
                )
            else:
                X = self._validate_array(X, None, reset, dtype=None)
            if not np.issubdtype(X.dtype, np.integer):
                if np.issubdtype(X.dtype, np.floating) and np.all(X == np.round(X)):
                    X = X.astype(np.int64)
                else:
                    raise ValueError(f"with tables=..., X must hold integer entity indices, got dtype {X.dtype}")
            return PairData(tables, X), y
        if y is not None:
            X, y = self._validate_array(X, y, reset, dtype=np.float64, order="C", y_numeric=numeric, multi_output=multi)
        else:
            X = self._validate_array(X, None, reset, dtype=np.float64, order="C")
        return KronData([X]), y

    def _check_unchanged(self) -> None:
        """A fit that continues the net (`warm_start`, ``partial_fit``)
        refuses parameters that shape the net and differ from the fitted
        one's, instead of silently keeping the old ones."""
        net = self.net_
        now = {"width": int(self.width), "init": self.init}
        was: Dict[str, Any] = {"width": net.width, "init": net.init}
        if self.threshold is not None:
            now["threshold"], was["threshold"] = float(self.threshold), net.threshold
        if self.init == "kron":
            now["init_rank"], was["init_rank"] = int(self.init_rank), net.init_rank
        for name, value in now.items():
            if value != was[name]:
                raise ValueError(
                    f"{name}={value!r} differs from the fitted net's {name}={was[name]!r}: a warm start or "
                    "partial_fit continues the fitted net; set warm_start=False (or clone the estimator) "
                    "to fit a new one"
                )

    def _entity_tables(self, reset: bool) -> Optional[List[np.ndarray]]:
        """The entity tables of pair-index inputs: `tables` as given, or the
        features of `kernels` (factored on the first fit, ``kernel_ranks_``
        their ranks), or None for other inputs."""
        if self.tables is not None and self.kernels is not None:
            raise ValueError("give tables=... or kernels=..., not both")
        if self.kernels is None:
            return None if self.tables is None else list(self.tables)
        cached = getattr(self, "_kernel_tables", None)
        if reset or cached is None:
            if not isinstance(self.kernels, (list, tuple)) or not self.kernels:
                raise ValueError(
                    f"kernels must be a non-empty list of square arrays, got {type(self.kernels).__name__}"
                )
            cached = [KernelFeatures(K).features for K in self.kernels]
            self._kernel_tables: Optional[List[np.ndarray]] = cached
            self.kernel_ranks_ = tuple(t.shape[1] for t in cached)
        return list(cached)

    def _scaled(self, data: KronPoints) -> KronPoints:
        """The points as the net sees them: times ``input_scale_``."""
        return data if self.input_scale_ == 1.0 else data.scaled(self.input_scale_)

    # -- the model's shape and loss (the subclasses') ---------------------------

    def _loss(self) -> str:
        raise NotImplementedError

    def _n_net_outputs(self) -> int:
        raise NotImplementedError

    def _encode(self, y: np.ndarray) -> np.ndarray:
        """The trainer's targets for the raw targets y."""
        raise NotImplementedError

    def _validation(self, data: KronPoints, y: np.ndarray) -> Tuple[float, Optional[np.ndarray]]:
        """The held-out score and, for a regressor, each held-out point's
        squared error (mean over outputs), which `_beats` compares."""
        raise NotImplementedError

    def _beats(
        self,
        score: float,
        errors: Optional[np.ndarray],
        best: float,
        best_errors: Optional[np.ndarray],
        groups: Optional[np.ndarray] = None,
    ) -> bool:
        """Whether a held-out result replaces the best one: a score higher by
        `tol` and, with per-point errors, a mean improvement of more than
        SIGNIFICANCE standard errors of the paired differences. A smaller
        gain is the held-out points' noise (a tenth of a small data set).
        With whole entities held out (`validation_entities`; `groups`, each
        held-out point's entity) the standard error is over the entities
        (cluster-robust): an entity's points share its errors, and on a
        cold-start set the point-wise one let epochs through that won on 13
        held-out entities and lost on new ones (docs/guide.md, the
        estimators)."""
        if score < best + self.tol:
            return False
        if errors is None or best_errors is None:
            return True
        gain = best_errors - errors
        if groups is None:
            return bool(gain.mean() > SIGNIFICANCE * gain.std() / math.sqrt(len(gain)))
        _, which = np.unique(groups, return_inverse=True)
        clusters = int(which.max()) + 1
        if clusters < 2:
            return False
        residual = np.bincount(which, weights=gain - gain.mean(), minlength=clusters)
        se = math.sqrt(clusters / (clusters - 1) * float(np.sum(residual**2))) / len(gain)
        return bool(gain.mean() > SIGNIFICANCE * se)

    def _set_targets(self, y: np.ndarray, classes: Any) -> None:
        raise NotImplementedError

    def _check_targets(self, y: np.ndarray, classes: Any) -> None:
        pass

    # -- training ---------------------------------------------------------------

    def _rates_for(self, net: TwoLayerNet, batch_size: int, data: KronPoints) -> Dict[str, float]:
        """The rates to train at: the "auto" ones from
        :func:`~kronnet.suggest_rates` for the parts that train (those not
        at 0), the others as given."""
        given = {name: getattr(self, name) for name in RATE_PARAMS}
        parts = "".join(p for p, name in zip("wabcv", RATE_PARAMS) if isinstance(given[name], str) or given[name] > 0)
        auto = suggest_rates(net, batch_size, data, parts=parts, loss=self._loss())
        return {name: auto[name] if isinstance(val, str) else float(val) for name, val in given.items()}

    def _input_scale_for(self, data: KronPoints) -> float:
        if isinstance(self.input_scale, str):
            rms = float(np.sqrt(np.mean(np.square(data.norms()))))
            return 1.0 / rms if rms > 0 and math.isfinite(rms) else 1.0
        return float(self.input_scale)

    def _start(self, data: KronPoints, rs: np.random.RandomState) -> None:
        """A new net and its rates; `data` is scaled already."""
        self.batch_size_ = min(int(self.batch_size), data.n)
        net_seed, trainer_seed = (int(s) for s in rs.randint(0, SEED_BOUND, size=2))
        self._net_seed = net_seed
        if self._loss() == "squared":
            self._indicators, self._threshold = False, self._threshold_for(data)
        else:
            self._indicators, self._threshold = self._classifier_start_for(data)
        self.net_ = self._new_net(data)
        self.trainer_seed_ = trainer_seed
        self._trainer: Optional[Trainer] = None
        rates = self._rates_for(self.net_, self.batch_size_, data)
        self.rates_ = {name: rate * self._lr_scale for name, rate in rates.items()}
        self._train_points: Optional[KronPoints] = None
        self.t_ = 0
        self.n_iter_ = 0
        self.loss_curve_: List[float] = []
        self.best_loss_: Optional[float] = np.inf
        self.validation_scores_: Optional[List[float]] = None
        self.best_validation_score_: Optional[float] = None
        self._no_improvement_count = 0
        self.refit_ = False

    def _threshold_for(self, train: KronPoints) -> Optional[float]:
        """A regressor's threshold: `threshold`, or with None, on small data
        (n·m <= THRESHOLD_SEARCH_ENTRIES, where even a step that fires every
        neuron is cheap) the one of THRESHOLD_SHARES × b0 (b0 = sqrt(0.4 ln
        m)) whose output start has the lowest leave-one-out error on the
        training points, on larger data LARGE_THRESHOLD_SHARE × b0."""
        if self.threshold is not None:
            return float(self.threshold)
        width = int(self.width)
        if train.n * width > THRESHOLD_SEARCH_ENTRIES:
            return LARGE_THRESHOLD_SHARE * default_threshold(width)
        searched = self.output_start == "ridge" and (isinstance(self.lr_a, str) or self.lr_a > 0) and 2 <= train.n
        if not searched:
            return None
        assert train.y is not None
        pre = self._initial_preactivations(train)
        targets = train.y.reshape(train.n, -1)
        solver = self._linear_solver(train)
        if solver is not None:
            targets = targets - predict_linear(train, solver(train, targets))
        base = default_threshold(width)
        errors = {}
        for share in THRESHOLD_SHARES:
            b = share * base
            errors[b] = ridge_features(activate(pre, b), targets).loo
        return min(errors, key=lambda b: errors[b])

    def _initial_preactivations(self, train: KronPoints) -> np.ndarray:
        """⟨w_r(0), x_j⟩ (n × m) of the net `_start` draws: W(0) does not
        depend on b, so one matrix serves every candidate threshold, and the
        linear start (fitted while a = 0) neither."""
        width = int(self.width)
        probe = TwoLayerNet(train.dims, width, seed=self._net_seed, init=self.init, init_rank=int(self.init_rank))  # type: ignore[arg-type]
        pre: np.ndarray = probe.preactivations(train)
        return pre

    def _classifier_start_for(self, train: KronPoints) -> Tuple[bool, Optional[float]]:
        """A classifier's start and threshold: on small data (n·m <=
        THRESHOLD_SEARCH_ENTRIES) with ``output_start="ridge"`` and output
        weights that train, the logistic start or the indicator start at one
        of THRESHOLD_SHARES × b0 (or at `threshold` when given), whichever
        classifies the training points best in cross-validation
        (``kronnet.training.classifier_start``); else the logistic start at
        `threshold` (None: b0). Returns (indicators, threshold)."""
        given = None if self.threshold is None else float(self.threshold)
        width = int(self.width)
        trains_a = isinstance(self.lr_a, str) or self.lr_a > 0
        if self.output_start != "ridge" or not trains_a or train.n * width > THRESHOLD_SEARCH_ENTRIES:
            return False, given
        assert train.y is not None
        thresholds = [given] if given is not None else [share * default_threshold(width) for share in THRESHOLD_SHARES]
        solver = self._linear_solver(train)
        logistic = solver is not None and self._logistic_applies(train)
        targets, offset = self._ridge_targets(train.y)
        choice = choose_start(
            train,
            train.y,
            targets.reshape(train.n, -1),
            offset,
            self._initial_preactivations(train),
            thresholds,
            solver,
            1.0 / self.input_scale_**2 if logistic else None,
            seed=self._net_seed,
            significance=SIGNIFICANCE,
        )
        if choice is None or not choice.indicators:
            return False, given
        return True, choice.threshold

    def _new_net(self, data: KronPoints) -> TwoLayerNet:
        """A new net of `data`'s dims from the seed and threshold `_start` chose."""
        return TwoLayerNet(
            data.dims,
            int(self.width),
            threshold=self._threshold,
            seed=self._net_seed,
            init=self.init,  # type: ignore[arg-type]
            init_rank=int(self.init_rank),
            outputs=self._n_net_outputs(),
        )

    def _can_hold_out(self, y: np.ndarray) -> bool:
        """Whether `early_stopping` can hold out a validation set: at least
        two points on each side and, for a classifier, a stratified split
        (every class twice, a held-out share of at least one per class).
        On smaller data it trains on everything, as without it."""
        n = len(y)
        held = math.ceil(self.validation_fraction * n)
        if held < 2 or n - held < 2:
            return False
        if self._is_classifier:
            _, counts = np.unique(y, return_counts=True)
            return bool(counts.min() >= 2 and held >= len(counts) and n - held >= len(counts))
        return True

    def _held_out(self, data: KronPoints, y: np.ndarray, seed: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """The training and held-out point indices for `early_stopping`, or
        None to train on everything: random points (stratified for a
        classifier) or, with `validation_entities` = k, every point of a
        random `validation_fraction` of table k's entities."""
        k = self.validation_entities
        if k is None:
            if not self._can_hold_out(y):
                return None
            stratify = y if self._is_classifier else None
            idx_train, idx_val = train_test_split(
                np.arange(data.n), test_size=self.validation_fraction, random_state=seed, stratify=stratify
            )
            return np.asarray(idx_train), np.asarray(idx_val)
        if not isinstance(data, PairData):
            raise ValueError(
                "validation_entities holds out entities of a table: it needs pairs over entity tables "
                "(tables=, kernels= or PairData X)"
            )
        if k >= data.p:
            raise ValueError(f"validation_entities={k} but the pairs index {data.p} tables (0 to {data.p - 1})")
        groups = np.asarray(data.pairs)[:, k]
        if len(np.unique(groups)) < 2:
            return None
        # A share of the entities, not of the points: a cold-start use
        # predicts for whole entities, each with however many points it has.
        split = GroupShuffleSplit(n_splits=1, test_size=self.validation_fraction, random_state=seed)
        idx_train, idx_val = next(split.split(np.zeros(data.n), groups=groups))
        if min(len(idx_train), len(idx_val)) < 2:
            return None
        return np.asarray(idx_train), np.asarray(idx_val)

    def _start_exact(self, train: KronPoints) -> None:
        """The closed-form parts of the start, on the new net: the linear
        term (`linear_start`), then the output weights on what it leaves
        (`output_start`). Sets ``ridge_lambda_`` and ``output_lambda_``
        (None for a part not started)."""
        # Φ before the linear start: once the net holds the start's
        # coefficient block, its preactivations would go through that block's
        # n × n cross-Gram (at 0 coefficients) for nothing.
        phi = hidden_outputs(self.net_, train) if self._starts_output(train) else None
        loss = self._loss()
        # A classifier's output start regresses the class indicators on both
        # parts, as RidgeClassifier on [x, Φ], and turns their sum into
        # logits once at the end: the linear part stays uncalibrated till then.
        indicators = phi is not None and loss != "squared"
        linear = self._linear_fit(train, calibrate=not indicators)
        self.ridge_lambda_: Optional[float] = None if linear is None else linear.lam
        self.output_lambda_: Optional[float] = None
        if phi is not None:
            assert train.y is not None
            targets, offset = self._ridge_targets(train.y)
            targets = targets.reshape(train.n, -1)
            fitted = np.zeros_like(targets) if linear is None else predict_linear(train, linear).reshape(targets.shape)
            # Random features that predict the left-out points significantly
            # worse than their mean only add noise: the start is then the
            # linear fit alone (the kernel set, where it is KronRLS).
            output = ridge_features(phi, targets - fitted, significance=SIGNIFICANCE)
            if indicators:
                scores = fitted + phi @ output.coef + output.intercept - offset
                s = temperature(scores, targets, loss)
                if linear is None:
                    output = replace(output, intercept=output.intercept - offset)
                else:
                    linear = scaled_fit(linear, s, offset)
                output = replace(output, coef=s * output.coef, intercept=s * output.intercept)
            del phi
            start_output(self.net_, output)
            self.output_lambda_ = output.lam
            if linear is not None:
                # start_linear sets c to its intercept: give it both. (The
                # output weights go in first, while the net has no
                # coefficient block: each load_state rebuilds every block.)
                linear = replace(linear, intercept=linear.intercept + output.intercept)
        if linear is not None:
            start_linear(self.net_, train, linear)

    def _started_exactly(self) -> bool:
        """Whether `_start_exact` fitted a part of the net (the linear term
        or the output weights), so that the net holds a closed-form start."""
        return self.ridge_lambda_ is not None or self.output_lambda_ is not None

    def _settle_bias_rate(self, n: int) -> None:
        """An "auto" output-bias rate slowed to average over an epoch
        (:func:`~kronnet.training.lr.epoch_averaged_rate`) once the exact
        start has fitted the bias: SGD then only has to follow the mean
        output's drift, and at the suggested rate the batches' noise moved
        every prediction (MovieLens u1 without early stopping: test RMSE
        0.9429 after 5,000 steps, 0.9314 with this rate; the start 0.9311)."""
        if self._started_exactly() and isinstance(self.lr_c, str):
            groups = sum(1 for rate in self.rates_.values() if rate > 0)
            self.rates_["lr_c"] = epoch_averaged_rate(self.rates_["lr_c"], groups, self.batch_size_, n)

    def _starts_output(self, train: KronPoints) -> bool:
        """Whether `output_start` applies: a regressor, or a classifier
        whose start `_classifier_start_for` chose to be the indicators,
        output weights that train (else they stay the net's ±1), and Φ of
        at most MAX_OUTPUT_ENTRIES entries."""
        return (
            self.output_start == "ridge"
            and (self._loss() == "squared" or self._indicators)
            and self.rates_["lr_a"] > 0
            and 2 <= train.n
            and train.n * int(self.width) <= MAX_OUTPUT_ENTRIES
        )

    def _linear_fit(self, train: KronPoints, calibrate: bool = True) -> Optional[RidgeFit]:
        """With ``linear_start="ridge"`` (and d <= MAX_RIDGE_D), the exact
        fit of the linear term and output bias to the training points, for
        `start_linear`; else None. With lr_a > 0 it zeroes the output weights
        first: the hidden layer's random initial outputs would otherwise add
        noise to the exact fit that SGD must first undo. A classifier's fit
        is logits (LogisticRegression, or the ridge fit on class indicators
        scaled by `_temperature`); with ``calibrate=False`` it is the ridge
        fit on the indicators (`_ridge_targets`) itself."""
        solver = self._linear_solver(train)
        if solver is None:
            return None
        assert train.y is not None
        if self.rates_["lr_a"] > 0:
            # The new net has no bias and no linear term yet, so its
            # outputs are then exactly 0.
            state = self.net_.to_state(whole=False)
            state.a = np.zeros((state.neurons[1], self.net_.outputs))
            self.net_.load_state(state)
            initial = np.zeros((train.n, self.net_.outputs))
        else:
            # The hidden layer's outputs are part of f: the linear term fits
            # what they leave.
            initial = self.net_.predict(train.with_targets(None))
        loss = self._loss()
        if calibrate and loss != "squared" and not np.any(initial) and self._logistic_applies(train):
            # C = 1 / input_scale²: the penalty LogisticRegression() puts on
            # the unscaled features.
            return logistic_fit(train, train.y, 1.0 / self.input_scale_**2)
        targets, offset = self._ridge_targets(train.y)
        fit = solver(train, targets - initial.reshape(targets.shape))
        if loss == "squared" or not calibrate:
            return fit
        raw = predict_linear(train, fit).reshape(train.n, -1) - offset
        return scaled_fit(fit, temperature(raw, targets.reshape(train.n, -1), loss), offset)

    def _logistic_applies(self, train: KronPoints) -> bool:
        """Whether a classifier's linear start can be LogisticRegression's:
        dense points of at most LOGISTIC_START_ENTRIES entries, and every
        class of ``classes_`` among the labels. (A first `partial_fit` batch
        may lack some; LogisticRegression would then model fewer classes
        than the net has outputs, and the indicator ridge, whose absent
        classes score 0, starts it instead.)"""
        assert train.y is not None
        present = np.unique(train.y).size == len(self.classes_)
        return bool(present and train.n * train.d <= LOGISTIC_START_ENTRIES)

    def _linear_solver(self, train: KronPoints) -> Optional[Callable[[KronPoints, np.ndarray], RidgeFit]]:
        """How `linear_start` solves the linear term on `train`: the primal
        ridge for d <= MAX_RIDGE_D, the dual (Kronecker kernel ridge) for
        pairs over two tables of at most MAX_DUAL_ENTRIES entity pairs,
        else None (v starts at 0)."""
        if self.linear_start != "ridge":
            return None
        if train.d <= MAX_RIDGE_D:
            return ridge_linear
        if isinstance(train, PairData) and train.p == 2:
            (U, V) = train.tables
            if U.shape[0] * V.shape[0] <= MAX_DUAL_ENTRIES:
                return lambda data, y: ridge_pairs_dual(cast(PairData, data), y)
        return None

    def _ridge_targets(self, y: np.ndarray) -> Tuple[np.ndarray, float]:
        """What the linear start regresses on, and the output it maps to a
        logit of 0: the targets themselves for the squared loss (offset
        unused); 0/1 for logistic (offset 1/2); one-hot rows for
        cross-entropy (softmax ignores a common offset: 0)."""
        loss = self._loss()
        if loss == "squared":
            return y, 0.0
        if loss == "logistic":
            return y.astype(np.float64), 0.5
        onehot = np.zeros((len(y), self._n_net_outputs()))
        onehot[np.arange(len(y)), y.astype(np.int64)] = 1.0
        return onehot, 0.0

    def _make_trainer(self, net: TwoLayerNet, data: KronPoints) -> Trainer:
        return Trainer(
            net,
            data,
            batch_size=min(self.batch_size_, data.n),
            index=self._index_kind(),
            seed=self.trainer_seed_,
            comm=self.comm,
            loss=self._loss(),  # type: ignore[arg-type]
            ridge_a=float(self.alpha),
            ridge_v=float(self.alpha),
            schedule=self._schedule(),
            lr=self.rates_["lr"],
            lr_a=self.rates_["lr_a"],
            lr_b=self.rates_["lr_b"],
            lr_c=self.rates_["lr_c"],
            lr_v=self.rates_["lr_v"],
            dtype=self.dtype,  # type: ignore[arg-type]
        )

    def _ensure_trainer(self, data: KronPoints) -> Trainer:
        """A trainer on `data` (kept across epochs and calls while the points
        and targets stay the same, so the batch order continues)."""
        tr = self._trainer
        same = (
            tr is not None
            and self._train_points is not None
            and self._train_points.n == data.n
            and self._train_points.fingerprint == data.fingerprint
            and tr.data.y is not None
            and data.y is not None
            and np.array_equal(tr.data.y, data.y)
        )
        if same:
            assert tr is not None
            return tr
        self._trainer = self._make_trainer(self.net_, data)
        self._train_points = data
        return self._trainer

    def _speaks(self) -> bool:
        """Whether this process prints the epochs (`verbose`): the one that
        shows the trainers' progress bars (rank 0 when sharded)."""
        return bool(self.verbose) and self.net_.placement.speaks

    def _index_kind(self) -> IndexKind:
        return cast(IndexKind, self.index)  # checked by _check_params

    def _auto(self) -> bool:
        return any(isinstance(getattr(self, name), str) for name in RATE_PARAMS)

    def _epoch(self, steps: int) -> float:
        """One epoch (or `steps` steps); the mean batch loss."""
        tr = self._trainer
        assert tr is not None
        losses: List[float] = []
        done = retries = 0
        while done < steps:
            try:
                losses.extend(tr.fit(steps - done).loss.tolist())
                done = steps
            except DivergenceError as exc:
                taken = getattr(exc, "history", None)
                if taken is not None:
                    losses.extend(taken.loss.tolist())
                    done += taken.steps
                if not self._auto() or retries >= MAX_LR_RETRIES:
                    raise
                if self._fresh:
                    # The last finite state of a diverging run can be far
                    # off (trained output weights scale the hidden layer's
                    # steps): start over at a quarter of the rates instead.
                    raise _LossGrowth(f"a step diverged after {self.t_ + done} steps ({exc})") from None
                # "auto" rates: a quarter of every rate, from the last finite state.
                retries += 1
                self.rates_ = {name: rate / 4.0 for name, rate in self.rates_.items()}
                tr = self._make_trainer(tr.net, tr.data)
                self._trainer = tr
        self.t_ += steps
        finite = [x for x in losses if math.isfinite(x)]
        return float(np.mean(finite)) if finite else float("nan")

    def _fit(self, X: Any, y: Any, incremental: bool, classes: Any = None) -> Any:
        starting = not (incremental or self.warm_start) or not hasattr(self, "net_")
        for attempt in range(MAX_LR_RETRIES + 1):
            try:
                return self._fit_once(X, y, incremental, classes, 0.25**attempt, starting)
            except _LossGrowth as exc:
                # "auto" rates on a fresh start: start over at a quarter of them.
                if not (starting and self._auto()) or attempt == MAX_LR_RETRIES:
                    raise DivergenceError(
                        f"{type(self).__name__}: {exc}; lower the learning rates (or scale the targets, e.g. with "
                        "sklearn.compose.TransformedTargetRegressor)"
                    ) from None
        raise AssertionError("unreachable")

    def _fit_once(self, X: Any, y: Any, incremental: bool, classes: Any, lr_scale: float, first: bool) -> Any:
        self._check_params()
        # A call that starts a net (fit, or the first partial_fit) can start
        # over after a divergence: `first` is decided once per call, so an
        # attempt after a failed one starts a net again rather than
        # continuing the diverged one, whose last finite state can be far
        # off (no rate brings it back).
        self._fresh = first
        if not first:
            self._check_unchanged()
        data, y_arr = self._points(X, y, reset=first)
        if not first and data.dims != self.net_.dims:
            raise ValueError(
                f"X has factor dimensions {data.dims}, but {type(self).__name__} was fitted on {self.net_.dims}"
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
        self._seen_entities = None  # the held-out points are judged without it
        held_out = self._held_out(data, y_arr, split_seed) if self.early_stopping and not incremental else None
        val_groups: Optional[np.ndarray] = None
        if held_out is not None:
            idx_train, idx_val = held_out
            train, y_train = data.take(idx_train), y_arr[idx_train]
            val_data, y_val = data.take(idx_val), y_arr[idx_val]
            if self.validation_entities is not None:
                assert isinstance(data, PairData)
                val_groups = np.asarray(data.pairs)[idx_val, self.validation_entities]
        if first:
            # From the training points only: the held-out ones judge.
            self.input_scale_ = self._input_scale_for(train)
        train = self._scaled(train).with_targets(self._encode(y_train))
        if first:
            if self.comm is not None:
                # Every rank must hold the same points before the start: the
                # threshold search and the exact start are computed on each
                # rank, and different data would surface later as a
                # different net rather than as the data it is.
                over(self.comm).agree(data=train)
            self._lr_scale = lr_scale
            self._start(train, rs)
            self._start_exact(train)
            self._settle_bias_rate(train.n)
        trainer = self._ensure_trainer(train)
        per_epoch = math.ceil(train.n / self.batch_size_)
        if incremental:
            before = trainer.full_loss() if self._fresh else None
            self.loss_curve_.append(self._epoch(per_epoch))
            self.n_iter_ += 1
            if before is not None:
                # The first call's epoch must not wreck its exact start: a
                # loss grown LOSS_GROWTH-fold (finite, so no step refused
                # it) starts the net over at lower rates, as `fit` does.
                assert self._trainer is not None  # _epoch's, possibly remade at lower rates
                after = self._trainer.full_loss()
                if not after <= LOSS_GROWTH * max(before, np.finfo(np.float64).tiny):
                    raise _LossGrowth(f"the training loss grew from {before:.3g} to {after:.3g} in one epoch")
            return self
        budget = int(self.max_steps)
        converged = False
        best_net = self.net_
        if val_data is not None:
            self.validation_scores_ = [] if self.validation_scores_ is None else self.validation_scores_
            self.best_validation_score_ = (
                -np.inf if self.best_validation_score_ is None else self.best_validation_score_
            )
            self.best_loss_ = None
        self._no_improvement_count = 0
        # None: no exact start to beat; True while it holds the best score.
        start_best: Optional[bool] = None
        best_errors: Optional[np.ndarray] = None
        steps_before, best_steps = self.t_, 0
        if val_data is not None and first and self._started_exactly():
            # The exact start is the first candidate: training must beat it.
            # No copy of it is kept: if it wins, the refit below builds it
            # again on every point (a copy of MovieLens' start took 5 s).
            assert y_val is not None and self.validation_scores_ is not None
            self.best_validation_score_, best_errors = self._validation(val_data, y_val)
            start_best = True
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
                score, errors = self._validation(val_data, y_val)
                self.validation_scores_.append(score)
                if self._speaks():
                    print(f"Epoch {self.n_iter_}, loss = {loss:.8f}, validation score = {score:.6f}")
                best = float(self.best_validation_score_)  # type: ignore[arg-type]
                self._no_improvement_count = self._no_improvement_count + 1 if score < best + self.tol else 0
                if self._beats(score, errors, best, best_errors, val_groups):
                    self.best_validation_score_, best_errors = score, errors
                    # No copy after the last epoch: nothing trains it further
                    # (on MovieLens, where 5,000 steps are one epoch, the
                    # copy of 72,000 × 1024 coefficients took 2.7 s).
                    best_net = self.net_ if budget == 0 else copy.deepcopy(self.net_)
                    best_steps = self.t_ - steps_before
                    if start_best:
                        start_best = False
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
        if best_net is not self.net_:
            # As MLPRegressor: keep the weights of the best validation score.
            self.net_ = best_net
            self._trainer = None
            self._train_points = None
        small = data.n * int(self.width) <= THRESHOLD_SEARCH_ENTRIES
        self.refit_ = start_best is not None and (start_best or small)
        if self.refit_:
            # The held-out tenth chose the number of steps (0: the start,
            # whose λs are chosen within the training points); fit again on
            # every point rather than stay blind to that tenth: the start, as
            # RidgeCV would, then (on small data, where it is cheap) as many
            # epochs as won. The net is the same draw (same seed).
            self.net_ = self._new_net(data)
            full = self._scaled(data).with_targets(self._encode(y_arr))
            self._start_exact(full)
            self._trainer = None
            self._train_points = None
            if best_steps > 0:
                self._ensure_trainer(full)
                self._epoch(math.ceil(best_steps * full.n / train.n))
            elif self.comm is not None:
                # No trainer shards the refitted start: shard it here, so a
                # sharded estimator's net stays sharded.
                self.net_.shard(over(self.comm))
        kept_epochs = val_data is not None and start_best is not True
        if kept_epochs and self.validation_entities is None and isinstance(data, PairData):
            # Epochs won on held-out pairs of known entities; on a cold start
            # they can lose to the start (docs/gallery.md, a sign kernel set
            # +6.9%), so predictions for new entities say so.
            self._seen_entities = [
                np.bincount(np.asarray(data.pairs)[:, k], minlength=len(table)) > 0
                for k, table in enumerate(data.tables)
            ]
        if not converged:
            # When the start outlasted every epoch, say so: the model is the
            # closed-form start, and "raise max_steps" is then a guess.
            kept = (
                " No epoch beat the exact start on the held-out points, so the model is the start, refitted on"
                " every point (refit_); more steps may not change that."
                if start_best
                else ""
            )
            warnings.warn(
                f"{type(self).__name__}: max_steps={self.max_steps} reached and the optimization hasn't converged"
                f" yet.{kept}",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    # -- prediction -------------------------------------------------------------

    def _outputs(self, X: Any) -> np.ndarray:
        """The net's raw outputs on X: (n,) for one output, else (n, C)."""
        check_is_fitted(self, "net_")
        if isinstance(X, KronPoints):
            data = X
        else:
            data, _ = self._points(X, None, reset=False)
        if data.dims != self.net_.dims:
            raise ValueError(f"X has factor dimensions {data.dims}, but {type(self).__name__} expects {self.net_.dims}")
        if self._seen_entities is not None and isinstance(data, PairData):
            self._warn_new_entities(np.asarray(data.pairs), self._seen_entities)
        out: np.ndarray = self.net_.predict(self._scaled(data.with_targets(None)))
        return out

    def _warn_new_entities(self, pairs: np.ndarray, seen: List[np.ndarray]) -> None:
        """Warns when `pairs` have entities no training pair had, since the
        kept epochs were chosen on held-out pairs of known entities."""
        for k, known in enumerate(seen):
            index = pairs[:, k]
            new = int(np.sum((index >= len(known)) | ~known[np.minimum(index, len(known) - 1)]))
            if new:
                warnings.warn(
                    f"{type(self).__name__}: {new} of these {len(pairs)} pairs have an entity of table {k} that no"
                    " training pair has, but the epochs this model kept were chosen on held-out pairs of known"
                    f" entities (validation_entities=None), which can prefer epochs that do worse on new ones; fit"
                    f" with validation_entities={k} to choose them on new entities of table {k}.",
                    UserWarning,
                    stacklevel=3,
                )
                return

    # -- pickling: the trainer holds native state and is rebuilt on demand -------

    def __getstate__(self) -> Dict[str, Any]:
        """The estimator without its trainer. A sharded estimator (``comm``)
        pickles as a single-process one: its net is gathered, which is
        collective (every rank must pickle it), and ``comm`` becomes None,
        since a communicator belongs to its processes."""
        state: Dict[str, Any] = dict(super().__getstate__())
        if "_trainer" in state:
            state["_trainer"] = None
            state["_train_points"] = None
        state["comm"] = None
        if "net_" in state:
            state["net_"] = state["net_"].gather()
        return state


_SHARED_PARAMS = """
    width : int, default 1024
        m, the number of hidden neurons (1024: a MovieLens-100k fold fits
        in under a minute on two cores, docs/gallery.md).
    threshold : float, optional
        b of the activation max(z - b, 0) at initialization. None, for a
        regressor: on small data (n·m <= 2**22, where a step that fires
        every neuron is still cheap) the one of 0, b0/2 and b0 (b0 =
        sqrt(0.4 ln m), the :class:`~kronnet.TwoLayerNet` default) whose
        output start has the lowest leave-one-out error on the training
        points (with ``output_start="ridge"``, else b0); on larger data
        1.5 b0, whose sparser steps validated as well on MovieLens at half
        the cost (docs/design.md, "The threshold"). For a classifier, on
        small data the threshold of its start if cross-validation chose
        the indicator start (``output_start``), else b0. The value used is
        ``net_.threshold``.
    init : {"gaussian", "kron"}, default "gaussian"
        How W(0) is drawn (:class:`~kronnet.TwoLayerNet`).
    init_rank : int, default 8
        R for ``init="kron"``.
    lr, lr_a, lr_b, lr_c, lr_v : "auto" or float >= 0
        Learning rates of the hidden weights W, the output weights a, the
        thresholds b, the output bias c and the linear term v (0 freezes a
        part; defaults "auto", "auto", 0, "auto", 0). "auto":
        :func:`~kronnet.suggest_rates` for the parts that train, on the
        (scaled) training points, except that once the exact start
        (`linear_start`, `output_start`) has fitted the output bias, an
        "auto" `lr_c` is slowed to average over about an epoch
        (:func:`~kronnet.training.lr.epoch_averaged_rate`: times
        min(1, 2 G S / n) for G trained groups, batch size S and n training
        points), so that batch noise in c does not move every prediction;
        after a divergence training goes on from the last finite state at a
        quarter of every rate. The rates used are ``rates_``.
    linear_start : {"ridge", "none"}, default "ridge"
        "ridge": before SGD, the linear term v and the output bias c are set
        to the exact ridge regression of the (scaled, standardized) training
        targets on the points, λ chosen by generalized cross-validation
        (``ridge_lambda_``), and the output weights a start at 0 (when they
        train) so that the start is exactly that linear model; the hidden
        layer then learns what it leaves, and with `early_stopping` the
        start is the first candidate the validation score must beat. A
        classifier regresses the class indicators and scales the result
        into logits by one factor chosen by the training loss. Applies when
        d <= 4096 (``kronnet.training.ridge``), and for any d on pairs over
        two tables (``tables=`` or ``kernels=``, N_1·N_2 <= 2**25), where
        the same ridge is solved in the dual by conjugate gradients through
        the tables' Grams (Kronecker kernel ridge regression, λ on a
        held-out fifth of the training pairs); elsewhere, or with "none", v
        starts at 0.
    output_start : {"ridge", "none"}, default "ridge"
        "ridge" (regressors, with output weights that train): after the
        linear start, the output weights a are set to the ridge regression
        of what it leaves on the hidden layer's outputs at W(0), λ by exact
        leave-one-out error (``output_lambda_``), so the start is the best
        random-features model the initial net holds
        (``kronnet.training.output_start``; n·m <= 2**27). A classifier
        regresses its class indicators on the points and the hidden outputs
        and scales the sum into logits; it does so only on small data
        (n·m <= 2**22), and only when stratified 5-fold cross-validation
        within its training points finds that it classifies significantly
        more points right than the logistic start
        (``kronnet.training.classifier_start``; on digits it does, 0.981
        against 0.969 accuracy). "none": a starts at 0 (with the linear
        start) or at the net's ±1.
    alpha : float, default 0.0
        Ridge penalty (alpha/2)(||a||^2 + ||v||^2) on the output weights and
        the linear term.
    schedule : {"constant", "inverse_time", "cosine"} or kronnet schedule, default "constant"
        Multiplies every rate at step t: "cosine" from 1 to 0 over
        `max_steps`, "inverse_time" 1 / (1 + t / (max_steps / 10)); or
        anything ``Trainer(schedule=...)`` takes.
    input_scale : "auto" or float, default "auto"
        Every point is multiplied by this before the net sees it; "auto":
        1 / (root mean square norm of the training points), so points have
        norm about one. The value used is ``input_scale_``.
    batch_size : int, default 8
        S; ``min(batch_size, n)`` is used.
    max_steps : int, default 5000
        Most SGD steps per ``fit``.
    tol : float, default 1e-4
        Improvement the stopping rule asks for.
    n_iter_no_change : int, default 10
        Epochs without an improvement by `tol` before stopping.
    early_stopping : bool, default True
        Hold out `validation_fraction` of the data and stop on its score
        instead of the training loss; the best-scoring weights are kept, an
        epoch replacing them only when it improves the score by `tol` and,
        for a regressor, its held-out squared errors by more than two
        standard errors of the paired per-point differences
        (data too small to split, fewer than two points per side or, for
        a classifier, a class too rare to stratify, trains on everything
        instead; with an exact start, the start is the first candidate, so
        training never leaves a model that validates worse than it), and
        the winner is then fitted again on every point (``refit_``). On by
        default, unlike MLPRegressor: the benchmarks in docs/gallery.md
        chose it (diabetes R² 0.43 without, 0.48 with).
    validation_fraction : float, default 0.1
        The held-out share for `early_stopping`.
    validation_entities : int or None, default None
        What `early_stopping` holds out. None: random points, so the score
        judges predictions for pairs whose entities training has seen. k:
        every point of a random `validation_fraction` of table k's
        entities (``GroupShuffleSplit`` with ``split_seed``; no
        stratification), so the score, the stopping rule and the choice
        between the exact start and the epochs judge predictions for
        entities new to training, and an epoch must beat the best by two
        standard errors over the held-out entities rather than over their
        points. Set it when the pairs to predict have entities of table k
        that no training pair has (cold start): the default cannot see
        their errors, and a model it chose with epochs warns when asked
        for such pairs (docs/guide.md, the estimators). Needs pairs over
        tables (`tables`, `kernels` or PairData X). The start's own
        choices (its λs and threshold by leave-one-out, a classifier's
        start by stratified cross-validation) stay over points.
    index : {"auto", "scan", "tree", "bits"}, default "auto"
        The trainer's activated-neuron finder (speed only).
    dtype : {"float64", "float32"}, default "float64"
        The trainer's state (``Trainer(dtype=...)``): float32 halves the
        memory traffic of a step at a drift measured in docs/gallery.md.
    warm_start : bool, default False
        ``fit`` continues the current net instead of starting over; a
        `width`, `threshold`, `init` or `init_rank` that differs from the
        fitted net's is refused (ValueError), as in ``partial_fit``.
    random_state : int, RandomState instance or None, default None
        Source of the seeds: ``rs = check_random_state(random_state)``
        draws ``split_seed = rs.randint(0, 2**31 - 1)``, then the net's
        seed and the trainer's seed ``rs.randint(0, 2**31 - 1, size=2)``.
    verbose : bool, default False
        Print the loss of every epoch.
    tables : list of array_like, optional
        Entity tables: X is then an integer array (n, p) of entity indices
        and the points are ``PairData(tables, X)``.
    kernels : list of array_like, optional
        Entity kernels instead of tables (not both): K_k of shape
        (N_k, N_k), symmetric positive semi-definite, over every entity
        of kind k that X will name in ``fit`` or ``predict``. X is an
        integer array (n, p) of entity indices and the points are
        ``PairData.from_kernels(kernels, X)``: their inner products are the
        Kronecker kernel K_1 ⊗ ... ⊗ K_p, so with the linear start the
        estimator begins as Kronecker kernel ridge regression (KronRLS).
        Each kernel is factored once, on the first ``fit``
        (``kernel_ranks_``). An entity in no training pair (cold start) is
        predicted through its kernel row, its similarities to the others;
        an entity outside the kernels needs its features computed by
        :meth:`kronnet.KernelFeatures.transform` and ``tables=``.
    comm : mpi4py.MPI.Comm, optional
        Train sharded over this communicator's ranks (``Trainer(comm=)``,
        docs/mpi.md): every rank runs the same script with the same data
        and arguments, ``fit``, ``partial_fit``, ``predict`` and ``score``
        are collective, and every rank ends with the same model, bitwise
        equal to the single-process fit. ``sklearn.base.clone`` deep-copies
        it, which keeps ``MPI.COMM_WORLD``. Pickling a fitted sharded
        estimator is collective too and gives a single-process one."""

_SHARED_ATTRIBUTES = """
    net_ : TwoLayerNet
        The trained net.
    rates_ : dict of str to float
        The learning rates in use (keys ``lr, lr_a, lr_b, lr_c, lr_v``).
    input_scale_ : float
        The factor every point is multiplied by.
    ridge_lambda_ : float or None
        λ of the linear start, None when there was none.
    output_lambda_ : float or None
        λ of the output start, None when there was none; ``inf`` when its
        features lost to no features by ``SIGNIFICANCE`` standard errors
        of leave-one-out error (the output weights then start at 0).
    refit_ : bool
        Whether the net was fitted again on every point after
        `early_stopping` chose how far to train: always when the start won
        (the start refitted, as RidgeCV would), and on small data (n·m <=
        2**22) also when an epoch won (the start, then as many epochs on all
        the points, unvalidated). A refit's steps count in ``t_``.
    batch_size_ : int
        The batch size in use.
    trainer_seed_ : int
        The trainer's batch-order seed.
    validation_scores_ : list of float or None
        The held-out score after each epoch with `early_stopping`, else None.
    best_validation_score_ : float or None
        The best of `validation_scores_`.
    best_loss_ : float or None
        Lowest of `loss_curve_` (None with `early_stopping`).
    n_iter_ : int
        Epochs run.
    t_ : int
        SGD steps taken, a refit's included.
    n_features_in_ : int
        Columns of X (array inputs only)."""


class KronNetRegressor(RegressorMixin, _KronNetBase):  # type: ignore[misc]
    __doc__ = f"""A two-layer kronnet network as a scikit-learn regressor.

    Trains a :class:`~kronnet.TwoLayerNet` with one output per target
    column by exact minibatch SGD (:class:`~kronnet.Trainer`) on the
    squared loss, in epochs, stopping as
    :class:`sklearn.neural_network.MLPRegressor` does. The net learns the
    standardized targets ``(y - y_mean_) / y_scale_``, which keeps the "auto"
    rates stable whatever the targets' units; predictions are in the units
    of y.

    Parameters
    ----------{_SHARED_PARAMS}

    Attributes
    ----------{_SHARED_ATTRIBUTES}
    n_outputs_ : int
        Target columns (1 for a 1-D y).
    y_mean_, y_scale_ : float or ndarray of shape (C,)
        The targets' mean and standard deviation (1 where it is 0) from the
        first ``fit``.
    loss_curve_ : list of float
        Mean batch loss (1/2 squared error of the standardized targets,
        summed over the outputs) of each epoch.

    Notes
    -----
    Training is deterministic for a fixed integer `random_state`. Without
    `early_stopping` or `warm_start`, with ``linear_start="none"``,
    ``output_start="none"`` and a given `threshold`, and when the "auto"
    rates needed no reduction, ``fit(X, y)`` leaves ``net_`` exactly as::

        rs = check_random_state(random_state)
        rs.randint(0, 2**31 - 1)  # the split seed
        net_seed, trainer_seed = rs.randint(0, 2**31 - 1, size=2)
        points = data.scaled(input_scale_).with_targets((y - y_mean_) / y_scale_)
        net = kn.TwoLayerNet(data.dims, width, threshold, seed=net_seed, init=init,
                             init_rank=init_rank, outputs=n_outputs_)
        kn.Trainer(net, points, batch_size=min(batch_size, n), index=index, seed=trainer_seed,
                   ridge_a=alpha, ridge_v=alpha, schedule=..., **rates_).fit(t_)

    with ``data`` the kronnet data set of X (``scaled`` skipped when
    ``input_scale_`` is 1), and ``predict`` is
    ``y_mean_ + y_scale_ * net_.predict(points)``: the epochs are successive
    ``Trainer.fit`` calls on one trainer, which draw the same batches as one
    call.

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.sklearn import KronNetRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(64, 4))
    >>> y = np.sin(X[:, 0])
    >>> reg = KronNetRegressor(width=256, max_steps=400, random_state=0).fit(X, y)
    >>> reg.predict(X[:3]).shape
    (3,)
    >>> reg.score(X, y) > 0.5
    True

    Several targets at once, one output each:

    >>> Y = np.stack([np.sin(X[:, 0]), np.cos(X[:, 1])], axis=1)
    >>> reg = KronNetRegressor(width=256, max_steps=400, random_state=0).fit(X, Y)
    >>> reg.predict(X[:3]).shape, reg.net_.outputs
    ((3, 2), 2)

    Pairs over entity tables, to be predicted for users that no training
    pair has (cold start): early stopping holds out whole users, as the
    predictions will meet them.

    >>> import warnings
    >>> users, items = rng.normal(size=(30, 3)), rng.normal(size=(20, 3))
    >>> pairs = np.array([(u, i) for u in range(30) for i in range(20)])
    >>> y = np.tanh(np.sum(users[pairs[:, 0]] * items[pairs[:, 1]], axis=1))
    >>> known = pairs[:, 0] < 25  # users 25-29 are new
    >>> reg = KronNetRegressor(tables=[users, items], validation_entities=0, width=64, max_steps=100, random_state=0)
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")  # max_steps is reached: a ConvergenceWarning
    ...     reg = reg.fit(pairs[known], y[known])
    >>> reg.predict(pairs[~known]).shape
    (100,)
    """

    def fit(self, X: Any, y: Targets = None) -> KronNetRegressor:
        """Trains the net on (X, y), from scratch unless `warm_start`.

        Parameters
        ----------
        X : array_like of shape (n, d), KronData, PairData or list of factor arrays
            The points (an (n, p) integer array of entity indices with `tables`).
        y : array_like of shape (n,) or (n, C), optional
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
        >>> reg.n_iter_, reg.refit_  # 10 epochs on 57 points, then again on all 64
        (10, True)
        """
        return self._fit(X, y, incremental=False)  # type: ignore[no-any-return]

    def partial_fit(self, X: Any, y: Targets = None) -> KronNetRegressor:
        """One epoch (ceil(n / batch_size) steps) on (X, y), continuing the net.

        Parameters
        ----------
        X : array_like of shape (n, d), KronData, PairData or list of factor arrays
            The points.
        y : array_like of shape (n,) or (n, C), optional
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

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self) -> Dict[str, Any]:  # pragma: no cover - scikit-learn < 1.6
        return {"multioutput": True}

    def _targets_of(self, y: Any) -> np.ndarray:
        arr = np.asarray(y, dtype=np.float64)
        if arr.ndim == 2:
            return arr
        out: np.ndarray = column_or_1d(arr, warn=True)
        return out

    def _loss(self) -> str:
        return "squared"

    def _n_net_outputs(self) -> int:
        return int(self.n_outputs_)

    def _set_targets(self, y: np.ndarray, classes: Any) -> None:
        self._y_ndim = np.ndim(y)
        self.n_outputs_ = 1 if np.ndim(y) == 1 else int(np.shape(y)[1])
        y = np.asarray(y, dtype=np.float64)
        self.y_mean_ = np.mean(y, axis=0)
        scale = np.std(y, axis=0)
        self.y_scale_ = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)

    def _check_targets(self, y: np.ndarray, classes: Any) -> None:
        outputs = 1 if np.ndim(y) == 1 else int(np.shape(y)[1])
        if outputs != self.n_outputs_:
            raise ValueError(
                f"y has {outputs} target column(s), but {type(self).__name__} was fitted on {self.n_outputs_}"
            )

    def _encode(self, y: np.ndarray) -> np.ndarray:
        out: np.ndarray = (np.asarray(y, dtype=np.float64) - self.y_mean_) / self.y_scale_
        # One column of a 2-D y trains as the 1-D target it is.
        return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out

    def _validation(self, data: KronPoints, y: np.ndarray) -> Tuple[float, Optional[np.ndarray]]:
        pred = self._predicted(self._outputs(data))
        errors = np.mean(np.square(pred - y).reshape(len(y), -1), axis=1)
        return float(r2_score(y, pred)), errors

    def _predicted(self, out: np.ndarray) -> np.ndarray:
        """Outputs in the units and shape of the fitted y: (n,) or (n, C)."""
        if self._y_ndim == 2 and out.ndim == 1:
            out = out[:, None]
        values: np.ndarray = self.y_mean_ + self.y_scale_ * out
        return values

    def predict(self, X: Any) -> np.ndarray:
        """f(x) for every point of X.

        Parameters
        ----------
        X : array_like of shape (n, d), KronData, PairData or list of factor arrays
            The points, in the form used for ``fit``.

        Returns
        -------
        ndarray of shape (n,) or (n, C)
            The predictions, shaped as the y of ``fit``.

        Examples
        --------
        >>> import numpy as np
        >>> from kronnet.sklearn import KronNetRegressor
        >>> X = np.eye(8)
        >>> reg = KronNetRegressor(width=64, max_steps=20, random_state=0).fit(X, np.ones(8))
        >>> reg.predict(X).shape
        (8,)
        """
        return self._predicted(self._outputs(X))


class KronNetClassifier(ClassifierMixin, _KronNetBase):  # type: ignore[misc]
    __doc__ = f"""A two-layer kronnet network as a scikit-learn classifier.

    One network for all classes: for K >= 3 classes it has K outputs (the
    logits) trained on the softmax cross-entropy; for two, one output
    trained on the logistic loss (the log-odds of ``classes_[1]``).
    Parameters, training and stopping as :class:`KronNetRegressor`, the
    validation score of `early_stopping` being the accuracy.

    Parameters
    ----------{_SHARED_PARAMS}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels.{_SHARED_ATTRIBUTES}
    loss_curve_ : list of float
        Mean batch loss (cross-entropy or logistic) of each epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.sklearn import KronNetClassifier
    >>> X = np.repeat(np.eye(3), 10, axis=0)
    >>> y = np.repeat(["a", "b", "c"], 10)
    >>> clf = KronNetClassifier(width=128, max_steps=200, random_state=0).fit(X, y)
    >>> clf.classes_.tolist()
    ['a', 'b', 'c']
    >>> clf.decision_function(X).shape, clf.net_.outputs
    ((30, 3), 3)
    >>> clf.score(X, y)
    1.0
    >>> bool(np.allclose(clf.predict_proba(X).sum(axis=1), 1.0))
    True
    """

    _is_classifier = True

    def fit(self, X: Any, y: Targets = None) -> KronNetClassifier:
        """Trains the net on (X, y), from scratch unless `warm_start`.

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
        >>> clf.net_.outputs  # two classes: one logistic output
        1
        """
        return self._fit(X, y, incremental=False)  # type: ignore[no-any-return]

    def partial_fit(self, X: Any, y: Targets = None, classes: Any = None) -> KronNetClassifier:
        """One epoch (ceil(n / batch_size) steps) on (X, y), continuing the net.

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

    def _loss(self) -> str:
        return "logistic" if self.classes_.shape[0] == 2 else "cross_entropy"

    def _n_net_outputs(self) -> int:
        k = int(self.classes_.shape[0])
        return 1 if k == 2 else k

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

    def _encode(self, y: np.ndarray) -> np.ndarray:
        """0/1 for two classes, else the class's position in ``classes_``."""
        index = np.searchsorted(self.classes_, y).astype(np.float64)
        return index

    def _validation(self, data: KronPoints, y: np.ndarray) -> Tuple[float, Optional[np.ndarray]]:
        return float(accuracy_score(y, self._labels(self._outputs(data)))), None

    def _labels(self, out: np.ndarray) -> np.ndarray:
        if out.ndim == 1:
            labels: np.ndarray = self.classes_[(out > 0).astype(np.int64)]
            return labels
        picked: np.ndarray = self.classes_[np.argmax(out, axis=1)]
        return picked

    def decision_function(self, X: Any) -> np.ndarray:
        """The net's outputs: the log-odds of ``classes_[1]`` (two classes),
        or one logit per class.

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
        return self._outputs(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities: the softmax of the logits (the logistic
        function of the log-odds for two classes).

        Parameters
        ----------
        X : array_like of shape (n, d), KronData, PairData or list of factor arrays
            The points, in the form used for ``fit``.

        Returns
        -------
        ndarray of shape (n, n_classes)
            Rows sum to one; columns in the order of ``classes_``.

        Examples
        --------
        >>> import numpy as np
        >>> from kronnet.sklearn import KronNetClassifier
        >>> X = np.repeat(np.eye(2), 8, axis=0)
        >>> clf = KronNetClassifier(width=64, max_steps=100, random_state=0).fit(X, np.repeat([0, 1], 8))
        >>> proba = clf.predict_proba(X[[0, 8]])
        >>> proba.shape, bool(proba[0, 0] > 0.5 and proba[1, 1] > 0.5)
        ((2, 2), True)
        """
        proba: np.ndarray = np.exp(self.predict_log_proba(X))
        return proba

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The logarithms of :meth:`predict_proba`, computed stably.

        Parameters
        ----------
        X : array_like of shape (n, d), KronData, PairData or list of factor arrays
            The points, in the form used for ``fit``.

        Returns
        -------
        ndarray of shape (n, n_classes)
            log P(class | x), columns in the order of ``classes_``.

        Examples
        --------
        >>> import numpy as np
        >>> from kronnet.sklearn import KronNetClassifier
        >>> X = np.repeat(np.eye(2), 8, axis=0)
        >>> clf = KronNetClassifier(width=64, max_steps=100, random_state=0).fit(X, np.repeat([0, 1], 8))
        >>> bool(np.allclose(np.exp(clf.predict_log_proba(X)).sum(axis=1), 1.0))
        True
        """
        out = self._outputs(X)
        logits = np.stack([np.zeros_like(out), out], axis=1) if out.ndim == 1 else out
        top = logits.max(axis=1, keepdims=True)
        shifted = logits - top
        log_proba: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return log_proba

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
