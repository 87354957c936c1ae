"""The pure-NumPy backend: the same functions as the native ``_core`` module, in place.

Every operation runs in the value's dtype with the hyperparameters rounded to it once, in the
order of the native kernel, so float32/float64 results are bit for bit those of the native kernel
(built without fused multiply-add). It serves any floating or complex dtype, any strides, byte
order and alignment. Each tensor costs two temporaries of its size (the gradient after scaling
and one scratch array); values and momentum buffers are written in place through ``out=``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["adam_step", "sgd_step", "sum_of_squares"]

# Blocks of this many elements are converted to float64 at a time for the sum of squares.
_SUM_BLOCK = 1 << 20


def _step_one(
    w: np.ndarray,
    grad: np.ndarray,
    buf: np.ndarray | None,
    first: bool,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    grad_scale: float,
) -> None:
    t = w.dtype.type
    scale = t(-grad_scale if maximize else grad_scale)
    # Explicit out= arrays: a ufunc on 0-d inputs would otherwise return a scalar, not an array.
    g = np.empty(w.shape, dtype=w.dtype.newbyteorder("="))
    np.multiply(grad, scale, out=g)
    tmp = np.empty_like(g)
    if weight_decay != 0:
        np.multiply(w, t(weight_decay), out=tmp)
        np.add(g, tmp, out=g)
    if momentum != 0:
        assert buf is not None
        mu = t(momentum)
        if first:
            np.copyto(buf, g)
        else:
            np.multiply(buf, mu, out=buf)
            np.multiply(g, t(1.0 - dampening), out=tmp)
            np.add(buf, tmp, out=buf)
        if nesterov:
            np.multiply(buf, mu, out=tmp)
            np.add(g, tmp, out=g)
        else:
            np.copyto(g, buf)
    np.multiply(g, t(lr), out=tmp)
    np.subtract(w, tmp, out=w)


def sgd_step(
    values: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    momentum_buffers: Sequence[np.ndarray] | None,
    first_step: bool | Sequence[bool],
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    grad_scale: float,
) -> None:
    """The fused step, tensor by tensor. Inputs are assumed validated (see _functional)."""
    firsts = [bool(first_step)] * len(values) if isinstance(first_step, bool) else first_step
    for i, (w, g) in enumerate(zip(values, grads)):
        buf = momentum_buffers[i] if momentum != 0 and momentum_buffers is not None else None
        _step_one(w, g, buf, firsts[i], lr, momentum, dampening, weight_decay, nesterov, maximize, grad_scale)


def sum_of_squares(arrays: Sequence[np.ndarray]) -> float:
    """Sum of |x|^2 over all arrays, accumulated in float64 (complex: re^2 + im^2)."""
    total = 0.0
    for a in arrays:
        flat = np.asarray(a).reshape(-1)
        if flat.dtype.kind == "c":
            parts = [flat.real, flat.imag]
        else:
            parts = [flat]
        for part in parts:
            for start in range(0, part.size, _SUM_BLOCK):
                block = part[start : start + _SUM_BLOCK].astype(np.float64)
                total += float(np.dot(block, block))
    return total


# ---------------------------------------------------------------------------------------------
# Adam / AdamW


def adam_coefficients(
    lr: float, beta1: float, beta2: float, eps: float, weight_decay: float, step: int, grad_scale: float, maximize: bool
) -> tuple[float, ...]:
    """The per-step scalars of adam.hpp in float64, as torch computes them in Python:
    (scale, weight_decay, 1 - lr*wd, 1 - beta1, beta2, 1 - beta2, (1 - beta2^t)^0.5, eps, lr / (1 - beta1^t))."""
    bc1 = 1.0 - beta1 ** float(step)
    bc2 = 1.0 - beta2 ** float(step)
    return (
        -grad_scale if maximize else grad_scale,
        weight_decay,
        1.0 - lr * weight_decay,
        1.0 - beta1,
        beta2,
        1.0 - beta2,
        bc2**0.5,
        eps,
        lr / bc1,
    )


def _adam_one(
    w: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    vmax: np.ndarray | None,
    coeffs: tuple[float, ...],
    decay_mode: int,
) -> None:
    """adam.hpp's element operations on real arrays of one dtype, in its order (decay_mode: 0 none,
    1 coupled (Adam), 2 decoupled (AdamW))."""
    t = w.dtype.type
    scale, wd, decay, w1, beta2, one_m_b2, bc2_sqrt, eps, step_size = (t(c) for c in coeffs)
    shape, dtype = w.shape, w.dtype.newbyteorder("=")
    g = np.empty(shape, dtype=dtype)
    np.multiply(grad, scale, out=g)
    tmp = np.empty(shape, dtype=dtype)
    if decay_mode == 2:
        np.multiply(w, decay, out=w)
    elif decay_mode == 1:
        np.multiply(w, wd, out=tmp)
        np.add(g, tmp, out=g)
    # torch's lerp: m + w1 * (g - m) for a small weight, g - (g - m) * (1 - w1) otherwise.
    np.subtract(g, m, out=tmp)
    if abs(w1) < t(0.5):
        np.multiply(tmp, w1, out=tmp)
        np.add(m, tmp, out=m)
    else:
        np.multiply(tmp, t(t(1) - w1), out=tmp)
        np.subtract(g, tmp, out=m)
    np.multiply(v, beta2, out=v)
    np.multiply(g, one_m_b2, out=tmp)  # (1 - beta2) * g: the product commutes exactly
    np.multiply(tmp, g, out=tmp)
    np.add(v, tmp, out=v)
    if vmax is not None:
        np.maximum(vmax, v, out=vmax)
    np.sqrt(vmax if vmax is not None else v, out=tmp)
    np.divide(tmp, bc2_sqrt, out=tmp)
    np.add(tmp, eps, out=tmp)
    np.multiply(m, step_size, out=g)
    np.divide(g, tmp, out=g)
    np.subtract(w, g, out=w)


def adam_step(
    values: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    exp_avgs: Sequence[np.ndarray],
    exp_avg_sqs: Sequence[np.ndarray],
    max_exp_avg_sqs: Sequence[np.ndarray] | None,
    steps: Sequence[int],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled: bool,
    grad_scale: float,
) -> None:
    """The fused Adam/AdamW step (adam.hpp's formula), tensor by tensor; ``steps[i]`` is the step
    this update makes (1-based). Complex tensors step their real and imaginary parts as two real
    tensors, as torch does. Inputs are assumed validated (see _functional)."""
    decay_mode = 0 if weight_decay == 0 else (2 if decoupled else 1)
    for i, w in enumerate(values):
        coeffs = adam_coefficients(lr, beta1, beta2, eps, weight_decay, steps[i], grad_scale, maximize)
        arrays = [w, grads[i], exp_avgs[i], exp_avg_sqs[i], max_exp_avg_sqs[i] if amsgrad and max_exp_avg_sqs else None]
        if w.dtype.kind == "c":
            for part in ("real", "imag"):
                _adam_one(*(getattr(a, part) if a is not None else None for a in arrays), coeffs, decay_mode)
        else:
            _adam_one(*arrays, coeffs, decay_mode)
