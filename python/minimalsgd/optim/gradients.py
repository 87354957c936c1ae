"""The gradient policy of a step: one pass over the grads gives their global norm, which decides
whether the step is skipped (a NaN or an infinity, with ``skip_nonfinite``) and the scale that
clips them (``clip_grad_norm``).

:class:`GradientPolicy` is the one definition of that sequence in Python: the optimizer's full
step, its cached Python plan and the sharded step (which measures the norm over every rank) all
call :meth:`GradientPolicy.decide`. The cached native plan (``csrc/python/plan.hpp``,
``BasicPlan::step``) keeps a C++ copy of the same rule, so that a planned step needs no Python;
it mirrors this one exactly (``tests/test_protocol.py`` checks that the two agree, NaN, infinity,
float64 overflow of finite grads and clipping included).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .. import _router
from .._validation import check_bool, check_real

__all__ = ["CLIP_EPS", "GradientDecision", "GradientPolicy", "clip_scale"]

#: Added to the norm in the clip coefficient ``max_norm / (norm + CLIP_EPS)``, as torch does.
CLIP_EPS = 1e-12


def clip_scale(total_norm: float, max_norm: float | None) -> float:
    """The gradient scale that clips to a global norm.

    Parameters
    ----------
    total_norm : float
        The global norm of the gradients.
    max_norm : float or None
        The limit (None: no clipping).

    Returns
    -------
    float
        ``max_norm / (total_norm + 1e-12)`` when ``total_norm`` exceeds ``max_norm``, else 1.
    """
    if max_norm is not None and total_norm > max_norm:
        return max_norm / (total_norm + CLIP_EPS)
    return 1.0


class GradientDecision(NamedTuple):
    """What the gradient policy decided for one step.

    Parameters
    ----------
    norm : float
        The global norm of the gradients the step uses (NaN when not measured).
    scale : float
        The gradient scale of the step: every gradient is used as ``grad * scale``.
    skipped : bool
        The step writes nothing (a non-finite gradient with ``skip_nonfinite``).
    """

    norm: float
    scale: float
    skipped: bool


class GradientPolicy(NamedTuple):
    """What a step does with the global norm of its gradients (:meth:`GradientPolicy.checked` builds it).

    Parameters
    ----------
    clip : float or None, default None
        The global-norm limit (finite, ``> 0``), or None: no clipping.
    skip_nonfinite : bool, default False
        Skip a step whose gradients hold a NaN or an infinity.
    """

    clip: float | None = None
    skip_nonfinite: bool = False

    @classmethod
    def checked(cls, clip_grad_norm: Any, skip_nonfinite: Any) -> GradientPolicy:
        """The policy of an optimizer's settings, checked.

        Parameters
        ----------
        clip_grad_norm : float or None
            None, or a finite number ``> 0``.
        skip_nonfinite : bool
            A bool.

        Returns
        -------
        GradientPolicy
            The policy; TypeError/ValueError naming the setting when one is not valid.
        """
        clip = None if clip_grad_norm is None else check_real("clip_grad_norm", clip_grad_norm, positive=True)
        return cls(clip, check_bool("skip_nonfinite", skip_nonfinite))

    @property
    def measures(self) -> bool:
        """Whether a step measures the global norm (to clip, or to find a non-finite gradient)."""
        return self.clip is not None or self.skip_nonfinite

    def decide(self, norm: float, all_finite: Callable[[], bool], grad_scale: float = 1.0) -> GradientDecision:
        """The decision for gradients of a given global norm.

        Parameters
        ----------
        norm : float
            The global L2 norm of the gradients as given (float64 sum of squares, then the
            square root), measured over every process or bucket of the step.
        all_finite : callable
            ``all_finite()`` says whether every gradient is finite; called only when ``norm`` is
            infinite (an infinite norm of finite grads is a float64 overflow of their squares,
            not a bad gradient).
        grad_scale : float, default 1.0
            A scale computed elsewhere (see ``Optimizer.step``), applied first: the norm, the clip
            and the decision's ``norm`` are those of the gradients as used.

        Returns
        -------
        GradientDecision
            Skipped, with ``skip_nonfinite``, when ``norm`` is NaN, or infinite with a gradient
            that is not finite; otherwise the scale ``grad_scale * clip_scale(grad_scale * norm,
            clip)``.
        """
        if self.skip_nonfinite and not math.isfinite(norm) and (math.isnan(norm) or not all_finite()):
            return GradientDecision(norm, 0.0, True)
        if grad_scale != 1.0:
            norm = norm * grad_scale
            return GradientDecision(norm, grad_scale * clip_scale(norm, self.clip), False)
        return GradientDecision(norm, clip_scale(norm, self.clip), False)

    def measure(self, labels: Sequence[str], grads: Sequence[np.ndarray], backend: str,
                grad_scale: float = 1.0) -> GradientDecision:
        """:meth:`decide` for these grads, their norm measured in one pass (through the router).

        Parameters
        ----------
        labels : sequence of str
            The grads' names, for messages.
        grads : sequence of ndarray
            The gradients, validated.
        backend : {"auto", "native", "numpy"}
            The resolved backend.
        grad_scale : float, default 1.0
            As in :meth:`decide`.

        Returns
        -------
        GradientDecision
            Without clip or skip nothing is measured: ``norm`` NaN, ``scale`` ``grad_scale``.
        """
        if not self.measures:
            return GradientDecision(math.nan, grad_scale, False)
        norm = _router.norm(labels, grads, backend)
        return self.decide(norm, lambda: all(bool(np.isfinite(g).all()) for g in grads), grad_scale)
