// Fused optimizer updates on flat parameter vectors. Header-only, no pybind11.
//
// The formulas and the order of the floating-point operations follow
// _numpy_kernels.opt_update term by term (scalars cast to T first, as numpy does), so float64
// agrees with numpy to the last bit or so. hyper = [lr, a, b] (see _numpy_kernels.opt_update).
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "common.hpp"

namespace pfg {

// How many state vectors (state1, state2) an optimizer reads and writes.
inline int opt_state_count(Opt opt) {
    switch (opt) {
        case Opt::Sgd: return 0;
        case Opt::Adam: return 2;
        default: return 1;
    }
}

#if defined(__GNUC__)
#define PFG_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define PFG_ALWAYS_INLINE inline
#endif

template <class T>
PFG_ALWAYS_INLINE void opt_update_kernel(Opt opt, T* __restrict theta, const T* __restrict g, T* __restrict s1,
                                         T* __restrict s2, std::int64_t n, const double* hyper,
                                         std::int64_t step) {
    const T lr = T(hyper[0]);
    const T eps = T(kOptEps);
    switch (opt) {
        case Opt::Sgd:
            for (std::int64_t i = 0; i < n; ++i) theta[i] -= lr * g[i];
            break;
        case Opt::Momentum: {
            const T mu = T(hyper[1]);
            for (std::int64_t i = 0; i < n; ++i) {
                const T v = mu * s1[i] - lr * g[i];
                s1[i] = v;
                theta[i] += v;
            }
            break;
        }
        case Opt::Nesterov: {
            const T mu = T(hyper[1]);
            const T mu2 = mu * mu;
            const T c = (T(1) + mu) * lr;
            for (std::int64_t i = 0; i < n; ++i) {
                T v = s1[i] * mu;
                v -= lr * g[i];
                s1[i] = v;
                const T th = theta[i] + mu2 * v;  // two separate roundings, as numpy's two statements
                theta[i] = th - c * g[i];
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
            const T rho = T(hyper[1]);
            const T one_m_rho = T(1) - rho;
            for (std::int64_t i = 0; i < n; ++i) {
                T h = s1[i] * rho;
                h += one_m_rho * g[i] * g[i];
                s1[i] = h;
                theta[i] -= lr * g[i] / (std::sqrt(h) + eps);
            }
            break;
        }
        case Opt::Adam: {
            if (step < 1) throw std::invalid_argument("adam needs step >= 1 (got " + std::to_string(step) + ")");
            const double b1 = hyper[1], b2 = hyper[2];
            const double st = double(step);
            // Bias correction in double, then cast, exactly as numpy's dt(lr * sqrt(..) / (..)).
            const T lr_t = T(hyper[0] * std::sqrt(1.0 - std::pow(b2, st)) / (1.0 - std::pow(b1, st)));
            const T c1 = T(1) - T(b1);
            const T c2 = T(1) - T(b2);
            for (std::int64_t i = 0; i < n; ++i) {
                const T m = s1[i] + c1 * (g[i] - s1[i]);
                const T v = s2[i] + c2 * (g[i] * g[i] - s2[i]);
                s1[i] = m;
                s2[i] = v;
                theta[i] -= lr_t * m / (std::sqrt(v) + eps);
            }
            break;
        }
    }
}

// The build targets baseline x86-64 (SSE2); Adam/AdaGrad/RMSprop are bound by sqrt and divide,
// which AVX2 does twice as wide. AVX2 alone implies no FMA, so results stay bit-identical.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__AVX2__)
#define PFG_OPT_AVX2_DISPATCH 1
template <class T>
__attribute__((target("avx2"))) void opt_update_avx2(Opt opt, T* theta, const T* g, T* s1, T* s2,
                                                     std::int64_t n, const double* hyper, std::int64_t step) {
    opt_update_kernel<T>(opt, theta, g, s1, s2, n, hyper, step);
}
#endif

// One update of theta (n entries) in place; step = 1 for the first update (Adam's correction).
// s1/s2 may be null when the optimizer does not use them (opt_state_count).
template <class T>
inline void opt_update(Opt opt, T* theta, const T* g, T* s1, T* s2, std::int64_t n, const double* hyper,
                       std::int64_t step) {
#ifdef PFG_OPT_AVX2_DISPATCH
    if (__builtin_cpu_supports("avx2")) return opt_update_avx2<T>(opt, theta, g, s1, s2, n, hyper, step);
#endif
    opt_update_kernel<T>(opt, theta, g, s1, s2, n, hyper, step);
}

}  // namespace pfg
