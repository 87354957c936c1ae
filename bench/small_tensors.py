"""Issue 13's targets on a shared machine: ratios in CPU time, interleaved rounds, one thread.

    python bench/small_tensors.py            # about two minutes

`python -m minimalsgd bench` reports wall-clock medians; on a machine shared with other jobs
(load well above its core count) a multi-thread row then measures the scheduler (an OpenMP
barrier waits for a descheduled thread), and even a one-thread sample is preempted now and then.
Here every row is the CPU time of the calling thread (`time.thread_time`), one OpenMP thread,
each round takes one sample of every row in turn, and a ratio is the median of the per-round
ratios. The C loops are timed 1000 calls at a time inside C++ (`_bench_core._time_calls`), so that
their Python call is amortised.

1. 1000 tensors x 1000 through SGD.step() (separate arrays, and after pack_params) against the
   yardstick loop over one buffer of the same 1M elements (target: within 1.3x).
2. One 4K tensor through the functional sgd_step against the yardstick loop and the bare fused
   kernel (target: within 2.5x of the bare C loop).
3. The NumPy backend (SGD(backend="numpy").step) against the classic NumPy param-dict code at
   every size of the bench (target: at or under 1.0x).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

import minimalsgd
from minimalsgd import SGD, pack_params
from minimalsgd import _functional as F
from minimalsgd._bench import Case, ClassicNumpySGD, _make_arrays, _param_dict, resnet50_shapes

LR, MU, WD = 0.01, 0.9, 1e-4


def cpu(f, k: int) -> float:
    t0 = time.thread_time()
    for _ in range(k):
        f()
    return (time.thread_time() - t0) / k


def rounds(rows: dict, n: int) -> dict[str, list[float]]:
    """rows: name -> (fn, calls per sample, calls per fn call)."""
    res: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(n):
        for name, (f, k, per) in rows.items():
            f()
            res[name].append(cpu(f, k) / per)
    return res


def report(title: str, res: dict[str, list[float]], base: str) -> None:
    print(f"\n{title}")
    for name, v in res.items():
        ratio = statistics.median(a / b for a, b in zip(v, res[base]))
        print(f"  {name:44s} {statistics.median(v) * 1e6:10.2f} us  {ratio:5.2f}x")


def many_small(bench_core) -> None:
    values, grads = _make_arrays(Case("x", [(1000,)] * 1000), np.dtype(np.float32))
    sep = SGD(_param_dict(values, grads), lr=LR, momentum=MU, nesterov=True, weight_decay=WD)
    packed = _param_dict([v.copy() for v in values], [g.copy() for g in grads])
    pack_params(packed)
    pk = SGD(packed, lr=LR, momentum=MU, nesterov=True, weight_decay=WD)
    yw, yg, yv = (np.full(1_000_000, 0.5, np.float32) for _ in range(3))
    res = rounds({
        "limit: yardstick loop over 1M": (lambda: bench_core._time_calls("stream", yw, yg, yv, 1, 10, threads=1), 2, 10),
        "SGD.step, 1000 separate arrays": (sep.step, 10, 1),
        "SGD.step after pack_params": (pk.step, 10, 1),
    }, 21)
    report("1000 tensors x 1000, float32 (vs the limit; target 1.3x)", res, "limit: yardstick loop over 1M")


def one_4k(bench_core) -> None:
    n = 4096
    w = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    g = np.full(n, 0.01, np.float32)
    b = np.zeros(n, np.float32)
    sw, sg, sv = (np.full(n, 0.5, np.float32) for _ in range(3))
    opt = SGD({"w": {"value": w.copy(), "grad": g.copy()}}, lr=LR, momentum=MU, nesterov=True, weight_decay=WD)
    vals, grs, bufs = [w], [g], [b]
    res = rounds({
        "limit: yardstick loop": (lambda: bench_core._time_calls("stream", sw, sg, sv, 1, 1000, threads=1), 2, 1000),
        "bare fused kernel call (C++)": (lambda: bench_core._time_calls("step", sw, sg, sv, 1, 1000, threads=1), 2, 1000),
        "sgd_step (functional)": (lambda: minimalsgd.sgd_step(vals, grs, bufs, lr=LR, momentum=MU, nesterov=True,
                                                               weight_decay=WD), 2000, 1),
        "SGD.step": (opt.step, 2000, 1),
    }, 21)
    report("one 4K tensor, float32 (vs the yardstick loop; target for sgd_step 2.5x)", res, "limit: yardstick loop")
    report("  the same against the bare fused kernel", res, "bare fused kernel call (C++)")


def numpy_backend() -> None:
    sizes = {"one 4K tensor": [(4096,)], "one 1M tensor": [(1 << 20,)], "1000 tensors x 1000": [(1000,)] * 1000,
             "one 16M tensor": [(1 << 24,)], "ResNet-50 set": resnet50_shapes()}
    print("\nNumPy backend (SGD(backend='numpy').step) vs the classic NumPy param-dict code (target <= 1.0x)")
    for name, shapes in list(sizes.items()) + [("ResNet-50 set, clip + step", resnet50_shapes())]:
        clip = 1.0 if "clip" in name else None
        values, grads = _make_arrays(Case(name, shapes), np.dtype(np.float32))
        a = SGD(_param_dict(values, grads), lr=LR, momentum=MU, nesterov=True, weight_decay=WD, clip_grad_norm=clip,
                backend="numpy")
        c = ClassicNumpySGD(_param_dict(values, grads), LR, MU, True, WD, clip)
        numel = sum(int(np.prod(s)) for s in shapes)
        k = max(1, int(4e5 // numel))
        res = rounds({"numpy": (a.step, k, 1), "classic": (c.step, k, 1)}, 21 if numel < 1e7 else 7)
        ratio = statistics.median(x / y for x, y in zip(res["numpy"], res["classic"]))
        print(f"  {name:28s} NumPy backend {statistics.median(res['numpy']) * 1e6:10.1f} us   "
              f"classic {statistics.median(res['classic']) * 1e6:10.1f} us   {ratio:5.2f}x")


def main() -> None:
    core = F._core
    if core is None:
        raise SystemExit("needs the native extension")
    saved = core.get_num_threads_setting()
    core.set_num_threads(1)
    from minimalsgd import _bench_core

    try:
        many_small(_bench_core)
        one_4k(_bench_core)
        numpy_backend()
    finally:
        core.set_num_threads(saved)


if __name__ == "__main__":
    main()
