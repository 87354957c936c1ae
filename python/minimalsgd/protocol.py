"""The step protocol: what one optimizer step is, for every caller of a step.

An optimizer is a **formula** (:class:`Formula`): its named options (:class:`SGDOptions`,
:class:`AdamOptions`), the rules that check them, the state arrays it keeps per param and how
they are born, and :meth:`Formula.apply`, which runs the update over a :class:`Batch` of
validated tensors through the one router (native kernel where it can serve a tensor, NumPy
elsewhere, the same bits). Everything else -- param groups and schedules, the gradient policy
(norm, skip, clip scale), the cached plan, checkpoints, 16-bit storage -- is the shared machinery
in :mod:`minimalsgd.optim`, and the optimizers (``minimalsgd.SGD``, ``Adam``, ``AdamW``), the
sharded wrapper (:mod:`minimalsgd.distributed`) and the torch drop-ins are callers of this
protocol. A new optimizer is a formula (and its kernel) plus a small class that names it and its
constructor arguments.

The formulas of this package are ``minimalsgd.optim.SGD_FORMULA``, ``ADAM_FORMULA`` and
``ADAMW_FORMULA`` (``minimalsgd.optim.SGD.formula`` is the first).

This module is types and documentation only (and the default seed of 16-bit rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Protocol, Union, runtime_checkable

import numpy as np

from ._half import DEFAULT_SEED

__all__ = ["DEFAULT_SEED", "AdamOptions", "Batch", "Formula", "Options", "Rounding", "SGDOptions"]


class SGDOptions(NamedTuple):
    """The options of one SGD param group, checked (``torch.optim.SGD``'s rules, plus finiteness).

    Fields in the order the native ``SgdOptions`` takes them; read them by name."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    maximize: bool = False


class AdamOptions(NamedTuple):
    """The options of one Adam/AdamW param group, checked (``torch.optim.Adam``'s rules, plus
    finiteness); ``decoupled`` is AdamW's weight decay (``w *= 1 - lr * weight_decay``).

    Fields in the order the native ``AdamOptions`` takes them; read them by name."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    maximize: bool = False
    decoupled: bool = False


#: The options of one group of any formula of this package.
Options = Union[SGDOptions, AdamOptions]


class Rounding(NamedTuple):
    """How a step stores float16/bfloat16 results (float32/float64 tensors ignore it).

    ``stochastic``: round each stored result stochastically (else to nearest even), with the
    random bits of (``seed``, ``step``, the tensor's key, the element's index within its param):
    never of how elements are sliced over threads, ranks or buckets. ``step`` is the rounding
    step: the optimizer's applied steps before this one. ``seed`` defaults to
    :data:`minimalsgd.DEFAULT_SEED`. A NamedTuple: it unpacks as ``(stochastic, seed, step)``."""

    stochastic: bool = False
    seed: int = DEFAULT_SEED
    step: int = 0


@dataclass
class Batch:
    """The validated tensors of one step: every group, one call (:meth:`Formula.apply`).

    Tensor ``i`` is ``values[i]`` (updated in place) with ``grads[i]`` (never written), its state
    arrays ``state[field][i]`` (None where its group's options do not use that field), and
    ``options[group_of[i]]``. A caller validates everything (shapes, dtypes, writeable, no
    overlap, options) before it builds a batch: :meth:`Formula.apply` writes.

    Attributes:
        labels: each tensor's name for messages (``"params['w']"``, ``"values[3]"``).
        values, grads: the arrays, one per tensor.
        state: state field -> one array (or None) per tensor, for every field of the formula.
        born: whether each tensor's state was created for this step (a first step: SGD's momentum
            buffer is then set to the gradient, its old contents never read).
        steps: the steps applied to each tensor before this one (Adam's bias corrections use
            ``steps[i] + 1``).
        group_of: each tensor's index into ``options``.
        options: one set per group (:class:`SGDOptions`, :class:`AdamOptions`).
        keys: each tensor's stochastic-rounding key (the 64-bit key of its param's name), or None:
            each tensor's position. Only float16/bfloat16 tensors read it.
        offsets: the index of each tensor's first element within its param (a piece of a larger
            param -- a rank's slice, an offloaded bucket -- rounds bit for bit as the whole), or
            None: 0 for every tensor. Only float16/bfloat16 tensors read it.
        rounding: the step's :class:`Rounding`.
        grad_scale: multiplies every gradient (a clip coefficient); finite and >= 0.
        backend: ``"auto"`` (native where the kernel can serve a tensor, NumPy elsewhere),
            ``"native"`` (an error where it cannot) or ``"numpy"``; already resolved from
            ``MINIMALSGD_BACKEND`` (see ``minimalsgd._router.check_backend``).
    """

    labels: Sequence[str]
    values: Sequence[np.ndarray]
    grads: Sequence[np.ndarray]
    state: Mapping[str, Sequence[Optional[np.ndarray]]]
    born: Sequence[bool]
    steps: Sequence[int]
    group_of: Sequence[int]
    options: Sequence[Any]
    keys: Optional[Sequence[int]] = None
    offsets: Optional[Sequence[int]] = None
    rounding: Rounding = field(default_factory=Rounding)
    grad_scale: float = 1.0
    backend: str = "auto"

    def __len__(self) -> int:
        return len(self.values)


@runtime_checkable
class Formula(Protocol):
    """What an optimizer is: its options, its state, its checks and its update.

    Attributes:
        name: the formula's name (``"sgd"``, ``"adam"``, ``"adamw"``).
        options_type: the NamedTuple of one group's options (:class:`SGDOptions`, ...).
        hyperparameters: the per-group keys of ``param_groups``, ``"lr"`` first.
        state_fields: the arrays it keeps per param (besides the ``"step"`` count).
        native_plan: the name of its cached native plan class in ``_core`` (``"SgdPlan"``), or
            None: steps of its optimizers never take a cached native plan.
    """

    name: str
    options_type: type
    hyperparameters: tuple[str, ...]
    state_fields: tuple[str, ...]
    native_plan: Optional[str]

    def options(self, hyper: Mapping[str, Any]) -> Any:
        """One group's hyperparameters (``hyper["lr"]`` a number) checked by the formula's rules,
        as its options; TypeError/ValueError naming the hyperparameter."""
        ...

    def fields_needed(self, options: Any) -> tuple[str, ...]:
        """The state fields that a tensor stepped with ``options`` uses."""
        ...

    def init_state(self, field: str, array: np.ndarray) -> None:
        """Give ``array``, allocated for ``field`` of a tensor whose state is born this step, its
        initial contents in place (Adam: zeros; SGD: nothing, the born flag says its contents
        are not read)."""
        ...

    def new_state(self, field: str, value: np.ndarray, dtype: Any = None) -> np.ndarray:
        """A new, initialized state array for ``value``: its shape and memory order, native byte
        order, ``dtype`` (None: the value's)."""
        ...

    def apply(self, batch: Batch) -> None:
        """The update over every tensor of ``batch``, in place, through the one router."""
        ...

    def prepare(self, batch: Batch) -> Callable[[float, int], None]:
        """``apply`` with the tensors bound, for a cached plan that repeats one validated step
        (no state born): ``run(grad_scale, applied)``, ``applied`` being the steps that ``run``
        made before (``batch.steps`` are those before the first)."""
        ...
