"""The agreement step: one small collective that every rank enters before a collective operation
writes anything, so that a problem found on any rank (bad input, params or settings that differ
between ranks) raises the same error on every rank instead of leaving the others waiting in a
reduction, and replicas never drift.

Each rank hashes what it is about to do -- its *signature*: every param's name, shape, dtype,
memory order and whether it has a grad; each group's options of the step (schedules evaluated,
by the options' field names); every global setting (clip, skip, backend, stochastic rounding,
seed, state dtype) -- and :func:`agree` compares the hashes in one 3-integer MAX-``Allreduce``.
Only when they differ (or a rank failed) are the signatures gathered, to say how the first rank
that differs from rank 0 differs, in the same words on every rank.

The optimizer is read through its public members only: ``get_options()``,
``gradient_policy``, ``storage``, ``global_settings``, ``param_groups``, ``hyperparameters``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .._router import check_backend

__all__ = ["SEED_HINT", "agree", "describe", "describe_mismatch", "digest", "saved_signature",
           "settings_signature", "step_signature"]

SEED_HINT = ("; pass the same seed= on every rank (or none: every rank then uses minimalsgd.DEFAULT_SEED; "
             "minimalsgd.distributed.shared_seed() draws a random one for all ranks)")


def digest(parts: Any) -> int:
    """A 56-bit hash of ``repr(parts)`` (fits in an int64 with its negation)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=7).digest(), "little")


def agree(comm: Any, signature: Any, error: BaseException | None, extra: int = 0, known: int | None = None) -> None:
    """Raise the same exception on every rank unless every rank has the same ``signature`` (and
    ``extra`` hash) and no rank has an ``error``. Costs one 3-element MAX-allreduce; the details are
    gathered only when something is wrong. ``known``: ``digest(signature)`` if already computed."""
    from .collectives import mpi

    MPI = mpi()
    h = (digest(signature) if known is None else known) ^ extra
    flags = np.array([h, -h, 0 if error is None else 1], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
    if flags[0] == -flags[1] and flags[2] == 0:
        return
    mine = None if error is None else (type(error).__name__, str(error))
    infos = comm.allgather((signature, extra, mine))
    for r, (_, _, err) in enumerate(infos):
        if err is not None:
            kind = TypeError if err[0] == "TypeError" else ValueError
            raise kind(f"rank {r}: {err[1]}")
    raise ValueError(describe_mismatch([(s, x) for s, x, _ in infos]))


def describe(shape: Any, dtype: Any, has_grad: bool, order: str = "C") -> tuple[Any, ...]:
    """What the ranks compare about one param: ``(shape, dtype name, has grad)``, and ``"F"`` when
    its elements are counted in F order (an F-contiguous value: the layout and 16-bit rounding
    follow the order the step walks it)."""
    return (shape, dtype, has_grad) if order == "C" else (shape, dtype, has_grad, order)


def fmt(desc: tuple[Any, ...]) -> str:
    """A param's description for messages."""
    shape, dtype, has_grad = desc[:3]
    order = " (F order)" if len(desc) > 3 and desc[3] == "F" else ""
    return f"shape {shape} dtype {dtype}{order}" + ("" if has_grad else " (no grad)")


def describe_mismatch(infos: list[tuple[Any, int]]) -> str:
    """Say how the first rank that differs from rank 0 differs (the same text on every rank)."""
    ref, ref_extra = infos[0]
    for r, (sig, extra) in enumerate(infos[1:], start=1):
        if sig == ref and extra == ref_extra:
            continue
        head = f"the params differ between ranks: rank {r} and rank 0 "
        settings_head = f"the settings differ between ranks: rank {r} and rank 0 "
        if sig == ref:
            return head + "hold different values; start every rank from the same values (broadcast_params(params))"
        if not isinstance(sig, dict) or not isinstance(ref, dict):
            return f"the ranks disagree: rank {r} is doing {sig!r}, rank 0 {ref!r}"
        ref_items, items = dict(ref.get("params", ())), dict(sig.get("params", ()))
        for key in sorted(ref.keys() | sig.keys()):
            if key in ("params", "groups") or ref.get(key) == sig.get(key):
                continue
            hint = SEED_HINT if key == "seed" else ""
            return settings_head + f"have different {key}: {sig.get(key)!r} on rank {r}, {ref.get(key)!r} on rank 0{hint}"
        groups0, groups_r = ref.get("groups") or [], sig.get("groups") or []
        if len(groups0) != len(groups_r):
            return head + f"have {len(groups_r)} and {len(groups0)} param groups"
        for gi, (g0, gr) in enumerate(zip(groups0, groups_r)):
            for key in g0:
                if g0[key] != gr.get(key):
                    return (settings_head + f"have different {key} in param group {gi}: {gr.get(key)!r} on rank {r}, "
                            f"{g0[key]!r} on rank 0")
        only0 = [k for k in ref_items if k not in items]
        only_r = [k for k in items if k not in ref_items]
        if only0 or only_r:
            return head + f"have different names: only on rank 0: {only0}, only on rank {r}: {only_r}"
        for name, desc in ref_items.items():
            if items[name] != desc:
                return head + f"disagree on params[{name!r}]: {fmt(items[name])} on rank {r}, {fmt(desc)} on rank 0"
        return head + "list the same params in a different order"
    return "the ranks disagree"  # pragma: no cover - unreachable when hashes differ


def _check_optimizer(opt: Any) -> None:
    from ..optim import Optimizer

    if not isinstance(opt, Optimizer):
        raise TypeError(f"optimizer must be None or a minimalsgd optimizer (like minimalsgd.SGD), got {type(opt).__name__}")


def global_signature(opt: Any) -> dict[str, Any]:
    """Every global setting of an optimizer as its step uses it (checked; TypeError/ValueError
    naming a bad one): ``global_settings`` (clip, skip, backend, and any a subclass adds) and the
    16-bit storage settings."""
    policy = opt.gradient_policy
    storage = opt.storage
    out: dict[str, Any] = {}
    for key in opt.global_settings:
        out[key] = getattr(opt, key)
    out.update(clip_grad_norm=policy.clip, skip_nonfinite=policy.skip_nonfinite, backend=check_backend(opt.backend),
               stochastic_rounding=storage.stochastic_rounding, seed=storage.seed,
               state_dtype="" if storage.state_dtype is None else storage.state_dtype.name)
    return out


def settings_signature(opt: Any, options: list[Any]) -> dict[str, Any]:
    """What the ranks stepping replicas of one model must agree on besides the params: each group's
    options for this step (by field name: Adam's ``beta1``/``beta2``) and every global setting."""
    return {"groups": [dict(o._asdict()) for o in options], **global_signature(opt)}


def step_signature(opt: Any) -> dict[str, Any]:
    """:func:`settings_signature` of an optimizer's next step (``opt.get_options()``); TypeError
    unless ``opt`` is a minimalsgd optimizer, TypeError/ValueError as its step would raise."""
    _check_optimizer(opt)
    return settings_signature(opt, opt.get_options())


def saved_signature(opt: Any) -> dict[str, Any]:
    """The settings a state dict saves: each group's hyperparameters as given (a schedule as
    ``"schedule"``: code, not saved) and every global setting."""
    groups = [{k: "schedule" if callable(g.get(k)) else g.get(k) for k in opt.hyperparameters}
              for g in opt.param_groups]
    return {"groups": groups, **global_signature(opt)}
