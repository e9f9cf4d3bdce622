"""Learning rates of the right scale for kronnet's model."""

from __future__ import annotations

from .. import _validate as v
from ..model import TwoLayerNet


def suggest_lr(net: TwoLayerNet, batch_size: int = 8) -> float:
    """A learning rate of the right scale for this model on unit-norm inputs.

    An SGD step on a batch of S points moves each point's output by about
    -(lr / S) * q * e_i, where q = P(<w_r(0), x> > b) is the fraction of
    neurons a unit-norm input fires (the diagonal of the model's tangent
    kernel). lr = S / (2 q) halves a point's residual each time it is
    sampled, and stays well inside the stable range lr < 2 S / q.

    Parameters
    ----------
    net : TwoLayerNet
        The net to train; only its threshold b and width m are used.
    batch_size : int, default 8
        S, the batch size the trainer will use.

    Returns
    -------
    float
        S / (2 q), with q = :meth:`TwoLayerNet.firing_fraction` (P(N(0, 1) > b)
        for Gaussian init) floored at 1/m. Far above the
        usual 0.1: about 99 for m = 2048 and S = 8.

    Raises
    ------
    ArgumentError
        `batch_size` is not positive.

    Examples
    --------
    >>> import kronnet as kn
    >>> net = kn.TwoLayerNet((4, 4), width=2048)
    >>> round(kn.suggest_lr(net, 8), 1)
    99.1
    >>> round(kn.suggest_lr(net, 16) / kn.suggest_lr(net, 8), 6)  # linear in S
    2.0
    """
    batch_size = v.positive_int(batch_size, "batch_size")
    q = net.firing_fraction()
    return batch_size / (2.0 * max(q, 1.0 / net.width))
