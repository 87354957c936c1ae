// The kernels of minimalsgd._core, declared once: every (operation, storage, buffer) the module
// calls is one row of MINIMALSGD_KERNELS below. From that list (dispatch.hpp) come the table of
// function pointers, its filling for each instruction-set target (kernels_target.cpp, compiled
// once per target by CMakeLists.txt), the lookup by type (table.get<ops::sgd, float>()) and the
// run-time filing of each tensor's span by its storage and buffer kinds (Spans::with).
//
// How to add a kernel:
//   - a new storage or buffer type of an existing operation (say Adam on bfloat16): one row,
//     X(adam, bf16, bf16), plus what makes the core's function template compile for that type
//     (its instantiation is generated for every target). If it is a new storage type, add it to
//     MINIMALSGD_DTYPES (dispatch.hpp) and to buffers.hpp's inspect() (its NumPy type number).
//   - a new operation: its traits struct in namespace ops (Span and Fn, as below), its
//     Implementation<ops::name> (the core's function template it runs), and its rows. The
//     bindings then call table.get<ops::name, S, B>() or run a Spans<ops::name, ...> batch.
//   - a bench-only loop goes in csrc/bench/yardsticks.hpp (minimalsgd._bench_core), not here.
// The order of rows of one operation is the order a batch runs them in (the sum of squares adds
// its per-type totals in that order: keep it, or the bits of the norm change).
#pragma once

#include <minimalsgd/adam.hpp>
#include <minimalsgd/config.hpp>
#include <minimalsgd/options.hpp>
#include <minimalsgd/sgd.hpp>

#include "dispatch.hpp"

// X(operation, storage, buffer): storage and buffer are MINIMALSGD_DTYPES names.
#define MINIMALSGD_KERNELS(X) \
    X(sgd, f32, f32)          \
    X(sgd, f64, f64)          \
    X(sgd, bf16, bf16)        \
    X(sgd, bf16, f32)         \
    X(sgd, f16, f16)          \
    X(sgd, f16, f32)          \
    X(adam, f32, f32)         \
    X(adam, f64, f64)         \
    X(sumsq, f32, f32)        \
    X(sumsq, f64, f64)        \
    X(sumsq, bf16, bf16)      \
    X(sumsq, f16, f16)

namespace minimalsgd_python {

namespace ops {

// The fused SGD step (sgd.hpp): value and grad of the storage type, the momentum buffer of the
// buffer type; each span refers to one of the options sets (its `group`).
struct sgd {
    using Options = minimalsgd::SgdOptions;
    template <class S, class B>
    using Span = minimalsgd::TensorSpan<S, B>;
    template <class S, class B>
    using Scale = minimalsgd::compute_t<S>;  // the grad scale's type: float for 16-bit storage
    template <class S, class B>
    using Fn = void (*)(const Span<S, B>*, std::size_t, const Options*, std::size_t, Scale<S, B>,
                        const minimalsgd::Parallel&);
};

// The fused Adam/AdamW step (adam.hpp): the moments of the value's type (B is S).
struct adam {
    using Options = minimalsgd::AdamOptions;
    template <class S, class B>
    using Span = minimalsgd::AdamSpan<S>;
    template <class S, class B>
    using Scale = minimalsgd::compute_t<S>;
    template <class S, class B>
    using Fn = void (*)(const Span<S, B>*, std::size_t, const Options*, std::size_t, Scale<S, B>,
                        const minimalsgd::Parallel&);
};

// The sum of squares of many gradients, in double (sgd.hpp); B is S.
struct sumsq {
    template <class S, class B>
    using Span = minimalsgd::ConstSpan<S>;
    template <class S, class B>
    using Fn = double (*)(const Span<S, B>*, std::size_t, const minimalsgd::Parallel&);
};

}  // namespace ops

// The core's function template behind each operation, as the including translation unit's
// target compiles it (the target's namespace; see dispatch.hpp).
inline namespace MINIMALSGD_TARGET_NAMESPACE {
template <>
struct Implementation<ops::sgd> {
    template <class S, class B>
    static constexpr ops::sgd::Fn<S, B> get() {
        return &minimalsgd::multi_tensor_sgd_step<S, B>;
    }
};
template <>
struct Implementation<ops::adam> {
    template <class S, class B>
    static constexpr ops::adam::Fn<S, B> get() {
        static_assert(std::is_same_v<S, B>, "Adam's moments have the value's type");
        return &minimalsgd::multi_tensor_adam_step<S>;
    }
};
template <>
struct Implementation<ops::sumsq> {
    template <class S, class B>
    static constexpr ops::sumsq::Fn<S, B> get() {
        static_assert(std::is_same_v<S, B>, "a sum of squares has no buffer");
        return &minimalsgd::multi_tensor_sum_of_squares<S>;
    }
};
}  // namespace MINIMALSGD_TARGET_NAMESPACE

using ProductKernels = MINIMALSGD_KERNEL_LIST(MINIMALSGD_KERNELS);
using KernelTable = Table<ProductKernels>;

// The spans of one call of an operation, one vector per row of it.
template <class Op>
using SpansOf = Spans<Op, KernelsOf<Op, ProductKernels>>;

#define MINIMALSGD_DECLARE_KERNEL_TABLE(isa) \
    template <>                              \
    const KernelTable& table<KernelTable, minimalsgd::Isa::isa>();
MINIMALSGD_TARGETS(MINIMALSGD_DECLARE_KERNEL_TABLE)
#undef MINIMALSGD_DECLARE_KERNEL_TABLE

}  // namespace minimalsgd_python
