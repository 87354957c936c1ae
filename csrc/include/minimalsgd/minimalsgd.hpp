// minimalsgd: one fused SGD step over contiguous float buffers. Header-only C++17.
//
//     #include <minimalsgd/minimalsgd.hpp>
//     minimalsgd::SgdOptions opts{/*lr=*/0.1};
//     opts.momentum = 0.9;
//     minimalsgd::sgd_step(w, g, v, n, opts, /*first_step=*/step == 0);
//
// See sgd.hpp for the formula, the first-step rule, aliasing and threads.
#pragma once

#include "version.hpp"
#include "config.hpp"
#include "options.hpp"
#include "sgd.hpp"
#include "schedules.hpp"
#include "cpu.hpp"
