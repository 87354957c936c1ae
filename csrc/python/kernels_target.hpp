// Included once by each kernels_<target>.cpp, after it defines MINIMALSGD_TARGET_NAMESPACE and
// MINIMALSGD_KERNEL_TABLE_NAME; the translation unit's -m flags decide the instructions.
#include "kernels.hpp"

namespace minimalsgd_python {

const KernelTable& MINIMALSGD_KERNEL_TABLE_NAME() {
    static const KernelTable table{
        static_cast<void (*)(const minimalsgd::TensorSpan<float>*, std::size_t, const minimalsgd::SgdOptions*,
                             std::size_t, float, const minimalsgd::Parallel&)>(&minimalsgd::multi_tensor_sgd_step<float>),
        static_cast<void (*)(const minimalsgd::TensorSpan<double>*, std::size_t, const minimalsgd::SgdOptions*,
                             std::size_t, double, const minimalsgd::Parallel&)>(&minimalsgd::multi_tensor_sgd_step<double>),
        &minimalsgd::multi_tensor_sum_of_squares<float>,
        &minimalsgd::multi_tensor_sum_of_squares<double>,
        &stream_loop<float>,
        &stream_loop<double>,
        &read_loop<float>,
        &read_loop<double>,
        static_cast<void (*)(const minimalsgd::AdamSpan<float>*, std::size_t, const minimalsgd::AdamOptions*,
                             std::size_t, float, const minimalsgd::Parallel&)>(&minimalsgd::multi_tensor_adam_step<float>),
        static_cast<void (*)(const minimalsgd::AdamSpan<double>*, std::size_t, const minimalsgd::AdamOptions*,
                             std::size_t, double, const minimalsgd::Parallel&)>(&minimalsgd::multi_tensor_adam_step<double>),
        &adam_stream_loop<float>,
        &adam_stream_loop<double>,
    };
    return table;
}

}  // namespace minimalsgd_python
