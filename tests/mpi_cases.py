"""Cases for minimalsgd.distributed, run on every rank by ``mpiexec -n N python tests/mpi_cases.py``.

``tests/test_distributed.py`` starts the runs and reads the verdicts; this file is not collected by
pytest (it needs MPI). Rank 0 prints one JSON line per case: ``{"case": name, "failures": {rank:
message}}``. ``python tests/mpi_cases.py --case NAME`` runs one case. Every rank can compute every
rank's gradients (they are a function of rank, step and name), which gives the tests their
single-process references.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle import oracle_norm, oracle_step, tolerance, wide  # noqa: E402

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


# ---------------------------------------------------------------------------------------------
# Equalities


@case
def ranks_identical_and_equal_to_allreduce_sgd(comm: Any) -> None:
    """Every rank ends every step bit-identical, and ShardedSGD == allreduce_grads + SGD bit for bit
    (without clipping, and with a clip that does not engage)."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD

    for dtype in (np.float32, np.float64, np.complex64):
        for cfg in CONFIGS:
            if dtype == np.complex64 and cfg.get("maximize"):
                continue
            a, b = make_params(dtype), make_params(dtype)
            sharded = ShardedSGD(a, comm, **cfg)
            plain = minimalsgd.SGD(b, **cfg)
            for t in range(4):
                _train(comm, a, sharded, 1, start=t)
                _train(comm, b, plain, 1, start=t, reduce=True)
                same_on_all_ranks(comm, snapshot(a))
                if cfg.get("clip_grad_norm", 1e9) < 1e6:
                    # The clip engages: the two norms are float64 sums in different orders.
                    for k in a:
                        tol = tolerance(dtype, b[k]["value"], ops=8 * (t + 1))
                        assert np.all(np.abs(wide(a[k]["value"]) - wide(b[k]["value"])) <= tol), (cfg, k)
                else:
                    assert_bitwise(snapshot(a), snapshot(b), f"{np.dtype(dtype)} {cfg} step {t}")
            if "clip_grad_norm" in cfg:
                assert sharded.last_grad_norm is not None
                assert math.isclose(sharded.last_grad_norm, plain.last_grad_norm, rel_tol=1e-12)


@case
def large_bucket_equal_to_allreduce_sgd_bitwise(comm: Any) -> None:
    """1.2M elements: there MPICH's Allreduce sums in another order than its Reduce_scatter on 3
    ranks (measured: ~16% of elements differ in the last bit), so this checks that allreduce_grads
    and ShardedSGD really share one reduction path."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD, allreduce_grads

    shapes = {"big": (1000, 1000), "mid": (200_001,), "tail": (3,)}
    cfg = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    a, b = make_params(shapes=shapes), make_params(shapes=shapes)
    sharded = ShardedSGD(a, comm, **cfg)
    plain = minimalsgd.SGD(b, **cfg)
    for t in range(2):
        set_grads(a, comm.rank, t)
        for k, p in b.items():
            p["grad"] = a[k]["grad"].copy()
        sharded.step()
        allreduce_grads(b, comm)
        plain.step()
    assert_bitwise(snapshot(a), snapshot(b), "large")
    same_on_all_ranks(comm, snapshot(a))


@case
def settings_change_between_steps(comm: Any) -> None:
    """Hyperparameters are plain attributes, as in SGD: lr and momentum changed mid-run (a buffer
    born at step 2, params without grads at some steps) still equal allreduce_grads + SGD bitwise."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD, allreduce_grads

    a, b = make_params(), make_params()
    sharded = ShardedSGD(a, comm, lr=0.1)
    plain = minimalsgd.SGD(b, lr=0.1)
    for t in range(5):
        if t == 2:
            for opt in (sharded, plain):
                opt.lr = 0.03
                opt.momentum = 0.9
                opt.weight_decay = 0.01
        set_grads(a, comm.rank, t)
        set_grads(b, comm.rank, t)
        if t in (1, 3):
            a["w2"]["grad"] = b["w2"]["grad"] = None
        sharded.step()
        allreduce_grads(b, comm)
        plain.step()
        assert_bitwise(snapshot(a), snapshot(b), f"step {t}")
    assert sharded.lr == 0.03 and sharded.momentum == 0.9
    sd, ref = sharded.state_dict(), plain.state_dict()
    assert sd["state/w2/step"] == ref["state/w2/step"] == 3
    assert sd["state/w2/momentum_buffer"].tobytes() == ref["state/w2/momentum_buffer"].tobytes()
    assert "ShardedSGD(rank" in repr(sharded)
    sharded.zero_grad()
    assert all(not p["grad"].any() for p in a.values() if p["grad"] is not None)


@case
def param_groups_and_schedules(comm: Any) -> None:
    """Param groups with their own hyperparameters and an lr schedule (when SGD has them): equal to
    allreduce_grads + SGD bitwise, and the same state dict (format, groups, applied_steps)."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD, allreduce_grads

    if not hasattr(minimalsgd.SGD, "add_param_group"):
        raise Skip("this minimalsgd.SGD has no param groups")

    def groups(params: dict) -> list:
        names = list(params)
        return [{"params": {k: params[k] for k in names[:3]}, "lr": lambda t: 0.1 / (1 + t)},
                {"params": {k: params[k] for k in names[3:]}, "momentum": 0.5, "weight_decay": 0.1}]

    a, b = make_params(), make_params()
    cfg = dict(lr=0.05, momentum=0.9, nesterov=False, clip_grad_norm=1e6)
    sharded = ShardedSGD(groups(a), comm, **cfg)
    plain = minimalsgd.SGD(groups(b), **cfg)
    for t in range(4):
        set_grads(a, comm.rank, t)
        set_grads(b, comm.rank, t)
        sharded.step()
        allreduce_grads(b, comm)
        plain.step()
        assert_bitwise(snapshot(a), snapshot(b), f"groups step {t}")
    assert sharded.applied_steps == plain.applied_steps == 4
    try:
        sharded.add_param_group({"params": {"late": {"value": np.zeros(2, np.float32), "grad": None}}})
    except ValueError as err:
        assert "fixed after the first step" in str(err)
    else:
        raise AssertionError("a group added after the first step")
    sd, ref = sharded.state_dict(), plain.state_dict()
    assert sorted(sd) == sorted(ref)
    for k in ref:
        x, y = sd[k], ref[k]
        if isinstance(y, np.ndarray):
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), k
        elif isinstance(y, float) and math.isnan(y):
            assert math.isnan(x), k
        elif k == "last_grad_norm":  # float64 sums of squares in another order (per slice)
            assert math.isclose(x, y, rel_tol=1e-12), (k, x, y)
        else:
            assert x == y, (k, x, y)

    # Resume from the checkpoint in a new ShardedSGD (same schedule): continues like the plain run.
    c = {k: {"value": p["value"].copy(), "grad": None} for k, p in a.items()}
    resumed = ShardedSGD(groups(c), comm, lr=1.0)
    resumed.load_state_dict(sd)
    assert resumed.applied_steps == 4 and resumed.param_groups[1]["momentum"] == 0.5
    for t in range(4, 6):
        set_grads(c, comm.rank, t)
        set_grads(b, comm.rank, t)
        resumed.step()
        allreduce_grads(b, comm)
        plain.step()
    assert_bitwise(snapshot(c), snapshot(b), "groups resumed")


def _half_dtypes() -> list[Any]:
    """The 16-bit float dtypes: NumPy's float16 and ml_dtypes' bfloat16 (ml_dtypes is a dependency
    of minimalsgd: without it, or with an SGD that refuses bfloat16, the cases fail, never skip)."""
    import ml_dtypes

    return [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]


@case
def sixteen_bit_floats(comm: Any) -> None:
    """float16 (and bfloat16 where SGD takes it): grads summed and divided in float32, rounded once;
    values moved as raw 16-bit words. ShardedSGD == allreduce_grads + SGD bitwise, ranks identical,
    and allreduce_grads gives the float32 mean rounded once to the dtype."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD, allreduce_grads

    n = comm.size
    for dtype in _half_dtypes():
        grads = {k: np.asarray(local_grad(k, shape, np.float32, comm.rank, 0), dtype=dtype) for k, shape in SHAPES.items()}
        params = {k: {"value": np.zeros(g.shape, dtype), "grad": g.copy()} for k, g in grads.items()}
        allreduce_grads(params, comm)
        for k, p in params.items():
            want = sum(np.asarray(np.asarray(local_grad(k, SHAPES[k], np.float32, r, 0), dtype=dtype), np.float32)
                       for r in range(n)) / np.float32(n)
            assert p["grad"].tobytes() == np.asarray(want, dtype=dtype).tobytes(), (str(dtype), k)
        for cfg in (dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01), dict(lr=0.1, clip_grad_norm=1e6)):
            a, b = make_params(dtype), make_params(dtype)
            sharded = ShardedSGD(a, comm, **cfg)
            plain = minimalsgd.SGD(b, **cfg)
            for t in range(3):
                set_grads(a, comm.rank, t)
                set_grads(b, comm.rank, t)
                sharded.step()
                allreduce_grads(b, comm)
                plain.step()
            assert_bitwise(snapshot(a), snapshot(b), f"{dtype} {cfg}")
            same_on_all_ranks(comm, snapshot(a))
            sd, ref = sharded.state_dict(), plain.state_dict()
            for k in ref:
                if isinstance(ref[k], np.ndarray):
                    assert sd[k].dtype == ref[k].dtype and sd[k].tobytes() == ref[k].tobytes(), k


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


@case
def stochastic_rounding_replicas_identical_without_a_seed(comm: Any) -> None:
    """README's recipe, allreduce_grads + SGD(stochastic_rounding=True) with no seed given, and
    ShardedSGD likewise: after several steps every rank holds bit-identical values, momentum
    buffers and state dicts (every rank uses DEFAULT_SEED), and the two recipes agree bit for bit.
    The rounding is really stochastic (it differs from rounding to nearest and between seeds)."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD, allreduce_grads

    for dtype in _half_dtypes():
        a, b, c = (make_params(dtype, HALF_SHAPES) for _ in range(3))
        sharded = ShardedSGD(a, comm, **HALF_CFG)
        plain = minimalsgd.SGD(b, **HALF_CFG)
        nearest = minimalsgd.SGD(c, **{**HALF_CFG, "stochastic_rounding": False})
        assert plain.seed == sharded.seed == minimalsgd.DEFAULT_SEED
        for t in range(6):
            for params in (a, b, c):
                set_grads(params, comm.rank, t)
            assert sharded.step() is True
            allreduce_grads(b, comm, optimizer=plain)
            allreduce_grads(c, comm)
            assert plain.step() is True and nearest.step() is True
            same_on_all_ranks(comm, snapshot(b))
            same_on_all_ranks(comm, _state_snapshot(plain))
            same_on_all_ranks(comm, snapshot(a))
            assert_bitwise(snapshot(a), snapshot(b), f"{dtype} step {t}: ShardedSGD vs allreduce_grads + SGD")
        assert any(b[k]["value"].tobytes() != c[k]["value"].tobytes() for k in b), f"{dtype}: no stochastic rounding seen"
        sd, ref = sharded.state_dict(), plain.state_dict()
        _same_state_dict_on_all_ranks(comm, sd, f"{dtype} ShardedSGD")
        _same_state_dict_on_all_ranks(comm, ref, f"{dtype} SGD")
        assert sorted(sd) == sorted(ref)
        for k in ref:
            if isinstance(ref[k], np.ndarray):
                assert sd[k].dtype == ref[k].dtype and sd[k].tobytes() == ref[k].tobytes(), k
            elif isinstance(ref[k], float) and math.isnan(ref[k]):
                assert isinstance(sd[k], float) and math.isnan(sd[k]), k
            else:
                assert sd[k] == ref[k] and type(sd[k]) is type(ref[k]), (k, sd[k], ref[k])
        # Another seed, the same on every rank: other bits, replicas still identical.
        d = make_params(dtype, HALF_SHAPES)
        other = ShardedSGD(d, comm, **HALF_CFG, seed=minimalsgd.DEFAULT_SEED + 1)
        for t in range(6):
            set_grads(d, comm.rank, t)
            other.step()
        same_on_all_ranks(comm, snapshot(d))
        assert any(a[k]["value"].tobytes() != d[k]["value"].tobytes() for k in a), f"{dtype}: the seed changes nothing"


@case
def stochastic_rounding_independent_of_sharding(comm: Any) -> None:
    """ShardedSGD(seed=s) rounds each element with its param's key and its index within the param:
    on N ranks it equals allreduce_grads + SGD(seed=s) bit for bit (any gradients), and with exact
    gradients (the same mean on any N) a single-process SGD(seed=s) bit for bit -- so 1, 2 and 3
    ranks give the same values. float16 and bfloat16; momentum buffers of the value's dtype and
    float32 (state_dtype="float32"); ShardedOptimizer(SGD), param groups and packed params too."""
    import minimalsgd
    from minimalsgd.distributed import ShardedOptimizer, ShardedSGD, allreduce_grads

    seed = 12345

    def groups(params: dict) -> list:
        names = list(params)
        return [{"params": {k: params[k] for k in names[:4]}},
                {"params": {k: params[k] for k in names[4:]}, "momentum": 0.5, "nesterov": False}]

    for dtype in _half_dtypes():
        for state_dtype in (None, "float32"):
            cfg = dict(HALF_CFG, seed=seed, state_dtype=state_dtype)
            what = f"{dtype} state_dtype={state_dtype}"
            # Any gradients: ShardedSGD == allreduce_grads + SGD.
            a, b = make_params(dtype, HALF_SHAPES), make_params(dtype, HALF_SHAPES)
            sharded = ShardedSGD(a, comm, **cfg)
            plain = minimalsgd.SGD(b, **cfg)
            for t in range(4):
                set_grads(a, comm.rank, t)
                set_grads(b, comm.rank, t)
                sharded.step()
                allreduce_grads(b, comm, optimizer=plain)
                plain.step()
                assert_bitwise(snapshot(a), snapshot(b), f"{what} step {t}")
            sd, ref = sharded.state_dict(), plain.state_dict()
            for k in ref:
                if isinstance(ref[k], np.ndarray):
                    assert sd[k].dtype == ref[k].dtype and sd[k].tobytes() == ref[k].tobytes(), (what, k)
            if state_dtype == "float32":
                assert sd["state/big/momentum_buffer"].dtype == np.float32, sd["state/big/momentum_buffer"].dtype
            _same_state_dict_on_all_ranks(comm, sd, what)

            # Exact gradients: N ranks == one process, for each way of building the sharded step.
            builds = {
                "ShardedSGD": lambda p: ShardedSGD(p, comm, **cfg),
                "ShardedOptimizer(SGD)": lambda p: ShardedOptimizer(minimalsgd.SGD, p, comm, **cfg),
                "groups": lambda p: ShardedSGD(groups(p), comm, **cfg),
                "packed": lambda p: ShardedSGD(p, comm, pack=True, **cfg),
            }
            for name, build in builds.items():
                x, y = make_params(dtype, HALF_SHAPES), make_params(dtype, HALF_SHAPES)
                opt = build(x)
                single = minimalsgd.SGD(groups(y) if name == "groups" else y, **cfg)
                for t in range(4):
                    _exact_grads(x, t)
                    _exact_grads(y, t)
                    opt.step()
                    single.step()
                assert_bitwise({k: p["value"] for k, p in x.items()}, snapshot(y), f"{what} {name} vs one process")
                sd, ref = opt.state_dict(), single.state_dict()
                for k in ref:
                    if isinstance(ref[k], np.ndarray):
                        assert sd[k].tobytes() == ref[k].tobytes(), (what, name, k)


@case
def settings_that_differ_between_ranks_raise_everywhere(comm: Any) -> None:
    """The agreement covers every global setting: ranks given different seeds (or stochastic
    rounding on some ranks only) raise the same ValueError on every rank -- in ShardedSGD.step,
    ShardedSGD.state_dict and allreduce_grads(optimizer=) -- before anything is written."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD, allreduce_grads

    if comm.size == 1:
        raise Skip("needs two ranks or more")
    last = comm.size - 1
    dtype = _half_dtypes()[1]
    for cfg, contains in ((dict(seed=5), "have different seed: 5 on rank"),
                          (dict(stochastic_rounding=False), "have different stochastic_rounding"),
                          (dict(state_dtype="float32"), "have different state_dtype"),
                          (dict(clip_grad_norm=2.0), "have different clip_grad_norm")):
        kw = dict(HALF_CFG, **(cfg if comm.rank == last else {}))
        a, b = make_params(dtype), make_params(dtype)
        set_grads(a, comm.rank, 0)
        set_grads(b, comm.rank, 0)
        before = snapshot(a), {k: p["grad"].copy() for k, p in b.items()}
        sharded = ShardedSGD(a, comm, **kw)
        _expect_same_error(comm, ValueError, sharded.step, contains)
        _expect_same_error(comm, ValueError, sharded.state_dict, contains)
        plain = minimalsgd.SGD(b, **kw)
        _expect_same_error(comm, ValueError, lambda: allreduce_grads(b, comm, optimizer=plain), contains)
        assert_bitwise(snapshot(a), before[0], "values written")
        assert_bitwise({k: p["grad"] for k, p in b.items()}, before[1], "grads written")
    seed_msg = _expect_same_error(comm, ValueError, ShardedSGD(make_params(), comm, seed=comm.rank).step, "seed")
    assert "shared_seed()" in seed_msg, seed_msg
    try:
        allreduce_grads(make_params(), comm, optimizer=object())
    except TypeError as err:
        assert "optimizer must be None or a minimalsgd optimizer" in str(err), err
    else:
        raise AssertionError("optimizer=object() accepted")


@case
def shared_seed_is_one_seed(comm: Any) -> None:
    """shared_seed(): one random 64-bit seed, the same on every rank, another at each call."""
    from minimalsgd.distributed import shared_seed

    seeds = [shared_seed(comm) for _ in range(3)]
    assert all(isinstance(x, int) and 0 <= x < 2**64 for x in seeds), seeds
    assert len(set(seeds)) == 3, seeds
    assert comm.allgather(seeds) == [seeds] * comm.size


@case
def sharded_takes_every_argument_of_its_optimizer(comm: Any) -> None:
    """ShardedSGD and ShardedOptimizer forward their arguments: each argument of SGD's (and Adam's)
    signature, given by name, reaches the plain optimizer; SGD's positional order works too.
    An argument that SGD gains later is covered by the introspection (it fails here if refused)."""
    import inspect

    import minimalsgd
    from minimalsgd.distributed import ShardedOptimizer, ShardedSGD

    samples = dict(lr=0.25, momentum=0.5, nesterov=True, weight_decay=0.125, clip_grad_norm=3.0, dampening=0.0,
                   maximize=True, skip_nonfinite=True, backend="numpy", stochastic_rounding=True, seed=77,
                   state_dtype="float32", betas=(0.8, 0.9), eps=1e-6, amsgrad=True)
    for cls, make in ((minimalsgd.SGD, lambda p, **kw: ShardedSGD(p, comm, **kw)),
                      (minimalsgd.SGD, lambda p, **kw: ShardedOptimizer(minimalsgd.SGD, p, comm, **kw)),
                      (minimalsgd.Adam, lambda p, **kw: ShardedOptimizer(minimalsgd.Adam, p, comm, **kw))):
        params = [(n, p) for n, p in inspect.signature(cls).parameters.items()
                  if n != "params" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        assert params, cls
        everything = {}
        base = {"momentum": 0.5} if cls is minimalsgd.SGD else {}  # (Nesterov needs momentum)
        for name, p in params:
            value = samples.get(name, p.default)
            assert value is not inspect.Parameter.empty, f"{cls.__name__}.{name} has no default and no sample"
            everything[name] = value
            opt = make(make_params(), **{**base, name: value})  # a TypeError here: the sharded class refuses it
            got = opt.param_groups[0][name] if name in cls.hyperparameters else getattr(opt, name)
            assert got == value or (name == "state_dtype" and str(np.dtype(got)) == value), (cls.__name__, name, got)
        opt = make(make_params(), **everything)
        plain = cls(make_params(), **everything)
        assert repr(opt._opt) == repr(plain), (repr(opt._opt), repr(plain))
    positional = (0.25, 0.5, True, 0.125, 3.0)
    opt = ShardedSGD(make_params(), comm, *positional)
    plain = minimalsgd.SGD(make_params(), *positional)
    assert repr(opt._opt) == repr(plain)
    sig = inspect.signature(ShardedSGD)
    assert list(sig.parameters)[:2] == ["params", "comm"] and "pack" in sig.parameters
    assert set(inspect.signature(minimalsgd.SGD).parameters) <= set(sig.parameters)


@case
def other_optimizers_sharded(comm: Any) -> None:
    """ShardedOptimizer(cls, ...) for minimalsgd's other optimizers (Adam, AdamW where they exist):
    every state field sharded, equal to allreduce_grads + cls bit for bit, the same state dict,
    and a resumed run continues bit for bit."""
    import minimalsgd
    from minimalsgd.distributed import ShardedOptimizer, allreduce_grads, partition

    classes = [getattr(minimalsgd, n) for n in ("Adam", "AdamW") if hasattr(minimalsgd, n)]
    if not classes:
        raise Skip("this minimalsgd has no optimizer besides SGD")
    total = sum(int(np.prod(s)) for s in SHAPES.values())
    counts, _ = partition(total, comm.size)
    for cls in classes:
        for cfg in (dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.1, amsgrad=True, clip_grad_norm=1e6)):
            a, b = make_params(), make_params()
            sharded = ShardedOptimizer(cls, a, comm, **cfg)
            plain = cls(b, **cfg)
            for t in range(4):
                set_grads(a, comm.rank, t)
                set_grads(b, comm.rank, t)
                sharded.step()
                allreduce_grads(b, comm)
                plain.step()
            assert_bitwise(snapshot(a), snapshot(b), f"{cls.__name__} {cfg}")
            same_on_all_ranks(comm, snapshot(a))
            fields = [f for f in cls.state_fields if any(f in st for st in plain.state.values())]
            assert sharded.state_bytes == len(fields) * counts[comm.rank] * 4, (fields, sharded.state_bytes)
            sd, ref = sharded.state_dict(), plain.state_dict()
            assert sorted(sd) == sorted(ref)
            for k in ref:
                if isinstance(ref[k], np.ndarray):
                    assert sd[k].dtype == ref[k].dtype and sd[k].tobytes() == ref[k].tobytes(), k
            c = {k: {"value": p["value"].copy(), "grad": None} for k, p in a.items()}
            resumed = ShardedOptimizer(cls, c, comm, **cfg)
            resumed.load_state_dict(sd)
            for t in range(4, 6):
                set_grads(c, comm.rank, t)
                set_grads(b, comm.rank, t)
                resumed.step()
                allreduce_grads(b, comm)
                plain.step()
            assert_bitwise(snapshot(c), snapshot(b), f"{cls.__name__} resumed")


@case
def mixed_layouts_and_dtypes(comm: Any) -> None:
    """float32 and float64 params in one dict, Fortran-ordered, strided and byte-swapped values:
    each dtype gets its own slices; results equal allreduce_grads + SGD bit for bit."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD

    def build() -> dict:
        rng = np.random.default_rng(5)
        big = rng.standard_normal((6, 8))
        return {
            "f": {"value": np.asfortranarray(rng.standard_normal((5, 3)).astype(np.float32)), "grad": None},
            "d": {"value": rng.standard_normal(9), "grad": None},
            "strided": {"value": big[:, ::2].astype(np.float32)[::2], "grad": None},
            "swapped": {"value": rng.standard_normal(7).astype(">f4"), "grad": None},
            "d2": {"value": rng.standard_normal((2, 2)), "grad": None},
        }

    a, b = build(), build()
    cfg = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    sharded = ShardedSGD(a, comm, **cfg)
    plain = minimalsgd.SGD(b, **cfg)
    ids = {k: id(p["value"]) for k, p in a.items()}
    for t in range(3):
        _train(comm, a, sharded, 1, start=t)
        _train(comm, b, plain, 1, start=t, reduce=True)
    assert_bitwise(snapshot(a), snapshot(b), "mixed")
    same_on_all_ranks(comm, snapshot(a))
    assert {k: id(p["value"]) for k, p in a.items()} == ids, "values were rebound, not updated in place"
    assert a["swapped"]["value"].dtype == np.dtype(">f4")
    assert set(sharded.shards()) == {"float32", "float64"}


@case
def equals_single_process_on_mean_gradient(comm: Any) -> None:
    """ShardedSGD on N ranks == one process stepping on the mean gradient, to float rounding:
    the float64 oracle of tests/oracle.py, within tolerance(dtype, value, update) of 8 ops per step."""
    from minimalsgd.distributed import ShardedSGD

    n = comm.size
    for dtype in (np.float32, np.float64):
        for cfg in CONFIGS[:5]:
            params = make_params(dtype)
            ref = {k: wide(p["value"]).copy() for k, p in params.items()}
            bufs: dict[str, Any] = {k: None for k in params}
            opt = ShardedSGD(params, comm, **cfg)
            hyper = {k: v for k, v in cfg.items() if k not in ("clip_grad_norm",)}
            for t in range(5):
                _train(comm, params, opt, 1, start=t)
                mean = {k: sum(wide(local_grad(k, p["value"].shape, dtype, r, t)) for r in range(n)) / n for k, p in params.items()}
                scale = 1.0
                if "clip_grad_norm" in cfg:
                    total = oracle_norm(list(mean.values()))
                    if total > cfg["clip_grad_norm"]:
                        scale = cfg["clip_grad_norm"] / (total + 1e-12)
                for k in params:
                    ref[k], v = oracle_step(ref[k], mean[k], bufs[k], first=t == 0, grad_scale=scale, **hyper)
                    bufs[k] = v
            for k, p in params.items():
                tol = tolerance(dtype, ref[k], ops=8 * 5 * n)
                err = np.abs(wide(p["value"]) - ref[k])
                assert np.all(err <= tol), f"{np.dtype(dtype)} {cfg} {k}: max err {err.max()} > tol {tol.max()}"


@case
def exact_gradients_equal_plain_sgd_bitwise(comm: Any) -> None:
    """When the mean gradient is exact (dyadic grads), N ranks == a plain single-process SGD bit for bit."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD

    for cfg in CONFIGS:
        a, b = make_params(), make_params()
        sharded = ShardedSGD(a, comm, **cfg)
        single = minimalsgd.SGD(b, **cfg)
        for t in range(4):
            _train(comm, a, sharded, 1, start=t, exact=True)
            for k, p in b.items():
                p["grad"] = local_grad(k, p["value"].shape, np.float32, 0, t, exact=True)
            single.step()
        assert_bitwise(snapshot(a), snapshot(b), f"exact {cfg}")


@case
def state_memory_is_one_slice(comm: Any) -> None:
    """Per-rank optimizer state is this rank's slice: total/N elements (+1 on the first total % N ranks);
    a param straddles a slice boundary when N > 1."""
    from minimalsgd.distributed import ShardedSGD, partition

    params = make_params()
    opt = ShardedSGD(params, comm, lr=0.1, momentum=0.9)
    assert opt.state_bytes == 0
    _train(comm, params, opt, 2)
    total = sum(p["value"].size for p in params.values())
    counts, displs = partition(total, comm.size)
    assert opt.shards() == {"float32": (displs[comm.rank], displs[comm.rank] + counts[comm.rank], total)}
    assert opt.state_bytes == counts[comm.rank] * 4
    assert abs(opt.state_bytes - total * 4 / comm.size) < 4
    if comm.size > 1:
        ends = np.cumsum([p["value"].size for p in params.values()])
        assert any(d not in ends and d > 0 for d in displs[1:]), "no param is split across ranks"
        assert len(set(counts)) == (1 if total % comm.size == 0 else 2)


@case
def skip_nonfinite_is_one_decision(comm: Any) -> None:
    """A NaN in one rank's grad makes every rank skip the step (nothing written, no state created)."""
    from minimalsgd.distributed import ShardedSGD

    params = make_params()
    opt = ShardedSGD(params, comm, lr=0.1, momentum=0.9, skip_nonfinite=True)
    set_grads(params, comm.rank, 0)
    if comm.rank == comm.size - 1:
        params["b1"]["grad"][-1] = np.nan
    before = snapshot(params)
    assert opt.step() is False
    assert opt.skipped_steps == 1
    assert_bitwise(snapshot(params), before, "skipped step wrote")
    sd = opt.state_dict()
    assert not any(k.startswith("state/") for k in sd), "a skipped step created state"
    set_grads(params, comm.rank, 1)
    assert opt.step() is True
    same_on_all_ranks(comm, snapshot(params))


@case
def allreduce_grads_sums_and_groups(comm: Any) -> None:
    """allreduce_grads sums or averages (a dict or a list of groups); None grads stay None."""
    from minimalsgd.distributed import allreduce_grads

    n = comm.size
    params = make_params(np.float64)
    set_grads(params, comm.rank, 0, exact=False)
    params["s"]["grad"] = None
    allreduce_grads(params, comm, average=False)
    for k, p in params.items():
        if k == "s":
            assert p["grad"] is None
            continue
        want = sum(wide(local_grad(k, p["value"].shape, np.float64, r, 0)) for r in range(n))
        assert np.allclose(p["grad"], want, rtol=1e-14, atol=1e-14), k
    groups = [{"params": {"a": {"value": np.zeros(3), "grad": np.full(3, comm.rank + 1.0)}}, "lr": 0.1},
              {"params": {"b": {"value": np.zeros(2, np.float32), "grad": np.full(2, 2.0 * comm.rank, np.float32)}}}]
    allreduce_grads(groups, comm)
    assert np.array_equal(groups[0]["params"]["a"]["grad"], np.full(3, (n + 1) / 2))
    assert np.array_equal(groups[1]["params"]["b"]["grad"], np.full(2, n - 1, np.float32))


@case
def broadcast_params_copies_root(comm: Any) -> None:
    """broadcast_params: every rank ends with root's values, in place (strided, byte-swapped, float16)."""
    from minimalsgd.distributed import broadcast_params

    root = comm.size - 1
    def build(seed: int) -> dict:
        rng = np.random.default_rng(seed)
        return {"a": {"value": rng.standard_normal((4, 6))[:, ::2], "grad": None},
                "b": {"value": rng.standard_normal(5).astype(">f4"), "grad": None},
                "c": {"value": rng.standard_normal(3).astype(np.float16), "grad": None},
                "d": {"value": np.asarray(rng.standard_normal(), dtype=np.float32), "grad": None}}

    for bad in (-1, comm.size, 0.5, True):
        try:
            broadcast_params(build(0), comm, root=bad)
        except ValueError as err:
            assert "root must be a rank" in str(err)
        else:
            raise AssertionError(f"root={bad!r} accepted")
    mine, want = build(comm.rank), build(root)
    ids = {k: id(p["value"]) for k, p in mine.items()}
    broadcast_params(mine, comm, root=root)
    for k in mine:
        assert id(mine[k]["value"]) == ids[k]
        assert np.array_equal(mine[k]["value"], want[k]["value"]) and mine[k]["value"].dtype == want[k]["value"].dtype, k


@case
def packed_params_one_slice_of_one_arena(comm: Any) -> None:
    """Params packed by minimalsgd.pack_params: each rank's slice is one slice of the arena, the
    collectives run on it in place (no packed copies), and the results equal the unpacked
    ShardedSGD and allreduce_grads + SGD on packed params bit for bit."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD, allreduce_grads, partition

    if not hasattr(minimalsgd, "pack_params"):
        raise Skip("this minimalsgd has no pack_params")
    cfg = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, clip_grad_norm=1e6)
    a, b, c, d = make_params(), make_params(), make_params(), make_params()
    for p in (a, b, c, d):
        set_grads(p, comm.rank, 0)
    arena = minimalsgd.pack_params(a)
    arena_b = minimalsgd.pack_params(b)
    sharded = ShardedSGD(a, comm, **cfg)
    unpacked = ShardedSGD(c, comm, **cfg)
    auto = ShardedSGD(d, comm, pack=True, **cfg)
    assert auto.arena is not None and np.shares_memory(d["w1"]["value"], auto.arena.values[np.dtype(np.float32)])
    plain = minimalsgd.SGD(b, **cfg)
    for t in range(4):
        for p in (a, b, c, d):
            set_grads(p, comm.rank, t)  # in place: the grads stay the arena's
        sharded.step()
        unpacked.step()
        auto.step()
        allreduce_grads(b, comm)
        plain.step()
        assert_bitwise(snapshot(a), snapshot(c), f"packed vs unpacked step {t}")
        assert_bitwise(snapshot(a), snapshot(b), f"sharded vs allreduce+SGD step {t}")
        assert_bitwise(snapshot(a), snapshot(d), f"pack=True step {t}")
    same_on_all_ranks(comm, snapshot(a))
    flat = arena.values[np.dtype(np.float32)]
    for k, p in a.items():
        assert np.shares_memory(p["value"], flat) or p["value"].size == 0, k
        assert np.shares_memory(b[k]["grad"], arena_b.grads[np.dtype(np.float32)]) or p["value"].size == 0, k
    (lay,) = sharded._layouts
    assert lay.packed_grads is None and lay.packed_values is None, "a packed copy was made"
    assert unpacked._layouts[0].packed_values is not None  # the unpacked run did need them
    total = flat.size
    counts, displs = partition(total, comm.size)
    assert sharded.shards() == {"float32": (displs[comm.rank], displs[comm.rank] + counts[comm.rank], total)}
    assert sharded.state_bytes == counts[comm.rank] * 4


@case
def allreduce_grads_on_an_arena_in_place(comm: Any) -> None:
    """Grads that are consecutive views of one buffer are reduced in that buffer (no packed copy)."""
    import minimalsgd.distributed as D

    arena = np.arange(20, dtype=np.float32) * (comm.rank + 1)
    params = {"a": {"value": np.zeros((3, 4), np.float32), "grad": arena[:12].reshape(3, 4)},
              "b": {"value": np.zeros(8, np.float32), "grad": arena[12:]}}
    assert D._flat_view([params["a"]["grad"], params["b"]["grad"]], np.dtype(np.float32)) is not None
    copies = []
    orig = np.empty

    def counting_empty(shape: Any, dtype: Any = float, *args: Any, **kw: Any) -> np.ndarray:
        if isinstance(shape, (int, np.integer)) and shape == 20:
            copies.append(shape)
        return orig(shape, dtype, *args, **kw)

    D.np.empty = counting_empty  # type: ignore[attr-defined]
    try:
        D.allreduce_grads(params, comm, average=True)
    finally:
        D.np.empty = orig  # type: ignore[attr-defined]
    n = comm.size
    assert not copies, "a full-size packing buffer was allocated"
    assert np.array_equal(arena, np.arange(20, dtype=np.float32) * np.float32((n + 1) / 2))
    assert params["a"]["grad"].base is not None and np.shares_memory(params["a"]["grad"], arena)


@case
def state_dict_is_sgd_format_on_all_ranks_or_root(comm: Any) -> None:
    """state_dict() equals the state dict of allreduce_grads + SGD; root=0 gives it on rank 0 only."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD, allreduce_grads

    cfg = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    a, b = make_params(), make_params()
    sharded = ShardedSGD(a, comm, **cfg)
    plain = minimalsgd.SGD(b, **cfg)
    a["s"]["grad"] = None
    for t in range(3):
        set_grads(a, comm.rank, t)
        set_grads(b, comm.rank, t)
        if t == 0:  # one param without a grad on the first step: its step count lags
            a["b2"]["grad"] = None
            b["b2"]["grad"] = None
        allreduce_grads(b, comm)
        sharded.step()
        plain.step()
    sd, ref = sharded.state_dict(), plain.state_dict()
    assert sorted(sd) == sorted(ref), (sorted(sd), sorted(ref))
    for k in ref:
        if isinstance(ref[k], np.ndarray):
            assert sd[k].dtype == ref[k].dtype and sd[k].shape == ref[k].shape and sd[k].tobytes() == ref[k].tobytes(), k
        elif isinstance(ref[k], float) and math.isnan(ref[k]):
            assert math.isnan(sd[k]), k
        else:
            assert sd[k] == ref[k] and type(sd[k]) is type(ref[k]), (k, sd[k], ref[k])
    only = sharded.state_dict(root=0)
    if comm.rank == 0:
        assert only is not None and sorted(only) == sorted(sd)
        assert all(np.array_equal(only[k], sd[k], equal_nan=isinstance(sd[k], float)) for k in sd)
    else:
        assert only is None


@case
def load_state_dict_reshards(comm: Any) -> None:
    """A state dict from a plain SGD loads into ShardedSGD on any N and continues bit for bit (exact grads)."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD

    cfg = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, clip_grad_norm=3.0)
    ref = make_params()
    single = minimalsgd.SGD(ref, **cfg)
    for t in range(3):
        for k, p in ref.items():
            p["grad"] = local_grad(k, p["value"].shape, np.float32, 0, t, exact=True)
        single.step()
    sd = single.state_dict()
    params = {k: {"value": p["value"].copy(), "grad": None} for k, p in ref.items()}
    opt = ShardedSGD(params, comm, lr=1.0)
    opt.load_state_dict(sd)
    assert opt.lr == 0.05 and opt.clip_grad_norm == 3.0
    for t in range(3, 6):
        for k, p in ref.items():
            p["grad"] = local_grad(k, p["value"].shape, np.float32, 0, t, exact=True)
        single.step()
    _train(comm, params, opt, 3, start=3, exact=True)
    assert_bitwise(snapshot(params), snapshot(ref), "resumed")


# ---------------------------------------------------------------------------------------------
# Bad input: the same error on every rank, nothing written


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


@case
def bad_input_same_error_everywhere(comm: Any) -> None:
    """Names, shapes, dtypes, grad presence, hyperparameters or starting values that differ between
    ranks, and bad arrays on one rank: the same ValueError/TypeError on every rank, nothing written."""
    from minimalsgd.distributed import ShardedSGD, allreduce_grads

    last = comm.size - 1

    def attempt(mutate: Callable[[dict], None], kind: type, contains: str, cfg: dict | None = None, use_allreduce: bool = False) -> str:
        params = make_params()
        set_grads(params, comm.rank, 0)
        if comm.rank == last and comm.size > 1:
            mutate(params)
        elif comm.size == 1:
            mutate(params)
        before = {k: (None if p.get("value") is None else np.array(p["value"], copy=True),
                      None if not isinstance(p.get("grad"), np.ndarray) else p["grad"].copy()) for k, p in params.items()}
        kw = dict(lr=0.1, momentum=0.9)
        if cfg and comm.rank == last:
            kw.update(cfg)
        if use_allreduce:
            msg = _expect_same_error(comm, kind, lambda: allreduce_grads(params, comm), contains)
        else:
            opt = ShardedSGD(params, comm, **kw)
            msg = _expect_same_error(comm, kind, opt.step, contains)
            assert opt.state_bytes == 0 and opt.skipped_steps == 0
        for k, (v, g) in before.items():
            if k in params and isinstance(params[k].get("value"), np.ndarray) and v is not None and params[k]["value"].shape == v.shape:
                assert params[k]["value"].tobytes() == v.tobytes(), f"{k} value written"
            if k in params and isinstance(params[k].get("grad"), np.ndarray) and g is not None and params[k]["grad"].shape == g.shape:
                assert params[k]["grad"].tobytes() == g.tobytes(), f"{k} grad written"
        return msg

    def extra(p: dict) -> None:
        p["extra"] = {"value": np.zeros(3, np.float32), "grad": np.zeros(3, np.float32)}

    def reshape(p: dict) -> None:
        p["w1"] = {"value": np.zeros((5, 7), np.float32), "grad": np.zeros((5, 7), np.float32)}

    def retype(p: dict) -> None:
        p["b1"] = {"value": np.zeros(4, np.float64), "grad": np.zeros(4, np.float64)}

    def no_grad(p: dict) -> None:
        p["b1"]["grad"] = None

    def readonly(p: dict) -> None:
        p["w2"]["value"].flags.writeable = False

    def bad_grad_shape(p: dict) -> None:
        p["w2"]["grad"] = np.zeros((4, 3), np.float32)

    def ints(p: dict) -> None:
        p["b1"] = {"value": np.zeros(4, np.int32), "grad": np.zeros(4, np.int32)}

    def nudge(p: dict) -> None:
        p["w1"]["value"][0, 0] += 1

    if comm.size > 1:
        attempt(extra, ValueError, "only on rank 0: [], only on rank")
        attempt(extra, ValueError, "only on rank 0: [], only on rank", use_allreduce=True)
        attempt(reshape, ValueError, "disagree on params['w1']: shape (5, 7)")
        attempt(retype, ValueError, "dtype float64")
        attempt(retype, ValueError, "dtype float64", use_allreduce=True)
        attempt(no_grad, ValueError, "(no grad)")
        attempt(lambda p: None, ValueError, "have different lr in param group 0: 0.2 on rank", cfg=dict(lr=0.2))
        attempt(nudge, ValueError, "hold different values")
    attempt(readonly, ValueError, f"rank {last if comm.size > 1 else 0}: params['w2']: value is read-only")
    attempt(bad_grad_shape, ValueError, "grad shape (4, 3) does not match value shape (3, 4)")
    attempt(ints, TypeError, "dtype int32 is not supported over MPI")
    attempt(ints, TypeError, "dtype int32 is not supported over MPI", use_allreduce=True)

    # After an error, the same optimizer works once the input is fixed.
    params = make_params()
    opt = ShardedSGD(params, comm, lr=0.1)
    set_grads(params, comm.rank, 0)
    params["w2"]["grad"] = np.zeros((4, 3), np.float32)
    _expect_same_error(comm, ValueError, opt.step, "grad shape")
    set_grads(params, comm.rank, 0)
    assert opt.step() is True

    # Params whose structure changes after the first step.
    params["late"] = {"value": np.zeros(2, np.float32), "grad": np.zeros(2, np.float32)}
    _expect_same_error(comm, ValueError, opt.step, "names changed")

    # Not a communicator: TypeError before anything collective.
    for bad in (object(), "COMM_WORLD", 0):
        try:
            ShardedSGD(make_params(), bad)
        except TypeError as err:
            assert "comm must be an mpi4py communicator" in str(err)
        else:
            raise AssertionError("no TypeError")
        try:
            allreduce_grads(make_params(), bad)
        except TypeError:
            pass
        else:
            raise AssertionError("no TypeError")

    from mpi4py import MPI

    try:
        ShardedSGD(make_params(), MPI.COMM_NULL)
    except ValueError as err:
        assert "COMM_NULL" in str(err)
    else:
        raise AssertionError("COMM_NULL accepted")
    opt = ShardedSGD(make_params(), comm)
    for bad_root in (-1, comm.size, True, 0.0):
        try:
            opt.state_dict(root=bad_root)
        except ValueError as err:
            assert "root must be None or a rank" in str(err)
        else:
            raise AssertionError(f"root={bad_root!r} accepted")
    try:
        opt.state
    except AttributeError as err:
        assert "state_dict() gathers the full state" in str(err)
    else:
        raise AssertionError("opt.state did not explain itself")

    # A state dict that does not fit: same error, state unchanged.
    params = make_params()
    opt = ShardedSGD(params, comm, lr=0.1, momentum=0.9)
    _train(comm, params, opt, 1)
    good = opt.state_dict()
    bad_sd = dict(good)
    if comm.rank == last:
        bad_sd["state/w1/momentum_buffer"] = np.zeros((2, 2), np.float32)
    _expect_same_error(comm, ValueError, lambda: opt.load_state_dict(bad_sd), "momentum buffer shape (2, 2)")
    after = opt.state_dict()
    assert all(np.array_equal(after[k], good[k], equal_nan=isinstance(good[k], float)) for k in good)


# ---------------------------------------------------------------------------------------------
# Checkpoint chain (driven by test_distributed.py: save on 3 ranks, resume on 2, then plain SGD)

CHAIN_CFG = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, clip_grad_norm=4.0)
#: The chain of 16-bit params: stochastic rounding with a seed given (saved in the checkpoint).
CHAIN_HALF_CFG = dict(CHAIN_CFG, stochastic_rounding=True, seed=2024)


def chain_dtype(name: str) -> np.dtype:
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def chain_config(dtype: np.dtype) -> dict[str, Any]:
    return CHAIN_HALF_CFG if dtype.itemsize == 2 else CHAIN_CFG


def chain(comm: Any, path_in: str | None, path_out: str, start: int, steps: int, dtype_name: str = "float32") -> None:
    """Resume from ``path_in`` (or start), train ``steps`` exact steps on this many ranks (checking
    that the replicas and their state dicts stay identical), save to ``path_out`` (values as raw
    16-bit words: np.savez keeps bfloat16 as 2-byte voids)."""
    from minimalsgd.distributed import ShardedSGD

    dtype = chain_dtype(dtype_name)
    params = make_params(dtype, HALF_SHAPES if dtype.itemsize == 2 else SHAPES)
    opt = ShardedSGD(params, comm, **chain_config(dtype))
    if path_in:
        data = np.load(path_in)
        sd = {k: data[k] for k in data.files if not k.startswith("value/")}
        for k, p in params.items():
            p["value"][...] = data[f"value/{k}"].view(dtype)
        opt.load_state_dict(sd)
    _train(comm, params, opt, steps, start=start, exact=True)
    same_on_all_ranks(comm, snapshot(params))
    _same_state_dict_on_all_ranks(comm, opt.state_dict(), f"chain on {comm.size} ranks")
    sd = opt.state_dict(root=0)
    if comm.rank == 0:
        assert sd is not None
        raw = np.uint16 if dtype.itemsize == 2 else dtype
        np.savez(path_out, **sd, **{f"value/{k}": p["value"].view(raw) for k, p in params.items()})


def main() -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    args = sys.argv[1:]
    if args and args[0] == "--chain":
        path_in = args[1] if args[1] != "-" else None
        chain(comm, path_in, args[2], int(args[3]), int(args[4]), *args[5:6])
        return
    names = [args[1]] if args and args[0] == "--case" else list(CASES)
    for name in names:
        failure = skipped = None
        try:
            CASES[name](comm)
        except Skip as why:
            skipped = str(why)
        except Exception:  # noqa: BLE001 - reported per rank
            failure = traceback.format_exc()
        failures = comm.gather(failure, root=0)
        if comm.rank == 0:
            report = {"case": name, "failures": {r: f for r, f in enumerate(failures) if f is not None}, "skipped": skipped}
            print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
