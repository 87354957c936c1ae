"""A compatibility shim: the names this private module had before issue 20 split it into
``minimalsgd.functional`` (the public functions), ``_validation`` (the checks) and ``_router``
(backend choice and the native module). Imported by ``torch.py``, ``distributed.py``,
``_bench.py`` and tests until the torch layer (phase 3) and the test layout are rebuilt; new code
imports the modules above.

``_core`` is the native module as ``_router`` imported it (None without it); the torch layer
reads it here, so replacing it here (a test without the extension) reaches the torch layer only.
"""

# ruff: noqa: F401  (re-exports)
from __future__ import annotations

from ._router import CORE_IMPORT_ERROR as _CORE_IMPORT_ERROR
from ._router import (
    DEFAULT_BACKEND,
    Backend,
    _core,
    check_backend,
    native_available,
    native_reason,
    route,
    sum_of_squares,
)
from ._validation import (
    as_list,
    check_adam_options as check_adam_hyperparameters,
    check_bool,
    check_companion,
    check_no_overlap,
    check_real,
    check_rounding,
    check_sgd_options as check_hyperparameters,
    check_steps,
    check_tensor,
    check_uint64,
)
from .functional import adam_step, global_grad_norm, per_tensor_options, sgd_step
from .optim.gradients import clip_scale

__all__ = ["adam_step", "global_grad_norm", "sgd_step"]


_check_companion = check_companion
