"""The param-dict optimizer: ``SGD(params, ...)`` with ``step()``, ``zero_grad()`` and checkpoints."""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np

from . import _functional as F
from ._arena import new_buffers
from ._pyplan import PythonPlan

__all__ = ["SGD"]

Params = MutableMapping[str, MutableMapping[str, Any]]

# The hyperparameters a state dict carries, in constructor order.
_HYPERPARAMETERS = (
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "clip_grad_norm",
    "dampening",
    "maximize",
    "skip_nonfinite",
    "backend",
)
# Attributes whose change invalidates the cached native plan.
_PLAN_INPUTS = frozenset(_HYPERPARAMETERS) | {"params"}
_STATE_PREFIX = "state/"
_STATE_FIELDS = ("momentum_buffer", "step")
STATE_DICT_FORMAT = 1


class SGD:
    r"""Stochastic gradient descent over a dict of NumPy parameters, one fused pass per step.

    ``params`` maps a name to ``{"value": ndarray, "grad": ndarray}``. ``step()`` updates every
    value in place (the arrays you hold stay the same objects) with the update of
    :func:`minimalsgd.sgd_step`; a param whose ``"grad"`` is missing or ``None`` is skipped.
    Momentum buffers live in ``self.state[name]["momentum_buffer"]``, created on the first step
    that uses them, which sets them to the gradient; ``self.state[name]["step"]`` counts the steps
    applied to that param.

    With ``clip_grad_norm``, the global L2 norm over all gradients is measured first and, when it
    exceeds the limit, every gradient is used as ``grad * limit / (norm + 1e-12)``. Grads are
    never written by ``step()``.

    With ``skip_nonfinite=True``, a step whose gradients hold a NaN or an infinity writes nothing
    and creates or advances no state; ``step()`` then returns False and ``skipped_steps`` counts
    it. The check is the same pass over the grads as the clip norm. ``last_grad_norm`` is the
    global norm of the latest step that measured it (clipping or checking), else None.

    Hyperparameters are plain attributes (``opt.lr = 0.01`` takes effect at the next step) and
    are checked at every step like :class:`torch.optim.SGD` checks them.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        clip_grad_norm: float | None = None,
        *,
        dampening: float = 0.0,
        maximize: bool = False,
        skip_nonfinite: bool = False,
        backend: F.Backend = "auto",
    ) -> None:
        if not isinstance(params, MutableMapping):
            raise TypeError(
                f"params must be a dict of name -> {{'value': ndarray, 'grad': ndarray}}, got {type(params).__name__}"
            )
        self.params = params
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.clip_grad_norm = clip_grad_norm
        self.dampening = dampening
        self.maximize = maximize
        self.skip_nonfinite = skip_nonfinite
        self.backend = backend
        self._check_settings()
        #: name -> {"momentum_buffer": ndarray, "step": int}; plain NumPy and ints.
        self.state = {}
        #: Steps that found a non-finite gradient and wrote nothing (skip_nonfinite=True).
        self.skipped_steps = 0
        #: The global gradient norm of the latest step that measured it, else None.
        self.last_grad_norm: float | None = None

    # -----------------------------------------------------------------------------------------
    # The cached native plan. After a step that the native kernel served whole, the validated
    # params are kept in a native Plan; later steps re-check only identities, data pointers,
    # shapes and flags there (a replaced grad is inspected and taken) and run in one call. Any
    # change it cannot vouch for sends the step down the full path below, which rebuilds it.
    # Setting a hyperparameter, params or state drops it.

    _plan: Any = None
    _plan_keys: list[str] = []
    _measures_norm = False
    _state: dict[str, dict[str, Any]]

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _PLAN_INPUTS:
            self._drop_plan()
        object.__setattr__(self, name, value)

    @property
    def state(self) -> dict[str, dict[str, Any]]:
        """name -> {"momentum_buffer": ndarray, "step": int}: plain NumPy arrays and ints."""
        self._flush_plan_steps()
        return self._state

    @state.setter
    def state(self, value: dict[str, dict[str, Any]]) -> None:
        self._drop_plan()
        object.__setattr__(self, "_state", value)

    def _flush_plan_steps(self) -> None:
        plan = self._plan
        if plan is not None and plan.applied:
            n = plan.applied
            plan.reset_applied()
            for key in self._plan_keys:
                self._state[key]["step"] += n

    def _drop_plan(self) -> None:
        if self.__dict__.get("_plan") is not None:
            self._flush_plan_steps()
            object.__setattr__(self, "_plan", None)

    def _build_plan(self, keys: list[str], labels: list[str], values: list[np.ndarray], grads: list[np.ndarray], buffers: list[Any],
                    hyper: tuple[float, float, float, float, bool, bool], clip: float | None, skip: bool, backend: str) -> None:
        core = F._core
        if type(self.params) is not dict or any(type(p) is not dict for p in self.params.values()):
            return
        if self._build_python_plan(keys, labels, values, grads, buffers, hyper, clip, skip, backend):
            return
        inners = []
        index = []
        included = {k: i for i, k in enumerate(keys)}
        for name, p in self.params.items():
            if type(p) is not dict:
                return
            inners.append(p)
            index.append(included.get(name, -1))
        with_buffer = hyper[1] != 0
        lr, momentum, dampening, weight_decay, nesterov, maximize = hyper
        plan = core.Plan(self.params, list(self.params.keys()), inners, index, values, grads,
                         buffers if with_buffer else None, lr, momentum, dampening, weight_decay, nesterov, maximize,
                         -1.0 if clip is None else clip, skip)
        object.__setattr__(self, "_plan", plan)
        object.__setattr__(self, "_plan_keys", keys)

    def _build_python_plan(self, keys: list[str], labels: list[str], values: list[np.ndarray], grads: list[np.ndarray],
                           buffers: list[Any], hyper: tuple[float, float, float, float, bool, bool], clip: float | None,
                           skip: bool, backend: str) -> bool:
        """When some tensor is the NumPy backend's, the same cached plan in Python (minimalsgd._pyplan)."""
        with_buffer = hyper[1] != 0
        if F._core is not None and backend != "numpy" and all(
            F.native_reason(values[i], grads[i], buffers[i] if with_buffer else None) is None for i in range(len(keys))
        ):
            return False
        plan = PythonPlan(self.params, keys, labels, values, grads, buffers if with_buffer else None, hyper, clip, skip, backend)
        object.__setattr__(self, "_plan", plan)
        object.__setattr__(self, "_plan_keys", keys)
        return True

    # -----------------------------------------------------------------------------------------
    # Validation (nothing here writes or creates anything)

    def _check_settings(self) -> tuple[tuple[float, float, float, float, bool, bool], float | None, bool, str]:
        hyper = F.check_hyperparameters(
            self.lr, self.momentum, self.dampening, self.weight_decay, self.nesterov, self.maximize
        )
        clip = None
        if self.clip_grad_norm is not None:
            clip = F.check_real("clip_grad_norm", self.clip_grad_norm, positive=True)
        skip = F.check_bool("skip_nonfinite", self.skip_nonfinite)
        return hyper, clip, skip, F.check_backend(self.backend)

    def _collect(self, with_buffer: bool) -> tuple[list[str], list[str], list[np.ndarray], list[np.ndarray], list[Any]]:
        """The params that have a grad, validated: (keys, labels, values, grads, buffers)."""
        keys: list[str] = []
        labels: list[str] = []
        values: list[np.ndarray] = []
        grads: list[np.ndarray] = []
        buffers: list[Any] = []
        for name, p in self.params.items():
            label = f"params[{name!r}]"
            if not isinstance(p, Mapping):
                raise TypeError(f"{label} must be a dict with 'value' and 'grad', got {type(p).__name__}")
            grad = p.get("grad")
            if grad is None:
                continue
            if "value" not in p:
                raise ValueError(f"{label} has a grad but no 'value'")
            value = p["value"]
            buf = self.state.get(name, {}).get("momentum_buffer") if with_buffer else None
            F.check_tensor(label, value, grad, buf, with_buffer)
            keys.append(name)
            labels.append(label)
            values.append(value)
            grads.append(grad)
            buffers.append(buf)
        F.check_no_overlap(labels, list(zip(values, grads, buffers)))
        return keys, labels, values, grads, buffers

    @staticmethod
    def _new_buffer(value: np.ndarray) -> np.ndarray:
        # Same memory order as the value (so the native kernel can walk both), native byte order.
        return np.empty_like(value, dtype=value.dtype.newbyteorder("="))

    # -----------------------------------------------------------------------------------------
    # The step

    def step(self) -> bool:
        """Update every param that has a grad. Returns True when the step was applied, False when
        ``skip_nonfinite`` found a NaN or infinity in the gradients (then nothing was written).

        Raises TypeError/ValueError, naming the param, before anything is written or created.
        """
        plan = self._plan
        if plan is not None:
            status = plan.step(self.params)
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
        hyper, clip, skip, backend = self._check_settings()
        with_buffer = hyper[1] != 0
        keys, labels, values, grads, buffers = self._collect(with_buffer)

        scale = 1.0
        if clip is not None or skip:
            norm = math.sqrt(F.sum_of_squares(labels, grads, backend))
            if skip and not math.isfinite(norm) and not _all_finite_confirmed(norm, grads):
                self.skipped_steps += 1
                return False
            self.last_grad_norm = norm
            scale = F.clip_scale(norm, clip)

        firsts = [False] * len(keys)
        if with_buffer:
            missing = [i for i in range(len(keys)) if buffers[i] is None]
            # Packed params (pack_params) get buffers laid out like their arena: adjacent likewise.
            for i, buf in zip(missing, new_buffers([values[i] for i in missing])):
                buffers[i] = buf
                firsts[i] = True
        F.run_step(labels, values, grads, buffers if with_buffer else None, firsts, hyper, scale, backend)
        state = self.state
        for i, key in enumerate(keys):
            st = state.setdefault(key, {"step": 0})
            st["step"] = st.get("step", 0) + 1
            if with_buffer:
                st["momentum_buffer"] = buffers[i]
        object.__setattr__(self, "_measures_norm", clip is not None or skip)
        self._build_plan(keys, labels, values, grads, buffers, hyper, clip, skip, backend)
        return True

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero every grad in place (or set it to None with ``set_to_none=True``).

        Every grad is checked first: a read-only or non-array grad raises and nothing is zeroed.
        """
        keys = []
        for name, p in self.params.items():
            grad = p.get("grad")
            if grad is None:
                continue
            if not set_to_none:
                if not isinstance(grad, np.ndarray):
                    raise TypeError(f"params[{name!r}]: grad must be a numpy.ndarray, got {type(grad).__name__}")
                if not grad.flags.writeable:
                    raise ValueError(f"params[{name!r}]: grad is read-only and cannot be zeroed in place")
            keys.append(name)
        for name in keys:
            if set_to_none:
                self.params[name]["grad"] = None
            else:
                self.params[name]["grad"][...] = 0

    # -----------------------------------------------------------------------------------------
    # Checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as a flat dict of plain Python and NumPy values.

        Keys: every hyperparameter (``"lr"``, ``"momentum"``, ... ; ``clip_grad_norm`` None is
        stored as NaN), ``"skipped_steps"``, ``"last_grad_norm"`` (NaN for None), ``"format"``, and
        per param ``"state/<name>/step"`` and ``"state/<name>/momentum_buffer"`` (a copy). It
        pickles, and saves with ``np.savez(file, **opt.state_dict())``; ``dict(np.load(file))``
        loads back.
        """
        sd: dict[str, Any] = {"format": STATE_DICT_FORMAT}
        for key in _HYPERPARAMETERS:
            sd[key] = getattr(self, key)
        sd["clip_grad_norm"] = math.nan if self.clip_grad_norm is None else float(self.clip_grad_norm)
        sd["skipped_steps"] = self.skipped_steps
        sd["last_grad_norm"] = math.nan if self.last_grad_norm is None else self.last_grad_norm
        for name, st in self.state.items():
            if "step" in st:
                sd[f"{_STATE_PREFIX}{name}/step"] = int(st["step"])
            if st.get("momentum_buffer") is not None:
                sd[f"{_STATE_PREFIX}{name}/momentum_buffer"] = np.array(st["momentum_buffer"], copy=True)
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore hyperparameters, counters and momentum buffers from :meth:`state_dict`.

        The state dict must fit the params: every name in it is a key of ``params`` and every
        momentum buffer has the shape and dtype of its value. Otherwise a ValueError/TypeError
        says what does not fit, and nothing changes. Buffers are copied into arrays of the
        value's memory order, so training continues bit for bit as if it had never stopped.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        sd = dict(state_dict)
        fmt = _scalar(sd.get("format"), "format")
        if fmt != STATE_DICT_FORMAT:
            raise ValueError(f"state_dict format {fmt!r} is not supported (expected {STATE_DICT_FORMAT})")
        missing = [k for k in _HYPERPARAMETERS if k not in sd]
        if missing:
            raise ValueError(f"state_dict lacks hyperparameters {missing}")

        # Hyperparameters: decode, then check them exactly as step() would.
        hyper = {k: _scalar(sd[k], k) for k in _HYPERPARAMETERS}
        clip = hyper["clip_grad_norm"]
        hyper["clip_grad_norm"] = None if clip is None or (isinstance(clip, float) and math.isnan(clip)) else clip
        for k in ("nesterov", "maximize", "skip_nonfinite"):
            if isinstance(hyper[k], np.bool_):
                hyper[k] = bool(hyper[k])
        trial = object.__new__(SGD)
        trial.__dict__.update(hyper)
        trial._check_settings()

        # Per-param state: names must exist, buffers must fit.
        per_name: dict[str, dict[str, Any]] = {}
        for key, val in sd.items():
            if not key.startswith(_STATE_PREFIX):
                continue
            name, _, field = key[len(_STATE_PREFIX) :].rpartition("/")
            if field not in _STATE_FIELDS or not name:
                raise ValueError(f"state_dict key {key!r} is not a known state entry")
            per_name.setdefault(name, {})[field] = val
        new_state: dict[str, dict[str, Any]] = {}
        for name, fields in per_name.items():
            label = f"params[{name!r}]"
            if name not in self.params:
                raise ValueError(f"state_dict has state for {name!r}, which is not in params")
            entry: dict[str, Any] = {}
            if "step" in fields:
                step = _scalar(fields["step"], f"{label} step")
                if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)) or step < 0:
                    raise ValueError(f"{label}: step must be an int >= 0, got {step!r}")
                entry["step"] = int(step)
            if "momentum_buffer" in fields:
                buf = fields["momentum_buffer"]
                value = self.params[name].get("value")
                if not isinstance(buf, np.ndarray):
                    raise TypeError(f"{label}: momentum buffer must be a numpy.ndarray, got {type(buf).__name__}")
                if not isinstance(value, np.ndarray):
                    raise TypeError(f"{label}: value must be a numpy.ndarray, got {type(value).__name__}")
                if buf.shape != value.shape:
                    raise ValueError(f"{label}: momentum buffer shape {buf.shape} does not match value shape {value.shape}")
                if buf.dtype.newbyteorder("=") != value.dtype.newbyteorder("="):
                    raise TypeError(f"{label}: momentum buffer dtype {buf.dtype} does not match value dtype {value.dtype}")
                entry["momentum_buffer"] = buf
            new_state[name] = entry
        skipped = _scalar(sd.get("skipped_steps", 0), "skipped_steps")
        if isinstance(skipped, (bool, np.bool_)) or not isinstance(skipped, (int, np.integer)) or skipped < 0:
            raise ValueError(f"skipped_steps must be an int >= 0, got {skipped!r}")
        last = _scalar(sd.get("last_grad_norm", math.nan), "last_grad_norm")
        last = None if last is None or math.isnan(float(last)) else float(last)

        # Everything fits: now change the optimizer.
        for key, val in hyper.items():
            setattr(self, key, val)
        state: dict[str, dict[str, Any]] = {}
        for name, entry in new_state.items():
            st: dict[str, Any] = {}
            if "step" in entry:
                st["step"] = entry["step"]
            if "momentum_buffer" in entry:
                buf = self._new_buffer(self.params[name]["value"])
                np.copyto(buf, entry["momentum_buffer"])
                st["momentum_buffer"] = buf
            state[name] = st
        self.state = state
        self.skipped_steps = int(skipped)
        self.last_grad_norm = last

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov}, "
            f"weight_decay={self.weight_decay}, clip_grad_norm={self.clip_grad_norm}, "
            f"dampening={self.dampening}, maximize={self.maximize}, "
            f"skip_nonfinite={self.skip_nonfinite}, backend={self.backend!r})"
        )


def _scalar(x: Any, name: str) -> Any:
    """A Python scalar from a scalar or a 0-d array (what np.load gives back)."""
    if isinstance(x, np.ndarray):
        if x.ndim != 0:
            raise ValueError(f"state_dict entry {name!r} must be a scalar, got an array of shape {x.shape}")
        x = x.item()
    elif isinstance(x, np.generic):
        x = x.item()
    return x


def _all_finite_confirmed(norm: float, grads: list[np.ndarray]) -> bool:
    """True if an infinite norm came from overflow of finite float64 squares, not from a NaN/Inf."""
    if math.isnan(norm):
        return False
    return all(bool(np.isfinite(g).all()) for g in grads)
