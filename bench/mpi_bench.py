"""The MPI benchmark: what a data-parallel step costs per rank (not collected by pytest).

    OMP_NUM_THREADS=1 mpiexec -n 1 python bench/mpi_bench.py
    OMP_NUM_THREADS=1 mpiexec -n 2 python bench/mpi_bench.py [--sizes 1e6,4e6,16e6] [--reps 20] [--json out.json]
        [--dtype bfloat16] [--stochastic] [--clip 0.1] [--steps-only]

For each size (float32 elements, in four params: 1/2, 1/4, 1/8, 1/8 of the total), timed on every
rank and reported as the median over repetitions of the slowest rank:

* ``allreduce``: ``MPI.Allreduce`` of all grads (the textbook data-parallel reduction, for reference);
* ``reduce-scatter`` and ``allgather``: the two collectives of a ShardedSGD step (grads in, values out);
* ``kernel(slice)``: the fused kernel on this rank's slice, the sharded step's compute, and
  ``kernel(full)``: the same kernel on all elements, what every rank computes without sharding;
* ``ShardedSGD.step``: the whole sharded step, and ``allreduce_grads+SGD``: the unsharded alternative,
  on separate arrays (packed into flat copies each step) and on ``packed`` params (values and grads
  views of one buffer each, as ``minimalsgd.pack_params`` makes them: the collectives run in place);
* ``state/rank``: the momentum bytes this rank holds, against the full state.

Momentum 0.9 with Nesterov and weight decay (the 20-byte-per-element step of DESIGN.md).
``--dtype bfloat16`` (or float16) steps 16-bit params (``--stochastic``: stochastic rounding),
``--clip C`` adds ``clip_grad_norm=C`` (small enough to engage), ``--steps-only`` times only the
four optimizer steps (for A/B runs of the Python layer).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any, Callable

import numpy as np
from mpi4py import MPI

import minimalsgd
from minimalsgd.distributed import ShardedSGD, allreduce_grads, partition

HYPER: dict[str, Any] = dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
KERNEL = dict(HYPER)  # the functional step's arguments (no clip)


def timed(comm: Any, fn: Callable[[], Any], reps: int, warmup: int = 2) -> float:
    """Median seconds of ``fn`` over ``reps`` runs, each started together (barrier); the slowest rank's."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return comm.allreduce(statistics.median(times), op=MPI.MAX)


DTYPE: Any = np.float32
#: None: four params (1/2, 1/4, 1/8, 1/8 of the total); else a list of shapes (``--model resnet50``).
SHAPES: list[tuple[int, ...]] | None = None


def make_params(total: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    if SHAPES is not None:
        return {f"p{i}": {"value": rng.standard_normal(s).astype(np.float32).astype(DTYPE),
                          "grad": rng.standard_normal(s).astype(np.float32).astype(DTYPE)}
                for i, s in enumerate(SHAPES)}
    parts = [total // 2, total // 4, total // 8, total - total // 2 - total // 4 - total // 8]
    return {f"p{i}": {"value": rng.standard_normal(n).astype(np.float32).astype(DTYPE),
                      "grad": rng.standard_normal(n).astype(np.float32).astype(DTYPE)}
            for i, n in enumerate(parts)}


def packed(params: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """The params with values and grads moved into one buffer each (``minimalsgd.pack_params``)."""
    minimalsgd.pack_params(params)
    return params


def bench_size(comm: Any, total: int, reps: int, steps_only: bool = False) -> dict[str, Any]:
    rank, size = comm.rank, comm.size
    if steps_only:
        return bench_steps(comm, total, reps)
    params = make_params(total, seed=0)
    grads = np.concatenate([p["grad"] for p in params.values()])
    counts, displs = partition(total, size)
    mine = np.empty(counts[rank], np.float32)
    values = np.concatenate([p["value"] for p in params.values()])
    row: dict[str, Any] = {"ranks": size, "elements": total}

    buf = grads.copy()
    row["allreduce"] = timed(comm, lambda: comm.Allreduce(MPI.IN_PLACE, [buf, MPI.FLOAT], op=MPI.SUM), reps)
    row["reduce-scatter"] = timed(comm, lambda: comm.Reduce_scatter([grads, MPI.FLOAT], [mine, MPI.FLOAT], counts, op=MPI.SUM), reps)
    row["allgather"] = timed(comm, lambda: comm.Allgatherv(MPI.IN_PLACE, [values, counts, displs, MPI.FLOAT]), reps)

    lo, hi = displs[rank], displs[rank] + counts[rank]
    w_slice, g_slice, v_slice = values[lo:hi].copy(), grads[lo:hi].copy(), np.zeros(hi - lo, np.float32)
    row["kernel(slice)"] = timed(comm, lambda: minimalsgd.sgd_step(w_slice, g_slice, v_slice, **KERNEL), reps)
    w_full, g_full, v_full = values.copy(), grads.copy(), np.zeros(total, np.float32)
    row["kernel(full)"] = timed(comm, lambda: minimalsgd.sgd_step(w_full, g_full, v_full, **KERNEL), reps)
    del w_full, g_full, v_full

    sharded = ShardedSGD(params, comm, **HYPER)
    row["ShardedSGD.step"] = timed(comm, sharded.step, reps)
    row["state/rank"] = sharded.state_bytes
    row["state(full)"] = total * 4
    del sharded, params
    row.update(bench_steps(comm, total, reps))
    return row


def bench_steps(comm: Any, total: int, reps: int) -> dict[str, Any]:
    """The four optimizer steps: ShardedSGD.step and allreduce_grads + SGD.step, unpacked and packed."""
    row: dict[str, Any] = {"ranks": comm.size, "elements": total}
    params = make_params(total, seed=0)
    sharded = ShardedSGD(params, comm, **HYPER)
    row["ShardedSGD.step"] = timed(comm, sharded.step, reps)
    plain_params = make_params(total, seed=0)
    plain = minimalsgd.SGD(plain_params, **HYPER)

    def unsharded() -> None:
        allreduce_grads(plain_params, comm)
        plain.step()

    row["allreduce_grads+SGD"] = timed(comm, unsharded, reps)
    del sharded, plain, plain_params, params

    arena = packed(make_params(total, seed=0))
    sharded = ShardedSGD(arena, comm, **HYPER)
    row["ShardedSGD.step packed"] = timed(comm, sharded.step, reps)
    del sharded
    plain = minimalsgd.SGD(arena, **HYPER)

    def unsharded_packed() -> None:
        allreduce_grads(arena, comm)
        plain.step()

    row["allreduce_grads+SGD packed"] = timed(comm, unsharded_packed, reps)
    return row


def fmt_time(s: float) -> str:
    return f"{s * 1e3:8.2f} ms" if s >= 1e-3 else f"{s * 1e6:8.1f} us"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e6,4e6,16e6", help="comma-separated float32 element counts")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", help="write the rows here (rank 0)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--stochastic", action="store_true", help="stochastic rounding (16-bit dtypes)")
    ap.add_argument("--clip", type=float, default=None, help="clip_grad_norm")
    ap.add_argument("--steps-only", action="store_true", help="time only the optimizer steps")
    ap.add_argument("--model", choices=["four", "resnet50"], default="four",
                    help="four params of --sizes elements, or ResNet-50's 161 shapes (--sizes ignored)")
    args = ap.parse_args()
    global SHAPES
    if args.model == "resnet50":
        from minimalsgd._bench import resnet50_shapes

        SHAPES = [tuple(s) for s in resnet50_shapes()]
        args.sizes = str(sum(int(np.prod(s)) for s in SHAPES))
    if args.dtype != "float32" or args.model != "four":
        args.steps_only = True  # the raw collectives and kernels are float32 over four params
    global DTYPE
    if args.dtype == "bfloat16":
        import ml_dtypes

        DTYPE = ml_dtypes.bfloat16
    else:
        DTYPE = np.dtype(args.dtype).type
    if args.stochastic:
        HYPER["stochastic_rounding"] = True
    if args.clip is not None:
        HYPER["clip_grad_norm"] = args.clip
    comm = MPI.COMM_WORLD
    rows = [bench_size(comm, int(float(s)), args.reps, args.steps_only) for s in args.sizes.split(",")]
    if comm.rank != 0:
        return
    print(f"minimalsgd {minimalsgd.__version__}, {comm.size} rank(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"{MPI.Get_library_version().splitlines()[0]}; median of {args.reps}, slowest rank; {args.dtype}, {HYPER}")
    collectives = ["allreduce", "reduce-scatter", "allgather", "kernel(slice)", "kernel(full)"]
    tables = [collectives, ["ShardedSGD.step", "allreduce_grads+SGD", "ShardedSGD.step packed", "allreduce_grads+SGD packed"]]
    if args.steps_only:
        tables = tables[1:]
    for cols in tables:
        first = cols is collectives
        print(f"| elements | " + " | ".join(cols) + (" | state/rank (full) |" if first else " |"))
        print("| ---: " * (len(cols) + 1 + first) + "|")
        for r in rows:
            cells = [fmt_time(r[c]).strip() for c in cols]
            if first:
                cells.append(f"{r['state/rank'] / 2**20:.2f} MiB ({r['state(full)'] / 2**20:.2f})")
            print(f"| {r['elements']:,} | " + " | ".join(cells) + " |")
        print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ranks": comm.size, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "dtype": args.dtype,
                       "hyper": HYPER, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
