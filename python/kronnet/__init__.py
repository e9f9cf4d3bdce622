"""kronnet: exact SGD for two-layer networks on Kronecker-structured inputs,
at a per-step cost independent of the input dimension d.

    import kronnet as kn
    data = kn.make_kronecker_data(512, dims=(64, 64), seed=0)
    net = kn.TwoLayerNet(dims=data.dims, width=2048, seed=0)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), batch_size=8)
    history = tr.fit(2000, progress=True)
"""

from ._core import DivergenceError, KronnetError
from ._core import __version__
from .data import KronData, make_kronecker_data
from .net import TwoLayerNet, default_threshold
from .train import History, Trainer, suggest_lr
from .tree import AsyncTree

__all__ = [
    "AsyncTree",
    "DivergenceError",
    "History",
    "KronData",
    "KronnetError",
    "Trainer",
    "TwoLayerNet",
    "default_threshold",
    "make_kronecker_data",
    "suggest_lr",
]
