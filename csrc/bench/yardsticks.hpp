// minimalsgd._bench_core's kernels: the yardsticks of `python -m minimalsgd bench`, plain C loops
// of the product steps' shapes that the bench measures the fused kernels against. They are not
// part of minimalsgd._core; like its kernels they are compiled once per instruction-set target
// (yardsticks_target.cpp), so that each target's bench compares like with like.
//
// The list works as kernels.hpp's does (see there): one row per (loop, storage, buffer), the loop's
// traits in namespace ops, its Implementation per target. The bench's "bare kernel call" runs the
// product's own kernels, through minimalsgd._core's kernel table (kernel_api.hpp).
#pragma once

#include <cmath>
#include <cstddef>
#include <type_traits>

#include <minimalsgd/config.hpp>
#include <minimalsgd/half.hpp>
#include <minimalsgd/sgd.hpp>  // detail::kHalfBlock, the 16-bit step's block

#include "../python/dispatch.hpp"

// X(loop, storage, buffer)
#define MINIMALSGD_BENCH_KERNELS(X) \
    X(stream, f32, f32)             \
    X(stream, f64, f64)             \
    X(stream, bf16, bf16)           \
    X(stream, f16, f16)             \
    X(read, f32, f32)               \
    X(read, f64, f64)               \
    X(adam_stream, f32, f32)        \
    X(adam_stream, f64, f64)

namespace minimalsgd_python {

namespace ops {
// The stream loop of the momentum step's shape (3 reads, 2 writes) over w, g, v; threads.
struct stream {
    template <class S, class B>
    using Fn = void (*)(S*, const S*, S*, std::size_t, int);
    template <class S, class B>
    using Span = void;
};
// The read-only loop of the norm pass: the sum of x*x.
struct read {
    template <class S, class B>
    using Fn = double (*)(const S*, std::size_t, int);
    template <class S, class B>
    using Span = void;
};
// The loop of the Adam step's shape (4 reads, 3 writes) over w, g, m, v.
struct adam_stream {
    template <class S, class B>
    using Fn = void (*)(S*, const S*, S*, S*, std::size_t, int);
    template <class S, class B>
    using Span = void;
};
}  // namespace ops

// The yardstick loop: v = 0.9 v + g; w = w - 0.01 v. One OpenMP "parallel for simd" with a
// static schedule, nothing else: the plain C loop a memory-bound step is measured against.
// (In the per-target namespace: yardsticks_target.cpp is compiled once per target.)
inline namespace MINIMALSGD_TARGET_NAMESPACE {
template <class T>
void stream_loop(T* MINIMALSGD_RESTRICT w, const T* MINIMALSGD_RESTRICT g, T* MINIMALSGD_RESTRICT v, std::size_t n,
                 int threads) {
    const std::ptrdiff_t m = static_cast<std::ptrdiff_t>(n);
    if (threads <= 1) {
        MINIMALSGD_SIMD
        for (std::ptrdiff_t i = 0; i < m; ++i) {
            const T vi = T(0.9) * v[i] + g[i];
            v[i] = vi;
            w[i] = w[i] - T(0.01) * vi;
        }
        return;
    }
#if defined(_OPENMP)
#pragma omp parallel for simd schedule(static) num_threads(threads)
    for (std::ptrdiff_t i = 0; i < m; ++i) {
        const T vi = T(0.9) * v[i] + g[i];
        v[i] = vi;
        w[i] = w[i] - T(0.01) * vi;
    }
#endif
}

// The 16-bit yardstick: the same loop over 16-bit storage (3 reads and 2 writes of 2 bytes: 10
// bytes per element), in blocks converted to float and back with the best conversions this
// target has (F16C, AVX-512 BF16 where compiled in), rounded to nearest; static schedule.
template <class S>
void stream_loop_half(S* MINIMALSGD_RESTRICT w, const S* MINIMALSGD_RESTRICT g, S* MINIMALSGD_RESTRICT v,
                      std::size_t n, int threads) {
    constexpr std::size_t B = minimalsgd::detail::kHalfBlock;
    const std::ptrdiff_t blocks = static_cast<std::ptrdiff_t>((n + B - 1) / B);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
    for (std::ptrdiff_t b = 0; b < blocks; ++b) {
        const std::size_t base = static_cast<std::size_t>(b) * B;
        const std::size_t m = n - base < B ? n - base : B;
        alignas(64) float wf[B], gf[B], vf[B];
        minimalsgd::detail::load_block(w + base, wf, m);
        minimalsgd::detail::load_block(g + base, gf, m);
        minimalsgd::detail::load_block(v + base, vf, m);
        MINIMALSGD_SIMD
        for (std::size_t i = 0; i < m; ++i) {
            const float vi = 0.9f * vf[i] + gf[i];
            vf[i] = vi;
            wf[i] = wf[i] - 0.01f * vi;
        }
        minimalsgd::detail::store_nearest(vf, v + base, m);
        minimalsgd::detail::store_nearest(wf, w + base, m);
    }
    (void)threads;
}

// The yardstick of the norm pass: a plain read-only loop, sum of x*x in double.
template <class T>
double read_loop(const T* MINIMALSGD_RESTRICT x, std::size_t n, int threads) {
    const std::ptrdiff_t m = static_cast<std::ptrdiff_t>(n);
    double s = 0;
#if defined(_OPENMP)
#pragma omp parallel for simd reduction(+ : s) schedule(static) num_threads(threads) if (threads > 1)
#endif
    for (std::ptrdiff_t i = 0; i < m; ++i) {
        const double v = static_cast<double>(x[i]);
        s += v * v;
    }
    (void)threads;
    return s;
}

// The Adam yardstick: the plain C loop of an Adam step as one writes it without bias correction,
// m = 0.9 m + 0.1 g; v = 0.999 v + 0.001 g g; w = w - 0.001 m / (sqrt(v) + 1e-8): 4 reads, 3 writes,
// one square root and one division per element, one "parallel for simd" with a static schedule.
template <class T>
inline void adam_stream_element(T* MINIMALSGD_RESTRICT w, const T* MINIMALSGD_RESTRICT g, T* MINIMALSGD_RESTRICT m,
                                T* MINIMALSGD_RESTRICT v, std::ptrdiff_t i) {
    const T gi = g[i];
    const T mi = T(0.9) * m[i] + T(0.1) * gi;
    const T vi = T(0.999) * v[i] + T(0.001) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] - T(0.001) * mi / (std::sqrt(vi) + T(1e-8));
}

template <class T>
void adam_stream_loop(T* MINIMALSGD_RESTRICT w, const T* MINIMALSGD_RESTRICT g, T* MINIMALSGD_RESTRICT m,
                      T* MINIMALSGD_RESTRICT v, std::size_t n, int threads) {
    const std::ptrdiff_t count = static_cast<std::ptrdiff_t>(n);
    if (threads <= 1) {
        MINIMALSGD_SIMD
        for (std::ptrdiff_t i = 0; i < count; ++i) {
            adam_stream_element(w, g, m, v, i);
        }
        return;
    }
#if defined(_OPENMP)
#pragma omp parallel for simd schedule(static) num_threads(threads)
    for (std::ptrdiff_t i = 0; i < count; ++i) {
        adam_stream_element(w, g, m, v, i);
    }
#endif
}
}  // namespace MINIMALSGD_TARGET_NAMESPACE

// The loop behind each row, as this target compiles it.
inline namespace MINIMALSGD_TARGET_NAMESPACE {
template <>
struct Implementation<ops::stream> {
    template <class S, class B>
    static constexpr ops::stream::Fn<S, B> get() {
        if constexpr (std::is_same_v<S, float> || std::is_same_v<S, double>) {
            return &stream_loop<S>;
        } else {
            return &stream_loop_half<S>;
        }
    }
};
template <>
struct Implementation<ops::read> {
    template <class S, class B>
    static constexpr ops::read::Fn<S, B> get() {
        return &read_loop<S>;
    }
};
template <>
struct Implementation<ops::adam_stream> {
    template <class S, class B>
    static constexpr ops::adam_stream::Fn<S, B> get() {
        return &adam_stream_loop<S>;
    }
};
}  // namespace MINIMALSGD_TARGET_NAMESPACE

using BenchKernels = MINIMALSGD_KERNEL_LIST(MINIMALSGD_BENCH_KERNELS);
using BenchTable = Table<BenchKernels>;

#define MINIMALSGD_DECLARE_BENCH_TABLE(isa) \
    template <>                             \
    const BenchTable& table<BenchTable, minimalsgd::Isa::isa>();
MINIMALSGD_TARGETS(MINIMALSGD_DECLARE_BENCH_TABLE)
#undef MINIMALSGD_DECLARE_BENCH_TABLE

}  // namespace minimalsgd_python
