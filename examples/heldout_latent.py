"""Held-out error on structured Kronecker data at d = 2^16.

Trains a TwoLayerNet (width 2048, lr = kn.suggest_lr) on n = 2000 points of
``make_kronecker_data(..., latent_dim=8)`` with dims (256, 256), and tracks
the loss on 500 held-out points of the same generator (another seed) with
``Trainer.fit(validation=...)``. Prints the held-out MSE as a fraction of
the held-out targets' variance, and the wall times.

Run (a few minutes on 2 cores)::

    PYTHONPATH=python python3 examples/heldout_latent.py [--steps 6000]
"""

from __future__ import annotations

import argparse
import time

import kronnet as kn
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--held-out", type=int, default=500)
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--checkpoints", type=int, default=4, help="validation checkpoints after the start")
    args = parser.parse_args()
    dims = tuple(args.dims)

    t0 = time.perf_counter()
    train = kn.make_kronecker_data(args.n, dims=dims, seed=0, latent_dim=args.latent_dim)
    held_out = kn.make_kronecker_data(args.held_out, dims=dims, seed=1, latent_dim=args.latent_dim)
    var = float(held_out.y.var())
    net = kn.TwoLayerNet(dims, width=args.width, seed=0)
    lr = kn.suggest_lr(net, 8)
    print(
        f"n={train.n} train, {held_out.n} held-out, dims={dims} (d={train.d}), latent_dim={args.latent_dim}, "
        f"width={net.width}, lr={lr:.4g}, steps={args.steps}; var(y_held_out)={var:.4f}"
    )
    t1 = time.perf_counter()
    tr = kn.Trainer(net, train, lr=lr, batch_size=8, seed=0)
    t2 = time.perf_counter()
    print(f"data {t1 - t0:.1f} s, trainer init {t2 - t1:.1f} s (index={tr.index}, gram={tr.gram})")
    hist = tr.fit(args.steps, eval_every=max(1, args.steps // args.checkpoints), validation=held_out)
    t3 = time.perf_counter()
    print(" step   train MSE   held-out MSE   held-out MSE / var(y)")
    for (step, full), (_, val) in zip(hist.full_loss, hist.val_loss):
        print(f"{step:5d}   {2 * full:9.4f}   {2 * val:12.4f}   {2 * val / var:21.3f}")
    mse = float(np.mean((net.predict(held_out) - held_out.y) ** 2))
    print(f"final held-out MSE / var(y) = {mse / var:.3f} (target < 0.3)")
    print(
        f"fit {t3 - t2:.1f} s for {hist.steps} steps incl. {len(hist.val_loss)} validation checkpoints; "
        f"total {time.perf_counter() - t0:.1f} s"
    )


if __name__ == "__main__":
    main()
