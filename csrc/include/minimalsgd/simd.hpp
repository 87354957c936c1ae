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

#include "config.hpp"

#if MINIMALSGD_X86_64 && defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define MINIMALSGD_SIMD_U32 16
#elif MINIMALSGD_X86_64 && defined(__AVX2__)
#include <immintrin.h>
#define MINIMALSGD_SIMD_U32 8
#elif MINIMALSGD_AARCH64 && (defined(__ARM_NEON) || defined(_M_ARM64)) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h>
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
    // 16-bit memory <-> lanes: zero-extended loads; stores of lanes holding values < 2^16.
    static V load16(const std::uint16_t* p) {
        return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static void store16(std::uint16_t* p, V x) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(x));
    }

    static V add(V a, V b) { return _mm512_add_epi32(a, b); }
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
    static V load16(const std::uint16_t* p) {
        return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static void store16(std::uint16_t* p, V x) {
        // Lanes < 2^16: the unsigned saturating pack keeps them; the two 128-bit halves in order.
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                         _mm_packus_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1)));
    }

    static V add(V a, V b) { return _mm256_add_epi32(a, b); }
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

struct U32 {
    using V = uint32x4_t;
    using M = uint32x4_t;
    static constexpr std::size_t N = 4;

    static V set1(std::uint32_t x) { return vdupq_n_u32(x); }
    static V iota() {
        static const std::uint32_t k[4] = {0, 1, 2, 3};
        return vld1q_u32(k);
    }
    static V load(const float* p) { return vreinterpretq_u32_f32(vld1q_f32(p)); }
    static V load(const std::uint32_t* p) { return vld1q_u32(p); }
    static void store(float* p, V x) { vst1q_f32(p, vreinterpretq_f32_u32(x)); }
    static V load16(const std::uint16_t* p) { return vmovl_u16(vld1_u16(p)); }
    static void store16(std::uint16_t* p, V x) { vst1_u16(p, vmovn_u32(x)); }

    static V add(V a, V b) { return vaddq_u32(a, b); }
    static V sub(V a, V b) { return vsubq_u32(a, b); }
    static V mul(V a, V b) { return vmulq_u32(a, b); }
    static V and_(V a, V b) { return vandq_u32(a, b); }
    static V or_(V a, V b) { return vorrq_u32(a, b); }
    static V xor_(V a, V b) { return veorq_u32(a, b); }
    static V max_u(V a, V b) { return vmaxq_u32(a, b); }
    static V max_s(V a, V b) { return vreinterpretq_u32_s32(vmaxq_s32(vreinterpretq_s32_u32(a), vreinterpretq_s32_u32(b))); }
    static V min_s(V a, V b) { return vreinterpretq_u32_s32(vminq_s32(vreinterpretq_s32_u32(a), vreinterpretq_s32_u32(b))); }
    template <int K>
    static V srl(V a) {
        return vshrq_n_u32(a, K);
    }
    template <int K>
    static V sll(V a) {
        return vshlq_n_u32(a, K);
    }
    // USHL: a left shift by a signed count, a right shift when negative; 0 when |c| >= 32 (the
    // count is the lane's low byte as int8: every count used here is within [-127, 127]).
    static V shl(V a, V c) { return vshlq_u32(a, vreinterpretq_s32_u32(c)); }
    static V shr(V a, V c) { return vshlq_u32(a, vnegq_s32(vreinterpretq_s32_u32(c))); }

    static M gt_s(V a, V b) { return vcgtq_s32(vreinterpretq_s32_u32(a), vreinterpretq_s32_u32(b)); }
    static M lt_u(V a, V b) { return vcltq_u32(a, b); }
    static M eq(V a, V b) { return vceqq_u32(a, b); }
    static V select(M m, V a, V b) { return vbslq_u32(m, a, b); }
    static V inc(V a, M m) { return vsubq_u32(a, m); }
    static V keep(M m, V a) { return vandq_u32(m, a); }
};

#endif

}  // namespace simd
}  // namespace MINIMALSGD_TARGET_NAMESPACE
}  // namespace minimalsgd
