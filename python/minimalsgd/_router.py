"""The one router: each validated tensor of a step to the native kernel (``_core``) when it can
walk the tensor's arrays as flat buffers, to the NumPy backend (``_numpy``, the same bits)
otherwise.

Every step reaches the backends through here: the functional API (``minimalsgd.functional``),
the formulas (``Formula.apply`` of :mod:`minimalsgd.optim`), the cached plans (the native plan
classes and the Python plan's prepared calls) and the norm of the gradient policy. This module is
the only importer of ``_core``'s step entry points besides the torch layer's raw-address path.

A backend is ``"auto"`` (native where it can serve a tensor, NumPy elsewhere), ``"native"`` (a
ValueError naming the tensor where it cannot) or ``"numpy"``; ``MINIMALSGD_BACKEND`` (read at
import) says what ``"auto"`` means in this process.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import numpy as np

from . import _half, _numpy
from .protocol import AdamOptions, Batch, SGDOptions

try:
    from . import _core
except ImportError as _err:  # pragma: no cover - exercised when the extension is missing
    _core = None
    CORE_IMPORT_ERROR: str | None = str(_err)
else:
    CORE_IMPORT_ERROR = None

__all__ = [
    "Backend",
    "DEFAULT_BACKEND",
    "adam",
    "check_backend",
    "native_available",
    "native_plan",
    "native_reason",
    "prepare_sgd",
    "route",
    "sgd",
    "sum_of_squares",
    "try_sgd_step",
]

Backend = Literal["auto", "native", "numpy"]

BACKENDS = ("auto", "native", "numpy")
_NATIVE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# The SGD kernel's 16-bit storage types (float16, and bfloat16 with ml_dtypes).
_HALF_DTYPES = tuple(d for d in (np.dtype(np.float16), _half.BFLOAT16) if d is not None)
_FLOAT32 = np.dtype(np.float32)
_ALIGNED_CONTIG = ("C_CONTIGUOUS", "F_CONTIGUOUS")


def _env_backend() -> str:
    env = os.environ.get("MINIMALSGD_BACKEND", "auto").strip().lower() or "auto"
    if env not in BACKENDS:
        raise ValueError(f"MINIMALSGD_BACKEND must be one of {BACKENDS}, got {env!r}")
    return env


#: The backend that "auto" means in this process (MINIMALSGD_BACKEND, read at import).
DEFAULT_BACKEND: str = _env_backend()
#: Whether "auto" means the native kernel (the extension imported, MINIMALSGD_BACKEND not numpy).
AUTO_IS_NATIVE = _core is not None and DEFAULT_BACKEND != "numpy"

#: The functional fast path: ``try_sgd_step(values, grads, buffers, first_step, lr, momentum,
#: dampening, weight_decay, nesterov, maximize, grad_scale[, stochastic_rounding, seed,
#: rounding_step, rounding_keys])`` runs the step in one native call when every input is valid
#: and every tensor native, and returns True; else it writes nothing and returns False. None
#: without the extension.
try_sgd_step: Callable[..., bool] | None = _core.try_sgd_step if _core is not None else None


def native_available() -> bool:
    return _core is not None


def check_backend(backend: Any) -> str:
    """``backend`` checked and resolved ("auto" as MINIMALSGD_BACKEND says); ValueError naming it."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    resolved = DEFAULT_BACKEND if backend == "auto" else backend
    if resolved == "native" and _core is None:
        raise ValueError(f"backend='native' but the native extension could not be imported: {CORE_IMPORT_ERROR}")
    return resolved


def native_reason(value: np.ndarray, *others: np.ndarray | None, half: bool = False) -> str | None:
    """None when the native kernel can walk ``value`` and its companions (grad, state buffers;
    None entries are skipped) as flat buffers, else why not. ``half``: the kernel is SGD's, which
    also takes float16/bfloat16 (others[0] the grad, of the value's dtype; the buffers of it or
    float32)."""
    if _core is None:
        return f"the native extension could not be imported ({CORE_IMPORT_ERROR})"
    is_half = half and value.dtype in _HALF_DTYPES
    if value.dtype not in _NATIVE_DTYPES and not is_half:
        kinds = "float16/bfloat16/float32/float64" if half else "float32/float64"
        return f"dtype {value.dtype} is not {kinds} in native byte order"
    arrays = (value, *(a for a in others if a is not None))
    for j, a in enumerate(arrays[1:]):
        if a.dtype != value.dtype and not (is_half and j > 0 and a.dtype == _FLOAT32):
            return f"dtype {a.dtype} is not {value.dtype} in native byte order"
    for a in arrays:
        if not a.flags.aligned:
            return "an array is not aligned to its dtype"
    for order in _ALIGNED_CONTIG:
        if all(a.flags[order] for a in arrays):
            return None
    return "the arrays are not all C-contiguous or all F-contiguous"


def route(labels: Sequence[str], tensors: Sequence[Sequence[np.ndarray | None]], backend: str,
          half: bool = False) -> tuple[list[int], list[int]]:
    """The indices of the tensors (value, grad, state buffers...) that go to the native kernel and
    those that go to NumPy; ValueError naming the tensor when backend='native' cannot serve one.
    ``half``: SGD's kernel, which takes float16/bfloat16 too."""
    native: list[int] = []
    other: list[int] = []
    for i, arrays in enumerate(tensors):
        if backend == "numpy":
            other.append(i)
            continue
        reason = native_reason(*arrays, half=half)
        if reason is None:
            native.append(i)
        elif backend == "native":
            raise ValueError(f"{labels[i]}: backend='native' cannot serve it: {reason}")
        else:
            other.append(i)
    return native, other


# ---------------------------------------------------------------------------------------------
# SGD


def _rounding_kwargs(batch: Batch, part: Sequence[int] | None) -> dict[str, Any]:
    """The 16-bit storage arguments of a backend call over the tensors ``part`` (None: all)."""
    sr, seed, step = batch.rounding
    keys = batch.keys
    if keys is None:
        keys = range(len(batch.values))
    kw: dict[str, Any] = {"stochastic_rounding": sr, "seed": seed, "rounding_step": step,
                          "rounding_keys": list(keys) if part is None else [keys[i] for i in part]}
    if batch.offsets is not None:
        kw["rounding_offsets"] = list(batch.offsets) if part is None else [batch.offsets[i] for i in part]
    return kw


def sgd(batch: Batch) -> None:
    """The SGD update over a validated batch (options :class:`SGDOptions`; state
    ``"momentum_buffer"``, None where a group's momentum is 0): native tensors in one call, all
    groups together, the rest through NumPy."""
    n = len(batch.values)
    everything = list(range(n))
    if batch.backend == "numpy":  # no routing to do
        _sgd_numpy(batch, everything)
        return
    options: Sequence[SGDOptions] = batch.options
    buffers = batch.state["momentum_buffer"]
    group_of = batch.group_of
    bufs = [buffers[i] if options[group_of[i]].momentum != 0 else None for i in range(n)]
    native, other = route(batch.labels, list(zip(batch.values, batch.grads, bufs)), batch.backend, half=True)
    if native:
        _sgd_native(batch, native if len(native) < n else everything)
    if other:
        _sgd_numpy(batch, other)


def _sgd_native(batch: Batch, part: list[int]) -> None:
    assert _core is not None
    whole = len(part) == len(batch.values)
    values = list(batch.values) if whole else [batch.values[i] for i in part]
    grads = list(batch.grads) if whole else [batch.grads[i] for i in part]
    buffers = batch.state["momentum_buffer"]
    bufs = list(buffers) if whole else [buffers[i] for i in part]
    firsts = list(batch.born) if whole else [batch.born[i] for i in part]
    kw = _rounding_kwargs(batch, None if whole else part)
    options: Sequence[SGDOptions] = batch.options
    if len(options) == 1:
        o = options[0]
        _core.sgd_step(values, grads, bufs if o.momentum != 0 else None, firsts, o.lr, o.momentum, o.dampening,
                       o.weight_decay, o.nesterov, o.maximize, batch.grad_scale, check_overlap=False, **kw)
    else:  # every group in one call: tensor i with options[group_of[i]]
        group_of = list(batch.group_of) if whole else [batch.group_of[i] for i in part]
        _core.sgd_step_groups(values, grads, bufs, firsts, group_of, list(options), batch.grad_scale,
                              check_overlap=False, **kw)


def _sgd_numpy(batch: Batch, part: list[int]) -> None:
    options: Sequence[SGDOptions] = batch.options
    buffers = batch.state["momentum_buffer"]
    if len(options) == 1:  # one group: no lists to split
        groups = [(options[0], part)]
    else:
        group_of = batch.group_of
        groups = [(o, [i for i in part if group_of[i] == g]) for g, o in enumerate(options)]
    for o, idx in groups:
        if not idx:
            continue
        _numpy.sgd_step([batch.values[i] for i in idx], [batch.grads[i] for i in idx],
                        [buffers[i] for i in idx] if o.momentum != 0 else None, [batch.born[i] for i in idx],
                        o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov, o.maximize, batch.grad_scale,
                        **_rounding_kwargs(batch, idx))


def prepare_sgd(batch: Batch) -> Callable[[float], None]:
    """The routing of :func:`sgd` fixed once for a batch of one group, nothing born and no 16-bit
    tensor (a cached Python plan repeats it): ``run(grad_scale)``, one call per backend."""
    (o,) = batch.options
    with_buffer = o.momentum != 0
    buffers = batch.state["momentum_buffer"]
    values, grads, backend = batch.values, batch.grads, batch.backend
    native: list[int] = []
    other: list[int] = []
    for i in range(len(values)):
        buf = buffers[i] if with_buffer else None
        (native if backend != "numpy" and native_reason(values[i], grads[i], buf) is None else other).append(i)
    calls = []
    if native:
        assert _core is not None
        bufs = [buffers[i] for i in native] if with_buffer else None
        calls.append(partial(_core.sgd_step, [values[i] for i in native], [grads[i] for i in native], bufs, False,
                             o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov, o.maximize,
                             check_overlap=False))
    if other:
        bufs = [buffers[i] for i in other] if with_buffer else None
        calls.append(_numpy.prepare_sgd_step([values[i] for i in other], [grads[i] for i in other], bufs, o.lr,
                                             o.momentum, o.dampening, o.weight_decay, o.nesterov, o.maximize))
    if len(calls) == 1:
        return calls[0]

    def run(grad_scale: float) -> None:
        for call in calls:
            call(grad_scale)

    return run


# ---------------------------------------------------------------------------------------------
# Adam / AdamW


def adam(batch: Batch) -> None:
    """The Adam/AdamW update over a validated batch (options :class:`AdamOptions`; state
    ``"exp_avg"``, ``"exp_avg_sq"`` and, for amsgrad groups, ``"max_exp_avg_sq"``): one native
    call per group (the binding takes one options set), the rest through NumPy."""
    group_of = batch.group_of
    options: Sequence[AdamOptions] = batch.options
    n = len(batch.values)
    for g, o in enumerate(options):
        idx = list(range(n)) if len(options) == 1 else [i for i in range(n) if group_of[i] == g]
        if idx:
            _adam_group(batch, o, idx)


def _adam_group(batch: Batch, o: AdamOptions, idx: list[int]) -> None:
    state = batch.state
    fields = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if o.amsgrad else ("exp_avg", "exp_avg_sq")
    tensors = [(batch.values[i], batch.grads[i], *(state[f][i] for f in fields)) for i in idx]
    native, other = route([batch.labels[i] for i in idx], tensors, batch.backend)

    def columns(part: list[int]) -> list[Any]:
        """values, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs (None without amsgrad), steps."""
        cols: list[Any] = [[tensors[k][c] for k in part] for c in range(4)]
        cols.append([tensors[k][4] for k in part] if o.amsgrad else None)
        cols.append([batch.steps[idx[k]] + 1 for k in part])  # the step this update makes
        return cols

    if native:
        assert _core is not None
        _core.adam_step(*columns(native), o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.amsgrad, o.maximize,
                        o.decoupled, batch.grad_scale, check_overlap=False)
    if other:
        _numpy.adam_step(*columns(other), o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.amsgrad, o.maximize,
                         o.decoupled, batch.grad_scale)


# ---------------------------------------------------------------------------------------------
# Norms and plans


def sum_of_squares(labels: Sequence[str], grads: Sequence[np.ndarray], backend: str) -> float:
    """The sum of squares of every element of every array, accumulated in float64: native arrays
    in one call, the rest through NumPy (the same bits)."""
    native: list[np.ndarray] = []
    other: list[np.ndarray] = []
    for label, g in zip(labels, grads):
        if backend != "numpy" and native_reason(g, g, None, half=True) is None:
            native.append(g)
        elif backend == "native":
            raise ValueError(f"{label}: backend='native' cannot serve it: {native_reason(g, g, None, half=True)}")
        else:
            other.append(g)
    total = 0.0
    if native:
        assert _core is not None
        total += _core.sum_of_squares(native)
    if other:
        total += _numpy.sum_of_squares(other)
    return total


def norm(labels: Sequence[str], grads: Sequence[np.ndarray], backend: str) -> float:
    """The L2 norm of every element of every array: ``sqrt(sum_of_squares(...))``."""
    return math.sqrt(sum_of_squares(labels, grads, backend))


def native_plan(name: str, *args: Any) -> Any:
    """A new cached native plan, ``_core.<name>(*args)`` (``SgdPlan``, ``AdamPlan``: the classes
    of ``csrc/python/plan.hpp``); the caller has checked that the native kernel serves every
    tensor (:func:`can_serve_natively`)."""
    assert _core is not None
    return getattr(_core, name)(*args)


def can_serve_natively(tensors: Sequence[Sequence[np.ndarray | None]]) -> bool:
    """Whether the native kernel can walk every (value, grad, state...) tuple as flat buffers."""
    return _core is not None and all(native_reason(*arrays) is None for arrays in tensors)
