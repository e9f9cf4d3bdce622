"""Data sets: n points x_i = u_i^(1) ⊗ … ⊗ u_i^(p) kept as their factors.

:class:`KronPoints` is what every kind provides; :class:`KronData` stores a
factor row per point (or r terms per point), :class:`PairData` entity tables
and an index into them; ``make_kronecker_data`` and ``make_pair_data``
generate data with something to learn; :class:`KernelFeatures` turns an
entity kernel into an entity table.
"""

from .generators import make_kronecker_data, make_pair_data
from .kernels import KernelFeatures
from .kron import FactorsLike, KronData, as_points
from .pairs import PairData
from .points import CoreLayout, KronPoints, from_arrays

__all__ = [
    "CoreLayout",
    "FactorsLike",
    "KernelFeatures",
    "KronData",
    "KronPoints",
    "PairData",
    "as_points",
    "from_arrays",
    "make_kronecker_data",
    "make_pair_data",
]
