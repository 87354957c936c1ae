// Tests of the 16-bit storage types: conversions against a reference written here in double
// arithmetic (quantum, nearbyint, floor), the kernel against the same-order float32 formula, and
// stochastic rounding's independence from threads and chunking.
#include <minimalsgd/minimalsgd.hpp>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "check.hpp"

namespace {

using minimalsgd::bfloat16_t;
using minimalsgd::float16_t;
using minimalsgd::SgdOptions;

struct Format {
    int mant;         // explicit significand bits
    int min_exp;      // exponent of the smallest normal
    double overflow;  // magnitudes at or above round to infinity (nearest)
    double top;       // the power of two above the largest finite value
};

template <class S>
Format format() {
    if (std::is_same<S, bfloat16_t>::value) {
        return {7, -126, std::ldexp(2.0 - std::ldexp(1.0, -8), 127), std::ldexp(1.0, 128)};
    }
    return {10, -14, 65520.0, 65536.0};
}

// The quantum (unit in the last place) of |x| in the format.
double quantum(double ax, const Format& f) {
    int e = ax > 0 ? std::ilogb(ax) : f.min_exp;
    if (e < f.min_exp) e = f.min_exp;
    return std::ldexp(1.0, e - f.mant);
}

// Round to nearest even in double: the reference for finite x.
template <class S>
double ref_nearest(float x) {
    const Format f = format<S>();
    const double ax = std::fabs(static_cast<double>(x));
    if (ax >= f.overflow) return std::copysign(INFINITY, static_cast<double>(x));
    const double q = quantum(ax, f);
    const double r = std::nearbyint(ax / q) * q;  // default rounding mode: ties to even
    return std::copysign(r, static_cast<double>(x));
}

// Stochastic rounding in double: toward zero, plus one quantum when r < floor(frac * 2^32).
template <class S>
double ref_stochastic(float x, std::uint32_t r) {
    const Format f = format<S>();
    const double ax = std::fabs(static_cast<double>(x));
    if (std::is_same<S, float16_t>::value && ax >= 65536.0) return std::copysign(INFINITY, static_cast<double>(x));
    const double q = quantum(ax, f);
    const double lo = std::floor(ax / q);
    const double frac = ax / q - lo;
    const double threshold = std::floor(std::ldexp(frac, 32));
    double mag = (static_cast<double>(r) < threshold ? lo + 1 : lo) * q;
    if (mag >= f.top) mag = INFINITY;
    return std::copysign(mag, static_cast<double>(x));
}

template <class S>
double as_double(S s) {
    return static_cast<double>(minimalsgd::to_float(s));
}

bool same(double a, double b) { return a == b && std::signbit(a) == std::signbit(b); }

std::vector<float> sample_floats(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<float> out;
    for (std::size_t i = 0; i < n; ++i) {
        const auto u = static_cast<std::uint32_t>(rng());
        float f;
        std::memcpy(&f, &u, 4);
        if (std::isfinite(f)) out.push_back(f);
    }
    // Every exponent's edges.
    for (std::uint32_t e = 0; e < 255; ++e) {
        for (std::uint32_t m : {0u, 1u, 0x7fffu, 0x8000u, 0x8001u, 0x17ffu, 0x1000u, 0x1001u, 0x3000u, 0x7fffffu}) {
            for (std::uint32_t s : {0u, 0x80000000u}) {
                const std::uint32_t u = s | (e << 23) | m;
                float f;
                std::memcpy(&f, &u, 4);
                out.push_back(f);
            }
        }
    }
    return out;
}

template <class S>
void check_conversions() {
    // Every 16-bit pattern converts to float and back unchanged (NaN excepted: it stays a NaN).
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const S s{static_cast<std::uint16_t>(h)};
        const float x = minimalsgd::to_float(s);
        if (std::isnan(x)) continue;
        CHECK(minimalsgd::round_nearest<S>(x).bits == h);
        CHECK(minimalsgd::round_stochastic<S>(x, 0u).bits == h);
        CHECK(minimalsgd::round_stochastic<S>(x, 0xffffffffu).bits == h);
    }
    const std::vector<float> xs = sample_floats(1 << 18, 3);
    std::mt19937_64 rng(4);
    int bad_nearest = 0, bad_sr = 0;
    for (float x : xs) {
        if (!same(as_double(minimalsgd::round_nearest<S>(x)), ref_nearest<S>(x))) ++bad_nearest;
        const auto r = static_cast<std::uint32_t>(rng());
        if (!same(as_double(minimalsgd::round_stochastic<S>(x, r)), ref_stochastic<S>(x, r))) ++bad_sr;
    }
    CHECK(bad_nearest == 0);
    CHECK(bad_sr == 0);
    // NaN stays NaN; infinities stay.
    CHECK(std::isnan(minimalsgd::to_float(minimalsgd::round_nearest<S>(NAN))));
    CHECK(std::isnan(minimalsgd::to_float(minimalsgd::round_stochastic<S>(NAN, 123u))));
    CHECK(minimalsgd::to_float(minimalsgd::round_stochastic<S>(INFINITY, 0u)) == INFINITY);
    CHECK(minimalsgd::to_float(minimalsgd::round_nearest<S>(-INFINITY)) == -INFINITY);
}

TEST_CASE(half_conversions_bfloat16) { check_conversions<bfloat16_t>(); }
TEST_CASE(half_conversions_float16) { check_conversions<float16_t>(); }

TEST_CASE(half_known_values) {
    CHECK(minimalsgd::round_nearest<bfloat16_t>(1.0f).bits == 0x3f80);
    CHECK(minimalsgd::round_nearest<float16_t>(1.0f).bits == 0x3c00);
    CHECK(minimalsgd::round_nearest<float16_t>(65520.0f).bits == 0x7c00);
    CHECK(minimalsgd::round_nearest<float16_t>(65519.0f).bits == 0x7bff);
    CHECK(minimalsgd::round_nearest<float16_t>(std::ldexp(1.0f, -24)).bits == 0x0001);
    CHECK(minimalsgd::round_nearest<float16_t>(std::ldexp(1.0f, -25)).bits == 0x0000);  // tie to even
    CHECK(minimalsgd::round_nearest<bfloat16_t>(-NAN).bits == 0xffc0);
    // SplitMix64: the first output of a generator seeded with 0 is mix64(0 + gamma).
    CHECK(minimalsgd::mix64(minimalsgd::kRoundingGamma) == 0xE220A8397B1DCDAFull);
}

// The step on 16-bit storage in float, in the kernel's order, each stored result rounded once.
template <class S, class B>
void half_reference(std::vector<S>& w, const std::vector<S>& grad, std::vector<B>& v, const SgdOptions& o, bool first,
                    std::uint64_t key) {
    const float lr = float(o.lr), mu = float(o.momentum), d1 = float(1.0 - o.dampening), wd = float(o.weight_decay);
    const float s = o.maximize ? -1.0f : 1.0f;
    const std::uint64_t k = minimalsgd::rounding_tensor_key(minimalsgd::rounding_step_key(o.seed, o.step), key);
    for (std::size_t i = 0; i < w.size(); ++i) {
        const std::uint32_t bits = minimalsgd::rounding_bits(k, i);
        const auto store = [&](float x, std::uint32_t r) {
            return o.stochastic_rounding ? minimalsgd::round_stochastic<S>(x, r) : minimalsgd::round_nearest<S>(x);
        };
        const float wi = minimalsgd::to_float(w[i]);
        float g = minimalsgd::to_float(grad[i]) * s;
        if (o.weight_decay != 0) g = g + wd * wi;
        if (o.momentum != 0) {
            float vi;
            if (first) {
                vi = g;
            } else if constexpr (std::is_same<B, float>::value) {
                vi = mu * v[i] + d1 * g;
            } else {
                vi = mu * minimalsgd::to_float(v[i]) + d1 * g;
            }
            if constexpr (std::is_same<B, float>::value) {
                v[i] = vi;
            } else {
                v[i] = store(vi, bits << 16);
            }
            g = o.nesterov ? g + mu * vi : vi;
        }
        w[i] = store(wi - lr * g, bits & 0xffff0000u);
    }
}

template <class S>
std::vector<S> randh(std::size_t n, std::mt19937_64& rng, double scale) {
    std::normal_distribution<double> d(0.0, scale);
    std::vector<S> out(n);
    for (auto& x : out) x = minimalsgd::round_nearest<S>(static_cast<float>(d(rng)));
    return out;
}

template <class S, class B>
void check_kernel() {
    std::mt19937_64 rng(7);
    const std::size_t sizes[] = {0, 1, 15, 255, 256, 257, 1000, 5000};
    for (bool sr : {false, true}) {
        for (double mu : {0.0, 0.9}) {
            for (bool nesterov : {false, true}) {
                if (nesterov && mu == 0) continue;
                SgdOptions o{0.05, mu, 0.0, 1e-3, nesterov, false};
                o.stochastic_rounding = sr;
                o.seed = 11;
                o.step = 3;
                for (bool first : {false, true}) {
                    std::vector<std::vector<S>> ws, gs, ws_ref;
                    std::vector<std::vector<B>> vs, vs_ref;
                    for (std::size_t n : sizes) {
                        ws.push_back(randh<S>(n, rng, 1.0));
                        gs.push_back(randh<S>(n, rng, 0.1));
                        std::vector<B> v(n);
                        std::normal_distribution<double> d(0.0, 1.0);
                        for (auto& x : v) {
                            if constexpr (std::is_same<B, float>::value) {
                                x = static_cast<float>(d(rng));
                            } else {
                                x = minimalsgd::round_nearest<S>(static_cast<float>(d(rng)));
                            }
                        }
                        vs.push_back(v);
                    }
                    ws_ref = ws;
                    vs_ref = vs;
                    std::vector<minimalsgd::TensorSpan<S, B>> spans;
                    for (std::size_t k = 0; k < ws.size(); ++k) {
                        half_reference(ws_ref[k], gs[k], vs_ref[k], o, first, 100 + k);
                        spans.push_back({ws[k].data(), gs[k].data(), mu != 0 ? vs[k].data() : nullptr, ws[k].size(),
                                         first, 0, 100 + k});
                    }
                    // Many threads, a tiny grain: chunks split tensors at odd places.
                    minimalsgd::Parallel par;
                    par.num_threads = 3;
                    par.grain = 1;
                    minimalsgd::multi_tensor_sgd_step(spans.data(), spans.size(), o, 1.0f, par);
                    int bad = 0;
                    for (std::size_t k = 0; k < ws.size(); ++k) {
                        for (std::size_t i = 0; i < ws[k].size(); ++i) {
                            if (ws[k][i].bits != ws_ref[k][i].bits) ++bad;
                            if constexpr (std::is_same<B, float>::value) {
                                if (mu != 0 && !(vs[k][i] == vs_ref[k][i])) ++bad;
                            } else {
                                if (mu != 0 && vs[k][i].bits != vs_ref[k][i].bits) ++bad;
                            }
                        }
                    }
                    CHECK_MSG(bad == 0, std::to_string(bad) + " elements differ");
                }
            }
        }
    }
}

TEST_CASE(half_kernel_bfloat16) { check_kernel<bfloat16_t, bfloat16_t>(); }
TEST_CASE(half_kernel_bfloat16_float_buffer) { check_kernel<bfloat16_t, float>(); }
TEST_CASE(half_kernel_float16) { check_kernel<float16_t, float16_t>(); }
TEST_CASE(half_kernel_float16_float_buffer) { check_kernel<float16_t, float>(); }

// Blocks whose element indices cross a 2^32 boundary (tensors of more than 4G elements) take the
// scratch path: the same bits as rounding_bits element by element.
template <class S>
void check_index_wrap() {
    const std::uint64_t k = 0x0123456789abcdefull;
    std::vector<float> wf(100), vf(100);
    for (std::size_t j = 0; j < wf.size(); ++j) {
        wf[j] = 1.0f + 0.001f * static_cast<float>(j);
        vf[j] = -0.25f - 1e-5f * static_cast<float>(j);
    }
    for (std::uint64_t index0 : {std::uint64_t(0), (std::uint64_t(1) << 32) - 40, (std::uint64_t(5) << 32) + 3}) {
        std::vector<S> w(100), v(100);
        std::vector<std::uint32_t> scratch(100);
        minimalsgd::detail::store_stochastic_fused<true>(wf.data(), vf.data(), k, index0, w.data(), v.data(), w.size(),
                                                         scratch.data());
        int bad = 0;
        for (std::size_t j = 0; j < w.size(); ++j) {
            const std::uint32_t h = minimalsgd::rounding_bits(k, index0 + j);
            if (w[j].bits != minimalsgd::round_stochastic<S>(wf[j], h & 0xffff0000u).bits) ++bad;
            if (v[j].bits != minimalsgd::round_stochastic<S>(vf[j], h << 16).bits) ++bad;
        }
        CHECK_MSG(bad == 0, std::to_string(bad) + " elements differ at index0 " + std::to_string(index0));
    }
}

TEST_CASE(half_index_wrap_bfloat16) { check_index_wrap<bfloat16_t>(); }
TEST_CASE(half_index_wrap_float16) { check_index_wrap<float16_t>(); }

// A tensor stepped as pieces, each with its offset in the tensor as TensorSpan::index0 (a rank's
// slice of a sharded param), rounds with the bits of the whole tensor stepped at once.
template <class S, class B>
void check_pieces_round_as_whole() {
    std::mt19937_64 rng(13);
    const std::size_t n = 1000;
    const std::size_t cuts[] = {0, 1, 255, 256, 300, 777, 1000};
    SgdOptions o{0.05, 0.9, 0.0, 1e-3, true, false};
    o.stochastic_rounding = true;
    o.seed = 5;
    o.step = 2;
    for (bool first : {true, false}) {
        const std::vector<S> w0 = randh<S>(n, rng, 1.0), g = randh<S>(n, rng, 0.1);
        std::vector<B> v0(n);
        const std::vector<S> vh = randh<S>(n, rng, 1.0);
        for (std::size_t i = 0; i < n; ++i) {
            if constexpr (std::is_same<B, float>::value) {
                v0[i] = minimalsgd::to_float(vh[i]) * 0.3f;
            } else {
                v0[i] = vh[i];
            }
        }
        std::vector<S> w_whole = w0, w_pieces = w0;
        std::vector<B> v_whole = v0, v_pieces = v0;
        const minimalsgd::TensorSpan<S, B> whole{w_whole.data(), g.data(), v_whole.data(), n, first, 0, 77};
        minimalsgd::multi_tensor_sgd_step(&whole, 1, o, 1.0f);
        std::vector<minimalsgd::TensorSpan<S, B>> pieces;
        for (std::size_t c = 0; c + 1 < sizeof(cuts) / sizeof(cuts[0]); ++c) {
            const std::size_t lo = cuts[c], hi = cuts[c + 1];
            pieces.push_back({w_pieces.data() + lo, g.data() + lo, v_pieces.data() + lo, hi - lo, first, 0, 77, lo});
        }
        minimalsgd::Parallel par;
        par.num_threads = 2;
        par.grain = 1;
        minimalsgd::multi_tensor_sgd_step(pieces.data(), pieces.size(), o, 1.0f, par);
        int bad = 0;
        for (std::size_t i = 0; i < n; ++i) {
            if (w_whole[i].bits != w_pieces[i].bits) ++bad;
            if constexpr (std::is_same<B, float>::value) {
                if (!(v_whole[i] == v_pieces[i])) ++bad;
            } else {
                if (v_whole[i].bits != v_pieces[i].bits) ++bad;
            }
        }
        CHECK_MSG(bad == 0, std::to_string(bad) + " elements differ");
        // Without the offsets the pieces would round with other bits (the test can fail).
        std::vector<S> w_wrong = w0;
        std::vector<B> v_wrong = v0;
        for (auto& p : pieces) {
            const std::size_t lo = static_cast<std::size_t>(p.index0);
            p = {w_wrong.data() + lo, g.data() + lo, v_wrong.data() + lo, p.size, first, 0, 77, 0};
        }
        minimalsgd::multi_tensor_sgd_step(pieces.data(), pieces.size(), o, 1.0f);
        int differ = 0;
        for (std::size_t i = 0; i < n; ++i) {
            if (w_whole[i].bits != w_wrong[i].bits) ++differ;
        }
        CHECK(differ > 0);
    }
}

TEST_CASE(half_pieces_with_index0_round_as_whole) {
    check_pieces_round_as_whole<bfloat16_t, bfloat16_t>();
    check_pieces_round_as_whole<bfloat16_t, float>();
    check_pieces_round_as_whole<float16_t, float16_t>();
    check_pieces_round_as_whole<float16_t, float>();
}

// ---------------------------------------------------------------------------------------------
// The block conversions (the vector lanes of this build's flags, the conversion instructions and
// the plain tails) against the double reference, on every float exponent's edges, rounding
// boundaries, subnormals, infinities, overflow and NaN payloads, at every length and offset
// around the vector widths (4, 8, 16) and the kernel's block.

std::vector<float> edge_floats() {
    std::vector<std::uint32_t> bits;
    for (std::uint32_t e = 0; e < 256; ++e) {
        for (std::uint32_t m : {0u, 1u, 2u, 0xfffu, 0x1000u, 0x1001u, 0x1fffu, 0x2000u, 0x3000u, 0x7fffu, 0x8000u,
                                0x8001u, 0x17fffu, 0x18000u, 0x18001u, 0x400000u, 0x401000u, 0x7fe000u, 0x7fdfffu,
                                0x7fffffu}) {
            bits.push_back((e << 23) | m);
        }
    }
    // float16's edges: the largest finite value, the overflow threshold, 65536; 2^-14 and the
    // subnormal range's ties and neighbours; signalling and quiet NaN payloads.
    for (float f : {65504.0f, 65519.996f, 65520.0f, 65535.996f, 65536.0f, 6.103515625e-05f, 6.1035152e-05f,
                    5.9604645e-08f, 2.9802322e-08f, 8.940697e-08f, 1.4901161e-08f, 1e-45f, 3.3895314e38f,
                    3.4028235e38f}) {
        std::uint32_t u;
        std::memcpy(&u, &f, 4);
        bits.push_back(u);
    }
    for (std::uint32_t u : {0x7f800001u, 0x7f801fffu, 0x7f802000u, 0x7fbfffffu, 0x7fc00000u, 0x7fc00001u, 0x7fffffffu,
                            0x7f800000u}) {
        bits.push_back(u);
    }
    std::mt19937_64 rng(21);
    for (int i = 0; i < 4096; ++i) {
        bits.push_back(static_cast<std::uint32_t>(rng()));
    }
    const std::size_t n = bits.size();
    for (std::size_t i = 0; i < n; ++i) {
        bits.push_back(bits[i] ^ 0x80000000u);
    }
    std::shuffle(bits.begin(), bits.end(), rng);
    std::vector<float> out(bits.size());
    std::memcpy(out.data(), bits.data(), bits.size() * 4);
    return out;
}

// The lengths and offsets the block functions see: empty, one, every vector width and its
// neighbours, and the kernel's block of 256.
const std::size_t kBlockLengths[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 47, 48, 49,
                                     63, 64, 65, 255, 256, 257};

// Same bits for finite results and NaN-ness, the reference's rules: the 16-bit NaN patterns are
// compared with the scalar definition (the reference knows no payloads).
template <class S>
bool same_result(S got, double want, S scalar, float x) {
    if (!std::isfinite(x)) want = static_cast<double>(x);  // the references are for finite x
    const double g = as_double(got);
    if (std::isnan(want)) return std::isnan(g) && got.bits == scalar.bits;
    return same(g, want) && got.bits == scalar.bits;
}

// load_block gives to_float's bits, except that a signalling float16 NaN may arrive quiet (F16C's
// vcvtph2ps sets the quiet bit, as any arithmetic on the value would).
template <class S>
bool same_load(float got, S x) {
    const std::uint32_t want = minimalsgd::float_bits(minimalsgd::to_float(x));
    const std::uint32_t g = minimalsgd::float_bits(got);
    const bool signalling = std::is_same<S, float16_t>::value && (want & 0x7fc00000u) == 0x7f800000u && (want & 0x3fffffu);
    return g == want || (signalling && g == (want | 0x00400000u));
}

template <class S>
void check_blocks() {
    const std::vector<float> xs = edge_floats();
    std::mt19937_64 rng(22);
    // load_block: every 16-bit pattern, at every offset and length.
    std::vector<S> all(65536 + 64);
    for (std::size_t h = 0; h < all.size(); ++h) all[h].bits = static_cast<std::uint16_t>(h * 40503u);
    std::vector<float> out(all.size());
    int bad_load = 0;
    for (std::size_t off : {0, 1, 3}) {
        for (std::size_t n : kBlockLengths) {
            for (std::size_t base = off; base + n <= all.size(); base += n ? n * 37 + 1 : 1000) {
                minimalsgd::detail::load_block(all.data() + base, out.data(), n);
                for (std::size_t j = 0; j < n; ++j) {
                    if (!same_load(out[j], all[base + j])) ++bad_load;
                }
            }
        }
        minimalsgd::detail::load_block(all.data() + off, out.data(), all.size() - off);
        for (std::size_t j = 0; j + off < all.size(); ++j) {
            if (!same_load(out[j], all[off + j])) ++bad_load;
        }
    }
    CHECK_MSG(bad_load == 0, std::to_string(bad_load) + " loads differ");

    // store_nearest and store_stochastic over the edge values, at every offset and length; the
    // random bits include each value's rounding threshold and its neighbours (r is a multiple of
    // 2^16: the compare is exact at those).
    std::vector<std::uint32_t> rnd_value(xs.size()), rnd_buffer(xs.size());
    const Format f = format<S>();
    for (std::size_t j = 0; j < xs.size(); ++j) {
        const double ax = std::fabs(static_cast<double>(xs[j]));
        std::uint32_t thr = 0;
        if (std::isfinite(ax)) {
            const double q = quantum(ax, f);
            const double frac = ax / q - std::floor(ax / q);
            thr = static_cast<std::uint32_t>(std::min(std::floor(std::ldexp(frac, 32)), 4294967295.0));
        }
        std::uint32_t r;
        switch (rng() % 4) {
            case 0: r = thr & 0xffff0000u; break;                    // at the threshold: up when thr has low bits
            case 1: r = (thr & 0xffff0000u) - 0x10000u; break;       // just below
            case 2: r = (thr & 0xffff0000u) + 0x10000u; break;       // just above
            default: r = static_cast<std::uint32_t>(rng()); break;   // anywhere
        }
        r &= 0xffff0000u;
        rnd_value[j] = r | static_cast<std::uint32_t>(rng() & 0xffffu);  // the buffer's half: noise here
        rnd_buffer[j] = (r >> 16) | static_cast<std::uint32_t>(rng() & 0xffff0000u);
    }
    std::vector<S> dst(xs.size() + 8);
    int bad_nearest = 0, bad_sr = 0;
    for (std::size_t off : {0, 1, 3}) {
        for (std::size_t n : kBlockLengths) {
            for (std::size_t base = off; base + n <= xs.size(); base += n ? n * 5 + 3 : 1000) {
                minimalsgd::detail::store_nearest(xs.data() + base, dst.data() + off, n);
                for (std::size_t j = 0; j < n; ++j) {
                    const float x = xs[base + j];
                    if (!same_result(dst[off + j], ref_nearest<S>(x), minimalsgd::round_nearest<S>(x), x)) ++bad_nearest;
                }
                for (bool buffer : {false, true}) {
                    const std::uint32_t* rnd = (buffer ? rnd_buffer : rnd_value).data() + base;
                    if (buffer) {
                        minimalsgd::detail::store_stochastic<true>(xs.data() + base, rnd, dst.data() + off, n);
                    } else {
                        minimalsgd::detail::store_stochastic<false>(xs.data() + base, rnd, dst.data() + off, n);
                    }
                    for (std::size_t j = 0; j < n; ++j) {
                        const float x = xs[base + j];
                        const std::uint32_t r = buffer ? rnd[j] << 16 : rnd[j] & 0xffff0000u;
                        if (!same_result(dst[off + j], ref_stochastic<S>(x, r), minimalsgd::round_stochastic<S>(x, r), x)) {
                            ++bad_sr;
                        }
                    }
                }
            }
        }
    }
    CHECK_MSG(bad_nearest == 0, std::to_string(bad_nearest) + " nearest stores differ");
    CHECK_MSG(bad_sr == 0, std::to_string(bad_sr) + " stochastic stores differ");

    // The fused stochastic store: the random bits of rounding_bits(k, index0 + j), for values
    // and buffers, at every length and at index offsets that are not multiples of a vector.
    const std::uint64_t k = 0x9e3779b97f4a7c15ull ^ 0x1234567ull;
    std::vector<S> w(300), v(300);
    std::vector<std::uint32_t> scratch(300);
    int bad_fused = 0;
    for (std::uint64_t index0 : {std::uint64_t(0), std::uint64_t(5), std::uint64_t(1) << 33 | 77}) {
        for (std::size_t n : kBlockLengths) {
            for (std::size_t base = 0; base + n <= xs.size(); base += n ? n * 11 + 7 : 1000) {
                const float* wf = xs.data() + base;
                const float* vf = xs.data() + (xs.size() - base - n);
                minimalsgd::detail::store_stochastic_fused<true>(wf, vf, k, index0 + base, w.data(), v.data(), n,
                                                                 scratch.data());
                for (std::size_t j = 0; j < n; ++j) {
                    const std::uint32_t h = minimalsgd::rounding_bits(k, index0 + base + j);
                    if (w[j].bits != minimalsgd::round_stochastic<S>(wf[j], h & 0xffff0000u).bits) ++bad_fused;
                    if (v[j].bits != minimalsgd::round_stochastic<S>(vf[j], h << 16).bits) ++bad_fused;
                }
                minimalsgd::detail::store_stochastic_fused<false>(vf, nullptr, k, index0 + base, w.data(),
                                                                  static_cast<S*>(nullptr), n, scratch.data());
                for (std::size_t j = 0; j < n; ++j) {
                    const std::uint32_t h = minimalsgd::rounding_bits(k, index0 + base + j);
                    if (w[j].bits != minimalsgd::round_stochastic<S>(vf[j], h & 0xffff0000u).bits) ++bad_fused;
                }
            }
        }
    }
    CHECK_MSG(bad_fused == 0, std::to_string(bad_fused) + " fused stochastic stores differ");
}

#if MINIMALSGD_SIMD_U32
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC bug 105593 (see half.hpp)
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
// The float16 lanes that stand in for F16C where it is missing (aarch64), tested on every build
// with lanes: every 16-bit pattern to float, the edge floats to nearest.
TEST_CASE(half_float16_lanes_without_f16c) {
    using minimalsgd::detail::Lanes;
    constexpr std::size_t N = Lanes::N;
    int bad = 0;
    for (std::uint32_t h0 = 0; h0 < 65536; h0 += N) {
        std::uint16_t in[N];
        float out[N];
        for (std::size_t j = 0; j < N; ++j) in[j] = static_cast<std::uint16_t>(h0 + j);
        Lanes::store(out, minimalsgd::detail::f16_to_f32_lanes(Lanes::load16(in)));
        for (std::size_t j = 0; j < N; ++j) {
            if (minimalsgd::float_bits(out[j]) != minimalsgd::f16_to_f32_bits(in[j])) ++bad;
        }
    }
    std::vector<float> xs = edge_floats();
    xs.resize(xs.size() / N * N);
    for (std::size_t i = 0; i < xs.size(); i += N) {
        std::uint16_t out[N];
        Lanes::store16(out, minimalsgd::detail::f16_rne_lanes(Lanes::load(xs.data() + i)));
        for (std::size_t j = 0; j < N; ++j) {
            if (out[j] != minimalsgd::f32_to_f16_rne(minimalsgd::float_bits(xs[i + j]))) ++bad;
        }
    }
    CHECK_MSG(bad == 0, std::to_string(bad) + " lanes differ");
}
#endif

TEST_CASE(half_blocks_bfloat16) { check_blocks<bfloat16_t>(); }
TEST_CASE(half_blocks_float16) { check_blocks<float16_t>(); }

TEST_CASE(half_sum_of_squares) {
    std::mt19937_64 rng(9);
    const auto x = randh<bfloat16_t>(100003, rng, 1.0);
    std::vector<float> xf(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) xf[i] = minimalsgd::to_float(x[i]);
    minimalsgd::Parallel par;
    par.num_threads = 2;
    par.grain = 1;
    // The same blocks and partial sums as on the converted floats: the same bits.
    CHECK(minimalsgd::sum_of_squares(x.data(), x.size(), par) == minimalsgd::sum_of_squares(xf.data(), xf.size(), par));
}

}  // namespace
