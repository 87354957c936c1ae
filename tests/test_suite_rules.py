"""The rules the suite itself keeps (tests/conftest.py, pyproject's pytest options), each checked by
running pytest on a small test file of its own in a fresh folder with this conftest.py:

- MINIMALSGD_REQUIRE_ALL=1 turns a skip for a missing dependency into a failure;
- a whole-suite run that never exercised an ISA this CPU supports fails, a narrowed run does not;
- a DeprecationWarning from the tests' own code is an error, one from another package is not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import conftest
from minimalsgd import _functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _pytest(tmp_path: Path, test_source: str, *args: str, env: dict[str, str] | None = None,
            config: Path | None = None) -> subprocess.CompletedProcess[str]:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_child.py").write_text(test_source)
    run_env = {k: v for k, v in os.environ.items() if k not in ("MINIMALSGD_REQUIRE_ALL", "MINIMALSGD_ISA", "PYTEST_ADDOPTS")}
    run_env.update(env or {})
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path), *args]
    cmd += ["-c", str(config), "--rootdir", str(tmp_path)] if config else ["-c", os.devnull]
    return subprocess.run(cmd, cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=300)


def test_require_all_fails_a_skip_for_a_missing_dependency(tmp_path):
    source = 'import pytest\n\ndef test_needs_it():\n    pytest.importorskip("no_such_module_minimalsgd")\n'
    # (-k: a narrowed run, without the whole-run ISA check)
    strict = _pytest(tmp_path, source, "-k", "needs", env={"MINIMALSGD_REQUIRE_ALL": "1"})
    missing = conftest._missing_dependencies()
    if missing:  # this environment lacks some of them: the run stops at once and names them
        assert strict.returncode == 4, strict.stdout + strict.stderr
        assert all(m.split(" ")[0] in strict.stderr for m in missing), strict.stderr
    else:
        assert strict.returncode == 1 and "1 failed" in strict.stdout, strict.stdout + strict.stderr
        assert "skipped under MINIMALSGD_REQUIRE_ALL=1" in strict.stdout and "no_such_module_minimalsgd" in strict.stdout


def test_an_isa_left_out_fails_a_whole_run(tmp_path):
    core = F._core
    supported = core.supported_isas() if core is not None else []
    # Two tests: one with the default ISA; one that sets every ISA unless LEAVE_OUT is set.
    source = ("import os\nfrom minimalsgd import _functional as F\n\n"
              "def test_default_isa():\n    pass\n\n"
              "def test_every_isa():\n    if os.environ.get('LEAVE_OUT'):\n        return\n"
              "    saved = F._core.get_isa()\n"
              "    for isa in F._core.supported_isas():\n        F._core.set_isa(isa)\n"
              "    F._core.set_isa(saved)\n")
    looped = _pytest(tmp_path, source)
    assert looped.returncode == 0, looped.stdout + looped.stderr
    assert "ISAs exercised: " + (", ".join(supported) or "none") in looped.stdout, looped.stdout
    left_out = _pytest(tmp_path, source, env={"LEAVE_OUT": "1"})
    if len(supported) > 1:
        assert left_out.returncode == 1, left_out.stdout + left_out.stderr
        assert "never exercised: " + ", ".join(supported[:-1]) in left_out.stdout, left_out.stdout
        narrowed = _pytest(tmp_path, source, "-k", "default", env={"LEAVE_OUT": "1"})
        assert narrowed.returncode == 0 and "never exercised" not in narrowed.stdout, narrowed.stdout
    else:  # one ISA (or no extension): the default is all there is to exercise
        assert left_out.returncode == 0, left_out.stdout + left_out.stderr


def test_deprecations_from_our_code_are_errors_and_others_are_not(tmp_path):
    source = (
        "import warnings\n\n"
        "def test_ours():\n    warnings.warn('old', DeprecationWarning)\n\n"
        "def test_theirs():\n"
        "    warnings.warn_explicit('old', DeprecationWarning, 'x.py', 1, module='somepackage.sub')\n"
    )
    out = _pytest(tmp_path, source, "-k", "ours or theirs", config=ROOT / "pyproject.toml")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stdout and "test_ours" in out.stdout and "1 failed, 1 passed" in out.stdout, out.stdout
