"""The machinery every param-dict optimizer shares: groups, schedules, clipping, the plan, checkpoints.

An optimizer (``SGD``, ``Adam``, ...) is a subclass of :class:`Optimizer` that says only

* ``hyperparameters``: the names of its per-group hyperparameters, ``"lr"`` first, in the order
  its formula takes them, and :meth:`Optimizer._check_options`, its rules for them;
* ``state_fields``: the arrays it keeps per param (besides the ``"step"`` count),
  :meth:`Optimizer._fields_needed` (which of them a group's options use) and
  :meth:`Optimizer._new_state_array` (how one is born);
* :meth:`Optimizer._run`: its formula over a batch of validated tensors with per-tensor options,
  through the functional layer (native and NumPy backends), and ``_plan_class``, the name of its
  cached native plan in ``_core`` (the C++ plan is one template over a formula's traits, see
  ``csrc/python/plan.hpp``; without one every step takes the checked path).

Everything else lives here, once: param collection and validation (names unique across
groups), ``param_groups`` and ``add_param_group``, schedules (an ``lr`` may be a callable of
the applied step count), global-norm clipping and non-finite skipping over every grad of every
group, the cached native plan, backend routing, ``state``, ``zero_grad``, checkpoints, and
16-bit storage: float16/bfloat16 params compute in float32 and round each stored result once, to
nearest or (``stochastic_rounding=True``) stochastically with random bits keyed by (``seed``,
``applied_steps``, a 64-bit key of the param's name, element index within the param; ``seed``
defaults to :data:`minimalsgd.DEFAULT_SEED`); ``state_dtype="float32"`` keeps their state arrays
in float32.
"""

from __future__ import annotations

import math
import numbers
import weakref
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, ClassVar, Union

import numpy as np

from . import _functional as F
from . import _half
from ._arena import new_buffers
from ._pyplan import Offset, PythonPlan

__all__ = ["Optimizer", "ParamGroup", "Schedule", "STATE_DICT_FORMAT"]

Params = MutableMapping[str, MutableMapping[str, Any]]
#: A learning-rate schedule: the lr of a step, given the 0-based count of applied steps.
Schedule = Callable[[int], float]
ParamsOrGroups = Union[Params, Sequence[Mapping[str, Any]]]

#: Version of the state_dict() layout. 1: one group, hyperparameters at the top level (still read).
#: 2: "groups/<i>/..." per group, "applied_steps", "optimizer".
STATE_DICT_FORMAT = 2
#: Settings of the whole optimizer (not per group); a subclass may add its own (``global_settings``).
_GLOBALS = ("clip_grad_norm", "skip_nonfinite", "backend")
#: Global settings of 16-bit storage, with the values a state dict without them means.
_STORAGE_DEFAULTS = {"stochastic_rounding": False, "seed": 0, "state_dtype": ""}
_STATE_PREFIX = "state/"
_GROUP_PREFIX = "groups/"


class ParamGroup(dict):
    """One entry of ``Optimizer.param_groups``: a plain dict (``{"params": {...}, "lr": ..., ...}``)
    that tells its optimizer when a key is set, so that the cached plan never runs stale settings
    and costs nothing to keep current. It pickles and copies as a plain dict."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Optimizer, items: Mapping[str, Any]) -> None:
        dict.__init__(self, items)
        self._owner = weakref.ref(owner)

    def _changed(self, key: Any) -> None:
        owner = self._owner()
        if owner is not None:
            owner._group_changed(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, key, value)
        self._changed(key)

    def __delitem__(self, key: Any) -> None:
        dict.__delitem__(self, key)
        self._changed(key)

    def __ior__(self, other: Any) -> ParamGroup:  # type: ignore[override,misc]
        dict.update(self, other)
        self._changed(None)
        return self

    def update(self, *args: Any, **kwargs: Any) -> None:
        dict.update(self, *args, **kwargs)
        self._changed(None)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        had = key in self
        out = dict.setdefault(self, key, default)
        if not had:
            self._changed(key)
        return out

    def pop(self, key: Any, *default: Any) -> Any:
        out = dict.pop(self, key, *default)
        self._changed(key)
        return out

    def popitem(self) -> tuple[Any, Any]:
        out = dict.popitem(self)
        self._changed(out[0])
        return out

    def clear(self) -> None:
        dict.clear(self)
        self._changed(None)

    def copy(self) -> dict[str, Any]:  # type: ignore[override]
        return dict(self)

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))


class ParamGroups(list):
    """``Optimizer.param_groups``: a plain list that tells its optimizer when it changes (a group
    replaced, added or removed other than through ``add_param_group``). It pickles and copies as
    a plain list."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Optimizer) -> None:
        list.__init__(self)
        self._owner = weakref.ref(owner)

    def _changed(self) -> None:
        owner = self._owner()
        if owner is not None:
            owner._drop_plan()

    def __reduce__(self) -> Any:
        return (list, (list(self),))


def _mutator(name: str) -> Callable[..., Any]:
    base = getattr(list, name)

    def method(self: ParamGroups, *args: Any, **kwargs: Any) -> Any:
        out = base(self, *args, **kwargs)
        self._changed()
        return self if name in ("__iadd__", "__imul__") else out

    method.__name__ = name
    return method


for _name in ("__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend", "insert", "pop", "remove",
              "clear", "sort", "reverse"):
    setattr(ParamGroups, _name, _mutator(_name))


def _group_property(name: str) -> property:
    def get(self: Optimizer) -> Any:
        groups = self.param_groups
        if not groups:
            return self.defaults[name]
        first = groups[0].get(name)
        for i, g in enumerate(groups[1:], 1):
            other = g.get(name)
            if other is not first and not _same_setting(other, first):
                raise AttributeError(
                    f"the param groups differ in {name!r}: read opt.param_groups[i][{name!r}] "
                    f"(param_groups[0] has {first!r}, param_groups[{i}] has {other!r})"
                )
        return first

    def set(self: Optimizer, value: Any) -> None:
        self.defaults[name] = value
        for g in self.param_groups:
            g[name] = value

    doc = (f"The {name!r} of every param group (and of groups added later). Reading it raises "
           f"AttributeError when the groups differ; setting it sets it in every group.")
    return property(get, set, doc=doc)


def _same_setting(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # pragma: no cover - an exotic object with an array-valued ==
        return False


class Optimizer:
    """The shared machinery of minimalsgd's param-dict optimizers (see the module docstring).

    ``params`` is one ``{name: {"value": ndarray, "grad": ndarray}}`` dict (one group) or a list
    of groups in torch's shape, ``[{"params": {name: {...}}, "lr": ..., ...}, ...]``, where a key
    given in a group overrides the constructor's value for that group. Names are unique across
    groups. ``clip_grad_norm``, ``skip_nonfinite`` and ``backend`` are global.

    Attributes:
        param_groups: list of dicts, each with its ``"params"`` dict and every per-group
            hyperparameter; change them between steps as with torch (``g["lr"] = 0.01``).
        defaults: the constructor's hyperparameters, which groups added later inherit.
        state: ``name -> {<state field>: ndarray, ..., "step": int}``.
        applied_steps: the count of applied steps (skipped ones are not counted); a schedule is
            called with it, so the first step calls ``schedule(0)``.
        skipped_steps: steps that found a non-finite gradient and wrote nothing.
        last_grad_norm: the global gradient norm of the latest step that measured it, else None.
        last_lrs: the lr of each group in the latest applied step, else None.
    """

    #: Per-group hyperparameters, "lr" first, in the order of the formula's options.
    hyperparameters: ClassVar[tuple[str, ...]] = ("lr",)
    #: Arrays kept per param, besides the "step" count.
    state_fields: ClassVar[tuple[str, ...]] = ()
    #: Settings of the whole optimizer: attributes, saved in state dicts (None as NaN), checked by
    #: ``_check_globals`` (a subclass that adds one extends both).
    global_settings: ClassVar[tuple[str, ...]] = _GLOBALS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.hyperparameters:
            if name not in cls.__dict__:
                setattr(cls, name, _group_property(name))

    def __init__(
        self,
        params: ParamsOrGroups,
        defaults: Mapping[str, Any],
        *,
        clip_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        backend: F.Backend = "auto",
        stochastic_rounding: bool = False,
        seed: int | None = None,
        state_dtype: Any = None,
    ) -> None:
        unknown = set(defaults) - set(self.hyperparameters)
        if unknown or "lr" not in defaults:
            raise TypeError(f"{type(self).__name__}: defaults must name exactly {self.hyperparameters}")
        object.__setattr__(self, "defaults", dict(defaults))
        object.__setattr__(self, "param_groups", ParamGroups(self))
        self.clip_grad_norm = clip_grad_norm
        self.skip_nonfinite = skip_nonfinite
        self.backend = backend
        self.stochastic_rounding = stochastic_rounding
        self.seed = _half.DEFAULT_SEED if seed is None else seed
        self.state_dtype = state_dtype
        self._check_globals()
        self._checked_group(self.defaults, "")  # the constructor's hyperparameters, by the optimizer's rules
        if isinstance(params, Mapping):  # one group (even with a param named "params")
            if not isinstance(params, MutableMapping):
                raise TypeError(f"params must be a dict of name -> {{'value': ndarray, 'grad': ndarray}}, got {type(params).__name__}")
            groups: list[Any] = [{"params": params}]
        elif isinstance(params, (list, tuple)) and (not params or any(isinstance(g, Mapping) for g in params)):
            groups = list(params)
        else:
            raise TypeError(
                "params must be a dict of name -> {'value': ndarray, 'grad': ndarray} or a list of param groups "
                f"({{'params': {{...}}, 'lr': ...}}), got {type(params).__name__}"
            )
        self._add_groups(groups)
        self.state = {}
        object.__setattr__(self, "_applied", 0)
        #: Steps that found a non-finite gradient and wrote nothing (skip_nonfinite=True).
        self.skipped_steps = 0
        #: The global gradient norm of the latest step that measured it, else None.
        self.last_grad_norm: float | None = None
        self.last_lrs = None

    # -----------------------------------------------------------------------------------------
    # What a subclass provides

    def _check_options(self, hyper: Mapping[str, Any]) -> tuple[Any, ...]:
        """One group's hyperparameters checked by the optimizer's rules (``hyper["lr"]`` is
        already a number), as the tuple its formula takes (``hyperparameters`` order). Raises
        TypeError/ValueError naming the hyperparameter; the caller adds the group."""
        raise NotImplementedError

    def _fields_needed(self, options: tuple[Any, ...]) -> tuple[str, ...]:
        """The state fields that a tensor stepped with ``options`` uses."""
        return self.state_fields

    def _new_state_array(self, field: str, value: np.ndarray) -> np.ndarray:
        """A new state array for ``value`` (contents are the formula's business: a tensor whose
        state was just born is flagged ``born`` in :meth:`_run`). Default: uninitialized, in the
        value's memory order (so the native kernel can walk both) and native byte order; float32
        for a float16/bfloat16 value with ``state_dtype="float32"``."""
        if _state_dtype(self.state_dtype) is not None and _half.is_half(value.dtype):
            return np.empty_like(value, dtype=np.float32)
        return np.empty_like(value, dtype=value.dtype.newbyteorder("="))

    def _rounding(self) -> tuple[bool, int, int]:
        """(stochastic_rounding, seed, rounding step) of the step being taken: the step is
        ``applied_steps`` before it. With :meth:`_rounding_keys`, what :meth:`_run` and
        :meth:`_make_plan` pass on for 16-bit tensors."""
        return F.check_rounding(self.stochastic_rounding, self.seed, self.applied_steps)

    @staticmethod
    def _rounding_keys(names: Sequence[Any]) -> list[int]:
        """The tensors' stochastic-rounding keys: a 64-bit hash (FNV-1a) of each param's name, so
        that a param keeps its random stream whatever the other params or groups are (and however
        its elements are sliced: with the element index within the param, see :meth:`_run`)."""
        return [_half.name_key(n) for n in names]

    def _global_values(self) -> dict[str, Any]:
        """Every global setting as a step uses it (checked: TypeError/ValueError otherwise), by
        name: ``global_settings`` and the 16-bit storage settings. Processes that step replicas of
        one model must agree on all of them (``minimalsgd.distributed`` compares them)."""
        self._check_globals()
        out = {key: getattr(self, key) for key in self.global_settings}
        sr, seed, _ = F.check_rounding(self.stochastic_rounding, self.seed)
        sd_dtype = _state_dtype(self.state_dtype)
        out.update(stochastic_rounding=sr, seed=seed, state_dtype="" if sd_dtype is None else sd_dtype.name)
        return out

    def _fresh_copy(self) -> Optimizer:
        """A new optimizer of this class over the same param groups (the same dicts), with the same
        hyperparameters and global settings, and no state or counters."""
        new = type(self)([dict(g) for g in self.param_groups], **self.defaults)
        for key in (*self.global_settings, *_STORAGE_DEFAULTS):
            setattr(new, key, getattr(self, key))
        return new

    def _new_state_arrays(self, field: str, values: list[np.ndarray]) -> list[np.ndarray]:
        """New state arrays for ``values``, one each (see :meth:`_new_state_array`). With the
        default uninitialized arrays, packed params (``pack_params``) get slices of one flat array
        laid out like their arena, so the cached plan steps them in one span."""
        f32_half = _state_dtype(self.state_dtype) is not None and any(_half.is_half(v.dtype) for v in values)
        if type(self)._new_state_array is Optimizer._new_state_array and not f32_half:
            return new_buffers(values)
        return [self._new_state_array(field, v) for v in values]

    def _run(
        self,
        labels: list[str],
        values: list[np.ndarray],
        grads: list[np.ndarray],
        states: list[list[np.ndarray | None]],
        born: list[bool],
        steps: list[int],
        group_of: list[int],
        options: list[tuple[Any, ...]],
        grad_scale: float,
        backend: str,
        rounding_keys: Sequence[int] | None = None,
        rounding_offsets: Sequence[int] | None = None,
    ) -> None:
        """The formula over validated tensors: tensor i has state arrays ``states[i]`` (in
        ``state_fields`` order, None where unused), was ``born`` this step or not, has had
        ``steps[i]`` applied steps before this one, and uses ``options[group_of[i]]``.

        For 16-bit storage (a formula that rounds its results): tensor i rounds stochastically with
        the key ``rounding_keys[i]`` (its param's key, :meth:`_rounding_keys`; None: the keys of the
        labels) and element j with the bits of element ``rounding_offsets[i] + j`` of its param
        (None: 0, a whole param). A caller that steps a piece of a param (the sharded optimizer, a
        rank's slice) passes the param's key and the piece's offset in it, so that the piece rounds
        as the whole param would."""
        raise NotImplementedError

    #: The native plan class of the formula in ``_core`` (``"SgdPlan"``), built by
    #: ``csrc/python/plan.hpp``'s ``bind_plan<Formula>``; None: every step takes the checked path.
    _plan_class: ClassVar[str | None] = None

    # -----------------------------------------------------------------------------------------
    # Attributes

    _plan: Any = None
    _plan_keys: list[str] = []
    _plan_schedules: list[tuple[int, Schedule]] = []
    _last_lrs: list[float] | None = None
    _measures_norm = False
    _state: dict[str, dict[str, Any]]
    _applied: int

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.global_settings or name == "param_groups" or name in _STORAGE_DEFAULTS:
            self._drop_plan()
        object.__setattr__(self, name, value)

    @property
    def params(self) -> Params:
        """The params dict of the only param group (AttributeError when there are several: read
        ``param_groups[i]["params"]``)."""
        if len(self.param_groups) != 1:
            raise AttributeError(
                f"this optimizer has {len(self.param_groups)} param groups: use opt.param_groups[i]['params']"
            )
        return self.param_groups[0]["params"]

    @params.setter
    def params(self, value: Params) -> None:
        if len(self.param_groups) != 1:
            raise AttributeError(f"this optimizer has {len(self.param_groups)} param groups: set param_groups[i]['params']")
        if not isinstance(value, MutableMapping):
            raise TypeError(f"params must be a dict of name -> {{'value': ndarray, 'grad': ndarray}}, got {type(value).__name__}")
        self.param_groups[0]["params"] = value

    @property
    def state(self) -> dict[str, dict[str, Any]]:
        """``name -> {<state field>: ndarray, ..., "step": int}``: plain NumPy arrays and ints.

        The state fields are the optimizer's (SGD: ``momentum_buffer``; Adam: ``exp_avg``,
        ``exp_avg_sq``, ``max_exp_avg_sq``); ``step`` counts the steps applied to that param.
        """
        self._flush_plan_steps()
        return self._state

    @state.setter
    def state(self, value: dict[str, dict[str, Any]]) -> None:
        self._drop_plan()
        object.__setattr__(self, "_state", value)

    @property
    def applied_steps(self) -> int:
        """Applied steps so far (skipped ones excluded): the count the next step's schedules get,
        so the first step calls ``schedule(0)``."""
        plan = self._plan
        return self._applied + (plan.applied if plan is not None else 0)

    @property
    def last_lrs(self) -> list[float] | None:
        """The lr of each group in the latest applied step (None before the first)."""
        plan = self._plan
        if plan is not None and plan.applied:
            return list(plan.last_lrs)
        return self._last_lrs

    @last_lrs.setter
    def last_lrs(self, value: list[float] | None) -> None:
        object.__setattr__(self, "_last_lrs", value)

    def get_lr(self) -> list[float]:
        """The lr each group will use at the next step (schedules evaluated at ``applied_steps``).

        Returns
        -------
        list of float
            One lr per param group.

        Raises
        ------
        TypeError, ValueError
            As :meth:`step` would, when a schedule returns a value that is not a finite real
            number ``>= 0`` (nothing changes then).
        """
        count = self.applied_steps
        return [self._lr_of(i, g, count) for i, g in enumerate(self.param_groups)]

    # -----------------------------------------------------------------------------------------
    # Param groups

    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a param group, as torch does.

        Parameters
        ----------
        param_group : dict
            ``{"params": {name: {"value": ndarray, "grad": ndarray}}, <hyperparameter>: ...}``;
            the hyperparameters it does not give come from ``defaults``.

        Raises
        ------
        TypeError, ValueError
            It is not a dict, lacks ``"params"``, names an unknown key, repeats a name of another
            group or has a bad hyperparameter. Nothing changes then.
        """
        self._add_groups([param_group])

    def _add_groups(self, groups: list[Any]) -> None:
        names = {name: i for i, g in enumerate(self.param_groups) if isinstance(g, Mapping)
                 for name in g.get("params", ())}
        base = len(self.param_groups)
        ready = []
        for k, group in enumerate(groups):
            label = f"param_groups[{base + k}]"
            self._check_group_keys(group, label)
            params = group["params"]
            for name in params:
                if name in names:
                    raise ValueError(f"{label}: param {name!r} is already in param_groups[{names[name]}]; "
                                     "a name may be in one group only")
                names[name] = base + k
            full = {"params": params}
            for key in self.hyperparameters:
                full[key] = group[key] if key in group else self.defaults[key]
            self._checked_group(full, label)
            ready.append(full)
        for full in ready:
            self.param_groups.append(ParamGroup(self, full))
        self._drop_plan()

    def _check_group_keys(self, group: Any, label: str) -> None:
        """A group as given or as changed by hand: a dict with a params dict and known keys."""
        if not isinstance(group, Mapping):
            raise TypeError(f"{label} must be a dict with 'params' and hyperparameters, got {type(group).__name__}")
        if "params" not in group:
            raise ValueError(f"{label} has no 'params'")
        if not isinstance(group["params"], MutableMapping):
            raise TypeError(
                f"{label}['params'] must be a dict of name -> {{'value': ndarray, 'grad': ndarray}}, "
                f"got {type(group['params']).__name__}"
            )
        for key in group:
            if key != "params" and key not in self.hyperparameters:
                where = " (a global setting: give it to the constructor)" if key in self.global_settings else ""
                raise ValueError(f"{label}: unknown hyperparameter {key!r}{where}; a group may set {list(self.hyperparameters)}")

    def _group_changed(self, group: ParamGroup, key: Any) -> None:
        plan = self.__dict__.get("_plan")
        if plan is None:
            return
        if key == "lr":  # a new lr (a torch-style scheduler, say): a cheap input of the plan
            lr = dict.get(group, "lr")
            gi = next((i for i, g in enumerate(self.param_groups) if g is group), -1)
            if (gi >= 0 and isinstance(lr, (int, float)) and not isinstance(lr, bool)
                    and all(i != gi for i, _ in self._plan_schedules)):
                if plan.set_lr(gi, float(lr)):  # (the plan keeps the lrs of its latest step apart)
                    return
        self._drop_plan()

    def _checked_group(self, group: Mapping[str, Any], label: str, lr: float | None = None) -> tuple[Any, ...]:
        """The group's options by the optimizer's rules, with ``lr`` (its lr in force) or, when
        None, its own lr (a schedule is then only checked to be callable)."""
        prefix = f"{label}: " if label else ""
        hyper = dict(group)
        missing = [k for k in self.hyperparameters if k not in hyper]
        if missing:
            raise ValueError(f"{prefix}lacks hyperparameters {missing}")
        if lr is not None:
            hyper["lr"] = lr
        elif callable(hyper["lr"]):
            hyper["lr"] = 0.0  # a schedule: its values are checked at the step that calls it
        try:
            return self._check_options(hyper)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{prefix}{e}") from None

    def _lr_of(self, i: int, group: Mapping[str, Any], count: int) -> Any:
        """The lr of group i at the step with ``count`` applied steps before it: a schedule's
        value (checked here) or the group's own lr (checked with the other options)."""
        lr = group.get("lr")
        if not callable(lr):
            return lr
        return _checked_schedule_value(i, lr(count), count)

    # -----------------------------------------------------------------------------------------
    # The cached native plan. After a step that the native kernel served whole, the validated
    # params are kept in a native plan; later steps re-check only identities, data pointers,
    # shapes and flags there (a replaced grad is inspected and taken) and run in one call. Any
    # change it cannot vouch for sends the step down the full path below, which rebuilds it.
    # Setting a global setting, a group's key, params or state drops it.

    def _flush_plan_steps(self) -> None:
        plan = self.__dict__.get("_plan")
        if plan is not None and plan.applied:
            n = plan.applied
            object.__setattr__(self, "_last_lrs", list(plan.last_lrs))
            plan.reset_applied()
            object.__setattr__(self, "_applied", self._applied + n)
            for key in self._plan_keys:
                self._state[key]["step"] += n

    def _drop_plan(self) -> None:
        if self.__dict__.get("_plan") is not None:
            self._flush_plan_steps()
            object.__setattr__(self, "_plan", None)

    def _build_plan(self, keys: list[str], values: list[np.ndarray], grads: list[np.ndarray],
                    states: list[list[np.ndarray | None]], group_of: list[int], options: list[tuple[Any, ...]],
                    clip: float | None, skip: bool, backend: str) -> None:
        core = F._core
        # float16/bfloat16 tensors take the full path at every step: their rounding step
        # (applied_steps) and keys are passed there, and the plans do not carry them.
        if any(_half.is_half(v.dtype) for v in values):
            return
        # Only groups that report their changes (a plain dict or list put in by hand does not).
        if type(self.param_groups) is not ParamGroups or self.param_groups._owner() is not self:
            return
        if not all(type(g) is ParamGroup and g._owner() is self for g in self.param_groups):
            return
        included = {k: i for i, k in enumerate(keys)}
        outers, all_keys, all_inners, all_index = [], [], [], []
        for group in self.param_groups:
            params = group["params"]
            if type(params) is not dict:
                return
            inners, index = [], []
            for name, p in params.items():
                if type(p) is not dict:
                    return
                inners.append(p)
                index.append(included.get(name, -1))
            outers.append(params)
            all_keys.append(list(params.keys()))
            all_inners.append(inners)
            all_index.append(index)
        if core is None or backend == "numpy" or self._plan_class is None or any(
            F.native_reason(values[i], grads[i], s) is not None for i in range(len(keys)) for s in states[i] or [None]
        ):
            # Some tensor is NumPy's (or no native plan): the same cached plan in Python, for one
            # group with a fixed lr (minimalsgd._pyplan); otherwise every step takes the full path.
            if len(outers) == 1 and not callable(self.param_groups[0]["lr"]):
                plan = self._make_python_plan(outers[0], keys, values, grads, states, options, clip, skip, backend)
                object.__setattr__(self, "_plan", plan)
                object.__setattr__(self, "_plan_keys", keys)
                object.__setattr__(self, "_plan_schedules", [])
            return
        state = self._state
        steps = [int(state[k]["step"]) for k in keys]
        plan = getattr(core, self._plan_class)(outers, all_keys, all_inners, all_index, values, grads, states, steps,
                                               group_of, options, -1.0 if clip is None else clip, skip)
        object.__setattr__(self, "_plan", plan)
        object.__setattr__(self, "_plan_keys", keys)
        object.__setattr__(self, "_plan_schedules",
                           [(i, g["lr"]) for i, g in enumerate(self.param_groups) if callable(g["lr"])])

    def _make_python_plan(self, params: dict[str, Any], keys: list[str], values: list[np.ndarray],
                          grads: list[np.ndarray], states: list[list[np.ndarray | None]],
                          options: list[tuple[Any, ...]], clip: float | None, skip: bool, backend: str) -> PythonPlan:
        labels = [f"params[{k!r}]" for k in keys]
        n = len(keys)
        born = [False] * n
        group_of = [0] * n
        run = self._plan_runner(labels, values, grads, states, options[0], backend)
        if run is None:
            state = self._state
            after = [int(state[k]["step"]) for k in keys]  # steps applied before the plan's first step
            run_formula = self._run

            def run(grad_scale: float, applied: int) -> None:
                run_formula(labels, values, grads, states, born, Offset(after, applied), group_of, options, grad_scale,
                            backend)

        return PythonPlan(params, keys, labels, values, grads, states, run, float(options[0][0]), clip, skip, backend)

    def _plan_runner(self, labels: list[str], values: list[np.ndarray], grads: list[np.ndarray],
                     states: list[list[np.ndarray | None]], options: tuple[Any, ...],
                     backend: str) -> Callable[[float, int], None] | None:
        """Optionally, the formula of a cached Python plan prepared once (the validated tensors of
        one group, none born): ``run(grad_scale, applied)``. None: :meth:`_run` at every step."""
        return None

    # -----------------------------------------------------------------------------------------
    # Validation (nothing here writes or creates anything)

    def _check_globals(self) -> tuple[float | None, bool, str]:
        clip = None
        if self.clip_grad_norm is not None:
            clip = F.check_real("clip_grad_norm", self.clip_grad_norm, positive=True)
        skip = F.check_bool("skip_nonfinite", self.skip_nonfinite)
        F.check_rounding(self.stochastic_rounding, self.seed)
        _state_dtype(self.state_dtype)
        return clip, skip, F.check_backend(self.backend)

    def _collect(self, options: list[tuple[Any, ...]]) -> tuple[
        list[str], list[str], list[np.ndarray], list[np.ndarray], list[list[np.ndarray | None]], list[int]
    ]:
        """The params that have a grad, validated: (keys, labels, values, grads, states, group_of)."""
        keys: list[str] = []
        labels: list[str] = []
        values: list[np.ndarray] = []
        grads: list[np.ndarray] = []
        states: list[list[np.ndarray | None]] = []
        group_of: list[int] = []
        seen: dict[Any, int] = {}
        fields_all = self.state_fields
        for gi, group in enumerate(self.param_groups):
            params = group["params"]
            if not isinstance(params, Mapping):
                raise TypeError(f"param_groups[{gi}]['params'] must be a dict, got {type(params).__name__}")
            needed = self._fields_needed(options[gi])
            for name, p in params.items():
                if name in seen:
                    raise ValueError(f"param {name!r} is in param_groups[{seen[name]}] and param_groups[{gi}]; "
                                     "a name may be in one group only")
                seen[name] = gi
                label = f"params[{name!r}]"
                if not isinstance(p, Mapping):
                    raise TypeError(f"{label} must be a dict with 'value' and 'grad', got {type(p).__name__}")
                grad = p.get("grad")
                if grad is None:
                    continue
                if "value" not in p:
                    raise ValueError(f"{label} has a grad but no 'value'")
                value = p["value"]
                F.check_tensor(label, value, grad, None, False)
                st = self._state.get(name, {})
                arrays: list[np.ndarray | None] = []
                for field in fields_all:
                    arr = st.get(field) if field in needed else None
                    if arr is not None:
                        F.check_companion(label, field.replace("_", " "), arr, value, written=True)
                    arrays.append(arr)
                keys.append(name)
                labels.append(label)
                values.append(value)
                grads.append(grad)
                states.append(arrays)
                group_of.append(gi)
        slot_names = ("value", "grad") + tuple(f.replace("_", " ") for f in fields_all)
        F.check_no_overlap(labels, [(values[i], grads[i], *states[i]) for i in range(len(keys))], slot_names)
        return keys, labels, values, grads, states, group_of

    # -----------------------------------------------------------------------------------------
    # The step

    def step(self) -> bool:
        """Update every param that has a grad, in place, in one call for all groups.

        Returns
        -------
        bool
            True when the step was applied; False when ``skip_nonfinite`` found a NaN or an
            infinity in the gradients (then nothing was written, and neither the state nor
            ``applied_steps`` advanced).

        Raises
        ------
        TypeError, ValueError
            A param, group, hyperparameter or schedule value that is not valid, naming it
            (``params['w1']: grad shape (3,) does not match value shape (2,)``). Raised before
            anything is written or created.
        """
        plan = self._plan
        if plan is not None:
            if self._plan_schedules:  # the cheap per-step input: each schedule's lr, checked here
                count = self._applied + plan.applied
                last: Any = None
                lr = 0.0
                for gi, sched in self._plan_schedules:
                    if sched is not last:  # groups that share a schedule call it once
                        lr = _checked_schedule_value(gi, sched(count), count)
                        last = sched
                    if not plan.set_lr(gi, lr):
                        self._drop_plan()
                        return self._full_step()
            status = plan.step()
            if status == 1:
                if self._measures_norm:
                    object.__setattr__(self, "last_grad_norm", plan.last_norm)
                return True
            if status == 2:
                self.skipped_steps += 1
                return False
            self._drop_plan()  # something changed: the full path checks it all
        return self._full_step()

    def _full_step(self) -> bool:
        clip, skip, backend = self._check_globals()
        count = self.applied_steps
        lrs: list[float] = []
        options: list[tuple[Any, ...]] = []
        for gi, group in enumerate(self.param_groups):
            self._check_group_keys(group, f"param_groups[{gi}]")
            lr = self._lr_of(gi, group, count)
            opts = self._checked_group(group, f"param_groups[{gi}]", lr)
            options.append(opts)
            lrs.append(float(opts[0]))
        keys, labels, values, grads, states, group_of = self._collect(options)

        scale = 1.0
        if clip is not None or skip:
            norm = math.sqrt(F.sum_of_squares(labels, grads, backend))
            if skip and not math.isfinite(norm) and not _all_finite_confirmed(norm, grads):
                self.skipped_steps += 1
                return False
            self.last_grad_norm = norm
            scale = F.clip_scale(norm, clip)

        fields_all = self.state_fields
        born = [False] * len(keys)
        steps = [0] * len(keys)
        state = self.state
        missing: dict[int, list[int]] = {}  # field -> tensors that need it created
        for i, key in enumerate(keys):
            needed = self._fields_needed(options[group_of[i]])
            for j, field in enumerate(fields_all):
                if field in needed and states[i][j] is None:
                    missing.setdefault(j, []).append(i)
                    born[i] = True
            steps[i] = int(state.get(key, {}).get("step", 0))
        for j, idx in missing.items():
            for i, arr in zip(idx, self._new_state_arrays(fields_all[j], [values[i] for i in idx])):
                states[i][j] = arr
        rounding_keys = self._rounding_keys(keys) if any(_half.is_half(v.dtype) for v in values) else None
        self._run(labels, values, grads, states, born, steps, group_of, options, scale, backend,
                  rounding_keys=rounding_keys)
        for i, key in enumerate(keys):
            st = state.setdefault(key, {"step": 0})
            st["step"] = st.get("step", 0) + 1
            for j, field in enumerate(fields_all):
                if states[i][j] is not None:
                    st[field] = states[i][j]
        object.__setattr__(self, "_applied", self._applied + 1)
        self.last_lrs = lrs
        object.__setattr__(self, "_measures_norm", clip is not None or skip)
        self._build_plan(keys, values, grads, states, group_of, options, clip, skip, backend)
        return True

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero every grad of every group in place, or set it to None.

        Parameters
        ----------
        set_to_none : bool, default False
            Set each ``"grad"`` entry to None instead of zeroing the array.

        Raises
        ------
        TypeError, ValueError
            A grad that is not an ndarray, or is read-only (when zeroing). Every grad is checked
            first: nothing is zeroed then.
        """
        todo = []
        for group in self.param_groups:
            params = group["params"]
            for name, p in params.items():
                grad = p.get("grad")
                if grad is None:
                    continue
                if not set_to_none:
                    if not isinstance(grad, np.ndarray):
                        raise TypeError(f"params[{name!r}]: grad must be a numpy.ndarray, got {type(grad).__name__}")
                    if not grad.flags.writeable:
                        raise ValueError(f"params[{name!r}]: grad is read-only and cannot be zeroed in place")
                todo.append((params, name))
        for params, name in todo:
            if set_to_none:
                params[name]["grad"] = None
            else:
                params[name]["grad"][...] = 0

    # -----------------------------------------------------------------------------------------
    # Checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as a flat dict of plain Python and NumPy values.

        Returns
        -------
        dict
            Keys: ``"format"`` (2), ``"optimizer"`` (the class name), the global settings
            (``"clip_grad_norm"``, None stored as NaN; ``"skip_nonfinite"``, ``"backend"``),
            the storage settings (``"stochastic_rounding"``, ``"seed"``, ``"state_dtype"``: ""
            for the value's dtype), ``"applied_steps"``, ``"skipped_steps"``, ``"last_grad_norm"`` (NaN for None); per group
            i ``"groups/<i>/params"`` (its names, an array of str), ``"groups/<i>/<hyperparameter>"``
            and ``"groups/<i>/lr_is_schedule"`` (a schedule is code and is not saved: its lr is stored
            as the lr of the latest step, NaN before any; load into an optimizer built with the same
            schedule); per param ``"state/<name>/step"`` and ``"state/<name>/<field>"`` (a copy).
            It pickles, and saves with ``np.savez(file, **opt.state_dict())``;
            ``dict(np.load(file))`` loads back.

        Examples
        --------
        >>> import io
        >>> params = {"w": {"value": np.ones(2, np.float32), "grad": np.ones(2, np.float32)}}
        >>> opt = minimalsgd.SGD(params, lr=0.1, momentum=0.9)
        >>> opt.step()
        True
        >>> buf = io.BytesIO()
        >>> np.savez(buf, **opt.state_dict())
        >>> _ = buf.seek(0)
        >>> resumed = minimalsgd.SGD(params)          # any hyperparameters: the checkpoint's win
        >>> with np.load(buf) as f:
        ...     resumed.load_state_dict(dict(f))
        >>> resumed.param_groups[0]["momentum"], resumed.applied_steps
        (0.9, 1)
        """
        sd: dict[str, Any] = {"format": STATE_DICT_FORMAT, "optimizer": type(self).__name__}
        for key in self.global_settings:
            val = getattr(self, key)
            sd[key] = math.nan if val is None else val
        sd["stochastic_rounding"] = bool(self.stochastic_rounding)
        sd["seed"] = int(self.seed)
        sd_dtype = _state_dtype(self.state_dtype)
        sd["state_dtype"] = "" if sd_dtype is None else sd_dtype.name
        sd["applied_steps"] = self.applied_steps
        sd["skipped_steps"] = self.skipped_steps
        sd["last_grad_norm"] = math.nan if self.last_grad_norm is None else self.last_grad_norm
        for i, g in enumerate(self.param_groups):
            prefix = f"{_GROUP_PREFIX}{i}/"
            sd[prefix + "params"] = np.array([str(n) for n in g["params"]], dtype=str)
            for key in self.hyperparameters:
                sd[prefix + key] = g[key]
            scheduled = callable(g["lr"])
            sd[prefix + "lr_is_schedule"] = scheduled
            if scheduled:
                sd[prefix + "lr"] = self.last_lrs[i] if self.last_lrs is not None and i < len(self.last_lrs) else math.nan
        for name, st in self.state.items():
            if "step" in st:
                sd[f"{_STATE_PREFIX}{name}/step"] = int(st["step"])
            for field in self.state_fields:
                if st.get(field) is not None:
                    sd[f"{_STATE_PREFIX}{name}/{field}"] = np.array(st[field], copy=True)
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore settings, groups' hyperparameters, counters and state from :meth:`state_dict`.

        Parameters
        ----------
        state_dict : mapping
            What :meth:`state_dict` returned, or ``dict(np.load(file))`` of it.

        Raises
        ------
        TypeError, ValueError
            The state dict does not fit (see below); nothing changes then.

        Notes
        -----
        The state dict must fit: the same optimizer, as many groups holding the same names, every
        state name a param of this optimizer, every state array of its value's shape and dtype,
        and every setting valid. Otherwise a ValueError/TypeError says what does not fit and
        nothing changes. A group saved with a schedule needs a schedule here (it is kept: pass the
        same one). State arrays are copied into arrays of the value's memory order, so training
        continues bit for bit as if it had never stopped. Format 1 (one group, written before
        param groups existed) is read too; its applied-step count is taken as the largest
        per-param step.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        sd = dict(state_dict)
        fmt = _scalar(sd.get("format"), "format")
        if fmt == 1:
            sd = self._upgrade_format_1(sd)
        elif fmt != STATE_DICT_FORMAT:
            raise ValueError(f"state_dict format {fmt!r} is not supported (expected {STATE_DICT_FORMAT} or 1)")
        top = set(self.global_settings) | set(_STORAGE_DEFAULTS) | {"format", "optimizer", "applied_steps",
                                                                   "skipped_steps", "last_grad_norm"}
        for key in sd:
            if not (key in top or key.startswith(_GROUP_PREFIX) or key.startswith(_STATE_PREFIX)):
                raise ValueError(f"state_dict key {key!r} is not a known entry")
        kind = _scalar(sd.get("optimizer", type(self).__name__), "optimizer")
        if kind != type(self).__name__:
            raise ValueError(f"state_dict is of a {kind} optimizer, not {type(self).__name__}")

        # Global settings, checked as step() would.
        missing = [k for k in self.global_settings if k not in sd]
        if missing:
            raise ValueError(f"state_dict lacks settings {missing}")
        glob = {k: _scalar(sd[k], k) for k in self.global_settings}
        for key, val in glob.items():
            if isinstance(val, float) and math.isnan(val):
                glob[key] = None
            elif isinstance(val, np.bool_):
                glob[key] = bool(val)
        for k, default in _STORAGE_DEFAULTS.items():
            v = _scalar(sd.get(k, default), k)
            glob[k] = bool(v) if isinstance(v, np.bool_) else v
        glob["state_dtype"] = glob["state_dtype"] or None
        trial = object.__new__(type(self))
        trial.__dict__.update(glob)
        trial._check_globals()
        f32_state = _state_dtype(glob["state_dtype"]) is not None

        # Groups: the same count and names; hyperparameters checked by the optimizer's rules.
        n_saved = len({k.split("/")[1] for k in sd if k.startswith(_GROUP_PREFIX) and k.count("/") >= 2})
        if n_saved != len(self.param_groups):
            raise ValueError(f"state_dict has {n_saved} param groups, the optimizer has {len(self.param_groups)}")
        new_groups: list[dict[str, Any]] = []
        known = set(self.hyperparameters) | {"params", "lr_is_schedule"}
        for key in sd:
            if key.startswith(_GROUP_PREFIX):
                parts = key.split("/")
                if len(parts) != 3 or parts[2] not in known or not parts[1].isdigit() or int(parts[1]) >= n_saved:
                    raise ValueError(f"state_dict key {key!r} is not a known group entry")
        for i, group in enumerate(self.param_groups):
            prefix = f"{_GROUP_PREFIX}{i}/"
            label = f"param_groups[{i}]"
            lacking = [k for k in self.hyperparameters if prefix + k not in sd]
            if lacking:
                raise ValueError(f"state_dict lacks hyperparameters {lacking} of {label}")
            if prefix + "params" in sd:
                saved_names = sd[prefix + "params"]
                if saved_names is not None:
                    saved = [str(n) for n in np.asarray(saved_names).reshape(-1).tolist()]
                    here = [str(n) for n in group["params"]]
                    if sorted(saved) != sorted(here):
                        only_saved = sorted(set(saved) - set(here))
                        only_here = sorted(set(here) - set(saved))
                        raise ValueError(
                            f"state_dict's {label} does not hold this optimizer's {label} params: "
                            f"only in the state dict {only_saved}, only here {only_here}"
                        )
            hyper = {k: _saved_hyperparameter(sd[prefix + k], f"{prefix}{k}") for k in self.hyperparameters}
            for k, v in hyper.items():
                if isinstance(v, np.bool_):
                    hyper[k] = bool(v)
            scheduled = bool(_scalar(sd.get(prefix + "lr_is_schedule", False), prefix + "lr_is_schedule"))
            if scheduled:
                if not callable(group["lr"]):
                    raise ValueError(
                        f"state_dict's {label} had an lr schedule, which is code and not saved: build the optimizer "
                        "with the same schedule, then load"
                    )
                hyper["lr"] = group["lr"]
            self._checked_group(hyper, label)
            new_groups.append(hyper)

        # Per-param state: names must exist, arrays must fit.
        values_by_name = {name: p for g in self.param_groups for name, p in g["params"].items()}
        per_name: dict[str, dict[str, Any]] = {}
        fields = set(self.state_fields) | {"step"}
        for key, val in sd.items():
            if not key.startswith(_STATE_PREFIX):
                continue
            name, _, field = key[len(_STATE_PREFIX) :].rpartition("/")
            if field not in fields or not name:
                raise ValueError(f"state_dict key {key!r} is not a known state entry")
            per_name.setdefault(name, {})[field] = val
        new_state: dict[str, dict[str, Any]] = {}
        for name, entry_in in per_name.items():
            label = f"params[{name!r}]"
            if name not in values_by_name:
                raise ValueError(f"state_dict has state for {name!r}, which is not in params")
            entry: dict[str, Any] = {}
            if "step" in entry_in:
                step = _scalar(entry_in["step"], f"{label} step")
                if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)) or step < 0:
                    raise ValueError(f"{label}: step must be an int >= 0, got {step!r}")
                entry["step"] = int(step)
            for field in self.state_fields:
                if field not in entry_in:
                    continue
                arr = entry_in[field]
                what = field.replace("_", " ")
                value = values_by_name[name].get("value")
                if not isinstance(arr, np.ndarray):
                    raise TypeError(f"{label}: {what} must be a numpy.ndarray, got {type(arr).__name__}")
                if not isinstance(value, np.ndarray):
                    raise TypeError(f"{label}: value must be a numpy.ndarray, got {type(value).__name__}")
                if arr.shape != value.shape:
                    raise ValueError(f"{label}: {what} shape {arr.shape} does not match value shape {value.shape}")
                want = value.dtype.newbyteorder("=")
                if arr.dtype.kind == "V" and arr.dtype.itemsize == 2 and arr.dtype.names is None and want.kind == "V":
                    arr = arr.view(want)  # np.savez/np.load keep bfloat16 as raw 2-byte voids: the bits are intact
                if f32_state and _half.is_half(value.dtype):
                    want = np.dtype(np.float32)
                if arr.dtype.newbyteorder("=") != want:
                    raise TypeError(f"{label}: {what} dtype {arr.dtype} does not match {want} (value dtype {value.dtype})")
                entry[field] = arr
            new_state[name] = entry
        counters = {}
        for key in ("skipped_steps", "applied_steps"):
            c = _scalar(sd.get(key, 0), key)
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or c < 0:
                raise ValueError(f"{key} must be an int >= 0, got {c!r}")
            counters[key] = int(c)
        last = _scalar(sd.get("last_grad_norm", math.nan), "last_grad_norm")
        last = None if last is None or math.isnan(float(last)) else float(last)

        # Everything fits: now change the optimizer.
        self._drop_plan()
        for key, val in glob.items():
            setattr(self, key, val)
        for group, hyper in zip(self.param_groups, new_groups):
            for key in self.hyperparameters:
                dict.__setitem__(group, key, hyper[key])
        state: dict[str, dict[str, Any]] = {}
        for name, entry in new_state.items():
            st: dict[str, Any] = {}
            if "step" in entry:
                st["step"] = entry["step"]
            for field in self.state_fields:
                if field in entry:
                    arr = self._new_state_array(field, values_by_name[name]["value"])
                    np.copyto(arr, entry[field])
                    st[field] = arr
            state[name] = st
        self.state = state
        object.__setattr__(self, "_applied", counters["applied_steps"])
        self.skipped_steps = counters["skipped_steps"]
        self.last_grad_norm = last
        self.last_lrs = None

    def _upgrade_format_1(self, sd: dict[str, Any]) -> dict[str, Any]:
        """A format-1 state dict (one group, hyperparameters at the top) in format 2's layout."""
        if len(self.param_groups) != 1:
            raise ValueError(f"a format-1 state dict has 1 param group, the optimizer has {len(self.param_groups)}")
        out: dict[str, Any] = {"format": STATE_DICT_FORMAT}
        for key, val in sd.items():
            if key in self.hyperparameters:
                out[f"{_GROUP_PREFIX}0/{key}"] = val
            elif key != "format":
                out[key] = val
        missing = [k for k in self.hyperparameters if k not in sd]
        if missing:
            raise ValueError(f"state_dict lacks hyperparameters {missing}")
        steps = [_scalar(v, k) for k, v in sd.items() if k.startswith(_STATE_PREFIX) and k.endswith("/step")]
        ints = [int(s) for s in steps if isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_))]
        out["applied_steps"] = max(ints, default=0)
        return out

    def __repr__(self) -> str:
        parts = []
        for g in self.param_groups:
            parts.append("{" + ", ".join(f"{k}={g[k]!r}" for k in self.hyperparameters) + f", params={len(g['params'])}" + "}")
        return (
            f"{type(self).__name__}(param_groups=[{', '.join(parts)}], clip_grad_norm={self.clip_grad_norm}, "
            f"skip_nonfinite={self.skip_nonfinite}, backend={self.backend!r}, "
            f"stochastic_rounding={self.stochastic_rounding}, seed={self.seed}, state_dtype={self.state_dtype!r})"
        )


def _state_dtype(x: Any) -> np.dtype | None:
    """None (state arrays of the value's dtype) or float32 (for 16-bit values); else an error."""
    if x is None:
        return None
    try:
        d = np.dtype(x)
    except TypeError:
        raise TypeError(f"state_dtype must be None or float32, got {x!r}") from None
    if d != np.dtype(np.float32):
        raise ValueError(f"state_dtype must be None or float32, got {d}")
    return d


def _checked_schedule_value(i: int, value: Any, count: int) -> float:
    """A schedule's value as a float: TypeError/ValueError naming group i unless a finite real >= 0."""
    if type(value) is float and 0.0 <= value < math.inf:  # the usual case, cheaply
        return value
    what = f"param_groups[{i}]: the lr schedule returned {value!r} for step {count}"
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu":
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}; an lr must be a real number")
    out = float(value)
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"{what}; an lr must be finite and >= 0")
    return out


def _scalar(x: Any, name: str) -> Any:
    """A Python scalar from a scalar or a 0-d array (what np.load gives back)."""
    if isinstance(x, np.ndarray):
        if x.ndim != 0:
            raise ValueError(f"state_dict entry {name!r} must be a scalar, got an array of shape {x.shape}")
        x = x.item()
    elif isinstance(x, np.generic):
        x = x.item()
    return x


def _saved_hyperparameter(x: Any, name: str) -> Any:
    """A hyperparameter from a state dict: a scalar, or a tuple (Adam's betas) that np.savez
    stored as a 1-d array."""
    if isinstance(x, np.ndarray) and x.ndim == 1:
        return tuple(x.tolist())
    return _scalar(x, name)


def _all_finite_confirmed(norm: float, grads: list[np.ndarray]) -> bool:
    """True if an infinite norm came from overflow of finite float64 squares, not from a NaN/Inf."""
    if math.isnan(norm):
        return False
    return all(bool(np.isfinite(g).all()) for g in grads)
