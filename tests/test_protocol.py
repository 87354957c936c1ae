"""The public step protocol (minimalsgd.protocol) and the pieces of minimalsgd.optim that other
layers call: formulas applied to a Batch, the gradient policy (the same decision as the native
plan's C++ copy of it), Optimizer.step(grad_scale=), get_options(), and checkpoint.read /
checkpoint.state_dict with state held outside the optimizer."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import minimalsgd
from minimalsgd import SGD, Adam, AdamW, adam_step, global_grad_norm, sgd_step
from minimalsgd.optim import (
    ADAM_FORMULA,
    ADAMW_FORMULA,
    SGD_FORMULA,
    GradientPolicy,
    Optimizer,
    PlanStatus,
    checkpoint,
)
from minimalsgd.optim.plans import PythonPlan
from minimalsgd.protocol import AdamOptions, Batch, Formula, Rounding, SGDOptions

native = minimalsgd.backend_info()["backend"] == "native"
needs_native = pytest.mark.skipif(not native, reason="needs the native backend")


def _params(seed=0, sizes=(5, 6, 7), dtype=np.float32, scale=1.0):
    rng = np.random.default_rng(seed)
    return {f"p{i}": {"value": rng.standard_normal(n).astype(dtype),
                      "grad": (rng.standard_normal(n) * scale).astype(dtype)} for i, n in enumerate(sizes)}


def _copy(p):
    return {k: {"value": v["value"].copy(), "grad": v["grad"].copy()} for k, v in p.items()}


def _bits(p):
    return [p[k]["value"].tobytes() for k in sorted(p)]


# --- the protocol's types ---------------------------------------------------------------------


def test_formulas_are_the_classes_formulas_and_follow_the_protocol():
    assert SGD.formula is SGD_FORMULA and Adam.formula is ADAM_FORMULA and AdamW.formula is ADAMW_FORMULA
    for f in (SGD_FORMULA, ADAM_FORMULA, ADAMW_FORMULA):
        assert isinstance(f, Formula)
        assert f.hyperparameters[0] == "lr"
    assert SGD.hyperparameters == SGD_FORMULA.hyperparameters == SGDOptions._fields
    assert Adam.state_fields == ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    assert (ADAM_FORMULA.name, ADAMW_FORMULA.name) == ("adam", "adamw")


def test_options_are_named_and_checked():
    o = SGD_FORMULA.options(dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=True, maximize=False))
    assert isinstance(o, SGDOptions) and o.momentum == 0.9 and o.nesterov is True
    assert SGD_FORMULA.fields_needed(o) == ("momentum_buffer",)
    assert SGD_FORMULA.fields_needed(o._replace(momentum=0.0, nesterov=False)) == ()
    a = ADAMW_FORMULA.options(dict(lr=0.1, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.0, amsgrad=True,
                                   maximize=False))
    assert isinstance(a, AdamOptions) and (a.beta1, a.beta2, a.amsgrad, a.decoupled) == (0.8, 0.99, True, True)
    assert ADAM_FORMULA.fields_needed(a) == ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    with pytest.raises(ValueError, match="nesterov requires momentum > 0"):
        SGD_FORMULA.options(dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=True, maximize=False))
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\)"):
        ADAM_FORMULA.options(dict(lr=0.1, betas=(0.9, 1.0), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False))
    r = Rounding(True, 7, 3)
    sr, seed, step = r
    assert (sr, seed, step) == (r.stochastic, r.seed, r.step) == (True, 7, 3)


def test_get_options_are_the_next_steps():
    p = _params()
    opt = SGD([{"params": {"p0": p["p0"]}}, {"params": {"p1": p["p1"]}, "lr": lambda t: 0.5 / (t + 1)}],
              lr=0.1, momentum=0.9)
    assert opt.get_options() == [SGDOptions(0.1, 0.9), SGDOptions(0.5, 0.9)]
    opt.step()
    assert opt.get_options()[1].lr == 0.25
    opt.param_groups[0]["momentum"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[0\]: momentum must be >= 0.0"):
        opt.get_options()


@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_sgd_formula_applied_to_a_batch_is_sgd_step(backend):
    rng = np.random.default_rng(1)
    vs = [rng.standard_normal(n).astype(np.float32) for n in (3, 40, 7)]
    gs = [rng.standard_normal(v.shape).astype(np.float32) for v in vs]
    bufs = [np.empty_like(v) for v in vs]
    ref_v, ref_b = [v.copy() for v in vs], [np.empty_like(v) for v in vs]
    options = [SGDOptions(0.1, 0.9, 0.0, 1e-3, True, False), SGDOptions(0.05, 0.0)]
    group_of = [0, 1, 0]
    batch = Batch(labels=[f"t{i}" for i in range(3)], values=vs, grads=gs,
                  state={"momentum_buffer": [bufs[0], None, bufs[2]]}, born=[True] * 3, steps=[0] * 3,
                  group_of=group_of, options=options, grad_scale=0.5, backend=backend)
    SGD_FORMULA.apply(batch)
    sgd_step(ref_v, gs, [ref_b[0], None, ref_b[2]], lr=[0.1, 0.05, 0.1], momentum=[0.9, 0.0, 0.9],
             weight_decay=[1e-3, 0.0, 1e-3], nesterov=[True, False, True], first_step=True, grad_scale=0.5,
             backend=backend)
    assert [v.tobytes() for v in vs] == [v.tobytes() for v in ref_v]
    assert bufs[0].tobytes() == ref_b[0].tobytes() and bufs[2].tobytes() == ref_b[2].tobytes()


@pytest.mark.parametrize("formula", [ADAM_FORMULA, ADAMW_FORMULA])
def test_adam_formula_applied_to_a_batch_is_adam_step(formula):
    rng = np.random.default_rng(2)
    vs = [rng.standard_normal(n) for n in (4, 9)]
    gs = [rng.standard_normal(v.shape) for v in vs]
    st = {f: [formula.new_state(f, v) for v in vs] for f in formula.state_fields}
    assert all(not a.any() for col in st.values() for a in col)  # born as zeros
    ref = [v.copy() for v in vs]
    ref_st = {f: [np.zeros_like(v) for v in vs] for f in formula.state_fields}
    o = formula.options(dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, amsgrad=True, maximize=False))
    for step in range(3):
        formula.apply(Batch(labels=["a", "b"], values=vs, grads=gs, state=st, born=[step == 0] * 2, steps=[step] * 2,
                            group_of=[0, 0], options=[o]))
        adam_step(ref, gs, ref_st["exp_avg"], ref_st["exp_avg_sq"], ref_st["max_exp_avg_sq"], lr=0.01,
                  betas=(0.9, 0.99), weight_decay=0.1, amsgrad=True, decoupled=formula.decoupled, step=step + 1)
    assert [v.tobytes() for v in vs] == [v.tobytes() for v in ref]


# --- the gradient policy: one definition, and the native plan's copy agrees ------------------

GRADS = {
    "small": lambda g: g,
    "clipped": lambda g: g * 50,
    "nan": lambda g: np.where(np.arange(g.size) == 1, np.nan, g).astype(g.dtype),
    "inf": lambda g: np.where(np.arange(g.size) == 2, np.inf, g).astype(g.dtype),
    "overflow": lambda g: np.full_like(g, 1e300),  # finite grads whose float64 squares overflow
}


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the NumPy backend's float64 squares
@pytest.mark.parametrize(
    "dtype,backend,kind",
    [(d, b, k) for d in (np.float32, np.float64) for b in ("auto", "numpy") for k in GRADS
     if not (k == "overflow" and d == np.float32)],  # float32 grads cannot overflow a float64 sum of squares
)
def test_gradient_policy_and_the_plans_agree(kind, backend, dtype):
    policy = GradientPolicy.checked(1.0, True)
    # The full path of one optimizer (its plan dropped before every step) and the cached plan of
    # another (native for "auto", Python for "numpy"), on the same grads, against the policy's
    # decision applied through the functional API.
    pa, pb = _params(3, dtype=dtype), _params(3, dtype=dtype)
    pref = _copy(pa)
    kw = dict(lr=0.1, momentum=0.9, clip_grad_norm=1.0, skip_nonfinite=True, backend=backend)
    full, planned = SGD(pa, **kw), SGD(pb, **kw)
    bufs = {k: np.empty_like(v["value"]) for k, v in pref.items()}
    for step in range(3):
        for p in (pa, pb, pref):
            for k in p:
                p[k]["grad"][...] = GRADS[kind](_params(10 + step, dtype=dtype)[k]["grad"])
        grads = [pref[k]["grad"] for k in sorted(pref)]
        norm = global_grad_norm(grads, backend=backend)
        decision = policy.decide(norm, lambda: all(np.isfinite(g).all() for g in grads))
        measured = policy.measure(sorted(pref), grads, backend)
        assert (measured.scale, measured.skipped) == (decision.scale, decision.skipped)
        assert measured.norm == decision.norm or math.isnan(measured.norm) and math.isnan(decision.norm)
        if not decision.skipped:
            sgd_step([pref[k]["value"] for k in sorted(pref)], grads, [bufs[k] for k in sorted(pref)], lr=0.1,
                     momentum=0.9, first_step=full.applied_steps == 0, grad_scale=decision.scale, backend=backend)
        full._drop_plan()
        assert full.step() is (not decision.skipped)
        assert planned.step() is (not decision.skipped)
        if step > 0 and full.applied_steps > 0:
            assert planned._plan is not None
            assert isinstance(planned._plan, PythonPlan) == (backend == "numpy")
        assert _bits(pa) == _bits(pb) == _bits(pref), step
        assert full.skipped_steps == planned.skipped_steps
        if not decision.skipped:
            assert full.last_grad_norm == planned.last_grad_norm == decision.norm
    if kind == "overflow":
        assert math.isinf(norm) and full.skipped_steps == 0  # overflow of finite grads is not a bad gradient
    if kind in ("nan", "inf"):
        assert full.skipped_steps == 3


def test_gradient_policy_decisions():
    p = GradientPolicy.checked(2.0, True)
    assert p.measures and not GradientPolicy().measures
    assert p.decide(1.0, lambda: True) == (1.0, 1.0, False)
    d = p.decide(4.0, lambda: True)
    assert d.scale == 2.0 / (4.0 + 1e-12) and not d.skipped
    assert p.decide(math.nan, lambda: True).skipped
    assert p.decide(math.inf, lambda: False).skipped and not p.decide(math.inf, lambda: True).skipped
    # An external grad scale applies first: the norm and the clip are those of the scaled grads.
    d = p.decide(4.0, lambda: True, grad_scale=0.25)
    assert (d.norm, d.scale) == (1.0, 0.25)
    d = p.decide(40.0, lambda: True, grad_scale=0.25)
    assert (d.norm, d.scale) == (10.0, 0.25 * (2.0 / (10.0 + 1e-12)))
    with pytest.raises(ValueError, match="clip_grad_norm must be > 0"):
        GradientPolicy.checked(0.0, False)
    with pytest.raises(TypeError, match="skip_nonfinite must be a bool"):
        GradientPolicy.checked(None, 1)


def test_plan_status_is_an_enum_with_the_native_numbers():
    assert [int(s) for s in (PlanStatus.STALE, PlanStatus.APPLIED, PlanStatus.SKIPPED)] == [0, 1, 2]
    p = _params()
    opt = SGD(p, lr=0.1, skip_nonfinite=True, backend="numpy")
    opt.step()
    plan = opt._plan
    assert isinstance(plan, PythonPlan)
    assert plan.step() is PlanStatus.APPLIED
    p["p0"]["grad"][0] = np.nan
    assert plan.step() is PlanStatus.SKIPPED
    p["p0"]["grad"] = p["p0"]["grad"].copy()
    assert plan.step() is PlanStatus.STALE


# --- step(grad_scale=) ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "numpy"])
@pytest.mark.parametrize("cls", [SGD, Adam])
def test_step_with_an_external_grad_scale(backend, cls):
    # The same as prescaled grads (one float product per element either way), plan or not.
    pa, pb = _params(4), _params(4)
    kw = dict(lr=0.01, weight_decay=0.01, backend=backend) | (dict(momentum=0.9) if cls is SGD else {})
    oa, ob = cls(pa, **kw), cls(pb, **kw)
    for step in range(4):
        s = [0.5, 0.25, 1.0, 2.0][step]
        for k in pb:
            pb[k]["grad"] = pa[k]["grad"] * np.float32(s)
        assert oa.step(grad_scale=s) is True
        assert ob.step() is True
        assert _bits(pa) == _bits(pb), step
    assert oa.applied_steps == ob.applied_steps == 4
    assert oa.state["p1"]["step"] == 4


@pytest.mark.parametrize("kind", ["small", "clipped", "nan"])
@pytest.mark.parametrize("backend", ["auto", "numpy"])
@pytest.mark.parametrize("cls", [SGD, Adam])
def test_grad_scale_is_a_per_step_input_of_the_plan(kind, backend, cls):
    """step(grad_scale=s) keeps the cached plan (native for "auto", Python for "numpy") and
    writes the bits of the full path, whose plan is dropped before every step: the plan decides
    clip and skip on the scaled grads as GradientPolicy.decide does (norm, scale, skip)."""
    pa, pb = _params(3), _params(3)
    kw = dict(lr=0.1, clip_grad_norm=1.0, skip_nonfinite=True, backend=backend) | (
        dict(momentum=0.9) if cls is SGD else {})
    full, planned = cls(pa, **kw), cls(pb, **kw)
    plan = None
    for step in range(4):
        s = [0.5, 1.0, 0.25, 3.0][step]
        for p in (pa, pb):
            for k in p:
                p[k]["grad"][...] = GRADS[kind if step else "small"](_params(20 + step)[k]["grad"])
        full._drop_plan()
        assert full.step(grad_scale=s) == planned.step(grad_scale=s)
        if step == 1:
            plan = planned._plan
            assert plan is not None and isinstance(plan, PythonPlan) == (backend == "numpy")
        elif step > 1:
            assert planned._plan is plan, "a step with a grad scale dropped the plan"
        assert _bits(pa) == _bits(pb), step
        assert (full.skipped_steps, full.applied_steps) == (planned.skipped_steps, planned.applied_steps)
        assert full.last_grad_norm == planned.last_grad_norm
    assert planned.skipped_steps == (3 if kind == "nan" else 0)


def test_step_grad_scale_with_clipping_measures_the_scaled_grads():
    pa, pb = _params(5, scale=10.0), _params(5, scale=10.0)
    oa = SGD(pa, lr=0.1, clip_grad_norm=1.0)
    ob = SGD(pb, lr=0.1, clip_grad_norm=1.0)
    raw = global_grad_norm([pa[k]["grad"] for k in sorted(pa)])
    oa.step(grad_scale=0.125)
    for k in pb:
        pb[k]["grad"] = pb[k]["grad"] * np.float32(0.125)
    ob.step()
    assert oa.last_grad_norm == raw * 0.125
    np.testing.assert_allclose(oa.last_grad_norm, ob.last_grad_norm, rtol=1e-6)
    for k in pa:
        np.testing.assert_allclose(pa[k]["value"], pb[k]["value"], rtol=1e-6, atol=1e-7)


def test_record_step_counts_a_step_applied_elsewhere():
    """record_step(lrs): the step count (which the schedules and the next rounding step get), the
    lrs of the latest step and the state dict advance as if the optimizer had stepped; nothing
    else changes (no state, no per-param step count)."""
    p = _params()
    opt = SGD([{"params": {"p0": p["p0"]}, "lr": lambda t: 0.5 / (1 + t)}, {"params": {"p1": p["p1"]}}], lr=0.1)
    before = _bits(p)
    assert opt.get_lr() == [0.5, 0.1] and opt.last_lrs is None
    opt.record_step([o.lr for o in opt.get_options()])
    assert opt.applied_steps == 1 and opt.last_lrs == [0.5, 0.1]
    assert opt.get_lr() == [0.25, 0.1] and opt.storage.rounding(opt.applied_steps).step == 1
    sd = opt.state_dict()
    assert sd["applied_steps"] == 1 and sd["groups/0/lr"] == 0.5 and not any(k.startswith("state/") for k in sd)
    assert _bits(p) == before and opt.state == {}


@pytest.mark.parametrize("bad,exc", [(-1.0, ValueError), (math.nan, ValueError), ("2", TypeError)])
def test_step_bad_grad_scale_writes_nothing(bad, exc):
    p = _params()
    opt = SGD(p, lr=0.1, momentum=0.9)
    opt.step()
    before = _bits(p)
    with pytest.raises(exc, match="grad_scale"):
        opt.step(grad_scale=bad)
    assert _bits(p) == before and opt.applied_steps == 1


# --- checkpoints from state held elsewhere ----------------------------------------------------


def test_state_dict_of_state_held_elsewhere_and_read():
    p = _params()
    opt = SGD(p, lr=0.1, momentum=0.9)
    opt.step()
    opt.step()
    sd = opt.state_dict()
    # The same format from the state given separately (as a sharded optimizer gathers it).
    held = {k: {"step": v["step"], "momentum_buffer": v["momentum_buffer"].copy()} for k, v in opt.state.items()}
    other = SGD(_copy(p), lr=0.1, momentum=0.9)
    other.load_state_dict({k: v for k, v in sd.items() if not k.startswith("state/")})
    sd2 = checkpoint.state_dict(other, state=held)
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert pickle.dumps(sd[k]) == pickle.dumps(sd2[k]), k
    # read() validates and returns the contents without changing the optimizer.
    fresh = SGD(_copy(p), lr=0.1, momentum=0.9)
    got = checkpoint.read(fresh, sd)
    assert fresh.applied_steps == 0 and fresh.state == {}
    assert got.applied_steps == 2 and got.state["p1"]["step"] == 2
    assert got.state["p1"]["momentum_buffer"].tobytes() == opt.state["p1"]["momentum_buffer"].tobytes()
    assert got.hyperparameters[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="state_dict is of a SGD optimizer, not Adam"):
        checkpoint.read(Adam(_copy(p)), sd)
    # load_checkpoint takes the contents (from read, or built by a caller): as load_state_dict.
    pa, pb = _copy(p), _copy(p)
    oa, ob = SGD(pa, lr=0.1, momentum=0.9), SGD(pb, lr=0.1, momentum=0.9)
    oa.load_checkpoint(got)
    ob.load_state_dict(sd)
    assert oa.applied_steps == ob.applied_steps == 2
    for _ in range(2):
        oa.step()
        ob.step()
    assert _bits(pa) == _bits(pb)
    assert oa.state["p2"]["momentum_buffer"] is not got.state["p2"]["momentum_buffer"]  # copied in


def test_a_new_optimizer_is_a_formula_and_a_small_class():
    # A formula of this protocol (a plain "sign SGD" written here with NumPy) on the machinery:
    # groups, checkpoints and the Python plan come with it.
    from minimalsgd.optim import BaseFormula

    class SignFormula(BaseFormula):
        name = "sign"
        options_type = SGDOptions
        hyperparameters = ("lr",)

        def options(self, hyper):
            return SGDOptions(minimalsgd._validation.check_real("lr", hyper["lr"], minimum=0.0))

        def apply(self, batch):
            for i, (w, g) in enumerate(zip(batch.values, batch.grads)):
                w -= batch.options[batch.group_of[i]].lr * np.sign(g * batch.grad_scale)

    class SignSGD(Optimizer):
        formula = SignFormula()

        def __init__(self, params, lr=0.1):
            super().__init__(params, dict(lr=lr))

    p = _params()
    w0 = p["p0"]["value"].copy()
    opt = SignSGD(p, lr=0.5)
    opt.step()
    opt.step()
    assert isinstance(opt._plan, PythonPlan)
    np.testing.assert_array_equal(p["p0"]["value"], w0 - np.float32(1.0) * np.sign(p["p0"]["grad"]))
    assert opt.lr == 0.5 and opt.state_dict()["groups/0/lr"] == 0.5
    with pytest.raises(ValueError, match="lr must be >= 0.0"):
        SignSGD(p, lr=-1.0)


# --- pieces of params: keys by param name, offsets within the param ---------------------------

HALVES = [np.dtype(np.float16)] + ([minimalsgd._half.BFLOAT16] if minimalsgd._half.BFLOAT16 is not None else [])


def _half_params(dtype, seed=0):
    r = np.random.default_rng(seed)
    return {n: {"value": r.standard_normal(s).astype(np.float32).astype(dtype),
                "grad": (r.standard_normal(s) * 0.1).astype(np.float32).astype(dtype)}
            for n, s in (("w", (40, 25)), ("b", (300,)))}


CUTS = (0, 100, 101, 256, 700)


@pytest.mark.parametrize("backend", ["auto", "numpy"])
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_param_entries_with_offsets_round_as_the_whole(dtype, backend):
    """An optimizer over pieces of params ({"value", "grad", "offset"}, named by their param, as a
    sharded or offloaded step builds them) writes the bits of the optimizer over the whole params,
    stochastic rounding included, step after step."""
    kw = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, stochastic_rounding=True, seed=11,
              backend=backend)
    whole = _half_params(dtype)
    cut = {n: {"value": p["value"].copy(), "grad": p["grad"].copy()} for n, p in whole.items()}
    full = SGD(whole, **kw)
    # One optimizer per piece index (a rank's view): each holds one piece of every param.
    pieces = []
    for lo, hi in zip(CUTS, CUTS[1:] + (None,)):
        group = {}
        for name, p in cut.items():
            v, g = p["value"].reshape(-1), p["grad"].reshape(-1)
            stop = v.size if hi is None else min(hi, v.size)
            if lo < stop:
                group[name] = {"value": v[lo:stop], "grad": g[lo:stop], "offset": lo}
        pieces.append(SGD(group, **kw))
    for _ in range(3):
        assert full.step()
        for opt in pieces:
            assert opt.step()
        for name in whole:
            assert whole[name]["value"].tobytes() == cut[name]["value"].tobytes(), name
    assert all(o.applied_steps == 3 for o in pieces)
    # Without offsets the pieces would round as separate params: the offsets are what matters.
    shifted = {n: {"value": p["value"].reshape(-1)[100:200].copy(), "grad": p["grad"].reshape(-1)[100:200]}
               for n, p in _half_params(dtype).items()}
    SGD(shifted, **kw).step()
    ref = {n: {"value": p["value"].reshape(-1)[100:200].copy(), "grad": p["grad"].reshape(-1)[100:200],
               "offset": 100} for n, p in _half_params(dtype).items()}
    SGD(ref, **kw).step()
    assert any(shifted[n]["value"].tobytes() != ref[n]["value"].tobytes() for n in ref)


@pytest.mark.parametrize("bad,exc,match", [(-1, ValueError, "offset must be an int >= 0"),
                                           (1.5, TypeError, "offset must be an int >= 0"),
                                           (True, TypeError, "offset must be an int >= 0")])
def test_bad_offset_raises_and_writes_nothing(bad, exc, match):
    p = _params()
    p["p1"]["offset"] = bad
    before = _bits(p)
    opt = SGD(p, lr=0.1)
    with pytest.raises(exc, match=r"params\['p1'\]: " + match):
        opt.step()
    assert _bits(p) == before and opt.applied_steps == 0


@pytest.mark.parametrize("backend", ["auto", "numpy"])
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_formula_on_pieces_with_keys_and_offsets_is_the_full_step(dtype, backend):
    """SGD_FORMULA.apply on pieces of params, each with its param's key and its offset in the
    param (Batch.keys, Batch.offsets), writes the bits of SGD.step() over the whole params."""
    from minimalsgd.optim.storage import name_keys

    whole, cut = _half_params(dtype, 3), _half_params(dtype, 3)
    kw = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, stochastic_rounding=True, seed=5)
    opt = SGD(whole, backend=backend, **kw)
    opt.step()
    labels, values, grads, bufs, keys, offsets = [], [], [], [], [], []
    for name, p in cut.items():
        v, g = p["value"].reshape(-1), p["grad"].reshape(-1)
        buf = np.empty_like(v)
        for lo, hi in ((0, 100), (100, 101), (101, v.size)):
            labels.append(f"{name}[{lo}:{hi}]")
            values.append(v[lo:hi])
            grads.append(g[lo:hi])
            bufs.append(buf[lo:hi])
            keys.append(name_keys([name])[0])
            offsets.append(lo)
    n = len(values)
    SGD_FORMULA.apply(Batch(labels=labels, values=values, grads=grads, state={"momentum_buffer": bufs},
                            born=[True] * n, steps=[0] * n, group_of=[0] * n, options=opt.get_options()[:1],
                            keys=keys, offsets=offsets, rounding=opt.storage.rounding(0),
                            backend=minimalsgd._router.check_backend(backend)))
    for name in whole:
        assert whole[name]["value"].tobytes() == cut[name]["value"].tobytes(), name
