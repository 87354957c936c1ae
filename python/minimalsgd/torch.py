"""``minimalsgd.torch.SGD``: a drop-in ``torch.optim.SGD`` whose step is minimalsgd's fused kernel.

Change one import and keep everything else::

    from minimalsgd.torch import SGD          # instead of: from torch.optim import SGD
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)

It *is* a ``torch.optim.SGD`` (a subclass): the constructor, its checks and defaults,
``param_groups``, ``add_param_group``, ``zero_grad(set_to_none=True)``, ``state_dict()`` /
``load_state_dict()`` (``momentum_buffer`` per parameter, the same group keys) and every LR
scheduler work unchanged, and checkpoints move between the two in both directions. Only
``step()`` differs: per param group, every CPU float32/float64/bfloat16/float16 parameter whose
param, grad and momentum buffer are dense and contiguous goes to the native multi-tensor kernel
in one call, in the tensors' own memory (no copies). bfloat16/float16 params compute in float32
and round each stored result once (to nearest even: within one unit in the last place of
``torch.optim.SGD(foreach=False)``, which rounds every intermediate too), or stochastically with
``stochastic_rounding=True`` (an extra option: random bits keyed by the group's ``seed`` and
``rounding_step``, which live in the param group and so in ``state_dict()``, and by the param's
index in the optimizer, as torch's state dict numbers them). Everything else — other devices,
complex, sparse grads, non-contiguous layouts, negative-bit views, views that
share memory, ``differentiable=True``, AMP grad scaling, hyperparameters the kernel refuses (a
negative lr set by hand) — goes through torch's own SGD code, with torch's results and no error.
The native step bumps the params' autograd version counters as torch's in-place ops do.

Importing :mod:`minimalsgd` never imports torch; this module does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import secrets

import torch
from torch.autograd.graph import increment_version as _increment_version
from torch.optim.sgd import sgd as _torch_sgd

from . import _functional as F

__all__ = ["SGD"]

# dtype -> the native kernel's code for it.
_KIND = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
_STRIDED = torch.strided


def _dense_cpu(t: torch.Tensor, dtype: torch.dtype, numel: int) -> bool:
    """A tensor the native kernel can walk as one flat buffer of `numel` elements of `dtype`."""
    return (
        t.dtype is dtype
        and t.is_cpu
        and t.layout is _STRIDED
        and t.is_contiguous()
        and not t.is_neg()
        and t.numel() == numel
    )


def _as_float(x: Any) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def _run_views(
    core: Any,
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    bufs: list[torch.Tensor] | None,
    firsts: list[bool],
    hyper: tuple[float, float, float, float, bool, bool, float],
) -> bool:
    """The native call for a ``_core`` without ``sgd_step_ptrs``: NumPy views of the tensors' own
    memory (``Tensor.numpy()`` shares it) through ``_core.sgd_step``, which checks the options and
    overlaps and raises before writing anything. False when it refused (nothing written)."""
    try:
        core.sgd_step(
            [p.detach().numpy() for p in params],
            [g.detach().numpy() for g in grads],
            None if bufs is None else [b.numpy() for b in bufs],
            firsts,
            *hyper,
            check_overlap=True,
        )
    except ValueError:
        return False
    return True


# Tells autograd about writes it did not see (torch.autograd.graph.increment_version, minus its
# Python wrapper where torch has the C entry).
_bump_versions = getattr(torch._C, "_increment_version", _increment_version)


class SGD(torch.optim.SGD):
    """``torch.optim.SGD`` with minimalsgd's fused native step (see the module docstring).

    The arguments are torch's: ``params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
    nesterov=False, *, maximize=False, foreach=None, differentiable=False, fused=None``.
    ``foreach`` and ``fused`` choose torch's implementation for the params that fall back to
    torch; the native params always take the fused native kernel. ``differentiable=True``
    (autograd through the step) hands the whole step to torch.

    Extra options: ``stochastic_rounding=True`` rounds the stored bfloat16/float16 results of the
    native params stochastically (params that fall back to torch round to nearest), with random
    bits of (``seed``, the group's ``rounding_step``, the param's index, element index); ``seed``
    defaults to one drawn from the OS. Both are per-group settings kept in ``state_dict()``.
    """

    def __init__(self, params: Any, lr: Any = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: Any = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False, fused: bool | None = None,
                 stochastic_rounding: bool = False, seed: int | None = None) -> None:
        sr, seed_checked, _ = F.check_rounding(stochastic_rounding, secrets.randbits(64) if seed is None else seed)
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, maximize=maximize, foreach=foreach, differentiable=differentiable,
                         fused=fused)
        self.defaults.update(stochastic_rounding=sr, seed=seed_checked, rounding_step=0)
        for group in self.param_groups:
            group.setdefault("stochastic_rounding", sr)
            group.setdefault("seed", seed_checked)
            group.setdefault("rounding_step", 0)

    def _rounding_of(self, group: dict[str, Any]) -> tuple[bool, int, int]:
        return F.check_rounding(group.get("stochastic_rounding", False), group.get("seed", 0),
                                group.get("rounding_step", 0))

    def _native_group(self, group: dict[str, Any], first_index: int = 0) -> list[torch.Tensor]:
        """Step the group's native-eligible params in one native call; return the others.

        Per param this checks only cheap tensor facts (dtype, device, layout, contiguity, neg bit,
        size) and hands the kernel the tensors' own memory: no copies.
        """
        core = F._core
        if core is None:
            return [p for p in group["params"] if p.grad is not None]
        by_address = getattr(core, "sgd_step_ptrs", None)
        momentum = group["momentum"]
        with_momentum = momentum != 0
        rest: list[torch.Tensor] = []
        params: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        bufs: list[torch.Tensor] = []
        firsts: list[bool] = []
        kinds: list[int] = []
        vptrs: list[int] = []
        gptrs: list[int] = []
        bptrs: list[int] = []
        sizes: list[int] = []
        keys: list[int] = []
        new_buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        state = self.state
        for index, p in enumerate(group["params"], first_index):
            g = p.grad
            if g is None:
                continue
            dtype = p.dtype
            kind = _KIND.get(dtype)
            n = p.numel()
            if (
                kind is None
                or not (p.is_cpu and p.layout is _STRIDED and p.is_contiguous())
                or p.is_neg()
                or not (g.dtype is dtype and g.is_cpu and g.layout is _STRIDED and g.is_contiguous())
                or g.is_neg()
                or g.numel() != n
            ):
                rest.append(p)
                continue
            first = False
            if with_momentum:
                buf = state[p].get("momentum_buffer")
                if buf is None:
                    buf = torch.empty_like(p, memory_format=torch.contiguous_format)
                    new_buffers.append((p, buf))
                    first = True
                elif not _dense_cpu(buf, dtype, n):
                    rest.append(p)
                    continue
                bufs.append(buf)
                bptrs.append(buf.data_ptr())
            params.append(p)
            grads.append(g)
            firsts.append(first)
            kinds.append(kind)
            vptrs.append(p.data_ptr())
            gptrs.append(g.data_ptr())
            sizes.append(n)
            keys.append(index)
        if params:
            hyper = (
                _as_float(group["lr"]), float(momentum), float(group["dampening"]), _as_float(group["weight_decay"]),
                bool(group["nesterov"]), bool(group["maximize"]), 1.0,
            )
            sr, seed, rstep = self._rounding_of(group)
            if by_address is not None:
                # The tensors (and so their memory) stay alive in `params`, `grads` and `bufs`.
                done = by_address(kinds, vptrs, gptrs, bptrs if with_momentum else None, sizes, firsts, *hyper,
                                  sr, seed, rstep, keys)
            elif any(k >= 2 for k in kinds):
                done = False  # an old _core without 16-bit kernels
            else:
                done = _run_views(core, params, grads, bufs if with_momentum else None, firsts, hyper)
            if not done:
                # Options the kernel refuses (a scheduler may set any lr), or params that share
                # memory (views of one tensor, which torch steps one after another): torch's own
                # code does the whole group. Nothing has been written.
                return [p for p in group["params"] if p.grad is not None]
            for p, buf in new_buffers:
                state[p]["momentum_buffer"] = buf
            # The kernel wrote through raw memory: tell autograd, as torch's in-place ops would,
            # so that a graph that saved a param before the step refuses to backward through it.
            _bump_versions(params + bufs if with_momentum else params)
        return rest

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
            foreach=group["foreach"],
            fused=group["fused"],
            grad_scale=getattr(self, "grad_scale", None),
            found_inf=getattr(self, "found_inf", None),
        )
        if momentum != 0:
            for p, buf in zip(params, bufs):
                self.state[p]["momentum_buffer"] = buf

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
        # The native kernel writes raw memory that autograd never sees, so only torch's code
        # needs no_grad (entering it costs more than a small native step).
        first_index = 0
        for group in self.param_groups:
            rest = self._native_group(group, first_index)
            if rest:
                with torch.no_grad():
                    self._torch_group(group, rest)
            first_index += len(group["params"])
            group["rounding_step"] = group.get("rounding_step", 0) + 1
        return loss
