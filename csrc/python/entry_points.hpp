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

// Runs every row of a batch of spans (a Batch's or an AdamBatch's) that has tensors, in the
// list's order, with the kernels of the chosen instruction set (GIL released by the caller);
// each span refers to one of the `n_groups` options sets.
template <class Op>
inline void run_spans(const SpansOf<Op>& spans, const typename Op::Options* groups, std::size_t n_groups,
                      double grad_scale) {
    const KernelTable& k = current_table();
    const minimalsgd::Parallel par = parallel();
    spans.for_each([&](auto kernel, const auto& v) {
        using K = decltype(kernel);
        if (!v.empty()) {
            using Scale = typename Op::template Scale<typename K::storage, typename K::buffer>;
            k.template get<Op, typename K::storage, typename K::buffer>()(v.data(), v.size(), groups, n_groups,
                                                                          static_cast<Scale>(grad_scale), par);
        }
    });
}

// Every span of an SGD batch.
inline void run_batch(const Batch& b, const minimalsgd::SgdOptions* groups, std::size_t n_groups, double grad_scale) {
    run_spans<ops::sgd>(b.spans, groups, n_groups, grad_scale);
}

inline void run_batch(const Batch& b, const minimalsgd::SgdOptions& opts, double grad_scale) {
    run_batch(b, &opts, 1, grad_scale);
}

// Every span of an Adam batch, with one options set.
inline void run_batch(const AdamBatch& b, const minimalsgd::AdamOptions& opts, double grad_scale) {
    run_spans<ops::adam>(b.spans, &opts, 1, grad_scale);
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

// One int in [0, 2^64) per tensor from a list or tuple of n of them (false for anything else).
inline bool uint64s_of(PyObject* o, std::size_t n, std::vector<std::uint64_t>& out) {
    out.resize(n);
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

// The per-tensor stochastic-rounding keys: None (the tensor's position) or one int per tensor.
inline bool keys_of(PyObject* o, std::size_t n, std::vector<std::uint64_t>& out) {
    if (o == Py_None) {
        out.resize(n);
        for (std::size_t i = 0; i < n; ++i) {
            out[i] = i;
        }
        return true;
    }
    return uint64s_of(o, n, out);
}

// The per-tensor rounding index of each tensor's first element (TensorSpan::index0): None (0 for
// every tensor) or one int per tensor.
inline bool offsets_of(PyObject* o, std::size_t n, std::vector<std::uint64_t>& out) {
    if (o == Py_None) {
        out.assign(n, 0);
        return true;
    }
    return uint64s_of(o, n, out);
}

// The rounding fields of `opts` from Python objects; false when one is not what it must be.
inline bool rounding_of(PyObject* sr, PyObject* seed, PyObject* step, minimalsgd::SgdOptions& opts) {
    if (!PyBool_Check(sr)) {
        return false;
    }
    opts.stochastic_rounding = sr == Py_True;
    return uint64_of(seed, &opts.seed) && uint64_of(step, &opts.step);
}

// The checked rounding arguments of an entry point: TypeError naming the bad one.
inline std::vector<std::uint64_t> checked_rounding(bool sr, py::handle seed, py::handle step, py::handle keys,
                                                   std::size_t n, minimalsgd::SgdOptions* opts, std::size_t n_opts,
                                                   py::handle offsets, std::vector<std::uint64_t>& offset) {
    std::uint64_t s = 0, t = 0;
    if (!uint64_of(seed.ptr(), &s)) {
        throw py::type_error("seed must be an int in [0, 2**64)");
    }
    if (!uint64_of(step.ptr(), &t)) {
        throw py::type_error("rounding_step must be an int in [0, 2**64)");
    }
    for (std::size_t j = 0; j < n_opts; ++j) {
        opts[j].stochastic_rounding = sr;
        opts[j].seed = s;
        opts[j].step = t;
    }
    std::vector<std::uint64_t> key;
    if (!keys_of(keys.ptr(), n, key)) {
        throw py::type_error("rounding_keys must be None or a list/tuple of one int in [0, 2**64) per tensor");
    }
    if (!offsets_of(offsets.ptr(), n, offset)) {
        throw py::type_error("rounding_offsets must be None or a list/tuple of one int in [0, 2**64) per tensor");
    }
    return key;
}

// The momentum buffer `obj` of value `w`: viewed, of w's shape and memory order, and of w's dtype
// or (for a 16-bit value) float32.
inline View buffer_of(PyObject* obj, std::size_t i, const View& w) {
    const View b = view_of(obj, "momentum_buffers", i, true);
    if (!buffer_fits(w, b)) {
        throw py::value_error("momentum_buffers[" + std::to_string(i) +
                              "] must have the dtype (or float32 for a 16-bit value), shape and memory order of values[" +
                              std::to_string(i) + "]");
    }
    return b;
}

// `obj`, the `what`[i] companion of the value `w` (a grad or a state buffer): viewed, and of w's
// dtype, shape and memory order.
inline View companion_of(PyObject* obj, const char* what, std::size_t i, const View& w, bool writeable) {
    const View c = view_of(obj, what, i, writeable);
    if (!same_layout(w, c)) {
        throw py::value_error(where(what, i) + " must have the dtype, shape and memory order of values[" +
                              std::to_string(i) + "]");
    }
    return c;
}

// ---------------------------------------------------------------------------------------------
// Entry points

inline void sgd_step(py::handle values, py::handle grads, py::object momentum_buffers, py::object first_steps, double lr,
              double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
              double grad_scale, bool check_overlaps, bool stochastic_rounding, py::handle seed,
              py::handle rounding_step, py::handle rounding_keys, py::handle rounding_offsets) {
    minimalsgd::SgdOptions opts{lr, momentum, dampening, weight_decay, nesterov, maximize};
    const std::string error = minimalsgd::validate(opts);
    if (!error.empty()) {
        throw py::value_error(error);
    }
    const std::vector<PyObject*> vs = items(values, "values");
    const std::vector<PyObject*> gs = items(grads, "grads");
    const std::size_t n = vs.size();
    std::vector<std::uint64_t> offset;
    const std::vector<std::uint64_t> key =
        checked_rounding(stochastic_rounding, seed, rounding_step, rounding_keys, n, &opts, 1, rounding_offsets, offset);
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

    // Check everything before writing anything.
    Batch batch(n);
    std::vector<py::object> keep;  // the arrays stay alive while the GIL is released
    keep.reserve(3 * n);
    for (std::size_t i = 0; i < n; ++i) {
        const View w = view_of(vs[i], "values", i, true);
        const View g = companion_of(gs[i], "grads", i, w, false);
        View b{};
        if (with_momentum) {
            b = buffer_of(bs[i], i, w);
            keep.emplace_back(py::reinterpret_borrow<py::object>(bs[i]));
        }
        keep.emplace_back(py::reinterpret_borrow<py::object>(vs[i]));
        keep.emplace_back(py::reinterpret_borrow<py::object>(gs[i]));
        batch.add(w.kind, w.data, g.data, with_momentum ? b.data : nullptr, w.size, first[i] != 0, i, 0,
                  with_momentum ? b.kind : w.kind, key[i], offset[i]);
    }
    if (check_overlaps) {
        check_overlap(batch.ranges);
    }
    py::gil_scoped_release release;
    run_batch(batch, opts, grad_scale);
}

// The step over lists of arrays with per-tensor options: tensor i uses options[group_of[i]]
// ((lr, momentum, dampening, weight_decay, nesterov, maximize) tuples); its momentum buffer may be
// None when its group's momentum is 0. All tensors of all groups in one kernel call.
inline void sgd_step_groups(py::handle values, py::handle grads, py::handle momentum_buffers, py::handle first_steps,
                            py::handle group_of, py::handle options, double grad_scale, bool check_overlaps,
                            bool stochastic_rounding, py::handle seed, py::handle rounding_step,
                            py::handle rounding_keys, py::handle rounding_offsets) {
    const std::vector<PyObject*> os = items(options, "options");
    std::vector<minimalsgd::SgdOptions> opts;
    for (std::size_t j = 0; j < os.size(); ++j) {
        const py::tuple t = py::reinterpret_borrow<py::object>(os[j]).cast<py::tuple>();
        if (py::len(t) != 6) {
            throw py::value_error("options[" + std::to_string(j) +
                                  "] must be (lr, momentum, dampening, weight_decay, nesterov, maximize)");
        }
        opts.push_back({t[0].cast<double>(), t[1].cast<double>(), t[2].cast<double>(), t[3].cast<double>(),
                        t[4].cast<bool>(), t[5].cast<bool>()});
        const std::string error = minimalsgd::validate(opts.back());
        if (!error.empty()) {
            throw py::value_error("options[" + std::to_string(j) + "]: " + error);
        }
    }
    if (!std::isfinite(grad_scale) || grad_scale < 0) {
        throw py::value_error("grad_scale must be a finite number >= 0");
    }
    const std::vector<PyObject*> vs = items(values, "values");
    const std::vector<PyObject*> gs = items(grads, "grads");
    const std::vector<PyObject*> bs = items(momentum_buffers, "momentum_buffers");
    const std::vector<PyObject*> fs = items(first_steps, "first_step");
    const std::vector<PyObject*> ix = items(group_of, "group_of");
    const std::size_t n = vs.size();
    if (gs.size() != n || bs.size() != n || fs.size() != n || ix.size() != n) {
        throw py::value_error("values, grads, momentum_buffers, first_step and group_of must have one length");
    }
    std::vector<std::uint64_t> offset;
    const std::vector<std::uint64_t> key = checked_rounding(stochastic_rounding, seed, rounding_step, rounding_keys, n,
                                                            opts.data(), opts.size(), rounding_offsets, offset);
    Batch batch(n);
    std::vector<py::object> keep;  // the arrays stay alive while the GIL is released
    keep.reserve(3 * n);
    for (std::size_t i = 0; i < n; ++i) {
        const long group = PyLong_AsLong(ix[i]);
        if (group == -1 && PyErr_Occurred()) {
            throw py::error_already_set();
        }
        if (group < 0 || static_cast<std::size_t>(group) >= opts.size()) {
            throw py::value_error("group_of[" + std::to_string(i) + "] is not an index into options");
        }
        const bool with_momentum = opts[static_cast<std::size_t>(group)].momentum != 0;
        const View w = view_of(vs[i], "values", i, true);
        const View g = view_of(gs[i], "grads", i, false);
        if (!same_layout(w, g)) {
            throw py::value_error("grads[" + std::to_string(i) + "] must have the dtype, shape and memory order of values[" +
                                  std::to_string(i) + "]");
        }
        View b{};
        if (with_momentum) {
            b = buffer_of(bs[i], i, w);
            keep.emplace_back(py::reinterpret_borrow<py::object>(bs[i]));
        }
        const int first = PyObject_IsTrue(fs[i]);
        if (first < 0) {
            throw py::error_already_set();
        }
        keep.emplace_back(py::reinterpret_borrow<py::object>(vs[i]));
        keep.emplace_back(py::reinterpret_borrow<py::object>(gs[i]));
        batch.add(w.kind, w.data, g.data, with_momentum ? b.data : nullptr, w.size, first != 0, i,
                  static_cast<std::uint32_t>(group), with_momentum ? b.kind : w.kind, key[i], offset[i]);
    }
    if (check_overlaps) {
        check_overlap(batch.ranges);
    }
    py::gil_scoped_release release;
    run_batch(batch, opts.data(), opts.size(), grad_scale);
}

// The sum of squares of every array, in double: the per-type totals added in the list's order.
inline double sum_of_squares(py::handle arrays) {
    const std::vector<PyObject*> xs = items(arrays, "grads");
    SpansOf<ops::sumsq> spans;
    std::vector<py::object> keep;
    keep.reserve(xs.size());
    for (std::size_t i = 0; i < xs.size(); ++i) {
        const View v = view_of(xs[i], "grads", i, false);
        keep.emplace_back(py::reinterpret_borrow<py::object>(xs[i]));
        const bool known = spans.with(v.kind, v.kind, [&](auto& spans_of_kind) {
            using Span = typename std::decay_t<decltype(spans_of_kind)>::value_type;
            spans_of_kind.push_back(Span{reinterpret_cast<decltype(Span::data)>(v.data), v.size});
        });
        if (!known) {
            throw py::type_error(where("grads", i) + ": no sum-of-squares kernel for its dtype");
        }
    }
    const KernelTable& k = current_table();
    const minimalsgd::Parallel par = parallel();
    py::gil_scoped_release release;
    double total = 0;
    spans.for_each([&](auto kernel, const auto& s) {
        using K = decltype(kernel);
        if (!s.empty()) {
            total += k.template get<ops::sumsq, typename K::storage>()(s.data(), s.size(), par);
        }
    });
    return total;
}


// The functional step when every input is valid and native: true when done, false (nothing
// written) when the Python layer must look.
inline bool try_sgd_step(py::handle values, py::handle grads, py::handle buffers, py::handle first_step, py::handle lr_o,
                  py::handle momentum_o, py::handle dampening_o, py::handle weight_decay_o, py::handle nesterov_o,
                  py::handle maximize_o, py::handle grad_scale_o, PyObject* sr_o = Py_False, PyObject* seed_o = nullptr,
                  PyObject* step_o = nullptr, PyObject* keys_o = Py_None) {
    minimalsgd::SgdOptions opts{0.0};
    double scale = 1.0;
    if (seed_o != nullptr && (step_o == nullptr || !rounding_of(sr_o, seed_o, step_o, opts))) {
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
    // Reused per thread: a call on a small tensor allocates nothing.
    thread_local std::vector<PyObject*> vs, gs, bs;
    thread_local Batch batch(0);
    if (!arrays_of(values.ptr(), vs) || !arrays_of(grads.ptr(), gs) || gs.size() != vs.size()) {
        return false;
    }
    const std::size_t n = vs.size();
    const bool with_momentum = opts.momentum != 0;
    if (with_momentum && (!arrays_of(buffers.ptr(), bs) || bs.size() != n)) {
        return false;
    }
    PyObject* fs = first_step.ptr();
    const bool first_is_bool = PyBool_Check(fs);
    if (!first_is_bool && (!(PyList_CheckExact(fs) || PyTuple_CheckExact(fs)) ||
                           static_cast<std::size_t>(PySequence_Fast_GET_SIZE(fs)) != n)) {
        return false;
    }
    thread_local std::vector<std::uint64_t> key;
    if (!keys_of(keys_o, n, key)) {
        return false;
    }
    batch.clear();
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
        batch.add(w.kind, w.data, g.data, with_momentum ? b.data : nullptr, w.size, f == Py_True, i, 0,
                  with_momentum ? b.kind : w.kind, key[i]);
    }
    if (batch.overlaps()) {
        return false;
    }
    // The arrays stay alive while the GIL is released: the caller's arguments reference them.
    py::gil_scoped_release release;
    run_batch(batch, opts, scale);
    return true;
}

// try_sgd_step as a plain CPython function (METH_FASTCALL, positional arguments only): the
// functional step on a small tensor costs about as much as the kernel, and a general-purpose
// dispatcher would be a sizeable part of it.
inline PyObject* try_sgd_step_fastcall(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 11 && nargs != 15) {
        PyErr_Format(PyExc_TypeError, "try_sgd_step() takes 11 or 15 positional arguments (%zd given)", nargs);
        return nullptr;
    }
    try {
        // The last four: stochastic_rounding, seed, rounding_step, rounding_keys.
        const bool done = nargs == 11 ? try_sgd_step(args[0], args[1], args[2], args[3], args[4], args[5], args[6],
                                                     args[7], args[8], args[9], args[10])
                                      : try_sgd_step(args[0], args[1], args[2], args[3], args[4], args[5], args[6],
                                                     args[7], args[8], args[9], args[10], args[11], args[12], args[13],
                                                     args[14]);
        PyObject* result = done ? Py_True : Py_False;
        Py_INCREF(result);
        return result;
    } catch (py::error_already_set& e) {
        e.restore();
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    }
    return nullptr;
}

// Item i of a list of addresses (or sizes) from minimalsgd.torch. Plain C API on the list items:
// pybind11's casts cost ~100 ns each, and there are 6 or more per tensor.
inline char* address(const py::list& l, std::size_t i) {
    const unsigned long long v = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(l.ptr(), static_cast<Py_ssize_t>(i)));
    if (PyErr_Occurred()) {
        throw py::error_already_set();
    }
    return reinterpret_cast<char*>(static_cast<std::uintptr_t>(v));
}

// The step over raw buffers, for minimalsgd.torch (whose tensors are not NumPy arrays): one
// (dtype code 0 = float32 / 1 = float64, value, grad, buffer address, element count, first step)
// per tensor, taken from live, dense, contiguous CPU tensors that the caller holds during the call.
// Returns false (nothing written) for invalid options or buffers that overlap.
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
    Batch batch(n);
    for (std::size_t i = 0; i < n; ++i) {
        const auto idx = static_cast<Py_ssize_t>(i);
        const long kind = PyLong_AsLong(PyList_GET_ITEM(kinds.ptr(), idx));
        char* w = address(value_ptrs, i);
        char* g = address(grad_ptrs, i);
        char* b = with_momentum ? address(bufs, i) : nullptr;
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
        batch.add(k, w, g, b, size, first != 0, i, 0, k, key[i]);
    }
    if (batch.overlaps()) {
        return false;
    }
    py::gil_scoped_release release;
    run_batch(batch, opts, grad_scale);
    return true;
}

// ---------------------------------------------------------------------------------------------
// Adam / AdamW

// The options of an Adam call, or ValueError naming what is wrong (also a bad grad_scale).
inline minimalsgd::AdamOptions adam_options(double lr, double beta1, double beta2, double eps, double weight_decay,
                                            bool amsgrad, bool maximize, bool decoupled, double grad_scale) {
    const minimalsgd::AdamOptions opts{lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled};
    const std::string error = minimalsgd::validate(opts);
    if (!error.empty()) {
        throw py::value_error(error);
    }
    if (!std::isfinite(grad_scale) || grad_scale < 0) {
        throw py::value_error("grad_scale must be a finite number >= 0, got " + std::to_string(grad_scale));
    }
    return opts;
}

// The step count of each of `n` tensors: one int for all, or a list/tuple of one int each, >= 1.
inline std::vector<std::int64_t> steps_of(py::handle steps, std::size_t n) {
    const auto one = [](PyObject* o, std::size_t i) -> std::int64_t {
        if (!PyLong_Check(o) || PyBool_Check(o)) {
            throw py::type_error(where("step", i) + " must be an int, got " + std::string(Py_TYPE(o)->tp_name));
        }
        const long long t = PyLong_AsLongLong(o);
        if (t == -1 && PyErr_Occurred()) {
            throw py::error_already_set();
        }
        if (t < 1) {
            throw py::value_error(where("step", i) + " must be >= 1 (the step this update makes), got " +
                                  std::to_string(t));
        }
        return static_cast<std::int64_t>(t);
    };
    if (PyLong_Check(steps.ptr())) {
        return std::vector<std::int64_t>(n, one(steps.ptr(), 0));
    }
    const std::vector<PyObject*> ss = items(steps, "step");
    if (ss.size() != n) {
        throw py::value_error("step has " + std::to_string(ss.size()) + " counts for " + std::to_string(n) + " values");
    }
    std::vector<std::int64_t> out(n);
    for (std::size_t i = 0; i < n; ++i) {
        out[i] = one(ss[i], i);
    }
    return out;
}

// The checked Adam/AdamW step over lists of arrays: every array viewed in place (never copied),
// every check before the first write, the kernels without the GIL.
inline void adam_step(py::handle values, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs,
                      py::object max_exp_avg_sqs, py::handle steps, double lr, double beta1, double beta2, double eps,
                      double weight_decay, bool amsgrad, bool maximize, bool decoupled, double grad_scale,
                      bool check_overlaps) {
    const minimalsgd::AdamOptions opts =
        adam_options(lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled, grad_scale);
    const std::vector<PyObject*> vs = items(values, "values");
    const std::size_t n = vs.size();
    const auto same_count = [n](py::handle seq, const char* what) {
        std::vector<PyObject*> out = items(seq, what);
        if (out.size() != n) {
            throw py::value_error(std::string(what) + " has " + std::to_string(out.size()) + " arrays for " +
                                  std::to_string(n) + " values");
        }
        return out;
    };
    const std::vector<PyObject*> gs = same_count(grads, "grads");
    const std::vector<PyObject*> ms = same_count(exp_avgs, "exp_avgs");
    const std::vector<PyObject*> v2s = same_count(exp_avg_sqs, "exp_avg_sqs");
    std::vector<PyObject*> vms;
    if (amsgrad) {
        if (max_exp_avg_sqs.is_none()) {
            throw py::value_error("amsgrad needs max_exp_avg_sqs");
        }
        vms = same_count(max_exp_avg_sqs, "max_exp_avg_sqs");
    }
    const std::vector<std::int64_t> ts = steps_of(steps, n);

    AdamBatch batch(n);
    std::vector<py::object> keep;  // the arrays stay alive while the GIL is released
    keep.reserve(5 * n);
    for (std::size_t i = 0; i < n; ++i) {
        const View w = view_of(vs[i], "values", i, true);
        if (is_half(w.kind)) {
            throw py::type_error(where("values", i) + " is float16/bfloat16: the native Adam kernel takes float32/float64");
        }
        const View g = companion_of(gs[i], "grads", i, w, false);
        const View m = companion_of(ms[i], "exp_avgs", i, w, true);
        const View v = companion_of(v2s[i], "exp_avg_sqs", i, w, true);
        const View vm = amsgrad ? companion_of(vms[i], "max_exp_avg_sqs", i, w, true) : View{};
        for (PyObject* o : {vs[i], gs[i], ms[i], v2s[i]}) {
            keep.emplace_back(py::reinterpret_borrow<py::object>(o));
        }
        if (amsgrad) {
            keep.emplace_back(py::reinterpret_borrow<py::object>(vms[i]));
        }
        batch.add(w.kind, w.data, g.data, m.data, v.data, amsgrad ? vm.data : nullptr, w.size, ts[i], i);
    }
    if (check_overlaps) {
        check_overlap(batch.ranges);
    }
    py::gil_scoped_release release;
    run_batch(batch, opts, grad_scale);
}

// The Adam step over raw buffers, for minimalsgd.torch: per tensor a dtype code (0 float32,
// 1 float64), the addresses of value, grad, exp_avg, exp_avg_sq (and max_exp_avg_sq with amsgrad),
// the element count and the step this update makes, from live, dense, contiguous CPU tensors that
// the caller holds during the call. Returns false (nothing written) for invalid options or steps,
// or buffers that overlap.
inline bool adam_step_ptrs(py::list kinds, py::list value_ptrs, py::list grad_ptrs, py::list exp_avg_ptrs,
                           py::list exp_avg_sq_ptrs, py::object max_ptrs, py::list sizes, py::list steps, double lr,
                           double beta1, double beta2, double eps, double weight_decay, bool amsgrad, bool maximize,
                           bool decoupled, double grad_scale) {
    const minimalsgd::AdamOptions opts{lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled};
    if (!minimalsgd::validate(opts).empty() || !std::isfinite(grad_scale) || grad_scale < 0) {
        return false;
    }
    const std::size_t n = py::len(kinds);
    if (py::len(value_ptrs) != n || py::len(grad_ptrs) != n || py::len(exp_avg_ptrs) != n ||
        py::len(exp_avg_sq_ptrs) != n || py::len(sizes) != n || py::len(steps) != n ||
        (amsgrad && (max_ptrs.is_none() || py::len(max_ptrs) != n))) {
        throw py::value_error("adam_step_ptrs: lists of different lengths");
    }
    const py::list maxs = amsgrad ? py::list(max_ptrs) : py::list();
    AdamBatch batch(n);
    for (std::size_t i = 0; i < n; ++i) {
        const long kind = PyLong_AsLong(PyList_GET_ITEM(kinds.ptr(), static_cast<Py_ssize_t>(i)));
        const long long step = PyLong_AsLongLong(PyList_GET_ITEM(steps.ptr(), static_cast<Py_ssize_t>(i)));
        if ((kind == -1 || step == -1) && PyErr_Occurred()) {
            throw py::error_already_set();
        }
        if (kind != 0 && kind != 1) {
            throw py::value_error("adam_step_ptrs: dtype code must be 0 or 1");
        }
        if (step < 1) {
            return false;
        }
        const std::size_t size = reinterpret_cast<std::uintptr_t>(address(sizes, i));
        batch.add(kind == 0 ? Kind::f32 : Kind::f64, address(value_ptrs, i), address(grad_ptrs, i),
                  address(exp_avg_ptrs, i), address(exp_avg_sq_ptrs, i), amsgrad ? address(maxs, i) : nullptr, size,
                  static_cast<std::int64_t>(step), i);
    }
    if (batch.overlaps()) {
        return false;
    }
    py::gil_scoped_release release;
    run_batch(batch, opts, grad_scale);
    return true;
}

}  // namespace minimalsgd_python
