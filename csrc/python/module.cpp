// minimalsgd._core: the pybind11 bindings. Thin: they check that every buffer can be walked in
// place as one flat array (never converting or copying one), then release the GIL and call the
// kernels of the instruction set chosen at import.
//
// The Python layer (python/minimalsgd/_functional.py) validates with named errors first and
// routes only buffers that pass here; the checks below are the last line, so that no call from
// Python can make the kernel read or write out of bounds, whatever it is given.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include <minimalsgd/cpu.hpp>
#include <minimalsgd/version.hpp>

#include "kernels.hpp"

namespace py = pybind11;
using minimalsgd::Isa;
using minimalsgd_python::KernelTable;

namespace {

// ---------------------------------------------------------------------------------------------
// Instruction set and threads

const KernelTable& table_for(Isa isa) {
    switch (isa) {
        case Isa::avx512:
            return minimalsgd_python::kernels_avx512();
        case Isa::avx2:
            return minimalsgd_python::kernels_avx2();
        default:
            return minimalsgd_python::kernels_baseline();
    }
}

std::atomic<int> g_isa{static_cast<int>(Isa::baseline)};
std::atomic<int> g_num_threads{0};      // 0: follow omp_get_max_threads() of the calling thread
std::atomic<std::size_t> g_grain{minimalsgd::Parallel().grain};

void set_isa(std::string name) {
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    Isa isa;
    if (!minimalsgd::parse_isa(name.c_str(), &isa)) {
        throw py::value_error("isa must be one of 'baseline', 'avx2', 'avx512', got '" + name + "'");
    }
    if (!minimalsgd::cpu_supports(isa)) {
        throw py::value_error("isa '" + name + "' is not supported by this CPU");
    }
    g_isa = static_cast<int>(isa);
}

std::string get_isa() { return minimalsgd::isa_name(static_cast<Isa>(g_isa.load())); }

int g_default_threads = 1;  // omp_get_max_threads() at import: what set_num_threads(0) restores

// The threads a call uses: set_num_threads(n > 0) for every thread of the process; otherwise
// OpenMP's own setting for the calling thread (OMP_NUM_THREADS, or a threadpoolctl limit).
int get_num_threads() {
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

void set_num_threads(int n) {
    if (n < 0) {
        throw py::value_error("num_threads must be >= 0 (0 restores the OpenMP default), got " + std::to_string(n));
    }
    g_num_threads = n;
#if defined(_OPENMP)
    // Also OpenMP's own setting of this thread, so that threadpoolctl reports what runs.
    omp_set_num_threads(n > 0 ? n : g_default_threads);
#endif
}

minimalsgd::Parallel parallel() {
    minimalsgd::Parallel par;
    par.num_threads = get_num_threads();
    par.grain = g_grain.load();
    return par;
}

// ---------------------------------------------------------------------------------------------
// Buffer checks: read the array struct directly (no temporaries, no conversion).

enum class Kind { f32, f64 };

struct View {
    PyObject* obj;
    char* data;
    std::size_t size;  // elements
    Kind kind;
    int flags;
    int ndim;
    const Py_ssize_t* shape;
};

constexpr int kC = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_;
constexpr int kF = py::detail::npy_api::NPY_ARRAY_F_CONTIGUOUS_;
constexpr int kAligned = py::detail::npy_api::NPY_ARRAY_ALIGNED_;
constexpr int kWriteable = py::detail::npy_api::NPY_ARRAY_WRITEABLE_;

std::string where(const char* what, std::size_t i) { return std::string(what) + "[" + std::to_string(i) + "]"; }

enum class Bad { none, type, dtype, layout, aligned, readonly };

// What stops the native kernel from walking `obj` in place as one flat buffer (Bad::none: nothing).
Bad inspect(PyObject* obj, bool writeable, View& v) {
    if (!py::isinstance<py::array>(obj)) {
        return Bad::type;
    }
    auto* a = py::detail::array_proxy(obj);
    auto* d = py::detail::array_descriptor_proxy(a->descr);
    v.obj = obj;
    v.data = a->data;
    v.flags = a->flags;
    v.ndim = a->nd;
    v.shape = reinterpret_cast<const Py_ssize_t*>(a->dimensions);
#if PY_LITTLE_ENDIAN
    constexpr char native = '<';
#else
    constexpr char native = '>';
#endif
    const bool native_order = d->byteorder == '=' || d->byteorder == '|' || d->byteorder == native;
    if (d->type_num == py::detail::npy_api::NPY_FLOAT_ && native_order) {
        v.kind = Kind::f32;
    } else if (d->type_num == py::detail::npy_api::NPY_DOUBLE_ && native_order) {
        v.kind = Kind::f64;
    } else {
        return Bad::dtype;
    }
    if (!(v.flags & (kC | kF))) {
        return Bad::layout;
    }
    if (!(v.flags & kAligned)) {
        return Bad::aligned;
    }
    if (writeable && !(v.flags & kWriteable)) {
        return Bad::readonly;
    }
    std::size_t n = 1;
    for (int k = 0; k < v.ndim; ++k) {
        n *= static_cast<std::size_t>(v.shape[k]);
    }
    v.size = n;
    return Bad::none;
}

View view_of(PyObject* obj, const char* what, std::size_t i, bool writeable) {
    View v{};
    switch (inspect(obj, writeable, v)) {
        case Bad::none:
            return v;
        case Bad::type:
            throw py::type_error(where(what, i) + " must be a numpy.ndarray, got " + std::string(Py_TYPE(obj)->tp_name));
        case Bad::dtype:
            throw py::type_error(where(what, i) + " must be float32 or float64 in native byte order for the native backend");
        case Bad::layout:
            throw py::value_error(where(what, i) + " must be C- or F-contiguous for the native backend");
        case Bad::aligned:
            throw py::value_error(where(what, i) + " is not aligned to its dtype; the native backend needs aligned data");
        case Bad::readonly:
            throw py::value_error(where(what, i) + " is read-only");
    }
    throw py::value_error(where(what, i) + " cannot be used");
}

bool same_layout(const View& a, const View& b) {
    if (a.kind != b.kind || a.ndim != b.ndim || !std::equal(a.shape, a.shape + a.ndim, b.shape)) {
        return false;
    }
    // Both C-contiguous or both F-contiguous: then element i is the same logical element in both.
    return ((a.flags & kC) && (b.flags & kC)) || ((a.flags & kF) && (b.flags & kF));
}

std::size_t itemsize(Kind k) { return k == Kind::f32 ? sizeof(float) : sizeof(double); }

struct Range {
    std::uintptr_t lo, hi;  // [lo, hi)
    bool written;
    std::size_t tensor;
};

// No buffer that the step writes may overlap any other buffer of the call. Returns the index of
// a pair that does (as `a`, `b`), or false when there is none. Sorts `ranges`.
bool find_overlap(std::vector<Range>& ranges, std::size_t* a, std::size_t* b) {
    std::sort(ranges.begin(), ranges.end(), [](const Range& x, const Range& y) { return x.lo < y.lo; });
    // Sweep: keep the furthest-reaching written range and the furthest-reaching range of any kind.
    const Range* reach_any = nullptr;
    const Range* reach_written = nullptr;
    for (const Range& r : ranges) {
        if (r.lo == r.hi) {
            continue;
        }
        if (reach_written && reach_written->hi > r.lo) {
            *a = reach_written->tensor;
            *b = r.tensor;
            return true;
        }
        if (r.written && reach_any && reach_any->hi > r.lo) {
            *a = reach_any->tensor;
            *b = r.tensor;
            return true;
        }
        if (!reach_any || r.hi > reach_any->hi) {
            reach_any = &r;
        }
        if (r.written && (!reach_written || r.hi > reach_written->hi)) {
            reach_written = &r;
        }
    }
    return false;
}

void check_overlap(std::vector<Range>& ranges) {
    std::size_t a = 0, b = 0;
    if (find_overlap(ranges, &a, &b)) {
        throw py::value_error("tensors " + std::to_string(a) + " and " + std::to_string(b) +
                              " share memory that the step writes");
    }
}

// The tensors of one call, split by dtype into the kernels' spans, with the memory ranges they
// read and write (for the overlap check).
struct Batch {
    std::vector<minimalsgd::TensorSpan<float>> f32;
    std::vector<minimalsgd::TensorSpan<double>> f64;
    std::vector<Range> ranges;

    explicit Batch(std::size_t n) { ranges.reserve(3 * n); }

    // Tensor `i`: `size` elements of `kind` at w, g and b (b null without momentum).
    void add(Kind kind, char* w, const char* g, char* b, std::size_t size, bool first, std::size_t i) {
        const std::size_t bytes = size * itemsize(kind);
        const auto range = [&](const char* p, bool written) {
            const auto lo = reinterpret_cast<std::uintptr_t>(p);
            ranges.push_back(Range{lo, lo + bytes, written, i});
        };
        range(w, true);
        range(g, false);
        if (b != nullptr) {
            range(b, true);
        }
        if (kind == Kind::f32) {
            f32.push_back({reinterpret_cast<float*>(w), reinterpret_cast<const float*>(g), reinterpret_cast<float*>(b),
                           size, first});
        } else {
            f64.push_back({reinterpret_cast<double*>(w), reinterpret_cast<const double*>(g),
                           reinterpret_cast<double*>(b), size, first});
        }
    }

    bool overlaps() {
        std::size_t a = 0, c = 0;
        return ranges.size() > 1 && find_overlap(ranges, &a, &c);
    }
};

std::vector<PyObject*> items(py::handle seq, const char* what) {
    if (!PyList_Check(seq.ptr()) && !PyTuple_Check(seq.ptr())) {
        throw py::type_error(std::string(what) + " must be a list or tuple of arrays");
    }
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
    PyObject** it = PySequence_Fast_ITEMS(seq.ptr());
    return std::vector<PyObject*>(it, it + n);
}

// Runs the spans of one call with the kernels of the chosen instruction set (GIL released by the caller).
template <class Span32, class Span64>
void run_kernels(const std::vector<Span32>& f32, const std::vector<Span64>& f64, const minimalsgd::SgdOptions& opts,
                 double grad_scale) {
    const KernelTable& k = table_for(static_cast<Isa>(g_isa.load()));
    const minimalsgd::Parallel par = parallel();
    if (!f32.empty()) {
        k.step_f32(f32.data(), f32.size(), opts, static_cast<float>(grad_scale), par);
    }
    if (!f64.empty()) {
        k.step_f64(f64.data(), f64.size(), opts, grad_scale, par);
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points

void sgd_step(py::handle values, py::handle grads, py::object momentum_buffers, py::object first_steps, double lr,
              double momentum, double dampening, double weight_decay, bool nesterov, bool maximize,
              double grad_scale, bool check_overlaps) {
    minimalsgd::SgdOptions opts{lr, momentum, dampening, weight_decay, nesterov, maximize};
    const std::string error = minimalsgd::validate(opts);
    if (!error.empty()) {
        throw py::value_error(error);
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
            if (!same_layout(w, b)) {
                throw py::value_error("momentum_buffers[" + std::to_string(i) +
                                      "] must have the dtype, shape and memory order of values[" + std::to_string(i) +
                                      "]");
            }
            keep.emplace_back(py::reinterpret_borrow<py::object>(bs[i]));
        }
        keep.emplace_back(py::reinterpret_borrow<py::object>(vs[i]));
        keep.emplace_back(py::reinterpret_borrow<py::object>(gs[i]));
        batch.add(w.kind, w.data, g.data, with_momentum ? b.data : nullptr, w.size, first[i] != 0, i);
    }
    if (check_overlaps) {
        check_overlap(batch.ranges);
    }
    py::gil_scoped_release release;
    run_kernels(batch.f32, batch.f64, opts, grad_scale);
}

double sum_of_squares(py::handle arrays) {
    const std::vector<PyObject*> xs = items(arrays, "grads");
    std::vector<minimalsgd::ConstSpan<float>> f32;
    std::vector<minimalsgd::ConstSpan<double>> f64;
    std::vector<py::object> keep;
    keep.reserve(xs.size());
    for (std::size_t i = 0; i < xs.size(); ++i) {
        const View v = view_of(xs[i], "grads", i, false);
        keep.emplace_back(py::reinterpret_borrow<py::object>(xs[i]));
        if (v.kind == Kind::f32) {
            f32.push_back({reinterpret_cast<const float*>(v.data), v.size});
        } else {
            f64.push_back({reinterpret_cast<const double*>(v.data), v.size});
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
    return total;
}

// ---------------------------------------------------------------------------------------------
// Fast paths. They serve only the common, valid case and report "not served" (without writing
// anything) for everything else, so that the Python layer keeps the one set of checks and error
// messages: false/0 means "take the Python path", never "error".

PyObject* g_str_value = nullptr;
PyObject* g_str_grad = nullptr;

bool real_of(PyObject* o, double* out) {
    if (PyFloat_CheckExact(o)) {
        *out = PyFloat_AS_DOUBLE(o);
        return true;
    }
    if (PyLong_CheckExact(o)) {
        const double d = PyLong_AsDouble(o);
        if (d == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return false;
        }
        *out = d;
        return true;
    }
    return false;
}

// One ndarray, or a list/tuple of them, as borrowed pointers.
bool arrays_of(PyObject* o, std::vector<PyObject*>& out) {
    if (PyList_CheckExact(o) || PyTuple_CheckExact(o)) {
        const Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
        PyObject** it = PySequence_Fast_ITEMS(o);
        out.assign(it, it + n);
        return true;
    }
    if (py::isinstance<py::array>(o)) {
        out.assign(1, o);
        return true;
    }
    return false;
}


// The functional step when every input is valid and native: true when done, false (nothing
// written) when the Python layer must look.
bool try_sgd_step(py::handle values, py::handle grads, py::handle buffers, py::handle first_step, py::handle lr_o,
                  py::handle momentum_o, py::handle dampening_o, py::handle weight_decay_o, py::handle nesterov_o,
                  py::handle maximize_o, py::handle grad_scale_o) {
    minimalsgd::SgdOptions opts{0.0};
    double scale = 1.0;
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
        if (with_momentum && (inspect(bs[i], true, b) != Bad::none || !same_layout(w, b))) {
            return false;
        }
        PyObject* f = first_is_bool ? fs : PySequence_Fast_ITEMS(fs)[i];
        if (!PyBool_Check(f)) {
            return false;
        }
        batch.add(w.kind, w.data, g.data, with_momentum ? b.data : nullptr, w.size, f == Py_True, i);
    }
    if (batch.overlaps()) {
        return false;
    }
    // The arrays stay alive while the GIL is released: the caller's arguments reference them.
    py::gil_scoped_release release;
    run_kernels(batch.f32, batch.f64, opts, scale);
    return true;
}

// The step over raw buffers, for minimalsgd.torch (whose tensors are not NumPy arrays): one
// (dtype code 0 = float32 / 1 = float64, value, grad, buffer address, element count, first step)
// per tensor, taken from live, dense, contiguous CPU tensors that the caller holds during the call.
// Returns false (nothing written) for invalid options or buffers that overlap.
bool sgd_step_ptrs(py::list kinds, py::list value_ptrs, py::list grad_ptrs, py::object buf_ptrs, py::list sizes,
                   py::list firsts, double lr, double momentum, double dampening, double weight_decay, bool nesterov,
                   bool maximize, double grad_scale) {
    const minimalsgd::SgdOptions opts{lr, momentum, dampening, weight_decay, nesterov, maximize};
    if (!minimalsgd::validate(opts).empty() || !std::isfinite(grad_scale) || grad_scale < 0) {
        return false;
    }
    const std::size_t n = py::len(kinds);
    const bool with_momentum = momentum != 0;
    if (py::len(value_ptrs) != n || py::len(grad_ptrs) != n || py::len(sizes) != n || py::len(firsts) != n ||
        (with_momentum && (buf_ptrs.is_none() || py::len(buf_ptrs) != n))) {
        throw py::value_error("sgd_step_ptrs: lists of different lengths");
    }
    const py::list bufs = with_momentum ? py::list(buf_ptrs) : py::list();
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
        if (kind != 0 && kind != 1) {
            throw py::value_error("sgd_step_ptrs: dtype code must be 0 or 1");
        }
        batch.add(kind == 0 ? Kind::f32 : Kind::f64, w, g, b, size, first != 0, i);
    }
    if (batch.overlaps()) {
        return false;
    }
    py::gil_scoped_release release;
    run_kernels(batch.f32, batch.f64, opts, grad_scale);
    return true;
}

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

// Bench support: per-call seconds of `reps` batches of `inner` calls, timed in C++ without
// Python in the loop. kind "stream": the yardstick loop; "read": the read-only yardstick (sum of
// g*g); kind "step": the fused step (momentum
// 0.9, Nesterov, weight decay 1e-4) through the kernel table, i.e. the bare C call.
std::vector<double> time_calls(const std::string& kind, py::handle w_obj, py::handle g_obj, py::handle v_obj, int reps,
                               int inner, int threads) {
    const View w = view_of(w_obj.ptr(), "w", 0, true);
    const View g = view_of(g_obj.ptr(), "g", 0, false);
    const View v = view_of(v_obj.ptr(), "v", 0, true);
    if (!same_layout(w, g) || !same_layout(w, v)) {
        throw py::value_error("w, g and v must have one dtype, shape and memory order");
    }
    if (kind != "stream" && kind != "step" && kind != "read") {
        throw py::value_error("kind must be 'stream', 'read' or 'step'");
    }
    if (reps < 1 || inner < 1) {
        throw py::value_error("reps and inner must be >= 1");
    }
    const KernelTable& k = table_for(static_cast<Isa>(g_isa.load()));
    minimalsgd::Parallel par = parallel();
    par.num_threads = threads > 0 ? threads : par.num_threads;
    const minimalsgd::SgdOptions opts{0.01, 0.9, 0.0, 1e-4, true, false};
    std::vector<double> out;
    volatile double sink = 0;  // keeps the read loop's result alive
    py::gil_scoped_release release;
    for (int r = 0; r < reps; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int j = 0; j < inner; ++j) {
            if (w.kind == Kind::f32) {
                auto* pw = reinterpret_cast<float*>(w.data);
                auto* pg = reinterpret_cast<const float*>(g.data);
                auto* pv = reinterpret_cast<float*>(v.data);
                if (kind == "stream") {
                    k.stream_f32(pw, pg, pv, w.size, par.num_threads);
                } else if (kind == "read") {
                    sink += k.read_f32(pg, w.size, par.num_threads);
                } else {
                    const minimalsgd::TensorSpan<float> span{pw, pg, pv, w.size, false};
                    k.step_f32(&span, 1, opts, 1.0f, par);
                }
            } else {
                auto* pw = reinterpret_cast<double*>(w.data);
                auto* pg = reinterpret_cast<const double*>(g.data);
                auto* pv = reinterpret_cast<double*>(v.data);
                if (kind == "stream") {
                    k.stream_f64(pw, pg, pv, w.size, par.num_threads);
                } else if (kind == "read") {
                    sink += k.read_f64(pg, w.size, par.num_threads);
                } else {
                    const minimalsgd::TensorSpan<double> span{pw, pg, pv, w.size, false};
                    k.step_f64(&span, 1, opts, 1.0, par);
                }
            }
        }
        const auto t1 = std::chrono::steady_clock::now();
        out.push_back(std::chrono::duration<double>(t1 - t0).count() / inner);
    }
    return out;
}

std::vector<std::string> supported_isas() {
    std::vector<std::string> out;
    for (Isa isa : {Isa::baseline, Isa::avx2, Isa::avx512}) {
        if (minimalsgd::cpu_supports(isa)) {
            out.emplace_back(minimalsgd::isa_name(isa));
        }
    }
    return out;
}

}  // namespace

PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
    m.doc() = "minimalsgd native kernels (private: use the minimalsgd package)";

    // The kernel set: the best the CPU supports, or MINIMALSGD_ISA when it names one it supports.
#if defined(_OPENMP)
    g_default_threads = omp_get_max_threads();
#endif
    // A bad MINIMALSGD_ISA warns and keeps the best kernels: failing the import instead would
    // silently put the whole package on the NumPy backend.
    g_isa = static_cast<int>(minimalsgd::best_isa());
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
          "The fused step over lists of float32/float64 contiguous arrays, in place, in one call.");
    m.def("sum_of_squares", &sum_of_squares, py::arg("arrays"),
          "Sum of x*x over a list of float32/float64 contiguous arrays, accumulated in double.");
    g_str_value = PyUnicode_InternFromString("value");
    g_str_grad = PyUnicode_InternFromString("grad");
    m.def("try_sgd_step", &try_sgd_step, py::arg("values"), py::arg("grads"), py::arg("momentum_buffers"),
          py::arg("first_step"), py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"),
          py::arg("nesterov"), py::arg("maximize"), py::arg("grad_scale"),
          "The functional step when every input is valid and native; False (nothing written) otherwise.");
    m.def("sgd_step_ptrs", &sgd_step_ptrs, py::arg("kinds"), py::arg("value_ptrs"), py::arg("grad_ptrs"),
          py::arg("buf_ptrs"), py::arg("sizes"), py::arg("first_step"), py::arg("lr"), py::arg("momentum"),
          py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"),
          py::arg("grad_scale"), "Private to minimalsgd.torch: the step over raw contiguous buffers.");
    py::class_<Plan>(m, "Plan", "A validated SGD.step(), cached (private to minimalsgd.optim).")
        .def(py::init<py::dict, py::list, py::list, py::list, py::list, py::list, py::object, double, double, double,
                      double, bool, bool, double, bool>(),
             py::arg("params"), py::arg("keys"), py::arg("inners"), py::arg("index"), py::arg("values"),
             py::arg("grads"), py::arg("buffers"), py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
             py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"), py::arg("clip"),
             py::arg("skip_nonfinite"))
        .def("step", &Plan::step, py::arg("params"))
        .def_property_readonly("applied", &Plan::applied)
        .def("reset_applied", &Plan::reset_applied)
        .def_property_readonly("last_norm", &Plan::last_norm);
    m.def("_time_calls", &time_calls, py::arg("kind"), py::arg("w"), py::arg("g"), py::arg("v"), py::arg("reps"),
          py::arg("inner"), py::arg("threads") = 0,
          "Bench support: seconds per call of the yardstick loop ('stream') or the bare fused step ('step').");
    m.def("get_isa", &get_isa, "The instruction set whose kernels run.");
    m.def("set_isa", &set_isa, py::arg("isa"), "Run the kernels of 'baseline', 'avx2' or 'avx512'.");
    m.def("supported_isas", &supported_isas, "The instruction sets this CPU supports.");
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
    m.attr("compiled_isas") = py::make_tuple("baseline", "avx2", "avx512");
    m.attr("__version__") = MINIMALSGD_VERSION_STRING;
}
