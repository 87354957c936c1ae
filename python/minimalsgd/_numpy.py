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

import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from . import _half

__all__ = ["adam_step", "prepare_sgd_step", "sgd_step", "sum_of_squares"]

_mul, _add, _sub, _copyto = np.multiply, np.add, np.subtract, np.copyto

# Elements per block of the step (per scratch array: 256 KiB of float32): large tensors are cut
# into blocks of this size and small tensors batched up to it.
_BLOCK = 1 << 16
# Tensors up to this many elements are batched with others of their dtype, in batches that close
# once they reach _BATCH elements (smaller than a block: the copies stay in the fastest cache).
_SMALL = 1 << 14
_BATCH = 1 << 14


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
    kernel: Callable[..., None] | None = None  # the step with these coefficients (_kernel)


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
    c = _Coefficients(
        lr=t(lr), mu=t(momentum), damp1=damp1, wd=t(weight_decay), scale=scale,
        unit_scale=bool(scale == 1), momentum=momentum != 0, nesterov=nesterov, decay=weight_decay != 0,
        undamped=bool(damp1 == 1), dtype=dtype,
    )
    return c._replace(kernel=_kernel(c))


def _kernel(c: _Coefficients) -> Callable[..., None]:
    """The step for coefficients ``c``: ``kernel(w, grad, buf, first, g, tmp)`` updates ``w`` (and
    ``buf``) in place, in the order of the native kernel.

    ``g`` and ``tmp`` are scratch arrays of ``w``'s shape; ``g`` may be ``grad`` itself when
    ``grad`` is a scratch copy the caller lets us overwrite. ``grad`` is otherwise never written.
    Every ufunc gets its output array, so 0-d inputs stay arrays. (A closure over the
    coefficients: a step of a small tensor is a few ufunc calls, and attribute lookups would
    cost as much as some of them.)
    """
    lr, mu, damp1, wd, scale = c.lr, c.mu, c.damp1, c.wd, c.scale
    unit_scale, decay, momentum, undamped, nesterov = c.unit_scale, c.decay, c.momentum, c.undamped, c.nesterov

    def kernel(w: np.ndarray, grad: np.ndarray, buf: np.ndarray | None, first: bool, g: np.ndarray,
               tmp: np.ndarray) -> None:
        # g = grad * scale (+ wd * w)
        if unit_scale:
            src = grad
        else:
            _mul(grad, scale, g)
            src = g
        if decay:
            _mul(w, wd, tmp)
            _add(src, tmp, g)
            src = g
        # src is g (scratch) or, when nothing was applied, the caller's grad (read only).
        if momentum:
            if first:
                _copyto(buf, src)
            else:
                _mul(buf, mu, buf)
                if undamped:
                    _add(buf, src, buf)
                else:
                    _mul(src, damp1, tmp)
                    _add(buf, tmp, buf)
            if nesterov:
                _mul(buf, mu, tmp)
                _add(src, tmp, g)
                src = g
            else:
                src = buf
        _mul(src, lr, tmp)
        _sub(w, tmp, w)

    return kernel


def _fused(
    w: np.ndarray, grad: np.ndarray, buf: np.ndarray | None, first: bool, c: _Coefficients,
    g: np.ndarray, tmp: np.ndarray,
) -> None:
    """One step of ``w`` (and ``buf``) in place with coefficients ``c`` (see :func:`_kernel`)."""
    c.kernel(w, grad, buf, first, g, tmp)


# Per thread: the two scratch arrays of the latest single-tensor step, reused by the next step of
# the same shape and dtype (a one-tensor step is a few ufunc calls; two allocations cost one).
# At most 2 x 2 * _BLOCK elements are held per thread.
_LOCAL = threading.local()


def _scratch(shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    key = (shape, dtype.num)
    held = getattr(_LOCAL, "held", None)
    if held is not None and held[0] == key:
        return held[1]
    pair = (np.empty(shape, dtype), np.empty(shape, dtype))
    _LOCAL.held = (key, pair)
    return pair


def _blocks(dtype: np.dtype) -> np.ndarray:
    """Per thread and dtype: four flat scratch arrays of a block (and a small tensor) each, as the
    rows of one array, allocated once. (A fresh allocation of this size is a fresh mapping of
    memory, whose page faults cost more than the step of a block.)"""
    blocks = getattr(_LOCAL, "blocks", None)
    if blocks is None:
        blocks = _LOCAL.blocks = {}
    rows = blocks.get(dtype.num)
    if rows is None:
        rows = blocks[dtype.num] = np.empty((4, _BLOCK + _SMALL), dtype)
    return rows


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
    g_all, tmp_all = _blocks(dt)[:2, :_BLOCK]
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
    W, G, tmp, V = _blocks(c.dtype)[:, :total]  # total < _BATCH + _SMALL <= _BLOCK + _SMALL
    np.concatenate([it[0] for it in items], axis=None, out=W)
    np.concatenate([it[1] for it in items], axis=None, out=G)
    if not c.momentum:
        V = None
    else:
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
    stochastic_rounding: bool = False,
    seed: int = 0,
    rounding_step: int = 0,
    rounding_keys: Sequence[int] | None = None,
    rounding_offsets: Sequence[int] | None = None,
) -> None:
    """The fused step over many tensors. Inputs are assumed validated (see _functional): arrays
    of one (floating or complex) dtype per tensor, matching shapes, nothing written overlapping
    anything else.

    float16/bfloat16 tensors compute in float32 temporaries and round each stored result once
    (``_half.step_one``: to nearest, or stochastically with ``seed``, ``rounding_step``,
    ``rounding_keys``, default: positions, and ``rounding_offsets``, the rounding index of each
    tensor's first element, default: 0), as the native kernel does."""
    if any(_half.is_half(w.dtype) for w in values):
        one = isinstance(first_step, (bool, np.bool_))
        rest: list[int] = []
        for i, w in enumerate(values):
            if not _half.is_half(w.dtype):
                rest.append(i)
                continue
            buf = momentum_buffers[i] if momentum != 0 and momentum_buffers is not None else None
            first = bool(first_step if one else first_step[i])  # type: ignore[index]
            key = i if rounding_keys is None else rounding_keys[i]
            index0 = 0 if rounding_offsets is None else rounding_offsets[i]
            _half.step_one(w, grads[i], buf, first, lr, momentum, dampening, weight_decay, nesterov, maximize,
                           grad_scale, stochastic_rounding, seed, rounding_step, key, index0)
        if not rest:
            return
        values = [values[i] for i in rest]
        grads = [grads[i] for i in rest]
        if momentum_buffers is not None:
            momentum_buffers = [momentum_buffers[i] for i in rest]
        if not one:
            first_step = [first_step[i] for i in rest]  # type: ignore[index]
    hyper = (lr, momentum, dampening, weight_decay, nesterov, maximize, grad_scale)
    n = len(values)
    one_flag = isinstance(first_step, (bool, np.bool_))
    with_buffer = momentum != 0 and momentum_buffers is not None
    if n == 1:
        w = values[0]
        first = bool(first_step if one_flag else first_step[0])  # type: ignore[index]
        buf = momentum_buffers[0] if with_buffer else None  # type: ignore[index]
        c = _coefficients(hyper, w.dtype)
        if w.size > 2 * _BLOCK:
            _step_large(w, grads[0], buf, first, c)
        else:
            c.kernel(w, grads[0], buf, first, *_scratch(w.shape, c.dtype))  # type: ignore[misc]
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
            if entry[1] >= _BATCH:
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


def prepare_sgd_step(
    values: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    momentum_buffers: Sequence[np.ndarray] | None,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> Callable[[float], None]:
    """``sgd_step`` with everything but ``grad_scale`` bound, for a cached plan that repeats one
    validated step (no first step): ``run(grad_scale)``. A single small tensor gets its
    coefficients and two scratch arrays of its own, bound once; anything else calls sgd_step."""
    hyper = (lr, momentum, dampening, weight_decay, nesterov, maximize)
    if len(values) == 1 and values[0].size <= 2 * _BLOCK:
        w, grad = values[0], grads[0]
        buf = momentum_buffers[0] if momentum != 0 and momentum_buffers is not None else None
        unit = _coefficients(hyper + (1.0,), w.dtype)
        kernel = unit.kernel
        g, tmp = np.empty(w.shape, unit.dtype), np.empty(w.shape, unit.dtype)

        def run(grad_scale: float) -> None:
            if grad_scale == 1.0:
                kernel(w, grad, buf, False, g, tmp)  # type: ignore[misc]
            else:
                _coefficients(hyper + (grad_scale,), w.dtype).kernel(w, grad, buf, False, g, tmp)  # type: ignore[misc]

        return run

    def run_all(grad_scale: float) -> None:
        sgd_step(values, grads, momentum_buffers, False, *hyper, grad_scale)

    return run_all


def _step_tensor(w: np.ndarray, grad: np.ndarray, buf: np.ndarray | None, first: bool, c: _Coefficients) -> None:
    """One tensor on its own: whole, or in blocks when it is large."""
    if w.size > 2 * _BLOCK:
        _step_large(w, grad, buf, first, c)
    else:
        _fused(w, grad, buf, first, c, np.empty(w.shape, c.dtype), np.empty(w.shape, c.dtype))


def sum_of_squares(arrays: Sequence[np.ndarray]) -> float:
    """Sum of |x|^2 over all arrays, accumulated in float64 (complex: re^2 + im^2), bit for bit
    the native ``_core.sum_of_squares`` for float32 and float64 arrays.

    The order of the additions is sgd.hpp's ``multi_tensor_sum_of_squares`` and ``_core.sum_of_squares``:
    the float32 arrays' total, then the float64 arrays', then the bfloat16 arrays', then the
    float16 arrays' (16-bit: the same blocks and lanes over the values converted exactly, as
    sgd.hpp's ``sum_of_squares_half``; so also bit for bit the native sum for 16-bit grads), then
    (NumPy only) every other dtype's (complex: the real parts' blocks, then the imaginary parts');
    each total adds, tensor by tensor, the sums of
    blocks of ``_SUM_BLOCK`` elements in order, starting from 0. A block's sum is 32 lanes,
    ``acc[j] += x[32 r + j]^2`` row by row, then its tail ``acc[j] += x[body + j]^2``, then the
    fold ``acc[j] += acc[j + w]`` for w = 16, 8, 4, 2, 1 (see ``_block_sums``). No BLAS
    (``numpy.dot`` threads cost milliseconds per call on a busy machine)."""
    f32: list[np.ndarray] = []
    f64: list[np.ndarray] = []
    bf16: list[np.ndarray] = []
    f16: list[np.ndarray] = []
    other: list[np.ndarray] = []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.kind == "c":
            other.extend((a.real, a.imag))
        elif a.dtype == np.float32:
            f32.append(a)
        elif a.dtype == np.float64:
            f64.append(a)
        elif _half.BFLOAT16 is not None and a.dtype == _half.BFLOAT16:
            bf16.append(a)
        elif a.dtype == np.float16:
            f16.append(a)
        else:
            other.append(a)
    total = 0.0
    for parts in (f32, f64, bf16, f16, other):
        if parts:
            total += _sum_of_squares_in_order(parts)
    return total


# Elements per block of the sum of squares (sgd.hpp's kSumBlock), and its lanes (its L).
_SUM_BLOCK = 1 << 16
_SUM_LANES = 32
_SUM_ROWS = _SUM_BLOCK // _SUM_LANES
# Full blocks summed side by side (their lanes make one long row for NumPy's element loops), and
# the squares held per pass (scratch rows of all these lanes at once).
_SUM_GROUP = 16
_SUM_CHUNK = 1 << 15


def _sum_of_squares_in_order(parts: Sequence[np.ndarray]) -> float:
    """0 + the block sums of every part, in order (sgd.hpp: one dtype's total)."""
    sums: list[float] = []
    # The partial (last) blocks, by padded row count: (index in sums, elements).
    partial: dict[int, list[tuple[int, np.ndarray]]] = {}
    scratch = _sum_scratch()
    step = _SUM_GROUP * _SUM_BLOCK
    for part in parts:
        flat = part.reshape(-1)
        n = flat.shape[0]
        full = n - n % _SUM_BLOCK
        for start in range(0, full, step):
            sums.extend(_block_sums(flat[start : min(start + step, full)], scratch).tolist())
        if n > full:
            rows = -(-(n - full) // _SUM_LANES)
            key = rows if rows > _SUM_PAD_ROWS else 1 << (rows - 1).bit_length()
            partial.setdefault(key, []).append((len(sums), flat[full:]))
            sums.append(0.0)
    for rows, items in partial.items():
        per_pass = max(1, _SUM_BLOCK // (rows * _SUM_LANES))
        for first in range(0, len(items), per_pass):
            batch = items[first : first + per_pass]
            for (slot, _), s in zip(batch, _partial_sums(batch, rows, scratch).tolist()):
                sums[slot] = s
    total = 0.0
    for s in sums:
        total += s
    return total


# Partial blocks of up to this many rows are padded to a power of two rows and summed side by side.
_SUM_PAD_ROWS = 512


def _partial_sums(batch: Sequence[tuple[int, np.ndarray]], rows: int, scratch: np.ndarray) -> np.ndarray:
    """The sums of squares of partial blocks (each at most ``rows`` rows of 32 lanes), each in
    sgd.hpp's order: block i's body rows go to column i of a zeroed (rows, len(batch), 32) scratch,
    its tail to lanes 0..m%32 of the next row; the squares are reduced along axis 0 (each lane in
    row order) and folded. The padding adds +0 to a sum of squares, which changes no bit."""
    grid = scratch[: rows * len(batch) * _SUM_LANES].reshape(rows, len(batch), _SUM_LANES)
    grid.fill(0.0)
    for i, (_, seg) in enumerate(batch):
        m = seg.shape[0]
        body = m - m % _SUM_LANES
        if body:
            _copyto(grid[: body // _SUM_LANES, i, :], seg[:body].reshape(-1, _SUM_LANES), casting="unsafe")
        if m > body:
            _copyto(grid[body // _SUM_LANES, i, : m - body], seg[body:], casting="unsafe")
    _mul(grid, grid, out=grid)
    return _fold_lanes(np.add.reduce(grid, axis=0))


def _block_sums(flat: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """The sums of squares of the full blocks of ``flat`` (a whole number of blocks), in float64,
    each in sgd.hpp's order. The blocks' lanes side by side make one row of nb*32 accumulators; a
    pass converts a few rows of every block into the scratch, squares them, and reduces them along
    axis 0 after the accumulators (row 0): NumPy adds the rows of such a reduction one after
    another, each lane ``((acc + sq_r) + sq_r+1) + ...`` as the C++ loop does."""
    nb = flat.shape[0] // _SUM_BLOCK
    lanes = nb * _SUM_LANES
    src = flat.reshape(nb, _SUM_ROWS, _SUM_LANES)
    per_pass = max(1, min(_SUM_ROWS, _SUM_CHUNK // lanes))
    acc = np.zeros((nb, _SUM_LANES))
    for r0 in range(0, _SUM_ROWS, per_pass):
        k = min(per_pass, _SUM_ROWS - r0)
        rows = scratch[: (k + 1) * lanes].reshape(k + 1, nb, _SUM_LANES)
        _copyto(rows[0], acc)
        body = rows[1:]
        _copyto(body, src[:, r0 : r0 + k, :].transpose(1, 0, 2), casting="unsafe")
        _mul(body, body, out=body)
        np.add.reduce(rows, axis=0, out=acc)
    return _fold_lanes(acc)


def _fold_lanes(acc: np.ndarray) -> np.ndarray:
    """Each row's 32 lanes folded pairwise in sgd.hpp's order: acc[j] += acc[j + w], w = 16..1."""
    w = _SUM_LANES // 2
    while w:
        _add(acc[:, :w], acc[:, w : 2 * w], out=acc[:, :w])
        w //= 2
    return acc[:, 0]


def _sum_scratch() -> np.ndarray:
    """Per thread: _SUM_BLOCK float64 (enough for a partial block and for a pass of _block_sums)."""
    scratch = getattr(_LOCAL, "sum_scratch", None)
    if scratch is None:
        scratch = _LOCAL.sum_scratch = np.empty(_SUM_BLOCK, np.float64)
    return scratch


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
