// minimalsgd._core: buffer checks. They read NumPy's array struct directly (no temporaries, no
// conversion, never a copy), say what stops the kernel from walking an array in place as one flat
// buffer, and find overlaps between the buffers of one call.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <minimalsgd/adam.hpp>
#include <minimalsgd/sgd.hpp>

#include "kernels.hpp"

namespace py = pybind11;

namespace minimalsgd_python {

// ---------------------------------------------------------------------------------------------
// Buffer checks: read the array struct directly (no temporaries, no conversion).

// Kind (the storage type of a buffer) is in dispatch.hpp, generated with the kernel lists' dtypes.

// NumPy's type number of ml_dtypes.bfloat16 (a user dtype: known once ml_dtypes is imported), or
// -1 when ml_dtypes is not available.
inline int g_bf16_type_num = -1;

// Looks ml_dtypes' bfloat16 up (at import): its type number exists once ml_dtypes is imported.
// Without ml_dtypes there is no bfloat16 array to step (false), and float16 still works.
inline bool init_bfloat16() {
    try {
        py::object bf16 = py::module_::import("ml_dtypes").attr("bfloat16");
        g_bf16_type_num = py::dtype::from_args(bf16).num();
        return true;
    } catch (const py::error_already_set&) {
        return false;
    }
}

inline bool is_half(Kind k) { return k == Kind::bf16 || k == Kind::f16; }

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

inline std::string where(const char* what, std::size_t i) { return std::string(what) + "[" + std::to_string(i) + "]"; }

enum class Bad { none, type, dtype, layout, aligned, readonly };

// What stops the native kernel from walking `obj` in place as one flat buffer (Bad::none: nothing).
inline Bad inspect(PyObject* obj, bool writeable, View& v) {
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
    } else if (d->type_num == 23 /* NPY_HALF */ && native_order) {
        v.kind = Kind::f16;
    } else if (d->type_num == g_bf16_type_num && g_bf16_type_num >= 0 && native_order) {
        v.kind = Kind::bf16;
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

inline View view_of(PyObject* obj, const char* what, std::size_t i, bool writeable) {
    View v{};
    switch (inspect(obj, writeable, v)) {
        case Bad::none:
            return v;
        case Bad::type:
            throw py::type_error(where(what, i) + " must be a numpy.ndarray, got " + std::string(Py_TYPE(obj)->tp_name));
        case Bad::dtype:
            throw py::type_error(where(what, i) +
                                 " must be float32, float64, float16 or bfloat16 in native byte order for the native backend");
        case Bad::layout:
            throw py::value_error(where(what, i) + " must be C- or F-contiguous for the native backend");
        case Bad::aligned:
            throw py::value_error(where(what, i) + " is not aligned to its dtype; the native backend needs aligned data");
        case Bad::readonly:
            throw py::value_error(where(what, i) + " is read-only");
    }
    throw py::value_error(where(what, i) + " cannot be used");
}

// Same shape and memory order (element i is the same logical element in both), any dtype.
inline bool same_order(const View& a, const View& b) {
    if (a.ndim != b.ndim || !std::equal(a.shape, a.shape + a.ndim, b.shape)) {
        return false;
    }
    // Both C-contiguous or both F-contiguous: then element i is the same logical element in both.
    return ((a.flags & kC) && (b.flags & kC)) || ((a.flags & kF) && (b.flags & kF));
}

inline bool same_layout(const View& a, const View& b) { return a.kind == b.kind && same_order(a, b); }

// The momentum buffer of value `w`: its dtype, or float32 for a 16-bit value.
inline bool buffer_fits(const View& w, const View& b) {
    return same_order(w, b) && (b.kind == w.kind || (is_half(w.kind) && b.kind == Kind::f32));
}

inline std::size_t itemsize(Kind k) {
    switch (k) {
#define MINIMALSGD_ITEMSIZE_CASE(name, type) \
    case Kind::name:                         \
        return sizeof(type);
        MINIMALSGD_DTYPES(MINIMALSGD_ITEMSIZE_CASE)
#undef MINIMALSGD_ITEMSIZE_CASE
    }
    return 0;
}

struct Range {
    std::uintptr_t lo, hi;  // [lo, hi)
    bool written;
    std::size_t tensor;
};

// No buffer that the step writes may overlap any other buffer of the call. Returns the index of
// a pair that does (as `a`, `b`), or false when there is none. Sorts `ranges`.
inline bool find_overlap(std::vector<Range>& ranges, std::size_t* a, std::size_t* b) {
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

inline void check_overlap(std::vector<Range>& ranges) {
    std::size_t a = 0, b = 0;
    if (find_overlap(ranges, &a, &b)) {
        throw py::value_error("tensors " + std::to_string(a) + " and " + std::to_string(b) +
                              " share memory that the step writes");
    }
}

// The memory ranges that the tensors of one call read and write, for the overlap check.
struct Ranges {
    std::vector<Range> ranges;

    // `bytes` bytes at `p`, of tensor `i` (null: nothing).
    void record(const char* p, std::size_t bytes, bool written, std::size_t i) {
        if (p != nullptr) {
            const auto lo = reinterpret_cast<std::uintptr_t>(p);
            ranges.push_back(Range{lo, lo + bytes, written, i});
        }
    }

    bool overlaps() {
        std::size_t a = 0, c = 0;
        return ranges.size() > 1 && find_overlap(ranges, &a, &c);
    }
};

// The tensors of one SGD call, filed by storage and buffer type into the spans of the kernels of
// the list (kernels.hpp), with their memory ranges.
struct Batch : Ranges {
    SpansOf<ops::sgd> spans;

    explicit Batch(std::size_t n) { ranges.reserve(3 * n); }

    void clear() {
        spans.clear();
        ranges.clear();
    }

    // Tensor `i`: `size` elements of `kind` at w, g and b (b null without momentum).
    void add(Kind kind, char* w, const char* g, char* b, std::size_t size, bool first, std::size_t i,
             std::uint32_t group = 0) {
        add(kind, w, g, b, size, first, i, group, kind, i);
    }

    // The same with the buffer's kind `bkind` (kind, or f32 for a 16-bit kind), the tensor's
    // stochastic-rounding key and the rounding index of its first element (TensorSpan::index0).
    // A tensor without a buffer runs with the kernel of its own type.
    void add(Kind kind, char* w, const char* g, char* b, std::size_t size, bool first, std::size_t i,
             std::uint32_t group, Kind bkind, std::uint64_t key, std::uint64_t index0 = 0) {
        const std::size_t bytes = size * itemsize(kind);
        record(w, bytes, true, i);
        record(g, bytes, false, i);
        record(b, size * itemsize(bkind), true, i);
        const bool known = spans.with(kind, b != nullptr ? bkind : kind, [&](auto& v) {
            using Span = typename std::decay_t<decltype(v)>::value_type;
            v.push_back(Span{reinterpret_cast<decltype(Span::value)>(w), reinterpret_cast<decltype(Span::grad)>(g),
                             reinterpret_cast<decltype(Span::momentum_buffer)>(b), size, first, group, key, index0});
        });
        if (!known) {
            throw std::invalid_argument("tensor " + std::to_string(i) + ": no SGD kernel for its value and buffer types");
        }
    }

    bool empty() const { return spans.empty(); }
};

// The tensors of one Adam call: value, grad, exp_avg, exp_avg_sq and (amsgrad) max_exp_avg_sq.
struct AdamBatch : Ranges {
    SpansOf<ops::adam> spans;

    explicit AdamBatch(std::size_t n) { ranges.reserve(5 * n); }

    // Tensor `i`: `size` elements of `kind`; `vm` null without amsgrad; `step` 1-based.
    void add(Kind kind, char* w, const char* g, char* m, char* v, char* vm, std::size_t size, std::int64_t step,
             std::size_t i, std::uint32_t group = 0) {
        const std::size_t bytes = size * itemsize(kind);
        record(w, bytes, true, i);
        record(g, bytes, false, i);
        record(m, bytes, true, i);
        record(v, bytes, true, i);
        record(vm, bytes, true, i);
        const bool known = spans.with(kind, kind, [&](auto& spans_of_kind) {
            using Span = typename std::decay_t<decltype(spans_of_kind)>::value_type;
            using T = std::remove_pointer_t<decltype(Span::value)>;
            spans_of_kind.push_back(Span{reinterpret_cast<T*>(w), reinterpret_cast<const T*>(g), reinterpret_cast<T*>(m),
                                         reinterpret_cast<T*>(v), reinterpret_cast<T*>(vm), size, step, group});
        });
        if (!known) {
            throw std::invalid_argument("tensor " + std::to_string(i) + ": no Adam kernel for its type");
        }
    }
};

inline std::vector<PyObject*> items(py::handle seq, const char* what) {
    if (!PyList_Check(seq.ptr()) && !PyTuple_Check(seq.ptr())) {
        throw py::type_error(std::string(what) + " must be a list or tuple of arrays");
    }
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
    PyObject** it = PySequence_Fast_ITEMS(seq.ptr());
    return std::vector<PyObject*>(it, it + n);
}

inline bool real_of(PyObject* o, double* out) {
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
inline bool arrays_of(PyObject* o, std::vector<PyObject*>& out) {
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


}  // namespace minimalsgd_python
