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

from . import _half

__all__ = ["sgd_step", "sum_of_squares"]

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
    stochastic_rounding: bool = False,
    seed: int = 0,
    rounding_step: int = 0,
    rounding_keys: Sequence[int] | None = None,
) -> None:
    """The fused step, tensor by tensor. Inputs are assumed validated (see _functional).

    float16/bfloat16 tensors compute in float32 temporaries and round each stored result once
    (``_half.step_one``); ``rounding_keys`` (default: positions) key their random bits."""
    firsts = [bool(first_step)] * len(values) if isinstance(first_step, bool) else first_step
    for i, (w, g) in enumerate(zip(values, grads)):
        buf = momentum_buffers[i] if momentum != 0 and momentum_buffers is not None else None
        if _half.is_half(w.dtype):
            key = i if rounding_keys is None else rounding_keys[i]
            _half.step_one(w, g, buf, firsts[i], lr, momentum, dampening, weight_decay, nesterov, maximize,
                           grad_scale, stochastic_rounding, seed, rounding_step, key)
            continue
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
