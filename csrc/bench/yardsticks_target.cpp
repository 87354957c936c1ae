// The yardstick table of one instruction-set target: compiled once per target by CMakeLists.txt
// (minimalsgd_add_target_sources), as csrc/python/kernels_target.cpp is.
#include "yardsticks.hpp"

namespace minimalsgd_python {

template <>
const BenchTable& table<BenchTable, minimalsgd::Isa::MINIMALSGD_TARGET_NAMESPACE>() {
    static constexpr BenchTable kTable = make_table(BenchKernels{});
    return kTable;
}

}  // namespace minimalsgd_python
