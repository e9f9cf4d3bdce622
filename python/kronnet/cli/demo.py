"""`kronnet demo`: trains a network on generated Kronecker data, runs the
same steps on the dense backend (same losses, time per step, memory), then
trains a fresh network on structured data and scores it on held-out points
(R², from the held-out loss and the held-out targets' variance)."""

from __future__ import annotations

import argparse
import math
import time
from typing import Tuple

import numpy as np

from kronnet import Trainer, TwoLayerNet, make_kronecker_data, suggest_lr

#: The latent dimension of the demo's structured data.
LATENT_DIM = 8

#: Largest relative difference between the two backends' losses that the
#: demo calls the same result.
SAME_RESULT = 1e-10


def _time_steps(tr: Trainer, steps: int) -> Tuple[float, np.ndarray]:
    """(seconds per step, batch losses) over `steps` sampled steps."""
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        losses.append(tr.step())
    return (time.perf_counter() - start) / steps, np.array(losses)


def _sizes(dims: Tuple[int, ...]) -> str:
    """'128 and 128', '8, 8 and 8'."""
    words = [str(k) for k in dims]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:,.0f} KiB"


def _times(ratio: float, more: str, less: str) -> str:
    """'3.2× faster' for a ratio of 3.2, '2.0× slower' for 0.5."""
    return f"{ratio:.1f}× {more}" if ratio >= 1 else f"{1 / ratio:.1f}× {less}"


def r_squared(mse: float, variance: float) -> float:
    """R² of predictions with mean squared error `mse` on targets of
    (population) variance `variance`: 1 - mse / variance, the share of the
    targets' variance the predictions explain."""
    return 1.0 - mse / variance


def run(args: argparse.Namespace) -> int:
    """Runs the demo with the options of `kronnet demo` (see ``kronnet.cli``)."""
    dims = tuple(args.dims)
    d = math.prod(dims)
    data = make_kronecker_data(args.n, dims=dims, seed=args.seed)
    net = TwoLayerNet(dims=dims, width=args.width, seed=args.seed)
    lr = args.lr if args.lr is not None else suggest_lr(net, args.batch_size)
    product = " × ".join(map(str, dims))
    print(
        f"kronnet demo: a two-layer ReLU network with m = {net.width} hidden neurons, trained by SGD\n"
        f"on n = {data.n} points. Each point is the Kronecker product of {len(dims)} random unit vectors\n"
        f"of sizes {_sizes(dims)}, so it has d = {product} = {d} features.\n"
        f"A neuron fires when its input exceeds b = {net.threshold:.3f}.\n"
        f"SGD: {args.batch_size} points per step, learning rate {lr:.4g}"
        f"{' (kronnet.suggest_lr)' if args.lr is None else ''}."
    )

    print(
        f"\n1. Fitting the {data.n} points' targets (made by a random 'teacher' network: this shows"
        " the training,\n   not learning anything that carries over to new points)."
    )
    t0 = time.perf_counter()
    tr = Trainer(net, data, lr=lr, batch_size=args.batch_size, seed=args.seed)
    print(f"   set-up (every neuron's initial input from every point): {time.perf_counter() - t0:.2f} s")
    hist = tr.fit(args.steps, progress=not args.no_progress, eval_every=max(1, args.steps // 10))
    print(f"   training loss (half the mean squared error over all {data.n} points):")
    for step, loss in hist.full_loss:
        print(f"     step {step:6d}   {loss:.3e}")
    start, end = hist.full_loss[0][1], hist.full_loss[-1][1]
    fired = float(hist.fired_per_point.mean())
    print(
        f"   trained {hist.steps} steps in {hist.seconds:.2f} s: {hist.steps / max(hist.seconds, 1e-9):,.0f} steps/s"
        f" (the {len(hist.full_loss)} loss evaluations above included);"
        f"\n   the loss fell {start / end:.3g}×."
        f" Each point fires {fired:.0f} of the {net.width} neurons on average ({fired / net.width:.1%});"
        f"\n   a step updates only the neurons its batch fires ({hist.fired_union.mean():.0f} on average),"
        " at a cost independent of d."
    )

    # Same model, same seed, same batches: the dense backend must agree, and
    # it shows what the d-independent step saves.
    k = args.compare_steps
    kron_net = TwoLayerNet(dims, args.width, seed=args.seed)
    dense_net = TwoLayerNet(dims, args.width, seed=args.seed)
    mem_kron = Trainer.estimate_memory(kron_net, data)
    mem_dense = Trainer.estimate_memory(dense_net, data, backend="dense")
    kron = Trainer(kron_net, data, lr=lr, batch_size=args.batch_size, seed=1)
    dense = Trainer(dense_net, data, lr=lr, batch_size=args.batch_size, seed=1, backend="dense")
    kron.step()  # warm-up, mirrored on the dense side so batches stay aligned
    dense.step()
    t_kron, l_kron = _time_steps(kron, k)
    t_dense, l_dense = _time_steps(dense, k)
    rel = float(np.max(np.abs(l_kron - l_dense) / np.maximum(np.abs(l_dense), 1e-300)))
    print(
        f"\n2. The same {k} steps (same start, same batches) with kronnet's Kronecker backend and with"
        f" ordinary\n   dense training, which stores each point as a {d}-long vector and the weights"
        f" as {net.width} × {d}:"
    )
    print(f"     Kronecker backend  {t_kron * 1e3:9.3f} ms per step")
    print(f"     dense training     {t_dense * 1e3:9.3f} ms per step")
    if rel <= SAME_RESULT:
        same = f"the same loss on every step, to {SAME_RESULT:.0e} (largest relative difference {rel:.1e})"
    else:
        same = f"losses that differ by up to {rel:.1e} relative (more than {SAME_RESULT:.0e}: unexpected)"
    print(
        f"   Both give {same}.\n   The Kronecker backend is {_times(t_dense / t_kron, 'faster', 'slower')}"
        f" per step, and needs {_mib(mem_kron)} of memory\n   where dense training needs {_mib(mem_dense)}"
        " (Trainer.estimate_memory)."
    )
    _held_out(args, dims, lr)
    return 0


def _held_out(args: argparse.Namespace, dims: Tuple[int, ...], lr: float) -> None:
    """Trains a fresh net on latent_dim data and prints its training and
    held-out losses at the start and the end, then its held-out R²."""
    train = make_kronecker_data(args.n, dims=dims, seed=args.seed, latent_dim=LATENT_DIM)
    held_out = make_kronecker_data(args.n, dims=dims, seed=args.seed + 1, latent_dim=LATENT_DIM)
    net = TwoLayerNet(dims, args.width, seed=args.seed)
    tr = Trainer(net, train, lr=lr, batch_size=args.batch_size, seed=args.seed)
    hist = tr.fit(args.steps, progress=not args.no_progress, validation=held_out)
    assert held_out.y is not None
    var = float(np.var(held_out.y))
    print(
        f"\n3. Predicting new points: a fresh network trained on {train.n} points whose targets follow a hidden"
        f"\n   pattern (make_kronecker_data(..., latent_dim={LATENT_DIM})), then tested on {held_out.n} other"
        " points\n   from the same source that it never saw (held out):"
    )
    print("     step   training loss   held-out loss   (half the mean squared error)")
    for (step, full), (_, val) in zip(hist.full_loss, hist.val_loss):
        print(f"     {step:4d}   {full:13.3e}   {val:13.3e}")
    mse = 2.0 * hist.val_loss[-1][1]
    print(
        f"   held-out R² = {r_squared(mse, var):.2f} (1 = perfect, 0 = no better than predicting the mean):"
        f"\n   mean squared error {mse:.3g} on held-out targets of variance {var:.3g}."
    )
