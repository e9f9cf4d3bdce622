"""Every array handed to the Rust core gives bitwise the same result whatever
its memory layout: a field of a packed structured array (strides that are not
multiples of 8 bytes), negative strides, Fortran order, big-endian data,
read-only memory, non-contiguous slices, memory misaligned by one byte, and
int32/float32 inputs (compared against their float64 conversion).

Regression tests for "arrays whose strides are not multiples of 8 bytes were
read misaligned by Rust (predict differed by 2e307)" and "KronData read the
caller's arrays live". Also: the caller's arrays are never modified, their
flags never changed, and changing them afterwards changes nothing."""

import kronnet as kn
import numpy as np
import pytest

DIMS = (3, 5)
N = 10
WIDTH = 40
BATCHES = [[0, 1, 2, 3], [9, 9, 0, 4], [5, 6, 7, 8], [2], [1, 3, 5, 7]]


# -- layouts ------------------------------------------------------------------
#
# Each layout maps a C-contiguous array `x` (float64 or int64) to an array of
# the same shape and, for the value-preserving layouts, the same values, but
# laid out differently in memory. The dtype-changing layouts (int32, float32)
# are listed separately with the conversion their result must match.


def _structured(x):
    """A field of a packed structured array: for 8-byte values itemsize
    8 + 4 = 12 bytes, so the strides are (12 * cols, 12) — not multiples of
    8 (smaller values get a one-byte pad, so odd strides)."""
    pad = "<i4" if x.dtype.itemsize == 8 else "u1"
    st = np.dtype([("x", x.dtype.newbyteorder("<")), ("pad", pad)])
    s = np.zeros(x.size, dtype=st)
    s["pad"] = 0x5A
    s = s.reshape(x.shape)
    s["x"] = x
    out = s["x"]
    assert any(stride % 8 for stride in out.strides) or x.size <= 1
    return out


def _structured_big_endian(x):
    st = np.dtype([("pad", "u1"), ("x", x.dtype.newbyteorder(">"))])
    s = np.zeros(x.shape, dtype=st)
    s["x"] = x
    out = s["x"]
    assert not out.dtype.isnative
    return out


def _negative_rows(x):
    buf = np.ascontiguousarray(x[::-1])
    out = buf[::-1]
    assert out.strides[0] < 0 or x.shape[0] <= 1
    return out


def _negative_all(x):
    buf = np.ascontiguousarray(x[(slice(None, None, -1),) * x.ndim])
    return buf[(slice(None, None, -1),) * x.ndim]


def _fortran(x):
    out = np.asfortranarray(x)
    return out


def _big_endian(x):
    out = x.astype(x.dtype.newbyteorder(">"))
    assert not out.dtype.isnative
    return out


def _read_only(x):
    out = x.copy()
    out.flags.writeable = False
    return out


def _strided_cols(x):
    """Every other column (or element) of a wider buffer, garbage between."""
    if x.ndim == 1:
        buf = np.full(2 * x.shape[0], 7, dtype=x.dtype)
        buf[::2] = x
        return buf[::2]
    buf = np.full((x.shape[0], 2 * x.shape[1]), 7, dtype=x.dtype)
    buf[:, ::2] = x
    return buf[:, ::2]


def _strided_rows(x):
    buf = np.full((3 * x.shape[0],) + x.shape[1:], 7, dtype=x.dtype)
    buf[1::3] = x
    return buf[1::3]


def _misaligned(x):
    """The same values in memory starting one byte past an aligned address."""
    raw = bytearray(x.nbytes + 1)
    out = np.frombuffer(raw, dtype=x.dtype, offset=1, count=x.size).reshape(x.shape)
    out[...] = x
    assert not out.flags.aligned
    return out


def _misaligned_big_endian_read_only(x):
    be = x.dtype.newbyteorder(">")
    raw = bytearray(x.nbytes + 3)
    out = np.frombuffer(raw, dtype=be, offset=3, count=x.size).reshape(x.shape)
    out[...] = x
    out.flags.writeable = False
    assert not out.flags.aligned
    return out


def _transposed_view(x):
    """x as the transpose of a C array (so Fortran-ordered, but a view)."""
    return np.ascontiguousarray(x.T).T if x.ndim == 2 else x[::1]


LAYOUTS = {
    "structured": _structured,
    "structured_big_endian": _structured_big_endian,
    "negative_rows": _negative_rows,
    "negative_all": _negative_all,
    "fortran": _fortran,
    "big_endian": _big_endian,
    "read_only": _read_only,
    "strided_cols": _strided_cols,
    "strided_rows": _strided_rows,
    "misaligned": _misaligned,
    "misaligned_big_endian_read_only": _misaligned_big_endian_read_only,
    "transposed_view": _transposed_view,
}

# (name, float-data converter, expected float64 values after conversion)
CONVERSIONS = {
    "float32": (lambda x: x.astype(np.float32), lambda x: x.astype(np.float32).astype(np.float64)),
    "float32_structured": (
        lambda x: _structured(x.astype(np.float32)),
        lambda x: x.astype(np.float32).astype(np.float64),
    ),
    "float32_big_endian_misaligned": (
        lambda x: _misaligned(x.astype(">f4")),
        lambda x: x.astype(np.float32).astype(np.float64),
    ),
}

# Integer-valued inputs are converted to float64 exactly.
INT_CONVERSIONS = {
    "int32": lambda x: x.astype(np.int32),
    "int32_negative_strides": lambda x: _negative_all(x.astype(np.int32)),
    "int64_big_endian": lambda x: x.astype(">i8"),
    "int16_fortran": lambda x: np.asfortranarray(x.astype(np.int16)),
    "uint8_strided": lambda x: _strided_cols(x.astype(np.uint8)),
}


def _root_bytes(arr):
    """The whole memory the array is a view of (including gaps between its
    elements), as bytes."""
    root = arr
    while isinstance(root, np.ndarray) and root.base is not None:
        root = root.base
    if isinstance(root, np.ndarray):
        return root.tobytes(order="A")
    return bytes(memoryview(root).cast("B"))


def _snapshot(arr):
    """Everything about the caller's array that kronnet must not change."""
    return (
        arr.tobytes(),
        _root_bytes(arr),
        arr.flags.writeable,
        arr.flags.aligned,
        arr.flags.c_contiguous,
        arr.flags.f_contiguous,
        arr.strides,
        arr.dtype,
    )


def assert_untouched(arrays, snapshots):
    for arr, snap in zip(arrays, snapshots):
        assert _snapshot(arr) == snap


# -- data ---------------------------------------------------------------------


def base_arrays(integer=False):
    """C-contiguous float64 factors and targets; small integers if asked
    (exact in every dtype used), else random unit-ish floats."""
    rng = np.random.default_rng(42)
    if integer:
        factors = [rng.integers(0, 4, size=(N, d)).astype(np.float64) for d in DIMS]
        for u in factors:
            u[:, 0] += 1.0  # no zero rows
        y = rng.integers(-3, 4, size=N).astype(np.float64)
    else:
        factors = [rng.standard_normal((N, d)) for d in DIMS]
        factors = [u / np.linalg.norm(u, axis=1, keepdims=True) for u in factors]
        y = rng.standard_normal(N)
    return factors, y


def probe_arrays():
    rng = np.random.default_rng(7)
    return [rng.standard_normal((6, d)) / np.sqrt(d) for d in DIMS]


def run(factors, y, probe, backend="kron", index="auto", gram="auto", copy=True):
    """Everything the public API computes from these arrays."""
    data = kn.KronData(factors, y, copy=copy)
    net = kn.TwoLayerNet(DIMS, WIDTH, seed=3)
    out = {
        "factors": [np.array(u) for u in data.factors],
        "y": np.array(data.y),
        "dense": data.dense(),
        "predict0": net.predict(data),
        "predict0_list": net.predict(probe),
        "preacts0": net.preactivations(probe),
    }
    lr = kn.suggest_lr(net, 4) / 4
    tr = kn.Trainer(net, data, lr=lr, batch_size=4, backend=backend, index=index, gram=gram, seed=1)
    out["loss_start"] = tr.full_loss()
    out["steps"] = [tr.step(b) for b in BATCHES]
    out["fit"] = tr.fit(6, eval_every=2).loss
    out["loss_end"] = tr.full_loss()
    out["predict"] = net.predict(probe)
    out["predict_train"] = net.predict(data)
    out["preacts"] = net.preactivations(probe)
    out["W"] = net.dense_weights()
    out["alpha"] = net.coefficients[0].alpha
    return out, net


def assert_same(actual, expected):
    assert actual.keys() == expected.keys()
    for key in expected:
        a, e = actual[key], expected[key]
        if isinstance(e, list):
            assert len(a) == len(e), key
            for ai, ei in zip(a, e):
                assert np.array_equal(ai, ei), key
        else:
            assert np.array_equal(np.asarray(a), np.asarray(e)), f"{key}: {a} != {e}"


@pytest.fixture(scope="module")
def expected_float():
    factors, y = base_arrays()
    return run(factors, y, probe_arrays())[0]


@pytest.fixture(scope="module")
def expected_int():
    factors, y = base_arrays(integer=True)
    return run(factors, y, probe_arrays())[0]


# -- KronData, predict, preactivations, Trainer, dense_weights ---------------


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_of_factors_and_targets_gives_bitwise_same_results(layout, expected_float):
    factors, y = base_arrays()
    probe = probe_arrays()
    make = LAYOUTS[layout]
    fx, yx, px = [make(u) for u in factors], make(y), [make(u) for u in probe]
    for a, b in zip(fx + [yx] + px, factors + [y] + probe):
        assert np.array_equal(a, b)
    arrays = fx + [yx] + px
    snaps = [_snapshot(a) for a in arrays]
    actual, _ = run(fx, yx, px)
    assert_same(actual, expected_float)
    assert_untouched(arrays, snaps)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_with_copy_false_gives_bitwise_same_results(layout, expected_float):
    factors, y = base_arrays()
    probe = probe_arrays()
    make = LAYOUTS[layout]
    fx, yx, px = [make(u) for u in factors], make(y), [make(u) for u in probe]
    arrays = fx + [yx] + px
    snaps = [_snapshot(a) for a in arrays]
    actual, _ = run(fx, yx, px, copy=False)
    assert_same(actual, expected_float)
    assert_untouched(arrays, snaps)


@pytest.mark.parametrize("layout", ["structured", "negative_all", "misaligned", "big_endian", "strided_cols"])
@pytest.mark.parametrize(
    "backend,index,gram",
    [
        ("kron", "scan", "columns"),
        ("kron", "tree", "precomputed"),
        ("kron", "bits", "columns"),
        ("dense", "auto", "auto"),
    ],
)
def test_layouts_under_every_backend_and_index(layout, backend, index, gram):
    factors, y = base_arrays()
    probe = probe_arrays()
    expected, _ = run(factors, y, probe, backend=backend, index=index, gram=gram)
    make = LAYOUTS[layout]
    actual, _ = run(
        [make(u) for u in factors], make(y), [make(u) for u in probe], backend=backend, index=index, gram=gram
    )
    assert_same(actual, expected)


def test_each_layout_on_a_single_factor_alone():
    """Only one array has the odd layout, the others are plain: a mix-up of
    strides between arrays would show here."""
    factors, y = base_arrays()
    probe = probe_arrays()
    expected, _ = run(factors, y, probe)
    for make in (_structured, _misaligned, _negative_rows):
        for k in range(len(DIMS)):
            f = list(factors)
            f[k] = make(f[k])
            p = list(probe)
            p[1 - k] = make(p[1 - k])
            actual, _ = run(f, y, p)
            assert_same(actual, expected)


@pytest.mark.parametrize("name", sorted(CONVERSIONS))
def test_float32_inputs_match_their_float64_conversion(name):
    factors, y = base_arrays()
    probe = probe_arrays()
    convert, as64 = CONVERSIONS[name]
    expected, _ = run([as64(u) for u in factors], as64(y), [as64(u) for u in probe])
    fx, yx, px = [convert(u) for u in factors], convert(y), [convert(u) for u in probe]
    snaps = [_snapshot(a) for a in fx + [yx] + px]
    actual, _ = run(fx, yx, px)
    assert_same(actual, expected)
    assert_untouched(fx + [yx] + px, snaps)
    assert all(u.dtype == np.float64 for u in kn.KronData(fx, yx).factors)


@pytest.mark.parametrize("name", sorted(INT_CONVERSIONS))
def test_integer_inputs_are_converted_exactly(name, expected_int):
    factors, y = base_arrays(integer=True)
    convert = INT_CONVERSIONS[name]
    probe = probe_arrays()
    fx = [convert(u) for u in factors]
    yx = convert(y) if not name.startswith("uint") else y.copy()
    for a, b in zip(fx, factors):
        assert np.array_equal(a.astype(np.float64), b)
    actual, _ = run(fx, yx, probe)
    assert_same(actual, expected_int)


def test_kron_data_dense_matches_np_kron_for_every_layout():
    factors, y = base_arrays()
    expected = np.array([np.kron(factors[0][i], factors[1][i]) for i in range(N)])
    for make in LAYOUTS.values():
        data = kn.KronData([make(u) for u in factors], make(y))
        got = data.dense()
        assert np.allclose(got, expected, rtol=0, atol=1e-15)
        assert np.array_equal(got, kn.KronData(factors, y).dense())
        assert got.dtype == np.float64 and got.flags.c_contiguous


# -- batch indices ------------------------------------------------------------

INDEX_LAYOUTS = {
    "int64": lambda b: np.asarray(b, dtype=np.int64),
    "structured_int64": lambda b: _structured(np.asarray(b, dtype=np.int64)),
    "negative": lambda b: _negative_all(np.asarray(b, dtype=np.int64)),
    "big_endian": lambda b: np.asarray(b, dtype=">i8"),
    "misaligned": lambda b: _misaligned(np.asarray(b, dtype=np.int64)),
    "misaligned_big_endian_read_only": lambda b: _misaligned_big_endian_read_only(np.asarray(b, dtype=np.int64)),
    "strided": lambda b: _strided_cols(np.asarray(b, dtype=np.int64)),
    "read_only": lambda b: _read_only(np.asarray(b, dtype=np.int64)),
    "int32": lambda b: np.asarray(b, dtype=np.int32),
    "uint8": lambda b: np.asarray(b, dtype=np.uint8),
    "uint64": lambda b: np.asarray(b, dtype=np.uint64),
    "int16_structured": lambda b: _structured(np.asarray(b, dtype=np.int16)),
    "list": lambda b: list(b),
    "tuple_of_numpy_ints": lambda b: tuple(np.int32(i) for i in b),
}


def _train_with_batches(make, backend="kron", index="auto"):
    factors, y = base_arrays()
    data = kn.KronData(factors, y)
    net = kn.TwoLayerNet(DIMS, WIDTH, seed=3)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 4) / 4, batch_size=4, backend=backend, index=index)
    losses, batches = [], []
    for b in BATCHES:
        arr = make(b)
        snap = _snapshot(arr) if isinstance(arr, np.ndarray) else None
        losses.append(tr.step(arr))
        if snap is not None:
            assert _snapshot(arr) == snap
        batches.append(arr)
    return losses, tr.full_loss(), net.dense_weights(), net.predict(probe_arrays())


@pytest.mark.parametrize("backend,index", [("kron", "scan"), ("kron", "tree"), ("kron", "bits"), ("dense", "auto")])
def test_batch_index_layouts_give_bitwise_same_steps(backend, index):
    expected = _train_with_batches(INDEX_LAYOUTS["int64"], backend, index)
    for name, make in INDEX_LAYOUTS.items():
        actual = _train_with_batches(make, backend, index)
        assert actual[0] == expected[0], name
        assert actual[1] == expected[1], name
        assert np.array_equal(actual[2], expected[2]), name
        assert np.array_equal(actual[3], expected[3]), name


def test_take_with_index_layouts():
    factors, y = base_arrays()
    data = kn.KronData(factors, y)
    idx = [9, 0, 3, 3, 7]
    expected = data.take(np.array(idx))
    for name, make in INDEX_LAYOUTS.items():
        got = data.take(make(idx))
        for a, b in zip(got.factors, expected.factors):
            assert np.array_equal(a, b), name
        assert np.array_equal(got.y, expected.y), name


# -- AsyncTree ------------------------------------------------------------------


def _tree_values():
    rng = np.random.default_rng(5)
    vals = rng.standard_normal((6, 70))
    vals[:, ::9] = 0.25  # ties at tau
    return vals


def _tree_script(tree, make_vals, make_idx):
    """Updates and queries through arrays made by the layout functions."""
    rng = np.random.default_rng(11)
    out = []
    for t in range(6):
        cols = rng.choice(70, size=5 + t, replace=False)
        new = rng.standard_normal((6, cols.size))
        tree.update(make_idx(cols), make_vals(new))
        out.append(tree.query(t % 6, 0.25))
        out.extend(tree.query_many(make_idx(np.array([5, 0, 0, 3])), 0.25))
        out.extend(tree.query_many(make_idx(np.array([t % 6])), -np.inf))
    out.append(tree.values)
    return out


def _brute_script(values):
    rng = np.random.default_rng(11)
    values = values.copy()
    out = []
    for t in range(6):
        cols = rng.choice(70, size=5 + t, replace=False)
        values[:, cols] = rng.standard_normal((6, cols.size))
        out.append(np.flatnonzero(values[t % 6] > 0.25))
        out.extend(np.flatnonzero(values[r] > 0.25) for r in [5, 0, 0, 3])
        out.append(np.flatnonzero(values[t % 6] > -np.inf))
    out.append(values)
    return out


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_async_tree_layouts_match_brute_force(layout):
    vals = _tree_values()
    expected = _brute_script(vals)
    make = LAYOUTS[layout]
    arr = make(vals)
    snap = _snapshot(arr)
    tree = kn.AsyncTree(arr)
    assert _snapshot(arr) == snap
    if arr.flags.writeable:
        arr[...] = 123.0  # the tree copied its values
    idx_layout = {
        "structured": INDEX_LAYOUTS["structured_int64"],
        "misaligned": INDEX_LAYOUTS["misaligned"],
        "misaligned_big_endian_read_only": INDEX_LAYOUTS["misaligned_big_endian_read_only"],
        "big_endian": INDEX_LAYOUTS["big_endian"],
        "negative_all": INDEX_LAYOUTS["negative"],
        "strided_cols": INDEX_LAYOUTS["strided"],
        "read_only": INDEX_LAYOUTS["read_only"],
    }.get(layout, INDEX_LAYOUTS["int64"])
    got = _tree_script(tree, make, idx_layout)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert np.array_equal(g, e)


@pytest.mark.parametrize("name", ["int32", "uint8", "int16_structured", "uint64", "list"])
def test_async_tree_integer_indices_and_values(name):
    vals = np.arange(-20, 22, dtype=np.int32).reshape(3, 14)
    tree = kn.AsyncTree(vals)
    make = INDEX_LAYOUTS[name]
    tree.update(make([2, 13, 0]), np.full((3, 3), 50, dtype=np.int16))
    v = vals.astype(np.float64)
    v[:, [2, 13, 0]] = 50.0
    got = tree.query_many(make([2, 0, 1]), 0)
    for g, r in zip(got, [2, 0, 1]):
        assert np.array_equal(g, np.flatnonzero(v[r] > 0))
    assert np.array_equal(tree.values, v)


# -- the caller's arrays: never modified, never read live ---------------------


def test_callers_arrays_and_flags_are_never_changed():
    factors, y = base_arrays()
    probe = probe_arrays()
    arrays = factors + [y] + probe
    snaps = [_snapshot(a) for a in arrays]
    for copy in (True, False):
        data = kn.KronData(factors, y, copy=copy)
        net = kn.TwoLayerNet(DIMS, WIDTH, seed=3)
        tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 4) / 4, batch_size=4)
        tr.fit(5)
        tr.step(np.array([1, 2]))
        tr.full_loss()
        net.predict(probe)
        net.predict(data)
        net.preactivations(probe)
        net.dense_weights()
        data.dense()
        data.normalized()
        data.take([0, 1])
        assert_untouched(arrays, snaps)
        assert all(a.flags.writeable for a in arrays)
        # The data object's own arrays are read-only views.
        assert not any(u.flags.writeable for u in data.factors)
        assert not data.y.flags.writeable


def test_mutating_callers_arrays_after_training_changes_nothing():
    factors, y = base_arrays()
    probe = probe_arrays()
    expected, _ = run([u.copy() for u in factors], y.copy(), probe)
    for make in (lambda x: x.copy(), _structured, _fortran, _misaligned, _negative_rows):
        fx, yx = [make(u.copy()) for u in factors], make(y.copy())
        data = kn.KronData(fx, yx)
        net = kn.TwoLayerNet(DIMS, WIDTH, seed=3)
        tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 4) / 4, batch_size=4, seed=1)
        steps = [tr.step(b) for b in BATCHES]
        for u in fx:
            u[...] = 1e3
        yx[...] = -1e50
        fit = tr.fit(6, eval_every=2).loss
        assert steps == expected["steps"]
        assert np.array_equal(fit, expected["fit"])
        assert tr.full_loss() == expected["loss_end"]
        assert np.array_equal(net.predict(probe), expected["predict"])
        assert np.array_equal(net.predict(data), expected["predict_train"])
        assert np.array_equal(net.dense_weights(), expected["W"])
        assert np.array_equal(data.factors[0], factors[0])
        assert np.array_equal(data.y, y)


def test_mutating_probe_arrays_after_predict_changes_nothing():
    factors, y = base_arrays()
    data = kn.KronData(factors, y)
    net = kn.TwoLayerNet(DIMS, WIDTH, seed=3)
    kn.Trainer(net, data, lr=kn.suggest_lr(net, 4) / 4, batch_size=4).fit(4)
    probe = probe_arrays()
    first = net.predict(probe)
    pre = net.preactivations(probe)
    for u in probe:
        u[...] = 0.0
    assert np.array_equal(first, net.predict(probe_arrays()))
    assert np.array_equal(pre, net.preactivations(probe_arrays()))


def test_copy_false_hands_over_only_already_owned_layouts():
    """copy=False may take over a float64 aligned C array without a copy, but
    never alters its flags; every other layout is copied."""
    factors, y = base_arrays()
    data = kn.KronData(factors, y, copy=False)
    assert all(u.flags.writeable for u in factors) and y.flags.writeable
    for make in LAYOUTS.values():
        fx = [make(u) for u in factors]
        data = kn.KronData(fx, make(y), copy=False)
        for u in data.factors:
            assert u.flags.c_contiguous and u.flags.aligned and u.dtype == np.dtype(np.float64)
            assert not any(np.shares_memory(u, f) for f in fx)
