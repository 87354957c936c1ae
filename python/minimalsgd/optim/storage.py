"""16-bit storage of an optimizer: how float16/bfloat16 params round their stored results, the
keys of their random streams, and the dtype and layout of new state arrays.

float16 and bfloat16 params compute in float32 and round each stored result once: to nearest
even, or (``stochastic_rounding=True``) stochastically with random bits keyed by (``seed``, the
rounding step -- ``applied_steps`` before the step --, a 64-bit key of the param's name, the
element's index within the param). A key is the FNV-1a hash of the name, so a param keeps its
random stream whatever the other params and groups are, and an element its bits however the
param is sliced (a piece with an ``"offset"``: see ``Optimizer``). ``state_dtype="float32"``
keeps the state arrays of 16-bit params in float32 (unrounded); by default a state array has its
value's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .. import _half
from .._arena import new_buffers
from .._validation import check_rounding
from ..protocol import Formula, Rounding

__all__ = ["Storage", "check_state_dtype", "name_keys"]

_FLOAT32 = np.dtype(np.float32)
#: The storage settings that a state dict without them means.
DEFAULTS = {"stochastic_rounding": False, "seed": 0, "state_dtype": ""}

_KEYS: dict[Any, int] = {}


def name_keys(names: Sequence[Any]) -> list[int]:
    """The stochastic-rounding key of each param name: FNV-1a over its UTF-8 (cached)."""
    keys = _KEYS
    out = []
    for n in names:
        k = keys.get(n)
        if k is None:
            if len(keys) >= 1 << 16:
                keys.clear()
            k = keys[n] = _half.name_key(n)
        out.append(k)
    return out


def check_state_dtype(x: Any) -> np.dtype | None:
    """None (state arrays of the value's dtype) or float32 (for 16-bit values); else an error."""
    if x is None:
        return None
    try:
        d = np.dtype(x)
    except TypeError:
        raise TypeError(f"state_dtype must be None or float32, got {x!r}") from None
    if d != _FLOAT32:
        raise ValueError(f"state_dtype must be None or float32, got {d}")
    return d


class Storage(NamedTuple):
    """An optimizer's 16-bit storage settings, checked (:meth:`checked`)."""

    stochastic_rounding: bool = False
    seed: int = 0
    state_dtype: np.dtype | None = None

    @classmethod
    def checked(cls, stochastic_rounding: Any, seed: Any, state_dtype: Any) -> Storage:
        """TypeError/ValueError naming the setting unless ``stochastic_rounding`` is a bool,
        ``seed`` an int in [0, 2**64) and ``state_dtype`` None or float32."""
        sr, seed, _ = check_rounding(stochastic_rounding, seed)
        return cls(sr, seed, check_state_dtype(state_dtype))

    def rounding(self, step: int) -> Rounding:
        """The :class:`~minimalsgd.protocol.Rounding` of the step with ``step`` applied steps
        before it (an int >= 0: a count)."""
        return Rounding(self.stochastic_rounding, self.seed, step)

    def dtype_for(self, value: np.ndarray) -> np.dtype:
        """The dtype of a state array of ``value``: float32 for a 16-bit value with
        ``state_dtype=float32``, else the value's (native byte order)."""
        if self.state_dtype is not None and _half.is_half(value.dtype):
            return _FLOAT32
        return value.dtype.newbyteorder("=")

    def new_state(self, formula: Formula, field: str, value: np.ndarray) -> np.ndarray:
        """A new state array of ``field`` for ``value``, initialized by the formula."""
        return formula.new_state(field, value, self.dtype_for(value))

    def new_states(self, formula: Formula, field: str, values: Sequence[np.ndarray]) -> list[np.ndarray]:
        """New state arrays of ``field``, one per value, each in its value's memory order and
        initialized by the formula. Packed params (``pack_params``) of the value's dtype get slices
        of one flat array laid out like their arena, so the cached plan steps them in one span."""
        if self.state_dtype is not None and any(_half.is_half(v.dtype) for v in values):
            return [self.new_state(formula, field, v) for v in values]
        arrays = new_buffers(values)
        for a in arrays:
            formula.init_state(field, a)
        return arrays
