// The avx512_bf16 kernels: avx512 plus AVX512_BF16's vcvtneps2bf16 (compile flags in CMakeLists.txt,
// MINIMALSGD_X86_FLAGS_avx512_bf16). x86-64 only: for any other target this translation unit is
// empty (and CMake does not build it).
#define MINIMALSGD_TARGET_NAMESPACE avx512_bf16
#define MINIMALSGD_KERNEL_TABLE_NAME kernels_avx512_bf16
#include <minimalsgd/config.hpp>
#if MINIMALSGD_X86_64
#include "kernels_target.hpp"
#endif
