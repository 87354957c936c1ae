// minimalsgd: which instruction sets this CPU and operating system support.
//
// The x86-64 levels (avx2, avx512, avx512_bf16) exist only where the compiler targets x86-64
// (MINIMALSGD_X86_64, config.hpp); on every other processor, and with compilers that have no
// __builtin_cpu_supports (MSVC), only `baseline` is ever supported: the kernel compiled for the
// target's own baseline (MINIMALSGD_BASELINE_SIMD: SSE2 on x86-64, NEON on aarch64).
#pragma once

#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "config.hpp"

namespace minimalsgd {

/// Instruction-set levels the Python module compiles its kernels for. Levels other than
/// `baseline` are x86-64 only: add a new one here, in isa_name/parse_isa/cpu_supports, and in
/// the build's x86 kernel list (CMakeLists.txt MINIMALSGD_X86_KERNELS).
enum class Isa { baseline = 0, avx2 = 1, avx512 = 2, avx512_bf16 = 3 };

/// The processor this code was compiled for: "x86_64", "aarch64", ... (MINIMALSGD_PROCESSOR_NAME).
inline const char* processor_name() { return MINIMALSGD_PROCESSOR_NAME; }

/// The vector instructions of the baseline kernel on this processor: "SSE2" on x86-64, "NEON" on
/// aarch64, "none" where the compiler targets no vector unit by default.
inline const char* baseline_simd() { return MINIMALSGD_BASELINE_SIMD; }

inline const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx2:
            return "avx2";
        case Isa::avx512:
            return "avx512";
        case Isa::avx512_bf16:
            return "avx512_bf16";
        default:
            return "baseline";
    }
}

/// Whether the CPU (and the OS, which must save the wide registers) supports `isa`.
/// avx2 means AVX2 + FMA + F16C; avx512 means AVX-512 F, VL, BW and DQ (the x86-64-v4 set);
/// avx512_bf16 means avx512 plus AVX512_BF16 (not implied by AVX-512 F: Cooper Lake, Sapphire
/// Rapids and Zen 4 have it, Skylake-X and Ice Lake do not).
inline bool cpu_supports(Isa isa) {
#if MINIMALSGD_X86_64 && defined(__GNUC__)  // GCC, Clang, Apple clang (not MSVC, not clang-cl)
    __builtin_cpu_init();
    switch (isa) {
        case Isa::baseline:
            return true;
        case Isa::avx2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
        case Isa::avx512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                   __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
        case Isa::avx512_bf16:
            return cpu_supports(Isa::avx512) && __builtin_cpu_supports("avx512bf16");
    }
    return false;
#else
    return isa == Isa::baseline;
#endif
}

/// The best level this CPU supports.
inline Isa best_isa() {
    if (cpu_supports(Isa::avx512_bf16)) {
        return Isa::avx512_bf16;
    }
    if (cpu_supports(Isa::avx512)) {
        return Isa::avx512;
    }
    if (cpu_supports(Isa::avx2)) {
        return Isa::avx2;
    }
    return Isa::baseline;
}

/// Parses "baseline", "avx2", "avx512" or "avx512_bf16"; returns false for anything else.
inline bool parse_isa(const char* name, Isa* out) {
    for (Isa isa : {Isa::baseline, Isa::avx2, Isa::avx512, Isa::avx512_bf16}) {
        if (name != nullptr && std::strcmp(name, isa_name(isa)) == 0) {
            *out = isa;
            return true;
        }
    }
    return false;
}

}  // namespace minimalsgd
