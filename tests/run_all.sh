#!/usr/bin/env bash
# Installs minimalsgd with its test and MPI extras into the current Python environment, then runs every
# test: pytest, and the C++ tests under ctest (plain, OpenMP, AVX2 and ASan+UBSan builds).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install ".[test,mpi]"
python -m pytest "$@"
cmake -S . -B build/cpp-tests -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMINIMALSGD_BUILD_TESTS=ON -DMINIMALSGD_SANITIZE=ON
cmake --build build/cpp-tests -j 2
ctest --test-dir build/cpp-tests --output-on-failure
