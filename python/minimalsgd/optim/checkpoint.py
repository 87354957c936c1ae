"""Checkpoints of an optimizer: :func:`state_dict` (format 2), :func:`read` (validation, format 1
upgraded) and :class:`Checkpoint` (what a valid state dict holds).

A state dict is a flat dict of plain Python and NumPy values: ``"format"`` (2), ``"optimizer"``
(the class name), the global settings (``"clip_grad_norm"``, None stored as NaN;
``"skip_nonfinite"``, ``"backend"``), the storage settings (``"stochastic_rounding"``, ``"seed"``,
``"state_dtype"``, ``""`` for None), ``"applied_steps"``, ``"skipped_steps"``,
``"last_grad_norm"`` (NaN for None); per group i ``"groups/<i>/params"`` (its names, an array of
str), ``"groups/<i>/<hyperparameter>"`` and ``"groups/<i>/lr_is_schedule"``; per param
``"state/<name>/step"`` and ``"state/<name>/<field>"``. Format 1 (one group, hyperparameters at
the top level, written before param groups existed) is read too.

The functions take the optimizer that the state dict is of (its class name, formula, settings,
groups and counters); :func:`state_dict` takes the per-param state separately, so a caller that
holds the state elsewhere (the sharded optimizer gathers it from every rank) writes the same
format without handing it to the optimizer, and :func:`read` gives the validated state without
loading it, for such a caller to keep its part of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from .. import _half
from .._router import check_backend
from .gradients import GradientPolicy
from .groups import group_options
from .storage import DEFAULTS as STORAGE_DEFAULTS
from .storage import Storage, check_state_dtype

__all__ = ["STATE_DICT_FORMAT", "Checkpoint", "read", "state_dict"]

#: Version of the state_dict() layout. 1: one group, hyperparameters at the top level (still read).
#: 2: "groups/<i>/..." per group, "applied_steps", "optimizer".
STATE_DICT_FORMAT = 2
STATE_PREFIX = "state/"
GROUP_PREFIX = "groups/"


class Checkpoint(NamedTuple):
    """The contents of a state dict, validated against an optimizer by :func:`minimalsgd.optim.checkpoint.read`.

    Parameters
    ----------
    settings : dict
        Global and storage settings by name (None for an unset clip or state dtype).
    hyperparameters : list of dict
        Per group, its hyperparameters by name (a saved schedule: the optimizer's own schedule).
    state : dict
        Param name -> ``{"step": int, <field>: ndarray, ...}`` (the arrays as given: validated in
        shape and dtype, not copied).
    applied_steps, skipped_steps : int
        The counters.
    last_grad_norm : float or None
        The norm of the latest measured step.
    """

    settings: dict[str, Any]
    hyperparameters: list[dict[str, Any]]
    state: dict[str, dict[str, Any]]
    applied_steps: int
    skipped_steps: int
    last_grad_norm: float | None


def state_dict(opt: Any, state: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """An optimizer's state dict, with per-param state that may be held elsewhere.

    Parameters
    ----------
    opt : Optimizer
        The optimizer: its class name, formula, settings, groups and counters.
    state : mapping, optional
        Param name -> ``{"step": int, <field>: ndarray}`` (default ``opt.state``).

    Returns
    -------
    dict
        The state dict (see the module docstring); arrays are copied.
    """
    if state is None:
        state = opt.state
    sd: dict[str, Any] = {"format": STATE_DICT_FORMAT, "optimizer": type(opt).__name__}
    for key in opt.global_settings:
        val = getattr(opt, key)
        sd[key] = math.nan if val is None else val
    sd["stochastic_rounding"] = bool(opt.stochastic_rounding)
    sd["seed"] = int(opt.seed)
    sd_dtype = check_state_dtype(opt.state_dtype)
    sd["state_dtype"] = "" if sd_dtype is None else sd_dtype.name
    sd["applied_steps"] = opt.applied_steps
    sd["skipped_steps"] = opt.skipped_steps
    sd["last_grad_norm"] = math.nan if opt.last_grad_norm is None else opt.last_grad_norm
    last_lrs = opt.last_lrs
    for i, g in enumerate(opt.param_groups):
        prefix = f"{GROUP_PREFIX}{i}/"
        sd[prefix + "params"] = np.array([str(n) for n in g["params"]], dtype=str)
        for key in opt.hyperparameters:
            sd[prefix + key] = g[key]
        scheduled = callable(g["lr"])
        sd[prefix + "lr_is_schedule"] = scheduled
        if scheduled:
            sd[prefix + "lr"] = last_lrs[i] if last_lrs is not None and i < len(last_lrs) else math.nan
    fields = opt.formula.state_fields
    for name, st in state.items():
        if "step" in st:
            sd[f"{STATE_PREFIX}{name}/step"] = int(st["step"])
        for field in fields:
            if st.get(field) is not None:
                sd[f"{STATE_PREFIX}{name}/{field}"] = np.array(st[field], copy=True)
    return sd


def read(opt: Any, state_dict: Mapping[str, Any]) -> Checkpoint:
    """The contents of a state dict that fits an optimizer; changes nothing.

    Parameters
    ----------
    opt : Optimizer
        The optimizer it is for.
    state_dict : mapping
        A state dict (format 2, or 1), as saved or as ``dict(np.load(file))`` gives it back.

    Returns
    -------
    Checkpoint
        Its contents, if it fits: the same optimizer, as many groups holding the same names,
        every state name a param of ``opt``, every state array of its value's shape and dtype
        (float32 for a 16-bit value with ``state_dtype=float32``), every setting and
        hyperparameter valid; otherwise a ValueError/TypeError says what does not fit. A group
        saved with a schedule needs a schedule in ``opt`` (it is kept).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    formula = opt.formula
    hyperparameters = formula.hyperparameters
    fields_all = formula.state_fields
    global_settings = tuple(opt.global_settings)
    param_groups = opt.param_groups
    sd = dict(state_dict)
    fmt = _scalar(sd.get("format"), "format")
    if fmt == 1:
        sd = upgrade_format_1(opt, sd)
    elif fmt != STATE_DICT_FORMAT:
        raise ValueError(f"state_dict format {fmt!r} is not supported (expected {STATE_DICT_FORMAT} or 1)")
    top = set(global_settings) | set(STORAGE_DEFAULTS) | {"format", "optimizer", "applied_steps", "skipped_steps",
                                                          "last_grad_norm"}
    for key in sd:
        if not (key in top or key.startswith(GROUP_PREFIX) or key.startswith(STATE_PREFIX)):
            raise ValueError(f"state_dict key {key!r} is not a known entry")
    kind = _scalar(sd.get("optimizer", type(opt).__name__), "optimizer")
    if kind != type(opt).__name__:
        raise ValueError(f"state_dict is of a {kind} optimizer, not {type(opt).__name__}")

    # Global settings, checked as step() would.
    missing = [k for k in global_settings if k not in sd]
    if missing:
        raise ValueError(f"state_dict lacks settings {missing}")
    glob = {k: _scalar(sd[k], k) for k in global_settings}
    for key, val in glob.items():
        if isinstance(val, float) and math.isnan(val):
            glob[key] = None
        elif isinstance(val, np.bool_):
            glob[key] = bool(val)
    for k, default in STORAGE_DEFAULTS.items():
        v = _scalar(sd.get(k, default), k)
        glob[k] = bool(v) if isinstance(v, np.bool_) else v
    glob["state_dtype"] = glob["state_dtype"] or None
    GradientPolicy.checked(glob.get("clip_grad_norm"), glob.get("skip_nonfinite", False))
    storage = Storage.checked(glob["stochastic_rounding"], glob["seed"], glob["state_dtype"])
    check_backend(glob.get("backend", "auto"))
    f32_state = storage.state_dtype is not None

    # Groups: the same count and names; hyperparameters checked by the formula's rules.
    n_saved = len({k.split("/")[1] for k in sd if k.startswith(GROUP_PREFIX) and k.count("/") >= 2})
    if n_saved != len(param_groups):
        raise ValueError(f"state_dict has {n_saved} param groups, the optimizer has {len(param_groups)}")
    new_groups: list[dict[str, Any]] = []
    known = set(hyperparameters) | {"params", "lr_is_schedule"}
    for key in sd:
        if key.startswith(GROUP_PREFIX):
            parts = key.split("/")
            if len(parts) != 3 or parts[2] not in known or not parts[1].isdigit() or int(parts[1]) >= n_saved:
                raise ValueError(f"state_dict key {key!r} is not a known group entry")
    for i, group in enumerate(param_groups):
        prefix = f"{GROUP_PREFIX}{i}/"
        label = f"param_groups[{i}]"
        lacking = [k for k in hyperparameters if prefix + k not in sd]
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
        hyper = {k: _saved_hyperparameter(sd[prefix + k], f"{prefix}{k}") for k in hyperparameters}
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
        group_options(formula, hyper, label)
        new_groups.append(hyper)

    # Per-param state: names must exist, arrays must fit.
    values_by_name = {name: p for g in param_groups for name, p in g["params"].items()}
    per_name: dict[str, dict[str, Any]] = {}
    fields = set(fields_all) | {"step"}
    for key, val in sd.items():
        if not key.startswith(STATE_PREFIX):
            continue
        name, _, field = key[len(STATE_PREFIX) :].rpartition("/")
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
        for field in fields_all:
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
    return Checkpoint(glob, new_groups, new_state, counters["applied_steps"], counters["skipped_steps"], last)


def upgrade_format_1(opt: Any, sd: dict[str, Any]) -> dict[str, Any]:
    """A format-1 state dict (one group, hyperparameters at the top) in format 2's layout; its
    applied-step count is taken as the largest per-param step."""
    hyperparameters = opt.formula.hyperparameters
    if len(opt.param_groups) != 1:
        raise ValueError(f"a format-1 state dict has 1 param group, the optimizer has {len(opt.param_groups)}")
    out: dict[str, Any] = {"format": STATE_DICT_FORMAT}
    for key, val in sd.items():
        if key in hyperparameters:
            out[f"{GROUP_PREFIX}0/{key}"] = val
        elif key != "format":
            out[key] = val
    missing = [k for k in hyperparameters if k not in sd]
    if missing:
        raise ValueError(f"state_dict lacks hyperparameters {missing}")
    steps = [_scalar(v, k) for k, v in sd.items() if k.startswith(STATE_PREFIX) and k.endswith("/step")]
    ints = [int(s) for s in steps if isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_))]
    out["applied_steps"] = max(ints, default=0)
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
