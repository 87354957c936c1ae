// The avx2 kernels (compile flags in CMakeLists.txt).
#define MINIMALSGD_TARGET_NAMESPACE avx2
#define MINIMALSGD_KERNEL_TABLE_NAME kernels_avx2
#include "kernels_target.hpp"
