"""Learning rates of the right scale for kronnet's model."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .. import _validate as v
from ..data import KronPoints
from ..errors import ArgumentError, ArgumentTypeError
from ..model import TwoLayerNet, gaussian_tail


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


#: The parameter groups SGD can train, in the order of :data:`RATE_NAMES`:
#: hidden weights W, output weights a, thresholds b, output bias c, linear
#: term v.
PARTS = "wabcv"
_RATE_OF_PART = dict(zip(PARTS, ("lr", "lr_a", "lr_b", "lr_c", "lr_v")))
#: An upper bound on the loss's second derivative in f (its curvature): the
#: softmax Hessian diag(p) - p p^T has eigenvalues at most 1/2, the logistic
#: one p (1 - p) at most 1/4.
_CURVATURE = {"squared": 1.0, "logistic": 0.25, "cross_entropy": 0.5}
_SAMPLE = 512


def suggest_rates(
    net: TwoLayerNet,
    batch_size: int = 8,
    data: Optional[KronPoints] = None,
    parts: str = "wabc",
    loss: str = "squared",
) -> Dict[str, float]:
    """Learning rates for every trained part of the model, on one scale.

    Each parameter group g moves a point's output along its tangent kernel
    K_g(x, x'): an SGD step on a batch of S points changes f(x_i) by about
    -lr_g * ell'' * (K_g(x_i, x_i) / S + lambda_g) * e_i, where ell'' bounds
    the loss's curvature (1 squared, 1/4 logistic, 1/2 cross-entropy) and
    lambda_g is the largest eigenvalue of the kernel's off-diagonal part
    divided by n (the share of a step that reaches the other points). With
    G groups trained at once their moves add up, so each gets
    lr_g = 1 / (2 G h_g), h_g = ell'' (K_g(x, x) / S + lambda_g): together
    they halve a point's residual, as :func:`suggest_lr` does for W alone.
    The kernels at initialization, for unit-norm points with correlation
    rho and z ~ N(0, 1) preactivations (docs/design.md, "Learning rates"):

    ====  ==================================  ===========================
    part  K_g(x, x')                           diagonal (rho = 1)
    ====  ==================================  ===========================
    W     rho P(z > b, z' > b)                 q = P(z > b)
    a     E[relu(z - b) relu(z' - b)]          (1 + b^2) q - b phi(b)
    b     P(z > b, z' > b)                     q
    c     1                                    1
    v     rho                                  1
    ====  ==================================  ===========================

    Parameters
    ----------
    net : TwoLayerNet
        The net to train; its width, initial threshold and init are used.
    batch_size : int, default 8
        S, the batch size the trainer will use.
    data : KronData or PairData, optional
        The training points. When given, lambda_g comes from the kernels on
        a sample of up to 512 of its points (their correlations, computed
        d-free from the factors); without it the points are taken to be
        orthogonal (rho = 0), the high-dimensional case.
    parts : str, default "wabc"
        The groups to train, a subset of ``"wabcv"``; the others get 0.0.
    loss : {"squared", "logistic", "cross_entropy"}, default "squared"
        The trainer's loss.

    Returns
    -------
    dict of str to float
        Keys ``lr, lr_a, lr_b, lr_c, lr_v``, ready for
        ``Trainer(net, data, **rates)``. With ``parts="w"`` and no data,
        ``lr`` is :func:`suggest_lr`'s.

    Raises
    ------
    ArgumentError
        `batch_size` is not positive, `parts` is empty or names an unknown
        or repeated group, `loss` is unknown, or `data` has other dims than
        the net or no points.
    ArgumentTypeError
        `data` is not a KronData or PairData.

    Examples
    --------
    >>> import kronnet as kn
    >>> net = kn.TwoLayerNet((4, 4), width=2048)
    >>> rates = kn.suggest_rates(net, 8)
    >>> sorted(rates)
    ['lr', 'lr_a', 'lr_b', 'lr_c', 'lr_v']
    >>> round(rates["lr"] * 4, 1) == round(kn.suggest_lr(net, 8), 1)  # W's share of G = 4
    True
    >>> rates["lr_v"]  # not among the parts
    0.0
    >>> data = kn.make_kronecker_data(200, dims=(4, 4), seed=0)
    >>> tr = kn.Trainer(net, data, batch_size=8, **kn.suggest_rates(net, 8, data))
    >>> hist = tr.fit(200)
    >>> hist.full_loss[-1][1] < 0.5 * hist.full_loss[0][1]
    True
    """
    batch_size = v.positive_int(batch_size, "batch_size")
    chosen = _parse_parts(parts)
    if loss not in _CURVATURE:
        raise ArgumentError("loss", f"must be one of {sorted(_CURVATURE)}, got {loss!r}")
    geometry = None if data is None else _sample_geometry(data, net)
    rates = dict.fromkeys(_RATE_OF_PART.values(), 0.0)
    for part in chosen:
        diagonal, spread = _kernel(part, net, geometry)
        h = _CURVATURE[loss] * (diagonal / batch_size + spread * (batch_size - 1) / batch_size)
        rates[_RATE_OF_PART[part]] = 1.0 / (2.0 * len(chosen) * h)
    return rates


def epoch_averaged_rate(rate: float, groups: int, batch_size: int, n: int) -> float:
    """`rate`, a :func:`suggest_rates` rate among `groups` trained groups,
    slowed so that its steps average the gradient over about an epoch.

    For a group whose kernel is global (the output bias c moves every
    output alike) that an exact fit has already set. A suggested rate
    contracts such a group's error by 1 / (2 G) a step, so its value
    follows the mean residual of the last few batches, whose noise
    (sigma / sqrt(S) a batch) then moves every prediction. At
    2 G S / n times the rate the contraction is S / n a step: the group
    weighs about the last n / S batches, every point once, and tracks
    slow drift (the hidden layer's training shifts the mean output)
    rather than batch noise. On MovieLens-100k, SGD from the exact start
    with the suggested rate swung the held-out RMSE between 0.918 and
    0.946 from one check to the next; with this one it stays within
    0.0004 of the start (docs/design.md, "Learning rates").

    Parameters
    ----------
    rate : float
        The group's rate from :func:`suggest_rates`.
    groups : int
        G, the number of groups trained at once (those with a nonzero
        rate), as :func:`suggest_rates` counted them.
    batch_size : int
        S.
    n : int
        Training points.

    Returns
    -------
    float
        rate * min(1, 2 G S / n): unchanged when an epoch is at most 2 G
        batches.

    Examples
    --------
    >>> from kronnet.training.lr import epoch_averaged_rate
    >>> epoch_averaged_rate(0.5, groups=3, batch_size=8, n=4800)
    0.005
    >>> epoch_averaged_rate(0.5, groups=3, batch_size=8, n=40)  # unchanged
    0.5
    """
    return rate * min(1.0, 2.0 * groups * batch_size / n)


def _parse_parts(parts: Any) -> str:
    if not isinstance(parts, str):
        raise ArgumentTypeError("parts", f"must be a str such as 'wabc', got {type(parts).__name__}")
    if not parts or any(p not in PARTS for p in parts) or len(set(parts)) != len(parts):
        raise ArgumentError("parts", f"must be distinct letters of {PARTS!r} (W, a, b, c, v), got {parts!r}")
    return parts


def _sample_geometry(data: Any, net: TwoLayerNet) -> Tuple[np.ndarray, np.ndarray]:
    """(norms (s,), correlations (s, s)) of a fixed sample of the points,
    from their inner products (d-free)."""
    if not isinstance(data, KronPoints):
        raise ArgumentTypeError("data", f"must be a KronData or PairData, got {type(data).__name__}")
    if data.dims != net.dims:
        raise ArgumentError("data", f"has dims {data.dims} but the net has {net.dims}")
    if data.n == 0:
        raise ArgumentError("data", "has no points")
    # A fixed seed: every MPI rank and every call picks the same sample.
    rows = np.sort(np.random.default_rng(0).permutation(data.n)[:_SAMPLE])
    gram = data.take(rows).inner_products()
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    safe = np.maximum(norms, 1e-300)
    rho: np.ndarray = np.clip(gram / safe[:, None] / safe[None, :], -1.0, 1.0)
    return norms, rho


def _kappa(net: TwoLayerNet) -> float:
    """The init's firing fraction over the Gaussian one: 1 for Gaussian
    init; the Kronecker init's tail differs slightly."""
    unit = gaussian_tail(net.threshold)
    return net.firing_fraction() / unit if unit > 0 else 1.0


def _diagonal(part: str, b: float, kappa: float, r: np.ndarray) -> np.ndarray:
    """K_g(x, x) at points of norm r: preactivations are N(0, r^2), so a
    neuron fires with probability P(z > b / r); firing terms scaled by
    `kappa` (`_kappa`)."""
    # Beyond |t| = 40 the Gaussian tails are 0 or 1 in float64; clipping
    # keeps t * t and t * phi(t) finite for points of (near) zero norm.
    t = np.clip(b / np.maximum(r, 1e-300), -40.0, 40.0)
    if part == "w":
        out = kappa * r * r * _tail(t)
    elif part == "a":
        out = r * r * ((1.0 + t * t) * _tail(t) - t * _phi(t))
    elif part == "b":
        out = kappa * _tail(t)
    elif part == "c":
        out = np.ones_like(r)
    else:
        out = r * r
    diagonal: np.ndarray = np.asarray(out, dtype=float)
    return diagonal


def _kernel(part: str, net: TwoLayerNet, geometry: Optional[Tuple[np.ndarray, np.ndarray]]) -> Tuple[float, float]:
    """(max_i K_g(x_i, x_i), lambda_g) for one group: the largest diagonal
    over the sample (a point the step overshoots diverges, however rare) and
    the largest eigenvalue of the off-diagonal kernel matrix over its size
    (0 if negative). Off the diagonal the unit-norm kernel at rho is scaled
    by sqrt(K_ii K_jj) / K(1): exact for equal norms, and for v and c always."""
    one, b, kappa = np.ones(1), net.threshold, _kappa(net)
    # The floor 1/m of suggest_lr: at least one neuron fires.
    floor = 1.0 / net.width if part in ("w", "b") else 0.0
    # The Gaussian unit-norm kernel at rho = 1, in closed form.
    at_one = float(_diagonal(part, b, 1.0, one)[0])
    if geometry is None:
        # Unit-norm, orthogonal points: every off-diagonal entry is the
        # kernel at rho = 0.
        diagonal = max(float(_diagonal(part, b, kappa, one)[0]), floor)
        return diagonal, max(_kappa_of(part, kappa) * float(_pair_kernel(part, b, np.zeros(1))[0]), 0.0)
    norms, rho = geometry
    d = _diagonal(part, b, kappa, norms)
    diagonal = max(float(d.max()), floor)
    s = rho.shape[0]
    if s < 2 or at_one <= 0:
        return diagonal, 0.0
    root = np.sqrt(d)
    k = _pair_kernel(part, b, rho) / at_one * root[:, None] * root[None, :]
    np.fill_diagonal(k, 0.0)
    top = float(np.linalg.eigvalsh(k)[-1]) / s
    return diagonal, max(top, 0.0)


def _kappa_of(part: str, kappa: float) -> float:
    """The init's scale of a group's firing terms (`_kappa` for W and b)."""
    return kappa if part in ("w", "b") else 1.0


def _phi(x: Any) -> Any:
    return np.exp(-0.5 * np.square(x)) / math.sqrt(2.0 * math.pi)


_erfc = np.vectorize(math.erfc, otypes=[float])


def _tail(x: Any) -> Any:
    """P(N(0, 1) > x), elementwise."""
    return 0.5 * _erfc(np.asarray(x, dtype=float) / math.sqrt(2.0))


def _pair_kernel(part: str, b: float, rho: np.ndarray) -> np.ndarray:
    """K_g at correlation rho (any shape), off the diagonal, for standard
    normal preactivations z, z' with correlation rho."""
    if part == "v":
        same: np.ndarray = rho.copy()
        return same
    if part == "c":
        ones: np.ndarray = np.ones_like(rho)
        return ones
    grid = np.linspace(-1.0, 1.0, 129)
    # z = t, z' = rho t + sqrt(1 - rho^2) s: one integral over t > b of the
    # conditional expectation over s, which is closed-form.
    lo = max(b, -10.0)
    t = np.linspace(lo, lo + 12.0, 1201)
    r = grid[:, None]
    sd = np.sqrt(np.clip(1.0 - r * r, 1e-18, None))
    mu = r * t[None, :] - b
    if part in ("w", "b"):
        inner = _tail(-mu / sd)  # P(z' > b | z = t)
        values = _integral(_phi(t)[None, :] * inner, t)
        if part == "w":
            values = grid * values
    else:  # "a": E[relu(z' - b) | z = t] = mu Phi(mu / sd) + sd phi(mu / sd)
        inner = mu * (1.0 - _tail(mu / sd)) + sd * _phi(mu / sd)
        values = _integral((_phi(t) * (t - b))[None, :] * inner, t)
    out: np.ndarray = np.interp(rho, grid, values)
    return out


def _integral(f: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The trapezoid rule along the last axis (np.trapz is gone from NumPy 2
    and np.trapezoid is new in it)."""
    dt = np.diff(t)
    total: np.ndarray = np.sum(0.5 * (f[..., 1:] + f[..., :-1]) * dt, axis=-1)
    return total
