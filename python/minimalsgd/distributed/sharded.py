r"""The sharded optimizer (ZeRO stage 1), on the public step protocol.

In the shape of torch's ``ZeroRedundancyOptimizer``: :class:`ShardedOptimizer` keeps two
optimizers of the wrapped class, both built by that class from the arguments the user gave
(forwarded, never re-listed):

* the **user-facing** optimizer over the user's params and groups, which holds the settings,
  hyperparameters, schedules and counters (``opt.lr``, ``opt.param_groups``,
  ``opt.applied_steps``, ``opt.get_lr()``, ``opt.skipped_steps`` ... are its) and never steps;
* the **inner** optimizer over this rank's slice: its own param groups, one per user group, of
  1-D pieces of the params that fall into the slice, each named by its param and saying where it
  starts in it (the ``"offset"`` of a param entry), so 16-bit stochastic rounding keys every
  element by its param and its index within the param, never by the slicing. It holds this rank's
  state, and its cached plan serves the slice at full speed from the second step on.

A step agrees with the other ranks (:mod:`.agreement`), reduce-scatters the grads
(:mod:`.collectives`; the pieces' grads are views of this rank's slice of the mean), measures the
global norm from each rank's local sum of squares and one collective and lets the user-facing
optimizer's :class:`~minimalsgd.optim.GradientPolicy` decide (skip, clip scale), copies the
hyperparameters of the step (schedules evaluated) and the settings into the inner optimizer (only
what changed, as torch's ``_sync_param_groups``), calls the inner optimizer's public
``step(grad_scale=...)``, allgathers the values, and counts the step on the user-facing optimizer
(``record_step``). Checkpoints go through :mod:`minimalsgd.optim.checkpoint`'s public functions:
``state_dict`` gathers the slices into the format of the plain optimizer, ``load_state_dict``
reads a full state dict (``checkpoint.read``) and gives each optimizer its part
(``load_checkpoint``).
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _half, _router
from .._arena import pack_params
from .._router import check_backend
from .._validation import check_bool, check_tensor
from ..optim import SGD, Optimizer, checkpoint
from . import agreement, collectives
from .collectives import check_comm
from .layout import Layout, Piece, check_mpi_dtype, dtype_key, dtype_name, known_dtype_name

__all__ = ["ShardedOptimizer", "ShardedSGD"]

#: The settings the inner optimizer does not take from the user-facing one: the sharded step
#: measures the norm over every rank and hands the inner step its scale.
_OWN_SETTINGS = {"clip_grad_norm": None, "skip_nonfinite": False}


class ShardedOptimizer:
    r"""Any minimalsgd optimizer with its state sharded across the ranks of ``comm`` (ZeRO stage 1).

    ``params`` and the arguments are ``optimizer_class``'s (:class:`minimalsgd.SGD` for
    :class:`ShardedSGD`), forwarded to it as given, so every argument it takes is taken and means
    the same; the params must have the same names, shapes, dtypes and memory order on every rank
    and the same values at the start (see :func:`broadcast_params`), and the settings must be the
    same on every rank (the stochastic-rounding ``seed`` too: without ``seed=`` every rank has
    :data:`minimalsgd.DEFAULT_SEED`; :func:`shared_seed` draws a random one for all ranks). The
    elements of each dtype, params end to end in order, each param's elements in the order its
    step walks them (its memory order: C, or F for an F-contiguous array), are cut into ``N``
    contiguous slices (:func:`partition`); rank ``r`` keeps every state array
    (``optimizer_class.state_fields``) only for slice ``r``. ``step()``:

    1. checks the params on every rank and agrees (one 3-integer allreduce) that all ranks hold the
       same names, shapes, dtypes, memory orders, grads present, options and global settings
       (clip, skip, backend, stochastic rounding, seed, state dtype), else raises the same error
       everywhere and writes nothing;
    2. ``Reduce_scatter`` of the grads, divided by ``N``: rank ``r`` gets the mean gradient of its slice;
    3. with ``clip_grad_norm`` or ``skip_nonfinite``: each rank's sum of squares of its slice (float64)
       and one ``Allgather`` of those ``N`` numbers, summed in rank order by every rank, so the norm,
       the clip coefficient and the skip decision are identical everywhere (decided by the
       optimizer's :class:`~minimalsgd.optim.GradientPolicy`);
    4. the wrapped optimizer's own step on this rank's slice: an optimizer of ``optimizer_class``
       over 1-D pieces of the params, each named by its param and carrying its offset in the param
       (16-bit stochastic rounding keys every element by its param and its index in it, so the
       bits do not depend on the slicing); its cached plan serves the slice from the second step;
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
    stochastic rounding too, for every memory order), except that with an engaged clip the norm is
    summed in another order (a difference of float64 rounding in the clip coefficient: the values
    agree to a few units in the last place).

    Parameters
    ----------
    optimizer_class : type
        A minimalsgd optimizer class (a subclass of :class:`minimalsgd.optim.Optimizer`):
        :class:`minimalsgd.SGD`, :class:`minimalsgd.Adam`, :class:`minimalsgd.AdamW`, or one of
        your own.
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
        comm = check_comm(comm)
        pack = check_bool("pack", pack)
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError(f"optimizer_class must be a minimalsgd optimizer class (like minimalsgd.SGD), got {optimizer_class!r}")
        # The user-facing optimizer takes its own arguments (forwarded, never re-listed here),
        # validates everything as it always does and keeps the settings.
        opt = optimizer_class(params, *args, **kwargs)
        arena = pack_params(params) if pack else None
        d = self.__dict__
        d["comm"] = comm
        d["_opt"] = opt
        d["arena"] = arena
        d["_class"] = optimizer_class
        d["_args"] = args
        d["_kwargs"] = kwargs
        d["_inner"] = None  # the optimizer over this rank's slice (built with the layout)
        d["_layouts"] = None
        d["_names"] = []
        d["_group_of"] = []  # per param: its group
        d["_steps"] = []  # per param: its applied steps, the same on every rank
        d["_has"] = {}  # state field -> per param: whether it has that state (on some rank)
        d["_verified"] = False  # the first step also checks that the values agree
        d["_last_signature"] = None
        d["_last_digest"] = 0

    # Settings and counters live in the user-facing optimizer.
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
        inner = self._inner
        if inner is None:
            return 0
        return sum(a.nbytes for st in inner.state.values() for a in st.values() if isinstance(a, np.ndarray))

    def shards(self) -> dict[str, tuple[int, int, int]]:
        """The elements of each dtype that this rank owns.

        Returns
        -------
        dict
            ``{dtype name: (lo, hi, total)}``: this rank owns elements ``lo:hi`` of the ``total``
            elements of that dtype (params end to end in order, each in the order its step walks
            it: C order, or F order for an F-contiguous param).
        """
        self._ensure_layout()
        assert self._layouts is not None
        return {str(lay.dtype): (lay.lo, lay.hi, lay.total) for lay in self._layouts}

    # -----------------------------------------------------------------------------------------
    # Layout (local: built from this rank's params, checked against the other ranks at each step)

    def _param_dicts(self) -> list[Any]:
        return [g["params"] for g in self._opt.param_groups]

    def _describe(self) -> tuple[list[tuple[Any, tuple[Any, ...]]], list[Any], list[int]]:
        """``([(name, description)], param entries, group of each)``, validated (TypeError/
        ValueError naming the param; :func:`agreement.describe` says what a description holds).
        The common case (a dict entry with a writeable ndarray value of a supported dtype and a
        grad of the same dtype and shape, or None) is checked inline; anything else takes the full
        checks."""
        desc: list[tuple[Any, tuple[Any, ...]]] = []
        entries: list[Any] = []
        group_of: list[int] = []
        seen: set[Any] = set()
        describe = agreement.describe
        for gi, params in enumerate(self._param_dicts()):
            if not isinstance(params, Mapping):
                raise TypeError(f"params must be a dict, got {type(params).__name__}")
            for name, p in params.items():
                if name in seen:
                    raise ValueError(f"param {name!r} is in two param groups; a name may be in one group only")
                seen.add(name)
                value = p.get("value") if type(p) is dict else None
                if type(value) is np.ndarray:
                    dtype = known_dtype_name(value.dtype)
                    grad = p.get("grad")
                    if dtype is not None and value.flags.writeable and (
                        grad is None
                        or (type(grad) is np.ndarray and grad.dtype == value.dtype and grad.shape == value.shape)
                    ):
                        desc.append((name, describe(value.shape, dtype, grad is not None, _half.walk_order(value))))
                        entries.append(p)
                        group_of.append(gi)
                        continue
                desc.append((name, self._check_param(name, p)))
                entries.append(p)
                group_of.append(gi)
        return desc, entries, group_of

    @staticmethod
    def _check_param(name: Any, p: Any) -> tuple[Any, ...]:
        """The full checks of one param: its description, or TypeError/ValueError."""
        label = f"params[{name!r}]"
        if not isinstance(p, Mapping):
            raise TypeError(f"{label} must be a dict with 'value' and 'grad', got {type(p).__name__}")
        if "value" not in p:
            raise ValueError(f"{label} has no 'value'")
        value, grad = p["value"], p.get("grad")
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{label}: value must be a numpy.ndarray, got {type(value).__name__}")
        check_mpi_dtype(label, value.dtype)
        if grad is not None:
            check_tensor(label, value, grad, None, False)
        elif not value.flags.writeable:
            raise ValueError(f"{label}: value is read-only; the step updates it in place")
        return agreement.describe(value.shape, dtype_name(value.dtype), grad is not None, _half.walk_order(value))

    def _entries(self) -> list[tuple[int, Any, dict[str, Any]]]:
        return [(gi, name, p) for gi, params in enumerate(self._param_dicts()) for name, p in params.items()]

    def _ensure_layout(self) -> None:
        """The layouts of this rank's params (each param in the order its step walks it) and the
        inner optimizer over this rank's pieces, on first use."""
        if self._layouts is not None:
            return
        rank, size = self.rank, self.world_size
        by_dtype: dict[np.dtype, list[Piece]] = {}
        offsets: dict[np.dtype, int] = {}
        names, group_of, values = [], [], []
        for i, (gi, name, p) in enumerate(self._entries()):
            value = p["value"]
            key = dtype_key(value)
            off = offsets.get(key, 0)
            by_dtype.setdefault(key, []).append(
                Piece(i, name, f"params[{name!r}]", value.shape, value.size, off, _half.walk_order(value)))
            offsets[key] = off + value.size
            names.append(name)
            group_of.append(gi)
            values.append(value)
        layouts = [Layout(dt, pieces, rank, size) for dt, pieces in by_dtype.items()]
        d = self.__dict__
        d["_names"] = names
        d["_group_of"] = group_of
        d["_steps"] = [0] * len(names)
        d["_has"] = {f: [False] * len(names) for f in self._opt.formula.state_fields}
        for lay in layouts:  # the pieces' values: views of the flat values (in place, or a packed copy)
            lay.bind_values(lay.values_flat([values[pc.index] for pc in lay.pieces]))
        d["_inner"] = self._new_inner(layouts)
        d["_layouts"] = layouts

    def _new_inner(self, layouts: list[Layout]) -> Optimizer:
        """An optimizer of the wrapped class, built from the user's arguments, over this rank's
        pieces: one group per user group (hyperparameters as the user group's, synced before each
        step), each piece named by its param; it measures no norm (the sharded step does)."""
        opt = self._opt
        pieces: list[dict[Any, Any]] = [{} for _ in opt.param_groups]
        for lay in layouts:
            for pt in lay.parts:
                pieces[self._group_of[pt.piece.index]][pt.piece.name] = pt.entry
        groups = []
        for g, params in zip(opt.param_groups, pieces):
            hyper = {k: g[k] for k in opt.hyperparameters}
            if callable(hyper["lr"]):
                hyper["lr"] = 0.0  # a schedule: its value is synced before each step
            groups.append({"params": params, **hyper})
        inner = self._class(groups, *self._args, **self._kwargs)
        for key, value in _OWN_SETTINGS.items():
            setattr(inner, key, value)
        return inner

    def _sync(self, options: list[Any]) -> None:
        """The user-facing optimizer's hyperparameters of this step (schedules evaluated: each
        group's lr is ``options[i].lr``) and settings into the inner optimizer, only where they
        differ (a new lr is a cheap input of its cached plan; anything else rebuilds the plan)."""
        opt, inner = self._opt, self._inner
        assert inner is not None
        hyperparameters = opt.hyperparameters
        for g, ig, o in zip(opt.param_groups, inner.param_groups, options):
            for key in hyperparameters:
                want = o.lr if key == "lr" else g[key]
                have = dict.get(ig, key)
                if have is not want and have != want:
                    ig[key] = want
        for key in (*opt.global_settings, "stochastic_rounding", "seed", "state_dtype"):
            if key in _OWN_SETTINGS:
                continue
            want, have = getattr(opt, key), getattr(inner, key)
            if have is not want and have != want:
                setattr(inner, key, want)

    def _check_unchanged(self, desc: list[tuple[Any, tuple[Any, ...]]], group_of: list[int]) -> None:
        if self._layouts is None:
            return
        if [d[0] for d in desc] != self._names or group_of != self._group_of:
            raise ValueError(
                "the param names changed since the optimizer was set up; build a new sharded optimizer "
                "(state_dict/load_state_dict carry the state over)"
            )
        for lay in self._layouts:
            lay_name = dtype_name(lay.dtype)
            for piece in lay.pieces:
                now = desc[piece.index][1]
                was = agreement.describe(piece.shape, lay_name, now[2], piece.order)
                if now != was:
                    raise ValueError(
                        f"{piece.label} changed from {agreement.fmt(was)} to {agreement.fmt(now)} "
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
            dtypes, memory orders, grads present, hyperparameters), or the ranks started from
            different values (first step; see :func:`broadcast_params`). The same error on every
            rank, before anything is written.
        """
        comm = self.comm
        d = self.__dict__
        opt = self._opt
        error: BaseException | None = None
        desc: list[tuple[Any, tuple[Any, ...]]] = []
        entries: list[Any] = []
        options: list[Any] = []
        agreed: dict[str, Any] = {}
        try:
            options = opt.get_options()
            agreed = agreement.settings_signature(opt, options)
            desc, entries, group_of = self._describe()
            self._check_unchanged(desc, group_of)
        except (TypeError, ValueError) as err:
            error = err
        signature: dict[str, Any] = {"params": desc, **agreed}
        extra = 0
        if not self._verified and error is None:
            extra = self._values_digest()
        if error is None and self._last_signature == signature:
            known = self._last_digest
        else:
            known = agreement.digest(signature)
            d["_last_signature"], d["_last_digest"] = signature, known
        agreement.agree(comm, signature, error, extra, known)
        d["_verified"] = True
        policy = opt.gradient_policy
        backend = check_backend(opt.backend)
        self._ensure_layout()
        layouts = self._layouts
        inner = self._inner
        assert layouts is not None and inner is not None
        has_grad = [x[1][2] for x in desc]

        # 1. Reduce-scatter the grads: this rank's slice of the mean gradient, per dtype; the
        # inner optimizer's pieces are views of it (and of the values).
        values_flat: list[np.ndarray] = []
        for lay in layouts:
            vflat = lay.values_flat([entries[pc.index]["value"] for pc in lay.pieces])
            gflat = lay.grads_flat([entries[pc.index]["grad"] for pc in lay.pieces])
            lay.bind(vflat, collectives.reduce_scatter(comm, lay, gflat, True), has_grad)
            values_flat.append(vflat)

        # 2. The global norm of the mean gradient: local sums of squares, one collective; the
        # optimizer's gradient policy decides.
        scale = 1.0
        if policy.measures:
            views = [v for lay in layouts for v in lay.norm_views(has_grad)]
            local = bad = 0.0
            if views:
                local = _router.sum_of_squares([f"slice[{i}]" for i in range(len(views))], views, backend)
                if not math.isfinite(local) and not all(bool(np.isfinite(v).all()) for v in views):
                    bad = 1.0
            parts = np.empty((self.world_size, 2), dtype=np.float64)
            comm.Allgather(np.array([local, bad], dtype=np.float64), parts)
            norm = math.sqrt(math.fsum(parts[:, 0].tolist()))
            decision = policy.decide(norm, lambda: not bool(parts[:, 1].any()))
            if decision.skipped:
                opt.skipped_steps += 1
                return False
            opt.last_grad_norm = decision.norm
            scale = decision.scale

        # 3. The wrapped optimizer's step on this rank's slice; 4. allgather the values.
        self._sync(options)
        inner.step(grad_scale=scale)
        for lay, vflat in zip(layouts, values_flat):
            collectives.allgather_in_place(comm, lay, vflat)
            if vflat is lay.packed_values:
                for pc, src in zip(lay.pieces, lay.views(vflat)):
                    if has_grad[pc.index]:
                        np.copyto(entries[pc.index]["value"], src)

        # The counts: each param's steps and state (the same on every rank), the optimizer's steps.
        steps, has, group_of = self._steps, self._has, self._group_of
        needed = [opt.formula.fields_needed(o) for o in options]
        for i, g in enumerate(has_grad):
            if g:
                steps[i] += 1
                for f in needed[group_of[i]]:
                    has[f][i] = True
        opt.record_step([o.lr for o in options])
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
    # Checkpoints: the full state, in the plain optimizer's format (minimalsgd.optim.checkpoint).

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
        try:
            agreed = agreement.saved_signature(opt)
        except (TypeError, ValueError) as err:
            error = err
        agreement.agree(comm, {"state_dict": root, **agreed}, error)
        self._ensure_layout()
        layouts, inner = self._layouts, self._inner
        assert layouts is not None and inner is not None
        fields = opt.formula.state_fields
        storage = opt.storage
        mine_state = inner.state
        here = root is None or self.rank == root
        gathered: list[dict[str, np.ndarray | None]] = []
        for lay in layouts:
            per_field: dict[str, np.ndarray | None] = {}
            for f in fields:
                if not any(self._has[f][pc.index] for pc in lay.pieces):
                    continue
                dtype = storage.dtype_for(np.empty(0, lay.dtype))
                mine = np.zeros(lay.hi - lay.lo, dtype=dtype)
                for pt in lay.parts:
                    arr = mine_state.get(pt.piece.name, {}).get(f)
                    if arr is not None:
                        mine[pt.start : pt.stop] = arr
                full = np.empty(lay.total, dtype=dtype) if here else None
                collectives.gather(comm, lay, mine, full, root)
                per_field[f] = full
            gathered.append(per_field)
        if not here:
            return None
        state: dict[Any, dict[str, Any]] = {}
        for lay, per_field in zip(layouts, gathered):
            for pc in lay.pieces:
                i = pc.index
                if self._steps[i] == 0 and not any(self._has[f][i] for f in fields):
                    continue
                st: dict[str, Any] = {"step": self._steps[i]}
                for f, full in per_field.items():
                    if self._has[f][i] and full is not None:
                        st[f] = pc.shaped(full)
                state[pc.name] = st
        return checkpoint.state_dict(opt, state=state)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Take a full state dict (from :meth:`state_dict` or the plain optimizer's, saved on any
        number of ranks) and keep this rank's slice of it (a collective call).

        It is read (validated) as the plain optimizer over the same params reads it.

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
        loaded = None
        opt = self._opt
        try:
            self._describe()
            loaded = checkpoint.read(opt, state_dict)
        except (TypeError, ValueError) as err:
            error = err
        agreement.agree(self.comm, "load_state_dict", error)
        assert loaded is not None
        self._ensure_layout()
        layouts, inner = self._layouts, self._inner
        assert layouts is not None and inner is not None
        fields = opt.formula.state_fields
        index = {name: i for i, name in enumerate(self._names)}
        steps = [0] * len(self._names)
        has = {f: [False] * len(self._names) for f in fields}
        for name, st in loaded.state.items():
            i = index[name]
            steps[i] = int(st.get("step", 0))
            for f in fields:
                if st.get(f) is not None:
                    has[f][i] = True
        # This rank's pieces of the state, 1-D in each param's walk order.
        pieces: dict[Any, dict[str, Any]] = {}
        for lay in layouts:
            for pt in lay.parts:
                st = loaded.state.get(pt.piece.name)
                if st is None:
                    continue
                piece: dict[str, Any] = {k: v for k, v in st.items() if k == "step"}
                for f in fields:
                    if st.get(f) is not None:
                        piece[f] = pt.piece.flat(st[f])[pt.a : pt.b]
                pieces[pt.piece.name] = piece
        hyper = [{k: (ig[k] if callable(v) else v) for k, v in h.items()}
                 for h, ig in zip(loaded.hyperparameters, inner.param_groups)]
        inner.load_checkpoint(checkpoint.Checkpoint({**loaded.settings, **_OWN_SETTINGS}, hyper, pieces,
                                                    loaded.applied_steps, 0, None))
        opt.load_checkpoint(loaded._replace(state={}))
        d = self.__dict__
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


def forwarding_signature(optimizer_class: type) -> inspect.Signature:
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


ShardedSGD.__init__.__signature__ = forwarding_signature(SGD)  # type: ignore[attr-defined]
