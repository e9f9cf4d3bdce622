"""The scikit-learn estimators with ``comm=`` under ``mpiexec -n K`` (run by
tests/test_mpi.py): every rank fits the same estimator sharded over
COMM_WORLD and alone (``comm=None``), and the two must agree bit for bit —
loss curves, validation scores, stopping epoch, predictions."""

import copy
import pickle

import numpy as np
import pytest
from kronnet.sklearn import KronNetClassifier, KronNetRegressor
from sklearn.base import clone

MPI = pytest.importorskip("mpi4py.MPI")
COMM = MPI.COMM_WORLD
# Short budgets on purpose: the runs are compared, not judged.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def bitwise(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def same_everywhere(x):
    return all(bitwise(x, y) for y in COMM.allgather(np.asarray(x)))


def problem(classes=None, n=240, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 16)) / 4
    y = np.sin(3 * X[:, 0]) + X[:, 1]
    if classes is not None:
        y = np.digitize(y, np.quantile(y, np.linspace(0, 1, classes + 1)[1:-1]))
    return X, y


def agree(sharded, alone, X):
    assert sharded.n_iter_ == alone.n_iter_ and sharded.t_ == alone.t_
    assert bitwise(sharded.loss_curve_, alone.loss_curve_)
    if alone.validation_scores_ is not None:
        assert bitwise(sharded.validation_scores_, alone.validation_scores_)
    got = sharded.decision_function(X) if hasattr(alone, "classes_") else sharded.predict(X)
    want = alone.decision_function(X) if hasattr(alone, "classes_") else alone.predict(X)
    assert bitwise(got, want) and same_everywhere(got)
    assert bitwise(sharded.predict(X), alone.predict(X))


@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_sharded_regressor_is_the_single_process_one(early_stopping):
    X, y = problem()
    params = dict(width=300, max_steps=600, random_state=3, early_stopping=early_stopping, n_iter_no_change=3)
    sharded = KronNetRegressor(**params, comm=COMM).fit(X, y)
    alone = KronNetRegressor(**params).fit(X, y)
    assert sharded.net_.sharded and not alone.net_.sharded
    agree(sharded, alone, X)
    assert sharded.score(X, y) == alone.score(X, y)


def test_a_sharded_regressor_holding_out_entities_is_the_single_process_one():
    rng = np.random.default_rng(2)
    tables = [np.column_stack([rng.normal(size=(20, 3)), np.ones(20)]), rng.normal(size=(15, 3))]
    pairs = np.array([(a, b) for a in range(20) for b in range(15)])
    y = np.tanh(tables[0][pairs[:, 0], 0] * tables[1][pairs[:, 1], 0]) + tables[0][pairs[:, 0], 1]
    params = dict(tables=tables, width=300, max_steps=600, random_state=3, n_iter_no_change=3, validation_entities=0)
    sharded = KronNetRegressor(**params, comm=COMM).fit(pairs, y)
    alone = KronNetRegressor(**params).fit(pairs, y)
    agree(sharded, alone, pairs)


def test_a_sharded_classifier_trains_every_class_alike_and_continues_alike():
    X, y = problem(classes=3)
    params = dict(width=200, max_steps=300, random_state=5, init="kron", init_rank=2, early_stopping=True)
    sharded = KronNetClassifier(**params, comm=COMM).fit(X, y)
    alone = KronNetClassifier(**params).fit(X, y)
    assert sharded.net_.sharded and sharded.net_.outputs == 3
    agree(sharded, alone, X)
    # partial_fit on new points: new sharded trainers on the kept shards.
    X2, y2 = problem(classes=3, n=120, seed=1)
    for est in (sharded, alone):
        est.partial_fit(X2, y2)
        est.partial_fit(X2, y2)
    agree(sharded, alone, X2)


def test_clone_keeps_the_communicator_and_pickle_gives_a_single_process_estimator():
    X, y = problem()
    est = KronNetRegressor(width=256, max_steps=200, random_state=0, comm=COMM)
    assert clone(est).get_params()["comm"] is COMM
    est.fit(X, y)
    twin = copy.deepcopy(est.net_)  # local: this rank's shard, still sharded
    points, _ = est._points(X[:7], None, reset=False)
    assert twin.sharded and bitwise(twin.predict(points), est.net_.predict(points))
    restored = pickle.loads(pickle.dumps(est))  # collective: gathers the nets
    assert restored.comm is None and not restored.net_.sharded
    assert bitwise(restored.predict(X), est.predict(X))
