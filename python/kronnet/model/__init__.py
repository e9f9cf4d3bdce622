"""The two-layer network: :class:`TwoLayerNet` owns its weights (the
coefficient blocks over its training sets), predicts, and saves itself in
kronnet's file format (:mod:`kronnet.model.format`)."""

from .net import CoefficientBlock, TwoLayerNet, default_threshold, gaussian_tail, load
from .state import BlockState, NetState

__all__ = ["BlockState", "CoefficientBlock", "NetState", "TwoLayerNet", "default_threshold", "gaussian_tail", "load"]
