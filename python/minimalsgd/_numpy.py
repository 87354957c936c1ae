"""The pure-NumPy backend: the same functions as the native ``_core`` module, in place.

Every operation runs in the value's dtype with the hyperparameters rounded to it once, in the
order of the native kernel, so float32/float64 results are bit for bit those of the native kernel
(built without fused multiply-add). It serves any floating or complex dtype, any strides, byte
order and alignment, and 0-d arrays; values and momentum buffers are written in place.

How it stays fast without changing a bit of the result:

* Operations that are exact are left out: ``grad * 1`` (grad_scale 1, no maximize) and
  ``(1 - 0) * g`` (no dampening) are the operands themselves.
* Scratch arrays are few and reused: at most two per block, native byte order.
* Large tensors that can be walked flat (C- or F-contiguous, or 1-D with any stride) run in
  blocks of ``_BLOCK`` elements, so the scratch stays in cache and each block is one pass.
* Many small tensors of one dtype are *batched*: their values, grads and buffers are copied
  into one flat scratch (a copy is exact, also from another byte order), the step runs once over
  it, and the new values and buffers are copied back into each tensor's own memory. Element i
  of the batch sees exactly the operations it would see alone, so the bits are the same; the
  cost per tensor is a few copies instead of a dozen ufunc calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["sgd_step", "sum_of_squares"]

# Blocks of this many elements are converted to float64 at a time for the sum of squares.
_SUM_BLOCK = 1 << 20
# Elements per block of the step (per scratch array: 256 KiB of float32): large tensors are cut
# into blocks of this size and small tensors batched up to it.
_BLOCK = 1 << 16
# Tensors up to this many elements are batched with others of their dtype.
_SMALL = 1 << 14


class _Coefficients(NamedTuple):
    """The hyperparameters of one step rounded once to the dtype, and which operations run."""

    lr: np.ndarray  # 0-d
    mu: np.ndarray
    damp1: np.ndarray
    wd: np.ndarray
    scale: np.ndarray
    unit_scale: bool  # grad * scale is grad itself (scale exactly 1)
    momentum: bool
    nesterov: bool
    decay: bool
    undamped: bool  # (1 - dampening) * g is g itself
    dtype: np.dtype  # the dtype in native byte order: of the scratch arrays


# Hyperparameters (lr, momentum, dampening, weight_decay, nesterov, maximize, grad_scale) of recent
# steps -> {dtype number: coefficients}; a step usually repeats its predecessor's. Bounded.
_COEFFICIENTS: dict[tuple, dict[int, _Coefficients]] = {}


def _coefficients(hyper: tuple, dtype: np.dtype) -> _Coefficients:
    per_dtype = _COEFFICIENTS.get(hyper)
    if per_dtype is None:
        if len(_COEFFICIENTS) >= 64:
            _COEFFICIENTS.clear()
        per_dtype = _COEFFICIENTS[hyper] = {}
    c = per_dtype.get(dtype.num)
    if c is None:
        c = per_dtype[dtype.num] = _round_coefficients(_native(dtype), *hyper)
    return c


def _round_coefficients(
    dtype: np.dtype, lr: float, momentum: float, dampening: float, weight_decay: float, nesterov: bool,
    maximize: bool, grad_scale: float,
) -> _Coefficients:
    def t(x: float) -> np.ndarray:
        # A read-only 0-d array of the dtype: the value rounded once, and the cheapest operand to
        # hand a ufunc (a NumPy scalar is converted to such an array at every call).
        a = np.array(x, dtype=dtype)
        a.flags.writeable = False
        return a

    scale = t(-grad_scale if maximize else grad_scale)
    damp1 = t(1.0 - dampening)
    return _Coefficients(
        lr=t(lr), mu=t(momentum), damp1=damp1, wd=t(weight_decay), scale=scale,
        unit_scale=bool(scale == 1), momentum=momentum != 0, nesterov=nesterov, decay=weight_decay != 0,
        undamped=bool(damp1 == 1), dtype=dtype,
    )


def _fused(
    w: np.ndarray, grad: np.ndarray, buf: np.ndarray | None, first: bool, c: _Coefficients,
    g: np.ndarray, tmp: np.ndarray,
) -> None:
    """One step of ``w`` (and ``buf``) in place, in the order of the native kernel.

    ``g`` and ``tmp`` are scratch arrays of ``w``'s shape; ``g`` may be ``grad`` itself when
    ``grad`` is a scratch copy the caller lets us overwrite. ``grad`` is otherwise never written.
    Every ufunc gets its output array, so 0-d inputs stay arrays.
    """
    # g = grad * scale (+ wd * w)
    if c.unit_scale:
        src = grad
    else:
        np.multiply(grad, c.scale, g)
        src = g
    if c.decay:
        np.multiply(w, c.wd, tmp)
        np.add(src, tmp, g)
        src = g
    # src is g (scratch) or, when nothing was applied, the caller's grad (read only).
    if c.momentum:
        assert buf is not None
        if first:
            np.copyto(buf, src)
        else:
            np.multiply(buf, c.mu, buf)
            if c.undamped:
                np.add(buf, src, buf)
            else:
                np.multiply(src, c.damp1, tmp)
                np.add(buf, tmp, buf)
        if c.nesterov:
            np.multiply(buf, c.mu, tmp)
            np.add(src, tmp, g)
            src = g
        else:
            src = buf
    np.multiply(src, c.lr, tmp)
    np.subtract(w, tmp, w)


def _native(dtype: np.dtype) -> np.dtype:
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def _flat(a: np.ndarray, order: str) -> np.ndarray:
    """``a`` as a 1-D view in ``order`` ("A": already 1-D)."""
    return a if order == "A" else a.reshape(-1, order=order)


def _walk_order(w: np.ndarray, grad: np.ndarray, buf: np.ndarray | None) -> str | None:
    """How all three arrays can be viewed flat in the same element order, or None."""
    if w.ndim == 1:
        return "A"
    arrays = (w, grad) if buf is None else (w, grad, buf)
    if all(a.flags.c_contiguous for a in arrays):
        return "C"
    if all(a.flags.f_contiguous for a in arrays):
        return "F"
    return None


def _step_large(w: np.ndarray, grad: np.ndarray, buf: np.ndarray | None, first: bool, c: _Coefficients) -> None:
    """A large tensor: in blocks when it can be walked flat, else whole."""
    dt = c.dtype
    order = _walk_order(w, grad, buf)
    if order is None:
        _fused(w, grad, buf, first, c, np.empty(w.shape, dt), np.empty(w.shape, dt))
        return
    fw, fg = _flat(w, order), _flat(grad, order)
    fb = None if buf is None else _flat(buf, order)
    g_all, tmp_all = np.empty(_BLOCK, dt), np.empty(_BLOCK, dt)
    n = fw.shape[0]
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        m = hi - lo
        g, tmp = (g_all, tmp_all) if m == _BLOCK else (g_all[:m], tmp_all[:m])
        _fused(fw[lo:hi], fg[lo:hi], None if fb is None else fb[lo:hi], first, c, g, tmp)


def _step_batch(
    items: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]], total: int, first: bool, c: _Coefficients
) -> None:
    """Small tensors of one dtype in one pass over flat copies, written back to their own memory."""
    dt = c.dtype
    W = np.empty(total, dt)
    G = np.empty(total, dt)
    tmp = np.empty(total, dt)
    np.concatenate([it[0] for it in items], axis=None, out=W)
    np.concatenate([it[1] for it in items], axis=None, out=G)
    V = None
    if c.momentum:
        V = np.empty(total, dt)
        if not first:  # on the first step the buffers' contents are not read
            np.concatenate([it[2] for it in items], axis=None, out=V)
    _fused(W, G, V, first, c, G, tmp)  # G is our copy: it serves as the scratch g
    lo = 0
    for w, _, b in items:
        hi = lo + w.size
        if w.ndim == 1:
            w[...] = W[lo:hi]
            if V is not None:
                b[...] = V[lo:hi]  # type: ignore[index]
        else:
            shape = w.shape
            w[...] = W[lo:hi].reshape(shape)
            if V is not None:
                b[...] = V[lo:hi].reshape(shape)  # type: ignore[index]
        lo = hi


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
    """The fused step over many tensors. Inputs are assumed validated (see _functional): arrays
    of one (floating or complex) dtype per tensor, matching shapes, nothing written overlapping
    anything else."""
    hyper = (lr, momentum, dampening, weight_decay, nesterov, maximize, grad_scale)
    n = len(values)
    one_flag = isinstance(first_step, (bool, np.bool_))
    with_buffer = momentum != 0 and momentum_buffers is not None
    if n == 1:
        w = values[0]
        first = bool(first_step if one_flag else first_step[0])  # type: ignore[index]
        _step_tensor(w, grads[0], momentum_buffers[0] if with_buffer else None, first, _coefficients(hyper, w.dtype))  # type: ignore[index]
        return
    firsts = [bool(first_step)] * n if one_flag else first_step
    buffers = momentum_buffers if with_buffer else [None] * n
    # Small tensors wait here, per (dtype number, first step), until a block is full:
    # [dtype, element count, [(value, grad, buffer), ...]].
    pending: dict[tuple[int, bool], list] = {}
    for w, g, buf, first in zip(values, grads, buffers, firsts):  # type: ignore[arg-type]
        size = w.size
        if size <= _SMALL and w.ndim:
            key = (w.dtype.num, first)
            entry = pending.get(key)
            if entry is None:
                pending[key] = [w.dtype, size, [(w, g, buf)]]
                continue
            entry[2].append((w, g, buf))
            entry[1] += size
            if entry[1] >= _BLOCK:
                _step_batch(entry[2], entry[1], bool(first), _coefficients(hyper, w.dtype))
                del pending[key]
        else:
            _step_tensor(w, g, buf, bool(first), _coefficients(hyper, w.dtype))
    for (_, first), (dtype, total, items) in pending.items():
        c = _coefficients(hyper, dtype)
        if len(items) == 1:
            w, g, buf = items[0]
            _step_tensor(w, g, buf, bool(first), c)
        else:
            _step_batch(items, total, bool(first), c)


def _step_tensor(w: np.ndarray, grad: np.ndarray, buf: np.ndarray | None, first: bool, c: _Coefficients) -> None:
    """One tensor on its own: whole, or in blocks when it is large."""
    if w.size > 2 * _BLOCK:
        _step_large(w, grad, buf, first, c)
    else:
        _fused(w, grad, buf, first, c, np.empty(w.shape, c.dtype), np.empty(w.shape, c.dtype))


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
