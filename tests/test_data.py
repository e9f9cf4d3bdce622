"""The data layer against independent references (np.kron row by row)."""

import kronnet as kn
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import kron_rows


@pytest.mark.parametrize("dims", [(2, 17), (4, 4), (3, 1, 5)])
def test_generated_data_is_unit_norm_and_densifies_like_np_kron(dims):
    data = kn.make_kronecker_data(9, dims=dims, seed=1)
    assert data.n == 9 and data.dims == dims and data.p == len(dims)
    assert data.d == int(np.prod(dims))
    for u, dk in zip(data.factors, dims):
        assert u.shape == (9, dk) and u.dtype == np.float64
        np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(data.norms(), 1.0, rtol=1e-12)
    dense = data.dense()
    np.testing.assert_array_equal(dense.shape, (9, data.d))
    np.testing.assert_allclose(dense, kron_rows(data.factors), rtol=0, atol=1e-15)


def test_generation_is_seeded():
    a = kn.make_kronecker_data(20, dims=(3, 5), seed=7)
    b = kn.make_kronecker_data(20, dims=(3, 5), seed=7)
    c = kn.make_kronecker_data(20, dims=(3, 5), seed=8)
    for u, v in zip(a.factors, b.factors):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.y, c.y)


def test_labels():
    teacher = kn.make_kronecker_data(400, dims=(8, 8), seed=0)
    assert abs(teacher.y.mean()) < 1e-12 and teacher.y.std() == pytest.approx(1.0, rel=1e-12)
    signs = kn.make_kronecker_data(400, dims=(8, 8), seed=0, labels="sign")
    assert set(np.unique(signs.y)) == {-1.0, 1.0}
    noisy = kn.make_kronecker_data(400, dims=(8, 8), seed=0, noise=0.5)
    assert 0.3 < np.std(noisy.y - teacher.y) < 0.7


def test_user_data_is_converted_to_float64_whatever_its_layout():
    rng = np.random.default_rng(0)
    ints = rng.integers(-5, 5, size=(6, 3))
    f32 = rng.standard_normal((6, 4)).astype(np.float32)
    strided = rng.standard_normal((12, 4))[::2]  # non-contiguous rows
    transposed = rng.standard_normal((2, 6)).T  # Fortran order
    data = kn.KronData([ints, f32, strided, transposed], y=list(range(6)))
    for got, want in zip(data.factors, [ints, f32, strided, transposed]):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want.astype(np.float64))
    assert data.y.dtype == np.float64 and data.dims == (3, 4, 4, 2)
    np.testing.assert_allclose(data.dense(), kron_rows([np.asarray(f, dtype=np.float64) for f in data.factors]))
    # The same points, trained on, agree whatever layout they came in.
    net = kn.TwoLayerNet(data.dims, 16, seed=0)
    contiguous = kn.KronData([np.ascontiguousarray(f) for f in data.factors])
    np.testing.assert_array_equal(net.predict(data), net.predict(contiguous))


def test_stored_arrays_are_read_only_and_y_optional():
    data = kn.KronData([np.ones((3, 2)), np.ones((3, 2))])
    assert data.y is None
    with pytest.raises(ValueError):
        data.factors[0][0, 0] = 5.0


def test_take_and_normalized():
    data = kn.make_kronecker_data(10, dims=(3, 4), seed=2)
    sub = data.take([4, 4, 0])
    assert sub.n == 3
    np.testing.assert_array_equal(sub.factors[1][0], data.factors[1][4])
    np.testing.assert_array_equal(sub.y, data.y[[4, 4, 0]])
    scaled = kn.KronData([f * 3.0 for f in data.factors], data.y)
    np.testing.assert_allclose(scaled.norms(), 9.0)
    np.testing.assert_allclose(scaled.normalized().dense(), data.dense(), atol=1e-15)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 5), min_size=2, max_size=4),
    st.integers(1, 6),
    st.integers(0, 2**32 - 1),
)
def test_dense_matches_np_kron_for_random_shapes(dims, n, seed):
    rng = np.random.default_rng(seed)
    factors = [rng.standard_normal((n, d)) for d in dims]
    data = kn.KronData(factors)
    np.testing.assert_allclose(data.dense(), kron_rows(factors), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(data.normalized().norms(), 1.0, rtol=1e-12)
