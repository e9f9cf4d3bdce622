"""Generated data sets: Kronecker data with a teacher (``make_kronecker_data``)
and pairwise data over entity tables (``make_pair_data``), each with
something to learn and, with a latent structure, held-out sets from the same
distribution."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _validate as v
from ..errors import ArgumentError
from .kron import KronData
from .pairs import PairData


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    u: np.ndarray = rng.standard_normal((n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u


def make_kronecker_data(
    n: int,
    dims: Sequence[int] = (16, 16),
    seed: int = 0,
    labels: str = "teacher",
    teacher_width: int = 16,
    noise: float = 0.0,
    latent_dim: Optional[int] = None,
) -> KronData:
    """Random unit-norm Kronecker data with seeded targets.

    By default each factor row is uniform on its unit sphere, so
    ||x_i|| = 1, and nothing can be learned that generalizes to new points.
    With `latent_dim` the points lie near a low-dimensional manifold and the
    targets are a fixed function of where on it: a held-out set drawn with
    another seed comes from the same distribution and target function.

    Parameters
    ----------
    n : int
        Number of points, n >= 1.
    dims : tuple of int, default (16, 16)
        (d_1, ..., d_p), p >= 1; the input dimension is d = prod d_k.
    seed : int, default 0
        Seeds factors and targets (NumPy's PCG64).
    labels : {"teacher", "sign"}, default "teacher"
        "teacher": y from a random two-layer ReLU teacher whose neurons are
        rank-one Kronecker vectors t_j = g_j1 ⊗ ... ⊗ g_jp (so it can be
        evaluated at any d), standardized to mean 0, standard deviation 1.
        "sign": independent uniform ±1 labels.
    teacher_width : int, default 16
        Number of teacher neurons.
    noise : float, default 0.0
        Standard deviation of Gaussian noise added to the targets (>= 0).
    latent_dim : int, optional
        k. When given, point i comes from a latent z_i ~ N(0, I_k): factor
        row j is u_i^(j) = normalize(M_j z_i + eps_j g), with M_j a fixed
        random d_j × k map, g ~ N(0, I) and eps_j = 0.05 / sqrt(d_j) (about
        5% noise per factor). The maps, and the teacher below, depend only
        on (k, dims, teacher_width), never on `seed`, so data sets drawn with
        different seeds share them; `seed` draws the z_i, g and the label
        noise. "teacher" labels are then the even part of a fixed random
        two-layer ReLU teacher on the latent direction z_i / ||z_i||
        (``y = sum_r c_r |<t_r, z_i / ||z_i||>|``; the points determine
        z_i only up to scale, and up to sign when p is even), standardized
        by its mean and standard deviation over a fixed reference sample of
        16384 latent points (so y has mean about 0 and sd about 1 on any
        sample, the same function on every one). "sign" labels are that
        target's sign. None (the default) gives the uniform data above, bit
        for bit as before.

    Returns
    -------
    KronData
        n points with factors of shapes (n, d_k) and targets y of shape (n,).

    Raises
    ------
    ArgumentError
        A size or `latent_dim` is not positive, p < 2, `labels` is unknown
        or `noise` < 0.
    ArgumentTypeError
        A size, `seed` or `latent_dim` is not an integer.
    OutOfMemoryError
        The factors or the teacher would not fit in memory.

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> data = kn.make_kronecker_data(100, dims=(4, 8), seed=0)
    >>> data
    KronData(n=100, dims=(4, 8), d=32, with targets)
    >>> bool(np.allclose(data.norms(), 1.0))
    True
    >>> round(float(data.y.mean()), 6), round(float(data.y.std()), 6)
    (0.0, 1.0)
    >>> signs = kn.make_kronecker_data(20, dims=(2, 2), labels="sign")
    >>> sorted(set(signs.y.tolist()))
    [-1.0, 1.0]

    Structured data, with a held-out set from the same generator:

    >>> train = kn.make_kronecker_data(256, dims=(16, 16), seed=0, latent_dim=4)
    >>> test = kn.make_kronecker_data(128, dims=(16, 16), seed=1, latent_dim=4)
    >>> bool(np.allclose(test.norms(), 1.0))
    True
    >>> net = kn.TwoLayerNet(train.dims, width=1024, seed=0)
    >>> _ = kn.Trainer(net, train, lr=kn.suggest_lr(net, 8)).fit(2000)
    >>> held_out = float(np.mean((net.predict(test) - test.y) ** 2))
    >>> held_out < 0.5 * float(test.y.var())
    True
    """
    n = v.positive_int(n, "n")
    dims = v.dims_tuple(dims)
    seed = v.seed_int(seed)
    labels = v.choice(labels, "labels", ("teacher", "sign"))
    teacher_width = v.positive_int(teacher_width, "teacher_width")
    v.ensure_fits(
        8.0 * teacher_width * (n + sum(dims)) * 2, "the teacher's weights and preactivations", "teacher_width"
    )
    noise = v.finite_float(noise, "noise")
    if noise < 0:
        raise ArgumentError("noise", f"must be >= 0, got {noise}")
    v.ensure_fits(8.0 * n * sum(dims) * 2, "the factor matrices", "n, dims")
    if latent_dim is not None:
        k = v.positive_int(latent_dim, "latent_dim")
        return _latent_data(n, dims, seed, labels, teacher_width, noise, k)
    rng = np.random.default_rng(seed)
    factors = [_unit_rows(rng, n, dk) for dk in dims]
    if labels == "sign":
        y = rng.choice(np.array([-1.0, 1.0]), size=n)
    else:
        # <t_j, x_i> = prod_k <g_jk, u_ik>; each factor is rescaled by sqrt(d_k)
        # so the teacher's preactivations are O(1) whatever d is.
        z = np.ones((n, teacher_width))
        for dk, u in zip(dims, factors):
            g = _unit_rows(rng, teacher_width, dk)
            z *= math.sqrt(dk) * (u @ g.T)
        c = rng.choice(np.array([-1.0, 1.0]), size=teacher_width) / math.sqrt(teacher_width)
        y = np.maximum(z, 0.0) @ c
        y = y - y.mean()
        sd = y.std()
        if sd > 0:
            y = y / sd
    if noise > 0:
        y = y + noise * rng.standard_normal(n)
    return KronData(factors, y, copy=False)


#: Latent points the standardization of latent teachers is computed over.
LATENT_REFERENCE_POINTS = 1 << 14


def _latent_teacher(z: np.ndarray, t: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The even part of the ReLU teacher sum_r c_r relu(<t_r, z / ||z||>), times 2."""
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    out: np.ndarray = np.abs((z / np.where(norm > 0, norm, 1.0)) @ t.T) @ c
    return out


def _latent_data(
    n: int, dims: Tuple[int, ...], seed: int, labels: str, teacher_width: int, noise: float, k: int
) -> KronData:
    """make_kronecker_data with latent_dim=k (its docstring): maps, teacher and
    standardization from a generator keyed by (k, dims) only; points and
    noise from `seed`."""
    v.ensure_fits(
        8.0 * (sum(dims) * k + LATENT_REFERENCE_POINTS * (k + teacher_width)), "the latent maps", "latent_dim"
    )
    fixed = np.random.default_rng([0x6B726F6E, k, *dims])
    maps = [fixed.standard_normal((dk, k)) / math.sqrt(dk * k) for dk in dims]
    t = _unit_rows(fixed, teacher_width, k)
    c = fixed.choice(np.array([-1.0, 1.0]), size=teacher_width) / math.sqrt(teacher_width)
    ref = _latent_teacher(fixed.standard_normal((LATENT_REFERENCE_POINTS, k)), t, c)
    mean, sd = float(ref.mean()), float(ref.std())
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k))
    factors = []
    for dk, mk in zip(dims, maps):
        u = z @ mk.T + (0.05 / math.sqrt(dk)) * rng.standard_normal((n, dk))
        factors.append(u / np.linalg.norm(u, axis=1, keepdims=True))
    y = _latent_teacher(z, t, c) - mean
    if sd > 0:
        y = y / sd
    if labels == "sign":
        y = np.where(y >= 0, 1.0, -1.0)
    if noise > 0:
        y = y + noise * rng.standard_normal(n)
    return KronData(factors, y, copy=False)


def make_pair_data(
    n_pairs: int,
    n_entities: Union[int, Sequence[int]],
    dims: Sequence[int] = (16, 16),
    seed: int = 0,
    latent_dim: int = 8,
    noise: float = 0.0,
    teacher_width: int = 16,
) -> PairData:
    """Random pairwise data with a pair-level target that can be learned.

    Entity e of table k has a latent point z ~ N(0, I_k) and the feature
    vector normalize(M_k z + eps_k g) (M_k a fixed random d_k × k map, g ~
    N(0, I), eps_k = 0.05 / sqrt(d_k)), so every point has ||x_i|| = 1. The
    target of a pair is a fixed two-layer teacher on the entities' latent
    directions, y = sum_r c_r relu(k^(p/2) prod_j <t_rj, z_j / ||z_j||>),
    standardized over a fixed reference sample of 16384 latent tuples: an
    interaction no single entity determines. The maps and the teacher
    depend only on (latent_dim, dims, teacher_width), never on `seed`, so
    data drawn with other seeds (new entities, new pairs) share them.

    Parameters
    ----------
    n_pairs : int
        Number of distinct pairs, at most prod N_k.
    n_entities : int or sequence of int
        N_k, the rows of every table (an int: the same for all).
    dims : sequence of p >= 2 int, default (16, 16)
        (d_1, ..., d_p); d = prod d_k.
    seed : int, default 0
        Draws the entities, the pairs (without duplicates) and the noise.
    latent_dim : int, default 8
        k, the dimension of the entities' latent points.
    noise : float, default 0.0
        Standard deviation of Gaussian noise added to the targets (>= 0).
    teacher_width : int, default 16
        Number of teacher neurons.

    Returns
    -------
    PairData
        Tables (N_k, d_k), pairs (n_pairs, p), targets (n_pairs,). Use
        :meth:`PairData.split` for the three train/test settings.

    Raises
    ------
    ArgumentError
        A size is not positive, p < 2, more pairs than combinations, or
        `noise` < 0.
    ArgumentTypeError
        A size or `seed` is not an integer.

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> data = kn.make_pair_data(3000, (100, 200), dims=(16, 16), seed=0)
    >>> data
    PairData(n=3000, entities=(100, 200), dims=(16, 16), d=256, with targets)
    >>> len({tuple(pq) for pq in data.pairs}) == data.n  # no duplicates
    True
    >>> train, test = data.split("random_pair", seed=0)
    >>> net = kn.TwoLayerNet(data.dims, width=2048, seed=0)
    >>> _ = kn.Trainer(net, train, lr=kn.suggest_lr(net, 8)).fit(3000)
    >>> mse = float(np.mean((net.predict(test) - test.y) ** 2))
    >>> mse < 0.5 * float(test.y.var())
    True
    """
    n_pairs = v.positive_int(n_pairs, "n_pairs")
    dims = v.dims_tuple(dims)
    p = len(dims)
    if p < 2:
        raise ArgumentError("dims", f"pairwise data need p >= 2 tables, got dims {dims}")
    if isinstance(n_entities, (list, tuple, np.ndarray)):
        sizes = tuple(v.positive_int(int(e) if isinstance(e, np.integer) else e, "n_entities") for e in n_entities)
        if len(sizes) != p:
            raise ArgumentError("n_entities", f"has {len(sizes)} sizes for {p} tables")
    else:
        sizes = (v.positive_int(n_entities, "n_entities"),) * p
    seed = v.seed_int(seed)
    k = v.positive_int(latent_dim, "latent_dim")
    teacher_width = v.positive_int(teacher_width, "teacher_width")
    noise = v.finite_float(noise, "noise")
    if noise < 0:
        raise ArgumentError("noise", f"must be >= 0, got {noise}")
    combinations = math.prod(sizes)
    if n_pairs > combinations:
        raise ArgumentError("n_pairs", f"{n_pairs} distinct pairs requested, only {combinations} exist")
    v.ensure_fits(8.0 * (sum(e * (dk + k) for e, dk in zip(sizes, dims)) + 4 * n_pairs * p), "the tables", "sizes")

    fixed = np.random.default_rng([0x70616972, k, teacher_width, *dims])
    maps = [fixed.standard_normal((dk, k)) / math.sqrt(dk * k) for dk in dims]
    t = [_unit_rows(fixed, teacher_width, k) for _ in dims]
    c = fixed.choice(np.array([-1.0, 1.0]), size=teacher_width) / math.sqrt(teacher_width)
    ref = _pair_teacher([fixed.standard_normal((1 << 14, k)) for _ in dims], t, c)
    mean, sd = float(ref.mean()), float(ref.std())

    rng = np.random.default_rng(seed)
    latents = [rng.standard_normal((e, k)) for e in sizes]
    tables = []
    for z, dk, mk in zip(latents, dims, maps):
        u = z @ mk.T + (0.05 / math.sqrt(dk)) * rng.standard_normal((z.shape[0], dk))
        tables.append(u / np.linalg.norm(u, axis=1, keepdims=True))
    flat = rng.choice(combinations, size=n_pairs, replace=False)
    columns = [np.ascontiguousarray(c_, dtype=np.int64) for c_ in np.unravel_index(flat, sizes)]
    y = _pair_teacher([z[col] for z, col in zip(latents, columns)], t, c) - mean
    if sd > 0:
        y = y / sd
    if noise > 0:
        y = y + noise * rng.standard_normal(n_pairs)
    return PairData(tables, np.stack(columns, axis=1), y, copy=False)


def _pair_teacher(z: List[np.ndarray], t: List[np.ndarray], c: np.ndarray) -> np.ndarray:
    """sum_r c_r relu(k^(p/2) prod_j <t_rj, z_j / ||z_j||>) for latent tuples
    z (one (n, k) array per table)."""
    k = z[0].shape[1]
    prod = np.ones((z[0].shape[0], t[0].shape[0]))
    for zj, tj in zip(z, t):
        norm = np.linalg.norm(zj, axis=1, keepdims=True)
        prod *= math.sqrt(k) * ((zj / np.where(norm > 0, norm, 1.0)) @ tj.T)
    out: np.ndarray = np.maximum(prod, 0.0) @ c
    return out
