// Linear regression in C++ with the header-only core
// ===================================================
//
// Trains a linear regression y = X w with minibatch SGD (momentum 0.9, Nesterov, weight decay),
// using minimalsgd's fused step on plain std::vector buffers. Prints the loss as it falls.
// Build it against the installed wheel (``examples/cpp/CMakeLists.txt`` uses ``find_package``)::
//
//     cmake -S examples/cpp -B build/example -Dminimalsgd_DIR=$(python -m minimalsgd --cmakedir)
//     cmake --build build/example && build/example/train_linear
#include <minimalsgd/minimalsgd.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
    const std::size_t n_features = 64, n_samples = 4096, batch = 128;
    std::mt19937 rng(0);
    std::normal_distribution<float> normal(0.0f, 1.0f);

    // Data from a hidden true model plus a little noise.
    std::vector<float> w_true(n_features), X(n_samples * n_features), y(n_samples);
    for (auto& v : w_true) v = normal(rng);
    for (auto& v : X) v = normal(rng);
    for (std::size_t i = 0; i < n_samples; ++i) {
        float s = 0;
        for (std::size_t j = 0; j < n_features; ++j) s += X[i * n_features + j] * w_true[j];
        y[i] = s + 0.01f * normal(rng);
    }

    std::vector<float> w(n_features, 0.0f), grad(n_features), velocity(n_features);
    minimalsgd::SgdOptions opts{/*lr=*/0.05};
    opts.momentum = 0.9;
    opts.nesterov = true;
    opts.weight_decay = 1e-4;

    auto loss = [&] {
        double total = 0;
        for (std::size_t i = 0; i < n_samples; ++i) {
            double r = -y[i];
            for (std::size_t j = 0; j < n_features; ++j) r += double(X[i * n_features + j]) * w[j];
            total += r * r;
        }
        return total / n_samples;
    };

    std::printf("minimalsgd %s, %s kernels available on this CPU\n", MINIMALSGD_VERSION_STRING,
                minimalsgd::isa_name(minimalsgd::best_isa()));
    const double initial = loss();
    std::printf("step    0  loss %.6f\n", initial);
    std::size_t step = 0;
    for (int epoch = 0; epoch < 10; ++epoch) {
        for (std::size_t start = 0; start + batch <= n_samples; start += batch, ++step) {
            // Gradient of the mean squared error over the batch.
            std::fill(grad.begin(), grad.end(), 0.0f);
            for (std::size_t i = start; i < start + batch; ++i) {
                float r = -y[i];
                for (std::size_t j = 0; j < n_features; ++j) r += X[i * n_features + j] * w[j];
                for (std::size_t j = 0; j < n_features; ++j) grad[j] += 2.0f * r * X[i * n_features + j] / batch;
            }
            // Global-norm clipping folded into the step as a scale.
            const double norm = std::sqrt(minimalsgd::sum_of_squares(grad.data(), grad.size()));
            const float scale = norm > 10.0 ? float(10.0 / (norm + 1e-12)) : 1.0f;
            minimalsgd::sgd_step(w.data(), grad.data(), velocity.data(), w.size(), opts, /*first_step=*/step == 0, scale);
        }
        std::printf("epoch %2d  loss %.6f\n", epoch + 1, loss());
    }
    const double final_loss = loss();
    std::printf("loss fell from %.6f to %.6f\n", initial, final_loss);
    return final_loss < 0.01 * initial ? 0 : 1;
}
