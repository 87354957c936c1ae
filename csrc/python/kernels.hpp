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
#endif

}  // namespace minimalsgd_python
