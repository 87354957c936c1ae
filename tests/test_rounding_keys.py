"""Stochastic-rounding keys that do not depend on how a param's elements are cut (issue 19): a
piece of a param rounds with the param's key and its offset in the param (the native binding's
and the NumPy backend's ``rounding_offsets``, the C++ core's ``TensorSpan::index0``), and an
optimizer built without ``seed=`` uses the fixed ``minimalsgd.DEFAULT_SEED``, so every process
of a data-parallel run rounds alike. The MPI side is in tests/distributed/cases_half.py."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import minimalsgd
from minimalsgd import SGD, _numpy
from minimalsgd import _functional as F

from oracle import oracle_step_half

core = F._core
HALVES = [np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16)]
BACKENDS = ["numpy"] + (["native"] if core is not None else [])
HYPER = dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=True, maximize=False)
#: Cuts of a 1000-element param: an empty piece, odd sizes, pieces inside and across 256-element blocks.
CUTS = [0, 3, 3, 256, 300, 301, 777, 1000]


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint16 if a.dtype.itemsize == 2 else np.uint32)


def make(dtype: np.dtype, n: int, buffer_dtype: np.dtype | None = None) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(4)
    w = rng.standard_normal(n).astype(np.float32).astype(dtype)
    g = (rng.standard_normal(n) * 0.1).astype(np.float32).astype(dtype)
    v = rng.standard_normal(n).astype(np.float32).astype(buffer_dtype or dtype)
    return w, g, v


def step_pieces(backend: str, w: np.ndarray, g: np.ndarray, v: np.ndarray, offsets: list[int] | None,
                key: int = 99) -> None:
    """One step of ``w`` cut at CUTS, each piece with the param's key and (given) its offset."""
    pieces = list(zip(CUTS, CUTS[1:]))
    ws, gs, vs = ([x[a:b] for a, b in pieces] for x in (w, g, v))
    args = (ws, gs, vs, False, *HYPER.values(), 1.0)
    kw = dict(stochastic_rounding=True, seed=7, rounding_step=3, rounding_keys=[key] * len(ws),
              rounding_offsets=offsets)
    if backend == "native":
        core.sgd_step(*args, **kw)
    else:
        _numpy.sgd_step(*args, **kw)


@pytest.mark.parametrize("buffer", ["same", "float32"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_pieces_with_offsets_round_as_the_whole_param(dtype, backend, buffer):
    w, g, v = make(dtype, 1000, np.dtype(np.float32) if buffer == "float32" else None)
    want_w, want_v = oracle_step_half(w, g, v, first=False, stochastic=True, seed=7, step=3, key=99, **HYPER)
    w1, v1 = w.copy(), v.copy()
    step_pieces(backend, w1, g, v1, CUTS[:-1])
    np.testing.assert_array_equal(bits(w1), bits(want_w))
    np.testing.assert_array_equal(bits(v1), bits(want_v))
    # Without the offsets every piece starts the param's stream anew: other bits.
    w2, v2 = w.copy(), v.copy()
    step_pieces(backend, w2, g, v2, None)
    assert not np.array_equal(bits(w2), bits(want_w))


@pytest.mark.skipif(core is None, reason="native extension missing")
@pytest.mark.parametrize("offsets", [[-1], [1.5], [2**64], "0", (0, 0)], ids=repr)
def test_bad_rounding_offsets_raise_and_write_nothing(offsets):
    w, g, v = make(HALVES[0], 10)
    snap = w.copy(), v.copy()
    with pytest.raises(TypeError, match=r"rounding_offsets must be None or a list/tuple of one int"):
        core.sgd_step([w], [g], [v], False, *HYPER.values(), 1.0, stochastic_rounding=True, seed=1,
                      rounding_offsets=offsets)
    np.testing.assert_array_equal(bits(w), bits(snap[0]))
    np.testing.assert_array_equal(bits(v), bits(snap[1]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_formula_on_pieces_with_param_keys_equals_the_full_step(dtype, backend):
    """The optimizer's formula (``Formula.apply`` of the public step protocol) on pieces of
    params, given each piece's param key and offset (what the sharded step's pieces carry), writes
    the bits of a full ``SGD.step()``."""
    from minimalsgd.optim.storage import name_keys
    from minimalsgd.protocol import Batch

    rng = np.random.default_rng(1)

    def params() -> dict:
        r = np.random.default_rng(0)
        return {n: {"value": r.standard_normal(s).astype(np.float32).astype(dtype), "grad": None}
                for n, s in (("w", (40, 25)), ("b", (300,)))}

    full, cut = params(), params()
    grads = {n: (rng.standard_normal(p["value"].shape) * 0.1).astype(dtype) for n, p in full.items()}
    for p, q, g in zip(full.values(), cut.values(), grads.values()):
        p["grad"] = g
        q["grad"] = g
    kw = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, stochastic_rounding=True, seed=11,
              backend=backend)
    SGD(full, **kw).step()
    opt = SGD(cut, **kw)
    labels, values, grads_l, bufs, keys, offsets = [], [], [], [], [], []
    for name, p in cut.items():
        flat_v, flat_g = p["value"].reshape(-1), p["grad"].reshape(-1)
        buf = np.empty_like(flat_v)
        for a, b in ((0, 100), (100, 101), (101, flat_v.size)):
            labels.append(f"{name}[{a}:{b}]")
            values.append(flat_v[a:b])
            grads_l.append(flat_g[a:b])
            bufs.append(buf[a:b])
            keys.append(name_keys([name])[0])
            offsets.append(a)
    n = len(values)
    opt.formula.apply(Batch(labels=labels, values=values, grads=grads_l, state={"momentum_buffer": bufs},
                            born=[True] * n, steps=[0] * n, group_of=[0] * n, options=opt.get_options(),
                            keys=keys, offsets=offsets, rounding=opt.storage.rounding(opt.applied_steps),
                            backend=backend))
    for name in full:
        np.testing.assert_array_equal(bits(cut[name]["value"]), bits(full[name]["value"]))


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_default_seed_is_fixed_and_documented(dtype):
    """Without ``seed=``, SGD rounds with DEFAULT_SEED: two optimizers (two processes of one run,
    say) round alike, and a given seed changes the bits."""
    assert isinstance(minimalsgd.DEFAULT_SEED, int) and 0 <= minimalsgd.DEFAULT_SEED < 2**64

    def run(**kw) -> np.ndarray:
        w = np.linspace(-1, 1, 5000).astype(dtype)
        params = {"w": {"value": w, "grad": np.full(5000, 1e-3, dtype)}}
        opt = SGD(params, lr=0.3, stochastic_rounding=True, **kw)
        assert opt.seed == kw.get("seed", minimalsgd.DEFAULT_SEED)
        assert opt.state_dict()["seed"] == opt.seed
        for _ in range(3):
            opt.step()
        return bits(w)

    a, b = run(), run()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, run(seed=minimalsgd.DEFAULT_SEED))
    assert not np.array_equal(a, run(seed=minimalsgd.DEFAULT_SEED + 1))


def test_old_checkpoints_keep_their_seed():
    """Loading is unchanged: a state dict's seed wins over the default, and one without a seed
    (saved before stochastic rounding existed) means seed 0, as before."""
    params = {"w": {"value": np.zeros(3, np.float32), "grad": None}}
    sd = SGD(params, lr=0.1, seed=123).state_dict()
    opt = SGD(params, lr=0.1)
    opt.load_state_dict(sd)
    assert opt.seed == 123
    del sd["seed"], sd["stochastic_rounding"], sd["state_dtype"]
    opt.load_state_dict(sd)
    assert opt.seed == 0


def test_torch_sgd_default_seed():
    torch = pytest.importorskip("torch")
    import minimalsgd.torch as mt

    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))
    opt = mt.SGD([p], lr=0.1, stochastic_rounding=True)
    assert opt.param_groups[0]["seed"] == minimalsgd.DEFAULT_SEED
    assert mt.SGD([p], lr=0.1, stochastic_rounding=True, seed=5).param_groups[0]["seed"] == 5
