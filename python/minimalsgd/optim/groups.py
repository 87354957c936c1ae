"""Param groups: the observable ``param_groups`` of an optimizer, the checks of a group, and the
evaluation of lr schedules.

``Optimizer.param_groups`` is a :class:`ParamGroups` list of :class:`ParamGroup` dicts: plain
``list`` and ``dict`` subclasses (they pickle and copy as plain ones) that tell their optimizer
when they change, so that the cached plan never runs stale settings and costs nothing to keep
current. A group is ``{"params": {name: {"value": ndarray, "grad": ndarray}}, <hyperparameter>:
...}`` with every hyperparameter of the optimizer's formula; any ``lr`` may be a schedule, a
callable of the 0-based count of applied steps returning that step's lr
(:mod:`minimalsgd.schedules`).
"""

from __future__ import annotations

import math
import numbers
import weakref
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

import numpy as np

from ..protocol import Formula

__all__ = [
    "ParamGroup",
    "ParamGroups",
    "Schedule",
    "check_group_keys",
    "group_options",
    "group_property",
    "lr_at",
    "new_groups",
    "schedule_value",
]

#: A learning-rate schedule: the lr of a step, given the 0-based count of applied steps.
Schedule = Callable[[int], float]


class ParamGroup(dict):
    """One entry of ``Optimizer.param_groups``: a plain dict (``{"params": {...}, "lr": ..., ...}``)
    that tells its optimizer when a key is set (``owner._param_group_changed(group, key)``; key
    None: several keys). It pickles and copies as a plain dict."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Any, items: Mapping[str, Any]) -> None:
        dict.__init__(self, items)
        self._owner = weakref.ref(owner)

    def owned_by(self, owner: Any) -> bool:
        """Whether this group reports its changes to ``owner``."""
        return self._owner() is owner

    def _changed(self, key: Any) -> None:
        owner = self._owner()
        if owner is not None:
            owner._param_group_changed(self, key)

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
    replaced, added or removed other than through ``add_param_group``:
    ``owner._param_group_changed(None, None)``). It pickles and copies as a plain list."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Any, groups: Iterable[Any] = ()) -> None:
        list.__init__(self, groups)
        self._owner = weakref.ref(owner)

    def owned_by(self, owner: Any) -> bool:
        """Whether this list and every group in it report their changes to ``owner``."""
        return self._owner() is owner and all(type(g) is ParamGroup and g.owned_by(owner) for g in self)

    def _changed(self) -> None:
        owner = self._owner()
        if owner is not None:
            owner._param_group_changed(None, None)

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


def group_property(name: str) -> property:
    """``opt.<name>``: the hyperparameter of every group (reading raises AttributeError when the
    groups differ; setting sets it in every group and in ``defaults``)."""

    def get(self: Any) -> Any:
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

    def set(self: Any, value: Any) -> None:
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


# ---------------------------------------------------------------------------------------------
# Checks (nothing here writes or creates anything)


def check_group_keys(group: Any, label: str, hyperparameters: tuple[str, ...],
                     global_settings: tuple[str, ...] = ()) -> None:
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
        if key != "params" and key not in hyperparameters:
            where = " (a global setting: give it to the constructor)" if key in global_settings else ""
            raise ValueError(f"{label}: unknown hyperparameter {key!r}{where}; a group may set {list(hyperparameters)}")


def group_options(formula: Formula, group: Mapping[str, Any], label: str, lr: float | None = None) -> Any:
    """The group's options by the formula's rules, with ``lr`` (its lr in force) or, when None,
    its own lr (a schedule is then only checked to be callable). Errors name the group (``label``)."""
    prefix = f"{label}: " if label else ""
    hyper = dict(group)
    missing = [k for k in formula.hyperparameters if k not in hyper]
    if missing:
        raise ValueError(f"{prefix}lacks hyperparameters {missing}")
    if lr is not None:
        hyper["lr"] = lr
    elif callable(hyper["lr"]):
        hyper["lr"] = 0.0  # a schedule: its values are checked at the step that calls it
    try:
        return formula.options(hyper)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{prefix}{e}") from None


def lr_at(i: int, group: Mapping[str, Any], count: int) -> Any:
    """The lr of group i at the step with ``count`` applied steps before it: a schedule's value
    (checked here) or the group's own lr (checked with the other options)."""
    lr = group.get("lr")
    if not callable(lr):
        return lr
    return schedule_value(i, lr(count), count)


def schedule_value(i: int, value: Any, count: int) -> float:
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


def new_groups(formula: Formula, defaults: Mapping[str, Any], existing: Iterable[Any], groups: Iterable[Any],
               global_settings: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``groups`` as given to the constructor or ``add_param_group``, checked and completed from
    ``defaults`` (torch's rule: a hyperparameter a group does not give is the default's), as
    plain dicts; names must be unique across ``existing`` groups and these. Nothing changes."""
    existing = list(existing)
    names = {name: i for i, g in enumerate(existing) if isinstance(g, Mapping) for name in g.get("params", ())}
    base = len(existing)
    ready = []
    for k, group in enumerate(groups):
        label = f"param_groups[{base + k}]"
        check_group_keys(group, label, formula.hyperparameters, global_settings)
        params = group["params"]
        for name in params:
            if name in names:
                raise ValueError(f"{label}: param {name!r} is already in param_groups[{names[name]}]; "
                                 "a name may be in one group only")
            names[name] = base + k
        full = {"params": params}
        for key in formula.hyperparameters:
            full[key] = group[key] if key in group else defaults[key]
        group_options(formula, full, label)
        ready.append(full)
    return ready
