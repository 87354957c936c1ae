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
    """The directory to add to the include path: it holds ``minimalsgd/minimalsgd.hpp``."""
    return str(_package_dir("include"))


def get_cmake_dir() -> str:
    """The directory of ``minimalsgdConfig.cmake``: pass it as ``minimalsgd_DIR`` (or add the
    site-packages directory to ``CMAKE_PREFIX_PATH``) for ``find_package(minimalsgd CONFIG)``."""
    return str(_package_dir("share", "cmake", "minimalsgd"))
