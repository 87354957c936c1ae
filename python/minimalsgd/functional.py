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
    resolved = R.check_backend(backend)
    gs = as_list(grads, "grads")
    names = [f"grads[{i}]" for i in range(len(gs))]
    for name, g in zip(names, gs):
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(g).__name__}")
        if g.dtype.kind not in "fc" and not _half.is_half(g.dtype):
            raise TypeError(f"{name} must have a floating-point or complex dtype, got {g.dtype}")
    return R.norm(names, gs, resolved)
