"""Files written by earlier kronnet versions load and predict bitwise as
they did when written, and their checkpoints continue bitwise.

Prediction through the training points (the only path 0.1.0 had) gives
the written bits; nets that now fold their weights for prediction
(``TwoLayerNet.folds``) give them to rounding, 1e-12 relative.

tests/data/golden was written by kronnet 0.1.0 (file format version 2, plus
a version-1 copy) with tools/make_golden_files.py; the expected values were
computed by that same version, not by the code under test.
"""

from __future__ import annotations

import os
import shutil

import kronnet as kn
import numpy as np
import pytest
from kronnet.model import net as net_module

HERE = os.path.join(os.path.dirname(__file__), "data", "golden")


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(HERE, "expected.npz")) as z:
        return dict(z)


@pytest.fixture()
def golden(tmp_path):
    """A private copy of the files (a restore must not write next to them)."""
    dst = tmp_path / "golden"
    shutil.copytree(HERE, dst)
    return dst


@pytest.fixture()
def same_as_written(monkeypatch):
    """A check that `net` predicts `want` for `points`: bitwise through the
    training points, to 1e-12 relative through folded weights."""

    def check(net, points, want):
        default = net.predict(points)
        with monkeypatch.context() as m:
            m.setattr(net_module, "FOLD_BYTES", 0)
            assert np.array_equal(net.predict(points), want)
        scale = np.max(np.abs(want))
        assert np.max(np.abs(default - want)) <= 1e-12 * scale

    return check


def query_kron():
    with np.load(os.path.join(HERE, "query_kron.npz")) as z:
        return kn.KronData([z["arr_0"], z["arr_1"]])


@pytest.mark.parametrize("name", ["kron_gaussian", "kron_gaussian_v1"])
def test_kron_nets_predict_bitwise_as_written(golden, expected, name, same_as_written):
    net = kn.load(golden / f"{name}.kronnet")
    assert len(net.coefficients) == 2
    same_as_written(net, query_kron(), expected[name])


def test_pair_net_with_kron_init_predicts_bitwise(golden, expected, same_as_written):
    net = kn.load(golden / "pairs_kron_init.kronnet")
    assert net.init == "kron" and net.init_rank == 3
    block = net.coefficients[0].data
    test = kn.PairData(block.tables, np.load(golden / "query_pairs.npy"))
    same_as_written(net, test, expected["pairs_kron_init"])


@pytest.mark.parametrize("name", ["rank3", "dense"])
def test_checkpoints_continue_bitwise(golden, expected, name, same_as_written):
    tr = kn.Trainer.restore(golden / f"{name}.ckpt")
    assert np.array_equal(
        tr.fit(expected[f"{name}_checkpoint_losses"].shape[0]).loss, expected[f"{name}_checkpoint_losses"]
    )
    points = tr.data if name == "rank3" else query_kron()
    same_as_written(tr.net, points, expected[f"{name}_after"])


def test_sharded_files_load_in_one_process(golden, same_as_written):
    with np.load(golden / "expected_sharded.npz") as z:
        losses, after = z["losses"], z["after"]
    tr = kn.Trainer.restore(golden / "sharded.ckpt")
    assert np.array_equal(tr.fit(losses.shape[0]).loss, losses)
    same_as_written(tr.net, tr.data, after)
    net = kn.load(golden / "sharded.kronnet")
    assert net.width == 256 and not net.sharded
