"""``python -m minimalsgd bench``: the fused step against NumPy, PyTorch and the memory bus.

Every case runs side by side in one process: the yardstick (a plain C streaming loop of the same
shape, compiled into the bench's own extension ``_bench_core``, clearly labelled), minimalsgd
native (all threads and one), minimalsgd's NumPy backend, the classic NumPy param-dict SGD (the
pure-Python baseline), and when installed torch.optim.SGD (default, foreach, fused), the
minimalsgd.torch drop-in, and a numba loop.
The AdamW cases do the same with AdamW (the yardstick: a plain C Adam loop, 4 reads and 3 writes).
Each timing is the median of many repetitions after a warm-up; ratios are within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import _functional as F
from . import _half
from ._config import backend_info
from ._arena import pack_params
from .adam import AdamW
from .optim import SGD
from .schedules import warmup_cosine

LR, MOMENTUM, WD, CLIP = 0.01, 0.9, 1e-4, 1.0  # Nesterov on: the configuration
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)  # torch's AdamW defaults
LIMIT = "limit: plain C stream loop (yardstick)"
LIMIT_HALF = "limit: plain C stream loop, 16-bit (yardstick)"
BASELINE = "classic NumPy param-dict (baseline)"


# ---------------------------------------------------------------------------------------------
# Parameter sets


def resnet50_shapes() -> list[tuple[int, ...]]:
    """The 161 parameter tensors of torchvision's ResNet-50 (25,557,032 values)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for planes, blocks in [(64, 3), (128, 4), (256, 6), (512, 3)]:
        for b in range(blocks):
            out = planes * 4
            shapes += [(planes, inplanes, 1, 1), (planes,), (planes,)]
            shapes += [(planes, planes, 3, 3), (planes,), (planes,)]
            shapes += [(out, planes, 1, 1), (out,), (out,)]
            if b == 0:
                shapes += [(out, inplanes, 1, 1), (out,), (out,)]
            inplanes = out
    shapes += [(1000, 2048), (1000,)]
    return shapes


@dataclass
class Case:
    name: str
    shapes: list[tuple[int, ...]]
    clip: bool = False
    per_call: bool = False  # report microseconds per call (tiny tensors)
    groups: bool = False  # SGD.step with two param groups and an lr schedule (minimalsgd rows only)
    optimizer: str = "sgd"  # "sgd" (momentum + Nesterov + weight decay) or "adamw"

    @property
    def numel(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))


def cases(quick: bool, dtype: np.dtype | None = None) -> list[Case]:
    if dtype is not None and _half.is_half(dtype):
        # 16-bit storage: the memory-bound sizes the targets name, and a model's set.
        half = [Case("one 1M tensor", [(1 << 20,)]), Case("one 16M tensor", [(1 << 24,)]),
                Case("ResNet-50 set (161 tensors)", resnet50_shapes())]
        if not quick:
            half.insert(2, Case("one 64M tensor", [(1 << 26,)]))
        return half
    out = [
        Case("one 4K tensor", [(4096,)], per_call=True),
        Case("one 1M tensor", [(1 << 20,)]),
        Case("1000 tensors x 1000", [(1000,)] * 1000),
        Case("one 16M tensor", [(1 << 24,)]),
        Case("ResNet-50 set (161 tensors)", resnet50_shapes()),
        Case("ResNet-50 set, clip + step", resnet50_shapes(), clip=True),
        Case("ResNet-50 set, 2 groups + schedule", resnet50_shapes(), groups=True),
        Case("AdamW: one 16M tensor", [(1 << 24,)], optimizer="adamw"),
        Case("AdamW: ResNet-50 set", resnet50_shapes(), optimizer="adamw"),
        Case("AdamW: ResNet-50 set, clip + step", resnet50_shapes(), clip=True, optimizer="adamw"),
    ]
    if not quick:
        out.insert(4, Case("one 64M tensor", [(1 << 26,)]))
        out.insert(-2, Case("AdamW: one 64M tensor", [(1 << 26,)], optimizer="adamw"))
    return out


# ---------------------------------------------------------------------------------------------
# Timing


@dataclass
class Row:
    case: str
    backend: str
    dtype: str
    numel: int
    tensors: int
    seconds: float
    bytes_moved: int
    limit_seconds: float | None = None
    baseline_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gbps(self) -> float:
        return self.bytes_moved / self.seconds / 1e9

    @property
    def pct_of_limit(self) -> float | None:
        return None if self.limit_seconds is None else 100.0 * self.limit_seconds / self.seconds

    @property
    def speedup(self) -> float | None:
        return None if self.baseline_seconds is None else self.baseline_seconds / self.seconds


# ---------------------------------------------------------------------------------------------
# The classic NumPy param-dict SGD: the pure-Python baseline


def _classic_clip_scale(params: dict, clip: float | None) -> float:
    """The classic clip: max_norm / (total + 1e-12) when the global norm exceeds max_norm."""
    if clip is not None:
        total = np.sqrt(sum(np.sum(p["grad"] ** 2) for p in params.values()))
        if total > clip:
            return clip / (total + 1e-12)
    return 1.0


class ClassicNumpyAdamW:
    """The textbook param-dict AdamW: w *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
    w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps); global-norm clip first."""

    def __init__(self, params: dict, clip: float | None, lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float):
        self.params, self.clip, self.lr, self.betas, self.eps, self.wd = params, clip, lr, betas, eps, weight_decay
        self.m = {k: np.zeros_like(p["value"]) for k, p in params.items()}
        self.v = {k: np.zeros_like(p["value"]) for k, p in params.items()}
        self.t = 0

    def step(self) -> None:
        scale = _classic_clip_scale(self.params, self.clip)
        self.t += 1
        b1, b2 = self.betas
        for k, p in self.params.items():
            g = p["grad"] * scale if scale != 1.0 else p["grad"]
            p["value"] *= 1 - self.lr * self.wd
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat = self.m[k] / (1 - b1**self.t)
            v_hat = self.v[k] / (1 - b2**self.t)
            p["value"] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class ClassicNumpySGD:
    """The textbook param-dict SGD: g += wd*w; v = mu*v + g; update = g + mu*v; w -= lr*update."""

    def __init__(self, params: dict, lr: float, momentum: float, nesterov: bool, weight_decay: float, clip: float | None):
        self.params, self.lr, self.momentum, self.nesterov, self.wd, self.clip = params, lr, momentum, nesterov, weight_decay, clip
        self.v = {k: np.zeros_like(p["value"]) for k, p in params.items()}

    def step(self) -> None:
        scale = _classic_clip_scale(self.params, self.clip)
        for k, p in self.params.items():
            g = p["grad"] * scale if scale != 1.0 else p["grad"]
            g = g + self.wd * p["value"]
            self.v[k] = self.momentum * self.v[k] + g
            update = g + self.momentum * self.v[k] if self.nesterov else self.v[k]
            p["value"] -= self.lr * update


# ---------------------------------------------------------------------------------------------
# Backends


def _make_arrays(case: Case, dtype: np.dtype, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s, dtype=np.float64).astype(dtype) for s in case.shapes]
    grads = [(rng.standard_normal(s, dtype=np.float64) * 0.01).astype(dtype) for s in case.shapes]
    return values, grads


def _param_dict(values: list[np.ndarray], grads: list[np.ndarray]) -> dict:
    return {f"p{i}": {"value": v, "grad": g} for i, (v, g) in enumerate(zip(values, grads))}


def _optional(name: str) -> Any:
    try:
        return __import__(name)
    except Exception:
        return None


def _numba_step() -> Callable | None:
    numba = _optional("numba")
    if numba is None:
        return None

    @numba.njit(parallel=True, fastmath=False, cache=False)
    def step(w, g, v, lr, mu, wd, scale):  # pragma: no cover - compiled
        for i in numba.prange(w.shape[0]):
            gi = g[i] * scale + wd * w[i]
            vi = mu * v[i] + gi
            v[i] = vi
            w[i] = w[i] - lr * (gi + mu * vi)

    return step


ONE_GROUP_ROW = "minimalsgd SGD.step, one group"
GROUPS_ROW = "minimalsgd SGD.step, 2 groups + schedule"


class Progress:
    """One progress bar (tqdm) redrawn in place on stderr while the rounds run: the case, what is
    being timed, and the round. Off when tqdm is missing, when stdout or stderr is not a terminal
    (tqdm's ``disable=None``: a log or a pipe gets no bar), or with ``--json``."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._tqdm: Any = None
        if enabled and sys.stdout.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            self._tqdm = tqdm

    def __call__(self, what: str, done: int, total: int) -> None:
        if self._tqdm is None:
            return
        if self._bar is None:
            self._bar = self._tqdm(total=total, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True,
                                   unit="round", bar_format="{desc} {bar} {n_fmt}/{total_fmt} [{elapsed}]")
        if self._bar.total != total:
            self._bar.reset(total=total)
        self._bar.set_description_str(what, refresh=False)
        self._bar.n = done
        self._bar.refresh()

    def clear(self) -> None:
        """Take the bar off the screen (before printing a table; the next call redraws it)."""
        if self._bar is not None:
            self._bar.clear()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def run_case(case: Case, dtype: np.dtype, quick: bool, progress: Callable[[str, int, int], None]) -> list[Row]:
    """Every row of one case. The yardstick and minimalsgd's rows are timed side by side: each
    round takes one sample of each in turn, and a row's time is its median over the rounds, so
    that they see the same drift of a shared machine's memory speed. Peers follow, each alone."""
    core = F._core
    n = case.numel
    itemsize = np.dtype(dtype).itemsize
    adamw = case.optimizer == "adamw"
    # Per float32 element: SGD reads w, g, v and writes w, v (20 B); AdamW reads w, g, m, v and
    # writes w, m, v (28 B); the clip's norm pass reads g once more (4 B).
    bytes_moved = ((28 if adamw else 20) + (4 if case.clip else 0)) * n * itemsize // 4
    big = n >= (1 << 22)
    rounds = (7 if big else 25) if quick else (15 if big else 60)
    budget = 3.0 if quick else 20.0
    # Calls per sample: many for tiny steps; a few for cache-sized ones. Every sample starts with
    # one untimed call, so that a cache-sized case is timed warm even though the rows of a round
    # evict each other's data.
    inner = (200 if quick else 1000) if case.per_call else (1 if big else 5)
    dname = np.dtype(dtype).name
    half = _half.is_half(dtype)
    clip = CLIP if case.clip else None
    samplers: list[tuple[str, Callable[[], float], bool]] = []

    def python_row(label: str, fn: Callable[[], Any], threads: int | None = None, interleave: bool = False) -> None:
        def sample() -> float:
            saved = core.get_num_threads_setting() if threads is not None else None
            if threads is not None:
                core.set_num_threads(threads)
            try:
                fn()
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                return (time.perf_counter() - t0) / inner
            finally:
                if saved is not None:
                    core.set_num_threads(saved)

        samplers.append((label, sample, interleave))

    # The yardstick: a plain C streaming loop of the same shape (3 reads, 2 writes) over one
    # buffer of the same total size, in C++ with no Python in the loop; the better of 1 thread
    # and all. With clipping, plus a plain read-only loop (sum of g*g) for the norm pass.
    if core is not None:
        from . import _bench_core  # built with _core: the yardsticks and C++ timing live there

        # Real data in every buffer: an untouched np.zeros array maps the shared zero page,
        # whose reads hit the cache and would flatter the limit.
        yw, yg, yv = (np.full(n, 0.5, dtype) for _ in range(3))
        ym = np.full(n, 0.5, dtype) if adamw else None
        c_inner = max(1, (1 << 22) // n)
        threads = (1, core.get_num_threads())

        def c_sample(kind: str, t: int) -> float:
            return _bench_core._time_calls(kind, yw, yg, yv, 2, c_inner, threads=t, m=ym)[1]  # the first batch warms

        def yardstick() -> float:
            best = min(c_sample("adam_stream" if adamw else "stream", t) for t in threads)
            if case.clip:
                best += min(c_sample("read", t) for t in threads)
            return best

        samplers.append((LIMIT if not half else LIMIT_HALF, yardstick, True))
        if case.per_call:
            samplers.append(("minimalsgd bare C++ call (no Python)", lambda: c_sample("step", 1), True))

    values, grads = _make_arrays(case, dtype)
    if adamw:
        _adamw_rows(values, grads, clip, python_row)
    elif case.groups:
        # Two groups (weights with weight decay; biases and norms, the 1-D tensors, without) and a
        # warmup-then-cosine schedule, against the same tensors as one group with a constant lr,
        # side by side: the ratio is the cost of groups and a schedule.
        if core is not None:
            def grouped(**kw: Any) -> SGD:
                d = _param_dict(values, grads)
                w = {k: p for k, p in d.items() if p["value"].ndim > 1}
                b = {k: p for k, p in d.items() if p["value"].ndim <= 1}
                return SGD([{"params": w}, {"params": b, "weight_decay": 0.0}],
                           lr=warmup_cosine(LR, 100, 10**9), momentum=MOMENTUM, nesterov=True, weight_decay=WD, **kw)

            one = SGD(_param_dict(values, grads), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD)
            python_row(ONE_GROUP_ROW, one.step, threads=0, interleave=True)
            python_row(GROUPS_ROW, grouped().step, threads=0, interleave=True)
        baseline_opt = ClassicNumpySGD(_param_dict(values, grads), LR, MOMENTUM, True, WD, clip)
        python_row(BASELINE, baseline_opt.step)
        samplers[:] = [x for x in samplers if x[0] != "minimalsgd bare C++ call (no Python)"]
    elif core is not None:
        opt = SGD(_param_dict(values, grads), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD, clip_grad_norm=clip)
        python_row(f"minimalsgd SGD.step ({core.get_num_threads()} threads)", opt.step, threads=0, interleave=True)
        opt1 = SGD(_param_dict(values, grads), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD, clip_grad_norm=clip)
        python_row("minimalsgd SGD.step (1 thread)", opt1.step, threads=1, interleave=True)
        if half:
            opt_sr = SGD(_param_dict(values, grads), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD,
                         clip_grad_norm=clip, stochastic_rounding=True, seed=0)
            python_row(f"minimalsgd SGD.step stochastic rounding ({core.get_num_threads()} threads)", opt_sr.step,
                       threads=0, interleave=True)
        if len(case.shapes) > 1:
            packed = _param_dict([v.copy() for v in values], [g.copy() for g in grads])
            pack_params(packed)
            opt_pk = SGD(packed, lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD, clip_grad_norm=clip)
            python_row(f"minimalsgd SGD.step, pack_params ({core.get_num_threads()} thr)", opt_pk.step, threads=0,
                       interleave=True)
        if not case.clip and len(case.shapes) == 1:
            bufs = [np.zeros_like(values[0])]
            python_row(
                "minimalsgd sgd_step (functional)",
                lambda: F.sgd_step(values, grads, bufs, lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD),
                interleave=True,
            )
    if not case.groups and not adamw:  # the peers: as in the one-group case above it
        if not half or n <= (1 << 20):  # 16-bit: NumPy's float32 temporaries are slow at DRAM sizes
            opt_np = SGD(_param_dict(values, grads), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD,
                         clip_grad_norm=clip, backend="numpy")
            python_row("minimalsgd NumPy backend", opt_np.step)
        if not half:
            classic = ClassicNumpySGD(_param_dict(values, grads), LR, MOMENTUM, True, WD, clip)
            python_row(BASELINE, classic.step)

        numba_step = _numba_step()
        if numba_step is not None and not case.clip and not half:
            nbufs = [np.zeros_like(x) for x in values]
            flat = [(x.reshape(-1), g.reshape(-1), b.reshape(-1)) for x, g, b in zip(values, grads, nbufs)]
            t = dtype.type

            def numba_all() -> None:
                for w, g, b in flat:
                    numba_step(w, g, b, t(LR), t(MOMENTUM), t(WD), t(1))

            python_row("numba parallel loop (one call per tensor)", numba_all)

        torch = _optional("torch")
        if torch is not None:
            for label, fn in _torch_rows(torch, values, grads, clip):
                python_row(label, fn)

    # The yardstick and minimalsgd's rows (one OpenMP runtime) in interleaved rounds; then each
    # peer in a block of its own rounds, since torch's and numba's thread pools keep spinning on
    # the cores for a while after each call and would tax whatever ran next. Two warm-up rounds
    # each (buffers are created, plans built, numba compiled).
    samples: dict[str, list[float]] = {label: [] for label, _, _ in samplers}

    def run_rounds(group: list[tuple[str, Callable[[], float], bool]], what: str) -> None:
        start = time.perf_counter()
        for r in range(rounds + 2):
            progress(f"{case.name} ({dname}): {what}", r, rounds + 2)
            for label, sample, _ in group:
                value = sample()
                if r >= 2:
                    samples[label].append(value)
            if r >= 6 and time.perf_counter() - start > budget:
                break

    run_rounds([x for x in samplers if x[2]], "yardstick and minimalsgd")
    for x in samplers:
        if not x[2]:
            run_rounds([x], x[0])
    rows = [Row(case.name, label, dname, n, len(case.shapes), statistics.median(samples[label]), bytes_moved) for label, _, _ in samplers]
    limit_label = LIMIT_HALF if half else LIMIT
    limit = statistics.median(samples[limit_label]) if limit_label in samples else None
    baseline = statistics.median(samples[BASELINE]) if BASELINE in samples else None
    for row in rows:
        row.limit_seconds = limit
        row.baseline_seconds = baseline
        row.extra["rounds"] = len(samples[row.backend])
    return rows


def _adamw_rows(values: list[np.ndarray], grads: list[np.ndarray], clip: float | None,
                python_row: Callable[..., None]) -> None:
    """The AdamW cases' rows: minimalsgd (all threads and one; side by side with the yardstick),
    its NumPy backend, the classic NumPy AdamW, and torch's AdamW and the drop-in when installed."""
    core = F._core
    if core is not None:
        opt = AdamW(_param_dict(values, grads), clip_grad_norm=clip, **ADAMW)
        python_row(f"minimalsgd AdamW.step ({core.get_num_threads()} threads)", opt.step, threads=0, interleave=True)
        opt1 = AdamW(_param_dict(values, grads), clip_grad_norm=clip, **ADAMW)
        python_row("minimalsgd AdamW.step (1 thread)", opt1.step, threads=1, interleave=True)
    opt_np = AdamW(_param_dict(values, grads), clip_grad_norm=clip, backend="numpy", **ADAMW)
    python_row("minimalsgd NumPy backend", opt_np.step)
    python_row(BASELINE, ClassicNumpyAdamW(_param_dict(values, grads), clip, **ADAMW).step)  # type: ignore[arg-type]
    torch = _optional("torch")
    if torch is not None:
        for label, fn in _torch_rows(torch, values, grads, clip, "AdamW"):
            python_row(label, fn)


def _torch_rows(torch, values, grads, clip, name: str = "SGD") -> list[tuple[str, Callable[[], Any]]]:
    """torch.optim.<name> (default, foreach, fused) and minimalsgd.torch.<name> (the drop-in)."""
    torch.set_num_threads(max(1, F._core.get_num_threads() if F._core is not None else os.cpu_count() or 1))
    out: list[tuple[str, Callable[[], Any]]] = []
    ref = getattr(torch.optim, name)
    classes: list[tuple[str, Any, dict]] = [
        (f"torch.optim.{name} default", ref, {}),
        (f"torch.optim.{name} foreach", ref, {"foreach": True}),
        (f"torch.optim.{name} fused", ref, {"fused": True}),
    ]
    try:
        from . import torch as msgd_torch  # the drop-in

        classes.append((f"minimalsgd.torch.{name} (drop-in)", getattr(msgd_torch, name), {}))
    except Exception:
        pass
    def tensor(a: np.ndarray) -> Any:
        if _half.BFLOAT16 is not None and a.dtype == _half.BFLOAT16:
            return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
        return torch.from_numpy(a.copy())

    hyper = ADAMW if name == "AdamW" else dict(lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD)
    for label, cls, kwargs in classes:
        params = [torch.nn.Parameter(tensor(v)) for v in values]
        for p, g in zip(params, grads):
            p.grad = tensor(g)
        try:
            opt = cls(params, **hyper, **kwargs)
        except Exception:
            continue

        def fn(opt=opt, params=params) -> None:
            with torch.no_grad():
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
                opt.step()

        out.append((label, fn))
    return out


# ---------------------------------------------------------------------------------------------
# Sweep for the plot


def sweep(dtype: np.dtype, quick: bool, progress: Callable[[str, int, int], None]) -> list[Row]:
    sizes = [1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24] + ([] if quick else [1 << 26])
    rows: list[Row] = []
    for s in sizes:
        c = Case(f"sweep {s}", [(s,)], per_call=s <= (1 << 14))
        rows += [r for r in run_case(c, dtype, True, progress) if not r.backend.startswith("minimalsgd sgd_step")]
    return rows


def plot(rows: list[Row], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(9, 5.5))
    backends = []
    for r in rows:
        if r.backend not in backends:
            backends.append(r.backend)
    for b in backends:
        pts = sorted((r.numel, r.gbps) for r in rows if r.backend == b)
        style = dict(color="black", linestyle="--", linewidth=2) if b.startswith("limit") else dict(marker="o")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=b, **style)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("elements in the tensor")
    ax.set_ylabel("GB/s (bytes the step must move / time)")
    ax.set_title(f"SGD step, momentum + Nesterov + weight decay, {rows[0].dtype} — {_cpu_name()}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# ---------------------------------------------------------------------------------------------
# Report


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    info = backend_info()
    torch = sys.modules.get("torch")
    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "isa": info.get("isa"),
        "threads": info.get("num_threads"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None),
        "minimalsgd": info.get("version"),
    }


def format_table(rows: list[Row]) -> str:
    lines = []
    header = f"{'backend':<44} {'time':>10} {'ns/elem':>8} {'GB/s':>7} {'% limit':>8} {'vs NumPy':>9}"
    current = None
    for r in rows:
        if r.case != current:
            current = r.case
            lines.append("")
            lines.append(f"== {r.case} ({r.dtype}, {r.numel:,} elements in {r.tensors} tensor{'s' if r.tensors > 1 else ''}) ==")
            lines.append(header)
        t = f"{r.seconds * 1e6:.2f} us" if r.seconds < 1e-3 else f"{r.seconds * 1e3:.2f} ms"
        pct = "" if r.pct_of_limit is None else f"{r.pct_of_limit:.0f}%"
        sp = "" if r.speedup is None else f"{r.speedup:.1f}x"
        lines.append(f"{r.backend:<44} {t:>10} {r.seconds / r.numel * 1e9:>8.3f} {r.gbps:>7.1f} {pct:>8} {sp:>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minimalsgd bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no 64M case (about a minute)")
    parser.add_argument("--dtype", choices=["float32", "float64", "both", "bfloat16", "float16", "half", "all"],
                        default="float32",
                        help="both: float32 and float64; half: bfloat16 and float16; all: float32, bfloat16, float16")
    parser.add_argument("--case", action="append", default=None, help="run only cases whose name contains this (repeatable)")
    parser.add_argument("--json", metavar="FILE", help="write the rows and the machine as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw GB/s against size per backend (needs matplotlib)")
    parser.add_argument("--no-torch", action="store_true", help="leave torch out even if installed")
    args = parser.parse_args(argv)

    if args.no_torch:
        sys.modules["torch"] = None  # type: ignore[assignment]
    named = {"both": ["float32", "float64"], "half": ["bfloat16", "float16"], "all": ["float32", "bfloat16", "float16"]}
    dtypes = [_half.BFLOAT16 if d == "bfloat16" else np.dtype(d) for d in named.get(args.dtype, [args.dtype])]
    if any(d is None for d in dtypes):
        parser.error("bfloat16 needs ml_dtypes (pip install ml_dtypes)")

    progress = Progress(enabled=not args.json)

    if F._core is None:
        print("warning: the native extension is not available; only NumPy rows", file=sys.stderr)
    _optional("torch")
    m = machine()
    print("minimalsgd bench — " + ", ".join(f"{k}: {v}" for k, v in m.items() if v is not None))
    print(f"step: lr={LR}, momentum={MOMENTUM}, nesterov, weight_decay={WD}; clip cases: max_norm={CLIP}")
    print(f"AdamW cases: {ADAMW}")
    print("limit = a plain C streaming loop of the same 3-read/2-write shape over the same number of elements,")
    print("        (AdamW: the plain C Adam loop, 4 reads/3 writes, one sqrt and one division per element),")
    print("        timed in C++ in this run (clip + step: plus a plain C read-only loop, sum of g*g, for the norm pass).")
    print("GB/s = bytes the step must move (20 B/elem float32, 40 float64, 10 bfloat16/float16, AdamW 28/56;")
    print("        clip: +4/8, 16-bit +2) / median time.")
    print("16-bit cases: their own yardstick, the same loop over 16-bit storage (10 B/elem), converted in registers.")
    rows: list[Row] = []
    for dtype in dtypes:
        for case in cases(args.quick, dtype):
            if args.case and not any(s.lower() in case.name.lower() for s in args.case):
                continue
            case_rows = run_case(case, dtype, args.quick, progress)
            rows += case_rows
            progress.clear()
            print(format_table(case_rows), flush=True)
            if case.groups:
                by = {r.backend: r.seconds for r in case_rows}
                grouped, one = by.get(GROUPS_ROW), by.get(ONE_GROUP_ROW)
                if grouped and one:
                    print(f"2 groups + schedule / one group: {grouped / one:.3f} (target: at most 1.05)", flush=True)
    sweep_rows: list[Row] = []
    if args.plot:
        sweep_rows = sweep(dtypes[0], args.quick, progress)
    progress.close()
    if args.plot:
        if plot(sweep_rows, args.plot):
            print(f"\nplot written to {args.plot}")
    if args.json:
        def enc(r: Row) -> dict:
            d = asdict(r)
            d.update(gbps=r.gbps, pct_of_limit=r.pct_of_limit, speedup_vs_numpy=r.speedup, ns_per_elem=r.seconds / r.numel * 1e9)
            return d

        with open(args.json, "w") as f:
            json.dump({"machine": m, "rows": [enc(r) for r in rows], "sweep": [enc(r) for r in sweep_rows]}, f, indent=1)
        print(f"json written to {args.json}")
    return 0
