"""bfloat16 and float16 storage: exact against the float32-math oracle (tests/oracle.py) for both
roundings, unbiased stochastic rounding, the same bits for every backend, ISA, thread count and
chunking, checkpoints that resume bit for bit, torch parity, and bad input."""

from __future__ import annotations

import io

import ml_dtypes
import numpy as np
import pytest

import minimalsgd
from minimalsgd import SGD
from minimalsgd import _functional as F

from oracle import oracle_norm, oracle_step_half, random_bits

core = F._core
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
HALVES = [BF16, F16]
BACKENDS = ["numpy"] + (["native"] if core is not None else [])

OPTIONS = [
    dict(lr=0.1),
    dict(lr=0.05, weight_decay=0.01),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    dict(lr=0.2, momentum=0.5, dampening=0.25, maximize=True, grad_scale=0.5),
]


def bits16(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint16 if a.dtype.itemsize == 2 else np.uint32)


def assert_same_bits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(bits16(a), bits16(b))


def make(dtype, n, seed=0, scale=1.0, buffer_dtype=None):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(n) * scale).astype(np.float32).astype(dtype)
    g = (rng.standard_normal(n) * 0.1).astype(np.float32).astype(dtype)
    v = rng.standard_normal(n).astype(np.float32).astype(buffer_dtype or dtype)
    return w, g, v


def run(w, g, v, opts, backend, first=False, **rounding):
    w, v = w.copy(), v.copy()
    mom = opts.get("momentum", 0) != 0
    minimalsgd.sgd_step([w], [g], [v] if mom else None, first_step=first, backend=backend, **opts, **rounding)
    return w, v


# ---------------------------------------------------------------------------------------------
# Against the oracle


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("buffer", ["same", "float32"])
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_nearest_matches_oracle(dtype, buffer, first, opts, backend):
    n = 1000 + 37  # several blocks of the kernel's 256 and a ragged tail
    w, g, v = make(dtype, n, buffer_dtype=np.float32 if buffer == "float32" else None)
    got_w, got_v = run(w, g, v, opts, backend, first)
    want_w, want_v = oracle_step_half(w, g, v, first=first, **opts)
    assert_same_bits(got_w, want_w)
    if want_v is not None:
        assert_same_bits(got_v, want_v)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opts", [OPTIONS[0], OPTIONS[3], OPTIONS[4]])
@pytest.mark.parametrize("buffer", ["same", "float32"])
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_stochastic_matches_oracle(dtype, buffer, opts, backend):
    n = 300
    w, g, v = make(dtype, n, seed=1, buffer_dtype=np.float32 if buffer == "float32" else None)
    got_w, got_v = run(w, g, v, opts, backend, stochastic_rounding=True, seed=12345, rounding_step=7,
                       rounding_keys=[99])
    want_w, want_v = oracle_step_half(w, g, v, first=False, stochastic=True, seed=12345, step=7, key=99, **opts)
    assert_same_bits(got_w, want_w)
    if want_v is not None:
        assert_same_bits(got_v, want_v)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_edge_values_both_roundings(dtype, backend):
    """Subnormals, the overflow threshold, infinities, NaN and signed zeros, through the kernel:
    with lr=1 and a float32 buffer holding -x (momentum 1, dampening 1, zero grad), the new value is
    exactly round(x) for any float32 x (the oracle computes the same float32 arithmetic)."""
    specials = np.array(
        [0.0, -0.0, 1e-45, -1e-45, 1e-40, 2.0**-126, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-14 - 2.0**-30,
         2.0**-14, 65504.0, 65519.0, 65520.0, 65535.9, 70000.0, 3.3e38, 3.4e38, -3.4e38, np.inf, -np.inf,
         np.nan, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-9, -(1.0 + 2.0**-8), 1e-6, -1e-7, 5.96e-8, 1e-30],
        dtype=np.float32)
    rng = np.random.default_rng(5)
    rand = rng.integers(0, 2**32, 400, dtype=np.uint64).astype(np.uint32).view(np.float32)
    rand = rand[np.isfinite(rand)]
    x = np.concatenate([specials, rand]).astype(np.float32)
    n = x.size
    w = np.zeros(n, dtype)
    g = np.zeros(n, dtype)
    buf = -x
    opts = dict(lr=1.0, momentum=1.0, dampening=1.0)
    for sr in (False, True):
        got_w, _ = run(w, g, buf, opts, backend, stochastic_rounding=sr, seed=3, rounding_step=1)
        want_w, _ = oracle_step_half(w, g, buf, first=False, stochastic=sr, seed=3, step=1, key=0, **opts)
        finite = ~np.isnan(x)
        assert_same_bits(got_w[finite], want_w[finite])
        assert np.isnan(got_w[~finite].astype(np.float32)).all()


@pytest.mark.skipif(core is None, reason="native extension missing")
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_nearest_conversion_wide_sweep(dtype):
    """Round to nearest of 2**21 float32 bit patterns (random and every exponent's edges) through
    the native kernel, on every ISA, equals ml_dtypes / NumPy's astype."""
    rng = np.random.default_rng(11)
    pats = [rng.integers(0, 2**32, 1 << 20, dtype=np.uint64).astype(np.uint32)]
    for e in range(256):
        base = np.uint32(e << 23)
        pats.append(base + np.arange(0, 64, dtype=np.uint32))
        pats.append(base + np.uint32(0x7FFFFF) - np.arange(0, 64, dtype=np.uint32))
        pats.append(base + np.uint32(0x8000) + np.arange(-8, 8, dtype=np.int64).astype(np.uint32))
        pats.append(base + np.uint32(0x1000) + np.arange(-8, 8, dtype=np.int64).astype(np.uint32))
    u = np.concatenate(pats)
    u = np.concatenate([u, u | np.uint32(0x80000000)])
    x = u.view(np.float32)
    x = x[~np.isnan(x)]
    buf = -x
    with np.errstate(over="ignore"):
        # The kernel's float32 arithmetic (v = 1*buf + 0*g; w = 0 - 1*v: x, but +0 for -0), rounded.
        want = (np.float32(0) - (np.float32(1) * buf + np.float32(0))).astype(dtype)
    w = np.zeros(x.size, dtype)
    g = np.zeros(x.size, dtype)
    for isa in core.supported_isas():
        core.set_isa(isa)
        try:
            out = w.copy()
            minimalsgd.sgd_step([out], [g], [buf], lr=1.0, momentum=1.0, dampening=1.0, backend="native")
            assert_same_bits(out, want)
        finally:
            core.set_isa(core.supported_isas()[-1])


# ---------------------------------------------------------------------------------------------
# Stochastic rounding is unbiased


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_stochastic_rounding_is_unbiased(dtype, backend):
    n = 200_000
    w = np.ones(n, dtype)
    g = np.full(n, 1.0, dtype)
    lr = 1e-3  # 1 - 1e-3: below half an ulp of 1.0 in bfloat16, between float16 grid points
    exact = np.float32(1.0) - np.float32(lr) * np.float32(1.0)
    nearest, _ = run(w, g, w, dict(lr=lr), backend)
    sr, _ = run(w, g, w, dict(lr=lr), backend, stochastic_rounding=True, seed=1)
    lo, hi = sorted({float(v) for v in sr.astype(np.float64)})
    assert lo < exact < hi  # exactly the two neighbours occur
    p = (exact - lo) / (hi - lo)
    mean = float(sr.astype(np.float64).mean())
    sigma = (hi - lo) * np.sqrt(p * (1 - p) / n)
    assert abs(mean - float(exact)) < 5 * sigma
    if dtype == BF16:
        assert (nearest == np.ones(n, dtype)).all()  # nearest drops the update entirely

    # Many steps of one element: the mean walk tracks float32.
    steps = 2000
    w1 = np.ones(512, dtype)
    g1 = np.full(512, 0.25, dtype)
    for s in range(steps):
        minimalsgd.sgd_step([w1], [g1], lr=4e-4, backend=backend, stochastic_rounding=True, seed=9, rounding_step=s)
    target = 1.0 - steps * 4e-4 * 0.25
    ulp = 2.0**-8 if dtype == BF16 else 2.0**-11  # the spacing in [0.5, 1)
    # Each step adds an independent zero-mean error of variance <= ulp^2 / 4 per element.
    assert abs(float(w1.astype(np.float64).mean()) - target) < 5 * ulp * np.sqrt(steps / 4 / w1.size)
    w2 = np.ones(512, dtype)
    for s in range(steps):
        minimalsgd.sgd_step([w2], [g1], lr=4e-4, backend=backend)
    if dtype == BF16:
        assert (w2.astype(np.float32) == 1.0).all()  # stalled


# ---------------------------------------------------------------------------------------------
# The same bits everywhere


@pytest.mark.skipif(core is None, reason="native extension missing")
@pytest.mark.parametrize("sr", [False, True])
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_every_isa_thread_count_and_grain_gives_the_same_bits(dtype, sr):
    sizes = [1, 15, 16, 17, 255, 256, 257, 4099, 70_001]
    rng = np.random.default_rng(3)
    ws = [rng.standard_normal(s).astype(dtype) for s in sizes]
    gs = [(rng.standard_normal(s) * 0.01).astype(dtype) for s in sizes]
    vs = [rng.standard_normal(s).astype(dtype) for s in sizes]
    opts = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    ref_w = [w.copy() for w in ws]
    ref_v = [v.copy() for v in vs]
    minimalsgd.sgd_step(ref_w, gs, ref_v, backend="numpy", stochastic_rounding=sr, seed=77, rounding_step=5, **opts)
    saved = (core.get_isa(), core.get_num_threads_setting(), core.get_grain())
    try:
        for isa in core.supported_isas():
            core.set_isa(isa)
            for threads in (1, 2, 3):
                for grain in (1, 1000, 1 << 20):
                    core.set_num_threads(threads)
                    core.set_grain(grain)
                    w2 = [w.copy() for w in ws]
                    v2 = [v.copy() for v in vs]
                    minimalsgd.sgd_step(w2, gs, v2, backend="native", stochastic_rounding=sr, seed=77,
                                        rounding_step=5, **opts)
                    for a, b in zip(w2 + v2, ref_w + ref_v):
                        assert_same_bits(a, b)
    finally:
        core.set_isa(saved[0])
        core.set_num_threads(saved[1])
        core.set_grain(saved[2])


@pytest.mark.skipif(core is None, reason="native extension missing")
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_keys_and_steps_give_independent_bits_and_chunking_does_not_matter(dtype):
    n = 5000
    w = np.ones(n, dtype)
    g = np.full(n, 1.0, dtype)

    def sr(**kw):
        out = w.copy()
        minimalsgd.sgd_step([out], [g], lr=1e-3, stochastic_rounding=True, seed=kw.pop("seed", 1), **kw)
        return out

    a = sr()
    assert not np.array_equal(bits16(a), bits16(sr(rounding_step=1)))
    assert not np.array_equal(bits16(a), bits16(sr(rounding_keys=[1])))
    assert not np.array_equal(bits16(a), bits16(sr(seed=2)))
    # Two tensors in one call: the second gets key 1, as alone with rounding_keys=[1].
    a1, b1 = w.copy(), w.copy()
    minimalsgd.sgd_step([a1, b1], [g, g], lr=1e-3, stochastic_rounding=True, seed=1)
    assert_same_bits(a1, a)
    assert_same_bits(b1, sr(rounding_keys=[1]))
    # Element i's bits do not depend on where the array was split: a 2-D F-ordered array walks
    # in memory order, as its flat memory does.
    f = np.asfortranarray(np.ones((50, 100), dtype))
    gf = np.asfortranarray(np.ones((50, 100), dtype))
    minimalsgd.sgd_step([f], [gf], lr=1e-3, stochastic_rounding=True, seed=1)
    assert_same_bits(f.ravel(order="F"), a)
    f2 = np.asfortranarray(np.ones((50, 100), dtype))
    minimalsgd.sgd_step([f2], [gf], lr=1e-3, stochastic_rounding=True, seed=1, backend="numpy")
    assert_same_bits(f2, f)


@pytest.mark.parametrize("dtype", [F16], ids=str)
def test_byte_swapped_and_strided_go_to_numpy_with_the_same_bits(dtype):
    rng = np.random.default_rng(8)
    w = rng.standard_normal(400).astype(dtype)
    g = (rng.standard_normal(400) * 0.1).astype(dtype)
    v = rng.standard_normal(400).astype(dtype)
    opts = dict(lr=0.1, momentum=0.9)
    for sr in (False, True):
        ref_w, ref_v = w.copy(), v.copy()
        minimalsgd.sgd_step([ref_w], [g], [ref_v], stochastic_rounding=sr, seed=4, **opts)
        sw, sg, sv = (a.astype(a.dtype.newbyteorder(">")) for a in (w, g, v))
        minimalsgd.sgd_step([sw], [sg], [sv], stochastic_rounding=sr, seed=4, **opts)
        assert_same_bits(sw.astype(dtype), ref_w)
        assert_same_bits(sv.astype(dtype), ref_v)
        big = np.zeros((400, 2), dtype)
        big[:, 0] = w
        vb = np.zeros((400, 2), dtype)
        vb[:, 0] = v
        minimalsgd.sgd_step([big[:, 0]], [g], [vb[:, 0]], stochastic_rounding=sr, seed=4, **opts)
        assert_same_bits(np.ascontiguousarray(big[:, 0]), ref_w)
        assert (big[:, 1] == 0).all()
    snap = [a.copy() for a in (sw, sg, sv)]
    with pytest.raises(ValueError, match=r"values\[0\].*native"):
        minimalsgd.sgd_step([sw], [sg], [sv], backend="native", **opts)
    for a, s in zip((sw, sg, sv), snap):
        assert_same_bits(a, s)


# ---------------------------------------------------------------------------------------------
# The param-dict optimizer and checkpoints


def _params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "a": {"value": rng.standard_normal((30, 40)).astype(dtype), "grad": None},
        "b": {"value": rng.standard_normal(1001).astype(dtype), "grad": None},
        "c": {"value": rng.standard_normal(7).astype(np.float32), "grad": None},
    }


def _grads(params, step):
    rng = np.random.default_rng(100 + step)
    for p in params.values():
        p["grad"] = (rng.standard_normal(p["value"].shape) * 0.05).astype(p["value"].dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("state_dtype", [None, "float32"])
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_sgd_resume_is_bitwise(dtype, state_dtype, backend):
    kw = dict(lr=0.05, momentum=0.9, nesterov=True, stochastic_rounding=True, seed=2024,
              state_dtype=state_dtype, backend=backend)
    full = _params(dtype)
    opt = SGD(full, **kw)
    for s in range(6):
        _grads(full, s)
        opt.step()
    if state_dtype == "float32":
        assert opt.state["a"]["momentum_buffer"].dtype == np.float32
    else:
        assert opt.state["a"]["momentum_buffer"].dtype == dtype
    assert opt.state["c"]["momentum_buffer"].dtype == np.float32

    half = _params(dtype)
    opt1 = SGD(half, **kw)
    for s in range(3):
        _grads(half, s)
        opt1.step()
    sd = opt1.state_dict()
    assert sd["seed"] == 2024 and sd["applied_steps"] == 3 and sd["stochastic_rounding"] is True
    buf = io.BytesIO()
    np.savez(buf, **{k: v for k, v in sd.items()})
    buf.seek(0)
    loaded = dict(np.load(buf, allow_pickle=False))
    saved_values = {k: p["value"].copy() for k, p in half.items()}
    resumed = {k: {"value": v, "grad": None} for k, v in saved_values.items()}
    opt2 = SGD(resumed, lr=1.0, backend=backend)  # everything else comes from the checkpoint
    opt2.load_state_dict(loaded)
    for s in range(3, 6):
        _grads(resumed, s)
        opt2.step()
    for k in full:
        assert_same_bits(resumed[k]["value"], full[k]["value"])
    assert opt2.applied_steps == opt.applied_steps == 6


@pytest.mark.skipif(core is None, reason="native extension missing")
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_sgd_native_and_numpy_backend_agree(dtype):
    runs = {}
    for backend in ("native", "numpy"):
        params = _params(dtype, seed=3)
        opt = SGD(params, lr=0.1, momentum=0.9, clip_grad_norm=1.0, stochastic_rounding=True, seed=5, backend=backend)
        for s in range(4):
            _grads(params, s)
            opt.step()
        if backend == "native":
            assert opt._plan is None  # 16-bit params take the checked native path every step
        runs[backend] = params
    for k in runs["native"]:
        assert_same_bits(runs["native"][k]["value"], runs["numpy"][k]["value"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_global_grad_norm_16bit(dtype, backend):
    rng = np.random.default_rng(2)
    gs = [rng.standard_normal(s).astype(dtype) for s in [(10,), (3, 7), (), (0,), (40_000,)]]
    want = oracle_norm([g.astype(np.float64) for g in gs])
    assert minimalsgd.global_grad_norm(gs, backend=backend) == pytest.approx(want, rel=1e-12)


def test_float32_ignores_stochastic_rounding():
    w, g, v = make(np.float32, 100)
    a, av = run(w, g, v, OPTIONS[3], "auto")
    b, bv = run(w, g, v, OPTIONS[3], "auto", stochastic_rounding=True, seed=1)
    assert_same_bits(a, b)
    assert_same_bits(av, bv)


# ---------------------------------------------------------------------------------------------
# Bad input: named errors, nothing written


def _bad_16bit_calls():
    w, g, v = make(BF16, 8)
    h, hg, hv = make(F16, 8)
    f32 = np.zeros(8, np.float32)
    return [
        ("bf16 value, f16 grad", [w], [hg], None, {}, TypeError, r"values\[0\]: grad dtype"),
        ("bf16 value, f32 grad", [w], [f32], None, {}, TypeError, r"values\[0\]: grad dtype"),
        ("f16 value, bf16 buffer", [h], [hg], [v], {"momentum": 0.9}, TypeError, r"momentum buffer dtype.*float32"),
        ("f32 value, f16 buffer", [f32.copy()], [f32], [hv], {"momentum": 0.9}, TypeError, r"momentum buffer dtype"),
        ("f16 value, f64 buffer", [h], [hg], [np.zeros(8)], {"momentum": 0.9}, TypeError, r"momentum buffer dtype"),
        ("float seed", [w], [g], None, {"stochastic_rounding": True, "seed": 1.5}, TypeError, r"seed must be an int"),
        ("str seed", [w], [g], None, {"stochastic_rounding": True, "seed": "1"}, TypeError, r"seed must be an int"),
        ("no seed", [w], [g], None, {"stochastic_rounding": True}, TypeError, r"seed must be an int"),
        ("bool seed", [w], [g], None, {"stochastic_rounding": True, "seed": True}, TypeError, r"seed"),
        ("negative seed", [w], [g], None, {"stochastic_rounding": True, "seed": -1}, ValueError, r"seed must be in"),
        ("huge seed", [w], [g], None, {"stochastic_rounding": True, "seed": 2**64}, ValueError, r"seed must be in"),
        ("float step", [w], [g], None, {"stochastic_rounding": True, "seed": 1, "rounding_step": 1.0}, TypeError,
         r"rounding_step"),
        ("sr not bool", [w], [g], None, {"stochastic_rounding": 1, "seed": 1}, TypeError, r"stochastic_rounding"),
        ("keys length", [w], [g], None, {"stochastic_rounding": True, "seed": 1, "rounding_keys": [1, 2]}, ValueError,
         r"rounding_keys"),
        ("negative key", [w], [g], None, {"stochastic_rounding": True, "seed": 1, "rounding_keys": [-1]}, ValueError,
         r"rounding_keys\[0\]"),
    ]


@pytest.mark.parametrize("backend", ["auto", "numpy"] + (["native"] if core is not None else []))
@pytest.mark.parametrize("case", _bad_16bit_calls(), ids=lambda c: c[0])
def test_bad_16bit_input_raises_and_writes_nothing(case, backend):
    _, values, grads, buffers, kw, exc, pattern = case
    arrays = values + grads + (buffers or [])
    snap = [a.copy() for a in arrays]
    with pytest.raises(exc, match=pattern):
        minimalsgd.sgd_step(values, grads, buffers, lr=0.1, backend=backend, **kw)
    for a, s in zip(arrays, snap):
        assert_same_bits(a, s)


def test_sgd_bad_rounding_settings():
    params = _params(BF16)
    _grads(params, 0)
    snap = {k: p["value"].copy() for k, p in params.items()}
    with pytest.raises(TypeError, match="seed must be an int"):
        SGD(params, stochastic_rounding=True, seed=0.5)
    with pytest.raises(ValueError, match="state_dtype"):
        SGD(params, momentum=0.9, state_dtype=np.float16)
    opt = SGD(params, lr=0.1, stochastic_rounding=True, seed=1)
    opt.seed = "x"
    with pytest.raises(TypeError, match="seed"):
        opt.step()
    for k, p in params.items():
        assert_same_bits(p["value"], snap[k])
    assert opt.applied_steps == 0


def test_oracle_random_bits_match_the_library():
    """The library's vectorized generator against the oracle's per-element Python integers."""
    from minimalsgd import _half

    k = _half.rounding_tensor_key(_half.rounding_step_key(2**63 + 5, 17), 2**40 + 3)
    for index0 in (0, 2**32 - 10, 5 * 2**32 + 7):
        got = _half.rounding_bits(k, 64, index0=index0)
        want = random_bits(2**63 + 5, 17, 2**40 + 3, 64, index0=index0)
        assert [int(x) for x in got] == want


# ---------------------------------------------------------------------------------------------
# minimalsgd.torch


def _torch():
    return pytest.importorskip("torch")


TORCH_OPTIONS = [
    dict(),
    dict(weight_decay=0.1),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.1),
    dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
]


@pytest.mark.skipif(core is None, reason="native extension missing")
@pytest.mark.parametrize("opts", TORCH_OPTIONS)
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_torch_matches_torch_sgd_within_an_ulp(dtype_name, opts):
    """One step from the same param, grad and buffer: minimalsgd.torch.SGD (native, rounded once)
    against torch.optim.SGD(foreach=False), which rounds every intermediate to the dtype too. The
    bound: one unit in the last place of the result's scale, plus lr times half a unit of each
    16-bit intermediate torch rounds (the grad after weight decay, the buffer, the Nesterov sum)."""
    torch = _torch()
    from minimalsgd.torch import SGD as MSGD

    dt = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    n = 50_000
    p0 = torch.randn(n, generator=gen).to(dt)
    b0 = torch.randn(n, generator=gen).to(dt)
    g0 = (torch.randn(n, generator=gen) * 0.1).to(dt)
    lr = 0.1
    out = {}
    for name, cls, extra in (("ours", MSGD, {}), ("torch", torch.optim.SGD, {"foreach": False})):
        p = torch.nn.Parameter(p0.clone())
        opt = cls([p], lr=lr, **opts, **extra)
        if opts.get("momentum"):
            opt.state[p]["momentum_buffer"] = b0.clone()
        p.grad = g0.clone()
        opt.step()
        out[name] = p.detach().double()
    eps = float(torch.finfo(dt).eps)
    tiny = float(torch.finfo(dt).smallest_normal)
    ulp = lambda x: np.maximum(np.abs(x), tiny) * eps  # noqa: E731
    w, g, b = p0.double().numpy(), g0.double().numpy(), b0.double().numpy()
    mu, wd = opts.get("momentum", 0.0), opts.get("weight_decay", 0.0)
    gw = np.abs(g) + wd * np.abs(w)
    v = mu * np.abs(b) + gw
    inter = gw + (v + (gw + mu * v) if opts.get("momentum") else 0)
    bound = ulp(np.maximum(np.abs(w), np.abs(out["torch"].numpy()))) + lr * ulp(inter)
    diff = np.abs(out["ours"].numpy() - out["torch"].numpy())
    assert (diff <= bound).all(), float((diff / bound).max())
    if not opts:
        # No intermediate to round: w - lr*g rounded once in both (torch may fuse the multiply-add,
        # which moves a result by at most one unit).
        assert (diff <= ulp(np.maximum(np.abs(w), np.abs(out["torch"].numpy())))).all()


@pytest.mark.skipif(core is None, reason="native extension missing")
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_torch_stochastic_rounding_matches_functional_and_resumes(dtype_name):
    torch = _torch()
    from minimalsgd.torch import SGD as MSGD

    dt = getattr(torch, dtype_name)
    np_dt = BF16 if dtype_name == "bfloat16" else F16
    gen = torch.Generator().manual_seed(1)
    shapes = [(40, 30), (501,)]
    init = [torch.randn(s, generator=gen).to(dt) for s in shapes]
    grads = [[(torch.randn(s, generator=gen) * 0.01).to(dt) for s in shapes] for _ in range(4)]

    def torch_run(steps, params=None, opt_state=None):
        params = params or [torch.nn.Parameter(t.clone()) for t in init]
        opt = MSGD(params[:1], lr=0.05, momentum=0.9, stochastic_rounding=True, seed=77)
        opt.add_param_group({"params": params[1:], "lr": 0.05})
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        for s in steps:
            for p, g in zip(params, grads[s]):
                p.grad = g.clone()
            opt.step()
        return params, opt

    params, opt = torch_run(range(4))
    assert opt.param_groups[1]["seed"] == 77 and opt.param_groups[1]["rounding_step"] == 4

    # The same numbers from the functional API: keys = the params' indices, step = the group's count.
    ws = [t.float().numpy().astype(np_dt) for t in init]
    bufs = [np.empty_like(w) for w in ws]
    for s in range(4):
        for i, w in enumerate(ws):
            minimalsgd.sgd_step([w], [grads[s][i].float().numpy().astype(np_dt)], [bufs[i]], lr=0.05, momentum=0.9,
                                first_step=s == 0, stochastic_rounding=True, seed=77, rounding_step=s,
                                rounding_keys=[i])
    for p, w in zip(params, ws):
        assert_same_bits(p.detach().float().numpy().astype(np_dt), w)

    # Resume through state_dict(): bit for bit.
    half_params, half_opt = torch_run(range(2))
    sd = half_opt.state_dict()
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in half_params]
    resumed, _ = torch_run(range(2, 4), params=resumed, opt_state=sd)
    for a, b in zip(resumed, params):
        assert torch.equal(a.detach().view(torch.int16), b.detach().view(torch.int16))


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_groups_and_missing_grads_keep_each_params_stream(dtype):
    """Keys hash the names: a param's bits do not depend on the other params, their groups, or
    which of them have grads; native and NumPy agree with several groups."""
    def run(groups_layout, backend, drop=()):
        rng = np.random.default_rng(0)
        vals = {k: rng.standard_normal(300).astype(dtype) for k in ("a", "b", "c")}
        grads = {k: (rng.standard_normal(300) * 1e-3).astype(dtype) for k in ("a", "b", "c")}
        params = {k: {"value": vals[k], "grad": None if k in drop else grads[k]} for k in vals}
        if groups_layout == "one":
            groups = params
        else:
            groups = [{"params": {"a": params["a"]}}, {"params": {"b": params["b"], "c": params["c"]}, "lr": 0.02}]
        opt = SGD(groups, lr=0.02, momentum=0.9, stochastic_rounding=True, seed=3, backend=backend)
        for _ in range(3):
            opt.step()
        return {k: p["value"] for k, p in params.items()}

    base = run("one", BACKENDS[-1])
    for layout in ("one", "two"):
        for backend in BACKENDS:
            got = run(layout, backend)
            for k in base:
                assert_same_bits(got[k], base[k])
    without_b = run("two", BACKENDS[-1], drop=("b",))
    assert_same_bits(without_b["a"], base["a"])
    assert_same_bits(without_b["c"], base["c"])
