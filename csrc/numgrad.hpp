// Numerical gradients by finite differences (no pybind11 here).
//
// mlp_numerical_gradient: the central difference (L(theta+h e_i) - L(theta-h e_i)) / 2h of the full
// MLP loss for every parameter, equal to what the numpy reference computes, without recomputing the
// whole forward per parameter. One base forward pass is kept; perturbing W_l[i,j] shifts only the
// pre-activation z_l[n,j] by delta*a_{l-1}[n,i], so only rows with a_{l-1}[n,i] != 0 change, and for
// them only the tail of that row is re-evaluated, as a difference from the base row (which also keeps
// l_n(+) - l_n(-) free of cancellation). Layers by role:
//   * output layer: one logit moves;
//   * last hidden layer: the logits move along W_L[j,:] (rank 1); softmax uses the moments of W_L[j,:]
//     under the base softmax (a Taylor series exact to double precision while |s*w| is tiny);
//   * earlier hidden layers: the row's tail is propagated as sparse deltas through the later layers.
//
// numerical_gradient_strided: the generic per-element loop over any-strided data with a callback.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "blas.hpp"
#include "common.hpp"

namespace pfg {

namespace ng {

// Below these magnitudes the truncated series are exact to double precision (remainders < 1e-19
// relative), which is far cheaper than exp/log1p calls in the inner loops.
constexpr double kExpTau = 2e-3;  // expm1: 5 terms, remainder u^6/720
constexpr double kActTau = 5e-4;  // sigmoid/tanh: 4 Taylor terms, remainder <= 16 dz^5/120
constexpr double kLogTau = 1e-4;  // log1p: 4 terms, remainder x^5/5

inline double expm1_small(double u) {
    return u * (1.0 + u * (0.5 + u * (1.0 / 6 + u * (1.0 / 24 + u * (1.0 / 120)))));
}
inline double em1(double u) { return std::fabs(u) <= kExpTau ? expm1_small(u) : std::expm1(u); }
inline double log1p_fast(double x) {
    return std::fabs(x) <= kLogTau ? x * (1.0 - x * (0.5 - x * (1.0 / 3 - x * 0.25))) : std::log1p(x);
}
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
    } else {
        c[0] = c[1] = c[2] = c[3] = 0.0;
    }
}

// act(z + dz) - act(z), with a = act(z) and c its Taylor coefficients (smooth activations only).
inline double act_diff(Act act, double z, double a, const double* c, double dz) {
    if (act == Act::Relu) return relu0(z + dz) - a;
    if (std::fabs(dz) <= kActTau) return dz * (c[0] + dz * (c[1] + dz * (c[2] + dz * c[3])));
    return activate<double>(act, z + dz) - a;
}

// Softmax loss of a row: -sum_k t_k z_k + T * logsumexp(z), T = sum_k t_k. With sigma = S/S0 - 1
// (the softmax denominator relative to the base row's), logsumexp(+) - logsumexp(-) =
// log1p((sigma+ - sigma-) / (1 + sigma-)): no O(1) terms to cancel, so full relative accuracy.
inline double lse_diff(double sp, double sm) { return log1p_fast((sp - sm) / (1.0 + sm)); }

// Per-row base quantities of the loss layer.
struct OutRows {
    int64_t C = 0;
    std::vector<int64_t> cls;   // hinge: argmax of t (first maximum), as the reference
    std::vector<double> q;      // softmax: probabilities; mse: z - t; hinge: z - z_c + 1
    std::vector<double> t;      // softmax: targets
    std::vector<double> tsum;   // softmax: sum of each target row
};

// l(+) - l(-) of one row for general logit shifts dzp, dzm (length C).
inline double out_diff_general(Loss loss, const OutRows& o, int64_t n, const double* dzp,
                               const double* dzm) {
    const int64_t C = o.C, c = o.cls[n];
    const double* q = o.q.data() + n * C;
    if (loss == Loss::Softmax) {
        const double* t = o.t.data() + n * C;
        double sp = 0.0, sm = 0.0, lin = 0.0;
        for (int64_t k = 0; k < C; ++k) {
            sp += q[k] * em1(dzp[k]);
            sm += q[k] * em1(dzm[k]);
            lin += t[k] * (dzp[k] - dzm[k]);
        }
        return o.tsum[n] * lse_diff(sp, sm) - lin;
    }
    if (loss == Loss::Mse) {
        double d = 0.0;
        for (int64_t k = 0; k < C; ++k) d += (dzp[k] - dzm[k]) * (q[k] + 0.5 * (dzp[k] + dzm[k]));
        return d;
    }
    double d = 0.0;
    for (int64_t k = 0; k < C; ++k) {
        if (k == c) continue;
        const double up = dzp[k] - dzp[c], um = dzm[k] - dzm[c];
        const double mp = q[k] + up, mm = q[k] + um;
        if (mp > 0.0 && mm > 0.0) d += up - um;  // both active: the margins' difference, exactly
        else d += relu0(mp) - relu0(mm);
    }
    return d;
}

// Everything the per-unit tasks read (all double, row-major).
struct Base {
    Act act;
    Loss loss;
    int64_t N = 0, L = 0;
    std::vector<int64_t> sz, woff, boff;
    const double* th = nullptr;                 // parameters (double)
    std::vector<const double*> A;               // A[l]: input of layer l (A[0] = x), N x sz[l]
    std::vector<std::vector<double>> Z;         // Z[l]: pre-activation of layer l, N x sz[l+1]
    std::vector<std::vector<double>> Act_;      // activations A[l+1] = act(Z[l]) for hidden l
    std::vector<std::vector<double>> Tay;       // Taylor coefficients of hidden layers (smooth act)
    std::vector<std::vector<int64_t>> nzptr, nzidx;  // CSR of the nonzeros of A[l]
    std::vector<std::vector<double>> nzval, amax;     // values; max |A[l][n,:]| (>= 1: the bias)
    OutRows out;
};

// Scratch of one thread.
struct Scratch {
    std::vector<double> dp, dm, acc;             // per input i of the unit: deltas, accumulated diffs
    std::vector<double> vp, vm, wp, wm, dap, dam;  // generic tails
};

// Propagates a shift s of A[l+1][n,j] (layer l hidden, not the last hidden one) to the logits.
inline const double* tail(const Base& B, int64_t l, int64_t j, int64_t n, double s, double* v,
                          double* w, double* da) {
    const int64_t L = B.L;
    const double* W = B.th + B.woff[l + 1];
    int64_t width = B.sz[l + 2];
    for (int64_t k = 0; k < width; ++k) v[k] = s * W[j * width + k];
    for (int64_t m = l + 1; m < L - 1; ++m) {  // v = delta of Z[m]; push it through layer m+1
        const int64_t nm = B.sz[m + 1], nn = B.sz[m + 2];
        const double* z = B.Z[m].data() + n * nm;
        const double* a = B.Act_[m].data() + n * nm;
        const double* tc = B.act == Act::Relu ? nullptr : B.Tay[m].data() + n * nm * 4;
        const double* Wn = B.th + B.woff[m + 1];
        for (int64_t k = 0; k < nm; ++k) da[k] = act_diff(B.act, z[k], a[k], tc ? tc + 4 * k : nullptr, v[k]);
        std::fill(w, w + nn, 0.0);
        for (int64_t k = 0; k < nm; ++k) {
            const double d = da[k];
            if (d == 0.0) continue;  // e.g. a ReLU that stays off: nothing downstream moves
            const double* Wr = Wn + k * nn;
            for (int64_t q = 0; q < nn; ++q) w[q] += d * Wr[q];
        }
        std::swap(v, w);
        width = nn;
    }
    return v;
}

// One unit (layer l, output unit j): accumulates into acc[i] the sum over rows of l_n(+) - l_n(-)
// for the perturbation of W_l[i,j] (i < nin) and of b_l[j] (i = nin).
inline void unit_task(const Base& B, int64_t l, int64_t j, Scratch& S, double maxdelta) {
    const int64_t N = B.N, L = B.L, nin = B.sz[l], nout = B.sz[l + 1];
    const int64_t* ptr = B.nzptr[l].data();
    const int64_t* idx = B.nzidx[l].data();
    const double* val = B.nzval[l].data();
    const double* amax = B.amax[l].data();
    const double* dp = S.dp.data();
    const double* dm = S.dm.data();
    double* acc = S.acc.data();
    const OutRows& o = B.out;
    const int64_t C = o.C;

    // Visits every (input i, +/- shift of z_l[n,j]) of row n: f(dzp, dzm) -> l(+) - l(-).
    auto row = [&](int64_t n, auto&& f) {
        for (int64_t p = ptr[n]; p < ptr[n + 1]; ++p) {
            const int64_t i = idx[p];
            const double a = val[p];
            acc[i] += f(dp[i] * a, dm[i] * a);
        }
        acc[nin] += f(dp[nin], dm[nin]);
    };

    if (l == L - 1) {  // output layer: logit j moves by dz
        for (int64_t n = 0; n < N; ++n) {
            const double* q = o.q.data() + n * C;
            const int64_t c = o.cls[n];
            if (B.loss == Loss::Softmax) {
                const double pj = q[j], tj = o.t[n * C + j], tot = o.tsum[n];
                row(n, [&](double zp, double zm) {
                    return tot * lse_diff(pj * em1(zp), pj * em1(zm)) - tj * (zp - zm);
                });
            } else if (B.loss == Loss::Mse) {
                const double r = q[j];
                row(n, [&](double zp, double zm) { return (zp - zm) * (r + 0.5 * (zp + zm)); });
            } else if (j != c) {
                const double mj = q[j];
                row(n, [&](double zp, double zm) {
                    const double mp = mj + zp, mm = mj + zm;
                    return (mp > 0.0 && mm > 0.0) ? zp - zm : relu0(mp) - relu0(mm);
                });
            } else {  // the true class's logit moves every margin
                row(n, [&](double zp, double zm) {
                    double d = 0.0;
                    for (int64_t k = 0; k < C; ++k) {
                        if (k == c) continue;
                        const double mp = q[k] - zp, mm = q[k] - zm;
                        d += (mp > 0.0 && mm > 0.0) ? zm - zp : relu0(mp) - relu0(mm);
                    }
                    return d;
                });
            }
        }
        return;
    }

    const Act act = B.act;
    const double* Zl = B.Z[l].data();
    const double* Al = B.Act_[l].data();
    const double* Tl = act == Act::Relu ? nullptr : B.Tay[l].data();

    if (l == L - 2) {  // last hidden layer: logits move by s * W_L[j,:]
        const double* w = B.th + B.woff[L - 1] + j * C;
        double wabs = 0.0;
        for (int64_t k = 0; k < C; ++k) wabs = std::max(wabs, std::fabs(w[k]));
        for (int64_t n = 0; n < N; ++n) {
            const double z = Zl[n * nout + j], a = Al[n * nout + j];
            // A ReLU that no admissible shift can switch on: the row never changes.
            if (act == Act::Relu && z + maxdelta * amax[n] <= 0.0) continue;
            const double* tc = Tl ? Tl + (n * nout + j) * 4 : nullptr;
            const double* q = o.q.data() + n * C;
            const int64_t c = o.cls[n];
            if (B.loss == Loss::Softmax) {
                // mu_k = sum_q p_q w_q^k / k!: S(s)/S - 1 = sum_k mu_k s^k while |s w| is tiny.
                double mu[6] = {0, 0, 0, 0, 0, 0};
                for (int64_t k = 0; k < C; ++k) {
                    double t1 = q[k];
                    for (int e = 1; e <= 5; ++e) {
                        t1 *= w[k] / e;
                        mu[e] += t1;
                    }
                }
                const double* tr = o.t.data() + n * C;
                double tw = 0.0;  // the linear part: sum_k t_k w_k
                for (int64_t k = 0; k < C; ++k) tw += tr[k] * w[k];
                const double tot = o.tsum[n];
                const double smax = kExpTau / std::max(wabs, 1e-300);
                row(n, [&](double zp, double zm) {
                    const double sp = act_diff(act, z, a, tc, zp), sm = act_diff(act, z, a, tc, zm);
                    if (sp == 0.0 && sm == 0.0) return 0.0;
                    double gp = 0.0, gm = 0.0;
                    if (std::fabs(sp) <= smax && std::fabs(sm) <= smax) {
                        gp = sp * (mu[1] + sp * (mu[2] + sp * (mu[3] + sp * (mu[4] + sp * mu[5]))));
                        gm = sm * (mu[1] + sm * (mu[2] + sm * (mu[3] + sm * (mu[4] + sm * mu[5]))));
                    } else {
                        for (int64_t k = 0; k < C; ++k) {
                            gp += q[k] * std::expm1(sp * w[k]);
                            gm += q[k] * std::expm1(sm * w[k]);
                        }
                    }
                    return tot * lse_diff(gp, gm) - tw * (sp - sm);
                });
            } else if (B.loss == Loss::Mse) {
                double A1 = 0.0, B2 = 0.0;  // loss(s) - loss(0) = s*A1 + s^2*B2/2, exactly
                for (int64_t k = 0; k < C; ++k) {
                    A1 += q[k] * w[k];
                    B2 += w[k] * w[k];
                }
                row(n, [&](double zp, double zm) {
                    const double sp = act_diff(act, z, a, tc, zp), sm = act_diff(act, z, a, tc, zm);
                    return (sp - sm) * (A1 + 0.5 * (sp + sm) * B2);
                });
            } else {
                // Linear in s until some margin q_k + s (w_k - w_c) changes sign.
                double G = 0.0, sk = std::numeric_limits<double>::infinity();
                for (int64_t k = 0; k < C; ++k) {
                    if (k == c) continue;
                    const double g = w[k] - w[c];
                    if (q[k] > 0.0) G += g;
                    if (g != 0.0) sk = std::min(sk, std::fabs(q[k]) / std::fabs(g));
                }
                row(n, [&](double zp, double zm) {
                    const double sp = act_diff(act, z, a, tc, zp), sm = act_diff(act, z, a, tc, zm);
                    if (std::fabs(sp) < sk && std::fabs(sm) < sk) return (sp - sm) * G;
                    double d = 0.0;
                    for (int64_t k = 0; k < C; ++k) {
                        if (k == c) continue;
                        const double g = w[k] - w[c];
                        d += relu0(q[k] + sp * g) - relu0(q[k] + sm * g);
                    }
                    return d;
                });
            }
        }
        return;
    }

    // Earlier hidden layers: propagate both shifts through the rest of the net.
    for (int64_t n = 0; n < N; ++n) {
        const double z = Zl[n * nout + j], a = Al[n * nout + j];
        if (act == Act::Relu && z + maxdelta * amax[n] <= 0.0) continue;
        const double* tc = Tl ? Tl + (n * nout + j) * 4 : nullptr;
        row(n, [&](double zp, double zm) {
            const double sp = act_diff(act, z, a, tc, zp), sm = act_diff(act, z, a, tc, zm);
            if (sp == 0.0 && sm == 0.0) return 0.0;
            const double* op = tail(B, l, j, n, sp, S.vp.data(), S.wp.data(), S.dap.data());
            const double* om = tail(B, l, j, n, sm, S.vm.data(), S.wm.data(), S.dam.data());
            return out_diff_general(B.loss, B.out, n, op, om);
        });
    }
}

}  // namespace ng

// Throws std::invalid_argument unless the shapes fit an MLP with these layer sizes.
inline void check_mlp_numgrad_shapes(const std::vector<int64_t>& sizes, int64_t theta_len,
                                     int64_t x_rows, int64_t x_cols, int64_t t_rows, int64_t t_cols,
                                     int64_t grad_len) {
    if (sizes.size() < 2) throw std::invalid_argument("sizes needs at least 2 entries (input, output)");
    for (int64_t s : sizes)
        if (s < 1) throw std::invalid_argument("every layer size must be >= 1");
    const int64_t P = count_params(sizes);
    if (theta_len != P)
        throw std::invalid_argument("theta has " + std::to_string(theta_len) + " entries, the net has " +
                                    std::to_string(P) + " parameters");
    if (grad_len != P)
        throw std::invalid_argument("grad has " + std::to_string(grad_len) + " entries, expected " +
                                    std::to_string(P));
    if (x_rows < 1) throw std::invalid_argument("x needs at least one row");
    if (x_cols != sizes.front())
        throw std::invalid_argument("x has " + std::to_string(x_cols) + " columns, the input size is " +
                                    std::to_string(sizes.front()));
    if (t_rows != x_rows || t_cols != sizes.back())
        throw std::invalid_argument("t must have shape (" + std::to_string(x_rows) + ", " +
                                    std::to_string(sizes.back()) + "), got (" + std::to_string(t_rows) +
                                    ", " + std::to_string(t_cols) + ")");
}

// grad[i] = (L(theta + h e_i) - L(theta - h e_i)) / 2h for the full loss (mean over rows plus
// 0.5 * weight_decay * sum W^2), theta in the flat layout (W1 row-major, b1, W2, b2, ...).
// The perturbed value is theta_i +- h rounded to T, as the reference stores it; everything else is
// computed in double. Shapes must be valid (check_mlp_numgrad_shapes). theta is only read.
template <class T>
void mlp_numerical_gradient(const std::vector<int64_t>& sizes, Act act, Loss loss, const T* theta,
                            const T* x, const T* t, int64_t N, double weight_decay, double h,
                            T* grad) {
    ng::Base B;
    B.act = act;
    B.loss = loss;
    B.N = N;
    B.L = static_cast<int64_t>(sizes.size()) - 1;
    B.sz = sizes;
    const int64_t L = B.L, C = sizes.back();
    const int64_t P = count_params(sizes);
    B.woff.resize(L);
    B.boff.resize(L);
    for (int64_t l = 0, off = 0; l < L; ++l) {
        B.woff[l] = off;
        B.boff[l] = off + sizes[l] * sizes[l + 1];
        off = B.boff[l] + sizes[l + 1];
    }

    // double views of theta and x (copies only for float32)
    std::vector<double> th_d, x_d;
    const double* xd;
    if constexpr (std::is_same_v<T, double>) {
        B.th = theta;
        xd = x;
    } else {
        th_d.assign(theta, theta + P);
        x_d.assign(x, x + N * sizes[0]);
        B.th = th_d.data();
        xd = x_d.data();
    }

    // base forward pass
    B.A.resize(L);
    B.Z.resize(L);
    B.Act_.resize(L);
    B.Tay.resize(L);
    B.A[0] = xd;
    for (int64_t l = 0; l < L; ++l) {
        const int64_t nin = sizes[l], nout = sizes[l + 1];
        std::vector<double>& z = B.Z[l];
        z.resize(N * nout);
        const double* b = B.th + B.boff[l];
        for (int64_t n = 0; n < N; ++n) std::copy(b, b + nout, z.data() + n * nout);
        gemm(false, false, static_cast<int>(N), static_cast<int>(nout), static_cast<int>(nin), 1.0, B.A[l],
             static_cast<int>(nin), B.th + B.woff[l], static_cast<int>(nout), 1.0, z.data(),
             static_cast<int>(nout));
        if (l < L - 1) {
            std::vector<double>& a = B.Act_[l];
            a.resize(N * nout);
            for (int64_t e = 0; e < N * nout; ++e) a[e] = activate<double>(act, z[e]);
            if (act != Act::Relu) {
                B.Tay[l].resize(N * nout * 4);
                for (int64_t e = 0; e < N * nout; ++e) ng::act_taylor(act, a[e], B.Tay[l].data() + 4 * e);
            }
            B.A[l + 1] = a.data();
        }
    }

    // loss-layer rows
    ng::OutRows& o = B.out;
    o.C = C;
    o.cls.resize(N);
    o.q.resize(N * C);
    if (loss == Loss::Softmax) {
        o.t.assign(t, t + N * C);
        o.tsum.assign(N, 0.0);
        for (int64_t n = 0; n < N; ++n)
            for (int64_t k = 0; k < C; ++k) o.tsum[n] += o.t[n * C + k];
    }
    const double* zL = B.Z[L - 1].data();
    for (int64_t n = 0; n < N; ++n) {
        const T* tr = t + n * C;
        int64_t c = 0;
        for (int64_t k = 1; k < C; ++k)
            if (tr[k] > tr[c]) c = k;
        o.cls[n] = c;
        const double* zr = zL + n * C;
        double* q = o.q.data() + n * C;
        if (loss == Loss::Softmax) {
            const double m = *std::max_element(zr, zr + C);
            double s = 0.0;
            for (int64_t k = 0; k < C; ++k) s += (q[k] = std::exp(zr[k] - m));
            for (int64_t k = 0; k < C; ++k) q[k] /= s;
        } else if (loss == Loss::Mse) {
            for (int64_t k = 0; k < C; ++k) q[k] = zr[k] - static_cast<double>(tr[k]);
        } else {
            for (int64_t k = 0; k < C; ++k) q[k] = zr[k] - zr[c] + 1.0;
        }
    }

    // nonzeros of every layer input: rows with a zero input are untouched by that weight
    B.nzptr.resize(L);
    B.nzidx.resize(L);
    B.nzval.resize(L);
    B.amax.resize(L);
    for (int64_t l = 0; l < L; ++l) {
        const int64_t nin = sizes[l];
        auto& ptr = B.nzptr[l];
        auto& id = B.nzidx[l];
        auto& vl = B.nzval[l];
        auto& am = B.amax[l];
        ptr.assign(N + 1, 0);
        am.assign(N, 1.0);
        for (int64_t n = 0; n < N; ++n) {
            const double* ar = B.A[l] + n * nin;
            for (int64_t i = 0; i < nin; ++i) {
                if (ar[i] != 0.0) {
                    id.push_back(i);
                    vl.push_back(ar[i]);
                    am[n] = std::max(am[n], std::fabs(ar[i]));
                }
            }
            ptr[n + 1] = static_cast<int64_t>(id.size());
        }
    }

    // one task per (layer, unit); the first layers carry most of the work, so they go first
    std::vector<std::pair<int64_t, int64_t>> tasks;
    for (int64_t l = 0; l < L; ++l)
        for (int64_t j = 0; j < sizes[l + 1]; ++j) tasks.emplace_back(l, j);
    int64_t maxw = 0;
    for (int64_t s : sizes) maxw = std::max(maxw, s);

    int nthreads = 1;
#ifdef _OPENMP
    nthreads = std::max(1, omp_get_max_threads());
#endif
    std::vector<ng::Scratch> scratch(nthreads);
    for (auto& S : scratch) {
        S.dp.resize(maxw + 1);
        S.dm.resize(maxw + 1);
        S.acc.resize(maxw + 1);
        for (auto* v : {&S.vp, &S.vm, &S.wp, &S.wm, &S.dap, &S.dam}) v->resize(maxw);
    }

    const T hT = static_cast<T>(h);
    const double invN = 1.0 / static_cast<double>(N), inv2h = 1.0 / (2.0 * h);
    const int64_t ntasks = static_cast<int64_t>(tasks.size());

#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
    for (int64_t ti = 0; ti < ntasks; ++ti) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        ng::Scratch& S = scratch[tid];
        const int64_t l = tasks[ti].first, j = tasks[ti].second;
        const int64_t nin = sizes[l], nout = sizes[l + 1];
        const T* Wt = theta + B.woff[l];
        const T* bt = theta + B.boff[l];
        // exact shifts of the stored values: fl(w +- h) - w
        double maxdelta = 0.0;
        for (int64_t i = 0; i <= nin; ++i) {
            const T w = i < nin ? Wt[i * nout + j] : bt[j];
            const T wp = static_cast<T>(w + hT), wm = static_cast<T>(w - hT);
            S.dp[i] = static_cast<double>(wp) - static_cast<double>(w);
            S.dm[i] = static_cast<double>(wm) - static_cast<double>(w);
            maxdelta = std::max(maxdelta, std::max(std::fabs(S.dp[i]), std::fabs(S.dm[i])));
        }
        std::fill(S.acc.begin(), S.acc.begin() + nin + 1, 0.0);
        ng::unit_task(B, l, j, S, maxdelta);
        for (int64_t i = 0; i < nin; ++i) {
            const double w = static_cast<double>(Wt[i * nout + j]);
            const double wp = w + S.dp[i], wm = w + S.dm[i];
            const double dwd = 0.5 * weight_decay * (wp - wm) * (wp + wm);  // L2 term, exactly
            grad[B.woff[l] + i * nout + j] = static_cast<T>((S.acc[i] * invN + dwd) * inv2h);
        }
        grad[B.boff[l] + j] = static_cast<T>(S.acc[nin] * invN * inv2h);
    }
}

// Generic per-element finite differences over an array of any strides: every element of `data`
// (walked in C order) is set to v + h (and v - h for the central scheme), f() is evaluated, and the
// element's original bits are restored, also when f throws. out is C-contiguous, same shape.
// central: (f(x+h) - f(x-h)) / 2h; forward: (f(x+h) - f(x)) / h with f(x) evaluated once first.
template <class T, class F>
void numerical_gradient_strided(char* data, const std::vector<int64_t>& shape,
                                const std::vector<int64_t>& strides, double h, bool forward, F&& f,
                                T* out) {
    const T hT = static_cast<T>(h);
    int64_t total = 1;
    for (int64_t s : shape) total *= s;
    const double f0 = forward ? f() : 0.0;
    if (total == 0) return;
    const size_t nd = shape.size();
    std::vector<int64_t> idx(nd, 0);
    char* p = data;
    for (int64_t e = 0; e < total; ++e) {
        T v;
        std::memcpy(&v, p, sizeof(T));
        auto put = [p](T u) { std::memcpy(p, &u, sizeof(T)); };
        double fp, fm = f0;
        try {
            put(static_cast<T>(v + hT));
            fp = f();
            if (!forward) {
                put(static_cast<T>(v - hT));
                fm = f();
            }
        } catch (...) {
            put(v);
            throw;
        }
        put(v);
        out[e] = static_cast<T>(forward ? (fp - fm) / h : (fp - fm) / (2.0 * h));
        // next index in C order
        for (size_t d = nd; d-- > 0;) {
            if (++idx[d] < shape[d]) {
                p += strides[d];
                break;
            }
            p -= strides[d] * (shape[d] - 1);
            idx[d] = 0;
        }
    }
}

}  // namespace pfg
