"""The functional layer: validation, backend choice per tensor, and the public functions.

``sgd_step`` and ``global_grad_norm`` check every input before anything is written, then hand
all tensors that the native kernel can walk as flat buffers to ``_core`` in one call and the
rest to the NumPy backend (``_numpy``), which computes the same numbers.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from typing import Any, Literal, Union

import numpy as np

from . import _half, _numpy

try:
    from . import _core
except ImportError as _err:  # pragma: no cover - exercised when the extension is missing
    _core = None
    _CORE_IMPORT_ERROR: str | None = str(_err)
else:
    _CORE_IMPORT_ERROR = None

__all__ = ["adam_step", "sgd_step", "global_grad_norm"]

Backend = Literal["auto", "native", "numpy"]
ArrayOrArrays = Union[np.ndarray, Sequence[np.ndarray]]

_BACKENDS = ("auto", "native", "numpy")
_NATIVE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# The SGD kernel's 16-bit storage types (float16, and bfloat16 with ml_dtypes).
_HALF_DTYPES = tuple(d for d in (np.dtype(np.float16), _half.BFLOAT16) if d is not None)
_FLOAT32 = np.dtype(np.float32)
_U64 = 1 << 64
_ALIGNED_CONTIG = ("C_CONTIGUOUS", "F_CONTIGUOUS")
_INF = math.inf


def _env_backend() -> str:
    env = os.environ.get("MINIMALSGD_BACKEND", "auto").strip().lower() or "auto"
    if env not in _BACKENDS:
        raise ValueError(f"MINIMALSGD_BACKEND must be one of {_BACKENDS}, got {env!r}")
    return env


#: The backend that "auto" means in this process (MINIMALSGD_BACKEND, read at import).
DEFAULT_BACKEND: str = _env_backend()
_AUTO_IS_NATIVE = _core is not None and DEFAULT_BACKEND != "numpy"


def native_available() -> bool:
    return _core is not None


# ---------------------------------------------------------------------------------------------
# Hyperparameters


def check_real(name: str, x: Any, *, minimum: float | None = None, positive: bool = False) -> float:
    """``x`` as a float; TypeError unless it is a real number, ValueError unless finite and in range."""
    # The common case first (a finite float in range), without the ABC checks below.
    if type(x) is float and -_INF < x < _INF and (minimum is None or x >= minimum) and (x > 0 or not positive):
        return x
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        if isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "fiu":
            x = x.item()
        else:
            raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    value = float(x)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_bool(name: str, x: Any) -> bool:
    if type(x) is bool:
        return x
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(x).__name__}")
    return bool(x)


def check_hyperparameters(
    lr: Any, momentum: Any, dampening: Any, weight_decay: Any, nesterov: Any, maximize: Any
) -> tuple[float, float, float, float, bool, bool]:
    """The rules of torch.optim.SGD, plus finiteness."""
    lr = check_real("lr", lr, minimum=0.0)
    momentum = check_real("momentum", momentum, minimum=0.0)
    dampening = check_real("dampening", dampening)
    weight_decay = check_real("weight_decay", weight_decay, minimum=0.0)
    nesterov = check_bool("nesterov", nesterov)
    maximize = check_bool("maximize", maximize)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("nesterov requires momentum > 0 and dampening == 0")
    return lr, momentum, dampening, weight_decay, nesterov, maximize


def check_adam_hyperparameters(
    lr: Any, betas: Any, eps: Any, weight_decay: Any, amsgrad: Any, maximize: Any, decoupled: Any
) -> tuple[float, float, float, float, float, bool, bool, bool]:
    """The rules of torch.optim.Adam, plus finiteness: lr, eps and weight_decay finite and >= 0,
    betas a pair of numbers in [0, 1). Returns (lr, beta1, beta2, eps, weight_decay, amsgrad,
    maximize, decoupled)."""
    lr = check_real("lr", lr, minimum=0.0)
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2) of real numbers, got {betas!r}")
    beta1, beta2 = (check_real(f"betas[{k}]", b, minimum=0.0) for k, b in enumerate(betas))
    for k, b in enumerate((beta1, beta2)):
        if not b < 1.0:
            raise ValueError(f"betas[{k}] must be in [0, 1), got {b}")
    eps = check_real("eps", eps, minimum=0.0)
    weight_decay = check_real("weight_decay", weight_decay, minimum=0.0)
    return (
        lr, beta1, beta2, eps, weight_decay,
        check_bool("amsgrad", amsgrad), check_bool("maximize", maximize), check_bool("decoupled", decoupled),
    )


def check_steps(step: Any, n: int) -> list[int]:
    """The step count of each of ``n`` tensors (one int for all, or one per tensor), each >= 1."""

    def one(name: str, t: Any) -> int:
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(t).__name__}")
        if t < 1:
            raise ValueError(f"{name} must be >= 1 (the step this update makes, 1 on the first), got {t}")
        return int(t)

    if isinstance(step, np.ndarray) and step.ndim == 1:
        step = step.tolist()
    if isinstance(step, (numbers.Number, np.bool_)) or not isinstance(step, Sequence):
        return [one("step", step)] * n
    steps = [one(f"step[{i}]", t) for i, t in enumerate(step)]
    if len(steps) != n:
        raise ValueError(f"step has {len(steps)} counts for {n} values")
    return steps


def check_rounding(stochastic_rounding: Any, seed: Any, rounding_step: Any = 0) -> tuple[bool, int, int]:
    """(stochastic_rounding, seed, rounding_step), checked: a bool, and ints in [0, 2**64) (a seed
    of None stands for 0 when stochastic rounding is off)."""
    sr = check_bool("stochastic_rounding", stochastic_rounding)
    if seed is None and not sr:
        seed = 0
    seed = check_uint64("seed", seed)
    step = check_uint64("rounding_step", rounding_step)
    return sr, seed, step


def check_uint64(name: str, x: Any) -> int:
    """``x`` as an int in [0, 2**64): TypeError unless an integer, ValueError unless in range."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int in [0, 2**64), got {type(x).__name__}")
    value = int(x)
    if not 0 <= value < _U64:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    return value


def check_backend(backend: Any) -> str:
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    resolved = DEFAULT_BACKEND if backend == "auto" else backend
    if resolved == "native" and _core is None:
        raise ValueError(f"backend='native' but the native extension could not be imported: {_CORE_IMPORT_ERROR}")
    return resolved


# ---------------------------------------------------------------------------------------------
# Tensors


def as_list(x: Any, name: str) -> list[Any]:
    """One array, or a sequence of arrays, as a list."""
    if isinstance(x, np.ndarray):
        return [x]
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence):
        if hasattr(x, "__iter__") and not isinstance(x, (str, bytes, dict)):
            return list(x)
        raise TypeError(f"{name} must be a numpy.ndarray or a sequence of them, got {type(x).__name__}")
    return list(x)


def _same_dtype(a: np.dtype, b: np.dtype) -> bool:
    return a == b or a.newbyteorder("=") == b.newbyteorder("=")


def check_tensor(name: str, value: Any, grad: Any, buf: Any, with_buffer: bool) -> None:
    """Raise a TypeError/ValueError naming ``name`` unless the three arrays can be stepped."""
    # The common case in one expression; anything else is examined below to say what is wrong.
    if (
        isinstance(value, np.ndarray)
        and isinstance(grad, np.ndarray)
        and value.dtype.kind in "fc"
        and value.flags.writeable
        and grad.dtype == value.dtype
        and grad.shape == value.shape
        and (
            buf is None
            or not with_buffer
            or (isinstance(buf, np.ndarray) and buf.dtype == value.dtype and buf.shape == value.shape and buf.flags.writeable)
        )
    ):
        return
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: value must be a numpy.ndarray, got {type(value).__name__}")
    if value.dtype.kind not in "fc" and not _half.is_half(value.dtype):
        raise TypeError(f"{name}: value must have a floating-point (float16, bfloat16, float32, float64, ...) "
                        f"or complex dtype, got {value.dtype}")
    if not value.flags.writeable:
        raise ValueError(f"{name}: value is read-only; the step updates it in place")
    _check_companion(name, "grad", grad, value, written=False)
    if with_buffer and buf is not None:
        _check_companion(name, "momentum buffer", buf, value, written=True)


def _check_companion(name: str, what: str, arr: Any, value: np.ndarray, written: bool) -> None:
    """The grad or momentum buffer of ``value``: an array of its dtype and shape (writeable if written)."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: {what} must be a numpy.ndarray, got {type(arr).__name__}")
    float32_buffer = written and _half.is_half(value.dtype) and _same_dtype(arr.dtype, _FLOAT32)
    if not _same_dtype(arr.dtype, value.dtype) and not float32_buffer:
        extra = " (or float32, for a 16-bit value)" if written and _half.is_half(value.dtype) else ""
        raise TypeError(f"{name}: {what} dtype {arr.dtype} does not match value dtype {value.dtype}{extra}")
    if arr.shape != value.shape:
        raise ValueError(f"{name}: {what} shape {arr.shape} does not match value shape {value.shape}")
    if written and not arr.flags.writeable:
        raise ValueError(f"{name}: {what} is read-only; the step updates it in place")


#: The companion check by its public name (the optimizers check their state arrays with it).
check_companion = _check_companion


def _byte_bounds(a: np.ndarray) -> tuple[int, int]:
    if a.size == 0:
        return (0, 0)
    low = high = a.__array_interface__["data"][0]
    for n, s in zip(a.shape, a.strides):
        if s < 0:
            low += (n - 1) * s
        else:
            high += (n - 1) * s
    return low, high + a.itemsize


def _really_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    try:
        return bool(np.shares_memory(a, b, max_work=100_000))
    except np.exceptions.TooHardError:  # pragma: no cover - pathological strides
        return True


def _memory_owner(a: np.ndarray) -> np.ndarray | None:
    """The array that allocated ``a``'s memory (``a`` itself or the end of its chain of bases), or
    None when the memory comes from elsewhere (a buffer object, a raw pointer)."""
    while not a.flags.owndata:
        base = a.base
        if not isinstance(base, np.ndarray):
            return None
        a = base
    return a


def check_no_overlap(
    names: Sequence[str],
    arrays: Sequence[Sequence[np.ndarray | None]],
    slot_names: Sequence[str] = ("value", "grad", "momentum buffer"),
) -> None:
    """ValueError if an array that the step writes (every slot but 1 of each tuple: the value and
    the state arrays) shares memory with any other array of the call. Grads (slot 1) may share
    memory with each other. ``slot_names`` name the slots in the message.

    Arrays whose memory NumPy allocated for different owners cannot overlap, so when every array
    has a known owner only arrays of one owner are compared (in the common case, none at all);
    when any memory comes from elsewhere, all arrays are compared by their byte bounds."""
    owners = []
    unknown = False
    for group in arrays:
        for a in group:
            if a is not None:
                if a.flags.owndata:
                    owners.append(id(a))
                else:
                    owner = _memory_owner(a)
                    unknown = unknown or owner is None
                    owners.append(id(owner))
    if not unknown and len(set(owners)) == len(owners):
        return  # every array's memory has its own owner
    all_members = [(i, slot, a) for i, group in enumerate(arrays) for slot, a in enumerate(group) if a is not None]
    if unknown:
        _check_spans(names, all_members, slot_names)
        return
    by_owner: dict[int, list[tuple[int, int, np.ndarray]]] = {}
    for member, key in zip(all_members, owners):
        by_owner.setdefault(key, []).append(member)
    for members in by_owner.values():
        if len(members) > 1 and any(slot != 1 for _, slot, _ in members):
            _check_spans(names, members, slot_names)


def _check_spans(
    names: Sequence[str], members: Sequence[tuple[int, int, np.ndarray]], slot_names: Sequence[str]
) -> None:
    """The overlap check by byte bounds over (tensor index, slot, array) triples."""
    spans = []
    for i, slot, a in members:
        if a.size:
            lo, hi = _byte_bounds(a)
            spans.append((lo, hi, slot != 1, i, slot, a))
    spans.sort(key=lambda s: s[0])
    labels = slot_names
    active: list[tuple[int, int, bool, int, int, np.ndarray]] = []
    for span in spans:
        lo = span[0]
        active = [s for s in active if s[1] > lo]
        for other in active:
            if (span[2] or other[2]) and _really_overlap(span[5], other[5]):
                a, b = sorted([other, span], key=lambda s: (s[3], s[4]))
                raise ValueError(
                    f"{names[b[3]]}: {labels[b[4]]} shares memory with the {labels[a[4]]} of {names[a[3]]}; "
                    "arrays that the step writes must not overlap any other array"
                )
        active.append(span)


def native_reason(value: np.ndarray, *others: np.ndarray | None, half: bool = False) -> str | None:
    """None when the native kernel can walk ``value`` and its companions (grad, state buffers;
    None entries are skipped) as flat buffers, else why not. ``half``: the kernel is SGD's, which
    also takes float16/bfloat16 (others[0] the grad, of the value's dtype; the buffers of it or
    float32)."""
    if _core is None:
        return f"the native extension could not be imported ({_CORE_IMPORT_ERROR})"
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


# ---------------------------------------------------------------------------------------------
# Running a validated step


def route(names: Sequence[str], tensors: Sequence[Sequence[np.ndarray | None]], backend: str,
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
            raise ValueError(f"{names[i]}: backend='native' cannot serve it: {reason}")
        else:
            other.append(i)
    return native, other


def run_step(
    names: Sequence[str],
    values: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    buffers: Sequence[np.ndarray | None] | None,
    firsts: Sequence[bool],
    group_of: Sequence[int],
    options: Sequence[tuple[float, float, float, float, bool, bool]],
    grad_scale: float,
    backend: str,
    rounding: tuple[bool, int, int] = (False, 0, 0),
    keys: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
) -> None:
    """Route each validated tensor to a backend, then run: tensor i with ``options[group_of[i]]``
    (lr, momentum, dampening, weight_decay, nesterov, maximize); its buffer may be None when its
    momentum is 0. ``rounding`` = (stochastic_rounding, seed, rounding_step), ``keys`` (default:
    positions) and ``offsets`` (the rounding index of each tensor's first element within the
    tensor it is a piece of; default: 0) are for float16/bfloat16 tensors."""
    if keys is None:
        keys = list(range(len(values)))
    if backend == "numpy":  # no routing to do
        _run_numpy(values, grads, buffers if buffers is not None else [None] * len(values), firsts, group_of,
                   options, grad_scale, rounding, list(keys), None if offsets is None else list(offsets))
        return
    bufs = [
        buffers[i] if options[group_of[i]][1] != 0 and buffers is not None else None for i in range(len(values))
    ]
    native, other = route(names, list(zip(values, grads, bufs)), backend, half=True)
    for part, run in ((native, _run_native), (other, _run_numpy)):
        if part:
            run([values[i] for i in part], [grads[i] for i in part],
                [buffers[i] if buffers is not None else None for i in part],
                [firsts[i] for i in part], [group_of[i] for i in part], options, grad_scale, rounding,
                [keys[i] for i in part], None if offsets is None else [offsets[i] for i in part])


def _run_native(
    values: list[np.ndarray],
    grads: list[np.ndarray],
    buffers: list[np.ndarray | None],
    firsts: list[bool],
    group_of: list[int],
    options: Sequence[tuple[float, float, float, float, bool, bool]],
    grad_scale: float,
    rounding: tuple[bool, int, int] = (False, 0, 0),
    keys: list[int] | None = None,
    offsets: list[int] | None = None,
) -> None:
    assert _core is not None
    sr, seed, step = rounding
    if len(options) == 1:
        with_buffer = options[0][1] != 0
        _core.sgd_step(values, grads, buffers if with_buffer else None, firsts, *options[0], grad_scale,
                       check_overlap=False, stochastic_rounding=sr, seed=seed, rounding_step=step, rounding_keys=keys,
                       rounding_offsets=offsets)
    else:  # every group in one call: tensor i with options[group_of[i]]
        _core.sgd_step_groups(values, grads, buffers, firsts, group_of, list(options), grad_scale, check_overlap=False,
                              stochastic_rounding=sr, seed=seed, rounding_step=step, rounding_keys=keys,
                              rounding_offsets=offsets)


def _run_numpy(
    values: list[np.ndarray],
    grads: list[np.ndarray],
    buffers: list[np.ndarray | None],
    firsts: list[bool],
    group_of: list[int],
    options: Sequence[tuple[float, float, float, float, bool, bool]],
    grad_scale: float,
    rounding: tuple[bool, int, int] = (False, 0, 0),
    keys: list[int] | None = None,
    offsets: list[int] | None = None,
) -> None:
    sr, seed, step = rounding
    if keys is None:
        keys = list(range(len(values)))
    if len(options) == 1:  # one group: no lists to split
        opts = options[0]
        _numpy.sgd_step(values, grads, buffers if opts[1] != 0 else None, firsts, *opts, grad_scale,
                        stochastic_rounding=sr, seed=seed, rounding_step=step, rounding_keys=keys,
                        rounding_offsets=offsets)
        return
    for g, opts in enumerate(options):
        idx = [i for i in range(len(values)) if group_of[i] == g]
        if not idx:
            continue
        with_buffer = opts[1] != 0
        _numpy.sgd_step([values[i] for i in idx], [grads[i] for i in idx],
                        [buffers[i] for i in idx] if with_buffer else None, [firsts[i] for i in idx],
                        *opts, grad_scale, stochastic_rounding=sr, seed=seed, rounding_step=step,
                        rounding_keys=[keys[i] for i in idx],
                        rounding_offsets=None if offsets is None else [offsets[i] for i in idx])


def sum_of_squares(names: Sequence[str], grads: Sequence[np.ndarray], backend: str) -> float:
    native: list[np.ndarray] = []
    other: list[np.ndarray] = []
    for name, g in zip(names, grads):
        if backend != "numpy" and native_reason(g, g, None, half=True) is None:
            native.append(g)
        elif backend == "native":
            raise ValueError(f"{name}: backend='native' cannot serve it: {native_reason(g, g, None, half=True)}")
        else:
            other.append(g)
    total = 0.0
    if native:
        assert _core is not None
        total += _core.sum_of_squares(native)
    if other:
        total += _numpy.sum_of_squares(other)
    return total


# ---------------------------------------------------------------------------------------------
# Public functions


def sgd_step(
    values: ArrayOrArrays,
    grads: ArrayOrArrays,
    momentum_buffers: ArrayOrArrays | None = None,
    *,
    lr: float | Sequence[float],
    momentum: float | Sequence[float] = 0.0,
    dampening: float | Sequence[float] = 0.0,
    weight_decay: float | Sequence[float] = 0.0,
    nesterov: bool | Sequence[bool] = False,
    maximize: bool | Sequence[bool] = False,
    grad_scale: float = 1.0,
    first_step: bool | Sequence[bool] = False,
    backend: Backend = "auto",
    stochastic_rounding: bool = False,
    seed: int | None = None,
    rounding_step: int = 0,
    rounding_keys: Sequence[int] | None = None,
) -> None:
    r"""One fused SGD step over one or many tensors, in place, in one pass per tensor.

    For each tensor (``w`` = value, ``v`` = momentum buffer)::

        g = grad * grad_scale
        g = -g                                  if maximize
        g = g + weight_decay * w                if weight_decay != 0
        if momentum != 0:
            v = g                               if first_step (the buffer's contents are not read)
            v = momentum * v + (1 - dampening) * g   otherwise
            g = g + momentum * v  if nesterov else v
        w = w - lr * g

    Every operation runs in the array's dtype, each hyperparameter rounded to it once, in this
    order; the native kernels (every instruction set, any thread count) and the NumPy backend give
    the same bits. All tensors go to the kernel in one call. Every hyperparameter but
    ``grad_scale`` may be one value for all tensors or a sequence with one entry per tensor
    (per-group hyperparameters, say).

    Parameters
    ----------
    values : ndarray or sequence of ndarray
        The params, updated in place (float32, float64, float16 or ``ml_dtypes.bfloat16``; other
        floating and complex dtypes go to the NumPy backend).
    grads : ndarray or sequence of ndarray
        One gradient per value, of its shape and dtype. Never written.
    momentum_buffers : ndarray or sequence of ndarray, optional
        One buffer per value, of its shape and dtype (a 16-bit value's buffer may be float32: it
        is then stored unrounded), updated in place. Required when ``momentum != 0``; an entry may
        be None for a tensor whose momentum is 0. With ``first_step=True`` its contents are not
        read (``numpy.empty_like(value)`` will do).
    lr : float or sequence of float
        The learning rate, ``>= 0``.
    momentum : float or sequence of float, default 0.0
        The momentum factor, ``>= 0``.
    dampening : float or sequence of float, default 0.0
        Dampening of the momentum (not applied on a buffer's first step).
    weight_decay : float or sequence of float, default 0.0
        L2 penalty added to the gradient, ``>= 0``.
    nesterov : bool or sequence of bool, default False
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    maximize : bool or sequence of bool, default False
        Step up the gradient instead of down.
    grad_scale : float, default 1.0
        Multiplies every gradient (a global-norm clip coefficient, say); finite and ``>= 0``.
    first_step : bool or sequence of bool, default False
        Whether this step is the first of each momentum buffer: the buffer is then set to the
        gradient.
    backend : {"auto", "native", "numpy"}, default "auto"
        ``"auto"``: native where the kernel can walk the arrays as flat buffers, NumPy elsewhere;
        ``"native"``: raise where it cannot; ``"numpy"``: the NumPy backend for every tensor.
    stochastic_rounding : bool, default False
        How float16/bfloat16 results are stored: rounded to nearest even (False), or
        stochastically (True) with the random bits of (``seed``, ``rounding_step``, the tensor's
        key, element index): the same bits for any backend, thread count and instruction set.
        Ignored for float32/float64 tensors, whose results are stored in the dtype they are
        computed in.
    seed : int, optional
        An int in ``[0, 2**64)``; required with ``stochastic_rounding=True``.
    rounding_step : int, default 0
        An int in ``[0, 2**64)``: advance it every step (the step count, say), or every step
        rounds with the same bits.
    rounding_keys : sequence of int, optional
        One int in ``[0, 2**64)`` per tensor (default: its position in ``values``); tensors with
        different keys get independent bits.

    Raises
    ------
    TypeError
        A value, grad or buffer that is not an array of a floating-point dtype, or whose dtypes do
        not match; a hyperparameter of the wrong type. The message names it (``values[3]``,
        ``lr``).
    ValueError
        A shape mismatch, a read-only value or buffer, memory shared between arrays the step
        writes, a hyperparameter out of range, a sequence of the wrong length, or
        ``backend="native"`` for a tensor the kernel cannot serve. The message names it.

    Nothing has been written when either is raised.

    See Also
    --------
    SGD : the optimizer over param dicts, which keeps the buffers and the step counts.
    global_grad_norm : the norm to clip with.

    Examples
    --------
    >>> w = np.array([1.0, 2.0], dtype=np.float32)
    >>> g = np.array([0.5, -1.0], dtype=np.float32)
    >>> v = np.empty_like(w)
    >>> minimalsgd.sgd_step(w, g, v, lr=0.1, momentum=0.9, first_step=True)
    >>> w, v
    (array([0.95, 2.1 ], dtype=float32), array([ 0.5, -1. ], dtype=float32))
    >>> minimalsgd.sgd_step([w], [g], [v], lr=0.1, momentum=0.9)   # lists: many tensors, one call
    >>> v
    array([ 0.95, -1.9 ], dtype=float32)

    Clipping to a global norm of 1 is a scale:

    >>> norm = minimalsgd.global_grad_norm([g])
    >>> minimalsgd.sgd_step(w, g, v, lr=0.1, momentum=0.9, grad_scale=min(1.0, 1.0 / (norm + 1e-12)))
    """
    # The common case in one native call: every input valid and every tensor native. The native
    # side checks all of it and writes nothing unless all of it holds; anything else (another
    # backend, a dtype or layout NumPy must serve, or an error to report) takes the path below.
    if _core is not None and ((backend == "auto" and _AUTO_IS_NATIVE) or backend == "native"):
        if stochastic_rounding is False and rounding_keys is None:
            if _core.try_sgd_step(
                values, grads, momentum_buffers, first_step, lr, momentum, dampening, weight_decay, nesterov, maximize,
                grad_scale,
            ):
                return
        elif _core.try_sgd_step(
            values, grads, momentum_buffers, first_step, lr, momentum, dampening, weight_decay, nesterov, maximize,
            grad_scale, stochastic_rounding, seed, rounding_step, rounding_keys,
        ):
            return
    rounding = check_rounding(stochastic_rounding, seed, rounding_step)
    scale = check_real("grad_scale", grad_scale, minimum=0.0)
    resolved = check_backend(backend)
    vs = as_list(values, "values")
    gs = as_list(grads, "grads")
    if len(gs) != len(vs):
        raise ValueError(f"grads has {len(gs)} arrays for {len(vs)} values")
    group_of, options = per_tensor_options(
        len(vs), lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
        maximize=maximize,
    )
    uses_buffer = [options[group_of[i]][1] != 0 for i in range(len(vs))]
    bs: list[Any] | None = None
    if any(uses_buffer):
        if momentum_buffers is None:
            raise ValueError("momentum != 0 needs momentum_buffers (one array per value)")
        bs = as_list(momentum_buffers, "momentum_buffers")
        if len(bs) != len(vs):
            raise ValueError(f"momentum_buffers has {len(bs)} arrays for {len(vs)} values")
    if isinstance(first_step, (bool, np.bool_)):
        firsts = [bool(first_step)] * len(vs)
    else:
        firsts = [check_bool(f"first_step[{i}]", f) for i, f in enumerate(as_list(first_step, "first_step"))]
        if len(firsts) != len(vs):
            raise ValueError(f"first_step has {len(firsts)} flags for {len(vs)} values")
    keys: list[int] | None = None
    if rounding_keys is not None:
        keys = [check_uint64(f"rounding_keys[{i}]", k) for i, k in enumerate(as_list(rounding_keys, "rounding_keys"))]
        if len(keys) != len(vs):
            raise ValueError(f"rounding_keys has {len(keys)} keys for {len(vs)} values")
    names = [f"values[{i}]" for i in range(len(vs))]
    for i in range(len(vs)):
        buf = bs[i] if bs is not None and uses_buffer[i] else None
        check_tensor(names[i], vs[i], gs[i], buf, uses_buffer[i])
        if uses_buffer[i] and buf is None:
            raise TypeError(f"{names[i]}: momentum buffer must be a numpy.ndarray, got NoneType")
    check_no_overlap(names, [(vs[i], gs[i], bs[i] if bs is not None and uses_buffer[i] else None)
                             for i in range(len(vs))])
    run_step(names, vs, gs, [bs[i] if bs is not None and uses_buffer[i] else None for i in range(len(vs))],
             firsts, group_of, options, scale, resolved, rounding, keys)


_SGD_OPTION_NAMES = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")


def per_tensor_options(n: int, **hyper: Any) -> tuple[list[int], list[tuple[float, float, float, float, bool, bool]]]:
    """Per-tensor SGD hyperparameters: each one a scalar (every tensor) or a sequence of ``n``
    (one per tensor). Returns ``(group_of, options)``: tensor i uses ``options[group_of[i]]``,
    one entry per distinct set, each checked by torch.optim.SGD's rules. Raises naming the
    hyperparameter (``lr has 2 values for 3 tensors``) or the tensor (``values[1]: lr must ...``)."""
    columns: dict[str, list[Any]] = {}
    any_sequence = False
    for name in _SGD_OPTION_NAMES:
        x = hyper[name]
        if isinstance(x, np.ndarray) and x.ndim == 1 or isinstance(x, (list, tuple)):
            seq = list(x.tolist() if isinstance(x, np.ndarray) else x)
            if len(seq) != n:
                raise ValueError(f"{name} has {len(seq)} values for {n} tensors; give one per tensor or one for all")
            columns[name] = seq
            any_sequence = True
        else:
            columns[name] = [x] * n
    if not any_sequence:  # one set for every tensor
        return [0] * n, [check_hyperparameters(*(hyper[k] for k in _SGD_OPTION_NAMES))]
    index: dict[tuple[Any, ...], int] = {}
    group_of: list[int] = []
    options: list[tuple[float, float, float, float, bool, bool]] = []
    for i in range(n):
        raw = tuple(columns[k][i] for k in _SGD_OPTION_NAMES)
        try:
            opts = check_hyperparameters(*raw)
        except (TypeError, ValueError) as e:
            raise type(e)(f"values[{i}]: {e}") from None
        j = index.setdefault(opts, len(options))
        if j == len(options):
            options.append(opts)
        group_of.append(j)
    return group_of, options


_ADAM_LABELS = ("value", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def adam_step(
    values: ArrayOrArrays,
    grads: ArrayOrArrays,
    exp_avgs: ArrayOrArrays,
    exp_avg_sqs: ArrayOrArrays,
    max_exp_avg_sqs: ArrayOrArrays | None = None,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled: bool = False,
    step: int | Sequence[int],
    grad_scale: float = 1.0,
    backend: Backend = "auto",
) -> None:
    r"""One fused Adam (or, with ``decoupled=True``, AdamW) step over one or many tensors, in place,
    in one pass per tensor: ``torch.optim.Adam`` / ``AdamW``'s update, in torch's order of operations.

    For each tensor (``w`` = value, ``m`` = exp_avg, ``v`` = exp_avg_sq, ``t`` = its ``step``)::

        g = grad * grad_scale
        g = -g                                      if maximize
        w = w * (1 - lr * weight_decay)             if decoupled (AdamW)
        g = g + weight_decay * w                    if not decoupled (Adam)
        m = beta1 * m + (1 - beta1) * g             (as torch's lerp: m + (1 - beta1) * (g - m))
        v = beta2 * v + (1 - beta2) * g * g
        v_max = maximum(v_max, v)                   if amsgrad; v_max replaces v below
        w = w - (lr / (1 - beta1**t)) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    values : ndarray or sequence of ndarray
        The params (float32 or float64 on the native kernel), updated in place.
    grads : ndarray or sequence of ndarray
        One gradient per value, of its shape and dtype. Never written.
    exp_avgs, exp_avg_sqs : ndarray or sequence of ndarray
        The first and second moments, one per value, of its shape and dtype, updated in place;
        zeros before the first step (``numpy.zeros_like(value)``).
    max_exp_avg_sqs : ndarray or sequence of ndarray, optional
        With ``amsgrad``: the running maximum of the second moment (zeros first).
    lr : float
        The learning rate, finite and ``>= 0``.
    betas : (float, float), default (0.9, 0.999)
        The moments' decay rates, each in ``[0, 1)``.
    eps : float, default 1e-8
        Added to the denominator, finite and ``>= 0``.
    weight_decay : float, default 0.0
        Finite and ``>= 0``: added to the gradient (Adam) or decoupled (AdamW).
    amsgrad : bool, default False
        Use the running maximum of the second moment.
    maximize : bool, default False
        Step up the gradient instead of down.
    decoupled : bool, default False
        AdamW's decoupled weight decay, ``w *= 1 - lr * weight_decay`` before the update.
    step : int or sequence of int
        The step this update makes, 1 on the first (torch's ``state["step"]`` after its
        increment); one int or one per tensor. It sets the bias corrections.
    grad_scale : float, default 1.0
        Multiplies every gradient (a global-norm clip coefficient, say).
    backend : {"auto", "native", "numpy"}, default "auto"
        As in :func:`sgd_step`.

    Raises
    ------
    TypeError
        An input that is not an array of a floating-point dtype, or whose dtype differs from its
        value's; a hyperparameter of the wrong type. The message names it.
    ValueError
        A shape mismatch, a read-only array the step writes, overlapping memory, a hyperparameter
        out of range, ``step < 1``, a missing ``max_exp_avg_sqs`` with ``amsgrad``, or a sequence
        of the wrong length. The message names it.

    Nothing has been written when either is raised.

    See Also
    --------
    Adam, AdamW : the optimizers over param dicts, which keep the moments and step counts.

    Examples
    --------
    >>> w = np.ones(3)
    >>> g = np.array([0.1, -0.2, 0.0])
    >>> m, v = np.zeros_like(w), np.zeros_like(w)
    >>> minimalsgd.adam_step(w, g, m, v, lr=0.1, step=1)     # the first step moves each weight by ~lr
    >>> w.round(6)
    array([0.9, 1.1, 1. ])
    >>> minimalsgd.adam_step(w, g, m, v, lr=0.1, weight_decay=1e-2, decoupled=True, step=2)  # AdamW
    """
    hyper = check_adam_hyperparameters(lr, betas, eps, weight_decay, amsgrad, maximize, decoupled)
    scale = check_real("grad_scale", grad_scale, minimum=0.0)
    resolved = check_backend(backend)
    vs = as_list(values, "values")
    n = len(vs)
    states: list[list[Any]] = []
    for what, arrays in (("grads", grads), ("exp_avgs", exp_avgs), ("exp_avg_sqs", exp_avg_sqs)):
        states.append(as_list(arrays, what))
        if len(states[-1]) != n:
            raise ValueError(f"{what} has {len(states[-1])} arrays for {n} values")
    if hyper[5]:
        if max_exp_avg_sqs is None:
            raise ValueError("amsgrad needs max_exp_avg_sqs (one array per value)")
        states.append(as_list(max_exp_avg_sqs, "max_exp_avg_sqs"))
        if len(states[-1]) != n:
            raise ValueError(f"max_exp_avg_sqs has {len(states[-1])} arrays for {n} values")
    steps = check_steps(step, n)
    names = [f"values[{i}]" for i in range(n)]
    tensors = [(vs[i], *(s[i] for s in states)) for i in range(n)]
    for name, arrays in zip(names, tensors):
        check_tensor(name, arrays[0], arrays[1], None, False)
        for label, a in zip(_ADAM_LABELS[2:], arrays[2:]):
            _check_companion(name, label, a, arrays[0], written=True)
    check_no_overlap(names, tensors, _ADAM_LABELS)
    run_adam(names, tensors, steps, hyper, scale, resolved)


def run_adam(
    names: Sequence[str],
    tensors: Sequence[Sequence[np.ndarray]],
    steps: Sequence[int],
    hyper: tuple[float, float, float, float, float, bool, bool, bool],
    grad_scale: float,
    backend: str,
) -> None:
    """Route each validated tensor (value, grad, exp_avg, exp_avg_sq[, max_exp_avg_sq]) to a
    backend, then run: native ones in one call."""
    native, other = route(names, tensors, backend)

    def columns(indices: list[int]) -> list[Any]:
        """values, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs (None without amsgrad), steps."""
        cols: list[Any] = [[tensors[i][k] for i in indices] for k in range(4)]
        cols.append([tensors[i][4] for i in indices] if hyper[5] else None)
        cols.append([steps[i] for i in indices])
        return cols

    if native:
        assert _core is not None
        _core.adam_step(*columns(native), *hyper, grad_scale, check_overlap=False)
    if other:
        _numpy.adam_step(*columns(other), *hyper, grad_scale)


def global_grad_norm(grads: ArrayOrArrays, *, backend: Backend = "auto") -> float:
    """The L2 norm over every element of every gradient, accumulated in float64.

    The squares are added in a fixed order (blocks of 64K elements, 32 lanes each, a fixed
    pairwise fold), so the result is the same bits on both backends, on every instruction set and
    for any thread count.

    Parameters
    ----------
    grads : ndarray or sequence of ndarray
        Floating-point (float16, bfloat16, float32, float64, ...) or complex arrays. Only read.
    backend : {"auto", "native", "numpy"}, default "auto"
        As in :func:`sgd_step`.

    Returns
    -------
    float
        ``sqrt(sum of |g|**2 over every element of every grad)``: NaN or infinity when a grad
        holds one.

    Raises
    ------
    TypeError
        A grad that is not an ndarray, or not of a floating-point or complex dtype (the message
        names it: ``grads[2]``).

    Examples
    --------
    >>> minimalsgd.global_grad_norm([np.array([3.0, 0.0]), np.array([4.0], np.float32)])
    5.0
    """
    resolved = check_backend(backend)
    gs = as_list(grads, "grads")
    names = [f"grads[{i}]" for i in range(len(gs))]
    for name, g in zip(names, gs):
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(g).__name__}")
        if g.dtype.kind not in "fc" and not _half.is_half(g.dtype):
            raise TypeError(f"{name} must have a floating-point or complex dtype, got {g.dtype}")
    return math.sqrt(sum_of_squares(names, gs, resolved))


def clip_scale(total_norm: float, max_norm: float | None) -> float:
    """The grad_scale that clips to ``max_norm``: ``max_norm / (total + 1e-12)`` when the total exceeds it."""
    if max_norm is not None and total_norm > max_norm:
        return max_norm / (total_norm + 1e-12)
    return 1.0
