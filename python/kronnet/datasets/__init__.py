"""Loaders for public data sets, as kronnet data objects.

kronnet ships no data: each loader reads the files its distributor
publishes, from a folder the user downloaded, and checks them against the
checksums of the published release.

:func:`movielens_100k` reads GroupLens's MovieLens 100k folder into
(train, test) :class:`~kronnet.PairData` over user and item tables.
"""

from .movielens import ChecksumError, main_effects, movielens_100k

__all__ = ["ChecksumError", "main_effects", "movielens_100k"]
