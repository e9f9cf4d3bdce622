"""The trainer's batches: without replacement within an epoch, reshuffled
(seeded) at every epoch start."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np


class BatchSampler:
    """Batches without replacement within an epoch: a seeded reshuffle at each
    epoch start; the last batch of an epoch is smaller when S does not
    divide n. Its state (generator state, order, position) is part of a
    checkpoint, so a restored trainer draws exactly the batches the
    uninterrupted one would have."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n = n
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.order = np.empty(0, dtype=np.int64)
        self.pos = 0

    def draw(self) -> np.ndarray:
        """The next batch (int64 indices), consumed."""
        if self.pos >= self.order.shape[0]:
            # A new array (never mutated in place), so a saved state may
            # keep a reference to the old one instead of a copy.
            self.order = self.rng.permutation(self.n).astype(np.int64)
            self.pos = 0
        batch = self.order[self.pos : self.pos + self.batch_size]
        self.pos += batch.shape[0]
        return batch

    def state(self) -> Dict[str, Any]:
        """The generator state, epoch order and position (what a checkpoint keeps)."""
        return {"rng": self.rng.bit_generator.state, "order": self.order, "pos": self.pos}

    def set_state(self, state: Dict[str, Any], advance: int = 0) -> None:
        """Back to `state`, then `advance` batches further."""
        self.rng.bit_generator.state = state["rng"]
        self.order = state["order"]
        self.pos = state["pos"]
        for _ in range(advance):
            self.draw()
