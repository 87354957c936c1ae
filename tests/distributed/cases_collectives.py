"""The collectives on their own: allreduce_grads (sum, mean, groups, in place on an arena),
broadcast_params, shared_seed."""

from __future__ import annotations

from typing import Any

import numpy as np
from mpi_common import case, local_grad, make_params, set_grads
from oracle import wide


@case
def shared_seed_is_one_seed(comm: Any) -> None:
    """shared_seed(): one random 64-bit seed, the same on every rank, another at each call."""
    from minimalsgd.distributed import shared_seed

    seeds = [shared_seed(comm) for _ in range(3)]
    assert all(isinstance(x, int) and 0 <= x < 2**64 for x in seeds), seeds
    assert len(set(seeds)) == 3, seeds
    assert comm.allgather(seeds) == [seeds] * comm.size


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
