// Row kernels of the losses: softmax, cross-entropy, squared error, and the fused output layer
// of the nets (bias + loss + dL/dz in one pass). Header-only, no pybind11.
//
// Semantics are those of pyfastgrad/_backends/numpy.py (dense (N, C) targets):
//   softmax: -sum t * log_softmax(z) / N (stable, no 1e-7 guard), dL/dz = (softmax(z) - t) / N
//   mse:     0.5 * sum (z - t)^2 / N,              dL/dz = (z - t) / N
//   hinge:   sum_{k != c} max(0, z_k - z_c + 1) / N, c = argmax t (first max),
//            dL/dz_k = [z_k - z_c + 1 > 0] / N, dL/dz_c = -(count of those) / N
// Arithmetic is done in T like numpy does; only the loss sums are accumulated in double.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/common.hpp"
#include "core/simd.hpp"

namespace pfg {

// y = softmax(z) over one row of c entries; y may alias z.
template <class T>
inline void softmax_row(const T* z, T* y, std::int64_t c) {
    T m = z[0];
    for (std::int64_t k = 1; k < c; ++k) m = z[k] > m ? z[k] : m;
    T s = T(0);
    for (std::int64_t k = 0; k < c; ++k) {
        const T e = exp_fast(z[k] - m);
        y[k] = e;
        s += e;
    }
    for (std::int64_t k = 0; k < c; ++k) y[k] = y[k] / s;
}

// sum_k t_k * log(y_k + 1e-7) over one row (dense, every term, like numpy's t * log(y + delta)).
template <class T>
inline double cross_entropy_row(const T* y, const T* t, std::int64_t c) {
    double s = 0.0;
    for (std::int64_t k = 0; k < c; ++k) s += double(t[k] * std::log(y[k] + T(kDelta)));
    return s;
}

// sum_k (y_k - t_k)^2 over one row.
template <class T>
inline double squared_error_row(const T* y, const T* t, std::int64_t c) {
    double s = 0.0;
    for (std::int64_t k = 0; k < c; ++k) {
        const T d = y[k] - t[k];
        s += double(d * d);
    }
    return s;
}

// First index of the maximum (np.argmax on a one-hot/dense target row).
template <class T>
inline std::int64_t argmax_row(const T* t, std::int64_t c) {
    std::int64_t best = 0;
    for (std::int64_t k = 1; k < c; ++k)
        if (t[k] > t[best]) best = k;
    return best;
}

// Output layer of a net, fused: z (rows x c logits without bias) += b, then returns the summed
// loss of these rows (already signed/scaled, so the caller only divides by N). With grad, z is
// overwritten by dL/dz (divided by n_total, the whole batch size) and db += column sums of it.
template <class T>
inline double output_layer_impl(Loss kind, T* z, const T* b, const T* t, std::int64_t rows,
                                std::int64_t c, bool grad, T n_total, T* db) {
    double loss = 0.0;
    switch (kind) {
        case Loss::Softmax: {
            // Three passes so the exps run as one flat, vectorised loop over the whole block:
            // (1) z += b, shift each row by its max, accumulate t.(z - m) and sum t;
            // (2) exp of every entry; (3) row sums, loss, dL/dz = (softmax - t) / N.
            // -sum t * log_softmax = lse * sum t - sum t * (z - m), lse = log sum exp(z - m):
            // for t >= 0 both parts are >= 0 (no cancellation).
            double td = 0.0;
            for (std::int64_t r = 0; r < rows; ++r) {
                T* zr = z + r * c;
                const T* tr = t + r * c;
                T m = zr[0] + b[0];
                for (std::int64_t k = 0; k < c; ++k) {
                    const T v = zr[k] + b[k];
                    zr[k] = v;
                    m = v > m ? v : m;
                }
                T tdr = T(0);  // a row's sum in T, the rows' in double: short dependency chains
                for (std::int64_t k = 0; k < c; ++k) {
                    const T d = zr[k] - m;
                    zr[k] = d;
                    tdr += tr[k] * d;
                }
                td += double(tdr);
            }
            const std::int64_t total = rows * c;
            for (std::int64_t i = 0; i < total; ++i) z[i] = exp_fast(z[i]);
            const T inv_n = T(1) / n_total;
            for (std::int64_t r = 0; r < rows; ++r) {
                T* zr = z + r * c;
                const T* tr = t + r * c;
                T s = T(0), trs = T(0);
                for (std::int64_t k = 0; k < c; ++k) {
                    s += zr[k];
                    trs += tr[k];
                }
                loss += double(std::log(s)) * double(trs);
                if (grad) {
                    const T inv_s = T(1) / s;  // multiplies instead of two divisions an entry
                    for (std::int64_t k = 0; k < c; ++k) {
                        const T g = (zr[k] * inv_s - tr[k]) * inv_n;  // (softmax - t) / N
                        zr[k] = g;
                        db[k] += g;
                    }
                }
            }
            loss -= td;
            break;
        }
        case Loss::Mse: {
            double s = 0.0;
            for (std::int64_t r = 0; r < rows; ++r) {
                T* zr = z + r * c;
                const T* tr = t + r * c;
                for (std::int64_t k = 0; k < c; ++k) {
                    const T d = (zr[k] + b[k]) - tr[k];
                    s += double(d * d);
                    if (grad) {
                        const T g = d / n_total;
                        zr[k] = g;
                        db[k] += g;
                    }
                }
            }
            loss = 0.5 * s;
            break;
        }
        case Loss::Hinge:
            for (std::int64_t r = 0; r < rows; ++r) {
                T* zr = z + r * c;
                const T* tr = t + r * c;
                for (std::int64_t k = 0; k < c; ++k) zr[k] += b[k];
                const std::int64_t ci = argmax_row(tr, c);
                const T zc = zr[ci];
                T count = T(0);
                for (std::int64_t k = 0; k < c; ++k) {
                    if (k == ci) continue;
                    const T m = zr[k] - zc + T(1);
                    if (!(m <= T(0))) loss += double(m);  // np.maximum propagates NaN
                    if (grad) {
                        const T a = m > T(0) ? T(1) : T(0);
                        count += a;
                        const T g = a / n_total;
                        zr[k] = g;
                        db[k] += g;
                    }
                }
                if (grad) {
                    const T g = -count / n_total;
                    zr[ci] = g;
                    db[ci] += g;
                }
            }
            break;
    }
    return loss;
}

#ifdef PFG_X86
// The same code compiled for AVX2+FMA (the exps are most of it), picked at run time.
template <class T>
PFG_TARGET_AVX2 double output_layer_avx2(Loss kind, T* z, const T* b, const T* t,
                                                              std::int64_t rows, std::int64_t c, bool grad,
                                                              T n_total, T* db) {
    return output_layer_impl(kind, z, b, t, rows, c, grad, n_total, db);
}
#endif

template <class T>
inline double output_layer(Loss kind, T* z, const T* b, const T* t, std::int64_t rows, std::int64_t c, bool grad,
                           T n_total, T* db) {
#ifdef PFG_X86
    if (simd::level() >= simd::kAvx2) return output_layer_avx2(kind, z, b, t, rows, c, grad, n_total, db);
#endif
    return output_layer_impl(kind, z, b, t, rows, c, grad, n_total, db);
}

}  // namespace pfg
