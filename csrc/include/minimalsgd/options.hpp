// minimalsgd: hyperparameters of one SGD step and their validation.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace minimalsgd {

/// Hyperparameters of one step, with the meaning of torch.optim.SGD:
///
///     g = grad * grad_scale
///     g = -g                                if maximize
///     g = g + weight_decay * w              if weight_decay != 0
///     if momentum != 0:
///         v = g                             on the first step of this buffer
///         v = momentum * v + (1 - dampening) * g   on later steps
///         g = g + momentum * v  if nesterov else v
///     w = w - lr * g
///
/// Rounding of 16-bit storage (bfloat16_t, float16_t values and buffers; see half.hpp): to nearest
/// even by default; with `stochastic_rounding`, stochastically with the random bits of (seed,
/// step, the span's key, element index). float and double results are stored in the dtype they
/// are computed in: these three fields do not affect them.
struct SgdOptions {
    double lr;
    double momentum = 0;
    double dampening = 0;
    double weight_decay = 0;
    bool nesterov = false;
    bool maximize = false;
    bool stochastic_rounding = false;
    std::uint64_t seed = 0;
    std::uint64_t step = 0;
};

/// What is wrong with `opts`, or an empty string when they are valid.
/// The rules are torch.optim.SGD's, plus finiteness: lr, momentum and weight_decay are finite and
/// >= 0, dampening is finite, and nesterov needs momentum > 0 and dampening == 0.
inline std::string validate(const SgdOptions& opts) {
    if (!std::isfinite(opts.lr) || opts.lr < 0) {
        return "lr must be a finite number >= 0, got " + std::to_string(opts.lr);
    }
    if (!std::isfinite(opts.momentum) || opts.momentum < 0) {
        return "momentum must be a finite number >= 0, got " + std::to_string(opts.momentum);
    }
    if (!std::isfinite(opts.dampening)) {
        return "dampening must be a finite number, got " + std::to_string(opts.dampening);
    }
    if (!std::isfinite(opts.weight_decay) || opts.weight_decay < 0) {
        return "weight_decay must be a finite number >= 0, got " + std::to_string(opts.weight_decay);
    }
    if (opts.nesterov && (opts.momentum <= 0 || opts.dampening != 0)) {
        return "nesterov requires momentum > 0 and dampening == 0";
    }
    return {};
}

/// Throws std::invalid_argument with the message of validate() when `opts` are invalid.
inline void check(const SgdOptions& opts) {
    std::string error = validate(opts);
    if (!error.empty()) {
        throw std::invalid_argument("minimalsgd: " + error);
    }
}

}  // namespace minimalsgd
