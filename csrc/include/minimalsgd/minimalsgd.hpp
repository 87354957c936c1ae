// minimalsgd: one fused SGD step over contiguous float buffers. Header-only C++17.
//
//     #include <minimalsgd/minimalsgd.hpp>
//     minimalsgd::SgdOptions opts{/*lr=*/0.1};
//     opts.momentum = 0.9;
//     minimalsgd::sgd_step(w, g, v, n, opts, /*first_step=*/step == 0);
//
// See sgd.hpp for the formula, the first-step rule, aliasing and threads; adam.hpp for Adam/AdamW:
//
//     minimalsgd::AdamOptions adam;  // lr 1e-3, betas (0.9, 0.999), eps 1e-8
//     adam.weight_decay = 1e-2;
//     adam.decoupled = true;          // AdamW
//     minimalsgd::adam_step(w, g, m, v, /*max_exp_avg_sq=*/nullptr, n, adam, /*step=*/t + 1);
#pragma once

#include "version.hpp"
#include "config.hpp"
#include "options.hpp"
#include "sgd.hpp"
#include "adam.hpp"
#include "schedules.hpp"
#include "cpu.hpp"
