"""The param-dict Adam and AdamW on the shared machinery: against the float64 oracle and torch's
Adam/AdamW with groups and schedules, clipping, non-finite skipping, checkpoints (bitwise resume),
backends, and bad input (named errors, nothing changed)."""

from __future__ import annotations

import copy
import io
import math
import pickle

import numpy as np
import pytest

import minimalsgd
from minimalsgd import Adam, AdamW, schedules as S

from oracle import oracle_adam, oracle_norm

BACKENDS = ["numpy"] + (["native", "auto"] if minimalsgd.backend_info()["backend"] == "native" else [])
SHAPES = {"w1": (6, 5), "b1": (5,), "w2": (5, 3), "b2": (3,)}


def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {k: {"value": rng.standard_normal(s).astype(dtype), "grad": None} for k, s in SHAPES.items()}


def grads_for(step, dtype=np.float64, scale=1.0):
    rng = np.random.default_rng(1000 + step)
    return {k: (scale * rng.standard_normal(s)).astype(dtype) for k, s in SHAPES.items()}


def run(opt, params, steps, start=0, dtype=np.float64):
    out = []
    for t in range(start, start + steps):
        g = grads_for(t, dtype)
        for k in params:
            params[k]["grad"] = g[k]
        out.append(opt.step())
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("opts", [dict(), dict(weight_decay=0.1, amsgrad=True), dict(betas=(0.5, 0.9), maximize=True,
                                                                                   weight_decay=0.01, eps=1e-4)])
def test_steps_follow_the_oracle(cls, opts, backend):
    params = make_params()
    opt = cls(params, lr=0.01, backend=backend, **opts)
    kw = dict(lr=0.01, decoupled=cls is AdamW, weight_decay=0.01 if cls is AdamW else 0.0)
    kw.update(opts)
    ref = {k: [p["value"].copy(), np.zeros(p["value"].shape), np.zeros(p["value"].shape),
               np.zeros(p["value"].shape)] for k, p in params.items()}
    for t in range(5):
        g = grads_for(t)
        for k in params:
            params[k]["grad"] = g[k]
        assert opt.step()
        for k in params:
            ref[k] = list(oracle_adam(ref[k][0], g[k], *ref[k][1:], step=t + 1, **kw))
            np.testing.assert_allclose(params[k]["value"], ref[k][0], rtol=1e-13, atol=1e-13)
            st = opt.state[k]
            assert st["step"] == t + 1
            np.testing.assert_allclose(st["exp_avg"], ref[k][1], rtol=1e-13, atol=1e-15)
            assert ("max_exp_avg_sq" in st) == bool(kw.get("amsgrad"))


def test_groups_and_schedules_against_torch():
    torch = pytest.importorskip("torch")
    for cls, tcls in ((Adam, torch.optim.Adam), (AdamW, torch.optim.AdamW)):
        params = make_params()
        tparams = {k: torch.nn.Parameter(torch.from_numpy(p["value"].copy())) for k, p in params.items()}
        warm = S.linear_warmup(0.02, 3)
        opt = cls([{"params": {k: params[k] for k in ("w1", "w2")}, "weight_decay": 0.05, "amsgrad": True},
                   {"params": {k: params[k] for k in ("b1", "b2")}, "betas": (0.8, 0.99), "lr": 0.005}],
                  lr=warm)
        topt = tcls([{"params": [tparams["w1"], tparams["w2"]], "weight_decay": 0.05, "amsgrad": True},
                     {"params": [tparams["b1"], tparams["b2"]], "betas": (0.8, 0.99), "lr": 0.005, "weight_decay": 0.0 if cls is Adam else 0.01}],
                    lr=0.02, foreach=False)
        # minimalsgd's linear_warmup: lr * (1/3 + (1 - 1/3) * min(t, 3) / 3); group 1 keeps its lr.
        tsched = torch.optim.lr_scheduler.LambdaLR(topt, [lambda t: 1 / 3 + (1 - 1 / 3) * min(t, 3) / 3, lambda t: 1.0])
        for t in range(8):
            g = grads_for(t)
            for k in params:
                params[k]["grad"] = g[k]
                tparams[k].grad = torch.from_numpy(g[k].copy())
            opt.step()
            topt.step()
            tsched.step()
            for k in params:
                np.testing.assert_allclose(params[k]["value"], tparams[k].detach().numpy(), rtol=1e-12, atol=1e-12)
        assert [g["lr"] for g in topt.param_groups][1] == opt.last_lrs[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_is_fused_as_a_gradient_scale(backend):
    params, twin = make_params(), make_params()
    opt = AdamW(params, lr=0.01, clip_grad_norm=0.5, backend=backend)
    state = {k: [np.zeros(p["value"].shape) for _ in range(2)] for k, p in twin.items()}
    for t in range(3):
        g = grads_for(t, scale=3.0)
        for k in params:
            params[k]["grad"] = g[k]
        opt.step()
        norm = oracle_norm(list(g.values()))
        assert opt.last_grad_norm == pytest.approx(norm, rel=1e-12)
        scale = 0.5 / (opt.last_grad_norm + 1e-12)
        names = list(twin)
        minimalsgd.adam_step([twin[k]["value"] for k in names], [g[k] for k in names],
                             [state[k][0] for k in names], [state[k][1] for k in names], lr=0.01,
                             weight_decay=0.01, decoupled=True, step=t + 1, grad_scale=scale, backend="numpy")
        for k in names:
            np.testing.assert_array_equal(params[k]["value"], twin[k]["value"])
            np.testing.assert_array_equal(g[k], params[k]["grad"])  # grads are never written


@pytest.mark.parametrize("backend", BACKENDS)
def test_skip_nonfinite_writes_nothing(backend):
    params = make_params()
    opt = Adam(params, lr=0.01, skip_nonfinite=True, amsgrad=True, backend=backend)
    run(opt, params, 2)
    before = copy.deepcopy((params, opt.state, opt.applied_steps))
    g = grads_for(9)
    g["b1"][2] = np.nan
    for k in params:
        params[k]["grad"] = g[k]
    assert opt.step() is False
    assert opt.skipped_steps == 1 and opt.applied_steps == before[2]
    for k in params:
        np.testing.assert_array_equal(params[k]["value"], before[0][k]["value"])
        for f, arr in opt.state[k].items():
            np.testing.assert_array_equal(arr, before[1][k][f])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("how", ["pickle", "npz"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_is_bitwise_identical(dtype, how, backend):
    sched = S.cosine(0.01, 10)
    a = make_params(dtype=dtype)
    opt_a = AdamW([{"params": {"w1": a["w1"], "w2": a["w2"]}, "amsgrad": True},
                   {"params": {"b1": a["b1"], "b2": a["b2"]}, "weight_decay": 0.0, "betas": (0.8, 0.95)}],
                  lr=sched, clip_grad_norm=2.0, backend=backend)
    run(opt_a, a, 4, dtype=dtype)
    sd = opt_a.state_dict()
    if how == "pickle":
        sd = pickle.loads(pickle.dumps(sd))
    else:
        buf = io.BytesIO()
        np.savez(buf, **sd)
        buf.seek(0)
        sd = dict(np.load(buf))
    b = {k: {"value": p["value"].copy(), "grad": None} for k, p in a.items()}
    opt_b = AdamW([{"params": {"w1": b["w1"], "w2": b["w2"]}, "amsgrad": False},
                   {"params": {"b1": b["b1"], "b2": b["b2"]}}], lr=sched, backend=backend)
    opt_b.load_state_dict(sd)
    assert opt_b.param_groups[1]["betas"] == (0.8, 0.95) and opt_b.param_groups[0]["amsgrad"] is True
    run(opt_a, a, 4, start=4, dtype=dtype)
    run(opt_b, b, 4, start=4, dtype=dtype)
    for k in a:
        np.testing.assert_array_equal(a[k]["value"], b[k]["value"])
        for f in opt_a.state[k]:
            np.testing.assert_array_equal(opt_a.state[k][f], opt_b.state[k][f])


def test_backends_agree_bitwise_and_fall_back_per_param():
    if "native" not in BACKENDS:
        pytest.skip("native extension not built")
    runs = []
    for backend in ("native", "numpy", "auto"):
        params = make_params(dtype=np.float32)
        if backend == "auto":  # one param the native kernel cannot walk: NumPy serves it
            params["w1"]["value"] = np.asfortranarray(params["w1"]["value"])[:, ::-1]
        opt = Adam(params, lr=0.01, amsgrad=True, weight_decay=0.01, backend=backend)
        for t in range(4):
            g = grads_for(t, np.float32)
            for k in params:
                params[k]["grad"] = np.ascontiguousarray(g[k]) if params[k]["value"].flags.c_contiguous else \
                    np.asfortranarray(g[k])[:, ::-1] if g[k].ndim == 2 else g[k]
            opt.step()
        runs.append({k: p["value"] for k, p in params.items()})
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])
        if k != "w1":
            np.testing.assert_array_equal(runs[0][k], runs[2][k])


@pytest.mark.parametrize("cls", [Adam, AdamW])
@pytest.mark.parametrize("bad, exc, pattern", [
    (dict(lr=-1.0), ValueError, r"lr must be >= 0"),
    (dict(betas=(1.0, 0.9)), ValueError, r"betas\[0\] must be in \[0, 1\)"),
    (dict(betas=(0.9, -0.5)), ValueError, r"betas\[1\] must be >= 0"),
    (dict(betas=0.9), TypeError, r"betas must be a pair"),
    (dict(eps=float("nan")), ValueError, r"eps must be finite"),
    (dict(weight_decay=-1e-2), ValueError, r"weight_decay must be >= 0"),
    (dict(amsgrad="yes"), TypeError, r"amsgrad must be a bool"),
])
def test_bad_hyperparameters_are_refused(cls, bad, exc, pattern):
    with pytest.raises(exc, match=pattern):
        cls(make_params(), **bad)
    # Set on a group later: refused at the step, nothing written.
    params = make_params()
    opt = cls(params, lr=0.01)
    run(opt, params, 1)
    before = copy.deepcopy((params, opt.state))
    opt.param_groups[0].update(bad)
    g = grads_for(5)
    for k in params:
        params[k]["grad"] = g[k]
    with pytest.raises(exc, match=r"param_groups\[0\]: " + pattern):
        opt.step()
    for k in params:
        np.testing.assert_array_equal(params[k]["value"], before[0][k]["value"])
        assert opt.state[k]["step"] == 1
        np.testing.assert_array_equal(opt.state[k]["exp_avg"], before[1][k]["exp_avg"])


def test_state_dicts_that_do_not_fit_are_refused_and_nothing_changes():
    params = make_params()
    opt = Adam(params, lr=0.01)
    run(opt, params, 2)
    good = opt.state_dict()
    before = copy.deepcopy(opt.state)
    cases = [
        ({**good, "state/w1/exp_avg": np.zeros((5, 6))}, ValueError, r"exp avg shape"),
        ({**good, "state/w1/exp_avg_sq": np.zeros((6, 5), np.float32)}, TypeError, r"exp avg sq dtype"),
        ({**good, "groups/0/betas": (0.9, 1.5)}, ValueError, r"betas\[1\]"),
        ({**good, "optimizer": "SGD"}, ValueError, r"of a SGD optimizer"),
    ]
    for sd, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            opt.load_state_dict(sd)
        for k in params:
            for f in before[k]:
                np.testing.assert_array_equal(opt.state[k][f], before[k][f])
    with pytest.raises(ValueError, match=r"of a Adam optimizer, not AdamW"):
        AdamW(make_params()).load_state_dict(good)


def test_defaults_are_torchs():
    assert Adam(make_params()).param_groups[0]["weight_decay"] == 0.0
    assert AdamW(make_params()).param_groups[0]["weight_decay"] == 1e-2
    g = Adam(make_params()).param_groups[0]
    assert (g["lr"], g["betas"], g["eps"], g["amsgrad"], g["maximize"]) == (1e-3, (0.9, 0.999), 1e-8, False, False)
    assert math.isclose(AdamW(make_params(), lr=0.5).lr, 0.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cached_plan_is_bitwise_the_checked_path(dtype):
    """After the first step a native one-call plan serves the steps (groups, a schedule, clip,
    skip); it gives the NumPy backend's bits, the same step counts and the same skips."""
    if "native" not in BACKENDS:
        pytest.skip("native extension not built")
    runs = []
    for backend in ("native", "numpy"):
        p = make_params(dtype=dtype)
        opt = AdamW([{"params": {"w1": p["w1"], "w2": p["w2"]}, "amsgrad": True, "weight_decay": 0.1},
                     {"params": {"b1": p["b1"], "b2": p["b2"]}, "betas": (0.5, 0.9)}],
                    lr=S.warmup_cosine(0.01, 3, 20), skip_nonfinite=True, backend=backend,
                    clip_grad_norm=1.5)
        results = []
        for t in range(12):
            g = grads_for(t, dtype, scale=2.0)
            if t == 6:
                g["w2"][0, 0] = np.inf
            for k in p:
                p[k]["grad"] = g[k]
            results.append(opt.step())
            if backend == "native" and t >= 1:
                assert opt._plan is not None and type(opt._plan).__name__ == "AdamPlan"
        runs.append((p, opt, results))
    (pa, oa, ra), (pb, ob, rb) = runs
    assert ra == rb and ra.count(False) == 1
    assert oa.applied_steps == ob.applied_steps == 11 and oa.last_lrs == ob.last_lrs
    assert oa.last_grad_norm == ob.last_grad_norm  # the backends' norms are bit for bit equal
    for k in pa:
        assert pa[k]["value"].tobytes() == pb[k]["value"].tobytes(), k
        assert oa.state[k]["step"] == ob.state[k]["step"] == 11
        for f in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert (f in oa.state[k]) == (f in ob.state[k])
            if f in oa.state[k]:
                np.testing.assert_array_equal(oa.state[k][f], ob.state[k][f])
