"""The param-dict SGD against the classic NumPy param-dict SGD (float64 reference in oracle.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import minimalsgd
from minimalsgd import SGD

from oracle import ClassicSGD, oracle_step, tolerance, wide

BACKENDS = ["auto", "native", "numpy"]
SHAPES = {"conv": (8, 3, 3, 3), "bias": (8,), "fc": (33, 17), "scalar": ()}


def _params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {k: {"value": np.asarray(rng.standard_normal(s), dtype=dtype), "grad": None} for k, s in SHAPES.items()}


def _grads(dtype, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return {k: np.asarray(scale * rng.standard_normal(s), dtype=dtype) for k, s in SHAPES.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "momentum,nesterov,wd,clip",
    [c for c in itertools.product([0.0, 0.9], [False, True], [0.0, 5e-3], [None, 1.0, 1e6]) if not (c[1] and c[0] == 0)],
)
def test_matches_classic_param_dict_sgd(backend, dtype, momentum, nesterov, wd, clip):
    params = _params(dtype)
    classic = ClassicSGD(params, lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=wd, clip_grad_norm=clip)
    opt = SGD(params, lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=wd, clip_grad_norm=clip, backend=backend)
    held = {k: p["value"] for k, p in params.items()}
    for step in range(20):
        grads = _grads(dtype, 100 + step, scale=3.0)
        snapshot = {k: g.copy() for k, g in grads.items()}
        for k in params:
            params[k]["grad"] = grads[k]
        # The classic SGD restarts from the tested state each step, so errors do not compound.
        w_prev = {k: wide(p["value"]) for k, p in params.items()}
        v_prev = {k: wide(opt.state[k]["momentum_buffer"]) if step and momentum else np.zeros_like(w_prev[k])
                  for k in params}
        for k in params:
            classic.params[k]["value"] = w_prev[k].copy()
            classic.v[k] = v_prev[k].copy()
        assert opt.step() is True
        classic.step(grads)
        total = np.sqrt(sum(np.sum(wide(g) ** 2) for g in grads.values()))
        clipped = clip is not None and total > clip
        scale = clip / total if clipped else 1.0
        for k in params:
            np.testing.assert_array_equal(grads[k], snapshot[k])  # grads are never written
            got, want = params[k]["value"], classic.params[k]["value"]
            if dtype == np.float64 and not clipped:
                # The classic order of operations in float64: the same bits.
                np.testing.assert_array_equal(got, want, err_msg=f"{k} step {step}")
                continue
            # float32, or a clip coefficient from a sum in another order: a few ulps of the operands
            # (value, and lr times the update's terms: grad, weight decay, old and new buffer).
            g = scale * np.abs(wide(grads[k]))
            terms = (g, wd * np.abs(w_prev[k]), momentum * np.abs(v_prev[k]), (1 + momentum) * np.abs(classic.v[k]))
            bound = tolerance(dtype, w_prev[k], want, *(0.05 * t for t in terms), ops=4)
            assert np.all(np.abs(got - want) <= bound), f"{k} step {step}"
    for k in params:
        assert params[k]["value"] is held[k]  # updated in place: the same objects
        assert params[k]["value"].dtype == dtype
        assert opt.state[k]["step"] == 20


def test_clip_is_folded_in_and_matches_the_formula():
    params = _params(np.float64)
    grads = _grads(np.float64, 1, scale=10.0)
    for k in params:
        params[k]["grad"] = grads[k]
    w0 = {k: p["value"].copy() for k, p in params.items()}
    SGD(params, lr=0.1, clip_grad_norm=2.0).step()
    total = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
    assert total > 2.0
    for k in params:
        expected, _ = oracle_step(w0[k], grads[k], None, first=True, lr=0.1, grad_scale=2.0 / (total + 1e-12))
        np.testing.assert_allclose(params[k]["value"], expected, rtol=1e-14, atol=1e-15)


def test_none_and_missing_grads_are_skipped_and_keep_their_buffers():
    params = _params(np.float32)
    opt = SGD(params, lr=0.1, momentum=0.9)
    grads = _grads(np.float32, 1)
    for k in params:
        params[k]["grad"] = grads[k]
    opt.step()
    buf_bias = opt.state["bias"]["momentum_buffer"].copy()
    bias = params["bias"]["value"].copy()
    params["bias"]["grad"] = None
    del params["scalar"]["grad"]
    opt.step()
    np.testing.assert_array_equal(params["bias"]["value"], bias)
    np.testing.assert_array_equal(opt.state["bias"]["momentum_buffer"], buf_bias)
    assert opt.state["bias"]["step"] == 1 and opt.state["conv"]["step"] == 2


def test_buffers_created_on_first_use_and_params_added_later():
    params = _params(np.float32)
    opt = SGD(params, lr=0.1, momentum=0.9, nesterov=True)
    assert opt.state == {}
    grads = _grads(np.float32, 1)
    for k in params:
        params[k]["grad"] = grads[k]
    opt.step()
    assert set(opt.state) == set(SHAPES)
    np.testing.assert_array_equal(opt.state["fc"]["momentum_buffer"], grads["fc"])  # v = g on the first step
    params["late"] = {"value": np.ones(5, np.float32), "grad": np.full(5, 2.0, np.float32)}
    opt.step()
    expected, _ = oracle_step(np.ones(5), np.full(5, 2.0), None, first=True, lr=0.1, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(params["late"]["value"], expected, rtol=1e-6)
    assert opt.state["late"]["step"] == 1


def test_hyperparameter_changes_take_effect_and_are_checked_at_the_next_step():
    params = {"a": {"value": np.zeros(3), "grad": np.ones(3)}}
    opt = SGD(params, lr=0.1)
    opt.step()
    opt.lr = 0.5
    opt.step()
    np.testing.assert_allclose(params["a"]["value"], -0.6)
    opt.lr = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.step()
    np.testing.assert_allclose(params["a"]["value"], -0.6)


def test_replaced_arrays_are_used():
    params = {"a": {"value": np.zeros(3, np.float32), "grad": np.ones(3, np.float32)}}
    opt = SGD(params, lr=1.0)
    opt.step()
    new_value = np.full(3, 10.0, np.float32)
    params["a"]["value"] = new_value
    params["a"]["grad"] = np.full(3, 2.0, np.float32)
    opt.step()
    np.testing.assert_array_equal(new_value, 8.0)


def test_zero_grad():
    params = _params(np.float32)
    grads = _grads(np.float32, 1)
    for k in params:
        params[k]["grad"] = grads[k]
    params["scalar"]["grad"] = None
    opt = SGD(params)
    opt.zero_grad()
    for k in ("conv", "bias", "fc"):
        assert params[k]["grad"] is grads[k] and not grads[k].any()
    grads["fc"][...] = 1
    ro = np.ones(8, np.float32)
    ro.flags.writeable = False
    params["bias"]["grad"] = ro
    with pytest.raises(ValueError, match=r"params\['bias'\].*read-only"):
        opt.zero_grad()
    assert grads["fc"].all()  # checked first: nothing was zeroed
    params["bias"]["grad"] = None
    opt.zero_grad(set_to_none=True)
    assert all(p["grad"] is None for p in params.values())


def test_show_config_and_backend_info(capsys):
    info = minimalsgd.backend_info()
    assert info["backend"] == "native" and info["native_available"]
    assert info["isa"] in info["supported_isas"]
    assert info["version"] == minimalsgd.__version__
    assert info["num_threads"] >= 1 and isinstance(info["openmp"], bool)
    minimalsgd.show_config()
    out = capsys.readouterr().out
    assert "backend" in out and "native" in out and info["isa"] in out


def test_set_num_threads():
    from minimalsgd import _functional as F

    before = F._core.get_num_threads_setting()
    default = minimalsgd.get_num_threads()
    try:
        minimalsgd.set_num_threads(1)
        assert minimalsgd.get_num_threads() == 1
        minimalsgd.set_num_threads(3)
        assert minimalsgd.get_num_threads() == 3
        minimalsgd.set_num_threads(0)
        assert minimalsgd.get_num_threads() == default
        with pytest.raises(ValueError, match=r"n must be >= 0, got -1"):
            minimalsgd.set_num_threads(-1)
        with pytest.raises(TypeError, match=r"n must be an int, got float"):
            minimalsgd.set_num_threads(1.5)
        assert minimalsgd.get_num_threads() == default  # refused: the setting is as it was
    finally:
        minimalsgd.set_num_threads(before)


def test_threadpoolctl_sees_and_limits_the_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from minimalsgd import _functional as F

    assert F._core.get_num_threads_setting() == 0
    default = minimalsgd.get_num_threads()
    apis = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "openmp"]
    assert apis and any(i["num_threads"] == default for i in apis)
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert minimalsgd.get_num_threads() == 1
        assert minimalsgd.backend_info()["num_threads"] == 1
    assert minimalsgd.get_num_threads() == default
    # A count set through minimalsgd is what threadpoolctl reports.
    try:
        minimalsgd.set_num_threads(1)
        apis = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "openmp"]
        assert any(i["num_threads"] == 1 for i in apis)
    finally:
        minimalsgd.set_num_threads(0)
