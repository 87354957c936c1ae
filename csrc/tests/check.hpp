// A tiny check helper for the C++ tests (CI has no network: no downloaded test framework).
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace check {

struct Registry {
    std::vector<std::pair<std::string, std::function<void()>>> tests;
    int failures = 0;
    int checks = 0;
    static Registry& get() {
        static Registry r;
        return r;
    }
};

struct Add {
    Add(const char* name, std::function<void()> fn) { Registry::get().tests.emplace_back(name, std::move(fn)); }
};

inline bool record(bool ok, const char* expr, const char* file, int line, const std::string& detail = {}) {
    Registry& r = Registry::get();
    ++r.checks;
    if (!ok) {
        ++r.failures;
        std::fprintf(stderr, "%s:%d: CHECK failed: %s %s\n", file, line, expr, detail.c_str());
    }
    return ok;
}

// Runs every test; the last line says "N passed, M failed" with N, M counted in tests.
inline int run_all() {
    Registry& r = Registry::get();
    int passed = 0, failed = 0;
    for (auto& [name, fn] : r.tests) {
        const int before = r.failures;
        try {
            fn();
        } catch (const std::exception& e) {
            ++r.failures;
            std::fprintf(stderr, "%s: unexpected exception: %s\n", name.c_str(), e.what());
        }
        const bool ok = r.failures == before;
        std::printf("%s %s\n", ok ? "[ ok ]" : "[FAIL]", name.c_str());
        (ok ? passed : failed) += 1;
    }
    std::printf("%d checks\n%d passed, %d failed\n", r.checks, passed, failed);
    return failed == 0 ? 0 : 1;
}

}  // namespace check

#define CHECK_CAT2(a, b) a##b
#define CHECK_CAT(a, b) CHECK_CAT2(a, b)
#define TEST_CASE(name)                                                \
    static void name();                                                \
    static const check::Add CHECK_CAT(check_add_, name)(#name, &name); \
    static void name()
#define CHECK(expr) check::record(static_cast<bool>(expr), #expr, __FILE__, __LINE__)
#define CHECK_MSG(expr, msg) check::record(static_cast<bool>(expr), #expr, __FILE__, __LINE__, (msg))
#define CHECK_THROWS(expr)                                                   \
    do {                                                                     \
        bool threw_ = false;                                                 \
        try {                                                                \
            (void)(expr);                                                    \
        } catch (const std::exception&) {                                    \
            threw_ = true;                                                   \
        }                                                                    \
        check::record(threw_, "throws: " #expr, __FILE__, __LINE__);         \
    } while (0)
