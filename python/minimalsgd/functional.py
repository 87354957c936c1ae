"""The functional API: :func:`sgd_step`, :func:`adam_step` and :func:`global_grad_norm` over one
or many NumPy arrays, in place.

Each checks every input before anything is written (``minimalsgd._validation``), then hands all
tensors to the one router (``minimalsgd._router``): those the native kernel can walk as flat
buffers go to ``_core`` in one call, the rest to the NumPy backend, which computes the same bits.
``import minimalsgd`` re-exports the three functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from . import _half
from . import _router as R
from ._router import Backend
from ._validation import (
    as_list,
    check_adam_options,
    check_bool,
    check_companion,
    check_no_overlap,
    check_real,
    check_rounding,
    check_sgd_options,
    check_steps,
    check_tensor,
    check_uint64,
)
from .protocol import Batch, SGDOptions

__all__ = ["adam_step", "global_grad_norm", "sgd_step"]

ArrayOrArrays = Union[np.ndarray, Sequence[np.ndarray]]

# The common case of sgd_step in one native call (None without the extension), and whether
# backend="auto" means native in this process (read once: sgd_step's fast path is a few hundred ns).
_try_sgd_step = R.try_sgd_step
_AUTO_IS_NATIVE = R.AUTO_IS_NATIVE


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

    Every hyperparameter but ``grad_scale`` may also be a sequence with one entry per tensor (per
    param group hyperparameters, say): all tensors still go to the kernel in one call.

    Args:
        values: an array or a sequence of arrays, updated in place.
        grads: the gradients, one per value, same shape and dtype; never written.
        momentum_buffers: one per value, same shape and dtype, updated in place; required when
            ``momentum != 0`` (an entry may be None for a tensor whose momentum is 0) (``numpy.empty_like(value)`` will do with ``first_step=True``).
        first_step: whether this step is the first for each buffer; one bool or one per tensor.
        grad_scale: multiplies every gradient (a global-norm clip coefficient, say).
        backend: ``"auto"`` (native where it can walk the arrays as flat buffers, NumPy
            elsewhere), ``"native"`` (raise where it cannot) or ``"numpy"``.
        stochastic_rounding: float16/bfloat16 tensors compute in float32 and round each stored
            result once: to nearest even (False), or stochastically (True) with the random bits
            of (``seed``, ``rounding_step``, the tensor's key, element index) -- the same bits for
            any backend, thread count and instruction set. Ignored for float32/float64 tensors,
            whose results are stored in the dtype they are computed in.
        seed: an int in [0, 2**64); required with ``stochastic_rounding=True``.
        rounding_step: an int in [0, 2**64): advance it every step (the step count, say), or
            every step rounds with the same bits.
        rounding_keys: one int in [0, 2**64) per tensor (default: its position in ``values``):
            tensors with different keys get independent bits.

    A 16-bit value's momentum buffer is of its dtype, or float32 (then stored unrounded).

    Raises:
        TypeError, ValueError: naming the tensor (``values[i]``) or hyperparameter at fault;
            nothing has been written then.
    """
    # The common case in one native call: every input valid and every tensor native. The native
    # side checks all of it and writes nothing unless all of it holds; anything else (another
    # backend, a dtype or layout NumPy must serve, or an error to report) takes the path below.
    if _try_sgd_step is not None and ((backend == "auto" and _AUTO_IS_NATIVE) or backend == "native"):
        if stochastic_rounding is False and rounding_keys is None:
            if _try_sgd_step(
                values, grads, momentum_buffers, first_step, lr, momentum, dampening, weight_decay, nesterov, maximize,
                grad_scale,
            ):
                return
        elif _try_sgd_step(
            values, grads, momentum_buffers, first_step, lr, momentum, dampening, weight_decay, nesterov, maximize,
            grad_scale, stochastic_rounding, seed, rounding_step, rounding_keys,
        ):
            return
    rounding = check_rounding(stochastic_rounding, seed, rounding_step)
    scale = check_real("grad_scale", grad_scale, minimum=0.0)
    resolved = R.check_backend(backend)
    vs = as_list(values, "values")
    gs = as_list(grads, "grads")
    if len(gs) != len(vs):
        raise ValueError(f"grads has {len(gs)} arrays for {len(vs)} values")
    group_of, options = per_tensor_options(
        len(vs), lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
        maximize=maximize,
    )
    uses_buffer = [options[group_of[i]].momentum != 0 for i in range(len(vs))]
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
    buffers = [bs[i] if bs is not None and uses_buffer[i] else None for i in range(len(vs))]
    for i in range(len(vs)):
        check_tensor(names[i], vs[i], gs[i], buffers[i], uses_buffer[i])
        if uses_buffer[i] and buffers[i] is None:
            raise TypeError(f"{names[i]}: momentum buffer must be a numpy.ndarray, got NoneType")
    check_no_overlap(names, [(vs[i], gs[i], buffers[i]) for i in range(len(vs))])
    R.sgd(Batch(labels=names, values=vs, grads=gs, state={"momentum_buffer": buffers}, born=firsts,
                steps=[0] * len(vs), group_of=group_of, options=options, keys=keys, rounding=rounding,
                grad_scale=scale, backend=resolved))


_SGD_OPTION_NAMES = SGDOptions._fields


def per_tensor_options(n: int, **hyper: Any) -> tuple[list[int], list[SGDOptions]]:
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
        return [0] * n, [check_sgd_options(**{k: hyper[k] for k in _SGD_OPTION_NAMES})]
    index: dict[SGDOptions, int] = {}
    group_of: list[int] = []
    options: list[SGDOptions] = []
    for i in range(n):
        try:
            opts = check_sgd_options(**{k: columns[k][i] for k in _SGD_OPTION_NAMES})
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

    Args:
        values: an array or a sequence of arrays, updated in place.
        grads: the gradients, one per value, same shape and dtype; never written.
        exp_avgs, exp_avg_sqs: the first and second moments, one per value, same shape and dtype,
            updated in place; zeros before the first step (``numpy.zeros_like(value)``).
        max_exp_avg_sqs: with ``amsgrad``, the running maximum of the second moment (zeros first).
        step: the step this update makes, 1 on the first (torch's ``state["step"]`` after its
            increment); one int or one per tensor. It sets the bias corrections.
        grad_scale: multiplies every gradient (a global-norm clip coefficient, say).
        backend: ``"auto"`` (native where it can walk the arrays as flat buffers, NumPy
            elsewhere), ``"native"`` (raise where it cannot) or ``"numpy"``.

    Raises:
        TypeError, ValueError: naming the tensor (``values[i]``) or hyperparameter at fault;
            nothing has been written then.
    """
    options = check_adam_options(lr, betas, eps, weight_decay, amsgrad, maximize, decoupled)
    scale = check_real("grad_scale", grad_scale, minimum=0.0)
    resolved = R.check_backend(backend)
    vs = as_list(values, "values")
    n = len(vs)
    columns: dict[str, list[Any]] = {}
    for what, arrays in (("grads", grads), ("exp_avgs", exp_avgs), ("exp_avg_sqs", exp_avg_sqs)):
        columns[what] = as_list(arrays, what)
        if len(columns[what]) != n:
            raise ValueError(f"{what} has {len(columns[what])} arrays for {n} values")
    if options.amsgrad:
        if max_exp_avg_sqs is None:
            raise ValueError("amsgrad needs max_exp_avg_sqs (one array per value)")
        columns["max_exp_avg_sqs"] = as_list(max_exp_avg_sqs, "max_exp_avg_sqs")
        if len(columns["max_exp_avg_sqs"]) != n:
            raise ValueError(f"max_exp_avg_sqs has {len(columns['max_exp_avg_sqs'])} arrays for {n} values")
    steps = check_steps(step, n)
    names = [f"values[{i}]" for i in range(n)]
    tensors = [(vs[i], *(c[i] for c in columns.values())) for i in range(n)]
    for name, arrays in zip(names, tensors):
        check_tensor(name, arrays[0], arrays[1], None, False)
        for label, a in zip(_ADAM_LABELS[2:], arrays[2:]):
            check_companion(name, label, a, arrays[0], written=True)
    check_no_overlap(names, tensors, _ADAM_LABELS)
    state = {"exp_avg": columns["exp_avgs"], "exp_avg_sq": columns["exp_avg_sqs"],
             "max_exp_avg_sq": columns.get("max_exp_avg_sqs", [None] * n)}
    R.adam(Batch(labels=names, values=vs, grads=columns["grads"], state=state, born=[False] * n,
                 steps=[t - 1 for t in steps], group_of=[0] * n, options=[options], grad_scale=scale,
                 backend=resolved))


def global_grad_norm(grads: ArrayOrArrays, *, backend: Backend = "auto") -> float:
    """The L2 norm over every element of every gradient, accumulated in float64."""
    resolved = R.check_backend(backend)
    gs = as_list(grads, "grads")
    names = [f"grads[{i}]" for i in range(len(gs))]
    for name, g in zip(names, gs):
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(g).__name__}")
        if g.dtype.kind not in "fc" and not _half.is_half(g.dtype):
            raise TypeError(f"{name} must have a floating-point or complex dtype, got {g.dtype}")
    return R.norm(names, gs, resolved)
