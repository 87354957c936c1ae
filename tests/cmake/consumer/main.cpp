// Checks the core through the installed/added package: a multi-tensor step over buffers large
// enough for threads, against a plain double loop written here. Exit 0 when they agree.
#include <minimalsgd/minimalsgd.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
#if defined(CONSUMER_EXPECT_OPENMP) && !defined(_OPENMP)
    std::puts("expected OpenMP to be enabled by linking OpenMP::OpenMP_CXX");
    return 1;
#endif
    const std::size_t n = 200000;
    std::vector<float> w(n), g(n), v(n);
    std::vector<double> wd(n), vd(n);
    for (std::size_t i = 0; i < n; ++i) {
        w[i] = std::sin(0.001f * float(i));
        g[i] = std::cos(0.003f * float(i));
        wd[i] = w[i];
    }
    minimalsgd::SgdOptions o{0.1, 0.9, 0.0, 0.01, true, false};
    minimalsgd::Parallel par;
    par.grain = 1000;  // threads when OpenMP is linked
    for (int step = 0; step < 3; ++step) {
        const minimalsgd::TensorSpan<float> spans[] = {{w.data(), g.data(), v.data(), n / 3, step == 0},
                                                      {w.data() + n / 3, g.data() + n / 3, v.data() + n / 3, n - n / 3, step == 0}};
        minimalsgd::multi_tensor_sgd_step(spans, 2, o, 1.0f, par);
        for (std::size_t i = 0; i < n; ++i) {
            double gi = g[i] + o.weight_decay * wd[i];
            vd[i] = step == 0 ? gi : o.momentum * vd[i] + gi;
            wd[i] -= o.lr * (gi + o.momentum * vd[i]);
        }
    }
    double worst = 0;
    for (std::size_t i = 0; i < n; ++i) worst = std::fmax(worst, std::fabs(w[i] - wd[i]) / (1 + std::fabs(wd[i])));
    const double norm2 = minimalsgd::sum_of_squares(g.data(), n, par);
#if defined(_OPENMP)
    const char* mode = "OpenMP";
#else
    const char* mode = "serial";
#endif
    std::printf("minimalsgd %s (%s): worst relative error %.3g, |g|^2 = %.6f\n", MINIMALSGD_VERSION_STRING, mode, worst, norm2);
    return worst < 1e-5 && norm2 > 0 ? 0 : 1;
}
