"""SGD training of a TwoLayerNet on KronData (DESIGN.md §3)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

import numpy as np

from . import _core
from . import _validate as v
from .data import KronData
from .net import TwoLayerNet, _Segment

BACKENDS = ("kron", "dense")
INDEXES = ("auto", "scan", "tree", "bits")
GRAM_MODES = ("auto", "precomputed", "columns")

#: Default cap on the precomputed n × n Gram matrix; larger data sets compute
#: the S needed columns per step from the factors instead.
GRAM_BUDGET_BYTES = 1 << 30

KronnetError = _core.KronnetError
DivergenceError = _core.DivergenceError


def suggest_lr(net: TwoLayerNet, batch_size: int = 8) -> float:
    """A learning rate of the right scale for this model on unit-norm inputs.

    An SGD step on a batch of S points moves each point's output by about
    -(lr / S) * q * e_i, where q = P(z > b), z ~ N(0, 1), is the fraction of
    neurons a unit-norm input fires (the diagonal of the model's tangent
    kernel). lr = S / (2 q) halves a point's residual each time it is
    sampled, and stays well inside the stable range lr < 2 S / q.
    """
    batch_size = v.positive_int(batch_size, "batch_size")
    q = 0.5 * math.erfc(net.threshold / math.sqrt(2.0))
    return batch_size / (2.0 * max(q, 1.0 / net.width))


@dataclass
class History:
    """Per-step record of `Trainer.fit`.

    Attributes
    ----------
    loss : (steps,) batch loss L_B before each update.
    fired_union : (steps,) |R|, distinct neurons fired by the batch (those
        that moved): the o(m) sparsity the algorithm exploits.
    fired_total : (steps,) sum over the batch of |A_i|.
    batch_sizes : (steps,) |B| of each step.
    full_loss : list of (step, full training loss) checkpoints, including
        before the first and after the last step.
    seconds : wall time of the fit.
    """

    loss: np.ndarray
    fired_union: np.ndarray
    fired_total: np.ndarray
    batch_sizes: np.ndarray
    full_loss: List[Tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        """Number of steps recorded."""
        return int(self.loss.shape[0])

    @property
    def fired_per_point(self) -> np.ndarray:
        """(steps,) mean |A_i| per batch point."""
        return self.fired_total / np.maximum(self.batch_sizes, 1)

    def __repr__(self) -> str:
        if self.full_loss:
            return (
                f"History(steps={self.steps}, full_loss {self.full_loss[0][1]:.4g} -> "
                f"{self.full_loss[-1][1]:.4g}, seconds={self.seconds:.3g})"
            )
        return f"History(steps={self.steps}, seconds={self.seconds:.3g})"


class Trainer:
    """Trains `net` in place on `data` by minibatch SGD.

    Parameters
    ----------
    net : TwoLayerNet whose dims equal data.dims.
    data : KronData with targets y (n,).
    lr : learning rate; see `suggest_lr` for the scale this model needs
        (for m = 2048 and S = 8 it is about 100, far above the usual 0.1).
    batch_size : S. Batches are drawn without replacement within an epoch
        (a seeded reshuffle each epoch); the last batch of an epoch is
        smaller when S does not divide n.
    index : activated-neuron finder for the Kronecker backend: "scan" (read
        P[i, :]), "tree" (the asynchronous tree), "bits" (fired bits kept
        exact by the step's threshold crossings) or "auto". All return the
        same fire sets; only speed differs.
    backend : "kron" (per-step cost independent of d) or "dense" (textbook,
        materialized X and W; the reference and a baseline, small d only).
    seed : seeds the batch order.
    gram : "precomputed" (n × n Gram once), "columns" (K[:, B] from the
        factors each step), or "auto" (precomputed when it fits
        `gram_budget_bytes`).
    """

    def __init__(
        self,
        net: TwoLayerNet,
        data: KronData,
        lr: float = 0.5,
        batch_size: int = 8,
        index: str = "auto",
        backend: str = "kron",
        seed: int = 0,
        gram: str = "auto",
        gram_budget_bytes: int = GRAM_BUDGET_BYTES,
    ) -> None:
        if not isinstance(net, TwoLayerNet):
            raise TypeError(f"net: expected a TwoLayerNet, got {type(net).__name__}")
        if not isinstance(data, KronData):
            raise TypeError(f"data: expected a KronData, got {type(data).__name__}")
        if data.y is None:
            raise ValueError("data: has no targets y; training needs KronData(factors, y)")
        if data.dims != net.dims:
            raise ValueError(f"data: has factor dimensions {data.dims}, the net expects {net.dims}")
        self._lr = v.finite_float(lr, "lr", positive=True)
        self._batch_size = v.positive_int(batch_size, "batch_size")
        if self._batch_size > data.n:
            raise ValueError(f"batch_size: {self._batch_size} exceeds the {data.n} training points")
        self._backend = v.choice(backend, "backend", BACKENDS)
        index = v.choice(index, "index", INDEXES)
        gram = v.choice(gram, "gram", GRAM_MODES)
        gram_budget_bytes = v.positive_int(gram_budget_bytes, "gram_budget_bytes")
        self._rng = np.random.default_rng(v.seed_int(seed))
        self._net = net
        self._data = data
        self._order = np.empty(0, dtype=np.int64)
        self._pos = 0
        self._steps = 0
        n, m = data.n, net.width
        if self._backend == "kron":
            self._index = _resolve_index(index, n, m, net.threshold)
            if gram == "auto":
                gram = "precomputed" if 8.0 * n * n <= gram_budget_bytes else "columns"
            gram_bytes = 8.0 * n * n if gram == "precomputed" else 0.0
            # P, alpha, a transient copy of P, and the index's nodes.
            v.ensure_fits(8.0 * n * m * 3.5 + gram_bytes, "the training state (n × width arrays)", "data, net.width")
            p0 = net.preactivations(data)
            self._core = _core.KronCore(data.factors, data.y, net.a, net.threshold, p0, gram, self._index)
            del p0
            net._segments.append(_Segment(data, self._core.alpha))
        else:
            self._index = "none"
            d = data.d
            v.ensure_fits(8.0 * (n + 2 * m) * d, "the dense backend's X (n × d) and W (width × d)", "data, net.width")
            w = net.dense_weights()
            self._core = _core.DenseCore(data.dense(), data.y, net.a, net.threshold, w)
            del w
            net._segments = []
            net._base = self._core.weights
        net._version += 1
        self._version = net._version

    # -- properties ---------------------------------------------------------

    @property
    def net(self) -> TwoLayerNet:
        """The net being trained (in place)."""
        return self._net

    @property
    def data(self) -> KronData:
        """The training data."""
        return self._data

    @property
    def lr(self) -> float:
        """Learning rate."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = v.finite_float(value, "lr", positive=True)

    @property
    def batch_size(self) -> int:
        """S."""
        return self._batch_size

    @property
    def backend(self) -> str:
        """"kron" or "dense"."""
        return self._backend

    @property
    def index(self) -> str:
        """The activated-neuron index in use ("scan", "tree", "bits"; "none"
        for the dense backend)."""
        return self._index

    @property
    def steps_done(self) -> int:
        """Steps taken so far."""
        return self._steps

    # -- batches ------------------------------------------------------------

    def next_batch(self) -> np.ndarray:
        """The next sampled batch, shape (<= S,): without replacement within
        an epoch, reshuffled (seeded) at each epoch start."""
        if self._pos >= self._order.shape[0]:
            self._order = self._rng.permutation(self._data.n).astype(np.int64)
            self._pos = 0
        batch = self._order[self._pos : self._pos + self._batch_size]
        self._pos += batch.shape[0]
        return batch

    # -- training -----------------------------------------------------------

    def _check_current(self) -> None:
        if self._net._version != self._version:
            raise KronnetError(
                "net: its weights were changed by another Trainer since this one last ran; "
                "create a new Trainer to continue training from the current weights"
            )

    def _committed(self, steps: int) -> None:
        self._steps += steps
        if steps:
            self._net._version += 1
            self._version = self._net._version

    def step(self, batch: Optional[Any] = None) -> float:
        """One SGD step on `batch` (1-D int indices, repeats allowed and
        accumulated) or, if None, on the next sampled batch.

        Returns the batch loss L_B before the update. Raises DivergenceError
        (the model left at its last finite state) if the loss or the update
        would be non-finite.
        """
        self._check_current()
        b = self.next_batch() if batch is None else v.index_array(batch, "batch", self._data.n)
        loss, _, _ = self._core.step(b, self._lr)
        self._committed(1)
        return float(loss)

    def fit(self, steps: int, progress: bool = False, eval_every: int = 0) -> History:
        """Takes `steps` sampled SGD steps.

        Parameters
        ----------
        steps : number of steps.
        progress : show a tqdm progress bar with the running batch loss.
        eval_every : also record the full training loss every this many
            steps (0: only before the first and after the last step).

        Returns
        -------
        History with per-step losses and fired-neuron counts. If a step
        diverges, DivergenceError is raised; the steps before it stay applied.
        """
        steps = v.positive_int(steps, "steps")
        eval_every = int(eval_every)
        if eval_every < 0:
            raise ValueError(f"eval_every: must be >= 0, got {eval_every}")
        self._check_current()
        start = time.perf_counter()
        losses, unions, totals, sizes = [], [], [], []
        checkpoints = [(self._steps, self.full_loss())]
        # Steps run in Rust in chunks: no Python between steps, the GIL
        # released, and still a live progress bar and checkpoints.
        chunk = max(1, min(steps // 100, 256))
        bar = _progress_bar(steps, progress)
        done = 0
        try:
            while done < steps:
                k = min(chunk, steps - done)
                if eval_every:
                    k = min(k, eval_every - done % eval_every)
                batches = [self.next_batch() for _ in range(k)]
                offsets = np.zeros(k + 1, dtype=np.int64)
                np.cumsum([b.shape[0] for b in batches], out=offsets[1:])
                loss, union, total, err = self._core.run(np.concatenate(batches), offsets, self._lr)
                ran = loss.shape[0]
                losses.append(loss)
                unions.append(union)
                totals.append(total)
                sizes.append(np.diff(offsets)[:ran])
                self._committed(ran)
                done += ran
                if bar is not None:
                    bar.update(ran)
                    if ran:
                        bar.set_postfix(batch_loss=f"{float(loss[-1]):.3e}")
                if err is not None:
                    raise err
                if eval_every and (done % eval_every == 0) and done < steps:
                    checkpoints.append((self._steps, self.full_loss()))
        finally:
            if bar is not None:
                bar.close()
        checkpoints.append((self._steps, self.full_loss()))
        return History(
            loss=np.concatenate(losses),
            fired_union=np.concatenate(unions),
            fired_total=np.concatenate(totals),
            batch_sizes=np.concatenate(sizes).astype(np.int64),
            full_loss=checkpoints,
            seconds=time.perf_counter() - start,
        )

    def index_stats(self) -> dict:
        """Work of the activation index so far: seconds spent finding fire
        sets, and counters (queries, rows_synced, full_rebuilds,
        nodes_recomputed, values_read, memory_bytes)."""
        if self._backend != "kron":
            return {}
        out = dict(self._core.index_stats)
        out["seconds"] = float(self._core.index_seconds)
        out["memory_bytes"] = int(self._core.index_memory_bytes)
        return out

    def full_loss(self) -> float:
        """(1/2n) sum_i (f(x_i) - y_i)^2 over all training points."""
        return float(self._core.full_loss())

    def __repr__(self) -> str:
        return (
            f"Trainer(backend={self._backend!r}, index={self._index!r}, lr={self._lr:g}, "
            f"batch_size={self._batch_size}, n={self._data.n}, width={self._net.width}, steps_done={self._steps})"
        )


#: "auto" uses the crossing bits while n · q <= this, where q = P(N(0,1) > b)
#: is the fraction of neurons a unit-norm point fires (docs/indexes.md).
AUTO_BITS_MAX_NQ = 32.0


def _resolve_index(index: str, n: int, m: int, threshold: float) -> str:
    """The index "auto" stands for, from `kronnet bench index` (docs/indexes.md).

    The scan costs m strided reads of P per batch point, independent of n;
    the crossing bits make queries almost free but add a mask pass over
    every changed row of P, O(n · |R|) with |R| ≈ S · q · m, to the update.
    So bits win while n · q is small: it was fastest in 29 of 30 shapes with
    n <= 512 (n · q <= 24), and the scan was faster at n = 2048 and 8192 with
    the default threshold (n · q = 50 to 330). The tree was never the fastest
    by more than noise: between two queries of a point, n/S steps each change
    |R| of its m values, so it mostly rebuilds.
    """
    if index != "auto":
        return index
    q = 0.5 * math.erfc(threshold / math.sqrt(2.0))
    return "bits" if n * q <= AUTO_BITS_MAX_NQ else "scan"


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True)
