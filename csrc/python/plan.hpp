// minimalsgd._core: the cached plan of SGD.step(). Built from a step that the Python layer fully
// validated; later steps re-check only what can change cheaply and run in one GIL-released call.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "buffers.hpp"
#include "entry_points.hpp"
#include "runtime.hpp"

namespace py = pybind11;

namespace minimalsgd_python {

// Interned "value" and "grad", set at import.
inline PyObject* g_str_value = nullptr;
inline PyObject* g_str_grad = nullptr;

// A validated SGD.step(), cached: the params dict, its entries and arrays as they were when the
// plan was built. step() re-checks only what can change cheaply (dict entries by identity, the
// arrays' data pointers, shapes and flags; a replaced grad is inspected and taken), then computes
// the norm (when clipping or checking) and runs every tensor in one GIL-released call.
class Plan {
  public:
    Plan(py::dict params, py::list keys, py::list inners, py::list index, py::list values, py::list grads,
         py::object buffers, double lr, double momentum, double dampening, double weight_decay, bool nesterov,
         bool maximize, double clip, bool skip_nonfinite)
        : outer_(params), opts_{lr, momentum, dampening, weight_decay, nesterov, maximize}, clip_(clip), skip_(skip_nonfinite) {
        minimalsgd::check(opts_);
        const std::size_t n_entries = py::len(keys);
        if (py::len(inners) != n_entries || py::len(index) != n_entries) {
            throw py::value_error("keys, inners and index must have one length");
        }
        for (std::size_t e = 0; e < n_entries; ++e) {
            entries_.push_back({keys[e], inners[e], index[e].cast<long>(), {}, {}});
        }
        const std::size_t n = py::len(values);
        const bool with_momentum = momentum != 0;
        if (py::len(grads) != n || (with_momentum && py::len(buffers) != n)) {
            throw py::value_error("values, grads and buffers must have one length");
        }
        for (std::size_t i = 0; i < n; ++i) {
            Tensor t;
            t.value = values[i];
            t.grad = grads[i];
            const View w = view_of(t.value.ptr(), "values", i, true);
            const View g = view_of(t.grad.ptr(), "grads", i, false);
            if (!same_layout(w, g)) {
                throw py::value_error("grads[" + std::to_string(i) + "] does not match values[" + std::to_string(i) + "]");
            }
            View b{};
            if (with_momentum) {
                t.buffer = py::list(buffers)[i];
                b = view_of(t.buffer.ptr(), "buffers", i, true);
                if (!same_layout(w, b)) {
                    throw py::value_error("buffers[" + std::to_string(i) + "] does not match values[" + std::to_string(i) + "]");
                }
            }
            t.kind = w.kind;
            t.value_state = state_of(w);
            t.grad_state = state_of(g);
            t.slot = w.kind == Kind::f32 ? batch_.f32.size() : batch_.f64.size();
            batch_.add(w.kind, w.data, g.data, with_momentum ? b.data : nullptr, w.size, false, i);
            if (w.kind == Kind::f32) {
                g32_.push_back({reinterpret_cast<const float*>(g.data), w.size});
            } else {
                g64_.push_back({reinterpret_cast<const double*>(g.data), w.size});
            }
            tensors_.push_back(std::move(t));
        }
        check_overlap(batch_.ranges);
        for (const Range& r : batch_.ranges) {
            if (r.written && r.lo != r.hi) {
                written_.emplace_back(r.lo, r.hi);
            }
        }
        std::sort(written_.begin(), written_.end());
    }

    // 1: applied; 2: skipped (a non-finite gradient, skip_nonfinite); 0: stale, nothing written.
    int step(py::handle params) {
        PyObject* d = params.ptr();
        if (d != outer_.ptr() || !PyDict_CheckExact(d) || PyDict_GET_SIZE(d) != static_cast<Py_ssize_t>(entries_.size())) {
            return 0;
        }
        Py_ssize_t pos = 0;
        PyObject *key = nullptr, *inner = nullptr;
        std::size_t e = 0;
        while (PyDict_Next(d, &pos, &key, &inner)) {
            Entry& en = entries_[e++];
            if (key != en.key.ptr() || inner != en.inner.ptr() || !PyDict_CheckExact(inner)) {
                return 0;
            }
            PyObject* grad = lookup(inner, en.grad_slot, g_str_grad);
            if (en.index < 0) {
                if (grad != nullptr && grad != Py_None) {
                    return 0;
                }
                continue;
            }
            Tensor& t = tensors_[static_cast<std::size_t>(en.index)];
            PyObject* value = lookup(inner, en.value_slot, g_str_value);
            if (value != t.value.ptr() || !unchanged(value, t.value_state)) {
                return 0;
            }
            if (grad != t.grad.ptr()) {
                if (grad == nullptr || !adopt_grad(t, grad)) {
                    return 0;
                }
            } else if (!unchanged(grad, t.grad_state)) {
                return 0;
            }
        }
        const KernelTable& k = table_for(static_cast<Isa>(g_isa.load()));
        const minimalsgd::Parallel par = parallel();
        const bool measure = clip_ > 0 || skip_;
        int status = 1;
        double norm = 0, scale = 1;
        {
            py::gil_scoped_release release;
            if (measure) {
                double ss = 0;
                if (!g32_.empty()) {
                    ss += k.sumsq_f32(g32_.data(), g32_.size(), par);
                }
                if (!g64_.empty()) {
                    ss += k.sumsq_f64(g64_.data(), g64_.size(), par);
                }
                norm = std::sqrt(ss);
                if (skip_ && !std::isfinite(norm) && (std::isnan(norm) || !all_grads_finite())) {
                    status = 2;
                }
                if (clip_ > 0 && norm > clip_) {
                    scale = clip_ / (norm + 1e-12);
                }
            }
            if (status == 1) {
                run_kernels(batch_.f32, batch_.f64, opts_, scale);
            }
        }
        if (status == 1) {
            ++applied_;
            if (measure) {
                last_norm_ = norm;
            }
        }
        return status;
    }

    long applied() const { return applied_; }
    void reset_applied() { applied_ = 0; }
    double last_norm() const { return last_norm_; }

  private:
    // What unchanged() compares: the data pointer, the layout flags and the shape (inline up to
    // 4 dimensions: no pointer to chase, no memcmp call).
    struct ArrayState {
        char* data;
        int flags;
        int nd;
        Py_ssize_t dims[4];
        std::vector<Py_ssize_t> more;  // the shape when nd > 4
    };
    // Where a key sat in an inner dict when last found: its position for PyDict_Next, and the key
    // object itself (an exact str, kept alive here).
    struct Slot {
        Py_ssize_t pos = -1;
        py::object key;
    };
    struct Entry {
        py::object key, inner;
        long index;  // the tensor, or -1 for an entry without a grad
        Slot value_slot{}, grad_slot{};
    };
    struct Tensor {
        py::object value, grad, buffer;
        ArrayState value_state, grad_state;
        Kind kind;
        std::size_t slot;  // index in batch_.f32 / batch_.f64
    };

    static constexpr int kStateFlags = kC | kF | kAligned | kWriteable;

    static ArrayState state_of(const View& v) {
        ArrayState s{v.data, v.flags & kStateFlags, v.ndim, {}, {}};
        if (v.ndim <= 4) {
            std::copy(v.shape, v.shape + v.ndim, s.dims);
        } else {
            s.more.assign(v.shape, v.shape + v.ndim);
        }
        return s;
    }

    static bool unchanged(PyObject* obj, const ArrayState& s) {
        auto* a = py::detail::array_proxy(obj);
        if (a->data != s.data || (a->flags & kStateFlags) != s.flags || a->nd != s.nd) {
            return false;
        }
        const auto* dims = reinterpret_cast<const Py_ssize_t*>(a->dimensions);
        const Py_ssize_t* want = s.nd <= 4 ? s.dims : s.more.data();
        for (int k = 0; k < s.nd; ++k) {
            if (dims[k] != want[k]) {
                return false;
            }
        }
        return true;
    }

    // inner[name], borrowed (null when absent). Fast through the remembered slot: PyDict_Next
    // from a position yields the live entry at or after it, and when that entry's key is the very
    // key object remembered there, its value is inner[name] (keys are unique), whatever the dict
    // did in between. Otherwise an ordinary lookup, and the slot is found again.
    static PyObject* lookup(PyObject* inner, Slot& s, PyObject* name) {
        if (s.pos >= 0) {
            Py_ssize_t p = s.pos;
            PyObject *k = nullptr, *v = nullptr;
            if (PyDict_Next(inner, &p, &k, &v) && k == s.key.ptr()) {
                return v;
            }
        }
        s.pos = -1;
        PyObject* found = PyDict_GetItemWithError(inner, name);
        if (found == nullptr) {
            if (PyErr_Occurred()) {
                throw py::error_already_set();
            }
            return nullptr;
        }
        Py_ssize_t p = 0;
        PyObject *k = nullptr, *v = nullptr;
        while (PyDict_Next(inner, &p, &k, &v)) {
            if (v == found && PyUnicode_CheckExact(k) && (k == name || PyUnicode_Compare(k, name) == 0)) {
                s.pos = p - 1;
                s.key = py::reinterpret_borrow<py::object>(k);
                break;
            }
        }
        return found;
    }

    // A grad the user replaced: take it if it can be walked like the value and overlaps nothing
    // the step writes.
    bool adopt_grad(Tensor& t, PyObject* grad) {
        View w{}, g{};
        if (inspect(t.value.ptr(), true, w) != Bad::none || inspect(grad, false, g) != Bad::none || !same_layout(w, g)) {
            return false;
        }
        const auto lo = reinterpret_cast<std::uintptr_t>(g.data);
        const auto hi = lo + g.size * itemsize(g.kind);
        if (lo != hi) {
            // written_ is sorted and disjoint: the first range ending after lo is the only candidate.
            auto it = std::lower_bound(written_.begin(), written_.end(), lo,
                                       [](const std::pair<std::uintptr_t, std::uintptr_t>& r, std::uintptr_t x) {
                                           return r.second <= x;
                                       });
            if (it != written_.end() && it->first < hi) {
                return false;
            }
        }
        t.grad = py::reinterpret_borrow<py::object>(grad);
        t.grad_state = state_of(g);
        if (t.kind == Kind::f32) {
            batch_.f32[t.slot].grad = reinterpret_cast<const float*>(g.data);
            g32_[t.slot].data = reinterpret_cast<const float*>(g.data);
        } else {
            batch_.f64[t.slot].grad = reinterpret_cast<const double*>(g.data);
            g64_[t.slot].data = reinterpret_cast<const double*>(g.data);
        }
        return true;
    }

    bool all_grads_finite() const {
        for (const auto& s : g32_) {
            for (std::size_t i = 0; i < s.size; ++i) {
                if (!std::isfinite(s.data[i])) return false;
            }
        }
        for (const auto& s : g64_) {
            for (std::size_t i = 0; i < s.size; ++i) {
                if (!std::isfinite(s.data[i])) return false;
            }
        }
        return true;
    }

    py::dict outer_;
    minimalsgd::SgdOptions opts_;
    double clip_;
    bool skip_;
    std::vector<Entry> entries_;
    std::vector<Tensor> tensors_;
    Batch batch_{0};
    std::vector<minimalsgd::ConstSpan<float>> g32_;
    std::vector<minimalsgd::ConstSpan<double>> g64_;
    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> written_;
    long applied_ = 0;
    double last_norm_ = std::nan("");
};

}  // namespace minimalsgd_python
