"""What runs: backend, version, instruction set, threads."""

from __future__ import annotations

import os
import platform
from typing import Any

from . import _router as R
from ._version import __version__

__all__ = ["backend_info", "show_config", "get_num_threads", "set_num_threads"]


# The vector instructions each x86-64 kernel set is compiled for; the baseline's depend on the
# processor and come from the extension (SSE2 on x86-64, NEON on aarch64).
_ISA_SIMD = {"avx2": "AVX2", "avx512": "AVX-512", "avx512_bf16": "AVX-512 BF16"}


def backend_info() -> dict[str, Any]:
    """The backend that ``backend="auto"`` picks and what the native one runs, as a dict.

    Returns
    -------
    dict
        ``version``; ``backend`` (``"native"`` or ``"numpy"``, what ``backend="auto"`` means in
        this process); ``native_available`` (and ``native_import_error`` when it is False);
        ``MINIMALSGD_BACKEND``; ``processor``, the processor the extension was compiled for
        (``x86_64``, ``aarch64``, ...; the machine's own without the extension); ``isa``, the
        kernel set in use (``baseline``, ``avx2``, ``avx512``, ``avx512_bf16``; override with
        ``MINIMALSGD_ISA``) and ``simd``, its vector instructions (``SSE2``, ``AVX2``,
        ``AVX-512``, ``AVX-512 BF16``; ``NEON`` on aarch64); ``supported_isas`` (this CPU) and
        ``compiled_isas`` (this build); ``MINIMALSGD_ISA``; ``openmp``; ``num_threads``;
        ``grain``, the element count below which a call runs on one thread.

    See Also
    --------
    show_config : the same, printed.

    Examples
    --------
    >>> info = minimalsgd.backend_info()
    >>> info["backend"] in ("native", "numpy"), info["version"] == minimalsgd.__version__
    (True, True)
    """
    core = R._core
    info: dict[str, Any] = {
        "version": __version__,
        "backend": "numpy" if core is None or R.DEFAULT_BACKEND == "numpy" else "native",
        "native_available": core is not None,
        "MINIMALSGD_BACKEND": os.environ.get("MINIMALSGD_BACKEND"),
    }
    if core is None:
        info["native_import_error"] = R.CORE_IMPORT_ERROR
        info.update(processor=platform.machine().lower(), isa=None, simd=None, supported_isas=[], openmp=False,
                    num_threads=1)
        return info
    isa = core.get_isa()
    info.update(
        processor=core.processor,
        isa=isa,
        simd=_ISA_SIMD.get(isa, core.baseline_simd),
        supported_isas=list(core.supported_isas()),
        compiled_isas=list(core.compiled_isas),
        MINIMALSGD_ISA=os.environ.get("MINIMALSGD_ISA"),
        openmp=bool(core.openmp),
        num_threads=core.get_num_threads(),
        grain=core.get_grain(),
    )
    return info


def show_config() -> None:
    """Print :func:`backend_info`, one line per entry (``python -m minimalsgd config`` does the same).

    Examples
    --------
    >>> minimalsgd.show_config()  # doctest: +ELLIPSIS
    minimalsgd configuration
      version            : ...
      backend            : ...
    ...
    """
    info = backend_info()
    print("minimalsgd configuration")
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"  {key:<{width}} : {value}")


def get_num_threads() -> int:
    """Threads the native kernels use for large work, seen from the calling thread.

    :func:`set_num_threads` (n > 0) decides for every thread; otherwise OpenMP's setting does:
    ``OMP_NUM_THREADS``, all cores by default, or a ``threadpoolctl.threadpool_limits`` in force.

    Returns
    -------
    int
        The thread count (1 without the native extension or without OpenMP).
    """
    return R._core.get_num_threads() if R._core is not None else 1


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for large work, from every Python thread.

    Work below the grain size (32768 elements) always runs on the calling thread; results do
    not depend on the thread count.

    Parameters
    ----------
    n : int
        The thread count; 0 goes back to OpenMP's setting (``OMP_NUM_THREADS`` or all cores, and
        threadpoolctl limits apply again).

    Raises
    ------
    TypeError
        ``n`` is not an int.
    ValueError
        ``n < 0``.

    Examples
    --------
    >>> minimalsgd.set_num_threads(1)
    >>> minimalsgd.get_num_threads()
    1
    >>> minimalsgd.set_num_threads(0)          # back to OMP_NUM_THREADS / all cores
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if R._core is not None:
        R._core.set_num_threads(n)
