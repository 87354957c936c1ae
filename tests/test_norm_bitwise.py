"""The global gradient norm is bit for bit the same in both backends, and so is every clipped step.

The NumPy backend adds the squares in the native kernel's order (sgd.hpp
``multi_tensor_sum_of_squares``): per tensor, blocks of 65536 elements; in a block 32 lanes
``acc[j] += x[32 r + j]^2`` row by row, the tail on lanes 0.., then the pairwise fold
``acc[j] += acc[j + w]`` for w = 16, 8, 4, 2, 1; block sums added in order; the float32 tensors'
total, then the float64 tensors'. ``_native_order`` below spells that order out in plain Python
(the reference for the NumPy backend, with or without the extension); the rest compares the
backends over every instruction-set target and 1 or 2 threads.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import minimalsgd
from minimalsgd import SGD, Adam
from minimalsgd import _functional as F
from minimalsgd import _half, _numpy

from oracle import oracle_norm

core = F._core
native = pytest.mark.skipif(core is None, reason="native extension not built")

ISAS = core.supported_isas() if core is not None else []
THREADS = (1, 2)
GRAINS = (16, 1 << 30)  # every call split over the threads / every call serial
# Empty, one element, tails around a row of 32 lanes, around a block, many tensors, and one long
# tensor (more full blocks than the NumPy backend sums side by side, then a partial block).
CASES = {
    "0": [0],
    "1": [1],
    "31": [31],
    "32": [32],
    "33": [33],
    "65535": [65535],
    "65536": [65536],
    "65537": [65537],
    "many": [0, 1, 31, 32, 33, 100, 65535, 65536, 65537, 3, 2 * 65536 + 31] + [33] * 40,
    "long": [17 * 65536 + 45],
}


def _grads(sizes, dtype, seed=5):
    rng = np.random.default_rng(seed)
    # Magnitudes spread over a few decades, so that the order of the additions shows in the bits.
    return [(rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, n)).astype(dtype) for n in sizes]


# The dtypes' totals in the order _core.sum_of_squares adds them (16-bit: after float64).
_NATIVE_ORDER_DTYPES = [np.dtype(np.float32), np.dtype(np.float64)] + [
    d for d in (_half.BFLOAT16, np.dtype(np.float16)) if d is not None]


def _native_order(grads) -> float:
    """The sum of squares in sgd.hpp's order, one float64 addition at a time (plain Python)."""

    def block(x):
        acc = [0.0] * 32
        body = len(x) - len(x) % 32
        for i, v in enumerate(x[:body]):
            acc[i % 32] += v * v
        for i, v in enumerate(x[body:]):
            acc[i] += v * v
        w = 16
        while w:
            for j in range(w):
                acc[j] += acc[j + w]
            w //= 2
        return acc[0]

    def dtype_total(gs):
        s = 0.0
        for g in gs:
            flat = g.reshape(-1).astype(np.float64).tolist()
            for i in range(0, len(flat), 65536):
                s += block(flat[i : i + 65536])
        return s

    total = 0.0
    for dt in _NATIVE_ORDER_DTYPES:
        gs = [g for g in grads if g.dtype == dt]
        if gs:
            total += dtype_total(gs)
    return total


@pytest.fixture
def settings():
    saved = core.get_isa(), core.get_num_threads_setting(), core.get_grain()

    def apply(isa, threads, grain):
        core.set_isa(isa)
        core.set_num_threads(threads)
        core.set_grain(grain)

    yield apply
    core.set_isa(saved[0])
    core.set_num_threads(saved[1])
    core.set_grain(saved[2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "mixed"])
@pytest.mark.parametrize("sizes", [[0], [1], [31], [32], [33], [65535], [65536], [65537],
                                   [5, 65537, 0, 40, 32], [17 * 65536 + 45],
                                   list(range(70)) + [1000, 1025, 16385, 16417, 40000, 3]], ids=lambda s: str(s)[:40])
def test_numpy_sum_of_squares_is_the_native_order(sizes, dtype):
    if dtype == "mixed":
        grads = [g.astype(np.float32) if i % 2 else g for i, g in enumerate(_grads(sizes, np.float64))]
    else:
        grads = _grads(sizes, dtype)
    got = _numpy.sum_of_squares(grads)
    assert got == _native_order(grads)
    assert got == pytest.approx(oracle_norm(grads) ** 2, rel=1e-12, abs=0)


@native
@pytest.mark.parametrize("isa,threads,grain", list(itertools.product(ISAS, THREADS, GRAINS)))
def test_global_grad_norm_bitwise(settings, isa, threads, grain):
    settings(isa, threads, grain)
    for (name, sizes), dtype in itertools.product(CASES.items(), (np.float32, np.float64)):
        grads = _grads(sizes, dtype)
        a = minimalsgd.global_grad_norm(grads, backend="native")
        b = minimalsgd.global_grad_norm(grads, backend="numpy")
        assert a == b, (name, dtype)
        assert a == pytest.approx(oracle_norm(grads), rel=1e-12, abs=0)
    # Both dtypes in one call, interleaved: the float32 total, then the float64 total.
    grads = [g.astype(np.float32) if i % 3 == 0 else g for i, g in enumerate(_grads(CASES["many"], np.float64))]
    assert minimalsgd.global_grad_norm(grads, backend="native") == minimalsgd.global_grad_norm(grads, backend="numpy")


def _params(sizes, dtype):
    rng = np.random.default_rng(11)
    return {f"p{i}": {"value": rng.standard_normal(n).astype(dtype), "grad": None} for i, n in enumerate(sizes)}


@native
@pytest.mark.parametrize("isa,threads", list(itertools.product(ISAS, THREADS)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", [SGD, Adam])
def test_clipped_steps_bitwise(settings, isa, threads, dtype, cls):
    settings(isa, threads, 16)
    for name in ("1", "33", "65537", "many"):
        sizes = CASES[name]
        clip = 0.5 * min(oracle_norm(_grads(sizes, dtype, seed=100 + t)) for t in range(3))
        runs = []
        for backend in ("native", "numpy"):
            p = _params(sizes, dtype)
            kw = {"momentum": 0.9} if cls is SGD else {}
            opt = cls(p, lr=0.01, clip_grad_norm=clip, backend=backend, **kw)
            norms = []
            for t in range(3):
                for k, g in zip(p, _grads(sizes, dtype, seed=100 + t)):
                    p[k]["grad"] = g
                opt.step()
                norms.append(opt.last_grad_norm)
            runs.append((p, norms))
        (pa, na), (pb, nb) = runs
        assert na == nb, (name, na, nb)
        assert all(n > clip > 0 for n in na), "the steps must clip"
        for k in pa:
            assert pa[k]["value"].tobytes() == pb[k]["value"].tobytes(), (name, k)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.float16])
def test_other_dtypes_follow_the_oracle(dtype):
    rng = np.random.default_rng(2)
    grads = []
    for n in (0, 1, 33, 65537, 70000):
        g = rng.standard_normal(n)
        if np.dtype(dtype).kind == "c":
            g = g + 1j * rng.standard_normal(n)
        grads.append(g.astype(dtype))
    got = minimalsgd.global_grad_norm(grads, backend="numpy")
    assert got == pytest.approx(oracle_norm(grads), rel=1e-12, abs=0)


@pytest.mark.parametrize("sizes", [[1], [33], [65537], [5, 65537, 0, 40, 32]], ids=str)
def test_16bit_sum_of_squares_is_the_native_order(sizes):
    """bfloat16 and float16 grads: their own totals after float64's, in the same blocks and lanes
    (the values converted exactly); the NumPy backend in that order, and the native kernels too."""
    halves = [d for d in (_half.BFLOAT16, np.dtype(np.float16)) if d is not None]
    grads = []
    for k, dt in enumerate([np.float32, np.float64, *halves]):
        grads += [g.astype(dt) for g in _grads(sizes, np.float64, seed=k)]
    grads = grads[1::2] + grads[0::2]  # dtypes interleaved
    got = _numpy.sum_of_squares(grads)
    assert got == _native_order(grads)
    if core is not None:
        saved = core.get_isa()
        try:
            for isa in ISAS:
                core.set_isa(isa)
                assert core.sum_of_squares(grads) == got, isa
        finally:
            core.set_isa(saved)
