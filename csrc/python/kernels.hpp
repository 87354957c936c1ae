// The kernels of one instruction-set target, as a table of plain function pointers.
// kernels_target.hpp fills one table per target; module.cpp picks one at import.
#pragma once

#include <cmath>

#include <minimalsgd/config.hpp>
#include <minimalsgd/adam.hpp>
#include <minimalsgd/options.hpp>
#include <minimalsgd/sgd.hpp>

#if MINIMALSGD_X86_64 && defined(MINIMALSGD_X86_KERNELS_LINKED)
#define MINIMALSGD_HAVE_X86_KERNELS 1
#else
#define MINIMALSGD_HAVE_X86_KERNELS 0
#endif

namespace minimalsgd_python {

struct KernelTable {
    // The fused step; each span refers to one of the options sets (its `group`).
    void (*step_f32)(const minimalsgd::TensorSpan<float>*, std::size_t, const minimalsgd::SgdOptions*, std::size_t,
                     float, const minimalsgd::Parallel&);
    void (*step_f64)(const minimalsgd::TensorSpan<double>*, std::size_t, const minimalsgd::SgdOptions*, std::size_t,
                     double, const minimalsgd::Parallel&);
    double (*sumsq_f32)(const minimalsgd::ConstSpan<float>*, std::size_t, const minimalsgd::Parallel&);
    double (*sumsq_f64)(const minimalsgd::ConstSpan<double>*, std::size_t, const minimalsgd::Parallel&);
    // The bench's yardstick: a plain streaming loop of the momentum step's shape (3 reads, 2 writes).
    void (*stream_f32)(float*, const float*, float*, std::size_t, int);
    void (*stream_f64)(double*, const double*, double*, std::size_t, int);
    // ... and of the norm pass: a plain read-only loop summing squares.
    double (*read_f32)(const float*, std::size_t, int);
    double (*read_f64)(const double*, std::size_t, int);
    // The fused Adam/AdamW step; each span refers to one of the options sets (its `group`).
    void (*adam_f32)(const minimalsgd::AdamSpan<float>*, std::size_t, const minimalsgd::AdamOptions*, std::size_t,
                     float, const minimalsgd::Parallel&);
    void (*adam_f64)(const minimalsgd::AdamSpan<double>*, std::size_t, const minimalsgd::AdamOptions*, std::size_t,
                     double, const minimalsgd::Parallel&);
    // The bench's yardstick of the Adam step's shape (4 reads, 3 writes).
    void (*adam_stream_f32)(float*, const float*, float*, float*, std::size_t, int);
    void (*adam_stream_f64)(double*, const double*, double*, double*, std::size_t, int);
    // 16-bit storage: value and grad bfloat16/float16, the buffer of the same type or float.
    void (*step_bf16)(const minimalsgd::TensorSpan<minimalsgd::bfloat16_t>*, std::size_t,
                      const minimalsgd::SgdOptions*, std::size_t, float, const minimalsgd::Parallel&);
    void (*step_bf16_f32)(const minimalsgd::TensorSpan<minimalsgd::bfloat16_t, float>*, std::size_t,
                          const minimalsgd::SgdOptions*, std::size_t, float, const minimalsgd::Parallel&);
    void (*step_f16)(const minimalsgd::TensorSpan<minimalsgd::float16_t>*, std::size_t,
                     const minimalsgd::SgdOptions*, std::size_t, float, const minimalsgd::Parallel&);
    void (*step_f16_f32)(const minimalsgd::TensorSpan<minimalsgd::float16_t, float>*, std::size_t,
                         const minimalsgd::SgdOptions*, std::size_t, float, const minimalsgd::Parallel&);
    double (*sumsq_bf16)(const minimalsgd::ConstSpan<minimalsgd::bfloat16_t>*, std::size_t, const minimalsgd::Parallel&);
    double (*sumsq_f16)(const minimalsgd::ConstSpan<minimalsgd::float16_t>*, std::size_t, const minimalsgd::Parallel&);
    // The 16-bit yardstick: the stream loop's shape at 10 bytes per element.
    void (*stream_bf16)(minimalsgd::bfloat16_t*, const minimalsgd::bfloat16_t*, minimalsgd::bfloat16_t*, std::size_t, int);
    void (*stream_f16)(minimalsgd::float16_t*, const minimalsgd::float16_t*, minimalsgd::float16_t*, std::size_t, int);
};

// The yardstick loop: v = 0.9 v + g; w = w - 0.01 v. One OpenMP "parallel for simd" with a
// static schedule, nothing else: the plain C loop a memory-bound step is measured against.
// (In the per-target namespace: each kernels_<target>.cpp compiles its own copy.)
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

// One per translation unit, each compiled with its own -m flags and target namespace. The x86-64
// ones exist only when the compiler targets x86-64 and CMake built them (it defines
// MINIMALSGD_X86_KERNELS_LINKED for an x86-64 target with GCC-style flags; both are checked).
const KernelTable& kernels_baseline();
#if MINIMALSGD_HAVE_X86_KERNELS
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();
const KernelTable& kernels_avx512_bf16();
#endif

}  // namespace minimalsgd_python
