"""Packaging: what the sdist holds, that it installs and works in a fresh virtual environment,
that the package under test is the installed one, and what backend_info() says about the platform.

The sdist tests (marked ``slow``: they build the package twice, about two minutes) run in CI;
deselect them locally with ``-m "not slow"``. They need a git checkout (they copy its files) and
PyPI or a pip cache (``python -m build`` and ``pip install`` fetch the build requirements).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

import minimalsgd

ROOT = Path(__file__).resolve().parents[1]
IN_CHECKOUT = (ROOT / "pyproject.toml").is_file() and (ROOT / ".git").exists() and shutil.which("git") is not None

# Files of the checkout that the sdist leaves out on purpose: CI scripts, git's own files, the
# dated bench results (bench/results/). Every other file a developer would commit must be in it.
LEFT_OUT_DIRS = (".ci/", "bench/results/")
LEFT_OUT_FILES = {".gitignore"}
# What a developer's checkout also holds (README's commands, CI, builds, test runs): never shipped.
JUNK = {
    ".venv/pyvenv.cfg": "home = /usr/bin\n",
    ".venv/lib/python3/site-packages/numpy/__init__.py": "",
    ".ci-venv/pyvenv.cfg": "home = /usr/bin\n",
    "build/cpp-tests/CMakeCache.txt": "",
    "build/cp311-cp311-linux_x86_64/_core.cpython-311-x86_64-linux-gnu.so": "",
    "dist/minimalsgd-0.0.0.tar.gz": "",
    "python/minimalsgd/__pycache__/optim.cpython-311.pyc": "",
    "python/minimalsgd/_core.cpython-311-x86_64-linux-gnu.so": "",
    "tests/__pycache__/conftest.cpython-311-pytest-8.pyc": "",
    ".pytest_cache/v/cache/lastfailed": "{}",
    ".hypothesis/examples/0/1": "",
    "bench/results/run.json": "{}",
    "docs/_build/html/index.html": "",
    "docs/auto_examples/index.rst": "",
    "docs/sg_execution_times.rst": "",
}

needs_checkout = pytest.mark.skipif(not IN_CHECKOUT, reason="needs the git checkout (the suite runs outside it)")


def _normalized_machine() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(m, m)


def test_native_extension_is_built():
    """The suite must test the native kernels: a package whose extension does not import would
    pass most tests on the NumPy backend alone."""
    info = minimalsgd.backend_info()
    assert info["native_available"], info.get("native_import_error")


def test_installed_package_is_the_one_tested():
    """CI's wheel run (.ci/wheel.sh) sets MINIMALSGD_TEST_INSTALLED_PREFIX to the fresh virtual
    environment it installed the repaired wheel into: the package imported must come from there."""
    prefix = os.environ.get("MINIMALSGD_TEST_INSTALLED_PREFIX")
    if not prefix:
        pytest.skip("MINIMALSGD_TEST_INSTALLED_PREFIX not set (only the wheel run sets it)")
    here = Path(minimalsgd.__file__).resolve()
    assert here.is_relative_to(Path(prefix).resolve()), here
    assert Path(minimalsgd._router._core.__file__).resolve().is_relative_to(Path(prefix).resolve())


def test_backend_info_names_the_processor_and_its_kernels():
    info = minimalsgd.backend_info()
    machine = _normalized_machine()
    assert info["processor"] == machine
    compiled = info["compiled_isas"]
    assert compiled[0] == "baseline" and info["isa"] in info["supported_isas"]
    assert set(info["supported_isas"]) <= set(compiled)
    if machine == "x86_64":
        assert set(compiled) <= {"baseline", "avx2", "avx512", "avx512_bf16"}
        expected_simd = {"baseline": "SSE2", "avx2": "AVX2", "avx512": "AVX-512", "avx512_bf16": "AVX-512 BF16"}[info["isa"]]
    else:
        # Only x86-64 has kernels beyond the baseline; aarch64's baseline is NEON.
        assert compiled == ["baseline"]
        expected_simd = "NEON" if machine == "aarch64" else info["simd"]
    assert info["simd"] == expected_simd
    # The baseline is always there and names its vector unit.
    code = "import minimalsgd; i = minimalsgd.backend_info(); print(i['isa'], i['simd'])"
    env = dict(os.environ, MINIMALSGD_ISA="baseline")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    want = {"x86_64": "SSE2", "aarch64": "NEON"}.get(machine)
    isa, simd = out.stdout.split()
    assert isa == "baseline" and (want is None or simd == want), out.stdout


def _checkout_files() -> list[str]:
    """The files a developer would commit: tracked ones plus untracked ones git does not ignore."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted(f for f in out.split("\0") if f and (ROOT / f).is_file())


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """Builds the sdist as a maintainer does (python -m build --sdist) in a copy of the checkout
    that also holds a .venv/, a build/ tree, caches and bench output; returns the archive, the
    checkout's files and the sdist's files (relative to its top folder)."""
    if not IN_CHECKOUT:
        pytest.skip("needs the git checkout (the suite runs outside it)")
    tmp = tmp_path_factory.mktemp("sdist")
    copy = tmp / "checkout"
    files = _checkout_files()
    for f in files:
        (copy / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, copy / f)
    for f, text in JUNK.items():
        (copy / f).parent.mkdir(parents=True, exist_ok=True)
        (copy / f).write_text(text)
    out = tmp / "dist"
    run = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(copy)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (archive,) = out.glob("minimalsgd-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    top = f"minimalsgd-{minimalsgd.__version__}/"
    assert all(n.startswith(top) for n in names), names[:5]
    return archive, files, sorted(n[len(top) :] for n in names)


@pytest.mark.slow
@needs_checkout
def test_sdist_holds_exactly_the_sources(sdist):
    _, files, shipped = sdist
    expected = {f for f in files if not f.startswith(LEFT_OUT_DIRS) and f not in LEFT_OUT_FILES}
    got = set(shipped) - {"PKG-INFO"}
    assert "PKG-INFO" in shipped
    missing = sorted(expected - got)
    assert not missing, f"in the checkout but not in the sdist (add to sdist.include, or to LEFT_OUT_*): {missing}"
    extra = sorted(got - expected)
    assert not extra, f"in the sdist but not a source file of the checkout: {extra}"
    # The essentials, by name, so that the rule above cannot pass on an empty checkout.
    for f in ("pyproject.toml", "CMakeLists.txt", "README.md", "LICENSE", "cmake/minimalsgdConfig.cmake.in",
              "csrc/include/minimalsgd/sgd.hpp", "csrc/python/module.cpp", "python/minimalsgd/__init__.py",
              "tests/test_sgd.py", "examples/cpp/CMakeLists.txt", "bench/run.py", "CHANGELOG.md", "docs/conf.py"):
        assert f in got, f
    for junk in JUNK:
        assert junk not in got
    never = (".venv/", ".ci-venv/", "build/", "dist/", ".ci/", "docs/_build/", "docs/auto_examples/")
    assert not [f for f in got if f.startswith(never) or "__pycache__" in f]


@pytest.mark.slow
@needs_checkout
def test_sdist_installs_into_a_fresh_venv_and_steps_like_numpy(sdist, tmp_path):
    archive, _, _ = sdist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", str(archive)], capture_output=True, text=True)
    assert inst.returncode == 0, inst.stdout[-3000:] + inst.stderr[-3000:]
    smoke = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        import numpy as np
        import minimalsgd

        assert Path(minimalsgd.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), minimalsgd.__file__
        info = minimalsgd.backend_info()
        assert info["backend"] == "native", info
        rng = np.random.default_rng(0)

        def params():
            r = np.random.default_rng(1)
            return {
                "w32": {"value": r.standard_normal((37, 53)).astype(np.float32), "grad": None},
                "w64": {"value": r.standard_normal(100003), "grad": None},
            }

        native, numpy_ = params(), params()
        kw = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, clip_grad_norm=2.0)
        opt_n = minimalsgd.SGD(native, backend="native", **kw)
        opt_p = minimalsgd.SGD(numpy_, backend="numpy", **kw)
        for _ in range(2):
            for name in native:
                g = rng.standard_normal(native[name]["value"].shape).astype(native[name]["value"].dtype)
                native[name]["grad"], numpy_[name]["grad"] = g, g.copy()
            opt_n.step()
            opt_p.step()
        for name in native:
            a, b = native[name]["value"], numpy_[name]["value"]
            assert a.tobytes() == b.tobytes(), name
            sa, sb = opt_n.state[name]["momentum_buffer"], opt_p.state[name]["momentum_buffer"]
            assert sa.tobytes() == sb.tobytes(), name
        print("smoke ok", info["isa"], info["processor"])
        """
    )
    run = subprocess.run([str(py), "-c", smoke], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "smoke ok" in run.stdout
