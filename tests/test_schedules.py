"""minimalsgd.schedules against torch.optim.lr_scheduler (every step, 1e-12 relative) and their
closed forms; the C++ header <minimalsgd/schedules.hpp> against the Python functions."""

from __future__ import annotations

import math
import pathlib
import shutil
import subprocess

import pytest

from minimalsgd import schedules as S

N = 60


def _torch_lrs(torch, make, n, lr=0.1):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
    sched = make(opt)
    out = []
    for t in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if t < n - 1:
            sched.step()
    return out


def _cases(L):
    return {
        "constant (plain)": (lambda o: L.ConstantLR(o, factor=1.0, total_iters=0), S.constant(0.1), N),
        "constant": (lambda o: L.ConstantLR(o, factor=0.25, total_iters=7), S.constant(0.1, 0.25, 7), N),
        "step_decay": (lambda o: L.StepLR(o, 7, 0.5), S.step_decay(0.1, 7, 0.5), N),
        "multistep": (lambda o: L.MultiStepLR(o, [5, 12, 30], 0.3), S.multistep(0.1, [30, 5, 12], 0.3), N),
        "exponential": (lambda o: L.ExponentialLR(o, 0.93), S.exponential(0.1, 0.93), N),
        "cosine with a floor": (lambda o: L.CosineAnnealingLR(o, 40, 1e-3), S.cosine(0.1, 40, 1e-3), N),
        "cosine": (lambda o: L.CosineAnnealingLR(o, 25), S.cosine(0.1, 25), 25),
        "linear warmup": (lambda o: L.LinearLR(o, 0.1, 1.0, 10), S.linear_warmup(0.1, 10, 0.1), N),
        "linear": (lambda o: L.LinearLR(o, 1.0, 0.2, 10), S.linear(0.1, 1.0, 0.2, 10), N),
        "one_cycle": (lambda o: L.OneCycleLR(o, 0.5, total_steps=50, cycle_momentum=False), S.one_cycle(0.5, 50), 50),
        "one_cycle three-phase linear": (
            lambda o: L.OneCycleLR(o, 0.5, total_steps=50, cycle_momentum=False, three_phase=True, anneal_strategy="linear"),
            S.one_cycle(0.5, 50, three_phase=True, anneal_strategy="linear"), 50),
        "warmup then cosine": (
            lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, 1.0, 5), L.CosineAnnealingLR(o, 35, 1e-4)], [5]),
            S.warmup_cosine(0.1, 5, 40, start_factor=0.1, eta_min=1e-4), 40),
        "chain of three": (
            lambda o: L.SequentialLR(o, [L.ConstantLR(o, 0.5, 3), L.ExponentialLR(o, 0.9), L.StepLR(o, 4, 0.5)], [6, 20]),
            S.chain([S.constant(0.1, 0.5, 3), S.exponential(0.1, 0.9), S.step_decay(0.1, 4, 0.5)], [6, 20]), N),
    }


CASE_NAMES = [
    "constant (plain)", "constant", "step_decay", "multistep", "exponential", "cosine with a floor", "cosine",
    "linear warmup", "linear", "one_cycle", "one_cycle three-phase linear", "warmup then cosine", "chain of three",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_every_schedule_equals_torchs(name):
    torch = pytest.importorskip("torch")
    make, ours, n = _cases(torch.optim.lr_scheduler)[name]
    ref = _torch_lrs(torch, make, n)
    mine = [ours(t) for t in range(n)]
    for t, (a, b) in enumerate(zip(ref, mine)):
        assert b == pytest.approx(a, rel=1e-12, abs=1e-300 if a == 0 else 0), (name, t)


def test_closed_forms():
    assert [S.step_decay(1.0, 3, 0.5)(t) for t in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    assert [S.multistep(1.0, [2, 4], 0.1)(t) for t in (0, 1, 2, 3, 4)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert S.exponential(2.0, 0.5)(3) == 0.25
    c = S.cosine(1.0, 10, 0.1)
    assert c(0) == 1.0 and c(10) == pytest.approx(0.1) and c(5) == pytest.approx(0.55)
    w = S.linear_warmup(1.0, 4, 0.2)
    assert [w(t) for t in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    oc = S.one_cycle(1.0, 100, pct_start=0.25)
    assert oc(0) == pytest.approx(1 / 25) and oc(24) == pytest.approx(1.0) and oc(99) == pytest.approx(1 / 25 / 1e4)
    ch = S.warmup_cosine(1.0, 5, 25, start_factor=0.5)
    assert ch(0) == 0.5 and ch(5) == 1.0 and ch(25) == pytest.approx(0.0, abs=1e-15)
    assert S.constant(0.3)(10**6) == 0.3


@pytest.mark.parametrize("bad,match", [
    (lambda: S.cosine(-0.1, 10), r"lr must be >= 0.0, got -0.1"),
    (lambda: S.cosine(0.1, 0), r"T_max must be >= 1, got 0"),
    (lambda: S.step_decay(0.1, 0), r"step_size must be >= 1, got 0"),
    (lambda: S.linear(0.1, 0.0), r"start_factor must be in \(0, 1\], got 0.0"),
    (lambda: S.one_cycle(0.1, 10, anneal_strategy="x"), r"anneal_strategy must be 'cos' or 'linear', got 'x'"),
    (lambda: S.chain([S.constant(0.1)], [3]), r"1 schedules need 0 milestones, got 1"),
    (lambda: S.chain([S.constant(0.1), S.constant(0.2)], [5, 6]), r"2 schedules need 1 milestones, got 2"),
    (lambda: S.exponential(0.1, math.nan), r"gamma must be finite, got nan"),
    (lambda: S.warmup_cosine(0.1, 10, 5), r"total_steps \(5\) must exceed warmup_steps \(10\)"),
])
def test_bad_schedule_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


_CPP = r"""
#include <cstdio>
#include <minimalsgd/schedules.hpp>
namespace s = minimalsgd::schedules;
int main() {
    const std::vector<long> ms{5, 12, 30};
    for (long t = 0; t < 50; ++t) {
        std::printf("%ld %.17g %.17g %.17g %.17g %.17g %.17g %.17g %.17g %.17g\n", t,
                    s::constant(0.1, 0.25, 7, t), s::step_decay(0.1, 7, 0.5, t), s::multistep(0.1, ms, 0.3, t),
                    s::exponential(0.1, 0.93, t), s::cosine(0.1, 40, 1e-3, t), s::linear(0.1, 0.1, 1.0, 10, t),
                    s::one_cycle(0.5, 50, 0.3, true, 25.0, 1e4, false, t),
                    s::one_cycle(0.5, 50, 0.3, false, 25.0, 1e4, true, t),
                    s::warmup_cosine(0.1, 5, 40, t, 0.1, 1e-4));
    }
}
"""


def test_cpp_header_equals_the_python_schedules(tmp_path):
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    include = pathlib.Path(__file__).resolve().parents[1] / "csrc" / "include"
    src = tmp_path / "schedules.cpp"
    src.write_text(_CPP)
    exe = tmp_path / "schedules"
    subprocess.run([cxx, "-std=c++17", "-O1", "-Wall", "-Werror", f"-I{include}", str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    py = [S.constant(0.1, 0.25, 7), S.step_decay(0.1, 7, 0.5), S.multistep(0.1, [5, 12, 30], 0.3),
          S.exponential(0.1, 0.93), S.cosine(0.1, 40, 1e-3), S.linear(0.1, 0.1, 1.0, 10), S.one_cycle(0.5, 50),
          S.one_cycle(0.5, 50, anneal_strategy="linear", three_phase=True),
          S.warmup_cosine(0.1, 5, 40, start_factor=0.1, eta_min=1e-4)]
    rows = [line.split() for line in out if line.strip()]
    assert len(rows) == 50
    for row in rows:
        t = int(row[0])
        for k, sched in enumerate(py):
            assert float(row[k + 1]) == pytest.approx(sched(t), rel=1e-15, abs=1e-300), (k, t)
