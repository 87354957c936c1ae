"""Hypothesis drives both backends with arbitrary shapes, dtypes, strides, byte orders, alignment
and hyperparameters against the float64 oracle: each case is the right result, or a TypeError/
ValueError with nothing changed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minimalsgd

from oracle import oracle_step, tolerance

DTYPES = ["<f2", "<f4", "<f4", "<f8", "<f8", ">f4", ">f8", "<c8", "<c16", "g", "<i4", "?", "O"]
FLOATS = st.one_of(
    st.floats(min_value=0.0, max_value=2.0),
    st.sampled_from([0.0, -0.5, float("nan"), float("inf"), 1e-3]),
)


@st.composite
def arrays(draw, shape, dtype, seed):
    """An array of ``shape`` and ``dtype`` in one of many layouts: C, F, strided, reversed, unaligned."""
    rng = np.random.default_rng(seed)
    layout = draw(st.sampled_from(["C", "F", "strided", "reversed", "unaligned", "transposed"]))
    dt = np.dtype(dtype)
    data = rng.standard_normal(shape)
    if dt.kind == "c":
        data = data + 1j * rng.standard_normal(shape)
    base = np.asarray(data).astype(dt)
    if layout == "F" and base.ndim:  # (np.asfortranarray would turn a 0-d array into 1-d)
        return np.asfortranarray(base)
    if layout == "strided" and base.ndim:
        big = np.zeros(tuple(2 * s for s in base.shape), dt)
        view = big[tuple(slice(None, None, 2) for _ in base.shape)]
        view[...] = base
        return view
    if layout == "reversed" and base.ndim:
        return base[::-1].copy()[::-1]
    if layout == "transposed" and base.ndim >= 2:
        return base.T.copy().T
    if layout == "unaligned" and dt.itemsize > 1 and dt.kind != "O":
        raw = np.zeros(base.size * dt.itemsize + 1, np.uint8)
        view = raw[1:].view(dt).reshape(base.shape)
        view[...] = base
        return view
    return base


@st.composite
def cases(draw):
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=0, max_size=3)))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31))
    w = draw(arrays(shape, dtype, seed))
    g = draw(arrays(shape, dtype, seed + 1))
    v = draw(arrays(shape, dtype, seed + 2))
    if draw(st.integers(0, 3)) == 0:  # a quarter of the cases: anything, mostly invalid somewhere
        hyper = dict(
            lr=draw(FLOATS),
            momentum=draw(st.sampled_from([0.0, 0.5, 0.9, -0.1])),
            dampening=draw(st.sampled_from([0.0, 0.25, float("nan")])),
            weight_decay=draw(st.sampled_from([0.0, 1e-2, -1.0])),
            nesterov=draw(st.booleans()),
            maximize=draw(st.booleans()),
            grad_scale=draw(st.sampled_from([1.0, 0.5, -2.0, float("inf")])),
        )
    else:  # valid hyperparameters
        momentum = draw(st.sampled_from([0.0, 0.5, 0.9]))
        nesterov = momentum > 0 and draw(st.booleans())
        hyper = dict(
            lr=draw(st.floats(min_value=0.0, max_value=2.0)),
            momentum=momentum,
            dampening=0.0 if nesterov else draw(st.sampled_from([0.0, 0.25, 1.0])),
            weight_decay=draw(st.sampled_from([0.0, 1e-2, 0.5])),
            nesterov=nesterov,
            maximize=draw(st.booleans()),
            grad_scale=draw(st.sampled_from([1.0, 0.5, 0.0, 3.0])),
        )
    first = draw(st.booleans())
    backend = draw(st.sampled_from(["auto", "numpy"]))
    return w, g, v, hyper, first, backend


def _valid(hyper, dtype) -> bool:
    h = hyper
    if np.dtype(dtype).kind not in "fc":
        return False
    finite = all(math.isfinite(h[k]) for k in ("lr", "momentum", "dampening", "weight_decay", "grad_scale"))
    if not finite or h["lr"] < 0 or h["momentum"] < 0 or h["weight_decay"] < 0 or h["grad_scale"] < 0:
        return False
    return not (h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0))


@settings(max_examples=400)
@given(cases())
def test_fuzz_right_result_or_clear_error(case):
    w, g, v, hyper, first, backend = case
    w0, g0, v0 = w.copy(), g.copy(), v.copy()
    if not _valid(hyper, w.dtype):
        with pytest.raises((TypeError, ValueError), match=r"values\[0\]|lr|momentum|dampening|weight_decay|nesterov|grad_scale"):
            minimalsgd.sgd_step(w, g, v, first_step=first, backend=backend, **hyper)
        np.testing.assert_array_equal(w, w0)
        np.testing.assert_array_equal(v, v0)
        np.testing.assert_array_equal(g, g0)
        return
    minimalsgd.sgd_step(w, g, v, first_step=first, backend=backend, **hyper)
    np.testing.assert_array_equal(g, g0)  # never written
    scale = float(w.dtype.type(hyper["grad_scale"]).real)
    w_or, v_or = oracle_step(w0, g0, v0, first=first, **{**hyper, "grad_scale": scale})
    wide = np.complex128 if w.dtype.kind == "c" else np.float64
    bound = tolerance(w.dtype, w_or, w0, g0, v0, v_or, ops=12)
    assert np.all(np.abs(w.astype(wide) - w_or) <= bound)
    if hyper["momentum"] != 0:
        assert np.all(np.abs(v.astype(wide) - v_or) <= tolerance(w.dtype, v_or, g0, v0, ops=12))


@given(st.lists(st.integers(0, 300), min_size=1, max_size=12), st.integers(0, 2**31), st.booleans())
def test_fuzz_multi_tensor_native_equals_numpy_bitwise(sizes, seed, nesterov):
    rng = np.random.default_rng(seed)
    dts = [np.float32 if rng.random() < 0.5 else np.float64 for _ in sizes]
    ws = [rng.standard_normal(n).astype(d) for n, d in zip(sizes, dts)]
    gs = [rng.standard_normal(n).astype(d) for n, d in zip(sizes, dts)]
    firsts = [bool(rng.random() < 0.5) for _ in sizes]
    out = {}
    for backend in ("native", "numpy"):
        w = [x.copy() for x in ws]
        v = [x * 0.5 for x in ws]
        minimalsgd.sgd_step(w, gs, v, lr=0.03, momentum=0.8, nesterov=nesterov, weight_decay=1e-3,
                            first_step=firsts, backend=backend)
        out[backend] = (w, v)
    for a, b in zip(out["native"][0] + out["native"][1], out["numpy"][0] + out["numpy"][1]):
        np.testing.assert_array_equal(a, b)
