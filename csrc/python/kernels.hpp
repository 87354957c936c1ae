// The kernels of one instruction-set target, as a table of plain function pointers.
// kernels_target.hpp fills one table per target; module.cpp picks one at import.
#pragma once

#include <minimalsgd/config.hpp>
#include <minimalsgd/options.hpp>
#include <minimalsgd/sgd.hpp>

namespace minimalsgd_python {

struct KernelTable {
    void (*step_f32)(const minimalsgd::TensorSpan<float>*, std::size_t, const minimalsgd::SgdOptions&, float,
                     const minimalsgd::Parallel&);
    void (*step_f64)(const minimalsgd::TensorSpan<double>*, std::size_t, const minimalsgd::SgdOptions&, double,
                     const minimalsgd::Parallel&);
    double (*sumsq_f32)(const minimalsgd::ConstSpan<float>*, std::size_t, const minimalsgd::Parallel&);
    double (*sumsq_f64)(const minimalsgd::ConstSpan<double>*, std::size_t, const minimalsgd::Parallel&);
};

// One per translation unit, each compiled with its own -m flags and target namespace.
const KernelTable& kernels_baseline();
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();

}  // namespace minimalsgd_python
