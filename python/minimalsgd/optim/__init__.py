"""The param-dict optimizers and the machinery they share.

``SGD``, ``Adam`` and ``AdamW`` are each a formula (``SGD_FORMULA``, ``ADAM_FORMULA``,
``ADAMW_FORMULA``: :class:`minimalsgd.protocol.Formula`) and a small class naming it and its
constructor arguments, on :class:`Optimizer`, which holds param groups and state and orchestrates
``step()`` from one piece per concern:

``base``        Optimizer: groups + state, the orchestration of step(); BaseFormula
``groups``      ParamGroup/ParamGroups change tracking, group checks, lr schedules
``gradients``   GradientPolicy: the global norm -> skip / clip scale, defined once
``plans``       the plan cache (native or Python plan), the one owner of the applied-step count
``checkpoint``  state_dict / load_state_dict / format upgrades (format 2, reads 1)
``storage``     16-bit storage: rounding settings, keys of names, state dtype and layout
``sgd``         SGD's formula and class
``adam``        Adam's and AdamW's formula and classes
"""

from __future__ import annotations

from .adam import ADAM_FORMULA, ADAMW_FORMULA, Adam, AdamFormula, AdamW
from .base import BaseFormula, Optimizer, Params, ParamsOrGroups
from .checkpoint import STATE_DICT_FORMAT, Checkpoint
from .gradients import GradientDecision, GradientPolicy
from .groups import ParamGroup, ParamGroups, Schedule
from .plans import PlanStatus
from .sgd import SGD, SGD_FORMULA, SGDFormula
from .storage import Storage

__all__ = [
    "ADAMW_FORMULA",
    "ADAM_FORMULA",
    "Adam",
    "AdamFormula",
    "AdamW",
    "BaseFormula",
    "Checkpoint",
    "GradientDecision",
    "GradientPolicy",
    "Optimizer",
    "ParamGroup",
    "ParamGroups",
    "Params",
    "ParamsOrGroups",
    "PlanStatus",
    "SGD",
    "SGDFormula",
    "SGD_FORMULA",
    "STATE_DICT_FORMAT",
    "Schedule",
    "Storage",
]
