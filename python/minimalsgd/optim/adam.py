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
    r"""Adam over dicts of NumPy parameters, one fused pass per step.

    ``torch.optim.Adam``'s update (bias-corrected moments per param step count, ``eps`` after the
    square root, ``amsgrad``, ``maximize``, weight decay added to the gradient), see
    :func:`minimalsgd.adam_step`. Everything but the formula is :class:`SGD`'s: param groups,
    schedules, global-norm clipping fused into the step as a gradient scale,
    ``skip_nonfinite``, ``backend``, and the methods and attributes documented there
    (``step``, ``zero_grad``, ``state_dict`` / ``load_state_dict``, which resume bit for bit,
    ``add_param_group``, ``get_lr``, ``param_groups``, ``applied_steps``, ...).

    Parameters
    ----------
    params : dict or list of dict
        As for :class:`SGD`: one ``{name: {"value": ndarray, "grad": ndarray}}`` dict or a list
        of param groups, each with its own hyperparameters.
    lr : float or callable, default 1e-3
        The learning rate (finite, ``>= 0``) or a schedule of the applied step count.
    betas : (float, float), default (0.9, 0.999)
        The moments' decay rates, each in ``[0, 1)``.
    eps : float, default 1e-8
        Added to the denominator after the square root; finite, ``>= 0``.
    weight_decay : float, default 0.0
        L2 penalty added to the gradient; finite, ``>= 0``.
    amsgrad : bool, default False
        Use the running maximum of the second moment (``max_exp_avg_sq``).
    clip_grad_norm : float, optional
        As for :class:`SGD`.
    maximize : bool, default False
        Step up the gradient instead of down.
    skip_nonfinite : bool, default False
        As for :class:`SGD`.
    backend : {"auto", "native", "numpy"}, default "auto"
        As in :func:`minimalsgd.sgd_step`.

    Attributes
    ----------
    state : dict
        ``name -> {"exp_avg": ndarray, "exp_avg_sq": ndarray[, "max_exp_avg_sq": ndarray],
        "step": int}``: the moments are zeros when born, ``step`` counts the steps applied to
        that param (a step's bias corrections use ``step + 1``, as torch counts).

    Raises
    ------
    TypeError, ValueError
        As :class:`SGD`'s, with torch.optim.Adam's rules plus finiteness: ``lr``, ``eps`` and
        ``weight_decay`` finite and ``>= 0``, ``betas`` a pair in ``[0, 1)``.

    See Also
    --------
    AdamW, adam_step, minimalsgd.torch.Adam

    Examples
    --------
    >>> params = {"w": {"value": np.ones(3), "grad": np.array([0.1, -0.2, 0.0])}}
    >>> opt = minimalsgd.Adam(params, lr=0.1, amsgrad=True)
    >>> opt.step()
    True
    >>> params["w"]["value"].round(6)
    array([0.9, 1.1, 1. ])
    >>> sorted(opt.state["w"])
    ['exp_avg', 'exp_avg_sq', 'max_exp_avg_sq', 'step']
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
    weight decay, ``w *= 1 - lr * weight_decay`` before the Adam update.

    Parameters
    ----------
    params, lr, betas, eps, amsgrad, clip_grad_norm, maximize, skip_nonfinite, backend
        As for :class:`Adam`.
    weight_decay : float, default 1e-2
        The decoupled weight decay (torch's AdamW default); finite, ``>= 0``.

    Raises
    ------
    TypeError, ValueError
        As :class:`Adam`'s.

    Examples
    --------
    >>> from minimalsgd import schedules
    >>> params = {"w": {"value": np.ones(2), "grad": np.array([1.0, -1.0])}}
    >>> opt = minimalsgd.AdamW(params, lr=schedules.warmup_cosine(1e-3, 10, 100), clip_grad_norm=1.0)
    >>> opt.step()
    True
    >>> opt.state["w"]["step"]
    1
    """

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
