"""kronnet: exact SGD for two-layer networks on Kronecker-structured inputs,
at a per-step cost independent of the input dimension d.

    import kronnet as kn
    data = kn.make_kronecker_data(512, dims=(64, 64), seed=0)
    net = kn.TwoLayerNet(dims=data.dims, width=2048, seed=0)
    tr = kn.Trainer(net, data, lr=kn.suggest_lr(net, 8), batch_size=8)
    history = tr.fit(2000, progress=True)
    net.save("model.kronnet")            # later: kn.load("model.kronnet")
"""

from ._core import __version__
from .data import KernelFeatures, KronData, KronPoints, PairData, make_kronecker_data, make_pair_data
from .errors import (
    ArgumentError,
    ArgumentTypeError,
    ConcurrentUseError,
    DivergenceError,
    FileFormatError,
    KronnetError,
    OutOfMemoryError,
    RankMismatchError,
    StaleTrainerError,
)
from .model import CoefficientBlock, TwoLayerNet, default_threshold, load
from .training import History, Trainer, TrainerConfig, suggest_lr, suggest_rates
from .tree import AsyncTree

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "AsyncTree",
    "CoefficientBlock",
    "ConcurrentUseError",
    "DivergenceError",
    "FileFormatError",
    "History",
    "KernelFeatures",
    "KronData",
    "KronPoints",
    "KronnetError",
    "OutOfMemoryError",
    "PairData",
    "RankMismatchError",
    "StaleTrainerError",
    "Trainer",
    "TrainerConfig",
    "TwoLayerNet",
    "__version__",
    "default_threshold",
    "load",
    "make_kronecker_data",
    "make_pair_data",
    "suggest_lr",
    "suggest_rates",
]
