"""The machine's ceilings, measured on every thread of kronnet's pool at
once, for reading achieved rates against them (``kronnet bench``)."""

from __future__ import annotations

from typing import Optional

from . import _core


def fma_peak_gflops(seconds: float = 0.2) -> Optional[float]:
    """The float64 FMA peak of this machine, in GFLOP/s.

    Every thread of kronnet's pool runs 256-bit fused multiply-adds on 12
    independent accumulators for about `seconds`; the best rate of several
    bursts is returned.

    Parameters
    ----------
    seconds : float, default 0.2
        Time to spend measuring (a budget that is not a sane number of
        seconds runs one burst).

    Returns
    -------
    float or None
        GFLOP/s, or None when the CPU lacks AVX2 and FMA.

    Examples
    --------
    >>> from kronnet.roofline import fma_peak_gflops
    >>> peak = fma_peak_gflops(0.01)
    >>> peak is None or peak > 0
    True
    """
    out = _core.fma_peak_gflops(float(seconds))
    return None if out is None else float(out)


def stream_gbytes(nbytes: int, seconds: float = 0.2) -> Optional[float]:
    """Read-plus-write bandwidth of a buffer of `nbytes`, in GB/s.

    Every thread of kronnet's pool streams over its share of the buffer in
    place (each value read and written once per pass, as a step's update of
    P does) for about `seconds`; the fastest pass counts. The size picks the
    memory level: a buffer the size of a trainer's P measures the level P
    lives in (a cache for small n, DRAM once P outgrows the last-level
    cache), which is what a step's lower bound needs.

    Parameters
    ----------
    nbytes : int
        Size of the buffer.
    seconds : float, default 0.2
        Time to spend measuring (at least one pass).

    Returns
    -------
    float or None
        GB/s (1e9 bytes), or None when the buffer cannot be allocated.

    Examples
    --------
    >>> from kronnet.roofline import stream_gbytes
    >>> stream_gbytes(1 << 20, 0.01) > 0
    True
    """
    out = _core.stream_gbytes(int(nbytes), float(seconds))
    return None if out is None else float(out)


def normals_per_second(seconds: float = 0.2) -> float:
    """Standard normals per second that the generator of the initial
    weights W(0) draws on all pool threads at once.

    Parameters
    ----------
    seconds : float, default 0.2
        Time to spend measuring.

    Returns
    -------
    float
        Normals per second.

    Examples
    --------
    >>> from kronnet.roofline import normals_per_second
    >>> normals_per_second(0.01) > 0
    True
    """
    return float(_core.normals_per_second(float(seconds)))


def thread_count() -> int:
    """Threads in kronnet's pool (``RAYON_NUM_THREADS``, else one per core).

    Examples
    --------
    >>> from kronnet.roofline import thread_count
    >>> thread_count() >= 1
    True
    """
    return int(_core.thread_count())


__all__ = ["fma_peak_gflops", "normals_per_second", "stream_gbytes", "thread_count"]
