"""The cached plan of ``SGD.step()`` for steps the native plan cannot take (a tensor served by the
NumPy backend, ``backend="numpy"``, or no extension): the same contract as ``_core.Plan``.

After a step that was fully validated, the plan keeps the params dict, its entries, the arrays and
what was checked about them (shape, strides, dtype, writeable), and the routing of each tensor to
a backend. A later step re-checks exactly those facts, cheaply, and runs; anything else (a
replaced array, a param added or removed, a grad set to None, a reshaped or read-only array)
makes ``step()`` return 0 with nothing written, and the optimizer takes its full path, which
validates everything and builds a new plan. An array whose identity, shape, strides and dtype are
unchanged covers the same memory, so the overlap check of the full step still holds.
"""

from __future__ import annotations

import math
from functools import partial
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _functional as F
from . import _numpy

__all__ = ["PythonPlan"]


class PythonPlan:
    """A validated step, cached (see the module docstring). ``step(params)`` returns 1 (applied),
    2 (skipped: a non-finite gradient with ``skip_nonfinite``) or 0 (stale: nothing written)."""

    def __init__(
        self,
        params: dict,
        keys: Sequence[str],
        labels: Sequence[str],
        values: Sequence[np.ndarray],
        grads: Sequence[np.ndarray],
        buffers: Sequence[np.ndarray] | None,
        hyper: tuple[float, float, float, float, bool, bool],
        clip: float | None,
        skip: bool,
        backend: str,
    ) -> None:
        self._outer = params
        included = set(keys)
        # Every entry of the dict in order: (key, inner dict, tensor index or -1 for no grad).
        index = {k: i for i, k in enumerate(keys)}
        self._entries = [(k, p, index[k] if k in included else -1) for k, p in params.items()]
        self._values = list(values)
        self._grads = list(grads)
        self._buffers = list(buffers) if buffers is not None else None
        self._labels = list(labels)
        # What each step re-checks: the arrays' layouts, and that the written ones stay writeable.
        self._arrays = self._values + self._grads + (self._buffers or [])
        n = len(self._values)
        self._layouts = [(a.shape, a.strides, a.dtype, not n <= j < 2 * n) for j, a in enumerate(self._arrays)]
        self._hyper = hyper
        self._measure = clip is not None or skip
        self._clip = clip
        self._skip = skip
        self._backend = backend
        # The routing, fixed with the layouts: tensors for _core in one call, the rest for NumPy.
        native: list[int] = []
        other: list[int] = []
        for i in range(len(self._values)):
            buf = self._buffers[i] if self._buffers is not None else None
            if backend != "numpy" and F.native_reason(self._values[i], self._grads[i], buf) is None:
                native.append(i)
            else:
                other.append(i)
        # The calls, all but grad_scale bound (the clip coefficient changes from step to step).
        picked = self._pick(native)
        self._run_native = None
        if picked is not None:
            assert F._core is not None
            self._run_native = partial(F._core.sgd_step, *picked, False, *hyper, check_overlap=False)
        picked = self._pick(other)
        self._run_numpy = None if picked is None else partial(_numpy.sgd_step, *picked, False, *hyper)
        self.applied = 0
        self.last_norm = math.nan

    def _pick(self, idx: list[int]) -> tuple[list, list, list | None] | None:
        if not idx:
            return None
        bufs = None if self._buffers is None else [self._buffers[i] for i in idx]
        return ([self._values[i] for i in idx], [self._grads[i] for i in idx], bufs)

    def reset_applied(self) -> None:
        self.applied = 0

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
        for a, (shape, strides, dtype, written) in zip(self._arrays, self._layouts):
            if a.shape != shape or a.strides != strides or a.dtype is not dtype or (written and not a.flags.writeable):
                return False
        return True

    def step(self, params: Any) -> int:
        if not self._unchanged(params):
            return 0
        scale = 1.0
        if self._measure:
            norm = math.sqrt(F.sum_of_squares(self._labels, self._grads, self._backend))
            if self._skip and not math.isfinite(norm):
                if math.isnan(norm) or not all(bool(np.isfinite(g).all()) for g in self._grads):
                    return 2
            self.last_norm = norm
            scale = F.clip_scale(norm, self._clip)
        if self._run_native is not None:
            self._run_native(scale)
        if self._run_numpy is not None:
            self._run_numpy(scale)
        self.applied += 1
        return 1
