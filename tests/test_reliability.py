"""Reliability (issue 6): checkpoints, non-finite gradients, threads, memory."""

from __future__ import annotations

import copy
import gc
import io
import math
import pickle
import sys
import threading

import numpy as np
import pytest

import minimalsgd
from minimalsgd import SGD

BACKENDS = ["native", "numpy"]
SHAPES = {"w1": (17, 9), "b1": (9,), "w2": (3, 5, 7), "s": ()}


def make_params(seed: int, dtype=np.float32) -> dict:
    rng = np.random.default_rng(seed)
    return {k: {"value": rng.standard_normal(s).astype(dtype), "grad": None} for k, s in SHAPES.items()}


def make_grads(seed: int, steps: int, dtype=np.float32) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()} for _ in range(steps)]


def run(opt: SGD, params: dict, grads: list[dict]) -> list[bool]:
    applied = []
    for g in grads:
        for k in params:
            params[k]["grad"] = g[k]
        applied.append(opt.step())
    return applied


def snapshot(params: dict, opt: SGD | None = None) -> dict:
    snap = {k: p["value"].copy() for k, p in params.items()}
    if opt is not None:
        snap["__state__"] = copy.deepcopy(opt.state)
        snap["__counters__"] = (opt.skipped_steps, opt.last_grad_norm)
    return snap


def assert_same(a: dict, b: dict) -> None:
    for k in a:
        if k == "__state__":
            assert a[k].keys() == b[k].keys()
            for name in a[k]:
                assert a[k][name].keys() == b[k][name].keys()
                for field in a[k][name]:
                    np.testing.assert_array_equal(a[k][name][field], b[k][name][field])
        elif k == "__counters__":
            assert a[k] == b[k]
        else:
            np.testing.assert_array_equal(a[k], b[k])


OPTIONS = [
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, clip_grad_norm=2.0),
    dict(lr=0.1, momentum=0.5, dampening=0.3, maximize=True, skip_nonfinite=True),
    dict(lr=0.02),
]

# ---------------------------------------------------------------------------------------------
# Checkpoints


def _roundtrip(sd: dict, how: str) -> dict:
    if how == "pickle":
        return pickle.loads(pickle.dumps(sd))
    if how == "savez":
        buf = io.BytesIO()
        np.savez(buf, **sd)
        buf.seek(0)
        with np.load(buf) as f:  # no allow_pickle: the state dict is plain arrays and scalars
            return dict(f)
    return sd


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("how", ["direct", "pickle", "savez"])
def test_resume_from_checkpoint_is_bitwise_identical(backend, opts, how):
    grads = make_grads(1, 12)
    # The run that never stops.
    p_ref = make_params(0)
    ref = SGD(p_ref, backend=backend, **opts)
    run(ref, p_ref, grads)

    # Stop after 5 steps, checkpoint, restore into a fresh optimizer built with other settings.
    p_a = make_params(0)
    a = SGD(p_a, backend=backend, **opts)
    run(a, p_a, grads[:5])
    sd = _roundtrip(a.state_dict(), how)
    values = {k: p["value"].copy() for k, p in p_a.items()}
    p_b = {k: {"value": v, "grad": None} for k, v in values.items()}
    b = SGD(p_b, lr=123.0, backend=backend)  # hyperparameters come from the checkpoint
    b.load_state_dict(sd)
    for key in ("lr", "momentum", "nesterov", "weight_decay", "clip_grad_norm", "dampening", "maximize", "skip_nonfinite"):
        assert getattr(b, key) == getattr(a, key), key
    run(b, p_b, grads[5:])
    assert_same(snapshot(p_ref, ref), snapshot(p_b, b))


def test_state_dict_is_plain_data_and_a_copy():
    p = make_params(0)
    opt = SGD(p, lr=0.1, momentum=0.9)
    run(opt, p, make_grads(2, 3))
    sd = opt.state_dict()
    for key, val in sd.items():
        assert isinstance(val, (int, float, bool, str, np.ndarray)), (key, type(val))
    assert sd["state/w1/step"] == 3
    buf = sd["state/w1/momentum_buffer"]
    assert buf is not opt.state["w1"]["momentum_buffer"]
    before = buf.copy()
    run(opt, p, make_grads(3, 1))
    np.testing.assert_array_equal(buf, before)  # later steps do not change a taken checkpoint
    assert math.isnan(sd["clip_grad_norm"])  # None is stored as NaN, savez-friendly


def _bad_state_dicts(good: dict) -> list[tuple[str, dict, type, str]]:
    out = []
    d = dict(good)
    d["state/nope/step"] = 1
    out.append(("unknown name", d, ValueError, r"state for 'nope', which is not in params"))
    d = dict(good)
    d["state/w1/momentum_buffer"] = np.zeros((9, 17), np.float32)
    out.append(("buffer shape", d, ValueError, r"params\['w1'\]: momentum buffer shape \(9, 17\) does not match value shape \(17, 9\)"))
    d = dict(good)
    d["state/w1/momentum_buffer"] = np.zeros((17, 9), np.float64)
    out.append(("buffer dtype", d, TypeError, r"params\['w1'\]: momentum buffer dtype float64 does not match float32"))
    d = dict(good)
    d["groups/0/lr"] = -1.0
    out.append(("bad lr", d, ValueError, r"param_groups\[0\]: lr must be >= 0.0, got -1.0"))
    d = dict(good)
    del d["groups/0/momentum"]
    out.append(("missing hyperparameter", d, ValueError, r"lacks hyperparameters \['momentum'\] of param_groups\[0\]"))
    d = dict(good)
    d["groups/1/lr"] = 0.1
    out.append(("more groups", d, ValueError, r"state_dict has 2 param groups, the optimizer has 1"))
    d = dict(good)
    d["groups/0/params"] = np.array(["w1", "b1", "other"])
    out.append(("other names", d, ValueError, r"param_groups\[0\] does not hold this optimizer's param_groups\[0\] params: only in the state dict \['other'\]"))
    d = dict(good)
    d["groups/0/colour"] = 1
    out.append(("unknown group entry", d, ValueError, r"key 'groups/0/colour' is not a known group entry"))
    d = dict(good)
    d["optimizer"] = "Adam"
    out.append(("other optimizer", d, ValueError, r"is of a Adam optimizer, not SGD"))
    d = dict(good)
    d["lr"] = 0.1
    out.append(("format-1 key in format 2", d, ValueError, r"state_dict key 'lr' is not a known entry"))
    d = dict(good)
    d["format"] = 99
    out.append(("format", d, ValueError, r"state_dict format 99 is not supported"))
    d = dict(good)
    d["state/w1/colour"] = 1
    out.append(("unknown field", d, ValueError, r"key 'state/w1/colour' is not a known state entry"))
    d = dict(good)
    d["state/b1/step"] = -3
    out.append(("negative step", d, ValueError, r"params\['b1'\]: step must be an int >= 0, got -3"))
    return out


@pytest.mark.parametrize("case", range(13))
def test_bad_state_dict_is_refused_and_nothing_changes(case):
    p = make_params(0)
    opt = SGD(p, lr=0.1, momentum=0.9, clip_grad_norm=1.0)
    run(opt, p, make_grads(2, 2))
    good = opt.state_dict()
    label, bad, exc, match = _bad_state_dicts(good)[case]
    p2 = make_params(5)
    target = SGD(p2, lr=0.3, momentum=0.8)
    run(target, p2, make_grads(6, 1))
    before = snapshot(p2, target)
    hyper_before = repr(target)
    with pytest.raises(exc, match=match):
        target.load_state_dict(bad)
    assert_same(before, snapshot(p2, target))
    assert repr(target) == hyper_before, label


# ---------------------------------------------------------------------------------------------
# Non-finite gradients


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_nonfinite_step_is_skipped_and_writes_nothing(backend, bad, clip):
    grads = make_grads(4, 6)
    poisoned = copy.deepcopy(grads)
    poisoned[3]["w2"][1, 2, 3] = bad
    # Reference: the same run without the poisoned step.
    p_ref = make_params(0)
    ref = SGD(p_ref, lr=0.1, momentum=0.9, clip_grad_norm=clip, skip_nonfinite=True, backend=backend)
    assert run(ref, p_ref, grads[:3] + grads[4:]) == [True] * 5

    p = make_params(0)
    opt = SGD(p, lr=0.1, momentum=0.9, clip_grad_norm=clip, skip_nonfinite=True, backend=backend)
    run(opt, p, poisoned[:3])
    before = snapshot(p, opt)
    for k in p:
        p[k]["grad"] = poisoned[3][k]
    assert opt.step() is False
    assert opt.skipped_steps == 1
    assert_same({k: v for k, v in before.items() if k != "__counters__"},
                {k: v for k, v in snapshot(p, opt).items() if k != "__counters__"})
    assert opt.last_grad_norm == before["__counters__"][1]  # the skipped step did not record a norm
    run(opt, p, poisoned[4:])
    for k in p:
        np.testing.assert_array_equal(p[k]["value"], p_ref[k]["value"])


def test_no_momentum_buffer_is_born_on_a_skipped_first_step():
    p = make_params(0)
    opt = SGD(p, lr=0.1, momentum=0.9, skip_nonfinite=True)
    g = make_grads(1, 1)[0]
    g["b1"][0] = np.nan
    for k in p:
        p[k]["grad"] = g[k]
    before = snapshot(p)
    assert opt.step() is False
    assert opt.state == {}
    assert opt.last_grad_norm is None
    assert_same(before, snapshot(p))


def test_last_grad_norm_and_default_behaviour():
    p = make_params(0)
    g = make_grads(1, 1)[0]
    for k in p:
        p[k]["grad"] = g[k]
    oracle = math.sqrt(sum(float(np.sum(g[k].astype(np.float64) ** 2)) for k in g))
    opt = SGD(p, lr=0.1, clip_grad_norm=1e9)
    assert opt.last_grad_norm is None
    assert opt.step() is True
    assert opt.last_grad_norm == pytest.approx(oracle, rel=1e-12)
    # Default: no check, so a NaN gradient is applied (and the step reports True).
    p2 = make_params(0)
    opt2 = SGD(p2, lr=0.1)
    for k in p2:
        p2[k]["grad"] = np.full(SHAPES[k], np.nan, np.float32)
    assert opt2.step() is True
    assert np.isnan(p2["b1"]["value"]).all()
    assert opt2.skipped_steps == 0 and opt2.last_grad_norm is None


def test_huge_finite_float64_grads_are_not_skipped():
    # 1e200**2 overflows the float64 sum of squares; the gradients are still finite.
    p = {"a": {"value": np.zeros(4), "grad": np.full(4, 1e200)}}
    opt = SGD(p, lr=1e-200, skip_nonfinite=True)
    assert opt.step() is True
    np.testing.assert_allclose(p["a"]["value"], -np.ones(4))


# ---------------------------------------------------------------------------------------------
# Threads


@pytest.mark.parametrize("backend", BACKENDS)
def test_optimizers_in_threads_match_sequential(backend):
    n_opt, steps = 6, 40
    rng = np.random.default_rng(9)
    sizes = [200_000, 1_000, 70_000, 5, 300_000, 40_000]

    def build():
        params = [
            {"a": {"value": np.random.default_rng(i).standard_normal(sizes[i]).astype(np.float32), "grad": None}}
            for i in range(n_opt)
        ]
        opts = [SGD(params[i], lr=0.01, momentum=0.9, nesterov=True, clip_grad_norm=50.0, backend=backend) for i in range(n_opt)]
        return params, opts

    grads = [[rng.standard_normal(sizes[i]).astype(np.float32) for _ in range(steps)] for i in range(n_opt)]

    def train(params, opt, gs):
        for g in gs:
            params["a"]["grad"] = g
            opt.step()

    seq_params, seq_opts = build()
    for i in range(n_opt):
        train(seq_params[i], seq_opts[i], grads[i])

    par_params, par_opts = build()
    barrier = threading.Barrier(n_opt)
    errors = []

    def worker(i):
        try:
            barrier.wait()
            train(par_params[i], par_opts[i], grads[i])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_opt)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(n_opt):
        np.testing.assert_array_equal(seq_params[i]["a"]["value"], par_params[i]["a"]["value"])


# ---------------------------------------------------------------------------------------------
# Memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_leaks_over_many_steps(backend):
    p = make_params(0)
    g = make_grads(1, 1)[0]
    for k in p:
        p[k]["grad"] = g[k]
    opt = SGD(p, lr=1e-6, momentum=0.9, nesterov=True, clip_grad_norm=10.0, skip_nonfinite=True, backend=backend)
    arrays = [p[k]["value"] for k in p] + [g[k] for k in g]
    for _ in range(200):
        opt.step()
    gc.collect()
    refs = [sys.getrefcount(a) for a in arrays]
    buf_refs = [sys.getrefcount(opt.state[k]["momentum_buffer"]) for k in p]
    rss = _rss_bytes()
    steps = 5000 if backend == "native" else 2000
    for _ in range(steps):
        opt.step()
        minimalsgd.global_grad_norm(list(g.values()), backend=backend)
    gc.collect()
    assert [sys.getrefcount(a) for a in arrays] == refs  # bindings take and drop references evenly
    assert [sys.getrefcount(opt.state[k]["momentum_buffer"]) for k in p] == buf_refs
    growth = _rss_bytes() - rss
    assert growth < 4 * 1024 * 1024, f"RSS grew by {growth} bytes over {steps} steps"
