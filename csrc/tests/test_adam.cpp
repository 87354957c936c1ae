// Tests of the Adam/AdamW core against a plain float64 oracle and a same-order oracle written here.
#include <minimalsgd/minimalsgd.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "check.hpp"

namespace {

using minimalsgd::AdamOptions;
using minimalsgd::Parallel;

// torch.optim.Adam / AdamW as mathematics, in double, element by element (the textbook order,
// not the kernel's): the kernel must stay within float rounding of it.
void oracle_adam(std::vector<double>& w, const std::vector<double>& grad, std::vector<double>& m,
                 std::vector<double>& v, std::vector<double>& vmax, const AdamOptions& o, std::int64_t t,
                 double scale) {
    const double bc1 = 1 - std::pow(o.beta1, double(t)), bc2 = 1 - std::pow(o.beta2, double(t));
    for (std::size_t i = 0; i < w.size(); ++i) {
        double g = grad[i] * scale;
        if (o.maximize) g = -g;
        if (o.weight_decay != 0) {
            if (o.decoupled) {
                w[i] = w[i] - o.lr * o.weight_decay * w[i];
            } else {
                g = g + o.weight_decay * w[i];
            }
        }
        m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
        v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
        double vhat = v[i];
        if (o.amsgrad) {
            vmax[i] = std::max(vmax[i], v[i]);
            vhat = vmax[i];
        }
        w[i] = w[i] - o.lr * (m[i] / bc1) / (std::sqrt(vhat / bc2) + o.eps);
    }
}

// The kernel's order of operations in T with T-rounded coefficients (adam.hpp's formula): the
// kernel, built with -ffp-contract=off, must match it bit for bit.
template <class T>
void same_order_adam(std::vector<T>& w, const std::vector<T>& grad, std::vector<T>& m, std::vector<T>& v,
                     std::vector<T>& vmax, const AdamOptions& o, std::int64_t t, double scale) {
    const double bc1 = 1 - std::pow(o.beta1, double(t)), bc2 = 1 - std::pow(o.beta2, double(t));
    const T s = o.maximize ? T(-scale) : T(scale);
    const T w1 = T(1 - o.beta1);
    const bool small = std::fabs(w1) < T(0.5);
    const T lerp = small ? w1 : T(T(1) - w1);
    const T wd = T(o.weight_decay), decay = T(1 - o.lr * o.weight_decay), b2 = T(o.beta2), omb2 = T(1 - o.beta2);
    const T bc2s = T(std::pow(bc2, 0.5)), eps = T(o.eps), step_size = T(o.lr / bc1);
    for (std::size_t i = 0; i < w.size(); ++i) {
        T g = grad[i] * s;
        T wi = w[i];
        if (o.weight_decay != 0 && o.decoupled) wi = wi * decay;
        if (o.weight_decay != 0 && !o.decoupled) g = g + wd * wi;
        const T d = g - m[i];
        m[i] = small ? T(m[i] + lerp * d) : T(g - d * lerp);
        v[i] = v[i] * b2 + (omb2 * g) * g;
        T vv = v[i];
        if (o.amsgrad) {
            vmax[i] = vmax[i] >= vv ? vmax[i] : vv;
            vv = vmax[i];
        }
        const T denom = std::sqrt(vv) / bc2s + eps;
        w[i] = wi - (step_size * m[i]) / denom;
    }
}

template <class T>
std::vector<T> randn(std::size_t n, std::mt19937_64& rng, double sd = 1.0) {
    std::normal_distribution<double> d(0.0, sd);
    std::vector<T> out(n);
    for (auto& x : out) x = static_cast<T>(d(rng));
    return out;
}

std::vector<AdamOptions> all_adam_options() {
    std::vector<AdamOptions> out;
    for (double beta1 : {0.9, 0.3})  // 0.3: torch's lerp takes its other branch (weight >= 0.5)
        for (double wd : {0.0, 0.05})
            for (bool decoupled : {false, true})
                for (bool amsgrad : {false, true})
                    for (bool maximize : {false, true}) {
                        if (wd == 0 && decoupled) continue;
                        AdamOptions o;
                        o.lr = 0.01;
                        o.beta1 = beta1;
                        o.beta2 = 0.99;
                        o.eps = 1e-6;
                        o.weight_decay = wd;
                        o.decoupled = decoupled;
                        o.amsgrad = amsgrad;
                        o.maximize = maximize;
                        out.push_back(o);
                    }
    return out;
}

std::string describe(const AdamOptions& o) {
    return "beta1=" + std::to_string(o.beta1) + " wd=" + std::to_string(o.weight_decay) +
           " decoupled=" + std::to_string(o.decoupled) + " amsgrad=" + std::to_string(o.amsgrad) +
           " maximize=" + std::to_string(o.maximize);
}

const std::vector<std::size_t> kAdamSizes = {0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000,
                                              32767, 32768, 32769, 100003};

template <class T>
void check_adam_against_oracles(const char* label) {
    std::mt19937_64 rng(42);
    // Relative bound per step against the float64 oracle: a few ulps of T, amplified by the
    // division by sqrt(v) (whose relative error is half of v's) and the bias correction.
    const double tol = std::is_same<T, float>::value ? 3e-5 : 1e-13;
    std::size_t which = 0;
    for (const AdamOptions& o : all_adam_options()) {
        const double scale = which++ % 3 == 0 ? 1.0 : 0.37;  // both, mixed across the option sets
        for (std::size_t n : kAdamSizes) {
            std::vector<T> w = randn<T>(n, rng), m(n, T(0)), v(n, T(0)), vm(n, T(0));
            std::vector<T> w2 = w, m2 = m, v2 = v, vm2 = vm;
            bool exact = true, close = true;
            for (std::int64_t t = 1; t <= 3; ++t) {
                const std::vector<T> g = randn<T>(n, rng);
                // The oracle starts from the kernel's state of this step: errors do not compound.
                std::vector<double> wd(w.begin(), w.end()), md(m.begin(), m.end()), vd(v.begin(), v.end()),
                    vmd(vm.begin(), vm.end());
                const std::vector<double> gd(g.begin(), g.end());
                minimalsgd::adam_step(w.data(), g.data(), m.data(), v.data(), o.amsgrad ? vm.data() : nullptr, n,
                                      o, t, static_cast<T>(scale));
                same_order_adam(w2, g, m2, v2, vm2, o, t, scale);
                oracle_adam(wd, gd, md, vd, vmd, o, t, static_cast<double>(static_cast<T>(scale)));
                for (std::size_t i = 0; i < n; ++i) {
                    exact = exact && w[i] == w2[i] && m[i] == m2[i] && v[i] == v2[i] &&
                            (!o.amsgrad || vm[i] == vm2[i]);
                    // Each bound: a few ulps of T of the operands (|m_hat / sqrt(v_hat)| is about 1).
                    close = close && std::fabs(double(w[i]) - wd[i]) <= tol * (std::fabs(wd[i]) + 1) &&
                            std::fabs(double(m[i]) - md[i]) <= tol * (std::fabs(md[i]) + std::fabs(gd[i])) &&
                            std::fabs(double(v[i]) - vd[i]) <= tol * (vd[i] + gd[i] * gd[i]);
                }
            }
            const std::string what = std::string(label) + " n=" + std::to_string(n) + " " + describe(o) +
                                     " scale=" + std::to_string(scale);
            CHECK_MSG(exact, what);
            CHECK_MSG(close, what);
        }
    }
}

TEST_CASE(adam_float_matches_oracles) { check_adam_against_oracles<float>("float"); }
TEST_CASE(adam_double_matches_oracles) { check_adam_against_oracles<double>("double"); }

// Torch's first AdamW step from zero moments on a known case: m = 0.1 g, v = 0.001 g^2, the
// bias corrections cancel, so w1 = w0 (1 - lr wd) - lr * g / (|g| + eps') with eps' = eps / 1.
TEST_CASE(adam_first_step_is_a_sign_step) {
    AdamOptions o;
    o.lr = 0.5;
    o.eps = 0;
    o.weight_decay = 0.1;
    o.decoupled = true;
    std::vector<double> w = {1, -2, 3}, g = {0.25, -4, 0}, m(3, 0), v(3, 0);
    minimalsgd::adam_step(w.data(), g.data(), m.data(), v.data(), static_cast<double*>(nullptr), 3, o, 1);
    CHECK(std::fabs(w[0] - (1 * 0.95 - 0.5)) < 1e-12);
    CHECK(std::fabs(w[1] - (-2 * 0.95 + 0.5)) < 1e-12);
    CHECK(std::isnan(w[2]));  // 0/0 with eps = 0, as torch gives
    CHECK(g[0] == 0.25 && g[1] == -4);  // the grad is never written
}

TEST_CASE(amsgrad_keeps_the_maximum_and_propagates_nan) {
    AdamOptions o;
    o.amsgrad = true;
    std::vector<float> w = {1, 1, 1}, g = {0, 0, 0}, m = {0, 0, 0}, v = {4, 1, NAN}, vm = {1, 9, 2};
    minimalsgd::adam_step(w.data(), g.data(), m.data(), v.data(), vm.data(), 3, o, 5);
    CHECK(vm[0] == v[0] && vm[1] == 9 && std::isnan(vm[2]));
    std::vector<float> vm_nan = {NAN, 0, 0}, v2 = {1, 1, 1};
    minimalsgd::adam_step(w.data(), g.data(), m.data(), v2.data(), vm_nan.data(), 3, o, 5);
    CHECK(std::isnan(vm_nan[0]));
}

// Many tensors, groups with different options and per-tensor steps, any thread count: each
// tensor exactly as a call of its own.
template <class T>
void check_adam_multi_tensor() {
    std::mt19937_64 rng(7);
    const std::vector<AdamOptions> groups = all_adam_options();
    std::vector<std::size_t> sizes;
    for (int i = 0; i < 120; ++i) sizes.push_back(static_cast<std::size_t>(rng() % 700));
    sizes.push_back(70001);
    for (int threads : {1, 2, 3}) {
        std::vector<std::vector<T>> w, g, m, v, vm;
        std::vector<minimalsgd::AdamSpan<T>> spans;
        for (std::size_t k = 0; k < sizes.size(); ++k) {
            w.push_back(randn<T>(sizes[k], rng));
            g.push_back(randn<T>(sizes[k], rng));
            m.push_back(randn<T>(sizes[k], rng, 0.1));
            std::vector<T> sq = randn<T>(sizes[k], rng, 0.1);
            for (auto& x : sq) x = x * x;
            v.push_back(sq);
            vm.push_back(sq);
            for (auto& x : vm.back()) x = x * T(1.5);
        }
        auto w_ref = w, m_ref = m, v_ref = v, vm_ref = vm;
        for (std::size_t k = 0; k < sizes.size(); ++k) {
            const auto grp = static_cast<std::uint32_t>((k * 7) % groups.size());
            T* vmax = groups[grp].amsgrad ? vm[k].data() : nullptr;
            spans.push_back({w[k].data(), g[k].data(), m[k].data(), v[k].data(), vmax, sizes[k],
                             static_cast<std::int64_t>(1 + k % 4), grp});
        }
        Parallel par;
        par.num_threads = threads;
        par.grain = 1000;  // force the threaded path
        minimalsgd::multi_tensor_adam_step(spans.data(), spans.size(), groups.data(), groups.size(), T(0.75), par);
        bool exact = true;
        for (std::size_t k = 0; k < sizes.size(); ++k) {
            same_order_adam(w_ref[k], g[k], m_ref[k], v_ref[k], vm_ref[k], groups[spans[k].group], spans[k].step, 0.75);
            exact = exact && w_ref[k] == w[k] && m_ref[k] == m[k] && v_ref[k] == v[k] && vm_ref[k] == vm[k];
        }
        CHECK_MSG(exact, "threads=" + std::to_string(threads));
    }
}

TEST_CASE(adam_multi_tensor_float) { check_adam_multi_tensor<float>(); }
TEST_CASE(adam_multi_tensor_double) { check_adam_multi_tensor<double>(); }

TEST_CASE(adam_validation_reports_and_writes_nothing) {
    AdamOptions ok;
    CHECK(minimalsgd::validate(ok).empty());
    const auto bad = [&](auto change) {
        AdamOptions o = ok;
        change(o);
        return minimalsgd::validate(o);
    };
    CHECK(bad([](AdamOptions& o) { o.lr = -1e-3; }).find("lr") != std::string::npos);
    CHECK(bad([](AdamOptions& o) { o.lr = NAN; }).find("lr") != std::string::npos);
    CHECK(bad([](AdamOptions& o) { o.beta1 = 1.0; }).find("betas[0]") != std::string::npos);
    CHECK(bad([](AdamOptions& o) { o.beta1 = -0.1; }).find("betas[0]") != std::string::npos);
    CHECK(bad([](AdamOptions& o) { o.beta1 = NAN; }).find("betas[0]") != std::string::npos);
    CHECK(bad([](AdamOptions& o) { o.beta2 = 1.5; }).find("betas[1]") != std::string::npos);
    CHECK(bad([](AdamOptions& o) { o.eps = -1e-8; }).find("eps") != std::string::npos);
    CHECK(bad([](AdamOptions& o) { o.eps = INFINITY; }).find("eps") != std::string::npos);
    CHECK(bad([](AdamOptions& o) { o.weight_decay = -0.1; }).find("weight_decay") != std::string::npos);
    CHECK(bad([](AdamOptions& o) { o.weight_decay = INFINITY; }).find("weight_decay") != std::string::npos);
    CHECK(bad([](AdamOptions& o) { o.beta1 = 0.0; o.beta2 = 0.0; o.eps = 0.0; o.lr = 0.0; }).empty());

    std::vector<float> w = {1, 2}, g = {3, 4}, m = {5, 6}, v = {7, 8};
    AdamOptions neg = ok;
    neg.lr = -1;
    CHECK_THROWS(minimalsgd::adam_step(w.data(), g.data(), m.data(), v.data(), static_cast<float*>(nullptr), 2, neg, 1));
    CHECK_THROWS(minimalsgd::adam_step(w.data(), g.data(), m.data(), v.data(), static_cast<float*>(nullptr), 2, ok, 0));
    AdamOptions ams = ok;
    ams.amsgrad = true;
    CHECK_THROWS(minimalsgd::adam_step(w.data(), g.data(), m.data(), v.data(), static_cast<float*>(nullptr), 2, ams, 1));
    // A bad span after a good one: nothing is written, not even the good one.
    std::vector<float> w2 = {1, 2};
    const minimalsgd::AdamSpan<float> spans[] = {{w2.data(), g.data(), m.data(), v.data(), nullptr, 2, 1, 0},
                                                 {w.data(), g.data(), m.data(), v.data(), nullptr, 2, 1, 3}};
    CHECK_THROWS(minimalsgd::multi_tensor_adam_step(spans, 2, &ok, 1));
    CHECK(w[0] == 1 && w[1] == 2 && w2[0] == 1 && w2[1] == 2 && m[0] == 5 && m[1] == 6 && v[0] == 7 && v[1] == 8);
}

}  // namespace
