// minimalsgd: the fused Adam / AdamW step.
//
// The update (one definition for every backend; torch.optim.Adam / AdamW semantics, the
// single-tensor path of torch 2.13 in its order of operations). Per tensor, with t = its step
// count including this step (1 on the first step):
//
//     g  = grad * grad_scale
//     g  = -g                                       if maximize
//     w  = w * (1 - lr * weight_decay)              if decoupled (AdamW) and weight_decay != 0
//     g  = g + weight_decay * w                     if not decoupled (Adam) and weight_decay != 0
//     m  = m + (1 - beta1) * (g - m)                if 1 - beta1 < 0.5 (torch's lerp, "small weight")
//     m  = g - (g - m) * (1 - (1 - beta1))          otherwise
//     v  = v * beta2 + ((1 - beta2) * g) * g
//     vm = max(vm, v)  (NaN-propagating)            if amsgrad; then vm replaces v below
//     denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//     w  = w - ((lr / (1 - beta1^t)) * m) / denom
//
// The per-step scalars (1 - beta1^t, lr / (1 - beta1^t), (1 - beta2^t)^0.5, 1 - lr*weight_decay,
// 1 - beta1, 1 - beta2) are computed in double, as torch computes them in Python, and rounded to
// T once; 1 - (1 - beta1) is then computed in T, as torch's lerp does. Every element operation runs
// in T in the order above; a build with -ffp-contract=off (the Python module's) gives the same bits
// on every instruction set and the same bits as the NumPy backend. torch itself may fuse the
// multiply-adds of its vectorized lerp, addcmul and add (FMA); against torch the results agree to
// float rounding, not bit for bit.
//
// Memory: one pass. Reads w, grad, m, v (and vm with amsgrad) once, writes w, m, v (and vm) once:
// 28 bytes per float32 element (36 with amsgrad). The grad is never written. value, exp_avg,
// exp_avg_sq and max_exp_avg_sq must not overlap each other or any grad; grads may overlap each other.
//
// Vectorization: the loop has a square root and two divisions. GCC and Clang vectorize std::sqrt
// only when errno need not be set: build with -fno-math-errno (the Python module does; the results
// are the same either way, only the speed differs).
//
// Threads: as sgd.hpp: above Parallel::grain elements, OpenMP threads share the total element
// count of the call (chunks may span tensors); results do not depend on the thread count.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "config.hpp"

namespace minimalsgd {

/// Hyperparameters of one Adam/AdamW step, with the meaning of torch.optim.Adam (AdamW is
/// `decoupled = true`, torch's `decoupled_weight_decay`). torch's defaults, except weight_decay,
/// whose default differs between Adam (0) and AdamW (1e-2) and is 0 here.
struct AdamOptions {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0;
    bool amsgrad = false;
    bool maximize = false;
    bool decoupled = false;
};

/// What is wrong with `opts`, or an empty string when they are valid.
/// The rules are torch.optim.Adam's, plus finiteness: lr, eps and weight_decay are finite and
/// >= 0, beta1 and beta2 are in [0, 1).
inline std::string validate(const AdamOptions& opts) {
    if (!std::isfinite(opts.lr) || opts.lr < 0) {
        return "lr must be a finite number >= 0, got " + std::to_string(opts.lr);
    }
    if (!(opts.beta1 >= 0 && opts.beta1 < 1)) {
        return "betas[0] must be in [0, 1), got " + std::to_string(opts.beta1);
    }
    if (!(opts.beta2 >= 0 && opts.beta2 < 1)) {
        return "betas[1] must be in [0, 1), got " + std::to_string(opts.beta2);
    }
    if (!std::isfinite(opts.eps) || opts.eps < 0) {
        return "eps must be a finite number >= 0, got " + std::to_string(opts.eps);
    }
    if (!std::isfinite(opts.weight_decay) || opts.weight_decay < 0) {
        return "weight_decay must be a finite number >= 0, got " + std::to_string(opts.weight_decay);
    }
    return {};
}

/// Throws std::invalid_argument with the message of validate() when `opts` are invalid.
inline void check(const AdamOptions& opts) {
    std::string error = validate(opts);
    if (!error.empty()) {
        throw std::invalid_argument("minimalsgd: " + error);
    }
}

/// One tensor of a multi-tensor Adam step: `size` elements at `value`, `grad`, `exp_avg` (first
/// moment m), `exp_avg_sq` (second moment v) and `max_exp_avg_sq` (null unless its group has
/// amsgrad). `step` is the step this update makes, 1-based (1 on the first step: the moments
/// should then hold zeros, as torch initializes them), for the bias corrections. `group` is the
/// index of the tensor's hyperparameters in the options array of the call.
template <class T>
struct AdamSpan {
    T* value;
    const T* grad;
    T* exp_avg;
    T* exp_avg_sq;
    T* max_exp_avg_sq;
    std::size_t size;
    std::int64_t step;
    std::uint32_t group = 0;
};

inline namespace MINIMALSGD_TARGET_NAMESPACE {
namespace adam_detail {

/// The scalars of one (options, step) pair, rounded to T once.
template <class T>
struct Coefficients {
    T scale;      // grad_scale, negated for maximize
    T wd;         // weight_decay (Adam)
    T decay;      // 1 - lr * weight_decay (AdamW)
    T lerp;       // 1 - beta1 when < 0.5, else 1 - (1 - beta1) (torch's lerp: the coefficient of g - m)
    T beta2;      // beta2
    T one_m_b2;   // 1 - beta2
    T bc2_sqrt;   // (1 - beta2^t)^0.5
    T eps;        // eps
    T step_size;  // lr / (1 - beta1^t)
};

template <class T>
Coefficients<T> coefficients(const AdamOptions& o, std::int64_t step, double grad_scale) {
    const double t = static_cast<double>(step);
    const double bc1 = 1.0 - std::pow(o.beta1, t);
    const double bc2 = 1.0 - std::pow(o.beta2, t);
    const T w1 = T(1.0 - o.beta1);
    const bool small = std::fabs(w1) < T(0.5);
    return {o.maximize ? T(-grad_scale) : T(grad_scale),
            T(o.weight_decay),
            T(1.0 - o.lr * o.weight_decay),
            small ? w1 : T(T(1) - w1),
            T(o.beta2),
            T(1.0 - o.beta2),
            T(std::pow(bc2, 0.5)),
            T(o.eps),
            T(o.lr / bc1)};
}

enum class Decay { none, coupled, decoupled };

// NaN-propagating max (torch.maximum, numpy.maximum): a NaN in either operand gives NaN.
template <class T>
inline T nan_max(T a, T b) {
    return (a >= b || a != a) ? a : b;
}

// The fused loop. Options are template parameters, so each variant is a plain loop with no
// branches inside, which the compiler vectorizes.
template <class T, Decay D, bool Small, bool Amsgrad>
void fused_loop(T* MINIMALSGD_RESTRICT w, const T* MINIMALSGD_RESTRICT grad, T* MINIMALSGD_RESTRICT m_,
                T* MINIMALSGD_RESTRICT v_, T* MINIMALSGD_RESTRICT vmax, std::size_t n, Coefficients<T> c) {
    const T scale = c.scale, wd = c.wd, decay = c.decay, lerp = c.lerp, beta2 = c.beta2, one_m_b2 = c.one_m_b2,
            bc2_sqrt = c.bc2_sqrt, eps = c.eps, step_size = c.step_size;
    MINIMALSGD_SIMD
    for (std::size_t i = 0; i < n; ++i) {
        T g = grad[i] * scale;  // maximize is folded into the sign of scale: exact
        T wi = w[i];
        if constexpr (D == Decay::decoupled) {
            wi = wi * decay;
        }
        if constexpr (D == Decay::coupled) {
            g = g + wd * wi;
        }
        const T mi = m_[i];
        const T d = g - mi;
        T m;
        if constexpr (Small) {
            m = mi + lerp * d;
        } else {
            m = g - d * lerp;
        }
        m_[i] = m;
        T v = v_[i] * beta2 + (one_m_b2 * g) * g;
        v_[i] = v;
        if constexpr (Amsgrad) {
            v = nan_max(vmax[i], v);
            vmax[i] = v;
        }
        const T denom = std::sqrt(v) / bc2_sqrt + eps;
        w[i] = wi - (step_size * m) / denom;
    }
}

template <class T>
using LoopFn = void (*)(T*, const T*, T*, T*, T*, std::size_t, Coefficients<T>);

template <class T, Decay D>
LoopFn<T> select_amsgrad(bool small, bool amsgrad) {
    if (small) {
        return amsgrad ? &fused_loop<T, D, true, true> : &fused_loop<T, D, true, false>;
    }
    return amsgrad ? &fused_loop<T, D, false, true> : &fused_loop<T, D, false, false>;
}

/// The loop variant for `o`.
template <class T>
LoopFn<T> select_loop(const AdamOptions& o) {
    const bool small = std::fabs(T(1.0 - o.beta1)) < T(0.5);
    if (o.weight_decay == 0) {
        return select_amsgrad<T, Decay::none>(small, o.amsgrad);
    }
    if (o.decoupled) {
        return select_amsgrad<T, Decay::decoupled>(small, o.amsgrad);
    }
    return select_amsgrad<T, Decay::coupled>(small, o.amsgrad);
}

// Runs the elements [begin, end) of the concatenation of `spans`. The scalars depend on the
// tensor's group and step; they are computed again only when those change from one span to the
// next (in a usual call every tensor of a group is at the same step).
template <class T>
void step_range(const AdamSpan<T>* spans, std::size_t count, std::size_t begin, std::size_t end,
                const AdamOptions* groups, const LoopFn<T>* loops, double grad_scale) {
    std::size_t offset = 0;
    std::uint32_t last_group = 0;
    std::int64_t last_step = 0;  // steps are >= 1: the first span always computes
    Coefficients<T> c{};
    for (std::size_t k = 0; k < count && offset < end; ++k) {
        const AdamSpan<T>& s = spans[k];
        const std::size_t lo = begin > offset ? begin - offset : 0;
        const std::size_t hi = end - offset < s.size ? end - offset : s.size;
        if (lo < hi) {
            if (s.step != last_step || s.group != last_group) {
                c = coefficients<T>(groups[s.group], s.step, grad_scale);
                last_step = s.step;
                last_group = s.group;
            }
            T* vmax = s.max_exp_avg_sq ? s.max_exp_avg_sq + lo : nullptr;
            loops[s.group](s.value + lo, s.grad + lo, s.exp_avg + lo, s.exp_avg_sq + lo, vmax, hi - lo, c);
        }
        offset += s.size;
    }
}

}  // namespace adam_detail

/// The fused Adam/AdamW step over many tensors in one call, each with its own hyperparameters
/// (`groups[spans[k].group]`) and step count, exactly as adam_step() would update each alone.
/// Threads share the total element count (chunks may span tensors and groups).
/// Throws std::invalid_argument, before writing anything, for invalid options, a group index out
/// of range, a step < 1, or a null moment buffer (max_exp_avg_sq: where the group has amsgrad).
template <class T>
void multi_tensor_adam_step(const AdamSpan<T>* spans, std::size_t count, const AdamOptions* groups,
                            std::size_t n_groups, T grad_scale = T(1), const Parallel& par = Parallel()) {
    if (n_groups == 0 && count != 0) {
        throw std::invalid_argument("minimalsgd: a multi-tensor step needs at least one options set");
    }
    for (std::size_t j = 0; j < n_groups; ++j) {
        check(groups[j]);
    }
    std::size_t total = 0;
    for (std::size_t k = 0; k < count; ++k) {
        const AdamSpan<T>& s = spans[k];
        if (s.group >= n_groups) {
            throw std::invalid_argument("minimalsgd: tensor " + std::to_string(k) + " refers to options set " +
                                        std::to_string(s.group) + " of " + std::to_string(n_groups));
        }
        if (s.step < 1) {
            throw std::invalid_argument("minimalsgd: tensor " + std::to_string(k) +
                                        ": step must be >= 1 (the step this update makes), got " +
                                        std::to_string(s.step));
        }
        if (s.size != 0 && (s.value == nullptr || s.grad == nullptr || s.exp_avg == nullptr ||
                            s.exp_avg_sq == nullptr || (groups[s.group].amsgrad && s.max_exp_avg_sq == nullptr))) {
            throw std::invalid_argument("minimalsgd: tensor " + std::to_string(k) +
                                        " lacks a buffer (value, grad, exp_avg, exp_avg_sq, and max_exp_avg_sq "
                                        "with amsgrad)");
        }
        total += s.size;
    }
    // One loop variant per group: on the stack for the usual few, on the heap for many.
    constexpr std::size_t kInline = 16;
    adam_detail::LoopFn<T> inline_loops[kInline];
    std::vector<adam_detail::LoopFn<T>> heap_loops;
    adam_detail::LoopFn<T>* loops = inline_loops;
    if (n_groups > kInline) {
        heap_loops.resize(n_groups);
        loops = heap_loops.data();
    }
    for (std::size_t j = 0; j < n_groups; ++j) {
        loops[j] = adam_detail::select_loop<T>(groups[j]);
    }
    const double scale = static_cast<double>(grad_scale);
    for_chunks(total, 64 / sizeof(T) > 0 ? 64 / sizeof(T) : 1, par, [&](std::size_t begin, std::size_t end) {
        adam_detail::step_range(spans, count, begin, end, groups, loops, scale);
    });
}

/// The fused step over many tensors with one set of hyperparameters (every span's group is 0).
template <class T>
void multi_tensor_adam_step(const AdamSpan<T>* spans, std::size_t count, const AdamOptions& opts,
                            T grad_scale = T(1), const Parallel& par = Parallel()) {
    multi_tensor_adam_step(spans, count, &opts, 1, grad_scale, par);
}

/// The fused Adam/AdamW step on one tensor of n elements, in place: see the formula at the top
/// of this file. `step` is the step this update makes (1 on the first); `max_exp_avg_sq` may be
/// null unless amsgrad.
template <class T>
void adam_step(T* value, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, std::size_t n,
               const AdamOptions& opts, std::int64_t step, T grad_scale = T(1), const Parallel& par = Parallel()) {
    const AdamSpan<T> span{value, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, step, 0};
    multi_tensor_adam_step(&span, 1, opts, grad_scale, par);
}

}  // namespace MINIMALSGD_TARGET_NAMESPACE
}  // namespace minimalsgd
