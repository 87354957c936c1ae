// The dispatch machinery of the extensions (minimalsgd._core, minimalsgd._bench_core): a list of
// kernels made into a type list, one table of function pointers per instruction-set target built
// from it, the lookup of a kernel by (operation, storage, buffer) at compile time and by the
// Kind of a buffer at run time. No Python here: what the kernels are is said in kernels.hpp (the
// product's list) and csrc/bench/yardsticks.hpp (the bench's).
//
// The idea is Highway's HWY_EXPORT/HWY_DYNAMIC_DISPATCH (one table per exported function,
// generated, never kept by hand): here one table per target for a whole list, since every call
// of a step picks its instruction set once and then calls several kernels of it.
#pragma once

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <minimalsgd/config.hpp>
#include <minimalsgd/cpu.hpp>
#include <minimalsgd/half.hpp>

// The x86-64 targets exist only when the compiler targets x86-64 and CMake built them (it
// defines MINIMALSGD_X86_KERNELS_LINKED for an x86-64 target with GCC-style flags; both are checked).
#if MINIMALSGD_X86_64 && defined(MINIMALSGD_X86_KERNELS_LINKED)
#define MINIMALSGD_HAVE_X86_KERNELS 1
#else
#define MINIMALSGD_HAVE_X86_KERNELS 0
#endif

// The instruction-set targets linked into this build, best last: I(name) with name an enumerator
// of minimalsgd::Isa. Each has its own translation unit of every kernel list (CMakeLists.txt
// compiles the per-target sources once per target, in the namespace of that name, with its flags).
#if MINIMALSGD_HAVE_X86_KERNELS
#define MINIMALSGD_TARGETS(I) I(baseline) I(avx2) I(avx512) I(avx512_bf16)
#else
#define MINIMALSGD_TARGETS(I) I(baseline)
#endif

// The storage types the bindings know: D(name, C++ type); `name` is the Kind enumerator and the
// dtype:: alias that the kernel lists use.
#define MINIMALSGD_DTYPES(D)           \
    D(f32, float)                      \
    D(f64, double)                     \
    D(bf16, ::minimalsgd::bfloat16_t) \
    D(f16, ::minimalsgd::float16_t)

namespace minimalsgd_python {

// The storage type of a buffer, at run time.
enum class Kind {
#define MINIMALSGD_KIND_ENUMERATOR(name, type) name,
    MINIMALSGD_DTYPES(MINIMALSGD_KIND_ENUMERATOR)
#undef MINIMALSGD_KIND_ENUMERATOR
};

// ... and at compile time: dtype::f32 is float, and so on.
namespace dtype {
#define MINIMALSGD_DTYPE_ALIAS(name, type) using name = type;
MINIMALSGD_DTYPES(MINIMALSGD_DTYPE_ALIAS)
#undef MINIMALSGD_DTYPE_ALIAS
}  // namespace dtype

template <class T>
struct KindOf;
#define MINIMALSGD_KIND_OF(name, type)            \
    template <>                                   \
    struct KindOf<type> {                         \
        static constexpr Kind value = Kind::name; \
    };
MINIMALSGD_DTYPES(MINIMALSGD_KIND_OF)
#undef MINIMALSGD_KIND_OF

template <class T>
inline constexpr Kind kind_of = KindOf<T>::value;

// One row of a kernel list: operation Op over storage S with buffers of B. An operation is a
// traits type with
//   template <class S, class B> using Span   what the kernel takes per tensor
//   template <class S, class B> using Fn     the kernel's function-pointer type
// and, in each target's namespace, a specialization of Implementation<Op> (below) that names the
// function template the target compiles.
template <class Op, class S, class B>
struct Kernel {
    using op = Op;
    using storage = S;
    using buffer = B;
    using Fn = typename Op::template Fn<S, B>;
    using Span = typename Op::template Span<S, B>;
    static constexpr Kind storage_kind = kind_of<S>;
    static constexpr Kind buffer_kind = kind_of<B>;
};

template <class... K>
struct KernelList {};

namespace detail {
struct ListBegin {};
template <class L>
struct DropBegin;
template <class... K>
struct DropBegin<KernelList<ListBegin, K...>> {
    using type = KernelList<K...>;
};

template <class K, class... Ks>
constexpr std::size_t index_of() {
    constexpr bool found[] = {std::is_same_v<K, Ks>..., false};
    std::size_t i = 0;
    while (i < sizeof...(Ks) && !found[i]) {
        ++i;
    }
    return i;
}

template <class K, class... Ks>
constexpr std::size_t count_of() {
    return (std::size_t{0} + ... + (std::is_same_v<K, Ks> ? 1 : 0));
}

template <class Op, class L>
struct Select;
template <class Op, class... K>
struct Select<Op, KernelList<K...>> {
    using tuple = decltype(std::tuple_cat(
        std::declval<std::conditional_t<std::is_same_v<typename K::op, Op>, std::tuple<K>, std::tuple<>>>()...));
    template <class T>
    struct ToList;
    template <class... T>
    struct ToList<std::tuple<T...>> {
        using type = KernelList<T...>;
    };
    using type = typename ToList<tuple>::type;
};
}  // namespace detail

// A kernel list macro (rows X(op, storage, buffer)) as a KernelList of Kernel types; `ops` is the
// namespace of the operations' traits, the storage names are dtype:: aliases.
#define MINIMALSGD_KERNEL_TYPE(op, storage, buffer) \
    , ::minimalsgd_python::Kernel<ops::op, ::minimalsgd_python::dtype::storage, ::minimalsgd_python::dtype::buffer>
#define MINIMALSGD_KERNEL_LIST(LIST) \
    typename ::minimalsgd_python::detail::DropBegin<::minimalsgd_python::KernelList< \
        ::minimalsgd_python::detail::ListBegin LIST(MINIMALSGD_KERNEL_TYPE)>>::type

// The rows of list L whose operation is Op, as a KernelList.
template <class Op, class L>
using KernelsOf = typename detail::Select<Op, L>::type;

// The kernels of one target: one function pointer per row of the list, looked up by type.
template <class L>
class Table;
template <class... K>
class Table<KernelList<K...>> {
    static_assert(((detail::count_of<K, K...>() == 1) && ...), "a kernel list has a row twice");

  public:
    constexpr explicit Table(typename K::Fn... fns) : fns_(fns...) {}

    // Whether the list has the row (Op, S, B).
    template <class Op, class S, class B = S>
    static constexpr bool has() {
        return detail::index_of<Kernel<Op, S, B>, K...>() < sizeof...(K);
    }

    // The kernel of (Op, S, B); a compile error when the list has no such row.
    template <class Op, class S, class B = S>
    constexpr typename Op::template Fn<S, B> get() const {
        constexpr std::size_t i = detail::index_of<Kernel<Op, S, B>, K...>();
        static_assert(i < sizeof...(K), "no such kernel in the list: add its row (kernels.hpp)");
        return std::get<i>(fns_);
    }

  private:
    std::tuple<typename K::Fn...> fns_;
};

// The spans of one call for every row of operation Op in list L, one vector per row, filed by
// the storage and buffer kinds of each tensor at run time.
template <class Op, class L>
class Spans;
template <class Op, class... K>
class Spans<Op, KernelList<K...>> {
  public:
    // The spans of (S, B).
    template <class S, class B = S>
    std::vector<typename Op::template Span<S, B>>& of() {
        constexpr std::size_t i = detail::index_of<Kernel<Op, S, B>, K...>();
        static_assert(i < sizeof...(K), "no such kernel in the list: add its row (kernels.hpp)");
        return std::get<i>(spans_);
    }

    // Calls f(spans) with the spans of (storage, buffer) kinds; false (f not called) when the list
    // has no such kernel.
    template <class F>
    bool with(Kind storage, Kind buffer, F&& f) {
        return with_impl(storage, buffer, f, std::index_sequence_for<K...>{});
    }

    // Calls f(Kernel{}, spans) for every row, in the list's order.
    template <class F>
    void for_each(F&& f) const {
        for_each_impl(f, std::index_sequence_for<K...>{});
    }

    void clear() {
        std::apply([](auto&... v) { (v.clear(), ...); }, spans_);
    }

    bool empty() const {
        return std::apply([](const auto&... v) { return (v.empty() && ...); }, spans_);
    }

  private:
    template <class F, std::size_t... I>
    bool with_impl(Kind storage, Kind buffer, F& f, std::index_sequence<I...>) {
        return ((K::storage_kind == storage && K::buffer_kind == buffer &&
                 (static_cast<void>(f(std::get<I>(spans_))), true)) || ...);
    }
    template <class F, std::size_t... I>
    void for_each_impl(F& f, std::index_sequence<I...>) const {
        (f(K{}, std::get<I>(spans_)), ...);
    }

    std::tuple<std::vector<typename K::Span>...> spans_;
};

// Per target: Implementation<Op>::get<S, B>() is the kernel of (Op, S, B) that this target
// compiles; make_table builds the target's table of a list. Both live in the target's namespace
// (code compiled under different -m flags must not share a name), in every translation unit.
inline namespace MINIMALSGD_TARGET_NAMESPACE {
template <class Op>
struct Implementation;

template <class... K>
constexpr Table<KernelList<K...>> make_table(KernelList<K...>) {
    return Table<KernelList<K...>>(Implementation<typename K::op>::template get<typename K::storage, typename K::buffer>()...);
}
}  // namespace MINIMALSGD_TARGET_NAMESPACE

// The table of list type T compiled for target I: defined in that target's translation unit, and
// declared for every target (MINIMALSGD_TARGETS) next to T, before any use.
template <class T, minimalsgd::Isa I>
const T& table();

// The instruction sets linked into this build, best last.
inline constexpr minimalsgd::Isa kCompiledIsas[] = {
#define MINIMALSGD_ISA_ENUMERATOR(isa) minimalsgd::Isa::isa,
    MINIMALSGD_TARGETS(MINIMALSGD_ISA_ENUMERATOR)
#undef MINIMALSGD_ISA_ENUMERATOR
};

// The table of list type T for `isa` (the baseline's for one not linked in).
template <class T>
const T& table_for(minimalsgd::Isa isa) {
    switch (isa) {
#define MINIMALSGD_TABLE_CASE(name)   \
    case minimalsgd::Isa::name:       \
        return table<T, minimalsgd::Isa::name>();
        MINIMALSGD_TARGETS(MINIMALSGD_TABLE_CASE)
#undef MINIMALSGD_TABLE_CASE
        default:
            return table<T, minimalsgd::Isa::baseline>();
    }
}

}  // namespace minimalsgd_python
