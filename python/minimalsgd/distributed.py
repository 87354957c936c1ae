r"""Data parallel training over MPI, with optimizer state sharded across ranks (ZeRO stage 1).

Every rank runs the same script on its own part of the data (``mpiexec -n N python train.py``),
holds the same params, and computes its own gradients. Two ways to keep the ranks in step:

* :func:`allreduce_grads` then a plain :class:`minimalsgd.SGD` on every rank: each rank ends the
  reduction with the mean gradient :math:`\bar g = \frac1N \sum_r g_r` and steps all of it.
* :class:`ShardedSGD`: rank ``r`` owns one contiguous slice (about ``1/N``) of all elements of
  each dtype and keeps momentum buffers only for that slice. A step reduce-scatters the
  gradients (rank ``r`` receives the mean over ranks of its slice), measures the clip norm from
  the local sums of squares plus one collective, steps its slice with the fused kernel, and
  allgathers the values, so every rank ends the step with identical full values.

One reduction path serves both: a ``Reduce_scatter`` whose slice boundaries are the sharded
optimizer's, a division by ``N`` (when averaging), and, for :func:`allreduce_grads`, an
``Allgatherv``. The same MPI call on the same layout sums each element in the same order, so the
two ways give bit-identical values on any number of ranks (an ``Allreduce`` would sum in another
order than a ``Reduce_scatter`` once ``N >= 3``, and floating-point addition is not associative).

Stochastic rounding (16-bit params) rounds alike on every rank, and alike however the elements
are sliced: an optimizer built without ``seed=`` uses :data:`minimalsgd.DEFAULT_SEED` on every
rank (:func:`shared_seed` draws a random seed shared by all ranks), the sharded step's agreement
compares the seed with every other setting, and each element rounds with its param's key and its
index within the param (never a slice's).

``mpi4py`` is imported on first use, never by ``import minimalsgd``. Install it with
``pip install 'minimalsgd[mpi]'`` (mpi4py and the mpich wheel).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import operator
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _functional as F
from .optim import SGD

__all__ = ["ShardedOptimizer", "ShardedSGD", "allreduce_grads", "broadcast_params", "partition", "shared_seed"]

# Element types MPI sums portably. 16-bit floats (float16, ml_dtypes' bfloat16) have no portable MPI
# sum: they are summed in float32 and moved as raw 16-bit words (see _Layout).
_MPI_DTYPES = tuple(np.dtype(c) for c in ("float32", "float64", "complex64", "complex128"))

#: Native supported dtype -> its name, the code the ranks compare (filled as dtypes are met).
_DTYPE_NAMES: dict[np.dtype, str] = {d: d.name for d in _MPI_DTYPES}
_DTYPE_NAMES[np.dtype(np.float16)] = "float16"


def _dtype_name(dtype: np.dtype) -> str:
    native = dtype.newbyteorder("=")
    name = _DTYPE_NAMES.get(native)
    if name is None:
        name = str(native)
        if _is_half(native):
            _DTYPE_NAMES[native] = name
    return name


def _is_half(dtype: np.dtype) -> bool:
    """float16 or bfloat16 (native byte order)."""
    return dtype.itemsize == 2 and (dtype == np.float16 or dtype.name == "bfloat16")




def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as err:  # pragma: no cover - exercised where mpi4py is absent
        raise ImportError(
            "minimalsgd.distributed needs mpi4py and an MPI library: pip install 'minimalsgd[mpi]' "
            "(installs mpi4py and the mpich wheel)"
        ) from err
    return MPI


def _check_comm(comm: Any) -> Any:
    """``comm`` (default ``MPI.COMM_WORLD``) if it is an intra-communicator, else TypeError/ValueError."""
    MPI = _mpi()
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an mpi4py communicator (e.g. MPI.COMM_WORLD), got {type(comm).__name__}")
    if comm == MPI.COMM_NULL:
        raise ValueError("comm is MPI.COMM_NULL; pass a valid communicator such as MPI.COMM_WORLD")
    if not isinstance(comm, MPI.Intracomm):
        raise ValueError(f"comm must be an intra-communicator (like MPI.COMM_WORLD), got {type(comm).__name__}")
    return comm


def _mpi_type(dtype: np.dtype) -> Any:
    """The predefined MPI datatype (MPI's reduction operations are defined only on those)."""
    MPI = _mpi()
    return {"f": MPI.FLOAT, "d": MPI.DOUBLE, "F": MPI.C_FLOAT_COMPLEX, "D": MPI.C_DOUBLE_COMPLEX}[dtype.char]


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


# ---------------------------------------------------------------------------------------------
# Agreement: one small collective that every rank enters, so that a problem found on any rank
# (bad input, a structure that differs between ranks) raises the same error on every rank
# instead of leaving the others waiting in a reduction.


def _digest(parts: Any) -> int:
    """A 56-bit hash of ``repr(parts)`` (fits in an int64 with its negation)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=7).digest(), "little")


def _agree(comm: Any, signature: Any, error: BaseException | None, extra: int = 0, digest: int | None = None) -> None:
    """Raise the same exception on every rank unless every rank has the same ``signature`` (and
    ``extra`` hash) and no rank has an ``error``. Costs one 3-element MAX-allreduce; the details are
    gathered only when something is wrong. ``digest``: ``_digest(signature)`` if already known."""
    MPI = _mpi()
    h = (_digest(signature) if digest is None else digest) ^ extra
    flags = np.array([h, -h, 0 if error is None else 1], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
    if flags[0] == -flags[1] and flags[2] == 0:
        return
    mine = None if error is None else (type(error).__name__, str(error))
    infos = comm.allgather((signature, extra, mine))
    for r, (_, _, err) in enumerate(infos):
        if err is not None:
            kind = TypeError if err[0] == "TypeError" else ValueError
            raise kind(f"rank {r}: {err[1]}")
    raise ValueError(_describe_mismatch([(s, x) for s, x, _ in infos]))


def _describe_mismatch(infos: list[tuple[Any, int]]) -> str:
    """Say how the first rank that differs from rank 0 differs (the same text on every rank)."""
    ref, ref_extra = infos[0]
    for r, (sig, extra) in enumerate(infos[1:], start=1):
        if sig == ref and extra == ref_extra:
            continue
        head = f"the params differ between ranks: rank {r} and rank 0 "
        settings_head = f"the settings differ between ranks: rank {r} and rank 0 "
        if sig == ref:
            return head + "hold different values; start every rank from the same values (broadcast_params(params))"
        ref_items, items = dict(ref.get("params", ())), dict(sig.get("params", ()))
        for key in sorted(ref.keys() | sig.keys()):
            if key in ("params", "groups") or ref.get(key) == sig.get(key):
                continue
            hint = _SEED_HINT if key == "seed" else ""
            return settings_head + f"have different {key}: {sig.get(key)!r} on rank {r}, {ref.get(key)!r} on rank 0{hint}"
        groups0, groups_r = ref.get("groups") or [], sig.get("groups") or []
        if len(groups0) != len(groups_r):
            return head + f"have {len(groups_r)} and {len(groups0)} param groups"
        for gi, (g0, gr) in enumerate(zip(groups0, groups_r)):
            for key in g0:
                if g0[key] != gr.get(key):
                    return (settings_head + f"have different {key} in param group {gi}: {gr.get(key)!r} on rank {r}, "
                            f"{g0[key]!r} on rank 0")
        only0 = [k for k in ref_items if k not in items]
        only_r = [k for k in items if k not in ref_items]
        if only0 or only_r:
            return head + f"have different names: only on rank 0: {only0}, only on rank {r}: {only_r}"
        for name, desc in ref_items.items():
            if items[name] != desc:
                return head + f"disagree on params[{name!r}]: {_fmt(items[name])} on rank {r}, {_fmt(desc)} on rank 0"
        return head + "list the same params in a different order"
    return "the ranks disagree"  # pragma: no cover - unreachable when hashes differ


_SEED_HINT = ("; pass the same seed= on every rank (or none: every rank then uses minimalsgd.DEFAULT_SEED; "
              "minimalsgd.distributed.shared_seed() draws a random one for all ranks)")


def _settings_signature(opt: Any, options: list[tuple[Any, ...]]) -> dict[str, Any]:
    """What the ranks stepping replicas of one model must agree on besides the params: each group's
    options for this step (``options``, schedules evaluated) and every global setting (clip, skip,
    backend, stochastic rounding, seed, state dtype). Raises as the optimizer's step would."""
    out: dict[str, Any] = {"groups": [dict(zip(opt.hyperparameters, o)) for o in options]}
    out.update(opt._global_values())
    return out


def _step_options(opt: Any) -> list[tuple[Any, ...]]:
    """Each group's options for the optimizer's next step (schedules evaluated), checked."""
    count = opt.applied_steps
    return [opt._checked_group(g, f"param_groups[{i}]", opt._lr_of(i, g, count)) for i, g in enumerate(opt.param_groups)]


def shared_seed(comm: Any = None) -> int:
    """A random stochastic-rounding seed, the same on every rank of ``comm`` (a collective call):
    rank 0 draws 64 bits from the OS and broadcasts them.

    Optimizers built without ``seed=`` use :data:`minimalsgd.DEFAULT_SEED` on every rank, so runs
    round reproducibly and alike everywhere; for a different rounding stream per run, pass
    ``seed=shared_seed(comm)`` on every rank (a seed drawn on each rank separately would make the
    replicas round differently, and the sharded step refuses ranks whose seeds differ). The seed is
    saved in ``state_dict()``, so a resumed run keeps it.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        The communicator (default ``MPI.COMM_WORLD``).

    Returns
    -------
    int
        An int in ``[0, 2**64)``, the same on every rank.

    Raises
    ------
    TypeError, ValueError
        ``comm`` is not an MPI intra-communicator.

    Examples
    --------
    >>> from minimalsgd.distributed import ShardedSGD, shared_seed
    >>> opt = ShardedSGD(params, lr=0.1, stochastic_rounding=True, seed=shared_seed())  # doctest: +SKIP
    """
    comm = _check_comm(comm)
    mine = secrets.randbits(64) if comm.Get_rank() == 0 else None
    return int(comm.bcast(mine, root=0))


def _fmt(desc: tuple[Any, ...]) -> str:
    shape, dtype, has_grad = desc
    return f"shape {shape} dtype {dtype}" + ("" if has_grad else " (no grad)")


# ---------------------------------------------------------------------------------------------
# Flat views: when arrays are already consecutive pieces of one buffer (an arena), collectives run
# on that buffer in place; otherwise they run on a packed copy.


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def _flat_view(arrays: Sequence[np.ndarray], dtype: np.dtype) -> np.ndarray | None:
    """A 1-D view of ``dtype`` over exactly the given arrays, laid end to end in this order in one
    writeable C-contiguous memory block, or None when they are not."""
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


class _Piece:
    """One param inside a per-dtype flat layout."""

    __slots__ = ("index", "name", "label", "shape", "size", "offset")

    def __init__(self, index: int, name: str, label: str, shape: tuple[int, ...], size: int, offset: int) -> None:
        self.index, self.name, self.label, self.shape, self.size, self.offset = index, name, label, shape, size, offset


class _Layout:
    """All params of one dtype end to end (C order each), and the slice this rank owns.

    ``segments`` lists ``(piece, a, b)``: elements ``a:b`` of the piece's flat value lie in this
    rank's slice, at ``piece.offset + a - lo`` of the slice.
    """

    def __init__(self, dtype: np.dtype, pieces: list[_Piece], rank: int, size: int) -> None:
        self.dtype = dtype
        self.pieces = pieces
        self.total = sum(p.size for p in pieces)
        self.counts, self.displs = partition(self.total, size)
        self.lo = self.displs[rank]
        self.hi = self.lo + self.counts[rank]
        self.segments: list[tuple[_Piece, int, int]] = []
        for p in pieces:
            a = max(self.lo, p.offset) - p.offset
            b = min(self.hi, p.offset + p.size) - p.offset
            if a < b:
                self.segments.append((p, a, b))
        #: 16-bit floats are reduced in float32 (then rounded once to the dtype, to nearest even)
        #: and moved as raw 16-bit words; other dtypes are reduced and moved as they are.
        self.half = _is_half(dtype)
        self.red_dtype = np.dtype(np.float32) if self.half else dtype
        self.mpi_red = _mpi_type(self.red_dtype)
        self.mpi_type = _mpi().UINT16_T if self.half else self.mpi_red
        self._scratch: np.ndarray | None = None  # this rank's slice of the reduced grads (red_dtype)
        self._scratch_half: np.ndarray | None = None  # the same rounded to the 16-bit dtype
        self.state: dict[str, np.ndarray] = {}  # state field -> this rank's slice of it, all params
        self.packed_values: np.ndarray | None = None  # full-size copies when the params are not an arena
        self.packed_grads: np.ndarray | None = None
        self._flat_cache: dict[str, tuple[list[Any], np.ndarray | None]] = {}
        self._runs: dict[bool, tuple[Any, list[tuple[int, int, int, int]]]] = {}  # split -> (key, runs)
        self._views: dict[int, tuple[np.ndarray, list[np.ndarray]]] = {}

    @property
    def scratch(self) -> np.ndarray:
        if self._scratch is None:
            self._scratch = np.empty(self.hi - self.lo, dtype=self.red_dtype)
        return self._scratch

    @property
    def scratch_half(self) -> np.ndarray:
        if self._scratch_half is None:
            self._scratch_half = np.empty(self.hi - self.lo, dtype=self.dtype)
        return self._scratch_half

    def raw(self, arr: np.ndarray) -> np.ndarray:
        """``arr`` (1-D, of this dtype) as MPI moves it: 16-bit floats as uint16 words."""
        return arr.view(np.uint16) if self.half else arr

    def vector(self, flat: np.ndarray) -> list[Any]:
        return [self.raw(flat), self.counts, self.displs, self.mpi_type]

    @staticmethod
    def moved(arr: np.ndarray) -> list[Any]:
        """``[buffer, MPI type]`` of a 1-D array of any supported dtype as MPI moves it (a state
        field may have another dtype than the values: float32 buffers of 16-bit params)."""
        if _is_half(arr.dtype):
            return [arr.view(np.uint16), _mpi().UINT16_T]
        return [arr, _mpi_type(arr.dtype)]

    def vector_of(self, flat: np.ndarray) -> list[Any]:
        """``flat`` (full size, any supported dtype) cut into this layout's slices, as MPI moves it."""
        buf, mpi_type = self.moved(flat)
        return [buf, self.counts, self.displs, mpi_type]

    def flat_of(self, what: str, arrays: list[Any]) -> np.ndarray | None:
        """The 1-D view over ``arrays`` (this layout's values or grads) when they tile one buffer
        in order, else None. Cached by identity: an array object's memory never moves."""
        cached = self._flat_cache.get(what)
        if cached is not None and len(cached[0]) == len(arrays) and all(a is b for a, b in zip(arrays, cached[0])):
            return cached[1]  # the same array objects as last time: the same memory
        flat = None if any(a is None for a in arrays) else _flat_view(arrays, self.dtype)
        self._flat_cache[what] = (list(arrays), flat)
        return flat

    def runs(self, key: Any, has_grad: list[bool], group_of: list[int], born: list[bool], steps: list[int],
             split: bool = False) -> list[tuple[int, int, int, int]]:
        """``[(start, stop, param index of the first, offset)]`` in slice coordinates: maximal
        stretches of params that have a grad and share group, birth and step count, or with
        ``split`` one run per param (``offset``: the index within its param of the run's first
        element, which stochastic rounding needs). Cached per ``key`` and ``split``."""
        cached = self._runs.get(split)
        if cached is not None and cached[0] == key:
            return cached[1]
        out: list[tuple[int, int, int, int]] = []
        last = None
        for pc, a, b in self.segments:
            i = pc.index
            if not has_grad[i]:
                last = None
                continue
            s0 = pc.offset + a - self.lo
            s1 = s0 + b - a
            tag = (group_of[i], born[i], steps[i])
            if not split and out and last == tag and out[-1][1] == s0:
                out[-1] = (out[-1][0], s1, out[-1][2], out[-1][3])
            else:
                out.append((s0, s1, i, a))
            last = tag
        self._runs[split] = (key, out)
        return out

    def views(self, flat: np.ndarray) -> list[np.ndarray]:
        """Each param's piece of ``flat`` (one of this layout's packed buffers), shaped like the param."""
        cached = self._views.get(id(flat))
        if cached is None or cached[0] is not flat:
            cached = (flat, [flat[p.offset : p.offset + p.size].reshape(p.shape) for p in self.pieces])
            self._views[id(flat)] = cached
        return cached[1]

    def new_packed_grads(self) -> np.ndarray:
        """A full-size buffer for the grads as they are summed (float32 for 16-bit floats)."""
        return np.empty(self.total, dtype=self.red_dtype)


def _dtype_key(a: np.ndarray) -> np.dtype:
    return a.dtype.newbyteorder("=")


def _check_mpi_dtype(label: str, dtype: np.dtype) -> None:
    native = dtype.newbyteorder("=")
    if native not in _MPI_DTYPES and not _is_half(native):
        raise TypeError(
            f"{label}: dtype {dtype} is not supported over MPI "
            "(float32, float64, complex64, complex128, float16 and bfloat16 are)"
        )


def _groups(params: Any, name: str = "params") -> list[tuple[str, Mapping[str, Any]]]:
    """``[(label prefix, param dict)]`` from a param dict or a list of groups ``[{"params": {...}}]``."""
    if isinstance(params, Mapping):
        return [(name, params)]
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        out = []
        for i, group in enumerate(params):
            if not isinstance(group, Mapping) or not isinstance(group.get("params"), Mapping):
                raise TypeError(f"{name}[{i}] must be a group dict with a 'params' dict, got {type(group).__name__}")
            out.append((f"{name}[{i}]['params']", group["params"]))
        return out
    raise TypeError(f"{name} must be a dict of name -> {{'value', 'grad'}} or a list of groups, got {type(params).__name__}")


# ---------------------------------------------------------------------------------------------
# The one reduction path


def _reduce_scatter(comm: Any, layout: _Layout, grads_flat: np.ndarray, average: bool) -> np.ndarray:
    """This rank's slice of the sum (or mean) over ranks of ``grads_flat`` (of ``layout.red_dtype``),
    in the layout's dtype. On one rank, the slice is all of ``grads_flat`` and is returned as it is
    (read it, never write it). 16-bit floats: summed and divided in float32, rounded once."""
    size = comm.Get_size()
    if size == 1 and not layout.half:
        return grads_flat
    out = layout.scratch
    if size == 1:
        np.copyto(out, grads_flat)
    else:
        MPI = _mpi()
        comm.Reduce_scatter([grads_flat, layout.mpi_red], [out, layout.mpi_red], layout.counts, op=MPI.SUM)
        if average:
            np.divide(out, layout.red_dtype.type(size), out=out)
    if layout.half:
        half = layout.scratch_half
        np.copyto(half, out, casting="unsafe")  # round to nearest even, once
        return half
    return out


def _allgather_in_place(comm: Any, layout: _Layout, flat: np.ndarray) -> None:
    """Every rank's slice of ``flat`` to every rank (each rank's own slice is already in place)."""
    MPI = _mpi()
    comm.Allgatherv(MPI.IN_PLACE, layout.vector(flat))


def allreduce_grads(params: Any, comm: Any = None, average: bool = True, *, optimizer: Any = None) -> None:
    r"""Sum (``average=False``) or average every gradient across the ranks of ``comm``, in place.

    ``params`` is a param dict ``{name: {"value": ndarray, "grad": ndarray}}`` or a list of groups
    ``[{"params": {...}, ...}]``; params whose grad is None are skipped (on every rank alike).
    Afterwards every rank holds :math:`\bar g = \frac1N \sum_r g_r` (or the sum) in each grad.

    ``optimizer``: the plain optimizer (``minimalsgd.SGD``, ...) that steps these params next on
    every rank. Its settings for that step -- each group's hyperparameters (schedules evaluated)
    and every global setting, the stochastic-rounding ``seed`` included -- then join the check that
    every rank already makes, at no extra cost: ranks whose optimizers would step their replicas
    differently raise the same ValueError on every rank before anything is written.

    The grads of each dtype are reduced as one bucket: one ``Reduce_scatter`` (with the slice
    boundaries of :class:`ShardedSGD`, which makes the two bit-identical) and one ``Allgatherv``.
    When the grads of a dtype are already consecutive views of one buffer (see
    :func:`minimalsgd.pack_params`), that buffer is reduced in place; otherwise the grads are packed
    into a buffer of their size and copied back. float16 and bfloat16 grads are summed in
    float32 and rounded once to their dtype (MPI has no portable 16-bit sum).

    A collective call: every rank calls it, with the same params.

    Parameters
    ----------
    params : dict or list of dict
        A param dict or a list of param groups, as :class:`minimalsgd.SGD` takes.
    comm : mpi4py.MPI.Intracomm, optional
        The communicator (default ``MPI.COMM_WORLD``).
    average : bool, default True
        Divide the sum by the number of ranks.
    optimizer : optimizer, optional
        The plain optimizer that steps these params next on every rank (keyword only): its
        settings join the agreement (see above).

    Raises
    ------
    TypeError
        ``comm`` is not an MPI intra-communicator; a grad is not an array of a supported dtype
        (float32, float64, complex64, complex128, float16, bfloat16).
    ValueError
        A grad is read-only, or the ranks disagree on the names, shapes, dtypes or the presence
        of grads (or on ``optimizer``'s settings).

    The same error is raised on every rank, before anything is written.

    Examples
    --------
    Run under ``mpiexec -n 2 python script.py``; on one process it leaves the grads as they are:

    >>> from minimalsgd.distributed import allreduce_grads
    >>> params = {"w": {"value": np.zeros(3), "grad": np.ones(3)}}
    >>> opt = minimalsgd.SGD(params, lr=0.1)
    >>> allreduce_grads(params, optimizer=opt)            # doctest: +SKIP
    >>> opt.step()                                        # the same step on every rank
    True
    """
    comm = _check_comm(comm)
    size, rank = comm.Get_size(), comm.Get_rank()
    error: BaseException | None = None
    items: list[tuple[str, tuple[Any, ...]]] = []
    by_dtype: dict[np.dtype, list[tuple[str, np.ndarray]]] = {}
    settings: dict[str, Any] = {}
    try:
        average = F.check_bool("average", average)
        if optimizer is not None:
            if not (hasattr(optimizer, "_global_values") and hasattr(optimizer, "param_groups")):
                raise TypeError(f"optimizer must be None or a minimalsgd optimizer (like minimalsgd.SGD), "
                                f"got {type(optimizer).__name__}")
            settings = _settings_signature(optimizer, _step_options(optimizer))
        for prefix, group in _groups(params):
            for name, p in group.items():
                label = f"{prefix}[{name!r}]"
                if not isinstance(p, Mapping):
                    raise TypeError(f"{label} must be a dict with 'value' and 'grad', got {type(p).__name__}")
                grad = p.get("grad")
                if grad is None:
                    items.append((label, (None, None, False)))
                    continue
                if not isinstance(grad, np.ndarray):
                    raise TypeError(f"{label}: grad must be a numpy.ndarray, got {type(grad).__name__}")
                _check_mpi_dtype(label, grad.dtype)
                if not grad.flags.writeable:
                    raise ValueError(f"{label}: grad is read-only; allreduce_grads writes the mean in place")
                items.append((label, (grad.shape, _dtype_name(grad.dtype), True)))
                by_dtype.setdefault(_dtype_key(grad), []).append((label, grad))
    except (TypeError, ValueError) as err:
        error = err
    _agree(comm, {"params": items, "average": average, **settings}, error)
    if size == 1:
        return
    for dtype, entries in by_dtype.items():
        grads = [g for _, g in entries]
        pieces, offset = [], 0
        for i, (label, g) in enumerate(entries):
            pieces.append(_Piece(i, label, label, g.shape, g.size, offset))
            offset += g.size
        layout = _Layout(dtype, pieces, rank, size)
        flat = _flat_view(grads, dtype)
        packed = flat is None
        if packed:
            flat = np.empty(layout.total, dtype=dtype)
        send = layout.new_packed_grads() if layout.half else flat
        if packed or layout.half:
            for piece, g in zip(pieces, grads):
                np.copyto(send[piece.offset : piece.offset + piece.size].reshape(g.shape), g, casting="unsafe")
        mine = _reduce_scatter(comm, layout, send, average)
        flat[layout.lo : layout.hi] = mine
        _allgather_in_place(comm, layout, flat)
        if packed:
            for piece, g in zip(pieces, grads):
                np.copyto(g, flat[piece.offset : piece.offset + piece.size].reshape(g.shape))


def broadcast_params(params: Any, comm: Any = None, root: int = 0) -> None:
    """Copy every value of ``root``'s params to the other ranks, in place (one ``Bcast`` per value).

    Call it once after building the model so that every rank starts from the same values, as
    :class:`ShardedSGD` requires (its first step checks it). A collective call.

    Parameters
    ----------
    params : dict or list of dict
        A param dict or a list of param groups; only the values are sent.
    comm : mpi4py.MPI.Intracomm, optional
        The communicator (default ``MPI.COMM_WORLD``).
    root : int, default 0
        The rank whose values every rank gets.

    Raises
    ------
    TypeError
        ``comm`` is not an MPI intra-communicator, or a value is not an ndarray.
    ValueError
        ``root`` is not a rank of ``comm``; a value is read-only; the ranks disagree on names,
        shapes or dtypes (the same error on every rank, nothing written).
    """
    comm = _check_comm(comm)
    size = comm.Get_size()
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < size:
        raise ValueError(f"root must be a rank in [0, {size}), got {root!r}")
    error: BaseException | None = None
    items = []
    values = []
    try:
        for prefix, group in _groups(params):
            for name, p in group.items():
                label = f"{prefix}[{name!r}]"
                value = p.get("value") if isinstance(p, Mapping) else None
                if not isinstance(value, np.ndarray):
                    raise TypeError(f"{label}: value must be a numpy.ndarray, got {type(value).__name__}")
                if not value.flags.writeable:
                    raise ValueError(f"{label}: value is read-only")
                items.append((label, (value.shape, str(value.dtype), True)))
                values.append(value)
    except (TypeError, ValueError) as err:
        error = err
    _agree(comm, {"params": items, "root": root}, error)
    MPI = _mpi()
    for value in values:
        buf = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        comm.Bcast([buf.reshape(-1).view(np.uint8), MPI.BYTE], root=root)
        if buf is not value:
            np.copyto(value, buf)


# ---------------------------------------------------------------------------------------------
# The sharded optimizer


class ShardedOptimizer:
    r"""Any minimalsgd optimizer with its state sharded across the ranks of ``comm`` (ZeRO stage 1).

    ``params`` and the arguments are ``optimizer_class``'s (:class:`minimalsgd.SGD` for
    :class:`ShardedSGD`), forwarded to it as given, so every argument it takes is taken and means
    the same; the params must have the same names, shapes and dtypes on every rank and the same
    values at the start (see :func:`broadcast_params`), and the settings must be the same on every
    rank (the stochastic-rounding ``seed`` too: without ``seed=`` every rank has
    :data:`minimalsgd.DEFAULT_SEED`; :func:`shared_seed` draws a random one for all ranks). The elements of each dtype, params end to
    end in order (C order within a param), are cut into ``N`` contiguous slices (:func:`partition`);
    rank ``r`` keeps every state array (``optimizer_class.state_fields``) only for slice ``r``.
    ``step()``:

    1. checks the params on every rank and agrees (one 3-integer allreduce) that all ranks hold the
       same names, shapes, dtypes, grads present, hyperparameters and global settings (clip, skip,
       backend, stochastic rounding, seed, state dtype), else raises the same error everywhere and
       writes nothing;
    2. ``Reduce_scatter`` of the grads, divided by ``N``: rank ``r`` gets the mean gradient of its slice;
    3. with ``clip_grad_norm`` or ``skip_nonfinite``: each rank's sum of squares of its slice (float64)
       and one ``Allgather`` of those ``N`` numbers, summed in rank order by every rank, so the norm,
       the clip coefficient and the skip decision are identical everywhere;
    4. the optimizer's own fused formula (one call per dtype) on 1-D views of this
       rank's slice: stretches of consecutive params that share group, step count and first step
       (one view per param where 16-bit results round stochastically: each view rounds with its
       param's key and its offset in the param, so the bits do not depend on the slicing);
    5. ``Allgatherv`` of the values, so every rank ends with the same full values.

    Grads are never written. When the values (and grads) of a dtype are consecutive views of one
    buffer, as :func:`minimalsgd.pack_params` lays them out (the same order as the slices), the
    collectives run on that arena in place and each rank's slice is one slice of it; otherwise they
    run on internal flat copies (two full copies per step). ``pack=True`` calls ``pack_params(params)``
    first: the dict entries are rebound to views of the arena (``opt.arena``), so arrays held from
    before are no longer the params.

    Settings, counters and checkpoints belong to a plain ``optimizer_class`` over the same params
    that this object keeps without state (``opt.lr``, ``opt.param_groups``, ``opt.skipped_steps``,
    ... are its); only the state arrays are sharded. ``state_dict()`` is the same on every rank.
    The result equals :func:`allreduce_grads` followed by the plain optimizer bit for bit (with
    stochastic rounding too, for C-contiguous params: the sharded step counts a param's elements
    in C order, the plain step in the param's memory order), except that with an engaged clip the
    norm is summed in another order (a difference of float64 rounding in the clip coefficient).

    Parameters
    ----------
    optimizer_class : type
        A minimalsgd optimizer class: :class:`minimalsgd.SGD`, :class:`minimalsgd.Adam` or
        :class:`minimalsgd.AdamW`.
    params : dict or list of dict
        As ``optimizer_class`` takes them; the same names, shapes and dtypes on every rank.
    comm : mpi4py.MPI.Intracomm, optional
        The communicator (default ``MPI.COMM_WORLD``).
    *args, **kwargs
        ``optimizer_class``'s other arguments (``lr``, ``momentum``, ``clip_grad_norm``,
        ``seed``, ...), forwarded to it as given.
    pack : bool, default False
        Call :func:`minimalsgd.pack_params` on ``params`` first (the arena is ``opt.arena``;
        keyword only).

    Attributes
    ----------
    comm : mpi4py.MPI.Intracomm
        The communicator.
    arena : Arena or None
        The arena that ``pack=True`` made.

    Raises
    ------
    TypeError, ValueError
        What ``optimizer_class`` raises for its arguments; ``optimizer_class`` is not a
        minimalsgd optimizer class; ``comm`` is not an MPI intra-communicator.

    Examples
    --------
    Under ``mpiexec -n N``; every rank runs the same code on its share of the data:

    >>> from minimalsgd.distributed import ShardedOptimizer, broadcast_params
    >>> broadcast_params(params)                                          # doctest: +SKIP
    >>> opt = ShardedOptimizer(minimalsgd.AdamW, params, lr=1e-3, weight_decay=0.01)  # doctest: +SKIP
    >>> opt.step()                                                        # doctest: +SKIP
    True
    """

    def __init__(self, optimizer_class: type, params: Any, comm: Any = None, *args: Any, pack: bool = False,
                 **kwargs: Any) -> None:
        comm = _check_comm(comm)
        pack = F.check_bool("pack", pack)
        if not (isinstance(optimizer_class, type) and hasattr(optimizer_class, "_run") and hasattr(optimizer_class, "state_fields")):
            raise TypeError(f"optimizer_class must be a minimalsgd optimizer class (like minimalsgd.SGD), got {optimizer_class!r}")
        # The plain optimizer takes its own arguments (forwarded, never re-listed here), validates
        # everything as it always does and keeps the settings.
        opt = optimizer_class(params, *args, **kwargs)
        arena = None
        if pack:
            import minimalsgd

            if not hasattr(minimalsgd, "pack_params"):
                raise ValueError("pack=True needs minimalsgd.pack_params, which this version lacks")
            arena = minimalsgd.pack_params(params)
        d = self.__dict__
        d["comm"] = comm
        d["_opt"] = opt
        #: The Arena that ``pack=True`` made (None otherwise).
        d["arena"] = arena
        d["_layouts"] = None
        d["_names"] = []
        d["_group_of"] = []  # per param: its group
        d["_steps"] = []  # per param, the same on every rank
        d["_has"] = {}  # state field -> per param: whether it has that state
        d["_verified"] = False  # the first step also checks that the values agree
        d["_last_signature"] = None
        d["_last_digest"] = 0
        d["_keys"] = None  # per param: its stochastic-rounding key (made when first needed)

    # Settings and counters live in the plain optimizer.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_opt", "comm"):
            raise AttributeError(name)
        if name == "state":
            raise AttributeError(
                f"{type(self).__name__} keeps only this rank's slice of the state: state_dict() gathers the full "
                "state (the plain optimizer's format), shards() and state_bytes describe the slice"
            )
        return getattr(self._opt, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__:
            object.__setattr__(self, name, value)
        else:
            setattr(self._opt, name, value)

    @property
    def params(self) -> Any:
        """The params dict of the only param group (as the plain optimizer's ``params``)."""
        return self._opt.params

    def add_param_group(self, param_group: Any) -> None:
        """As the plain optimizer's ``add_param_group``, before the first step only (the slices are
        fixed then); afterwards build a new sharded optimizer (``state_dict``/``load_state_dict``).

        Parameters
        ----------
        param_group : dict
            ``{"params": {name: {...}}, <hyperparameter>: ...}``, as
            :meth:`minimalsgd.SGD.add_param_group` takes it.

        Raises
        ------
        ValueError
            After the first step; or what the plain optimizer's ``add_param_group`` raises.
        """
        if self._layouts is not None:
            raise ValueError(f"{type(self).__name__}'s slices are fixed after the first step; build a new one "
                             "with the new group (state_dict/load_state_dict carry the state over)")
        self._opt.add_param_group(param_group)

    @property
    def rank(self) -> int:
        """This process's rank in ``comm``."""
        return int(self.comm.Get_rank())

    @property
    def world_size(self) -> int:
        """The number of ranks in ``comm``."""
        return int(self.comm.Get_size())

    @property
    def state_bytes(self) -> int:
        """Bytes of optimizer state (the state arrays' slices) this rank holds: about total/N."""
        return sum(a.nbytes for lay in self._layouts or () for a in lay.state.values() if a is not None)

    def shards(self) -> dict[str, tuple[int, int, int]]:
        """The elements of each dtype that this rank owns.

        Returns
        -------
        dict
            ``{dtype name: (lo, hi, total)}``: this rank owns elements ``lo:hi`` of the ``total``
            elements of that dtype (params end to end in order, C order within each).
        """
        self._ensure_layout()
        assert self._layouts is not None
        return {str(lay.dtype): (lay.lo, lay.hi, lay.total) for lay in self._layouts}

    # -----------------------------------------------------------------------------------------
    # The plain optimizer's groups and settings

    def _param_dicts(self) -> list[Any]:
        return [g["params"] for g in self._opt.param_groups]

    def _options(self) -> tuple[list[tuple[Any, ...]], float | None, bool, str]:
        """Each group's options for this step (schedules evaluated), checked by the optimizer's
        rules, and the global (clip, skip, backend)."""
        opt = self._opt
        clip, skip, backend = opt._check_globals()
        return _step_options(opt), clip, skip, backend

    def _fresh(self) -> Any:
        """A plain optimizer over the same params and settings (all of them), without state."""
        return self._opt._fresh_copy()

    def _field_dtype(self, opt: Any, lay: _Layout, field: str) -> np.dtype:
        """The dtype of ``field``'s state arrays for params of ``lay``'s dtype (the optimizer's
        choice: float32 buffers of 16-bit params with ``state_dtype="float32"``)."""
        return opt._new_state_array(field, np.empty(0, dtype=lay.dtype)).dtype

    def _rounding_key_list(self) -> list[int]:
        """Each param's stochastic-rounding key, as the plain optimizer keys it (by name)."""
        keys = self._keys
        if keys is None or len(keys) != len(self._names):
            keys = self.__dict__["_keys"] = self._opt._rounding_keys(self._names)
        return keys

    # -----------------------------------------------------------------------------------------
    # Layout (local: built from this rank's params, checked against the other ranks at each step)

    def _describe(self) -> tuple[list[tuple[str, tuple[Any, ...]]], list[Any], list[int]]:
        """``([(name, (shape, dtype name, has grad))], param entries, group of each)``, validated
        (TypeError/ValueError naming the param). The common case (a dict entry with a writeable
        ndarray value of a supported dtype and a grad of the same dtype and shape, or None) is
        checked inline; anything else takes the full checks."""
        desc: list[tuple[str, tuple[Any, ...]]] = []
        entries: list[Any] = []
        group_of: list[int] = []
        seen: set[Any] = set()
        names = _DTYPE_NAMES
        for gi, params in enumerate(self._param_dicts()):
            if not isinstance(params, Mapping):
                raise TypeError(f"params must be a dict, got {type(params).__name__}")
            for name, p in params.items():
                if name in seen:
                    raise ValueError(f"param {name!r} is in two param groups; a name may be in one group only")
                seen.add(name)
                value = p.get("value") if type(p) is dict else None
                if type(value) is np.ndarray:
                    dtype_name = names.get(value.dtype)
                    grad = p.get("grad")
                    if dtype_name is not None and value.flags.writeable and (
                        grad is None
                        or (type(grad) is np.ndarray and grad.dtype == value.dtype and grad.shape == value.shape)
                    ):
                        desc.append((name, (value.shape, dtype_name, grad is not None)))
                        entries.append(p)
                        group_of.append(gi)
                        continue
                desc.append((name, self._check_param(name, p)))
                entries.append(p)
                group_of.append(gi)
        return desc, entries, group_of

    @staticmethod
    def _check_param(name: Any, p: Any) -> tuple[Any, ...]:
        """The full checks of one param: ``(shape, dtype name, has grad)`` or TypeError/ValueError."""
        label = f"params[{name!r}]"
        if not isinstance(p, Mapping):
            raise TypeError(f"{label} must be a dict with 'value' and 'grad', got {type(p).__name__}")
        if "value" not in p:
            raise ValueError(f"{label} has no 'value'")
        value, grad = p["value"], p.get("grad")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{label}: value must be a numpy.ndarray, got {type(value).__name__}")
        _check_mpi_dtype(label, value.dtype)
        if grad is not None:
            F.check_tensor(label, value, grad, None, False)
        elif not value.flags.writeable:
            raise ValueError(f"{label}: value is read-only; the step updates it in place")
        return (value.shape, _dtype_name(value.dtype), grad is not None)

    def _entries(self) -> list[tuple[int, str, dict[str, Any]]]:
        return [(gi, name, p) for gi, params in enumerate(self._param_dicts()) for name, p in params.items()]

    def _ensure_layout(self) -> None:
        if self._layouts is not None:
            return
        rank, size = self.rank, self.world_size
        by_dtype: dict[np.dtype, list[_Piece]] = {}
        offsets: dict[np.dtype, int] = {}
        names, group_of = [], []
        for i, (gi, name, p) in enumerate(self._entries()):
            value = p["value"]
            key = _dtype_key(value)
            off = offsets.get(key, 0)
            by_dtype.setdefault(key, []).append(_Piece(i, name, f"params[{name!r}]", value.shape, value.size, off))
            offsets[key] = off + value.size
            names.append(name)
            group_of.append(gi)
        d = self.__dict__
        d["_layouts"] = [_Layout(dt, pieces, rank, size) for dt, pieces in by_dtype.items()]
        d["_names"] = names
        d["_group_of"] = group_of
        d["_steps"] = [0] * len(names)
        d["_has"] = {f: [False] * len(names) for f in self._opt.state_fields}

    def _check_unchanged(self, desc: list[tuple[str, tuple[Any, ...]]], group_of: list[int]) -> None:
        if self._layouts is None:
            return
        if [d[0] for d in desc] != self._names or group_of != self._group_of:
            raise ValueError(
                "the param names changed since the optimizer was set up; build a new sharded optimizer "
                "(state_dict/load_state_dict carry the state over)"
            )
        for lay in self._layouts:
            lay_name = _dtype_name(lay.dtype)
            for piece in lay.pieces:
                shape, dtype, _ = desc[piece.index][1]
                if shape != piece.shape or dtype != lay_name:
                    raise ValueError(
                        f"{piece.label} changed from shape {piece.shape} dtype {lay_name} to shape {shape} dtype {dtype} "
                        "since the optimizer was set up; build a new sharded optimizer"
                    )

    def _values_digest(self) -> int:
        h = hashlib.blake2b(digest_size=7)
        for _, _, p in self._entries():
            h.update(np.ascontiguousarray(p["value"], p["value"].dtype.newbyteorder("=")).tobytes())
        return int.from_bytes(h.digest(), "little")

    # -----------------------------------------------------------------------------------------
    # The step

    def step(self) -> bool:
        """One step of every param that has a grad, on every rank (a collective call).

        Returns
        -------
        bool
            True when applied, False when ``skip_nonfinite`` found a NaN or infinity in the mean
            gradient (then nothing was written, on any rank).

        Raises
        ------
        TypeError, ValueError
            A rank's params or settings are invalid, or differ between ranks (names, shapes,
            dtypes, grads present, hyperparameters), or the ranks started from different values
            (first step; see :func:`broadcast_params`). The same error on every rank, before
            anything is written.
        """
        comm = self.comm
        d = self.__dict__
        opt = self._opt
        error: BaseException | None = None
        desc: list[tuple[str, tuple[Any, ...]]] = []
        entries: list[Any] = []
        settings = None
        agreed: dict[str, Any] = {}
        try:
            settings = self._options()
            agreed = _settings_signature(opt, settings[0])
            desc, entries, group_of = self._describe()
            self._check_unchanged(desc, group_of)
        except (TypeError, ValueError) as err:
            error = err
        signature: dict[str, Any] = {"params": desc, **agreed}
        extra = 0
        if not self._verified and error is None:
            extra = self._values_digest()
        if error is None and self._last_signature == signature:
            digest = self._last_digest
        else:
            digest = _digest(signature)
            d["_last_signature"], d["_last_digest"] = signature, digest
        _agree(comm, signature, error, extra, digest)
        d["_verified"] = True
        assert settings is not None
        options, clip, skip, backend = settings
        self._ensure_layout()
        assert self._layouts is not None
        has_grad = [x[1][2] for x in desc]
        group_of = self._group_of

        # 1. Reduce-scatter the grads: this rank's slice of the mean gradient, per dtype.
        values_flat: list[np.ndarray] = []
        reduced: list[np.ndarray] = []
        for lay in self._layouts:
            vals = [entries[pc.index]["value"] for pc in lay.pieces]
            grads = [entries[pc.index]["grad"] for pc in lay.pieces]
            vflat = lay.flat_of("values", vals)
            gflat = lay.flat_of("grads", grads) if not lay.half else None
            if gflat is None:
                if lay.packed_grads is None:
                    lay.packed_grads = lay.new_packed_grads()
                gflat = lay.packed_grads
                if all(g is not None for g in grads) and lay.pieces:
                    np.concatenate([g.reshape(-1) for g in grads], out=gflat, casting="unsafe")
                else:
                    for dst, g in zip(lay.views(gflat), grads):
                        if g is None:
                            dst[...] = 0
                        else:
                            np.copyto(dst, g, casting="unsafe")
            if vflat is None:
                if lay.packed_values is None:
                    lay.packed_values = np.empty(lay.total, dtype=lay.dtype)
                vflat = lay.packed_values
                for pc, a, b in lay.segments:
                    start = pc.offset + a
                    vflat[start : start + b - a] = np.ravel(entries[pc.index]["value"])[a:b]
            values_flat.append(vflat)
            reduced.append(_reduce_scatter(comm, lay, gflat, True))

        # Which state each param's group needs, and whether this step gives birth to it.
        fields = opt.state_fields
        needed = [opt._fields_needed(o) for o in options]
        has = self._has
        if all(all(has[f]) for f in set().union(*needed)):  # every needed state exists (all but first steps)
            born = [False] * len(has_grad)
        else:
            born = [any(not has[f][i] for f in needed[group_of[i]]) for i in range(len(has_grad))]
        steps = self._steps
        # Runs: maximal stretches of this rank's slice whose params all have a grad and share group,
        # birth and step count, so the formula gets a handful of long 1-D views. They depend on
        # which neighbours have equal step counts, not on the counts: cached on the differences.
        run_key = (tuple(has_grad), tuple(born), tuple(map(operator.sub, steps[1:], steps[:-1])))

        # 2. The global norm of the mean gradient: local sums of squares, one collective.
        scale = 1.0
        if clip is not None or skip:
            local = 0.0
            bad = 0.0
            views = []
            for lay, mine in zip(self._layouts, reduced):
                for s0, s1, _, _ in lay.runs(run_key, has_grad, group_of, born, steps):
                    views.append(mine[s0:s1])
            if views:
                local = F.sum_of_squares([f"slice[{i}]" for i in range(len(views))], views, backend)
                if not math.isfinite(local) and not all(bool(np.isfinite(v).all()) for v in views):
                    bad = 1.0
            parts = np.empty((self.world_size, 2), dtype=np.float64)
            comm.Allgather(np.array([local, bad], dtype=np.float64), parts)
            norm = math.sqrt(math.fsum(parts[:, 0].tolist()))
            if skip and bool(parts[:, 1].any()):
                opt.skipped_steps += 1
                return False
            opt.last_grad_norm = norm
            scale = F.clip_scale(norm, clip)

        # 3. The formula on this rank's slice, one call per dtype; 4. allgather the values.
        # Stochastic rounding keys each element by its param and its index within the param (as the
        # plain optimizer does), never by the slice: 16-bit runs are then cut at params, and each
        # view carries its param's key and its offset in that param.
        stochastic = bool(agreed.get("stochastic_rounding", False))
        for lay, vflat, mine in zip(self._layouts, values_flat, reduced):
            split = lay.half and stochastic
            runs = lay.runs(run_key, has_grad, group_of, born, steps, split)
            labels, vs, gs, states, borns, run_steps, run_groups = [], [], [], [], [], [], []
            for s0, s1, i, _ in runs:
                gi = group_of[i]
                row: list[np.ndarray | None] = []
                for f in fields:
                    if f in needed[gi]:
                        arr = lay.state.get(f)
                        if arr is None:
                            arr = lay.state[f] = np.empty(lay.hi - lay.lo, dtype=self._field_dtype(opt, lay, f))
                        row.append(arr[s0:s1])
                    else:
                        row.append(None)
                if born[i]:  # as the plain optimizer gives birth to state: its own initial arrays
                    for f, a in zip(fields, row):
                        if a is not None and not has[f][i]:
                            a[...] = opt._new_state_array(f, a)
                labels.append(f"slice[{s0}:{s1}]")
                vs.append(vflat[lay.lo + s0 : lay.lo + s1])
                gs.append(mine[s0:s1])
                states.append(row)
                borns.append(born[i])
                run_steps.append(steps[i])
                run_groups.append(gi)
            if vs:
                keys = offsets = None
                if split:
                    param_keys = self._rounding_key_list()
                    keys = [param_keys[i] for _, _, i, _ in runs]
                    offsets = [a for _, _, _, a in runs]
                elif lay.half:  # rounding to nearest: no keys to compute
                    keys = [0] * len(vs)
                opt._run(labels, vs, gs, states, borns, run_steps, run_groups, options, scale, backend,
                         rounding_keys=keys, rounding_offsets=offsets)
            _allgather_in_place(comm, lay, vflat)
            if vflat is lay.packed_values:
                for pc, src in zip(lay.pieces, lay.views(vflat)):
                    if has_grad[pc.index]:
                        np.copyto(entries[pc.index]["value"], src)
        for i, g in enumerate(has_grad):
            if g:
                steps[i] += 1
                for f in needed[group_of[i]]:
                    has[f][i] = True
        object.__setattr__(opt, "_applied", opt._applied + 1)
        opt.last_lrs = [float(o.lr) for o in options]
        return True

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero every grad in place (or set it to None), as the plain optimizer's ``zero_grad``.

        Parameters
        ----------
        set_to_none : bool, default False
            Set each ``"grad"`` entry to None instead of zeroing the array.
        """
        self._opt.zero_grad(set_to_none)

    # -----------------------------------------------------------------------------------------
    # Checkpoints: the full state, built into the plain optimizer so the format is its own.

    def state_dict(self, root: int | None = None) -> dict[str, Any] | None:
        """The full optimizer state, exactly the plain optimizer's ``state_dict()`` format (a collective call).

        Parameters
        ----------
        root : int, optional
            With None (default) every rank gets it (one ``Allgatherv`` per state field and
            dtype); with ``root=r`` only rank ``r`` does (``Gatherv``) and the others get None,
            which saves memory on the others. Every rank must call it, with the same ``root``.
            It first agrees (one 3-integer allreduce) that every rank has the same settings (the
            seed included).

        Returns
        -------
        dict or None
            The plain optimizer's state dict (see :meth:`minimalsgd.SGD.state_dict`), the same on
            every rank. Save it from one rank: ``if sd is not None: np.savez(path, **sd)``.

        Raises
        ------
        ValueError
            ``root`` is not None or a rank of ``comm``; the ranks' settings differ (the same
            error on every rank).
        """
        comm = self.comm
        size = self.world_size
        if root is not None and (isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < size):
            raise ValueError(f"root must be None or a rank in [0, {size}), got {root!r}")
        error: BaseException | None = None
        agreed: dict[str, Any] = {}
        opt = self._opt
        try:  # the settings as saved (a schedule is code, not saved: not called here)
            groups = [{k: "schedule" if callable(g.get(k)) else g.get(k) for k in opt.hyperparameters}
                      for g in opt.param_groups]
            agreed = {"groups": groups, **opt._global_values()}
        except (TypeError, ValueError) as err:
            error = err
        _agree(comm, {"state_dict": root, **agreed}, error)
        self._ensure_layout()
        assert self._layouts is not None
        fields = self._opt.state_fields
        gathered: list[dict[str, np.ndarray | None]] = []
        for lay in self._layouts:
            per_field: dict[str, np.ndarray | None] = {}
            for f in fields:
                if not any(self._has[f][pc.index] for pc in lay.pieces):
                    continue
                mine = lay.state.get(f)
                if mine is None:
                    mine = np.zeros(lay.hi - lay.lo, dtype=self._field_dtype(self._opt, lay, f))
                if root is None or self.rank == root:
                    full = np.empty(lay.total, dtype=mine.dtype)
                    recv = lay.vector_of(full)
                else:
                    full, recv = None, None
                if root is None:
                    comm.Allgatherv(lay.moved(mine), recv)
                else:
                    comm.Gatherv(lay.moved(mine), recv, root=root)
                per_field[f] = full
            gathered.append(per_field)
        if root is not None and self.rank != root:
            return None
        state: dict[str, dict[str, Any]] = {}
        for lay, per_field in zip(self._layouts, gathered):
            for pc in lay.pieces:
                i = pc.index
                if self._steps[i] == 0 and not any(self._has[f][i] for f in fields):
                    continue
                st: dict[str, Any] = {"step": self._steps[i]}
                for f, full in per_field.items():
                    if self._has[f][i] and full is not None:
                        st[f] = full[pc.offset : pc.offset + pc.size].reshape(pc.shape)
                state[pc.name] = st
        opt = self._opt
        opt.state = state
        try:
            return opt.state_dict()
        finally:
            opt.state = {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Take a full state dict (from :meth:`state_dict` or the plain optimizer's, saved on any
        number of ranks) and keep this rank's slice of it (a collective call).

        A plain optimizer over the same params validates and loads it.

        Parameters
        ----------
        state_dict : mapping
            A full state dict, from any number of ranks, or from the plain optimizer.

        Raises
        ------
        TypeError, ValueError
            The state dict does not fit on some rank: every rank raises the same error and
            nothing changes.
        """
        error: BaseException | None = None
        trial = None
        try:
            self._describe()
            trial = self._fresh()
            trial.load_state_dict(state_dict)
        except (TypeError, ValueError) as err:
            error = err
        _agree(self.comm, "load_state_dict", error)
        assert trial is not None
        self._ensure_layout()
        assert self._layouts is not None
        fields = trial.state_fields
        index = {name: i for i, name in enumerate(self._names)}
        steps = [0] * len(self._names)
        has = {f: [False] * len(self._names) for f in fields}
        arrays: dict[str, dict[int, np.ndarray]] = {f: {} for f in fields}
        for name, st in trial.state.items():
            i = index[name]
            steps[i] = int(st.get("step", 0))
            for f in fields:
                if st.get(f) is not None:
                    has[f][i] = True
                    arrays[f][i] = st[f]
        for lay in self._layouts:
            lay.state = {}
            for f in fields:
                if not any(has[f][pc.index] for pc in lay.pieces):
                    continue
                sl = np.zeros(lay.hi - lay.lo, dtype=self._field_dtype(trial, lay, f))
                for pc, a, b in lay.segments:
                    if pc.index in arrays[f]:
                        s = pc.offset + a - lay.lo
                        sl[s : s + b - a] = np.ravel(arrays[f][pc.index])[a:b]
                lay.state[f] = sl
        trial.state = {}
        d = self.__dict__
        d["_opt"] = trial
        d["_steps"] = steps
        d["_has"] = has

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank {self.rank} of {self.world_size}, {self._opt!r})"


class ShardedSGD(ShardedOptimizer):
    """:class:`minimalsgd.SGD` with its momentum buffers sharded across the ranks of ``comm``
    (ZeRO stage 1): ``ShardedOptimizer(minimalsgd.SGD, ...)``.

    Every argument but ``comm`` and ``pack`` is forwarded to :class:`minimalsgd.SGD` as given
    (positional ones in SGD's order), so it takes all of SGD's arguments -- ``stochastic_rounding``,
    ``seed``, ``state_dtype`` and any added later -- with SGD's meaning and checks.

    The methods and attributes are :class:`ShardedOptimizer`'s; settings and counters (``lr``,
    ``param_groups``, ``applied_steps``, ``get_lr()``, ``skipped_steps``, ``last_grad_norm``)
    are those of a plain :class:`minimalsgd.SGD` kept without state.

    Parameters
    ----------
    params : dict or list of dict
        As for :class:`minimalsgd.SGD` (param groups, schedules); the same names, shapes and
        dtypes on every rank.
    comm : mpi4py.MPI.Intracomm, optional
        The communicator (default ``MPI.COMM_WORLD``).
    lr, momentum, nesterov, weight_decay, clip_grad_norm, dampening, maximize, skip_nonfinite, backend, stochastic_rounding, seed, state_dtype
        As for :class:`minimalsgd.SGD`, forwarded as given. The same on every rank (checked):
        without ``seed=`` every rank has :data:`minimalsgd.DEFAULT_SEED`;
        :func:`shared_seed` draws a random one for all ranks.
    pack : bool, default False
        Call :func:`minimalsgd.pack_params` on ``params`` first: the collectives then run in
        place on the arena (``opt.arena``). Keyword only.

    Raises
    ------
    TypeError, ValueError
        As :class:`minimalsgd.SGD`'s constructor; ``comm`` is not an MPI intra-communicator.

    Examples
    --------
    Under ``mpiexec -n 2 python train.py``:

    >>> from minimalsgd.distributed import ShardedSGD, broadcast_params
    >>> broadcast_params(params)                             # doctest: +SKIP
    >>> opt = ShardedSGD(params, lr=0.1, momentum=0.9, nesterov=True, clip_grad_norm=1.0)  # doctest: +SKIP
    >>> opt.step()                                           # doctest: +SKIP
    True
    >>> opt.state_bytes                                      # about half of SGD's  # doctest: +SKIP
    """

    def __init__(self, params: Any, comm: Any = None, *args: Any, pack: bool = False, **kwargs: Any) -> None:
        super().__init__(SGD, params, comm, *args, pack=pack, **kwargs)


def _forwarding_signature(optimizer_class: type) -> inspect.Signature:
    """``optimizer_class.__init__``'s signature with ``comm`` after ``params`` and a keyword-only
    ``pack``: what a sharded class that forwards its arguments accepts (for ``help()`` and
    ``inspect``; derived from the optimizer's, never copied)."""
    sig = inspect.signature(optimizer_class.__init__)
    ps = list(sig.parameters.values())
    comm = inspect.Parameter("comm", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
    pack = inspect.Parameter("pack", inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool")
    tail = ps[2:]
    var_kw = [p for p in tail if p.kind is inspect.Parameter.VAR_KEYWORD]
    rest = [p for p in tail if p.kind is not inspect.Parameter.VAR_KEYWORD]
    return sig.replace(parameters=[*ps[:2], comm, *rest, pack, *var_kw])


ShardedSGD.__init__.__signature__ = _forwarding_signature(SGD)  # type: ignore[attr-defined]
