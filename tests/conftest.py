"""Shared test settings, set once here:

- hypothesis profiles ("ci" under CI: .ci/run sets HYPOTHESIS_PROFILE=ci);
- no inherited MINIMALSGD_BACKEND;
- MINIMALSGD_REQUIRE_ALL=1 (tests/run_all.sh and the wheel job set it): every dependency that
  README's test command installs must be there, checked before the first test, and a test that
  skips for a missing one fails instead;
- the instruction sets (ISAs) the run exercised: every ``_core.set_isa`` of a test is recorded
  (and, through the ``record_isa`` fixture, every ``MINIMALSGD_ISA`` of a child process); the
  summary names them, and a whole-suite run fails when a compiled ISA that this CPU supports was
  never exercised.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))

REQUIRE_ALL = os.environ.get("MINIMALSGD_REQUIRE_ALL") == "1"

# What README's test command installs (tests/run_all.sh: pip install ".[test,mpi,torch]"), by the
# module the tests import, with where it comes from.
REQUIRED_MODULES = {
    "ml_dtypes": "a dependency of minimalsgd",
    "hypothesis": "the test extra",
    "threadpoolctl": "the test extra",
    "build": "the test extra",
    "expecttest": "the test extra",
    "sklearn": "the test extra (scikit-learn)",
    "matplotlib": "the test extra",
    "tqdm": "the test extra",
    "torch": "the torch extra (torch==2.13.0)",
    "mpi4py": "the mpi extra",
}

# Skips that say where or how the suite runs, not what is missing: allowed under
# MINIMALSGD_REQUIRE_ALL. (The source-tree run has no installed prefix to check; the wheel job's
# copy of the suite has no git checkout to build from; an MPI case about ranks that disagree has
# nothing to test on one rank.)
ALLOWED_SKIPS = (
    "MINIMALSGD_TEST_INSTALLED_PREFIX not set",
    "needs the git checkout",
    "needs two ranks or more",
)


def _missing_dependencies() -> list[str]:
    missing = [f"{mod} ({origin})" for mod, origin in REQUIRED_MODULES.items() if importlib.util.find_spec(mod) is None]
    import minimalsgd

    if not minimalsgd.backend_info()["native_available"]:
        missing.append(f"the native extension minimalsgd._core ({minimalsgd.backend_info().get('native_import_error')})")
    bindir = str(Path(sys.executable).parent)
    if shutil.which("mpiexec", path=bindir) is None and shutil.which("mpiexec") is None:
        missing.append("mpiexec (the mpi extra: the mpich wheel)")
    if shutil.which("cmake") is None:
        missing.append("cmake (tests/run_all.sh builds the C++ tests with it)")
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler (c++, g++ or clang++)")
    return missing


def pytest_configure(config: pytest.Config) -> None:
    if REQUIRE_ALL:
        missing = _missing_dependencies()
        if missing:
            raise pytest.UsageError(
                "MINIMALSGD_REQUIRE_ALL=1 (set by tests/run_all.sh) and these test dependencies are missing:\n  "
                + "\n  ".join(missing)
                + '\nInstall them (python -m pip install ".[test,mpi,torch]"), or run pytest without MINIMALSGD_REQUIRE_ALL.'
            )
    config.stash[_ISAS] = _IsaRecord()
    config.pluginmanager.register(config.stash[_ISAS], "minimalsgd-isas")


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under MINIMALSGD_REQUIRE_ALL a skip for anything but where the suite runs is a failure."""
    if not REQUIRE_ALL or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if any(allowed in reason for allowed in ALLOWED_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped under MINIMALSGD_REQUIRE_ALL=1 (a dependency of the test run is missing?): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.fixture(autouse=True)
def _no_backend_env(monkeypatch):
    """Tests choose their backend explicitly; an inherited MINIMALSGD_BACKEND must not leak in."""
    monkeypatch.delenv("MINIMALSGD_BACKEND", raising=False)


# ---------------------------------------------------------------------------------------------
# The instruction sets the run exercised.

_ISAS = pytest.StashKey["_IsaRecord"]()


class _IsaRecord:
    """Records the ISAs whose kernels the tests chose: the one in force at import (every native
    call of a test that sets none runs it), each successful ``_core.set_isa``, and each child
    process's ``MINIMALSGD_ISA`` reported through the ``record_isa`` fixture."""

    def __init__(self) -> None:
        self.exercised: set[str] = set()
        self.compiled: list[str] = []
        self.supported: list[str] = []
        self.narrowed = False
        from minimalsgd import _functional

        core = self.core = _functional._core
        if core is None:
            return
        self.compiled = list(core.compiled_isas)
        self.supported = list(core.supported_isas())
        self.default = core.get_isa()
        original = core.set_isa

        def set_isa(name: str) -> None:
            original(name)
            self.exercised.add(core.get_isa())

        set_isa.__doc__ = original.__doc__
        core.set_isa = set_isa
        self._original = original

    def add(self, isa: str) -> None:
        self.exercised.add(isa)

    def missing(self) -> list[str]:
        return [isa for isa in self.supported if isa not in self.exercised]

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
        # The check applies to a whole-suite run: directories (or testpaths) only, nothing chosen by
        # keyword, node id, --deselect or last-failed; -m "not slow" (the quick run) still counts.
        opt = config.option
        markexpr = (getattr(opt, "markexpr", "") or "").strip()
        args = [a for a in config.args]
        self.narrowed = bool(
            getattr(opt, "keyword", "")
            or getattr(opt, "deselect", None)
            or getattr(opt, "lf", False)
            or markexpr not in ("", "not slow")
            or any("::" in a or not Path(a).is_dir() for a in args)
        )
        if items and self.core is not None:
            self.exercised.add(self.default)  # every native call that sets no ISA runs this one

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.core is not None:
            self.core.set_isa = self._original
        if self.missing() and not self.narrowed and session.testscollected and exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter, exitstatus: int, config: pytest.Config) -> None:
        if self.core is None:
            terminalreporter.write_line("minimalsgd ISAs exercised: none (no native extension)")
            return
        order = self.compiled or self.supported
        exercised = [isa for isa in order if isa in self.exercised]
        terminalreporter.write_line(
            f"minimalsgd ISAs exercised: {', '.join(exercised) or 'none'} "
            f"(compiled: {', '.join(self.compiled)}; this CPU supports: {', '.join(self.supported)})"
        )
        missing = self.missing()
        if missing and not self.narrowed:
            terminalreporter.write_line(
                f"FAILED: compiled ISAs that this CPU supports were never exercised: {', '.join(missing)}", red=True
            )
        not_here = [isa for isa in self.compiled if isa not in self.supported]
        if not_here:
            terminalreporter.write_line(
                f"not run on this CPU: {', '.join(not_here)} (README, Testing: which CI machine type covers them)"
            )


@pytest.fixture
def record_isa(pytestconfig: pytest.Config):
    """For tests whose child processes choose an ISA (MINIMALSGD_ISA): call with the ISA the child
    reports it ran."""
    return pytestconfig.stash[_ISAS].add
