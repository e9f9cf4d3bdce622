"""The MovieLens 100k loader on a miniature fake ml-100k folder (the real
data is never needed, nor committed): pairs and targets in file order,
tables built from the training split only, side features for entities
never rated in training, unit rows, checksums, and the refusals."""

import hashlib
import os
import pathlib

import kronnet as kn
import numpy as np
import pytest
from kronnet.datasets import ChecksumError, movielens_100k
from kronnet.datasets import movielens as ml

GENRES = ["unknown", "Action", "Comedy"]
OCCUPATIONS = ["artist", "none", "student"]
# id|age|gender|occupation|zip
USERS = [
    (1, 24, "M", "student"),
    (2, 53, "F", "none"),
    (3, 33, "M", "artist"),
    (4, 19, "F", "student"),
    (5, 41, "M", "none"),
    (6, 60, "F", "artist"),  # never rated in u1.base
]
# id, title, release date, genre flags
ITEMS = [
    (1, "Toy Story (1995)", "01-Jan-1995", (0, 0, 1)),
    (2, "Misérables, Les (1995)", "01-Jan-1995", (0, 1, 1)),  # latin-1 in the file
    (3, "unknown", "", (1, 0, 0)),  # no release date
    (4, "Heat (1995)", "15-Dec-1995", (0, 1, 0)),
    (5, "Casablanca (1942)", "01-Jan-1942", (0, 0, 0)),  # never rated in u1.base
]
# user, item, rating, timestamp: every user but 6 and every item but 5 in training
BASE = [
    (1, 1, 5, 881250949),
    (2, 2, 3, 891717742),
    (1, 3, 4, 878887116),
    (3, 1, 2, 880606923),
    (4, 4, 1, 886397596),
    (5, 2, 4, 884182806),
    (3, 4, 3, 881171488),
    (2, 1, 4, 891628467),
    (5, 3, 2, 886324817),
    (4, 1, 5, 883603013),
]
TEST = [
    (6, 1, 4, 881250950),
    (1, 5, 3, 881250951),
    (2, 4, 5, 881250952),
    (6, 5, 1, 881250953),
]
RANK = 2


def write_folder(root, base=BASE, test=TEST, name="ml-100k"):
    """A miniature ml-100k folder in GroupLens's formats, split u1."""
    folder = root / name
    folder.mkdir()
    (folder / "u.genre").write_bytes("".join(f"{g}|{k}\n" for k, g in enumerate(GENRES)).encode() + b"\n")
    (folder / "u.occupation").write_bytes("".join(f"{o}\n" for o in OCCUPATIONS).encode())
    (folder / "u.user").write_bytes("".join(f"{i}|{a}|{g}|{o}|55455\n" for i, a, g, o in USERS).encode())
    lines = [
        f"{i}|{t}|{d}||http://us.imdb.com/M/title-exact?{i}|" + "|".join(map(str, flags)) + "\n"
        for i, t, d, flags in ITEMS
    ]
    (folder / "u.item").write_bytes("".join(lines).encode("latin-1"))
    for fname, rows in (("u1.base", base), ("u1.test", test)):
        (folder / fname).write_bytes("".join("\t".join(map(str, r)) + "\n" for r in rows).encode())
    return folder


def load(folder, **kwargs):
    kwargs.setdefault("rank", RANK)
    kwargs.setdefault("verify", False)
    return movielens_100k(folder, **kwargs)


def unit(rows):
    rows = np.asarray(rows, dtype=float)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def standardised(x):
    x = np.asarray(x, dtype=float)
    known = ~np.isnan(x)
    z = (x - x[known].mean()) / x[known].std()
    return np.where(known, z, 0.0)


def user_side():
    """Independent user side features: age z-score, gender (M, F), occupation one-hot."""
    age = standardised([u[1] for u in USERS])
    out = np.zeros((len(USERS), 3 + len(OCCUPATIONS)))
    for k, (_, _, gender, occupation) in enumerate(USERS):
        out[k, 0] = age[k]
        out[k, 1 if gender == "M" else 2] = 1.0
        out[k, 3 + OCCUPATIONS.index(occupation)] = 1.0
    return out


def item_side():
    """Independent item side features: genre flags, release year z-score (0 if unknown)."""
    years = standardised([float(d[-4:]) if d else np.nan for _, _, d, _ in ITEMS])
    return np.array([list(flags) + [years[k]] for k, (_, _, _, flags) in enumerate(ITEMS)], dtype=float)


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path)


def test_pairs_and_targets_follow_the_file_rows(folder):
    train, test = load(folder)
    assert isinstance(train, kn.PairData) and isinstance(test, kn.PairData)
    for data, rows in ((train, BASE), (test, TEST)):
        rows = np.array(rows)
        np.testing.assert_array_equal(data.pairs, rows[:, :2] - 1)
        np.testing.assert_array_equal(data.y, rows[:, 2].astype(float))
        assert data.y.dtype == np.float64
        assert data.n_entities == (len(USERS), len(ITEMS))


def test_table_shapes_per_feature_choice(folder):
    side_u, side_i = 3 + len(OCCUPATIONS), len(GENRES) + 1
    cases = {
        ("bias", "effects", "side", "ratings"): (2 + side_u + RANK, 2 + side_i + RANK),
        ("bias", "side", "ratings"): (1 + side_u + RANK, 1 + side_i + RANK),
        ("effects",): (1, 1),
        ("bias",): (1, 1),
        ("side",): (side_u, side_i),
        ("ratings",): (RANK, RANK),
        ("ratings", "bias"): (1 + RANK, 1 + RANK),
    }
    for features, dims in cases.items():
        train, test = load(folder, features=features, scale="rows")
        assert train.dims == test.dims == dims
        assert [t.shape[0] for t in train.tables] == [len(USERS), len(ITEMS)]
        for table in train.tables:
            np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, rtol=0, atol=1e-14)
        # "table": one factor per table, rows of root mean square norm 1.
        by_table, _ = load(folder, features=features)
        for table, rows in zip(by_table.tables, train.tables):
            np.testing.assert_allclose(np.sqrt(np.mean(np.sum(table**2, axis=1))), 1.0, rtol=1e-14)
            norms = np.linalg.norm(table, axis=1, keepdims=True)
            np.testing.assert_allclose(table / np.where(norms > 0, norms, 1), np.where(norms > 0, rows, 0), atol=1e-14)
        # Train and test share one set of tables.
        for a, b in zip(train.tables, test.tables):
            np.testing.assert_array_equal(a, b)


def test_blocks_are_concatenated_in_a_fixed_order(folder):
    a, _ = load(folder, features=("ratings", "side", "bias"), scale="rows")
    b, _ = load(folder, features=["bias", "side", "ratings"], scale="rows")
    for x, y in zip(a.tables, b.tables):
        np.testing.assert_array_equal(x, y)
    # bias first: a constant column, equal to 1 / ||row|| once normalised.
    users = b.tables[0]
    np.testing.assert_allclose(users[:, 0] * np.linalg.norm(users / users[:, :1], axis=1), 1.0)


def test_side_features_match_an_independent_computation(folder):
    train, _ = load(folder, features=("side",), scale="rows")
    np.testing.assert_allclose(train.tables[0], unit(user_side()), rtol=0, atol=1e-14)
    np.testing.assert_allclose(train.tables[1], unit(item_side()), rtol=0, atol=1e-14)


def test_entities_unseen_in_training_get_side_features(folder):
    train, test = load(folder, features=("bias", "side", "ratings"), scale="rows")
    users, items = train.tables
    side_u, side_i = 3 + len(OCCUPATIONS), len(GENRES) + 1
    for table, row, side in ((users, 5, user_side()[5]), (items, 4, item_side()[4])):
        # [bias, side, ratings]: the ratings block is exactly zero, the rest
        # is [1, side] normalised.
        np.testing.assert_array_equal(table[row, -RANK:], 0.0)
        np.testing.assert_allclose(table[row, : 1 + len(side)], unit([np.r_[1.0, side]])[0], atol=1e-14)
    assert side_u + 1 + RANK == users.shape[1] and side_i + 1 + RANK == items.shape[1]
    # The test pairs of unseen entities are ordinary points.
    assert np.all(test.norms() > 0.999)


def test_ratings_block_is_the_truncated_svd_of_the_training_matrix(folder):
    """Sign-free: the normalised user and item rows' inner products are those of
    U_r S_r V_rᵀ's scaled factors, for entities rated in training."""
    train, _ = load(folder, features=("ratings",), scale="rows")
    rows = np.array(BASE)
    y = rows[:, 2].astype(float)
    b_u, b_i = exact_effects()
    M = np.zeros((len(USERS), len(ITEMS)))
    M[rows[:, 0] - 1, rows[:, 1] - 1] = y - y.mean() - b_u[rows[:, 0] - 1] - b_i[rows[:, 1] - 1]
    U, S, Vt = np.linalg.svd(M)
    w = np.sqrt(S[:RANK] / S[0])
    users = np.sqrt(len(USERS)) * U[:, :RANK] * w
    items = np.sqrt(len(ITEMS)) * Vt[:RANK].T * w
    seen_u, seen_i = np.arange(5), np.arange(4)
    want = (users @ items.T)[np.ix_(seen_u, seen_i)]
    want /= np.outer(np.linalg.norm(users[seen_u], axis=1), np.linalg.norm(items[seen_i], axis=1))
    got = (train.tables[0] @ train.tables[1].T)[np.ix_(seen_u, seen_i)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # The first component has unit mean square before normalisation.
    np.testing.assert_allclose(np.mean(users[:, 0] ** 2), 1.0)


def exact_effects(penalty=10.0):
    """The main effects' ridge problem solved directly: minimize
    Σ (r − μ − b_u − b_i)² + penalty (Σ b_u² + Σ b_i²), μ the mean rating."""
    rows = np.array(BASE)
    u, i, y = rows[:, 0] - 1, rows[:, 1] - 1, rows[:, 2].astype(float)
    nu, ni = len(USERS), len(ITEMS)
    A = np.zeros((len(rows), nu + ni))
    A[np.arange(len(rows)), u] = 1.0
    A[np.arange(len(rows)), nu + i] = 1.0
    b = np.linalg.solve(A.T @ A + penalty * np.eye(nu + ni), A.T @ (y - y.mean()))
    return b[:nu], b[nu:]


def test_effects_block_is_the_ridge_main_effect(folder):
    train, _ = load(folder, features=("effects",), scale="table")
    b_u, b_i = exact_effects()
    for table, b in zip(train.tables, (b_u, b_i)):
        want = b / np.sqrt(np.mean(b**2))  # "table" scaling of a one-column table
        np.testing.assert_allclose(table[:, 0], want, rtol=0, atol=1e-10)
    assert b_u[5] == 0.0 and b_i[4] == 0.0  # never rated in training


def test_a_bad_scale_is_refused(folder):
    with pytest.raises(kn.ArgumentError, match="scale"):
        load(folder, scale="columns")


def test_a_zero_row_without_bias_becomes_the_uniform_unit_vector(folder):
    train, _ = load(folder, features=("ratings",), scale="rows")
    np.testing.assert_allclose(train.tables[0][5], np.full(RANK, RANK**-0.5), rtol=0, atol=1e-15)
    np.testing.assert_allclose(train.tables[1][4], np.full(RANK, RANK**-0.5), rtol=0, atol=1e-15)


def test_features_come_from_the_training_split_only(tmp_path):
    for sub in "abc":
        (tmp_path / sub).mkdir()
    reference, _ = load(write_folder(tmp_path / "a"))
    changed = [(u, i, 6 - r if k == 1 else r, t) for k, (u, i, r, t) in enumerate(TEST)]
    changed += [(3, 5, 5, 881250999), (6, 2, 1, 881250998)]  # new test pairs of unseen entities too
    train, test = load(write_folder(tmp_path / "b", test=changed))
    for a, b in zip(reference.tables, train.tables):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(reference.pairs, train.pairs)
    np.testing.assert_array_equal(reference.y, train.y)
    assert reference.fingerprint == train.fingerprint
    assert test.n == len(changed) and test.y[1] == 6 - TEST[1][2]
    # Whereas a changed training rating does change the ratings features.
    base = [(u, i, 6 - r if k == 0 else r, t) for k, (u, i, r, t) in enumerate(BASE)]
    other, _ = load(write_folder(tmp_path / "c", base=base))
    assert not np.array_equal(other.tables[0], reference.tables[0])


def rows_of(data):
    return [(int(u) + 1, int(i) + 1, int(r)) for (u, i), r in zip(data.pairs, data.y)]


def test_a_validation_split_is_held_out_before_the_tables_are_built(tmp_path):
    """With `validation`, a share of the base file leaves before any table is
    built: the tables are those of a base file without those ratings, and
    changing the held-out ratings changes nothing else."""
    for sub in "abcd":
        (tmp_path / sub).mkdir()
    train, val, test = load(write_folder(tmp_path / "a"), validation=0.3, seed=5)
    base = [(u, i, r) for u, i, r, _ in BASE]
    assert (train.n, val.n) == (7, 3)
    # A partition of the base file, each part in the file's row order.
    assert sorted(rows_of(train) + rows_of(val)) == sorted(base)
    for part in (train, val):
        assert [base.index(row) for row in rows_of(part)] == sorted(base.index(row) for row in rows_of(part))
    # The test file is read as without a validation split.
    _, plain_test = load(write_folder(tmp_path / "b"))
    np.testing.assert_array_equal(test.pairs, plain_test.pairs)
    np.testing.assert_array_equal(test.y, plain_test.y)
    # The tables: bitwise those of a base file holding the training rows only.
    kept = [row for row in BASE if (row[0], row[1], row[2]) in rows_of(train)]
    reference, _ = load(write_folder(tmp_path / "c", base=kept))
    for data in (train, val, test):
        for a, b in zip(data.tables, reference.tables):
            np.testing.assert_array_equal(a, b)
    # New ratings for the held-out pairs: the same training set and tables.
    held = {(u, i) for u, i, _ in rows_of(val)}
    changed = [(u, i, 6 - r if (u, i) in held else r, t) for u, i, r, t in BASE]
    train2, val2, _ = load(write_folder(tmp_path / "d", base=changed), validation=0.3, seed=5)
    assert train2.fingerprint == train.fingerprint
    np.testing.assert_array_equal(val2.pairs, val.pairs)
    np.testing.assert_array_equal(val2.y, 6 - val.y)


def test_the_validation_draw_follows_the_seed(folder):
    _, a, _ = load(folder, validation=0.5, seed=1)
    _, b, _ = load(folder, validation=0.5, seed=1)
    np.testing.assert_array_equal(a.pairs, b.pairs)
    draws = {tuple(map(tuple, load(folder, validation=0.5, seed=s)[1].pairs)) for s in range(6)}
    assert len(draws) > 1
    assert all(len(d) == 5 for d in draws)


def test_bad_validation_arguments_are_refused(folder):
    for kwargs in (
        {"validation": 1.0},
        {"validation": -0.1},
        {"validation": float("nan")},
        {"validation": 0.01},
        {"seed": -1},
    ):
        with pytest.raises(kn.ArgumentError) as info:
            load(folder, **kwargs)
        assert info.value.arg == next(iter(kwargs)), kwargs
    for kwargs in ({"validation": "0.1"}, {"seed": 1.5}):
        with pytest.raises(kn.ArgumentTypeError) as info:
            load(folder, **kwargs)
        assert info.value.arg == next(iter(kwargs)), kwargs


def test_u_data_is_not_needed_and_paths_may_be_pathlib_or_the_parent(folder, tmp_path):
    assert not (folder / "u.data").exists()
    a, _ = load(pathlib.Path(folder))
    b, _ = load(str(tmp_path))  # the folder the archive was unzipped in
    assert a.fingerprint == b.fingerprint


def test_bad_arguments_are_refused(folder):
    for kwargs, arg in [
        ({"split": "u6"}, "split"),
        ({"split": "U1"}, "split"),
        ({"split": 1}, "split"),
        ({"features": ()}, "features"),
        ({"features": ("bias", "genres")}, "features"),
        ({"features": ("bias", "bias")}, "features"),
        ({"rank": 0}, "rank"),
        ({"rank": -3}, "rank"),
        ({"rank": min(len(USERS), len(ITEMS))}, "rank"),
    ]:
        with pytest.raises(kn.ArgumentError) as info:
            load(folder, **kwargs)
        assert info.value.arg == arg, kwargs
        assert str(info.value).startswith(f"{arg}: ")
    for kwargs, arg in [
        ({"rank": 2.0}, "rank"),
        ({"verify": "yes"}, "verify"),
        ({"features": 3}, "features"),
    ]:
        with pytest.raises(kn.ArgumentTypeError) as info:
            load(folder, **kwargs)
        assert info.value.arg == arg
    with pytest.raises(kn.ArgumentTypeError) as info:
        movielens_100k(None)
    assert info.value.arg == "path"
    # A single name is a one-block request.
    assert load(folder, features="side")[0].dims == (3 + len(OCCUPATIONS), len(GENRES) + 1)


def test_a_missing_folder_says_where_to_download(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        movielens_100k(tmp_path / "nowhere" / "ml-100k")
    message = str(info.value)
    assert "https://files.grouplens.org/datasets/movielens/ml-100k.zip" in message
    assert "never ships" in message and str(tmp_path / "nowhere") in message


def test_a_missing_file_is_named(folder):
    os.remove(folder / "u1.test")
    with pytest.raises(FileNotFoundError) as info:
        load(folder)
    assert str(folder / "u1.test") in str(info.value)
    assert "https://files.grouplens.org/datasets/movielens/ml-100k.zip" in str(info.value)
    with pytest.raises(FileNotFoundError, match="u2.base"):
        load(folder, split="u2")


def test_verify_refuses_files_that_are_not_grouplens(folder):
    with pytest.raises(ChecksumError) as info:
        movielens_100k(folder, rank=RANK)
    exc = info.value
    assert isinstance(exc, ValueError) and isinstance(exc, kn.KronnetError)
    name = os.path.basename(exc.path)
    assert exc.path == str(folder / name)
    assert exc.expected == ml.MD5[name]
    assert exc.actual == hashlib.md5((folder / name).read_bytes()).hexdigest()
    assert exc.path in str(exc) and exc.expected in str(exc) and exc.actual in str(exc)


def test_verify_accepts_files_with_the_listed_md5(folder, monkeypatch):
    for name in ("u.user", "u.item", "u.genre", "u.occupation", "u1.base", "u1.test"):
        monkeypatch.setitem(ml.MD5, name, hashlib.md5((folder / name).read_bytes()).hexdigest())
    train, _ = movielens_100k(folder, rank=RANK)
    assert train.n == len(BASE)
    # One changed byte in the test file is caught, and named.
    (folder / "u1.test").write_bytes((folder / "u1.test").read_bytes().replace(b"\t4\t", b"\t3\t", 1))
    with pytest.raises(ChecksumError, match="u1.test"):
        movielens_100k(folder, rank=RANK)


def test_the_checksum_table_covers_every_file_read():
    names = {"u.user", "u.item", "u.genre", "u.occupation"}
    names |= {f"{s}.{part}" for s in ml.SPLITS for part in ("base", "test")}
    assert set(ml.MD5) == names
    assert all(len(h) == 32 and int(h, 16) >= 0 for h in ml.MD5.values())


def test_malformed_files_are_refused_with_file_and_line(folder):
    (folder / "u1.base").write_bytes(b"1\t1\t5\t881250949\n1\t2\t3\n")
    with pytest.raises(ValueError, match=r"u1\.base: line 2: expected 4 tab-separated fields"):
        load(folder)
    (folder / "u1.base").write_bytes(b"1\t9\t5\t881250949\n")
    with pytest.raises(ValueError, match=r"u1\.base: line 1: .*item 9 is outside"):
        load(folder)
    (folder / "u1.base").write_bytes(b"0\t1\t5\t881250949\n")
    with pytest.raises(ValueError, match=r"u1\.base: line 1: user 0"):
        load(folder)


def test_the_ChecksumError_pickles():
    import pickle

    exc = pickle.loads(pickle.dumps(ChecksumError("p", "a" * 32, "b" * 32)))
    assert (exc.path, exc.expected, exc.actual) == ("p", "a" * 32, "b" * 32)


def test_kronnet_datasets_is_imported_on_demand():
    import subprocess
    import sys

    code = "import sys, kronnet; assert 'kronnet.datasets' not in sys.modules; import kronnet.datasets"
    subprocess.run([sys.executable, "-c", code], check=True)
