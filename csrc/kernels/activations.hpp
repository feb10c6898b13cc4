// Every activation's math in one place: codes and names (checked against pyfastgrad/spec.py by
// tests/test_spec.py), the element function, the fused MLP's bias + activation and its backward, the
// composed nets' layer kernels, and the pieces the numerical gradient needs (Taylor coefficients,
// exact differences, slopes). A new activation is a case in each switch here (docs/DEV.md).
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "core/common.hpp"
#include "core/simd.hpp"

namespace pfg {

// Codes and names of pyfastgrad/spec.py (ACTIVATIONS with mlp=True, LOSSES with mlp=True);
// tests/test_spec.py compares them with the registry through _core._spec(). Optimizers: optim.hpp.
enum class Act { Relu = 0, Sigmoid = 1, Tanh = 2, LeakyRelu = 3 };
constexpr const char* kActNames[] = {"relu", "sigmoid", "tanh", "leaky_relu"};  // by code
constexpr double kLeakySlope = 0.01;  // spec.LEAKY_SLOPE (PyTorch's default negative_slope)
constexpr int kActCount = int(sizeof(kActNames) / sizeof(kActNames[0]));

inline Act parse_act(const std::string& s) { return static_cast<Act>(parse_name(kActNames, s, "activation")); }

// Piecewise linear with its kink at z = 0 (gradient checks count the rows that cross it).
inline bool act_kinked(Act a) {
    switch (a) {
        case Act::Relu:
        case Act::LeakyRelu: return true;
        case Act::Sigmoid:
        case Act::Tanh: return false;
    }
    throw std::invalid_argument("unknown activation code " + std::to_string(int(a)));
}

// Throws unless act and loss are kinds of this build: call before a parallel region, where the
// branches over kinds cannot throw.
inline void check_kinds(Act act, Loss loss) {
    constexpr int n_act = int(sizeof(kActNames) / sizeof(kActNames[0]));
    constexpr int n_loss = int(sizeof(kLossNames) / sizeof(kLossNames[0]));
    if (int(act) < 0 || int(act) >= n_act) throw std::invalid_argument("unknown activation code " + std::to_string(int(act)));
    if (int(loss) < 0 || int(loss) >= n_loss) throw std::invalid_argument("unknown loss code " + std::to_string(int(loss)));
}

template <class T>
inline T activate(Act a, T z) {
    switch (a) {
        case Act::Relu: return z > T(0) ? z : T(0);
        case Act::Sigmoid: return T(1) / (T(1) + std::exp(-z));
        case Act::Tanh: return std::tanh(z);
        case Act::LeakyRelu: return z > T(0) ? z : T(kLeakySlope) * z;
    }
    throw std::invalid_argument("unknown activation code " + std::to_string(int(a)));
}

// ---- the fused MLP's forward and backward (mlp/mlp.hpp) -----------------------------------------
// tanh from one exp (glibc's tanh/tanhf cost ~12 ns, exp ~3-5 ns): for |x| >= 1/4,
// (1 - e) / (1 + e) with e = exp(-2|x|) (at most ~3 ulp: 1 - e loses < 2 bits there); below, the
// odd Taylor series, truncated where its remainder is under half an ulp (6 terms float, 12 double).
template <class T>
inline T tanh_fast(T x) {
    static constexpr double c[12] = {
        1.0, -0.3333333333333333, 0.13333333333333333, -0.05396825396825397,
        0.021869488536155203, -0.008863235529902197, 0.003592128036572481, -0.0014558343870513183,
        0.000590027440945586, -0.00023912911424355248, 9.691537956929451e-05, -3.927832388331683e-05};
    constexpr int nt = sizeof(T) == 4 ? 6 : 12;
    const T a = std::fabs(x);
    const T z = x * x;
    T p = T(c[nt - 1]);
    for (int i = nt - 2; i >= 0; --i) p = p * z + T(c[i]);
    const T e = exp_fast(T(-2) * a);  // NaN stays NaN; +-inf gives +-1
    const T big = std::copysign((T(1) - e) / (T(1) + e), x);
    return a < T(0.25) ? p * x : big;  // both sides computed: no branch, so loops vectorise
}

// z = act(z + b) for a (rows x n) block; the switch sits outside the loops so each loop vectorises.
template <class T>
inline void bias_activation_impl(Act a, T* __restrict z, const T* __restrict b, std::int64_t rows,
                                 std::int64_t n) {
    switch (a) {
        case Act::Relu:
            for (std::int64_t r = 0; r < rows; ++r) {
                T* zr = z + r * n;
                for (std::int64_t j = 0; j < n; ++j) {
                    const T v = zr[j] + b[j];
                    zr[j] = v <= T(0) ? T(0) : v;  // keeps NaN, like the reference's mask x <= 0
                }
            }
            break;
        case Act::Sigmoid:
            for (std::int64_t r = 0; r < rows; ++r) {
                T* zr = z + r * n;
                for (std::int64_t j = 0; j < n; ++j) zr[j] = T(1) / (T(1) + exp_fast(-(zr[j] + b[j])));
            }
            break;
        case Act::Tanh:
            for (std::int64_t r = 0; r < rows; ++r) {
                T* zr = z + r * n;
                for (std::int64_t j = 0; j < n; ++j) zr[j] = tanh_fast(zr[j] + b[j]);
            }
            break;
        case Act::LeakyRelu: {
            const T slope = T(kLeakySlope);
            for (std::int64_t r = 0; r < rows; ++r) {
                T* zr = z + r * n;
                for (std::int64_t j = 0; j < n; ++j) {
                    const T v = zr[j] + b[j];
                    zr[j] = v <= T(0) ? slope * v : v;  // keeps NaN, like the reference's mask x <= 0
                }
            }
            break;
        }
    }
}

#ifdef PFG_X86
// The same loops compiled for AVX2+FMA (8 floats a vector instead of SSE2's 4): sigmoid and tanh
// are exp-bound. Picked at run time, so the extension stays portable.
template <class T>
PFG_TARGET_AVX2 void bias_activation_avx2(Act a, T* __restrict z, const T* __restrict b,
                                                               std::int64_t rows, std::int64_t n) {
    bias_activation_impl(a, z, b, rows, n);
}
#endif

template <class T>
inline void bias_activation(Act a, T* __restrict z, const T* __restrict b, std::int64_t rows, std::int64_t n) {
#ifdef PFG_X86
    if (simd::level() >= simd::kAvx2 && a != Act::Relu) return bias_activation_avx2(a, z, b, rows, n);
#endif
    bias_activation_impl(a, z, b, rows, n);
}

// d = d * act'(from the activation output a), and db += column sums of the new d.
template <class T>
inline void activation_backward(Act a, T* __restrict d, const T* __restrict out, T* __restrict db,
                                std::int64_t rows, std::int64_t n) {
    switch (a) {
        case Act::Relu:
            for (std::int64_t r = 0; r < rows; ++r) {
                T* dr = d + r * n;
                const T* ar = out + r * n;
                for (std::int64_t j = 0; j < n; ++j) {
                    const T v = ar[j] <= T(0) ? T(0) : dr[j];  // out <= 0 exactly where z <= 0
                    dr[j] = v;
                    db[j] += v;
                }
            }
            break;
        case Act::Sigmoid:
            for (std::int64_t r = 0; r < rows; ++r) {
                T* dr = d + r * n;
                const T* ar = out + r * n;
                for (std::int64_t j = 0; j < n; ++j) {
                    const T v = dr[j] * (T(1) - ar[j]) * ar[j];
                    dr[j] = v;
                    db[j] += v;
                }
            }
            break;
        case Act::Tanh:
            for (std::int64_t r = 0; r < rows; ++r) {
                T* dr = d + r * n;
                const T* ar = out + r * n;
                for (std::int64_t j = 0; j < n; ++j) {
                    const T v = dr[j] * (T(1) - ar[j] * ar[j]);
                    dr[j] = v;
                    db[j] += v;
                }
            }
            break;
        case Act::LeakyRelu: {
            const T slope = T(kLeakySlope);
            for (std::int64_t r = 0; r < rows; ++r) {
                T* dr = d + r * n;
                const T* ar = out + r * n;
                for (std::int64_t j = 0; j < n; ++j) {
                    const T v = ar[j] <= T(0) ? slope * dr[j] : dr[j];  // out <= 0 exactly where z <= 0
                    dr[j] = v;
                    db[j] += v;
                }
            }
            break;
        }
    }
}

// ---- the numerical gradient's pieces (numgrad/numgrad.hpp) --------------------------------------
namespace ng {

constexpr double kActTau = 5e-4;  // sigmoid/tanh: 4 Taylor terms, remainder <= 16 dz^5/120

inline double relu0(double v) { return v > 0.0 ? v : 0.0; }

// Taylor coefficients f^(k)(z)/k!, k = 1..4, of sigmoid/tanh at z, from a = f(z).
inline void act_taylor(Act act, double a, double* c) {
    if (act == Act::Sigmoid) {
        const double d1 = a * (1.0 - a), u = 1.0 - 2.0 * a;
        c[0] = d1;
        c[1] = d1 * u / 2.0;
        c[2] = d1 * (1.0 - 6.0 * a + 6.0 * a * a) / 6.0;
        c[3] = d1 * u * (1.0 - 12.0 * a + 12.0 * a * a) / 24.0;
    } else if (act == Act::Tanh) {
        const double q = 1.0 - a * a;
        c[0] = q;
        c[1] = -a * q;
        c[2] = q * (6.0 * a * a - 2.0) / 6.0;
        c[3] = a * q * (2.0 - 3.0 * a * a) / 3.0;
    } else if (act_kinked(act)) {  // piecewise linear: act_diff is exact
        c[0] = c[1] = c[2] = c[3] = 0.0;
    } else {
        throw std::invalid_argument("act_taylor: unknown activation code " + std::to_string(int(act)));
    }
}

// act(z + dz) - act(z), with a = act(z) and c its Taylor coefficients (smooth activations only).
inline double act_diff(Act act, double z, double a, const double* c, double dz) {
    if (act == Act::Relu) return relu0(z + dz) - a;
    if (act_kinked(act)) return activate<double>(act, z + dz) - a;  // piecewise linear: exact
    if (std::fabs(dz) <= kActTau) return dz * (c[0] + dz * (c[1] + dz * (c[2] + dz * c[3])));
    return activate<double>(act, z + dz) - a;
}

// d act / dz at z, in float64.
inline double slope64(Act act, double z) {
    if (act == Act::Relu) return z > 0.0 ? 1.0 : 0.0;
    if (act == Act::LeakyRelu) return z > 0.0 ? 1.0 : kLeakySlope;
    if (act == Act::Sigmoid) {
        const double a = 1.0 / (1.0 + std::exp(-z));
        return a * (1.0 - a);
    }
    if (act == Act::Tanh) {
        const double a = std::tanh(z);
        return 1.0 - a * a;
    }
    throw std::invalid_argument("slope64: unknown activation code " + std::to_string(int(act)));
}

}  // namespace ng

// ---- the composed nets' layer kernels (kernels/layers.hpp) --------------------------------------
namespace layers {

// Codes of pyfastgrad/spec.py ACTIVATIONS (the MLP's Act codes plus the layer-only kinds);
// tests/test_spec.py compares kLActNames with the registry.
enum class LAct { Relu = 0, Sigmoid = 1, Tanh = 2, LeakyRelu = 3, Identity = 4 };
constexpr const char* kLActNames[] = {"relu", "sigmoid", "tanh", "leaky_relu", "identity"};  // by code
constexpr int kLActCount = int(sizeof(kLActNames) / sizeof(kLActNames[0]));

inline LAct to_lact(int code) {
    if (code < 0 || code >= kLActCount) throw std::invalid_argument("unknown activation code " + std::to_string(code));
    return static_cast<LAct>(code);
}

// a = f(z), n entries. alpha: the leaky ReLU's slope for z <= 0.
template <class T>
void act_forward(LAct kind, double alpha, const T* z, T* a, std::int64_t n) {
    const T al = T(alpha), one = T(1);
    switch (kind) {
        case LAct::Relu:
            for (std::int64_t i = 0; i < n; ++i) a[i] = z[i] > T(0) ? z[i] : T(0);
            break;
        case LAct::LeakyRelu:
            for (std::int64_t i = 0; i < n; ++i) a[i] = z[i] > T(0) ? z[i] : al * z[i];
            break;
        case LAct::Sigmoid:
            for (std::int64_t i = 0; i < n; ++i) a[i] = one / (one + std::exp(-z[i]));
            break;
        case LAct::Tanh:
            for (std::int64_t i = 0; i < n; ++i) a[i] = std::tanh(z[i]);
            break;
        case LAct::Identity:
            for (std::int64_t i = 0; i < n; ++i) a[i] = z[i];
            break;
    }
}

// dz = dout * f'(z), written from z (ReLUs) or a = f(z) (sigmoid, tanh). dz may be dout.
template <class T>
void act_backward(LAct kind, double alpha, const T* dout, const T* z, const T* a, T* dz, std::int64_t n) {
    const T al = T(alpha), one = T(1);
    switch (kind) {
        // dout loaded whatever z is: a select the loop vectorises (loaded only where z > 0, the loop stayed
        // scalar with a branch mispredicted on about half of the entries: 100 x 100 float64, 48 -> 4 us).
        case LAct::Relu:  // the reference's mask z <= 0 -> 0
            for (std::int64_t i = 0; i < n; ++i) {
                const T d = dout[i];
                dz[i] = z[i] > T(0) ? d : T(0);
            }
            break;
        case LAct::LeakyRelu:
            for (std::int64_t i = 0; i < n; ++i) {
                const T d = dout[i];
                dz[i] = z[i] > T(0) ? d : al * d;
            }
            break;
        case LAct::Sigmoid:
            for (std::int64_t i = 0; i < n; ++i) dz[i] = dout[i] * (one - a[i]) * a[i];
            break;
        case LAct::Tanh:
            for (std::int64_t i = 0; i < n; ++i) dz[i] = dout[i] * (one - a[i] * a[i]);
            break;
        case LAct::Identity:
            for (std::int64_t i = 0; i < n; ++i) dz[i] = dout[i];
            break;
    }
}

}  // namespace layers
}  // namespace pfg
