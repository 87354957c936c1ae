"""The optimizer: param groups and state, and the orchestration of ``step()``.

An optimizer class names its formula (:class:`~minimalsgd.protocol.Formula`: options, checks,
state fields, update) and its constructor arguments; :class:`Optimizer` does the rest by calling
one piece per concern:

* :mod:`.groups` -- ``param_groups`` and their change tracking, group checks, lr schedules;
* :mod:`.gradients` -- the gradient policy: one norm pass gives skip and clip scale;
* :mod:`.storage` -- 16-bit rounding (``stochastic_rounding``, ``seed``), rounding keys, the dtype
  and layout of new state arrays;
* :mod:`.plans` -- the cached plan, and the one owner of the applied-step count;
* :mod:`.checkpoint` -- ``state_dict`` / ``load_state_dict``.

A step: check the settings and every group's options (schedules evaluated at ``applied_steps``),
collect and validate every param that has a grad, let the gradient policy decide (skip, scale),
create the state that is born, build a :class:`~minimalsgd.protocol.Batch` and hand it to
``formula.apply`` (the one router), then count the step and cache a plan for the next ones.

A param entry is ``{"value": ndarray, "grad": ndarray}``, optionally with ``"offset"``: the index
of ``value``'s first element within a larger param of the same name that it is a piece of (a
rank's slice under sharding, an offloaded bucket; default 0). 16-bit stochastic rounding keys
each element by (param name, index within the param), so a param stepped in pieces rounds bit
for bit as the whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, ClassVar, Union

import numpy as np

from .. import _half
from .._router import Backend, check_backend
from .._validation import check_companion, check_no_overlap, check_real, check_tensor
from ..protocol import Batch, Formula
from . import checkpoint
from .gradients import GradientPolicy
from .groups import (
    ParamGroup,
    ParamGroups,
    Schedule,
    check_group_keys,
    group_options,
    group_property,
    lr_at,
    new_groups,
    schedule_value,
)
from .plans import Offset, PlanCache, PlanStatus
from .storage import Storage, name_keys

__all__ = ["BaseFormula", "Optimizer", "Params", "ParamsOrGroups", "Schedule"]

Params = MutableMapping[str, MutableMapping[str, Any]]
ParamsOrGroups = Union[Params, Sequence[Mapping[str, Any]]]

_APPLIED, _SKIPPED = PlanStatus.APPLIED, PlanStatus.SKIPPED


class BaseFormula:
    """What this package's formulas share: ``new_state`` (allocate, then ``init_state``) and a
    generic ``prepare`` (``apply`` with the steps advanced).

    A formula subclasses it and gives ``name``, ``options_type``, ``hyperparameters``,
    ``state_fields``, ``native_plan``, ``options`` and ``apply`` (see
    :class:`minimalsgd.protocol.Formula`).
    """

    name: str = ""
    options_type: type = tuple
    hyperparameters: tuple[str, ...] = ("lr",)
    state_fields: tuple[str, ...] = ()
    native_plan: str | None = None

    def options(self, hyper: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def fields_needed(self, options: Any) -> tuple[str, ...]:
        return self.state_fields

    def init_state(self, field: str, array: np.ndarray) -> None:
        """Default: nothing (the born flag tells the update not to read the contents)."""

    def new_state(self, field: str, value: np.ndarray, dtype: Any = None) -> np.ndarray:
        out = np.empty_like(value, dtype=value.dtype.newbyteorder("=") if dtype is None else dtype)
        self.init_state(field, out)
        return out

    def apply(self, batch: Batch) -> None:
        raise NotImplementedError

    def prepare(self, batch: Batch) -> Callable[[float, int], None]:
        apply = self.apply

        def run(grad_scale: float, applied: int) -> None:
            apply(Batch(batch.labels, batch.values, batch.grads, batch.state, batch.born, Offset(batch.steps, applied),
                        batch.group_of, batch.options, batch.keys, batch.offsets, batch.rounding, grad_scale,
                        batch.backend))

        return run

    def __repr__(self) -> str:
        return f"<minimalsgd formula {self.name!r}>"


#: The optimizer's settings (not per group): the step checks them; setting one drops the plan.
_SETTINGS = ("clip_grad_norm", "skip_nonfinite", "backend", "stochastic_rounding", "seed", "state_dtype")
_SETTING_DOCS = {
    "clip_grad_norm": "The global gradient-norm limit (None: no clipping).",
    "skip_nonfinite": "Whether a step whose gradients hold a NaN or an infinity writes nothing.",
    "backend": '"auto", "native" or "numpy".',
    "stochastic_rounding": "Whether float16/bfloat16 results round stochastically (else to nearest even).",
    "seed": "The stochastic-rounding seed, an int in [0, 2**64) (default: minimalsgd.DEFAULT_SEED).",
    "state_dtype": "None (state arrays of the value's dtype) or float32 (for float16/bfloat16 values).",
}


def _setting(name: str) -> property:
    def get(self: Optimizer) -> Any:
        return self._settings[name]

    def set(self: Optimizer, value: Any) -> None:
        self._drop_plan()
        self._settings[name] = value

    return property(get, set, doc=_SETTING_DOCS[name] + " Checked at the next step; setting it drops the plan.")


class Optimizer:
    """The shared machinery of minimalsgd's param-dict optimizers (see the module docstring).

    A subclass names its formula (the class attribute ``formula``) and its constructor arguments,
    and calls this constructor with its hyperparameters as ``defaults``.

    Parameters
    ----------
    params : dict or list of dict
        One ``{name: {"value": ndarray, "grad": ndarray}}`` dict (one group) or a list of groups
        in torch's shape, ``[{"params": {name: {...}}, "lr": ..., ...}, ...]``, where a key given
        in a group overrides the constructor's value for that group. Names are unique across
        groups. An entry may also give ``"offset"``: the index of its value's first element in a
        larger param of that name that it is a piece of (16-bit rounding keys by it).
    defaults : dict
        The formula's hyperparameters (``formula.hyperparameters``, ``"lr"`` among them), which
        groups that do not give one inherit.
    clip_grad_norm, skip_nonfinite, backend, stochastic_rounding, seed, state_dtype
        The global settings (as documented by :class:`minimalsgd.SGD`).

    Attributes
    ----------
    formula : Formula
        The class's formula (:class:`minimalsgd.protocol.Formula`).
    param_groups : list of dict
        Each with its ``"params"`` dict and every per-group hyperparameter; change them between
        steps as with torch (``g["lr"] = 0.01``).
    defaults : dict
        The constructor's hyperparameters, which groups added later inherit.
    skipped_steps : int
        Steps that found a non-finite gradient and wrote nothing.
    last_grad_norm : float or None
        The global gradient norm of the latest step that measured it.

    Raises
    ------
    TypeError, ValueError
        A param, group, hyperparameter or setting that is not valid, naming it.
    """

    #: The formula of the class (a subclass sets it; hyperparameters and state_fields follow).
    formula: ClassVar[Formula | None] = None
    #: Per-group hyperparameters, "lr" first (the formula's).
    hyperparameters: ClassVar[tuple[str, ...]] = ("lr",)
    #: Arrays kept per param, besides the "step" count (the formula's).
    state_fields: ClassVar[tuple[str, ...]] = ()
    #: Settings of the whole optimizer saved in state dicts (None as NaN), besides the storage ones.
    global_settings: ClassVar[tuple[str, ...]] = ("clip_grad_norm", "skip_nonfinite", "backend")

    clip_grad_norm = _setting("clip_grad_norm")
    skip_nonfinite = _setting("skip_nonfinite")
    backend = _setting("backend")
    stochastic_rounding = _setting("stochastic_rounding")
    seed = _setting("seed")
    state_dtype = _setting("state_dtype")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        formula = cls.__dict__.get("formula")
        if formula is not None:
            if "hyperparameters" not in cls.__dict__:
                cls.hyperparameters = tuple(formula.hyperparameters)
            if "state_fields" not in cls.__dict__:
                cls.state_fields = tuple(formula.state_fields)
        for name in cls.hyperparameters:
            if name not in cls.__dict__:
                setattr(cls, name, group_property(name))

    def __init__(
        self,
        params: ParamsOrGroups,
        defaults: Mapping[str, Any],
        *,
        clip_grad_norm: float | None = None,
        skip_nonfinite: bool = False,
        backend: Backend = "auto",
        stochastic_rounding: bool = False,
        seed: int | None = None,
        state_dtype: Any = None,
    ) -> None:
        formula = self.formula
        if formula is None:
            raise TypeError(f"{type(self).__name__} names no formula (set the class attribute 'formula')")
        unknown = set(defaults) - set(self.hyperparameters)
        if unknown or "lr" not in defaults:
            raise TypeError(f"{type(self).__name__}: defaults must name exactly {self.hyperparameters}")
        self._plans = PlanCache()
        self._state: dict[str, dict[str, Any]] = {}
        self._settings: dict[str, Any] = dict(
            clip_grad_norm=clip_grad_norm, skip_nonfinite=skip_nonfinite, backend=backend,
            stochastic_rounding=stochastic_rounding, seed=_half.DEFAULT_SEED if seed is None else seed,
            state_dtype=state_dtype,
        )
        self.defaults = dict(defaults)
        self._param_groups: Any = ParamGroups(self)
        self._checked_settings()
        group_options(formula, self.defaults, "")  # the constructor's hyperparameters, by the formula's rules
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
        self.add_param_groups(groups)
        #: Steps that found a non-finite gradient and wrote nothing (skip_nonfinite=True).
        self.skipped_steps = 0
        #: The global gradient norm of the latest step that measured it, else None.
        self.last_grad_norm: float | None = None

    # -----------------------------------------------------------------------------------------
    # Attributes

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The param groups (see the class docstring). Assigning a new list drops the plan."""
        return self._param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self._drop_plan()
        self._param_groups = value

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
        self._plans.flush(self._state)
        return self._state

    @state.setter
    def state(self, value: dict[str, dict[str, Any]]) -> None:
        self._drop_plan()
        self._state = value

    @property
    def applied_steps(self) -> int:
        """Applied steps so far (skipped ones excluded): the count the next step's schedules get,
        so the first step calls ``schedule(0)``."""
        return self._plans.applied_steps

    @property
    def last_lrs(self) -> list[float] | None:
        """The lr of each group in the latest applied step (None before the first)."""
        return self._plans.last_lrs

    @last_lrs.setter
    def last_lrs(self, value: list[float] | None) -> None:
        self._plans.last_lrs = value

    @property
    def gradient_policy(self) -> GradientPolicy:
        """The checked ``clip_grad_norm`` and ``skip_nonfinite``: what a step does with the global
        gradient norm (TypeError/ValueError if a setting is invalid). A caller that measures the
        norm itself (over several processes, say) decides with ``gradient_policy.decide(norm,
        all_finite)`` and steps with ``step(grad_scale=...)``."""
        s = self._settings
        return GradientPolicy.checked(s["clip_grad_norm"], s["skip_nonfinite"])

    @property
    def storage(self) -> Storage:
        """The checked 16-bit storage settings: ``stochastic_rounding``, ``seed``, ``state_dtype``
        (TypeError/ValueError if a setting is invalid); ``storage.rounding(applied_steps)`` is the
        :class:`~minimalsgd.protocol.Rounding` of the next step."""
        s = self._settings
        return Storage.checked(s["stochastic_rounding"], s["seed"], s["state_dtype"])

    def record_step(self, lrs: Sequence[float]) -> None:
        """Count one step that a caller applied to this optimizer's params itself.

        For a caller that steps the params through other objects while this optimizer keeps the
        settings, groups and counters: the sharded optimizer (:mod:`minimalsgd.distributed`)
        steps each rank's slice with an inner optimizer and counts the step here, so that
        ``applied_steps`` (the count the schedules and the next rounding step get), ``last_lrs``
        and ``state_dict()`` are those of the plain optimizer that made the step.

        Parameters
        ----------
        lrs : sequence of float
            The lr each group used in that step (``[o.lr for o in get_options()]``).

        Notes
        -----
        ``applied_steps`` advances by one and ``last_lrs`` becomes ``lrs``; nothing else changes
        (no state, no per-param step count: the caller keeps those).
        """
        self._drop_plan()
        self._plans.record([float(x) for x in lrs])

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
        return [lr_at(i, g, count) for i, g in enumerate(self.param_groups)]

    def get_options(self) -> list[Any]:
        """Each group's options for the next step, checked by the formula's rules.

        Returns
        -------
        list
            One options tuple per param group, of the formula's type (``SGDOptions``,
            ``AdamOptions``), schedules evaluated at ``applied_steps``.

        Raises
        ------
        TypeError, ValueError
            As :meth:`minimalsgd.SGD.step` would, naming the group; nothing changes then.
        """
        count = self.applied_steps
        formula = self.formula
        out = []
        for gi, group in enumerate(self.param_groups):
            label = f"param_groups[{gi}]"
            check_group_keys(group, label, self.hyperparameters, self.global_settings)
            out.append(group_options(formula, group, label, lr_at(gi, group, count)))
        return out

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
        self.add_param_groups([param_group])

    def add_param_groups(self, param_groups: Sequence[Mapping[str, Any]]) -> None:
        """Add several param groups, as :meth:`minimalsgd.SGD.add_param_group` adds one.

        Parameters
        ----------
        param_groups : sequence of dict
            The groups; all of them are checked before any is added.

        Raises
        ------
        TypeError, ValueError
            As :meth:`minimalsgd.SGD.add_param_group`; nothing changes then.
        """
        ready = new_groups(self.formula, self.defaults, self.param_groups, param_groups, self.global_settings)
        for full in ready:
            self.param_groups.append(ParamGroup(self, full))
        self._drop_plan()

    def _param_group_changed(self, group: ParamGroup | None, key: Any) -> None:
        """A group's ``key`` was set (``group`` None: the list changed): drop the plan, unless
        it is a new lr that the plan takes as a cheap input (a torch-style scheduler, say)."""
        plans = self._plans
        plan = plans.plan
        if plan is None:
            return
        if group is not None and key == "lr":
            lr = dict.get(group, "lr")
            gi = next((i for i, g in enumerate(self.param_groups) if g is group), -1)
            if (gi >= 0 and isinstance(lr, (int, float)) and not isinstance(lr, bool)
                    and all(i != gi for i, _ in plans.schedules)):
                if plan.set_lr(gi, float(lr)):  # (the plan keeps the lrs of its latest step apart)
                    return
        self._drop_plan()

    # -----------------------------------------------------------------------------------------
    # The step

    def step(self, *, grad_scale: float = 1.0) -> bool:
        """Update every param that has a grad, in place, in one call for all groups.

        Parameters
        ----------
        grad_scale : float, default 1.0
            Multiplies every gradient (finite, ``>= 0``): a scale computed elsewhere, such as a
            clip coefficient from a norm measured over several processes or buckets, or the
            inverse of a loss scale. The optimizer's own clipping and non-finite check apply to
            the scaled gradients (``GradientPolicy.decide``). The cached plan takes the scale as
            a per-step input, as it takes a schedule's lr.

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
        plans = self._plans
        plan = plans.plan
        if plan is not None:
            if grad_scale != 1.0:  # a per-step input of the plan, checked here
                grad_scale = check_real("grad_scale", grad_scale, minimum=0.0)
            if plans.schedules:  # the cheap per-step input: each schedule's lr, checked here
                count = plans.applied_steps
                last: Any = None
                lr = 0.0
                for gi, sched in plans.schedules:
                    if sched is not last:  # groups that share a schedule call it once
                        lr = schedule_value(gi, sched(count), count)
                        last = sched
                    if not plan.set_lr(gi, lr):
                        self._drop_plan()
                        return self._full_step(grad_scale)
            status = plan.step() if grad_scale == 1.0 else plan.step(grad_scale)
            if status == _APPLIED:
                if plans.measures_norm:
                    self.last_grad_norm = plan.last_norm
                return True
            if status == _SKIPPED:
                self.skipped_steps += 1
                return False
            self._drop_plan()  # something changed: the full path
        return self._full_step(grad_scale)

    def _checked_settings(self) -> tuple[GradientPolicy, Storage, str]:
        s = self._settings
        policy = GradientPolicy.checked(s["clip_grad_norm"], s["skip_nonfinite"])
        storage = Storage.checked(s["stochastic_rounding"], s["seed"], s["state_dtype"])
        return policy, storage, check_backend(s["backend"])

    def _full_step(self, grad_scale: float = 1.0) -> bool:
        policy, storage, backend = self._checked_settings()
        if grad_scale != 1.0:
            grad_scale = check_real("grad_scale", grad_scale, minimum=0.0)
        plans = self._plans
        count = plans.applied_steps
        options = self.get_options()
        lrs = [float(o.lr) for o in options]
        keys, labels, values, grads, state, group_of, offsets = self._collect(options)

        measures = policy.measures
        scale = grad_scale
        if measures:
            decision = policy.measure(labels, grads, backend, grad_scale)
            if decision.skipped:
                self.skipped_steps += 1
                return False
            self.last_grad_norm = decision.norm
            scale = decision.scale

        formula = self.formula
        fields = formula.state_fields
        n = len(keys)
        born = [False] * n
        params_state = self._state
        steps = [int(params_state.get(key, {}).get("step", 0)) for key in keys]
        needed = [formula.fields_needed(o) for o in options]
        for field in fields:
            column = state[field]
            missing = [i for i in range(n) if column[i] is None and field in needed[group_of[i]]]
            if missing:
                for i, arr in zip(missing, storage.new_states(formula, field, [values[i] for i in missing])):
                    column[i] = arr
                    born[i] = True
        halves = any(_half.is_half(v.dtype) for v in values)
        formula.apply(Batch(labels=labels, values=values, grads=grads, state=state, born=born, steps=steps,
                            group_of=group_of, options=options, keys=name_keys(keys) if halves else None,
                            offsets=offsets, rounding=storage.rounding(count), grad_scale=scale, backend=backend))
        for i, key in enumerate(keys):
            st = params_state.setdefault(key, {"step": 0})
            st["step"] = st.get("step", 0) + 1
            for field in fields:
                arr = state[field][i]
                if arr is not None:
                    st[field] = arr
        plans.record(lrs)
        plans.measures_norm = measures
        groups = self.param_groups
        # A plan for the next steps: only over groups that report their changes, and never for
        # float16/bfloat16 params (their rounding step and keys change at every step).
        if not halves and type(groups) is ParamGroups and groups.owned_by(self):
            plans.build(groups, keys, labels, values, grads, state, steps, group_of, options, policy, backend, formula)
        return True

    def _collect(self, options: list[Any]) -> tuple[
        list[str], list[str], list[np.ndarray], list[np.ndarray], dict[str, list[np.ndarray | None]], list[int],
        list[int] | None,
    ]:
        """The params that have a grad, validated: (keys, labels, values, grads, state, group_of,
        offsets); ``state`` maps each field to the existing array per tensor (None where it is
        not needed or not yet born); ``offsets`` is None when every param is whole."""
        keys: list[str] = []
        labels: list[str] = []
        values: list[np.ndarray] = []
        grads: list[np.ndarray] = []
        fields_all = self.formula.state_fields
        state: dict[str, list[np.ndarray | None]] = {f: [] for f in fields_all}
        columns = [state[f] for f in fields_all]
        group_of: list[int] = []
        offsets: list[int] | None = None
        seen: dict[Any, int] = {}
        params_state = self._state
        fields_needed = self.formula.fields_needed
        for gi, group in enumerate(self.param_groups):
            params = group["params"]
            if not isinstance(params, Mapping):
                raise TypeError(f"param_groups[{gi}]['params'] must be a dict, got {type(params).__name__}")
            needed = fields_needed(options[gi])
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
                check_tensor(label, value, grad, None, False)
                offset = p.get("offset", 0) if len(p) > 2 else 0
                if offset != 0 or offsets is not None:
                    offset = _check_offset(label, offset)
                    if offsets is None:
                        offsets = [0] * len(keys)
                    offsets.append(offset)
                st = params_state.get(name, {})
                for field, column in zip(fields_all, columns):
                    arr = st.get(field) if field in needed else None
                    if arr is not None:
                        check_companion(label, field.replace("_", " "), arr, value, written=True)
                    column.append(arr)
                keys.append(name)
                labels.append(label)
                values.append(value)
                grads.append(grad)
                group_of.append(gi)
        slot_names = ("value", "grad") + tuple(f.replace("_", " ") for f in fields_all)
        check_no_overlap(labels, [(values[i], grads[i], *(c[i] for c in columns)) for i in range(len(keys))],
                         slot_names)
        return keys, labels, values, grads, state, group_of, offsets

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
    # The plan (kept out of the way of users: these two are for tests and tools)

    @property
    def _plan(self) -> Any:
        """The current cached plan (None: the next step takes the full path)."""
        return self._plans.plan

    def _drop_plan(self) -> None:
        """Forget the cached plan, its steps counted first (the next step takes the full path)."""
        self._plans.drop(self._state)

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
        return checkpoint.state_dict(self)

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
        self.load_checkpoint(checkpoint.read(self, state_dict))

    def load_checkpoint(self, loaded: checkpoint.Checkpoint) -> None:
        """Take the contents of a state dict.

        Parameters
        ----------
        loaded : Checkpoint
            From ``checkpoint.read(self, state_dict)`` (what :meth:`minimalsgd.SGD.load_state_dict` does), or
            built for this optimizer by a caller that holds the state elsewhere (the sharded
            optimizer gives each rank's inner optimizer its slices of a full checkpoint). The
            caller vouches that it fits (``read`` checks it).

        Notes
        -----
        Settings, the groups' hyperparameters, counters and state are replaced; each state array
        is copied into a new array of its value's memory order.
        """
        self._drop_plan()
        for key, val in loaded.settings.items():
            if key in self._settings:
                self._settings[key] = val
            else:  # a setting a subclass added
                setattr(self, key, val)
        for group, hyper in zip(self.param_groups, loaded.hyperparameters):
            for key in self.hyperparameters:
                dict.__setitem__(group, key, hyper[key])
        storage = self.storage
        formula = self.formula
        values_by_name = {name: p for g in self.param_groups for name, p in g["params"].items()}
        state: dict[str, dict[str, Any]] = {}
        for name, entry in loaded.state.items():
            st: dict[str, Any] = {}
            if "step" in entry:
                st["step"] = entry["step"]
            for field in self.state_fields:
                if field in entry:
                    arr = storage.new_state(formula, field, values_by_name[name]["value"])
                    np.copyto(arr, entry[field])
                    st[field] = arr
            state[name] = st
        self._state = state
        self._plans.restore(loaded.applied_steps)
        self.skipped_steps = loaded.skipped_steps
        self.last_grad_norm = loaded.last_grad_norm

    def __repr__(self) -> str:
        parts = []
        for g in self.param_groups:
            parts.append("{" + ", ".join(f"{k}={g[k]!r}" for k in self.hyperparameters) + f", params={len(g['params'])}" + "}")
        return (
            f"{type(self).__name__}(param_groups=[{', '.join(parts)}], clip_grad_norm={self.clip_grad_norm}, "
            f"skip_nonfinite={self.skip_nonfinite}, backend={self.backend!r}, "
            f"stochastic_rounding={self.stochastic_rounding}, seed={self.seed}, state_dtype={self.state_dtype!r})"
        )


def _check_offset(label: str, offset: Any) -> int:
    """A param entry's ``"offset"``: an int >= 0 (the index of its first element in the whole param)."""
    if isinstance(offset, (bool, np.bool_)) or not isinstance(offset, (int, np.integer)):
        raise TypeError(f"{label}: offset must be an int >= 0, got {type(offset).__name__}")
    if offset < 0:
        raise ValueError(f"{label}: offset must be an int >= 0, got {offset}")
    return int(offset)
