"""pack_params: flat storage per dtype, the same numbers as unpacked params, one span per dtype.

Packing copies values and grads exactly and rebinds the dict entries to views; an optimizer over
the packed dict must step bit for bit like one over the unpacked dict (the step is elementwise,
and the norm keeps per-tensor blocks), and nothing may change when the input is bad.
"""

from __future__ import annotations

import numpy as np
import pytest

import minimalsgd
from minimalsgd import SGD, pack_params
from minimalsgd import _functional as F


def _params(seed=0, shapes=((3, 4), (5,), (), (2, 3, 2), (7,)), dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {f"p{i}": {"value": rng.standard_normal(s).astype(dtype), "grad": rng.standard_normal(s).astype(dtype)}
            for i, s in enumerate(shapes)}


def _copy(params):
    return {k: {kk: (vv.copy() if isinstance(vv, np.ndarray) else vv) for kk, vv in p.items()} for k, p in params.items()}


def test_values_and_grads_after_packing_any_layout():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((6, 4))
    params = {
        "c32": {"value": base.astype(np.float32), "grad": base.astype(np.float32) * 2},
        "f64_fortran": {"value": np.asfortranarray(base), "grad": np.asfortranarray(base * 3)},
        "swapped32": {"value": base[0].astype(">f4"), "grad": base[1].astype(">f4")},
        "strided64": {"value": base[:, 1], "grad": base[:, 2].copy()},
        "half": {"value": base[2].astype(np.float16), "grad": base[3].astype(np.float16)},
        "scalar": {"value": np.array(2.5, np.float32), "grad": np.array(-1.0, np.float32)},
        "no_grad": {"value": base[4].astype(np.float32), "grad": None},
        "missing_grad": {"value": base[5].astype(np.float32)},
        "empty": {"value": np.zeros((0, 3), np.float32), "grad": np.zeros((0, 3), np.float32)},
    }
    expect = {k: (p["value"].copy(), None if p.get("grad") is None else p["grad"].copy()) for k, p in params.items()}
    held = {k: p["value"] for k, p in params.items()}
    arena = pack_params(params)
    f32, f64, f16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)
    assert set(arena.values) == {f32, f64, f16}
    assert arena.values[f32].size == 24 + 4 + 1 + 4 + 4 + 0 and arena.values[f64].size == 24 + 6
    for dt, flat in arena.values.items():
        assert flat.ndim == 1 and flat.flags.c_contiguous and flat.dtype.isnative
        assert arena.grads[dt].shape == flat.shape
    pos = {dt: 0 for dt in arena.values}
    for k in params:  # tightly packed, in dict order
        s = arena.slots[k]
        assert (s.start, s.stop, s.shape) == (pos[s.dtype], pos[s.dtype] + expect[k][0].size, expect[k][0].shape)
        pos[s.dtype] = s.stop
    for k, p in params.items():
        v, g = expect[k]
        assert p["value"] is not held[k]
        assert p["value"].shape == v.shape and p["value"].dtype == v.dtype.newbyteorder("=")
        np.testing.assert_array_equal(p["value"], v)
        assert p["value"].base is arena.values[p["value"].dtype]
        np.testing.assert_array_equal(arena.value(k), v)
        if g is None:
            assert p.get("grad") is None
            np.testing.assert_array_equal(arena.grad(k), 0)
        else:
            np.testing.assert_array_equal(p["grad"], g)
            assert p["grad"].base is arena.grads[p["grad"].dtype]


def test_groups_are_packed_into_one_arena():
    g1, g2 = _params(0, ((3,), (4,))), {"q": {"value": np.ones(5, np.float32), "grad": np.ones(5, np.float32)}}
    groups = [{"params": g1, "lr": 0.1}, {"params": g2, "lr": 0.2}]
    arena = pack_params(groups)
    assert arena.names == ["p0", "p1", "q"]
    assert arena.slots["q"].start == 7
    assert np.shares_memory(g2["q"]["value"], g1["p0"]["value"].base)
    assert groups[0]["lr"] == 0.1


def test_grad_writes_land_in_the_arena_and_zero_grad_is_one_fill():
    p = _params()
    arena = pack_params(p)
    p["p1"]["grad"][...] = 7.0
    flat = arena.grads[np.dtype(np.float32)]
    s = arena.slots["p1"]
    np.testing.assert_array_equal(flat[s.start:s.stop], 7.0)
    arena.zero_grad()
    for k in p:
        np.testing.assert_array_equal(p[k]["grad"], 0)


@pytest.mark.parametrize("backend", ["auto", "numpy"])
@pytest.mark.parametrize("kw", [dict(lr=0.1), dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
                                dict(lr=0.05, momentum=0.9, dampening=0.2, maximize=True, clip_grad_norm=0.5),
                                dict(lr=0.05, momentum=0.9, skip_nonfinite=True, clip_grad_norm=100.0)])
def test_packed_steps_equal_unpacked_bit_for_bit(backend, kw):
    shapes = [(1000,)] * 20 + [(3, 4), (5,), (), (17,)]
    a = _params(2, shapes)
    a["f64"] = {"value": np.arange(9.0), "grad": np.linspace(-1, 1, 9)}
    a["skipped"] = {"value": np.ones(4, np.float32), "grad": None}
    b = _copy(a)
    pack_params(b)
    oa, ob = SGD(a, backend=backend, **kw), SGD(b, backend=backend, **kw)
    rng = np.random.default_rng(3)
    for step in range(5):
        oa.step()
        ob.step()
        for k in a:
            assert a[k]["value"].tobytes() == b[k]["value"].tobytes(), (step, k)
            if a[k].get("grad") is not None:
                new = rng.standard_normal(a[k]["grad"].shape).astype(a[k]["grad"].dtype)
                a[k]["grad"][...] = new
                b[k]["grad"][...] = new  # in place: into the arena
        assert oa.last_grad_norm == ob.last_grad_norm
    for k in oa.state:
        assert oa.state[k]["step"] == ob.state[k]["step"] == 5
        if "momentum_buffer" in oa.state[k]:
            assert oa.state[k]["momentum_buffer"].tobytes() == ob.state[k]["momentum_buffer"].tobytes()
    assert "skipped" not in ob.state


@pytest.mark.skipif(F._core is None, reason="native extension not built")
def test_packed_step_is_one_span_per_dtype():
    p = _params(4, [(1000,)] * 50)
    p["f64"] = {"value": np.ones((3, 3)), "grad": np.ones((3, 3))}
    pack_params(p)
    opt = SGD(p, lr=0.1, momentum=0.9)
    opt.step()
    opt.step()  # through the cached plan
    assert opt._plan.spans == 2
    # Unpacked: one span per tensor.
    q = _params(4, [(1000,)] * 50)
    optq = SGD(q, lr=0.1, momentum=0.9)
    optq.step()
    optq.step()
    assert optq._plan.spans == 50
    # A grad replaced by an array outside the arena splits the span, and the step stays right.
    ref = _copy(p)
    optr = SGD(ref, lr=0.1, momentum=0.9)
    optr.load_state_dict(opt.state_dict())
    new = np.full(1000, 0.5, np.float32)
    p["p10"]["grad"] = new
    ref["p10"]["grad"] = new.copy()
    opt.step()
    optr.step()
    assert opt._plan.spans == 4  # f32 before, the tensor alone, after; f64
    for k in p:
        assert p[k]["value"].tobytes() == ref[k]["value"].tobytes()


def test_a_skipped_param_gets_a_grad_inside_the_arena():
    p = _params()
    p["p1"]["grad"] = None
    arena = pack_params(p)
    opt = SGD(p, lr=0.1)
    before = p["p1"]["value"].copy()
    opt.step()
    np.testing.assert_array_equal(p["p1"]["value"], before)
    p["p1"]["grad"] = arena.grad("p1")
    p["p1"]["grad"][...] = 1.0
    opt.step()
    np.testing.assert_array_equal(p["p1"]["value"], before - np.float32(0.1))


BAD = {
    "not a dict": (lambda p: 42, TypeError, "params must be"),
    "inner not a dict": (lambda p: p.__setitem__("p1", [1, 2]), TypeError, r"params\['p1'\]"),
    "no value": (lambda p: p["p2"].__delitem__("value"), ValueError, r"params\['p2'\] has no 'value'"),
    "value not an array": (lambda p: p["p2"].__setitem__("value", [1.0]), TypeError, r"params\['p2'\]: value"),
    "integer value": (lambda p: p["p2"].__setitem__("value", np.ones(5, np.int64)), TypeError, "floating"),
    "read-only value": (lambda p: setattr(p["p3"]["value"].flags, "writeable", False), ValueError, "read-only"),
    "grad shape": (lambda p: p["p4"].__setitem__("grad", np.ones(3, np.float32)), ValueError, "shape"),
    "grad dtype": (lambda p: p["p4"].__setitem__("grad", np.ones(7, np.float64)), TypeError, "dtype"),
    "grad not an array": (lambda p: p["p4"].__setitem__("grad", "x"), TypeError, "grad must be"),
}


@pytest.mark.parametrize("bad", list(BAD))
def test_bad_input_raises_and_changes_nothing(bad):
    p = _params()
    mutate, exc, match = BAD[bad]
    out = mutate(p)
    target = out if out is not None else p
    before = {k: dict(v) if isinstance(v, dict) else v for k, v in p.items()}
    snap = {k: {kk: (vv.copy() if isinstance(vv, np.ndarray) else vv) for kk, vv in v.items()}
            for k, v in p.items() if isinstance(v, dict)}
    with pytest.raises(exc, match=match):
        pack_params(target)
    for k, v in p.items():
        if isinstance(v, dict):
            for kk in v:
                assert v[kk] is before[k][kk]  # the very same objects: nothing rebound
                if isinstance(v[kk], np.ndarray):
                    np.testing.assert_array_equal(v[kk], snap[k][kk])


def test_bad_groups_and_duplicate_names():
    with pytest.raises(TypeError, match=r"params\[0\] must be a group"):
        pack_params([{"lr": 0.1}])
    a, b = _params(0, ((3,),)), _params(1, ((3,),))
    held = {id(p): dict(p) for p in (a["p0"], b["p0"])}
    snap = {id(p): p["value"].copy() for p in (a["p0"], b["p0"])}
    with pytest.raises(ValueError, match="two groups"):
        pack_params([{"params": a}, {"params": b}])
    for p in (a["p0"], b["p0"]):
        assert all(p[k] is held[id(p)][k] for k in p)  # nothing rebound
        np.testing.assert_array_equal(p["value"], snap[id(p)])


def test_arrays_held_before_packing_are_not_updated():
    p = _params()
    old = p["p0"]["value"]
    snapshot = old.copy()
    pack_params(p)
    SGD(p, lr=0.1).step()
    np.testing.assert_array_equal(old, snapshot)
    assert not np.array_equal(p["p0"]["value"], snapshot)


def test_exported():
    assert "pack_params" in minimalsgd.__all__ and "Arena" in minimalsgd.__all__


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_16bit_params_pack_and_step_like_unpacked(dtype_name):
    # 16-bit storage packs like any float dtype, and steps bit for bit as the unpacked params do.
    if dtype_name == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dtype = np.dtype(ml_dtypes.bfloat16)
    else:
        dtype = np.dtype(np.float16)

    def make():
        rng = np.random.default_rng(5)
        return {f"p{i}": {"value": rng.standard_normal(n).astype(dtype), "grad": rng.standard_normal(n).astype(dtype)}
                for i, n in enumerate([5, 33, 1000])}

    plain, packed = make(), make()
    arena = minimalsgd.pack_params(packed)
    assert list(arena.values) == [dtype]
    kw = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
    a = minimalsgd.SGD(plain, **kw)
    b = minimalsgd.SGD(packed, **kw)
    for _ in range(3):
        a.step()
        b.step()
    for name in plain:
        assert plain[name]["value"].tobytes() == packed[name]["value"].tobytes(), name
