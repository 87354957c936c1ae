"""The functional fast path (_core.try_sgd_step, a plain CPython function with per-thread scratch):
argument checking, nothing written when it declines, and the same bits from many threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import minimalsgd
from minimalsgd import _functional as F

core = F._core
pytestmark = pytest.mark.skipif(core is None, reason="native extension not built")


def test_wrong_argument_count_is_a_type_error():
    with pytest.raises(TypeError, match="11 or 15 positional arguments"):
        core.try_sgd_step([], [], None)


def test_declines_without_writing():
    w = np.ones(8, np.float32)
    g = np.ones(8, np.float32)
    v = np.zeros(8, np.float32)
    before = (w.copy(), v.copy())
    # A bad lr type, a strided value, a read-only buffer, a length mismatch: all declined.
    assert core.try_sgd_step([w], [g], [v], False, "0.1", 0.9, 0.0, 0.0, False, False, 1.0) is False
    assert core.try_sgd_step([np.ones(16, np.float32)[::2]], [g], [v], False, 0.1, 0.9, 0.0, 0.0, False, False, 1.0) is False
    ro = np.zeros(8, np.float32)
    ro.flags.writeable = False
    assert core.try_sgd_step([w], [g], [ro], False, 0.1, 0.9, 0.0, 0.0, False, False, 1.0) is False
    assert core.try_sgd_step([w, w], [g], [v], False, 0.1, 0.9, 0.0, 0.0, False, False, 1.0) is False
    np.testing.assert_array_equal(w, before[0])
    np.testing.assert_array_equal(v, before[1])
    assert core.try_sgd_step([w], [g], [v], True, 0.1, 0.9, 0.0, 0.0, False, False, 1.0) is True
    np.testing.assert_array_equal(w, np.float32(1) - np.float32(0.1))


def test_same_bits_from_many_threads():
    rng = np.random.default_rng(0)
    sizes = [1, 7, 4096, 70_000]
    grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]

    def run(out: list) -> None:
        ws = [np.linspace(-1, 1, n, dtype=np.float32) for n in sizes]
        vs = [np.empty_like(w) for w in ws]
        for step in range(50):
            for w, g, v in zip(ws, grads, vs):  # one tensor per call: the per-thread scratch is reused
                minimalsgd.sgd_step(w, g, v, lr=0.01, momentum=0.9, nesterov=True, first_step=step == 0)
        out.append([w.tobytes() for w in ws])

    ref: list = []
    run(ref)
    outs: list = []
    threads = [threading.Thread(target=run, args=(outs,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outs) == 4 and all(o == ref[0] for o in outs)
