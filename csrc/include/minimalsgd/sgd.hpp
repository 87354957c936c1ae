// minimalsgd: the fused SGD step and the gradient sum of squares.
//
// The update (one definition for every backend; torch.optim.SGD semantics):
//
//     g = grad * grad_scale
//     g = -g                                  if maximize
//     g = g + weight_decay * w                if weight_decay != 0
//     if momentum != 0:
//         v = g                               on the first step of this buffer (no dampening)
//         v = momentum * v + (1 - dampening) * g   on later steps
//         g = g + momentum * v  if nesterov else v
//     w = w - lr * g
//
// Every operation runs in T (float or double) with the hyperparameters rounded to T once, in
// this order; a build with -ffp-contract=off (the Python module's) therefore gives the same bits
// on every instruction set and the same bits as the NumPy backend.
//
// Memory: one pass. Reads w, grad and (with momentum) v once, writes w and v once. The grad is
// never written. value, grad and momentum_buffer must not overlap each other; grads of different
// tensors may overlap each other (they are only read).
//
// Threads: work above Parallel::grain elements is split over OpenMP threads; in the multi-tensor
// form the split is over the total element count, so chunks may span tensors and many small
// tensors share the threads. Results do not depend on the thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "config.hpp"
#include "options.hpp"

namespace minimalsgd {

/// One tensor of a multi-tensor step: `size` elements at `value`, `grad` and `momentum_buffer`
/// (which may be null when its group's momentum is 0). `first_step` marks a momentum buffer that
/// has not been written yet: this step sets it to the gradient. `group` is the index of the
/// tensor's hyperparameters in the options array of the call (0 when the call has one set).
template <class T>
struct TensorSpan {
    T* value;
    const T* grad;
    T* momentum_buffer;
    std::size_t size;
    bool first_step;
    std::uint32_t group = 0;
};

/// One gradient of a multi-tensor sum of squares.
template <class T>
struct ConstSpan {
    const T* data;
    std::size_t size;
};

inline namespace MINIMALSGD_TARGET_NAMESPACE {
namespace detail {

/// The hyperparameters of one step rounded to T once.
template <class T>
struct Coefficients {
    T lr, mu, damp1, wd, scale;
};

template <class T>
Coefficients<T> coefficients(const SgdOptions& o, double grad_scale) {
    return {T(o.lr), T(o.momentum), T(1.0 - o.dampening), T(o.weight_decay),
            o.maximize ? T(-grad_scale) : T(grad_scale)};
}

// The fused loop. Options are template parameters, so each variant is a plain loop with no
// branches inside, which the compiler vectorizes.
template <class T, bool Momentum, bool Nesterov, bool WeightDecay, bool First>
void fused_loop(T* MINIMALSGD_RESTRICT w, const T* MINIMALSGD_RESTRICT grad,
                T* MINIMALSGD_RESTRICT buf, std::size_t n, Coefficients<T> c) {
    const T lr = c.lr, mu = c.mu, damp1 = c.damp1, wd = c.wd, scale = c.scale;
    MINIMALSGD_SIMD
    for (std::size_t i = 0; i < n; ++i) {
        T g = grad[i] * scale;  // maximize is folded into the sign of scale: exact
        const T wi = w[i];
        if constexpr (WeightDecay) {
            g = g + wd * wi;
        }
        if constexpr (Momentum) {
            T v;
            if constexpr (First) {
                v = g;
            } else {
                v = mu * buf[i] + damp1 * g;
            }
            buf[i] = v;
            if constexpr (Nesterov) {
                g = g + mu * v;
            } else {
                g = v;
            }
        }
        w[i] = wi - lr * g;
    }
}

template <class T>
using LoopFn = void (*)(T*, const T*, T*, std::size_t, Coefficients<T>);

/// The loop variant for `opts`, for buffers on their first step or later.
template <class T>
LoopFn<T> select_loop(const SgdOptions& o, bool first) {
    const bool wd = o.weight_decay != 0;
    if (o.momentum == 0) {
        return wd ? &fused_loop<T, false, false, true, false> : &fused_loop<T, false, false, false, false>;
    }
    if (o.nesterov) {
        if (first) {
            return wd ? &fused_loop<T, true, true, true, true> : &fused_loop<T, true, true, false, true>;
        }
        return wd ? &fused_loop<T, true, true, true, false> : &fused_loop<T, true, true, false, false>;
    }
    if (first) {
        return wd ? &fused_loop<T, true, false, true, true> : &fused_loop<T, true, false, false, true>;
    }
    return wd ? &fused_loop<T, true, false, true, false> : &fused_loop<T, true, false, false, false>;
}

// Elements per 64-byte cache line: chunk borders between threads are multiples of it.
template <class T>
constexpr std::size_t line_elems() {
    return 64 / sizeof(T) > 0 ? 64 / sizeof(T) : 1;
}

/// What one options set of a call becomes: its coefficients and its two loop variants.
template <class T>
struct Prepared {
    Coefficients<T> c;
    LoopFn<T> later, first;
};

template <class T>
Prepared<T> prepare(const SgdOptions& o, double grad_scale) {
    return {coefficients<T>(o, grad_scale), select_loop<T>(o, false), select_loop<T>(o, true)};
}

// Runs the elements [begin, end) of the concatenation of `spans`, each with its group's loop.
template <class T>
void step_range(const TensorSpan<T>* spans, std::size_t count, std::size_t begin, std::size_t end,
                const Prepared<T>* groups) {
    std::size_t offset = 0;
    for (std::size_t k = 0; k < count && offset < end; ++k) {
        const TensorSpan<T>& s = spans[k];
        const std::size_t lo = begin > offset ? begin - offset : 0;
        const std::size_t hi = end - offset < s.size ? end - offset : s.size;
        if (lo < hi) {
            const Prepared<T>& p = groups[s.group];
            T* buf = s.momentum_buffer ? s.momentum_buffer + lo : nullptr;
            (s.first_step ? p.first : p.later)(s.value + lo, s.grad + lo, buf, hi - lo, p.c);
        }
        offset += s.size;
    }
}

// Sum of squares of x[0..n) in double, in 32 interleaved partial sums combined in a fixed order:
// the same bits whatever the vector width the compiler picks (2, 4 or 8 doubles), and enough
// independent chains of additions (4 to 16 vectors) to stream at memory speed, not add latency.
template <class T>
double sum_of_squares_serial(const T* MINIMALSGD_RESTRICT x, std::size_t n) {
    constexpr std::size_t L = 32;
    double acc[L] = {};
    const std::size_t body = n - n % L;
    for (std::size_t i = 0; i < body; i += L) {
        MINIMALSGD_SIMD
        for (std::size_t j = 0; j < L; ++j) {
            const double v = static_cast<double>(x[i + j]);
            acc[j] += v * v;
        }
    }
    for (std::size_t i = body; i < n; ++i) {
        const double v = static_cast<double>(x[i]);
        acc[i - body] += v * v;
    }
    // Pairwise, in a fixed order.
    for (std::size_t width = L / 2; width > 0; width /= 2) {
        for (std::size_t j = 0; j < width; ++j) {
            acc[j] += acc[j + width];
        }
    }
    return acc[0];
}

// Blocks of this many elements are summed on their own and then added in order, so that the total
// does not depend on the number of threads.
constexpr std::size_t kSumBlock = 1 << 16;

}  // namespace detail

/// The fused step over many tensors in one call, each with its own hyperparameters: span k is
/// updated with `groups[spans[k].group]`, exactly as sgd_step() would update it alone. Threads
/// share the total element count (chunks may span tensors and groups).
/// Throws std::invalid_argument, before writing anything, for invalid options, a group index out
/// of range, or a null momentum buffer where the tensor's group has momentum != 0.
template <class T>
void multi_tensor_sgd_step(const TensorSpan<T>* spans, std::size_t count, const SgdOptions* groups,
                           std::size_t n_groups, T grad_scale = T(1), const Parallel& par = Parallel()) {
    if (n_groups == 0 && count != 0) {
        throw std::invalid_argument("minimalsgd: a multi-tensor step needs at least one options set");
    }
    for (std::size_t j = 0; j < n_groups; ++j) {
        check(groups[j]);
    }
    std::size_t total = 0;
    for (std::size_t k = 0; k < count; ++k) {
        if (spans[k].group >= n_groups) {
            throw std::invalid_argument("minimalsgd: tensor " + std::to_string(k) + " refers to options set " +
                                        std::to_string(spans[k].group) + " of " + std::to_string(n_groups));
        }
        if (groups[spans[k].group].momentum != 0 && spans[k].momentum_buffer == nullptr && spans[k].size != 0) {
            throw std::invalid_argument("minimalsgd: momentum != 0 needs a momentum buffer for every tensor");
        }
        total += spans[k].size;
    }
    // The prepared groups: on the stack for the usual few, on the heap for many.
    constexpr std::size_t kInline = 8;
    detail::Prepared<T> inline_prepared[kInline];
    std::vector<detail::Prepared<T>> heap_prepared;
    detail::Prepared<T>* prepared = inline_prepared;
    if (n_groups > kInline) {
        heap_prepared.resize(n_groups);
        prepared = heap_prepared.data();
    }
    for (std::size_t j = 0; j < n_groups; ++j) {
        prepared[j] = detail::prepare<T>(groups[j], static_cast<double>(grad_scale));
    }
    for_chunks(total, detail::line_elems<T>(), par, [&](std::size_t begin, std::size_t end) {
        detail::step_range(spans, count, begin, end, prepared);
    });
}

/// The fused step over many tensors with one set of hyperparameters (every span's group is 0).
template <class T>
void multi_tensor_sgd_step(const TensorSpan<T>* spans, std::size_t count, const SgdOptions& opts,
                           T grad_scale = T(1), const Parallel& par = Parallel()) {
    multi_tensor_sgd_step(spans, count, &opts, 1, grad_scale, par);
}

/// The fused step on one tensor of n elements, in place: see the formula at the top of this file.
/// `momentum_buffer` may be null only when momentum is 0; `first_step` makes this step set the
/// buffer to the gradient (the buffer's old contents are not read).
template <class T>
void sgd_step(T* value, const T* grad, T* momentum_buffer, std::size_t n, const SgdOptions& opts,
              bool first_step = false, T grad_scale = T(1), const Parallel& par = Parallel()) {
    const TensorSpan<T> span{value, grad, momentum_buffer, n, first_step};
    multi_tensor_sgd_step(&span, 1, opts, grad_scale, par);
}

/// The sum of x[i]^2 over many tensors, accumulated in double. The result is the same for any
/// thread count and instruction set (fixed blocks, fixed order of addition).
template <class T>
double multi_tensor_sum_of_squares(const ConstSpan<T>* spans, std::size_t count,
                                   const Parallel& par = Parallel()) {
    std::size_t total = 0, blocks = 0;
    for (std::size_t k = 0; k < count; ++k) {
        total += spans[k].size;
        blocks += (spans[k].size + detail::kSumBlock - 1) / detail::kSumBlock;
    }
    const int nt = threads_for(total, par);
    double sum = 0;
    if (nt <= 1 || blocks < 2) {
        for (std::size_t k = 0; k < count; ++k) {
            for (std::size_t i = 0; i < spans[k].size; i += detail::kSumBlock) {
                const std::size_t m = spans[k].size - i < detail::kSumBlock ? spans[k].size - i : detail::kSumBlock;
                sum += detail::sum_of_squares_serial(spans[k].data + i, m);
            }
        }
        return sum;
    }
#if defined(_OPENMP)
    // Partial sums per block, written by whichever thread runs the block, added in block order.
    struct Block {
        const T* data;
        std::size_t size;
        double sum;
    };
    std::vector<Block> list(blocks);
    std::size_t b = 0;
    for (std::size_t k = 0; k < count; ++k) {
        for (std::size_t i = 0; i < spans[k].size; i += detail::kSumBlock) {
            const std::size_t m = spans[k].size - i < detail::kSumBlock ? spans[k].size - i : detail::kSumBlock;
            list[b++] = Block{spans[k].data + i, m, 0.0};
        }
    }
    const std::ptrdiff_t nb = static_cast<std::ptrdiff_t>(blocks);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (std::ptrdiff_t j = 0; j < nb; ++j) {
        list[j].sum = detail::sum_of_squares_serial(list[j].data, list[j].size);
    }
    for (std::size_t j = 0; j < blocks; ++j) {
        sum += list[j].sum;
    }
#endif
    return sum;
}

/// The sum of x[i]^2 over n elements, accumulated in double.
template <class T>
double sum_of_squares(const T* x, std::size_t n, const Parallel& par = Parallel()) {
    const ConstSpan<T> span{x, n};
    return multi_tensor_sum_of_squares(&span, 1, par);
}

}  // namespace MINIMALSGD_TARGET_NAMESPACE
}  // namespace minimalsgd
