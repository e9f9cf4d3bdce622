"""An independent dense NumPy implementation of the model and its SGD step
(docs/design.md, "The model"), written from the formulas, sharing no code with kronnet."""

from __future__ import annotations

import numpy as np

#: The relative agreement every exactness test asks for.
RTOL = 1e-9


def rel_err(a, b):
    """max |a - b| / max |b|."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def assert_losses_close(actual, desired):
    """Relative 1e-9, except where the loss has cancelled down to the rounding
    of f itself: L = e^2 / 2 with e = f - y carries an absolute error of about
    eps * |f| * sqrt(L) in any float64 implementation, whatever its order."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    tol = RTOL * np.abs(desired) + 1e-14 * np.sqrt(np.abs(desired))
    bad = np.flatnonzero(np.abs(actual - desired) > tol)
    assert bad.size == 0, f"steps {bad[:5]}: {actual[bad[:5]]} vs {desired[bad[:5]]}"


def kron_sum_rows(factors):
    """Row i = sum_j kron(U_1[i, j], ..., U_p[i, j]) by np.kron, for factors
    of shape (n, r, d_k); a 2-D factor (n, d_k) is the same vector in every
    term: (n, d)."""
    factors = [u if u.ndim == 3 else u[:, None, :] for u in factors]
    n, r = factors[0].shape[0], max(u.shape[1] for u in factors)
    rows = []
    for i in range(n):
        x = 0.0
        for j in range(r):
            term = np.ones(1)
            for u in factors:
                term = np.kron(term, u[i, j if u.shape[1] > 1 else 0])
            x = x + term
        rows.append(x)
    return np.array(rows)


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
