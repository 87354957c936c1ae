"""Adam and AdamW: their formula (:data:`ADAM_FORMULA`, :data:`ADAMW_FORMULA`,
``torch.optim.Adam``/``AdamW``'s rules and the fused Adam kernel) and the param-dict optimizers
:class:`Adam` and :class:`AdamW` that name them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _router
from .._router import Backend
from .._validation import check_adam_options
from ..protocol import AdamOptions, Batch
from .base import BaseFormula, Optimizer, ParamsOrGroups, Schedule

__all__ = ["ADAMW_FORMULA", "ADAM_FORMULA", "Adam", "AdamFormula", "AdamW"]


class AdamFormula(BaseFormula):
    """Adam's update (see :func:`minimalsgd.adam_step`), or AdamW's with ``decoupled=True``:
    options :class:`AdamOptions` (the group key ``betas`` is the pair ``beta1``, ``beta2``), state
    ``exp_avg`` and ``exp_avg_sq`` (and ``max_exp_avg_sq`` with ``amsgrad``), born as zeros; the
    bias corrections use each tensor's step count."""

    options_type = AdamOptions
    hyperparameters = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
    state_fields = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    native_plan = "AdamPlan"

    def __init__(self, decoupled: bool) -> None:
        self.decoupled = bool(decoupled)
        self.name = "adamw" if decoupled else "adam"

    def options(self, hyper: Mapping[str, Any]) -> AdamOptions:
        return check_adam_options(hyper["lr"], hyper["betas"], hyper["eps"], hyper["weight_decay"], hyper["amsgrad"],
                                  hyper["maximize"], self.decoupled)

    def fields_needed(self, options: AdamOptions) -> tuple[str, ...]:
        return self.state_fields if options.amsgrad else self.state_fields[:2]

    def init_state(self, field: str, array: np.ndarray) -> None:
        """Zeros: torch's initial moments."""
        array.fill(0)

    def apply(self, batch: Batch) -> None:
        _router.adam(batch)


#: Adam's formula (``minimalsgd.Adam.formula``) and AdamW's (decoupled weight decay).
ADAM_FORMULA = AdamFormula(decoupled=False)
ADAMW_FORMULA = AdamFormula(decoupled=True)


class Adam(Optimizer):
    r"""Adam over dicts of NumPy parameters, one fused pass per step: ``torch.optim.Adam``'s update
    (bias-corrected moments per param step count, ``eps`` after the square root, ``amsgrad``,
    ``maximize``, weight decay added to the gradient), see :func:`minimalsgd.adam_step`.

    Everything but the formula is :class:`SGD`'s: ``params`` is one ``{name: {"value": ndarray,
    "grad": ndarray}}`` dict or a list of param groups in torch's shape, each with its own
    hyperparameters (``betas`` a pair); any ``lr`` may be a schedule of the applied step count
    (:mod:`minimalsgd.schedules`); ``clip_grad_norm`` (global norm, fused into the step as a
    gradient scale), ``skip_nonfinite``, ``backend``; ``state_dict()``/``load_state_dict()`` resume
    bit for bit. ``self.state[name]`` holds ``exp_avg``, ``exp_avg_sq`` (and, with ``amsgrad``,
    ``max_exp_avg_sq``), zeros when born, and ``step``, the steps applied to that param (the
    bias corrections use ``step + 1`` in the step that makes it, as torch counts).
    Hyperparameters are checked as :class:`torch.optim.Adam` checks them, plus finiteness.
    """

    formula = ADAM_FORMULA
    #: AdamW's decoupled weight decay (``w *= 1 - lr * weight_decay`` before the update).
    decoupled = False

    def __init__(
        self,
        params: ParamsOrGroups,
        lr: float | Schedule = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        clip_grad_norm: float | None = None,
        *,
        maximize: bool = False,
        skip_nonfinite: bool = False,
        backend: Backend = "auto",
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults, clip_grad_norm=clip_grad_norm, skip_nonfinite=skip_nonfinite, backend=backend)


class AdamW(Adam):
    r"""AdamW over dicts of NumPy parameters: :class:`Adam` with ``torch.optim.AdamW``'s decoupled
    weight decay, ``w *= 1 - lr * weight_decay`` before the Adam update (default
    ``weight_decay=1e-2``, as torch's)."""

    formula = ADAMW_FORMULA
    decoupled = True

    def __init__(
        self,
        params: ParamsOrGroups,
        lr: float | Schedule = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        clip_grad_norm: float | None = None,
        *,
        maximize: bool = False,
        skip_nonfinite: bool = False,
        backend: Backend = "auto",
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, clip_grad_norm, maximize=maximize,
                         skip_nonfinite=skip_nonfinite, backend=backend)
