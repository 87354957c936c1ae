"""Bad input: a TypeError/ValueError that names the parameter, and every array left as it was.
Every other array NumPy can produce: the right result, through whichever backend can serve it."""

from __future__ import annotations

import numpy as np
import pytest

import minimalsgd
from minimalsgd import SGD

from oracle import oracle_step, tolerance


def _f32(*shape, fill=1.0):
    return np.full(shape, fill, np.float32)


def _readonly(a):
    a.flags.writeable = False
    return a


def _unaligned(n, dtype=np.float32):
    """A writeable view whose data pointer is one byte off the dtype's alignment."""
    buf = np.zeros(n * np.dtype(dtype).itemsize + 1, np.uint8)
    view = buf[1:].view(dtype)
    assert not view.flags.aligned
    view[...] = np.arange(n, dtype=dtype) / 7
    return view


def _snapshot(arrays):
    return [None if a is None or not isinstance(a, np.ndarray) else a.copy() for a in arrays]


def _unchanged(arrays, snap):
    for a, s in zip(arrays, snap):
        if s is not None:
            np.testing.assert_array_equal(a, s)


# (label, values, grads, buffers, kwargs, exception, message pattern)
def _bad_calls():
    w, g, v = _f32(4), _f32(4, fill=0.5), _f32(4)
    shared = np.zeros(10, np.float32)
    cases = [
        ("int value", [np.ones(4, np.int32)], [np.ones(4, np.int32)], None, {}, TypeError, r"values\[0\].*floating"),
        ("bool value", [np.ones(4, bool)], [np.ones(4, bool)], None, {}, TypeError, r"values\[0\]"),
        ("object value", [np.array([1.0, 2.0], object)], [np.ones(2, object)], None, {}, TypeError, r"values\[0\]"),
        ("list value", [[1.0, 2.0]], [np.ones(2)], None, {}, TypeError, r"values\[0\].*ndarray"),
        ("dtype mismatch", [w.copy()], [np.ones(4)], None, {}, TypeError, r"values\[0\].*grad dtype"),
        ("shape mismatch", [w.copy()], [_f32(5)], None, {}, ValueError, r"values\[0\].*grad shape"),
        ("read-only value", [_readonly(w.copy())], [g], None, {}, ValueError, r"values\[0\].*read-only"),
        ("read-only buffer", [w.copy()], [g], [_readonly(v.copy())], {"momentum": 0.9}, ValueError, r"momentum buffer is read-only"),
        ("buffer shape", [w.copy()], [g], [_f32(3)], {"momentum": 0.9}, ValueError, r"momentum buffer shape"),
        ("buffer dtype", [w.copy()], [g], [np.zeros(4)], {"momentum": 0.9}, TypeError, r"momentum buffer dtype"),
        ("no buffers", [w.copy()], [g], None, {"momentum": 0.9}, ValueError, r"momentum_buffers"),
        ("grads count", [w.copy(), w.copy()], [g], None, {}, ValueError, r"grads has 2 arrays for 3"),
        ("value is grad", [shared[:4]], [shared[:4]], None, {}, ValueError, r"shares memory"),
        ("overlapping values", [shared[:6], shared[4:]], [_f32(6), _f32(6)], None, {}, ValueError, r"shares memory"),
        ("grad overlaps other value", [shared[:4], _f32(4)], [_f32(4), shared[2:6]], None, {}, ValueError, r"values\[1\].*shares memory"),
        ("buffer is value", [shared[:4]], [g], [shared[:4]], {"momentum": 0.9}, ValueError, r"shares memory"),
        ("negative lr", [w.copy()], [g], None, {"lr": -0.1}, ValueError, r"lr"),
        ("nan lr", [w.copy()], [g], None, {"lr": float("nan")}, ValueError, r"lr must be finite"),
        ("inf lr", [w.copy()], [g], None, {"lr": float("inf")}, ValueError, r"lr"),
        ("str lr", [w.copy()], [g], None, {"lr": "0.1"}, TypeError, r"lr must be a real number"),
        ("bool lr", [w.copy()], [g], None, {"lr": True}, TypeError, r"lr"),
        ("negative momentum", [w.copy()], [g], [v.copy()], {"momentum": -0.5}, ValueError, r"momentum"),
        ("negative weight_decay", [w.copy()], [g], None, {"weight_decay": -1e-3}, ValueError, r"weight_decay"),
        ("nan dampening", [w.copy()], [g], [v.copy()], {"momentum": 0.9, "dampening": float("nan")}, ValueError, r"dampening"),
        ("nesterov no momentum", [w.copy()], [g], None, {"nesterov": True}, ValueError, r"nesterov"),
        ("nesterov dampening", [w.copy()], [g], [v.copy()], {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError, r"nesterov"),
        ("nesterov not bool", [w.copy()], [g], None, {"nesterov": 1}, TypeError, r"nesterov"),
        ("negative grad_scale", [w.copy()], [g], None, {"grad_scale": -1.0}, ValueError, r"grad_scale"),
        ("first_step length", [w.copy()], [g], [v.copy()], {"momentum": 0.9, "first_step": [True, False]}, ValueError, r"first_step"),
        ("first_step type", [w.copy()], [g], [v.copy()], {"momentum": 0.9, "first_step": [1]}, TypeError, r"first_step\[1\]"),
        ("backend name", [w.copy()], [g], None, {"backend": "gpu"}, ValueError, r"backend"),
        ("native byte-swapped float16", [np.ones(4, ">f2")], [np.ones(4, ">f2")], None, {"backend": "native"}, ValueError, r"values\[0\].*native"),
        ("native strided", [np.ones(8, np.float32)[::2]], [_f32(4)], None, {"backend": "native"}, ValueError, r"values\[0\].*native"),
    ]
    return cases


BAD = _bad_calls()


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_sgd_step_bad_input_raises_and_changes_nothing(case):
    label, values, grads, buffers, kwargs, exc, pattern = case
    kwargs = {"lr": 0.1, **kwargs}
    # A good tensor first: a step is all-or-nothing, so it must not be written either.
    good_w, good_g, good_v = np.arange(5, dtype=np.float32), np.ones(5, np.float32), np.ones(5, np.float32)
    if buffers is not None:
        buffers = [good_v] + buffers
    if "first_step" in kwargs and isinstance(kwargs["first_step"], list):
        kwargs["first_step"] = [False] + kwargs["first_step"]
    all_values, all_grads = [good_w] + values, [good_g] + grads
    arrays = all_values + all_grads + (buffers or [])
    snap = _snapshot(arrays)
    pattern = pattern.replace(r"values\[0\]", r"values\[1\]").replace(r"values\[1\].*shares", r"values\[\d\].*shares")
    with pytest.raises(exc, match=pattern):
        minimalsgd.sgd_step(all_values, all_grads, buffers, **kwargs)
    _unchanged(arrays, snap)


def test_sgd_bad_params_raise_and_change_nothing():
    good = {"value": np.arange(4, dtype=np.float32), "grad": np.ones(4, np.float32)}
    bad_entries = [
        ({"value": np.ones(3, np.int64), "grad": np.ones(3, np.int64)}, TypeError, r"params\['bad'\].*floating"),
        ({"grad": np.ones(3)}, ValueError, r"params\['bad'\] has a grad but no 'value'"),
        ({"value": _readonly(np.ones(3)), "grad": np.ones(3)}, ValueError, r"params\['bad'\].*read-only"),
        ({"value": np.ones(3), "grad": np.ones(4)}, ValueError, r"params\['bad'\].*shape"),
        ("same value as 'good'", ValueError, r"shares memory"),
        ([1, 2], TypeError, r"params\['bad'\] must be a dict"),
    ]
    for entry, exc, pattern in bad_entries:
        params = {"good": {"value": good["value"].copy(), "grad": good["grad"]}, "bad": entry}
        if isinstance(entry, str):  # one array registered under two names
            params["bad"] = {"value": params["good"]["value"], "grad": np.ones(4, np.float32)}
        opt = SGD(params, lr=0.1, momentum=0.9, clip_grad_norm=1.0)
        before = params["good"]["value"].copy()
        with pytest.raises(exc, match=pattern):
            opt.step()
        np.testing.assert_array_equal(params["good"]["value"], before)
        assert opt.state == {}  # no buffer was born


@pytest.mark.parametrize(
    "kwargs,exc,pattern",
    [
        ({"lr": -1.0}, ValueError, "lr"),
        ({"momentum": float("inf")}, ValueError, "momentum"),
        ({"clip_grad_norm": 0.0}, ValueError, "clip_grad_norm"),
        ({"clip_grad_norm": -1.0}, ValueError, "clip_grad_norm"),
        ({"clip_grad_norm": "1"}, TypeError, "clip_grad_norm"),
        ({"nesterov": True}, ValueError, "nesterov"),
        ({"skip_nonfinite": "yes"}, TypeError, "skip_nonfinite"),
        ({"backend": "cuda"}, ValueError, "backend"),
    ],
)
def test_sgd_constructor_checks(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        SGD({}, **kwargs)


def test_sgd_params_must_be_a_dict():
    with pytest.raises(TypeError, match="params must be a dict"):
        SGD([np.ones(3)])


# ---------------------------------------------------------------------------------------------
# Every other layout and dtype: the right result


def _layouts():
    base = np.random.default_rng(0).standard_normal((6, 8))
    out = {
        "C float32": lambda d: base.astype(np.float32),
        "F float64": lambda d: np.asfortranarray(base),
        "strided float32": lambda d: base.astype(np.float32)[::2, 1::3],
        "negative strides": lambda d: base[::-1, ::-2].copy()[::-1],
        "transposed float32": lambda d: base.astype(np.float32).T,
        "0-d float64": lambda d: np.array(1.5),
        "size-0 float32": lambda d: np.zeros((0, 3), np.float32),
        "byte-swapped >f4": lambda d: base.astype(">f4"),
        "byte-swapped >f8": lambda d: base.astype(">f8")[:, ::2],
        "float16": lambda d: base.astype(np.float16),
        "longdouble": lambda d: base.astype(np.longdouble),
        "complex64": lambda d: (base + 1j * base[::-1]).astype(np.complex64),
        "complex128 strided": lambda d: (base + 0.5j).astype(np.complex128)[:, ::3],
        "unaligned float32": lambda d: _unaligned(12, np.float32),
        "unaligned float64": lambda d: _unaligned(9, np.float64),
    }
    return out


LAYOUTS = _layouts()


@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_any_array_gets_the_right_result(name, backend):
    make = LAYOUTS[name]
    w = make(None)
    w0 = w.copy()
    g = np.asarray(np.asarray(make(None)) * 0.5 + 0.25, dtype=w.dtype)
    if g.shape != w.shape:
        g = g.reshape(w.shape)
    v = np.zeros_like(w) if not np.iscomplexobj(w) else np.zeros_like(w)
    kw = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, grad_scale=0.5)
    minimalsgd.sgd_step(w, g, v, first_step=True, backend=backend, **kw)
    minimalsgd.sgd_step(w, g, v, backend=backend, **kw)
    w_or, v_or = oracle_step(w0, g, None, first=True, **kw)
    w_or, v_or = oracle_step(w_or, g, v_or, first=False, **kw)
    dt = w.dtype
    assert np.all(np.abs(w.astype(np.complex128 if dt.kind == "c" else np.float64) - w_or) <= tolerance(dt, w_or, g, v_or, ops=24))
