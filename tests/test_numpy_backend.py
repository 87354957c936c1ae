"""The NumPy backend's fast paths give the native kernel's bits and keep the in-place contract.

The backend batches many small tensors of one dtype into flat copies, cuts large tensors into
blocks, and leaves out exact operations (``grad * 1``, ``1 * g``). Each of these must change no
bit: every case here runs the same steps through the native kernel (on native-order, contiguous
copies) and through the NumPy backend (on the layout under test) and compares bit for bit, and
checks that the arrays the user holds are the ones written.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import minimalsgd
from minimalsgd import _functional as F
from minimalsgd import _numpy

core = F._core
pytestmark = pytest.mark.skipif(core is None, reason="native extension not built")

OPTIONS = [
    dict(momentum=mu, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
    for mu, d, wd, n, mx in itertools.product([0.0, 0.9], [0.0, 0.3], [0.0, 0.01], [False, True], [False, True])
    if not (n and (mu == 0 or d != 0))
]
BIG = 2 * _numpy._BLOCK + 37  # blocked, with a short last block
SMALL = _numpy._SMALL


def _layout(a: np.ndarray, kind: str) -> np.ndarray:
    """A copy of ``a`` (1-D) in the layout ``kind``, same values in C order."""
    if kind == "c":
        return a.copy()
    if kind == "swapped":
        return a.astype(a.dtype.newbyteorder()).copy()
    if kind == "strided":
        out = np.zeros(2 * a.size, a.dtype)[::2]
        out[...] = a
        return out
    if kind == "reversed":
        return a[::-1].copy()[::-1]
    if kind == "unaligned":
        raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
        out = raw.view(a.dtype)
        out[...] = a
        return out
    raise AssertionError(kind)


def _shaped(a: np.ndarray, shape: tuple[int, ...], order: str) -> np.ndarray:
    out = np.empty(shape, a.dtype, order=order)
    out[...] = a.reshape(shape)
    return out


def _run(shapes, dtype, opts, grad_scale, layouts, orders, steps=3, seed=0):
    """Steps through native (contiguous copies) and NumPy (the given layouts); both results."""
    rng = np.random.default_rng(seed)
    n = len(shapes)
    w0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    gs = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    w_nat = [w.copy() for w in w0]
    v_nat = [np.zeros_like(w) for w in w0]
    w_np = []
    v_np = []
    for i, w in enumerate(w0):
        if layouts[i] in ("c", "swapped", "unaligned") and orders[i] == "F" and w.ndim > 1:
            w_np.append(_shaped(w.ravel(), w.shape, "F"))
            v_np.append(np.zeros(w.shape, dtype, order="F"))
        elif w.ndim > 1:
            w_np.append(w.copy())
            v_np.append(np.zeros_like(w))
        else:
            w_np.append(_layout(w.ravel(), layouts[i]).reshape(w.shape) if w.ndim else w.copy())
            v_np.append(_layout(np.zeros(w.size, dtype), layouts[i]).reshape(w.shape) if w.ndim else np.zeros_like(w))
    held = [(id(w), id(v)) for w, v in zip(w_np, v_np)]
    for step in range(steps):
        g_np = [(_layout(g.ravel(), layouts[i]).reshape(g.shape) if g.ndim == 1 else g.copy()) for i, g in enumerate(gs[step])]
        firsts = [step == 0 or (i % 3 == 0 and step == 1) for i in range(n)]  # mixed first flags
        kw = dict(lr=0.05, grad_scale=grad_scale, first_step=firsts, **opts)
        minimalsgd.sgd_step(w_nat, gs[step], v_nat, backend="native", **kw)
        minimalsgd.sgd_step(w_np, g_np, v_np, backend="numpy", **kw)
    assert [(id(w), id(v)) for w, v in zip(w_np, v_np)] == held
    return w_nat, v_nat, w_np, v_np


def _assert_same(w_nat, v_nat, w_np, v_np, momentum):
    for i, (a, b) in enumerate(zip(w_nat, w_np)):
        np.testing.assert_array_equal(a, b.astype(a.dtype), err_msg=f"value {i}")
        assert a.tobytes() == np.ascontiguousarray(b).astype(a.dtype).tobytes(), f"value {i} bits"
    if momentum:
        for i, (a, b) in enumerate(zip(v_nat, v_np)):
            assert a.tobytes() == np.ascontiguousarray(b).astype(a.dtype).tobytes(), f"buffer {i} bits"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k[:3]}{v}" for k, v in o.items()))
@pytest.mark.parametrize("grad_scale", [1.0, 0.75])
def test_batched_small_tensors_bitwise(dtype, opts, grad_scale):
    # Many small tensors (batched, several blocks), one 0-d, one lone large one, mixed shapes.
    shapes = [(1000,)] * 70 + [(3, 5), (1,), (), (SMALL,), (SMALL + 1,), (7, 11, 2)] + [(17,)] * 5
    layouts = ["c"] * len(shapes)
    orders = ["C"] * len(shapes)
    _assert_same(*_run(shapes, dtype, opts, grad_scale, layouts, orders), opts["momentum"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opts", [OPTIONS[0], OPTIONS[-1], dict(momentum=0.9, dampening=0.3, weight_decay=0.01, nesterov=False, maximize=True)])
def test_large_tensors_in_blocks_bitwise(dtype, opts):
    shapes = [(BIG,), (BIG,), (BIG,), (BIG,), (BIG,), (3, BIG // 3), (3, BIG // 3)]
    layouts = ["c", "swapped", "strided", "reversed", "unaligned", "c", "c"]
    orders = ["C", "C", "C", "C", "C", "C", "F"]
    _assert_same(*_run(shapes, dtype, opts, 0.75, layouts, orders, steps=2), opts["momentum"])


@pytest.mark.parametrize("layout", ["swapped", "strided", "reversed", "unaligned"])
def test_small_tensors_any_layout_batched_bitwise(layout):
    opts = dict(momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=True, maximize=False)
    shapes = [(100 + i,) for i in range(40)]
    layouts = [layout if i % 2 else "c" for i in range(len(shapes))]
    _assert_same(*_run(shapes, np.float32, opts, 1.0, layouts, ["C"] * len(shapes)), True)


def test_f_order_and_noncontiguous_nd_small_tensors():
    rng = np.random.default_rng(3)
    kw = dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    base = [rng.standard_normal((6, 8)).astype(np.float32) for _ in range(4)]
    grads = [rng.standard_normal((6, 8)).astype(np.float32) for _ in range(4)]
    w_nat = [b.copy() for b in base]
    v_nat = [np.zeros_like(b) for b in base]
    w_np = [np.asfortranarray(base[0]), base[1].copy(), np.zeros((12, 8), np.float32)[::2], np.zeros((6, 16), np.float32)[:, ::2]]
    w_np[2][...] = base[2]
    w_np[3][...] = base[3]
    v_np = [np.zeros((6, 8), np.float32, order="F"), np.zeros((6, 8), np.float32), np.zeros((6, 8), np.float32), np.zeros((6, 8), np.float32)]
    g_np = [np.asfortranarray(grads[0]), grads[1], grads[2], grads[3]]
    for step in range(3):
        minimalsgd.sgd_step(w_nat, grads, v_nat, backend="native", first_step=step == 0, **kw)
        minimalsgd.sgd_step(w_np, g_np, v_np, backend="numpy", first_step=step == 0, **kw)
    for a, b in zip(w_nat, w_np):
        assert a.tobytes() == np.ascontiguousarray(b).tobytes()
    for a, b in zip(v_nat, v_np):
        assert a.tobytes() == np.ascontiguousarray(b).tobytes()


def test_grads_are_never_written():
    rng = np.random.default_rng(4)
    ws = [rng.standard_normal(50).astype(np.float32) for _ in range(10)] + [rng.standard_normal(BIG).astype(np.float32)]
    gs = [rng.standard_normal(w.shape).astype(np.float32) for w in ws]
    for g in gs:
        g.flags.writeable = False  # a write would raise
    vs = [np.zeros_like(w) for w in ws]
    for opts in OPTIONS:
        minimalsgd.sgd_step(ws, gs, vs, lr=0.1, backend="numpy", first_step=False, grad_scale=1.0, **opts)


def test_zero_d_and_empty_tensors():
    w = np.array(1.5, np.float32)
    g = np.array(0.25, np.float32)
    v = np.array(0.0, np.float32)
    ws = [w, np.zeros(0, np.float32), np.ones(3, np.float32)]
    gs = [g, np.zeros(0, np.float32), np.ones(3, np.float32)]
    vs = [v, np.zeros(0, np.float32), np.zeros(3, np.float32)]
    minimalsgd.sgd_step(ws, gs, vs, lr=0.5, momentum=0.9, first_step=True, backend="numpy")
    assert ws[0] is w and w.shape == () and float(w) == np.float32(1.5) - np.float32(0.5) * np.float32(0.25)
    assert float(v) == 0.25
    np.testing.assert_array_equal(ws[2], np.float32(1) - np.float32(0.5))


# ---------------------------------------------------------------------------------------------
# SGD.step()'s cached plan for steps with NumPy tensors (minimalsgd.optim.plans.PythonPlan)


def _params(seed=0, n=3, half=False):
    rng = np.random.default_rng(seed)
    p = {f"p{i}": {"value": rng.standard_normal(5 + i).astype(np.float32), "grad": rng.standard_normal(5 + i).astype(np.float32)}
         for i in range(n)}
    if half:  # served by NumPy under backend="auto": the plan mixes both backends (float16 is native
        # SGD storage, whose params take the full path at every step: byte-swapped float32 here)
        p["h"] = {"value": rng.standard_normal(4).astype(">f4"), "grad": rng.standard_normal(4).astype(">f4")}
    return p


PLAN_MUTATIONS = {
    "replace grad": lambda p, rng: p["p1"].__setitem__("grad", rng.standard_normal(6).astype(np.float32)),
    "grad in place": lambda p, rng: p["p0"]["grad"].__setitem__(slice(None), rng.standard_normal(5)),
    "replace value": lambda p, rng: p["p2"].__setitem__("value", rng.standard_normal(7).astype(np.float32)),
    "grad to None": lambda p, rng: p["p1"].__setitem__("grad", None),
    "delete grad": lambda p, rng: p["p1"].pop("grad", None),
    "add param": lambda p, rng: p.__setitem__("new", {"value": np.ones(4, np.float32), "grad": np.ones(4, np.float32)}),
    "remove param": lambda p, rng: p.pop("p0"),
    "swapped grad": lambda p, rng: p["p0"].__setitem__("grad", np.ones(5, ">f4")),
    "strided grad": lambda p, rng: p["p0"].__setitem__("grad", np.ones(10, np.float32)[::2]),
    "nothing": lambda p, rng: None,
}


@pytest.mark.parametrize("mutation", list(PLAN_MUTATIONS))
@pytest.mark.parametrize("backend,half", [("numpy", False), ("auto", True)])
@pytest.mark.parametrize("kw", [dict(lr=0.1), dict(lr=0.1, momentum=0.9, nesterov=True, clip_grad_norm=1.0)])
def test_python_plan_notices_changes(mutation, backend, half, kw):
    from minimalsgd.optim.plans import PythonPlan

    pa, pb = _params(half=half), _params(half=half)
    oa = minimalsgd.SGD(pa, backend=backend, **kw)
    ob = minimalsgd.SGD(pb, backend=backend, **kw)  # the reference: its plan is dropped before every step
    for step in range(6):
        if step == 3:
            for p in (pa, pb):
                PLAN_MUTATIONS[mutation](p, np.random.default_rng(step))
        ob._drop_plan()
        oa.step()
        ob.step()
        if step >= 1 and step != 3:
            assert isinstance(oa._plan, PythonPlan)
        for k in pa:
            assert pa[k]["value"].tobytes() == pb[k]["value"].tobytes(), (step, k)
    for k in oa.state:
        assert oa.state[k]["step"] == ob.state[k]["step"]
        if "momentum_buffer" in ob.state[k]:
            assert oa.state[k]["momentum_buffer"].tobytes() == ob.state[k]["momentum_buffer"].tobytes()
    assert oa.last_grad_norm == ob.last_grad_norm


@pytest.mark.parametrize("bad", ["grad overlaps value", "read-only value", "wrong grad shape", "value reshaped in place",
                                 "value replaced by an int32 view"])
def test_python_plan_bad_changes_raise_and_write_nothing(bad):
    p = _params()
    opt = minimalsgd.SGD(p, lr=0.1, momentum=0.9, backend="numpy")
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
    elif bad == "value reshaped in place":
        # The same array object, reshaped in place (resize: setting .shape is deprecated in NumPy 2.5).
        p["p2"]["value"].resize((7, 1), refcheck=False)
        exc = ValueError
    else:
        # The same memory seen as int32 (setting .dtype in place is deprecated in NumPy 2.5; a view
        # of the value's own buffer is what a user can still do).
        p["p1"]["value"] = p["p1"]["value"].view(np.int32)
        exc = TypeError
    before = {k: v["value"].copy() for k, v in p.items()}
    with pytest.raises(exc, match=r"params\['p[12]'\]"):
        opt.step()
    for k in p:
        assert p[k]["value"].tobytes() == before[k].tobytes()
    assert all(opt.state[k]["step"] == 2 for k in p)


def test_python_plan_skip_nonfinite_and_counts():
    p = _params()
    opt = minimalsgd.SGD(p, lr=0.1, momentum=0.9, skip_nonfinite=True, backend="numpy")
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
    assert opt.state_dict()["state/p0/step"] == 3


@pytest.mark.parametrize("kw", [dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
                                dict(lr=0.1, momentum=0.9, clip_grad_norm=0.3), dict(lr=0.1, clip_grad_norm=0.3, maximize=True)])
@pytest.mark.parametrize("n", [1, 2 * _numpy._BLOCK + 5])
def test_python_plan_single_tensor_prepared_step(kw, n):
    # One tensor: the plan binds its coefficients and scratch once (prepare_sgd_step).
    rng = np.random.default_rng(5)
    pa = {"w": {"value": rng.standard_normal(n).astype(np.float32), "grad": rng.standard_normal(n).astype(np.float32)}}
    pb = {"w": {"value": pa["w"]["value"].copy(), "grad": pa["w"]["grad"].copy()}}
    oa, ob = minimalsgd.SGD(pa, backend="numpy", **kw), minimalsgd.SGD(pb, backend="numpy", **kw)
    for step in range(4):
        oa.step()
        ob._drop_plan()  # the reference takes the full path every step
        ob.step()
        assert pa["w"]["value"].tobytes() == pb["w"]["value"].tobytes(), step
        new = rng.standard_normal(n).astype(np.float32)
        pa["w"]["grad"][...] = new
        pb["w"]["grad"][...] = new


@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
def test_python_plan_adam_step_counts(cls):
    # The Python plan is generic over the formula: Adam's bias correction needs the step counts.
    Opt = getattr(minimalsgd, cls)
    pa, pb = _params(7), _params(7)
    oa = Opt(pa, lr=0.01, weight_decay=0.01, backend="numpy")
    ob = Opt(pb, lr=0.01, weight_decay=0.01, backend="numpy")
    rng = np.random.default_rng(8)
    for step in range(6):
        oa.step()
        ob._drop_plan()
        ob.step()
        if step >= 1:
            from minimalsgd.optim.plans import PythonPlan
            assert isinstance(oa._plan, PythonPlan)
        for k in pa:
            assert pa[k]["value"].tobytes() == pb[k]["value"].tobytes(), (step, k)
            new = rng.standard_normal(pa[k]["grad"].shape).astype(np.float32)
            pa[k]["grad"][...] = new
            pb[k]["grad"][...] = new
    assert oa.state["p0"]["step"] == ob.state["p0"]["step"] == 6
