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
    """The stochastic-rounding key of each param name.

    Parameters
    ----------
    names : sequence
        Param names (``str(name)`` is hashed).

    Returns
    -------
    list of int
        The 64-bit FNV-1a hash of each name's UTF-8 (cached).
    """
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
    """The ``state_dtype`` setting, checked.

    Parameters
    ----------
    x : dtype or None
        None (state arrays of the value's dtype) or float32 (for 16-bit values).

    Returns
    -------
    dtype or None
        The dtype; TypeError/ValueError otherwise.
    """
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
    """An optimizer's 16-bit storage settings (:meth:`Storage.checked` builds them).

    Parameters
    ----------
    stochastic_rounding : bool, default False
        Round float16/bfloat16 results stochastically (else to nearest even).
    seed : int, default 0
        The rounding seed, in ``[0, 2**64)``.
    state_dtype : dtype or None, default None
        float32: state arrays of 16-bit values in float32; None: of the value's dtype.
    """

    stochastic_rounding: bool = False
    seed: int = 0
    state_dtype: np.dtype | None = None

    @classmethod
    def checked(cls, stochastic_rounding: Any, seed: Any, state_dtype: Any) -> Storage:
        """The settings, checked.

        Parameters
        ----------
        stochastic_rounding : bool
            A bool.
        seed : int
            An int in ``[0, 2**64)``.
        state_dtype : dtype or None
            None or float32.

        Returns
        -------
        Storage
            The settings; TypeError/ValueError naming the setting when one is not valid.
        """
        sr, seed, _ = check_rounding(stochastic_rounding, seed)
        return cls(sr, seed, check_state_dtype(state_dtype))

    def rounding(self, step: int) -> Rounding:
        """The rounding of one step.

        Parameters
        ----------
        step : int
            The applied steps before it (a count, ``>= 0``).

        Returns
        -------
        Rounding
            ``Rounding(stochastic_rounding, seed, step)``.
        """
        return Rounding(self.stochastic_rounding, self.seed, step)

    def dtype_for(self, value: np.ndarray) -> np.dtype:
        """The dtype of a state array of a value.

        Parameters
        ----------
        value : ndarray
            The value.

        Returns
        -------
        dtype
            float32 for a 16-bit value with ``state_dtype=float32``, else the value's (native
            byte order).
        """
        if self.state_dtype is not None and _half.is_half(value.dtype):
            return _FLOAT32
        return value.dtype.newbyteorder("=")

    def new_state(self, formula: Formula, field: str, value: np.ndarray) -> np.ndarray:
        """A new state array for a value, initialized by the formula.

        Parameters
        ----------
        formula : Formula
            The formula whose state it is.
        field : str
            The state field.
        value : ndarray
            The value.

        Returns
        -------
        ndarray
            The array: the value's shape and memory order, :meth:`dtype_for` the value.
        """
        return formula.new_state(field, value, self.dtype_for(value))

    def new_states(self, formula: Formula, field: str, values: Sequence[np.ndarray]) -> list[np.ndarray]:
        """New state arrays, one per value, initialized by the formula.

        Parameters
        ----------
        formula : Formula
            The formula whose state they are.
        field : str
            The state field.
        values : sequence of ndarray
            The values.

        Returns
        -------
        list of ndarray
            Each in its value's memory order. Packed params (``pack_params``) of the value's dtype
            get slices of one flat array laid out like their arena, so the cached plan steps them
            in one span.
        """
        if self.state_dtype is not None and any(_half.is_half(v.dtype) for v in values):
            return [self.new_state(formula, field, v) for v in values]
        arrays = new_buffers(values)
        for a in arrays:
            formula.init_state(field, a)
        return arrays
