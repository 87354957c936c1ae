#!/usr/bin/env bash
# README's test command. Installs minimalsgd with the test, MPI and torch extras into the current
# Python environment, then runs every test: pytest with MINIMALSGD_REQUIRE_ALL=1 (a dependency this
# script installs that is missing fails the run instead of skipping tests; the summary names the
# instruction sets exercised), and the C++ tests under ctest (plain, OpenMP, one build per x86-64
# kernel set, skipped where this CPU lacks it, the same --digest from each, ASan+UBSan).
# Arguments go to pytest: bash tests/run_all.sh -m "not slow".
#
# torch: the torch extra pins torch==2.13.0, the version CI tests against. On Linux x86-64 PyPI
# serves the CUDA build of it (gigabytes); for the CPU build of the same version run
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash tests/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install ".[test,mpi,torch]"
MINIMALSGD_REQUIRE_ALL=1 python -m pytest "$@"
cmake -S . -B build/cpp-tests -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMINIMALSGD_BUILD_TESTS=ON -DMINIMALSGD_SANITIZE=ON
cmake --build build/cpp-tests -j 2
ctest --test-dir build/cpp-tests --output-on-failure
