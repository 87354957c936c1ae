"""Plain float64 references, written here and nowhere else: the tests' single source of truth.

``oracle_step`` is DESIGN.md's update element by element in float64 (complex128 for complex);
``ClassicSGD`` is the textbook NumPy param-dict SGD the ``SGD`` API comes from.
"""

from __future__ import annotations

import math

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


# ---------------------------------------------------------------------------------------------
# 16-bit storage: the float32-math oracle. Written from the specification (README, "bfloat16 and
# float16"), independently of minimalsgd's code: per-element Python integers for the random bits,
# np.nextafter neighbours and exact float64 fractions for stochastic rounding, and the reference
# conversions of ml_dtypes / NumPy (astype) for rounding to nearest.

_MASK64 = (1 << 64) - 1
_G = 0x9E3779B97F4A7C15


def _mix64(z: int) -> int:
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def random_bits(seed: int, step: int, key: int, n: int, index0: int = 0) -> list[int]:
    """32 random bits per element: fmix32((lo32(k) | 1) * lo32(i) + hi32(k) + 0x9E3779B9 * hi32(i)),
    k = mix64(mix64(mix64(seed + G) ^ step) ^ key)."""
    k = _mix64(_mix64(_mix64(seed + _G) ^ step) ^ key)
    out = []
    for i in range(index0, index0 + n):
        x = ((k & 0xFFFFFFFF) | 1) * (i & 0xFFFFFFFF) + (k >> 32) + 0x9E3779B9 * (i >> 32)
        out.append(_fmix32(x & 0xFFFFFFFF))
    return out


def _neighbours(ax: float, dtype) -> tuple[float, float]:
    """(toward zero, away from zero) representable neighbours of the magnitude ax >= 0 in dtype,
    as float64; the one above the largest finite value is the next power of two."""
    dt = np.dtype(dtype)
    big = float(np.asarray(np.finfo(dt).max if dt.kind == "f" else _bf16_max(), dtype=np.float64))
    with np.errstate(over="ignore"):
        c = float(np.asarray(np.float32(ax)).astype(dt).astype(np.float64))
    if c > ax:
        lo = float(np.nextafter(np.asarray(c, dtype=dt), np.asarray(0, dtype=dt)).astype(np.float64))
    else:
        lo = c
    if lo >= big:
        lo = big
        hi = 2.0 ** math.ceil(math.log2(big))
    else:
        hi = float(np.nextafter(np.asarray(lo, dtype=dt), np.asarray(np.inf, dtype=dt)).astype(np.float64))
    return lo, hi


def _bf16_max():
    import ml_dtypes

    return ml_dtypes.finfo(ml_dtypes.bfloat16).max


def round_stochastic_oracle(x32: np.ndarray, r32: list[int], dtype) -> np.ndarray:
    """Each float32 x rounded to dtype: toward zero, plus one ulp when r < floor(frac * 2**32)."""
    dt = np.dtype(dtype)
    flat = np.asarray(x32, dtype=np.float32).reshape(-1)
    out = np.empty(flat.size, dtype=dt)
    for i, x in enumerate(flat.tolist()):
        if math.isnan(x) or math.isinf(x):
            out[i] = np.asarray(np.float32(x)).astype(dt)
            continue
        ax = abs(x)
        if dt.kind == "f" and ax >= 65536.0:
            out[i] = math.copysign(math.inf, x)
            continue
        lo, hi = _neighbours(ax, dt)
        threshold = math.floor((ax - lo) / (hi - lo) * 2.0**32)
        mag = hi if r32[i] < threshold else lo
        with np.errstate(over="ignore"):
            out[i] = np.asarray(math.copysign(mag, x) if mag < 2.0**128 else math.copysign(math.inf, x)).astype(dt)
    return out.reshape(np.shape(x32))


def oracle_step_half(w, grad, v, *, first, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                     maximize=False, grad_scale=1.0, stochastic=False, seed=0, step=0, key=0):
    """One step of a 16-bit tensor: float32 arithmetic in the order of DESIGN.md's formula with
    each coefficient rounded to float32 once; the new value and (16-bit) buffer rounded once.
    Elements are counted in C order. Returns (new w, new v) of the input dtypes."""
    f = np.float32
    w32 = np.asarray(w).astype(f)
    g = np.asarray(grad).astype(f) * f(-grad_scale if maximize else grad_scale)
    if weight_decay != 0:
        g = g + f(weight_decay) * w32
    n = w32.size
    bits = random_bits(seed, step, key, n) if stochastic else None

    def store(x, dtype, half):
        dt = np.dtype(dtype)
        if dt == np.float32:
            return np.asarray(x, dtype=f)
        if not stochastic:
            with np.errstate(over="ignore", invalid="ignore"):
                return np.asarray(x).astype(dt)
        r = [((b << 16) & 0xFFFFFFFF) if half else (b & 0xFFFF0000) for b in bits]
        return round_stochastic_oracle(np.asarray(x, dtype=f), r, dt)

    v_new = None
    if momentum != 0:
        vv = g.copy() if first else f(momentum) * np.asarray(v).astype(f) + f(1.0 - dampening) * g
        v_new = store(vv, np.asarray(v).dtype, True)
        g = g + f(momentum) * vv if nesterov else vv
    return store(w32 - f(lr) * g, np.asarray(w).dtype, False), v_new


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

