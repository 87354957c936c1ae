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
// 16-bit storage (bfloat16_t, float16_t; half.hpp): every element is converted to float exactly,
// the formula runs in float (hyperparameters rounded to float once), and each stored result -- the
// value, and the momentum buffer when it is 16-bit too -- is rounded once to its storage type: to
// nearest even, or stochastically (SgdOptions::stochastic_rounding) with the random bits of
// (seed, step, span key, element index = span index0 + position): the value uses the high 16
// bits, the buffer the low 16.
// The momentum buffer is of the value's type, or float (TensorSpan<S, float>): then it is stored
// unrounded. Within the step the unrounded float v feeds the update, as in torch's fused kernel.
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
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "half.hpp"
#include "options.hpp"

namespace minimalsgd {

/// One tensor of a multi-tensor step: `size` elements at `value`, `grad` and `momentum_buffer`
/// (which may be null when its group's momentum is 0). `first_step` marks a momentum buffer that
/// has not been written yet: this step sets it to the gradient. `group` is the index of the
/// tensor's hyperparameters in the options array of the call (0 when the call has one set).
/// `key` tells this tensor's random bits from other tensors' in stochastic rounding (give each
/// tensor of a model its own, stable across steps: its position, say). `index0` is the element
/// index, in those random bits, of `value[0]`: 0 for a whole tensor; for a piece of a larger one
/// (a rank's slice of a sharded param), the piece's offset in it, so that the piece rounds with
/// the bits the whole tensor would (same `key`, element `index0 + i`).
/// T is float, double, bfloat16_t or float16_t; the buffer type B is T, or float when T is 16-bit.
template <class T, class B = T>
struct TensorSpan {
    T* value;
    const T* grad;
    B* momentum_buffer;
    std::size_t size;
    bool first_step;
    std::uint32_t group = 0;
    std::uint64_t key = 0;
    std::uint64_t index0 = 0;
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

// The update of one element (the formula at the top of this file) in T, with the coefficients
// rounded to T: returns the new value; `v` is the buffer element (read unless First, written when
// Momentum). The one definition behind the float/double loop and the 16-bit loop.
template <class T, bool Momentum, bool Nesterov, bool WeightDecay, bool First>
MINIMALSGD_ALWAYS_INLINE T update_element(T wi, T gi, T& v, const Coefficients<T>& c) {
    T g = gi * c.scale;  // maximize is folded into the sign of scale: exact
    if constexpr (WeightDecay) {
        g = g + c.wd * wi;
    }
    if constexpr (Momentum) {
        if constexpr (First) {
            v = g;
        } else {
            v = c.mu * v + c.damp1 * g;
        }
        if constexpr (Nesterov) {
            g = g + c.mu * v;
        } else {
            g = v;
        }
    }
    return wi - c.lr * g;
}

// The fused loop. Options are template parameters, so each variant is a plain loop with no
// branches inside, which the compiler vectorizes. (`key` and `index0` serve the 16-bit loop's
// stochastic rounding; float and double ignore them.)
template <class T, bool Momentum, bool Nesterov, bool WeightDecay, bool First>
void fused_loop(T* MINIMALSGD_RESTRICT w, const T* MINIMALSGD_RESTRICT grad, T* MINIMALSGD_RESTRICT buf,
                std::size_t n, Coefficients<T> c, std::uint64_t /*key*/, std::uint64_t /*index0*/) {
    MINIMALSGD_SIMD
    for (std::size_t i = 0; i < n; ++i) {
        T v{};
        if constexpr (Momentum && !First) {
            v = buf[i];
        }
        w[i] = update_element<T, Momentum, Nesterov, WeightDecay, First>(w[i], grad[i], v, c);
        if constexpr (Momentum) {
            buf[i] = v;
        }
    }
}

// Elements per block of the 16-bit loop: converted into float scratch arrays on the stack (L1),
// computed by a plain loop, and rounded back.
constexpr std::size_t kHalfBlock = 256;

// The fused loop for 16-bit storage S (value and grad) and buffer type B (S or float): the same
// formula in float, block by block; each stored result rounded once (Stochastic: with the random
// bits of element index0 + i of the tensor whose key is `key`).
template <class S, class B, bool Momentum, bool Nesterov, bool WeightDecay, bool First, bool Stochastic>
void half_loop(S* MINIMALSGD_RESTRICT w, const S* MINIMALSGD_RESTRICT grad, B* MINIMALSGD_RESTRICT buf,
               std::size_t n, Coefficients<float> c, std::uint64_t key, std::uint64_t index0) {
    constexpr bool kFloatBuffer = std::is_same<B, float>::value;
    alignas(64) float wf[kHalfBlock];
    alignas(64) float gf[kHalfBlock];
    alignas(64) float vf[kHalfBlock];
    alignas(64) std::uint32_t rnd[Stochastic ? kHalfBlock : 1];
    for (std::size_t base = 0; base < n; base += kHalfBlock) {
        const std::size_t m = n - base < kHalfBlock ? n - base : kHalfBlock;
        load_block(w + base, wf, m);
        load_block(grad + base, gf, m);
        float* MINIMALSGD_RESTRICT v = vf;
        if constexpr (Momentum) {
            if constexpr (kFloatBuffer) {
                v = buf + base;
            } else if constexpr (!First) {
                load_block(buf + base, vf, m);
            }
        }
        MINIMALSGD_SIMD
        for (std::size_t i = 0; i < m; ++i) {
            float vi = 0.0f;
            if constexpr (Momentum && !First) {
                vi = v[i];
            }
            wf[i] = update_element<float, Momentum, Nesterov, WeightDecay, First>(wf[i], gf[i], vi, c);
            if constexpr (Momentum) {
                v[i] = vi;
            }
        }
        if constexpr (Stochastic) {
            if constexpr (Momentum && !kFloatBuffer) {
                store_stochastic_fused<true>(wf, vf, key, index0 + base, w + base, buf + base, m, rnd);
            } else {
                store_stochastic_fused<false>(wf, vf, key, index0 + base, w + base, static_cast<S*>(nullptr), m, rnd);
            }
        } else {
            store_nearest(wf, w + base, m);
            if constexpr (Momentum && !kFloatBuffer) {
                store_nearest(vf, buf + base, m);
            }
        }
    }
}

template <class T, class B = T>
using LoopFn = void (*)(T*, const T*, B*, std::size_t, Coefficients<compute_t<T>>, std::uint64_t, std::uint64_t);

// The loop variant of one (momentum, nesterov, weight decay, first) choice.
template <class T, class B, bool Momentum, bool Nesterov, bool WeightDecay, bool First>
LoopFn<T, B> loop_variant(bool stochastic) {
    if constexpr (is_half<T>::value) {
        return stochastic ? &half_loop<T, B, Momentum, Nesterov, WeightDecay, First, true>
                          : &half_loop<T, B, Momentum, Nesterov, WeightDecay, First, false>;
    } else {
        static_assert(std::is_same<T, B>::value, "float and double tensors keep their buffer in their own type");
        (void)stochastic;
        return &fused_loop<T, Momentum, Nesterov, WeightDecay, First>;
    }
}

/// The loop variant for `opts`, for buffers on their first step or later.
template <class T, class B = T>
LoopFn<T, B> select_loop(const SgdOptions& o, bool first) {
    const bool wd = o.weight_decay != 0;
    const bool sr = o.stochastic_rounding;
    if (o.momentum == 0) {
        return wd ? loop_variant<T, B, false, false, true, false>(sr) : loop_variant<T, B, false, false, false, false>(sr);
    }
    if (o.nesterov) {
        if (first) {
            return wd ? loop_variant<T, B, true, true, true, true>(sr) : loop_variant<T, B, true, true, false, true>(sr);
        }
        return wd ? loop_variant<T, B, true, true, true, false>(sr) : loop_variant<T, B, true, true, false, false>(sr);
    }
    if (first) {
        return wd ? loop_variant<T, B, true, false, true, true>(sr) : loop_variant<T, B, true, false, false, true>(sr);
    }
    return wd ? loop_variant<T, B, true, false, true, false>(sr) : loop_variant<T, B, true, false, false, false>(sr);
}

// Elements per 64-byte cache line: chunk borders between threads are multiples of it.
template <class T>
constexpr std::size_t line_elems() {
    return 64 / sizeof(T) > 0 ? 64 / sizeof(T) : 1;
}

/// What one options set of a call becomes: its coefficients, its two loop variants and the
/// step's part of the stochastic-rounding key.
template <class T, class B = T>
struct Prepared {
    Coefficients<compute_t<T>> c;
    LoopFn<T, B> later, first;
    std::uint64_t step_key;
    bool stochastic;
};

template <class T, class B = T>
Prepared<T, B> prepare(const SgdOptions& o, double grad_scale) {
    const bool sr = is_half<T>::value && o.stochastic_rounding;
    return {coefficients<compute_t<T>>(o, grad_scale), select_loop<T, B>(o, false), select_loop<T, B>(o, true),
            sr ? rounding_step_key(o.seed, o.step) : 0, sr};
}

// Runs the elements [begin, end) of the concatenation of `spans`, each with its group's loop.
template <class T, class B>
void step_range(const TensorSpan<T, B>* spans, std::size_t count, std::size_t begin, std::size_t end,
                const Prepared<T, B>* groups) {
    std::size_t offset = 0;
    for (std::size_t k = 0; k < count && offset < end; ++k) {
        const TensorSpan<T, B>& s = spans[k];
        const std::size_t lo = begin > offset ? begin - offset : 0;
        const std::size_t hi = end - offset < s.size ? end - offset : s.size;
        if (lo < hi) {
            const Prepared<T, B>& p = groups[s.group];
            B* buf = s.momentum_buffer ? s.momentum_buffer + lo : nullptr;
            const std::uint64_t key = p.stochastic ? rounding_tensor_key(p.step_key, s.key) : 0;
            (s.first_step ? p.first : p.later)(s.value + lo, s.grad + lo, buf, hi - lo, p.c, key, s.index0 + lo);
        }
        offset += s.size;
    }
}

// Sum of squares of x[0..n) in double, in 32 interleaved partial sums combined in a fixed order:
// the same bits whatever the vector width the compiler picks (2, 4 or 8 doubles), and enough
// independent chains of additions (4 to 16 vectors) to stream at memory speed, not add latency.
constexpr std::size_t kSumLanes = 32;

// Adds x[i]^2 into acc[i % 32] for i in [0, n), n a multiple of 32 or the last, short row.
template <class T>
void add_squares(const T* MINIMALSGD_RESTRICT x, std::size_t n, double* MINIMALSGD_RESTRICT acc) {
    constexpr std::size_t L = kSumLanes;
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
}

// The 32 partial sums added pairwise, in a fixed order.
inline double fold_lanes(double* acc) {
    for (std::size_t width = kSumLanes / 2; width > 0; width /= 2) {
        for (std::size_t j = 0; j < width; ++j) {
            acc[j] += acc[j + width];
        }
    }
    return acc[0];
}

template <class T>
double sum_of_squares_serial(const T* MINIMALSGD_RESTRICT x, std::size_t n) {
    double acc[kSumLanes] = {};
    add_squares(x, n, acc);
    return fold_lanes(acc);
}

// The same sum for 16-bit storage: converted to float block by block, the same 32 partial sums
// by element index, so the result is that of sum_of_squares_serial on the converted floats.
template <class S>
double sum_of_squares_half(const S* MINIMALSGD_RESTRICT x, std::size_t n) {
    static_assert(kHalfBlock % kSumLanes == 0, "blocks must hold whole rows of partial sums");
    double acc[kSumLanes] = {};
    alignas(64) float xf[kHalfBlock];
    for (std::size_t base = 0; base < n; base += kHalfBlock) {
        const std::size_t m = n - base < kHalfBlock ? n - base : kHalfBlock;
        load_block(x + base, xf, m);
        add_squares(xf, m, acc);  // whole rows until the last block: lanes by element index
    }
    return fold_lanes(acc);
}

template <class T>
double sum_of_squares_block(const T* x, std::size_t n) {
    if constexpr (is_half<T>::value) {
        return sum_of_squares_half(x, n);
    } else {
        return sum_of_squares_serial(x, n);
    }
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
/// T is float, double, bfloat16_t or float16_t (grad_scale is then a float); B is T, or float for
/// a float32 momentum buffer of a 16-bit tensor.
template <class T, class B = T>
void multi_tensor_sgd_step(const TensorSpan<T, B>* spans, std::size_t count, const SgdOptions* groups,
                           std::size_t n_groups, compute_t<T> grad_scale = compute_t<T>(1),
                           const Parallel& par = Parallel()) {
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
    detail::Prepared<T, B> inline_prepared[kInline];
    std::vector<detail::Prepared<T, B>> heap_prepared;
    detail::Prepared<T, B>* prepared = inline_prepared;
    if (n_groups > kInline) {
        heap_prepared.resize(n_groups);
        prepared = heap_prepared.data();
    }
    for (std::size_t j = 0; j < n_groups; ++j) {
        prepared[j] = detail::prepare<T, B>(groups[j], static_cast<double>(grad_scale));
    }
    for_chunks(total, detail::line_elems<T>(), par, [&](std::size_t begin, std::size_t end) {
        detail::step_range(spans, count, begin, end, prepared);
    });
}

/// The fused step over many tensors with one set of hyperparameters (every span's group is 0).
template <class T, class B = T>
void multi_tensor_sgd_step(const TensorSpan<T, B>* spans, std::size_t count, const SgdOptions& opts,
                           compute_t<T> grad_scale = compute_t<T>(1), const Parallel& par = Parallel()) {
    multi_tensor_sgd_step(spans, count, &opts, 1, grad_scale, par);
}

/// The fused step on one tensor of n elements, in place: see the formula at the top of this file.
/// `momentum_buffer` may be null only when momentum is 0; `first_step` makes this step set the
/// buffer to the gradient (the buffer's old contents are not read). `key` is the tensor's
/// stochastic-rounding key (16-bit storage only).
template <class T, class B = T>
void sgd_step(T* value, const T* grad, B* momentum_buffer, std::size_t n, const SgdOptions& opts,
              bool first_step = false, compute_t<T> grad_scale = compute_t<T>(1), const Parallel& par = Parallel(),
              std::uint64_t key = 0) {
    const TensorSpan<T, B> span{value, grad, momentum_buffer, n, first_step, 0, key};
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
                sum += detail::sum_of_squares_block(spans[k].data + i, m);
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
        list[j].sum = detail::sum_of_squares_block(list[j].data, list[j].size);
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
