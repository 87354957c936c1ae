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

    Fields in the order the native ``SgdOptions`` takes them; read them by name.

    Parameters
    ----------
    lr : float
        The learning rate, ``>= 0``.
    momentum : float, default 0.0
        The momentum factor, ``>= 0``.
    dampening : float, default 0.0
        Dampening of the momentum.
    weight_decay : float, default 0.0
        L2 penalty added to the gradient, ``>= 0``.
    nesterov : bool, default False
        Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
    maximize : bool, default False
        Step up the gradient instead of down.
    """

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    maximize: bool = False


class AdamOptions(NamedTuple):
    """The options of one Adam/AdamW param group, checked (``torch.optim.Adam``'s rules, plus
    finiteness).

    Fields in the order the native ``AdamOptions`` takes them; read them by name. A group's
    ``betas`` pair is ``beta1``, ``beta2`` here.

    Parameters
    ----------
    lr : float
        The learning rate, ``>= 0``.
    beta1, beta2 : float, default 0.9, 0.999
        The moments' decay rates, each in ``[0, 1)``.
    eps : float, default 1e-8
        Added to the denominator after the square root, ``>= 0``.
    weight_decay : float, default 0.0
        Weight decay, ``>= 0``: added to the gradient, or decoupled.
    amsgrad : bool, default False
        Use the running maximum of the second moment.
    maximize : bool, default False
        Step up the gradient instead of down.
    decoupled : bool, default False
        AdamW's weight decay, ``w *= 1 - lr * weight_decay`` before the update.
    """

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

    A NamedTuple: it unpacks as ``(stochastic, seed, step)``.

    Parameters
    ----------
    stochastic : bool, default False
        Round each stored result stochastically (else to nearest even), with the random bits of
        (``seed``, ``step``, the tensor's key, the element's index within its param): never of
        how elements are sliced over threads, ranks or buckets.
    seed : int, default DEFAULT_SEED
        An int in ``[0, 2**64)`` (:data:`minimalsgd.DEFAULT_SEED` by default).
    step : int, default 0
        The rounding step: the optimizer's applied steps before this one.
    """

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

    Parameters
    ----------
    labels : sequence of str
        Each tensor's name for messages (``"params['w']"``, ``"values[3]"``).
    values, grads : sequence of ndarray
        The arrays, one per tensor.
    state : mapping of str to sequence of (ndarray or None)
        State field -> one array (or None) per tensor, for every field of the formula.
    born : sequence of bool
        Whether each tensor's state was created for this step (a first step: SGD's momentum
        buffer is then set to the gradient, its old contents never read).
    steps : sequence of int
        The steps applied to each tensor before this one (Adam's bias corrections use
        ``steps[i] + 1``).
    group_of : sequence of int
        Each tensor's index into ``options``.
    options : sequence
        One options tuple per group (:class:`SGDOptions`, :class:`AdamOptions`).
    keys : sequence of int, optional
        Each tensor's stochastic-rounding key (the 64-bit key of its param's name); None: each
        tensor's position. Only float16/bfloat16 tensors read it.
    offsets : sequence of int, optional
        The index of each tensor's first element within its param (a piece of a larger param --
        a rank's slice, an offloaded bucket -- rounds bit for bit as the whole); None: 0 for
        every tensor. Only float16/bfloat16 tensors read it.
    rounding : Rounding, optional
        The step's :class:`Rounding` (default: round to nearest).
    grad_scale : float, default 1.0
        Multiplies every gradient (a clip coefficient); finite and ``>= 0``.
    backend : {"auto", "native", "numpy"}, default "auto"
        ``"auto"``: native where the kernel can serve a tensor, NumPy elsewhere; ``"native"``:
        an error where it cannot; ``"numpy"``. Already resolved from ``MINIMALSGD_BACKEND``.
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
class Formula(Protocol):  # numpydoc ignore=PR01
    """What an optimizer is: its options, its state, its checks and its update.

    Attributes
    ----------
    name : str
        The formula's name (``"sgd"``, ``"adam"``, ``"adamw"``).
    options_type : type
        The NamedTuple of one group's options (:class:`SGDOptions`, ...).
    hyperparameters : tuple of str
        The per-group keys of ``param_groups``, ``"lr"`` first.
    state_fields : tuple of str
        The arrays it keeps per param (besides the ``"step"`` count).
    native_plan : str or None
        The name of its cached native plan class in ``_core`` (``"SgdPlan"``), or None: steps of
        its optimizers never take a cached native plan.
    """

    name: str
    options_type: type
    hyperparameters: tuple[str, ...]
    state_fields: tuple[str, ...]
    native_plan: Optional[str]

    def options(self, hyper: Mapping[str, Any]) -> Any:
        """One group's hyperparameters checked by the formula's rules.

        Parameters
        ----------
        hyper : mapping
            The group's hyperparameters by name (``hyper["lr"]`` a number).

        Returns
        -------
        options_type
            The options; TypeError/ValueError naming the hyperparameter otherwise.
        """
        ...

    def fields_needed(self, options: Any) -> tuple[str, ...]:
        """The state fields that a tensor stepped with these options uses.

        Parameters
        ----------
        options : options_type
            One group's options.

        Returns
        -------
        tuple of str
            A subset of ``state_fields``.
        """
        ...

    def init_state(self, field: str, array: np.ndarray) -> None:
        """Give a state array born this step its initial contents, in place.

        Parameters
        ----------
        field : str
            The state field.
        array : ndarray
            The new array (Adam: zeros; SGD: nothing, the born flag says its contents are not read).
        """
        ...

    def new_state(self, field: str, value: np.ndarray, dtype: Any = None) -> np.ndarray:
        """A new, initialized state array for a value.

        Parameters
        ----------
        field : str
            The state field.
        value : ndarray
            The value: the array has its shape and memory order, native byte order.
        dtype : dtype, optional
            The array's dtype (None: the value's).

        Returns
        -------
        ndarray
            The array.
        """
        ...

    def apply(self, batch: Batch) -> None:
        """The update over every tensor of a batch, in place, through the one router.

        Parameters
        ----------
        batch : Batch
            The validated tensors of the step.
        """
        ...

    def prepare(self, batch: Batch) -> Callable[[float, int], None]:
        """``apply`` with the tensors bound, for a cached plan that repeats one validated step.

        Parameters
        ----------
        batch : Batch
            The step's tensors, none born; ``batch.steps`` are the steps before the first run.

        Returns
        -------
        callable
            ``run(grad_scale, applied)``, ``applied`` being the steps that ``run`` made before.
        """
        ...
