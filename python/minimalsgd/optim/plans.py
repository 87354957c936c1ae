"""The plan cache of an optimizer's step, and the one owner of its applied-step count.

After a step that was fully validated, the validated params are kept in a plan: the native plan
of the formula (``_core.SgdPlan``/``AdamPlan``, ``csrc/python/plan.hpp``) when the native kernel
serves every tensor, else (a tensor served by NumPy, ``backend="numpy"``, no extension, or a
formula without a native plan) the same contract in Python (:class:`PythonPlan`), for one group
with a fixed lr. A later step re-checks only what can change cheaply (dict entries by identity,
the arrays' layouts and flags) and runs in one call; anything else makes the plan report
:attr:`PlanStatus.STALE` with nothing written, and the optimizer takes its full path, which
validates everything and builds a new plan. float16/bfloat16 params are never planned (their
rounding step and keys change every step).

:class:`PlanCache` keeps the plan and the count of applied steps: the steps the optimizer applied
on its full path, plus those of the current plan (a plan counts its own; they are folded into
the count and into each param's ``state[name]["step"]`` when the plan is dropped or the state is
read, :meth:`PlanCache.flush`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import _router
from ..protocol import Batch, Formula, Rounding
from .gradients import GradientPolicy

__all__ = ["Offset", "PlanCache", "PlanStatus", "PythonPlan"]


class PlanStatus(enum.IntEnum):  # numpydoc ignore=PR01
    """What a cached plan's ``step()`` did (the native plan returns the same numbers)."""

    #: Something changed since the plan was built: nothing written; take the full path.
    STALE = 0
    #: The step was applied.
    APPLIED = 1
    #: A non-finite gradient with ``skip_nonfinite``: nothing written.
    SKIPPED = 2


_STALE, _APPLIED, _SKIPPED = PlanStatus.STALE, PlanStatus.APPLIED, PlanStatus.SKIPPED


class Offset(Sequence[int]):
    """``[b + k for b in base]``, computed only where read (a formula that ignores step counts,
    like SGD's, then costs nothing per step)."""

    def __init__(self, base: Sequence[int], k: int) -> None:
        self._base, self._k = base, k

    def __len__(self) -> int:
        return len(self._base)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [b + self._k for b in self._base[i]]
        return self._base[i] + self._k


class PythonPlan:
    """A validated step of one group, cached in Python (see the module docstring).
    ``step()`` returns a :class:`PlanStatus`.

    It keeps the params dict, its entries, the arrays and what was checked about them (shape,
    strides, dtype, writeable); a step re-checks exactly those facts, cheaply, and runs
    ``run(grad_scale, applied)`` (the formula's prepared step, ``applied`` being the number of
    steps this plan applied before). An array whose identity, shape, strides and dtype are
    unchanged covers the same memory, so the overlap check of the full step still holds."""

    def __init__(
        self,
        params: dict,
        keys: Sequence[str],
        labels: Sequence[str],
        values: Sequence[np.ndarray],
        grads: Sequence[np.ndarray],
        states: Sequence[np.ndarray | None],
        run: Callable[[float, int], None],
        lr: float,
        policy: GradientPolicy,
        backend: str,
    ) -> None:
        self._outer = params
        index = {k: i for i, k in enumerate(keys)}
        # Every entry of the dict in order: (key, inner dict, tensor index or -1 for no grad).
        self._entries = [(k, p, index.get(k, -1)) for k, p in params.items()]
        self._values = list(values)
        self._grads = list(grads)
        self._labels = list(labels)
        written = self._values + [a for a in states if a is not None]
        # What each step re-checks: every array's layout, and that the written ones stay writeable.
        self._layouts = [(a, a.shape, a.strides, a.dtype, True) for a in written]
        self._layouts += [(a, a.shape, a.strides, a.dtype, False) for a in self._grads]
        self._run = run
        self._policy = policy
        self._backend = backend
        self.applied = 0
        self.last_norm = math.nan
        #: The lrs of the latest step (one group: its fixed lr), as the native plan reports them.
        self.last_lrs = [float(lr)]

    def reset_applied(self) -> None:
        self.applied = 0

    def set_lr(self, group: int, lr: float) -> bool:
        """A new lr is not a cheap input of this plan: False, and the optimizer rebuilds it."""
        return False

    def _unchanged(self, params: Any) -> bool:
        if params is not self._outer or type(params) is not dict or len(params) != len(self._entries):
            return False
        values, grads = self._values, self._grads
        for (key, inner, i), (k, p) in zip(self._entries, params.items()):
            if k is not key or p is not inner or type(p) is not dict:
                return False
            if i < 0:
                if p.get("grad") is not None:
                    return False
            elif p.get("value") is not values[i] or p.get("grad") is not grads[i]:
                return False
        for a, shape, strides, dtype, written in self._layouts:
            if a.shape != shape or a.strides != strides or a.dtype is not dtype or (written and not a.flags.writeable):
                return False
        return True

    def step(self, grad_scale: float = 1.0) -> PlanStatus:
        """One step (``grad_scale``: checked by the caller, as the native plan's ``step``)."""
        if not self._unchanged(self._outer):
            return _STALE
        scale = grad_scale
        policy = self._policy
        if policy.measures:
            decision = policy.measure(self._labels, self._grads, self._backend, grad_scale)
            if decision.skipped:
                return _SKIPPED
            self.last_norm = decision.norm
            scale = decision.scale
        self._run(scale, self.applied)
        self.applied += 1
        return _APPLIED


class PlanCache:
    """An optimizer's cached plan and its applied-step count (see the module docstring).

    Attributes:
        plan: the current plan (a native plan or a :class:`PythonPlan`), or None.
        keys: the names of the planned tensors (their ``state[name]["step"]`` advance with it).
        schedules: ``[(group index, schedule)]`` of a native plan: each step sets these groups' lrs.
        measures_norm: whether the plan's steps measure the gradient norm.
    """

    __slots__ = ("plan", "keys", "schedules", "measures_norm", "_applied", "_last_lrs")

    def __init__(self) -> None:
        self.plan: Any = None
        self.keys: list[str] = []
        self.schedules: list[tuple[int, Any]] = []
        self.measures_norm = False
        self._applied = 0
        self._last_lrs: list[float] | None = None

    @property
    def applied_steps(self) -> int:
        """Applied steps so far: those counted here plus those of the current plan."""
        plan = self.plan
        return self._applied + (plan.applied if plan is not None else 0)

    @property
    def last_lrs(self) -> list[float] | None:
        """The lr of each group in the latest applied step (None before the first)."""
        plan = self.plan
        if plan is not None and plan.applied:
            return list(plan.last_lrs)
        return self._last_lrs

    @last_lrs.setter
    def last_lrs(self, value: list[float] | None) -> None:
        self._last_lrs = value

    def record(self, lrs: list[float]) -> None:
        """One step applied outside a plan (the full path), with these group lrs."""
        self._applied += 1
        self._last_lrs = lrs

    def restore(self, applied: int, last_lrs: list[float] | None = None) -> None:
        """The count of a loaded checkpoint (the plan must have been dropped)."""
        assert self.plan is None
        self._applied = applied
        self._last_lrs = last_lrs

    def flush(self, state: dict[str, dict[str, Any]]) -> None:
        """Fold the plan's applied steps into the count, the lrs and the planned params' ``step``."""
        plan = self.plan
        if plan is not None and plan.applied:
            n = plan.applied
            self._last_lrs = list(plan.last_lrs)
            plan.reset_applied()
            self._applied += n
            for key in self.keys:
                state[key]["step"] += n

    def drop(self, state: dict[str, dict[str, Any]]) -> None:
        """Forget the plan (its steps flushed into ``state`` first)."""
        if self.plan is not None:
            self.flush(state)
            self.plan = None

    def build(
        self,
        groups: Sequence[dict[str, Any]],
        keys: list[str],
        labels: list[str],
        values: list[np.ndarray],
        grads: list[np.ndarray],
        state: dict[str, list[np.ndarray | None]],
        steps: list[int],
        group_of: list[int],
        options: list[Any],
        policy: GradientPolicy,
        backend: str,
        formula: Formula,
    ) -> None:
        """A plan for the step just validated and applied (``steps``: each tensor's steps before
        it, ``state``: field -> array per tensor), when one can serve the next steps. The caller
        has checked that ``groups`` report their changes (:meth:`ParamGroups.owned_by`) and that
        no value is float16/bfloat16 (those take the full path at every step: their rounding
        step and keys change, and the plans do not carry them)."""
        included = {k: i for i, k in enumerate(keys)}
        outers, all_keys, all_inners, all_index = [], [], [], []
        for group in groups:
            params = group["params"]
            if type(params) is not dict:
                return
            inners, index = [], []
            for name, p in params.items():
                if type(p) is not dict:
                    return
                inners.append(p)
                index.append(included.get(name, -1))
            outers.append(params)
            all_keys.append(list(params.keys()))
            all_inners.append(inners)
            all_index.append(index)
        fields = formula.state_fields
        per_tensor = [[state[f][i] for f in fields] for i in range(len(keys))]
        after = [s + 1 for s in steps]  # steps applied before the plan's first step
        if backend == "numpy" or not _router.can_serve_natively(
            [(values[i], grads[i], *per_tensor[i]) for i in range(len(keys))]
        ) or formula.native_plan is None:
            # Some tensor is NumPy's (or no native plan): the same cached plan in Python, for one
            # group with a fixed lr; otherwise every step takes the full path.
            if len(outers) == 1 and not callable(groups[0]["lr"]):
                n = len(keys)
                batch = Batch(labels=labels, values=values, grads=grads, state=state, born=[False] * n, steps=after,
                              group_of=[0] * n, options=[options[0]], rounding=Rounding(), backend=backend)
                run = formula.prepare(batch)
                states = [a for col in state.values() for a in col]
                self.plan = PythonPlan(outers[0], keys, labels, values, grads, states, run, float(options[0].lr),
                                       policy, backend)
                self.keys = keys
                self.schedules = []
                self.measures_norm = policy.measures
            return
        plan = _router.native_plan(formula.native_plan, outers, all_keys, all_inners, all_index, values, grads,
                                   per_tensor, after, group_of, options, -1.0 if policy.clip is None else policy.clip,
                                   policy.skip_nonfinite)
        self.plan = plan
        self.keys = keys
        self.schedules = [(i, g["lr"]) for i, g in enumerate(groups) if callable(g["lr"])]
        self.measures_norm = policy.measures
