"""The param-dict SGD: ``SGD(params, ...)`` on the shared optimizer machinery (``_optimizer``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np


from . import _functional as F
from . import _half
from ._optimizer import STATE_DICT_FORMAT, Optimizer, ParamsOrGroups, Schedule

__all__ = ["SGD", "STATE_DICT_FORMAT"]


class SGD(Optimizer):
    r"""Stochastic gradient descent over dicts of NumPy parameters, one fused pass per step.

    ``params`` maps a name to ``{"value": ndarray, "grad": ndarray}`` (one param group), or is a
    list of groups in torch's shape, ``[{"params": {name: {...}}, "weight_decay": 0.0}, ...]``,
    where a hyperparameter given in a group overrides the constructor's for that group.
    ``step()`` updates every value in place (the arrays you hold stay the same objects) with the
    update of :func:`minimalsgd.sgd_step`, each with its group's hyperparameters, all groups in one
    call; a param whose ``"grad"`` is missing or ``None`` is skipped. Momentum buffers live in
    ``self.state[name]["momentum_buffer"]``, created on the first step that uses them, which sets
    them to the gradient; ``self.state[name]["step"]`` counts the steps applied to that param.

    Any ``lr`` (constructor or group) may be a schedule: a callable of the 0-based count of
    applied steps returning the lr of that step (see :mod:`minimalsgd.schedules`). ``get_lr()``
    gives the lrs of the next step, ``last_lrs`` those of the latest.

    With ``clip_grad_norm``, the global L2 norm over all gradients of all groups is measured first
    and, when it exceeds the limit, every gradient is used as ``grad * limit / (norm + 1e-12)``.
    Grads are never written by ``step()``.

    With ``skip_nonfinite=True``, a step whose gradients hold a NaN or an infinity writes nothing
    and creates or advances no state (nor the schedules' count); ``step()`` then returns False and
    ``skipped_steps`` counts it. The check is the same pass over the grads as the clip norm.
    ``last_grad_norm`` is the global norm of the latest step that measured it, else None.

    float16 and bfloat16 (``ml_dtypes.bfloat16``) params compute in float32 and round each stored
    result once: to nearest even, or with ``stochastic_rounding=True`` stochastically, with random
    bits keyed by (``seed``, ``applied_steps``, a 64-bit key of the param's name, element index
    within the param). ``seed`` (an int in [0, 2**64)) defaults to :data:`minimalsgd.DEFAULT_SEED`,
    a fixed number: runs round reproducibly, and every rank of a data-parallel run
    (``allreduce_grads`` + ``SGD``) rounds alike without passing one; pass ``seed=`` for another
    stream (``minimalsgd.distributed.shared_seed()`` draws one, the same on every rank). Both are in
    :meth:`state_dict`, so a resumed run rounds bit for bit as the uninterrupted one. Stochastic
    rounding is ignored for float32/float64 params (nothing to round). ``state_dtype="float32"``
    keeps the momentum buffers of 16-bit params in float32 (unrounded); by default a buffer has
    its value's dtype, as in torch.

    Hyperparameters are plain entries of ``param_groups`` (``opt.param_groups[1]["lr"] = 0.01``
    takes effect at the next step); ``opt.lr = 0.01`` sets it in every group, and reading
    ``opt.lr`` works while the groups agree. They are checked like :class:`torch.optim.SGD`
    checks them, at construction and at every step.
    """

    hyperparameters = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    state_fields = ("momentum_buffer",)
    _plan_class = "SgdPlan"

    def __init__(
        self,
        params: ParamsOrGroups,
        lr: float | Schedule = 1e-2,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        clip_grad_norm: float | None = None,
        *,
        dampening: float = 0.0,
        maximize: bool = False,
        skip_nonfinite: bool = False,
        backend: F.Backend = "auto",
        stochastic_rounding: bool = False,
        seed: int | None = None,
        state_dtype: Any = None,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults, clip_grad_norm=clip_grad_norm, skip_nonfinite=skip_nonfinite, backend=backend,
                         stochastic_rounding=stochastic_rounding, seed=seed, state_dtype=state_dtype)

    # The formula: torch.optim.SGD's rules and the fused SGD kernel.

    def _check_options(self, hyper: Mapping[str, Any]) -> tuple[float, float, float, float, bool, bool]:
        lr, momentum, dampening, weight_decay, nesterov, maximize = F.check_hyperparameters(
            hyper["lr"], hyper["momentum"], hyper["dampening"], hyper["weight_decay"], hyper["nesterov"], hyper["maximize"]
        )
        return lr, momentum, dampening, weight_decay, nesterov, maximize

    def _fields_needed(self, options: tuple[Any, ...]) -> tuple[str, ...]:
        return self.state_fields if options[1] != 0 else ()

    def _run(
        self,
        labels: list[str],
        values: list[np.ndarray],
        grads: list[np.ndarray],
        states: list[list[np.ndarray | None]],
        born: list[bool],
        steps: list[int],
        group_of: list[int],
        options: list[tuple[Any, ...]],
        grad_scale: float,
        backend: str,
        rounding_keys: Sequence[int] | None = None,
        rounding_offsets: Sequence[int] | None = None,
    ) -> None:
        # SGD's one state field is the momentum buffer; a buffer born this step is a first step.
        buffers = [s[0] for s in states]
        keys = rounding_keys
        if keys is None and any(_half.is_half(v.dtype) for v in values):
            keys = self._rounding_keys(labels)
        F.run_step(labels, values, grads, buffers, born, group_of, options, grad_scale, backend, self._rounding(),
                   keys, rounding_offsets)

    def _plan_runner(self, labels, values, grads, states, options, backend):  # type: ignore[no-untyped-def]
        # The routing of a cached Python plan, fixed with the layouts: one call per backend.
        with_buffer = options[1] != 0
        buffers = [s[0] for s in states]
        native: list[int] = []
        other: list[int] = []
        for i in range(len(values)):
            buf = buffers[i] if with_buffer else None
            (native if backend != "numpy" and F.native_reason(values[i], grads[i], buf) is None else other).append(i)
        calls = []
        if native:
            assert F._core is not None
            bufs = [buffers[i] for i in native] if with_buffer else None
            calls.append(partial(F._core.sgd_step, [values[i] for i in native], [grads[i] for i in native], bufs, False,
                                 *options, check_overlap=False))
        if other:
            bufs = [buffers[i] for i in other] if with_buffer else None
            calls.append(F._numpy.prepare_sgd_step([values[i] for i in other], [grads[i] for i in other], bufs, *options))
        if len(calls) == 1:
            call = calls[0]
            return lambda grad_scale, applied: call(grad_scale)

        def run(grad_scale: float, applied: int) -> None:
            for call in calls:
                call(grad_scale)

        return run
