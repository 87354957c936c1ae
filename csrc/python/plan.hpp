// minimalsgd._core: the cached plan of Optimizer.step() (every formula, every param group). Built
// from a step that the Python layer fully validated; later steps re-check only what can change
// cheaply and run in one GIL-released call.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <type_traits>
#include <vector>

#include "buffers.hpp"
#include "entry_points.hpp"
#include "runtime.hpp"

namespace py = pybind11;

namespace minimalsgd_python {

// Interned "value" and "grad", set at import.
inline PyObject* g_str_value = nullptr;
inline PyObject* g_str_grad = nullptr;

// ---------------------------------------------------------------------------------------------
// The extension point: a formula's traits. The plan below is the same for every optimizer; what
// differs is said by a traits type with
//   Options                          the kernel's per-group options (SgdOptions, AdamOptions, ...)
//   kStates                          state buffers per tensor (SGD: 1, the momentum buffer; Adam: 2 or 3)
//   template <class T> Span          the kernel's per-tensor span (members value, grad, size, group)
//   options_from(py::handle)         one group's options from the Python tuple (hyperparameters order)
//   validate(const Options&)         "" when valid (the kernel's own check)
//   set_lr(Options&, double)         the per-step input of a schedule
//   uses_state(const Options&, k)    whether state buffer k is used (SGD: momentum != 0)
//   span<T>(w, g, states, n, step, group)  the span of one tensor; `step` is the count of steps
//                                    applied to the tensor before this one (Adam's bias correction
//                                    takes step + 1; SGD's plan is built after its buffers exist,
//                                    so it is never a first step)
//   advance<T>(Span<T>&)             after an applied step (Adam: ++ its step count; SGD: nothing)
//   Op                               the operation of the kernel list (kernels.hpp) it runs
// AdamFormula below is the second: a traits type and a binding (module.cpp: bind_plan<AdamFormula>(m, "AdamPlan")).

struct SgdFormula {
    using Op = ops::sgd;
    using Options = minimalsgd::SgdOptions;
    static constexpr int kStates = 1;
    template <class T>
    using Span = minimalsgd::TensorSpan<T>;

    static Options options_from(py::handle t) {
        const py::tuple o(py::reinterpret_borrow<py::object>(t));  // a tuple, or any sequence made one
        if (py::len(o) != 6) {
            throw py::value_error("SGD options are (lr, momentum, dampening, weight_decay, nesterov, maximize)");
        }
        return Options{o[0].cast<double>(), o[1].cast<double>(), o[2].cast<double>(), o[3].cast<double>(),
                       o[4].cast<bool>(), o[5].cast<bool>()};
    }
    static std::string validate(const Options& o) { return minimalsgd::validate(o); }
    static void set_lr(Options& o, double lr) { o.lr = lr; }
    static bool uses_state(const Options& o, int) { return o.momentum != 0; }
    template <class T>
    static Span<T> span(T* w, const T* g, T* const* states, std::size_t n, long, std::uint32_t group) {
        return Span<T>{w, g, states[0], n, false, group};
    }
    template <class T>
    static void advance(Span<T>&) {}
};

// Adam and AdamW: the moments (and amsgrad's maximum) are the states; the span carries the step
// this update makes (the tensor's applied steps + 1), which advance() moves on after each step.
struct AdamFormula {
    using Op = ops::adam;
    using Options = minimalsgd::AdamOptions;
    static constexpr int kStates = 3;  // exp_avg, exp_avg_sq, max_exp_avg_sq
    template <class T>
    using Span = minimalsgd::AdamSpan<T>;

    static Options options_from(py::handle t) {
        const py::tuple o(py::reinterpret_borrow<py::object>(t));
        if (py::len(o) != 8) {
            throw py::value_error("Adam options are (lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled)");
        }
        return Options{o[0].cast<double>(), o[1].cast<double>(), o[2].cast<double>(), o[3].cast<double>(),
                       o[4].cast<double>(), o[5].cast<bool>(),   o[6].cast<bool>(),   o[7].cast<bool>()};
    }
    static std::string validate(const Options& o) { return minimalsgd::validate(o); }
    static void set_lr(Options& o, double lr) { o.lr = lr; }
    static bool uses_state(const Options& o, int k) { return k < 2 || o.amsgrad; }
    template <class T>
    static Span<T> span(T* w, const T* g, T* const* states, std::size_t n, long step, std::uint32_t group) {
        return Span<T>{w, g, states[0], states[1], states[2], n, static_cast<std::int64_t>(step) + 1, group};
    }
    template <class T>
    static void advance(Span<T>& s) {
        ++s.step;
    }
};

// A validated Optimizer.step(), cached: the params dicts of every group, their entries and
// arrays as they were when the plan was built, each tensor's group and each group's options.
// step() re-checks only what can change cheaply (dict entries by identity, the arrays' data
// pointers, shapes and flags; a replaced grad is inspected and taken), then computes the norm
// (when clipping or checking) and runs every tensor of every group in one GIL-released call.
// set_lr() is the cheap per-step input of a schedule: no re-validation of the params. The other
// hyperparameters are fixed for the plan's life: the Python layer drops the plan when a group
// changes (its param_groups report every change), and a new plan is built by the next full step.
template <class Formula>
class BasicPlan {
  public:
    using Options = typename Formula::Options;
    static constexpr int kStates = Formula::kStates;

    // outers[g]: group g's params dict; keys[g], inners[g], index[g]: its entries in dict order,
    // with the tensor each one is (or -1: no grad). values/grads/states/steps/group_of: per
    // tensor (states[i]: kStates arrays or None). options: per group (the formula's tuple).
    BasicPlan(py::list outers, py::list keys, py::list inners, py::list index, py::list values, py::list grads,
              py::list states, py::list steps, py::list group_of, py::list options, double clip, bool skip_nonfinite)
        : clip_(clip), skip_(skip_nonfinite) {
        const std::size_t n_groups = py::len(outers);
        if (py::len(keys) != n_groups || py::len(inners) != n_groups || py::len(index) != n_groups ||
            py::len(options) != n_groups) {
            throw py::value_error("outers, keys, inners, index and options must have one entry per group");
        }
        for (std::size_t gi = 0; gi < n_groups; ++gi) {
            opts_.push_back(Formula::options_from(options[gi]));
            const std::string error = Formula::validate(opts_.back());
            if (!error.empty()) {
                throw py::value_error(error);
            }
            Group grp;
            grp.outer = py::reinterpret_borrow<py::dict>(outers[gi]);
            grp.begin = entries_.size();
            const py::list k = keys[gi], in = inners[gi], ix = index[gi];
            if (py::len(in) != py::len(k) || py::len(ix) != py::len(k)) {
                throw py::value_error("keys, inners and index must have one length per group");
            }
            for (std::size_t e = 0; e < py::len(k); ++e) {
                entries_.push_back({k[e], in[e], ix[e].cast<long>(), {}, {}});
            }
            grp.end = entries_.size();
            groups_.push_back(std::move(grp));
        }
        const std::size_t n = py::len(values);
        if (py::len(grads) != n || py::len(states) != n || py::len(steps) != n || py::len(group_of) != n) {
            throw py::value_error("values, grads, states, steps and group_of must have one length");
        }
        std::vector<Range> ranges;
        for (std::size_t i = 0; i < n; ++i) {
            Tensor t;
            t.value = values[i];
            t.grad = grads[i];
            t.group = group_of[i].cast<std::uint32_t>();
            if (t.group >= n_groups) {
                throw py::value_error("group_of[" + std::to_string(i) + "] is out of range");
            }
            t.step = steps[i].cast<long>();
            const View w = view_of(t.value.ptr(), "values", i, true);
            if (is_half(w.kind)) {
                // 16-bit params take the checked path every step (the Python layer builds no plan).
                throw py::type_error("values[" + std::to_string(i) + "]: the cached plan takes float32/float64");
            }
            const View g = view_of(t.grad.ptr(), "grads", i, false);
            if (!same_layout(w, g)) {
                throw py::value_error("grads[" + std::to_string(i) + "] does not match values[" + std::to_string(i) + "]");
            }
            char* state_ptrs[kStates > 0 ? kStates : 1] = {};
            const py::object st = states[i];
            for (int k = 0; k < kStates; ++k) {
                if (!Formula::uses_state(opts_[t.group], k)) {
                    continue;
                }
                t.states[k] = py::reinterpret_borrow<py::sequence>(st)[static_cast<std::size_t>(k)];
                const View b = view_of(t.states[k].ptr(), "states", i, true);
                if (!same_layout(w, b)) {
                    throw py::value_error("states[" + std::to_string(i) + "] does not match values[" + std::to_string(i) + "]");
                }
                state_ptrs[k] = b.data;
            }
            const std::size_t bytes = w.size * itemsize(w.kind);
            const auto range = [&](const char* p, bool written) {
                const auto lo = reinterpret_cast<std::uintptr_t>(p);
                ranges.push_back(Range{lo, lo + bytes, written, i});
            };
            range(w.data, true);
            range(g.data, false);
            for (int k = 0; k < kStates; ++k) {
                if (state_ptrs[k] != nullptr) {
                    range(state_ptrs[k], true);
                }
            }
            t.kind = w.kind;
            t.value_state = state_of(w);
            t.grad_state = state_of(g);
            if (w.kind == Kind::f32) {
                t.slot = f32_.size();
                f32_.push_back(make_span<float>(w.data, g.data, state_ptrs, w.size, t.step, t.group));
                g32_.push_back({reinterpret_cast<const float*>(g.data), w.size});
            } else {
                t.slot = f64_.size();
                f64_.push_back(make_span<double>(w.data, g.data, state_ptrs, w.size, t.step, t.group));
                g64_.push_back({reinterpret_cast<const double*>(g.data), w.size});
            }
            tensors_.push_back(std::move(t));
        }
        check_overlap(ranges);
        for (const Range& r : ranges) {
            if (r.written && r.lo != r.hi) {
                written_.emplace_back(r.lo, r.hi);
            }
        }
        std::sort(written_.begin(), written_.end());
    }

    // A new lr for group `g` from the next step on (a schedule's value). False, and nothing
    // changed, when it is not a finite number >= 0.
    bool set_lr(std::size_t g, double lr) {
        if (g >= opts_.size()) {
            throw py::index_error("no param group " + std::to_string(g));
        }
        Options o = opts_[g];
        Formula::set_lr(o, lr);
        if (!Formula::validate(o).empty()) {
            return false;
        }
        opts_[g] = o;
        return true;
    }

    // The lr of each group in the latest step this plan applied.
    const std::vector<double>& last_lrs() const { return last_lrs_; }

    // The lr of each group (in force at the next step).
    std::vector<double> lrs() const {
        std::vector<double> out;
        for (const Options& o : opts_) {
            out.push_back(o.lr);
        }
        return out;
    }

    // 1: applied; 2: skipped (a non-finite gradient, skip_nonfinite); 0: stale, nothing written.
    // grad_scale (finite, >= 0, checked by the caller): a gradient scale computed elsewhere, such
    // as a clip coefficient measured over several processes; the plan's own clip and skip then
    // apply to the scaled gradients, as GradientPolicy.decide(norm, all_finite, grad_scale) does.
    int step(double grad_scale = 1.0) {
        for (const Group& grp : groups_) {
            PyObject* d = grp.outer.ptr();
            if (!PyDict_CheckExact(d) || PyDict_GET_SIZE(d) != static_cast<Py_ssize_t>(grp.end - grp.begin)) {
                return 0;
            }
            Py_ssize_t pos = 0;
            PyObject *key = nullptr, *inner = nullptr;
            std::size_t e = grp.begin;
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
        }
        const KernelTable& k = current_table();
        const minimalsgd::Parallel par = parallel();
        const bool measure = clip_ > 0 || skip_;
        int status = 1;
        double norm = 0, scale = grad_scale;
        {
            py::gil_scoped_release release;
            if (measure) {
                double ss = 0;
                if (!g32_.empty()) {
                    ss += k.get<ops::sumsq, float>()(g32_.data(), g32_.size(), par);
                }
                if (!g64_.empty()) {
                    ss += k.get<ops::sumsq, double>()(g64_.data(), g64_.size(), par);
                }
                norm = std::sqrt(ss);
                if (skip_ && !std::isfinite(norm) && (std::isnan(norm) || !all_grads_finite())) {
                    status = 2;
                }
                if (grad_scale != 1.0) {  // the norm of the gradients as used
                    norm = norm * grad_scale;
                }
                if (clip_ > 0 && norm > clip_) {
                    scale = grad_scale * (clip_ / (norm + 1e-12));
                }
            }
            if (status == 1) {
                if constexpr (std::is_same_v<Formula, SgdFormula>) {
                    // Tensors adjacent in memory (packed params, minimalsgd.pack_params) in one span.
                    if (runs_stale_) {
                        join_adjacent(f32_, run32_);
                        join_adjacent(f64_, run64_);
                        runs_stale_ = false;
                    }
                    run(k, run32_, scale, par);
                    run(k, run64_, scale, par);
                } else {
                    run(k, f32_, scale, par);
                    run(k, f64_, scale, par);
                }
            }
        }
        if (status == 1) {
            ++applied_;
            last_lrs_.resize(opts_.size());
            for (std::size_t g = 0; g < opts_.size(); ++g) {
                last_lrs_[g] = opts_[g].lr;
            }
            for (Tensor& t : tensors_) {
                ++t.step;
                if (t.kind == Kind::f32) {
                    Formula::advance(f32_[t.slot]);
                } else {
                    Formula::advance(f64_[t.slot]);
                }
            }
            if (measure) {
                last_norm_ = norm;
            }
        }
        return status;
    }

    long applied() const { return applied_; }
    void reset_applied() { applied_ = 0; }
    double last_norm() const { return last_norm_; }
    // The spans the kernel ran in the latest step (SGD: adjacent tensors joined; else one each).
    std::size_t spans() const {
        if constexpr (std::is_same_v<Formula, SgdFormula>) {
            return run32_.size() + run64_.size();
        }
        return f32_.size() + f64_.size();
    }

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
    struct Group {
        py::dict outer;
        std::size_t begin, end;  // its entries in entries_
    };
    struct Entry {
        py::object key, inner;
        long index;  // the tensor, or -1 for an entry without a grad
        Slot value_slot{}, grad_slot{};
    };
    struct Tensor {
        py::object value, grad;
        py::object states[kStates > 0 ? kStates : 1];
        ArrayState value_state, grad_state;
        Kind kind;
        std::uint32_t group;
        long step;         // steps applied to it (the Python state's "step" plus this plan's)
        std::size_t slot;  // index in f32_ / f64_
    };

    // The formula's kernel over spans of T (none: nothing).
    template <class T>
    void run(const KernelTable& k, const std::vector<typename Formula::template Span<T>>& spans, double scale,
             const minimalsgd::Parallel& par) const {
        if (!spans.empty()) {
            using Scale = typename Formula::Op::template Scale<T, T>;
            k.get<typename Formula::Op, T>()(spans.data(), spans.size(), opts_.data(), opts_.size(),
                                             static_cast<Scale>(scale), par);
        }
    }

    template <class T>
    static typename Formula::template Span<T> make_span(char* w, char* g, char* const* states, std::size_t n, long step,
                                                        std::uint32_t group) {
        T* typed[kStates > 0 ? kStates : 1];
        for (int k = 0; k < kStates; ++k) {
            typed[k] = reinterpret_cast<T*>(states[k]);
        }
        return Formula::template span<T>(reinterpret_cast<T*>(w), reinterpret_cast<const T*>(g), typed, n, step, group);
    }

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
        runs_stale_ = true;
        if (t.kind == Kind::f32) {
            f32_[t.slot].grad = reinterpret_cast<const float*>(g.data);
            g32_[t.slot].data = reinterpret_cast<const float*>(g.data);
        } else {
            f64_[t.slot].grad = reinterpret_cast<const double*>(g.data);
            g64_[t.slot].data = reinterpret_cast<const double*>(g.data);
        }
        return true;
    }

    // Joins SGD spans whose value, grad and momentum buffer each continue where the previous
    // span's end, with the same first-step flag and options set: the elementwise step over the
    // joined span is the same operations on the same elements. (The norm keeps per-tensor spans,
    // so that its blocks, and so its bits, are those of unpacked params.)
    template <class T>
    static void join_adjacent(const std::vector<minimalsgd::TensorSpan<T>>& in, std::vector<minimalsgd::TensorSpan<T>>& out) {
        out.clear();
        for (const auto& s : in) {
            if (s.size == 0) {
                continue;
            }
            if (!out.empty()) {
                auto& b = out.back();
                const bool buffers = b.momentum_buffer == nullptr
                                         ? s.momentum_buffer == nullptr
                                         : s.momentum_buffer != nullptr && b.momentum_buffer + b.size == s.momentum_buffer;
                if (buffers && b.value + b.size == s.value && b.grad + b.size == s.grad && b.first_step == s.first_step &&
                    b.group == s.group) {
                    b.size += s.size;
                    continue;
                }
            }
            out.push_back(s);
        }
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

    double clip_;
    bool skip_;
    std::vector<Options> opts_;
    std::vector<Group> groups_;
    std::vector<Entry> entries_;
    std::vector<Tensor> tensors_;
    std::vector<typename Formula::template Span<float>> f32_;
    std::vector<typename Formula::template Span<double>> f64_;
    // SGD: what the kernel runs, f32_/f64_ with adjacent tensors joined (rebuilt when a grad changes).
    std::vector<typename Formula::template Span<float>> run32_;
    std::vector<typename Formula::template Span<double>> run64_;
    bool runs_stale_ = true;
    std::vector<minimalsgd::ConstSpan<float>> g32_;
    std::vector<minimalsgd::ConstSpan<double>> g64_;
    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> written_;
    long applied_ = 0;
    std::vector<double> last_lrs_;
    double last_norm_ = std::nan("");
};

// The Python class of a plan: Plan<Formula> as `name` in the module.
template <class Formula>
void bind_plan(py::module_& m, const char* name) {
    using P = BasicPlan<Formula>;
    py::class_<P>(m, name, "A validated optimizer step, cached (private to minimalsgd._optimizer).")
        .def(py::init<py::list, py::list, py::list, py::list, py::list, py::list, py::list, py::list, py::list, py::list,
                      double, bool>(),
             py::arg("outers"), py::arg("keys"), py::arg("inners"), py::arg("index"), py::arg("values"),
             py::arg("grads"), py::arg("states"), py::arg("steps"), py::arg("group_of"), py::arg("options"),
             py::arg("clip"), py::arg("skip_nonfinite"))
        .def("step", &P::step, py::arg("grad_scale") = 1.0,
             "One step: 1 applied, 2 skipped, 0 stale (nothing written); grad_scale multiplies every gradient.")
        .def("set_lr", &P::set_lr, py::arg("group"), py::arg("lr"))
        .def_property_readonly("lrs", &P::lrs)
        .def_property_readonly("last_lrs", &P::last_lrs)
        .def_property_readonly("applied", &P::applied)
        .def("reset_applied", &P::reset_applied)
        .def_property_readonly("last_norm", &P::last_norm)
        .def_property_readonly("spans", &P::spans, "Spans the kernel ran in the latest step (adjacent tensors joined).");
}

}  // namespace minimalsgd_python
