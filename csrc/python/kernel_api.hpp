// minimalsgd._core's kernel table, for the other extension of the package (minimalsgd._bench_core,
// the bench's timing of the bare kernel call): a PyCapsule `_core._kernel_api` holding a KernelApi.
// Both extensions are built from one source tree by one CMake project; `layout` (the kernel list
// as text) and the table's size guard against mixing builds anyway.
#pragma once

#include <cstddef>

#include <minimalsgd/config.hpp>
#include <minimalsgd/cpu.hpp>

#include "kernels.hpp"

namespace minimalsgd_python {

struct KernelApi {
    const char* layout;                   // kKernelLayout of the module that filled it
    std::size_t table_size;               // sizeof(KernelTable)
    const KernelTable& (*table)();        // the kernels of the instruction set in force
    minimalsgd::Isa (*isa)();             // that instruction set
    minimalsgd::Parallel (*parallel)();   // the threads and grain a call uses
};

inline constexpr const char kKernelApiName[] = "minimalsgd._core._kernel_api";

#define MINIMALSGD_KERNEL_ROW_TEXT(op, storage, buffer) #op "(" #storage "," #buffer ") "
inline constexpr const char kKernelLayout[] = MINIMALSGD_KERNELS(MINIMALSGD_KERNEL_ROW_TEXT);
#undef MINIMALSGD_KERNEL_ROW_TEXT

}  // namespace minimalsgd_python
