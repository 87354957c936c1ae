"""Shared test settings: hypothesis profiles (set once here) and backend helpers."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))


@pytest.fixture(autouse=True)
def _no_backend_env(monkeypatch):
    """Tests choose their backend explicitly; an inherited MINIMALSGD_BACKEND must not leak in."""
    monkeypatch.delenv("MINIMALSGD_BACKEND", raising=False)
