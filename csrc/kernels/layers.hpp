// Whole-batch kernels of the composed nets' layers (pyfastgrad.layers / pyfastgrad.sequential):
// per-layer activations, Batch Normalization and Dropout, forward and backward side by side.
// Row-major (N, D) arrays; the math is the reference's (pyfastgrad/reference.py, extension section),
// in the arrays' dtype. No pybind11 here: the bindings live in bindings.cpp.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/activations.hpp"

namespace pfg {
namespace layers {

// Batch Normalization, training mode: per column d over the N rows,
// mean = sum x / N, xc = x - mean, var = sum xc^2 / N, std = sqrt(var + eps), xn = xc / std,
// out = gamma * xn + beta. Its three passes are separate below so a caller that splits the rows
// (pfg::Stack) can add up the column sums of its parts between them. Sums in double, rows outer and
// columns inner (contiguous, vectorises).
template <class T>
void bn_col_sums(const T* x, std::int64_t rows, std::int64_t D, double* s) {  // s[d] += sum x[:, d]
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t d = 0; d < D; ++d) s[d] += double(x[r * D + d]);
}
template <class T>
void bn_center(const T* x, std::int64_t rows, std::int64_t D, const T* mean, T* xc, double* s) {  // s += xc^2
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t d = 0; d < D; ++d) {
            const T c = x[r * D + d] - mean[d];
            xc[r * D + d] = c;
            s[d] += double(c) * double(c);
        }
}
template <class T>
void bn_scale(T* xn, std::int64_t rows, std::int64_t D, const T* std_, const T* gamma, const T* beta, T* out) {
    for (std::int64_t r = 0; r < rows; ++r)  // xn holds xc on entry
        for (std::int64_t d = 0; d < D; ++d) {
            const T v = xn[r * D + d] / std_[d];
            xn[r * D + d] = v;
            out[r * D + d] = gamma[d] * v + beta[d];
        }
}

// Writes out, xn (N, D) and mean, var, std (D,) for backward and the running statistics.
template <class T>
void bn_forward_train(const T* x, std::int64_t N, std::int64_t D, const T* gamma, const T* beta, double eps,
                      T* out, T* xn, T* mean, T* var, T* std_) {
    std::vector<double> s(static_cast<std::size_t>(D), 0.0);
    bn_col_sums(x, N, D, s.data());
    for (std::int64_t d = 0; d < D; ++d) mean[d] = T(s[d] / double(N));
    std::fill(s.begin(), s.end(), 0.0);
    bn_center(x, N, D, mean, xn, s.data());
    for (std::int64_t d = 0; d < D; ++d) {
        var[d] = T(s[d] / double(N));
        std_[d] = std::sqrt(var[d] + T(eps));
    }
    bn_scale(xn, N, D, std_, gamma, beta, out);
}

// Batch Normalization, evaluation mode: out = gamma * (x - rmean) / sqrt(rvar + eps) + beta.
template <class T>
void bn_forward_eval(const T* x, std::int64_t N, std::int64_t D, const T* gamma, const T* beta, const T* rmean,
                     const T* rvar, double eps, T* out) {
    std::vector<T> sd(static_cast<std::size_t>(D));
    for (std::int64_t d = 0; d < D; ++d) sd[d] = std::sqrt(rvar[d] + T(eps));
    for (std::int64_t r = 0; r < N; ++r)
        for (std::int64_t d = 0; d < D; ++d) out[r * D + d] = gamma[d] * ((x[r * D + d] - rmean[d]) / sd[d]) + beta[d];
}

// Backward of bn_forward_train: dbeta = sum dout, dgamma = sum dout * xn, and with dxn = gamma * dout,
// dx = (dxn - mean(dxn) - xn * mean(dxn * xn)) / std (the tutorials' chain of steps, simplified).
// In two passes as the forward: the column sums (sb += sum dout, sg += sum dout * xn), then dx from
// m1 = mean(dxn), m2 = mean(dxn * xn).
template <class T>
void bn_grad_sums(const T* dout, const T* xn, std::int64_t rows, std::int64_t D, double* sb, double* sg) {
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t d = 0; d < D; ++d) {
            sb[d] += double(dout[r * D + d]);
            sg[d] += double(dout[r * D + d]) * double(xn[r * D + d]);
        }
}
template <class T>
void bn_means(const double* sb, const double* sg, const T* gamma, std::int64_t N, std::int64_t D, T* m1, T* m2) {
    for (std::int64_t d = 0; d < D; ++d) {
        m1[d] = T(double(gamma[d]) * sb[d] / double(N));  // mean(dxn)
        m2[d] = T(double(gamma[d]) * sg[d] / double(N));  // mean(dxn * xn)
    }
}
template <class T>
void bn_dx(const T* dout, const T* xn, const T* std_, const T* gamma, const T* m1, const T* m2, std::int64_t rows,
           std::int64_t D, T* dx) {
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t d = 0; d < D; ++d)
            dx[r * D + d] = (gamma[d] * dout[r * D + d] - m1[d] - xn[r * D + d] * m2[d]) / std_[d];
}

template <class T>
void bn_backward(const T* dout, const T* xn, const T* std_, const T* gamma, std::int64_t N, std::int64_t D, T* dx,
                 T* dgamma, T* dbeta) {
    std::vector<double> sg(static_cast<std::size_t>(D), 0.0), sb(static_cast<std::size_t>(D), 0.0);
    bn_grad_sums(dout, xn, N, D, sb.data(), sg.data());
    std::vector<T> m1(static_cast<std::size_t>(D)), m2(static_cast<std::size_t>(D));
    for (std::int64_t d = 0; d < D; ++d) {
        dbeta[d] = T(sb[d]);
        dgamma[d] = T(sg[d]);
    }
    bn_means(sb.data(), sg.data(), gamma, N, D, m1.data(), m2.data());
    bn_dx(dout, xn, std_, gamma, m1.data(), m2.data(), N, D, dx);
}

// Dropout (the tutorials' form): out = x * mask, mask 0/1 drawn by the caller; backward is the same
// product with dout. out may be x.
template <class T>
void mul_mask(const T* x, const T* mask, T* out, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) out[i] = x[i] * mask[i];
}

}  // namespace layers
}  // namespace pfg
