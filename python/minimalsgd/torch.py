"""``minimalsgd.torch.SGD``: a drop-in ``torch.optim.SGD`` whose step is minimalsgd's fused kernel.

Change one import and keep everything else::

    from minimalsgd.torch import SGD          # instead of: from torch.optim import SGD
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)

It *is* a ``torch.optim.SGD`` (a subclass): the constructor, its checks and defaults,
``param_groups``, ``add_param_group``, ``zero_grad(set_to_none=True)``, ``state_dict()`` /
``load_state_dict()`` (``momentum_buffer`` per parameter, the same group keys) and every LR
scheduler work unchanged, and checkpoints move between the two in both directions. Only
``step()`` differs: per param group, every CPU float32/float64 parameter whose param, grad and
momentum buffer are dense and contiguous goes to the native multi-tensor kernel in one call,
through NumPy views of the tensors' own memory (no copies). Everything else — other devices,
half precision, sparse grads, non-contiguous layouts, ``differentiable=True``, AMP grad scaling —
goes through torch's own SGD code, with torch's results and no error.

Importing :mod:`minimalsgd` never imports torch; this module does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim.sgd import sgd as _torch_sgd

from . import _functional as F

__all__ = ["SGD"]

_NATIVE_DTYPES = (torch.float32, torch.float64)


def _native_ok(t: torch.Tensor) -> bool:
    return (
        t.device.type == "cpu"
        and t.dtype in _NATIVE_DTYPES
        and t.layout == torch.strided
        and t.is_contiguous()
        and not t.is_conj()
        and not t.is_neg()
    )


def _as_float(x: Any) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


class SGD(torch.optim.SGD):
    """``torch.optim.SGD`` with minimalsgd's fused native step (see the module docstring).

    The arguments are torch's: ``params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
    nesterov=False, *, maximize=False, foreach=None, differentiable=False, fused=None``.
    ``foreach`` and ``fused`` choose torch's implementation for the params that fall back to
    torch; the native params always take the fused native kernel.
    """

    def _native_group(self, group: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Step the group's native-eligible params in one native call; return the others."""
        momentum = group["momentum"]
        values, grads, buffers, firsts, params_native, new_buffers = [], [], [], [], [], []
        rest_params: list[torch.Tensor] = []
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            buf = self.state[p].get("momentum_buffer") if momentum != 0 else None
            if (
                F._core is not None
                and _native_ok(p)
                and not g.is_sparse
                and _native_ok(g)
                and g.dtype == p.dtype
                and (buf is None or (_native_ok(buf) and buf.dtype == p.dtype and buf.shape == p.shape))
                and g.shape == p.shape
            ):
                first = momentum != 0 and buf is None
                if first:
                    buf = torch.empty_like(p, memory_format=torch.contiguous_format)
                    new_buffers.append((p, buf))
                params_native.append(p)
                values.append(p.detach().numpy())
                grads.append(g.detach().numpy())
                if momentum != 0:
                    buffers.append(buf.detach().numpy())
                firsts.append(first)
            else:
                rest_params.append(p)
        if values:
            try:
                F._core.sgd_step(
                    values,
                    grads,
                    buffers if momentum != 0 else None,
                    firsts,
                    _as_float(group["lr"]),
                    float(momentum),
                    float(group["dampening"]),
                    _as_float(group["weight_decay"]),
                    bool(group["nesterov"]),
                    bool(group["maximize"]),
                    1.0,
                    check_overlap=True,
                )
            except ValueError:
                # Params that share memory (views of one tensor): torch steps them one after
                # another, which the single fused pass cannot reproduce. Let torch do it.
                return [], [p for p in group["params"] if p.grad is not None]
            for p, buf in new_buffers:
                self.state[p]["momentum_buffer"] = buf
        return params_native, rest_params

    def _torch_group(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """torch's own SGD math for these params of the group (as torch.optim.SGD.step does)."""
        momentum = group["momentum"]
        grads = [p.grad for p in params]
        bufs = [self.state[p].get("momentum_buffer") for p in params] if momentum != 0 else []
        _torch_sgd(
            params,
            grads,
            bufs,
            weight_decay=group["weight_decay"],
            momentum=momentum,
            lr=group["lr"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            has_sparse_grad=any(g.is_sparse for g in grads),
            foreach=group["foreach"] if not any(g.is_sparse for g in grads) else False,
            fused=group["fused"],
            grad_scale=getattr(self, "grad_scale", None),
            found_inf=getattr(self, "found_inf", None),
        )
        if momentum != 0:
            for p, buf in zip(params, bufs):
                self.state[p]["momentum_buffer"] = buf

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform a single optimization step (``closure`` re-evaluates the model and returns the loss)."""
        if any(g["differentiable"] for g in self.param_groups) or getattr(self, "grad_scale", None) is not None:
            # Autograd through the step, or AMP grad scaling: torch's own step serves these
            # (its decorator sets the grad mode the differentiable option needs).
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            _, rest = self._native_group(group)
            if rest:
                self._torch_group(group, rest)
        return loss
