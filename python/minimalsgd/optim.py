"""The param-dict optimizer: ``SGD(params, ...)`` with ``step()`` and ``zero_grad()``."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import numpy as np

from . import _functional as F

__all__ = ["SGD"]

Params = MutableMapping[str, MutableMapping[str, Any]]


class SGD:
    r"""Stochastic gradient descent over a dict of NumPy parameters, one fused pass per step.

    ``params`` maps a name to ``{"value": ndarray, "grad": ndarray}``. ``step()`` updates every
    value in place (the arrays you hold stay the same objects) with the update of
    :func:`minimalsgd.sgd_step`; a param whose ``"grad"`` is missing or ``None`` is skipped.
    Momentum buffers live in ``self.state[name]["momentum_buffer"]``, created on the first step
    that uses them, which sets them to the gradient.

    With ``clip_grad_norm``, the global L2 norm over all gradients is measured first and, when it
    exceeds the limit, every gradient is used as ``grad * limit / (norm + 1e-12)``. Grads are
    never written by ``step()``.

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
        backend: F.Backend = "auto",
    ) -> None:
        if not isinstance(params, MutableMapping):
            raise TypeError(f"params must be a dict of name -> {{'value': ndarray, 'grad': ndarray}}, got {type(params).__name__}")
        self.params = params
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.clip_grad_norm = clip_grad_norm
        self.dampening = dampening
        self.maximize = maximize
        self.backend = backend
        self._check_settings()
        #: name -> {"momentum_buffer": ndarray, "step": int}; plain NumPy and ints.
        self.state: dict[str, dict[str, Any]] = {}

    # -----------------------------------------------------------------------------------------

    def _check_settings(self) -> tuple[tuple[float, float, float, float, bool, bool], float | None, str]:
        hyper = F.check_hyperparameters(
            self.lr, self.momentum, self.dampening, self.weight_decay, self.nesterov, self.maximize
        )
        clip = None
        if self.clip_grad_norm is not None:
            clip = F.check_real("clip_grad_norm", self.clip_grad_norm, positive=True)
        return hyper, clip, F.check_backend(self.backend)

    def _collect(self, with_buffer: bool) -> tuple[list[str], list[np.ndarray], list[np.ndarray], list[Any]]:
        """The params that have a grad, validated; nothing is written or created here."""
        names: list[str] = []
        values: list[np.ndarray] = []
        grads: list[np.ndarray] = []
        buffers: list[Any] = []
        for name, p in self.params.items():
            label = f"params[{name!r}]"
            if not isinstance(p, MutableMapping):
                raise TypeError(f"{label} must be a dict with 'value' and 'grad', got {type(p).__name__}")
            grad = p.get("grad")
            if grad is None:
                continue
            if "value" not in p:
                raise ValueError(f"{label} has a grad but no 'value'")
            value = p["value"]
            buf = self.state.get(name, {}).get("momentum_buffer") if with_buffer else None
            F.check_tensor(label, value, grad, buf, with_buffer)
            names.append(label)
            values.append(value)
            grads.append(grad)
            buffers.append(buf)
        F.check_no_overlap(names, list(zip(values, grads, buffers)))
        return names, values, grads, buffers

    @staticmethod
    def _new_buffer(value: np.ndarray) -> np.ndarray:
        # Same memory order as the value (so the native kernel can walk both), native byte order.
        return np.empty_like(value, dtype=value.dtype.newbyteorder("="))

    # -----------------------------------------------------------------------------------------

    def step(self) -> bool:
        """Update every param that has a grad; returns True (the step was applied).

        Raises TypeError/ValueError, naming the param, before anything is written or created.
        """
        hyper, clip, backend = self._check_settings()
        with_buffer = hyper[1] != 0
        labels, values, grads, buffers = self._collect(with_buffer)
        scale = 1.0
        if clip is not None:
            scale = F.clip_scale(F.sum_of_squares(labels, grads, backend) ** 0.5, clip)
        keys = [name for name, p in self.params.items() if p.get("grad") is not None]
        firsts = [False] * len(keys)
        if with_buffer:
            for i, key in enumerate(keys):
                if buffers[i] is None:
                    buffers[i] = self._new_buffer(values[i])
                    firsts[i] = True
        F.run_step(labels, values, grads, buffers if with_buffer else None, firsts, hyper, scale, backend)
        for i, key in enumerate(keys):
            st = self.state.setdefault(key, {"step": 0})
            st["step"] = st.get("step", 0) + 1
            if with_buffer:
                st["momentum_buffer"] = buffers[i]
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

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov}, "
            f"weight_decay={self.weight_decay}, clip_grad_norm={self.clip_grad_norm}, "
            f"dampening={self.dampening}, maximize={self.maximize}, backend={self.backend!r})"
        )
