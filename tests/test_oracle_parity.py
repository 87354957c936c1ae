"""Native kernel, NumPy backend and the float64 oracle: every option, both dtypes, every tail.

Native and NumPy backends run the same operations in the same order in the array's dtype, and the
native module is built without fused multiply-add, so they must agree bit for bit. The float64
oracle runs that order too, so float64 results equal it bit for bit; float32 results differ from it
by the rounding of each operation and of the coefficients to float32: a few float32 ulps of the
operands of the step (``sgd_bound``).
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

import minimalsgd
from minimalsgd import _functional as F

from oracle import oracle_norm, oracle_step, tolerance

core = F._core
pytestmark = pytest.mark.skipif(core is None, reason="native extension not built")

DTYPES = [np.float32, np.float64]
OPTIONS = [
    dict(momentum=mu, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
    for mu, d, wd, n, mx in itertools.product([0.0, 0.9], [0.0, 0.3], [0.0, 0.01], [False, True], [False, True])
    if not (n and (mu == 0 or d != 0))
]
GRAIN = core.get_grain() if core is not None else 32768
SIZES = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, GRAIN - 1, GRAIN, GRAIN + 1, 100_003]


def _opt_id(o):
    return "-".join(f"{k[:4]}{int(v) if isinstance(v, bool) else v}" for k, v in o.items())


def sgd_bound(dtype, w_prev, g, v_prev, w_new, v_new, *, lr, momentum=0.0, weight_decay=0.0, grad_scale=1.0, **_):
    """The float32 error of one step against the float64 oracle, from its operands: the new value's
    own rounding and lr times the rounding errors of the update's terms (scaled grad, weight decay,
    old and new buffer), each a few ulps of its size (coefficients rounded to float32 included)."""
    mag = lambda a: 0.0 if a is None else np.abs(a.astype(np.float64))  # noqa: E731
    update_terms = (mag(g) * abs(grad_scale), weight_decay * mag(w_prev), momentum * mag(v_prev),
                    (1 + momentum) * mag(v_new))
    w_bound = tolerance(dtype, mag(w_prev), mag(w_new), *(lr * t for t in update_terms), ops=4)
    v_bound = tolerance(dtype, *update_terms[:3], ops=4)
    return w_bound, v_bound


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", OPTIONS, ids=_opt_id)
def test_native_numpy_oracle_over_sizes(dtype, opts):
    # A seed of its own per case, the same in every run (hash() of a str varies per process).
    rng = np.random.default_rng(zlib.crc32(f"{np.dtype(dtype).name}-{_opt_id(opts)}".encode()))
    for n in SIZES:
        w0 = rng.standard_normal(n).astype(dtype)
        w_nat, w_np = w0.copy(), w0.copy()
        v_nat, v_np = np.full(n, np.nan, dtype), np.full(n, np.nan, dtype)  # first step must not read them
        w_or, v_or = w0.astype(np.float64), None
        for step in range(3):
            g = rng.standard_normal(n).astype(dtype)
            kw = dict(lr=0.05, grad_scale=0.75, first_step=step == 0, **opts)
            minimalsgd.sgd_step(w_nat, g, v_nat, backend="native", **kw)
            minimalsgd.sgd_step(w_np, g, v_np, backend="numpy", **kw)
            w_prev, v_prev = w_or, v_or
            w_or, v_new = oracle_step(w_or, g, v_or, first=step == 0, lr=0.05, grad_scale=float(dtype(0.75)), **opts)
            # Same bits in both backends, for values and buffers.
            np.testing.assert_array_equal(w_nat, w_np, err_msg=f"n={n} step={step}")
            if opts["momentum"]:
                np.testing.assert_array_equal(v_nat, v_np, err_msg=f"n={n} step={step}")
            if dtype == np.float64:  # the oracle's order of operations: the same bits
                np.testing.assert_array_equal(w_nat, w_or, err_msg=f"n={n} step={step}")
                if opts["momentum"]:
                    np.testing.assert_array_equal(v_nat, v_new, err_msg=f"n={n} step={step}")
            else:
                w_bound, v_bound = sgd_bound(dtype, w_prev, g, None if step == 0 else v_prev, w_or, v_new, lr=0.05,
                                             grad_scale=0.75, **opts)
                assert np.all(np.abs(w_nat - w_or) <= w_bound), f"n={n} step={step}"
                if opts["momentum"]:
                    assert np.all(np.abs(v_nat - v_new) <= v_bound), f"n={n} step={step}"
            # The oracle restarts from the tested state each step: errors do not compound.
            w_or = w_nat.astype(np.float64)
            v_or = v_nat.astype(np.float64) if opts["momentum"] else None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_long_trajectory_stays_with_the_oracle(dtype, backend):
    rng = np.random.default_rng(5)
    n = 5000
    w = rng.standard_normal(n).astype(dtype)
    v = np.empty_like(w)
    w_or, v_or = w.astype(np.float64), None
    opts = dict(lr=0.01, momentum=0.9, dampening=0.1, weight_decay=1e-3)
    err_w = err_v = 0.0  # float32: the bound on the accumulated error, carried through the recurrence
    for step in range(100):
        g = rng.standard_normal(n).astype(dtype)
        minimalsgd.sgd_step(w, g, v, first_step=step == 0, backend=backend, **opts)
        w_prev, v_prev = w_or, v_or
        w_or, v_or = oracle_step(w_or, g, v_or, first=step == 0, **opts)
        if dtype == np.float32:
            w_step, v_step = sgd_bound(dtype, w_prev, g, v_prev, w_or, v_or, **opts)
            # An error in v is carried on times momentum (and enters w times lr); one in w enters
            # the next update times weight_decay: the linear recurrence of the errors.
            err_v = opts["momentum"] * err_v + (1 - opts["dampening"]) * opts["weight_decay"] * err_w + v_step
            err_w = err_w + opts["lr"] * err_v + w_step
    if dtype == np.float64:  # 100 steps in the oracle's order of operations: the same bits
        np.testing.assert_array_equal(w, w_or)
    else:
        assert np.all(np.abs(w - w_or) <= err_w)


def test_multi_tensor_one_call_mixed_dtypes_and_first_flags():
    rng = np.random.default_rng(3)
    shapes = [(3, 4), (17,), (), (0,), (70_000,), (5, 5, 5)]
    dtypes = [np.float32, np.float64, np.float32, np.float64, np.float32, np.float64]
    ws = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    gs = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    vs = [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]
    firsts = [True, False, True, False, False, True]
    expected = [oracle_step(w, g, v, first=f, lr=0.1, momentum=0.9, nesterov=True) for w, g, v, f in zip(ws, gs, vs, firsts)]
    ids = [id(w) for w in ws]
    minimalsgd.sgd_step(ws, gs, vs, lr=0.1, momentum=0.9, nesterov=True, first_step=firsts)
    assert [id(w) for w in ws] == ids
    for w, v, (w_or, v_or), g in zip(ws, vs, expected, gs):
        assert np.all(np.abs(w - w_or) <= tolerance(w.dtype, w_or, g, v_or))
        assert np.all(np.abs(v - v_or) <= tolerance(w.dtype, v_or, g))


@pytest.fixture
def restore_native_settings():
    isa, threads, grain = core.get_isa(), core.get_num_threads_setting(), core.get_grain()
    yield
    core.set_isa(isa)
    core.set_num_threads(threads)
    core.set_grain(grain)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_isa_and_thread_count_gives_the_same_bits(dtype, restore_native_settings):
    rng = np.random.default_rng(11)
    sizes = [1, 15, 33, 1000, 4097, 70_001]
    ws = [rng.standard_normal(n).astype(dtype) for n in sizes]
    gs = [rng.standard_normal(n).astype(dtype) for n in sizes]
    results = {}
    for isa in core.supported_isas():
        for threads in (1, 2):
            for grain in (16, 1 << 20):
                core.set_isa(isa)
                core.set_num_threads(threads)
                core.set_grain(grain)
                w = [x.copy() for x in ws]
                v = [np.empty_like(x) for x in ws]
                for step in range(3):
                    minimalsgd.sgd_step(w, gs, v, lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01,
                                        grad_scale=0.5, first_step=step == 0, backend="native")
                norm = minimalsgd.global_grad_norm(gs, backend="native")
                results[(isa, threads, grain)] = (w, v, norm)
    assert set(core.supported_isas()) >= {"baseline"}
    (w0, v0, n0), *rest = results.values()
    for key, (w, v, norm) in results.items():
        for a, b in zip(w0 + v0, w + v):
            np.testing.assert_array_equal(a, b, err_msg=str(key))
        assert norm == n0, key
    assert n0 == pytest.approx(oracle_norm(gs), rel=1e-12)


def test_set_isa_refuses_unknown_names(restore_native_settings):
    with pytest.raises(ValueError, match="isa must be one of"):
        core.set_isa("sse9")
    assert core.get_isa() in core.supported_isas()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.longdouble, np.complex64, np.complex128])
@pytest.mark.parametrize("backend", ["auto", "numpy", "native"])
def test_global_grad_norm(dtype, backend):
    rng = np.random.default_rng(2)
    gs = [rng.standard_normal(s).astype(dtype) for s in [(10,), (3, 7), (), (0,), (40_000,)]]
    if np.dtype(dtype).kind == "c":
        gs = [np.asarray(g + 1j * rng.standard_normal(g.shape), dtype=dtype) for g in gs]
    if backend == "native" and np.dtype(dtype) not in (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)):
        snap = [g.copy() for g in gs]
        with pytest.raises(ValueError, match=r"grads\[0\].*native"):
            minimalsgd.global_grad_norm(gs, backend=backend)
        for g, s in zip(gs, snap):
            np.testing.assert_array_equal(g, s)
        return
    assert minimalsgd.global_grad_norm(gs, backend=backend) == pytest.approx(oracle_norm(gs), rel=1e-12)
