"""minimalsgd.torch.SGD against torch.optim.SGD (skipped without torch).

Tolerance: torch's CPU kernels may fuse multiply-adds (``add(x, alpha=a)``) where minimalsgd
rounds each operation, so results agree to float rounding, not bit for bit: we compare with
rtol 2e-6 / atol 2e-6 for float32 and 1e-13 for float64, per step, after up to 100 steps.
"""

from __future__ import annotations

import copy
import itertools
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minimalsgd._functional as F  # noqa: E402
from minimalsgd.torch import SGD  # noqa: E402

TOL = {torch.float32: dict(rtol=2e-6, atol=2e-6), torch.float64: dict(rtol=1e-13, atol=1e-13)}

OPTIONS = [
    dict(momentum=mu, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
    for mu, d, wd, n, mx in itertools.product([0.0, 0.9], [0.0, 0.3], [0.0, 1e-2], [False, True], [False, True])
    if not (n and (mu == 0 or d != 0))
]


def _close(a, b, dtype):
    torch.testing.assert_close(a, b, **TOL[dtype])


def _params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2), (), (130,), (0, 3)]
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


@pytest.fixture
def count_native(monkeypatch):
    """Counts the native calls and checks that every array is a view of a tensor's own memory."""
    calls = []
    real = F._core.sgd_step_ptrs

    def spy(kinds, *args, **kwargs):
        calls.append(len(kinds))
        return real(kinds, *args, **kwargs)

    monkeypatch.setattr(F._core, "sgd_step_ptrs", spy)
    return calls


def test_importing_minimalsgd_does_not_import_torch():
    code = "import sys, minimalsgd; minimalsgd.SGD; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_is_a_torch_sgd_with_torch_defaults():
    p = torch.nn.Parameter(torch.zeros(3))
    ours, theirs = SGD([p]), torch.optim.SGD([p])
    assert isinstance(ours, torch.optim.SGD)
    assert ours.defaults == theirs.defaults
    with pytest.raises(ValueError, match="Invalid learning rate"):
        SGD([p], lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([p], lr=0.1, nesterov=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_step_by_step_parity(dtype, opts, count_native):
    ref = [torch.nn.Parameter(t.clone()) for t in _params(dtype)]
    ours = [torch.nn.Parameter(t.clone()) for t in _params(dtype)]
    o_ref = torch.optim.SGD(ref, lr=0.05, **opts)
    o_ours = SGD(ours, lr=0.05, **opts)
    gen = torch.Generator().manual_seed(1)
    for step in range(6):
        for a, b in zip(ref, ours):
            g = torch.randn(a.shape, generator=gen, dtype=dtype)
            a.grad, b.grad = g.clone(), g.clone()
        o_ref.step()
        ptrs = [p.data_ptr() for p in ours]
        o_ours.step()
        assert [p.data_ptr() for p in ours] == ptrs  # updated in place
        for a, b in zip(ref, ours):
            _close(b.detach(), a.detach(), dtype)
            if opts["momentum"]:
                _close(o_ours.state[b]["momentum_buffer"], o_ref.state[a]["momentum_buffer"], dtype)
    assert count_native == [len(ours)] * 6  # one native call per group per step, every param native


def test_native_call_gets_the_tensors_own_memory(monkeypatch):
    p = torch.nn.Parameter(torch.randn(1000))
    p.grad = torch.randn(1000)
    opt = SGD([p], lr=0.1, momentum=0.9)
    seen = {}
    real = F._core.sgd_step_ptrs

    def spy(kinds, vptrs, gptrs, bptrs, *args, **kwargs):
        seen["ptrs"] = (vptrs[0], gptrs[0], bptrs[0])
        return real(kinds, vptrs, gptrs, bptrs, *args, **kwargs)

    monkeypatch.setattr(F._core, "sgd_step_ptrs", spy)
    assert torch.is_grad_enabled()
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    assert seen["ptrs"] == (p.data_ptr(), p.grad.data_ptr(), buf.data_ptr())
    assert not buf.requires_grad and buf.grad_fn is None and p.grad_fn is None  # as torch's buffer


class _Net(torch.nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16, dtype=dtype)
        self.fc2 = torch.nn.Linear(16, 1, dtype=dtype)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def _train(model, opt, sched, dtype, steps, seed=3):
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x = torch.randn(32, 8, generator=gen, dtype=dtype)
        y = x.sum(dim=1, keepdim=True).sin()

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        losses.append(float(opt.step(closure).detach()))
        if sched is not None:
            sched.step()
    return losses


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "scheduler",
    [
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.7),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=100),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.2, total_steps=100),
    ],
    ids=["StepLR", "Cosine", "OneCycle"],
)
def test_100_step_training_with_scheduler(dtype, scheduler):
    torch.manual_seed(0)
    m_ref = _Net(dtype)
    m_ours = copy.deepcopy(m_ref)
    kw = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    o_ref, o_ours = torch.optim.SGD(m_ref.parameters(), **kw), SGD(m_ours.parameters(), **kw)
    l_ref = _train(m_ref, o_ref, scheduler(o_ref), dtype, 100)
    l_ours = _train(m_ours, o_ours, scheduler(o_ours), dtype, 100)
    assert l_ours[-1] < l_ours[0]
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(l_ours, l_ref, **tol)
    for a, b in zip(m_ref.parameters(), m_ours.parameters()):
        torch.testing.assert_close(b, a, **tol)


def test_late_gradients_and_none_grads_start_buffers_like_torch():
    dtype = torch.float32
    ref = [torch.nn.Parameter(t.clone()) for t in _params(dtype)]
    ours = [torch.nn.Parameter(t.clone()) for t in _params(dtype)]
    kw = dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)
    o_ref, o_ours = torch.optim.SGD(ref, **kw), SGD(ours, **kw)
    gen = torch.Generator().manual_seed(2)
    for step in range(8):
        for i, (a, b) in enumerate(zip(ref, ours)):
            if i == 1 and step < 4 or i == 3 and step % 2 == 0:  # late, and intermittent, grads
                a.grad = b.grad = None
                continue
            g = torch.randn(a.shape, generator=gen, dtype=dtype)
            a.grad, b.grad = g.clone(), g.clone()
        o_ref.step()
        o_ours.step()
        for a, b in zip(ref, ours):
            _close(b.detach(), a.detach(), dtype)
            assert (b in o_ours.state and "momentum_buffer" in o_ours.state[b]) == (
                a in o_ref.state and "momentum_buffer" in o_ref.state[a]
            )


def _fallback_params():
    """Params the native kernel cannot walk: they must take torch's path with torch's results."""
    base = torch.randn(6, 4, dtype=torch.float64)
    return {
        "transposed": base.t().clone().t(),  # non-contiguous layout, own memory
        "channels_last": torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
        "complex": torch.randn(4, dtype=torch.complex64),
    }


@pytest.mark.parametrize("name", list(_fallback_params()))
def test_fallback_params_match_torch(name, count_native):
    t = _fallback_params()[name]
    a, b = torch.nn.Parameter(t.clone()), torch.nn.Parameter(t.clone())
    if name == "transposed":
        a, b = torch.nn.Parameter(t.clone().t().contiguous().t()), torch.nn.Parameter(t.clone().t().contiguous().t())
        assert not b.is_contiguous()
    kw = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    o_ref, o_ours = torch.optim.SGD([a], **kw), SGD([b], **kw)
    for s in range(3):
        g = torch.randn_like(a)
        a.grad, b.grad = g.clone(), g.clone()
        o_ref.step()
        o_ours.step()
        assert torch.equal(a, b)  # the same torch code ran
    assert count_native == []


def test_sparse_grads_fall_back_to_torch():
    emb_ref = torch.nn.Embedding(10, 3, sparse=True)
    emb_ours = copy.deepcopy(emb_ref)
    o_ref, o_ours = torch.optim.SGD(emb_ref.parameters(), lr=0.1), SGD(emb_ours.parameters(), lr=0.1)
    for _ in range(3):
        idx = torch.tensor([1, 2, 4, 2])
        for emb, opt in ((emb_ref, o_ref), (emb_ours, o_ours)):
            opt.zero_grad()
            emb(idx).sum().backward()
            opt.step()
    assert torch.equal(emb_ref.weight, emb_ours.weight)


def test_shared_memory_params_fall_back_to_torch():
    base_ref, base_ours = torch.zeros(10), torch.zeros(10)
    views_ref = [torch.nn.Parameter(base_ref[:6]), torch.nn.Parameter(base_ref[4:])]
    views_ours = [torch.nn.Parameter(base_ours[:6]), torch.nn.Parameter(base_ours[4:])]
    for p in views_ref + views_ours:
        p.grad = torch.ones_like(p)
    torch.optim.SGD(views_ref, lr=0.1).step()
    SGD(views_ours, lr=0.1).step()
    assert torch.equal(base_ref, base_ours)


def _run_steps(params, opt, n, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        opt.step()


@pytest.mark.parametrize("direction", ["torch->minimalsgd", "minimalsgd->torch"])
def test_state_dict_exchange_mid_training(direction):
    dtype = torch.float64
    kw = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    first_cls, second_cls = (torch.optim.SGD, SGD) if direction == "torch->minimalsgd" else (SGD, torch.optim.SGD)
    # Uninterrupted reference run with torch.
    ref = [torch.nn.Parameter(t.clone()) for t in _params(dtype)]
    o_ref = torch.optim.SGD(ref, **kw)
    _run_steps(ref, o_ref, 5, seed=7)
    _run_steps(ref, o_ref, 5, seed=8)
    # 5 steps with one class, checkpoint, 5 steps with the other.
    ps = [torch.nn.Parameter(t.clone()) for t in _params(dtype)]
    o1 = first_cls(ps, **kw)
    _run_steps(ps, o1, 5, seed=7)
    sd = copy.deepcopy(o1.state_dict())
    assert set(sd) == {"state", "param_groups"}
    assert all(set(v) == {"momentum_buffer"} for v in sd["state"].values())
    o2 = second_cls(ps, lr=1.0)
    o2.load_state_dict(sd)
    assert o2.param_groups[0]["lr"] == 0.05 and o2.param_groups[0]["nesterov"] is True
    _run_steps(ps, o2, 5, seed=8)
    for a, b in zip(ref, ps):
        _close(b.detach(), a.detach(), dtype)
    assert o2.state_dict()["param_groups"] == o_ref.state_dict()["param_groups"]


def test_param_groups_add_param_group_zero_grad_and_closure(count_native):
    a, b, c = (torch.nn.Parameter(torch.randn(4)) for _ in range(3))
    opt = SGD([{"params": [a, b]}, {"params": [c], "lr": 0.5}], lr=0.1, momentum=0.9)
    d = torch.nn.Parameter(torch.randn(2))
    opt.add_param_group({"params": [d], "momentum": 0.0})
    ref_params = [x.detach().clone() for x in (a, b, c, d)]
    for x in (a, b, c, d):
        x.grad = torch.ones_like(x)
    loss = opt.step(lambda: torch.tensor(3.0))
    assert float(loss) == 3.0
    expected = [r - lr * 1.0 for r, lr in zip(ref_params, [0.1, 0.1, 0.5, 0.1])]
    for x, e in zip((a, b, c, d), expected):
        torch.testing.assert_close(x.detach(), e)
    assert count_native == [2, 1, 1]  # one call per group
    opt.zero_grad()
    assert all(x.grad is None for x in (a, b, c, d))
    opt.zero_grad(set_to_none=False)


def test_differentiable_is_served_by_torch():
    # differentiable=True steps non-leaf tensors so that autograd can see through the update.
    results = []
    for cls in (torch.optim.SGD, SGD):
        w0 = torch.randn(3, generator=torch.Generator().manual_seed(0), requires_grad=True)
        p = w0.clone()
        p.grad = torch.ones(3)
        cls([p], lr=0.1, momentum=0.9, differentiable=True).step()
        p.sum().backward()
        results.append((p.detach().clone(), w0.grad.clone()))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_mixed_group_sends_only_eligible_params_to_the_kernel(count_native):
    """One group holding native and fallback params: the native ones in one call, the rest by torch."""
    gen = torch.Generator().manual_seed(5)

    def make():
        g = torch.Generator().manual_seed(4)
        return [
            torch.nn.Parameter(torch.randn(6, generator=g)),  # native
            torch.nn.Parameter(torch.randn(6, generator=g, dtype=torch.complex64)),  # fallback: dtype
            torch.nn.Parameter(torch.randn(4, 3, generator=g, dtype=torch.float64).t()),  # fallback: layout
            torch.nn.Parameter(torch.randn(3, 3, generator=g, dtype=torch.float64)),  # native
            torch.nn.Parameter(torch.randn(5, generator=g)),  # fallback: non-contiguous grad
        ]

    ref, ours = make(), make()
    kw = dict(lr=0.1, momentum=0.9, weight_decay=0.01)
    o_ref, o_ours = torch.optim.SGD(ref, **kw), SGD(ours, **kw)
    for _ in range(4):
        for a, b in zip(ref, ours):
            g = torch.randn(a.shape, generator=gen, dtype=a.dtype)
            a.grad, b.grad = g.clone(), g.clone()
        ref[4].grad = ours[4].grad = torch.randn(10, generator=gen)[::2]
        assert not ours[4].grad.is_contiguous()
        o_ref.step()
        o_ours.step()
        for i, (a, b) in enumerate(zip(ref, ours)):
            if i in (0, 3):
                _close(b.detach(), a.detach(), a.dtype)
            else:
                assert torch.equal(a, b)  # torch's own code stepped it
    assert count_native == [2] * 4


def test_negative_bit_grad_is_read_through_torch(count_native):
    """A contiguous float32 tensor whose memory holds the negated values (torch's neg bit)."""
    z = torch.randn(1, dtype=torch.complex64).conj()
    grad = z.imag
    assert grad.is_neg() and grad.is_contiguous() and grad.dtype == torch.float32
    a, b = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    a.grad, b.grad = grad, grad
    torch.optim.SGD([a], lr=0.5).step()
    SGD([b], lr=0.5).step()
    assert torch.equal(a, b)
    torch.testing.assert_close(b.detach(), 1.0 - 0.5 * z.imag.clone().resolve_neg())
    # The same for a param that is such a view (the step writes through it).
    zs = [torch.full((1,), 1 + 2j, dtype=torch.complex64).conj() for _ in range(2)]
    ps = [torch.nn.Parameter(z.imag) for z in zs]
    assert all(p.is_neg() for p in ps)
    for p in ps:
        p.grad = torch.ones(1)
    torch.optim.SGD(ps[:1], lr=0.5).step()
    SGD(ps[1:], lr=0.5).step()
    assert torch.equal(zs[0], zs[1]) and torch.equal(ps[0], ps[1])
    torch.testing.assert_close(ps[1].detach().resolve_neg(), torch.tensor([-2.5]))
    assert count_native == []


def test_lr_tensor_and_options_the_kernel_refuses_follow_torch(count_native):
    """lr may be a Tensor; a scheduler or a user may set values torch's constructor would refuse."""
    ref = [torch.nn.Parameter(t.clone()) for t in _params(torch.float64)]
    ours = [torch.nn.Parameter(t.clone()) for t in _params(torch.float64)]
    o_ref = torch.optim.SGD(ref, lr=torch.tensor(0.05), momentum=0.9)
    o_ours = SGD(ours, lr=torch.tensor(0.05), momentum=0.9)
    _run_steps(ref, o_ref, 2, seed=11)
    _run_steps(ours, o_ours, 2, seed=11)
    assert count_native == [len(ours)] * 2
    for o in (o_ref, o_ours):
        o.param_groups[0]["lr"] = -0.05  # the kernel refuses it: torch's code runs the group
    _run_steps(ref, o_ref, 2, seed=12)
    _run_steps(ours, o_ours, 2, seed=12)
    assert count_native == [len(ours)] * 4  # tried, refused with nothing written
    for a, b in zip(ref, ours):
        _close(b.detach(), a.detach(), torch.float64)
        _close(o_ours.state[b]["momentum_buffer"], o_ref.state[a]["momentum_buffer"], torch.float64)


def test_non_contiguous_loaded_buffer_falls_back(count_native):
    ref = [torch.nn.Parameter(torch.randn(4, 4, dtype=torch.float64))]
    o_ref = torch.optim.SGD(ref, lr=0.1, momentum=0.9)
    _run_steps(ref, o_ref, 1, seed=1)
    ours = [torch.nn.Parameter(ref[0].detach().clone())]
    o_ours = SGD(ours, lr=0.1, momentum=0.9)
    sd = copy.deepcopy(o_ref.state_dict())
    sd["state"][0]["momentum_buffer"] = sd["state"][0]["momentum_buffer"].t().contiguous().t()
    o_ours.load_state_dict(copy.deepcopy(sd))
    o_ref.load_state_dict(sd)
    assert not o_ours.state[ours[0]]["momentum_buffer"].is_contiguous()
    _run_steps(ref, o_ref, 3, seed=2)
    _run_steps(ours, o_ours, 3, seed=2)
    assert count_native == []
    assert torch.equal(ref[0], ours[0])


@pytest.mark.parametrize("flag", [{"foreach": True}, {"foreach": False}, {"fused": True}])
def test_foreach_and_fused_flags_are_accepted(flag, count_native):
    """They choose torch's implementation for fallback params; native params take the kernel."""
    ref = [torch.nn.Parameter(t.clone()) for t in _params(torch.float32)]
    ours = [torch.nn.Parameter(t.clone()) for t in _params(torch.float32)]
    kw = dict(lr=0.05, momentum=0.9, nesterov=True, **flag)
    o_ref, o_ours = torch.optim.SGD(ref, **kw), SGD(ours, **kw)
    assert o_ours.defaults == o_ref.defaults
    _run_steps(ref, o_ref, 3, seed=4)
    _run_steps(ours, o_ours, 3, seed=4)
    for a, b in zip(ref, ours):
        _close(b.detach(), a.detach(), torch.float32)
    assert count_native == [len(ours)] * 3


def test_autograd_sees_the_in_place_update_like_torch():
    """A graph that saved a param before the step refuses to backward after it, as with torch."""
    for cls in (torch.optim.SGD, SGD):
        w = torch.nn.Parameter(torch.randn(3))
        loss = (w * w).sum()  # saves w
        w.grad = torch.ones(3)
        version = w._version
        cls([w], lr=0.1).step()
        assert w._version > version
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


def test_step_hooks_fire_and_schedulers_see_the_step(recwarn):
    p = torch.nn.Parameter(torch.randn(3))
    p.grad = torch.ones(3)
    opt = SGD([p], lr=0.1)
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: seen.append("post"))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    sched.step()
    assert seen == ["pre", "post"]
    assert opt.param_groups[0]["lr"] == 0.05
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]


@pytest.mark.parametrize("opts", [OPTIONS[0], OPTIONS[-1]], ids=["plain", "momentum-all"])
def test_numpy_view_route_without_the_address_entry(opts, monkeypatch):
    """A _core without sgd_step_ptrs: NumPy views of the tensors' memory go to _core.sgd_step."""
    monkeypatch.delattr(F._core, "sgd_step_ptrs")
    calls = []
    real = F._core.sgd_step

    def spy(values, grads, bufs, *args, **kwargs):
        calls.append([(v.ctypes.data, g.ctypes.data, None if bufs is None else bufs[i].ctypes.data)
                      for i, (v, g) in enumerate(zip(values, grads))])
        return real(values, grads, bufs, *args, **kwargs)

    monkeypatch.setattr(F._core, "sgd_step", spy)
    dtype = torch.float64
    ref = [torch.nn.Parameter(t.clone()) for t in _params(dtype)]
    ours = [torch.nn.Parameter(t.clone()) for t in _params(dtype)]
    o_ref, o_ours = torch.optim.SGD(ref, lr=0.05, **opts), SGD(ours, lr=0.05, **opts)
    _run_steps(ref, o_ref, 3, seed=9)
    _run_steps(ours, o_ours, 3, seed=9)
    for a, b in zip(ref, ours):
        _close(b.detach(), a.detach(), dtype)
    assert len(calls) == 3 and all(len(c) == len(ours) for c in calls)
    for (vp, gp, bp), p in zip(calls[-1], ours):
        if p.numel():  # an empty tensor has no memory to share
            assert vp == p.data_ptr()
            if bp is not None:
                assert bp == o_ours.state[p]["momentum_buffer"].data_ptr()
    # Views of one tensor: _core.sgd_step refuses them, nothing written, torch's code runs.
    base_ref, base_ours = torch.zeros(10, dtype=dtype), torch.zeros(10, dtype=dtype)
    v_ref = [torch.nn.Parameter(base_ref[:6]), torch.nn.Parameter(base_ref[4:])]
    v_ours = [torch.nn.Parameter(base_ours[:6]), torch.nn.Parameter(base_ours[4:])]
    for p in v_ref + v_ours:
        p.grad = torch.ones_like(p)
    torch.optim.SGD(v_ref, lr=0.1).step()
    SGD(v_ours, lr=0.1).step()
    assert torch.equal(base_ref, base_ours)


def test_other_devices_go_to_torch(count_native):
    """No GPU here: the meta device stands in for one (torch's code runs on it, the kernel is not asked)."""
    for momentum in (0.0, 0.9):
        p = torch.nn.Parameter(torch.empty(4, device="meta"))
        p.grad = torch.empty(4, device="meta")
        opt = SGD([p], lr=0.1, momentum=momentum)
        opt.step()
        opt.step()
        assert p.device.type == "meta"
        if momentum:
            assert opt.state[p]["momentum_buffer"].device.type == "meta"
    assert count_native == []
