// minimalsgd: learning-rate schedules as plain functions of the step.
//
// The formulas of minimalsgd.schedules (Python), which equal torch.optim.lr_scheduler's: each
// returns the lr of the step that follows `t` applied steps (t = 0 is the first step). Use them to
// fill the per-group options of a multi-tensor step:
//
//     minimalsgd::SgdOptions groups[2] = {{0.1, 0.9}, {0.1, 0.9, 0, 0}};
//     for (long t = 0; t < steps; ++t) {
//         groups[0].lr = minimalsgd::schedules::warmup_cosine(0.1, 5, 100, t);
//         minimalsgd::multi_tensor_sgd_step(spans, n, groups, 2);
//     }
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace minimalsgd {
namespace schedules {

inline constexpr double kPi = 3.14159265358979323846;

/// lr * factor for the first total_iters steps, then lr (torch ConstantLR).
inline double constant(double lr, double factor, long total_iters, long t) { return t < total_iters ? lr * factor : lr; }

/// lr * gamma^(t / step_size) (torch StepLR).
inline double step_decay(double lr, long step_size, double gamma, long t) {
    return lr * std::pow(gamma, static_cast<double>(t / step_size));
}

/// lr * gamma^k, k = the number of milestones <= t (torch MultiStepLR; milestones sorted).
inline double multistep(double lr, const std::vector<long>& milestones, double gamma, long t) {
    const auto k = std::upper_bound(milestones.begin(), milestones.end(), t) - milestones.begin();
    return lr * std::pow(gamma, static_cast<double>(k));
}

/// lr * gamma^t (torch ExponentialLR).
inline double exponential(double lr, double gamma, long t) { return lr * std::pow(gamma, static_cast<double>(t)); }

/// eta_min + (lr - eta_min) * (1 + cos(pi t / T_max)) / 2 (torch CosineAnnealingLR).
inline double cosine(double lr, long T_max, double eta_min, long t) {
    return eta_min + (lr - eta_min) * (1 + std::cos(kPi * static_cast<double>(t) / static_cast<double>(T_max))) / 2;
}

/// lr * (start + (end - start) * min(t, total_iters) / total_iters) (torch LinearLR).
inline double linear(double lr, double start_factor, double end_factor, long total_iters, long t) {
    const long k = t < total_iters ? t : total_iters;
    return lr * (start_factor + (end_factor - start_factor) * static_cast<double>(k) / static_cast<double>(total_iters));
}

/// The 1cycle policy's lr (torch OneCycleLR); anneal_cos false: linear annealing.
inline double one_cycle(double max_lr, long total_steps, double pct_start, bool anneal_cos, double div_factor,
                        double final_div_factor, bool three_phase, long t) {
    const double initial = max_lr / div_factor;
    const double floor = initial / final_div_factor;
    const double n = static_cast<double>(total_steps);
    struct Phase {
        double end_step, start, end;
    };
    Phase phases[3];
    int count = 0;
    if (three_phase) {
        phases[count++] = {pct_start * n - 1, initial, max_lr};
        phases[count++] = {2 * pct_start * n - 2, max_lr, initial};
        phases[count++] = {n - 1, initial, floor};
    } else {
        phases[count++] = {pct_start * n - 1, initial, max_lr};
        phases[count++] = {n - 1, max_lr, floor};
    }
    const double step = static_cast<double>(t);
    double start_step = 0;
    for (int i = 0; i < count; ++i) {
        const Phase& p = phases[i];
        if (step <= p.end_step || i == count - 1) {
            const double pct = (step - start_step) / (p.end_step - start_step);
            if (anneal_cos) {
                return p.end + (p.start - p.end) / 2.0 * (std::cos(kPi * pct) + 1);
            }
            return (p.end - p.start) * pct + p.start;
        }
        start_step = p.end_step;
    }
    return floor;
}

/// Linear warmup from lr * start_factor over warmup_steps, then cosine annealing to eta_min at
/// total_steps (torch SequentialLR of LinearLR and CosineAnnealingLR; minimalsgd.schedules.warmup_cosine).
inline double warmup_cosine(double lr, long warmup_steps, long total_steps, long t, double start_factor = 1.0 / 3,
                            double eta_min = 0.0) {
    if (t < warmup_steps) {
        return linear(lr, start_factor, 1.0, warmup_steps, t);
    }
    return cosine(lr, total_steps - warmup_steps, eta_min, t - warmup_steps);
}

}  // namespace schedules
}  // namespace minimalsgd
