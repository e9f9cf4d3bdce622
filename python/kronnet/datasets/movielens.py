"""MovieLens 100k (GroupLens) as pairwise data: users × items.

The folder ``ml-100k`` of https://files.grouplens.org/datasets/movielens/ml-100k.zip
holds 100,000 ratings (1-5) by 943 users of 1682 movies, user and movie
side information, and fixed train/test splits (u1-u5: 5-fold
cross-validation, 80,000 / 20,000 ratings; ua, ub: 10 ratings per user held
out). :func:`movielens_100k` reads one split into (train, test)
:class:`~kronnet.PairData` whose point i is ``users[u_i] ⊗ items[m_i]``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np

from .. import _validate as v
from ..data import PairData
from ..errors import ArgumentError, ArgumentTypeError, KronnetError

__all__ = ["ChecksumError", "main_effects", "movielens_100k"]

DOWNLOAD_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"

#: The splits GroupLens distributes: u1-u5 are the 5 folds of an 80/20
#: cross-validation, ua and ub hold out exactly 10 ratings per user.
SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")

#: Feature blocks, in the order they are concatenated in each table.
FEATURES = ("bias", "effects", "side", "ratings")

#: Ridge penalty of the main effects (in ratings): an entity with k training
#: ratings gets its mean residual times k / (k + EFFECTS_PENALTY), so a user
#: with three ratings is not taken at their word.
EFFECTS_PENALTY = 10.0
#: The alternating passes of the user and item effects stop when no effect
#: moves by more than EFFECTS_TOL (they are then the exact ridge solution
#: to round-off), or after EFFECTS_SWEEPS passes.
EFFECTS_TOL = 1e-12
EFFECTS_SWEEPS = 1000

#: How the tables are scaled: one factor per table, or each row to unit norm.
SCALES = ("table", "rows")

#: md5 of the files :func:`movielens_100k` reads, as GroupLens distributes them
#: in ml-100k.zip, so that a truncated, re-encoded or edited copy is refused
#: instead of silently changing results. Computed from an extracted copy and
#: confirmed on two more public copies, whose git blobs for these files are
#: identical (except one whose u.item had its latin-1 titles stripped to ASCII).
#: u.data is not read: every split has its own files. For reference, GroupLens's
#: u.data (100,000 ratings, 1,979,173 bytes) has md5
#: 6e47046882bad158b0efbb84cd5cb987; copies circulating with course material
#: add three ratings by a user 0 (md5 f7e58b96652793c775a8f17515d4c3a5).
MD5 = {
    "u.user": "1b53539edc13caad0282c8500608a319",
    "u.item": "c9e7f390115d79079537301d5204f3f7",
    "u.genre": "a7578bdb37758741ae9429d2c736af18",
    "u.occupation": "035abaa2165f35cebce4b91e03481e0a",
    "u1.base": "4325f44281c9f8c119a3694662d63fc2",
    "u1.test": "62d5d837e7c8e36550cc956b09c2ecc8",
    "u2.base": "79541afecccbd5365bb2c09b123a01c7",
    "u2.test": "1951a71b7e1f4ed254508007fa2f6b70",
    "u3.base": "55c67a63f516fa9e593d68c3be779970",
    "u3.test": "cb3e4d0a9152041772285232ca002d4f",
    "u4.base": "66f64a75eeeffd20ff09533bcd31adcf",
    "u4.test": "328acfca94e85d01b1d7e92c7d73df3b",
    "u5.base": "0becb3392339231c08ba316944c79095",
    "u5.test": "bec898f7091dba3b7bdf793d1998d2d6",
    "ua.base": "346eb46a756be3b382bdef4f7dcf3a01",
    "ua.test": "52e5d0355092dc1596899855b220508f",
    "ub.base": "e4ce94f6e01e45f65b91a70bb9e8da2f",
    "ub.test": "5292d1e388d156aa0c19c384cdf35aca",
}

#: The files every split needs besides its own .base and .test.
SIDE_FILES = ("u.user", "u.item", "u.genre", "u.occupation")

#: What a zero table row becomes before normalisation (only possible without
#: the "bias" block): any nonzero constant gives the same unit row, the
#: uniform vector, which treats an entity with nothing known as average.
ZERO_ROW_FILL = 1e-12


class ChecksumError(KronnetError, ValueError):
    """A data file's md5 differs from the published release's.

    The file is truncated, re-encoded or edited: download the data again,
    or pass ``verify=False`` to use a modified copy on purpose.

    Parameters
    ----------
    path : str
        The file.
    expected : str
        The md5 of the published file (hex).
    actual : str
        The md5 of the file read (hex).

    Examples
    --------
    >>> from kronnet.datasets import ChecksumError
    >>> exc = ChecksumError("ml-100k/u.user", "1b53539edc13caad0282c8500608a319", "d41d8cd98f00b204e9800998ecf8427e")
    >>> print(exc)  # doctest: +ELLIPSIS
    ml-100k/u.user: md5 is d41d8cd98f00b204e9800998ecf8427e, expected 1b53539edc13caad0282c8500608a319 ...
    >>> isinstance(exc, ValueError), exc.expected == MD5["u.user"]
    (True, True)
    """

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{path}: md5 is {actual}, expected {expected} (the file differs from GroupLens's release: "
            f"download {DOWNLOAD_URL} again, or pass verify=False to use a modified copy)"
        )
        self.path = path
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.path, self.expected, self.actual))


def movielens_100k(
    path: Union[str, os.PathLike[str]],
    split: str = "u1",
    features: Sequence[str] = FEATURES,
    rank: int = 6,
    scale: str = "table",
    verify: bool = True,
    validation: float = 0.0,
    seed: int = 0,
) -> Tuple[PairData, ...]:
    """MovieLens 100k: (train, test) ratings as pairwise data over users × items.

    Reads GroupLens's ``ml-100k`` folder (kronnet never ships the data:
    download https://files.grouplens.org/datasets/movielens/ml-100k.zip and
    unzip it). Point i of a split is the i-th line of its file:
    ``pairs[i] = (user id - 1, item id - 1)``, ``y[i]`` the rating (1-5) as
    a float. Both data sets share the same two entity tables, users
    (943, d_users) and items (1682, d_items), built from the training
    split only: nothing in the test file reaches a table, and users or
    items with no training rating still get their side features.

    The "effects" and "ratings" blocks are computed from every training
    rating, so a validation set taken from `train` afterwards (the
    estimators' ``early_stopping`` holds out a tenth) is not independent of
    them: its own ratings are in its users' and items' rows, and its scores
    are optimistic (u1, the exact ridge fit on the points with the ratings
    block at rank 16: RMSE 0.785 on such a tenth, 0.936 on the same tenth
    when it is left out of the tables). To choose settings honestly, pass
    `validation`: the loader then holds that share of ``<split>.base`` out
    before it builds the tables, and returns it as a third data set that
    no table has seen.

    Parameters
    ----------
    path : str or os.PathLike
        The ``ml-100k`` folder (or a folder containing it).
    split : {"u1", "u2", "u3", "u4", "u5", "ua", "ub"}, default "u1"
        Reads ``<split>.base`` (train) and ``<split>.test`` (test).
    features : sequence of {"bias", "effects", "side", "ratings"}, default all four
        The blocks of each table, concatenated in the order bias, effects,
        side, ratings whatever the order given. "bias": a constant 1, so
        that a point u ⊗ i contains every user feature times the item's 1
        and the other way round: main effects come for free. "effects": the
        entity's main effect in ratings, b_u for users and b_i for items,
        from the training ratings r ≈ μ + b_u + b_i by alternating ridge
        (the minimizer of Σ (r − μ − b_u − b_i)² + 10 (Σ b_u² + Σ b_i²),
        μ the mean training rating, ``EFFECTS_PENALTY`` = 10; 0 for an
        entity without training ratings). "side": for users,
        age (standardised over all users), gender one-hot (M, F),
        occupation one-hot (21, from u.occupation); for items, the 19
        genre flags and the release year (standardised; 0 when unknown).
        "ratings": the user's (item's) row of a rank-`rank` truncated SVD
        M ≈ U S Vᵀ of the training ratings' residuals r − μ − b_u − b_i
        (users × items, 0 where unrated), U_r (S_r / S_1)^½ scaled by √943
        (V_r likewise by √1682), so the first column has unit mean square;
        zero for an entity with no training rating.
    rank : int, default 6
        Components of the "ratings" block: 1 <= rank < min(users, items).
        The default was chosen by held-out validation (``validation=0.1``)
        inside each of u1.base ... u5.base (``kronnet bench real``): mean
        RMSE of the exact ridge fit on the points 0.9334 at rank 6, 0.9343
        at 4, 0.9354 at 8, 0.9462 at 16 (docs/gallery.md, "Real data").
    scale : {"table", "rows"}, default "table"
        "table": each table is divided by one number, the root mean square
        of its rows' norms, so the blocks keep their relative weights and
        the points have mean square norm about one. "rows": every row is
        scaled to unit norm (a zero row, possible only without "bias",
        becomes the uniform unit vector), which makes each entity's blocks
        weigh less the more side information it has.
    verify : bool, default True
        Check the md5 of every file read against the published release
        (``MD5``).
    validation : float, default 0.0
        Share of ``<split>.base`` to hold out for validation, in [0, 1).
        With 0, the tables come from every training rating and the loader
        returns (train, test). Otherwise round(validation · n) ratings of
        the base file, drawn at random, form a validation set; the tables
        come from the other ratings only, and the loader returns
        (train, validation, test).
    seed : int, default 0
        Seed of the validation draw (NumPy's ``default_rng``).

    Returns
    -------
    (train, test) or (train, validation, test) : tuple of PairData
        Pairs (n, 2) of 0-based (user, item) indices, targets (n,); tables
        of shapes (943, d_users) and (1682, d_items), scaled as `scale`
        says, shared by all the data sets returned. Each keeps its file's
        row order. With the default features, d_users = 1 + 1 + 24 + 6 =
        32 and d_items = 1 + 1 + 20 + 6 = 28; for "u1", 80,000 training
        and 20,000 test ratings (72,000 and 8,000 with ``validation=0.1``).

    Raises
    ------
    FileNotFoundError
        The folder or a file the split needs is missing (the message says
        where to download the data).
    ChecksumError
        With ``verify=True``, a file's md5 differs from the published one.
    ValueError
        A file cannot be parsed (the message gives the file and line).
    ArgumentError
        Unknown `split` or `scale`, empty or unknown `features`, `rank`
        outside [1, min(users, items)), `validation` outside [0, 1) or
        leaving no rating on one side, `seed` negative.
    ArgumentTypeError
        `path` is not a path, `rank` or `seed` not an int, `validation`
        not a real number, `verify` not a bool, `features` not a sequence
        of strings.

    Examples
    --------
    With the folder downloaded and unzipped:

    >>> from kronnet.datasets import movielens_100k
    >>> train, test = movielens_100k("ml-100k", split="u1")  # doctest: +SKIP
    >>> train, test  # doctest: +SKIP
    (PairData(n=80000, entities=(943, 1682), dims=(32, 28), d=896, with targets),
     PairData(n=20000, entities=(943, 1682), dims=(32, 28), d=896, with targets))

    A validation set the tables have not seen, to choose settings on:

    >>> fit, val, test = movielens_100k("ml-100k", split="u1", validation=0.1)  # doctest: +SKIP
    >>> fit.n, val.n, test.n  # doctest: +SKIP
    (72000, 8000, 20000)

    Without it, the error says where to get it:

    >>> try:
    ...     movielens_100k("no-such-folder/ml-100k")
    ... except FileNotFoundError as exc:
    ...     print(DOWNLOAD_URL in str(exc))
    True
    """
    folder = _path(path)
    split = v.choice(split, "split", SPLITS)
    blocks = _features(features)
    rank = v.positive_int(rank, "rank")
    scale = v.choice(scale, "scale", SCALES)
    verify = v.flag(verify, "verify")
    validation = v.finite_float(validation, "validation")
    if not 0.0 <= validation < 1.0:
        raise ArgumentError("validation", f"must be in [0, 1), got {validation}")
    seed = v.seed_int(seed)
    folder = _find_folder(folder, split)

    def read(name: str) -> bytes:
        return _read(folder, name, verify)

    genres = _genres(read("u.genre"), os.path.join(folder, "u.genre"))
    occupations = _occupations(read("u.occupation"))
    users = _users(read("u.user"), os.path.join(folder, "u.user"), occupations)
    items = _items(read("u.item"), os.path.join(folder, "u.item"), len(genres))
    n_users, n_items = users.shape[0], items.shape[0]
    if rank >= min(n_users, n_items):
        raise ArgumentError("rank", f"must be below min(users, items) = {min(n_users, n_items)}, got {rank}")
    sizes = (n_users, n_items)
    train = _ratings(read(f"{split}.base"), os.path.join(folder, f"{split}.base"), sizes)
    test = _ratings(read(f"{split}.test"), os.path.join(folder, f"{split}.test"), sizes)
    held_out = None
    if validation > 0:
        n = len(train[1])
        count = int(round(validation * n))
        if not 0 < count < n:
            raise ArgumentError(
                "validation", f"holds out {count} of the {n} training ratings; each side needs at least one"
            )
        held = np.zeros(n, dtype=bool)
        held[np.random.default_rng(seed).permutation(n)[:count]] = True
        # The held-out ratings leave before any table is built from `train`.
        held_out = (train[0][held], train[1][held])
        train = (train[0][~held], train[1][~held])

    user_blocks: List[np.ndarray] = []
    item_blocks: List[np.ndarray] = []
    effects = main_effects(train, sizes)
    if "bias" in blocks:
        user_blocks.append(np.ones((n_users, 1)))
        item_blocks.append(np.ones((n_items, 1)))
    if "effects" in blocks:
        user_blocks.append(effects[1][:, None])
        item_blocks.append(effects[2][:, None])
    if "side" in blocks:
        user_blocks.append(users)
        item_blocks.append(items)
    if "ratings" in blocks:
        u, m = _rating_factors(train, sizes, rank, effects)
        user_blocks.append(u)
        item_blocks.append(m)
    rescale = _unit_rows if scale == "rows" else _unit_rms
    tables = [rescale(np.hstack(user_blocks)), rescale(np.hstack(item_blocks))]
    train_data = PairData(tables, train[0], train[1], copy=False)
    test_data = PairData(tables, test[0], test[1], copy=False)
    if held_out is None:
        return train_data, test_data
    return train_data, PairData(tables, held_out[0], held_out[1], copy=False), test_data


def _path(path: Any) -> str:
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError("path", f"expected a folder path (str or os.PathLike), got {type(path).__name__}")
    return os.fspath(path)


def _features(features: Any) -> Tuple[str, ...]:
    """The requested blocks, in canonical order."""
    if isinstance(features, str):
        features = (features,)
    if not isinstance(features, (list, tuple, set, frozenset)):
        raise ArgumentTypeError(
            "features", f"expected a sequence of names among {', '.join(FEATURES)}, got {type(features).__name__}"
        )
    names = list(features)
    for name in names:
        if not isinstance(name, str) or name not in FEATURES:
            raise ArgumentError("features", f"each must be one of {', '.join(map(repr, FEATURES))}; got {name!r}")
    if not names:
        raise ArgumentError("features", f"is empty: request at least one of {', '.join(map(repr, FEATURES))}")
    if len(set(names)) != len(names):
        raise ArgumentError("features", f"names a block twice: {names}")
    return tuple(f for f in FEATURES if f in names)


def _missing(what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what}. kronnet never ships the MovieLens data (its terms forbid redistributing it without permission): "
        f"download {DOWNLOAD_URL} and unzip it to get the ml-100k folder, then pass that folder's path."
    )


def _find_folder(folder: str, split: str) -> str:
    """`folder`, or its ml-100k subfolder when `folder` is where the archive
    was unzipped."""
    if not os.path.isdir(folder):
        wanted = ", ".join(SIDE_FILES + (f"{split}.base", f"{split}.test"))
        raise _missing(
            f"MovieLens 100k folder not found: {folder!r} is not a directory (looked for the ml-100k folder, "
            f"holding {wanted})"
        )
    inner = os.path.join(folder, "ml-100k")
    if not os.path.exists(os.path.join(folder, "u.user")) and os.path.isdir(inner):
        return inner
    return folder


def _read(folder: str, name: str, verify: bool) -> bytes:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise _missing(f"MovieLens 100k file not found: {path!r} (the ml-100k folder is incomplete)")
    with open(path, "rb") as fh:
        content = fh.read()
    if verify:
        actual = hashlib.md5(content, usedforsecurity=False).hexdigest()
        if actual != MD5[name]:
            raise ChecksumError(path, MD5[name], actual)
    return content


def _bad(path: str, line: int, what: str) -> ValueError:
    return ValueError(f"{path}: line {line}: {what}")


def _lines(content: bytes, encoding: str = "latin-1") -> List[Tuple[int, str]]:
    """(line number, text) of the non-blank lines (u.item is latin-1; the
    other files are ASCII, which latin-1 decodes alike)."""
    text = content.decode(encoding)
    return [(k, line.rstrip("\r")) for k, line in enumerate(text.split("\n"), 1) if line.strip()]


def _genres(content: bytes, path: str) -> List[str]:
    """The genre names, by index (u.genre lines: name|index)."""
    names: Dict[int, str] = {}
    for number, line in _lines(content):
        fields = line.split("|")
        if len(fields) != 2 or not fields[1].strip().isdigit():
            raise _bad(path, number, f"expected 'genre|index', got {line!r}")
        names[int(fields[1])] = fields[0]
    if sorted(names) != list(range(len(names))) or not names:
        raise ValueError(f"{path}: genre indices must be 0, 1, ..., got {sorted(names)}")
    return [names[k] for k in range(len(names))]


def _occupations(content: bytes) -> List[str]:
    return [line.strip() for _, line in _lines(content)]


def _entity_rows(ids: List[int], path: str, numbers: List[int]) -> np.ndarray:
    """Row of each line (id - 1), checking that the ids are 1, ..., N, each once."""
    rows = np.asarray(ids, dtype=np.int64) - 1
    seen = np.zeros(len(ids), dtype=bool)
    for row, number in zip(rows, numbers):
        if not 0 <= row < len(ids) or seen[row]:
            raise _bad(path, number, f"id {row + 1} is repeated or outside 1..{len(ids)}")
        seen[row] = True
    return rows


def _standardised(values: np.ndarray) -> np.ndarray:
    """(values - mean) / std over the known (finite) values; 0 for unknown."""
    known = np.isfinite(values)
    if not known.any():
        return np.zeros_like(values)
    mean, std = float(values[known].mean()), float(values[known].std())
    out = (values - mean) / (std if std > 0 else 1.0)
    return np.where(known, out, 0.0)


def _users(content: bytes, path: str, occupations: List[str]) -> np.ndarray:
    """User side features (N_users, 3 + occupations): age standardised,
    gender one-hot (M, F), occupation one-hot."""
    ids, numbers, ages, genders, jobs = [], [], [], [], []
    for number, line in _lines(content):
        fields = line.split("|")
        if len(fields) != 5:
            raise _bad(path, number, f"expected 5 '|'-separated fields (id|age|gender|occupation|zip), got {line!r}")
        try:
            ids.append(int(fields[0]))
            ages.append(float(fields[1]))
        except ValueError:
            raise _bad(path, number, f"id and age must be numbers, got {line!r}") from None
        if fields[2] not in ("M", "F"):
            raise _bad(path, number, f"gender must be M or F, got {fields[2]!r}")
        if fields[3] not in occupations:
            raise _bad(path, number, f"occupation {fields[3]!r} is not listed in u.occupation")
        genders.append(fields[2])
        jobs.append(occupations.index(fields[3]))
        numbers.append(number)
    if not ids:
        raise ValueError(f"{path}: no users")
    rows = _entity_rows(ids, path, numbers)
    out = np.zeros((len(ids), 3 + len(occupations)))
    out[rows, 0] = _standardised(np.asarray(ages))
    out[rows, 1] = [g == "M" for g in genders]
    out[rows, 2] = [g == "F" for g in genders]
    out[rows, 3 + np.asarray(jobs, dtype=np.int64)] = 1.0
    return out


def _items(content: bytes, path: str, n_genres: int) -> np.ndarray:
    """Item side features (N_items, genres + 1): genre flags, release year
    standardised (0 when unknown)."""
    ids, numbers, years, flags = [], [], [], []
    for number, line in _lines(content):
        fields = line.split("|")
        if len(fields) != 5 + n_genres:
            raise _bad(
                path,
                number,
                f"expected {5 + n_genres} '|'-separated fields (id|title|release date|video release date|URL "
                f"and {n_genres} genre flags), got {len(fields)}",
            )
        date = fields[2].strip()
        try:
            ids.append(int(fields[0]))
            years.append(float(date[-4:]) if date else np.nan)
            flags.append([int(f) for f in fields[5:]])
        except ValueError:
            raise _bad(
                path, number, "the id, the release year (dd-Mon-yyyy) and the genre flags must be numbers"
            ) from None
        numbers.append(number)
    if not ids:
        raise ValueError(f"{path}: no items")
    rows = _entity_rows(ids, path, numbers)
    out = np.zeros((len(ids), n_genres + 1))
    out[rows, :n_genres] = np.asarray(flags, dtype=np.float64)
    out[rows, n_genres] = _standardised(np.asarray(years))
    return out


def _ratings(content: bytes, path: str, sizes: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """(pairs (n, 2) of 0-based indices, ratings (n,)) in file order."""
    pairs, ratings = [], []
    for number, line in _lines(content):
        fields = line.split()
        if len(fields) != 4:
            raise _bad(path, number, f"expected 4 tab-separated fields (user, item, rating, timestamp), got {line!r}")
        try:
            user, item, rating = int(fields[0]), int(fields[1]), float(fields[2])
        except ValueError:
            raise _bad(
                path, number, f"user and item ids must be integers and the rating a number, got {line!r}"
            ) from None
        if not (1 <= user <= sizes[0] and 1 <= item <= sizes[1]):
            raise _bad(
                path, number, f"user {user} or item {item} is outside u.user (1..{sizes[0]}) or u.item (1..{sizes[1]})"
            )
        if not np.isfinite(rating):
            raise _bad(path, number, f"rating {fields[2]!r} is not finite")
        pairs.append((user - 1, item - 1))
        ratings.append(rating)
    if not pairs:
        raise ValueError(f"{path}: no ratings")
    return np.asarray(pairs, dtype=np.int64), np.asarray(ratings, dtype=np.float64)


def main_effects(train: Tuple[np.ndarray, np.ndarray], sizes: Tuple[int, int]) -> Tuple[float, np.ndarray, np.ndarray]:
    """The ratings' main effects, the classical baseline r ≈ μ + b_u + b_i.

    μ is the mean rating and (b_u, b_i) minimize
    Σ (r − μ − b_u − b_i)² + 10 (Σ b_u² + Σ b_i²) (``EFFECTS_PENALTY``), by
    alternating exact passes until no effect moves by more than 1e-12.

    Parameters
    ----------
    train : (pairs, ratings)
        Pairs (n, 2) of 0-based (user, item) indices and ratings (n,), as in
        a :class:`~kronnet.PairData` from :func:`movielens_100k`.
    sizes : (int, int)
        Users and items.

    Returns
    -------
    (float, ndarray of shape (users,), ndarray of shape (items,))
        μ, b_u, b_i; an entity without ratings has effect 0.

    Examples
    --------
    >>> import numpy as np
    >>> from kronnet.datasets.movielens import main_effects
    >>> pairs = np.array([[0, 0], [0, 1], [1, 0]])
    >>> mu, b_u, b_i = main_effects((pairs, np.array([5.0, 3.0, 4.0])), (3, 2))
    >>> round(mu, 3), float(b_u[2]), b_i.shape
    (4.0, 0.0, (2,))
    """
    pairs, y = train
    mu = float(y.mean())
    users, items = pairs[:, 0], pairs[:, 1]
    count_u = np.bincount(users, minlength=sizes[0]) + EFFECTS_PENALTY
    count_i = np.bincount(items, minlength=sizes[1]) + EFFECTS_PENALTY
    b_u, b_i = np.zeros(sizes[0]), np.zeros(sizes[1])
    for _ in range(EFFECTS_SWEEPS):
        new_u = np.bincount(users, y - mu - b_i[items], minlength=sizes[0]) / count_u
        new_i = np.bincount(items, y - mu - new_u[users], minlength=sizes[1]) / count_i
        moved = max(np.max(np.abs(new_u - b_u)), np.max(np.abs(new_i - b_i)))
        b_u, b_i = new_u, new_i
        if moved <= EFFECTS_TOL:
            break
    return mu, b_u, b_i


def _rating_factors(
    train: Tuple[np.ndarray, np.ndarray],
    sizes: Tuple[int, int],
    rank: int,
    effects: Tuple[float, np.ndarray, np.ndarray],
) -> Tuple[np.ndarray, np.ndarray]:
    """User and item rows of a rank-`rank` truncated SVD of the training
    ratings' residuals after the main effects, scaled so the first column
    has unit mean square (zero rows for entities without a training
    rating)."""
    pairs, y = train
    mu, b_u, b_i = effects
    centred = y - mu - b_u[pairs[:, 0]] - b_i[pairs[:, 1]]
    # A pair rated twice counts once, with its mean rating.
    total = np.zeros(sizes)
    count = np.zeros(sizes)
    np.add.at(total, (pairs[:, 0], pairs[:, 1]), centred)
    np.add.at(count, (pairs[:, 0], pairs[:, 1]), 1.0)
    matrix = total / np.maximum(count, 1.0)
    U, S, Vt = np.linalg.svd(matrix, full_matrices=False)
    U, S, V = U[:, :rank], S[:rank], Vt[:rank].T
    # Singular vectors are defined up to sign; fix it so a file gives one result.
    peak = U[np.argmax(np.abs(U), axis=0), np.arange(rank)]
    sign = np.where(peak < 0, -1.0, 1.0)
    weight = np.sqrt(S / S[0]) * sign if S[0] > 0 else np.zeros(rank)
    users = np.sqrt(sizes[0]) * U * weight[None, :]
    items = np.sqrt(sizes[1]) * V * weight[None, :]
    # Round-off leaves ~1e-17 in the rows of the unrated; make "nothing known" exact.
    users[count.sum(axis=1) == 0] = 0.0
    items[count.sum(axis=0) == 0] = 0.0
    return users, items


def _unit_rms(table: np.ndarray) -> np.ndarray:
    """The table over the root mean square of its rows' norms (1 if all are 0)."""
    rms = float(np.sqrt(np.mean(np.sum(table**2, axis=1))))
    out: np.ndarray = np.ascontiguousarray(table / rms if rms > 0 else table)
    return out


def _unit_rows(table: np.ndarray) -> np.ndarray:
    table = np.where(np.any(table != 0, axis=1, keepdims=True), table, ZERO_ROW_FILL)
    out: np.ndarray = np.ascontiguousarray(table / np.linalg.norm(table, axis=1, keepdims=True))
    return out
