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
#include <vector>

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
        out_.resize(ops_.size());
        xn_.resize(ops_.size());
        sd_.resize(ops_.size());
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
    template <class X>
    double loss_grad(const T* theta, const X* x, std::int64_t n, const T* t, double wd, T* grad,
                     const T* const* masks, T* const* mean, T* const* var) {
        const T* a = as_type<T>(x, n * n_in_, xcast_);
        const T* x_t = a;
        // The biggest gemm's multiply-adds (small ones on one BLAS thread, as the Program's matmul) and the
        // step's (its affine layers' three passes): the first layer's sparse kernels run on the team when the
        // step keeps it busy (the MNIST BatchNorm net, batch 100: ~1 ms); the bits do not depend on the count.
        double work = 0.0, step_work = 0.0;
        for (const StackOp& op : ops_)
            if (op.kind == StackOp::Affine) {
                const double w = double(n) * double(op.k) * double(op.m);
                work = std::max(work, w);
                step_work += 3.0 * w;
            }
        const BlasCap blas_guard(blas_threads_for(work));
        const int nth = step_work >= call_work().split ? team_threads() : 1;
        int di = 0, bi = 0;
        for (size_t i = 0; i < ops_.size(); ++i) {  // forward, keeping every layer's output
            const StackOp& op = ops_[i];
            std::vector<T>& o = out_[i];
            if (o.size() < static_cast<size_t>(n * op.m)) o.resize(static_cast<size_t>(n * op.m));
            T* y = o.data();
            switch (op.kind) {
                case StackOp::Affine: {
                    const T* W = theta + op.ws;
                    const T* b = theta + op.bs;
                    if (a == x_t)  // the data's own layer: its nonzeros (MNIST: ~19%)
                        sparse::first_layer_product(a, n, op.k, W, op.m, y, sparse::kSparseDensity, nth);
                    else
                        gemm(false, false, int(n), int(op.m), int(op.k), T(1), a, int(op.k), W, int(op.m), T(0), y,
                             int(op.m));
                    for (std::int64_t r = 0; r < n; ++r)
                        for (std::int64_t j = 0; j < op.m; ++j) y[r * op.m + j] += b[j];
                    break;
                }
                case StackOp::Act:
                    layers::act_forward(layers::to_lact(op.act), op.alpha, a, y, n * op.m);
                    break;
                case StackOp::BatchNorm: {
                    std::vector<T>& xn = xn_[i];
                    if (xn.size() < static_cast<size_t>(n * op.m)) xn.resize(static_cast<size_t>(n * op.m));
                    sd_[i].resize(static_cast<size_t>(op.m));
                    layers::bn_forward_train(a, n, op.m, theta + op.ws, theta + op.bs, eps_, y, xn.data(), mean[bi],
                                             var[bi], sd_[i].data());
                    ++bi;
                    break;
                }
                case StackOp::Dropout:
                    layers::mul_mask(a, masks[di++], y, n * op.m);
                    break;
            }
            a = y;
        }
        // the head: loss, and dL/dz over a copy of the logits
        if (zero_b_.size() < static_cast<size_t>(n_out_)) zero_b_.assign(static_cast<size_t>(n_out_), T(0));
        db_.assign(static_cast<size_t>(n_out_), T(0));
        // (a copy: the last layer's backward may need its output, e.g. a sigmoid's)
        if (dz_.size() < static_cast<size_t>(n * n_out_)) dz_.resize(static_cast<size_t>(n * n_out_));
        T* dz = dz_.data();
        std::copy(a, a + n * n_out_, dz);
        const double s = output_layer(Loss::Softmax, dz, zero_b_.data(), t, n, n_out_, true, T(n), db_.data());
        double loss = s / double(n);
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
        // backward
        std::int64_t maxw = n_in_;
        for (const StackOp& op : ops_) maxw = std::max(maxw, op.m);
        if (d_.size() < static_cast<size_t>(2 * n * maxw)) d_.resize(static_cast<size_t>(2 * n * maxw));
        T* bufs[2] = {d_.data(), d_.data() + n * maxw};
        int which = 0;
        T* dout = dz;
        for (size_t i = ops_.size(); i-- > 0;) {
            const StackOp& op = ops_[i];
            const T* a_in = i == 0 ? x_t : out_[i - 1].data();
            switch (op.kind) {
                case StackOp::Affine: {
                    const T* W = theta + op.ws;
                    T* dW = grad + op.ws;
                    if (a_in == x_t)
                        sparse::first_layer_grad(a_in, n, op.k, dout, op.m, dW, sparse::kSparseDensity, nth);
                    else
                        gemm(true, false, int(op.k), int(op.m), int(n), T(1), a_in, int(op.k), dout, int(op.m), T(0), dW,
                             int(op.m));
                    if (wd != 0.0) {
                        const T w = T(wd);
                        for (std::int64_t e = 0; e < op.k * op.m; ++e) dW[e] += w * W[e];
                    }
                    T* db = grad + op.bs;
                    std::fill(db, db + op.m, T(0));
                    for (std::int64_t r = 0; r < n; ++r)
                        for (std::int64_t j = 0; j < op.m; ++j) db[j] += dout[r * op.m + j];
                    if (i > 0) {
                        T* dn = bufs[which];
                        which ^= 1;
                        gemm(false, true, int(n), int(op.k), int(op.m), T(1), dout, int(op.m), W, int(op.m), T(0), dn,
                             int(op.k));
                        dout = dn;
                    }
                    break;
                }
                case StackOp::Act: {
                    T* dn = bufs[which];
                    which ^= 1;
                    layers::act_backward(layers::to_lact(op.act), op.alpha, dout, a_in, out_[i].data(), dn, n * op.m);
                    dout = dn;
                    break;
                }
                case StackOp::BatchNorm: {
                    T* dn = bufs[which];
                    which ^= 1;
                    layers::bn_backward(dout, xn_[i].data(), sd_[i].data(), theta + op.ws, n, op.m, dn, grad + op.ws,
                                        grad + op.bs);
                    dout = dn;
                    break;
                }
                case StackOp::Dropout: {
                    T* dn = bufs[which];
                    which ^= 1;
                    --di;
                    layers::mul_mask(dout, masks[di], dn, n * op.m);
                    dout = dn;
                    break;
                }
            }
        }
        return loss;
    }

private:
    std::vector<StackOp> ops_;
    std::int64_t n_in_ = 0, n_out_ = 0;
    double eps_ = 0.0;
    int n_dropout_ = 0, n_bn_ = 0;
    std::vector<std::vector<T>> out_, xn_, sd_;  // per layer: output; BatchNorm's xn and std
    std::vector<T> xcast_, d_, dz_, zero_b_, db_;  // widened x, dL/dz pair, the head's dz, bias and db
};

}  // namespace pfg
