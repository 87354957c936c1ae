"""Kernel dispatch: every instruction-set target, thread count and grain gives the same bits.

Each target is forced in turn (``_core.set_isa`` in process, ``MINIMALSGD_ISA`` in a fresh
interpreter), with 1 and 2 threads and a grain that makes even tiny calls split over the threads
(chunks spanning tensors) or keeps everything serial. Every path into the kernels is covered: the
functional fast path (``_core.try_sgd_step``), the checked ``_core.sgd_step``, and ``SGD.step()``
through its cached plan (with the clip norm pass). The reference is the NumPy backend, which runs
the same operations in the same order, so the comparison is bitwise; it is itself checked against
the float64 oracle in test_oracle_parity.py.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import minimalsgd
from minimalsgd import SGD
from minimalsgd import _functional as F

core = F._core
pytestmark = pytest.mark.skipif(core is None, reason="native extension not built")

ISAS = core.supported_isas() if core is not None else []
THREADS = (1, 2)
GRAINS = (16, 1 << 30)  # every call threaded (chunks cross tensor borders) / every call serial
SETTINGS = list(itertools.product(ISAS, THREADS, GRAINS))
# Tails of every vector width, a tensor longer than a thread's chunk, and many small ones.
SIZES = [1, 7, 16, 17, 63, 65, 1000, 4099, 40_000] + [33] * 40


def _ids(s):
    return f"{s[0]}-t{s[1]}-grain{s[2]}"


@pytest.fixture
def settings():
    saved = core.get_isa(), core.get_num_threads_setting(), core.get_grain()

    def apply(isa, threads, grain):
        core.set_isa(isa)
        core.set_num_threads(threads)
        core.set_grain(grain)
        assert (core.get_isa(), core.get_num_threads_setting(), core.get_grain()) == (isa, threads, grain)
        if threads:
            assert core.get_num_threads() == threads

    yield apply
    core.set_isa(saved[0])
    core.set_num_threads(saved[1])
    core.set_grain(saved[2])


def _arrays(dtype, seed=3):
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    gs = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    return ws, gs


def _functional_run(dtype, fast: bool):
    ws, gs = _arrays(dtype)
    vs = [np.empty_like(w) for w in ws]
    kw = dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01, maximize=True, grad_scale=0.75)
    for step in range(3):
        if fast:
            assert core.try_sgd_step(ws, gs, vs, step == 0, kw["lr"], kw["momentum"], kw["dampening"],
                                     kw["weight_decay"], False, True, kw["grad_scale"])
        else:
            core.sgd_step(ws, gs, vs, step == 0, kw["lr"], kw["momentum"], kw["dampening"], kw["weight_decay"],
                          False, True, kw["grad_scale"])
    return ws, vs


def _reference_functional(dtype):
    ws, gs = _arrays(dtype)
    vs = [np.empty_like(w) for w in ws]
    for step in range(3):
        minimalsgd.sgd_step(ws, gs, vs, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01, maximize=True,
                            grad_scale=0.75, first_step=step == 0, backend="numpy")
    return ws, vs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("setting", SETTINGS, ids=_ids)
def test_functional_paths_give_numpys_bits(dtype, setting, settings):
    settings(*setting)
    ref_w, ref_v = _reference_functional(dtype)
    for fast in (True, False):
        ws, vs = _functional_run(dtype, fast)
        for a, b in zip(ws + vs, ref_w + ref_v):
            np.testing.assert_array_equal(a, b)


def _params(seed=5):
    """float32 and float64 params in one optimizer (two kernel calls in one step)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, n in enumerate(SIZES):
        dtype = np.float64 if i % 3 == 0 else np.float32
        out[f"p{i}"] = {"value": rng.standard_normal(n).astype(dtype), "grad": rng.standard_normal(n).astype(dtype)}
    return out


def _run_sgd(backend, steps=4, clip=1e9):
    """Steps with the norm pass on (clip_grad_norm set); the default bound never clips."""
    p = _params()
    opt = SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, clip_grad_norm=clip, backend=backend)
    rng = np.random.default_rng(9)
    norms = []
    for _ in range(steps):
        assert opt.step()
        norms.append(opt.last_grad_norm)
        for q in p.values():  # new gradients in place: the plan stays valid
            q["grad"][...] = rng.standard_normal(q["grad"].shape)
    return p, opt, norms


@pytest.mark.parametrize("setting", SETTINGS, ids=_ids)
def test_sgd_step_plan_gives_numpys_bits(setting, settings):
    settings(*setting)
    p, opt, norms = _run_sgd("auto")
    assert opt._plan is not None  # the cached native plan served the later steps
    q, ref, ref_norms = _run_sgd("numpy")
    for k in p:
        np.testing.assert_array_equal(p[k]["value"], q[k]["value"])
        np.testing.assert_array_equal(opt.state[k]["momentum_buffer"], ref.state[k]["momentum_buffer"])
        assert opt.state[k]["step"] == ref.state[k]["step"] == 4
    # The norm pass: the NumPy backend adds the squares in the kernel's order (test_norm_bitwise.py),
    # so the norms are the same doubles.
    assert norms == ref_norms


def test_norm_and_clipped_steps_are_the_same_bits_for_every_setting(settings):
    """The norm is summed in fixed blocks in a fixed order: the same double, so the same clip
    scale and the same clipped values, on every target and thread count."""
    _, gs = _arrays(np.float32)
    norms, values = set(), set()
    for setting in SETTINGS:
        settings(*setting)
        norms.add(minimalsgd.global_grad_norm(gs, backend="native"))
        p, _, step_norms = _run_sgd("auto", steps=3, clip=5.0)
        assert min(step_norms) > 5.0  # clipping was active
        norms.add(tuple(step_norms))
        values.add(b"".join(q["value"].tobytes() for q in p.values()))
    assert len(norms) == 2 and len(values) == 1


def test_threadpoolctl_limit_reaches_the_plan(settings):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    settings(ISAS[-1], 0, 16)  # 0: no explicit count, so OpenMP's (threadpoolctl's) setting rules
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert minimalsgd.get_num_threads() == 1
        p, _, _ = _run_sgd("auto")
    q, _, _ = _run_sgd("numpy")
    for k in p:
        np.testing.assert_array_equal(p[k]["value"], q[k]["value"])


_CHILD = r"""
import json, sys, hashlib, numpy as np, minimalsgd
from minimalsgd import _core
rng = np.random.default_rng(1)
p = {f"p{i}": {"value": rng.standard_normal(n).astype(np.float32), "grad": rng.standard_normal(n).astype(np.float32)}
     for i, n in enumerate([3, 17, 1000, 70_001])}
opt = minimalsgd.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, clip_grad_norm=1.0)
for _ in range(3):
    opt.step()
h = hashlib.sha256(b"".join(q["value"].tobytes() for q in p.values())).hexdigest()
print(json.dumps({"isa": _core.get_isa(), "info": minimalsgd.backend_info()["isa"],
                  "backend": minimalsgd.backend_info()["backend"], "hash": h}))
"""


def _child(isa_env):
    env = {k: v for k, v in os.environ.items() if k not in ("MINIMALSGD_ISA", "MINIMALSGD_BACKEND")}
    if isa_env is not None:
        env["MINIMALSGD_ISA"] = isa_env
    r = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def test_env_var_forces_each_target_with_the_same_bits(record_isa):
    default, _ = _child(None)
    assert default["isa"] == ISAS[-1]  # the best the CPU supports
    hashes = {}
    for isa in ISAS:
        out, err = _child(isa.upper() if isa == "avx2" else isa)  # case does not matter
        assert out["isa"] == out["info"] == isa and out["backend"] == "native", (isa, out)
        assert "Warning" not in err
        record_isa(out["isa"])
        hashes[isa] = out["hash"]
    assert set(hashes.values()) == {default["hash"]}


def test_bad_env_var_warns_and_keeps_the_native_kernels():
    out, err = _child("sse9")
    assert "RuntimeWarning" in err and "MINIMALSGD_ISA" in err and "sse9" in err
    assert out["backend"] == "native" and out["isa"] == ISAS[-1]


# ---------------------------------------------------------------------------------------------
# The plan finds "value" and "grad" through remembered dict slots: whatever the dict does in
# between, it must see what a plain lookup sees.


def _slot_pair():
    a = {f"p{i}": {"value": np.full(8, float(i), np.float32), "grad": np.full(8, 0.5, np.float32)} for i in range(3)}
    b = {k: {"value": v["value"].copy(), "grad": v["grad"].copy()} for k, v in a.items()}
    return (a, SGD(a, lr=0.1, momentum=0.9)), (b, SGD(b, lr=0.1, momentum=0.9, backend="numpy"))


SLOT_CHANGES = {
    # the grad key removed and put back: it moves to another slot
    "grad re-inserted": lambda q: q.__setitem__("grad", q.pop("grad") * 2),
    "value re-inserted same array": lambda q: q.__setitem__("value", q.pop("value")),
    "keys built at run time": lambda q: [q.__setitem__(k, q.pop(k)) for k in ["".join(["gr", "ad"]), "".join(["val", "ue"])]],
    "other keys added": lambda q: q.update({f"extra{i}": i for i in range(20)}),
    "dict rebuilt in place": lambda q: (lambda items: (q.clear(), q.update(reversed(items))))(list(q.items())),
    "grad removed then restored": lambda q: q.__setitem__("grad", np.full(8, -1.0, np.float32)),
}


@pytest.mark.parametrize("change", list(SLOT_CHANGES))
def test_plan_dict_slots_follow_the_dict(change):
    (pa, oa), (pb, ob) = _slot_pair()
    for step in range(6):
        if step in (2, 4):
            for p in (pa, pb):
                SLOT_CHANGES[change](p["p1"])
        if step == 3 and change == "grad removed then restored":
            for p in (pa, pb):
                del p["p1"]["grad"]
        assert oa.step() and ob.step()
        for k in pa:
            np.testing.assert_array_equal(pa[k]["value"], pb[k]["value"])
    for k in pa:
        assert oa.state[k]["step"] == ob.state[k]["step"]
