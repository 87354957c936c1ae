"""``minimalsgd.torch.SGD``, ``Adam`` and ``AdamW``: drop-in ``torch.optim`` optimizers whose step
is minimalsgd's fused kernel (SGD is described here; Adam and AdamW follow the same rules, see
:class:`Adam`).

Change one import and keep everything else::

    from minimalsgd.torch import SGD          # instead of: from torch.optim import SGD
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)

It *is* a ``torch.optim.SGD`` (a subclass): the constructor, its checks and defaults,
``param_groups``, ``add_param_group``, ``zero_grad(set_to_none=True)``, ``state_dict()`` /
``load_state_dict()`` (``momentum_buffer`` per parameter, the same group keys) and every LR
scheduler work unchanged, and checkpoints move between the two in both directions. Only
``step()`` differs: per param group, every CPU float32/float64 parameter (SGD: also bfloat16 and
float16) whose param, grad and momentum buffer are dense and contiguous goes to the native
multi-tensor kernel in one call, in the tensors' own memory (no copies). bfloat16/float16 params
compute in float32 and round each stored result once (to nearest even: within one unit in the
last place of ``torch.optim.SGD(foreach=False)`` plus the roundings of the intermediates torch
stores), or stochastically with ``SGD(..., stochastic_rounding=True)`` (an extra option: random
bits keyed by the group's ``seed`` and ``rounding_step``, which live in the param group and so in
``state_dict()``, and by the param's index in the optimizer, as torch's state dict numbers
them). Everything else — other devices, half precision for Adam, complex, sparse grads, non-contiguous layouts, negative-bit views, views that
share memory, ``differentiable=True``, hyperparameters the kernel refuses (a negative lr set by
hand) — goes through torch's own SGD code, with torch's results and no error.
The native step bumps the params' autograd version counters as torch's in-place ops do.

torch's step contract for mixed precision is kept: with ``fused=True``
a ``torch.amp.GradScaler`` hands the step ``grad_scale`` and ``found_inf``; a ``found_inf`` of 1
skips the step of every fused group (nothing written, no state born), a power-of-two
``grad_scale`` is divided out inside the native kernel (multiplying by its exact reciprocal: the
same bits as torch's division) and the grads are left unscaled as torch's fused kernel leaves
them; any other ``grad_scale`` goes to torch's fused code. Set on a group that does not take the
fused path, either raises torch's ``AssertionError``. torch's fused-path checks raise torch's
errors, before anything is written.

Importing :mod:`minimalsgd` never imports torch; this module does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.graph import increment_version as _increment_version
from torch.optim.adam import adam as _torch_adam
from torch.optim.optimizer import _get_scalar_dtype
from torch.optim.sgd import sgd as _torch_sgd

from . import _functional as F
from . import _half

try:
    from torch.optim.optimizer import _device_dtype_check_for_fused
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
except ImportError:  # pragma: no cover - other torch versions; 2.13.0 has both
    def _get_fused_kernels_supported_devices() -> list[str]:
        return ["mps", "cuda", "xpu", "hpu", "cpu", "mtia", torch._C._get_privateuse1_backend_name()]

    def _device_dtype_check_for_fused(p: torch.Tensor, cuda_unsupported: bool = False) -> None:
        devices = _get_fused_kernels_supported_devices()
        if cuda_unsupported:
            devices.remove("cuda")
        if not (p.device.type in devices and torch.is_floating_point(p)):
            raise RuntimeError(
                "`fused=True` requires all the params to be floating point Tensors of "
                f"supported devices: {devices} but {p.dtype} and {p.device.type}"
            )

__all__ = ["SGD", "Adam", "AdamW"]

# dtype -> the native kernel's code for it.
_KIND = {torch.float32: 0, torch.float64: 1}
# SGD's kernel also takes the 16-bit storage types.
_SGD_KIND = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
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


# --- torch's step contract for grad scaling (GradScaler) and the fused-path checks ----------------
# A reusable piece: any drop-in whose torch twin has a fused path (SGD here; Adam/AdamW next) reads
# the step's grad_scale/found_inf through _AmpInputs and asks _takes_fused_path per group.

# What torch's single-tensor and foreach paths raise when grad_scale or found_inf is set.
_AMP_NOT_NONE = "Expected grad_scale and found_inf to be None"
# Dtypes torch's fused CPU kernels dispatch on (AT_DISPATCH_FLOATING_TYPES_AND2(kBFloat16, kHalf)).
_FUSED_DTYPES = frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16})


def _takes_fused_path(group: dict[str, Any]) -> bool:
    """True when torch's functional ``sgd``/``adam`` would run its fused implementation for this
    group: ``fused`` truthy and ``foreach`` not (``foreach=True`` wins; both ``None`` never picks
    fused). Only that path reads ``grad_scale``/``found_inf``; the others refuse them."""
    return bool(group.get("fused")) and not group.get("foreach")


def _fused_kernel_takes(p: torch.Tensor) -> bool:
    """A param torch's fused kernel can step (its dtype and device); for the others torch raises
    from inside the kernel, so the drop-in lets torch's own step raise it."""
    return p.dtype in _FUSED_DTYPES and p.device.type in _get_fused_kernels_supported_devices()


def _is_cpu_float_scalar(t: torch.Tensor) -> bool:
    return (
        isinstance(t, torch.Tensor)
        and t.dtype is torch.float32
        and t.is_cpu
        and t.layout is _STRIDED
        and t.numel() == 1
        and not t.requires_grad
    )


class _AmpInputs:
    """The ``grad_scale`` and ``found_inf`` that torch's step contract hands an optimizer.

    ``torch.amp.GradScaler.step`` sets them as attributes for optimizers with
    ``_step_supports_amp_scaling`` (torch's SGD/Adam/AdamW with ``fused=True``) and deletes them
    after the step; a user may set them by hand. torch's fused kernels then, per step:

    - skip the whole step when ``found_inf`` reads exactly 1.0 (the first float32 element; other
      values, even 2.0, step), writing nothing;
    - otherwise compute with ``grad / grad_scale`` (the float32 scale converted to the param's
      dtype) and store that unscaled grad back into ``p.grad``.

    The native kernel multiplies by a ``grad_scale`` coefficient instead. ``grad * (1/s)`` has the
    same bits as ``grad / s`` exactly when ``1/s`` is representable (then both round the same real
    number): ``s`` a positive power of two whose reciprocal fits in float32, which every
    ``GradScaler`` scale is with the default growth and backoff factors. :meth:`kernel_scale`
    returns that reciprocal, or ``None`` when the step must go to torch's fused code.

    Reuse (Adam/AdamW drop-ins): ``amp = _AmpInputs(self)``; if ``amp.is_set and not
    amp.native_readable``: run torch's own step. Before writing anything, per group:
    ``amp.check_allowed(_takes_fused_path(group))``. Then per fused group: ``if amp.skips:
    continue`` (no state born); ``scale = amp.kernel_scale()``; ``None`` -> torch's fused code for
    the group, else the kernel with that ``grad_scale`` followed by ``amp.unscale_grads_(grads,
    scale)``. torch's fused Adam also undoes its step-count increment by ``found_inf``: skipping
    before counting gives the same counts.
    """

    __slots__ = ("grad_scale", "found_inf")

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.grad_scale: torch.Tensor | None = getattr(optimizer, "grad_scale", None)
        self.found_inf: torch.Tensor | None = getattr(optimizer, "found_inf", None)

    @property
    def is_set(self) -> bool:
        """Either input is present (torch's non-fused paths then raise)."""
        return self.grad_scale is not None or self.found_inf is not None

    @property
    def native_readable(self) -> bool:
        """Both absent or CPU float32 one-element tensors, which the native path reads as torch's
        kernel does. Anything else (another dtype, device or size) is served by torch's own step,
        which reads or refuses it in its own way."""
        return (self.grad_scale is None or _is_cpu_float_scalar(self.grad_scale)) and (
            self.found_inf is None or _is_cpu_float_scalar(self.found_inf)
        )

    def check_allowed(self, fused_path: bool) -> None:
        """torch's ``AssertionError`` for a group whose path refuses these inputs."""
        if self.is_set and not fused_path:
            raise AssertionError(_AMP_NOT_NONE)

    @property
    def skips(self) -> bool:
        """The fused step is skipped: ``found_inf`` reads exactly 1.0, as torch's kernels test it."""
        return self.found_inf is not None and float(self.found_inf.reshape(-1)[0]) == 1.0

    def kernel_scale(self) -> float | None:
        """The native kernel's ``grad_scale`` coefficient: 1.0 without a ``grad_scale``; ``1/s``
        when that multiplication is bit-identical to torch's division by ``s`` in float32 and
        float64; ``None`` otherwise (torch's fused code must divide)."""
        if self.grad_scale is None:
            return 1.0
        s = float(self.grad_scale.reshape(-1)[0])
        if not (math.isfinite(s) and s > 0.0) or math.frexp(s)[0] != 0.5:
            return None
        inv = 1.0 / s  # exact in float64: s is a power of two
        if inv > 2.0**127 or inv < 2.0**-149:  # not a float32 (subnormal powers of two still are)
            return None
        return inv

    def unscale_grads_(self, grads: list[torch.Tensor], scale: float) -> None:
        """Leave the grads unscaled (``grad * scale``, the same bits as torch's ``grad / s``), as
        torch's fused kernel leaves them; a no-op without a ``grad_scale``."""
        if self.grad_scale is not None and grads:
            with torch.no_grad():
                torch._foreach_mul_(grads, scale)


def _torch_step(optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None) -> Any:
    """The torch twin's own ``step`` body (torch.optim.SGD/Adam), without the step-hook wrapper
    torch puts on the class once an instance exists (the drop-in's step is wrapped already: hooks
    must fire once)."""
    fn = optimizer._torch_class.step  # type: ignore[attr-defined]
    while getattr(fn, "hooked", False):  # AdamW's wrapper may wrap Adam's
        fn = fn.__wrapped__
    return fn(optimizer, closure)


class _NativeStep:
    """The step of every drop-in, on its torch twin (``_torch_class``): per group, plan which
    params the native kernel takes (checking only cheap tensor facts, writing nothing), then run
    each plan's native call and hand the rest to torch's own functional code. A subclass supplies
    the formula's pieces: ``_check_fused_params``, ``_plan_group`` (None: torch's step must run),
    ``_run_native`` (False: refused, nothing written), ``_torch_group`` and ``_skip_group`` (a fused
    group whose step ``found_inf`` skips)."""

    _torch_class: type[torch.optim.Optimizer]
    param_groups: list[dict[str, Any]]

    def _skip_group(self, plan: Any) -> None:
        """A skipped fused step writes nothing and starts no state."""

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform a single optimization step, as torch's ``step``.

        Per param group, the params the native kernel can take go to it in one call; the rest to
        torch's own code for this optimizer.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss (called with grad enabled).

        Returns
        -------
        object
            The closure's loss, or None without a closure.

        Raises
        ------
        RuntimeError, AssertionError
            torch's errors, with torch's types and messages: ``fused=True`` with a param that is
            not floating point or not on a fused-capable device, sparse gradients,
            ``grad_scale``/``found_inf`` set on a group that does not take the fused path.
            Every group is checked first: they are raised before any param, state or grad is
            written.
        """
        amp = _AmpInputs(self)
        amp_set = amp.is_set
        if any(g["differentiable"] for g in self.param_groups) or (amp_set and not amp.native_readable):
            # Autograd through the step, or AMP inputs the native path does not read as torch's
            # kernel does: torch's own step serves these (its decorator sets the grad mode the
            # differentiable option needs).
            return _torch_step(self, closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        skip = amp_set and amp.skips
        fused_scale = None if skip else amp.kernel_scale()
        plans: list[Any] = []
        for group in self.param_groups:
            fused = False
            if group["fused"]:
                self._check_fused_params(group)
                fused = _takes_fused_path(group)
            if amp_set:
                amp.check_allowed(fused)
            plan = self._plan_group(group, fused, fused_scale if fused else 1.0)
            if plan is None:
                # A fused group holding a param torch's fused kernel refuses (complex, say): torch's
                # own step raises its own error at its own point.
                _torch_step(self, None)
                return loss
            if fused and skip:
                self._skip_group(plan)
            else:
                plans.append(plan)
        for plan in plans:
            rest = plan.rest
            if plan.params and not self._run_native(plan, amp):
                # Options the kernel refuses (a scheduler may set any lr), or params that share
                # memory (views of one tensor, which torch steps one after another): torch's own
                # code does the whole group. Nothing has been written.
                rest = plan.everything_to_torch()
            if rest:
                # The native kernel writes raw memory that autograd never sees, so only torch's
                # code needs no_grad (entering it costs more than a small native step).
                with torch.no_grad():
                    self._torch_group(plan.group, rest)
        return loss


class _GroupPlan:
    """One param group's step, decided before anything is written: the native part (tensors and
    their addresses) and the params left to torch."""

    __slots__ = (
        "group", "params", "grads", "bufs", "firsts", "kinds", "vptrs", "gptrs", "bptrs", "sizes",
        "new_buffers", "rest", "with_momentum", "fused", "scale", "keys",
    )

    def __init__(self, group: dict[str, Any], fused: bool, scale: float | None) -> None:
        self.keys: list[int] = []  # stochastic-rounding keys: the params' indices in the optimizer
        self.group = group
        self.fused = fused
        self.scale = scale  # the kernel's grad_scale; None: torch's code runs the whole group
        self.with_momentum = group["momentum"] != 0
        self.params: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []
        self.bufs: list[torch.Tensor] = []
        self.firsts: list[bool] = []
        self.kinds: list[int] = []
        self.vptrs: list[int] = []
        self.gptrs: list[int] = []
        self.bptrs: list[int] = []
        self.sizes: list[int] = []
        self.new_buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.rest: list[torch.Tensor] = []

    def everything_to_torch(self) -> list[torch.Tensor]:
        return [p for p in self.group["params"] if p.grad is not None]


class SGD(_NativeStep, torch.optim.SGD):
    """``torch.optim.SGD`` with minimalsgd's fused native step (see the module docstring).

    A subclass of ``torch.optim.SGD``: the constructor, its checks and defaults, ``param_groups``,
    ``add_param_group``, ``zero_grad``, ``state_dict`` / ``load_state_dict`` and every LR
    scheduler are torch's; only :meth:`step` differs. Per param group, every CPU float32, float64,
    bfloat16 or float16 param whose param, grad and momentum buffer are dense and contiguous goes
    to the native kernel in one call; everything else goes to torch's own SGD code.

    Parameters
    ----------
    params : iterable
        torch's: tensors or param groups (dicts).
    lr : float or Tensor, default 1e-3
        As torch's.
    momentum, dampening, weight_decay, nesterov, maximize
        As torch's (defaults 0, 0, 0, False, False).
    foreach : bool, optional
        Chooses torch's implementation for the params that fall back to torch.
    differentiable : bool, default False
        Autograd through the step: hands the whole step to torch.
    fused : bool, optional
        With ``fused=True`` (and ``foreach`` not True), torch's fused step contract applies: a
        ``GradScaler``'s ``grad_scale``/``found_inf`` are read (``found_inf == 1`` skips the step
        of every fused group, nothing written; a power-of-two ``grad_scale`` is divided out in the
        kernel and the grads are left unscaled, as torch's fused kernel leaves them), and torch's
        fused-path checks run. The native params always take the fused native kernel.
    stochastic_rounding : bool, default False
        An extra option: round the stored bfloat16/float16 results of the native params
        stochastically (params that fall back to torch round to nearest), with random bits of
        (``seed``, the group's ``rounding_step``, the param's index over all groups, element
        index). Kept per group (``stochastic_rounding``, ``seed``, ``rounding_step``) and so in
        ``state_dict()``; without the option the groups hold exactly torch's keys.
    seed : int, optional
        The stochastic-rounding seed, an int in ``[0, 2**64)``; by default
        :data:`minimalsgd.DEFAULT_SEED` (a fixed number: reproducible by default, and the same in
        every process of a data-parallel run).

    Raises
    ------
    ValueError, RuntimeError
        torch's constructor checks (a negative ``lr``, ``nesterov`` without momentum, ``fused``
        with ``foreach`` or ``differentiable``, ...), with torch's messages; ``seed`` not an int
        in ``[0, 2**64)`` or ``stochastic_rounding`` not a bool (TypeError/ValueError naming it).

    See Also
    --------
    minimalsgd.SGD : the optimizer over NumPy param dicts.

    Examples
    --------
    >>> import torch
    >>> from minimalsgd.torch import SGD
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    >>> isinstance(opt, torch.optim.SGD)
    True
    >>> model(torch.ones(3, 4)).square().sum().backward()
    >>> opt.step()
    >>> sorted(opt.state_dict()["state"][0])
    ['momentum_buffer']
    """

    _torch_class = torch.optim.SGD

    def __init__(self, params: Any, lr: Any = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: Any = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False, fused: bool | None = None,
                 stochastic_rounding: bool = False, seed: int | None = None) -> None:
        sr, seed_checked, _ = F.check_rounding(stochastic_rounding, _half.DEFAULT_SEED if seed is None else seed)
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, maximize=maximize, foreach=foreach, differentiable=differentiable,
                         fused=fused)
        if sr:
            # Only then: by default the defaults and groups are exactly torch's.
            self.defaults.update(stochastic_rounding=sr, seed=seed_checked, rounding_step=0)
            for group in self.param_groups:
                group.setdefault("stochastic_rounding", sr)
                group.setdefault("seed", seed_checked)
                group.setdefault("rounding_step", 0)

    def _first_index(self, group: dict[str, Any]) -> int:
        """The index (over all groups, as torch's state dict numbers params) of the group's first param."""
        n = 0
        for g in self.param_groups:
            if g is group:
                return n
            n += len(g["params"])
        return n

    def _check_fused_params(self, group: dict[str, Any]) -> None:
        """torch.optim.SGD's fused-path check: the first param with a grad of the optimizer's first
        fused step must be a floating point tensor on a fused-capable device (torch checks once per
        optimizer, and so do we)."""
        if group["fused"] and getattr(self, "_need_device_dtype_check_for_fused", True):
            for p in group["params"]:
                if p.grad is not None:
                    _device_dtype_check_for_fused(p)
                    self._need_device_dtype_check_for_fused = False
                    break

    def _plan_group(self, group: dict[str, Any], fused: bool, scale: float | None) -> _GroupPlan | None:
        """Sort the group's params into native and torch's, checking only cheap tensor facts
        (dtype, device, layout, contiguity, neg bit, size); nothing is written. None: a fused group
        holds a param torch's fused kernel refuses, so torch's own step must run (and raise)."""
        plan = _GroupPlan(group, fused, scale)
        native = scale is not None and F._core is not None
        with_momentum = plan.with_momentum
        state = self.state
        sparse = unfit = False
        # Local lists (the plan's own): appends in this loop are the per-param cost of a step.
        rest, params, grads, bufs, firsts = plan.rest, plan.params, plan.grads, plan.bufs, plan.firsts
        kinds, vptrs, gptrs, bptrs, sizes = plan.kinds, plan.vptrs, plan.gptrs, plan.bptrs, plan.sizes
        keys = plan.keys
        for index, p in enumerate(group["params"], self._first_index(group) if "rounding_step" in group else 0):
            g = p.grad
            if g is None:
                continue
            dtype = p.dtype
            kind = _SGD_KIND.get(dtype)
            n = p.numel()
            if (
                not native
                or kind is None
                or not (p.is_cpu and p.layout is _STRIDED and p.is_contiguous())
                or p.is_neg()
                or not (g.dtype is dtype and g.is_cpu and g.layout is _STRIDED and g.is_contiguous())
                or g.is_neg()
                or g.numel() != n
            ):
                rest.append(p)
                if fused:
                    sparse = sparse or g.is_sparse
                    unfit = unfit or not _fused_kernel_takes(p)
                continue
            first = False
            if with_momentum:
                st = state.get(p)  # not state[p]: planning must not add entries to the defaultdict
                buf = None if st is None else st.get("momentum_buffer")
                if buf is None:
                    buf = torch.empty_like(p, memory_format=torch.contiguous_format)
                    plan.new_buffers.append((p, buf))
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
        if sparse:
            raise RuntimeError("`_fused_sgd` does not support sparse gradients")  # torch's _fused_sgd
        return None if unfit else plan

    def _run_native(self, plan: _GroupPlan, amp: _AmpInputs) -> bool:
        """The plan's native call; False when the kernel refused its options or overlapping params
        (nothing written)."""
        group = plan.group
        with_momentum = plan.with_momentum
        assert plan.scale is not None
        hyper = (
            _as_float(group["lr"]), float(group["momentum"]), float(group["dampening"]),
            _as_float(group["weight_decay"]), bool(group["nesterov"]), bool(group["maximize"]), plan.scale,
        )
        core = F._core
        by_address = getattr(core, "sgd_step_ptrs", None)
        sr, seed, rstep = F.check_rounding(group.get("stochastic_rounding", False), group.get("seed", 0),
                                           group.get("rounding_step", 0))
        if by_address is not None:
            # The tensors (and so their memory) stay alive in the plan's lists.
            done = by_address(
                plan.kinds, plan.vptrs, plan.gptrs, plan.bptrs if with_momentum else None, plan.sizes, plan.firsts,
                *hyper, sr, seed, rstep, plan.keys,
            )
        elif any(k >= 2 for k in plan.kinds):
            done = False  # a _core without 16-bit kernels
        else:
            done = _run_views(core, plan.params, plan.grads, plan.bufs if with_momentum else None, plan.firsts, hyper)
        if not done:
            return False
        if "rounding_step" in group:
            group["rounding_step"] = rstep + 1
        state = self.state
        for p, buf in plan.new_buffers:
            state[p]["momentum_buffer"] = buf
        # The kernel wrote through raw memory: tell autograd, as torch's in-place ops would,
        # so that a graph that saved a param before the step refuses to backward through it.
        _bump_versions(plan.params + plan.bufs if with_momentum else plan.params)
        if plan.fused:
            amp.unscale_grads_(plan.grads, plan.scale)
        return True

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


# --- Adam and AdamW ----------------------------------------------------------------------------------


class _AdamPlan:
    """One param group's Adam step, decided before anything is written: the native part (tensors,
    their addresses and step counts) and the params left to torch."""

    __slots__ = (
        "group", "fused", "scale", "amsgrad", "params", "grads", "moments", "step_ts", "steps", "kinds", "ptrs",
        "sizes", "new_states", "rest",
    )

    def __init__(self, group: dict[str, Any], fused: bool, scale: float | None) -> None:
        self.group = group
        self.fused = fused
        self.scale = scale  # the kernel's grad_scale; None: torch's code runs the whole group
        self.amsgrad = bool(group["amsgrad"])
        self.params: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []
        self.moments: list[torch.Tensor] = []  # exp_avg, exp_avg_sq (, max_exp_avg_sq) of every param
        self.step_ts: list[torch.Tensor] = []  # torch's state["step"] tensors
        self.steps: list[int] = []  # the step each update makes (state["step"] + 1)
        self.kinds: list[int] = []
        self.ptrs: list[list[int]] = [[], [], [], [], []]  # value, grad, exp_avg, exp_avg_sq, max_exp_avg_sq
        self.sizes: list[int] = []
        self.new_states: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
        self.rest: list[torch.Tensor] = []

    def everything_to_torch(self) -> list[torch.Tensor]:
        return [p for p in self.group["params"] if p.grad is not None]


_ADAM_SPARSE = "Adam does not support sparse gradients, please consider SparseAdam instead"  # torch's


class _AdamStep(_NativeStep):
    """The formula's pieces of the Adam and AdamW drop-ins (torch's Adam with and without
    ``decoupled_weight_decay``); state as torch keeps it: ``step`` (a 0-d float tensor),
    ``exp_avg``, ``exp_avg_sq`` and, with ``amsgrad``, ``max_exp_avg_sq``."""

    state: Any

    def _check_fused_params(self, group: dict[str, Any]) -> None:
        """torch checks fused params when it starts their state: see _plan_group and torch's
        _init_group, which serves the rest."""

    def _new_state(self, p: torch.Tensor, group: dict[str, Any]) -> dict[str, torch.Tensor]:
        """torch's lazy state of a param (step 0, zero moments), contiguous for the kernel."""
        fmt = torch.contiguous_format
        st = {
            "step": torch.zeros((), dtype=_get_scalar_dtype(is_fused=True), device=p.device)
            if group["fused"]
            else torch.tensor(0.0, dtype=_get_scalar_dtype()),
            "exp_avg": torch.zeros_like(p, memory_format=fmt),
            "exp_avg_sq": torch.zeros_like(p, memory_format=fmt),
        }
        if group["amsgrad"]:
            st["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=fmt)
        return st

    def _plan_group(self, group: dict[str, Any], fused: bool, scale: float | None) -> _AdamPlan | None:
        """Sort the group's params into native and torch's, checking only cheap tensor facts;
        nothing is written. None: a fused group holds a param torch's fused kernel refuses, so
        torch's own step must run (and raise)."""
        plan = _AdamPlan(group, fused, scale)
        native = scale is not None and F._core is not None and not group["capturable"]
        names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if plan.amsgrad else ("exp_avg", "exp_avg_sq")
        state = self.state
        unfit = False
        candidates = []
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise RuntimeError(_ADAM_SPARSE)
            dtype = p.dtype
            kind = _KIND.get(dtype)
            n = p.numel()
            if not native or kind is None or not _dense_cpu(p, dtype, n) or not _dense_cpu(g, dtype, n):
                plan.rest.append(p)
                unfit = unfit or (fused and not _fused_kernel_takes(p))
                continue
            st = state.get(p)  # not state[p]: planning must not add entries to the defaultdict
            if not st:
                st = self._new_state(p, group)
                plan.new_states.append((p, st))
            elif not (
                all(k in st and _dense_cpu(st[k], dtype, n) for k in names)
                and isinstance(st.get("step"), torch.Tensor)
                and st["step"].is_cpu
                and st["step"].numel() == 1
            ):
                plan.rest.append(p)
                continue
            candidates.append((p, g, kind, n, st))
        if not candidates:
            return None if unfit else plan
        # Every step count in one read (a .item() per tensor costs a microsecond each).
        counts = torch.stack([c[4]["step"].reshape(()).to(torch.float64) for c in candidates]).tolist()
        for (p, g, kind, n, st), count in zip(candidates, counts):
            if not (count >= 0 and count == int(count) and count < 2**53):
                plan.rest.append(p)  # a count torch's own code must interpret
                continue
            plan.params.append(p)
            plan.grads.append(g)
            plan.kinds.append(kind)
            plan.sizes.append(n)
            plan.step_ts.append(st["step"])
            plan.steps.append(int(count) + 1)
            bufs = [st[k] for k in names]
            plan.moments.extend(bufs)
            for slot, t in zip(plan.ptrs, [p, g, *bufs]):
                slot.append(t.data_ptr())
        return None if unfit else plan

    def _run_native(self, plan: _AdamPlan, amp: _AmpInputs) -> bool:
        """The plan's native call; False when the kernel refused its options or overlapping
        tensors (nothing written)."""
        group = plan.group
        assert plan.scale is not None
        beta1, beta2 = group["betas"]
        vp, gp, mp, sp, xp = plan.ptrs
        done = F._core.adam_step_ptrs(  # type: ignore[union-attr]
            plan.kinds, vp, gp, mp, sp, xp if plan.amsgrad else None, plan.sizes, plan.steps,
            _as_float(group["lr"]), _as_float(beta1), _as_float(beta2), float(group["eps"]),
            float(group["weight_decay"]), plan.amsgrad, bool(group["maximize"]),
            bool(group.get("decoupled_weight_decay", False)), plan.scale,
        )
        if not done:
            return False
        self._commit_states(plan)
        torch._foreach_add_(plan.step_ts, 1)
        # The kernel wrote through raw memory: tell autograd, as torch's in-place ops would.
        _bump_versions(plan.params + plan.moments)
        if plan.fused:
            amp.unscale_grads_(plan.grads, plan.scale)
        return True

    def _commit_states(self, plan: _AdamPlan) -> None:
        state = self.state
        for p, st in plan.new_states:
            state[p] = st

    def _skip_group(self, plan: _AdamPlan) -> None:
        """A fused step that ``found_inf`` skips: torch's fused Adam starts the state of every
        param (zero moments, step 0 after its increment is undone) and writes nothing else."""
        self._commit_states(plan)
        if plan.rest:
            with torch.no_grad():
                self._torch_group(plan.group, plan.rest)

    def _torch_group(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """torch's own Adam math for these params of the group, as torch.optim.Adam.step does it
        (its _init_group starts their state and makes its checks)."""
        ps: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        exp_avgs: list[torch.Tensor] = []
        exp_avg_sqs: list[torch.Tensor] = []
        max_sqs: list[torch.Tensor] = []
        steps: list[torch.Tensor] = []
        has_complex = torch.optim.Adam._init_group(
            self, {**group, "params": params}, ps, grads, exp_avgs, exp_avg_sqs, max_sqs, steps  # type: ignore[arg-type]
        )
        beta1, beta2 = group["betas"]
        _torch_adam(
            ps, grads, exp_avgs, exp_avg_sqs, max_sqs, steps,
            amsgrad=group["amsgrad"], has_complex=has_complex, beta1=beta1, beta2=beta2, lr=group["lr"],
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
            foreach=group["foreach"], capturable=group["capturable"], differentiable=group["differentiable"],
            fused=group["fused"], grad_scale=getattr(self, "grad_scale", None),
            found_inf=getattr(self, "found_inf", None),
            decoupled_weight_decay=group.get("decoupled_weight_decay", False),
        )


class Adam(_AdamStep, torch.optim.Adam):
    """``torch.optim.Adam`` with minimalsgd's fused native step.

    A subclass of ``torch.optim.Adam``: the constructor, its checks and defaults,
    ``param_groups``, ``state_dict`` / ``load_state_dict`` in torch's format (``step``,
    ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) and every LR scheduler are torch's;
    checkpoints move between the two both ways. Per group, every CPU float32/float64 param whose
    param, grad and state are dense and contiguous goes to the native kernel in one call; the rest
    (other devices and dtypes, complex, sparse grads, non-contiguous layouts, views that share
    memory, ``capturable``, ``differentiable``, hyperparameters the kernel refuses) goes to
    torch's own Adam code.

    Parameters
    ----------
    params : iterable
        torch's: tensors or param groups (dicts).
    lr, betas, eps, weight_decay, amsgrad, foreach, maximize, capturable, differentiable, fused, decoupled_weight_decay
        torch's (defaults ``1e-3, (0.9, 0.999), 1e-8, 0, False, None, False, False, False, None,
        False``). ``fused=True`` takes a ``GradScaler``'s ``grad_scale``/``found_inf`` as torch's
        fused Adam does (see :class:`SGD`).

    Raises
    ------
    ValueError, RuntimeError
        torch's constructor checks, with torch's messages.

    Notes
    -----
    The native step is torch's single-tensor (``foreach=False``) formula in its order of
    operations; torch's vectorized CPU kernels fuse multiply-adds and its float32 square root is
    not always correctly rounded, so the two agree to float rounding, not bit for bit.

    Examples
    --------
    >>> import torch
    >>> from minimalsgd.torch import Adam
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = Adam(model.parameters(), lr=1e-3, amsgrad=True)
    >>> model(torch.ones(3, 4)).sum().backward()
    >>> opt.step()
    >>> sorted(opt.state_dict()["state"][0])
    ['exp_avg', 'exp_avg_sq', 'max_exp_avg_sq', 'step']
    """

    _torch_class = torch.optim.Adam


class AdamW(_AdamStep, torch.optim.AdamW):
    """``torch.optim.AdamW`` with minimalsgd's fused native step: :class:`Adam` with decoupled
    weight decay (``w *= 1 - lr * weight_decay`` before the update).

    Parameters
    ----------
    params, lr, betas, eps, weight_decay, amsgrad, maximize, foreach, capturable, differentiable, fused
        torch's AdamW's (``weight_decay`` defaults to ``1e-2``).

    Raises
    ------
    ValueError, RuntimeError
        torch's constructor checks, with torch's messages.

    Examples
    --------
    >>> import torch
    >>> from minimalsgd.torch import AdamW
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = AdamW(model.parameters(), lr=1e-3)
    >>> sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    >>> model(torch.ones(3, 4)).sum().backward()
    >>> opt.step(); sched.step()
    """

    _torch_class = torch.optim.AdamW
