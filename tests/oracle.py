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


def oracle_adam(w, grad, m, v, vmax, *, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                maximize=False, decoupled=False, grad_scale=1.0):
    """One Adam/AdamW step in float64, torch.optim.Adam's algorithm as written in its docs (the
    textbook order, not the kernel's): returns (w, m, v, vmax); inputs are not modified. Complex
    arrays step their real and imaginary parts as independent reals, as torch does."""
    if np.iscomplexobj(w):
        parts = [oracle_adam(*(None if a is None else np.asarray(a).real for a in (w, grad, m, v, vmax)), step=step,
                             lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                             maximize=maximize, decoupled=decoupled, grad_scale=grad_scale),
                 oracle_adam(*(None if a is None else np.asarray(a).imag for a in (w, grad, m, v, vmax)), step=step,
                             lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                             maximize=maximize, decoupled=decoupled, grad_scale=grad_scale)]
        return tuple(None if re is None else re + 1j * im for re, im in zip(*parts))
    beta1, beta2 = betas
    w = wide(w).copy()
    g = wide(grad) * grad_scale
    if maximize:
        g = -g
    if weight_decay != 0:
        if decoupled:
            w = w - lr * weight_decay * w
        else:
            g = g + weight_decay * w
    m = beta1 * wide(m) + (1 - beta1) * g
    v = beta2 * wide(v) + (1 - beta2) * g * g
    v_hat = v
    if amsgrad:
        vmax = np.maximum(wide(vmax), v)
        v_hat = vmax
    m_hat = m / (1 - beta1**step)
    v_hat = v_hat / (1 - beta2**step)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps), m, v, vmax

