// minimalsgd: the two 16-bit storage formats (bfloat16, float16), their exact conversions to and
// from float, stochastic rounding, and the counter-based generator of its random bits.
//
// Storage only: arithmetic happens in float. Every conversion here is defined bit for bit:
//
//   to_float(x)                   exact (bfloat16: the bits shifted; float16: IEEE binary16, with
//                                 subnormals, infinities and NaN payloads as NumPy converts them).
//   round_nearest<S>(f)           round to nearest, ties to even, as ml_dtypes (bfloat16) and NumPy
//                                 (float16) convert: overflow gives an infinity of the sign; a NaN
//                                 gives sign|0x7fc0 (bfloat16, ml_dtypes' quiet NaN) or
//                                 sign|0x7c00|(payload >> 13), 0x7c01 when that is 0 (float16, NumPy).
//   round_stochastic<S>(f, r)     the neighbour toward zero, plus one unit in the last place when
//                                 r < floor(frac * 2^32), where frac in [0, 1) is |f|'s exact position
//                                 between its two neighbours and r is 32 random bits: it rounds up
//                                 with probability frac (exactly, except for float16 results of
//                                 magnitude below 2^-32, where frac is cut to 32 bits), so the
//                                 expected result is f. NaN and infinity convert as in
//                                 round_nearest; a magnitude at or above the format's overflow
//                                 threshold (bfloat16: above the largest finite value when rounded
//                                 up; float16: >= 65536) gives an infinity.
//
// Random bits: element i of tensor `key` at step `step` of a run seeded with `seed` uses
//
//     k = mix64(mix64(mix64(seed + G) ^ step) ^ key)     (64 bits, once per tensor and step)
//     x = (lo32(k) | 1) * lo32(i) + hi32(k) + 0x9E3779B9 * hi32(i)      (uint32, wrapping)
//     h = fmix32(x)
//     r_value = h & 0xffff0000,  r_buffer = h << 16          (16 random bits each, as the top bits)
//
// with G = 0x9E3779B97F4A7C15, mix64 SplitMix64's finalizer
//
//     z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;  z = (z ^ (z >> 27)) * 0x94D049BB133111EB;  z ^ (z >> 31)
//
// and fmix32 MurmurHash3's finalizer
//
//     h ^= h >> 16;  h *= 0x85EBCA6B;  h ^= h >> 13;  h *= 0xC2B2AE35;  h ^= h >> 16
//
// The per-element part is 32-bit arithmetic (three 32-bit multiplies: cheap on SSE4/AVX2/AVX-512
// and in NumPy uint32 arrays); each tensor's key makes its own odd multiplier and offset, so two
// tensors do not see shifted copies of one stream. 16 bits per stored result make stochastic
// rounding exact for bfloat16 (16 dropped bits) and normal float16 results (13), and bias a
// float16 subnormal result by less than 2^-16 of a unit. A pure function of (seed, step, key, i):
// the same bits for any thread count, chunking, instruction set and backend. No global state.
//
// Code compiled under instruction-set flags lives in the per-target namespace (see config.hpp).
// The block conversions of the kernels (namespace detail, below) run whole vectors in 32-bit
// integer lanes (simd.hpp: AVX-512, AVX2, NEON; the same integer arithmetic as the scalar
// definitions, so the same bits) and the x86 conversion instructions (F16C vcvtps2ph/vcvtph2ps,
// AVX-512 BF16 vcvtneps2bf16) where the translation unit's own flags enable them (__AVX2__,
// __F16C__, __AVX512BF16__, ...); the rest, and every build without a vector unit (the x86-64
// baseline), in plain loops over the scalar definitions. So the header builds for any
// architecture and the baseline code runs on any x86-64.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "config.hpp"
#include "simd.hpp"

#if MINIMALSGD_X86_64 && (defined(__F16C__) || defined(__AVX512BF16__))
#include <immintrin.h>
#endif

// GCC 12's AVX-512 intrinsics start from a self-initialized "undefined" vector, which its
// -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593, fixed in GCC 13).
#if MINIMALSGD_X86_64 && defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#define MINIMALSGD_HALF_GCC12_AVX512 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace minimalsgd {

/// bfloat16 storage: the upper 16 bits of an IEEE binary32 (ml_dtypes.bfloat16's layout).
struct bfloat16_t {
    std::uint16_t bits;
};

/// float16 storage: IEEE binary16 (numpy.float16's layout).
struct float16_t {
    std::uint16_t bits;
};

static_assert(sizeof(bfloat16_t) == 2 && sizeof(float16_t) == 2, "16-bit storage types must be 2 bytes");

/// Whether T is one of the 16-bit storage types.
template <class T>
struct is_half : std::false_type {};
template <>
struct is_half<bfloat16_t> : std::true_type {};
template <>
struct is_half<float16_t> : std::true_type {};

/// The type a storage type computes in: float for the 16-bit formats, T itself otherwise.
template <class T>
struct compute_type {
    using type = T;
};
template <>
struct compute_type<bfloat16_t> {
    using type = float;
};
template <>
struct compute_type<float16_t> {
    using type = float;
};
template <class T>
using compute_t = typename compute_type<T>::type;

/// The golden-ratio increment of the element counter.
constexpr std::uint64_t kRoundingGamma = 0x9E3779B97F4A7C15ull;

inline namespace MINIMALSGD_TARGET_NAMESPACE {

inline std::uint32_t float_bits(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

inline float bits_float(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

/// SplitMix64's finalizer: a bijection of uint64 with good avalanche.
inline std::uint64_t mix64(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/// The per-run-and-step part of the key: mix64(mix64(seed + G) ^ step).
inline std::uint64_t rounding_step_key(std::uint64_t seed, std::uint64_t step) {
    return mix64(mix64(seed + kRoundingGamma) ^ step);
}

/// The key of one tensor at one step: mix64(rounding_step_key(seed, step) ^ tensor_key).
inline std::uint64_t rounding_tensor_key(std::uint64_t step_key, std::uint64_t tensor_key) {
    return mix64(step_key ^ tensor_key);
}

/// MurmurHash3's 32-bit finalizer: a bijection of uint32.
inline std::uint32_t fmix32(std::uint32_t h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

/// The 32 random bits of element `i` of a tensor whose key is `k` (value: the high 16, buffer:
/// the low 16).
inline std::uint32_t rounding_bits(std::uint64_t k, std::uint64_t i) {
    const std::uint32_t mul = static_cast<std::uint32_t>(k) | 1u;
    const std::uint32_t add = static_cast<std::uint32_t>(k >> 32) + 0x9E3779B9u * static_cast<std::uint32_t>(i >> 32);
    return fmix32(mul * static_cast<std::uint32_t>(i) + add);
}

// ---------------------------------------------------------------------------------------------
// Scalar conversions on bit patterns (branch-free: the compiler vectorizes loops over them).

/// bfloat16 bits -> float bits: exact.
inline std::uint32_t bf16_to_f32_bits(std::uint16_t h) { return static_cast<std::uint32_t>(h) << 16; }

/// float16 bits -> float bits: exact (subnormals normalized, Inf/NaN payloads kept, as NumPy).
inline std::uint32_t f16_to_f32_bits(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t em = h & 0x7fffu;
    const std::uint32_t shifted = em << 13;
    const std::uint32_t exp = shifted & 0x0f800000u;
    // Normal: rebias the exponent by 127 - 15.
    std::uint32_t normal = shifted + (112u << 23);
    // Inf/NaN: all exponent bits set.
    const std::uint32_t special = shifted | 0x7f800000u;
    // Subnormal: em * 2^-24, exactly (em < 2^10 converts exactly; the product is a normal float).
    const float sub = static_cast<float>(static_cast<std::int32_t>(em)) * 5.9604644775390625e-08f;
    const std::uint32_t subnormal = float_bits(sub);
    normal = exp == 0x0f800000u ? special : normal;
    normal = exp == 0 ? subnormal : normal;
    return sign | normal;
}

/// float bits -> bfloat16 bits, round to nearest even (ml_dtypes).
inline std::uint16_t f32_to_bf16_rne(std::uint32_t u) {
    const std::uint32_t a = u & 0x7fffffffu;
    const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const std::uint32_t nan = ((u >> 16) & 0x8000u) | 0x7fc0u;
    return static_cast<std::uint16_t>(a > 0x7f800000u ? nan : rounded);
}

/// float bits -> float16 bits, round to nearest even (NumPy's float16 conversion).
inline std::uint16_t f32_to_f16_rne(std::uint32_t u) {
    const std::uint32_t sign = (u >> 16) & 0x8000u;
    const std::uint32_t a = u & 0x7fffffffu;
    // NaN: NumPy keeps the top payload bits and makes sure the result stays a NaN.
    std::uint32_t nan = 0x7c00u + ((a & 0x007fffffu) >> 13);
    nan = nan == 0x7c00u ? 0x7c01u : nan;
    // Normal float16 range: drop 13 bits with ties to even; a carry may reach the infinity.
    const std::uint32_t normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;  // 0xc8000000 = -(112 << 23)
    // Subnormal float16 range (a < 2^-14): |x| + 0.5 in float rounds |x| to a multiple of 2^-24
    // (the spacing of floats in [0.5, 1)) to nearest even, exactly like the conversion; the low
    // bits of the sum are the float16 bits. (Float arithmetic rounds to nearest even: the
    // default mode, which every result of this library assumes.)
    const std::uint32_t subnormal = float_bits(bits_float(a) + 0.5f) - 0x3f000000u;
    std::uint32_t r = a < 0x38800000u ? subnormal : normal;
    r = a >= 0x47800000u ? 0x7c00u : r;  // >= 65536: infinity
    r = a > 0x7f800000u ? nan : r;
    return static_cast<std::uint16_t>(sign | r);
}

/// float bits -> bfloat16 bits, stochastically, with 32 random bits `r` (see the top of the file).
inline std::uint16_t f32_to_bf16_sr(std::uint32_t u, std::uint32_t r) {
    const std::uint32_t a = u & 0x7fffffffu;
    // r < (u & 0xffff) << 16, halved on both sides (the right one is even) to compare signed
    // 31-bit numbers: one instruction in every vector instruction set.
    const std::uint32_t up =
        static_cast<std::int32_t>(r >> 1) < static_cast<std::int32_t>((u & 0xffffu) << 15) ? 1u : 0u;
    const std::uint32_t rounded = (u >> 16) + up;
    const std::uint32_t nan = ((u >> 16) & 0x8000u) | 0x7fc0u;
    return static_cast<std::uint16_t>(a > 0x7f800000u ? nan : rounded);
}

/// float bits -> float16 bits, stochastically, with 32 random bits `r` (see the top of the file).
/// Below 2^-14 the position between neighbours is (m mod 2^s) / 2^s for the significand m and the
/// s = 126 - e dropped bits: r is compared with the low 32 bits of (m << 32) >> s (s clamped to
/// 63), exact down to 2^-32 and off by less than 2^-32 of a unit below.
inline std::uint16_t f32_to_f16_sr(std::uint32_t u, std::uint32_t r) {
    const std::uint32_t sign = (u >> 16) & 0x8000u;
    const std::uint32_t a = u & 0x7fffffffu;
    std::uint32_t nan = 0x7c00u + ((a & 0x007fffffu) >> 13);
    nan = nan == 0x7c00u ? 0x7c01u : nan;
    // Normal range: truncate 13 bits, round up when r < the dropped bits scaled to 2^32.
    const std::uint32_t normal = ((a - (112u << 23)) >> 13) + (r < ((a & 0x1fffu) << 19) ? 1u : 0u);
    // Subnormal range.
    const std::uint32_t e = a >> 23;
    std::uint32_t shift = 126u - (e < 1u ? 1u : (e > 112u ? 112u : e));
    shift = shift > 63u ? 63u : shift;
    // scaled = (m << 32) >> shift in 64 bits, computed as its two 32-bit halves with 32-bit shifts
    // of counts in [0, 31] (the vector units shift 32-bit lanes by lane counts; 64-bit is slower):
    // the high half is m >> shift (0 from 24 on: m < 2^24), the low half m << (32 - shift) up to
    // 32 and m >> (shift - 32) above.
    const std::uint32_t m = (a & 0x007fffffu) | (e != 0 ? 0x00800000u : 0u);
    const std::uint32_t high = shift < 24u ? m >> (shift < 24u ? shift : 0u) : 0u;
    const std::uint32_t low = shift <= 32u ? m << (shift <= 32u ? 32u - shift : 0u)
                                           : m >> (shift > 32u ? shift - 32u : 0u);
    const std::uint32_t subnormal = high + (r < low ? 1u : 0u);
    std::uint32_t out = a < 0x38800000u ? subnormal : normal;
    out = a >= 0x47800000u ? 0x7c00u : out;
    out = a > 0x7f800000u ? nan : out;
    return static_cast<std::uint16_t>(sign | out);
}

// ---------------------------------------------------------------------------------------------
// The public scalar API.

inline float to_float(bfloat16_t x) { return bits_float(bf16_to_f32_bits(x.bits)); }
inline float to_float(float16_t x) { return bits_float(f16_to_f32_bits(x.bits)); }

/// Round to nearest even.
template <class S>
S round_nearest(float f);
template <>
inline bfloat16_t round_nearest<bfloat16_t>(float f) {
    return bfloat16_t{f32_to_bf16_rne(float_bits(f))};
}
template <>
inline float16_t round_nearest<float16_t>(float f) {
    return float16_t{f32_to_f16_rne(float_bits(f))};
}

/// Round stochastically with 32 random bits `r`.
template <class S>
S round_stochastic(float f, std::uint32_t r);
template <>
inline bfloat16_t round_stochastic<bfloat16_t>(float f, std::uint32_t r) {
    return bfloat16_t{f32_to_bf16_sr(float_bits(f), r)};
}
template <>
inline float16_t round_stochastic<float16_t>(float f, std::uint32_t r) {
    return float16_t{f32_to_f16_sr(float_bits(f), r)};
}

namespace detail {

// ---------------------------------------------------------------------------------------------
// Lane versions of the conversions above, over simd::U32 (simd.hpp: 16, 8 or 4 lanes of 32 bits,
// by the translation unit's flags): the same definitions in integer arithmetic, branch-free. Each
// takes float bits and gives the 16-bit result in the low half of its lane.

#if MINIMALSGD_SIMD_U32
using Lanes = simd::U32;
using LaneVec = Lanes::V;

/// fmix32, lane by lane.
inline LaneVec fmix32_lanes(LaneVec h) {
    h = Lanes::xor_(h, Lanes::srl<16>(h));
    h = Lanes::mul(h, Lanes::set1(0x85EBCA6Bu));
    h = Lanes::xor_(h, Lanes::srl<13>(h));
    h = Lanes::mul(h, Lanes::set1(0xC2B2AE35u));
    return Lanes::xor_(h, Lanes::srl<16>(h));
}

/// f32_to_bf16_rne.
inline LaneVec bf16_rne_lanes(LaneVec u) {
    const LaneVec hi = Lanes::srl<16>(u);
    const LaneVec rounded =
        Lanes::srl<16>(Lanes::add(Lanes::add(u, Lanes::set1(0x7fffu)), Lanes::and_(hi, Lanes::set1(1u))));
    const LaneVec nan = Lanes::or_(Lanes::and_(hi, Lanes::set1(0x8000u)), Lanes::set1(0x7fc0u));
    return Lanes::select(Lanes::gt_s(Lanes::and_(u, Lanes::set1(0x7fffffffu)), Lanes::set1(0x7f800000u)), nan, rounded);
}

/// f32_to_bf16_sr: the high half plus one where r < (u & 0xffff) << 16.
inline LaneVec bf16_sr_lanes(LaneVec u, LaneVec r) {
    const LaneVec hi = Lanes::srl<16>(u);
    const LaneVec rounded = Lanes::inc(hi, Lanes::lt_u(r, Lanes::sll<16>(u)));
    const LaneVec nan = Lanes::or_(Lanes::and_(hi, Lanes::set1(0x8000u)), Lanes::set1(0x7fc0u));
    return Lanes::select(Lanes::gt_s(Lanes::and_(u, Lanes::set1(0x7fffffffu)), Lanes::set1(0x7f800000u)), nan, rounded);
}

/// The float16 NaN of f32_to_f16_rne/_sr for a float NaN: sign | 0x7c00 + max(payload >> 13, 1).
inline LaneVec f16_nan_lanes(LaneVec u) {
    const LaneVec q = Lanes::max_u(Lanes::srl<13>(Lanes::and_(u, Lanes::set1(0x007fffffu))), Lanes::set1(1u));
    return Lanes::or_(Lanes::and_(Lanes::srl<16>(u), Lanes::set1(0x8000u)), Lanes::add(q, Lanes::set1(0x7c00u)));
}

/// f32_to_f16_sr's split of a magnitude c (float bits without the sign, below 2^31) into what is
/// kept and what is dropped: with d = min(e - 1, 112) for the float exponent e and x = c - d << 23
/// -- the exponent and significand above 2^-14 (113 <= e), the significand with its leading bit
/// below (d = e - 1), the significand alone for a float subnormal (d = -1: x = m + 2^23, but all
/// its bits are dropped) -- 125 - d bits are dropped: 13 in float16's normal range, more below.
/// The neighbour toward zero is x >> (125 - d) and the dropped bits scaled to 2^32 are the low 32
/// bits of x << (d - 93) (a right shift when d < 93): f32_to_f16_sr's normal result and its
/// subnormal high/low pair, without a branch. (Shifts by 32 or more give 0: simd.hpp.)
struct F16Split {
    LaneVec x, d;
};

inline F16Split f16_split_lanes(LaneVec c) {
    const LaneVec d = Lanes::min_s(Lanes::sub(Lanes::srl<23>(c), Lanes::set1(1u)), Lanes::set1(112u));
    return {Lanes::sub(c, Lanes::sll<23>(d)), d};
}

inline LaneVec f16_dropped_lanes(const F16Split& s) { return Lanes::shl(s.x, Lanes::sub(s.d, Lanes::set1(93u))); }

/// f32_to_f16_sr in one formula for both ranges (f16_split_lanes). Infinities and magnitudes
/// >= 65536 are first clamped to 65536 (the result 0x7c00, nothing dropped); NaNs to
/// 65536 * (1 + q 2^-10), q = max(payload >> 13, 1), which gives 0x7c00 + q, f32_to_f16_rne's NaN.
inline LaneVec f16_sr_lanes(LaneVec u, LaneVec r) {
    const LaneVec a = Lanes::and_(u, Lanes::set1(0x7fffffffu));
    const Lanes::M nan = Lanes::gt_s(a, Lanes::set1(0x7f800000u));
    const LaneVec payload = Lanes::max_u(Lanes::and_(a, Lanes::set1(0x007fe000u)), Lanes::set1(0x2000u));
    const LaneVec c = Lanes::or_(Lanes::min_s(a, Lanes::set1(0x47800000u)), Lanes::keep(nan, payload));
    const F16Split split = f16_split_lanes(c);
    const LaneVec low = Lanes::shr(split.x, Lanes::sub(Lanes::set1(125u), split.d));
    const LaneVec out = Lanes::inc(low, Lanes::lt_u(r, f16_dropped_lanes(split)));
    return Lanes::or_(out, Lanes::srl<16>(Lanes::and_(u, Lanes::set1(0x80000000u))));
}

/// f16_to_f32_bits of the lanes' low 16 bits: the normal range rebiased (the infinity/NaN exponent
/// twice), the subnormal range as (2^-14 + m 2^-24) - 2^-14 in float (exact).
inline LaneVec f16_to_f32_lanes(LaneVec h) {
    const LaneVec shifted = Lanes::sll<13>(Lanes::and_(h, Lanes::set1(0x7fffu)));
    const LaneVec exp = Lanes::and_(shifted, Lanes::set1(0x0f800000u));
    LaneVec normal = Lanes::add(shifted, Lanes::set1(112u << 23));
    normal = Lanes::add(normal, Lanes::keep(Lanes::eq(exp, Lanes::set1(0x0f800000u)), Lanes::set1(112u << 23)));
    const LaneVec sub = Lanes::sub_f32(Lanes::or_(shifted, Lanes::set1(113u << 23)), Lanes::set1(113u << 23));
    const LaneVec out = Lanes::select(Lanes::eq(exp, Lanes::set1(0u)), sub, normal);
    return Lanes::or_(out, Lanes::sll<16>(Lanes::and_(h, Lanes::set1(0x8000u))));
}

/// f32_to_f16_rne: magnitudes >= 65536 and infinities clamped to 65536 (which rounds to 0x7c00),
/// NaNs to 65536 * (1 + q 2^-10) as in f16_sr_lanes; below 2^-14 the float addition of 0.5.
inline LaneVec f16_rne_lanes(LaneVec u) {
    const LaneVec a = Lanes::and_(u, Lanes::set1(0x7fffffffu));
    const Lanes::M nan = Lanes::gt_s(a, Lanes::set1(0x7f800000u));
    const LaneVec payload = Lanes::max_u(Lanes::and_(a, Lanes::set1(0x007fe000u)), Lanes::set1(0x2000u));
    const LaneVec c = Lanes::or_(Lanes::min_s(a, Lanes::set1(0x47800000u)), Lanes::keep(nan, payload));
    const LaneVec normal = Lanes::srl<13>(
        Lanes::add(Lanes::add(c, Lanes::set1(0xc8000fffu)), Lanes::and_(Lanes::srl<13>(c), Lanes::set1(1u))));
    const LaneVec subnormal = Lanes::sub(Lanes::add_f32(a, Lanes::set1(0x3f000000u)), Lanes::set1(0x3f000000u));
    const LaneVec out = Lanes::select(Lanes::gt_s(Lanes::set1(0x38800000u), a), subnormal, normal);
    return Lanes::or_(out, Lanes::and_(Lanes::srl<16>(u), Lanes::set1(0x8000u)));
}

/// Stochastic rounding to S, lane by lane.
template <class S>
inline LaneVec round_stochastic_lanes(LaneVec u, LaneVec r) {
    if constexpr (std::is_same<S, bfloat16_t>::value) {
        return bf16_sr_lanes(u, r);
    } else {
        return f16_sr_lanes(u, r);
    }
}

/// random_half, lane by lane.
template <bool Buffer>
inline LaneVec random_half_lanes(LaneVec h) {
    return Buffer ? Lanes::sll<16>(h) : Lanes::and_(h, Lanes::set1(0xffff0000u));
}
#endif

#if MINIMALSGD_SIMD_U32 == 8
// bfloat16 on AVX2, 16 results at a time in 16-bit lanes (half the instructions of the 32-bit
// lanes): the high and low halves of two float vectors packed side by side, in the lane order of
// _mm256_packus_epi32 (elements 0-3, 8-11 | 4-7, 12-15), which one permute puts back at the end.
// With hi the high half and lo the low half of each float: nearest is hi + (lo > 0x8000 - (hi & 1)),
// stochastic hi + (r < lo) for the 16 random bits r; unsigned 16-bit compares as signed ones on
// operands biased by 0x8000; NaN lanes (an unordered compare of the floats) sign | 0x7fc0.
struct Bf16Halves {
    __m256i hi, lo;  // lo biased by 0x8000
    __m256 x0, x1;
};

inline Bf16Halves bf16_halves(const float* src) {
    const __m256 x0 = _mm256_loadu_ps(src), x1 = _mm256_loadu_ps(src + 8);
    const __m256i u0 = _mm256_castps_si256(x0), u1 = _mm256_castps_si256(x1);
    const __m256i low = _mm256_set1_epi32(0xffff);
    const __m256i hi = _mm256_packus_epi32(_mm256_srli_epi32(u0, 16), _mm256_srli_epi32(u1, 16));
    const __m256i lo = _mm256_packus_epi32(_mm256_and_si256(u0, low), _mm256_and_si256(u1, low));
    return {hi, _mm256_xor_si256(lo, _mm256_set1_epi16(static_cast<short>(0x8000))), x0, x1};
}

inline void bf16_store_halves(std::uint16_t* dst, const Bf16Halves& h, __m256i out) {
    const __m256i nan = _mm256_packs_epi32(_mm256_castps_si256(_mm256_cmp_ps(h.x0, h.x0, _CMP_UNORD_Q)),
                                           _mm256_castps_si256(_mm256_cmp_ps(h.x1, h.x1, _CMP_UNORD_Q)));
    const __m256i nan_bits = _mm256_or_si256(_mm256_and_si256(h.hi, _mm256_set1_epi16(static_cast<short>(0x8000))),
                                             _mm256_set1_epi16(0x7fc0));
    out = _mm256_blendv_epi8(out, nan_bits, nan);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_permute4x64_epi64(out, 0xd8));
}

// f32_to_bf16_rne of src[0..16).
inline void bf16_rne_16(const float* src, std::uint16_t* dst) {
    const Bf16Halves h = bf16_halves(src);
    const __m256i neg_lsb = _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_and_si256(h.hi, _mm256_set1_epi16(1)));
    bf16_store_halves(dst, h, _mm256_sub_epi16(h.hi, _mm256_cmpgt_epi16(h.lo, neg_lsb)));
}

// f32_to_bf16_sr of src[0..16) with random_half<Buffer>(rnd[j]).
template <bool Buffer>
inline void bf16_sr_16(const float* src, const std::uint32_t* rnd, std::uint16_t* dst) {
    const Bf16Halves h = bf16_halves(src);
    const __m256i h0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rnd));
    const __m256i h1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rnd + 8));
    __m256i r;
    if (Buffer) {
        const __m256i low = _mm256_set1_epi32(0xffff);
        r = _mm256_packus_epi32(_mm256_and_si256(h0, low), _mm256_and_si256(h1, low));
    } else {
        r = _mm256_packus_epi32(_mm256_srli_epi32(h0, 16), _mm256_srli_epi32(h1, 16));
    }
    r = _mm256_xor_si256(r, _mm256_set1_epi16(static_cast<short>(0x8000)));
    bf16_store_halves(dst, h, _mm256_sub_epi16(h.hi, _mm256_cmpgt_epi16(h.lo, r)));
}
#endif

// ---------------------------------------------------------------------------------------------
// Block conversions: n <= a few hundred elements between storage and float scratch arrays: the
// whole vectors in the lanes above or the conversion instructions where this translation unit's
// flags enable them (F16C's vcvtph2ps/vcvtps2ph, AVX-512 BF16's vcvtneps2bf16, exact where used),
// the rest -- everything where no vector unit is enabled -- in plain loops over the scalar
// functions (vectorized by the compiler). Every variant gives the same bits.

inline void load_block(const bfloat16_t* MINIMALSGD_RESTRICT src, float* MINIMALSGD_RESTRICT dst, std::size_t n) {
    const std::uint16_t* s = reinterpret_cast<const std::uint16_t*>(src);
    std::size_t i = 0;
#if MINIMALSGD_SIMD_U32
    for (; i + Lanes::N <= n; i += Lanes::N) {
        Lanes::store(dst + i, Lanes::sll<16>(Lanes::load16(s + i)));
    }
#endif
    MINIMALSGD_SIMD
    for (std::size_t j = i; j < n; ++j) {
        dst[j] = bits_float(bf16_to_f32_bits(s[j]));
    }
}

inline void load_block(const float16_t* MINIMALSGD_RESTRICT src, float* MINIMALSGD_RESTRICT dst, std::size_t n) {
    const std::uint16_t* s = reinterpret_cast<const std::uint16_t*>(src);
    std::size_t i = 0;
#if MINIMALSGD_X86_64 && defined(__F16C__)
    // vcvtph2ps: exact, subnormals included (it does not flush them).
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(h));
    }
#endif
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
#elif MINIMALSGD_SIMD_U32
    for (; i + Lanes::N <= n; i += Lanes::N) {
        Lanes::store(dst + i, f16_to_f32_lanes(Lanes::load16(s + i)));
    }
#endif
    MINIMALSGD_SIMD
    for (std::size_t j = i; j < n; ++j) {
        dst[j] = bits_float(f16_to_f32_bits(s[j]));
    }
}

inline void store_nearest(const float* MINIMALSGD_RESTRICT src, bfloat16_t* MINIMALSGD_RESTRICT dst, std::size_t n) {
    std::uint16_t* d = reinterpret_cast<std::uint16_t*>(dst);
    std::size_t i = 0;
#if MINIMALSGD_X86_64 && defined(__AVX512BF16__) && defined(__AVX512F__) && defined(__AVX512DQ__) && \
    defined(__AVX512BW__) && defined(__AVX512VL__)
    // vcvtneps2bf16 rounds to nearest even but flushes subnormal inputs to zero and keeps NaN
    // payloads: vectors with such lanes (vfpclassps: NaN or subnormal) take the lanes' code there.
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(src + i);
        __m256i hw = (__m256i)_mm512_cvtneps_pbh(x);
        const __mmask16 special = _mm512_fpclass_ps_mask(x, 0x01 | 0x20 | 0x80);  // QNaN, denormal, SNaN
        if (special) {
            hw = _mm256_mask_blend_epi16(special, hw, _mm512_cvtepi32_epi16(bf16_rne_lanes(_mm512_castps_si512(x))));
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), hw);
    }
#elif MINIMALSGD_SIMD_U32
#if MINIMALSGD_SIMD_U32 == 8
    for (; i + 16 <= n; i += 16) {
        bf16_rne_16(src + i, d + i);
    }
#endif
    for (; i + Lanes::N <= n; i += Lanes::N) {
        Lanes::store16(d + i, bf16_rne_lanes(Lanes::load(src + i)));
    }
#endif
    MINIMALSGD_SIMD
    for (std::size_t j = i; j < n; ++j) {
        d[j] = f32_to_bf16_rne(float_bits(src[j]));
    }
}

inline void store_nearest(const float* MINIMALSGD_RESTRICT src, float16_t* MINIMALSGD_RESTRICT dst, std::size_t n) {
    std::uint16_t* d = reinterpret_cast<std::uint16_t*>(dst);
    std::size_t i = 0;
#if MINIMALSGD_X86_64 && defined(__F16C__)
    // vcvtps2ph with an explicit round-to-nearest-even: exact for every finite and infinite input
    // (subnormal results included); NaN lanes take the exact code (NumPy keeps signalling payloads).
#if MINIMALSGD_SIMD_U32 == 16 && defined(__AVX512DQ__) && defined(__AVX512VL__)
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(src + i);
        __m256i hw = _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT);
        const __mmask16 nan = _mm512_fpclass_ps_mask(x, 0x01 | 0x80);  // QNaN, SNaN
        if (nan) {
            hw = _mm256_mask_blend_epi16(nan, hw, _mm512_cvtepi32_epi16(f16_nan_lanes(_mm512_castps_si512(x))));
        }
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), hw);
    }
#endif
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(src + i);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
        const int nan = _mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
        if (nan) {
            for (unsigned j = 0; j < 8; ++j) {
                if (nan & (1 << j)) {
                    d[i + j] = f32_to_f16_rne(float_bits(src[i + j]));
                }
            }
        }
    }
#elif MINIMALSGD_SIMD_U32
    for (; i + Lanes::N <= n; i += Lanes::N) {
        Lanes::store16(d + i, f16_rne_lanes(Lanes::load(src + i)));
    }
#endif
    MINIMALSGD_SIMD
    for (std::size_t j = i; j < n; ++j) {
        d[j] = f32_to_f16_rne(float_bits(src[j]));
    }
}

// The 16 random bits of one stored result, as the top bits of r: the value takes the high half of
// the element's 32 bits (Buffer false), the momentum buffer the low half.
template <bool Buffer>
inline std::uint32_t random_half(std::uint32_t h) {
    return Buffer ? h << 16 : h & 0xffff0000u;
}

// float16 stochastic rounding without the subnormal range (|x| >= 2^-14, zero, Inf, NaN): the
// same bits as f32_to_f16_sr there, without its 64-bit shifts; for the plain loops, which take it
// for blocks without a float16-subnormal result (the lanes' code needs no such split).
// (Signed 31-bit compares throughout: one instruction each in every vector instruction set.)
inline std::uint16_t f32_to_f16_sr_normal(std::uint32_t u, std::uint32_t r) {
    const std::uint32_t sign = (u >> 16) & 0x8000u;
    const std::int32_t a = static_cast<std::int32_t>(u & 0x7fffffffu);
    std::int32_t nan = 0x7c00 + ((a & 0x007fffff) >> 13);
    nan = nan == 0x7c00 ? 0x7c01 : nan;
    // r < (a & 0x1fff) << 19, both sides halved.
    const std::int32_t up = static_cast<std::int32_t>(r >> 1) < ((a & 0x1fff) << 18) ? 1 : 0;
    std::int32_t out = ((a - (112 << 23)) >> 13) + up;
    out = a == 0 ? 0 : out;
    out = a >= 0x47800000 ? 0x7c00 : out;
    out = a > 0x7f800000 ? nan : out;
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(out));
}

// Whether any of x[0..n) rounds to a float16 subnormal (nonzero, below 2^-14).
inline bool any_f16_subnormal(const float* MINIMALSGD_RESTRICT x, std::size_t n) {
    std::uint32_t count = 0;
    MINIMALSGD_SIMD_SUM(count)
    for (std::size_t j = 0; j < n; ++j) {
        const std::uint32_t a = float_bits(x[j]) & 0x7fffffffu;
        count += (a != 0 && a < 0x38800000u) ? 1u : 0u;
    }
    return count != 0;
}

#if MINIMALSGD_X86_64 && defined(__F16C__) && MINIMALSGD_SIMD_U32
// float16 stochastic rounding with F16C: vcvtps2ph toward zero gives the neighbour toward zero,
// sign and packing of every finite magnitude below 65536 (subnormal results included), plus one
// where r < the dropped bits (f16_dropped_lanes). Vectors with a magnitude >= 65536, an infinity
// or a NaN (rare: only after a divergence) take the scalar code in those lanes.
inline void f16_sr_f16c(const float* src, LaneVec r, std::uint16_t* dst) {
    const LaneVec u = Lanes::load(src);
    const LaneVec a = Lanes::and_(u, Lanes::set1(0x7fffffffu));
    const LaneVec dropped = f16_dropped_lanes(f16_split_lanes(a));
#if MINIMALSGD_SIMD_U32 == 16
    const __m512 x = _mm512_castsi512_ps(u);
    __m256i t = _mm512_cvtps_ph(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    t = _mm256_mask_sub_epi16(t, Lanes::lt_u(r, dropped), t, _mm256_set1_epi16(-1));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), t);
    const unsigned big = Lanes::gt_s(a, Lanes::set1(0x477fffffu));
#else
    const __m256 x = _mm256_castsi256_ps(u);
    __m128i t = _mm256_cvtps_ph(x, _MM_FROUND_TO_ZERO);
    const __m256i up = Lanes::lt_u(r, dropped);
    t = _mm_sub_epi16(t, _mm_packs_epi32(_mm256_castsi256_si128(up), _mm256_extracti128_si256(up, 1)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), t);
    const unsigned big = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(Lanes::gt_s(a, Lanes::set1(0x477fffffu)))));
#endif
    if (big) {
        alignas(64) std::uint32_t rb[Lanes::N];
        Lanes::store(rb, r);
        for (unsigned j = 0; j < Lanes::N; ++j) {
            if (big & (1u << j)) {
                dst[j] = f32_to_f16_sr(float_bits(src[j]), rb[j]);
            }
        }
    }
}
#endif

// Stochastic rounding of a block; element j uses random_half<Buffer>(rnd[j]).
template <bool Buffer, class S>
void store_stochastic(const float* MINIMALSGD_RESTRICT src, const std::uint32_t* MINIMALSGD_RESTRICT rnd,
                      S* MINIMALSGD_RESTRICT dst, std::size_t n) {
    std::uint16_t* d = reinterpret_cast<std::uint16_t*>(dst);
    std::size_t i = 0;
#if MINIMALSGD_SIMD_U32 == 8
    if constexpr (std::is_same<S, bfloat16_t>::value) {
        for (; i + 16 <= n; i += 16) {
            bf16_sr_16<Buffer>(src + i, rnd + i, d + i);
        }
    }
#endif
#if MINIMALSGD_X86_64 && defined(__F16C__) && MINIMALSGD_SIMD_U32
    if constexpr (std::is_same<S, float16_t>::value) {
        for (; i + Lanes::N <= n; i += Lanes::N) {
            f16_sr_f16c(src + i, random_half_lanes<Buffer>(Lanes::load(rnd + i)), d + i);
        }
    }
#endif
#if MINIMALSGD_SIMD_U32
    for (; i + Lanes::N <= n; i += Lanes::N) {
        const LaneVec r = random_half_lanes<Buffer>(Lanes::load(rnd + i));
        Lanes::store16(d + i, round_stochastic_lanes<S>(Lanes::load(src + i), r));
    }
#endif
    if constexpr (std::is_same<S, bfloat16_t>::value) {
        MINIMALSGD_SIMD
        for (std::size_t j = i; j < n; ++j) {
            d[j] = f32_to_bf16_sr(float_bits(src[j]), random_half<Buffer>(rnd[j]));
        }
    } else if (!any_f16_subnormal(src + i, n - i)) {  // the usual case: the cheaper code
        MINIMALSGD_SIMD
        for (std::size_t j = i; j < n; ++j) {
            d[j] = f32_to_f16_sr_normal(float_bits(src[j]), random_half<Buffer>(rnd[j]));
        }
    } else {
        MINIMALSGD_SIMD
        for (std::size_t j = i; j < n; ++j) {
            d[j] = f32_to_f16_sr(float_bits(src[j]), random_half<Buffer>(rnd[j]));
        }
    }
}

// out[j] = fmix32(x0 + mul * j) for j in [0, n) (wrapping).
inline void hash_run(std::uint32_t x0, std::uint32_t mul, std::uint32_t* MINIMALSGD_RESTRICT out, std::size_t n) {
    std::size_t i = 0;
#if MINIMALSGD_SIMD_U32
    LaneVec x = Lanes::add(Lanes::set1(x0), Lanes::mul(Lanes::iota(), Lanes::set1(mul)));
    const LaneVec stride = Lanes::set1(mul * static_cast<std::uint32_t>(Lanes::N));
    for (; i + Lanes::N <= n; i += Lanes::N) {
        Lanes::store(out + i, fmix32_lanes(x));
        x = Lanes::add(x, stride);
    }
#endif
    MINIMALSGD_SIMD
    for (std::size_t j = i; j < n; ++j) {
        out[j] = fmix32(x0 + mul * static_cast<std::uint32_t>(j));
    }
}

// The random bits of elements [index0, index0 + n) of the tensor whose key is k (n <= 2^32):
// rounding_bits(k, index0 + j), the hash input growing by lo32(k) | 1 per element and by
// 0x9E3779B9 more where the low 32 bits of the index wrap.
inline void random_block(std::uint64_t k, std::uint64_t index0, std::uint32_t* MINIMALSGD_RESTRICT out,
                         std::size_t n) {
    const std::uint32_t mul = static_cast<std::uint32_t>(k) | 1u;
    const std::uint32_t lo0 = static_cast<std::uint32_t>(index0);
    const std::uint32_t hi0 = static_cast<std::uint32_t>(index0 >> 32);
    const std::uint32_t add0 = static_cast<std::uint32_t>(k >> 32) + 0x9E3779B9u * hi0;
    const std::uint64_t until_wrap = (std::uint64_t(1) << 32) - lo0;
    const std::size_t n0 = until_wrap < n ? static_cast<std::size_t>(until_wrap) : n;
    hash_run(mul * lo0 + add0, mul, out, n0);
    hash_run(add0 + 0x9E3779B9u, mul, out + n0, n - n0);
}

// Stochastic rounding of a block of values (and, with Pair, of momentum buffers) with the random
// bits of rounding_bits(k, index0 + j) (index0: the element index of wf[0] in its tensor).
// `scratch` holds n words: with vector lanes, the block's random bits (a pass of the hash, then
// one of each store: three short loops keep fewer constants live than one); without, the plain
// loops below hash in the same loop and need it only for a block across a 2^32 boundary of the
// index.
template <bool Pair, class S>
void store_stochastic_fused(const float* MINIMALSGD_RESTRICT wf, const float* MINIMALSGD_RESTRICT vf,
                            std::uint64_t k, std::uint64_t index0, S* MINIMALSGD_RESTRICT w,
                            S* MINIMALSGD_RESTRICT v, std::size_t n, std::uint32_t* MINIMALSGD_RESTRICT scratch) {
    const std::uint32_t lo0 = static_cast<std::uint32_t>(index0);
    if (MINIMALSGD_SIMD_U32 != 0 || static_cast<std::uint64_t>(lo0) + n > (std::uint64_t(1) << 32)) {
        random_block(k, index0, scratch, n);
        store_stochastic<false>(wf, scratch, w, n);
        if constexpr (Pair) {
            store_stochastic<true>(vf, scratch, v, n);
        }
        return;
    }
    // Element j's hash input: base + mul * j (wrapping), with base that of element 0.
    const std::uint32_t mul = static_cast<std::uint32_t>(k) | 1u;
    const std::uint32_t base =
        mul * lo0 + static_cast<std::uint32_t>(k >> 32) + 0x9E3779B9u * static_cast<std::uint32_t>(index0 >> 32);
    std::uint16_t* dw = reinterpret_cast<std::uint16_t*>(w);
    std::uint16_t* dv = reinterpret_cast<std::uint16_t*>(v);
    if constexpr (std::is_same<S, bfloat16_t>::value) {
        MINIMALSGD_SIMD
        for (std::size_t j = 0; j < n; ++j) {
            const std::uint32_t h = fmix32(base + mul * static_cast<std::uint32_t>(j));
            dw[j] = f32_to_bf16_sr(float_bits(wf[j]), random_half<false>(h));
            if constexpr (Pair) {
                dv[j] = f32_to_bf16_sr(float_bits(vf[j]), random_half<true>(h));
            }
        }
    } else if (!any_f16_subnormal(wf, n) && !(Pair && any_f16_subnormal(vf, n))) {
        MINIMALSGD_SIMD
        for (std::size_t j = 0; j < n; ++j) {
            const std::uint32_t h = fmix32(base + mul * static_cast<std::uint32_t>(j));
            dw[j] = f32_to_f16_sr_normal(float_bits(wf[j]), random_half<false>(h));
            if constexpr (Pair) {
                dv[j] = f32_to_f16_sr_normal(float_bits(vf[j]), random_half<true>(h));
            }
        }
    } else {
        MINIMALSGD_SIMD
        for (std::size_t j = 0; j < n; ++j) {
            const std::uint32_t h = fmix32(base + mul * static_cast<std::uint32_t>(j));
            dw[j] = f32_to_f16_sr(float_bits(wf[j]), random_half<false>(h));
            if constexpr (Pair) {
                dv[j] = f32_to_f16_sr(float_bits(vf[j]), random_half<true>(h));
            }
        }
    }
}

}  // namespace detail
}  // namespace MINIMALSGD_TARGET_NAMESPACE
}  // namespace minimalsgd

#if defined(MINIMALSGD_HALF_GCC12_AVX512)
#pragma GCC diagnostic pop
#undef MINIMALSGD_HALF_GCC12_AVX512
#endif
