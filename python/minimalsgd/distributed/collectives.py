r"""The collectives: the one reduction path, :func:`allreduce_grads`, :func:`broadcast_params`,
:func:`shared_seed`, and the MPI plumbing of the sharded step (the only module that imports
``mpi4py``, on first use).

One reduction path serves both ways of data parallelism: a ``Reduce_scatter`` over a
:class:`~minimalsgd.distributed.layout.Layout` (whose slice boundaries are the sharded
optimizer's), a division by ``N`` (when averaging), and, for :func:`allreduce_grads`, an
``Allgatherv``. The same MPI call on the same layout sums each element in the same order, so
:func:`allreduce_grads` + a plain optimizer and :class:`ShardedOptimizer` give bit-identical values
on any number of ranks (an ``Allreduce`` would sum in another order than a ``Reduce_scatter`` once
``N >= 3``, and floating-point addition is not associative). float16/bfloat16 grads are summed
and divided in float32 and rounded once to their dtype (MPI has no portable 16-bit sum); 16-bit
values and buffers move as raw 16-bit words.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import _half
from .._validation import check_bool
from . import agreement
from .layout import Layout, Piece, check_mpi_dtype, dtype_key, dtype_name, flat_view, is_half

__all__ = [
    "allgather_in_place",
    "allreduce_grads",
    "broadcast_params",
    "check_comm",
    "groups_of",
    "moved",
    "mpi",
    "reduce_scatter",
    "shared_seed",
    "vector_of",
]


def mpi() -> Any:
    """``mpi4py.MPI`` (imported here, on first use), or ImportError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as err:  # pragma: no cover - exercised where mpi4py is absent
        raise ImportError(
            "minimalsgd.distributed needs mpi4py and an MPI library: pip install 'minimalsgd[mpi]' "
            "(installs mpi4py and the mpich wheel)"
        ) from err
    return MPI


def check_comm(comm: Any) -> Any:
    """``comm`` (default ``MPI.COMM_WORLD``) if it is an intra-communicator, else TypeError/ValueError."""
    MPI = mpi()
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an mpi4py communicator (e.g. MPI.COMM_WORLD), got {type(comm).__name__}")
    if comm == MPI.COMM_NULL:
        raise ValueError("comm is MPI.COMM_NULL; pass a valid communicator such as MPI.COMM_WORLD")
    if not isinstance(comm, MPI.Intracomm):
        raise ValueError(f"comm must be an intra-communicator (like MPI.COMM_WORLD), got {type(comm).__name__}")
    return comm


def mpi_type(dtype: np.dtype) -> Any:
    """The predefined MPI datatype of a dtype MPI sums (its reductions are defined only on those)."""
    MPI = mpi()
    return {"f": MPI.FLOAT, "d": MPI.DOUBLE, "F": MPI.C_FLOAT_COMPLEX, "D": MPI.C_DOUBLE_COMPLEX}[dtype.char]


def moved(arr: np.ndarray) -> list[Any]:
    """``[buffer, MPI type]`` of a 1-D array of any supported dtype as MPI moves it (16-bit floats
    as uint16 words; a state field may have another dtype than the values: float32 buffers of
    16-bit params)."""
    if is_half(arr.dtype):
        return [arr.view(np.uint16), mpi().UINT16_T]
    return [arr, mpi_type(arr.dtype)]


def vector_of(layout: Layout, flat: np.ndarray | None) -> list[Any] | None:
    """``flat`` (full size, any supported dtype) cut into the layout's slices, as MPI moves it."""
    if flat is None:
        return None
    buf, kind = moved(flat)
    return [buf, layout.counts, layout.displs, kind]


def reduce_scatter(comm: Any, layout: Layout, grads_flat: np.ndarray, average: bool) -> np.ndarray:
    """This rank's slice of the sum (or mean) over ranks of ``grads_flat`` (of ``layout.red_dtype``),
    in the layout's dtype. On one rank, the slice is all of ``grads_flat`` and is returned as it is
    (read it, never write it). 16-bit floats: summed and divided in float32, rounded once."""
    size = comm.Get_size()
    if size == 1:
        if not layout.half:
            return grads_flat
        np.copyto(layout.scratch_half, grads_flat, casting="unsafe")  # round to nearest even, once
        return layout.scratch_half
    out = layout.scratch
    MPI = mpi()
    red = mpi_type(layout.red_dtype)
    comm.Reduce_scatter([grads_flat, red], [out, red], layout.counts, op=MPI.SUM)
    if average:
        np.divide(out, layout.red_dtype.type(size), out=out)
    if layout.half:
        half = layout.scratch_half
        np.copyto(half, out, casting="unsafe")  # round to nearest even, once
        return half
    return out


def allgather_in_place(comm: Any, layout: Layout, flat: np.ndarray) -> None:
    """Every rank's slice of ``flat`` to every rank (each rank's own slice is already in place)."""
    comm.Allgatherv(mpi().IN_PLACE, vector_of(layout, flat))


def gather(comm: Any, layout: Layout, mine: np.ndarray, full: np.ndarray | None, root: int | None) -> None:
    """Every rank's slice ``mine`` into ``full`` (full size) on every rank (``root`` None:
    ``Allgatherv``) or on rank ``root`` only (``Gatherv``; ``full`` None on the others)."""
    if root is None:
        comm.Allgatherv(moved(mine), vector_of(layout, full))
    else:
        comm.Gatherv(moved(mine), vector_of(layout, full), root=root)


def groups_of(params: Any, name: str = "params") -> list[tuple[str, Mapping[str, Any]]]:
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


def allreduce_grads(params: Any, comm: Any = None, average: bool = True, *, optimizer: Any = None) -> None:
    r"""Sum (``average=False``) or average every gradient across the ranks of ``comm``, in place.

    ``params`` is a param dict ``{name: {"value": ndarray, "grad": ndarray}}`` or a list of groups
    ``[{"params": {...}, ...}]``; params whose grad is None are skipped (on every rank alike).
    Afterwards every rank holds :math:`\bar g = \frac1N \sum_r g_r` (or the sum) in each grad.

    ``optimizer``: the plain optimizer (``minimalsgd.SGD``, ...) that steps these params next on
    every rank. Its settings for that step -- each group's options (schedules evaluated) and every
    global setting, the stochastic-rounding ``seed`` included -- then join the check that every
    rank already makes, at no extra cost: ranks whose optimizers would step their replicas
    differently raise the same ValueError on every rank before anything is written.

    The grads of each dtype are reduced as one bucket: one ``Reduce_scatter`` (with the slice
    boundaries of :class:`ShardedSGD`, each param's elements in the order its step walks them,
    which makes the two bit-identical) and one ``Allgatherv``. When the grads of a dtype are
    already consecutive views of one buffer (see :func:`minimalsgd.pack_params`), that buffer is
    reduced in place; otherwise the grads are packed into a buffer of their size and copied back.
    float16 and bfloat16 grads are summed in float32 and rounded once to their dtype (MPI has no
    portable 16-bit sum).

    A collective call: every rank calls it, with the same params (names, shapes, dtypes, memory
    order of the values, grads present).

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
        (float32, float64, complex64, complex128, float16, bfloat16); ``optimizer`` is not a
        minimalsgd optimizer.
    ValueError
        A grad is read-only, or the ranks disagree on the names, shapes, dtypes, memory order or
        the presence of grads (or on ``optimizer``'s settings).

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
    comm = check_comm(comm)
    size, rank = comm.Get_size(), comm.Get_rank()
    error: BaseException | None = None
    items: list[tuple[str, tuple[Any, ...]]] = []
    by_dtype: dict[np.dtype, list[tuple[str, np.ndarray, str]]] = {}
    settings: dict[str, Any] = {}
    try:
        average = check_bool("average", average)
        if optimizer is not None:
            settings = agreement.step_signature(optimizer)
        for prefix, group in groups_of(params):
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
                check_mpi_dtype(label, grad.dtype)
                if not grad.flags.writeable:
                    raise ValueError(f"{label}: grad is read-only; allreduce_grads writes the mean in place")
                # The elements in the order the optimizer steps the value (its memory order), as
                # the sharded layout has them: the same slices, the same sums.
                value = p.get("value")
                order = _half.walk_order(value if isinstance(value, np.ndarray) and value.shape == grad.shape else grad)
                items.append((label, agreement.describe(grad.shape, dtype_name(grad.dtype), True, order)))
                by_dtype.setdefault(dtype_key(grad), []).append((label, grad, order))
    except (TypeError, ValueError) as err:
        error = err
    agreement.agree(comm, {"params": items, "average": average, **settings}, error)
    if size == 1:
        return
    for dtype, entries in by_dtype.items():
        grads = [g for _, g, _ in entries]
        pieces, offset = [], 0
        for i, (label, g, order) in enumerate(entries):
            pieces.append(Piece(i, label, label, g.shape, g.size, offset, order))
            offset += g.size
        layout = Layout(dtype, pieces, rank, size)
        flat = flat_view(grads, dtype)
        packed = flat is None
        if packed:
            flat = np.empty(layout.total, dtype=dtype)
        send = layout.new_packed_grads() if layout.half else flat
        if packed or layout.half:
            for piece, g in zip(pieces, grads):
                np.copyto(piece.shaped(send), g, casting="unsafe")
        mine = reduce_scatter(comm, layout, send, average)
        flat[layout.lo : layout.hi] = mine
        allgather_in_place(comm, layout, flat)
        if packed:
            for piece, g in zip(pieces, grads):
                np.copyto(g, piece.shaped(flat))


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
    comm = check_comm(comm)
    size = comm.Get_size()
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < size:
        raise ValueError(f"root must be a rank in [0, {size}), got {root!r}")
    error: BaseException | None = None
    items = []
    values = []
    try:
        for prefix, group in groups_of(params):
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
    agreement.agree(comm, {"params": items, "root": root}, error)
    MPI = mpi()
    for value in values:
        buf = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        comm.Bcast([buf.reshape(-1).view(np.uint8), MPI.BYTE], root=root)
        if buf is not value:
            np.copyto(value, buf)


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
    comm = check_comm(comm)
    mine = secrets.randbits(64) if comm.Get_rank() == 0 else None
    return int(comm.bcast(mine, root=0))
