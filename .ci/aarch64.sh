#!/usr/bin/env bash
# aarch64 in CI (called by .ci/run; runs alone too, from any Python environment with pip):
#  1. installs the cross compiler and qemu with apt if missing (g++-aarch64-linux-gnu, qemu-user);
#  2. cross-compiles the C++ tests for aarch64 (cmake/aarch64-linux-gnu.cmake) and runs them under
#     qemu-aarch64 with ctest: serial and OpenMP builds (the sanitizer build runs on x86-64 in
#     tests/run_all.sh; under qemu it would cost about a minute more);
#  3. checks bit-for-bit agreement across processors: the tests' --digest (a hash of the kernels'
#     results on fixed inputs: SGD and Adam in float and double, SGD on bfloat16/float16 with
#     16-bit or float32 buffers, nearest and stochastic rounding, every option path; see
#     csrc/tests/test_core.cpp) from the aarch64 builds must equal the x86-64 build's (ctest's
#     test_core_same_digest has compared the x86-64 builds of every kernel set this CPU runs);
#  4. cross-builds the Python extensions minimalsgd._core and minimalsgd._bench_core for aarch64
#     (compile and link only: no aarch64 Python runs here) and checks the results: AArch64
#     objects, no x86 kernel source compiled, NEON vector code in each and no fused multiply-add
#     (-ffp-contract=off).
set -euo pipefail
cd "$(dirname "$0")/.."
B=build/aarch64-ci
SYSROOT=/usr/aarch64-linux-gnu
t0=$SECONDS
rm -rf $B $B.*.log  # a fresh configure: the toolchain file applies only to a new build tree
mkdir -p build

# --- 1. tools (idempotent: apt is asked only for what is missing) -----------------------------
need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if ((${#need[@]})); then
  echo "aarch64: installing ${need[*]} with apt"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"; } >$B.apt.log 2>&1; then
    cat $B.apt.log >&2
    echo "aarch64: apt could not install ${need[*]}" >&2
    exit 1
  fi
fi
python -c "import pybind11" 2>/dev/null || python -m pip install -q "pybind11>=2.12"
python -c "import cmake" 2>/dev/null || command -v cmake >/dev/null || python -m pip install -q cmake
t_tools=$((SECONDS - t0))

# --- 2. the C++ tests, cross-compiled, run under qemu by ctest ---------------------------------
cmake -S . -B $B/tests --toolchain cmake/aarch64-linux-gnu.cmake -DCMAKE_BUILD_TYPE=Release \
  -DMINIMALSGD_BUILD_TESTS=ON -DMINIMALSGD_SANITIZE=OFF -DMINIMALSGD_INSTALL=OFF >$B.tests.log
grep -q "target processor aarch64" $B.tests.log || { cat $B.tests.log >&2; echo "aarch64: not an aarch64 build" >&2; exit 1; }
cmake --build $B/tests -j 2 >>$B.tests.log
ctest --test-dir $B/tests --output-on-failure -j 2
t_tests=$((SECONDS - t0))

# --- 3. the same bits on both processors --------------------------------------------------------
# The x86-64 side: tests/run_all.sh's build when there is one (another optimization level: the
# bits must not depend on it either), else a build of its own.
host=build/cpp-tests/csrc/tests/test_core_serial
if [ -f build/cpp-tests/CMakeCache.txt ] && [ "$(uname -m)" = x86_64 ]; then
  cmake --build build/cpp-tests -j 2 --target test_core_serial >$B.host.log  # up to date with the sources
else
  cmake -S . -B $B/host -DCMAKE_BUILD_TYPE=Release -DMINIMALSGD_BUILD_TESTS=ON -DMINIMALSGD_INSTALL=OFF >$B.host.log
  cmake --build $B/host -j 2 --target test_core_serial >>$B.host.log
  host=$B/host/csrc/tests/test_core_serial
fi
x86=$($host --digest)
for t in test_core_serial test_core_openmp; do
  arm=$(qemu-aarch64 -L $SYSROOT $B/tests/csrc/tests/$t --digest)
  if [ "$arm" != "$x86" ]; then
    echo "aarch64: $t --digest $arm differs from x86-64's $x86: the kernels do not agree bit for bit" >&2
    echo "aarch64: the parts that differ (< x86-64, > aarch64):" >&2
    diff <($host --digest-parts | sed 's/ (.*//') \
      <(qemu-aarch64 -L $SYSROOT $B/tests/csrc/tests/$t --digest-parts | sed 's/ (.*//') >&2 || true
    exit 1
  fi
done
echo "aarch64: kernel results bit for bit as on x86-64 (digest $x86)"
t_digest=$((SECONDS - t0))

# --- 4. the Python extensions, cross-built (compile and link only) -------------------------------
pyinc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
soabi=$(python -c "import sys; print(f'cpython-{sys.version_info[0]}{sys.version_info[1]}-aarch64-linux-gnu')")
cmake -S . -B $B/python --toolchain cmake/aarch64-linux-gnu.cmake -DCMAKE_BUILD_TYPE=Release \
  -DMINIMALSGD_BUILD_PYTHON=ON -DMINIMALSGD_BUILD_TESTS=OFF -DMINIMALSGD_INSTALL=OFF \
  -DPython_INCLUDE_DIR="$pyinc" -DPython_SOABI="$soabi" -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" >$B.python.log
cmake --build $B/python -j 2 >>$B.python.log
if grep -q "avx" $B/python/CMakeFiles/_core.dir/build.make $B/python/CMakeFiles/_bench_core.dir/build.make; then
  echo "aarch64: an x86-only kernel source was compiled for aarch64" >&2
  exit 1
fi
summary=""
for module in _core _bench_core; do
  so=$(ls $B/python/$module.*.so)
  aarch64-linux-gnu-readelf -h "$so" | grep -q "Machine:.*AArch64" || { echo "aarch64: $so is not an AArch64 object" >&2; exit 1; }
  dis=$(aarch64-linux-gnu-objdump -d "$so")
  n_neon=$(grep -cE $'\t''f(mul|add|sub)'$'\t''v[0-9]+\.(4s|2d)' <<<"$dis" || true)
  n_fma=$(grep -cE $'\t''f(n?mla|n?mls|n?madd|n?msub)'$'\t' <<<"$dis" || true)
  if [ "$n_neon" -eq 0 ] || [ "$n_fma" -ne 0 ]; then
    echo "aarch64: $module: expected NEON vector arithmetic and no fused multiply-add; got $n_neon and $n_fma" >&2
    exit 1
  fi
  summary+="$(basename "$so") ($n_neon NEON float ops) "
done
t_python=$((SECONDS - t0))
echo "aarch64: extensions cross-built: ${summary}(AArch64, baseline kernels only, no FMA)"
echo "aarch64: timings (s, cumulative): tools $t_tools, C++ tests under qemu $t_tests, digest $t_digest, extension $t_python"
