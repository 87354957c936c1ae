"""Shared set-up of the MPI cases (``tests/distributed/cases_*.py``): the case registry, the
params and per-rank gradients every rank can compute for every rank (a function of rank, step and
name, which gives the cases their single-process references), and the comparisons.

Imported by the case modules and by ``mpi_cases.py`` (the runner); needs no MPI itself.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: the oracle
from oracle import wide  # noqa: E402

CASES: dict[str, Callable[[Any], None]] = {}


class Skip(Exception):
    """A case that does not apply to this build (reported as skipped, with the reason)."""


def case(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    CASES[fn.__name__] = fn
    return fn


# 35 + 4 + 12 + 1 + 0 + 1 = 53 elements: on 2 and 3 ranks the slices differ in size (27/26,
# 18/18/17) and slice boundaries fall inside params (w1 on 2 ranks; w1 and w2 on 3).
SHAPES = {"w1": (7, 5), "b1": (4,), "w2": (3, 4), "b2": (1,), "empty": (0, 3), "s": ()}


def make_params(dtype: Any = np.float32, shapes: dict[str, tuple[int, ...]] = SHAPES, seed: int = 0) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        v = rng.standard_normal(shape)
        if np.dtype(dtype).kind == "c":
            v = v + 1j * rng.standard_normal(shape)
        out[name] = {"value": np.asarray(v, dtype=dtype), "grad": None}
    return out


def local_grad(name: str, shape: tuple[int, ...], dtype: Any, rank: int, step: int, exact: bool = False) -> np.ndarray:
    """Rank ``rank``'s gradient of ``name`` at ``step``.

    ``exact``: the same small dyadic numbers (k/64, |k| < 256) on every rank, so that the sum over
    N ranks is exact and the mean is that number exactly, in any float dtype and any order: then
    every N computes the same mean gradient as one process."""
    if exact:
        g = np.random.default_rng([step, sum(map(ord, name)), 11]).integers(-255, 256, size=shape) / 64.0
    else:
        g = np.random.default_rng([rank, step, sum(map(ord, name)), 3]).standard_normal(shape) * (1.0 + rank)
    if np.dtype(dtype).kind == "c":
        g = g + 0.5j * g[::-1] if g.ndim else g + 0.5j * g
    return np.asarray(g, dtype=dtype)


def set_grads(params: dict[str, dict[str, Any]], rank: int, step: int, exact: bool = False) -> None:
    for name, p in params.items():
        g = local_grad(name, p["value"].shape, p["value"].dtype, rank, step, exact)
        if p["grad"] is None or p["grad"].shape != g.shape or not p["grad"].flags.writeable:
            p["grad"] = g
        else:
            p["grad"][...] = g


def snapshot(params: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    return {k: np.array(p["value"], copy=True) for k, p in params.items()}


def same_on_all_ranks(comm: Any, arrays: dict[str, np.ndarray]) -> None:
    """Assert that every rank holds bit-identical arrays (compares raw bytes with rank 0's)."""
    mine = {k: (a.dtype.str, a.shape, a.tobytes()) for k, a in arrays.items()}
    ref = comm.bcast(mine, root=0)
    bad = [k for k in mine if mine[k] != ref.get(k)]
    assert not bad, f"rank {comm.rank} differs from rank 0 in {bad}"


def assert_bitwise(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> None:
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, f"{what}: {k}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        if x.tobytes() != y.tobytes():
            diff = np.max(np.abs(wide(x) - wide(y))) if x.size else 0
            raise AssertionError(f"{what}: {k} differs (max abs diff {diff})")


CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    dict(lr=0.02, momentum=0.8, dampening=0.3, maximize=True, weight_decay=0.1),
    dict(lr=0.05, momentum=0.9, clip_grad_norm=0.5),
    dict(lr=0.05, momentum=0.9, clip_grad_norm=1e6, skip_nonfinite=True),
]


def _train(comm: Any, params: dict, opt: Any, steps: int, start: int = 0, exact: bool = False, reduce: bool = False) -> None:
    from minimalsgd.distributed import allreduce_grads

    for t in range(start, start + steps):
        set_grads(params, comm.rank, t, exact)
        if reduce:
            allreduce_grads(params, comm)
        assert opt.step() is True


def _half_dtypes() -> list[Any]:
    """The 16-bit float dtypes: NumPy's float16 and ml_dtypes' bfloat16 (ml_dtypes is a dependency
    of minimalsgd: without it, or with an SGD that refuses bfloat16, the cases fail, never skip)."""
    import ml_dtypes

    return [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]


# Stochastic rounding (16-bit params): one seed per run on every rank, keys that do not depend on
# the slicing. "big" has 1073 elements: on 2 and 3 ranks it is cut inside, past the kernel's
# 256-element blocks, so a rank steps it from a nonzero offset.
HALF_SHAPES = {**SHAPES, "big": (37, 29)}
HALF_CFG = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, stochastic_rounding=True)


def _state_snapshot(opt: Any) -> dict[str, np.ndarray]:
    return {f"{k}/{f}": np.array(v, copy=True) for k, st in opt.state.items() for f, v in st.items()
            if isinstance(v, np.ndarray)}


def _same_state_dict_on_all_ranks(comm: Any, sd: dict[str, Any], what: str) -> None:
    """``sd`` is the same bytes on every rank: its pickle (keys in order, every array's bytes and
    every scalar, the seed and counters included) compared with rank 0's."""
    import pickle

    mine = pickle.dumps(sorted((k, v) for k, v in sd.items()), protocol=4)
    ref = comm.bcast(mine, root=0)
    if mine != ref:
        ref_sd = dict(pickle.loads(ref))
        bad = [k for k in sd if pickle.dumps(sd[k], protocol=4) != pickle.dumps(ref_sd.get(k), protocol=4)]
        raise AssertionError(f"{what}: rank {comm.rank}'s state_dict differs from rank 0's in {bad}")


def _exact_grads(params: dict[str, dict[str, Any]], step: int) -> None:
    """The exact (dyadic) gradients of ``step``, written in place where a grad array is there."""
    for k, p in params.items():
        g = local_grad(k, p["value"].shape, p["value"].dtype, 0, step, exact=True)
        if isinstance(p.get("grad"), np.ndarray) and p["grad"].shape == g.shape and p["grad"].flags.writeable:
            p["grad"][...] = g
        else:
            p["grad"] = g


def _expect_same_error(comm: Any, kind: type, fn: Callable[[], Any], contains: str) -> str:
    try:
        fn()
    except kind as err:
        msg = str(err)
    else:
        raise AssertionError(f"no {kind.__name__} raised")
    assert contains in msg, msg
    msgs = comm.allgather(msg)
    assert len(set(msgs)) == 1, f"ranks raised different messages: {msgs}"
    return msg
