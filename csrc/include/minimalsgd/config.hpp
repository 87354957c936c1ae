// minimalsgd: compiler portability macros and the per-target namespace.
#pragma once

#include <cstddef>

#if defined(_OPENMP)
#include <omp.h>
#endif

// Code compiled under different instruction-set flags must live in different namespaces, or the
// linker keeps one copy of each inline function and the other target silently runs it. A
// translation unit compiled with, say, -mavx2 defines MINIMALSGD_TARGET_NAMESPACE=avx2 before it
// includes minimalsgd; everyone else gets `generic`. The namespace is inline, so callers always
// write minimalsgd::sgd_step.
#ifndef MINIMALSGD_TARGET_NAMESPACE
#define MINIMALSGD_TARGET_NAMESPACE generic
#endif

// The processor the compiler targets, from its own predefined macros (one source tree serves
// every target). MINIMALSGD_X86_64 guards everything x86-only: intrinsics, CPU feature checks and
// the kernels compiled with -mavx2/-mavx512*, which exist only for x86-64 (ARM64EC, which also
// defines _M_X64, is ARM code). Elsewhere only the baseline kernel exists: plain loops that the
// compiler vectorizes for the target's baseline vector unit (NEON is part of every ARMv8 CPU).
#if (defined(__x86_64__) || defined(_M_X64) || defined(_M_AMD64)) && !defined(_M_ARM64EC)
#define MINIMALSGD_X86_64 1
#else
#define MINIMALSGD_X86_64 0
#endif
#if defined(__aarch64__) || defined(_M_ARM64) || defined(_M_ARM64EC)
#define MINIMALSGD_AARCH64 1
#else
#define MINIMALSGD_AARCH64 0
#endif

// Its name, as minimalsgd.backend_info() reports it ("processor").
#if MINIMALSGD_X86_64
#define MINIMALSGD_PROCESSOR_NAME "x86_64"
#elif MINIMALSGD_AARCH64
#define MINIMALSGD_PROCESSOR_NAME "aarch64"
#elif defined(__i386__) || defined(_M_IX86)
#define MINIMALSGD_PROCESSOR_NAME "x86"
#elif defined(__arm__) || defined(_M_ARM)
#define MINIMALSGD_PROCESSOR_NAME "arm"
#elif defined(__powerpc64__) && defined(__LITTLE_ENDIAN__)
#define MINIMALSGD_PROCESSOR_NAME "ppc64le"
#elif defined(__powerpc64__)
#define MINIMALSGD_PROCESSOR_NAME "ppc64"
#elif defined(__s390x__)
#define MINIMALSGD_PROCESSOR_NAME "s390x"
#elif defined(__riscv) && __riscv_xlen == 64
#define MINIMALSGD_PROCESSOR_NAME "riscv64"
#else
#define MINIMALSGD_PROCESSOR_NAME "unknown"
#endif

// The vector instructions a translation unit compiled without extra -m flags may use: what the
// baseline kernel runs on ("none": the compiler's scalar code).
#if MINIMALSGD_X86_64 || defined(__SSE2__)
#define MINIMALSGD_BASELINE_SIMD "SSE2"
#elif defined(__ARM_NEON) || defined(_M_ARM64)
#define MINIMALSGD_BASELINE_SIMD "NEON"
#elif defined(__VSX__)
#define MINIMALSGD_BASELINE_SIMD "VSX"
#elif defined(__VEC__)
#define MINIMALSGD_BASELINE_SIMD "VMX"
#elif defined(__riscv_vector)
#define MINIMALSGD_BASELINE_SIMD "RVV"
#else
#define MINIMALSGD_BASELINE_SIMD "none"
#endif

#define MINIMALSGD_STRINGIFY_(x) #x
#define MINIMALSGD_STRINGIFY(x) MINIMALSGD_STRINGIFY_(x)

// `omp simd` when OpenMP (or -fopenmp-simd) is on; the compilers' own vectorization hint
// otherwise, so that the header compiles without unknown-pragma warnings either way.
#if defined(_OPENMP) || defined(MINIMALSGD_OPENMP_SIMD)
#define MINIMALSGD_SIMD _Pragma("omp simd")
#define MINIMALSGD_SIMD_SUM(var) _Pragma(MINIMALSGD_STRINGIFY(omp simd reduction(+ : var)))
#elif defined(__clang__)
#define MINIMALSGD_SIMD _Pragma("clang loop vectorize(enable)")
#define MINIMALSGD_SIMD_SUM(var) _Pragma("clang loop vectorize(enable)")
#elif defined(__GNUC__)
#define MINIMALSGD_SIMD _Pragma("GCC ivdep")
#define MINIMALSGD_SIMD_SUM(var) _Pragma("GCC ivdep")
#else
#define MINIMALSGD_SIMD
#define MINIMALSGD_SIMD_SUM(var)
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MINIMALSGD_RESTRICT __restrict__
#elif defined(_MSC_VER)
#define MINIMALSGD_RESTRICT __restrict
#else
#define MINIMALSGD_RESTRICT
#endif

// For small functions called inside vectorized loops: inlined, so the loop stays one plain loop.
#if defined(__GNUC__) || defined(__clang__)
#define MINIMALSGD_ALWAYS_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define MINIMALSGD_ALWAYS_INLINE __forceinline
#else
#define MINIMALSGD_ALWAYS_INLINE inline
#endif

namespace minimalsgd {

/// Threads and grain of one call. Work below `grain` elements runs on the calling thread (an
/// OpenMP parallel region costs about half a microsecond to start); above it, on `num_threads`
/// threads, or on omp_get_max_threads() when `num_threads` is 0. Without OpenMP everything is
/// serial and the results are the same.
struct Parallel {
    int num_threads = 0;
    std::size_t grain = 32768;
};

/// The number of threads a call with `par` uses for work of `n` elements.
inline int threads_for(std::size_t n, const Parallel& par) {
#if defined(_OPENMP)
    if (n < par.grain || n < 2) {
        return 1;
    }
    int t = par.num_threads > 0 ? par.num_threads : omp_get_max_threads();
    return t < 1 ? 1 : t;
#else
    (void)n;
    (void)par;
    return 1;
#endif
}

inline namespace MINIMALSGD_TARGET_NAMESPACE {
/// Runs `fn(begin, end)` over the elements [0, total) of a multi-tensor call: on the calling
/// thread below the grain, otherwise on threads_for() threads, one chunk each, chunk borders at
/// multiples of `line` elements (a cache line of the kernel's type).
template <class Fn>
void for_chunks(std::size_t total, std::size_t line, const Parallel& par, Fn&& fn) {
    const int nt = threads_for(total, par);
    if (nt <= 1) {
        fn(std::size_t{0}, total);
        return;
    }
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt)
    {
        const std::size_t nth = static_cast<std::size_t>(omp_get_num_threads());
        const std::size_t tid = static_cast<std::size_t>(omp_get_thread_num());
        std::size_t chunk = (total + nth - 1) / nth;
        chunk = (chunk + line - 1) / line * line;
        const std::size_t begin = tid * chunk < total ? tid * chunk : total;
        const std::size_t end = begin + chunk < total ? begin + chunk : total;
        fn(begin, end);
    }
#else
    (void)line;
#endif
}
}  // namespace MINIMALSGD_TARGET_NAMESPACE

}  // namespace minimalsgd
