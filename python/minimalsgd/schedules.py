"""Learning-rate schedules: plain functions of the step, equal to torch.optim.lr_scheduler's.

A schedule is any callable ``schedule(t) -> lr`` of ``t``, the 0-based count of applied steps:
give it wherever an ``lr`` goes (``SGD(params, lr=cosine(0.1, 100))`` or a group's ``"lr"``) and
``step()`` calls it with ``opt.applied_steps``, so the first step runs with ``schedule(0)``.
Skipped steps (``skip_nonfinite``) do not advance ``t``.

Each function here returns the lr that torch's scheduler of the same name puts in force for the
step after ``t`` calls of ``scheduler.step()`` (the usual ``opt.step(); scheduler.step()`` loop),
computed in closed form (torch's chainable schedulers compute it recursively: the two agree to a
few units in the last place). The same formulas, as C++ functions, are in
``<minimalsgd/schedules.hpp>``.

=========================  ==========================================  ============================
function                   lr at step t                                torch
=========================  ==========================================  ============================
``constant``               ``lr * factor`` for ``t < total_iters``,    ``ConstantLR``
                           then ``lr``
``step_decay``             ``lr * gamma ** (t // step_size)``          ``StepLR``
``multistep``              ``lr * gamma ** (milestones <= t)``         ``MultiStepLR``
``exponential``            ``lr * gamma ** t``                         ``ExponentialLR``
``cosine``                 ``eta_min + (lr - eta_min) *                ``CosineAnnealingLR``
                           (1 + cos(pi t / T_max)) / 2``
``linear`` (warmup)        ``lr * (s + (e - s) * min(t, n) / n)``      ``LinearLR``
``one_cycle``              warmup to ``max_lr``, anneal to a floor     ``OneCycleLR`` (lr only)
``chain``                  schedule k from milestone k-1 on, counted   ``SequentialLR``
                           from 0 there
=========================  ==========================================  ============================
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Schedule",
    "chain",
    "constant",
    "cosine",
    "exponential",
    "linear",
    "linear_warmup",
    "multistep",
    "one_cycle",
    "step_decay",
    "warmup_cosine",
]

Schedule = Callable[[int], float]


def _real(name: str, x: float, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _count(name: str, x: int, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    return x


def _step(t: int) -> int:
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise ValueError(f"a schedule's step must be an int >= 0, got {t!r}")
    return t


@dataclass(frozen=True)
class _Schedule:
    """Base of the schedules: a frozen dataclass (readable repr, comparable) that is callable."""

    def __call__(self, t: int) -> float:  # pragma: no cover - every subclass defines it
        raise NotImplementedError


@dataclass(frozen=True)
class constant(_Schedule):
    """``lr * factor`` for the first ``total_iters`` steps, then ``lr`` (torch ``ConstantLR``);
    with the defaults, ``lr`` at every step."""

    lr: float
    factor: float = 1.0
    total_iters: int = 0

    def __post_init__(self) -> None:
        _real("lr", self.lr, minimum=0.0)
        f = _real("factor", self.factor)
        if not 0 <= f <= 1:
            raise ValueError(f"factor must be in [0, 1], got {f}")
        _count("total_iters", self.total_iters, 0)

    def __call__(self, t: int) -> float:
        return self.lr * self.factor if _step(t) < self.total_iters else float(self.lr)


@dataclass(frozen=True)
class step_decay(_Schedule):
    """``lr * gamma ** (t // step_size)`` (torch ``StepLR``)."""

    lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _real("lr", self.lr, minimum=0.0)
        _count("step_size", self.step_size, 1)
        _real("gamma", self.gamma, minimum=0.0)

    def __call__(self, t: int) -> float:
        return self.lr * self.gamma ** (_step(t) // self.step_size)


@dataclass(frozen=True)
class multistep(_Schedule):
    """``lr * gamma ** k`` where k counts the milestones ``<= t`` (torch ``MultiStepLR``; a
    milestone given twice counts twice, as there)."""

    lr: float
    milestones: tuple[int, ...]
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _real("lr", self.lr, minimum=0.0)
        ms = tuple(sorted(_count("milestones[]", m, 0) for m in self.milestones))
        object.__setattr__(self, "milestones", ms)
        _real("gamma", self.gamma, minimum=0.0)

    def __call__(self, t: int) -> float:
        return self.lr * self.gamma ** bisect.bisect_right(self.milestones, _step(t))


@dataclass(frozen=True)
class exponential(_Schedule):
    """``lr * gamma ** t`` (torch ``ExponentialLR``)."""

    lr: float
    gamma: float

    def __post_init__(self) -> None:
        _real("lr", self.lr, minimum=0.0)
        _real("gamma", self.gamma, minimum=0.0)

    def __call__(self, t: int) -> float:
        return self.lr * self.gamma ** _step(t)


@dataclass(frozen=True)
class cosine(_Schedule):
    """``eta_min + (lr - eta_min) * (1 + cos(pi * t / T_max)) / 2`` (torch
    ``CosineAnnealingLR``): from ``lr`` down to the floor ``eta_min`` at ``t = T_max``, and, as
    there, back up over the next ``T_max`` steps if the run goes on (chain a ``constant`` to hold
    the floor instead)."""

    lr: float
    T_max: int
    eta_min: float = 0.0

    def __post_init__(self) -> None:
        _real("lr", self.lr, minimum=0.0)
        _count("T_max", self.T_max, 1)
        _real("eta_min", self.eta_min, minimum=0.0)

    def __call__(self, t: int) -> float:
        return self.eta_min + (self.lr - self.eta_min) * (1 + math.cos(math.pi * _step(t) / self.T_max)) / 2


@dataclass(frozen=True)
class linear(_Schedule):
    """``lr * (start_factor + (end_factor - start_factor) * min(t, total_iters) / total_iters)``
    (torch ``LinearLR``): a linear warmup from ``lr * start_factor`` to ``lr * end_factor``."""

    lr: float
    start_factor: float = 1.0 / 3
    end_factor: float = 1.0
    total_iters: int = 5

    def __post_init__(self) -> None:
        _real("lr", self.lr, minimum=0.0)
        s = _real("start_factor", self.start_factor)
        e = _real("end_factor", self.end_factor)
        if not 0 < s <= 1:
            raise ValueError(f"start_factor must be in (0, 1], got {s}")
        if not 0 <= e <= 1:
            raise ValueError(f"end_factor must be in [0, 1], got {e}")
        _count("total_iters", self.total_iters, 1)

    def __call__(self, t: int) -> float:
        k = min(_step(t), self.total_iters)
        return self.lr * (self.start_factor + (self.end_factor - self.start_factor) * k / self.total_iters)


def linear_warmup(lr: float, warmup_steps: int, start_factor: float = 1.0 / 3) -> linear:
    """A linear warmup from ``lr * start_factor`` to ``lr`` over ``warmup_steps`` steps, then ``lr``."""
    return linear(lr, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps)


@dataclass(frozen=True)
class one_cycle(_Schedule):
    """The 1cycle policy (torch ``OneCycleLR``, its lr only; torch also cycles momentum by
    default, ``cycle_momentum=False`` there gives the same run). From ``max_lr / div_factor``
    up to ``max_lr`` over the first ``pct_start * total_steps`` steps, then down to
    ``max_lr / div_factor / final_div_factor`` at step ``total_steps - 1``; cosine or linear
    annealing; ``three_phase`` as torch's. Defined for ``0 <= t <= total_steps`` (torch raises
    beyond)."""

    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    anneal_strategy: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False

    def __post_init__(self) -> None:
        _real("max_lr", self.max_lr, minimum=0.0)
        _count("total_steps", self.total_steps, 1)
        p = _real("pct_start", self.pct_start)
        if not 0 <= p <= 1:
            raise ValueError(f"pct_start must be in [0, 1], got {p}")
        if self.anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {self.anneal_strategy!r}")
        _real("div_factor", self.div_factor, positive=True)
        _real("final_div_factor", self.final_div_factor, positive=True)

    def _phases(self) -> list[tuple[float, float, float]]:
        initial = self.max_lr / self.div_factor
        floor = initial / self.final_div_factor
        n = self.total_steps
        if self.three_phase:
            return [
                (float(self.pct_start * n) - 1, initial, self.max_lr),
                (float(2 * self.pct_start * n) - 2, self.max_lr, initial),
                (n - 1, initial, floor),
            ]
        return [(float(self.pct_start * n) - 1, initial, self.max_lr), (n - 1, self.max_lr, floor)]

    def __call__(self, t: int) -> float:
        step = _step(t)
        if step > self.total_steps:
            raise ValueError(f"one_cycle: step {step} is beyond total_steps={self.total_steps}")
        phases = self._phases()
        start_step = 0.0
        for i, (end_step, start, end) in enumerate(phases):
            if step <= end_step or i == len(phases) - 1:
                pct = (step - start_step) / (end_step - start_step)
                if self.anneal_strategy == "cos":
                    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
                return (end - start) * pct + start
            start_step = end_step
        raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class chain(_Schedule):
    """Schedule ``k`` from ``milestones[k-1]`` on, with its step counted from 0 there (torch
    ``SequentialLR``): ``chain([linear_warmup(0.1, 5), cosine(0.1, 95)], [5])`` warms up for 5
    steps, then anneals over 95."""

    schedules: tuple[Schedule, ...]
    milestones: tuple[int, ...]

    def __post_init__(self) -> None:
        scheds = tuple(self.schedules)
        ms = tuple(_count("milestones[]", m, 1) for m in self.milestones)
        if not scheds or not all(callable(s) for s in scheds):
            raise TypeError("schedules must be a non-empty sequence of callables")
        if len(ms) != len(scheds) - 1:
            raise ValueError(f"{len(scheds)} schedules need {len(scheds) - 1} milestones, got {len(ms)}")
        if list(ms) != sorted(ms):
            raise ValueError(f"milestones must increase, got {list(ms)}")
        object.__setattr__(self, "schedules", scheds)
        object.__setattr__(self, "milestones", ms)

    def __call__(self, t: int) -> float:
        k = bisect.bisect_right(self.milestones, _step(t))
        start = self.milestones[k - 1] if k > 0 else 0
        return self.schedules[k](t - start)


def warmup_cosine(lr: float, warmup_steps: int, total_steps: int, *, start_factor: float = 1.0 / 3,
                  eta_min: float = 0.0) -> chain:
    """Linear warmup over ``warmup_steps``, then cosine annealing down to ``eta_min`` at
    ``total_steps``: ``chain([linear_warmup(...), cosine(lr, total_steps - warmup_steps, eta_min)],
    [warmup_steps])``."""
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
    return chain((linear_warmup(lr, warmup_steps, start_factor), cosine(lr, total_steps - warmup_steps, eta_min)),
                 (warmup_steps,))

