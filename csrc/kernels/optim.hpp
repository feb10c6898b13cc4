// Fused optimizer updates on flat parameter vectors. Header-only, no pybind11.
//
// The formulas and the order of the floating-point operations follow
// _backends/numpy.py opt_update term by term (scalars cast to T first, as numpy does), so float64
// agrees with numpy to the last bit or so. hyper is float64 [lr, a, b, eps, weight_decay, style,
// max_norm] (kHyperLen entries; see _backends/numpy.py opt_update): a = momentum / decay rate / beta1,
// b = beta2, weight_decay is decoupled (theta *= 1 - lr wd first; AdamW), style 0 = the tutorials'
// formulas, 1 = torch.optim's, max_norm > 0 clips the gradient by its global norm first.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "core/common.hpp"
#include "core/simd.hpp"

namespace pfg {

constexpr int kHyperLen = 7;  // pyfastgrad/spec.py HYPER_SLOTS
enum HyperSlot { kLr = 0, kA = 1, kB = 2, kEps = 3, kWd = 4, kStyle = 5, kMaxNorm = 6 };

// Codes and names of pyfastgrad/spec.py OPTIMIZERS (tests/test_spec.py compares them, with the
// state counts and flags below, through _core._spec()).
enum class Opt { Sgd = 0, Momentum = 1, Nesterov = 2, AdaGrad = 3, RmsProp = 4, Adam = 5, AdamW = 6, Adamax = 7 };
constexpr const char* kOptNames[] = {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "adamax"};

inline Opt parse_opt(const std::string& s) { return static_cast<Opt>(parse_name(kOptNames, s, "optimizer")); }

[[noreturn]] inline void unknown_opt(Opt opt) {
    throw std::invalid_argument("unknown optimizer code " + std::to_string(int(opt)));
}

// How many state vectors (state1, state2) an optimizer reads and writes.
inline int opt_state_count(Opt opt) {
    switch (opt) {
        case Opt::Sgd: return 0;
        case Opt::Momentum:
        case Opt::Nesterov:
        case Opt::AdaGrad:
        case Opt::RmsProp: return 1;
        case Opt::Adam:
        case Opt::AdamW:
        case Opt::Adamax: return 2;
    }
    unknown_opt(opt);
}

// Bias-corrected by the update count: needs step >= 1.
inline bool opt_is_adam(Opt opt) {
    switch (opt) {
        case Opt::Sgd:
        case Opt::Momentum:
        case Opt::Nesterov:
        case Opt::AdaGrad:
        case Opt::RmsProp: return false;
        case Opt::Adam:
        case Opt::AdamW:
        case Opt::Adamax: return true;
    }
    unknown_opt(opt);
}

// The weight_decay slot is decoupled decay (theta *= 1 - lr wd before the step), else the
// optimizer's own use of it.
inline bool opt_decoupled_decay(Opt opt) {
    switch (opt) {
        case Opt::Sgd:
        case Opt::Momentum:
        case Opt::Nesterov:
        case Opt::AdaGrad:
        case Opt::RmsProp:
        case Opt::Adam:
        case Opt::AdamW: return true;
        case Opt::Adamax: return false;  // L2 in the gradient, as torch.optim.Adamax
    }
    unknown_opt(opt);
}

// sum(g^2) in double, in index order.
template <class T>
inline double grad_sq_sum(const T* g, std::int64_t n) {
    double s = 0.0;
    for (std::int64_t i = 0; i < n; ++i) s += double(g[i]) * double(g[i]);
    return s;
}

// The factor clipping by global norm applies: max_norm / (norm + 1e-6) when norm > max_norm (as
// torch.nn.utils.clip_grad_norm_), else 1 (also when clipping is off, max_norm <= 0).
inline double clip_factor(double norm, double max_norm) {
    return (max_norm > 0.0 && norm > max_norm) ? max_norm / (norm + 1e-6) : 1.0;
}

// Clip g (n entries) in place by its global norm; returns the factor applied.
template <class T>
inline double clip_grad(T* g, std::int64_t n, double max_norm) {
    const double f = clip_factor(std::sqrt(grad_sq_sum(g, n)), max_norm);
    if (f != 1.0) {
        const T c = T(f);
        for (std::int64_t i = 0; i < n; ++i) g[i] *= c;
    }
    return f;
}

// Decaying state (momentum's velocity, the moments of RMSprop and Adam) of a parameter whose gradient
// stays zero, as W0's rows for pixels that batches rarely touch, sinks geometrically below the normal
// range (velocity 0.9^k: after ~800 steps in float32), and each operation on a subnormal costs a ~100-
// cycle microcode assist on Intel cores: an MNIST epoch with Momentum grew from 98 to 145-164 ms over
// four epochs. Such state is set to zero instead (numba's _ftz the same; the numpy reference keeps the
// subnormals): results differ only by values below 1.2e-38 (float32) or 2.2e-308 (float64). Flushing the
// whole thread (MXCSR's FTZ) was tried: Adam's m + c1 (0 - m) then stops decaying at ~1e-37, since the
// increment flushes first.
template <class T>
PFG_ALWAYS_INLINE T flush_tiny(T v) {
    return std::abs(v) < std::numeric_limits<T>::min() ? T(0) : v;
}

template <class T>
PFG_ALWAYS_INLINE void opt_update_kernel(Opt opt, T* __restrict theta, const T* __restrict g, T* __restrict s1,
                                         T* __restrict s2, std::int64_t n, const double* hyper,
                                         std::int64_t step) {
    const T lr = T(hyper[kLr]);
    const T eps = T(hyper[kEps]);
    const bool torch = hyper[kStyle] != 0.0;
    if (hyper[kWd] != 0.0 && opt_decoupled_decay(opt)) {  // decoupled weight decay, before the step (as torch's AdamW)
        const T decay = T(1.0 - hyper[kLr] * hyper[kWd]);
        for (std::int64_t i = 0; i < n; ++i) theta[i] *= decay;
    }
    switch (opt) {
        case Opt::Sgd:
            for (std::int64_t i = 0; i < n; ++i) theta[i] -= lr * g[i];
            break;
        case Opt::Momentum: {
            const T mu = T(hyper[kA]);
            if (torch) {  // v <- mu v + g; theta -= lr v
                for (std::int64_t i = 0; i < n; ++i) {
                    const T v = flush_tiny(s1[i] * mu + g[i]);
                    s1[i] = v;
                    theta[i] -= lr * v;
                }
            } else {  // v <- mu v - lr g; theta += v
                for (std::int64_t i = 0; i < n; ++i) {
                    const T v = flush_tiny(mu * s1[i] - lr * g[i]);
                    s1[i] = v;
                    theta[i] += v;
                }
            }
            break;
        }
        case Opt::Nesterov: {
            const T mu = T(hyper[kA]);
            if (torch) {  // v <- mu v + g; theta -= lr (g + mu v)
                for (std::int64_t i = 0; i < n; ++i) {
                    const T v = flush_tiny(s1[i] * mu + g[i]);
                    s1[i] = v;
                    theta[i] -= lr * (g[i] + mu * v);
                }
            } else {
                const T mu2 = mu * mu;
                const T c = (T(1) + mu) * lr;
                for (std::int64_t i = 0; i < n; ++i) {
                    T v = s1[i] * mu;
                    v = flush_tiny(v - lr * g[i]);
                    s1[i] = v;
                    const T th = theta[i] + mu2 * v;  // two separate roundings, as numpy's two statements
                    theta[i] = th - c * g[i];
                }
            }
            break;
        }
        case Opt::AdaGrad:
            for (std::int64_t i = 0; i < n; ++i) {
                const T h = s1[i] + g[i] * g[i];
                s1[i] = h;
                theta[i] -= lr * g[i] / (std::sqrt(h) + eps);
            }
            break;
        case Opt::RmsProp: {
            const T rho = T(hyper[kA]);
            const T one_m_rho = T(1) - rho;
            for (std::int64_t i = 0; i < n; ++i) {
                T h = s1[i] * rho;
                h = flush_tiny(h + one_m_rho * g[i] * g[i]);
                s1[i] = h;
                theta[i] -= lr * g[i] / (std::sqrt(h) + eps);
            }
            break;
        }
        case Opt::Adam:
        case Opt::AdamW: {
            if (step < 1) throw std::invalid_argument("adam needs step >= 1 (got " + std::to_string(step) + ")");
            const double b1 = hyper[kA], b2 = hyper[kB];
            const double st = double(step);
            const double bc1 = 1.0 - std::pow(b1, st), bc2 = 1.0 - std::pow(b2, st);
            const T c1 = T(1) - T(b1);
            const T c2 = T(1) - T(b2);
            if (torch) {  // eps added to the corrected sqrt(v / bc2)
                const T step_size = T(hyper[kLr] / bc1);
                const T bc2_sqrt = T(std::sqrt(bc2));
                for (std::int64_t i = 0; i < n; ++i) {
                    const T m = flush_tiny(s1[i] + c1 * (g[i] - s1[i]));
                    const T v = flush_tiny(s2[i] + c2 * (g[i] * g[i] - s2[i]));
                    s1[i] = m;
                    s2[i] = v;
                    theta[i] -= step_size * m / (std::sqrt(v) / bc2_sqrt + eps);
                }
            } else {
                // Bias correction in double, then cast, exactly as numpy's dt(lr * sqrt(..) / (..)).
                const T lr_t = T(hyper[kLr] * std::sqrt(bc2) / bc1);
                for (std::int64_t i = 0; i < n; ++i) {
                    const T m = flush_tiny(s1[i] + c1 * (g[i] - s1[i]));
                    const T v = flush_tiny(s2[i] + c2 * (g[i] * g[i] - s2[i]));
                    s1[i] = m;
                    s2[i] = v;
                    theta[i] -= lr_t * m / (std::sqrt(v) + eps);
                }
            }
            break;
        }
        case Opt::Adamax: {  // torch.optim.Adamax: L2 decay in the gradient, infinity-norm second moment
            if (step < 1) throw std::invalid_argument("adamax needs step >= 1 (got " + std::to_string(step) + ")");
            const T b1 = T(hyper[kA]), b2 = T(hyper[kB]), wd = T(hyper[kWd]);
            const bool l2 = hyper[kWd] != 0.0;
            const T c1 = T(1) - b1;
            const T clr = T(hyper[kLr] / (1.0 - std::pow(hyper[kA], double(step))));
            for (std::int64_t i = 0; i < n; ++i) {
                const T gi = l2 ? g[i] + wd * theta[i] : g[i];
                const T m = flush_tiny(s1[i] + c1 * (gi - s1[i]));
                const T u = std::max(flush_tiny(s2[i] * b2), std::abs(gi) + eps);
                s1[i] = m;
                s2[i] = u;
                theta[i] -= clr * (m / u);
            }
            break;
        }
    }
}

// The build targets baseline x86-64 (SSE2); Adam/AdaGrad/RMSprop are bound by sqrt and divide,
// which AVX2 does twice as wide. AVX2 alone implies no FMA, so results stay bit-identical.
#if defined(PFG_X86) && !defined(__AVX2__)
#define PFG_OPT_AVX2_DISPATCH 1
template <class T>
__attribute__((target("avx2"))) void opt_update_avx2(Opt opt, T* theta, const T* g, T* s1, T* s2,
                                                     std::int64_t n, const double* hyper, std::int64_t step) {
    opt_update_kernel<T>(opt, theta, g, s1, s2, n, hyper, step);
}
#endif

// One update of theta (n entries) in place; step = 1 for the first update (Adam's correction).
// s1/s2 may be null when the optimizer does not use them (opt_state_count). Does not clip: the
// callers clip the whole gradient first (clip_grad), since theta may be one thread's part of it.
template <class T>
inline void opt_update(Opt opt, T* theta, const T* g, T* s1, T* s2, std::int64_t n, const double* hyper,
                       std::int64_t step) {
#ifdef PFG_OPT_AVX2_DISPATCH
    if (simd::level() >= simd::kAvx2) return opt_update_avx2<T>(opt, theta, g, s1, s2, n, hyper, step);
#endif
    opt_update_kernel<T>(opt, theta, g, s1, s2, n, hyper, step);
}

}  // namespace pfg
