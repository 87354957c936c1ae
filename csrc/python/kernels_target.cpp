// The kernel table of one instruction-set target. CMakeLists.txt compiles this file once per
// target (minimalsgd_add_target_sources): each copy defines MINIMALSGD_TARGET_NAMESPACE to the
// target's name (baseline, avx2, ...) and gets that target's -m flags, which decide the
// instructions. Nothing to edit here when a kernel is added: the table follows kernels.hpp's list.
#include "kernels.hpp"

namespace minimalsgd_python {

template <>
const KernelTable& table<KernelTable, minimalsgd::Isa::MINIMALSGD_TARGET_NAMESPACE>() {
    static constexpr KernelTable kTable = make_table(ProductKernels{});
    return kTable;
}

}  // namespace minimalsgd_python
