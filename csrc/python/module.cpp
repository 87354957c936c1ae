// minimalsgd._core: the pybind11 module. Thin: the bindings check that every buffer can be walked
// in place as one flat array (never converting or copying one), then release the GIL and call the
// kernels of the instruction set chosen at import.
//
// The Python layer (python/minimalsgd/_functional.py) validates with named errors first and
// routes only buffers that pass here; the checks are the last line, so that no call from Python
// can make the kernel read or write out of bounds, whatever it is given.
//
// Where things are:
//   runtime.hpp        instruction set, threads, grain
//   buffers.hpp        array checks, overlap checks, the per-call batch of kernel spans
//   entry_points.hpp   sgd_step, sum_of_squares, try_sgd_step (fast path), sgd_step_ptrs (torch),
//                      adam_step, adam_step_ptrs (torch)
//   plan.hpp           the cached plan of Optimizer.step(), a template over the formula's traits
//   kernels.hpp        the kernel list: every (operation, storage, buffer) the module calls
//   dispatch.hpp       the tables generated from a kernel list, one per instruction-set target
//   kernels_target.cpp the table of one target (compiled once per target)
//   kernel_api.hpp     the kernel table as a capsule, for minimalsgd._bench_core (csrc/bench/)
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <string>

#include <minimalsgd/cpu.hpp>
#include <minimalsgd/version.hpp>

#include "buffers.hpp"
#include "entry_points.hpp"
#include "kernel_api.hpp"
#include "plan.hpp"
#include "runtime.hpp"

namespace py = pybind11;
using namespace minimalsgd_python;

PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
    m.doc() = "minimalsgd native kernels (private: use the minimalsgd package)";

    // The kernel set: the best the CPU supports, or MINIMALSGD_ISA when it names one it supports.
#if defined(_OPENMP)
    g_default_threads = omp_get_max_threads();
#endif
    // A bad MINIMALSGD_ISA warns and keeps the best kernels: failing the import instead would
    // silently put the whole package on the NumPy backend.
    g_isa = static_cast<int>(best_compiled_isa());
    if (const char* env = std::getenv("MINIMALSGD_ISA")) {
        if (*env != '\0') {
            try {
                set_isa(env);
            } catch (const py::value_error& e) {
                const std::string msg = std::string("MINIMALSGD_ISA ignored: ") + e.what() + "; using '" + get_isa() + "'";
                if (PyErr_WarnEx(PyExc_RuntimeWarning, msg.c_str(), 1) < 0) {
                    throw py::error_already_set();
                }
            }
        }
    }

    m.def("sgd_step", &sgd_step, py::arg("values"), py::arg("grads"), py::arg("momentum_buffers"),
          py::arg("first_step"), py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"),
          py::arg("nesterov"), py::arg("maximize"), py::arg("grad_scale"), py::arg("check_overlap") = true,
          py::arg("stochastic_rounding") = false, py::arg("seed") = 0, py::arg("rounding_step") = 0,
          py::arg("rounding_keys") = py::none(), py::arg("rounding_offsets") = py::none(),
          "The fused step over lists of float32/float64/float16/bfloat16 contiguous arrays, in place, in one call.");
    m.def("sgd_step_groups", &sgd_step_groups, py::arg("values"), py::arg("grads"), py::arg("momentum_buffers"),
          py::arg("first_step"), py::arg("group_of"), py::arg("options"), py::arg("grad_scale"),
          py::arg("check_overlap") = true, py::arg("stochastic_rounding") = false, py::arg("seed") = 0,
          py::arg("rounding_step") = 0, py::arg("rounding_keys") = py::none(), py::arg("rounding_offsets") = py::none(),
          "The fused step with per-tensor options (tensor i uses options[group_of[i]]), all tensors in one call.");
    m.def("sum_of_squares", &sum_of_squares, py::arg("arrays"),
          "Sum of x*x over a list of float32/float64/float16/bfloat16 contiguous arrays, accumulated in double.");
    m.attr("bfloat16_available") = init_bfloat16();
    g_str_value = PyUnicode_InternFromString("value");
    g_str_grad = PyUnicode_InternFromString("grad");
    static PyMethodDef try_sgd_step_def = {
        "try_sgd_step", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(&try_sgd_step_fastcall)),
        METH_FASTCALL,
        "try_sgd_step(values, grads, momentum_buffers, first_step, lr, momentum, dampening, weight_decay, nesterov, "
        "maximize, grad_scale[, stochastic_rounding, seed, rounding_step, rounding_keys])\n\nThe functional step when "
        "every input is valid and native; False (nothing written) otherwise. Positional arguments only."};
    m.attr("try_sgd_step") = py::reinterpret_steal<py::object>(PyCFunction_NewEx(&try_sgd_step_def, nullptr, m.attr("__name__").ptr()));
    m.def("sgd_step_ptrs", &sgd_step_ptrs, py::arg("kinds"), py::arg("value_ptrs"), py::arg("grad_ptrs"),
          py::arg("buf_ptrs"), py::arg("sizes"), py::arg("first_step"), py::arg("lr"), py::arg("momentum"),
          py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"),
          py::arg("grad_scale"), py::arg("stochastic_rounding") = false, py::arg("seed") = 0,
          py::arg("rounding_step") = 0, py::arg("rounding_keys") = py::none(),
          "Private to minimalsgd.torch: the step over raw contiguous buffers.");
    m.def("adam_step", &adam_step, py::arg("values"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"),
          py::arg("max_exp_avg_sqs"), py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"),
          py::arg("eps"), py::arg("weight_decay"), py::arg("amsgrad"), py::arg("maximize"), py::arg("decoupled"),
          py::arg("grad_scale"), py::arg("check_overlap") = true,
          "The fused Adam/AdamW step over lists of float32/float64 contiguous arrays, in place, in one call.");
    m.def("adam_step_ptrs", &adam_step_ptrs, py::arg("kinds"), py::arg("value_ptrs"), py::arg("grad_ptrs"),
          py::arg("exp_avg_ptrs"), py::arg("exp_avg_sq_ptrs"), py::arg("max_exp_avg_sq_ptrs"), py::arg("sizes"),
          py::arg("steps"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
          py::arg("weight_decay"), py::arg("amsgrad"), py::arg("maximize"), py::arg("decoupled"),
          py::arg("grad_scale"), "Private to minimalsgd.torch: the Adam step over raw contiguous buffers.");
    bind_plan<SgdFormula>(m, "SgdPlan");
    bind_plan<AdamFormula>(m, "AdamPlan");
    // The kernel table, for minimalsgd._bench_core (the bench's bare kernel call).
    static const KernelApi kernel_api{
        kKernelLayout, sizeof(KernelTable), []() -> const KernelTable& { return current_table(); },
        []() { return static_cast<Isa>(g_isa.load()); }, &parallel};
    m.attr("_kernel_api") = py::capsule(&kernel_api, kKernelApiName);
    m.def("get_isa", &get_isa, "The instruction set whose kernels run.");
    m.def("set_isa", &set_isa, py::arg("isa"), "Run the kernels of 'baseline', 'avx2', 'avx512' or 'avx512_bf16'.");
    m.def("supported_isas", &supported_isas, "The instruction sets compiled into this build that this CPU supports.");
    m.def("get_num_threads", &get_num_threads);
    m.def(
        "get_num_threads_setting", []() { return g_num_threads.load(); },
        "What set_num_threads() set: 0 when OpenMP's setting rules.");
    m.def("set_num_threads", &set_num_threads, py::arg("n"));
    m.def("get_grain", []() { return g_grain.load(); });
    m.def(
        "set_grain",
        [](std::size_t grain) { g_grain = grain; }, py::arg("grain"),
        "Elements below which a call runs on one thread.");
#if defined(_OPENMP)
    m.attr("openmp") = true;
#else
    m.attr("openmp") = false;
#endif
    py::tuple compiled(std::size(kCompiledIsas));
    for (std::size_t i = 0; i < std::size(kCompiledIsas); ++i) {
        compiled[i] = minimalsgd::isa_name(kCompiledIsas[i]);
    }
    m.attr("compiled_isas") = compiled;
    m.attr("processor") = minimalsgd::processor_name();
    m.attr("baseline_simd") = minimalsgd::baseline_simd();
    m.attr("__version__") = MINIMALSGD_VERSION_STRING;
}
