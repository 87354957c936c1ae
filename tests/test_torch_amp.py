"""minimalsgd.torch.SGD under torch's mixed-precision step contract, against torch.optim.SGD.

torch.amp.GradScaler hands optimizers built with ``fused=True`` a ``grad_scale`` and a
``found_inf`` (attributes set for the step); the other optimizers it steps or skips itself. These
tests run the GradScaler recipe for every ``fused`` x ``foreach`` choice, set the inputs by hand,
and check torch's fused-path errors (skipped without torch).

Tolerance: the native kernel rounds every operation; torch's CPU kernels fuse multiply-adds, so
params and momentum buffers agree to float rounding (rtol/atol 2e-6 in float32, 1e-13 in float64),
not bit for bit. Bitwise where the arithmetic is the same: a skipped step (nothing may change),
grads unscaled by a power-of-two scale (``g * (1/s)`` has the bits of torch's ``g / s``), the
in-kernel scaling against the same step on pre-unscaled grads, and every param torch's own code
steps.
"""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")

import minimalsgd._functional as F  # noqa: E402
from minimalsgd.torch import SGD  # noqa: E402

TOL = {torch.float32: dict(rtol=2e-6, atol=2e-6), torch.float64: dict(rtol=1e-13, atol=1e-13)}
FUSED_ERR = "`fused=True` requires all the params to be floating point Tensors of supported devices"


@pytest.fixture
def count_native(monkeypatch):
    """Counts the native calls (their number of tensors)."""
    calls = []
    real = F._core.sgd_step_ptrs

    def spy(kinds, *args, **kwargs):
        calls.append(len(kinds))
        return real(kinds, *args, **kwargs)

    monkeypatch.setattr(F._core, "sgd_step_ptrs", spy)
    return calls


def _snapshot(opt):
    """Everything a step may write: params, grads and optimizer state, cloned."""
    params = [p for g in opt.param_groups for p in g["params"]]
    return (
        [p.detach().clone() for p in params],
        [None if p.grad is None else p.grad.clone() for p in params],
        {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in params if p in opt.state},
    )


def _assert_unchanged(opt, snap):
    values, grads, state = _snapshot(opt)
    assert all(torch.equal(a, b) for a, b in zip(values, snap[0]))
    assert all((a is None and b is None) or torch.equal(a.to_dense(), b.to_dense()) for a, b in zip(grads, snap[1]))
    assert state.keys() == snap[2].keys()
    for k in state:
        assert state[k].keys() == snap[2][k].keys()
        assert all(torch.equal(state[k][n], snap[2][k][n]) for n in state[k])


_INT = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits_equal(a, b):
    """The same bits (NaN payloads included), for tensors that may hold inf or NaN."""
    a, b = a.detach(), b.detach()
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    kind = _INT[a.element_size()]
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(kind), b.view(kind))


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the test compares whatever each one raises
        return type(e), str(e)
    return None


# --- the GradScaler recipe --------------------------------------------------------------------------


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 1)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


OVERFLOW_STEPS = (3, 4, 7)


def _recipe_step(model, opt, scaler, x, y, unscale):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    scaler.scale(loss).backward()
    if unscale:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)
    scaler.update()


@pytest.mark.parametrize("unscale", [True, False], ids=["unscale+clip", "step-unscales"])
@pytest.mark.parametrize("foreach", [True, False, None], ids=lambda v: f"foreach={v}")
@pytest.mark.parametrize("fused", [True, False, None], ids=lambda v: f"fused={v}")
def test_grad_scaler_recipe_matches_torch(fused, foreach, unscale, count_native):
    """The recipe of issue 14 over 10 steps, overflows in the middle (two in a row, one alone)."""
    kw = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, fused=fused, foreach=foreach)
    torch.manual_seed(0)
    m_ref = _Net()
    m_ours = copy.deepcopy(m_ref)
    if fused and foreach:
        errs = [_raised(lambda: cls(m.parameters(), **kw)) for cls, m in ((torch.optim.SGD, m_ref), (SGD, m_ours))]
        assert errs[0] == errs[1] == (RuntimeError, "`fused` and `foreach` cannot be `True` together.")
        return
    o_ref, o_ours = torch.optim.SGD(m_ref.parameters(), **kw), SGD(m_ours.parameters(), **kw)
    # A small growth interval: the scale also grows (by 2) between overflows.
    s_ref, s_ours = (torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=2) for _ in range(2))
    gen = torch.Generator().manual_seed(1)
    scales = []
    for step in range(10):
        x = torch.randn(16, 8, generator=gen)
        y = x.sum(dim=1, keepdim=True).sin()
        if step in OVERFLOW_STEPS:
            x[3, 2] = float("inf")  # the scaled loss and the grads overflow
        before = _snapshot(o_ours)
        calls = len(count_native)
        _recipe_step(m_ref, o_ref, s_ref, x, y, unscale)
        _recipe_step(m_ours, o_ours, s_ours, x, y, unscale)
        assert s_ours.get_scale() == s_ref.get_scale()
        scales.append(s_ours.get_scale())
        if step in OVERFLOW_STEPS:
            values, _, state = before
            assert all(torch.equal(p, v) for p, v in zip(m_ours.parameters(), values))
            assert {id(p): {k: v for k, v in o_ours.state[p].items()} for p in m_ours.parameters()
                    if p in o_ours.state}.keys() == state.keys()
            for p in m_ours.parameters():
                if id(p) in state:
                    assert torch.equal(o_ours.state[p]["momentum_buffer"], state[id(p)]["momentum_buffer"])
            assert len(count_native) == calls  # nothing stepped
        else:
            assert count_native[calls:] == [4]  # all four params in one native call
        for a, b in zip(m_ref.parameters(), m_ours.parameters()):
            torch.testing.assert_close(b.detach(), a.detach(), **TOL[torch.float32])
            # grads come from backward through params that differ by rounding: a looser bound
            torch.testing.assert_close(b.grad, a.grad, equal_nan=True, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(
                o_ours.state[b]["momentum_buffer"], o_ref.state[a]["momentum_buffer"], **TOL[torch.float32]
            )
    assert min(scales) < 2.0**12 < max(scales)  # backed off at the overflows, grown in between


def test_overflow_on_the_first_step_starts_no_buffer():
    """A skipped first step leaves no state. (torch 2.13's fused path stores an uninitialized
    momentum buffer there, which its next step reads; its for-loop path, skipped by the scaler,
    starts none: that is the reference.)"""
    torch.manual_seed(0)
    m_ref = _Net()
    m_ours = copy.deepcopy(m_ref)
    kw = dict(lr=0.05, momentum=0.9)
    o_ref, o_ours = torch.optim.SGD(m_ref.parameters(), fused=False, **kw), SGD(m_ours.parameters(), fused=True, **kw)
    s_ref, s_ours = torch.amp.GradScaler("cpu"), torch.amp.GradScaler("cpu")
    gen = torch.Generator().manual_seed(2)
    for step in range(4):
        x = torch.randn(16, 8, generator=gen)
        y = x.sum(dim=1, keepdim=True)
        if step == 0:
            x[0, 0] = float("nan")
        for m, o, s in ((m_ref, o_ref, s_ref), (m_ours, o_ours, s_ours)):
            _recipe_step(m, o, s, x, y, unscale=True)
        if step == 0:
            assert len(o_ours.state) == 0 and len(o_ref.state) == 0
        for a, b in zip(m_ref.parameters(), m_ours.parameters()):
            torch.testing.assert_close(b.detach(), a.detach(), **TOL[torch.float32])
    assert all(o_ours.state[p]["momentum_buffer"].isfinite().all() for p in m_ours.parameters())


# --- found_inf and grad_scale set by hand --------------------------------------------------------------


def _group_params(dtype=torch.float32, seed=0):
    """Native params and one the kernel cannot take (float16: torch's fused code steps it)."""
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in [(7, 5), (130,), ()]]
    ps.append(torch.nn.Parameter(torch.randn(9, generator=g).half()))
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)
    return ps


@pytest.mark.parametrize("grad_scale", [None, 2.0**10, 3.0], ids=["no-scale", "scale-2^10", "scale-3"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("steps_before", [0, 2], ids=["first-step", "later-step"])
def test_found_inf_one_skips_with_nothing_written(grad_scale, momentum, steps_before, count_native):
    ref, ours = _group_params(), _group_params()
    kw = dict(lr=0.1, momentum=momentum, weight_decay=0.01, fused=True)
    o_ref, o_ours = torch.optim.SGD(ref, **kw), SGD(ours, **kw)
    for _ in range(steps_before):
        o_ref.step()
        o_ours.step()
    for o in (o_ref, o_ours):
        o.grad_scale = None if grad_scale is None else torch.tensor(grad_scale)
        o.found_inf = torch.ones(())
    snap_ref, snap = _snapshot(o_ref), _snapshot(o_ours)
    calls = len(count_native)
    o_ref.step()
    o_ours.step()
    _assert_unchanged(o_ours, snap)
    assert len(count_native) == calls
    assert all(torch.equal(p, v) for p, v in zip(ref, snap_ref[0]))  # torch skips too
    if steps_before:  # (on a first step torch's fused path stores an uninitialized buffer)
        _assert_unchanged(o_ref, snap_ref)


@pytest.mark.parametrize("found_inf", [0.0, 2.0], ids=["found_inf=0", "found_inf=2"])
def test_found_inf_other_values_step_as_torch(found_inf, count_native):
    """torch's fused kernels skip only on exactly 1.0; 0 (and, as torch, any other value) steps."""
    ref, ours = _group_params(), _group_params()
    kw = dict(lr=0.1, momentum=0.9, nesterov=True, fused=True)
    o_ref, o_ours = torch.optim.SGD(ref, **kw), SGD(ours, **kw)
    for step in range(3):
        for o in (o_ref, o_ours):
            o.found_inf = torch.tensor(found_inf)
            o.step()
        for i, (a, b) in enumerate(zip(ref, ours)):
            if i == 3:
                assert torch.equal(a, b)  # float16: torch's fused code stepped both
            else:
                torch.testing.assert_close(b.detach(), a.detach(), **TOL[torch.float32])
    assert count_native == [3] * 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("scale", [2.0**16, 1.0, 2.0**-20, 2.0**100, 2.0**-126])
def test_power_of_two_grad_scale_is_divided_out_in_the_kernel(dtype, maximize, scale, count_native):
    ref, ours, plain = _group_params(dtype, 3), _group_params(dtype, 3), _group_params(dtype, 3)
    for p in plain:  # the same grads, unscaled beforehand: g / s, exact for a power of two
        p.grad = p.grad / scale
    kw = dict(lr=0.1, momentum=0.9, weight_decay=0.01, maximize=maximize, fused=True)
    o_ref, o_ours, o_plain = torch.optim.SGD(ref, **kw), SGD(ours, **kw), SGD(plain, **kw)
    for step in range(3):
        for o in (o_ref, o_ours):
            o.grad_scale = torch.tensor(scale)
            o.found_inf = torch.zeros(())
            o.step()
        o_plain.step()
        for i, (a, b, c) in enumerate(zip(ref, ours, plain)):
            assert _bits_equal(b.grad, a.grad)  # left unscaled, with the bits of torch's division
            assert _bits_equal(b.grad, c.grad)
            if i == 3:
                assert _bits_equal(a, b)  # torch's fused code stepped the float16 param
                continue
            assert _bits_equal(b, c)  # the in-kernel scaling is exact (extreme scales overflow alike)
            assert _bits_equal(o_ours.state[b]["momentum_buffer"], o_plain.state[c]["momentum_buffer"])
            torch.testing.assert_close(b.detach(), a.detach(), equal_nan=True, **TOL[dtype])
            torch.testing.assert_close(
                o_ours.state[b]["momentum_buffer"], o_ref.state[a]["momentum_buffer"], equal_nan=True, **TOL[dtype]
            )
        for p in ref + ours:  # scaled grads again for the next step
            p.grad = p.grad * scale
    assert count_native == [3] * 6


def test_power_of_two_grad_scale_against_the_float64_oracle():
    import numpy as np
    from oracle import oracle_step, tolerance

    w0 = torch.randn(300, generator=torch.Generator().manual_seed(4))
    g = torch.randn(300, generator=torch.Generator().manual_seed(5)) * 2.0**12
    p = torch.nn.Parameter(w0.clone())
    p.grad = g.clone()
    opt = SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, fused=True)
    opt.grad_scale = torch.tensor(2.0**12)
    opt.step()
    w, v = oracle_step(w0.numpy(), g.numpy(), None, first=True, lr=0.1, momentum=0.9, weight_decay=0.01,
                       nesterov=True, grad_scale=2.0**-12)
    tol = tolerance(np.float32, w0.numpy(), g.numpy() * 2.0**-12)
    assert (abs(p.detach().numpy() - w) <= tol).all()
    assert (abs(opt.state[p]["momentum_buffer"].numpy() - v) <= tol).all()


@pytest.mark.parametrize("scale", [3.0, 2.0**-130, float("inf"), 0.0, -2.0])
def test_other_grad_scales_go_to_torchs_fused_code(scale, count_native):
    """Where g * (1/s) could differ from torch's g / s, torch's code runs: the same bits as torch."""
    ref, ours = _group_params(seed=6), _group_params(seed=6)
    kw = dict(lr=0.1, momentum=0.9, fused=True)
    o_ref, o_ours = torch.optim.SGD(ref, **kw), SGD(ours, **kw)
    for o in (o_ref, o_ours):
        o.grad_scale = torch.tensor(scale)
        o.step()
    for a, b in zip(ref, ours):
        assert _bits_equal(a.grad, b.grad)
        assert _bits_equal(a, b)
    assert count_native == []


@pytest.mark.parametrize("flags", [{}, {"foreach": True}, {"foreach": False}, {"fused": False}],
                         ids=["default", "foreach", "for-loop", "fused=False"])
@pytest.mark.parametrize("which", ["found_inf=0", "found_inf=1", "grad_scale"])
def test_amp_inputs_on_a_path_that_refuses_them_raise_torchs_error(flags, which):
    """torch's for-loop and foreach paths assert both are None; nothing may be written first, even
    in an earlier fused group (torch has stepped that group by then)."""
    def make(cls):
        fused_group = [torch.nn.Parameter(torch.ones(3))]
        other = [torch.nn.Parameter(torch.ones(4))]
        for p in fused_group + other:
            p.grad = torch.ones_like(p)
        opt = cls([{"params": fused_group, "fused": True, "foreach": False}, {"params": other, **flags}], lr=0.1,
                  momentum=0.9)
        if which == "grad_scale":
            opt.grad_scale = torch.tensor(2.0)
        else:
            opt.found_inf = torch.tensor(float(which[-1]))
        return opt

    o_ref, o_ours = make(torch.optim.SGD), make(SGD)
    snap = _snapshot(o_ours)
    assert _raised(o_ref.step) == _raised(o_ours.step) == (AssertionError, "Expected grad_scale and found_inf to be None")
    _assert_unchanged(o_ours, snap)


def test_amp_inputs_the_native_path_does_not_read_go_to_torch():
    """A float64 found_inf (torch's kernel reads float32): torch's own step and its error."""
    for attr in ("found_inf", "grad_scale"):
        errs = []
        for cls in (torch.optim.SGD, SGD):
            p = torch.nn.Parameter(torch.ones(3))
            p.grad = torch.ones(3)
            opt = cls([p], lr=0.1, fused=True)
            setattr(opt, attr, torch.zeros((), dtype=torch.float64))
            errs.append(_raised(opt.step))
        assert errs[0] == errs[1] and errs[0][0] is RuntimeError


# --- torch's fused-path errors ------------------------------------------------------------------------


def _misuse_params():
    return {
        "complex": lambda: [torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))],
        "meta": lambda: [torch.nn.Parameter(torch.ones(3, device="meta"))],
        "int64": lambda: [torch.nn.Parameter(torch.ones(3, dtype=torch.int64), requires_grad=False)],
        "complex-after-float": lambda: [torch.nn.Parameter(torch.ones(3)),
                                        torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))],
    }


@pytest.mark.parametrize("name", list(_misuse_params()))
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_fused_misuse_raises_torchs_error(name, momentum, count_native):
    errs, snaps = [], []
    for cls in (torch.optim.SGD, SGD):
        ps = _misuse_params()[name]()
        for p in ps:
            p.grad = torch.ones_like(p)
        opt = cls(ps, lr=0.1, momentum=momentum, fused=True)
        snap = _snapshot(opt) if ps[0].device.type != "meta" else None
        errs.append(_raised(opt.step))
        snaps.append((opt, snap))
    assert errs[0] == errs[1] and errs[0] is not None
    if name != "complex-after-float":
        # torch checks the first param in Python: its RuntimeError, before anything is written.
        assert errs[1][0] is RuntimeError and errs[1][1].startswith(FUSED_ERR)
        if snaps[1][1] is not None:
            _assert_unchanged(*snaps[1])
    else:
        # torch's fused kernel refuses the later one itself: torch's own step raises it.
        assert errs[1][0] is NotImplementedError
    assert count_native == []


def test_fused_sparse_grads_raise_torchs_error_before_writing():
    errs = []
    for cls in (torch.optim.SGD, SGD):
        dense = torch.nn.Parameter(torch.ones(3))
        dense.grad = torch.ones(3)
        emb = torch.nn.Embedding(5, 2, sparse=True)
        emb(torch.tensor([1, 3])).sum().backward()
        opt = cls([{"params": [dense]}, {"params": emb.parameters()}], lr=0.1, fused=True)
        snap = _snapshot(opt)
        errs.append(_raised(opt.step))
    assert errs[0] == errs[1] == (RuntimeError, "`_fused_sgd` does not support sparse gradients")
    _assert_unchanged(opt, snap)  # torch has stepped the first group by then; the drop-in has not


def test_fused_constructor_misuse_raises_torchs_error():
    p = torch.nn.Parameter(torch.ones(2))
    for kw in (dict(fused=True, foreach=True), dict(fused=True, differentiable=True)):
        assert _raised(lambda: torch.optim.SGD([p], **kw)) == _raised(lambda: SGD([p], **kw)) is not None


def test_fused_check_runs_once_per_optimizer_as_torchs():
    """torch checks the first param with a grad of the first fused step only; so do we."""
    for cls in (torch.optim.SGD, SGD):
        p = torch.nn.Parameter(torch.ones(3))
        p.grad = torch.ones(3)
        opt = cls([p], lr=0.1, fused=True)
        assert opt._need_device_dtype_check_for_fused is True
        opt.step()
        assert opt._need_device_dtype_check_for_fused is False
    assert _step_supports_amp(SGD) and not _step_supports_amp(SGD, fused=False)


def _step_supports_amp(cls, **kw):
    return getattr(cls([torch.nn.Parameter(torch.ones(1))], **({"fused": True} | kw)), "_step_supports_amp_scaling", False)


def test_hooks_fire_once_when_torchs_step_serves_the_step():
    """differentiable=True runs torch's step body: the step hooks still fire once (torch wraps
    torch.optim.SGD.step with them once any torch.optim.SGD exists)."""
    torch.optim.SGD([torch.nn.Parameter(torch.ones(1))])  # wraps torch.optim.SGD.step
    w0 = torch.randn(3, requires_grad=True)
    p = w0.clone()
    p.grad = torch.ones(3)
    opt = SGD([p], lr=0.1, differentiable=True)
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: seen.append("post"))
    opt.step()
    assert seen == ["pre", "post"]
    assert math.isclose(float(p[0].detach()), float(w0[0].detach()) - 0.1, rel_tol=1e-6)


# --- the same contract on the other routes ----------------------------------------------------------------


def test_without_the_native_module_torch_code_honours_the_contract(monkeypatch):
    """No _core (a pure-Python install): torch's fused code steps everything, the skip included."""
    monkeypatch.setattr(F, "_core", None)
    ref, ours = _group_params(seed=8), _group_params(seed=8)
    kw = dict(lr=0.1, momentum=0.9, fused=True)
    o_ref, o_ours = torch.optim.SGD(ref, **kw), SGD(ours, **kw)
    for o in (o_ours,):
        o.found_inf = torch.ones(())
    snap = _snapshot(o_ours)
    o_ours.step()
    _assert_unchanged(o_ours, snap)  # skipped, and no buffer started
    del o_ours.found_inf
    for o in (o_ref, o_ours):
        o.grad_scale, o.found_inf = torch.tensor(2.0**8), torch.zeros(())
        o.step()
        o.step()
    for a, b in zip(ref, ours):
        assert _bits_equal(a, b) and _bits_equal(a.grad, b.grad)
        assert _bits_equal(o_ref.state[a]["momentum_buffer"], o_ours.state[b]["momentum_buffer"])


def test_numpy_view_route_scales_in_the_kernel_too(monkeypatch):
    """A _core without sgd_step_ptrs (views through _core.sgd_step): the same bits as the address route."""
    runs = []
    for route in ("ptrs", "views"):
        if route == "views":
            monkeypatch.delattr(F._core, "sgd_step_ptrs")
            real, calls = F._core.sgd_step, []
            monkeypatch.setattr(F._core, "sgd_step", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
        ps = _group_params(torch.float64, seed=9)
        opt = SGD(ps, lr=0.1, momentum=0.9, nesterov=True, fused=True)
        for _ in range(2):
            opt.grad_scale, opt.found_inf = torch.tensor(2.0**-5), torch.zeros(())
            opt.step()
            for p in ps:
                p.grad = p.grad * 2.0**-5
        runs.append([p.detach().clone() for p in ps] + [p.grad.clone() for p in ps])
    assert all(_bits_equal(a, b) for a, b in zip(*runs))
    assert len(calls) == 2  # the views route ran
