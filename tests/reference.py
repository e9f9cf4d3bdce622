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


# -- the full model -------------------------------------------------------------
#
# f(x) = (1/sqrt(m)) sum_r a_r max(<w_r, x> - b_r, 0) + c + V x, with C >= 1
# outputs, per-neuron thresholds b, an output bias c and a linear term V, trained
# by SGD on the squared, logistic or cross-entropy loss with ridge penalties on
# a, b, c, V and a learning-rate schedule. Written from the formulas alone.

LOSSES = ("squared", "logistic", "cross_entropy")


def constant():
    """The schedule phi(t) = 1."""
    return lambda t: 1.0


def inverse_time(tau):
    """The schedule phi(t) = 1 / (1 + t / tau)."""
    tau = float(tau)
    if not tau > 0:
        raise ValueError(f"tau must be positive, got {tau}")
    return lambda t: 1.0 / (1.0 + t / tau)


def cosine(T):
    """The schedule phi(t) = (1 + cos(pi min(t, T) / T)) / 2: 1 at t = 0, 0 from t = T on."""
    if not T > 0:
        raise ValueError(f"T must be positive, got {T}")
    return lambda t: 0.5 * (1.0 + np.cos(np.pi * min(t, T) / T))


def point_losses(loss, f, y):
    """The loss of each point: f (S, C) outputs, y the points' targets in the
    reference's internal form ((S, C) floats for "squared", (S,) 0/1 floats for
    "logistic", (S,) integer labels for "cross_entropy"). Returns (S,)."""
    if loss == "squared":
        e = f - y
        return 0.5 * np.sum(e * e, axis=1)
    if loss == "logistic":
        f = f[:, 0]
        # log(1 + e^f) - y f, without overflow for large |f|.
        return np.maximum(f, 0.0) + np.log1p(np.exp(-np.abs(f))) - y * f
    if loss == "cross_entropy":
        top = np.max(f, axis=1)
        lse = top + np.log(np.sum(np.exp(f - top[:, None]), axis=1))
        return lse - f[np.arange(len(y)), y]
    raise ValueError(f"unknown loss {loss!r}")


def loss_gradients(loss, f, y):
    """g_s = d loss / d f at each point: (S, C)."""
    if loss == "squared":
        return f - y
    if loss == "logistic":
        f = f[:, 0]
        e = np.exp(-np.abs(f))  # in (0, 1]: never overflows
        sigmoid = np.where(f >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return (sigmoid - y)[:, None]
    if loss == "cross_entropy":
        p = np.exp(f - np.max(f, axis=1, keepdims=True))
        p /= np.sum(p, axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1.0
        return p
    raise ValueError(f"unknown loss {loss!r}")


class FullReferenceSGD:
    """Textbook SGD on the full model (module comment above), materialized,
    float64, with every gradient taken at the parameters before the step.

    Parameters are kept C-dimensional: W (m, d), a (m, C), b (m,), c (C,),
    V (C, d); t counts the steps taken. `schedule` is a callable t -> phi(t)
    (None: constant). `b_init` is the b0 that b's ridge pulls toward: by
    default the scalar `b0`; required when `b0` is an array.
    """

    def __init__(
        self,
        W0,
        X,
        y,
        a0,
        b0,
        c0,
        V0=None,
        loss="squared",
        *,
        lr,
        lr_a=0.0,
        lr_b=0.0,
        lr_c=0.0,
        lr_v=0.0,
        ridge_a=0.0,
        ridge_b=0.0,
        ridge_c=0.0,
        ridge_v=0.0,
        b_init=None,
        schedule=None,
    ):
        self.W = np.array(W0, dtype=np.float64, copy=True)
        if self.W.ndim != 2:
            raise ValueError("W0 must be (m, d)")
        m, d = self.W.shape
        self.X = np.array(X, dtype=np.float64, copy=True)
        if self.X.ndim != 2 or self.X.shape[1] != d:
            raise ValueError(f"X must be (n, {d})")
        n = self.X.shape[0]

        a = np.array(a0, dtype=np.float64, copy=True)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or a.shape[0] != m:
            raise ValueError(f"a0 must be ({m},) or ({m}, C)")
        self.a = a
        C = a.shape[1]

        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}")
        self.loss = loss
        y = np.asarray(y)
        if loss == "squared":
            y = np.array(y, dtype=np.float64, copy=True)
            if y.ndim == 1 and C == 1:
                y = y[:, None]
            if y.shape != (n, C):
                raise ValueError(f"squared-loss targets must be ({n}, {C})" + (f" or ({n},)" if C == 1 else ""))
        elif loss == "logistic":
            if C != 1:
                raise ValueError("the logistic loss has one output")
            y = np.array(y, dtype=np.float64, copy=True).reshape(-1)
            if y.shape != (n,) or not np.all((y == 0) | (y == 1)):
                raise ValueError(f"logistic targets must be ({n},) of 0 and 1")
        else:
            if C < 2:
                raise ValueError("the cross-entropy loss needs C >= 2 outputs")
            if y.shape != (n,) or not (np.issubdtype(y.dtype, np.integer) or np.all(y == np.round(y))):
                raise ValueError(f"cross-entropy labels must be ({n},) integers")
            y = y.astype(np.int64)
            if y.size and (y.min() < 0 or y.max() >= C):
                raise ValueError(f"labels must lie in [0, {C})")
        self.y = y

        b = np.asarray(b0, dtype=np.float64)
        if b.ndim == 0:
            self.b_init = float(b) if b_init is None else float(b_init)
            b = np.full(m, float(b))
        else:
            if b.shape != (m,):
                raise ValueError(f"b0 must be a scalar or ({m},)")
            if b_init is None:
                raise ValueError("b_init is required when b0 is an array")
            self.b_init = float(b_init)
            b = b.copy()
        self.b = b

        c = np.asarray(c0, dtype=np.float64)
        self.c = np.full(C, float(c)) if c.ndim == 0 else c.copy()
        if self.c.shape != (C,):
            raise ValueError(f"c0 must be a scalar or ({C},)")

        if V0 is None:
            self.V = np.zeros((C, d))
        else:
            V = np.array(V0, dtype=np.float64, copy=True)
            self.V = V[None, :] if (V.ndim == 1 and C == 1) else V
            if self.V.shape != (C, d):
                raise ValueError(f"V0 must be ({C}, {d})" + (f" or ({d},)" if C == 1 else ""))

        self.lr, self.lr_a, self.lr_b, self.lr_c, self.lr_v = map(float, (lr, lr_a, lr_b, lr_c, lr_v))
        self.ridge_a, self.ridge_b, self.ridge_c, self.ridge_v = map(float, (ridge_a, ridge_b, ridge_c, ridge_v))
        self.schedule = constant() if schedule is None else schedule
        self.t = 0

    @property
    def C(self):
        return self.a.shape[1]

    def outputs(self, X):
        """f at each row of X: (q, C)."""
        X = np.asarray(X, dtype=np.float64)
        m = self.W.shape[0]
        h = np.maximum(X @ self.W.T - self.b, 0.0)
        return h @ self.a / np.sqrt(m) + self.c + X @ self.V.T

    def predict(self, X):
        """What net.predict returns: (q,) when C = 1, else (q, C)."""
        f = self.outputs(X)
        return f[:, 0] if self.C == 1 else f

    def batch_loss(self, batch):
        """L_B at the current parameters (no ridge penalties)."""
        batch = self._batch(batch)
        return float(np.mean(point_losses(self.loss, self.outputs(self.X[batch]), self.y[batch])))

    def full_loss(self):
        """The mean loss over all n points (no ridge penalties)."""
        return float(np.mean(point_losses(self.loss, self.outputs(self.X), self.y)))

    def gradients(self, batch):
        """(L_B, {"W", "a", "b", "c", "V": the gradient of L_B}) at the current
        parameters, without ridge terms, shaped like the parameters."""
        batch = self._batch(batch)
        m = self.W.shape[0]
        S = len(batch)
        xb = self.X[batch]
        z = xb @ self.W.T  # z_sr
        fired = z > self.b  # 1_sr
        h = np.maximum(z - self.b, 0.0)  # h_sr
        f = h @ self.a / np.sqrt(m) + self.c + xb @ self.V.T
        yb = self.y[batch]
        loss = float(np.mean(point_losses(self.loss, f, yb)))
        g = loss_gradients(self.loss, f, yb)  # (S, C)
        back = (g @ self.a.T) * fired / np.sqrt(m)  # <g_s, a_r> 1_sr / sqrt(m): (S, m)
        grads = {
            "W": back.T @ xb / S,
            "a": h.T @ g / (np.sqrt(m) * S),
            "b": -np.sum(back, axis=0) / S,
            "c": np.sum(g, axis=0) / S,
            "V": g.T @ xb / S,
        }
        return loss, grads

    def step(self, batch):
        """One SGD step on `batch` (indices, repeats counted); returns L_B
        before the update."""
        loss, g = self.gradients(batch)
        phi = float(self.schedule(self.t))
        if self.lr != 0:
            self.W = self.W - self.lr * phi * g["W"]
        if self.lr_a != 0:
            self.a = self.a - self.lr_a * phi * (g["a"] + self.ridge_a * self.a)
        if self.lr_b != 0:
            self.b = self.b - self.lr_b * phi * (g["b"] + self.ridge_b * (self.b - self.b_init))
        if self.lr_c != 0:
            self.c = self.c - self.lr_c * phi * (g["c"] + self.ridge_c * self.c)
        if self.lr_v != 0:
            self.V = self.V - self.lr_v * phi * (g["V"] + self.ridge_v * self.V)
        self.t += 1
        return loss

    def _batch(self, batch):
        batch = np.asarray(batch)
        if batch.ndim != 1 or batch.size == 0 or not np.issubdtype(batch.dtype, np.integer):
            raise ValueError("a batch is a non-empty 1-D array of indices")
        if batch.min() < 0 or batch.max() >= self.X.shape[0]:
            raise ValueError("batch index out of range")
        return batch


def assert_full_losses_close(actual, desired):
    """assert_losses_close for every loss: relative 1e-9, with an absolute
    floor of 1e-14 for losses that have cancelled towards 0 (the stable
    logistic and cross-entropy formulas subtract f-sized terms, leaving an
    absolute rounding of about eps * |f| whatever the order of operations)."""
    actual, desired = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    tol = RTOL * np.abs(desired) + 1e-14 * np.sqrt(np.abs(desired)) + 1e-14
    bad = np.flatnonzero(~(np.abs(actual - desired) <= tol))
    assert bad.size == 0, f"steps {bad[:5]}: {actual.ravel()[bad[:5]]} vs {desired.ravel()[bad[:5]]}"
