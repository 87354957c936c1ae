// minimalsgd._core: bench support (python -m minimalsgd bench): the C yardstick loops and the bare
// kernel call, timed in C++ with no Python in the loop.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <chrono>
#include <string>
#include <vector>

#include "buffers.hpp"
#include "runtime.hpp"

namespace py = pybind11;

namespace minimalsgd_python {

// Bench support: per-call seconds of `reps` batches of `inner` calls, timed in C++ without
// Python in the loop. kind "stream": the yardstick loop; "read": the read-only yardstick (sum of
// g*g); kind "step": the fused step (momentum
// 0.9, Nesterov, weight decay 1e-4) through the kernel table, i.e. the bare C call; kind
// "step_sr": the same with stochastic rounding (16-bit storage); kind
// "adam_stream": the Adam yardstick over w, g, m (the extra array `m`) and v (4 reads, 3 writes).
inline std::vector<double> time_calls(const std::string& kind, py::handle w_obj, py::handle g_obj, py::handle v_obj, int reps,
                               int inner, int threads, py::object m_obj) {
    const View w = view_of(w_obj.ptr(), "w", 0, true);
    const View g = view_of(g_obj.ptr(), "g", 0, false);
    const View v = view_of(v_obj.ptr(), "v", 0, true);
    if (!same_layout(w, g) || !same_layout(w, v)) {
        throw py::value_error("w, g and v must have one dtype, shape and memory order");
    }
    if (kind != "stream" && kind != "step" && kind != "read" && kind != "step_sr" && kind != "adam_stream") {
        throw py::value_error("kind must be 'stream', 'read', 'step', 'step_sr' or 'adam_stream'");
    }
    if (is_half(w.kind) && (kind == "read" || kind == "adam_stream")) {
        throw py::value_error("kinds 'read' and 'adam_stream' are for float32/float64");
    }
    View m{};
    if (kind == "adam_stream") {
        if (m_obj.is_none()) {
            throw py::value_error("kind 'adam_stream' needs m");
        }
        m = view_of(m_obj.ptr(), "m", 0, true);
        if (!same_layout(w, m)) {
            throw py::value_error("w and m must have one dtype, shape and memory order");
        }
    }
    if (reps < 1 || inner < 1) {
        throw py::value_error("reps and inner must be >= 1");
    }
    const KernelTable& k = table_for(static_cast<Isa>(g_isa.load()));
    minimalsgd::Parallel par = parallel();
    par.num_threads = threads > 0 ? threads : par.num_threads;
    minimalsgd::SgdOptions opts{0.01, 0.9, 0.0, 1e-4, true, false};
    opts.stochastic_rounding = kind == "step_sr";
    opts.seed = 1;
    std::vector<double> out;
    volatile double sink = 0;  // keeps the read loop's result alive
    py::gil_scoped_release release;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int j = 0; j < inner; ++j) {
            if (w.kind == Kind::bf16 || w.kind == Kind::f16) {
                if (w.kind == Kind::bf16) {
                    using S = minimalsgd::bfloat16_t;
                    auto* pw = reinterpret_cast<S*>(w.data);
                    auto* pg = reinterpret_cast<const S*>(g.data);
                    auto* pv = reinterpret_cast<S*>(v.data);
                    if (kind == "stream") {
                        k.stream_bf16(pw, pg, pv, w.size, par.num_threads);
                    } else {
                        const minimalsgd::TensorSpan<S> span{pw, pg, pv, w.size, false};
                        k.step_bf16(&span, 1, &opts, 1, 1.0f, par);
                    }
                } else {
                    using S = minimalsgd::float16_t;
                    auto* pw = reinterpret_cast<S*>(w.data);
                    auto* pg = reinterpret_cast<const S*>(g.data);
                    auto* pv = reinterpret_cast<S*>(v.data);
                    if (kind == "stream") {
                        k.stream_f16(pw, pg, pv, w.size, par.num_threads);
                    } else {
                        const minimalsgd::TensorSpan<S> span{pw, pg, pv, w.size, false};
                        k.step_f16(&span, 1, &opts, 1, 1.0f, par);
                    }
                }
            } else if (w.kind == Kind::f32) {
                auto* pw = reinterpret_cast<float*>(w.data);
                auto* pg = reinterpret_cast<const float*>(g.data);
                auto* pv = reinterpret_cast<float*>(v.data);
                if (kind == "adam_stream") {
                    k.adam_stream_f32(pw, pg, reinterpret_cast<float*>(m.data), pv, w.size, par.num_threads);
                } else if (kind == "stream") {
                    k.stream_f32(pw, pg, pv, w.size, par.num_threads);
                } else if (kind == "read") {
                    sink += k.read_f32(pg, w.size, par.num_threads);
                } else {
                    const minimalsgd::TensorSpan<float> span{pw, pg, pv, w.size, false};
                    k.step_f32(&span, 1, &opts, 1, 1.0f, par);
                }
            } else {
                auto* pw = reinterpret_cast<double*>(w.data);
                auto* pg = reinterpret_cast<const double*>(g.data);
                auto* pv = reinterpret_cast<double*>(v.data);
                if (kind == "adam_stream") {
                    k.adam_stream_f64(pw, pg, reinterpret_cast<double*>(m.data), pv, w.size, par.num_threads);
                } else if (kind == "stream") {
                    k.stream_f64(pw, pg, pv, w.size, par.num_threads);
                } else if (kind == "read") {
                    sink += k.read_f64(pg, w.size, par.num_threads);
                } else {
                    const minimalsgd::TensorSpan<double> span{pw, pg, pv, w.size, false};
                    k.step_f64(&span, 1, &opts, 1, 1.0, par);
                }
            }
        }
        const auto t1 = std::chrono::steady_clock::now();
        out.push_back(std::chrono::duration<double>(t1 - t0).count() / inner);
    }
    return out;
}

}  // namespace minimalsgd_python
