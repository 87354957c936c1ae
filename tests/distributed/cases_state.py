"""Optimizer state: one slice per rank, the skip decision, state dicts in the plain optimizer's
format (gathered on every rank or one), resharding on load, and the checkpoint chain that
test_distributed.py drives (save on 3 ranks, resume on 2, then in a plain SGD)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from mpi_common import (HALF_SHAPES, SHAPES, _same_state_dict_on_all_ranks, _train, assert_bitwise, case, local_grad,
                        make_params, same_on_all_ranks, set_grads, snapshot)


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
