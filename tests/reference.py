"""An independent dense NumPy implementation of the model and its SGD step
(docs/design.md, "The model"), written from the formulas, sharing no code with kronnet."""

from __future__ import annotations

import numpy as np


def kron_rows(factors):
    """x_i = kron(u_i^(1), ..., u_i^(p)), row by row with np.kron: (n, d)."""
    n = factors[0].shape[0]
    rows = []
    for i in range(n):
        x = np.ones(1)
        for u in factors:
            x = np.kron(x, u[i])
        rows.append(x)
    return np.array(rows)


def forward(W, X, a, b):
    """f(W, x) for each row of X."""
    m = W.shape[0]
    z = X @ W.T
    return np.maximum(z - b, 0.0) @ a / np.sqrt(m)


class ReferenceSGD:
    """Textbook SGD on L_B = (1/2|B|) sum (f - y)^2 with materialized W."""

    def __init__(self, W0, X, y, a, b, lr):
        self.W = np.array(W0, dtype=np.float64, copy=True)
        self.X, self.y, self.a, self.b, self.lr = X, y, a, b, lr

    def step(self, batch):
        batch = np.asarray(batch)
        m = self.W.shape[0]
        xb = self.X[batch]
        z = xb @ self.W.T
        fired = z > self.b
        f = np.maximum(z - self.b, 0.0) @ self.a / np.sqrt(m)
        e = f - self.y[batch]
        loss = e @ e / (2 * len(batch))
        # dL/dw_r = (1/S) sum_s e_s a_r 1[z_sr > b] x_s / sqrt(m)
        coef = (e[:, None] * fired * self.a[None, :]) / (np.sqrt(m) * len(batch))
        self.W -= self.lr * coef.T @ xb
        return loss

    def full_loss(self):
        e = forward(self.W, self.X, self.a, self.b) - self.y
        return e @ e / (2 * len(e))
