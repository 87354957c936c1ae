"""The functional Adam/AdamW step: native kernel, NumPy backend and the float64 oracle.

Native and NumPy backends run adam.hpp's operations in the same order in the array's dtype (the
native module is built without fused multiply-add), so they agree bit for bit, on every
instruction set, thread count and grain. Against the float64 oracle (``oracle.oracle_adam``, the
textbook formula, in another order of operations) the bound is a few ulps of the operands of each
step (``_adam_bounds``), the oracle restarted from the tested state every step: float64 at float64
rounding, float32 at float32 rounding.
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

import minimalsgd
from minimalsgd import _functional as F

from oracle import oracle_adam, tolerance

core = F._core
needs_core = pytest.mark.skipif(core is None, reason="native extension not built")

DTYPES = [np.float32, np.float64]
OPTIONS = [
    dict(betas=(b1, 0.99), weight_decay=wd, decoupled=dec, amsgrad=ams, maximize=mx)
    for b1, wd, dec, ams, mx in itertools.product([0.9, 0.3], [0.0, 0.05], [False, True], [False, True], [False, True])
    if not (wd == 0 and dec)
]
GRAIN = core.get_grain() if core is not None else 32768
SIZES = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, GRAIN - 1, GRAIN + 1, 70_001]


def _opt_id(o):
    return "-".join(f"{k[:4]}{v if not isinstance(v, bool) else int(v)}" for k, v in o.items())


def _state(w):
    return [np.zeros_like(w) for _ in range(3)]


def _adam_bounds(dtype, before, g, want, *, lr, eps, step, betas=(0.9, 0.999), weight_decay=0.0, decoupled=False,
                 grad_scale=1.0, **_):
    """Elementwise bounds on |w - w_oracle|, |m - m_oracle|, |v - v_oracle| of one step from the
    state ``before`` = (w, m, v, vmax) (float64 copies): a few ulps of each quantity's operands.

    The effective gradient (scaled, maybe plus wd*w) carries an absolute rounding error of a few
    ulps of its operands' magnitude, gmag; near a cancellation that error is large relative to the
    gradient itself, and the step m_hat / (sqrt(v_hat) + eps) passes it on divided by about
    sqrt(v_hat) + eps: the conditioning term of the w bound. |w step| is about lr."""
    gmag = np.abs(abs(float(grad_scale)) * g.astype(np.float64))
    if weight_decay and not decoupled:
        gmag = gmag + weight_decay * np.abs(before[0])
    bc2 = 1 - betas[1] ** step
    v_hat = want[3] if want[3] is not None else want[2]
    step_cond = lr * gmag / (np.sqrt(v_hat / bc2) + eps)
    # 16-bit arrays compute in float32 and round each stored result once to their own type.
    compute = np.float32 if np.dtype(dtype).itemsize == 2 else dtype
    stored = (lambda a: tolerance(dtype, a, ops=1)) if compute != dtype else (lambda a: 0.0)
    w_bound = tolerance(compute, want[0], lr, step_cond, ops=4) + stored(want[0])
    m_bound = tolerance(compute, want[1], gmag, ops=2) + stored(want[1])
    v_bound = tolerance(compute, want[2], gmag * gmag, ops=2) + stored(want[2])
    return w_bound, m_bound, v_bound


def _assert_close_to_oracle(dtype, got, before, g, want, what, **kw):
    w_bound, m_bound, v_bound = _adam_bounds(dtype, before, g, want, **kw)
    for a, b, bound, name in zip(got[:3], want[:3], (w_bound, m_bound, v_bound), "wmv"):
        assert np.all(np.abs(a.astype(np.float64) - b) <= bound), f"{name} {what}"


@needs_core
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opts", OPTIONS, ids=_opt_id)
def test_native_numpy_oracle_over_sizes(dtype, opts):
    # A seed of its own per case, the same in every run (hash() of a str varies per process).
    rng = np.random.default_rng(zlib.crc32(f"{np.dtype(dtype).name}-{_opt_id(opts)}".encode()))
    for n in SIZES:
        w0 = rng.standard_normal(n).astype(dtype)
        nat = [w0.copy(), *_state(w0)]
        npy = [w0.copy(), *_state(w0)]
        for t in range(1, 4):
            g = rng.standard_normal(n).astype(dtype)
            kw = dict(lr=0.01, eps=1e-6, step=t, grad_scale=0.75, **opts)
            before = [a.astype(np.float64) for a in nat]
            minimalsgd.adam_step(nat[0], g, nat[1], nat[2], nat[3], backend="native", **kw)
            minimalsgd.adam_step(npy[0], g, npy[1], npy[2], npy[3], backend="numpy", **kw)
            for a, b, what in zip(nat, npy, ("w", "m", "v", "vmax")):
                np.testing.assert_array_equal(a, b, err_msg=f"{what} n={n} t={t}")
            # The oracle, from the tested state of this step (errors do not compound).
            okw = dict(step=t, lr=0.01, eps=1e-6, grad_scale=float(dtype(0.75)), **opts)
            want = oracle_adam(*before[:1], g, *before[1:], **okw)
            _assert_close_to_oracle(dtype, nat, before, g, want, f"n={n} t={t}", **okw)
            if opts["amsgrad"]:
                np.testing.assert_array_equal(nat[3], np.maximum(before[3], nat[2]))
            else:
                assert not nat[3].any()  # never touched


@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_bias_correction_and_decay_against_textbook_values(backend):
    if backend == "native" and core is None:
        pytest.skip("native extension not built")
    # First step from zero moments: m_hat = g, v_hat = g^2: w moves by lr * g / (|g| + eps).
    w = np.array([1.0, -2.0, 3.0])
    g = np.array([0.25, -4.0, 1e-3])
    m, v = np.zeros(3), np.zeros(3)
    minimalsgd.adam_step(w, g, m, v, lr=0.5, eps=0.0, weight_decay=0.1, decoupled=True, step=1, backend=backend)
    # float64 at float64 rounding: a few ulps of each result (its terms are of its own size).
    f64 = lambda got, want: np.all(np.abs(got - want) <= tolerance(np.float64, want, ops=4))  # noqa: E731
    assert f64(w, [0.95 - 0.5, -1.9 + 0.5, 2.85 - 0.5])
    assert f64(m, 0.1 * g)
    assert f64(v, 0.001 * g * g)
    # Adam (coupled): weight decay enters the gradient, hence the moments; eps (1e-8) shows in w.
    w = np.array([2.0])
    m, v = np.zeros(1), np.zeros(1)
    minimalsgd.adam_step(w, np.array([0.0]), m, v, lr=0.1, weight_decay=0.5, step=1, backend=backend)
    assert f64(m, [0.1 * 0.5 * 2.0])
    assert f64(w, [2.0 - 0.1 / (1.0 + 1e-8)])


@needs_core
@pytest.mark.parametrize("dtype", DTYPES)
def test_long_trajectory_stays_with_the_oracle(dtype):
    rng = np.random.default_rng(5)
    n = 3000
    w = rng.standard_normal(n).astype(dtype)
    m, v, vm = _state(w)
    opts = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, decoupled=True, amsgrad=True)
    for t in range(1, 101):
        g = rng.standard_normal(n).astype(dtype)
        before = [a.astype(np.float64) for a in (w, m, v, vm)]
        minimalsgd.adam_step(w, g, m, v, vm, step=t, **opts)
        # Every step against the oracle from the tested state: the bias corrections up to t = 100
        # and the AMSGrad maximum over a long run, each step at the rounding of its dtype.
        want = oracle_adam(before[0], g, *before[1:], step=t, **opts)
        _assert_close_to_oracle(dtype, (w, m, v), before, g, want, f"t={t}", step=t, **opts)
        np.testing.assert_array_equal(vm, np.maximum(before[3], v))


@needs_core
def test_per_tensor_steps_many_tensors_every_isa_thread_and_grain():
    """One call over many tensors, each at its own step, equals the NumPy backend bit for bit on
    every instruction set, with chunks crossing tensor borders (tiny grain) or none."""
    rng = np.random.default_rng(9)
    sizes = [1, 7, 16, 17, 63, 65, 1000, 4099, 40_000] + [33] * 30
    saved = core.get_isa(), core.get_num_threads_setting(), core.get_grain()
    try:
        for dtype, (isa, threads, grain) in itertools.product(
            DTYPES, itertools.product(core.supported_isas(), (1, 2), (16, 1 << 30))
        ):
            core.set_isa(isa)
            core.set_num_threads(threads)
            core.set_grain(grain)
            ws = [rng.standard_normal(n).astype(dtype) for n in sizes]
            gs = [rng.standard_normal(n).astype(dtype) for n in sizes]
            steps = [1 + i % 5 for i in range(len(sizes))]
            runs = []
            for backend in ("native", "numpy"):
                arrays = [[w.copy() for w in ws]] + [[np.zeros_like(w) for w in ws] for _ in range(3)]
                for extra in range(2):
                    minimalsgd.adam_step(arrays[0], gs, *arrays[1:], lr=0.003, betas=(0.8, 0.95), weight_decay=0.02, amsgrad=True,
                                         maximize=True, step=[s + extra for s in steps], grad_scale=0.5,
                                         backend=backend)
                runs.append(arrays)
            for a, b in zip(itertools.chain(*runs[0]), itertools.chain(*runs[1])):
                np.testing.assert_array_equal(a, b, err_msg=f"{isa} threads={threads} grain={grain}")
    finally:
        core.set_isa(saved[0])
        core.set_num_threads(saved[1])
        core.set_grain(saved[2])


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: a[::-1], id="negative-stride"),
        pytest.param(lambda a: a.reshape(6, 5)[:, ::2], id="strided-2d"),
        pytest.param(lambda a: a.astype(a.dtype.newbyteorder()), id="byteswapped"),
        pytest.param(lambda a: a.astype(np.float16), id="float16"),
        pytest.param(lambda a: (a + 0.5j * a[::-1]).astype(np.complex128), id="complex128"),
        pytest.param(lambda a: a.reshape(5, 6).T, id="fortran"),
    ],
)
def test_any_numpy_array_gets_the_update(make):
    """Layouts and dtypes the native kernel cannot walk go to NumPy under 'auto': right values."""
    rng = np.random.default_rng(2)
    base = rng.standard_normal(30)
    w = make(base.copy())
    g = make(rng.standard_normal(30))
    m, v = np.zeros_like(w), np.zeros_like(w)
    want = oracle_adam(w, g, m, v, None, step=1, lr=0.1, weight_decay=0.1)
    w_id = id(w)
    before = (w.copy(), m.copy(), v.copy(), None)
    minimalsgd.adam_step(w, g, m, v, lr=0.1, weight_decay=0.1, step=1)
    assert id(w) == w_id
    # At the rounding of the array's dtype (float16: float32 arithmetic rounded once to float16);
    # complex: the real and imaginary parts as independent reals.
    parts = (np.real, np.imag) if np.iscomplexobj(w) else (np.real,)
    real = np.float64 if w.dtype.kind == "c" else w.dtype
    for part in parts:
        pick = lambda arrays: tuple(None if a is None else np.asarray(part(a), np.float64) for a in arrays)  # noqa: E731
        _assert_close_to_oracle(real, pick((w, m, v)), pick(before), np.asarray(part(g), np.float64), pick(want),
                                part.__name__, lr=0.1, eps=1e-8, step=1, weight_decay=0.1)


@needs_core
def test_native_backend_refuses_what_it_cannot_walk_and_writes_nothing():
    w = np.ones(10)[::2]
    g, m, v = np.ones(5), np.zeros(5), np.zeros(5)
    ok_w = np.ones(5)
    with pytest.raises(ValueError, match=r"values\[1\].*native"):
        minimalsgd.adam_step([ok_w, w], [g, g.copy()], [m, m.copy()], [v, v.copy()], lr=0.1, step=1, backend="native")
    assert (ok_w == 1).all() and (w == 1).all() and not (m.any() or v.any())


def _bad_calls():
    w = np.ones(4, np.float32)
    g, m, v = np.full(4, 0.5, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32)
    shared = np.zeros(12, np.float32)
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    c = lambda: [a.copy() for a in (w, g, m, v)]  # noqa: E731
    return [
        ("negative lr", c(), dict(lr=-0.1), ValueError, r"lr must be >= 0"),
        ("nan lr", c(), dict(lr=float("nan")), ValueError, r"lr must be finite"),
        ("inf lr", c(), dict(lr=float("inf")), ValueError, r"lr must be finite"),
        ("beta1 = 1", c(), dict(betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be in \[0, 1\)"),
        ("beta2 > 1", c(), dict(betas=(0.9, 1.5)), ValueError, r"betas\[1\] must be in \[0, 1\)"),
        ("negative beta", c(), dict(betas=(-0.1, 0.999)), ValueError, r"betas\[0\] must be >= 0"),
        ("nan beta", c(), dict(betas=(0.9, float("nan"))), ValueError, r"betas\[1\] must be finite"),
        ("betas not a pair", c(), dict(betas=(0.9,)), TypeError, r"betas must be a pair"),
        ("betas a string", c(), dict(betas="ab"), TypeError, r"betas must be a pair"),
        ("negative eps", c(), dict(eps=-1e-8), ValueError, r"eps must be >= 0"),
        ("inf eps", c(), dict(eps=float("inf")), ValueError, r"eps must be finite"),
        ("negative weight decay", c(), dict(weight_decay=-0.01), ValueError, r"weight_decay must be >= 0"),
        ("nan weight decay", c(), dict(weight_decay=float("nan")), ValueError, r"weight_decay must be finite"),
        ("string lr", c(), dict(lr="0.1"), TypeError, r"lr must be a real number"),
        ("amsgrad not bool", c(), dict(amsgrad=1), TypeError, r"amsgrad must be a bool"),
        ("step 0", c(), dict(step=0), ValueError, r"step must be >= 1"),
        ("step float", c(), dict(step=1.0), TypeError, r"step must be an int"),
        ("step bool", c(), dict(step=True), TypeError, r"step must be an int"),
        ("steps count", c(), dict(step=[1, 2]), ValueError, r"step has 2 counts for 1"),
        ("negative grad scale", c(), dict(grad_scale=-1.0), ValueError, r"grad_scale must be >= 0"),
        ("amsgrad without max", c(), dict(amsgrad=True), ValueError, r"amsgrad needs max_exp_avg_sqs"),
        ("backend", c(), dict(backend="gpu"), ValueError, r"backend must be one of"),
        ("moment shape", [w.copy(), g, np.zeros(3, np.float32), v.copy()], {}, ValueError, r"exp_avg shape"),
        ("moment dtype", [w.copy(), g, m.copy(), np.zeros(4)], {}, TypeError, r"exp_avg_sq dtype"),
        ("read-only moment", [w.copy(), g, ro, v.copy()], {}, ValueError, r"exp_avg is read-only"),
        ("moment not an array", [w.copy(), g, [0.0] * 4, v.copy()], {}, TypeError, r"exp_avg must be a numpy"),
        ("moment is value", [shared[:4], g, shared[:4], v.copy()], {}, ValueError, r"shares memory"),
        ("moments overlap", [w.copy(), g, shared[:4], shared[2:6]], {}, ValueError, r"shares memory"),
        ("grad is moment", [w.copy(), shared[4:8], shared[4:8], v.copy()], {}, ValueError, r"shares memory"),
    ]


@pytest.mark.parametrize("backend", ["auto", "native", "numpy"])
@pytest.mark.parametrize("case", _bad_calls(), ids=lambda c: c[0] if isinstance(c, tuple) else str(c))
def test_bad_input_names_the_problem_and_writes_nothing(case, backend):
    if backend == "native" and core is None:
        pytest.skip("native extension not built")
    label, arrays, kw, exc, pattern = case
    arrays = list(arrays)
    snap = [a.copy() if isinstance(a, np.ndarray) else None for a in arrays]
    kwargs = dict(lr=0.1, step=1, backend=backend)
    kwargs.update(kw)
    with pytest.raises(exc, match=pattern):
        minimalsgd.adam_step([arrays[0]], [arrays[1]], [arrays[2]], [arrays[3]], **kwargs)
    for a, s in zip(arrays, snap):
        if s is not None:
            np.testing.assert_array_equal(a, s)


@needs_core
def test_core_binding_checks_on_its_own():
    """The bindings are the last line: they refuse bad options, steps and buffers by themselves."""
    w, g, m, v = (np.zeros(4, np.float32) for _ in range(4))
    base = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
                decoupled=False, grad_scale=1.0)
    with pytest.raises(ValueError, match="betas"):
        core.adam_step([w], [g], [m], [v], None, 1, **{**base, "beta1": 1.0})
    with pytest.raises(ValueError, match="step"):
        core.adam_step([w], [g], [m], [v], None, [0], **base)
    with pytest.raises(ValueError, match="grad_scale"):
        core.adam_step([w], [g], [m], [v], None, 1, **{**base, "grad_scale": float("nan")})
    with pytest.raises(ValueError, match="max_exp_avg_sqs"):
        core.adam_step([w], [g], [m], [v], None, 1, **{**base, "amsgrad": True})
    with pytest.raises(ValueError, match="share memory"):
        core.adam_step([w], [g], [m], [m], None, 1, **base)
    with pytest.raises(ValueError, match=r"exp_avgs\[0\] must have the dtype"):
        core.adam_step([w], [g], [np.zeros(4)], [v], None, 1, **base)
    assert not (w.any() or g.any() or m.any() or v.any())
    # The raw-address entry writes nothing and says so on invalid options or overlapping buffers.
    ptr = lambda a: a.__array_interface__["data"][0]  # noqa: E731
    args = ([0], [ptr(w)], [ptr(g)], [ptr(m)], [ptr(m)], None, [4], [1])
    assert core.adam_step_ptrs(*args, 0.1, 0.9, 0.999, 1e-8, 0.0, False, False, False, 1.0) is False
    args = ([0], [ptr(w)], [ptr(g)], [ptr(m)], [ptr(v)], None, [4], [0])
    assert core.adam_step_ptrs(*args, 0.1, 0.9, 0.999, 1e-8, 0.0, False, False, False, 1.0) is False
    g[:] = 1
    args = ([0], [ptr(w)], [ptr(g)], [ptr(m)], [ptr(v)], None, [4], [1])
    assert core.adam_step_ptrs(*args, 0.1, 0.9, 0.999, 1e-8, 0.0, False, False, False, 1.0) is True
    ref = [np.zeros(4, np.float32) for _ in range(3)]
    minimalsgd.adam_step(ref[0], g, ref[1], ref[2], lr=0.1, step=1, backend="numpy")
    np.testing.assert_array_equal(w, ref[0])
