// minimalsgd: which x86-64 instruction sets this CPU and operating system support.
#pragma once

#include <cstdlib>
#include <cstring>

namespace minimalsgd {

/// Instruction-set levels the Python module compiles its kernels for.
enum class Isa { baseline = 0, avx2 = 1, avx512 = 2, avx512_bf16 = 3 };

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
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
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
