"""minimalsgd.torch.Adam / AdamW against torch.optim.Adam / AdamW.

Trainings with schedulers in both dtypes, checkpoints both ways, the fallbacks to torch's own
code, bad hyperparameters, and torch's GradScaler contract on the fused path (the same recipe and
hand-set inputs as test_torch_amp.py, against torch's fused Adam/AdamW).

Tolerance: the native kernel is torch's single-tensor formula in its order, rounding every
operation; torch's vectorized CPU kernels fuse multiply-adds and its float32 sqrt (MKL) is off by
one ulp in a fraction of a percent of elements. Over a short training params agree to a few
float32 ulps of their size (rtol/atol 1e-5), and 1e-12 in float64. Bitwise where the same code
runs: skipped steps, the params torch's own code steps, and state that only moves.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

import minimalsgd._functional as F  # noqa: E402
from minimalsgd.torch import Adam, AdamW  # noqa: E402

from test_torch_amp import OVERFLOW_STEPS, _assert_unchanged, _group_params, _Net, _raised, _recipe_step, _snapshot  # noqa: E402

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}
PAIRS = [(torch.optim.Adam, Adam), (torch.optim.AdamW, AdamW)]
PAIR_IDS = ["Adam", "AdamW"]
pytestmark = pytest.mark.skipif(F._core is None, reason="native extension not built")


@pytest.fixture
def count_native(monkeypatch):
    """Counts the native Adam calls (their number of tensors)."""
    calls = []
    real = F._core.adam_step_ptrs

    def spy(kinds, *args, **kwargs):
        calls.append(len(kinds))
        return real(kinds, *args, **kwargs)

    monkeypatch.setattr(F._core, "adam_step_ptrs", spy)
    return calls


def _model(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3)).to(dtype)


def _data(dtype, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 6, generator=gen, dtype=dtype), torch.randn(32, 3, generator=gen, dtype=dtype))
            for _ in range(steps)]


def _train(model, opt, data, sched=None):
    for x, y in data:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


def _assert_state_close(o_ours, o_ref, m_ours, m_ref, tol):
    for a, b in zip(m_ref.parameters(), m_ours.parameters()):
        torch.testing.assert_close(b.detach(), a.detach(), **tol)
        sa, sb = o_ref.state[a], o_ours.state[b]
        assert sa.keys() == sb.keys()
        assert torch.equal(sa["step"], sb["step"]) and sa["step"].dtype == sb["step"].dtype
        for k in sa:
            if k != "step":
                torch.testing.assert_close(sb[k], sa[k], **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("opts", [
    dict(),
    dict(weight_decay=0.05, amsgrad=True),
    dict(betas=(0.3, 0.9), eps=1e-6, maximize=True, weight_decay=0.01),
    dict(amsgrad=True, maximize=True, foreach=True),
], ids=["defaults", "wd-amsgrad", "beta0.3-maximize", "amsgrad-maximize-foreach"])
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("schedule", ["none", "step", "cosine+warmup"])
def test_training_matches_torch(pair, opts, dtype, schedule, count_native):
    ref_cls, cls = pair
    m_ref = _model(dtype)
    m_ours = copy.deepcopy(m_ref)
    o_ref, o_ours = ref_cls(m_ref.parameters(), lr=0.02, **opts), cls(m_ours.parameters(), lr=0.02, **opts)

    def sched(o):
        if schedule == "step":
            return torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)
        if schedule == "cosine+warmup":
            return torch.optim.lr_scheduler.SequentialLR(o, [
                torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=3),
                torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10)], milestones=[3])
        return None

    data = _data(dtype, 12)
    _train(m_ref, o_ref, data, sched(o_ref))
    _train(m_ours, o_ours, data, sched(o_ours))
    assert count_native == [4] * 12  # every step: the four params in one native call
    _assert_state_close(o_ours, o_ref, m_ours, m_ref, TOL[dtype])
    assert o_ours.param_groups[0]["lr"] == o_ref.param_groups[0]["lr"]


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("direction", ["torch->ours", "ours->torch"])
def test_checkpoints_move_both_ways(pair, direction, count_native):
    ref_cls, cls = pair
    first, second = (ref_cls, cls) if direction == "torch->ours" else (cls, ref_cls)
    kw = dict(lr=0.01, weight_decay=0.02, amsgrad=True)
    data = _data(torch.float32, 10)
    m_a = _model(torch.float32)
    m_b = copy.deepcopy(m_a)
    o_a = first(m_a.parameters(), **kw)
    _train(m_a, o_a, data[:5])
    # Resume in the other class from the checkpoint; continue both.
    o_b = second(m_b.parameters(), **kw)
    m_b.load_state_dict(m_a.state_dict())
    o_b.load_state_dict(copy.deepcopy(o_a.state_dict()))
    sd_a, sd_b = o_a.state_dict(), o_b.state_dict()
    assert sd_a["param_groups"] == sd_b["param_groups"]
    for k in sd_a["state"]:
        assert sd_a["state"][k].keys() == sd_b["state"][k].keys()
        assert all(torch.equal(sd_a["state"][k][n], sd_b["state"][k][n]) for n in sd_a["state"][k])
    _train(m_a, o_a, data[5:])
    _train(m_b, o_b, data[5:])
    _assert_state_close(o_b, o_a, m_b, m_a, TOL[torch.float32])
    assert len(count_native) == 5 + 5 if first is cls else len(count_native) == 5


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_fallback_params_take_torchs_code_with_torchs_results(pair, count_native):
    """One group with native params and params only torch can step: float16, complex,
    non-contiguous; the native ones in one call, the others bit for bit as torch steps them."""
    ref_cls, cls = pair

    def make():
        g = torch.Generator().manual_seed(4)
        ps = [
            torch.nn.Parameter(torch.randn(6, generator=g)),  # native
            torch.nn.Parameter(torch.randn(6, generator=g).half()),  # dtype
            torch.nn.Parameter(torch.randn(4, 3, generator=g, dtype=torch.float64).t()),  # layout
            torch.nn.Parameter(torch.randn(3, 3, generator=g, dtype=torch.float64)),  # native
            torch.nn.Parameter(torch.randn(5, generator=g, dtype=torch.complex64)),  # complex
        ]
        return ps

    ref, ours = make(), make()
    o_ref = ref_cls(ref, lr=0.05, weight_decay=0.01, foreach=False)
    o_ours = cls(ours, lr=0.05, weight_decay=0.01, foreach=False)
    gen = torch.Generator().manual_seed(5)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in ref]
        for ps, o in ((ref, o_ref), (ours, o_ours)):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            o.step()
    assert count_native == [2] * 4
    for i, (a, b) in enumerate(zip(ref, ours)):
        if i in (1, 2, 4):
            assert torch.equal(a, b), i
            assert all(torch.equal(o_ref.state[a][k], o_ours.state[b][k]) for k in o_ref.state[a])
        else:
            torch.testing.assert_close(b.detach(), a.detach(), **TOL[a.dtype])


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_differentiable_and_capturable_are_served_by_torch(pair, count_native):
    ref_cls, cls = pair
    results = []
    for c in (ref_cls, cls):
        w0 = torch.randn(3, generator=torch.Generator().manual_seed(0), requires_grad=True)
        p = w0.clone()
        p.grad = torch.ones(3)
        c([p], lr=0.1, differentiable=True).step()
        p.sum().backward()
        results.append((p.detach().clone(), w0.grad.clone()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    # capturable on CPU: torch's own check, raised by torch's code.
    errs = []
    for c in (ref_cls, cls):
        p = torch.nn.Parameter(torch.ones(3))
        p.grad = torch.ones(3)
        errs.append(_raised(lambda: c([p], capturable=True).step()))
    assert errs[0] == errs[1] and errs[0] is not None
    assert count_native == []


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_sparse_grad_raises_torchs_error_before_writing(pair):
    ref_cls, cls = pair
    p1, p2 = torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))
    p1.grad = torch.ones(4)
    p2.grad = torch.ones(4).to_sparse()
    o = cls([{"params": [p1]}, {"params": [p2]}], lr=0.1)
    snap = _snapshot(o)
    errs = [_raised(lambda: o.step())]
    q = torch.nn.Parameter(torch.ones(4))
    q.grad = torch.ones(4).to_sparse()
    errs.append(_raised(lambda: ref_cls([q], lr=0.1).step()))
    assert errs[0] == errs[1] and errs[0][0] is RuntimeError
    _assert_unchanged(o, snap)  # torch would have stepped the first group already; we write nothing


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_constructor_checks_are_torchs(pair):
    ref_cls, cls = pair
    p = [torch.nn.Parameter(torch.ones(2))]
    for kw in (dict(lr=-1.0), dict(betas=(1.0, 0.9)), dict(betas=(0.9, -0.1)), dict(eps=-1.0),
               dict(weight_decay=-1.0), dict(fused=True, foreach=True)):
        assert _raised(lambda: ref_cls(p, **kw)) == _raised(lambda: cls(p, **kw)) is not None, kw


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_hyperparameters_the_kernel_refuses_go_to_torch(pair, count_native):
    """A negative lr or a beta of 1 set on the group after construction: torch's code steps the
    group (torch computes what it computes), nothing is refused half-way."""
    ref_cls, cls = pair
    for change in ({"lr": -0.01}, {"betas": (0.9, 1.0)}, {"eps": float("inf")}):
        ps = [[torch.nn.Parameter(torch.ones(5) * 0.5)] for _ in range(2)]
        opts = [ref_cls(ps[0], lr=0.1), cls(ps[1], lr=0.1)]
        for p, o in zip(ps, opts):
            o.param_groups[0].update(change)
            p[0].grad = torch.full((5,), 0.25)
            o.step()
        torch.testing.assert_close(ps[1][0], ps[0][0], rtol=0, atol=0, equal_nan=True, msg=str(change))
    assert count_native == [1, 1, 1]  # each tried once, refused, nothing written


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_shared_memory_params_step_one_after_another_as_torch(pair, count_native):
    ref_cls, cls = pair
    outs = []
    for c in (ref_cls, cls):
        base = torch.zeros(10)
        a, b = torch.nn.Parameter(base[:6]), torch.nn.Parameter(base[4:])
        # Parameters over one storage (views): torch steps them one after another.
        a.data, b.data = base[:6], base[4:]
        a.grad, b.grad = torch.ones(6), torch.ones(6) * 2
        c([a, b], lr=0.1, foreach=False).step()
        outs.append(base.clone())
    # The kernel is tried once with both params, refuses the overlap before writing anything, and
    # torch's own code steps them: torch's bits.
    assert count_native == [2]
    assert torch.equal(outs[1], outs[0])


# --- torch's GradScaler contract on the fused path ------------------------------------------------


@pytest.mark.parametrize("unscale", [True, False], ids=["unscale+clip", "step-unscales"])
@pytest.mark.parametrize("fused", [True, None], ids=lambda v: f"fused={v}")
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_grad_scaler_recipe_matches_torch(pair, fused, unscale, count_native):
    ref_cls, cls = pair
    kw = dict(lr=0.01, weight_decay=1e-2, amsgrad=True, fused=fused)
    torch.manual_seed(0)
    m_ref = _Net()
    m_ours = copy.deepcopy(m_ref)
    o_ref, o_ours = ref_cls(m_ref.parameters(), **kw), cls(m_ours.parameters(), **kw)
    s_ref, s_ours = (torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=2) for _ in range(2))
    gen = torch.Generator().manual_seed(1)
    for step in range(10):
        x = torch.randn(16, 8, generator=gen)
        y = x.sum(dim=1, keepdim=True).sin()
        if step in OVERFLOW_STEPS:
            x[3, 2] = float("inf")
        before = _snapshot(o_ours)
        calls = len(count_native)
        _recipe_step(m_ref, o_ref, s_ref, x, y, unscale)
        _recipe_step(m_ours, o_ours, s_ours, x, y, unscale)
        assert s_ours.get_scale() == s_ref.get_scale()
        if step in OVERFLOW_STEPS:
            assert all(torch.equal(p, v) for p, v in zip(m_ours.parameters(), before[0]))
            assert len(count_native) == calls
        else:
            assert count_native[calls:] == [4]
        for a, b in zip(m_ref.parameters(), m_ours.parameters()):
            torch.testing.assert_close(b.detach(), a.detach(), **TOL[torch.float32])
            torch.testing.assert_close(b.grad, a.grad, equal_nan=True, rtol=1e-4, atol=1e-5)
        for a, b in zip(m_ref.parameters(), m_ours.parameters()):
            assert (a in o_ref.state) == (b in o_ours.state)
            if a in o_ref.state:
                assert torch.equal(o_ref.state[a]["step"], o_ours.state[b]["step"])
                for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                    torch.testing.assert_close(o_ours.state[b][k], o_ref.state[a][k], **TOL[torch.float32])


@pytest.mark.parametrize("grad_scale", [None, 2.0**10, 3.0], ids=["no-scale", "scale-2^10", "scale-3"])
@pytest.mark.parametrize("steps_before", [0, 2], ids=["first-step", "later-step"])
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_found_inf_one_skips_as_torchs_fused_adam(pair, grad_scale, steps_before, count_native):
    """Nothing written but the state torch's fused Adam starts (zero moments, step 0)."""
    ref_cls, cls = pair
    ref, ours = _group_params(), _group_params()
    kw = dict(lr=0.1, weight_decay=0.01, fused=True)
    o_ref, o_ours = ref_cls(ref, **kw), cls(ours, **kw)
    for _ in range(steps_before):
        o_ref.step()
        o_ours.step()
    for o in (o_ref, o_ours):
        o.grad_scale = None if grad_scale is None else torch.tensor(grad_scale)
        o.found_inf = torch.ones(())
    snap = _snapshot(o_ours)
    calls = len(count_native)
    o_ref.step()
    o_ours.step()
    assert len(count_native) == calls
    assert all(torch.equal(a, b) for a, b in zip(ours, snap[0]))
    assert all(torch.equal(a.grad, b) for a, b in zip(ours, snap[1]))
    for a, b in zip(ref, ours):
        assert o_ref.state[a].keys() == o_ours.state[b].keys()
        for k in o_ref.state[a]:
            assert o_ref.state[a][k].dtype == o_ours.state[b][k].dtype
            if steps_before == 0 or k == "step":
                assert torch.equal(o_ref.state[a][k], o_ours.state[b][k]), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [2.0**16, 2.0**-20, 3.0])
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_grad_scale_is_divided_out_as_torchs_fused_adam(pair, dtype, scale, count_native):
    """A power-of-two grad_scale in the kernel (grads left unscaled, bitwise as torch's division);
    another scale goes to torch's fused code."""
    ref_cls, cls = pair
    ref, ours = _group_params(dtype), _group_params(dtype)
    kw = dict(lr=0.1, weight_decay=0.01, maximize=True, fused=True)
    o_ref, o_ours = ref_cls(ref, **kw), cls(ours, **kw)
    for o in (o_ref, o_ours):
        o.grad_scale = torch.tensor(scale)
        o.step()
    for a, b in zip(ref, ours):
        assert torch.equal(a.grad, b.grad)
        torch.testing.assert_close(b.detach(), a.detach(), **TOL.get(a.dtype, dict(rtol=0, atol=0)))
    assert count_native == ([3] if scale != 3.0 else [])
