"""minimalsgd: one fused SGD step, as fast as the memory bus allows.

NumPy users: :class:`SGD` (param dicts, param groups) and :func:`sgd_step` (functional,
multi-tensor); lr schedules in :mod:`minimalsgd.schedules`.
PyTorch users: ``minimalsgd.torch.SGD`` (imports torch; this module never does).
"""

from __future__ import annotations

from . import schedules
from ._config import backend_info, get_num_threads, set_num_threads, show_config
from ._functional import global_grad_norm, sgd_step
from ._paths import get_cmake_dir, get_include
from ._version import __version__
from .optim import SGD

__all__ = [
    "SGD",
    "__version__",
    "backend_info",
    "get_cmake_dir",
    "get_include",
    "get_num_threads",
    "global_grad_norm",
    "set_num_threads",
    "schedules",
    "sgd_step",
    "show_config",
]
