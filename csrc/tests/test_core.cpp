// Tests of the header-only core against a plain float64 oracle written here.
#include <minimalsgd/minimalsgd.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "check.hpp"

namespace {

using minimalsgd::Parallel;
using minimalsgd::SgdOptions;

// The update of DESIGN.md in double, element by element.
void oracle_step(std::vector<double>& w, const std::vector<double>& grad, std::vector<double>& v,
                 const SgdOptions& o, bool first, double scale) {
    for (std::size_t i = 0; i < w.size(); ++i) {
        double g = grad[i] * scale;
        if (o.maximize) g = -g;
        if (o.weight_decay != 0) g = g + o.weight_decay * w[i];
        if (o.momentum != 0) {
            v[i] = first ? g : o.momentum * v[i] + (1 - o.dampening) * g;
            g = o.nesterov ? g + o.momentum * v[i] : v[i];
        }
        w[i] = w[i] - o.lr * g;
    }
}

// The same update in T with T-rounded coefficients, in the same order: the kernel (built with
// -ffp-contract=off) must match it bit for bit.
template <class T>
void same_order_step(std::vector<T>& w, const std::vector<T>& grad, std::vector<T>& v, const SgdOptions& o,
                     bool first, double scale) {
    const T lr = T(o.lr), mu = T(o.momentum), d1 = T(1.0 - o.dampening), wd = T(o.weight_decay);
    const T s = o.maximize ? T(-scale) : T(scale);
    for (std::size_t i = 0; i < w.size(); ++i) {
        T g = grad[i] * s;
        if (o.weight_decay != 0) g = g + wd * w[i];
        if (o.momentum != 0) {
            v[i] = first ? g : mu * v[i] + d1 * g;
            g = o.nesterov ? g + mu * v[i] : v[i];
        }
        w[i] = w[i] - lr * g;
    }
}

template <class T>
std::vector<T> randn(std::size_t n, std::mt19937_64& rng) {
    std::normal_distribution<double> d(0.0, 1.0);
    std::vector<T> out(n);
    for (auto& x : out) x = static_cast<T>(d(rng));
    return out;
}

std::vector<SgdOptions> all_options() {
    std::vector<SgdOptions> out;
    for (double mu : {0.0, 0.9})
        for (bool nesterov : {false, true})
            for (double damp : {0.0, 0.25})
                for (double wd : {0.0, 0.01})
                    for (bool maximize : {false, true}) {
                        SgdOptions o{0.05, mu, damp, wd, nesterov, maximize};
                        if (minimalsgd::validate(o).empty()) out.push_back(o);
                    }
    return out;
}

const std::vector<std::size_t> kSizes = {0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000,
                                          32767, 32768, 32769, 100003};

template <class T>
void check_against_oracles(const char* label) {
    std::mt19937_64 rng(42);
    const double tol = std::is_same<T, float>::value ? 2e-5 : 1e-12;
    for (const SgdOptions& o : all_options()) {
        for (std::size_t n : kSizes) {
            for (double scale : {1.0, 0.37}) {
                std::vector<T> w = randn<T>(n, rng), v(n, T(0));
                std::vector<T> w2(w.begin(), w.end()), v2(v.begin(), v.end());
                std::vector<double> wd(w.begin(), w.end()), vd(n, 0.0);
                for (int step = 0; step < 3; ++step) {
                    const bool first = step == 0;
                    const std::vector<T> g = randn<T>(n, rng);
                    const std::vector<double> gd(g.begin(), g.end());
                    minimalsgd::sgd_step(w.data(), g.data(), o.momentum != 0 ? v.data() : nullptr, n, o, first,
                                         static_cast<T>(scale));
                    same_order_step(w2, g, v2, o, first, scale);
                    oracle_step(wd, gd, vd, o, first, static_cast<double>(static_cast<T>(scale)));
                }
                bool exact = true, close = true;
                for (std::size_t i = 0; i < n; ++i) {
                    exact = exact && w[i] == w2[i] && (o.momentum == 0 || v[i] == v2[i]);
                    const double err = std::fabs(double(w[i]) - wd[i]);
                    close = close && err <= tol * (1 + std::fabs(wd[i]));
                }
                const std::string what = std::string(label) + " n=" + std::to_string(n) +
                                         " mu=" + std::to_string(o.momentum) + " nesterov=" + std::to_string(o.nesterov) +
                                         " damp=" + std::to_string(o.dampening) + " wd=" + std::to_string(o.weight_decay) +
                                         " max=" + std::to_string(o.maximize);
                CHECK_MSG(exact, what);
                CHECK_MSG(close, what);
            }
        }
    }
}

TEST_CASE(step_float_matches_oracle) { check_against_oracles<float>("float"); }
TEST_CASE(step_double_matches_oracle) { check_against_oracles<double>("double"); }

TEST_CASE(first_step_ignores_old_buffer) {
    SgdOptions o{0.1, 0.9, 0.5};
    std::vector<float> w = {1, 2, 3}, g = {0.5f, -1, 2}, v = {NAN, 1e30f, -7};
    minimalsgd::sgd_step(w.data(), g.data(), v.data(), 3, o, true);
    CHECK(v[0] == 0.5f && v[1] == -1 && v[2] == 2);  // v = g, no dampening on the first step
    CHECK(w[0] == 1 - 0.1f * 0.5f);
}

TEST_CASE(grad_is_never_written) {
    std::mt19937_64 rng(1);
    for (const SgdOptions& o : all_options()) {
        std::vector<double> w = randn<double>(1000, rng), g = randn<double>(1000, rng), v(1000);
        const std::vector<double> g0 = g;
        minimalsgd::sgd_step(w.data(), g.data(), v.data(), g.size(), o, false, 0.5);
        CHECK(g == g0);
    }
}

template <class T>
void check_multi_tensor() {
    std::mt19937_64 rng(7);
    // Many tensors of awkward sizes: thread chunks span tensors.
    std::vector<std::size_t> sizes;
    for (int i = 0; i < 300; ++i) sizes.push_back(static_cast<std::size_t>(rng() % 700));
    sizes.push_back(70001);
    SgdOptions o{0.01, 0.9, 0.1, 0.001, false, false};
    for (int threads : {1, 2, 3}) {
        std::vector<std::vector<T>> w, g, v, w_ref, v_ref;
        for (std::size_t n : sizes) {
            w.push_back(randn<T>(n, rng));
            g.push_back(randn<T>(n, rng));
            v.push_back(randn<T>(n, rng));
            w_ref.emplace_back(w.back().begin(), w.back().end());
            v_ref.emplace_back(v.back().begin(), v.back().end());
        }
        std::vector<minimalsgd::TensorSpan<T>> spans;
        for (std::size_t k = 0; k < sizes.size(); ++k) {
            spans.push_back({w[k].data(), g[k].data(), v[k].data(), sizes[k], k % 3 == 0});
        }
        Parallel par;
        par.num_threads = threads;
        par.grain = 1000;  // force the threaded path
        minimalsgd::multi_tensor_sgd_step(spans.data(), spans.size(), o, T(1), par);
        bool exact = true;
        for (std::size_t k = 0; k < sizes.size(); ++k) {
            same_order_step(w_ref[k], g[k], v_ref[k], o, k % 3 == 0, 1.0);
            exact = exact && w_ref[k] == w[k] && v_ref[k] == v[k];
        }
        CHECK_MSG(exact, "threads=" + std::to_string(threads));
    }
}

TEST_CASE(multi_tensor_float) { check_multi_tensor<float>(); }
TEST_CASE(multi_tensor_double) { check_multi_tensor<double>(); }

// Per-tensor options: each span is stepped with its own group's hyperparameters, in one call,
// exactly as a call of its own would step it (groups differ in every option, including momentum
// 0 with a null buffer).
template <class T>
void check_groups() {
    std::mt19937_64 rng(11);
    const std::vector<SgdOptions> groups = {
        {0.01, 0.9, 0.0, 0.001, true, false}, {0.1, 0.0, 0.0, 0.0, false, true},
        {0.05, 0.5, 0.25, 0.0, false, false}, {0.002, 0.99, 0.0, 0.1, false, true}};
    std::vector<std::size_t> sizes;
    for (int i = 0; i < 60; ++i) sizes.push_back(static_cast<std::size_t>(rng() % 900));
    sizes.push_back(40001);
    for (int threads : {1, 2}) {
        std::vector<std::vector<T>> w, g, v, w_ref, v_ref;
        std::vector<minimalsgd::TensorSpan<T>> spans;
        for (std::size_t k = 0; k < sizes.size(); ++k) {
            w.push_back(randn<T>(sizes[k], rng));
            g.push_back(randn<T>(sizes[k], rng));
            v.push_back(randn<T>(sizes[k], rng));
            w_ref.emplace_back(w.back().begin(), w.back().end());
            v_ref.emplace_back(v.back().begin(), v.back().end());
        }
        for (std::size_t k = 0; k < sizes.size(); ++k) {
            const auto grp = static_cast<std::uint32_t>((k * 7) % groups.size());
            T* buf = groups[grp].momentum != 0 ? v[k].data() : nullptr;
            spans.push_back({w[k].data(), g[k].data(), buf, sizes[k], k % 4 == 1, grp});
        }
        Parallel par;
        par.num_threads = threads;
        par.grain = 500;
        minimalsgd::multi_tensor_sgd_step(spans.data(), spans.size(), groups.data(), groups.size(), T(0.75), par);
        bool exact = true;
        for (std::size_t k = 0; k < sizes.size(); ++k) {
            same_order_step(w_ref[k], g[k], v_ref[k], groups[spans[k].group], k % 4 == 1, 0.75);
            exact = exact && w_ref[k] == w[k] && v_ref[k] == v[k];
        }
        CHECK_MSG(exact, "threads=" + std::to_string(threads));
    }
    // A group index out of range is refused before anything is written.
    std::vector<T> w1 = {1, 2}, g1 = {3, 4}, v1 = {5, 6};
    const minimalsgd::TensorSpan<T> ok{w1.data(), g1.data(), v1.data(), 2, false, 0};
    const minimalsgd::TensorSpan<T> bad{w1.data(), g1.data(), v1.data(), 2, false, 4};
    const minimalsgd::TensorSpan<T> both[] = {ok, bad};
    CHECK_THROWS(minimalsgd::multi_tensor_sgd_step(both, 2, groups.data(), groups.size()));
    CHECK(w1[0] == 1 && w1[1] == 2 && v1[0] == 5 && v1[1] == 6);
}

TEST_CASE(per_tensor_options_float) { check_groups<float>(); }
TEST_CASE(per_tensor_options_double) { check_groups<double>(); }

TEST_CASE(sum_of_squares_matches_oracle_and_is_thread_independent) {
    std::mt19937_64 rng(3);
    for (std::size_t n : kSizes) {
        const std::vector<float> x = randn<float>(n, rng);
        double oracle = 0;
        for (float e : x) oracle += double(e) * double(e);
        Parallel one, many;
        one.num_threads = 1;
        many.num_threads = 2;
        many.grain = 16;
        const double a = minimalsgd::sum_of_squares(x.data(), n, one);
        const double b = minimalsgd::sum_of_squares(x.data(), n, many);
        CHECK_MSG(std::fabs(a - oracle) <= 1e-12 * (1 + oracle), "n=" + std::to_string(n));
        CHECK_MSG(a == b, "n=" + std::to_string(n));
    }
    std::vector<double> big = randn<double>(300000, rng), small = randn<double>(5, rng);
    const minimalsgd::ConstSpan<double> spans[] = {{big.data(), big.size()}, {small.data(), small.size()}};
    double oracle = 0;
    for (double e : big) oracle += e * e;
    for (double e : small) oracle += e * e;
    Parallel many;
    many.num_threads = 2;
    many.grain = 16;
    const double got = minimalsgd::multi_tensor_sum_of_squares(spans, 2, many);
    CHECK(std::fabs(got - oracle) <= 1e-12 * oracle);
    CHECK(got == minimalsgd::multi_tensor_sum_of_squares(spans, 2, Parallel{1, 16}));
}

TEST_CASE(validation_reports_and_writes_nothing) {
    CHECK(minimalsgd::validate(SgdOptions{0.1}).empty());
    CHECK(!minimalsgd::validate(SgdOptions{-0.1}).empty());
    CHECK(!minimalsgd::validate(SgdOptions{NAN}).empty());
    CHECK(!minimalsgd::validate(SgdOptions{0.1, -0.5}).empty());
    CHECK(!minimalsgd::validate(SgdOptions{0.1, INFINITY}).empty());
    CHECK(!minimalsgd::validate(SgdOptions{0.1, 0.9, NAN}).empty());
    CHECK(!minimalsgd::validate(SgdOptions{0.1, 0.9, 0, -1}).empty());
    CHECK(!minimalsgd::validate(SgdOptions{0.1, 0.0, 0, 0, true}).empty());  // nesterov without momentum
    CHECK(!minimalsgd::validate(SgdOptions{0.1, 0.9, 0.1, 0, true}).empty());  // nesterov with dampening
    CHECK(minimalsgd::validate(SgdOptions{0.1, 0.0, 0, 0, true}).find("nesterov") != std::string::npos);

    std::vector<float> w = {1, 2}, g = {3, 4}, v = {5, 6};
    CHECK_THROWS(minimalsgd::sgd_step(w.data(), g.data(), v.data(), 2, SgdOptions{-1.0}));
    CHECK_THROWS(minimalsgd::sgd_step(w.data(), g.data(), static_cast<float*>(nullptr), 2, SgdOptions{0.1, 0.9}));
    CHECK(w[0] == 1 && w[1] == 2 && v[0] == 5 && v[1] == 6);
    // No momentum: the buffer may be null.
    minimalsgd::sgd_step(w.data(), g.data(), static_cast<float*>(nullptr), 2, SgdOptions{0.5});
    CHECK(w[0] == 1 - 0.5f * 3 && w[1] == 2 - 0.5f * 4);
}

TEST_CASE(isa_detection) {
    CHECK(minimalsgd::cpu_supports(minimalsgd::Isa::baseline));
    const minimalsgd::Isa best = minimalsgd::best_isa();
    CHECK(minimalsgd::cpu_supports(best));
    minimalsgd::Isa parsed;
    CHECK(minimalsgd::parse_isa(minimalsgd::isa_name(best), &parsed) && parsed == best);
    CHECK(!minimalsgd::parse_isa("sse9", &parsed));
    CHECK(!minimalsgd::parse_isa(nullptr, &parsed));
}

// The processor CMake built for (MINIMALSGD_TEST_PROCESSOR, from cmake/minimalsgdProcessor.cmake)
// and the one the compiler's predefined macros name (config.hpp) must agree, and only x86-64 has
// instruction sets beyond the baseline.
TEST_CASE(processor_macros_match_the_build) {
    const std::string cmake_says = MINIMALSGD_TEST_PROCESSOR;
    const std::string processor = minimalsgd::processor_name();
    const std::string simd = minimalsgd::baseline_simd();
    CHECK_MSG(processor == cmake_says, processor + " vs CMake's " + cmake_says);
    CHECK((MINIMALSGD_X86_64 == 1) == (processor == "x86_64"));
    CHECK((MINIMALSGD_AARCH64 == 1) == (processor == "aarch64"));
    if (processor == "x86_64") {
        CHECK(simd == "SSE2");
    } else {
        CHECK(!minimalsgd::cpu_supports(minimalsgd::Isa::avx2));
        CHECK(!minimalsgd::cpu_supports(minimalsgd::Isa::avx512));
        CHECK(!minimalsgd::cpu_supports(minimalsgd::Isa::avx512_bf16));
        CHECK(minimalsgd::best_isa() == minimalsgd::Isa::baseline);
    }
    if (processor == "aarch64") {
        CHECK(simd == "NEON");
    }
}

TEST_CASE(version_macros) {
    const std::string v = std::to_string(MINIMALSGD_VERSION_MAJOR) + "." + std::to_string(MINIMALSGD_VERSION_MINOR) + "." +
                          std::to_string(MINIMALSGD_VERSION_PATCH);
    CHECK(v == MINIMALSGD_VERSION_STRING);
}

// --digest: a hash of the bits the kernels produce on fixed inputs, in parts (--digest-parts
// prints each part's own hash, to tell which part differs):
//   sgd_float, sgd_double     every SGD option set (momentum, nesterov, dampening, weight decay,
//                             maximize), first and later steps, every size of kSizes, 1 and 2
//                             threads, three steps each, and the sums of squares of the grads;
//   adam_float, adam_double   Adam and AdamW (no, coupled and decoupled weight decay), AMSGrad,
//                             maximize, both forms of the first-moment update (beta1 0.9: torch's
//                             lerp with a small weight; 0.3: its other form), two tensors per call
//                             at different step counts, a grad scale;
//   sgd_<16-bit>_<buffer>_<rounding>   bfloat16 and float16 storage with a momentum buffer of the
//                             same type or float32, rounded to nearest or stochastically (two
//                             tensors per call with their own keys, a seed and step of 64 bits,
//                             thread chunks that start inside a tensor), every SGD option set, and
//                             the sums of squares of the 16-bit grads;
//   edges_<16-bit>_<buffer>   one first step of every option set and both roundings on values that
//                             take the special lanes: subnormal results (float32 subnormals for
//                             bfloat16, float16 subnormals), float16 overflow to infinity, infinite
//                             and NaN (quiet, with a payload) grads.
// The inputs are made from integers only, so they are the same bits on every processor.
// .ci/aarch64.sh compares the digest of an x86-64 build with an aarch64 build's run under qemu, and
// ctest's test_core_same_digest compares the builds for each x86-64 kernel set this CPU runs: the
// kernels must agree bit for bit across instruction sets and processors (DESIGN.md). No NaN is
// created from non-NaN operands (inf - inf): the default NaN's sign differs between x86 and ARM;
// and no two different NaNs meet in one operation: which one it returns is the compiler's choice.
struct Fnv1a {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    template <class T>
    void add(const T* p, std::size_t n) {
        const auto* b = reinterpret_cast<const unsigned char*>(p);
        for (std::size_t i = 0; i < n * sizeof(T); ++i) {
            h = (h ^ b[i]) * 0x100000001b3ULL;
        }
    }
};

template <class T>
std::vector<T> exact_inputs(std::size_t n, std::mt19937_64& rng) {
    std::vector<T> out(n);
    for (auto& x : out) {
        // A multiple of 2^-52 in [-1, 1): exact in double, rounded once (IEEE, to nearest) to T.
        const auto k = static_cast<std::int64_t>(rng() >> 11) - (std::int64_t(1) << 52);
        x = static_cast<T>(std::ldexp(static_cast<double>(k), -52));
    }
    return out;
}

// Sizes of the Adam and 16-bit parts: around the 8/16/32-lane vector bodies and the 256-element
// blocks of the 16-bit loop; two threads split every call above the grain of 64 (inside a tensor).
const std::vector<std::size_t> kDigestSizes = {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 63, 65, 255, 256, 257, 1000, 4099};

template <class T>
void digest_sgd(Fnv1a& f, std::mt19937_64& rng) {
    for (const SgdOptions& o : all_options()) {
        for (std::size_t n : kSizes) {
            for (int threads : {1, 2}) {
                Parallel par;
                par.num_threads = threads;
                par.grain = 64;
                std::vector<T> w = exact_inputs<T>(n, rng), v(n, T(0));
                for (int step = 0; step < 3; ++step) {
                    const std::vector<T> g = exact_inputs<T>(n, rng);
                    const minimalsgd::TensorSpan<T> span{w.data(), g.data(), v.data(), n, step == 0};
                    minimalsgd::multi_tensor_sgd_step(&span, 1, o, T(0.75), par);
                    const minimalsgd::ConstSpan<T> gs{g.data(), n};
                    const double ss = minimalsgd::multi_tensor_sum_of_squares(&gs, 1, par);
                    f.add(&ss, 1);
                }
                f.add(w.data(), n);
                f.add(v.data(), n);
            }
        }
    }
}

// Adam/AdamW (square root and division, both correctly rounded in IEEE arithmetic; the bias
// corrections go through std::pow, whose last bit could differ between C libraries).
template <class T>
void digest_adam(Fnv1a& f, std::mt19937_64& rng) {
    enum { kNone, kCoupled, kDecoupled };
    for (bool amsgrad : {false, true}) {
        for (int decay : {kNone, kCoupled, kDecoupled}) {
            for (bool maximize : {false, true}) {
                for (double beta1 : {0.9, 0.3}) {
                    minimalsgd::AdamOptions o;
                    o.lr = 0.01;
                    o.beta1 = beta1;
                    o.amsgrad = amsgrad;
                    o.maximize = maximize;
                    o.decoupled = decay == kDecoupled;
                    o.weight_decay = decay == kNone ? 0.0 : 0.01;
                    for (std::size_t n : kDigestSizes) {
                        const std::size_t sizes[2] = {n, 33};
                        std::vector<T> w[2], m[2], v[2], vmax[2];
                        for (int k = 0; k < 2; ++k) {
                            w[k] = exact_inputs<T>(sizes[k], rng);
                            m[k].assign(sizes[k], T(0));
                            v[k].assign(sizes[k], T(0));
                            vmax[k].assign(sizes[k], T(0));
                        }
                        Parallel par;
                        par.num_threads = 2;
                        par.grain = 64;
                        for (std::int64_t step = 1; step <= 3; ++step) {
                            std::vector<T> g[2];
                            minimalsgd::AdamSpan<T> spans[2];
                            for (int k = 0; k < 2; ++k) {
                                g[k] = exact_inputs<T>(sizes[k], rng);
                                // The second tensor joined five steps earlier: its own bias corrections.
                                spans[k] = {w[k].data(), g[k].data(), m[k].data(), v[k].data(),
                                            amsgrad ? vmax[k].data() : nullptr, sizes[k], step + 5 * k, 0};
                            }
                            minimalsgd::multi_tensor_adam_step(spans, 2, o, T(0.75), par);
                        }
                        for (int k = 0; k < 2; ++k) {
                            f.add(w[k].data(), sizes[k]);
                            f.add(m[k].data(), sizes[k]);
                            f.add(v[k].data(), sizes[k]);
                            if (amsgrad) f.add(vmax[k].data(), sizes[k]);
                        }
                    }
                }
            }
        }
    }
}

// 16-bit inputs: exact_inputs<float> times 2^e, e drawn per element from `exps`, rounded to
// nearest (bit for bit as NumPy and ml_dtypes round).
template <class S>
std::vector<S> half_inputs(std::size_t n, std::mt19937_64& rng, const std::vector<int>& exps) {
    const std::vector<float> x = exact_inputs<float>(n, rng);
    std::vector<S> out(n);
    for (std::size_t i = 0; i < n; ++i) {
        const int e = exps[static_cast<std::size_t>(rng() % exps.size())];
        out[i] = minimalsgd::round_nearest<S>(std::ldexp(x[i], e));
    }
    return out;
}

// A buffer of the value's type S or float32, from exact inputs.
template <class S, class B>
std::vector<B> buffer_inputs(std::size_t n, std::mt19937_64& rng, const std::vector<int>& exps) {
    if constexpr (std::is_same<B, float>::value) {
        std::vector<float> x = exact_inputs<float>(n, rng);
        for (auto& e : x) e = std::ldexp(e, exps[static_cast<std::size_t>(rng() % exps.size())]);
        return x;
    } else {
        return half_inputs<S>(n, rng, exps);
    }
}


template <class S, class B>
void digest_half(Fnv1a& f, std::mt19937_64& rng, bool stochastic) {
    const std::vector<int> exps = {-6, -2, 0, 3};  // moderate magnitudes: nothing overflows in 3 steps
    for (SgdOptions o : all_options()) {
        o.stochastic_rounding = stochastic;
        o.seed = 0x9e3779b97f4a7c15ull;
        for (std::size_t n : kDigestSizes) {
            for (int threads : {1, 2}) {
                Parallel par;
                par.num_threads = threads;
                par.grain = 64;  // two threads split the call inside the first tensor (index0 != 0)
                const std::size_t sizes[2] = {n, 37};
                const std::uint64_t keys[2] = {7, (std::uint64_t(1) << 40) + 3};
                std::vector<S> w[2];
                std::vector<B> v[2];
                for (int k = 0; k < 2; ++k) {
                    w[k] = half_inputs<S>(sizes[k], rng, exps);
                    v[k] = buffer_inputs<S, B>(sizes[k], rng, exps);  // not read on the first step
                }
                for (std::uint64_t step = 0; step < 3; ++step) {
                    o.step = (std::uint64_t(1) << 33) + step;  // the high bits of the step reach the key
                    std::vector<S> g[2];
                    minimalsgd::TensorSpan<S, B> spans[2];
                    for (int k = 0; k < 2; ++k) {
                        g[k] = half_inputs<S>(sizes[k], rng, exps);
                        spans[k] = {w[k].data(), g[k].data(), o.momentum != 0 ? v[k].data() : nullptr, sizes[k],
                                    step == 0, 0, keys[k]};
                    }
                    minimalsgd::multi_tensor_sgd_step(spans, 2, o, 0.75f, par);
                    const minimalsgd::ConstSpan<S> gs[2] = {{g[0].data(), sizes[0]}, {g[1].data(), sizes[1]}};
                    const double ss = minimalsgd::multi_tensor_sum_of_squares(gs, 2, par);
                    f.add(&ss, 1);
                }
                for (int k = 0; k < 2; ++k) {
                    f.add(w[k].data(), sizes[k]);
                    if (o.momentum != 0) f.add(v[k].data(), sizes[k]);
                }
            }
        }
    }
}

// The special lanes of the conversions, in one first step (no second step: it could make inf - inf).
template <class S, class B>
void digest_half_edges(Fnv1a& f, std::mt19937_64& rng) {
    constexpr bool kBf16 = std::is_same<S, minimalsgd::bfloat16_t>::value;
    // bfloat16: float32 subnormals (2^-126 and below) and normal magnitudes; float16: its
    // subnormals (below 2^-14) and normal magnitudes up to 2^15.
    const std::vector<int> exps = kBf16 ? std::vector<int>{-140, -130, -127, 0} : std::vector<int>{-22, -16, -14, 0, 15};
    const std::uint16_t nan_bits = kBf16 ? 0x7fc5 : 0x7e05;  // quiet NaNs with a payload
    const std::uint16_t inf_bits = kBf16 ? 0x7f80 : 0x7c00;
    // Near the largest finite value (bfloat16: 3.39e38, float16: 65504): a grad of the other sign
    // pushes the result over it (to infinity), or, for `edge`, to just below the rounding threshold.
    const float big = kBf16 ? 3.38e38f : 65000.0f;
    const float edge = kBf16 ? 3.389e38f : 65504.0f;
    for (bool stochastic : {false, true}) {
        for (SgdOptions o : all_options()) {
            o.stochastic_rounding = stochastic;
            o.seed = 12345;
            o.step = 77;
            for (std::size_t n : {std::size_t(1), std::size_t(17), std::size_t(300)}) {
                std::vector<S> w = half_inputs<S>(n, rng, exps), g = half_inputs<S>(n, rng, exps);
                std::vector<B> v(n);
                // One NaN per tensor, negative in the 17-element ones: where two NaNs meet (a sum of
                // squares), which one an addition returns depends on the order the compiler chose for
                // its operands, so they must be the same NaN.
                const std::uint16_t nan = static_cast<std::uint16_t>(n == 17 ? nan_bits | 0x8000 : nan_bits);
                for (std::size_t i = 0; i < n; ++i) {
                    const auto pick = rng() % 16;
                    const float sign = (rng() & 1) ? -1.0f : 1.0f;
                    // Grads: some infinite, some NaN (values stay finite: no inf - inf).
                    if (pick == 0) g[i].bits = static_cast<std::uint16_t>(sign < 0 ? inf_bits | 0x8000 : inf_bits);
                    if (pick == 1) g[i].bits = nan;
                    if (pick == 2) {
                        w[i] = minimalsgd::round_nearest<S>(sign * big);
                        g[i] = minimalsgd::round_nearest<S>(-sign * big * 0.5f);
                    }
                    if (pick == 3) {
                        w[i] = minimalsgd::round_nearest<S>(sign * edge);
                        g[i] = minimalsgd::round_nearest<S>(-sign * edge * (kBf16 ? 1e-3f : 4.6e-3f));
                    }
                }
                Parallel par;
                par.num_threads = 2;
                par.grain = 64;
                const minimalsgd::TensorSpan<S, B> span{w.data(), g.data(), o.momentum != 0 ? v.data() : nullptr, n, true,
                                                        0, 5};
                minimalsgd::multi_tensor_sgd_step(&span, 1, o, 1.0f, par);
                const minimalsgd::ConstSpan<S> gs{g.data(), n};
                const double ss = minimalsgd::multi_tensor_sum_of_squares(&gs, 1, par);
                f.add(&ss, 1);
                f.add(w.data(), n);
                if (o.momentum != 0) f.add(v.data(), n);
            }
        }
    }
}

using minimalsgd::bfloat16_t;
using minimalsgd::float16_t;

struct DigestPart {
    const char* name;
    void (*run)(Fnv1a&, std::mt19937_64&);
};

const DigestPart kDigestParts[] = {
    {"sgd_float", digest_sgd<float>},
    {"sgd_double", digest_sgd<double>},
    {"adam_float", digest_adam<float>},
    {"adam_double", digest_adam<double>},
    {"sgd_bfloat16_bfloat16_nearest", [](Fnv1a& f, std::mt19937_64& r) { digest_half<bfloat16_t, bfloat16_t>(f, r, false); }},
    {"sgd_bfloat16_bfloat16_stochastic", [](Fnv1a& f, std::mt19937_64& r) { digest_half<bfloat16_t, bfloat16_t>(f, r, true); }},
    {"sgd_bfloat16_float_nearest", [](Fnv1a& f, std::mt19937_64& r) { digest_half<bfloat16_t, float>(f, r, false); }},
    {"sgd_bfloat16_float_stochastic", [](Fnv1a& f, std::mt19937_64& r) { digest_half<bfloat16_t, float>(f, r, true); }},
    {"sgd_float16_float16_nearest", [](Fnv1a& f, std::mt19937_64& r) { digest_half<float16_t, float16_t>(f, r, false); }},
    {"sgd_float16_float16_stochastic", [](Fnv1a& f, std::mt19937_64& r) { digest_half<float16_t, float16_t>(f, r, true); }},
    {"sgd_float16_float_nearest", [](Fnv1a& f, std::mt19937_64& r) { digest_half<float16_t, float>(f, r, false); }},
    {"sgd_float16_float_stochastic", [](Fnv1a& f, std::mt19937_64& r) { digest_half<float16_t, float>(f, r, true); }},
    {"edges_bfloat16_bfloat16", digest_half_edges<bfloat16_t, bfloat16_t>},
    {"edges_bfloat16_float", digest_half_edges<bfloat16_t, float>},
    {"edges_float16_float16", digest_half_edges<float16_t, float16_t>},
    {"edges_float16_float", digest_half_edges<float16_t, float>},
};

// Each part from its own generator (seeded by its position), so that a part's hash does not
// depend on the others; the digest is the hash of the parts' hashes in order.
double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int print_digest(bool parts) {
    Fnv1a all;
    std::uint64_t seed = 2024;
    for (const DigestPart& p : kDigestParts) {
        const auto t0 = std::chrono::steady_clock::now();
        Fnv1a f;
        std::mt19937_64 rng(seed++);
        p.run(f, rng);
        all.add(&f.h, 1);
        if (parts) std::printf("%016llx %s (%.2f s)\n", static_cast<unsigned long long>(f.h), p.name, seconds_since(t0));
    }
    std::printf("%016llx%s\n", static_cast<unsigned long long>(all.h), parts ? " digest" : "");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 2 && std::string(argv[1]) == "--digest") {
        return print_digest(false);
    }
    if (argc == 2 && std::string(argv[1]) == "--digest-parts") {
        return print_digest(true);
    }
    return check::run_all();
}
