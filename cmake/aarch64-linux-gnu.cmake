# Toolchain file: cross-compile for aarch64 Linux with Debian's g++-aarch64-linux-gnu, and run
# what is built (ctest, try_run) under qemu-aarch64 with the cross libraries as its root.
#   cmake -S . -B build/aarch64 --toolchain cmake/aarch64-linux-gnu.cmake -DMINIMALSGD_BUILD_TESTS=ON
# .ci/aarch64.sh installs the tools (apt: g++-aarch64-linux-gnu qemu-user) and runs this.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(_msgd_triple aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${_msgd_triple}-gcc)
set(CMAKE_CXX_COMPILER ${_msgd_triple}-g++)

set(MINIMALSGD_AARCH64_SYSROOT "/usr/${_msgd_triple}" CACHE PATH "The aarch64 libraries qemu loads")
set(CMAKE_FIND_ROOT_PATH ${MINIMALSGD_AARCH64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

find_program(MINIMALSGD_QEMU_AARCH64 qemu-aarch64)
if(MINIMALSGD_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${MINIMALSGD_QEMU_AARCH64} -L ${MINIMALSGD_AARCH64_SYSROOT})
endif()
