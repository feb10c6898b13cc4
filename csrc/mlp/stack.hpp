// A layer stack's training step in one call: the composed nets' loss and backprop gradient
// (pyfastgrad/_layer_program.py Program.loss_grad) for stacks of Affine, activation, Batch Normalization
// (training mode) and Dropout layers under a softmax cross-entropy head. The same kernels as the
// Program's per-layer calls (layers.hpp, activations.hpp, the sparse first layer of rows.hpp, gemm), run
// back to back on buffers kept between calls: the Program paid ~20 Python-level calls and a temporary
// array per layer and pass (the tutorials' Batch Normalization net, 784-100x5-10: about a third of its
// gradient). Header-only, no pybind11.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/blas.hpp"
#include "core/parallel.hpp"
#include "kernels/activations.hpp"
#include "kernels/layers.hpp"
#include "kernels/losses.hpp"
#include "mlp/rows.hpp"

namespace pfg {

// One layer of a stack, as _layer_program.Op: kind, and where its parameters live in theta.
// Affine: W (k x m) at ws, b (m) at bs. BatchNorm: gamma at ws, beta at bs (m each). Activation: act, alpha.
struct StackOp {
    enum Kind { Affine = 0, Act = 1, BatchNorm = 2, Dropout = 3 };
    int kind = Affine;
    std::int64_t ws = 0, bs = 0, k = 0, m = 0;  // k: input width, m: output width
    int act = 0;
    double alpha = 0.0;
};

template <class T>
class Stack {
public:
    // ops in order; n_in: the input width (widths are checked to chain); bn_eps: Batch Normalization's eps.
    Stack(std::vector<StackOp> ops, std::int64_t n_in, std::int64_t n_params, double bn_eps)
        : ops_(std::move(ops)), n_in_(n_in), eps_(bn_eps) {
        std::int64_t w = n_in;
        for (StackOp& op : ops_) {
            if (op.kind == StackOp::Affine) {
                if (op.k != w) throw std::invalid_argument("stack: an affine layer's input width does not chain");
                if (op.ws < 0 || op.ws + op.k * op.m > n_params || op.bs < 0 || op.bs + op.m > n_params)
                    throw std::invalid_argument("stack: a layer's parameters lie outside theta");
                w = op.m;
            } else {
                op.k = op.m = w;
                if (op.kind == StackOp::BatchNorm && (op.ws < 0 || op.ws + w > n_params || op.bs < 0 || op.bs + w > n_params))
                    throw std::invalid_argument("stack: a layer's parameters lie outside theta");
                if (op.kind == StackOp::Act) layers::to_lact(op.act);
                if (op.kind != StackOp::Act && op.kind != StackOp::BatchNorm && op.kind != StackOp::Dropout)
                    throw std::invalid_argument("stack: unknown layer kind " + std::to_string(op.kind));
            }
            if (op.kind == StackOp::Dropout) ++n_dropout_;
            if (op.kind == StackOp::BatchNorm) ++n_bn_;
        }
        n_out_ = w;
        n_params_ = n_params;
        maxw_ = n_in;
        for (const StackOp& op : ops_) maxw_ = std::max(maxw_, op.m);
        out_.resize(ops_.size());
        xn_.resize(ops_.size());
        bn_stats_.resize(ops_.size());
        bn_sums_.resize(ops_.size());
    }

    std::int64_t n_in() const { return n_in_; }
    std::int64_t n_out() const { return n_out_; }
    int n_dropout() const { return n_dropout_; }
    int n_bn() const { return n_bn_; }
    const std::vector<StackOp>& ops() const { return ops_; }

    // Training-mode loss (mean over the n rows, plus 0.5 wd sum W^2 over the affine layers) and its
    // gradient into grad. t: dense targets (n x n_out). masks: one (n x width) 0/1 array per Dropout
    // layer; mean/var: each BatchNorm layer's batch statistics are written there (the caller updates the
    // running ones). X: T, or float for a double stack (widened as the Program's cast).
    //
    // A big call splits the rows into parts, one thread each (OpenBLAS on one thread inside), as
    // Mlp::loss_grad_split: one fork/join per call, where only the first layer ran on the team and the small
    // gemms on one thread (the tutorials' BatchNorm net, 784-100x5-10, batch 100: 1.49 -> 1.05 ms median on
    // two cores). Batch Normalization adds the parts' column sums between its passes (a barrier each);
    // part p > 0 writes its gradient to part_g_, summed into grad in part order at the end. The part count
    // follows the settings, not the load, so the bits do not change when a busy machine shrinks the team.
    template <class X>
    double loss_grad(const T* theta, const X* x, std::int64_t n, const T* t, double wd, T* grad,
                     const T* const* masks, T* const* mean, T* const* var) {
        // The biggest gemm's multiply-adds (small ones on one BLAS thread, as the Program's matmul) and the
        // step's (its affine layers' three passes).
        double work = 0.0, step_work = 0.0;
        for (const StackOp& op : ops_)
            if (op.kind == StackOp::Affine) {
                const double w = double(n) * double(op.k) * double(op.m);
                work = std::max(work, w);
                step_work += 3.0 * w;
            }
        const int parts = split_parts(n, step_work);
        const Call<X> c{theta, x, n, t, wd, grad, masks, mean, var, parts};
        // every buffer before any thread starts (nothing below throws)
        for (size_t i = 0; i < ops_.size(); ++i) {
            grow(out_[i], n * ops_[i].m);
            if (ops_[i].kind == StackOp::BatchNorm) {
                grow(xn_[i], n * ops_[i].m);
                grow(bn_sums_[i], 4 * parts * ops_[i].m);   // per part: sum x, sum xc^2, sum dout, sum dout xn
                grow(bn_stats_[i], 4 * parts * ops_[i].m);  // per thread: mean, std, m1, m2
            }
        }
        if (!std::is_same<X, T>::value) grow(xcast_, n * n_in_);
        grow(dz_, n * n_out_);
        grow(d_, 2 * n * maxw_);
        grow(head_db_, parts * n_out_);
        if (zero_b_.size() < static_cast<size_t>(n_out_)) zero_b_.assign(static_cast<size_t>(n_out_), T(0));
        // (zeros where no layer writes a gradient: adding them leaves grad's entry as it was)
        if (part_g_.size() < static_cast<size_t>((parts - 1) * n_params_))
            part_g_.resize(static_cast<size_t>((parts - 1) * n_params_), T(0));
        part_loss_.assign(static_cast<size_t>(parts), 0.0);
        if (parts == 1) {
            const BlasCap blas_guard(blas_threads_for(work));
            run(c, 0, 1);
        } else {
            const BlasCap blas_guard(1);
            const int nth = std::max(1, std::min(parts, team_threads()));
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) if (nth > 1)
#endif
            run(c, team_thread(), team_size());
            if (nth > 1) team_done();
        }
        double loss = 0.0;
        for (double v : part_loss_) loss += v;
        loss /= double(n);
        if (wd != 0.0) {  // (as the Program's _wd_loss: float64 sums of each W^2)
            double sq = 0.0;
            for (const StackOp& op : ops_)
                if (op.kind == StackOp::Affine) {
                    const T* W = theta + op.ws;
                    double sl = 0.0;
                    for (std::int64_t e = 0; e < op.k * op.m; ++e) sl += double(W[e]) * double(W[e]);
                    sq += sl;
                }
            loss += 0.5 * wd * sq;
        }
        return loss;
    }

private:
    static constexpr std::int64_t kMinPartRows = 16;

    template <class X>
    struct Call {
        const T* theta;
        const X* x;
        std::int64_t n;
        const T* t;
        double wd;
        T* grad;
        const T* const* masks;
        T* const* mean;
        T* const* var;
        int parts;
    };

    template <class U>
    static void grow(std::vector<U>& v, std::int64_t size) {
        if (v.size() < static_cast<size_t>(size)) v.resize(static_cast<size_t>(size));
    }

    // Parts for n rows: 1 for a small step, else the configured OpenMP threads (up to 8, >= kMinPartRows
    // rows each), as Mlp::split_parts.
    static int split_parts(std::int64_t n, double step_work) {
#ifdef _OPENMP
        if (n < 2 * kMinPartRows || step_work < call_work().split) return 1;
        const int want = std::min(omp_get_max_threads(), 8);
        if (want < 2) return 1;
        return static_cast<int>(std::min<std::int64_t>(want, n / kMinPartRows));
#else
        (void)n;
        (void)step_work;
        return 1;
#endif
    }

    // One thread's share of a call: parts tid, tid + nt, ... of the rows through every layer, with a
    // barrier where Batch Normalization needs all the parts' column sums, and at the end the slice
    // [n_params tid / nt, n_params (tid + 1) / nt) of the parts' gradients summed into grad.
    template <class X>
    void run(const Call<X>& c, int tid, int nt) {
        const std::int64_t n = c.n, P = c.parts;
        const auto r0 = [&](std::int64_t p) { return n * p / P; };
        const auto rows = [&](std::int64_t p) { return n * (p + 1) / P - n * p / P; };
        const auto gpart = [&](std::int64_t p) { return p == 0 ? c.grad : part_g_.data() + (p - 1) * n_params_; };
        // the first layer's sparse product: inside a part on its thread, else on a team when it is big
        const int first_threads = P > 1 ? 1 : 0;
        const T* x_t = nullptr;  // the rows of x as T
        if constexpr (std::is_same<X, T>::value) {
            x_t = c.x;
        } else {
            for (std::int64_t p = tid; p < P; p += nt)
                for (std::int64_t e = r0(p) * n_in_; e < (r0(p) + rows(p)) * n_in_; ++e) xcast_[e] = T(c.x[e]);
            x_t = xcast_.data();
        }
        int di = 0, bi = 0;
        const T* a = x_t;  // this layer's input (rows r0(p).. of it for part p)
        for (size_t i = 0; i < ops_.size(); ++i) {  // forward, keeping every layer's output
            const StackOp& op = ops_[i];
            const std::int64_t k = op.k, m = op.m;
            T* y = out_[i].data();
            switch (op.kind) {
                case StackOp::Affine: {
                    const T* W = c.theta + op.ws;
                    const T* b = c.theta + op.bs;
                    for (std::int64_t p = tid; p < P; p += nt) {
                        const T* ap = a + r0(p) * k;
                        T* yp = y + r0(p) * m;
                        if (a == x_t)  // the data's own layer: its nonzeros (MNIST: ~19%)
                            sparse::first_layer_product(ap, rows(p), k, W, m, yp, sparse::kSparseDensity,
                                                        first_threads);
                        else
                            gemm(false, false, int(rows(p)), int(m), int(k), T(1), ap, int(k), W, int(m), T(0), yp,
                                 int(m));
                        for (std::int64_t r = 0; r < rows(p); ++r)
                            for (std::int64_t j = 0; j < m; ++j) yp[r * m + j] += b[j];
                    }
                    break;
                }
                case StackOp::Act:
                    for (std::int64_t p = tid; p < P; p += nt)
                        layers::act_forward(layers::to_lact(op.act), op.alpha, a + r0(p) * m, y + r0(p) * m,
                                            rows(p) * m);
                    break;
                case StackOp::BatchNorm: {
                    double* s1 = bn_sums_[i].data();  // parts x m each: sum x, sum xc^2
                    double* s2 = s1 + P * m;
                    T* mu = bn_stats_[i].data() + std::int64_t(tid) * 4 * m;  // this thread's copy
                    T* sd = mu + m;
                    T* xn = xn_[i].data();
                    for (std::int64_t p = tid; p < P; p += nt) {
                        std::fill(s1 + p * m, s1 + (p + 1) * m, 0.0);
                        layers::bn_col_sums(a + r0(p) * m, rows(p), m, s1 + p * m);
                    }
                    barrier(nt);
                    for (std::int64_t d = 0; d < m; ++d) {
                        double s = 0.0;
                        for (std::int64_t p = 0; p < P; ++p) s += s1[p * m + d];
                        mu[d] = T(s / double(n));
                    }
                    for (std::int64_t p = tid; p < P; p += nt) {
                        std::fill(s2 + p * m, s2 + (p + 1) * m, 0.0);
                        layers::bn_center(a + r0(p) * m, rows(p), m, mu, xn + r0(p) * m, s2 + p * m);
                    }
                    barrier(nt);
                    for (std::int64_t d = 0; d < m; ++d) {
                        double s = 0.0;
                        for (std::int64_t p = 0; p < P; ++p) s += s2[p * m + d];
                        const T v = T(s / double(n));
                        sd[d] = std::sqrt(v + T(eps_));
                        if (tid == 0) {
                            c.mean[bi][d] = mu[d];
                            c.var[bi][d] = v;
                        }
                    }
                    for (std::int64_t p = tid; p < P; p += nt)
                        layers::bn_scale(xn + r0(p) * m, rows(p), m, sd, c.theta + op.ws, c.theta + op.bs,
                                         y + r0(p) * m);
                    ++bi;
                    break;
                }
                case StackOp::Dropout:
                    for (std::int64_t p = tid; p < P; p += nt)
                        layers::mul_mask(a + r0(p) * m, c.masks[di] + r0(p) * m, y + r0(p) * m, rows(p) * m);
                    ++di;
                    break;
            }
            a = y;
        }
        // the head: each part's loss, and dL/dz over a copy of its logits (the last layer's backward may
        // need its output, e.g. a sigmoid's)
        const std::int64_t co = n_out_;
        for (std::int64_t p = tid; p < P; p += nt) {
            T* dz = dz_.data() + r0(p) * co;
            std::copy(a + r0(p) * co, a + (r0(p) + rows(p)) * co, dz);
            T* db = head_db_.data() + p * co;
            std::fill(db, db + co, T(0));
            part_loss_[static_cast<size_t>(p)] =
                output_layer(Loss::Softmax, dz, zero_b_.data(), c.t + r0(p) * co, rows(p), co, true, T(n), db);
        }
        // backward: part p's dL/d(layer input) in its own pair of buffers (2 rows(p) maxw_ at 2 r0(p) maxw_), as
        // the parts run ahead of each other between barriers; dout(p) its current one
        auto dbuf = [&](std::int64_t p, int which) { return d_.data() + 2 * r0(p) * maxw_ + which * rows(p) * maxw_; };
        std::vector<const T*> dout(static_cast<size_t>(P), nullptr);
        std::vector<int> which(static_cast<size_t>(P), 0);
        for (std::int64_t p = tid; p < P; p += nt) dout[static_cast<size_t>(p)] = dz_.data() + r0(p) * co;
        auto next = [&](std::int64_t p) {  // part p's buffer for the layer's dL/dx
            int& w = which[static_cast<size_t>(p)];
            T* d = dbuf(p, w);
            w ^= 1;
            return d;
        };
        for (size_t i = ops_.size(); i-- > 0;) {
            const StackOp& op = ops_[i];
            const std::int64_t k = op.k, m = op.m;
            const T* a_in = i == 0 ? x_t : out_[i - 1].data();
            switch (op.kind) {
                case StackOp::Affine: {
                    const T* W = c.theta + op.ws;
                    for (std::int64_t p = tid; p < P; p += nt) {
                        const T* dp = dout[static_cast<size_t>(p)];
                        const T* ap = a_in + r0(p) * k;
                        T* dW = gpart(p) + op.ws;
                        if (a_in == x_t)
                            sparse::first_layer_grad(ap, rows(p), k, dp, m, dW, sparse::kSparseDensity);
                        else
                            gemm(true, false, int(k), int(m), int(rows(p)), T(1), ap, int(k), dp, int(m), T(0), dW,
                                 int(m));
                        if (p == 0 && c.wd != 0.0) {
                            const T w = T(c.wd);
                            for (std::int64_t e = 0; e < k * m; ++e) dW[e] += w * W[e];
                        }
                        T* db = gpart(p) + op.bs;
                        std::fill(db, db + m, T(0));
                        for (std::int64_t r = 0; r < rows(p); ++r)
                            for (std::int64_t j = 0; j < m; ++j) db[j] += dp[r * m + j];
                        if (i > 0) {
                            T* dn = next(p);
                            gemm(false, true, int(rows(p)), int(k), int(m), T(1), dp, int(m), W, int(m), T(0), dn,
                                 int(k));
                            dout[static_cast<size_t>(p)] = dn;
                        }
                    }
                    break;
                }
                case StackOp::Act:
                    for (std::int64_t p = tid; p < P; p += nt) {
                        T* dn = next(p);
                        layers::act_backward(layers::to_lact(op.act), op.alpha, dout[static_cast<size_t>(p)],
                                             a_in + r0(p) * m, out_[i].data() + r0(p) * m, dn, rows(p) * m);
                        dout[static_cast<size_t>(p)] = dn;
                    }
                    break;
                case StackOp::BatchNorm: {
                    double* sb = bn_sums_[i].data() + 2 * P * m;  // parts x m each: sum dout, sum dout xn
                    double* sg = sb + P * m;
                    T* sd = bn_stats_[i].data() + std::int64_t(tid) * 4 * m + m;  // the forward's std
                    T* m1 = sd + m;
                    T* m2 = m1 + m;
                    const T* xn = xn_[i].data();
                    const T* gamma = c.theta + op.ws;
                    for (std::int64_t p = tid; p < P; p += nt) {
                        std::fill(sb + p * m, sb + (p + 1) * m, 0.0);
                        std::fill(sg + p * m, sg + (p + 1) * m, 0.0);
                        layers::bn_grad_sums(dout[static_cast<size_t>(p)], xn + r0(p) * m, rows(p), m, sb + p * m,
                                             sg + p * m);
                    }
                    barrier(nt);
                    // the totals over the parts, in part order, into part 0's slots' place of this thread's
                    // view (every thread adds them up alike)
                    std::vector<double> tb(static_cast<size_t>(m)), tg(static_cast<size_t>(m));
                    for (std::int64_t d = 0; d < m; ++d) {
                        double vb = 0.0, vg = 0.0;
                        for (std::int64_t p = 0; p < P; ++p) {
                            vb += sb[p * m + d];
                            vg += sg[p * m + d];
                        }
                        tb[static_cast<size_t>(d)] = vb;
                        tg[static_cast<size_t>(d)] = vg;
                    }
                    layers::bn_means(tb.data(), tg.data(), gamma, n, m, m1, m2);
                    for (std::int64_t p = tid; p < P; p += nt) {
                        T* dn = next(p);
                        layers::bn_dx(dout[static_cast<size_t>(p)], xn + r0(p) * m, sd, gamma, m1, m2, rows(p), m, dn);
                        dout[static_cast<size_t>(p)] = dn;
                        // dgamma, dbeta: the totals in part 0's gradient, zeros in the others'
                        T* dg = gpart(p) + op.ws;
                        T* dbt = gpart(p) + op.bs;
                        for (std::int64_t d = 0; d < m; ++d) {
                            dg[d] = p == 0 ? T(tg[static_cast<size_t>(d)]) : T(0);
                            dbt[d] = p == 0 ? T(tb[static_cast<size_t>(d)]) : T(0);
                        }
                    }
                    break;
                }
                case StackOp::Dropout:
                    --di;
                    for (std::int64_t p = tid; p < P; p += nt) {
                        T* dn = next(p);
                        layers::mul_mask(dout[static_cast<size_t>(p)], c.masks[di] + r0(p) * m, dn, rows(p) * m);
                        dout[static_cast<size_t>(p)] = dn;
                    }
                    break;
            }
        }
        if (P > 1) {
            barrier(nt);
            const std::int64_t q0 = n_params_ * tid / nt, q1 = n_params_ * (tid + 1) / nt;
            for (std::int64_t p = 1; p < P; ++p) {
                const T* g = part_g_.data() + (p - 1) * n_params_;
#pragma omp simd
                for (std::int64_t e = q0; e < q1; ++e) c.grad[e] += g[e];
            }
        }
    }

    // All the team's threads at once (an orphaned barrier: binds to run's team; nothing on one thread).
    static void barrier(int nt) {
#ifdef _OPENMP
        if (nt > 1) {
#pragma omp barrier
        }
#else
        (void)nt;
#endif
    }

    std::vector<StackOp> ops_;
    std::int64_t n_in_ = 0, n_out_ = 0;
    double eps_ = 0.0;
    int n_dropout_ = 0, n_bn_ = 0;
    std::int64_t n_params_ = 0, maxw_ = 0;  // maxw_: the widest layer input or output
    std::vector<std::vector<T>> out_, xn_, bn_stats_;  // per layer: output; BatchNorm's xn, per-thread stats
    std::vector<std::vector<double>> bn_sums_;           // BatchNorm: the parts' column sums
    std::vector<T> xcast_, d_, dz_, zero_b_, head_db_;   // widened x, dL/dx pairs, the head's dz, bias and db
    std::vector<T> part_g_;                              // the gradients of parts 1..
    std::vector<double> part_loss_;
};

}  // namespace pfg
