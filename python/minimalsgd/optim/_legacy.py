"""A temporary adapter: the private members of the optimizer that ``minimalsgd/distributed.py``
calls today (``_check_globals``, ``_checked_group``, ``_lr_of``, ``_fields_needed``,
``_new_state_array``, ``_run``, ``_applied``, ``_global_values``, ``_fresh_copy``,
``_rounding_keys``), each a few lines over the public pieces.

It exists only until the sharded optimizer is rebuilt on the public protocol (issue 20, phase 2:
``Formula.apply``, ``Optimizer.step(grad_scale=)``, ``GradientPolicy``, ``checkpoint.read`` /
``checkpoint.state_dict``); then this file goes. Nothing else may use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import _half
from ..protocol import Batch
from .groups import group_options, lr_at
from .storage import DEFAULTS as STORAGE_DEFAULTS
from .storage import name_keys

__all__ = ["PrivateAPI"]


class PrivateAPI:
    """The members of the optimizer that distributed.py reaches today (see the module docstring)."""

    formula: Any
    _plans: Any

    def _check_globals(self) -> tuple[float | None, bool, str]:
        policy, _, backend = self._checked_settings()  # type: ignore[attr-defined]
        return policy.clip, policy.skip_nonfinite, backend

    def _checked_group(self, group: Mapping[str, Any], label: str, lr: float | None = None) -> Any:
        return group_options(self.formula, group, label, lr)

    def _lr_of(self, i: int, group: Mapping[str, Any], count: int) -> Any:
        return lr_at(i, group, count)

    def _fields_needed(self, options: Any) -> tuple[str, ...]:
        return tuple(self.formula.fields_needed(options))

    def _new_state_array(self, field: str, value: np.ndarray) -> np.ndarray:
        return self.storage.new_state(self.formula, field, value)  # type: ignore[attr-defined]

    def _run(
        self,
        labels: list[str],
        values: list[np.ndarray],
        grads: list[np.ndarray],
        states: list[list[np.ndarray | None]],
        born: list[bool],
        steps: Sequence[int],
        group_of: list[int],
        options: list[Any],
        grad_scale: float,
        backend: str,
        rounding_keys: Sequence[int] | None = None,
        rounding_offsets: Sequence[int] | None = None,
    ) -> None:
        """The formula over validated tensors given tensor by tensor (``states[i]`` in
        ``state_fields`` order); 16-bit tensors round with ``rounding_keys`` (None: the keys of
        their labels) from the element ``rounding_offsets[i]`` of their param (None: 0)."""
        fields = self.formula.state_fields
        state = {f: [st[j] for st in states] for j, f in enumerate(fields)}
        keys = rounding_keys
        if keys is None and any(_half.is_half(v.dtype) for v in values):
            keys = name_keys(labels)
        self.formula.apply(Batch(labels=labels, values=values, grads=grads, state=state, born=born, steps=steps,
                                 group_of=group_of, options=options, keys=keys, offsets=rounding_offsets,
                                 rounding=self.storage.rounding(self._plans.applied_steps),  # type: ignore[attr-defined]
                                 grad_scale=grad_scale, backend=backend))

    @staticmethod
    def _rounding_keys(names: Sequence[Any]) -> list[int]:
        return name_keys(names)

    def _global_values(self) -> dict[str, Any]:
        """Every global setting as a step uses it (checked), by name: ``global_settings`` and the
        16-bit storage settings (the ranks of a run must agree on all of them)."""
        self._checked_settings()  # type: ignore[attr-defined]
        out = {key: getattr(self, key) for key in self.global_settings}  # type: ignore[attr-defined]
        storage = self.storage  # type: ignore[attr-defined]
        out.update(stochastic_rounding=storage.stochastic_rounding, seed=storage.seed,
                   state_dtype="" if storage.state_dtype is None else storage.state_dtype.name)
        return out

    def _fresh_copy(self) -> Any:
        """A new optimizer of this class over the same param groups (the same dicts), with the
        same hyperparameters and global settings, and no state or counters."""
        new = type(self)([dict(g) for g in self.param_groups], **self.defaults)  # type: ignore[attr-defined]
        for key in (*self.global_settings, *STORAGE_DEFAULTS):  # type: ignore[attr-defined]
            setattr(new, key, getattr(self, key))
        return new

    @property
    def _applied(self) -> int:
        return self._plans.applied_steps

    @_applied.setter
    def _applied(self, value: int) -> None:
        self._drop_plan()  # type: ignore[attr-defined]
        self._plans.restore(value, self._plans.last_lrs)
