"""16-bit params (float16, bfloat16): grads summed in float32 and rounded once, values moved as
raw words; stochastic rounding alike on every rank and however the elements are sliced."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from mpi_common import (HALF_CFG, HALF_SHAPES, SHAPES, _exact_grads, _half_dtypes, _same_state_dict_on_all_ranks,
                        _state_snapshot, assert_bitwise, case, local_grad, make_params, same_on_all_ranks, set_grads,
                        snapshot)


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


F_SHAPES = {"f": (37, 29), "c": (5, 7), "f2": (3, 40), "s": ()}


@case
def f_ordered_params_round_as_the_plain_step(comm: Any) -> None:
    """An F-ordered 16-bit param with stochastic rounding: the sharded layout counts its elements
    in the order the plain step walks it (F: the native kernel over F-ordered arrays, the NumPy
    backend by the value's order), so a rank's piece rounds each element with the bits of its
    index in the param. ShardedSGD == allreduce_grads + SGD bit for bit, values and state dicts,
    with F- and C-ordered grads; with exact gradients == one process."""
    import minimalsgd
    from minimalsgd.distributed import ShardedSGD, allreduce_grads

    def build(dtype: Any) -> dict:
        params = make_params(dtype, F_SHAPES)
        for k in ("f", "f2"):
            params[k]["value"] = np.asfortranarray(params[k]["value"])
            assert not params[k]["value"].flags.c_contiguous
        return params

    def grads(params: dict, t: int, exact: bool, order: str) -> None:
        for k, p in params.items():
            g = local_grad(k, p["value"].shape, p["value"].dtype, 0 if exact else comm.rank, t, exact)
            p["grad"] = np.asfortranarray(g) if order == "F" and g.ndim > 1 else g

    cfg = dict(HALF_CFG, seed=99)
    for dtype in _half_dtypes():
        for order in ("F", "C"):
            what = f"{dtype} grads in {order} order"
            a, b = build(dtype), build(dtype)
            sharded = ShardedSGD(a, comm, **cfg)
            plain = minimalsgd.SGD(b, **cfg)
            for t in range(3):
                grads(a, t, False, order)
                grads(b, t, False, order)
                sharded.step()
                allreduce_grads(b, comm, optimizer=plain)
                plain.step()
                assert_bitwise(snapshot(a), snapshot(b), f"{what} step {t}")
            same_on_all_ranks(comm, snapshot(a))
            assert a["f"]["value"].flags.f_contiguous and not a["f"]["value"].flags.c_contiguous
            sd, ref = sharded.state_dict(), plain.state_dict()
            for k in ref:
                if isinstance(ref[k], np.ndarray):
                    assert sd[k].dtype == ref[k].dtype and sd[k].tobytes() == ref[k].tobytes(), (what, k)
            x, y = build(dtype), build(dtype)
            opt, single = ShardedSGD(x, comm, **cfg), minimalsgd.SGD(y, **cfg)
            for t in range(3):
                grads(x, t, True, order)
                grads(y, t, True, order)
                opt.step()
                single.step()
            assert_bitwise(snapshot(x), snapshot(y), f"{what}: N ranks vs one process")
