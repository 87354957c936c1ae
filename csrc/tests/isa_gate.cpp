// isa_gate ISA PROGRAM [ARGS...]: runs PROGRAM (a test built with the flags of the x86-64 kernel
// set ISA) where this CPU supports ISA; elsewhere prints why and exits with 77, which ctest reports
// as a skipped test (SKIP_RETURN_CODE). The gate itself is built without instruction-set flags, so
// it runs on any x86-64: a program built with -mavx512f may use AVX-512 before its main() runs.
#include <minimalsgd/cpu.hpp>

#include <cstdio>

#if defined(_WIN32)
#include <process.h>
#else
#include <unistd.h>
#endif

int main(int argc, char** argv) {
    minimalsgd::Isa isa;
    if (argc < 3 || !minimalsgd::parse_isa(argv[1], &isa)) {
        std::fprintf(stderr, "usage: isa_gate baseline|avx2|avx512|avx512_bf16 PROGRAM [ARGS...]\n");
        return 2;
    }
    if (!minimalsgd::cpu_supports(isa)) {
        std::printf("skipped: this CPU does not support %s (best: %s)\n", argv[1],
                    minimalsgd::isa_name(minimalsgd::best_isa()));
        return 77;
    }
    std::fflush(stdout);
#if defined(_WIN32)
    const auto rc = _spawnv(_P_WAIT, argv[2], argv + 2);
    if (rc != -1) return static_cast<int>(rc);
#else
    execv(argv[2], argv + 2);
#endif
    std::perror(argv[2]);
    return 2;
}
