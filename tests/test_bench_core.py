"""minimalsgd._bench_core, the bench's own extension: the yardstick loops and the bare kernel call
live there, not in the product module, and the bare call runs _core's kernels (through the
capsule of its kernel table) with _core's instruction set."""

from __future__ import annotations

import numpy as np
import pytest

import minimalsgd
from minimalsgd import _functional as F

core = F._core
pytestmark = pytest.mark.skipif(core is None, reason="needs the native extension")


def _arrays(n: int, dtype, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(n).astype(dtype) for _ in range(3))  # type: ignore[return-value]


def test_bench_loops_are_not_in_the_product_module():
    from minimalsgd import _bench_core

    assert hasattr(_bench_core, "_time_calls")
    assert not hasattr(core, "_time_calls")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bare_step_is_the_product_kernel_on_every_isa(dtype):
    """One timed 'step' call changes w and v exactly as the functional step does (lr 0.01,
    momentum 0.9, Nesterov, weight decay 1e-4, not a first step), on each instruction set."""
    from minimalsgd import _bench_core

    saved = core.get_isa()
    try:
        for isa in core.supported_isas():
            core.set_isa(isa)
            w, g, v = _arrays(1000, dtype)
            w2, g2, v2 = w.copy(), g.copy(), v.copy()
            _bench_core._time_calls("step", w, g, v, 1, 1, threads=1)
            minimalsgd.sgd_step([w2], [g2], [v2], lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4,
                                first_step=False)
            np.testing.assert_array_equal(w, w2, err_msg=isa)
            np.testing.assert_array_equal(v, v2, err_msg=isa)
            np.testing.assert_array_equal(g, g2, err_msg=isa)
    finally:
        core.set_isa(saved)


def test_stream_yardstick_computes_its_loop():
    """The yardstick is the plain loop v = 0.9 v + g; w = w - 0.01 v (rounded as NumPy does)."""
    from minimalsgd import _bench_core

    w, g, v = _arrays(5000, np.float32)
    t = np.float32
    want_v = t(0.9) * v + g
    want_w = w - t(0.01) * want_v
    _bench_core._time_calls("stream", w, g, v, 1, 1, threads=1)
    np.testing.assert_array_equal(v, want_v)
    np.testing.assert_array_equal(w, want_w)


def test_bad_kinds_are_refused_before_anything_runs():
    from minimalsgd import _bench_core

    w, g, v = _arrays(16, np.float32)
    before = [x.copy() for x in (w, g, v)]
    with pytest.raises(ValueError, match="kind must be"):
        _bench_core._time_calls("nope", w, g, v, 1, 1)
    with pytest.raises(ValueError, match="needs m"):
        _bench_core._time_calls("adam_stream", w, g, v, 1, 1)
    h = [x.astype(np.float16) for x in (w, g, v)]
    with pytest.raises(ValueError, match="float32/float64"):
        _bench_core._time_calls("read", *h, 1, 1)
    with pytest.raises(ValueError, match="reps and inner"):
        _bench_core._time_calls("stream", w, g, v, 0, 1)
    for x, y in zip((w, g, v), before):
        np.testing.assert_array_equal(x, y)
