// minimalsgd: a thin layer over vectors of 32-bit integer lanes, for the 16-bit storage code
// (half.hpp): each conversion and rounding is written once over `simd::U32` and compiles to the
// widest vector unit the translation unit's own flags enable:
//
//     AVX-512 (F + BW): 16 lanes      AVX2: 8 lanes      NEON (aarch64): 4 lanes
//
// Elsewhere (the x86-64 baseline, SSE2: no 32-bit multiply, variable shift or unsigned pack;
// other processors) MINIMALSGD_SIMD_U32 is 0 and half.hpp uses its scalar definitions alone,
// in loops the compiler vectorizes. Every operation here is exact integer arithmetic, so the
// three widths give the same bits as the scalar code.
//
// Masks: the result of a comparison, used only by select(), inc() and keep() (a lane mask register
// on AVX-512, all-ones lanes elsewhere).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "config.hpp"

#if MINIMALSGD_X86_64 && defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define MINIMALSGD_SIMD_U32 16
#elif MINIMALSGD_X86_64 && defined(__AVX2__)
#include <immintrin.h>
#define MINIMALSGD_SIMD_U32 8
#elif MINIMALSGD_AARCH64 && defined(__ARM_NEON) && (defined(__GNUC__) || defined(__clang__))
#define MINIMALSGD_SIMD_U32 4
#else
#define MINIMALSGD_SIMD_U32 0
#endif

namespace minimalsgd {
inline namespace MINIMALSGD_TARGET_NAMESPACE {
namespace simd {

#if MINIMALSGD_SIMD_U32 == 16

struct U32 {
    using V = __m512i;
    using M = __mmask16;
    static constexpr std::size_t N = 16;

    static V set1(std::uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
    static V iota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
    static V load(const float* p) { return _mm512_castps_si512(_mm512_loadu_ps(p)); }
    static V load(const std::uint32_t* p) { return _mm512_loadu_si512(p); }
    static void store(float* p, V x) { _mm512_storeu_ps(p, _mm512_castsi512_ps(x)); }
    static void store(std::uint32_t* p, V x) { _mm512_storeu_si512(p, x); }
    // 16-bit memory <-> lanes: zero-extended loads; stores of lanes holding values < 2^16.
    static V load16(const std::uint16_t* p) {
        return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static void store16(std::uint16_t* p, V x) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(x));
    }

    static V add(V a, V b) { return _mm512_add_epi32(a, b); }
    // Float addition and subtraction of lanes holding float bits (IEEE, round to nearest even).
    static V add_f32(V a, V b) {
        return _mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b)));
    }
    static V sub_f32(V a, V b) {
        return _mm512_castps_si512(_mm512_sub_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b)));
    }
    static V sub(V a, V b) { return _mm512_sub_epi32(a, b); }
    static V mul(V a, V b) { return _mm512_mullo_epi32(a, b); }  // low 32 bits
    static V and_(V a, V b) { return _mm512_and_si512(a, b); }
    static V or_(V a, V b) { return _mm512_or_si512(a, b); }
    static V xor_(V a, V b) { return _mm512_xor_si512(a, b); }
    static V max_u(V a, V b) { return _mm512_max_epu32(a, b); }
    static V max_s(V a, V b) { return _mm512_max_epi32(a, b); }
    static V min_s(V a, V b) { return _mm512_min_epi32(a, b); }
    template <int K>
    static V srl(V a) {
        return _mm512_srli_epi32(a, K);
    }
    template <int K>
    static V sll(V a) {
        return _mm512_slli_epi32(a, K);
    }
    // a << c lane by lane for a signed count c (a right shift when c < 0); 0 when |c| >= 32.
    static V shl(V a, V c) {
        return _mm512_or_si512(_mm512_sllv_epi32(a, c), _mm512_srlv_epi32(a, _mm512_sub_epi32(_mm512_setzero_si512(), c)));
    }
    // a >> c lane by lane for a count c >= 0; 0 when c >= 32.
    static V shr(V a, V c) { return _mm512_srlv_epi32(a, c); }

    static M gt_s(V a, V b) { return _mm512_cmpgt_epi32_mask(a, b); }
    static M lt_u(V a, V b) { return _mm512_cmplt_epu32_mask(a, b); }
    static M eq(V a, V b) { return _mm512_cmpeq_epi32_mask(a, b); }
    static V select(M m, V a, V b) { return _mm512_mask_blend_epi32(m, b, a); }  // m ? a : b
    static V inc(V a, M m) { return _mm512_mask_sub_epi32(a, m, a, _mm512_set1_epi32(-1)); }  // m ? a + 1 : a
    static V keep(M m, V a) { return _mm512_maskz_mov_epi32(m, a); }                          // m ? a : 0
};

#elif MINIMALSGD_SIMD_U32 == 8

struct U32 {
    using V = __m256i;
    using M = __m256i;
    static constexpr std::size_t N = 8;

    static V set1(std::uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
    static V iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
    static V load(const float* p) { return _mm256_castps_si256(_mm256_loadu_ps(p)); }
    static V load(const std::uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static void store(float* p, V x) { _mm256_storeu_ps(p, _mm256_castsi256_ps(x)); }
    static void store(std::uint32_t* p, V x) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), x); }
    static V load16(const std::uint16_t* p) {
        return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static void store16(std::uint16_t* p, V x) {
        // Lanes < 2^16: the unsigned saturating pack keeps them; the two 128-bit halves in order.
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                         _mm_packus_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1)));
    }

    static V add(V a, V b) { return _mm256_add_epi32(a, b); }
    static V add_f32(V a, V b) {
        return _mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b)));
    }
    static V sub_f32(V a, V b) {
        return _mm256_castps_si256(_mm256_sub_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b)));
    }
    static V sub(V a, V b) { return _mm256_sub_epi32(a, b); }
    static V mul(V a, V b) { return _mm256_mullo_epi32(a, b); }
    static V and_(V a, V b) { return _mm256_and_si256(a, b); }
    static V or_(V a, V b) { return _mm256_or_si256(a, b); }
    static V xor_(V a, V b) { return _mm256_xor_si256(a, b); }
    static V max_u(V a, V b) { return _mm256_max_epu32(a, b); }
    static V max_s(V a, V b) { return _mm256_max_epi32(a, b); }
    static V min_s(V a, V b) { return _mm256_min_epi32(a, b); }
    template <int K>
    static V srl(V a) {
        return _mm256_srli_epi32(a, K);
    }
    template <int K>
    static V sll(V a) {
        return _mm256_slli_epi32(a, K);
    }
    static V shl(V a, V c) {
        return _mm256_or_si256(_mm256_sllv_epi32(a, c), _mm256_srlv_epi32(a, _mm256_sub_epi32(_mm256_setzero_si256(), c)));
    }
    static V shr(V a, V c) { return _mm256_srlv_epi32(a, c); }

    static M gt_s(V a, V b) { return _mm256_cmpgt_epi32(a, b); }
    static M lt_u(V a, V b) {
        const V bias = _mm256_set1_epi32(static_cast<int>(0x80000000u));
        return _mm256_cmpgt_epi32(_mm256_xor_si256(b, bias), _mm256_xor_si256(a, bias));
    }
    static M eq(V a, V b) { return _mm256_cmpeq_epi32(a, b); }
    static V select(M m, V a, V b) { return _mm256_blendv_epi8(b, a, m); }
    static V inc(V a, M m) { return _mm256_sub_epi32(a, m); }  // m is -1 where set
    static V keep(M m, V a) { return _mm256_and_si256(m, a); }
};

#elif MINIMALSGD_SIMD_U32 == 4

// GCC/Clang vector extensions, not <arm_neon.h>: that header declares ::bfloat16_t and
// ::float16_t, which would make minimalsgd's names ambiguous under `using namespace minimalsgd`.
// The compilers map these operations onto NEON one to one, except the variable shifts (USHL by a
// negated count and a select: the language leaves counts >= 32 undefined, so they are clamped).
struct U32 {
    typedef std::uint32_t V __attribute__((vector_size(16)));
    typedef std::int32_t S __attribute__((vector_size(16)));
    typedef std::uint16_t H __attribute__((vector_size(8)));
    typedef float F __attribute__((vector_size(16)));
    using M = V;
    static constexpr std::size_t N = 4;

    static V set1(std::uint32_t x) { return V{x, x, x, x}; }
    static V iota() { return V{0, 1, 2, 3}; }
    static V load(const float* p) {
        V v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    static V load(const std::uint32_t* p) {
        V v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    static void store(float* p, V x) { std::memcpy(p, &x, sizeof x); }
    static void store(std::uint32_t* p, V x) { std::memcpy(p, &x, sizeof x); }
    static V load16(const std::uint16_t* p) {
        H h;
        std::memcpy(&h, p, sizeof h);
        return __builtin_convertvector(h, V);
    }
    static void store16(std::uint16_t* p, V x) {
        const H h = __builtin_convertvector(x, H);
        std::memcpy(p, &h, sizeof h);
    }

    static V add(V a, V b) { return a + b; }
    static V add_f32(V a, V b) { return reinterpret_cast<V>(reinterpret_cast<F>(a) + reinterpret_cast<F>(b)); }
    static V sub_f32(V a, V b) { return reinterpret_cast<V>(reinterpret_cast<F>(a) - reinterpret_cast<F>(b)); }
    static V sub(V a, V b) { return a - b; }
    static V mul(V a, V b) { return a * b; }
    static V and_(V a, V b) { return a & b; }
    static V or_(V a, V b) { return a | b; }
    static V xor_(V a, V b) { return a ^ b; }
    // Comparisons give all-ones lanes; selects are bitwise (no vector ?:, which older compilers lack).
    static V select(M m, V a, V b) { return (a & m) | (b & ~m); }
    static V max_u(V a, V b) { return select(reinterpret_cast<M>(a > b), a, b); }
    static V max_s(V a, V b) { return select(gt_s(a, b), a, b); }
    static V min_s(V a, V b) { return select(gt_s(b, a), a, b); }
    template <int K>
    static V srl(V a) {
        return a >> K;
    }
    template <int K>
    static V sll(V a) {
        return a << K;
    }
    static V shr(V a, V c) { return (a >> (c & 31u)) & reinterpret_cast<M>(c < 32u); }
    static V shl(V a, V c) {
        const V left = (a << (c & 31u)) & reinterpret_cast<M>(c < 32u);
        return select(reinterpret_cast<M>(reinterpret_cast<S>(c) >= 0), left, shr(a, -c));
    }

    static M gt_s(V a, V b) { return reinterpret_cast<M>(reinterpret_cast<S>(a) > reinterpret_cast<S>(b)); }
    static M lt_u(V a, V b) { return reinterpret_cast<M>(a < b); }
    static M eq(V a, V b) { return reinterpret_cast<M>(a == b); }
    static V inc(V a, M m) { return a - m; }
    static V keep(M m, V a) { return m & a; }
};

#endif

}  // namespace simd
}  // namespace MINIMALSGD_TARGET_NAMESPACE
}  // namespace minimalsgd
