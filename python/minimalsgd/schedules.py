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
    with the defaults, ``lr`` at every step.

    Parameters
    ----------
    lr : float
        The base lr, ``>= 0``.
    factor : float, default 1.0
        In ``[0, 1]``.
    total_iters : int, default 0
        Steps at ``lr * factor``, ``>= 0``.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range, naming it; calling the schedule with a
        step that is not an int ``>= 0``.

    Examples
    --------
    >>> from minimalsgd import schedules
    >>> [schedules.constant(0.1, factor=0.5, total_iters=2)(t) for t in range(4)]
    [0.05, 0.05, 0.1, 0.1]
    """

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
    """``lr * gamma ** (t // step_size)`` (torch ``StepLR``).

    Parameters
    ----------
    lr : float
        The initial lr, ``>= 0``.
    step_size : int
        Steps between decays, ``>= 1``.
    gamma : float, default 0.1
        The decay factor, ``>= 0``.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range, naming it; calling the schedule with a
        step that is not an int ``>= 0``.

    Examples
    --------
    >>> from minimalsgd import schedules
    >>> [schedules.step_decay(1.0, step_size=2, gamma=0.5)(t) for t in range(5)]
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """

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
    milestone given twice counts twice, as there).

    Parameters
    ----------
    lr : float
        The initial lr, ``>= 0``.
    milestones : sequence of int
        Steps at which the lr is multiplied by ``gamma`` (ints ``>= 0``, any order).
    gamma : float, default 0.1
        The decay factor, ``>= 0``.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range, naming it; calling the schedule with a
        step that is not an int ``>= 0``.

    Examples
    --------
    >>> from minimalsgd import schedules
    >>> [schedules.multistep(1.0, milestones=(1, 3), gamma=0.5)(t) for t in range(4)]
    [1.0, 0.5, 0.5, 0.25]
    """

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
    """``lr * gamma ** t`` (torch ``ExponentialLR``).

    Parameters
    ----------
    lr : float
        The initial lr, ``>= 0``.
    gamma : float
        The decay factor per step, ``>= 0``.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range, naming it; calling the schedule with a
        step that is not an int ``>= 0``.

    Examples
    --------
    >>> from minimalsgd import schedules
    >>> [schedules.exponential(1.0, gamma=0.5)(t) for t in range(3)]
    [1.0, 0.5, 0.25]
    """

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
    the floor instead).

    Parameters
    ----------
    lr : float
        The initial lr, ``>= 0``.
    T_max : int
        Steps from ``lr`` to ``eta_min``, ``>= 1``.
    eta_min : float, default 0.0
        The floor, ``>= 0``.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range, naming it; calling the schedule with a
        step that is not an int ``>= 0``.

    Examples
    --------
    >>> from minimalsgd import schedules
    >>> [round(schedules.cosine(1.0, T_max=4)(t), 6) for t in range(5)]
    [1.0, 0.853553, 0.5, 0.146447, 0.0]
    """

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
    (torch ``LinearLR``): a linear warmup from ``lr * start_factor`` to ``lr * end_factor``.

    Parameters
    ----------
    lr : float
        The base lr, ``>= 0``.
    start_factor : float, default 1/3
        In ``(0, 1]``.
    end_factor : float, default 1.0
        In ``[0, 1]``.
    total_iters : int, default 5
        Steps of the ramp, ``>= 1``; the lr stays at ``lr * end_factor`` after them.

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range, naming it; calling the schedule with a
        step that is not an int ``>= 0``.

    Examples
    --------
    >>> from minimalsgd import schedules
    >>> [schedules.linear(1.0, start_factor=0.25, total_iters=3)(t) for t in range(5)]
    [0.25, 0.5, 0.75, 1.0, 1.0]
    """

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
    """A linear warmup from ``lr * start_factor`` to ``lr`` over ``warmup_steps`` steps, then ``lr``.

    Parameters
    ----------
    lr : float
        The lr after the warmup, ``>= 0``.
    warmup_steps : int
        Steps of the warmup, ``>= 1``.
    start_factor : float, default 1/3
        In ``(0, 1]``.

    Returns
    -------
    linear
        ``linear(lr, start_factor, 1.0, warmup_steps)``.

    Raises
    ------
    TypeError, ValueError
        As :class:`linear`: a parameter of the wrong type or out of range, naming it; calling the schedule with a
        step that is not an int ``>= 0``.

    Examples
    --------
    >>> from minimalsgd import schedules
    >>> [schedules.linear_warmup(1.0, 2, start_factor=0.5)(t) for t in range(4)]
    [0.5, 0.75, 1.0, 1.0]
    """
    return linear(lr, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps)


@dataclass(frozen=True)
class one_cycle(_Schedule):
    """The 1cycle policy (torch ``OneCycleLR``, its lr only; torch also cycles momentum by
    default, ``cycle_momentum=False`` there gives the same run). From ``max_lr / div_factor``
    up to ``max_lr`` over the first ``pct_start * total_steps`` steps, then down to
    ``max_lr / div_factor / final_div_factor`` at step ``total_steps - 1``; cosine or linear
    annealing; ``three_phase`` as torch's. Defined for ``0 <= t <= total_steps`` (torch raises
    beyond).

    Parameters
    ----------
    max_lr : float
        The peak lr, ``>= 0``.
    total_steps : int
        Steps of the cycle, ``>= 1``.
    pct_start : float, default 0.3
        The warmup's share of the cycle, in ``[0, 1]``.
    anneal_strategy : {"cos", "linear"}, default "cos"
        The shape of both phases.
    div_factor : float, default 25.0
        The initial lr is ``max_lr / div_factor`` (``> 0``).
    final_div_factor : float, default 1e4
        The final lr is the initial lr ``/ final_div_factor`` (``> 0``).
    three_phase : bool, default False
        torch's three-phase variant (up, down to the initial lr, then down to the final lr).

    Raises
    ------
    TypeError, ValueError
        A parameter of the wrong type or out of range, naming it; calling the schedule with a
        step that is not an int in ``[0, total_steps]``.

    Examples
    --------
    >>> from minimalsgd import schedules
    >>> s = schedules.one_cycle(1.0, total_steps=10)
    >>> round(s(0), 8), s(2), round(s(9), 8)     # max_lr / 25, max_lr, then max_lr / 25 / 1e4
    (0.04, 1.0, 4e-06)
    """

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
    steps, then anneals over 95.

    Parameters
    ----------
    schedules : sequence of callable
        The schedules, in order (any callables of the step).
    milestones : sequence of int
        One fewer than the schedules, increasing, each ``>= 1``: where the next schedule starts.

    Raises
    ------
    TypeError, ValueError
        Schedules that are not callables, or milestones of the wrong count or order.

    Examples
    --------
    >>> from minimalsgd import schedules
    >>> s = schedules.chain([schedules.constant(0.1), schedules.exponential(0.1, gamma=0.5)], [2])
    >>> [s(t) for t in range(4)]
    [0.1, 0.1, 0.1, 0.05]
    """

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
    [warmup_steps])``.

    Parameters
    ----------
    lr : float
        The peak lr, reached after the warmup, ``>= 0``.
    warmup_steps : int
        Steps of the linear warmup, ``>= 1``.
    total_steps : int
        Where the cosine reaches ``eta_min``; more than ``warmup_steps``.
    start_factor : float, default 1/3
        The warmup starts at ``lr * start_factor``.
    eta_min : float, default 0.0
        The floor of the cosine.

    Returns
    -------
    chain

    Raises
    ------
    ValueError
        ``total_steps <= warmup_steps``, or a parameter out of range (as :class:`linear` and
        :class:`cosine` check them).

    Examples
    --------
    >>> from minimalsgd import schedules
    >>> s = schedules.warmup_cosine(0.1, warmup_steps=2, total_steps=6, start_factor=0.5)
    >>> [round(s(t), 6) for t in range(7)]
    [0.05, 0.075, 0.1, 0.085355, 0.05, 0.014645, 0.0]
    """
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
    return chain((linear_warmup(lr, warmup_steps, start_factor), cosine(lr, total_steps - warmup_steps, eta_min)),
                 (warmup_steps,))

