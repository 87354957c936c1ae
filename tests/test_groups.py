"""Param groups and lr schedules on the param-dict SGD (issue 9): against torch.optim.SGD with the
same groups and torch's own schedulers, against the float64 oracle, checkpoints, bad input."""

from __future__ import annotations

import io
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minimalsgd
from minimalsgd import SGD, schedules as S

from oracle import oracle_step

BACKENDS = ["numpy"] + (["native", "auto"] if minimalsgd.backend_info()["backend"] == "native" else [])

SHAPES = {"w1": (6, 5), "b1": (5,), "w2": (5, 3), "b2": (3,), "norm": (3,)}


def make_params(seed: int, dtype=np.float64) -> dict:
    rng = np.random.default_rng(seed)
    return {k: {"value": rng.standard_normal(s).astype(dtype), "grad": None} for k, s in SHAPES.items()}


def grads_for(step: int, dtype=np.float64) -> dict:
    rng = np.random.default_rng(1000 + step)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def split(params: dict) -> tuple[dict, dict]:
    """Weights, and biases and norms (the usual no-weight-decay group)."""
    return ({k: params[k] for k in ("w1", "w2")}, {k: params[k] for k in ("b1", "b2", "norm")})


def run(opt, params, steps, start=0):
    out = []
    for t in range(start, start + steps):
        g = grads_for(t, next(iter(params.values()))["value"].dtype)
        for k in params:
            params[k]["grad"] = g[k]
        out.append(opt.step())
    return out


def snapshot(params, opt):
    snap = {k: p["value"].copy() for k, p in params.items()}
    for k, st in opt.state.items():
        snap[f"state/{k}"] = (st.get("step"), None if st.get("momentum_buffer") is None else st["momentum_buffer"].copy())
    snap["__counters__"] = (opt.applied_steps, opt.skipped_steps, opt.last_grad_norm)
    return snap


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        elif k.startswith("state/"):
            assert a[k][0] == b[k][0], k
            if a[k][1] is None:
                assert b[k][1] is None, k
            else:
                np.testing.assert_array_equal(a[k][1], b[k][1], err_msg=k)
        else:
            assert a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]), k


# ---------------------------------------------------------------------------------------------
# Groups against the float64 oracle


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_group_uses_its_own_hyperparameters(backend):
    p = make_params(0)
    w, b = split(p)
    opt = SGD([{"params": w, "weight_decay": 0.1}, {"params": b, "lr": 0.05, "momentum": 0.5, "nesterov": False}],
              lr=0.1, momentum=0.9, nesterov=True, backend=backend)
    ref = {k: v["value"].copy() for k, v in p.items()}
    bufs: dict = {k: None for k in p}
    for t in range(6):
        run(opt, p, 1, start=t)
        g = grads_for(t)
        for k in p:
            hp = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1) if k in w else \
                dict(lr=0.05, momentum=0.5, nesterov=False, weight_decay=0.0)
            ref[k], bufs[k] = oracle_step(ref[k], g[k], bufs[k], first=t == 0, **hp)
            np.testing.assert_allclose(p[k]["value"], ref[k], rtol=1e-13, atol=1e-15, err_msg=f"{k} step {t}")
    assert opt.applied_steps == 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_groups_match_single_group_optimizers_bit_for_bit(backend):
    # Two groups in one optimizer == two one-group optimizers, when nothing global couples them.
    pa, pb = make_params(1), make_params(1)
    wa, ba = split(pa)
    wb, bb = split(pb)
    both = SGD([{"params": wa}, {"params": ba, "lr": S.cosine(0.2, 10), "weight_decay": 0.0}],
               lr=0.1, momentum=0.9, weight_decay=1e-2, backend=backend)
    one = SGD(wb, lr=0.1, momentum=0.9, weight_decay=1e-2, backend=backend)
    two = SGD(bb, lr=S.cosine(0.2, 10), momentum=0.9, backend=backend)
    for t in range(12):
        g = grads_for(t)
        for k in pa:
            pa[k]["grad"] = pb[k]["grad"] = g[k]
        both.step()
        one.step()
        two.step()
        for k in pa:
            np.testing.assert_array_equal(pa[k]["value"], pb[k]["value"], err_msg=f"{k} step {t}")


def test_clip_norm_is_global_over_every_group():
    p = make_params(2)
    w, b = split(p)
    opt = SGD([{"params": w}, {"params": b, "lr": 0.01}], lr=0.1, clip_grad_norm=0.5, backend="numpy")
    start = {k: v["value"].copy() for k, v in p.items()}
    run(opt, p, 1)
    g = grads_for(0)
    total = math.sqrt(sum(float(np.sum(x * x)) for x in g.values()))
    assert opt.last_grad_norm == pytest.approx(total, rel=1e-12)
    scale = 0.5 / (total + 1e-12)
    for k in p:
        lr = 0.1 if k in w else 0.01
        np.testing.assert_allclose(p[k]["value"], start[k] - lr * (g[k] * scale), rtol=1e-14, atol=1e-16)


# ---------------------------------------------------------------------------------------------
# Against torch.optim.SGD with the same groups and torch's own schedulers


def _torch_case(torch, dtype):
    L = torch.optim.lr_scheduler
    return [
        # (our lr of group 0, of group 1, torch scheduler factory)
        ("multistep", S.multistep(0.1, [5, 15], 0.3), S.multistep(0.02, [5, 15], 0.3),
         lambda o: L.MultiStepLR(o, [5, 15], 0.3)),
        ("warmup+cosine", S.warmup_cosine(0.1, 5, 30, start_factor=0.1), S.warmup_cosine(0.02, 5, 30, start_factor=0.1),
         lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, 1.0, 5), L.CosineAnnealingLR(o, 25)], [5])),
        ("one_cycle", S.one_cycle(0.1, 30), S.one_cycle(0.02, 30),
         lambda o: L.OneCycleLR(o, [0.1, 0.02], total_steps=30, cycle_momentum=False)),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(3))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_groups_and_schedules_against_torch(backend, case, dtype):
    torch = pytest.importorskip("torch")
    name, lr0, lr1, make_sched = _torch_case(torch, dtype)[case]
    p = make_params(3, dtype)
    w, b = split(p)
    opt = SGD([{"params": w, "lr": lr0, "weight_decay": 1e-2}, {"params": b, "lr": lr1, "dampening": 0.1}],
              momentum=0.9, backend=backend)
    tp = {k: torch.nn.Parameter(torch.tensor(v["value"].copy())) for k, v in p.items()}
    topt = torch.optim.SGD([{"params": [tp[k] for k in w], "lr": 0.1, "weight_decay": 1e-2},
                            {"params": [tp[k] for k in b], "lr": 0.02, "dampening": 0.1}], lr=0.1, momentum=0.9)
    sched = make_sched(topt)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    for t in range(30):
        g = grads_for(t, dtype)
        for k in p:
            p[k]["grad"] = g[k]
            tp[k].grad = torch.tensor(g[k])
        assert opt.get_lr() == pytest.approx([gr["lr"] for gr in topt.param_groups], rel=1e-12), (name, t)
        opt.step()
        topt.step()
        sched.step()
        for k in p:
            np.testing.assert_allclose(p[k]["value"], tp[k].detach().numpy(), rtol=rtol, atol=rtol * 1e-2,
                                       err_msg=f"{name} {k} step {t}")
    assert opt.last_lrs is not None and len(opt.last_lrs) == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_style_lr_changes_between_steps(backend):
    """What a torch scheduler does to a group (group['lr'] = x each step) works the same."""
    pa, pb = make_params(4), make_params(4)
    wa, ba = split(pa)
    wb, bb = split(pb)
    sched = S.exponential(0.1, 0.9)
    a = SGD([{"params": wa}, {"params": ba}], lr=sched, momentum=0.9, backend=backend)
    b = SGD([{"params": wb}, {"params": bb}], lr=0.1, momentum=0.9, backend=backend)
    for t in range(10):
        for group in b.param_groups:
            group["lr"] = sched(t)
        g = grads_for(t)
        for k in pa:
            pa[k]["grad"] = pb[k]["grad"] = g[k]
        a.step()
        b.step()
        for k in pa:
            np.testing.assert_array_equal(pa[k]["value"], pb[k]["value"])


# ---------------------------------------------------------------------------------------------
# The API: param_groups, add_param_group, attributes, the lr in force


def test_param_groups_hold_every_hyperparameter_and_changes_take_effect():
    p = make_params(5)
    w, b = split(p)
    opt = SGD([{"params": w}, {"params": b, "weight_decay": 0.0}], lr=0.1, momentum=0.9, weight_decay=0.01)
    assert len(opt.param_groups) == 2
    for g in opt.param_groups:
        assert set(g) == {"params", "lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"}
    assert opt.param_groups[0]["params"] is w and opt.param_groups[1]["params"] is b
    assert opt.param_groups[1]["weight_decay"] == 0.0 and opt.param_groups[0]["weight_decay"] == 0.01
    assert opt.lr == 0.1  # the groups agree
    with pytest.raises(AttributeError, match="weight_decay"):
        _ = opt.weight_decay  # they do not
    with pytest.raises(AttributeError, match="param_groups"):
        _ = opt.params
    opt.momentum = 0.5  # every group
    assert [g["momentum"] for g in opt.param_groups] == [0.5, 0.5]
    run(opt, p, 2)
    opt.param_groups[1]["lr"] = 0.0  # takes effect at the next step
    before = {k: p[k]["value"].copy() for k in b}
    run(opt, p, 1, start=2)
    for k in b:
        np.testing.assert_array_equal(p[k]["value"], before[k])
    assert opt.last_lrs == [0.1, 0.0]


def test_add_param_group_like_torch():
    p = make_params(6)
    w, b = split(p)
    opt = SGD(w, lr=0.1, momentum=0.9)
    run(opt, w, 2)
    opt.add_param_group({"params": b, "lr": 0.01})
    g = opt.param_groups[1]
    assert g["lr"] == 0.01 and g["momentum"] == 0.9  # the rest from the defaults
    start = {k: p[k]["value"].copy() for k in b}
    run(opt, p, 1, start=2)
    gr = grads_for(2)
    for k in b:
        np.testing.assert_allclose(p[k]["value"], start[k] - 0.01 * gr[k], rtol=1e-14)  # first step: v = g
    assert opt.state["b1"]["step"] == 1 and opt.state["w1"]["step"] == 3


def test_schedule_count_and_lr_in_force():
    p = make_params(7)
    seen = []

    def sched(t):
        seen.append(t)
        return 0.1 / (1 + t)

    opt = SGD(p, lr=sched, skip_nonfinite=True)
    assert opt.get_lr() == [0.1]
    run(opt, p, 3)
    assert opt.applied_steps == 3 and opt.last_lrs == [0.1 / 3]
    p["b1"]["grad"] = np.full(5, np.nan)
    assert opt.step() is False  # skipped: the schedule's count does not advance
    assert opt.applied_steps == 3
    assert opt.get_lr() == [0.1 / 4]
    assert seen[-1] == 3


# ---------------------------------------------------------------------------------------------
# Checkpoints with groups


def _roundtrip(sd, how):
    if how == "pickle":
        return pickle.loads(pickle.dumps(sd))
    if how == "savez":
        buf = io.BytesIO()
        np.savez(buf, **sd)
        buf.seek(0)
        with np.load(buf) as f:
            return dict(f)
    return sd


def _grouped(params, backend, lr0=None, lr1=None):
    w, b = split(params)
    return SGD([{"params": w, "lr": lr0 if lr0 is not None else S.cosine(0.1, 20), "weight_decay": 0.01},
                {"params": b, "lr": lr1 if lr1 is not None else 0.05, "nesterov": True}],
               momentum=0.9, clip_grad_norm=2.0, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["direct", "pickle", "savez"])
def test_resume_with_groups_is_bitwise_identical(backend, how):
    p_ref = make_params(8)
    ref = _grouped(p_ref, backend)
    run(ref, p_ref, 12)

    p_a = make_params(8)
    a = _grouped(p_a, backend)
    run(a, p_a, 5)
    a.param_groups[1]["lr"] = 0.05  # (unchanged value, set again: still saved and restored)
    sd = _roundtrip(a.state_dict(), how)
    p_b = {k: {"value": v["value"].copy(), "grad": None} for k, v in p_a.items()}
    b = _grouped(p_b, backend, lr1=9.0)  # group 1's lr comes from the checkpoint; group 0 keeps its schedule
    b.load_state_dict(sd)
    assert b.param_groups[1]["lr"] == 0.05 and b.applied_steps == 5
    run(b, p_b, 7, start=5)
    assert_same(snapshot(p_ref, ref), snapshot(p_b, b))


def test_state_dict_layout():
    p = make_params(9)
    opt = _grouped(p, "numpy")
    run(opt, p, 3)
    sd = opt.state_dict()
    assert sd["format"] == 2 and sd["optimizer"] == "SGD" and sd["applied_steps"] == 3
    assert list(sd["groups/0/params"]) == ["w1", "w2"] and list(sd["groups/1/params"]) == ["b1", "b2", "norm"]
    assert sd["groups/0/lr_is_schedule"] is True and sd["groups/0/lr"] == S.cosine(0.1, 20)(2)
    assert sd["groups/1/lr"] == 0.05 and sd["groups/1/nesterov"] is True
    for key, val in sd.items():
        assert isinstance(val, (int, float, bool, str, np.ndarray)), (key, type(val))


def test_format_1_state_dicts_still_load():
    p = make_params(10)
    opt = SGD(p, lr=0.1, momentum=0.9)
    run(opt, p, 3)
    sd = opt.state_dict()
    old = {"format": 1, "clip_grad_norm": math.nan, "skip_nonfinite": False, "backend": "auto",
           "skipped_steps": 0, "last_grad_norm": math.nan}
    for k in ("lr", "momentum", "nesterov", "weight_decay", "dampening", "maximize"):
        old[k] = sd[f"groups/0/{k}"]
    old.update({k: v for k, v in sd.items() if k.startswith("state/")})
    q = {k: {"value": v["value"].copy(), "grad": None} for k, v in p.items()}
    new = SGD(q, lr=0.5)
    new.load_state_dict(old)
    assert new.lr == 0.1 and new.momentum == 0.9 and new.applied_steps == 3
    run(opt, p, 2, start=3)
    run(new, q, 2, start=3)
    for k in p:
        np.testing.assert_array_equal(p[k]["value"], q[k]["value"])


def _bad_grouped_state_dicts(good):
    out = []
    d = dict(good)
    del d["groups/1/lr"], d["groups/1/momentum"], d["groups/1/dampening"], d["groups/1/weight_decay"]
    del d["groups/1/nesterov"], d["groups/1/maximize"], d["groups/1/params"], d["groups/1/lr_is_schedule"]
    out.append(("fewer groups", d, ValueError, "param groups"))
    d = dict(good)
    d["groups/0/params"], d["groups/1/params"] = d["groups/1/params"], d["groups/0/params"]
    out.append(("names swapped between groups", d, ValueError, r"param_groups\[0\]"))
    d = dict(good)
    d["groups/1/lr_is_schedule"] = True
    out.append(("schedule saved, float here", d, ValueError, "schedule"))
    d = dict(good)
    d["groups/1/nesterov"] = True
    d["groups/1/momentum"] = 0.0
    out.append(("bad hyperparameters", d, ValueError, "nesterov"))
    return out


@pytest.mark.parametrize("case", range(4))
def test_mismatched_groups_are_refused_and_nothing_changes(case):
    p = make_params(11)
    src = _grouped(p, "numpy", lr1=0.05)
    run(src, p, 2)
    label, bad, exc, pattern = _bad_grouped_state_dicts(src.state_dict())[case]
    q = make_params(12)
    target = _grouped(q, "numpy", lr1=0.3)
    run(target, q, 3)
    before = snapshot(q, target)
    before_repr = repr(target)
    with pytest.raises(exc, match=pattern):
        target.load_state_dict(bad)
    assert_same(before, snapshot(q, target))
    assert repr(target) == before_repr, label


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error naming what is wrong, nothing changed


BAD_GROUPS = [
    ("not a dict", lambda w, b: [{"params": w}, [b]], TypeError, r"param_groups\[1\] must be a dict"),
    ("no params", lambda w, b: [{"params": w}, {"lr": 0.1}], ValueError, r"param_groups\[1\] has no 'params'"),
    ("params not a dict", lambda w, b: [{"params": list(w.values())}], TypeError, r"param_groups\[0\]\['params'\]"),
    ("unknown key", lambda w, b: [{"params": w, "betas": (0.9, 0.99)}], ValueError, r"param_groups\[0\].*'betas'"),
    ("global key in a group", lambda w, b: [{"params": w, "clip_grad_norm": 1.0}], ValueError, "global"),
    ("name in two groups", lambda w, b: [{"params": w}, {"params": {**b, "w1": w["w1"]}}], ValueError, "'w1'.*param_groups\\[0\\]"),
    ("bad lr", lambda w, b: [{"params": w}, {"params": b, "lr": -0.1}], ValueError, r"param_groups\[1\]: lr"),
    ("bad nesterov", lambda w, b: [{"params": w, "nesterov": True, "momentum": 0.0}], ValueError, r"param_groups\[0\]: nesterov"),
    ("lr not a number", lambda w, b: [{"params": w, "lr": "0.1"}], TypeError, r"param_groups\[0\]: lr"),
]


@pytest.mark.parametrize("case", range(len(BAD_GROUPS)))
def test_bad_groups_are_refused_by_the_constructor(case):
    label, make, exc, pattern = BAD_GROUPS[case]
    p = make_params(13)
    w, b = split(p)
    before = {k: v["value"].copy() for k, v in p.items()}
    with pytest.raises(exc, match=pattern):
        SGD(make(w, b), lr=0.1, momentum=0.9)
    for k in p:
        np.testing.assert_array_equal(p[k]["value"], before[k])


BAD_ADDED_GROUPS = [
    ("not a dict", lambda b: [b], TypeError, r"param_groups\[1\] must be a dict"),
    ("no params", lambda b: {"lr": 0.1}, ValueError, r"param_groups\[1\] has no 'params'"),
    ("params not a dict", lambda b: {"params": list(b.values())}, TypeError, r"param_groups\[1\]\['params'\]"),
    ("unknown key", lambda b: {"params": b, "eps": 1e-8}, ValueError, r"param_groups\[1\].*'eps'"),
    ("name of another group", lambda b: {"params": {**b, "w1": {"value": np.zeros(2), "grad": None}}}, ValueError,
     r"'w1' is already in param_groups\[0\]"),
    ("bad momentum", lambda b: {"params": b, "momentum": -0.5}, ValueError, r"param_groups\[1\]: momentum"),
    ("bad maximize", lambda b: {"params": b, "maximize": 1}, TypeError, r"param_groups\[1\]: maximize"),
]


@pytest.mark.parametrize("case", range(len(BAD_ADDED_GROUPS)))
def test_bad_groups_are_refused_by_add_param_group_and_nothing_changes(case):
    label, make, exc, pattern = BAD_ADDED_GROUPS[case]
    p = make_params(13)
    w, b = split(p)
    opt = SGD(w, lr=0.1, momentum=0.9)
    run(opt, w, 2)
    before = snapshot(w, opt)
    groups_before = [dict(g) for g in opt.param_groups]
    with pytest.raises(exc, match=pattern):
        opt.add_param_group(make(b))
    assert [dict(g) for g in opt.param_groups] == groups_before, label
    assert_same(before, snapshot(w, opt))
    run(opt, w, 1, start=2)  # and it still steps
    assert opt.applied_steps == 3


def test_add_param_group_refuses_a_name_of_another_group():
    p = make_params(14)
    w, b = split(p)
    opt = SGD([{"params": w}, {"params": b}], lr=0.1)
    before = snapshot(p, opt)
    groups_before = [dict(g) for g in opt.param_groups]
    with pytest.raises(ValueError, match=r"'b1'.*param_groups\[1\]"):
        opt.add_param_group({"params": {"b1": {"value": np.zeros(5), "grad": np.ones(5)}}})
    assert [dict(g) for g in opt.param_groups] == groups_before
    assert_same(before, snapshot(p, opt))


def test_a_name_added_to_two_groups_later_is_refused_at_the_step():
    p = make_params(15)
    w, b = split(p)
    for backend in BACKENDS:
        opt = SGD([{"params": w}, {"params": b}], lr=0.1, momentum=0.9, backend=backend)
        run(opt, p, 2)
        before = snapshot(p, opt)
        b["w1"] = w["w1"]
        with pytest.raises(ValueError, match=r"'w1'.*param_groups\[0\] and param_groups\[1\]"):
            opt.step()
        assert_same(before, snapshot(p, opt))
        del b["w1"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad,exc", [(math.nan, ValueError), (math.inf, ValueError), (-1e-3, ValueError),
                                     ("0.1", TypeError), (None, TypeError), (True, TypeError)])
def test_bad_schedule_value_is_refused_at_its_step(backend, bad, exc):
    p = make_params(16)
    w, b = split(p)

    def sched(t):
        return 0.1 if t < 3 else bad

    opt = SGD([{"params": w}, {"params": b, "lr": sched}], lr=0.1, momentum=0.9, backend=backend)
    run(opt, p, 3)
    before = snapshot(p, opt)
    g = grads_for(3)
    for k in p:
        p[k]["grad"] = g[k]
    with pytest.raises(exc, match=r"param_groups\[1\]: the lr schedule returned .* for step 3"):
        opt.step()
    assert_same(before, snapshot(p, opt))
    assert opt.applied_steps == 3


# ---------------------------------------------------------------------------------------------
# One native call: the cached plan serves groups and schedules; the functional API per tensor


@pytest.mark.skipif("native" not in BACKENDS, reason="needs the native backend")
def test_plan_serves_groups_and_schedules_bit_for_bit():
    pa, pb = make_params(20, np.float32), make_params(20, np.float32)
    opts = []
    for p, backend in ((pa, "auto"), (pb, "numpy")):
        w, b = split(p)
        opts.append(SGD([{"params": w, "lr": S.warmup_cosine(0.1, 3, 20), "weight_decay": 0.01},
                         {"params": b, "lr": 0.05, "momentum": 0.0}],
                        momentum=0.9, nesterov=False, clip_grad_norm=3.0, skip_nonfinite=True, backend=backend))
    a, b = opts
    for t in range(14):
        if t == 6:  # a torch-style lr change: a cheap input of the plan, not a rebuild
            plan = a._plan
            a.param_groups[1]["lr"] = b.param_groups[1]["lr"] = 0.02
            assert a._plan is plan
        g = grads_for(t, np.float32)
        if t == 9:
            g["b2"][0] = np.inf
        for k in pa:
            pa[k]["grad"], pb[k]["grad"] = g[k], g[k].copy()
        assert a.step() == b.step() == (t != 9)
        if t >= 2:
            assert a._plan is not None
        for k in pa:
            np.testing.assert_array_equal(pa[k]["value"], pb[k]["value"], err_msg=f"{k} step {t}")
        assert a.last_lrs == b.last_lrs and a.applied_steps == b.applied_steps
    assert a.last_grad_norm == b.last_grad_norm
    assert {k: st["step"] for k, st in a.state.items()} == {k: st["step"] for k, st in b.state.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_per_tensor_hyperparameters(backend):
    rng = np.random.default_rng(21)
    vs = [rng.standard_normal(n) for n in (3, 4, 5)]
    gs = [rng.standard_normal(n) for n in (3, 4, 5)]
    bufs = [np.zeros(3), None, np.zeros(5)]
    lrs, mus, wds = [0.1, 0.2, 0.3], [0.9, 0.0, 0.5], (0.0, 0.01, 0.02)
    nests = [True, False, False]
    expected = [oracle_step(v, g, None, first=True, lr=lr, momentum=mu, weight_decay=wd, nesterov=ne)[0]
                for v, g, lr, mu, wd, ne in zip(vs, gs, lrs, mus, wds, nests)]
    minimalsgd.sgd_step(vs, gs, bufs, lr=lrs, momentum=mus, weight_decay=wds, nesterov=nests,
                        first_step=True, backend=backend)
    for v, e in zip(vs, expected):
        np.testing.assert_allclose(v, e, rtol=1e-14, atol=1e-16)
    np.testing.assert_array_equal(bufs[0], gs[0])


@pytest.mark.parametrize("kwargs,exc,pattern", [
    (dict(lr=[0.1, 0.2]), ValueError, "lr has 2 values for 3 tensors"),
    (dict(lr=0.1, momentum=[0.9] * 4), ValueError, "momentum has 4 values for 3 tensors"),
    (dict(lr=[0.1, -0.2, 0.1]), ValueError, r"values\[1\]: lr"),
    (dict(lr=0.1, nesterov=[True, False, False]), ValueError, r"values\[0\]: nesterov"),
    (dict(lr=0.1, weight_decay=[0.0, "x", 0.0]), TypeError, r"values\[1\]: weight_decay"),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_per_tensor_bad_input(kwargs, exc, pattern, backend):
    rng = np.random.default_rng(22)
    vs = [rng.standard_normal(4).astype(np.float32) for _ in range(3)]
    gs = [rng.standard_normal(4).astype(np.float32) for _ in range(3)]
    bufs = [np.ones(4, np.float32) for _ in range(3)]
    before = [x.copy() for x in vs + bufs]
    with pytest.raises(exc, match=pattern):
        minimalsgd.sgd_step(vs, gs, bufs, backend=backend, **kwargs)
    for x, y in zip(vs + bufs, before):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------------------------
# Random groups, hyperparameters and schedules: the plan (one call) and the NumPy backend agree
# bit for bit, and both follow the float64 oracle


_HYPER = st.fixed_dictionaries({}, optional={
    "lr": st.sampled_from([0.0, 0.01, 0.3]),
    "momentum": st.sampled_from([0.0, 0.5, 0.9]),
    "dampening": st.sampled_from([0.0, 0.2]),
    "weight_decay": st.sampled_from([0.0, 0.01]),
    "maximize": st.booleans(),
})


@pytest.mark.skipif("native" not in BACKENDS, reason="needs the native backend")
@settings(max_examples=40, deadline=None)
@given(assign=st.lists(st.integers(0, 2), min_size=5, max_size=5), hypers=st.lists(_HYPER, min_size=3, max_size=3),
       scheduled=st.lists(st.booleans(), min_size=3, max_size=3), clip=st.sampled_from([None, 1.0]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_random_groups_plan_numpy_and_oracle(assign, hypers, scheduled, clip, dtype):
    names = list(SHAPES)
    runs = []
    for backend in ("auto", "numpy"):
        p = make_params(30, dtype)
        groups = []
        for gi in range(3):
            h = dict(hypers[gi])
            if scheduled[gi]:
                h["lr"] = S.step_decay(h.get("lr", 0.1), 2, 0.5)
            groups.append({"params": {k: p[k] for k, a in zip(names, assign) if a == gi}, **h})
        opt = SGD(groups, lr=0.1, clip_grad_norm=clip, backend=backend)
        run(opt, p, 6)
        runs.append((p, opt))
    (pa, oa), (pb, ob) = runs
    for k in pa:
        assert pa[k]["value"].tobytes() == pb[k]["value"].tobytes(), k
    assert oa.last_lrs == ob.last_lrs
    if clip:
        assert oa.last_grad_norm == ob.last_grad_norm  # the backends' norms are bit for bit equal
    # The float64 oracle, tensor by tensor with its group's settings.
    ref = {k: v["value"].astype(np.float64) for k, v in make_params(30, dtype).items()}
    bufs: dict = {k: None for k in names}
    for t in range(6):
        g = grads_for(t, dtype)
        scale = 1.0
        if clip is not None:
            total = math.sqrt(sum(float(np.sum(x.astype(np.float64) ** 2)) for x in g.values()))
            scale = clip / (total + 1e-12) if total > clip else 1.0
        for k, gi in zip(names, assign):
            h = {"lr": 0.1, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "maximize": False, **hypers[gi]}
            if scheduled[gi]:
                h["lr"] = S.step_decay(h["lr"], 2, 0.5)(t)
            ref[k], bufs[k] = oracle_step(ref[k], g[k], bufs[k], first=bufs[k] is None, grad_scale=scale, **h)
    for k in pa:
        tol = 1e-12 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(pa[k]["value"], ref[k], rtol=tol, atol=tol)


def test_core_groups_entry_refuses_bad_input_and_writes_nothing():
    core = minimalsgd._router._core
    if core is None:
        pytest.skip("needs the native backend")
    v = [np.zeros(3, np.float32), np.zeros(4, np.float32)]
    g = [np.ones(3, np.float32), np.ones(4, np.float32)]
    b = [np.zeros(3, np.float32), None]
    opts = [(0.1, 0.9, 0.0, 0.0, False, False), (0.1, 0.0, 0.0, 0.0, False, False)]
    bad = [
        (dict(group_of=[0, 2]), ValueError, r"group_of\[1\]"),
        (dict(group_of=[1, 0]), TypeError, r"momentum_buffers\[1\]"),  # tensor 1 in a momentum group, no buffer
        (dict(options=[(0.1, 0.9, 0.0, 0.0, False, False), (-1.0, 0.0, 0.0, 0.0, False, False)]), ValueError, r"options\[1\]"),
        (dict(options=[(0.1, 0.9)]), ValueError, r"options\[0\]"),
        (dict(grad_scale=math.nan), ValueError, "grad_scale"),
    ]
    for change, exc, pattern in bad:
        kw = dict(values=v, grads=g, momentum_buffers=b, first_step=[True, True], group_of=[0, 1], options=opts,
                  grad_scale=1.0)
        kw.update(change)
        with pytest.raises(exc, match=pattern):
            core.sgd_step_groups(**kw)
        for x in v + [b[0]]:
            np.testing.assert_array_equal(x, 0)
    core.sgd_step_groups(v, g, b, [True, True], [0, 1], opts, 1.0)
    np.testing.assert_allclose(v[0], -0.1, rtol=1e-6)
    np.testing.assert_allclose(v[1], -0.1, rtol=1e-6)
    np.testing.assert_array_equal(b[0], 1.0)
