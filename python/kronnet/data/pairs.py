"""Pairwise (dyadic) data: points x_i = T_1[a_i] ⊗ ... ⊗ T_p[c_i] over shared
entity tables (drugs × proteins, users × items)."""

from __future__ import annotations

import hashlib
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import _validate as v
from ..errors import ArgumentError, ArgumentTypeError
from .kernels import KernelFeatures
from .kron import KronData
from .points import CoreLayout, KronPoints, frozen

#: Split kinds of :meth:`PairData.split`, the three settings the
#: pairwise-learning literature reports.
SPLIT_KINDS = ("random_pair", "new_row", "new_both")

#: Table rows must have norms in [1 / TABLE_SPREAD, TABLE_SPREAD] (or be
#: zero): a row is shared by many points, so unlike KronData's factors it
#: cannot be rebalanced against the other factors point by point.
TABLE_SPREAD = 1e50


class PairData(KronPoints):
    """Points over shared entity tables: x_i = T_1[a_i] ⊗ ... ⊗ T_p[c_i].

    Pairwise (dyadic) data: drugs and proteins, users and items, any
    interaction between entities described by feature vectors. Each
    entity's vector is stored once, so memory is O(sum_k N_k d_k + n p)
    rather than O(n sum_k d_k), the Gram comes from the per-table Grams, and
    the initial inner products are computed per entity, not per pair.
    Everything else (training, ``backend="dense"``, prediction, saving) works
    as with :class:`~kronnet.KronData`.

    Parameters
    ----------
    tables : sequence of p >= 1 array_like, table k of shape (N_k, d_k)
        Entity feature vectors; row e of table k describes entity e of kind
        k. Any real dtype and layout, stored as float64. Rows must have
        norms within [1e-50, 1e50] or be zero.
    pairs : array_like of int, shape (n, p)
        Point i combines entity ``pairs[i, k]`` of every table k; entities
        and pairs may repeat.
    y : array_like of shape (n,) or (n, C), optional
        Targets: values, 0/1 targets or integer class labels (n,), or C
        values per point (n, C); stored as float64. Required for training,
        not for prediction.
    copy : bool, default True
        As for :class:`~kronnet.KronData`: by default the arrays are copied;
        with ``copy=False`` aligned C-contiguous float64 tables are taken
        over without a copy.

    Raises
    ------
    ArgumentError
        No table, an empty table dimension, NaN/inf, a table row with norm
        outside [1e-50, 1e50], pairs of the wrong shape or out of range, or
        targets of the wrong shape.
    ArgumentTypeError
        `tables` is not a list or tuple, or `pairs` is not integer.

    See Also
    --------
    make_pair_data : generated pairwise data with splits.

    Examples
    --------
    >>> import numpy as np, kronnet as kn
    >>> drugs = np.array([[1.0, 0.0], [0.6, 0.8]])
    >>> proteins = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    >>> data = kn.PairData([drugs, proteins], [[0, 1], [1, 1], [1, 2]], y=[1.0, -1.0, 0.5])
    >>> data
    PairData(n=3, entities=(2, 3), dims=(2, 3), d=6, with targets)
    >>> data.dense()[1]
    array([0.6, 0. , 0. , 0.8, 0. , 0. ])
    >>> bool(np.allclose(data.dense(), kn.KronData(data.factors).dense()))
    True
    """

    kind = "pairs"

    def __init__(self, tables: Sequence[Any], pairs: Any, y: Optional[Any] = None, copy: bool = True) -> None:
        if isinstance(tables, np.ndarray) or not isinstance(tables, (list, tuple)):
            raise ArgumentTypeError(
                "tables", f"expected a list of 2-D arrays (one entity table per factor), got {type(tables).__name__}"
            )
        if len(tables) < 1:
            raise ArgumentError("tables", "need at least 1 entity table, got 0")
        copy = v.flag(copy, "copy")
        arrays = [v.float_array(t, f"tables[{k}]", 2, copy=copy, allow_empty=True) for k, t in enumerate(tables)]
        for k, t in enumerate(arrays):
            if t.shape[1] == 0:
                raise ArgumentError(f"tables[{k}]", f"is empty (shape {t.shape}): every table needs d_k >= 1")
        columns = v.index_matrix(pairs, "pairs", [t.shape[0] for t in arrays])
        logs = [_table_log_norms(t, k) for k, t in enumerate(arrays)]
        if columns[0].size:
            log_norm = np.sum([lg[c] for lg, c in zip(logs, columns)], axis=0)
            bad = np.flatnonzero(log_norm > math.log(v.VALUE_BOUND))
            if bad.size:
                raise ArgumentError(
                    "pairs",
                    f"point {int(bad[0])} has norm e^{float(log_norm[bad[0]]):.1f}; kronnet needs "
                    "||x_i|| <= 1e100 (normalize the tables)",
                )
        target = None if y is None else v.targets(y, "y", columns[0].size, copy=copy)
        self._set(arrays, columns, target)

    def _set(self, tables: List[np.ndarray], columns: List[np.ndarray], y: Optional[np.ndarray]) -> None:
        """Takes over validated arrays (tables and pair columns are shared,
        read-only, between data sets made by `take` and `split`)."""
        self._tables = [frozen(t) for t in tables]
        self._columns = [frozen(c) for c in columns]
        self._y = None if y is None else frozen(y)
        self._fingerprint: Optional[str] = None

    @classmethod
    def _from_parts(cls, tables: List[np.ndarray], columns: List[np.ndarray], y: Optional[np.ndarray]) -> PairData:
        out = cls.__new__(cls)
        out._set(tables, columns, y)
        return out

    @property
    def tables(self) -> List[np.ndarray]:
        """The p entity tables, float64, read-only: table k of shape (N_k, d_k)."""
        return list(self._tables)

    @property
    def pairs(self) -> np.ndarray:
        """The entity indices, int64 of shape (n, p), read-only (a new array
        on each access)."""
        out = np.stack(self._columns, axis=1) if self._columns[0].size else np.empty((0, self.p), dtype=np.int64)
        return frozen(out)

    @property
    def n_entities(self) -> Tuple[int, ...]:
        """(N_1, ..., N_p), the rows of each table."""
        return tuple(int(t.shape[0]) for t in self._tables)

    @property
    def n(self) -> int:
        """Number of points (pairs)."""
        return int(self._columns[0].size)

    @property
    def dims(self) -> Tuple[int, ...]:
        """(d_1, ..., d_p)."""
        return tuple(int(t.shape[1]) for t in self._tables)

    @property
    def factors(self) -> List[np.ndarray]:
        """The factor rows of every point, gathered from the tables: factor k
        of shape (n, d_k). This is the memory PairData avoids; use it to
        build the equivalent :class:`~kronnet.KronData`."""
        return [t[c] for t, c in zip(self._tables, self._columns)]

    @property
    def core_layout(self) -> CoreLayout:
        """The tables and the pair columns as the core reads them."""
        return list(self._tables), 1, list(self._columns)

    @property
    def fingerprint(self) -> str:
        """A digest of the tables and pairs (not the targets).

        Examples
        --------
        >>> import kronnet as kn
        >>> a = kn.make_pair_data(50, 10, dims=(4, 4), seed=0)
        >>> b = kn.PairData(a.tables, a.pairs, y=-a.y)
        >>> a.fingerprint == b.fingerprint
        True
        """
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=20)
            h.update(f"pairs {self.dims} {self.n_entities} {self.n}".encode())
            for t in self._tables:
                h.update(t.tobytes())
            for c in self._columns:
                h.update(c.tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def norms(self) -> np.ndarray:
        """||x_i|| = prod_k ||T_k[pairs[i, k]]||, shape (n,).

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> kn.PairData([np.array([[3.0, 4.0]]), np.array([[1.0], [2.0]])], [[0, 0], [0, 1]]).norms()
        array([ 5., 10.])
        """
        out = np.ones(self.n)
        for t, c in zip(self._tables, self._columns):
            out *= np.linalg.norm(t, axis=1)[c]
        return out

    def normalized(self) -> PairData:
        """A copy with every nonzero table row scaled to unit norm, so every
        point with no zero factor has ||x_i|| = 1. Pairs and targets are
        kept.

        Returns
        -------
        PairData
            Same pairs and targets; tables of the same shapes (N_k, d_k).

        Raises
        ------
        ArgumentError
            A pair uses a zero table row (that point cannot be normalized).

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.PairData([np.array([[3.0, 4.0]]), np.array([[1.0], [2.0]])], [[0, 0], [0, 1]])
        >>> data.normalized().norms()
        array([1., 1.])
        """
        tables = []
        for k, (t, c) in enumerate(zip(self._tables, self._columns)):
            norm = np.linalg.norm(t, axis=1)
            used_zero = np.flatnonzero(norm[c] == 0)
            if used_zero.size:
                raise ArgumentError(f"tables[{k}]", f"row {int(c[used_zero[0]])} is zero and cannot be normalized")
            tables.append(t / np.where(norm > 0, norm, 1.0)[:, None])
        return PairData._from_parts(tables, list(self._columns), self._y)

    def scaled(self, factor: float) -> PairData:
        """A copy of the points multiplied by `factor` (the first table
        scaled), with the same pairs and targets.

        Parameters
        ----------
        factor : float
            Positive and finite.

        Returns
        -------
        PairData
            Same pairs and targets; norms times `factor`.

        Raises
        ------
        ArgumentError
            `factor` is not positive and finite.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.PairData([np.array([[3.0, 4.0]]), np.array([[1.0], [2.0]])], [[0, 0], [0, 1]])
        >>> data.scaled(0.1).norms()
        array([0.5, 1. ])
        """
        factor = v.finite_float(factor, "factor", positive=True)
        tables = [self._tables[0] * factor] + list(self._tables[1:])
        return PairData._from_parts(tables, list(self._columns), self._y)

    def take(self, indices: Any) -> PairData:
        """The pairs at `indices` (repeats allowed), with their targets,
        over the same tables (shared, not copied).

        Parameters
        ----------
        indices : array_like of int, shape (k,)
            Indices in [0, n).

        Returns
        -------
        PairData
            k pairs (pairs of shape (k, p)), y of shape (k,) or None.

        Raises
        ------
        ArgumentError
            An index is out of range, or `indices` is not 1-D.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_pair_data(40, 8, dims=(4, 4), seed=0)
        >>> part = data.take([3, 3, 0])
        >>> part.n, part.n_entities == data.n_entities
        (3, True)
        >>> bool((part.pairs == data.pairs[[3, 3, 0]]).all())
        True
        """
        idx = v.index_array(indices, "indices", self.n)
        y = None if self._y is None else self._y[idx]
        return PairData._from_parts(list(self._tables), [c[idx] for c in self._columns], y)

    def to_kron_data(self) -> KronData:
        """The same points as a :class:`~kronnet.KronData` with one factor row
        per point (gathered from the tables; O(n sum_k d_k) memory).

        Returns
        -------
        KronData
            Factor k of shape (n, d_k), row i = ``tables[k][pairs[i, k]]``;
            the same targets.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.make_pair_data(30, 6, dims=(4, 4), seed=0)
        >>> kron = data.to_kron_data()
        >>> kron
        KronData(n=30, dims=(4, 4), d=16, with targets)
        >>> bool(np.allclose(kron.dense(), data.dense()))
        True
        """
        return KronData(self.factors, self._y, copy=False)

    def dense(self) -> np.ndarray:
        """The materialized points, shape (n, d). Only for small d.

        Returns
        -------
        ndarray of shape (n, d)
            Row i is ``np.kron(tables[0][pairs[i, 0]], ..., tables[p-1][pairs[i, p-1]])``.

        Raises
        ------
        OutOfMemoryError
            The n × d matrix would not fit in memory.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.PairData([np.eye(2), np.array([[1.0, 2.0]])], [[1, 0]])
        >>> data.dense()
        array([[0., 0., 1., 2.]])
        """
        v.ensure_fits(8.0 * self.n * self.d, "the dense data matrix (n × d)", "data.dense()")
        return self.to_kron_data().dense()

    def split(self, kind: str = "random_pair", test_size: float = 0.2, seed: int = 0) -> Tuple[PairData, PairData]:
        """A train/test split in one of the three pairwise-learning settings.

        Parameters
        ----------
        kind : {"random_pair", "new_row", "new_both"}, default "random_pair"
            "random_pair": a random `test_size` fraction of the pairs is
            held out; their entities also occur in training pairs.
            "new_row": a random `test_size` fraction of the entities of
            table 0 (e.g. drugs) is held out with every pair that uses
            them; the test pairs have a row entity never seen in training.
            "new_both" (cold start): a fraction q = test_size^(1/p) of the
            entities of every table is held out; the test pairs are those
            whose entities are all held out, the training pairs those using
            none, and pairs that mix the two are dropped, so no entity of a
            test pair occurs in training.
        test_size : float, default 0.2
            In (0, 1).
        seed : int, default 0
            Seeds the choice (NumPy's PCG64).

        Returns
        -------
        (train, test) : tuple of PairData
            Over the same tables as this data set (shared, not copied),
            with their targets.

        Raises
        ------
        ArgumentError
            Unknown `kind`, `test_size` outside (0, 1), or a split that
            leaves the training or the test set empty.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> data = kn.make_pair_data(2000, (60, 80), dims=(8, 8), seed=0)
        >>> train, test = data.split("new_both", test_size=0.2, seed=1)
        >>> seen = set(train.pairs[:, 0]) | set(train.pairs[:, 1] + 1000)
        >>> any(a in seen or b + 1000 in seen for a, b in test.pairs)
        False
        """
        kind = v.choice(kind, "kind", SPLIT_KINDS)
        test_size = v.finite_float(test_size, "test_size")
        if not 0 < test_size < 1:
            raise ArgumentError("test_size", f"must be in (0, 1), got {test_size}")
        rng = np.random.default_rng(v.seed_int(seed))
        if kind == "random_pair":
            is_test = np.zeros(self.n, dtype=bool)
            is_test[rng.permutation(self.n)[: int(round(test_size * self.n))]] = True
            train, test = ~is_test, is_test
        else:
            held = []
            tables = 1 if kind == "new_row" else self.p
            fraction = test_size if kind == "new_row" else test_size ** (1.0 / self.p)
            for k in range(tables):
                out = np.zeros(self.n_entities[k], dtype=bool)
                out[rng.permutation(out.size)[: int(round(fraction * out.size))]] = True
                held.append(out[self._columns[k]])
            test = np.logical_and.reduce(held)
            train = ~np.logical_or.reduce(held)
        if not train.any() or not test.any():
            raise ArgumentError(
                "test_size", f"the {kind!r} split of {self.n} pairs leaves an empty training or test set"
            )
        return self.take(np.flatnonzero(train)), self.take(np.flatnonzero(test))

    def to_arrays(self) -> Dict[str, Any]:
        """The arrays that rebuild these points (:meth:`KronPoints.to_arrays`).

        Returns
        -------
        dict of str to ndarray or list of ndarray
            Views of this data set's (read-only) arrays.

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_pair_data(5, 4, dims=(2, 3), seed=0)
        >>> sorted(data.to_arrays())
        ['pairs', 'tables']
        >>> kn.PairData.from_arrays(data.to_arrays(), data.y).fingerprint == data.fingerprint
        True

        Notes
        -----
        ``{"tables": self.tables, "pairs": self.pairs}``: the tables whole,
        however few of their rows the pairs use.
        """
        return {"tables": self.tables, "pairs": self.pairs}

    @classmethod
    def from_arrays(cls, arrays: Dict[str, Any], y: Optional[np.ndarray]) -> PairData:
        """The points :meth:`to_arrays` described, validated as by the constructor.

        Parameters
        ----------
        arrays : dict
            What :meth:`to_arrays` returned.
        y : ndarray of shape (n,), optional
            Targets.

        Returns
        -------
        PairData

        Examples
        --------
        >>> import kronnet as kn
        >>> data = kn.make_pair_data(5, 4, dims=(2, 3), seed=0)
        >>> kn.PairData.from_arrays(data.to_arrays(), None).y is None
        True
        """
        return cls(list(arrays["tables"]), arrays["pairs"], y, copy=False)

    @classmethod
    def from_kernels(
        cls, kernels: Sequence[Any], pairs: Any, y: Optional[Any] = None, center: bool = False
    ) -> PairData:
        """Pairwise data over entity kernels: <x_i, x_j> = prod_k K_k[pairs[i, k], pairs[j, k]].

        Each kernel K_k is factored once, K_k = F_k F_kᵀ
        (:class:`~kronnet.KernelFeatures`), and F_k becomes entity table k,
        so the points' inner products are exactly the Kronecker kernel
        K_1 ⊗ ... ⊗ K_p on the pairs (up to round-off, and to the
        eigenvalues dropped as round-off).

        Parameters
        ----------
        kernels : sequence of p >= 1 array_like, kernel k of shape (N_k, N_k)
            Entity kernels, each symmetric positive semi-definite up to
            round-off (as :class:`~kronnet.KernelFeatures` requires).
        pairs : array_like of int, shape (n, p)
            Point i combines entity ``pairs[i, k]`` of every kernel k, an
            index in [0, N_k).
        y : array_like of shape (n,) or (n, C), optional
            Targets, as for :class:`PairData`.
        center : bool, default False
            Centre every kernel first (H K_k H); see
            :class:`~kronnet.KernelFeatures`.

        Returns
        -------
        PairData
            Table k is ``KernelFeatures(kernels[k], center=center).features``,
            of shape (N_k, r_k), r_k the numerical rank of K_k; the pairs
            and targets as given.

        Raises
        ------
        ArgumentError
            A kernel :class:`~kronnet.KernelFeatures` refuses (named
            ``kernels[k]``: not square, not symmetric, indefinite, not
            finite, empty or zero); no kernel; `pairs` with a number of
            columns other than the number of kernels, or an index outside
            its kernel's range; targets of the wrong shape.
        ArgumentTypeError
            `kernels` is not a list or tuple, `pairs` not integer.

        See Also
        --------
        KernelFeatures : the factorisation, and the Nyström features of new entities.

        Examples
        --------
        >>> import numpy as np, kronnet as kn
        >>> rng = np.random.default_rng(0)
        >>> drug_x, protein_x = rng.standard_normal((5, 3)), rng.standard_normal((4, 6))
        >>> K_drugs = drug_x @ drug_x.T                                       # (5, 5), rank 3
        >>> sq = ((protein_x[:, None] - protein_x[None]) ** 2).sum(-1)
        >>> K_proteins = np.exp(-sq / 6)                                      # (4, 4), Gaussian
        >>> pairs = [[0, 1], [3, 2], [4, 0], [0, 0]]
        >>> data = kn.PairData.from_kernels([K_drugs, K_proteins], pairs, y=[1.0, -1.0, 0.5, 0.2])
        >>> data.dims
        (3, 4)
        >>> a, b = np.array(pairs).T
        >>> bool(np.allclose(data.inner_products(), K_drugs[np.ix_(a, a)] * K_proteins[np.ix_(b, b)]))
        True

        Cold start: a new drug enters through its kernel row against the 5
        training drugs. :class:`~kronnet.KernelFeatures` of the same kernel
        gives the same table, so the new drug's features are appended to
        it as entity 5, and a net trained on `data` predicts its pairs:

        >>> drugs, proteins = kn.KernelFeatures(K_drugs), kn.KernelFeatures(K_proteins)
        >>> bool(np.array_equal(drugs.features, data.tables[0]))
        True
        >>> new_x = rng.standard_normal((1, 3))
        >>> table = np.vstack([drugs.features, drugs.transform(new_x @ drug_x.T)])   # (6, 3)
        >>> new = kn.PairData([table, proteins.features], [[5, 0], [5, 3]])
        >>> bool(np.allclose(new.inner_products(data)[0, 2], (new_x @ drug_x[4]) * K_proteins[0, 0]))
        True
        >>> net = kn.TwoLayerNet(data.dims, width=64, seed=0)
        >>> net.predict(new).shape
        (2,)
        """
        if isinstance(kernels, np.ndarray) or not isinstance(kernels, (list, tuple)):
            raise ArgumentTypeError(
                "kernels", f"expected a list of 2-D arrays (one entity kernel per factor), got {type(kernels).__name__}"
            )
        if len(kernels) < 1:
            raise ArgumentError("kernels", "need at least 1 entity kernel, got 0")
        center = v.flag(center, "center")
        # The cheap checks come before any eigendecomposition.
        try:
            shape = np.shape(pairs)
        except (ValueError, TypeError):
            shape = ()
        if len(shape) == 2 and shape[1] != len(kernels):
            raise ArgumentError(
                "pairs", f"has {shape[1]} columns for {len(kernels)} kernels (one column per kernel); shape {shape}"
            )
        tables = []
        for k, kernel in enumerate(kernels):
            name = f"kernels[{k}]"
            try:
                features = KernelFeatures(kernel, center=center)
            except ArgumentTypeError as exc:
                raise ArgumentTypeError(name, exc.reason) from None
            except ArgumentError as exc:
                raise ArgumentError(name, exc.reason) from None
            tables.append(np.array(features.features))
        return cls(tables, pairs, y, copy=False)

    def _retargeted(self, y: Optional[np.ndarray]) -> PairData:
        return PairData._from_parts(list(self._tables), list(self._columns), y)

    def __getstate__(self) -> Dict[str, Any]:
        return {
            "tables": [np.array(t) for t in self._tables],
            "pairs": np.array(self.pairs),
            "y": None if self._y is None else np.array(self._y),
        }

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__init__(state["tables"], state["pairs"], state["y"], copy=False)  # type: ignore[misc]

    def __repr__(self) -> str:
        labelled = "with targets" if self._y is not None else "no targets"
        return f"PairData(n={self.n}, entities={self.n_entities}, dims={self.dims}, d={self.d}, {labelled})"


def _table_log_norms(t: np.ndarray, k: int) -> np.ndarray:
    """ln ||row|| of a table (-inf for zero rows), refusing extreme rows."""
    logs = v.row_log_norms(t)
    finite = np.isfinite(logs)
    bad = np.flatnonzero(finite & (np.abs(np.where(finite, logs, 0.0)) > math.log(TABLE_SPREAD)))
    if bad.size:
        raise ArgumentError(
            f"tables[{k}]",
            f"row {int(bad[0])} has norm e^{float(logs[bad[0]]):.1f}; table rows need norms within "
            f"[{1 / TABLE_SPREAD:g}, {TABLE_SPREAD:g}] (rescale the table)",
        )
    return logs
