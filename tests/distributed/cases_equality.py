"""ShardedSGD / ShardedOptimizer equal allreduce_grads + the plain optimizer bit for bit, on any
number of ranks, and one process stepping on the mean gradient (exactly, with exact gradients)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from mpi_common import (CONFIGS, SHAPES, _train, assert_bitwise, case, local_grad, make_params,
                        same_on_all_ranks, set_grads, snapshot)
from oracle import oracle_norm, oracle_step, tolerance, wide


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


@case
def other_optimizers_sharded(comm: Any) -> None:
    """ShardedOptimizer(cls, ...) for minimalsgd's other optimizers (Adam, AdamW where they exist):
    every state field sharded, equal to allreduce_grads + cls bit for bit, the same state dict,
    and a resumed run continues bit for bit."""
    import minimalsgd
    from minimalsgd.distributed import ShardedOptimizer, allreduce_grads, partition

    classes = [minimalsgd.Adam, minimalsgd.AdamW]
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
def packed_params_one_slice_of_one_arena(comm: Any) -> None:
    """Params packed by minimalsgd.pack_params: each rank's slice is one slice of the arena, the
    collectives run on it in place (no packed copies), and the results equal the unpacked
    ShardedSGD and allreduce_grads + SGD on packed params bit for bit."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD, allreduce_grads, partition

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
def the_wrapped_optimizers_plan_serves_the_slice(comm: Any) -> None:
    """The sharded step calls the wrapped optimizer's public step on this rank's pieces, whose
    cached plan is kept from the second step on: an lr schedule (a new lr each step) and a clip
    that engages (a grad scale each step) are per-step inputs of the plan. Packed and unpacked;
    the results stay those of allreduce_grads + SGD (bit for bit without an engaged clip)."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD, allreduce_grads

    for pack in (False, True):
        for cfg in (dict(lr=lambda t: 0.1 / (1 + t), momentum=0.9, nesterov=True),
                    dict(lr=0.05, momentum=0.9, clip_grad_norm=0.5)):
            a, b = make_params(), make_params()
            for p in (a, b):
                set_grads(p, comm.rank, 0)
            if pack:
                minimalsgd.pack_params(b)
            sharded = ShardedSGD(a, comm, pack=pack, **cfg)
            plain = minimalsgd.SGD(b, **cfg)
            plans = []
            for t in range(5):
                for p in (a, b):
                    set_grads(p, comm.rank, t)  # in place
                assert sharded.step() is True
                allreduce_grads(b, comm)
                plain.step()
                plans.append(sharded._inner._plan)
                if "clip_grad_norm" in cfg:
                    assert sharded.last_grad_norm > 0.5  # the clip engages
                    for k in a:
                        tol = tolerance(np.float32, b[k]["value"], ops=8 * (t + 1))
                        assert np.all(np.abs(wide(a[k]["value"]) - wide(b[k]["value"])) <= tol), (cfg, k)
                else:
                    assert_bitwise(snapshot(a), snapshot(b), f"pack={pack} step {t}")
            assert plans[1] is not None and all(p is plans[1] for p in plans[1:]), f"pack={pack} {cfg}: plan rebuilt"
            assert sharded.applied_steps == sharded._inner.applied_steps == 5
