"""Where the C++ headers and the CMake package of the installed wheel are (as pybind11 does)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["get_include", "get_cmake_dir"]


def _package_dir(*parts: str) -> Path:
    path = Path(str(files("minimalsgd").joinpath(*parts)))
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: minimalsgd is not installed as a wheel (pip install .) "
            "with its C++ headers and CMake package"
        )
    return path


def get_include() -> str:
    """The directory to add to the include path: it holds ``minimalsgd/minimalsgd.hpp``.

    ``python -m minimalsgd --includedir`` prints it, ``--includes`` as a ``-I`` flag.

    Returns
    -------
    str
        An absolute path inside the installed package.

    Raises
    ------
    FileNotFoundError
        minimalsgd is not installed as a wheel with its C++ headers (a source checkout on
        ``sys.path``, say).
    """
    return str(_package_dir("include"))


def get_cmake_dir() -> str:
    """The directory of ``minimalsgdConfig.cmake`` in the installed wheel.

    Pass it as ``minimalsgd_DIR`` (or add the site-packages directory to ``CMAKE_PREFIX_PATH``)
    for ``find_package(minimalsgd CONFIG)``; ``python -m minimalsgd --cmakedir`` prints it.

    Returns
    -------
    str
        An absolute path inside the installed package.

    Raises
    ------
    FileNotFoundError
        minimalsgd is not installed as a wheel with its CMake package.

    Examples
    --------
    >>> import os
    >>> os.path.isfile(os.path.join(minimalsgd.get_cmake_dir(), "minimalsgdConfig.cmake"))
    True
    """
    return str(_package_dir("share", "cmake", "minimalsgd"))
