// The avx2 kernels (compile flags in CMakeLists.txt, MINIMALSGD_X86_FLAGS_avx2). x86-64 only:
// for any other target this translation unit is empty (and CMake does not build it).
#define MINIMALSGD_TARGET_NAMESPACE avx2
#define MINIMALSGD_KERNEL_TABLE_NAME kernels_avx2
#include <minimalsgd/config.hpp>
#if MINIMALSGD_X86_64
#include "kernels_target.hpp"
#endif
