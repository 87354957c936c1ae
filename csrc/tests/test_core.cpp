// Tests of the header-only core against a plain float64 oracle written here.
#include <minimalsgd/minimalsgd.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
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

// --digest: a hash of the bits the kernels produce on fixed inputs (SGD: every option set and
// size, float and double, one and two threads, three steps each, and the sums of squares; the
// 16-bit SGD kernels, both roundings; Adam
// and AdamW with and without AMSGrad and weight decay). The inputs
// are made from integers only, so they are the same bits on every processor; .ci/aarch64.sh
// compares this digest from an x86-64 build with one from an aarch64 build run under qemu: the
// kernels must agree bit for bit across processors (DESIGN.md: ISA-independent results).
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

template <class T>
void digest_of(Fnv1a& f) {
    std::mt19937_64 rng(2024);
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
    // Adam/AdamW (square root and division, both correctly rounded in IEEE arithmetic; the bias
    // corrections go through std::pow, whose last bit could differ between C libraries).
    for (bool amsgrad : {false, true}) {
        for (bool decoupled : {false, true}) {
            for (double wd : {0.0, 0.01}) {
                for (std::size_t n : kSizes) {
                    minimalsgd::AdamOptions o;
                    o.lr = 0.01;
                    o.amsgrad = amsgrad;
                    o.decoupled = decoupled;
                    o.weight_decay = wd;
                    std::vector<T> w = exact_inputs<T>(n, rng), m(n, T(0)), v(n, T(0)), vmax(n, T(0));
                    for (std::int64_t step = 1; step <= 3; ++step) {
                        const std::vector<T> g = exact_inputs<T>(n, rng);
                        const minimalsgd::AdamSpan<T> span{w.data(), g.data(), m.data(), v.data(),
                                                           amsgrad ? vmax.data() : nullptr, n, step, 0};
                        Parallel par;
                        par.num_threads = 2;
                        par.grain = 64;
                        minimalsgd::multi_tensor_adam_step(&span, 1, o, T(0.75), par);
                    }
                    f.add(w.data(), n);
                    f.add(m.data(), n);
                    f.add(v.data(), n);
                }
            }
        }
    }
}

// The 16-bit kernels (bfloat16 and float16 values, buffers of the same type or float; rounding to
// nearest and stochastic): inputs of exact_inputs() rounded to the type, every fourth one scaled
// by 2^-20 (float16's subnormal range, where both roundings take their own code). No infinity or
// NaN: a NaN made by arithmetic (inf - inf) has a different sign on x86 and ARM.
template <class S, class B>
void digest_half(Fnv1a& f) {
    std::mt19937_64 rng(2025);
    const auto inputs = [&](std::size_t n) {
        std::vector<float> x = exact_inputs<float>(n, rng);
        for (std::size_t i = 0; i < n; i += 4) x[i] = std::ldexp(x[i], -20);
        return x;
    };
    const std::size_t sizes[] = {0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257, 1000, 4099};
    for (const SgdOptions& base : all_options()) {
        for (bool sr : {false, true}) {
            SgdOptions o = base;
            o.stochastic_rounding = sr;
            o.seed = 7;
            for (std::size_t n : sizes) {
                for (int threads : {1, 2}) {
                    Parallel par;
                    par.num_threads = threads;
                    par.grain = 64;
                    std::vector<S> w(n);
                    std::vector<B> v(n);
                    const std::vector<float> w0 = inputs(n);
                    for (std::size_t i = 0; i < n; ++i) w[i] = minimalsgd::round_nearest<S>(w0[i]);
                    for (int step = 0; step < 3; ++step) {
                        const std::vector<float> g0 = inputs(n);
                        std::vector<S> g(n);
                        for (std::size_t i = 0; i < n; ++i) g[i] = minimalsgd::round_nearest<S>(g0[i]);
                        o.step = static_cast<std::uint64_t>(step);
                        const minimalsgd::TensorSpan<S, B> span{w.data(), g.data(), v.data(), n, step == 0, 0, 5};
                        minimalsgd::multi_tensor_sgd_step(&span, 1, o, 0.75f, par);
                        const minimalsgd::ConstSpan<S> gs{g.data(), n};
                        const double ss = minimalsgd::multi_tensor_sum_of_squares(&gs, 1, par);
                        f.add(&ss, 1);
                    }
                    f.add(w.data(), n);
                    f.add(v.data(), n);
                }
            }
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 2 && std::string(argv[1]) == "--digest") {
        Fnv1a f;
        digest_of<float>(f);
        digest_of<double>(f);
        digest_half<minimalsgd::bfloat16_t, minimalsgd::bfloat16_t>(f);
        digest_half<minimalsgd::bfloat16_t, float>(f);
        digest_half<minimalsgd::float16_t, minimalsgd::float16_t>(f);
        digest_half<minimalsgd::float16_t, float>(f);
        std::printf("%016llx\n", static_cast<unsigned long long>(f.h));
        return 0;
    }
    return check::run_all();
}
