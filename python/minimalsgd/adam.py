"""``minimalsgd.adam.Adam`` and ``AdamW``: kept importable from here; they live in
:mod:`minimalsgd.optim.adam`."""

from __future__ import annotations

from .optim.adam import Adam, AdamW

__all__ = ["Adam", "AdamW"]
