"""Helpers for the tests of file modes (tests/test_fileformat_edges.py,
tests/test_campaign.py)."""

import contextlib
import os


@contextlib.contextmanager
def umask(mask):
    """The process umask set to `mask` inside the block, restored after."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)
