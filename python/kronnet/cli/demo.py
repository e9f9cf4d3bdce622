"""`kronnet demo`: trains on generated Kronecker data and compares the
Kronecker backend's per-step time with the dense backend's on identical
steps, then trains on structured data (``latent_dim``) and reports the loss
on held-out points."""

from __future__ import annotations

import argparse
import math
import time
from typing import Tuple

import numpy as np

from kronnet import Trainer, TwoLayerNet, make_kronecker_data, suggest_lr


def _time_steps(tr: Trainer, steps: int) -> Tuple[float, np.ndarray]:
    """(seconds per step, batch losses) over `steps` sampled steps."""
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        losses.append(tr.step())
    return (time.perf_counter() - start) / steps, np.array(losses)


def run(args: argparse.Namespace) -> int:
    """Runs the demo with the options of `kronnet demo` (see ``kronnet.cli``)."""
    dims = tuple(args.dims)
    d = math.prod(dims)
    data = make_kronecker_data(args.n, dims=dims, seed=args.seed)
    net = TwoLayerNet(dims=dims, width=args.width, seed=args.seed)
    lr = args.lr if args.lr is not None else suggest_lr(net, args.batch_size)
    print(
        f"kronnet demo: n={data.n} points, dims={dims} (d={d}), width m={net.width}, "
        f"threshold b={net.threshold:.3f}, batch S={args.batch_size}, lr={lr:.4g}"
    )
    t0 = time.perf_counter()
    tr = Trainer(net, data, lr=lr, batch_size=args.batch_size, seed=args.seed)
    print(f"init (P(0) = <w_r(0), x_i> by regenerated GEMMs, index={tr.index}): {time.perf_counter() - t0:.2f} s")
    hist = tr.fit(args.steps, progress=not args.no_progress, eval_every=max(1, args.steps // 10))
    print("\nfull training loss:")
    for step, loss in hist.full_loss:
        print(f"  step {step:6d}   {loss:.3e}")
    start, end = hist.full_loss[0][1], hist.full_loss[-1][1]
    print(
        f"loss fell {start / end:.3g}x in {hist.steps} steps ({hist.seconds:.1f} s); "
        f"neurons fired per point: {hist.fired_per_point.mean():.0f} of {net.width} "
        f"({hist.fired_per_point.mean() / net.width:.1%}), moved per step: {hist.fired_union.mean():.0f}"
    )

    # Same model, same seed, same batches: the dense backend must agree, and
    # it shows what the d-independent step saves.
    k = args.compare_steps
    kron = Trainer(TwoLayerNet(dims, args.width, seed=args.seed), data, lr=lr, batch_size=args.batch_size, seed=1)
    dense = Trainer(
        TwoLayerNet(dims, args.width, seed=args.seed), data, lr=lr, batch_size=args.batch_size, seed=1, backend="dense"
    )
    kron.step()  # warm-up, mirrored on the dense side so batches stay aligned
    dense.step()
    t_kron, l_kron = _time_steps(kron, k)
    t_dense, l_dense = _time_steps(dense, k)
    rel = float(np.max(np.abs(l_kron - l_dense) / np.maximum(np.abs(l_dense), 1e-300)))
    print(f"\nper-step time over {k} identical steps (same seed, same batches):")
    print(f"  kronecker backend  {t_kron * 1e3:9.3f} ms")
    print(f"  dense backend      {t_dense * 1e3:9.3f} ms   (materialized X: n × {d}, W: {net.width} × {d})")
    print(f"  speedup            {t_dense / t_kron:9.1f}x   max relative loss difference {rel:.1e}")
    _held_out(args, dims, lr)
    return 0


#: The latent dimension of the demo's structured data.
LATENT_DIM = 8


def _held_out(args: argparse.Namespace, dims: Tuple[int, ...], lr: float) -> None:
    """Trains a fresh net on latent_dim data and prints its training and
    held-out losses at the start and the end, against var(y) held out."""
    train = make_kronecker_data(args.n, dims=dims, seed=args.seed, latent_dim=LATENT_DIM)
    held_out = make_kronecker_data(args.n, dims=dims, seed=args.seed + 1, latent_dim=LATENT_DIM)
    net = TwoLayerNet(dims, args.width, seed=args.seed)
    tr = Trainer(net, train, lr=lr, batch_size=args.batch_size, seed=args.seed)
    hist = tr.fit(args.steps, progress=not args.no_progress, validation=held_out)
    assert held_out.y is not None
    var = float(np.var(held_out.y))
    print(
        f"\nheld-out evaluation: a fresh net on structured data (make_kronecker_data(..., latent_dim={LATENT_DIM})),"
        f"\n{held_out.n} held-out points from the same generator (seed {args.seed + 1}):"
    )
    print("  step     train loss   held-out loss   (loss = MSE / 2)")
    for (step, full), (_, val) in zip(hist.full_loss, hist.val_loss):
        print(f"  {step:6d}   {full:10.3e}   {val:13.3e}")
    mse = 2.0 * hist.val_loss[-1][1]
    print(f"  held-out MSE {mse:.3f} vs var(y) {var:.3f} of the held-out targets: {mse / var:.1%} of the variance")
