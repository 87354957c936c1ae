"""The C++ package from the installed wheel: --cmakedir/--includedir, and a consumer built with it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import minimalsgd

ROOT = Path(__file__).resolve().parents[1]
cmake = shutil.which("cmake")


def test_paths_point_into_the_installed_package():
    include = Path(minimalsgd.get_include())
    cmake_dir = Path(minimalsgd.get_cmake_dir())
    assert (include / "minimalsgd" / "minimalsgd.hpp").is_file()
    assert (cmake_dir / "minimalsgdConfig.cmake").is_file()
    assert (cmake_dir / "minimalsgdConfigVersion.cmake").is_file()
    out = subprocess.run(
        [sys.executable, "-m", "minimalsgd", "--includedir", "--cmakedir"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [str(include), str(cmake_dir)]
    # The headers in the wheel are the headers of this source tree.
    for header in (ROOT / "csrc" / "include" / "minimalsgd").glob("*.hpp"):
        assert (include / "minimalsgd" / header.name).read_text() == header.read_text()


@pytest.mark.skipif(cmake is None, reason="cmake not installed")
@pytest.mark.parametrize("route", ["prefix_path", "minimalsgd_dir"])
def test_example_builds_and_trains_against_the_wheel(tmp_path, route):
    if route == "prefix_path":
        # A CMAKE_PREFIX_PATH of site-packages finds <prefix>/minimalsgd/share/cmake/minimalsgd.
        site = Path(minimalsgd.__file__).resolve().parents[1]
        option = f"-DCMAKE_PREFIX_PATH={site}"
    else:
        option = f"-Dminimalsgd_DIR={minimalsgd.get_cmake_dir()}"
    build = tmp_path / "build"
    configure = subprocess.run(
        [cmake, "-S", str(ROOT / "examples" / "cpp"), "-B", str(build), option, "-DCMAKE_BUILD_TYPE=Release"],
        capture_output=True,
        text=True,
    )
    assert configure.returncode == 0, configure.stdout + configure.stderr
    built = subprocess.run([cmake, "--build", str(build)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    run = subprocess.run([str(build / "train_linear")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "loss fell from" in run.stdout
    assert minimalsgd.__version__ in run.stdout
