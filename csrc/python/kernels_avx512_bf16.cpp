// The avx512_bf16 kernels: avx512 plus AVX512_BF16's vcvtneps2bf16 (compile flags in CMakeLists.txt).
#define MINIMALSGD_TARGET_NAMESPACE avx512_bf16
#define MINIMALSGD_KERNEL_TABLE_NAME kernels_avx512_bf16
#include "kernels_target.hpp"
