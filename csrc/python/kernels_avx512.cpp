// The avx512 kernels (compile flags in CMakeLists.txt).
#define MINIMALSGD_TARGET_NAMESPACE avx512
#define MINIMALSGD_KERNEL_TABLE_NAME kernels_avx512
#include "kernels_target.hpp"
