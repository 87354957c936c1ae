// minimalsgd._bench_core: what `python -m minimalsgd bench` times in C++ with no Python in the
// loop: the yardstick loops (yardsticks.hpp, compiled per instruction-set target like the
// product's kernels) and the bare call of the product's fused step, through minimalsgd._core's own
// kernel table (kernel_api.hpp), with the instruction set and threads that _core has in force.
// Not part of the product module: nothing in the package but the bench imports it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "../python/buffers.hpp"
#include "../python/kernel_api.hpp"
#include "yardsticks.hpp"

namespace py = pybind11;
using namespace minimalsgd_python;

namespace {

const KernelApi* g_api = nullptr;  // minimalsgd._core's, set at import

enum class What { stream, read, step, step_sr, adam_stream };

// `reps` samples of `inner` calls of `what` over storage S, seconds per call each.
template <class S>
std::vector<double> timed(What what, const View& w, const View& g, const View& v, const View& m, int reps, int inner,
                          const minimalsgd::Parallel& par) {
    const KernelTable& k = g_api->table();
    const BenchTable& y = table_for<BenchTable>(g_api->isa());
    minimalsgd::SgdOptions opts{0.01, 0.9, 0.0, 1e-4, true, false};
    opts.stochastic_rounding = what == What::step_sr;
    opts.seed = 1;
    auto* pw = reinterpret_cast<S*>(w.data);
    auto* pg = reinterpret_cast<const S*>(g.data);
    auto* pv = reinterpret_cast<S*>(v.data);
    auto* pm = reinterpret_cast<S*>(m.data);
    const std::size_t n = w.size;
    volatile double sink = 0;  // keeps the read loop's result alive
    const auto call = [&]() {
        switch (what) {
            case What::stream:
                y.get<ops::stream, S>()(pw, pg, pv, n, par.num_threads);
                break;
            case What::read:
                if constexpr (BenchTable::has<ops::read, S>()) {
                    sink = sink + y.get<ops::read, S>()(pg, n, par.num_threads);
                }
                break;
            case What::adam_stream:
                if constexpr (BenchTable::has<ops::adam_stream, S>()) {
                    y.get<ops::adam_stream, S>()(pw, pg, pm, pv, n, par.num_threads);
                }
                break;
            case What::step:
            case What::step_sr: {
                const minimalsgd::TensorSpan<S> span{pw, pg, pv, n, false};
                k.get<ops::sgd, S>()(&span, 1, &opts, 1, minimalsgd::compute_t<S>(1), par);
                break;
            }
        }
    };
    std::vector<double> out;
    py::gil_scoped_release release;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int j = 0; j < inner; ++j) {
            call();
        }
        const auto t1 = std::chrono::steady_clock::now();
        out.push_back(std::chrono::duration<double>(t1 - t0).count() / inner);
    }
    return out;
}

// Per-call seconds of `reps` batches of `inner` calls, timed in C++ without Python in the loop.
// kind "stream": the yardstick loop; "read": the read-only yardstick (sum of g*g); "step": the
// fused step (momentum 0.9, Nesterov, weight decay 1e-4) through _core's kernel table, i.e. the
// bare C call; "step_sr": the same with stochastic rounding (16-bit storage); "adam_stream": the
// Adam yardstick over w, g, m (the extra array `m`) and v (4 reads, 3 writes).
std::vector<double> time_calls(const std::string& kind, py::handle w_obj, py::handle g_obj, py::handle v_obj, int reps,
                               int inner, int threads, py::object m_obj) {
    const View w = view_of(w_obj.ptr(), "w", 0, true);
    const View g = view_of(g_obj.ptr(), "g", 0, false);
    const View v = view_of(v_obj.ptr(), "v", 0, true);
    if (!same_layout(w, g) || !same_layout(w, v)) {
        throw py::value_error("w, g and v must have one dtype, shape and memory order");
    }
    What what;
    if (kind == "stream") {
        what = What::stream;
    } else if (kind == "read") {
        what = What::read;
    } else if (kind == "step") {
        what = What::step;
    } else if (kind == "step_sr") {
        what = What::step_sr;
    } else if (kind == "adam_stream") {
        what = What::adam_stream;
    } else {
        throw py::value_error("kind must be 'stream', 'read', 'step', 'step_sr' or 'adam_stream'");
    }
    if (is_half(w.kind) && (what == What::read || what == What::adam_stream)) {
        throw py::value_error("kinds 'read' and 'adam_stream' are for float32/float64");
    }
    View m{};
    if (what == What::adam_stream) {
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
    minimalsgd::Parallel par = g_api->parallel();
    par.num_threads = threads > 0 ? threads : par.num_threads;
    switch (w.kind) {
#define MINIMALSGD_TIMED_CASE(name, type) \
    case Kind::name:                      \
        return timed<type>(what, w, g, v, m, reps, inner, par);
        MINIMALSGD_DTYPES(MINIMALSGD_TIMED_CASE)
#undef MINIMALSGD_TIMED_CASE
    }
    throw py::type_error("w has a dtype the bench does not know");
}

}  // namespace

PYBIND11_MODULE(_bench_core, m, py::mod_gil_not_used()) {
    m.doc() = "minimalsgd bench support: yardstick loops and the bare kernel call, timed in C++ "
              "(private: python -m minimalsgd bench)";
    g_api = static_cast<const KernelApi*>(PyCapsule_Import(kKernelApiName, 0));
    if (g_api == nullptr) {
        throw py::error_already_set();
    }
    if (g_api->table_size != sizeof(KernelTable) || std::strcmp(g_api->layout, kKernelLayout) != 0) {
        throw py::import_error("minimalsgd._bench_core was built from another kernel list than minimalsgd._core");
    }
    init_bfloat16();
    m.def("_time_calls", &time_calls, py::arg("kind"), py::arg("w"), py::arg("g"), py::arg("v"), py::arg("reps"),
          py::arg("inner"), py::arg("threads") = 0, py::arg("m") = py::none(),
          "Seconds per call of the yardstick loop ('stream', 'read', 'adam_stream' with m) or the bare fused step "
          "('step', 'step_sr'), with minimalsgd._core's instruction set and threads.");
}
