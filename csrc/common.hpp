// Shared enums and argument checks for the kernels (no pybind11 here).
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace pfg {

enum class Act { Relu = 0, Sigmoid = 1, Tanh = 2 };
enum class Loss { Softmax = 0, Mse = 1, Hinge = 2 };
enum class Opt { Sgd = 0, Momentum = 1, Nesterov = 2, AdaGrad = 3, RmsProp = 4, Adam = 5 };

constexpr double kDelta = 1e-7;  // inside log() of the cross-entropy, as the tutorials
constexpr double kOptEps = 1e-7; // AdaGrad / RMSprop / Adam epsilon, as the tutorials

inline Act parse_act(const std::string& s) {
    if (s == "relu") return Act::Relu;
    if (s == "sigmoid") return Act::Sigmoid;
    if (s == "tanh") return Act::Tanh;
    throw std::invalid_argument("unknown activation '" + s + "' (expected relu, sigmoid or tanh)");
}
inline Loss parse_loss(const std::string& s) {
    if (s == "softmax") return Loss::Softmax;
    if (s == "mse") return Loss::Mse;
    if (s == "hinge") return Loss::Hinge;
    throw std::invalid_argument("unknown loss '" + s + "' (expected softmax, mse or hinge)");
}
inline Opt parse_opt(const std::string& s) {
    if (s == "sgd") return Opt::Sgd;
    if (s == "momentum") return Opt::Momentum;
    if (s == "nesterov") return Opt::Nesterov;
    if (s == "adagrad") return Opt::AdaGrad;
    if (s == "rmsprop") return Opt::RmsProp;
    if (s == "adam") return Opt::Adam;
    throw std::invalid_argument("unknown optimizer '" + s + "'");
}

template <class T>
inline T activate(Act a, T z) {
    switch (a) {
        case Act::Relu: return z > T(0) ? z : T(0);
        case Act::Sigmoid: return T(1) / (T(1) + std::exp(-z));
        default: return std::tanh(z);
    }
}

inline std::int64_t count_params(const std::vector<std::int64_t>& sizes) {
    std::int64_t n = 0;
    for (size_t i = 1; i < sizes.size(); ++i) n += sizes[i - 1] * sizes[i] + sizes[i];
    return n;
}

}  // namespace pfg
