"""Flat layouts of params over ranks: which elements each rank owns (no MPI here).

The params of one dtype are laid end to end in order (the order of the param dicts, group after
group), each param's elements in the order the optimizer's step walks them -- its memory order:
C order, or F order for an array that is F-contiguous and not C-contiguous
(:func:`minimalsgd._half.walk_order`), so that element ``k`` of a param here is the element that
16-bit stochastic rounding keys by index ``k``. :func:`partition` cuts the ``total`` elements of a
dtype into one contiguous slice per rank. A :class:`Layout` holds that cut for one dtype, the
pieces of params that fall into this rank's slice, and the flat buffers a step needs when the
params are not already consecutive views of one buffer (see :func:`flat_view`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


__all__ = [
    "Layout",
    "MPI_DTYPES",
    "Piece",
    "check_mpi_dtype",
    "dtype_key",
    "dtype_name",
    "flat_view",
    "is_half",
    "partition",
]

#: Element types MPI sums portably. 16-bit floats (float16, ml_dtypes' bfloat16) have no portable
#: MPI sum: they are summed in float32 and moved as raw 16-bit words (see :class:`Layout`).
MPI_DTYPES = tuple(np.dtype(c) for c in ("float32", "float64", "complex64", "complex128"))

#: Native supported dtype -> its name, the code the ranks compare (filled as dtypes are met).
_DTYPE_NAMES: dict[np.dtype, str] = {d: d.name for d in MPI_DTYPES}
_DTYPE_NAMES[np.dtype(np.float16)] = "float16"


def is_half(dtype: np.dtype) -> bool:
    """float16 or bfloat16 (native byte order)."""
    return dtype.itemsize == 2 and (dtype == np.float16 or dtype.name == "bfloat16")


def dtype_name(dtype: np.dtype) -> str:
    """The name the ranks compare for a dtype (byte order ignored)."""
    native = dtype.newbyteorder("=")
    name = _DTYPE_NAMES.get(native)
    if name is None:
        name = str(native)
        if is_half(native):
            _DTYPE_NAMES[native] = name
    return name


def known_dtype_name(dtype: np.dtype) -> str | None:
    """:func:`dtype_name` of a supported dtype in native byte order, else None (a cheap lookup)."""
    return _DTYPE_NAMES.get(dtype)


def dtype_key(a: np.ndarray) -> np.dtype:
    """The dtype of an array's layout: its dtype in native byte order."""
    return a.dtype.newbyteorder("=")


def check_mpi_dtype(label: str, dtype: np.dtype) -> None:
    """TypeError naming ``label`` unless MPI can move and sum arrays of ``dtype``."""
    native = dtype.newbyteorder("=")
    if native not in MPI_DTYPES and not is_half(native):
        raise TypeError(
            f"{label}: dtype {dtype} is not supported over MPI "
            "(float32, float64, complex64, complex128, float16 and bfloat16 are)"
        )


def partition(total: int, size: int) -> tuple[list[int], list[int]]:
    """The slice of ``total`` elements that each of ``size`` ranks owns: ``(counts, displs)``.

    Rank ``r`` owns elements ``displs[r] : displs[r] + counts[r]``; counts differ by at most one
    (the first ``total % size`` ranks hold one more). This is how :class:`ShardedOptimizer` cuts
    the elements of each dtype, and where :func:`allreduce_grads` reduce-scatters.

    Parameters
    ----------
    total : int
        The element count.
    size : int
        The number of ranks, ``>= 1``.

    Returns
    -------
    counts, displs : list of int
        Each rank's element count and first element.

    Examples
    --------
    >>> from minimalsgd.distributed import partition
    >>> partition(10, 3)
    ([4, 3, 3], [0, 4, 7])
    """
    base, extra = divmod(int(total), int(size))
    counts = [base + (1 if r < extra else 0) for r in range(size)]
    displs = [0] * size
    for r in range(1, size):
        displs[r] = displs[r - 1] + counts[r - 1]
    return counts, displs


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def flat_view(arrays: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray | None:
    """A 1-D view of ``dtype`` over exactly the given arrays, laid end to end in this order in one
    writeable C-contiguous memory block (as :func:`minimalsgd.pack_params` lays them out), or None
    when they are not: then the collectives run on a packed copy."""
    if not arrays:
        return None
    root = arrays[0]
    while isinstance(root.base, np.ndarray):
        root = root.base
    if not root.flags.c_contiguous or not root.flags.writeable:
        return None
    start = _address(arrays[0])
    pos = start
    for a in arrays:
        if a.dtype != dtype or not a.flags.c_contiguous or not a.flags.writeable or not a.flags.aligned:
            return None
        if a.size and _address(a) != pos:
            return None
        b = a
        while isinstance(b.base, np.ndarray):
            b = b.base
        if b is not root:
            return None
        pos += a.nbytes
    base_addr = _address(root)
    lo, hi = start - base_addr, pos - base_addr
    if lo < 0 or hi > root.nbytes or lo % dtype.itemsize:
        return None
    raw = root.reshape(-1).view(np.uint8)
    return raw[lo:hi].view(dtype)


class Piece:
    """One param inside a per-dtype flat layout: its index among all params, name, message label,
    shape, size, first element in the layout (``offset``) and element order (``"C"``/``"F"``)."""

    __slots__ = ("index", "name", "label", "shape", "size", "offset", "order")

    def __init__(self, index: int, name: Any, label: str, shape: tuple[int, ...], size: int, offset: int,
                 order: str = "C") -> None:
        self.index, self.name, self.label, self.shape, self.size, self.offset = index, name, label, shape, size, offset
        self.order = order

    def flat(self, a: np.ndarray) -> np.ndarray:
        """``a`` (of this param's shape) as 1-D in this piece's element order (a view when it can be)."""
        return a.reshape(-1, order=self.order)  # type: ignore[call-overload]

    def shaped(self, flat: np.ndarray) -> np.ndarray:
        """This param's elements of a layout-sized 1-D buffer, shaped like the param (a view)."""
        return flat[self.offset : self.offset + self.size].reshape(self.shape, order=self.order)  # type: ignore[call-overload]


class Part:
    """The elements ``a:b`` of a param (a :class:`Piece`, the ``k``-th of its layout) that lie in this rank's slice, at
    ``start`` of the slice, and the param entry through which the step steps them (``entry``:
    ``{"value": 1-D view, "grad": 1-D view or None, "offset": a}``)."""

    __slots__ = ("piece", "k", "a", "b", "start", "stop", "entry")

    def __init__(self, piece: Piece, k: int, a: int, b: int, start: int) -> None:
        self.piece, self.k, self.a, self.b, self.start, self.stop = piece, k, a, b, start, start + b - a
        self.entry: dict[str, Any] = {"value": None, "grad": None, "offset": a}


class Layout:
    """All params of one dtype end to end (each in its walk order), and the slice this rank owns.

    Attributes
    ----------
    dtype : numpy.dtype
        The params' dtype (native byte order).
    pieces : list of Piece
        Every param of that dtype, in order.
    total, counts, displs, lo, hi : int, list, list, int, int
        The element count, the cut (:func:`partition`) and this rank's slice ``lo:hi``.
    parts : list of Part
        The pieces of params that fall into this rank's slice (empty ones left out).
    half : bool
        float16/bfloat16: grads are reduced in float32 (``red_dtype``), then rounded once to the
        dtype, to nearest even; values move as raw 16-bit words.
    packed_values, packed_grads : ndarray or None
        Full-size flat copies, made only when the params are not consecutive views of one buffer.
    """

    def __init__(self, dtype: np.dtype, pieces: list[Piece], rank: int, size: int) -> None:
        self.dtype = dtype
        self.pieces = pieces
        self.total = sum(p.size for p in pieces)
        self.counts, self.displs = partition(self.total, size)
        self.lo = self.displs[rank]
        self.hi = self.lo + self.counts[rank]
        self.parts: list[Part] = []
        for k, p in enumerate(pieces):
            a = max(self.lo, p.offset) - p.offset
            b = min(self.hi, p.offset + p.size) - p.offset
            if a < b:
                self.parts.append(Part(p, k, a, b, p.offset + a - self.lo))
        self.half = is_half(dtype)
        self.red_dtype = np.dtype(np.float32) if self.half else dtype
        self._scratch: np.ndarray | None = None  # this rank's slice of the reduced grads (red_dtype)
        self._scratch_half: np.ndarray | None = None  # the same rounded to the 16-bit dtype
        self.packed_values: np.ndarray | None = None
        self.packed_grads: np.ndarray | None = None
        self._flat_cache: dict[str, tuple[list[Any], np.ndarray | None]] = {}
        self._views: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}
        #: The flat buffers the parts' entries are views of now (values; this rank's reduced grads).
        self.bound_values: np.ndarray | None = None
        self.bound_grads: np.ndarray | None = None
        self._grad_views: list[np.ndarray] = []
        self._norm_views: tuple[Any, list[np.ndarray]] = (None, [])

    @property
    def segments(self) -> list[tuple[Piece, int, int]]:
        """``[(piece, a, b)]``: elements ``a:b`` of the piece lie in this rank's slice."""
        return [(pt.piece, pt.a, pt.b) for pt in self.parts]

    @property
    def scratch(self) -> np.ndarray:
        """This rank's slice of the reduced grads, in ``red_dtype`` (made on first use)."""
        if self._scratch is None:
            self._scratch = np.empty(self.hi - self.lo, dtype=self.red_dtype)
        return self._scratch

    @property
    def scratch_half(self) -> np.ndarray:
        """This rank's slice of the reduced grads rounded to the 16-bit dtype (made on first use)."""
        if self._scratch_half is None:
            self._scratch_half = np.empty(self.hi - self.lo, dtype=self.dtype)
        return self._scratch_half

    def flat_of(self, what: str, arrays: list[Any]) -> np.ndarray | None:
        """The 1-D view over ``arrays`` (this layout's values or grads, one per piece) when they
        tile one buffer in order, else None. Cached by identity: an array object's memory never
        moves."""
        cached = self._flat_cache.get(what)
        if cached is not None and len(cached[0]) == len(arrays) and all(a is b for a, b in zip(arrays, cached[0])):
            return cached[1]
        flat = None if any(a is None for a in arrays) else flat_view(arrays, self.dtype)
        self._flat_cache[what] = (list(arrays), flat)
        return flat

    def views(self, flat: np.ndarray) -> list[np.ndarray]:
        """Each param's elements of ``flat`` (one of this layout's full-size buffers), shaped like the param."""
        cached = self._views.get(id(flat))
        if cached is None or cached[0] is not flat:
            cached = (flat, [p.shaped(flat) for p in self.pieces])
            self._views[id(flat)] = cached
        return cached[1]

    def values_flat(self, values: list[np.ndarray]) -> np.ndarray:
        """The full-size flat values of this step: the params' own buffer when they tile one,
        else ``packed_values`` with this rank's slice copied in (the allgather fills the rest)."""
        flat = self.flat_of("values", values)
        if flat is not None:
            return flat
        if self.packed_values is None:
            self.packed_values = np.empty(self.total, dtype=self.dtype)
        flat = self.packed_values
        for pt in self.parts:
            start = pt.piece.offset + pt.a
            flat[start : start + pt.b - pt.a] = pt.piece.flat(values[pt.k])[pt.a : pt.b]
        return flat

    def grads_flat(self, grads: list[np.ndarray | None]) -> np.ndarray:
        """The full-size flat grads of this step as they are summed (``red_dtype``): the params' own
        buffer when they tile one (not for 16-bit floats, summed in float32), else
        ``packed_grads`` filled (zeros for a param without a grad)."""
        if not self.half:
            flat = self.flat_of("grads", grads)
            if flat is not None:
                return flat
        if self.packed_grads is None:
            self.packed_grads = np.empty(self.total, dtype=self.red_dtype)
        flat = self.packed_grads
        if self.pieces and all(g is not None for g in grads):
            np.concatenate([pc.flat(g) for pc, g in zip(self.pieces, grads)], out=flat,  # type: ignore[arg-type]
                           casting="unsafe")
        else:
            for dst, g in zip(self.views(flat), grads):
                if g is None:
                    dst[...] = 0
                else:
                    np.copyto(dst, g, casting="unsafe")
        return flat

    def bind_values(self, values: np.ndarray) -> None:
        """Point the parts' entries at this step's full-size flat ``values`` (their value views
        stay the same objects while the buffer does)."""
        if self.bound_values is not values:
            lo = self.lo
            for pt in self.parts:
                pt.entry["value"] = values[lo + pt.start : lo + pt.stop]
            self.bound_values = values

    def bind(self, values: np.ndarray, grads: np.ndarray, has_grad: Sequence[bool]) -> None:
        """Point the parts' entries at this step's buffers: ``values`` (full size) and ``grads``
        (this rank's slice of the reduced grads), a grad only for params that have one. Entries
        keep their view objects while the buffers stay the same, so an optimizer's cached plan over
        them stays valid."""
        self.bind_values(values)
        if self.bound_grads is not grads:
            self._grad_views = [grads[pt.start : pt.stop] for pt in self.parts]
            self.bound_grads = grads
            self._norm_views = (None, [])
        for pt, g in zip(self.parts, self._grad_views):
            want = g if has_grad[pt.piece.index] else None
            entry = pt.entry
            if entry["grad"] is not want:
                entry["grad"] = want

    def norm_views(self, has_grad: Sequence[bool]) -> list[np.ndarray]:
        """This rank's reduced grads of params that have one, as few 1-D views as can be (adjacent
        parts joined): what the global norm sums (after :meth:`bind`)."""
        key = tuple(has_grad[pt.piece.index] for pt in self.parts)
        if self._norm_views[0] == key:
            return self._norm_views[1]
        grads = self.bound_grads
        out: list[np.ndarray] = []
        run: list[int] = []
        for pt, g in zip(self.parts, key):
            if not g:
                continue
            if run and run[1] == pt.start:
                run[1] = pt.stop
            else:
                if run:
                    out.append(grads[run[0] : run[1]])  # type: ignore[index]
                run = [pt.start, pt.stop]
        if run:
            out.append(grads[run[0] : run[1]])  # type: ignore[index]
        self._norm_views = (key, out)
        return out

    def new_packed_grads(self) -> np.ndarray:
        """A full-size buffer for the grads as they are summed (float32 for 16-bit floats)."""
        return np.empty(self.total, dtype=self.red_dtype)
