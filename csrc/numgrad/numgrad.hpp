// Numerical gradients by finite differences (no pybind11 here).
//
// mlp_numerical_gradient: the central difference (L(theta+h e_i) - L(theta-h e_i)) / 2h of the full
// MLP loss for every parameter, equal to what the numpy reference computes, without recomputing the
// whole forward per parameter. One base forward pass is kept; perturbing W_l[i,j] shifts only the
// pre-activation z_l[n,j] by delta*a_{l-1}[n,i], so only rows with a_{l-1}[n,i] != 0 change, and for
// them only the tail of that row is re-evaluated, as a difference from the base row (which also keeps
// l_n(+) - l_n(-) free of cancellation). Layers by role:
//   * output layer: one logit moves;
//   * last hidden layer: the logits move along W_L[j,:] (rank 1); with ReLU also earlier layers, along
//     W_{l+1}[j,:] pushed through the later on/off masks, while no later unit switches. Softmax then
//     uses the moments of that direction under the base softmax (Taylor series exact to double
//     precision while |s*w| is tiny), in a vectorised per-row kernel;
//   * otherwise (sigmoid/tanh before the last hidden layer, or a switching ReLU) the row's tail is
//     propagated exactly, as sparse deltas through the later layers.
//
// numerical_gradient_strided: the generic per-element loop over any-strided data with a callback.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
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

#include "core/common.hpp"
#include "core/parallel.hpp"
#include "core/simd.hpp"
#include "kernels/activations.hpp"

namespace pfg {

namespace ng {

// Below these magnitudes the truncated series are exact to double precision (remainders below
// ~1e-17 absolute on O(1) quantities), and far cheaper than exp/log1p calls in the inner loops.
constexpr double kExpTau = 2e-3;  // expm1: 5 terms, remainder u^6/720
constexpr double kLogTau = 1e-4;  // log1p: 4 terms, remainder x^5/5

inline double expm1_small(double u) {
    return u * (1.0 + u * (0.5 + u * (1.0 / 6 + u * (1.0 / 24 + u * (1.0 / 120)))));
}
inline double em1(double u) { return std::fabs(u) <= kExpTau ? expm1_small(u) : std::expm1(u); }
inline double log1p_fast(double x) {
    return std::fabs(x) <= kLogTau ? x * (1.0 - x * (0.5 - x * (1.0 / 3 - x * 0.25))) : std::log1p(x);
}
// Softmax loss of a row: -sum_k t_k z_k + T * logsumexp(z), T = sum_k t_k. With sigma = S/S0 - 1
// (the softmax denominator relative to the base row's), logsumexp(+) - logsumexp(-) =
// log1p((sigma+ - sigma-) / (1 + sigma-)): no O(1) terms to cancel, so full relative accuracy.
inline double lse_diff(double sp, double sm) { return log1p_fast((sp - sm) / (1.0 + sm)); }
// ... valid while both denominators 1 + sigma are well away from 0 and finite. A large step can drive
// 1 + sigma- to 0 (one class had all the probability, and the step takes it away) or sigma+ to inf:
// then the difference is taken from the logits themselves (lse_row), which is exact at any size.
inline bool sigma_ok(double sp, double sm) {
    return std::isfinite(sp) && std::isfinite(sm) && 1.0 + sp >= 0.5 && 1.0 + sm >= 0.5;
}
// logsumexp_k(z_k + d(k)) of one row of logits, overflow-safe.
template <class D>
inline double lse_row(const double* z, int64_t C, D&& d) {
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t k = 0; k < C; ++k) m = std::max(m, z[k] + d(k));
    double s = 0.0;
    for (int64_t k = 0; k < C; ++k) s += std::exp(z[k] + d(k) - m);
    return m + std::log(s);
}

// Per-row base quantities of the loss layer.
struct OutRows {
    int64_t C = 0;
    std::vector<int64_t> cls;   // hinge: argmax of t (first maximum), as the reference
    std::vector<double> q;      // softmax: probabilities; mse: z - t; hinge: z - z_c + 1
    std::vector<double> t;      // softmax: targets
    std::vector<double> tsum;   // softmax: sum of each target row
    std::vector<double> z;      // softmax: the base logits (for steps too large for the series)
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
        if (!sigma_ok(sp, sm)) {
            const double* z = o.z.data() + n * C;
            return o.tsum[n] * (lse_row(z, C, [&](int64_t k) { return dzp[k]; }) -
                                lse_row(z, C, [&](int64_t k) { return dzm[k]; })) - lin;
        }
        return o.tsum[n] * lse_diff(sp, sm) - lin;
    }
    if (loss == Loss::Mse) {
        double d = 0.0;
        for (int64_t k = 0; k < C; ++k) d += (dzp[k] - dzm[k]) * (q[k] + 0.5 * (dzp[k] + dzm[k]));
        return d;
    }
    if (loss == Loss::Hinge) {
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
    return std::numeric_limits<double>::quiet_NaN();  // unknown loss: check_kinds refused it before
}

// ---- the hot loop: a rank-1 row (n, j) with softmax or mse, over all its nonzero inputs ----
// Branch-free so that it vectorises; it only counts the entries where the shortcut may be inexact
// and then leaves the row to the caller, which redoes it exactly.
struct Rank1Row {
    double z, a;      // base pre-activation and activation of unit j in row n
    double c[4];      // Taylor coefficients of the activation at z (sigmoid/tanh)
    double k[5];      // softmax: mu_1..mu_5; mse: A1, B2
    double tot, lin;  // softmax: sum_k t_k, sum_k t_k w_k
    double lim_s;     // |s| beyond which the exp series is inexact or a later ReLU switches
    double lim_z;     // |dz| beyond which the activation's Taylor polynomial is inexact
};

template <bool Relu, bool Softmax>
PFG_ALWAYS_INLINE int64_t rank1_body(int64_t cnt, const int64_t* __restrict idx, const double* __restrict val,
                                 const double* __restrict dp, const double* __restrict dm, const Rank1Row& r,
                                 double* __restrict out, double* __restrict acc) {
    const double z = r.z, a = r.a, c0 = r.c[0], c1 = r.c[1], c2 = r.c[2], c3 = r.c[3];
    const double k1 = r.k[0], k2 = r.k[1], k3 = r.k[2], k4 = r.k[3], k5 = r.k[4];
    const double tot = r.tot, lin = r.lin, lim_s = r.lim_s, lim_z = r.lim_z;
    int64_t bad = 0;
    for (int64_t q = 0; q < cnt; ++q) {
        const int64_t i = idx[q];
        const double v = val[q];
        const double zp = dp[i] * v, zm = dm[i] * v;
        double sp, sm;
        if constexpr (Relu) {
            sp = std::max(z + zp, 0.0) - a;
            sm = std::max(z + zm, 0.0) - a;
        } else {
            sp = zp * (c0 + zp * (c1 + zp * (c2 + zp * c3)));
            sm = zm * (c0 + zm * (c1 + zm * (c2 + zm * c3)));
            bad += (std::fabs(zp) > lim_z) | (std::fabs(zm) > lim_z);
        }
        double d;
        if constexpr (Softmax) {
            bad += (std::fabs(sp) > lim_s) | (std::fabs(sm) > lim_s);
            const double gp = sp * (k1 + sp * (k2 + sp * (k3 + sp * (k4 + sp * k5))));
            const double gm = sm * (k1 + sm * (k2 + sm * (k3 + sm * (k4 + sm * k5))));
            // log1p to degree 6: exact to ~2e-20 for |g| <= exp(kExpTau) - 1
            const double lp = gp * (1.0 - gp * (0.5 - gp * (1.0 / 3 - gp * (0.25 - gp * (0.2 - gp * (1.0 / 6))))));
            const double lm = gm * (1.0 - gm * (0.5 - gm * (1.0 / 3 - gm * (0.25 - gm * (0.2 - gm * (1.0 / 6))))));
            d = tot * (lp - lm) - lin * (sp - sm);
        } else {
            bad += (std::fabs(sp) > lim_s) | (std::fabs(sm) > lim_s);
            d = (sp - sm) * (k1 + 0.5 * (sp + sm) * k2);
        }
        out[q] = d;
    }
    if (bad == 0)  // inputs within a row are distinct: a plain scatter
        for (int64_t q = 0; q < cnt; ++q) acc[idx[q]] += out[q];
    return bad;
}

// zr += sum over the row's nonzeros of val * W[idx, :] (the base forward pass).
PFG_ALWAYS_INLINE void csr_row_body(int64_t cnt, const int64_t* __restrict idx, const double* __restrict val,
                                const double* __restrict W, int64_t nout, double* __restrict zr) {
    for (int64_t p = 0; p < cnt; ++p) {
        const double v = val[p];
        const double* __restrict Wr = W + idx[p] * nout;
        for (int64_t k = 0; k < nout; ++k) zr[k] += v * Wr[k];
    }
}

using Rank1Fn = int64_t (*)(int64_t, const int64_t*, const double*, const double*, const double*,
                           const Rank1Row&, double*, double*);
using CsrRowFn = void (*)(int64_t, const int64_t*, const double*, const double*, int64_t, double*);

// One portable x86-64 build (no -march=native) still gets AVX2/AVX-512 here: the kernels are also
// compiled for those targets and picked at run time from what the CPU supports.
#define PFG_NG_ISA(SUFFIX, ATTR)                                                                     \
    template <bool Relu, bool Softmax>                                                              \
    ATTR int64_t rank1_##SUFFIX(int64_t cnt, const int64_t* idx, const double* val, const double* dp, \
                                const double* dm, const Rank1Row& r, double* out, double* acc) {    \
        return rank1_body<Relu, Softmax>(cnt, idx, val, dp, dm, r, out, acc);                       \
    }                                                                                               \
    ATTR inline void csr_row_##SUFFIX(int64_t cnt, const int64_t* idx, const double* val,           \
                                      const double* W, int64_t nout, double* zr) {                  \
        csr_row_body(cnt, idx, val, W, nout, zr);                                                   \
    }
#ifdef PFG_X86
PFG_NG_ISA(avx512, PFG_TARGET_AVX512)
PFG_NG_ISA(avx2, PFG_TARGET_AVX2)
#endif
PFG_NG_ISA(base, )
#undef PFG_NG_ISA

template <bool Relu, bool Softmax>
inline Rank1Fn rank1_kernel() {
#ifdef PFG_X86
    if (simd::level() == simd::kAvx512) return &rank1_avx512<Relu, Softmax>;
    if (simd::level() == simd::kAvx2) return &rank1_avx2<Relu, Softmax>;
#endif
    return &rank1_base<Relu, Softmax>;
}
inline CsrRowFn csr_row_kernel() {
#ifdef PFG_X86
    if (simd::level() == simd::kAvx512) return &csr_row_avx512;
    if (simd::level() == simd::kAvx2) return &csr_row_avx2;
#endif
    return &csr_row_base;
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

// Ctrl-C for a long kernel: `fn` (optional) says whether to stop; only thread 0, the caller's thread
// (the one that may take the GIL back), calls it, at most every kPollEvery. The others see `stop`.
constexpr auto kPollEvery = std::chrono::milliseconds(50);
struct Poll {
    const std::function<bool()>* fn = nullptr;
    std::atomic<bool> stop{false};
    std::chrono::steady_clock::time_point last = std::chrono::steady_clock::now();
    bool operator()(int tid) {
        if (stop.load(std::memory_order_relaxed)) return true;
        if (tid != 0 || fn == nullptr || !*fn) return false;
        const auto now = std::chrono::steady_clock::now();
        if (now - last < kPollEvery) return false;
        last = now;
        if (!(*fn)()) return false;
        stop.store(true, std::memory_order_relaxed);
        return true;
    }
};

// Scratch of one thread.
struct Scratch {
    std::vector<double> tmp;                     // per nonzero of a row: l(+) - l(-)
    std::vector<double> vp, vm, wp, wm, dap, dam;  // generic tails
    std::vector<double> dir;                       // the logits' direction of a rank-1 row
    std::vector<double> poly;                      // sigmoid/tanh rows: 4 coefficient vectors
};

// Propagates v = the change of Z[m0][n,:] (a hidden layer) to the logits; returns their change
// (in v's or w's storage).
inline const double* tail_from(const Base& B, int64_t m0, int64_t n, double* v, double* w, double* da) {
    const int64_t L = B.L;
    for (int64_t m = m0; m < L - 1; ++m) {  // v = delta of Z[m]; push it through layer m+1
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
    }
    return v;
}

// Propagates a shift s of A[l+1][n,j] (layer l hidden, not the last hidden one) to the logits.
inline const double* tail(const Base& B, int64_t l, int64_t j, int64_t n, double s, double* v,
                          double* w, double* da) {
    const int64_t width = B.sz[l + 2];
    const double* W = B.th + B.woff[l + 1] + j * width;
    for (int64_t k = 0; k < width; ++k) v[k] = s * W[k];
    return tail_from(B, l + 1, n, v, w, da);
}

// One unit (layer l, output unit j): accumulates into acc[i] the sum over rows of l_n(+) - l_n(-)
// for the perturbation of W_l[i,j] (i < nin) and of b_l[j] (i = nin).
inline void unit_task(const Base& B, int64_t l, int64_t j, Scratch& S, const double* dp, const double* dm,
                      double maxdelta, double* acc, Poll& poll, int tid) {
    const int64_t N = B.N, L = B.L, nin = B.sz[l], nout = B.sz[l + 1];
    const int64_t* ptr = B.nzptr[l].data();
    const int64_t* idx = B.nzidx[l].data();
    const double* val = B.nzval[l].data();
    const double* amax = B.amax[l].data();
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
    // The same through a vectorised batch kernel, falling back to f for rows it flags.
    auto row_batched = [&](int64_t n, auto&& batch, const Rank1Row& r, auto&& f) {
        const int64_t p0 = ptr[n], cnt = ptr[n + 1] - p0;
        double* out = S.tmp.data();
        const int64_t* ix = idx + p0;
        const double* vx = val + p0;
        if (batch(cnt, ix, vx, dp, dm, r, out, acc) != 0)  // flagged: redo the row exactly
            for (int64_t q = 0; q < cnt; ++q) acc[ix[q]] += f(dp[ix[q]] * vx[q], dm[ix[q]] * vx[q]);
        acc[nin] += f(dp[nin], dm[nin]);
    };

    if (l == L - 1) {  // output layer: logit j moves by dz
        for (int64_t n = 0; n < N; ++n) {
            if ((n & 63) == 0 && poll(tid)) return;  // interrupted: the caller discards everything
            const double* q = o.q.data() + n * C;
            const int64_t c = o.cls[n];
            if (B.loss == Loss::Softmax) {
                const double pj = q[j], tj = o.t[n * C + j], tot = o.tsum[n];
                const double* zr = o.z.data() + n * C;
                row(n, [&](double zp, double zm) {
                    const double sp = pj * em1(zp), sm = pj * em1(zm);
                    if (!sigma_ok(sp, sm))
                        return tot * (lse_row(zr, C, [&](int64_t k) { return k == j ? zp : 0.0; }) -
                                      lse_row(zr, C, [&](int64_t k) { return k == j ? zm : 0.0; })) -
                               tj * (zp - zm);
                    return tot * lse_diff(sp, sm) - tj * (zp - zm);
                });
            } else if (B.loss == Loss::Mse) {
                const double r = q[j];
                row(n, [&](double zp, double zm) { return (zp - zm) * (r + 0.5 * (zp + zm)); });
            } else if (B.loss == Loss::Hinge && j != c) {
                const double mj = q[j];
                row(n, [&](double zp, double zm) {
                    const double mp = mj + zp, mm = mj + zm;
                    return (mp > 0.0 && mm > 0.0) ? zp - zm : relu0(mp) - relu0(mm);
                });
            } else if (B.loss == Loss::Hinge) {  // the true class's logit moves every margin
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
    const double inf = std::numeric_limits<double>::infinity();
    const bool last_hidden = (l == L - 2);
    // The logits move along one direction v (times the unit's change s) for the last hidden layer
    // (v = W_L[j,:]) and, with ReLU, for earlier layers too as long as no later ReLU switches
    // (v = W_{l+1}[j,:] through the later layers' on/off masks; valid for |s| <= s_crit).
    const bool rank1 = last_hidden || act == Act::Relu;
    const double* WL = B.th + B.woff[L - 1];

    for (int64_t n = 0; n < N; ++n) {
        if ((n & 15) == 0 && poll(tid)) return;
        const double z = Zl[n * nout + j], a = Al[n * nout + j];
        // A ReLU that no admissible shift can switch on: the row never changes.
        if (act == Act::Relu && z + maxdelta * amax[n] <= 0.0) continue;
        const double* tc = Tl ? Tl + (n * nout + j) * 4 : nullptr;

        // exact: both shifts propagated through the rest of the net
        auto generic = [&](double zp, double zm) {
            const double sp = act_diff(act, z, a, tc, zp), sm = act_diff(act, z, a, tc, zm);
            if (sp == 0.0 && sm == 0.0) return 0.0;
            if (last_hidden) {
                double* op = S.vp.data();
                double* om = S.vm.data();
                for (int64_t k = 0; k < C; ++k) {
                    op[k] = sp * WL[j * C + k];
                    om[k] = sm * WL[j * C + k];
                }
                return out_diff_general(B.loss, o, n, op, om);
            }
            const double* op = tail(B, l, j, n, sp, S.vp.data(), S.wp.data(), S.dap.data());
            const double* om = tail(B, l, j, n, sm, S.vm.data(), S.wm.data(), S.dam.data());
            return out_diff_general(B.loss, o, n, op, om);
        };
        if (act_kinked(act) && act != Act::Relu) {  // the shortcuts need ReLU's zeros: both shifts exactly
            row(n, [&](double zp, double zm) { return generic(zp, zm); });
            continue;
        }
        if (!rank1) {
            // Sigmoid/tanh: while |s u_k| <= kActTau for u = W_{l+1}[j,:], the next layer's change
            // is the (same) Taylor polynomial act_diff uses, regrouped by powers of s:
            // dZ[l+2] = sum_e s^e V_e with V_e = sum_k c_{k,e} u_k^e W_{l+2}[k,:], set up once per row.
            const int64_t n1 = B.sz[l + 2], n2 = B.sz[l + 3];
            const double* u = B.th + B.woff[l + 1] + j * n1;
            const double* t1 = B.Tay[l + 1].data() + n * n1 * 4;
            const double* W2 = B.th + B.woff[l + 2];
            double* V = S.poly.data();
            std::fill(V, V + 4 * n2, 0.0);
            double umax = 0.0;
            for (int64_t k = 0; k < n1; ++k) {
                const double uk = u[k];
                if (uk == 0.0) continue;
                umax = std::max(umax, std::fabs(uk));
                const double* Wr = W2 + k * n2;
                double pw = 1.0;
                for (int e = 0; e < 4; ++e) {
                    pw *= uk;
                    const double ce = t1[4 * k + e] * pw;
                    double* Ve = V + e * n2;
                    for (int64_t q2 = 0; q2 < n2; ++q2) Ve[q2] += ce * Wr[q2];
                }
            }
            const double slim = umax > 0.0 ? kActTau / umax : inf;
            row(n, [&](double zp, double zm) {
                const double sp = act_diff(act, z, a, tc, zp), sm = act_diff(act, z, a, tc, zm);
                if (sp == 0.0 && sm == 0.0) return 0.0;
                if (std::fabs(sp) > slim || std::fabs(sm) > slim) return generic(zp, zm);
                double* vp = S.vp.data();
                double* vm = S.vm.data();
                for (int64_t q2 = 0; q2 < n2; ++q2) {
                    vp[q2] = sp * (V[q2] + sp * (V[n2 + q2] + sp * (V[2 * n2 + q2] + sp * V[3 * n2 + q2])));
                    vm[q2] = sm * (V[q2] + sm * (V[n2 + q2] + sm * (V[2 * n2 + q2] + sm * V[3 * n2 + q2])));
                }
                const double* op = tail_from(B, l + 2, n, vp, S.wp.data(), S.dap.data());
                const double* om = tail_from(B, l + 2, n, vm, S.wm.data(), S.dam.data());
                return out_diff_general(B.loss, o, n, op, om);
            });
            continue;
        }

        const double* w;
        double s_crit = inf;
        if (last_hidden) {
            w = WL + j * C;
        } else {
            double* u = S.wp.data();
            double* un = S.wm.data();
            int64_t width = B.sz[l + 2];
            const double* W1 = B.th + B.woff[l + 1] + j * width;
            std::copy(W1, W1 + width, u);
            for (int64_t m = l + 1; m < L - 1; ++m) {
                const int64_t nn = B.sz[m + 2];
                const double* zm = B.Z[m].data() + n * width;
                const double* Wn = B.th + B.woff[m + 1];
                std::fill(un, un + nn, 0.0);
                for (int64_t k = 0; k < width; ++k) {
                    if (u[k] == 0.0) continue;
                    s_crit = std::min(s_crit, std::fabs(zm[k]) / std::fabs(u[k]));  // unit k switches
                    if (zm[k] <= 0.0) continue;
                    const double uk = u[k];
                    const double* Wr = Wn + k * nn;
                    for (int64_t q2 = 0; q2 < nn; ++q2) un[q2] += uk * Wr[q2];
                }
                std::swap(u, un);
                width = nn;
            }
            std::copy(u, u + C, S.dir.data());
            w = S.dir.data();
        }
        double wabs = 0.0;
        for (int64_t k = 0; k < C; ++k) wabs = std::max(wabs, std::fabs(w[k]));
        const double* q = o.q.data() + n * C;
        const int64_t c = o.cls[n];

        if (B.loss == Loss::Softmax) {
            // mu_e = sum_k p_k w_k^e / e!: S(s)/S - 1 = sum_e mu_e s^e while |s w| is tiny.
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
            const double smax = std::min(kExpTau / std::max(wabs, 1e-300), s_crit);
            Rank1Row r{z, a, {0, 0, 0, 0}, {mu[1], mu[2], mu[3], mu[4], mu[5]}, tot, tw, smax, kActTau};
            if (tc) std::copy(tc, tc + 4, r.c);
            row_batched(n, act == Act::Relu ? rank1_kernel<true, true>() : rank1_kernel<false, true>(), r,
                        [&](double zp, double zm) {
                            const double sp = act_diff(act, z, a, tc, zp), sm = act_diff(act, z, a, tc, zm);
                            if (sp == 0.0 && sm == 0.0) return 0.0;
                            if (std::fabs(sp) > s_crit || std::fabs(sm) > s_crit) return generic(zp, zm);
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
                            if (!sigma_ok(gp, gm)) {
                                const double* zr = o.z.data() + n * C;
                                return tot * (lse_row(zr, C, [&](int64_t k) { return sp * w[k]; }) -
                                              lse_row(zr, C, [&](int64_t k) { return sm * w[k]; })) -
                                       tw * (sp - sm);
                            }
                            return tot * lse_diff(gp, gm) - tw * (sp - sm);
                        });
        } else if (B.loss == Loss::Mse) {
            double A1 = 0.0, B2 = 0.0;  // loss(s) - loss(0) = s*A1 + s^2*B2/2, exactly
            for (int64_t k = 0; k < C; ++k) {
                A1 += q[k] * w[k];
                B2 += w[k] * w[k];
            }
            Rank1Row r{z, a, {0, 0, 0, 0}, {A1, B2, 0, 0, 0}, 0, 0, s_crit, kActTau};
            if (tc) std::copy(tc, tc + 4, r.c);
            row_batched(n, act == Act::Relu ? rank1_kernel<true, false>() : rank1_kernel<false, false>(), r,
                        [&](double zp, double zm) {
                            const double sp = act_diff(act, z, a, tc, zp), sm = act_diff(act, z, a, tc, zm);
                            if (std::fabs(sp) > s_crit || std::fabs(sm) > s_crit) return generic(zp, zm);
                            return (sp - sm) * (A1 + 0.5 * (sp + sm) * B2);
                        });
        } else if (B.loss == Loss::Hinge) {
            // Linear in s until some margin q_k + s (w_k - w_c) changes sign (or a ReLU switches).
            double G = 0.0, sk = s_crit;
            for (int64_t k = 0; k < C; ++k) {
                if (k == c) continue;
                const double g = w[k] - w[c];
                if (q[k] > 0.0) G += g;
                if (g != 0.0) sk = std::min(sk, std::fabs(q[k]) / std::fabs(g));
            }
            row(n, [&](double zp, double zm) {
                const double sp = act_diff(act, z, a, tc, zp), sm = act_diff(act, z, a, tc, zm);
                if (std::fabs(sp) < sk && std::fabs(sm) < sk) return (sp - sm) * G;
                return generic(zp, zm);
            });
        }
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
// `interrupted` (optional) is polled by the calling thread every few rows, at most every
// ng::kPollEvery; when it returns true the work stops, grad is left untouched and the result is false.
template <class T>
bool mlp_numerical_gradient(const std::vector<int64_t>& sizes, Act act, Loss loss, const T* theta,
                            const T* x, const T* t, int64_t N, double weight_decay, double h,
                            T* grad, const std::function<bool()>& interrupted = {}) {
    check_kinds(act, loss);
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

    // Base forward pass over the nonzeros of each layer input (kept as CSR: a weight only affects
    // rows where its input is nonzero). No BLAS: its worker threads would keep spinning on the cores
    // the OpenMP region below needs, and this pass costs at most one FMA per perturbed row anyway.
    int nthreads = 1;
#ifdef _OPENMP
    nthreads = team_threads();
#endif
    B.A.resize(L);
    B.Z.resize(L);
    B.Act_.resize(L);
    B.Tay.resize(L);
    B.nzptr.resize(L);
    B.nzidx.resize(L);
    B.nzval.resize(L);
    B.amax.resize(L);
    B.A[0] = xd;
    for (int64_t l = 0; l < L; ++l) {
        const int64_t nin = sizes[l], nout = sizes[l + 1];
        auto& ptr = B.nzptr[l];
        auto& id = B.nzidx[l];
        auto& vl = B.nzval[l];
        auto& am = B.amax[l];
        ptr.assign(N + 1, 0);
        am.assign(N, 1.0);  // 1: the bias's "input"
        for (int64_t n = 0; n < N; ++n) {
            const double* ar = B.A[l] + n * nin;
            int64_t cnt = 0;
            for (int64_t i = 0; i < nin; ++i) cnt += (ar[i] != 0.0);
            ptr[n + 1] = ptr[n] + cnt;
        }
        id.resize(ptr[N]);
        vl.resize(ptr[N]);
        for (int64_t n = 0, p = 0; n < N; ++n) {
            const double* ar = B.A[l] + n * nin;
            for (int64_t i = 0; i < nin; ++i) {
                const double v = ar[i];
                if (v == 0.0) continue;
                id[p] = i;
                vl[p++] = v;
                am[n] = std::max(am[n], std::fabs(v));
            }
        }
        std::vector<double>& z = B.Z[l];
        z.resize(N * nout);
        const double* W = B.th + B.woff[l];
        const double* b = B.th + B.boff[l];
        const ng::CsrRowFn rowprod = ng::csr_row_kernel();
        const bool par = ptr[N] * nout > (int64_t(1) << 18);  // else threads cost more than they save
#pragma omp parallel for schedule(static) num_threads(nthreads) if (par)
        for (int64_t n = 0; n < N; ++n) {
            double* zr = z.data() + n * nout;
            std::copy(b, b + nout, zr);
            rowprod(ptr[n + 1] - ptr[n], id.data() + ptr[n], vl.data() + ptr[n], W, nout, zr);
        }
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
        o.z.assign(B.Z[L - 1].begin(), B.Z[L - 1].end());
        o.tsum.assign(N, 0.0);
        for (int64_t n = 0; n < N; ++n)
            for (int64_t k = 0; k < C; ++k) o.tsum[n] += o.t[n * C + k];
    }
    const double* zL = B.Z[L - 1].data();
    double base_loss = 0.0;  // only checked for finiteness
    for (int64_t n = 0; n < N; ++n) {
        const T* tr = t + n * C;
        int64_t c = 0;  // np.argmax: the first maximum, or the first NaN
        for (int64_t k = 0; k < C; ++k) {
            if (std::isnan(static_cast<double>(tr[k]))) {
                c = k;
                break;
            }
            if (tr[k] > tr[c]) c = k;
        }
        o.cls[n] = c;
        const double* zr = zL + n * C;
        double* q = o.q.data() + n * C;
        if (loss == Loss::Softmax) {
            const double m = *std::max_element(zr, zr + C);
            double s = 0.0;
            for (int64_t k = 0; k < C; ++k) s += (q[k] = std::exp(zr[k] - m));
            for (int64_t k = 0; k < C; ++k) q[k] /= s;
            const double lse = m + std::log(s);
            for (int64_t k = 0; k < C; ++k) base_loss += static_cast<double>(tr[k]) * (lse - zr[k]);
        } else if (loss == Loss::Mse) {
            for (int64_t k = 0; k < C; ++k) {
                q[k] = zr[k] - static_cast<double>(tr[k]);
                base_loss += q[k] * q[k];
            }
        } else if (loss == Loss::Hinge) {
            for (int64_t k = 0; k < C; ++k) {
                q[k] = zr[k] - zr[c] + 1.0;
                if (k != c) base_loss += std::isnan(q[k]) ? q[k] : ng::relu0(q[k]);  // as np.maximum
            }
        }
    }
    // A non-finite loss stays non-finite under every perturbation: the reference's differences are
    // then all NaN (inf - inf, NaN - NaN), and the row-wise shortcuts below would not see it.
    double wsq = 0.0;
    for (int64_t l = 0; l < L; ++l)
        for (int64_t e = 0; e < sizes[l] * sizes[l + 1]; ++e) wsq += B.th[B.woff[l] + e] * B.th[B.woff[l] + e];
    if (!std::isfinite(base_loss) || !std::isfinite(0.5 * weight_decay * wsq)) {
        std::fill(grad, grad + P, std::numeric_limits<T>::quiet_NaN());
        return true;
    }

    // one task per (layer, unit); the first layers carry most of the work, so they go first
    std::vector<std::pair<int64_t, int64_t>> tasks;
    for (int64_t l = 0; l < L; ++l)
        for (int64_t j = 0; j < sizes[l + 1]; ++j) tasks.emplace_back(l, j);
    int64_t maxw = 0;
    for (int64_t s : sizes) maxw = std::max(maxw, s);

    std::vector<ng::Scratch> scratch(nthreads);
    for (auto& S : scratch) {
        S.tmp.resize(maxw + 1);
        for (auto* v : {&S.vp, &S.vm, &S.wp, &S.wm, &S.dap, &S.dam, &S.dir}) v->resize(maxw);
        S.poly.resize(4 * maxw);
    }

    // Exact shifts of the stored values, fl(w +- h) - w, transposed to one contiguous run per unit
    // (inputs i, then the bias); the tasks' sums come back in the same layout.
    const T hT = static_cast<T>(h);
    std::vector<int64_t> toff(L + 1, 0);
    for (int64_t l = 0; l < L; ++l) toff[l + 1] = toff[l] + sizes[l + 1] * (sizes[l] + 1);
    std::vector<double> DP(toff[L]), DM(toff[L]), ACC(toff[L], 0.0), maxdelta(tasks.size(), 0.0);
    for (int64_t l = 0, u = 0; l < L; ++l) {
        const int64_t nin = sizes[l], nout = sizes[l + 1];
        for (int64_t i = 0; i <= nin; ++i) {
            const T* wr = i < nin ? theta + B.woff[l] + i * nout : theta + B.boff[l];
            for (int64_t j = 0; j < nout; ++j) {
                const T w = wr[j];
                const T wp = static_cast<T>(w + hT), wm = static_cast<T>(w - hT);
                const int64_t e = toff[l] + j * (nin + 1) + i;
                DP[e] = static_cast<double>(wp) - static_cast<double>(w);
                DM[e] = static_cast<double>(wm) - static_cast<double>(w);
                maxdelta[u + j] = std::max(maxdelta[u + j], std::max(std::fabs(DP[e]), std::fabs(DM[e])));
            }
        }
        u += nout;
    }

    const int64_t ntasks = static_cast<int64_t>(tasks.size());
    int64_t work = 0;  // perturbed rows, roughly
    for (int64_t l = 0; l < L; ++l) work += (B.nzptr[l][N] + N) * sizes[l + 1];
    ng::Poll poll;
    poll.fn = &interrupted;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (work > (int64_t(1) << 14))
    for (int64_t ti = 0; ti < ntasks; ++ti) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        if (poll(tid)) continue;  // interrupted: drain the remaining units
        const int64_t l = tasks[ti].first, j = tasks[ti].second;
        const int64_t e = toff[l] + j * (sizes[l] + 1);
        ng::unit_task(B, l, j, scratch[tid], DP.data() + e, DM.data() + e, maxdelta[ti], ACC.data() + e, poll, tid);
    }

    if (poll.stop.load()) return false;
    // grad = (mean of the row differences + the L2 term's difference) / 2h
    const double invN = 1.0 / static_cast<double>(N), inv2h = 1.0 / (2.0 * h);
    for (int64_t l = 0; l < L; ++l) {
        const int64_t nin = sizes[l], nout = sizes[l + 1];
        for (int64_t i = 0; i <= nin; ++i) {
            T* gr = grad + (i < nin ? B.woff[l] + i * nout : B.boff[l]);
            const T* wr = theta + (i < nin ? B.woff[l] + i * nout : B.boff[l]);
            for (int64_t j = 0; j < nout; ++j) {
                const int64_t e = toff[l] + j * (nin + 1) + i;
                double dwd = 0.0;
                if (i < nin) {  // weights only; computed exactly from the two stored values
                    const double w = static_cast<double>(wr[j]);
                    const double wp = w + DP[e], wm = w + DM[e];
                    dwd = 0.5 * weight_decay * (wp - wm) * (wp + wm);
                }
                gr[j] = static_cast<T>((ACC[e] * invN + dwd) * inv2h);
            }
        }
    }
    return true;
}

// ---- kinks: where a +-h step of a parameter crosses a point where the loss is not smooth ----
//
// mlp_kink_counts: for every parameter p, the number of rows n in which moving p to the stored
// value theta_p + h (plus[p]) or theta_p - h (minus[p]) changes the state of a ReLU pre-activation
// (z > 0) or of a hinge margin of row n. A central difference across such a kink averages two
// slopes; the gradient check judges those entries separately (pyfastgrad/gradcheck.py).
// A parameter of layer l shifts z_l[n, j] by s = (stored shift) * a_{l-1}[n, i]. Until the first
// state change every later variable moves linearly in s (ReLU nets are piecewise linear), so the
// distance to the first kink on each side, t+(n, j) and t-(n, j), is min |v| / |dv/ds| over the
// variables v downstream, with dv/ds pushed forward layer by layer (first order for sigmoid/tanh
// with the hinge loss). Same counts as _backends/numpy.py _kink_counts_reference.
namespace ng {

// v + s*d changes state (v > 0) at |s| = |v|/|d|: upward when (v > 0) == (d < 0).
inline void kink_update(double v, double d, double& tp, double& tm) {
    if (d == 0.0) return;
    const double r = std::fabs(v) / std::fabs(d);
    if ((v > 0.0) == (d < 0.0)) tp = std::min(tp, r);
    else tm = std::min(tm, r);
}

}  // namespace ng

template <class T>
void mlp_kink_counts(const std::vector<int64_t>& sizes, Act act, Loss loss, const T* theta, const T* x,
                     const T* t, int64_t N, double h, int64_t* plus, int64_t* minus) {
    check_kinds(act, loss);
    const int64_t L = static_cast<int64_t>(sizes.size()) - 1;
    const int64_t P = count_params(sizes);
    const bool relu = act_kinked(act), hinge = loss == Loss::Hinge;  // kinked
    std::fill(plus, plus + P, int64_t(0));
    std::fill(minus, minus + P, int64_t(0));
    if (!relu && !hinge) return;  // smooth everywhere
    std::vector<int64_t> woff(L), boff(L), zoff(L + 1, 0);
    int64_t maxw = 0;
    for (int64_t l = 0, off = 0; l < L; ++l) {
        woff[l] = off;
        boff[l] = off + sizes[l] * sizes[l + 1];
        off = boff[l] + sizes[l + 1];
        zoff[l + 1] = zoff[l] + N * sizes[l + 1];
    }
    for (int64_t s : sizes) maxw = std::max(maxw, s);
    auto W = [&](int64_t l, int64_t i, int64_t j) { return static_cast<double>(theta[woff[l] + i * sizes[l + 1] + j]); };
    auto input = [&](const std::vector<double>& A, int64_t l, int64_t n, int64_t i) {
        return l == 0 ? static_cast<double>(x[n * sizes[0] + i]) : A[zoff[l - 1] + n * sizes[l] + i];
    };
    int nthreads = 1;
#ifdef _OPENMP
    nthreads = team_threads();
#endif
    // float64 forward pass (rows in parallel)
    std::vector<double> Z(zoff[L]), A(zoff[L]);
    std::vector<int64_t> cls(N, 0);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t n = 0; n < N; ++n) {
        for (int64_t l = 0; l < L; ++l) {
            const int64_t nin = sizes[l], nout = sizes[l + 1];
            double* z = Z.data() + zoff[l] + n * nout;
            for (int64_t j = 0; j < nout; ++j) z[j] = static_cast<double>(theta[boff[l] + j]);
            for (int64_t i = 0; i < nin; ++i) {
                const double a = input(A, l, n, i);
                if (a == 0.0) continue;
                for (int64_t j = 0; j < nout; ++j) z[j] += a * W(l, i, j);
            }
            for (int64_t j = 0; j < nout; ++j) A[zoff[l] + n * nout + j] = activate<double>(act, z[j]);
        }
        const int64_t C = sizes[L];
        int64_t c = 0;  // argmax of t (first maximum)
        for (int64_t k = 1; k < C; ++k)
            if (t[n * C + k] > t[n * C + c]) c = k;
        cls[n] = c;
    }
    // t+ / t- for every (layer, row, unit)
    std::vector<double> TP(zoff[L], std::numeric_limits<double>::infinity()), TM(TP);
#pragma omp parallel num_threads(nthreads)
    {
        std::vector<double> cur(maxw), nxt(maxw);
#pragma omp for schedule(dynamic, 4)
        for (int64_t n = 0; n < N; ++n) {
            const int64_t c = cls[n];
            for (int64_t l = 0; l < L; ++l) {
                const int64_t nl = sizes[l + 1];
                for (int64_t j = 0; j < nl; ++j) {
                    double tp = std::numeric_limits<double>::infinity(), tm = tp;
                    const double zj = Z[zoff[l] + n * nl + j];
                    if (l == L - 1) {  // a logit moves: margin k by [k == j] - [c == j]
                        if (hinge) {
                            const double zc = Z[zoff[l] + n * nl + c];
                            for (int64_t k = 0; k < nl; ++k)
                                if (k != c)
                                    ng::kink_update(Z[zoff[l] + n * nl + k] - zc + 1.0,
                                                    (k == j ? 1.0 : 0.0) - (c == j ? 1.0 : 0.0), tp, tm);
                        }
                    } else {
                        if (relu) ng::kink_update(zj, 1.0, tp, tm);  // the unit itself
                        const double s = ng::slope64(act, zj);
                        if (s != 0.0) {  // else nothing downstream moves before the unit switches
                            for (int64_t k = 0; k < sizes[l + 2]; ++k) cur[k] = s * W(l + 1, j, k);
                            for (int64_t m = l + 1; m < L; ++m) {
                                const int64_t nm = sizes[m + 1];
                                const double* zm = Z.data() + zoff[m] + n * nm;
                                if (m == L - 1) {
                                    if (hinge)
                                        for (int64_t k = 0; k < nm; ++k)
                                            if (k != c) ng::kink_update(zm[k] - zm[c] + 1.0, cur[k] - cur[c], tp, tm);
                                    break;
                                }
                                if (relu)
                                    for (int64_t k = 0; k < nm; ++k) ng::kink_update(zm[k], cur[k], tp, tm);
                                const int64_t nn = sizes[m + 2];
                                std::fill(nxt.begin(), nxt.begin() + nn, 0.0);
                                for (int64_t k = 0; k < nm; ++k) {
                                    const double g = cur[k] * ng::slope64(act, zm[k]);
                                    if (g == 0.0) continue;
                                    for (int64_t q = 0; q < nn; ++q) nxt[q] += g * W(m + 1, k, q);
                                }
                                std::copy(nxt.begin(), nxt.begin() + nn, cur.begin());
                            }
                        }
                    }
                    TP[zoff[l] + n * nl + j] = tp;
                    TM[zoff[l] + n * nl + j] = tm;
                }
            }
        }
    }
    // count the rows per parameter and side; the shifts are the stored values minus theta
    const T hT = static_cast<T>(h);
    for (int64_t l = 0; l < L; ++l) {
        const int64_t nin = sizes[l], nout = sizes[l + 1];
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
        for (int64_t j = 0; j < nout; ++j) {
            for (int64_t i = 0; i <= nin; ++i) {  // the bias last, with input 1
                const int64_t e = i < nin ? woff[l] + i * nout + j : boff[l] + j;
                const T w = theta[e];
                const double dp = static_cast<double>(static_cast<T>(w + hT)) - static_cast<double>(w);
                const double dm = static_cast<double>(static_cast<T>(w - hT)) - static_cast<double>(w);
                int64_t cp = 0, cm = 0;
                for (int64_t n = 0; n < N; ++n) {
                    const double a = i < nin ? input(A, l, n, i) : 1.0;
                    const double tp = TP[zoff[l] + n * nout + j], tm = TM[zoff[l] + n * nout + j];
                    const double sp = dp * a, sm = dm * a;
                    cp += (sp > 0.0 && sp >= tp) || (sp < 0.0 && -sp >= tm);
                    cm += (sm > 0.0 && sm >= tp) || (sm < 0.0 && -sm >= tm);
                }
                plus[e] = cp;
                minus[e] = cm;
            }
        }
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
