#!/usr/bin/env bash
# aarch64 build check, run by .ci/run: cross-compile with Debian's g++-aarch64-linux-gnu, run
# the C++ tests under qemu-aarch64 (user-mode emulation), and cross-build the Python extension
# (compile and link only: no aarch64 Python runs here). Installs its tools with apt itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- tools (idempotent: apt is asked only for what is missing) -------------------------------
need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if ((${#need[@]})); then
  echo "aarch64: installing ${need[*]} with apt"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
