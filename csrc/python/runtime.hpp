// minimalsgd._core: the run-time choices of every call: the instruction set whose kernels run,
// the thread count and the grain below which a call stays on one thread.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <iterator>
#include <string>
#include <vector>

#include <minimalsgd/cpu.hpp>

#include "kernels.hpp"

namespace py = pybind11;

namespace minimalsgd_python {

using minimalsgd::Isa;

inline bool is_compiled(Isa isa) {
    return std::find(std::begin(kCompiledIsas), std::end(kCompiledIsas), isa) != std::end(kCompiledIsas);
}

// The best kernel set that is compiled in and that this CPU supports.
inline Isa best_compiled_isa() {
    Isa best = Isa::baseline;
    for (Isa isa : kCompiledIsas) {
        if (minimalsgd::cpu_supports(isa)) {
            best = isa;
        }
    }
    return best;
}

inline std::atomic<int> g_isa{static_cast<int>(Isa::baseline)};
inline std::atomic<int> g_num_threads{0};      // 0: follow omp_get_max_threads() of the calling thread
inline std::atomic<std::size_t> g_grain{minimalsgd::Parallel().grain};

inline void set_isa(std::string name) {
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    Isa isa;
    if (!minimalsgd::parse_isa(name.c_str(), &isa)) {
        throw py::value_error("isa must be one of 'baseline', 'avx2', 'avx512', 'avx512_bf16', got '" + name + "'");
    }
    if (!is_compiled(isa)) {
        throw py::value_error("isa '" + name + "' is not compiled into this build (processor " +
                              minimalsgd::processor_name() + ")");
    }
    if (!minimalsgd::cpu_supports(isa)) {
        throw py::value_error("isa '" + name + "' is not supported by this CPU");
    }
    g_isa = static_cast<int>(isa);
}

// The kernels of the instruction set in force.
inline const KernelTable& current_table() { return table_for<KernelTable>(static_cast<Isa>(g_isa.load())); }

inline std::string get_isa() { return minimalsgd::isa_name(static_cast<Isa>(g_isa.load())); }

inline int g_default_threads = 1;  // omp_get_max_threads() at import: what set_num_threads(0) restores

// The threads a call uses: set_num_threads(n > 0) for every thread of the process; otherwise
// OpenMP's own setting for the calling thread (OMP_NUM_THREADS, or a threadpoolctl limit).
inline int get_num_threads() {
    const int n = g_num_threads.load();
    if (n > 0) {
        return n;
    }
#if defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

inline void set_num_threads(int n) {
    if (n < 0) {
        throw py::value_error("num_threads must be >= 0 (0 restores the OpenMP default), got " + std::to_string(n));
    }
    g_num_threads = n;
#if defined(_OPENMP)
    // Also OpenMP's own setting of this thread, so that threadpoolctl reports what runs.
    omp_set_num_threads(n > 0 ? n : g_default_threads);
#endif
}

inline minimalsgd::Parallel parallel() {
    minimalsgd::Parallel par;
    par.num_threads = get_num_threads();
    par.grain = g_grain.load();
    return par;
}

inline std::vector<std::string> supported_isas() {
    std::vector<std::string> out;
    for (Isa isa : kCompiledIsas) {
        if (minimalsgd::cpu_supports(isa)) {
            out.emplace_back(minimalsgd::isa_name(isa));
        }
    }
    return out;
}

}  // namespace minimalsgd_python
