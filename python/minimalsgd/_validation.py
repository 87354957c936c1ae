"""The checks of every step's inputs: each raises a TypeError/ValueError that names the parameter
(or tensor) and the problem, and none writes or creates anything.

Used by the functional API (``minimalsgd.functional``), the formulas' option rules
(``minimalsgd.optim``), the cached plans and the sharded step. Numbers: :func:`check_real`,
:func:`check_bool`, :func:`check_uint64`, :func:`check_steps`, :func:`check_rounding`; options:
:func:`check_sgd_options`, :func:`check_adam_options`; arrays: :func:`check_tensor`,
:func:`check_companion`, :func:`check_no_overlap`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _half
from .protocol import AdamOptions, Rounding, SGDOptions

__all__ = [
    "as_list",
    "check_adam_options",
    "check_bool",
    "check_companion",
    "check_no_overlap",
    "check_real",
    "check_rounding",
    "check_sgd_options",
    "check_steps",
    "check_tensor",
    "check_uint64",
]

_FLOAT32 = np.dtype(np.float32)
_U64 = 1 << 64
_INF = math.inf


# ---------------------------------------------------------------------------------------------
# Numbers


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
    """``x`` as a bool: TypeError unless a bool (or NumPy bool)."""
    if type(x) is bool:
        return x
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(x).__name__}")
    return bool(x)


def check_uint64(name: str, x: Any) -> int:
    """``x`` as an int in [0, 2**64): TypeError unless an integer, ValueError unless in range."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int in [0, 2**64), got {type(x).__name__}")
    value = int(x)
    if not 0 <= value < _U64:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    return value


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


def check_rounding(stochastic_rounding: Any, seed: Any, rounding_step: Any = 0) -> Rounding:
    """The :class:`~minimalsgd.protocol.Rounding` ``(stochastic, seed, step)``, checked: a bool,
    and ints in [0, 2**64) (a seed of None stands for 0 when stochastic rounding is off)."""
    sr = check_bool("stochastic_rounding", stochastic_rounding)
    if seed is None and not sr:
        seed = 0
    return Rounding(sr, check_uint64("seed", seed), check_uint64("rounding_step", rounding_step))


# ---------------------------------------------------------------------------------------------
# Options of the formulas


def check_sgd_options(
    lr: Any, momentum: Any, dampening: Any, weight_decay: Any, nesterov: Any, maximize: Any
) -> SGDOptions:
    """The rules of torch.optim.SGD, plus finiteness."""
    lr = check_real("lr", lr, minimum=0.0)
    momentum = check_real("momentum", momentum, minimum=0.0)
    dampening = check_real("dampening", dampening)
    weight_decay = check_real("weight_decay", weight_decay, minimum=0.0)
    nesterov = check_bool("nesterov", nesterov)
    maximize = check_bool("maximize", maximize)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("nesterov requires momentum > 0 and dampening == 0")
    return SGDOptions(lr, momentum, dampening, weight_decay, nesterov, maximize)


def check_adam_options(
    lr: Any, betas: Any, eps: Any, weight_decay: Any, amsgrad: Any, maximize: Any, decoupled: Any
) -> AdamOptions:
    """The rules of torch.optim.Adam, plus finiteness: lr, eps and weight_decay finite and >= 0,
    betas a pair of numbers in [0, 1)."""
    lr = check_real("lr", lr, minimum=0.0)
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2) of real numbers, got {betas!r}")
    beta1, beta2 = (check_real(f"betas[{k}]", b, minimum=0.0) for k, b in enumerate(betas))
    for k, b in enumerate((beta1, beta2)):
        if not b < 1.0:
            raise ValueError(f"betas[{k}] must be in [0, 1), got {b}")
    eps = check_real("eps", eps, minimum=0.0)
    weight_decay = check_real("weight_decay", weight_decay, minimum=0.0)
    return AdamOptions(
        lr, beta1, beta2, eps, weight_decay,
        check_bool("amsgrad", amsgrad), check_bool("maximize", maximize), check_bool("decoupled", decoupled),
    )


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
    check_companion(name, "grad", grad, value, written=False)
    if with_buffer and buf is not None:
        check_companion(name, "momentum buffer", buf, value, written=True)


def check_companion(name: str, what: str, arr: Any, value: np.ndarray, written: bool) -> None:
    """The grad or a state array of ``value``: an array of its dtype (a written one of a 16-bit
    value may be float32) and shape (writeable if written)."""
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
