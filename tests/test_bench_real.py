"""`kronnet bench real`'s scoring helpers against brute force (the
benchmark itself needs the MovieLens download and minutes: it is run by
hand, and its figures are in docs/gallery.md)."""

import itertools

import numpy as np
import pytest

pytest.importorskip("sklearn")
from kronnet.cli.real import KERNEL_TARGETS, concordance_index, ndcg_at, synthetic_kernels  # noqa: E402


def brute_cindex(truth, pred):
    num = den = 0.0
    for i, j in itertools.permutations(range(len(truth)), 2):
        if truth[i] > truth[j]:
            den += 1
            num += 1.0 if pred[i] > pred[j] else 0.5 if pred[i] == pred[j] else 0.0
    return num / den


def test_concordance_index_is_the_brute_force_count():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=60).astype(float)  # ties in the targets are skipped
    pred = np.round(truth + rng.normal(size=60), 1)  # ties in the predictions count one half
    assert concordance_index(truth, pred) == pytest.approx(brute_cindex(truth, pred), rel=1e-12)
    assert concordance_index(truth, truth) == 1.0 and concordance_index(truth, -truth) == 0.0


def test_ndcg_is_one_for_the_true_order_and_below_for_another():
    users = np.array([0, 0, 0, 1, 1])
    truth = np.array([5.0, 3.0, 1.0, 2.0, 4.0])
    assert ndcg_at(10, users, truth, truth) == pytest.approx(1.0)
    assert ndcg_at(10, users, truth, -truth) < 1.0


@pytest.mark.parametrize("target", KERNEL_TARGETS)
def test_the_synthetic_kernels_are_psd_and_the_pairs_distinct(target):
    kernels, pairs, y, _ = synthetic_kernels(target=target)
    for K in kernels:
        np.testing.assert_allclose(K, K.T)
        assert np.linalg.eigvalsh(K).min() > -1e-10
    assert len({tuple(p) for p in pairs}) == len(pairs) == len(y)
    assert np.isfinite(y).all()
    # Every set observes the same pairs of the same entities.
    same_kernels, same_pairs, _, _ = synthetic_kernels()
    np.testing.assert_array_equal(pairs, same_pairs)
    np.testing.assert_array_equal(kernels[0], same_kernels[0])
    if target != "interaction":
        # A standardized signal plus noise of sd 0.3.
        assert abs(y.mean()) < 0.05 and 1.0 < y.var() < 1.2


def test_a_kernel_set_of_other_sizes_and_no_noise_is_the_raw_signal():
    kernels, pairs, y, z1 = synthetic_kernels(seed=3, target="sign", entities=(20, 15), gamma=1.0, noise=0.0)
    assert kernels[0].shape == (20, 20) and kernels[1].shape == (15, 15) and len(pairs) == 120
    # sign(z_a1 z_b1) + 0.3 z_a2, unstandardized.
    np.testing.assert_allclose(np.abs(y - 0.3 * z1[pairs[:, 0], 1]), 1.0, rtol=0, atol=1e-12)


def test_an_unknown_kernel_target_is_refused():
    with pytest.raises(ValueError, match="target must be one of"):
        synthetic_kernels(target="xor")
