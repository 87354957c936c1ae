// The baseline kernels (compile flags in CMakeLists.txt).
#define MINIMALSGD_TARGET_NAMESPACE baseline
#define MINIMALSGD_KERNEL_TABLE_NAME kernels_baseline
#include "kernels_target.hpp"
