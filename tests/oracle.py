"""Plain float64 references, written here and nowhere else: the tests' single source of truth.

``oracle_step`` is DESIGN.md's update element by element in float64 (complex128 for complex);
``ClassicSGD`` is the textbook NumPy param-dict SGD the ``SGD`` API comes from.
"""

from __future__ import annotations

import numpy as np


def wide(a) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


def oracle_step(w, grad, v, *, first, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                maximize=False, grad_scale=1.0):
    """One step in float64: returns (new w, new v); inputs are not modified."""
    w = wide(w).copy()
    g = wide(grad) * grad_scale
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + weight_decay * w
    v_new = None
    if momentum != 0:
        v_new = g.copy() if first else momentum * wide(v) + (1 - dampening) * g
        g = g + momentum * v_new if nesterov else v_new
    return w - lr * g, v_new


def oracle_norm(grads) -> float:
    return float(np.sqrt(sum(float(np.sum(np.abs(wide(g)) ** 2)) for g in grads)))


def tolerance(dtype, *magnitudes, ops: int = 8) -> np.ndarray:
    """Elementwise bound on the rounding error of ``ops`` operations in ``dtype`` on operands of
    these magnitudes: a handful of ulps of the largest operand."""
    # The oracle itself is float64: no bound tighter than float64's.
    eps = max(float(np.finfo(np.dtype(dtype)).eps), float(np.finfo(np.float64).eps))
    scale = 1.0
    for m in magnitudes:
        if m is not None:
            scale = scale + np.abs(wide(m))
    return ops * eps * scale


class ClassicSGD:
    """The classic NumPy param-dict SGD, in float64:
    g += wd*w; v = mu*v + g; update = g + mu*v if nesterov else v; w -= lr*update;
    with global-norm clipping: scale = max_norm / (total + 1e-12) when total > max_norm."""

    def __init__(self, params, lr=1e-2, momentum=0.0, nesterov=False, weight_decay=0.0, clip_grad_norm=None):
        self.params = {k: {"value": wide(p["value"]).copy(), "grad": None} for k, p in params.items()}
        self.lr, self.momentum, self.nesterov, self.wd, self.clip = lr, momentum, nesterov, weight_decay, clip_grad_norm
        self.v = {k: np.zeros_like(p["value"]) for k, p in self.params.items()}

    def step(self, grads: dict) -> None:
        grads = {k: wide(g) for k, g in grads.items() if g is not None}
        if self.clip is not None:
            total = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
            if total > self.clip:
                grads = {k: g * (self.clip / (total + 1e-12)) for k, g in grads.items()}
        for k, g in grads.items():
            p = self.params[k]
            g = g + self.wd * p["value"]
            self.v[k] = self.momentum * self.v[k] + g
            update = g + self.momentum * self.v[k] if self.nesterov else self.v[k]
            p["value"] -= self.lr * update
