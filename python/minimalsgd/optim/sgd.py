"""SGD: its formula (:data:`SGD_FORMULA`, ``torch.optim.SGD``'s rules and the fused SGD kernel)
and the param-dict optimizer :class:`SGD` that names it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .. import _router
from .._router import Backend
from .._validation import check_sgd_options
from ..protocol import Batch, SGDOptions
from .base import BaseFormula, Optimizer, ParamsOrGroups, Schedule

__all__ = ["SGD", "SGDFormula", "SGD_FORMULA"]


class SGDFormula(BaseFormula):
    """SGD's update (see :func:`minimalsgd.sgd_step`): options :class:`SGDOptions`, one state
    field, the momentum buffer, used when the momentum is not 0 and set to the gradient on the
    step that creates it (its born contents are never read)."""

    name = "sgd"
    options_type = SGDOptions
    hyperparameters = SGDOptions._fields
    state_fields = ("momentum_buffer",)
    native_plan = "SgdPlan"

    def options(self, hyper: Mapping[str, Any]) -> SGDOptions:
        return check_sgd_options(hyper["lr"], hyper["momentum"], hyper["dampening"], hyper["weight_decay"],
                                 hyper["nesterov"], hyper["maximize"])

    def fields_needed(self, options: SGDOptions) -> tuple[str, ...]:
        return self.state_fields if options.momentum != 0 else ()

    def apply(self, batch: Batch) -> None:
        _router.sgd(batch)

    def prepare(self, batch: Batch) -> Callable[[float, int], None]:
        call = _router.prepare_sgd(batch)
        return lambda grad_scale, applied: call(grad_scale)


#: The SGD formula (``minimalsgd.SGD.formula``).
SGD_FORMULA = SGDFormula()


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

    formula = SGD_FORMULA

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
        backend: Backend = "auto",
        stochastic_rounding: bool = False,
        seed: int | None = None,
        state_dtype: Any = None,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults, clip_grad_norm=clip_grad_norm, skip_nonfinite=skip_nonfinite, backend=backend,
                         stochastic_rounding=stochastic_rounding, seed=seed, state_dtype=state_dtype)
