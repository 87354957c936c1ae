"""SGD.step()'s cached native plan: every change a user can make between steps is noticed.

Each test runs the same sequence through the cached path (backend="auto") and through the NumPy
backend (no plan), which must agree bit for bit, and checks errors and counters.
"""

from __future__ import annotations

import numpy as np
import pytest

import minimalsgd
from minimalsgd import SGD

pytestmark = pytest.mark.skipif(minimalsgd.backend_info()["backend"] != "native", reason="needs the native backend")


def _params(seed=0, n=3, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {f"p{i}": {"value": rng.standard_normal(5 + i).astype(dtype), "grad": rng.standard_normal(5 + i).astype(dtype)}
            for i in range(n)}


def _pair(**kw):
    a, b = _params(), _params()
    return (a, SGD(a, backend="auto", **kw)), (b, SGD(b, backend="numpy", **kw))


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k]["value"], b[k]["value"])


MUTATIONS = {
    "replace grad": lambda p, rng: p["p1"].__setitem__("grad", rng.standard_normal(6).astype(np.float32)),
    "grad in place": lambda p, rng: p["p0"]["grad"].__setitem__(slice(None), rng.standard_normal(5)),
    "replace value": lambda p, rng: p["p2"].__setitem__("value", rng.standard_normal(7).astype(np.float32)),
    "grad to None": lambda p, rng: p["p1"].__setitem__("grad", None),
    "delete grad": lambda p, rng: p["p1"].pop("grad", None),
    "add param": lambda p, rng: p.__setitem__("new", {"value": np.ones(4, np.float32), "grad": np.ones(4, np.float32)}),
    "remove param": lambda p, rng: p.pop("p0"),
    "add float64 param": lambda p, rng: p.__setitem__("f64", {"value": np.ones(5), "grad": np.ones(5)}),
    "strided grad": lambda p, rng: p["p0"].__setitem__("grad", np.ones(10, np.float32)[::2]),
    "nothing": lambda p, rng: None,
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
@pytest.mark.parametrize("kw", [dict(lr=0.1), dict(lr=0.1, momentum=0.9, nesterov=True, clip_grad_norm=1.0)])
def test_changes_between_steps_are_noticed(mutation, kw):
    (pa, oa), (pb, ob) = _pair(**kw)
    for step in range(6):
        if step == 3:
            for p in (pa, pb):
                MUTATIONS[mutation](p, np.random.default_rng(step))
        oa.step()
        ob.step()
        _same(pa, pb)
    assert oa.state.keys() == ob.state.keys()
    for k in oa.state:
        assert oa.state[k]["step"] == ob.state[k]["step"]
        if "momentum_buffer" in ob.state[k]:
            np.testing.assert_array_equal(oa.state[k]["momentum_buffer"], ob.state[k]["momentum_buffer"])


@pytest.mark.parametrize("bad", ["grad overlaps value", "read-only value", "wrong grad shape", "value reshaped in place"])
def test_bad_changes_raise_from_the_full_path_and_write_nothing(bad):
    p = _params()
    opt = SGD(p, lr=0.1, momentum=0.9)
    opt.step()
    opt.step()
    if bad == "grad overlaps value":
        p["p1"]["grad"] = p["p2"]["value"][:6]
        exc = ValueError
    elif bad == "read-only value":
        p["p1"]["value"].flags.writeable = False
        exc = ValueError
    elif bad == "wrong grad shape":
        p["p1"]["grad"] = np.ones(3, np.float32)
        exc = ValueError
    else:
        # The same array object, reshaped in place (resize: setting .shape is deprecated in NumPy 2.5).
        p["p2"]["value"].resize((7, 1), refcheck=False)
        exc = ValueError
    before = {k: v["value"].copy() for k, v in p.items()}
    with pytest.raises(exc, match=r"params\['p[12]'\]"):
        opt.step()
    for k in p:
        np.testing.assert_array_equal(p[k]["value"], before[k])
    assert all(opt.state[k]["step"] == 2 for k in p)


def test_hyperparameter_changes_drop_the_plan():
    (pa, oa), (pb, ob) = _pair(lr=0.1, momentum=0.9)
    for step in range(8):
        if step == 2:
            oa.lr = ob.lr = 0.01
        if step == 4:
            oa.weight_decay = ob.weight_decay = 0.1
        if step == 5:
            oa.clip_grad_norm = ob.clip_grad_norm = 0.5
        if step == 6:
            oa.maximize = ob.maximize = True
        oa.step()
        ob.step()
        _same(pa, pb)
    assert oa.last_grad_norm == ob.last_grad_norm  # the same order of additions in both backends


def test_step_counts_and_state_dict_through_the_plan():
    p = _params()
    opt = SGD(p, lr=0.1, momentum=0.9)
    for _ in range(10):
        opt.step()
    assert {k: st["step"] for k, st in opt.state.items()} == {k: 10 for k in p}
    sd = opt.state_dict()
    assert sd["state/p0/step"] == 10
    for _ in range(5):
        opt.step()
    assert opt.state["p2"]["step"] == 15


def test_skip_nonfinite_through_the_plan():
    p = _params()
    opt = SGD(p, lr=0.1, momentum=0.9, skip_nonfinite=True)
    assert opt.step() and opt.step()
    before = {k: v["value"].copy() for k, v in p.items()}
    p["p1"]["grad"][2] = np.inf  # in place: the plan's own arrays
    assert opt.step() is False
    assert opt.skipped_steps == 1
    for k in p:
        np.testing.assert_array_equal(p[k]["value"], before[k])
    p["p1"]["grad"][2] = 0.5
    assert opt.step() is True
    assert opt.state["p1"]["step"] == 3


# ---------------------------------------------------------------------------------------------
# Param groups and schedules through the plan: every change to a group is noticed


def _grouped_pair(**kw):
    out = []
    for backend in ("auto", "numpy"):
        p = _params(n=5)
        w = {k: p[k] for k in ("p0", "p1", "p2")}
        b = {k: p[k] for k in ("p3", "p4")}
        opt = SGD([{"params": w, "weight_decay": 0.1}, {"params": b, "lr": minimalsgd.schedules.exponential(0.2, 0.9)}],
                  backend=backend, **kw)
        out.append((p, opt))
    return out


GROUP_MUTATIONS = {
    "set momentum": lambda o, p: o.param_groups[0].__setitem__("momentum", 0.5),
    "set nesterov": lambda o, p: o.param_groups[1].update(nesterov=True, momentum=0.7),
    "set a float lr": lambda o, p: o.param_groups[0].__setitem__("lr", 0.03),
    "schedule to float": lambda o, p: o.param_groups[1].__setitem__("lr", 0.01),
    "float to schedule": lambda o, p: o.param_groups[0].__setitem__("lr", minimalsgd.schedules.cosine(0.1, 5)),
    "opt.lr for all": lambda o, p: setattr(o, "lr", 0.02),
    "replace a group's params": lambda o, p: o.param_groups[1].__setitem__("params", {"p3": p["p3"]}),
    "add a param to a group": lambda o, p: o.param_groups[1]["params"].__setitem__(
        "new", {"value": np.ones(4, np.float32), "grad": np.ones(4, np.float32)}),
    "add_param_group": lambda o, p: o.add_param_group(
        {"params": {"extra": {"value": np.ones(3, np.float32), "grad": np.ones(3, np.float32)}}, "lr": 0.3}),
    "replace a group in the list": lambda o, p: o.param_groups.__setitem__(
        1, {**dict(o.param_groups[1]), "lr": 0.05}),
    "remove a group from the list": lambda o, p: o.param_groups.pop(),
    "set clip": lambda o, p: setattr(o, "clip_grad_norm", 0.1),
    "nothing": lambda o, p: None,
}


@pytest.mark.parametrize("mutation", list(GROUP_MUTATIONS))
def test_group_changes_between_steps_are_noticed(mutation):
    (pa, oa), (pb, ob) = _grouped_pair(momentum=0.9)
    for step in range(7):
        if step == 3:
            GROUP_MUTATIONS[mutation](oa, pa)
            GROUP_MUTATIONS[mutation](ob, pb)
        assert oa.step() and ob.step()
        _same(pa, pb)
        assert oa.last_lrs == ob.last_lrs
        if step >= 5:
            assert oa._plan is not None or mutation == "replace a group in the list"
    assert oa.applied_steps == ob.applied_steps == 7
    assert {k: s["step"] for k, s in oa.state.items()} == {k: s["step"] for k, s in ob.state.items()}


def test_a_schedule_changes_lr_without_rebuilding_the_plan():
    (pa, oa), (pb, ob) = _grouped_pair(momentum=0.9)
    oa.step()
    oa.step()
    plan = oa._plan
    assert plan is not None
    for _ in range(5):
        oa.step()
    assert oa._plan is plan  # the same plan served every step, with a new lr each time
    assert oa.last_lrs[1] == pytest.approx(0.2 * 0.9**6, rel=1e-15)
