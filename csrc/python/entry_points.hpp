// minimalsgd._core: the functional entry points. The checked step and sum of squares over lists
// of arrays, the fast path of the functional sgd_step (serves only the valid, all-native case and
// otherwise writes nothing and says so), and the step over raw addresses for minimalsgd.torch.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <string>
#include <vector>

#include "buffers.hpp"
#include "runtime.hpp"

namespace py = pybind11;

namespace minimalsgd_python {

// Runs the spans of one call with the kernels of the chosen instruction set (GIL released by the
// caller); each span refers to one of the `n_groups` options sets.
inline void run_kernels(const Batch& b, const minimalsgd::SgdOptions* groups, std::size_t n_groups,
                        double grad_scale) {
    const KernelTable& k = table_for(static_cast<Isa>(g_isa.load()));
    const minimalsgd::Parallel par = parallel();
    const float scale32 = static_cast<float>(grad_scale);
    if (!b.f32.empty()) {
        k.step_f32(b.f32.data(), b.f32.size(), groups, n_groups, scale32, par);
    }
    if (!b.f64.empty()) {
        k.step_f64(b.f64.data(), b.f64.size(), groups, n_groups, grad_scale, par);
    }
    if (!b.bf16s.empty()) {
        k.step_bf16(b.bf16s.data(), b.bf16s.size(), groups, n_groups, scale32, par);
    }
    if (!b.bf16_f32.empty()) {
        k.step_bf16_f32(b.bf16_f32.data(), b.bf16_f32.size(), groups, n_groups, scale32, par);
    }
    if (!b.f16s.empty()) {
        k.step_f16(b.f16s.data(), b.f16s.size(), groups, n_groups, scale32, par);
    }
    if (!b.f16_f32.empty()) {
        k.step_f16_f32(b.f16_f32.data(), b.f16_f32.size(), groups, n_groups, scale32, par);
    }
}

// The same with one options set for every span.
inline void run_kernels(const Batch& b, const minimalsgd::SgdOptions& opts, double grad_scale) {
    run_kernels(b, &opts, 1, grad_scale);
}

// A Python int in [0, 2^64) as uint64 (false for anything else; no exception left set).
inline bool uint64_of(PyObject* o, std::uint64_t* out) {
    if (!PyLong_Check(o) || PyBool_Check(o)) {
        return false;
    }
    const unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
        PyErr_Clear();
        return false;
    }
    *out = static_cast<std::uint64_t>(v);
    return true;
}

// The per-tensor stochastic-rounding keys: None (the tensor's position) or one int per tensor.
inline bool keys_of(PyObject* o, std::size_t n, std::vector<std::uint64_t>& out) {
    out.resize(n);
    if (o == Py_None) {
        for (std::size_t i = 0; i < n; ++i) {
            out[i] = i;
        }
        return true;
    }
    if (!(PyList_CheckExact(o) || PyTuple_CheckExact(o)) || static_cast<std::size_t>(PySequence_Fast_GET_SIZE(o)) != n) {
        return false;
    }
    PyObject** it = PySequence_Fast_ITEMS(o);
    for (std::size_t i = 0; i < n; ++i) {
        if (!uint64_of(it[i], &out[i])) {
            return false;
        }
    }
    return true;
}

// The rounding fields of `opts` from Python objects; false when one is not what it must be.
inline bool rounding_of(PyObject* sr, PyObject* seed, PyObject* step, minimalsgd::SgdOptions& opts) {
    if (!PyBool_Check(sr)) {
        return false;
    }
    opts.stochastic_rounding = sr == Py_True;
    return uint64_of(seed, &opts.seed) && uint64_of(step, &opts.step);
}

// ---------------------------------------------------------------------------------------------
// Entry points

inline void sgd_step(py::handle values, py::handle grads, py::object momentum_buffers, py::object first_steps, double lr,
              double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
              double grad_scale, bool check_overlaps, bool stochastic_rounding, py::handle seed,
              py::handle rounding_step, py::handle keys) {
    minimalsgd::SgdOptions opts{lr, momentum, dampening, weight_decay, nesterov, maximize};
    const std::string error = minimalsgd::validate(opts);
    if (!error.empty()) {
        throw py::value_error(error);
    }
    opts.stochastic_rounding = stochastic_rounding;
    if (!uint64_of(seed.ptr(), &opts.seed)) {
        throw py::type_error("seed must be an int in [0, 2**64)");
    }
    if (!uint64_of(rounding_step.ptr(), &opts.step)) {
        throw py::type_error("rounding_step must be an int in [0, 2**64)");
    }
    const std::vector<PyObject*> vs = items(values, "values");
    const std::vector<PyObject*> gs = items(grads, "grads");
    const std::size_t n = vs.size();
    if (gs.size() != n) {
        throw py::value_error("grads has " + std::to_string(gs.size()) + " arrays for " + std::to_string(n) + " values");
    }
    const bool with_momentum = momentum != 0;
    std::vector<PyObject*> bs;
    if (with_momentum) {
        if (momentum_buffers.is_none()) {
            throw py::value_error("momentum != 0 needs momentum_buffers");
        }
        bs = items(momentum_buffers, "momentum_buffers");
        if (bs.size() != n) {
            throw py::value_error("momentum_buffers has " + std::to_string(bs.size()) + " arrays for " +
                                  std::to_string(n) + " values");
        }
    }
    std::vector<char> first(n, 0);
    if (PyBool_Check(first_steps.ptr())) {
        std::fill(first.begin(), first.end(), first_steps.ptr() == Py_True ? 1 : 0);
    } else {
        const std::vector<PyObject*> fs = items(first_steps, "first_step");
        if (fs.size() != n) {
            throw py::value_error("first_step has " + std::to_string(fs.size()) + " flags for " + std::to_string(n) +
                                  " values");
        }
        for (std::size_t i = 0; i < n; ++i) {
            const int t = PyObject_IsTrue(fs[i]);
            if (t < 0) {
                throw py::error_already_set();
            }
            first[i] = static_cast<char>(t);
        }
    }

    std::vector<std::uint64_t> key;
    if (!keys_of(keys.ptr(), n, key)) {
        throw py::type_error("rounding_keys must be None or a list/tuple of one int in [0, 2**64) per tensor");
    }
    // Check everything before writing anything.
    Batch batch(n);
    std::vector<py::object> keep;  // the arrays stay alive while the GIL is released
    keep.reserve(3 * n);
    for (std::size_t i = 0; i < n; ++i) {
        const View w = view_of(vs[i], "values", i, true);
        const View g = view_of(gs[i], "grads", i, false);
        if (!same_layout(w, g)) {
            throw py::value_error("grads[" + std::to_string(i) + "] must have the dtype, shape and memory order of values[" +
                                  std::to_string(i) + "]");
        }
        View b{};
        if (with_momentum) {
            b = view_of(bs[i], "momentum_buffers", i, true);
            if (!buffer_fits(w, b)) {
                throw py::value_error("momentum_buffers[" + std::to_string(i) +
                                      "] must have the dtype (or float32 for a 16-bit value), shape and memory order "
                                      "of values[" + std::to_string(i) + "]");
            }
            keep.emplace_back(py::reinterpret_borrow<py::object>(bs[i]));
        }
        keep.emplace_back(py::reinterpret_borrow<py::object>(vs[i]));
        keep.emplace_back(py::reinterpret_borrow<py::object>(gs[i]));
        batch.add(w.kind, w.data, g.data, with_momentum ? b.data : nullptr, w.size, first[i] != 0, i,
                  with_momentum ? b.kind : w.kind, key[i]);
    }
    if (check_overlaps) {
        check_overlap(batch.ranges);
    }
    py::gil_scoped_release release;
    run_kernels(batch, opts, grad_scale);
}

inline double sum_of_squares(py::handle arrays) {
    const std::vector<PyObject*> xs = items(arrays, "grads");
    std::vector<minimalsgd::ConstSpan<float>> f32;
    std::vector<minimalsgd::ConstSpan<double>> f64;
    std::vector<minimalsgd::ConstSpan<minimalsgd::bfloat16_t>> bf16;
    std::vector<minimalsgd::ConstSpan<minimalsgd::float16_t>> f16;
    std::vector<py::object> keep;
    keep.reserve(xs.size());
    for (std::size_t i = 0; i < xs.size(); ++i) {
        const View v = view_of(xs[i], "grads", i, false);
        keep.emplace_back(py::reinterpret_borrow<py::object>(xs[i]));
        switch (v.kind) {
            case Kind::f32:
                f32.push_back({reinterpret_cast<const float*>(v.data), v.size});
                break;
            case Kind::f64:
                f64.push_back({reinterpret_cast<const double*>(v.data), v.size});
                break;
            case Kind::bf16:
                bf16.push_back({reinterpret_cast<const minimalsgd::bfloat16_t*>(v.data), v.size});
                break;
            case Kind::f16:
                f16.push_back({reinterpret_cast<const minimalsgd::float16_t*>(v.data), v.size});
                break;
        }
    }
    const KernelTable& k = table_for(static_cast<Isa>(g_isa.load()));
    const minimalsgd::Parallel par = parallel();
    py::gil_scoped_release release;
    double total = 0;
    if (!f32.empty()) {
        total += k.sumsq_f32(f32.data(), f32.size(), par);
    }
    if (!f64.empty()) {
        total += k.sumsq_f64(f64.data(), f64.size(), par);
    }
    if (!bf16.empty()) {
        total += k.sumsq_bf16(bf16.data(), bf16.size(), par);
    }
    if (!f16.empty()) {
        total += k.sumsq_f16(f16.data(), f16.size(), par);
    }
    return total;
}


// The functional step when every input is valid and native: true when done, false (nothing
// written) when the Python layer must look.
inline bool try_sgd_step(py::handle values, py::handle grads, py::handle buffers, py::handle first_step, py::handle lr_o,
                  py::handle momentum_o, py::handle dampening_o, py::handle weight_decay_o, py::handle nesterov_o,
                  py::handle maximize_o, py::handle grad_scale_o, py::handle sr_o, py::handle seed_o,
                  py::handle step_o, py::handle keys_o) {
    minimalsgd::SgdOptions opts{0.0};
    double scale = 1.0;
    if (!rounding_of(sr_o.ptr(), seed_o.ptr(), step_o.ptr(), opts)) {
        return false;
    }
    if (!real_of(lr_o.ptr(), &opts.lr) || !real_of(momentum_o.ptr(), &opts.momentum) ||
        !real_of(dampening_o.ptr(), &opts.dampening) || !real_of(weight_decay_o.ptr(), &opts.weight_decay) ||
        !real_of(grad_scale_o.ptr(), &scale) || !PyBool_Check(nesterov_o.ptr()) || !PyBool_Check(maximize_o.ptr())) {
        return false;
    }
    opts.nesterov = nesterov_o.ptr() == Py_True;
    opts.maximize = maximize_o.ptr() == Py_True;
    if (!minimalsgd::validate(opts).empty() || !std::isfinite(scale) || scale < 0) {
        return false;
    }
    std::vector<PyObject*> vs, gs, bs;
    if (!arrays_of(values.ptr(), vs) || !arrays_of(grads.ptr(), gs) || gs.size() != vs.size()) {
        return false;
    }
    const std::size_t n = vs.size();
    const bool with_momentum = opts.momentum != 0;
    if (with_momentum && (!arrays_of(buffers.ptr(), bs) || bs.size() != n)) {
        return false;
    }
    std::vector<std::uint64_t> key;
    if (!keys_of(keys_o.ptr(), n, key)) {
        return false;
    }
    PyObject* fs = first_step.ptr();
    const bool first_is_bool = PyBool_Check(fs);
    if (!first_is_bool && (!(PyList_CheckExact(fs) || PyTuple_CheckExact(fs)) ||
                           static_cast<std::size_t>(PySequence_Fast_GET_SIZE(fs)) != n)) {
        return false;
    }
    Batch batch(n);
    for (std::size_t i = 0; i < n; ++i) {
        View w{}, g{}, b{};
        if (inspect(vs[i], true, w) != Bad::none || inspect(gs[i], false, g) != Bad::none || !same_layout(w, g)) {
            return false;
        }
        if (with_momentum && (inspect(bs[i], true, b) != Bad::none || !buffer_fits(w, b))) {
            return false;
        }
        PyObject* f = first_is_bool ? fs : PySequence_Fast_ITEMS(fs)[i];
        if (!PyBool_Check(f)) {
            return false;
        }
        batch.add(w.kind, w.data, g.data, with_momentum ? b.data : nullptr, w.size, f == Py_True, i,
                  with_momentum ? b.kind : w.kind, key[i]);
    }
    if (batch.overlaps()) {
        return false;
    }
    // The arrays stay alive while the GIL is released: the caller's arguments reference them.
    py::gil_scoped_release release;
    run_kernels(batch, opts, scale);
    return true;
}

// The step over raw buffers, for minimalsgd.torch (whose tensors are not NumPy arrays): one
// (dtype code 0 = float32 / 1 = float64 / 2 = bfloat16 / 3 = float16, value, grad, buffer address,
// element count, first step) per tensor, taken from live, dense, contiguous CPU tensors that the
// caller holds during the call; buffers are of the value's dtype. Returns false (nothing written)
// for invalid options or buffers that overlap. `keys` (None: positions) are the tensors'
// stochastic-rounding keys.
inline bool sgd_step_ptrs(py::list kinds, py::list value_ptrs, py::list grad_ptrs, py::object buf_ptrs, py::list sizes,
                   py::list firsts, double lr, double momentum, double dampening, double weight_decay, bool nesterov,
                   bool maximize, double grad_scale, py::handle sr, py::handle seed, py::handle rounding_step,
                   py::handle keys) {
    minimalsgd::SgdOptions opts{lr, momentum, dampening, weight_decay, nesterov, maximize};
    if (!minimalsgd::validate(opts).empty() || !std::isfinite(grad_scale) || grad_scale < 0 ||
        !rounding_of(sr.ptr(), seed.ptr(), rounding_step.ptr(), opts)) {
        return false;
    }
    const std::size_t n = py::len(kinds);
    const bool with_momentum = momentum != 0;
    if (py::len(value_ptrs) != n || py::len(grad_ptrs) != n || py::len(sizes) != n || py::len(firsts) != n ||
        (with_momentum && (buf_ptrs.is_none() || py::len(buf_ptrs) != n))) {
        throw py::value_error("sgd_step_ptrs: lists of different lengths");
    }
    const py::list bufs = with_momentum ? py::list(buf_ptrs) : py::list();
    std::vector<std::uint64_t> key;
    if (!keys_of(keys.ptr(), n, key)) {
        throw py::value_error("sgd_step_ptrs: keys must be None or one int per tensor");
    }
    // Plain C API on the list items: pybind11's casts cost ~100 ns each, and there are 6 per tensor.
    const auto address = [](py::list& l, std::size_t i) -> char* {
        const unsigned long long v = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(l.ptr(), static_cast<Py_ssize_t>(i)));
        if (PyErr_Occurred()) {
            throw py::error_already_set();
        }
        return reinterpret_cast<char*>(static_cast<std::uintptr_t>(v));
    };
    Batch batch(n);
    for (std::size_t i = 0; i < n; ++i) {
        const auto idx = static_cast<Py_ssize_t>(i);
        const long kind = PyLong_AsLong(PyList_GET_ITEM(kinds.ptr(), idx));
        char* w = address(value_ptrs, i);
        char* g = address(grad_ptrs, i);
        char* b = with_momentum ? address(const_cast<py::list&>(bufs), i) : nullptr;
        const std::size_t size = reinterpret_cast<std::uintptr_t>(address(sizes, i));
        const int first = PyObject_IsTrue(PyList_GET_ITEM(firsts.ptr(), idx));
        if (first < 0 || (kind == -1 && PyErr_Occurred())) {
            throw py::error_already_set();
        }
        if (kind < 0 || kind > 3) {
            throw py::value_error("sgd_step_ptrs: dtype code must be 0, 1, 2 or 3");
        }
        static constexpr Kind kKinds[] = {Kind::f32, Kind::f64, Kind::bf16, Kind::f16};
        const Kind k = kKinds[kind];
        batch.add(k, w, g, b, size, first != 0, i, k, key[i]);
    }
    if (batch.overlaps()) {
        return false;
    }
    py::gil_scoped_release release;
    run_kernels(batch, opts, grad_scale);
    return true;
}

}  // namespace minimalsgd_python
