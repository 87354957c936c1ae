"""Flat storage: ``pack_params`` moves a model's values and grads into one buffer per dtype.

A step over many small tensors pays per tensor: a span in the kernel, a cache set per separate
allocation, a fill per grad. After packing, the values of one dtype are consecutive slices of one
1-D array and so are the grads, in the same order; the optimizer's cached plan joins adjacent
tensors into one span, so a step is one pass over one buffer per dtype, the clip norm one pass,
and :meth:`Arena.zero_grad` one fill per dtype.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from . import _half

__all__ = ["Arena", "Slot", "arena_of", "new_buffers", "pack_params"]

Params = MutableMapping[str, MutableMapping[str, Any]]
ParamsOrGroups = Union[Params, Sequence[Mapping[str, Any]]]


@dataclass(frozen=True)
class Slot:
    """Where one param lives in its arena: ``values[dtype][start:stop].reshape(shape)`` (and the
    same slice of ``grads[dtype]``)."""

    dtype: np.dtype
    start: int
    stop: int
    shape: tuple[int, ...]


# id(flat values buffer) -> (weak reference to it, {start: (stop, shape)}), for the optimizer to
# recognise packed values after the Arena object itself is gone (the buffer lives on in the views).
_LAYOUTS: dict[int, tuple[weakref.ref, dict[int, tuple[int, tuple[int, ...]]]]] = {}


def _register(flat: np.ndarray, slots: Sequence[Slot]) -> None:
    key = id(flat)
    _LAYOUTS[key] = (weakref.ref(flat, lambda _ref, key=key: _LAYOUTS.pop(key, None)),
                     {s.start: (s.stop, s.shape) for s in slots if s.stop > s.start})


class Arena:
    """The flat storage made by :func:`pack_params` (not built by hand).

    Its attributes are stable: :mod:`minimalsgd.distributed` slices them.

    Parameters
    ----------
    values, grads, slots : dict
        The attributes of the same names (below), as :func:`pack_params` builds them.

    Attributes
    ----------
    values : dict
        dtype -> 1-D C-contiguous array, native byte order: the values of every packed param of
        that dtype, tightly packed (no gaps), in packing order.
    grads : dict
        dtype -> 1-D array of the same size: the grads, slot for slot. A param packed with grad
        None keeps its slot here (zeros), but its dict entry keeps ``grad`` None, so optimizers
        keep skipping it until you assign a grad.
    slots : dict
        name -> ``Slot(dtype, start, stop, shape)``: the param is
        ``values[dtype][start:stop].reshape(shape)``, and its grad the same slice of ``grads``.
    names : list of str
        The packed names in packing order.
    """

    def __init__(self, values: dict[np.dtype, np.ndarray], grads: dict[np.dtype, np.ndarray], slots: dict[str, Slot]):
        self.values = values
        self.grads = grads
        self.slots = slots
        self.names = list(slots)
        for dt, flat in values.items():
            _register(flat, [s for s in slots.values() if s.dtype == dt])

    def value(self, name: str) -> np.ndarray:
        """The param ``name``'s value: a view of its slice of ``values[dtype]``, of its shape.

        Parameters
        ----------
        name : str
            A packed param's name.

        Returns
        -------
        ndarray
            The view (writing it writes the arena).
        """
        s = self.slots[name]
        return self.values[s.dtype][s.start : s.stop].reshape(s.shape)

    def grad(self, name: str) -> np.ndarray:
        """The param ``name``'s grad slot: a view of its slice of ``grads[dtype]``, of its shape (also
        for a param whose dict grad is None: assign it to ``params[name]["grad"]`` to give that
        param a grad inside the arena).

        Parameters
        ----------
        name : str
            A packed param's name.

        Returns
        -------
        ndarray
            The view (writing it writes the arena).
        """
        s = self.slots[name]
        return self.grads[s.dtype][s.start : s.stop].reshape(s.shape)

    def zero_grad(self) -> None:
        """grad = 0 for every slot: one fill per dtype (also the slots of params whose grad is None)."""
        for flat in self.grads.values():
            flat.fill(0)

    @property
    def nbytes(self) -> int:
        """Bytes of the flat value and grad buffers together."""
        return sum(a.nbytes for a in self.values.values()) + sum(a.nbytes for a in self.grads.values())

    def __repr__(self) -> str:
        parts = ", ".join(f"{dt}: {a.size:,} elements" for dt, a in self.values.items())
        return f"Arena({len(self.slots)} params; {parts})"


def arena_of(value: np.ndarray) -> tuple[np.ndarray, int, int] | None:
    """(flat values buffer, start, stop) of a packed value (a view pack_params made, or one of
    the same slice and shape), else None."""
    base = value.base
    if not isinstance(base, np.ndarray) or not value.flags.c_contiguous:
        return None
    entry = _LAYOUTS.get(id(base))
    if entry is None or entry[0]() is not base:
        return None
    start = (value.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // base.itemsize
    slot = entry[1].get(start)
    if slot is None or slot[1] != value.shape:
        return None
    return base, start, slot[0]


def new_buffers(values: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Uninitialised momentum buffers for ``values``, each in its value's memory order and native
    byte order. Packed values of one arena and dtype (two or more) get slices of one new flat
    array laid out like the arena, so the buffers are adjacent exactly where the values are."""
    found = [arena_of(v) if v.base is not None else None for v in values]
    count: dict[int, int] = {}
    for f in found:
        if f is not None:
            count[id(f[0])] = count.get(id(f[0]), 0) + 1
    flats: dict[int, np.ndarray] = {}
    out = []
    for f, v in zip(found, values):
        if f is not None and count[id(f[0])] > 1:
            base, start, stop = f
            flat = flats.get(id(base))
            if flat is None:
                flat = flats[id(base)] = np.empty_like(base)
            out.append(flat[start:stop].reshape(v.shape))
        else:
            out.append(np.empty_like(v, dtype=v.dtype.newbyteorder("=")))
    return out


def _entries(params: ParamsOrGroups) -> list[tuple[str, MutableMapping[str, Any]]]:
    """(name, inner dict) of every param, from a param dict or a list of groups; validated."""
    if isinstance(params, Mapping):
        dicts = [("params", params)]
    elif isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        dicts = []
        for i, group in enumerate(params):
            if not isinstance(group, Mapping) or "params" not in group:
                raise TypeError(f"params[{i}] must be a group: a dict with a 'params' entry, got {type(group).__name__}")
            if not isinstance(group["params"], Mapping):
                raise TypeError(f"params[{i}]['params'] must be a dict of name -> {{'value', 'grad'}}, "
                                f"got {type(group['params']).__name__}")
            dicts.append((f"params[{i}]['params']", group["params"]))
    else:
        raise TypeError(f"params must be a dict of name -> {{'value': ndarray, 'grad': ndarray}} or a list of groups, "
                        f"got {type(params).__name__}")
    out: list[tuple[str, MutableMapping[str, Any]]] = []
    seen: set[str] = set()
    for where, d in dicts:
        for name, p in d.items():
            label = f"{where}[{name!r}]" if where != "params" else f"params[{name!r}]"
            if name in seen:
                raise ValueError(f"{label}: the name {name!r} appears in two groups; arena slots are named")
            seen.add(name)
            if not isinstance(p, MutableMapping):
                raise TypeError(f"{label} must be a dict with 'value' and 'grad', got {type(p).__name__}")
            if "value" not in p:
                raise ValueError(f"{label} has no 'value'")
            value = p["value"]
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{label}: value must be a numpy.ndarray, got {type(value).__name__}")
            if value.dtype.kind not in "fc" and not _half.is_half(value.dtype):
                raise TypeError(f"{label}: value must have a floating-point or complex dtype, got {value.dtype}")
            if not value.flags.writeable:
                raise ValueError(f"{label}: value is read-only; packing would replace it with a writeable copy")
            grad = p.get("grad")
            if grad is not None:
                if not isinstance(grad, np.ndarray):
                    raise TypeError(f"{label}: grad must be a numpy.ndarray or None, got {type(grad).__name__}")
                if grad.dtype.newbyteorder("=") != value.dtype.newbyteorder("="):
                    raise TypeError(f"{label}: grad dtype {grad.dtype} does not match value dtype {value.dtype}")
                if grad.shape != value.shape:
                    raise ValueError(f"{label}: grad shape {grad.shape} does not match value shape {value.shape}")
            out.append((name, p))
    return out


def pack_params(params: ParamsOrGroups) -> Arena:
    """Move every param's value and grad into one flat buffer per dtype; rebind the dict entries.

    For each dtype (in native byte order), values are copied into consecutive slices of one new
    1-D array in the order of the dicts, each slice in C order, with no gaps; grads into the same
    slices of a second array. Then every entry's ``"value"`` and ``"grad"`` are replaced by views
    of those slices with the original shapes (a grad that was None stays None; its slot holds
    zeros). A step over packed params is one pass over one buffer per dtype (the optimizer's
    cached plan joins adjacent tensors into one span), and so are the clip norm and
    :meth:`Arena.zero_grad`; the result is bit for bit the step of the unpacked params.

    Parameters
    ----------
    params : dict or list of dict
        A param dict ``{name: {"value": ndarray, "grad": ndarray or None}}`` or a list of groups
        ``[{"params": {...}, ...}, ...]`` (names unique across groups), as the optimizers take.

    Returns
    -------
    Arena
        The flat buffers and where each param lives in them.

    Raises
    ------
    TypeError
        An entry that is not a dict, a value that is not a floating-point or complex ndarray, a
        grad that is not an ndarray or None, or of another dtype than its value.
    ValueError
        An entry without ``"value"``, a read-only value, a grad of another shape, a name repeated
        across groups.

    The message names the param. Validation comes first: nothing is changed when either is
    raised.

    Notes
    -----
    The arrays the entries held before are no longer the params: steps update the arena, not
    them. Hold ``params[name]["value"]`` (or ``arena.value(name)``) from now on. Write grads into
    ``params[name]["grad"][...]`` (in place) to keep them in the arena; assigning a new array
    works, but that param then leaves the single pass.

    Examples
    --------
    >>> params = {"w": {"value": np.ones((2, 3), np.float32), "grad": np.zeros((2, 3), np.float32)},
    ...           "b": {"value": np.zeros(3, np.float32), "grad": np.zeros(3, np.float32)}}
    >>> arena = minimalsgd.pack_params(params)
    >>> arena
    Arena(2 params; float32: 9 elements)
    >>> params["b"]["value"].base is arena.values[np.dtype(np.float32)]
    True
    >>> opt = minimalsgd.SGD(params, lr=0.1, momentum=0.9)
    >>> params["w"]["grad"][...] = 1.0          # write INTO the grad view
    >>> opt.step()
    True
    >>> arena.zero_grad()                       # one fill per dtype
    """
    entries = _entries(params)
    # Sizes per dtype, in order.
    layout: dict[np.dtype, int] = {}
    slots: dict[str, Slot] = {}
    for name, p in entries:
        value = p["value"]
        dt = value.dtype.newbyteorder("=") if not value.dtype.isnative else value.dtype
        start = layout.get(dt, 0)
        stop = start + value.size
        layout[dt] = stop
        slots[name] = Slot(dt, start, stop, tuple(value.shape))
    values = {dt: np.empty(n, dt) for dt, n in layout.items()}
    grads = {dt: np.zeros(n, dt) for dt, n in layout.items()}
    arena = Arena(values, grads, slots)
    # Copy (exact: same dtype, any byte order), then rebind: nothing above has changed a dict.
    views = []
    for name, p in entries:
        s = slots[name]
        v = values[s.dtype][s.start : s.stop].reshape(s.shape)
        v[...] = p["value"]
        g = None
        if p.get("grad") is not None:
            g = grads[s.dtype][s.start : s.stop].reshape(s.shape)
            g[...] = p["grad"]
        views.append((p, v, g))
    for p, v, g in views:
        p["value"] = v
        if g is not None:
            p["grad"] = g
    return arena
