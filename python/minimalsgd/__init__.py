"""minimalsgd: one fused SGD step, as fast as the memory bus allows.

NumPy users: :class:`SGD` (param dicts, param groups) and :func:`sgd_step` (functional,
multi-tensor); lr schedules in :mod:`minimalsgd.schedules`;
:class:`Adam`, :class:`AdamW` and :func:`adam_step` (functional, multi-tensor).
PyTorch users: ``minimalsgd.torch.SGD``, ``Adam``, ``AdamW`` (import torch; this module never does).
Data parallel over MPI: ``minimalsgd.distributed`` (imports mpi4py when used; this module never does).
"""

from __future__ import annotations

from . import schedules
from ._arena import Arena, pack_params
from ._config import backend_info, get_num_threads, set_num_threads, show_config
from ._half import DEFAULT_SEED
from ._paths import get_cmake_dir, get_include
from ._version import __version__
from .functional import adam_step, global_grad_norm, sgd_step
from .optim import SGD, Adam, AdamW


def __getattr__(name: str) -> object:
    # Submodules with heavy optional dependencies load on first access, never at import.
    if name == "distributed":
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Adam",
    "AdamW",
    "Arena",
    "DEFAULT_SEED",
    "SGD",
    "__version__",
    "adam_step",
    "backend_info",
    "get_cmake_dir",
    "get_include",
    "get_num_threads",
    "global_grad_norm",
    "pack_params",
    "set_num_threads",
    "schedules",
    "sgd_step",
    "show_config",
]
