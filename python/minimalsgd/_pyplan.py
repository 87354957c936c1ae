"""The cached plan of ``Optimizer.step()`` for steps the native plan cannot take (a tensor served
by the NumPy backend, ``backend="numpy"``, no extension, or an optimizer without a native plan):
the same contract as ``_core.Plan``, in Python.

After a step that was fully validated, the plan keeps the params dict, its entries, the arrays and
what was checked about them (shape, strides, dtype, writeable). A later step re-checks exactly
those facts, cheaply, and runs the optimizer's formula on the validated lists; anything else (a
replaced array, a param added or removed, a grad set to None, a reshaped or read-only array)
makes ``step()`` return 0 with nothing written, and the optimizer takes its full path, which
validates everything and builds a new plan. An array whose identity, shape, strides and dtype are
unchanged covers the same memory, so the overlap check of the full step still holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _functional as F

__all__ = ["PythonPlan", "Offset"]


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
    """A validated step, cached (see the module docstring). ``step(params)`` returns 1 (applied),
    2 (skipped: a non-finite gradient with ``skip_nonfinite``) or 0 (stale: nothing written).

    ``run(grad_scale, applied)`` runs the formula over the validated tensors, ``applied`` being
    the number of steps this plan applied before."""

    def __init__(
        self,
        params: dict,
        keys: Sequence[str],
        labels: Sequence[str],
        values: Sequence[np.ndarray],
        grads: Sequence[np.ndarray],
        states: Sequence[Sequence[np.ndarray | None]],
        run: Callable[[float, int], None],
        lr: float,
        clip: float | None,
        skip: bool,
        backend: str,
    ) -> None:
        self._outer = params
        index = {k: i for i, k in enumerate(keys)}
        # Every entry of the dict in order: (key, inner dict, tensor index or -1 for no grad).
        self._entries = [(k, p, index.get(k, -1)) for k, p in params.items()]
        self._values = list(values)
        self._grads = list(grads)
        self._labels = list(labels)
        written = self._values + [a for st in states for a in st if a is not None]
        # What each step re-checks: every array's layout, and that the written ones stay writeable.
        self._layouts = [(a, a.shape, a.strides, a.dtype, True) for a in written]
        self._layouts += [(a, a.shape, a.strides, a.dtype, False) for a in self._grads]
        self._run = run
        self._clip = clip
        self._skip = skip
        self._measure = clip is not None or skip
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

    def step(self) -> int:
        if not self._unchanged(self._outer):
            return 0
        scale = 1.0
        if self._measure:
            norm = math.sqrt(F.sum_of_squares(self._labels, self._grads, self._backend))
            if self._skip and not math.isfinite(norm):
                if math.isnan(norm) or not all(bool(np.isfinite(g).all()) for g in self._grads):
                    return 2
            self.last_norm = norm
            scale = F.clip_scale(norm, self._clip)
        self._run(scale, self.applied)
        self.applied += 1
        return 1
