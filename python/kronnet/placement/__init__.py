"""Where a net's neurons live (docs/design.md, "Placement").

:data:`ONE_PROCESS` holds them all in this process; a
:class:`~kronnet.placement.mpi.ShardedPlacement` spreads them over the ranks
of an MPI communicator. Nets and trainers call the :class:`Placement`
protocol and never ask which one they have.
"""

from typing import Any

from .base import EXACT_WORDS, ONE_PROCESS, LocalPlacement, Placement, StepRunner


def over(comm: Any) -> Placement:
    """The placement for `comm`: :data:`ONE_PROCESS` for None, else neurons
    sharded over the communicator's ranks (needs mpi4py).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm or None
        The communicator.

    Returns
    -------
    Placement
        Where a net trained with this `comm` keeps its neurons.

    Raises
    ------
    ArgumentTypeError
        `comm` is not an mpi4py intracommunicator.
    ImportError
        mpi4py is not installed.

    Examples
    --------
    >>> from kronnet import placement
    >>> placement.over(None) is placement.ONE_PROCESS
    True
    """
    if comm is None:
        return ONE_PROCESS
    from .mpi import ShardedPlacement

    return ShardedPlacement(comm)


__all__ = ["EXACT_WORDS", "ONE_PROCESS", "LocalPlacement", "Placement", "StepRunner", "over"]
