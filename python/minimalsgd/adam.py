"""The param-dict Adam and AdamW: ``Adam(params, ...)`` on the shared optimizer machinery."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _functional as F
from ._optimizer import Optimizer, ParamsOrGroups, Schedule

__all__ = ["Adam", "AdamW"]

# The options tuple of one group: (lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled).
AdamOptions = tuple[float, float, float, float, float, bool, bool, bool]


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

    hyperparameters = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
    state_fields = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _plan_class = "AdamPlan"
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
        backend: F.Backend = "auto",
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults, clip_grad_norm=clip_grad_norm, skip_nonfinite=skip_nonfinite, backend=backend)

    # The formula: torch.optim.Adam's rules and the fused Adam kernel.

    def _check_options(self, hyper: Mapping[str, Any]) -> AdamOptions:
        return F.check_adam_hyperparameters(
            hyper["lr"], hyper["betas"], hyper["eps"], hyper["weight_decay"], hyper["amsgrad"], hyper["maximize"],
            self.decoupled,
        )

    def _fields_needed(self, options: tuple[Any, ...]) -> tuple[str, ...]:
        return self.state_fields if options[5] else self.state_fields[:2]

    def _new_state_array(self, field: str, value: np.ndarray) -> np.ndarray:
        """Zeros (torch's initial moments), in the value's memory order and native byte order."""
        return np.zeros_like(value, dtype=value.dtype.newbyteorder("="))

    def _run(self, labels, values, grads, states, born, steps, group_of, options, grad_scale, backend,  # type: ignore[no-untyped-def]
             rounding_keys=None, rounding_offsets=None) -> None:
        # One native call per group (the kernel takes per-tensor options; the binding, one set).
        # (Adam stores its results in the dtype it computes in: no rounding keys to use.)
        for g, opts in enumerate(options):
            idx = [i for i in range(len(values)) if group_of[i] == g]
            if idx:
                n_fields = 3 if opts[5] else 2
                F.run_adam([labels[i] for i in idx], [(values[i], grads[i], *states[i][:n_fields]) for i in idx],
                           [steps[i] + 1 for i in idx], opts, grad_scale, backend)


class AdamW(Adam):
    r"""AdamW over dicts of NumPy parameters: :class:`Adam` with ``torch.optim.AdamW``'s decoupled
    weight decay, ``w *= 1 - lr * weight_decay`` before the Adam update (default
    ``weight_decay=1e-2``, as torch's)."""

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
        backend: F.Backend = "auto",
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, clip_grad_norm, maximize=maximize,
                         skip_nonfinite=skip_nonfinite, backend=backend)
