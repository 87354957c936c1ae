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

    ``step()`` updates every value in place (the arrays you hold stay the same objects) with the
    update of :func:`minimalsgd.sgd_step`, torch.optim.SGD's, each param with its group's
    hyperparameters, all groups in one native call. A param whose ``"grad"`` is missing or None is
    skipped (its state is left as it is). Grads are never written by ``step()``.

    Parameters
    ----------
    params : dict or list of dict
        One param group, ``{name: {"value": ndarray, "grad": ndarray or None}}``, or a list of
        groups in torch's shape, ``[{"params": {name: {...}}, "weight_decay": 0.0, ...}, ...]``,
        where a hyperparameter given in a group overrides the constructor's for that group. Names
        are unique across groups. The dicts are read at every step, so params added or arrays
        replaced later are seen.
    lr : float or callable, default 1e-2
        The learning rate, ``>= 0``; or a schedule, ``lr(t)`` of the 0-based count of applied
        steps (see :mod:`minimalsgd.schedules`), called and checked at the step that uses it.
    momentum : float, default 0.0
        The momentum factor, ``>= 0``. Buffers live in ``state[name]["momentum_buffer"]``,
        created on the first step that uses them, which sets them to the gradient.
    nesterov : bool, default False
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    weight_decay : float, default 0.0
        L2 penalty added to the gradient, ``>= 0``.
    clip_grad_norm : float, optional
        Clip to this global L2 norm over every gradient of every group: when the norm exceeds it,
        every gradient is used as ``grad * clip_grad_norm / (norm + 1e-12)`` (a scale inside the
        step, never written back). Global, finite and ``> 0``.
    dampening : float, default 0.0
        Dampening of the momentum (not on a buffer's first step).
    maximize : bool, default False
        Step up the gradient instead of down.
    skip_nonfinite : bool, default False
        A step whose gradients hold a NaN or an infinity writes nothing and creates or advances no
        state (nor the schedules' count); ``step()`` returns False and ``skipped_steps`` counts
        it. The check is the clip's norm pass. Global.
    backend : {"auto", "native", "numpy"}, default "auto"
        As in :func:`minimalsgd.sgd_step`. Global.
    stochastic_rounding : bool, default False
        float16/bfloat16 params compute in float32 and round each stored result once: to nearest
        even (False), or stochastically (True) with random bits keyed by (``seed``,
        ``applied_steps``, a 64-bit hash of the param's name, element index within the param).
        Ignored for float32/float64 params.
    seed : int, optional
        The stochastic-rounding seed, an int in ``[0, 2**64)``; by default
        :data:`minimalsgd.DEFAULT_SEED`, a fixed number: runs round reproducibly, and every rank
        of a data-parallel run (``allreduce_grads`` + ``SGD``) rounds alike without passing one
        (:func:`minimalsgd.distributed.shared_seed` draws another, the same on every rank). Kept
        in :meth:`state_dict`, so a resumed run rounds bit for bit as the uninterrupted one.
    state_dtype : {None, "float32"}, default None
        ``"float32"`` keeps the momentum buffers of 16-bit params in float32 (unrounded); by
        default a buffer has its value's dtype, as in torch.

    Attributes
    ----------
    param_groups : list of dict
        Each group's ``"params"`` dict and its hyperparameters (``lr``, ``momentum``,
        ``dampening``, ``weight_decay``, ``nesterov``, ``maximize``); change them between steps as
        with torch (``opt.param_groups[1]["lr"] = 0.01``). ``opt.lr = x`` sets a hyperparameter in
        every group; reading ``opt.lr`` works while the groups agree (else AttributeError).
    defaults : dict
        The constructor's hyperparameters, which groups added later inherit.
    skipped_steps : int
        Steps that found a non-finite gradient and wrote nothing.
    last_grad_norm : float or None
        The global gradient norm of the latest step that measured it (clipping or checking).

    Raises
    ------
    TypeError, ValueError
        From the constructor or any step: a param, group or hyperparameter that is not valid
        (checked like ``torch.optim.SGD`` checks them, plus finiteness); the message names it
        (``params['w1']``, ``param_groups[1]``, ``lr``). A step writes nothing then.

    See Also
    --------
    sgd_step : the same update over arrays you manage yourself.
    Adam, AdamW : the same machinery with Adam's formula.
    minimalsgd.torch.SGD : the drop-in for torch.

    Examples
    --------
    >>> params = {"w": {"value": np.ones(3, np.float32), "grad": None},
    ...           "b": {"value": np.zeros(1, np.float32), "grad": None}}
    >>> opt = minimalsgd.SGD(params, lr=0.1, momentum=0.9, nesterov=True, clip_grad_norm=5.0)
    >>> for p in params.values():
    ...     p["grad"] = np.full_like(p["value"], 0.5)     # your backprop here
    >>> opt.step()
    True
    >>> params["w"]["value"]
    array([0.905, 0.905, 0.905], dtype=float32)
    >>> opt.zero_grad()
    >>> opt.state["w"]["step"], opt.applied_steps
    (1, 1)

    Two groups and a schedule:

    >>> from minimalsgd import schedules
    >>> opt = minimalsgd.SGD([{"params": {"w": params["w"]}},
    ...                       {"params": {"b": params["b"]}, "weight_decay": 0.0}],
    ...                      lr=schedules.cosine(0.1, T_max=100), momentum=0.9, weight_decay=1e-4)
    >>> opt.get_lr()
    [0.1, 0.1]
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
