"""The version, read from the installed metadata (whose source is csrc/include/minimalsgd/version.hpp)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("minimalsgd")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"
