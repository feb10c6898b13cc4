// Fully connected net on a flat parameter vector: forward, loss, backprop and mini-batch
// training steps. Header-only, no pybind11; semantics of _backends/numpy.py Mlp.
//
// Layout (shared by all backends): for sizes = [n0, n1, ..., nL], theta holds W1 (n0 x n1,
// row-major), b1 (n1), W2, b2, ... Hidden layers apply the activation, the last layer is affine
// and feeds the loss (losses.hpp). Weight decay adds 0.5 * wd * sum W^2 (gradient wd * W).
//
// Use from C++: pfg::Mlp<double> net(sizes, Act::Relu, Loss::Softmax);
//   double l = net.loss(theta, x, t, n, wd);   // x (n x n0), t (n x nL), all C-contiguous
// An Mlp object owns scratch buffers, so one object must not be used by two threads at once
// (make one per thread instead; they are cheap). Buffers grow with the batch size and are reused,
// so a steady-state loss_grad / train step allocates nothing.
#pragma once
#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "core/blas.hpp"
#include "core/common.hpp"
#include "core/parallel.hpp"
#include "core/simd.hpp"
#include "kernels/activations.hpp"
#include "kernels/losses.hpp"
#include "kernels/optim.hpp"
#include "mlp/csc.hpp"
#include "mlp/rows.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pfg {

template <class T>
class Mlp {
public:
    // The sparse-input paths use threads when the first layer has at least this many multiply-adds.
    static constexpr double kCsrParallelWork = 1 << 16;
    // The first layer runs on x's nonzeros when at most this fraction is nonzero (rows.hpp).
    static constexpr double kSparseDensity = sparse::kSparseDensity;
    // predict/loss work through the rows in chunks of this many so big inputs need no big buffers.
    static constexpr std::int64_t kChunkRows = 1024;

    Mlp(std::vector<std::int64_t> sizes, Act act, Loss loss)
        : sizes_(std::move(sizes)), act_(act), loss_(loss) {
        if (sizes_.size() < 2)
            throw std::invalid_argument("sizes needs at least 2 entries (inputs and outputs), got " +
                                        std::to_string(sizes_.size()));
        for (std::int64_t s : sizes_)
            if (s < 1 || s > INT_MAX)
                throw std::invalid_argument("every layer size must be in [1, 2^31), got " + std::to_string(s));
        L_ = static_cast<int>(sizes_.size()) - 1;
        std::int64_t off = 0;
        for (int l = 0; l < L_; ++l) {
            woff_.push_back(off);
            off += sizes_[l] * sizes_[l + 1];
            boff_.push_back(off);
            off += sizes_[l + 1];
            if (l + 1 < L_) max_hidden_ = std::max(max_hidden_, sizes_[l + 1]);
        }
        n_params_ = off;
        acts_.resize(L_ - 1);
    }

    std::int64_t n_params() const { return n_params_; }
    const std::vector<std::int64_t>& sizes() const { return sizes_; }
    std::int64_t n_in() const { return sizes_.front(); }
    std::int64_t n_out() const { return sizes_.back(); }
    Act activation() const { return act_; }
    Loss loss_kind() const { return loss_; }

    // out (n x nL) = logits of x (n x n0). X: T, or float for a double net (see rows.hpp).
    template <class X>
    void predict(const T* theta, const X* x, std::int64_t n, T* out) {
        if (n <= 0) return;
        const int nth_rows = rows_threads(theta, x, n);
        // On the sparse path the team's threads run every layer on their rows (forward_in), OpenBLAS on
        // one thread inside: a pool woken next to the team spins against it (10,000 MNIST rows: 35 ms, not 7).
        const BlasCap blas_guard(nth_rows > 0 ? 1 : blas_threads(n, 1));
        const std::int64_t chunk = chunk_rows(n);
        reserve(chunk);
        const std::int64_t n0 = sizes_.front(), c = sizes_.back();
        const T* b = theta + boff_[L_ - 1];
        for (std::int64_t r0 = 0; r0 < n; r0 += chunk) {
            const std::int64_t rows = std::min(chunk, n - r0);
            T* o = out + r0 * c;
            forward_in(theta, x + r0 * n0, rows, o, nth_rows);  // the last layer writes straight into out
            for (std::int64_t r = 0; r < rows; ++r)
                for (std::int64_t k = 0; k < c; ++k) o[r * c + k] += b[k];
        }
    }

    // out (n x nL) = logits of the CSR rows rows[0..n) of X (indptr/ind/val over nx rows, nnz entries):
    // the first layer on their nonzeros, so an evaluation subset of a CSR training set needs no dense
    // copy. rows_checked as in train_steps_csr. A non-finite W0 takes the dense product (its 0 * inf).
    void predict_csr(const T* theta, const std::int64_t* indptr, const std::int32_t* ind, const T* val,
                     std::int64_t nx, std::int64_t nnz, const std::int64_t* rows, std::int64_t n, T* out,
                     bool rows_checked) {
        if (n <= 0) return;
        const std::int64_t max_nnz = check_csr(indptr, ind, nx, nnz, rows, 1, n, rows_checked, "predict_csr");
        const std::int64_t n0 = sizes_.front(), n1 = sizes_[1], c = sizes_.back();
        const T* W0 = theta + woff_[0];
        const bool dense = !sparse::all_finite(W0, n0 * n1);
        const BlasCap blas_guard(dense ? blas_threads(n, 1) : 1);  // (as predict)
        const std::int64_t chunk = chunk_rows(n);
        reserve(chunk);
        const int nth = sparse_threads(double(max_nnz) * double(n1), true);
        const T* b = theta + boff_[L_ - 1];
        std::int64_t ldf = n1;
        const T* Wf = dense ? W0 : aligned_w0(theta, n, ldf);
        for (std::int64_t r0 = 0; r0 < n; r0 += chunk) {
            const std::int64_t m = std::min(chunk, n - r0);
            T* o = out + r0 * c;
            const sparse::CsrBatch<T> X{rows + r0, m, indptr, ind, val};
            if (dense) {  // rare: densify the chunk
                if (xcast_.size() < static_cast<size_t>(m * n0)) xcast_.resize(static_cast<size_t>(m * n0));
                std::fill(xcast_.begin(), xcast_.begin() + m * n0, T(0));
                for (std::int64_t r = 0; r < m; ++r)
                    for (std::int64_t p = indptr[X.rows[r]]; p < indptr[X.rows[r] + 1]; ++p)
                        xcast_[static_cast<size_t>(r * n0 + ind[p])] = val[p];
                forward(theta, xcast_.data(), m, o);
            } else {  // each thread its rows through every layer (as forward_in)
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) if (nth > 1)
#endif
                {
                    const int tid = team_thread(), nt = team_size();
                    const std::int64_t q0 = m * tid / nt, q1 = m * (tid + 1) / nt;
                    T* z0 = (L_ == 1) ? o : acts_[0].data();
                    sparse::csr_batch_forward(X, q0, q1, Wf, ldf, z0, n1, n1);
                    if (L_ > 1 && q1 > q0) {
                        bias_activation(act_, z0 + q0 * n1, theta + boff_[0], q1 - q0, n1);
                        forward(theta, z0 + q0 * n1, q1 - q0, o + q0 * c, 1, q0);
                    }
                }
            }
            for (std::int64_t r = 0; r < m; ++r)
                for (std::int64_t k = 0; k < c; ++k) o[r * c + k] += b[k];
        }
    }

    // Mean loss over the n rows plus the weight-decay term.
    template <class X>
    double loss(const T* theta, const X* x, const T* t, std::int64_t n, double wd) {
        need_rows(n);
        const int nth_rows = rows_threads(theta, x, n);
        const BlasCap blas_guard(nth_rows > 0 ? 1 : blas_threads(n, 1));  // (as predict)
        const std::int64_t chunk = chunk_rows(n);
        reserve(chunk);
        const std::int64_t n0 = sizes_.front(), c = sizes_.back();
        double s = 0.0;
        for (std::int64_t r0 = 0; r0 < n; r0 += chunk) {
            const std::int64_t rows = std::min(chunk, n - r0);
            forward_in(theta, x + r0 * n0, rows, zl_.data(), nth_rows);
            s += output_layer(loss_, zl_.data(), theta + boff_[L_ - 1], t + r0 * c, rows, c, false, T(n),
                              static_cast<T*>(nullptr));
        }
        return s / double(n) + decay_term(theta, wd);
    }

    // Loss as loss(), and grad (n_params) = its gradient by backprop.
    // sparse: -1 picks (the sparse first layer when x is mostly zeros, see kSparseDensity), 0 always
    // dense gemms, 1 the sparse first layer whenever it gives the same answer (theta's W1 finite).
    // X: T, or float for a double net (widened exactly).
    template <class X>
    double loss_grad(const T* theta, const X* x, const T* t, std::int64_t n, double wd, T* grad, int sparse = -1) {
        need_rows(n);
        if (n > INT_MAX) throw std::invalid_argument("loss_grad: batch too large for BLAS (> 2^31-1 rows)");
        const int parts = split_parts(n);
        if (parts > 1) return loss_grad_split(theta, x, t, n, wd, grad, sparse, parts);
        reserve(n);
        const BlasCap blas_guard(blas_threads(n, 3));  // forward, dW, dX
        const std::int64_t n0 = sizes_.front();
        if (sparse != 0 && use_sparse_input(x, n, sparse == 1)) {
            double l;
            // (a dense product's work over 5: about the sparse kernels' work at MNIST's density)
            const int nth = sparse_threads(double(n) * double(n0) * double(sizes_[1]) / 5, true);
            if (nth == 1) {
                if (loss_grad_rows(theta, x, t, n, wd, grad, &l)) return l;
            } else if (loss_grad_sparse(theta, as_t(x, n * n0), t, n, wd, grad, &l, nth)) {
                return l;
            }
            // Not finite somewhere: the dense path gives the IEEE answer (0 * inf) the zeros skip.
        }
        const T* xt = as_t(x, n * n0);
        const double l = forward_loss_dz(theta, xt, t, n, wd, grad);
        backward(theta, xt, n, wd, grad);
        return l;
    }

    // Mini-batch steps (see _backends/numpy.py Mlp.train_steps): step s uses rows idx[s*B .. s*B+B) of
    // X/Tt (nx rows), clips the gradient (hyper[kMaxNorm] > 0), then opt_update(.., step0 + s + 1)
    // with the learning rate lrs[s] (lrs may be null: hyper[kLr] for every step). Stops before
    // updating at the first non-finite loss; losses[s] = loss of step s, NaN for steps not done.
    // Returns steps done. hyper has kHyperLen entries; s1/s2 must hold n_params entries when the
    // optimizer uses them (opt_state_count).
    std::int64_t train_steps(T* theta, const T* X, std::int64_t nx, const T* Tt, const std::int64_t* idx,
                             std::int64_t n_steps, std::int64_t B, double wd, Opt opt, const double* hyper,
                             T* s1, T* s2, std::int64_t step0, double* losses, const double* lrs = nullptr) {
        if (!check_steps(n_steps, B, opt, step0)) return 0;
        // Every index is checked before anything is touched.
        for (std::int64_t i = 0, total = n_steps * B; i < total; ++i) {
            if (idx[i] < 0 || idx[i] >= nx)
                throw std::invalid_argument("train_steps: idx[" + std::to_string(i / B) + ", " +
                                            std::to_string(i % B) + "] = " + std::to_string(idx[i]) +
                                            " is out of range [0, " + std::to_string(nx) + ")");
        }
        reserve(B);
        const BlasCap blas_guard(blas_threads_free());
        const std::int64_t n0 = sizes_.front(), c = sizes_.back();
        if (xb_.size() < static_cast<size_t>(B * n0)) xb_.resize(B * n0);
        if (tb_.size() < static_cast<size_t>(B * c)) tb_.resize(B * c);
        if (g_.size() != static_cast<size_t>(n_params_)) g_.resize(n_params_);
        T* xb = xb_.data();
        T* tb = tb_.data();
        T* g = g_.data();
        double h[kHyperLen];  // hyper with this step's learning rate
        std::copy(hyper, hyper + kHyperLen, h);
        const double max_norm = hyper[kMaxNorm];
        const bool fused_sgd = fuses_sgd(opt, hyper);
        bool sparse_in = false;  // x mostly zeros: each step as loss_grad's one-thread sparse first layer
        std::int64_t s = 0;
        for (; s < n_steps; ++s) {
            if (lrs) h[kLr] = lrs[s];
            const std::int64_t* rows = idx + s * B;
            for (std::int64_t r = 0; r < B; ++r) {
                std::memcpy(xb + r * n0, X + rows[r] * n0, sizeof(T) * n0);
                std::memcpy(tb + r * c, Tt + rows[r] * c, sizeof(T) * c);
            }
            if (s == 0) sparse_in = use_sparse_input(xb, B, false);  // (decided on the first batch)
            double l;
            if (sparse_in && loss_grad_rows(theta, xb, tb, B, wd, g, &l)) {
                losses[s] = l;  // finite (else loss_grad_rows declines and the dense step below gives the IEEE answer)
                if (s + 1 < n_steps) prefetch_rows(X, idx + (s + 1) * B, B, n0);
                if (max_norm > 0.0) clip_grad(g, n_params_, max_norm);
                opt_update(opt, theta, g, s1, s2, n_params_, h, step0 + s + 1);
                continue;
            }
            l = forward_loss_dz(theta, xb, tb, B, wd, g);
            if (!loss_finite(l)) break;
            losses[s] = l;
            if (s + 1 < n_steps) prefetch_rows(X, idx + (s + 1) * B, B, n0);  // hide the next gather
            if (fused_sgd) {
                backward_sgd(theta, xb, B, wd, g, h[kLr]);  // update fused into the gemms
            } else {
                backward(theta, xb, B, wd, g);
                if (max_norm > 0.0) clip_grad(g, n_params_, max_norm);
                opt_update(opt, theta, g, s1, s2, n_params_, h, step0 + s + 1);
            }
        }
        for (std::int64_t r = s; r < n_steps; ++r) losses[r] = std::numeric_limits<double>::quiet_NaN();
        return s;
    }

    // train_steps with X in CSR form (indptr: nx + 1 offsets into ind/val, which hold nnz column
    // indices, ascending within a row, and values): the same steps and results up to the order of the
    // sums. The first layer works on the nonzeros only (csc.hpp, rows.hpp), the layers after it as in
    // train_steps. Threads (OpenMP) own bands of the input columns, as in loss_grad_sparse: each
    // computes its band's part of z0 row by row and regroups its band of the batch by column, thread 0
    // runs the dense layers and the loss (and updates them), each updates its band's rows of W0.
    std::int64_t train_steps_csr(T* theta, const std::int64_t* indptr, const std::int32_t* ind, const T* val,
                                 std::int64_t nx, std::int64_t nnz, const T* Tt, const std::int64_t* idx,
                                 std::int64_t n_steps, std::int64_t B, double wd, Opt opt, const double* hyper,
                                 T* s1, T* s2, std::int64_t step0, double* losses, const double* lrs = nullptr,
                                 bool rows_checked = false) {
        if (!check_steps(n_steps, B, opt, step0)) return 0;
        const std::int64_t max_nnz = check_csr(indptr, ind, nx, nnz, idx, n_steps, B, rows_checked);
        reserve(B);
        const std::int64_t n0 = sizes_.front(), n1 = sizes_[1], c = sizes_.back();
        if (tb_.size() < static_cast<size_t>(B * c)) tb_.resize(B * c);
        if (g_.size() != static_cast<size_t>(n_params_)) g_.resize(n_params_);
        const bool sgd = fuses_sgd(opt, hyper);
        const double max_norm = hyper[kMaxNorm];
        // 64-byte-aligned rows for the sparse kernels (they run at cache bandwidth, and a row split over
        // lines costs two accesses): z and dZ of layer 0 always, W0 itself for plain SGD, whose update
        // touches nothing else (it is copied back into theta at the end).
        const std::int64_t ldp = sparse::padded_ld<T>(n1);
        T* Dp = dp_.get(B * ldp);
        T* W0 = theta + woff_[0];
        T* Wk = W0;  // the W0 the kernels use
        std::int64_t ldw = n1;
        if (sgd) {
            Wk = w0p_.get(n0 * ldp);
            ldw = ldp;
            for (std::int64_t i = 0; i < n0; ++i) std::memcpy(Wk + i * ldp, W0 + i * n1, sizeof(T) * n1);
        }
        T* z0 = (L_ == 1) ? zl_.data() : acts_[0].data();
        const sparse::CsrBatch<T> X0{nullptr, B, indptr, ind, val};
        // Threads split x's columns (W0's rows) in bands, as loss_grad_sparse does, each band of about
        // equal nonzeros in the first batches; not worth it for small batches.
        const int nth = sparse_threads(double(max_nnz) * double(n1), false);
        {
            col_nnz_.assign(static_cast<size_t>(n0), 0);
            for (std::int64_t k = 0, sample = std::min<std::int64_t>(n_steps * B, 2000); k < sample; ++k)
                for (std::int64_t p = indptr[idx[k]]; p < indptr[idx[k] + 1]; ++p) ++col_nnz_[ind[p]];
            set_bands(nth);
        }
        if (static_cast<int>(bands_.size()) < nth) bands_.resize(static_cast<size_t>(nth));
        T* Zp = zp_.get(nth * B * ldp);  // thread t's part of z0 at Zp + t B ldp
        if (!sgd && gch_.size() < static_cast<size_t>(nth * kOptChunk * n1))
            gch_.resize(static_cast<size_t>(nth * kOptChunk * n1));
        // The dense part (layers after the first, loss, backprop to layer 0) split over the threads by
        // rows when each gets enough of them: else thread 0 runs it while the others wait.
        const bool split_dense = nth > 1 && B >= 2 * kMinPartRows;
        std::vector<double> part_loss(static_cast<size_t>(nth), 0.0);
        if (split_dense) {
            while (static_cast<int>(parts_.size()) < nth) {
                parts_.push_back(std::make_unique<Mlp<T>>(sizes_, act_, loss_));
                parts_.back()->in_part_ = true;
            }
            if (part_g_.size() < static_cast<size_t>(nth - 1) * static_cast<size_t>(n_params_))
                part_g_.resize(static_cast<size_t>(nth - 1) * static_cast<size_t>(n_params_));
        }
        const BlasCap blas_guard(nth > 1 ? 1 : blas_threads_free());  // small gemms run inside our threads
        std::int64_t done = 0;
        std::atomic<bool> stop{false};
        std::exception_ptr err_dense, err_build;
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) if (nth > 1)
#endif
        {
            const int tid = team_thread(), nt = team_size();
            double h[kHyperLen];  // hyper with this step's learning rate (each thread its copy)
            std::copy(hyper, hyper + kHyperLen, h);
            const std::int64_t k0 = band_[tid], k1 = band_[tid + 1];
            T* Zt = Zp + tid * B * ldp;
            T* gch = gch_.data() + static_cast<size_t>(tid) * kOptChunk * n1;
            // The optimizer on theta's entries [o, o + m) from their gradient g (the state at the same offsets).
            auto update_at = [&](std::int64_t o, const T* g, std::int64_t m, std::int64_t step) {
                opt_update(opt, theta + o, g, s1 ? s1 + o : nullptr, s2 ? s2 + o : nullptr, m, h, step);
            };
            sparse::CsrBatch<T> Xfirst = X0;
            Xfirst.rows = idx;
            sparse::prefetch_row_parts(Xfirst, 0, B, tid, nt);
            for (std::int64_t s = 0; s < n_steps; ++s) {
                if (lrs) h[kLr] = lrs[s];
                const double lr = h[kLr];
                sparse::CsrBatch<T> X = X0;
                X.rows = idx + s * B;
                // The next batch's rows (scattered over a large array: each starts with a miss to memory)
                // a whole step ahead, in four parts spread over the step (all at once, most of the
                // prefetches would find no free fill buffer), each thread its share of every row;
                // thread 0 their targets.
                sparse::CsrBatch<T> Xn = X0;
                Xn.rows = idx + (s + 1) * B;
                const bool ahead = s + 1 < n_steps;
                auto fetch = [&](int q) {
                    if (ahead) sparse::prefetch_row_parts(Xn, B * q / 4, B * (q + 1) / 4, tid, nt);
                };
                fetch(0);
                if (tid == 0 && ahead)
                    for (std::int64_t r = 0; r < B; ++r) sparse::prefetch_lines(Tt + Xn.rows[r] * c, sizeof(T) * c);
                // A non-finite W0 makes the dense step's loss NaN (0 * inf): stop there too, not skip it.
                if (!sparse::all_finite(Wk + k0 * ldw, (k1 - k0) * ldw)) stop = true;
                try {  // this band's part of z0 = x W0
                    bands_[tid].build_band(X, n0, k0, k1);  // (for the update; its spans serve here)
                    fetch(1);
                    // Row by row over each row's run in the band, W0's rows summed in registers: each
                    // row of Zt written once (by column, every nonzero read and wrote a row of Zt:
                    // 784-100-10 MNIST epoch ~15% slower).
                    const std::int64_t* sp = bands_[tid].span.data();
                    for (std::int64_t r = 0; r < B; ++r)
                        sparse::csr_forward_one(X.ind + sp[2 * r], X.val + sp[2 * r], sp[2 * r + 1] - sp[2 * r],
                                                Wk, ldw, Zt + r * ldp, n1);
                    fetch(2);
                } catch (...) {
                    if (tid == 0) err_build = std::current_exception();  // (allocation: every thread's fails alike)
                    stop = true;
                }
#ifdef _OPENMP
#pragma omp barrier
#endif
                if (split_dense) {
                    // Each thread its rows of the dense part (its own part Mlp); thread 0 then adds the
                    // parts' gradients of the layers after W0 in part order and updates those layers.
                    if (!stop) {
                        const std::int64_t r0 = B * tid / nt, r1 = B * (tid + 1) / nt;
                        try {
                            part_loss[static_cast<size_t>(tid)] = parts_[static_cast<size_t>(tid)]->dense_rows(
                                theta, X, Zp, ldp, nt, B, r0, r1, Tt, tb_.data(), tid == 0 ? wd : 0.0, Wk, ldw,
                                tid == 0 ? g_.data() : part_g_.data() + static_cast<size_t>(tid - 1) * n_params_,
                                Dp, sgd ? static_cast<T>(-lr) : T(1));
                        } catch (...) {
#ifdef _OPENMP
#pragma omp critical(pfg_csr_err)
#endif
                            if (!err_dense) err_dense = std::current_exception();
                            stop = true;
                        }
                    }
#ifdef _OPENMP
#pragma omp barrier
#endif
                    // Every thread reads the same flags and losses here: they all stop, or none.
                    if (stop) break;
                    double l = 0.0;
                    for (int p = 0; p < nt; ++p) l += part_loss[static_cast<size_t>(p)];
                    if (!loss_finite(l)) break;
                    if (tid == 0) {
                        losses[s] = l;
                        done = s + 1;
                        const std::int64_t o = boff_[0];
                        T* g = g_.data();
                        for (int p = 1; p < nt; ++p) {
                            const T* gp = part_g_.data() + static_cast<size_t>(p - 1) * n_params_;
                            for (std::int64_t i = o; i < n_params_; ++i) g[i] += gp[i];
                        }
                        if (!(max_norm > 0.0))  // (with clipping, the whole-theta update below)
                            update_at(o, g + o, n_params_ - o, step0 + s + 1);
                    }
                } else {
                    if (tid == 0 && !stop) {
                        try {
                            if (dense_part_csr(theta, X, Zp, ldp, nt, z0, Tt, B, wd, sgd, lr, Wk, ldw, Dp,
                                               losses + s)) {
                                done = s + 1;
                                // the layers after W0 (the bands do W0; fused SGD did them in the backward)
                                if (!sgd && !(max_norm > 0.0))
                                    update_at(boff_[0], g_.data() + boff_[0], n_params_ - boff_[0], step0 + s + 1);
                            } else {
                                stop = true;
                            }
                        } catch (...) {
                            err_dense = std::current_exception();
                            stop = true;
                        }
                    }
#ifdef _OPENMP
#pragma omp barrier
#endif
                    if (stop) break;
                }
                fetch(3);
                sparse::UpdateSpec<T> u{&bands_[tid], k0, k1, true, T(0), nullptr, 0, Dp, ldp, nullptr, 0};
                if (sgd) {  // W0 <- (1 - lr wd) W0 + X^T (-lr dZ), as the dense path's gemm
                    u.beta = static_cast<T>(1.0 - lr * wd);
                    u.all_rows = wd != 0.0;
                    u.S = u.Y = Wk;
                    u.lds = u.ldy = ldw;
                    sparse::csc_update(u, 0, n1);
                    // Each thread reads back only the rows of W0 it wrote: no barrier before the next step.
                } else if (!(max_norm > 0.0)) {
                    // Each thread's band of W0 in chunks: g's rows (X^T dZ + wd W0) into a small buffer
                    // that stays in L1, the optimizer on those rows at once. No whole-theta pass, no
                    // barrier: thread 0 updated the layers after W0 in the dense part.
                    u.beta = static_cast<T>(wd);
                    u.S = W0;
                    u.lds = n1;
                    u.Y = gch;
                    u.ldy = n1;
                    for (std::int64_t i = k0; i < k1; i += kOptChunk) {
                        u.i0 = u.y0 = i;
                        u.i1 = std::min(i + kOptChunk, k1);
                        sparse::csc_update(u, 0, n1);
                        update_at(woff_[0] + i * n1, gch, (u.i1 - i) * n1, step0 + s + 1);
                    }
                } else {  // g0 = X^T dZ + wd W0, then clipping and the optimizer over all of theta
                    u.beta = static_cast<T>(wd);
                    u.S = W0;
                    u.lds = n1;
                    u.Y = g_.data() + woff_[0];
                    u.ldy = n1;
                    sparse::csc_update(u, 0, n1);
#ifdef _OPENMP
#pragma omp barrier
#endif
                    if (max_norm > 0.0) {  // the norm needs the whole gradient: one thread, then all
                        if (tid == 0) clip_grad(g_.data(), n_params_, max_norm);
#ifdef _OPENMP
#pragma omp barrier
#endif
                    }
                    const std::int64_t q0 = n_params_ * tid / nt, q1 = n_params_ * (tid + 1) / nt;
                    update_at(q0, g_.data() + q0, q1 - q0, step0 + s + 1);
#ifdef _OPENMP
#pragma omp barrier
#endif
                }
            }
        }
        if (sgd)
            for (std::int64_t i = 0; i < n0; ++i) std::memcpy(W0 + i * n1, Wk + i * ldp, sizeof(T) * n1);
        if (err_dense) std::rethrow_exception(err_dense);
        if (err_build) std::rethrow_exception(err_build);
        for (std::int64_t r = done; r < n_steps; ++r) losses[r] = std::numeric_limits<double>::quiet_NaN();
        return done;
    }

private:
    static constexpr std::int64_t kMinPartRows = 16;
    static constexpr std::int64_t kOptChunk = 16;  // W0 rows per optimizer chunk in train_steps_csr

    // How many parts loss_grad splits n rows into: 1 for a small call (or inside a part), else the
    // configured OpenMP threads (up to 8, >= kMinPartRows rows each). The count follows the settings,
    // not the load, so the sums' order and the result do not change when a busy machine shrinks the
    // team (its threads then take several parts each).
    int split_parts(std::int64_t n) const {
#ifdef _OPENMP
        if (in_part_ || n < 2 * kMinPartRows) return 1;
        const int want = std::min(omp_get_max_threads(), 8);
        if (want < 2) return 1;
        double dense = 0.0;  // the layers after the first, per row
        for (int l = 1; l < L_; ++l) dense += double(sizes_[l]) * double(sizes_[l + 1]);
        // (the first layer at a fifth: about its sparse kernels' work on MNIST-like input)
        const double work = 3.0 * double(n) * (dense + double(sizes_[0]) * double(sizes_[1]) / 5.0);
        if (work < call_work().split) return 1;
        return static_cast<int>(std::min<std::int64_t>(want, n / kMinPartRows));
#else
        (void)n;
        return 1;
#endif
    }

    // loss_grad with the rows in `parts` parts, part p run by its own Mlp (parts_[p], one thread, OpenBLAS on
    // one thread inside) on a team of threads: one fork/join per call. Part 0's gradient (with the weight
    // decay) lands in grad, the others' in part_g_, summed into grad in part order.
    template <class X>
    double loss_grad_split(const T* theta, const X* x, const T* t, std::int64_t n, double wd, T* grad, int sparse,
                           int parts) {
        const std::int64_t n0 = sizes_.front(), c = sizes_.back();
        while (static_cast<int>(parts_.size()) < parts) {
            parts_.push_back(std::make_unique<Mlp<T>>(sizes_, act_, loss_));
            parts_.back()->in_part_ = true;
        }
        const size_t extra = static_cast<size_t>(parts - 1) * static_cast<size_t>(n_params_);
        if (part_g_.size() < extra) part_g_.resize(extra);
        std::vector<double> part_loss(static_cast<size_t>(parts), 0.0);
        const int nth = std::max(1, std::min(parts, team_threads()));
        const BlasCap blas_guard(1);
        std::exception_ptr err;
        std::atomic<bool> failed{false};
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) if (nth > 1)
#endif
        {
            const int tid = team_thread(), nt = team_size();
            for (int p = tid; p < parts && !failed.load(); p += nt) {
                const std::int64_t r0 = n * p / parts, r1 = n * (p + 1) / parts;
                Mlp<T>& m = *parts_[static_cast<size_t>(p)];
                m.n_total_ = double(n);
                try {
                    part_loss[static_cast<size_t>(p)] =
                        m.loss_grad(theta, x + r0 * n0, t + r0 * c, r1 - r0, p == 0 ? wd : 0.0,
                                    p == 0 ? grad : part_g_.data() + static_cast<size_t>(p - 1) * n_params_, sparse);
                } catch (...) {
#ifdef _OPENMP
#pragma omp critical(pfg_split_err)
#endif
                    if (!err) err = std::current_exception();
                    failed = true;
                }
            }
#ifdef _OPENMP
#pragma omp barrier
#endif
            // Each thread sums its slice of the parameters (the slices opt_update's team takes next, so
            // each finds its slice of the gradient in its own core's cache).
            if (!failed.load()) {
                const std::int64_t q0 = n_params_ * tid / nt, q1 = n_params_ * (tid + 1) / nt;
                for (int p = 1; p < parts; ++p) {
                    const T* g = part_g_.data() + static_cast<size_t>(p - 1) * n_params_;
#pragma omp simd
                    for (std::int64_t i = q0; i < q1; ++i) grad[i] += g[i];
                }
            }
        }
        if (nth > 1) team_done();
        if (err) std::rethrow_exception(err);
        double l = 0.0;
        for (double v : part_loss) l += v;
        return l;
    }

    // Plain SGD without clipping or decoupled weight decay folds its update into the backward gemms.
    static bool fuses_sgd(Opt opt, const double* hyper) {
        return opt == Opt::Sgd && !(hyper[kMaxNorm] > 0.0) && hyper[kWd] == 0.0;
    }

    // One step's work after the first layer's product (train_steps_csr, thread 0): the sum of the
    // nparts parts of layer 0's product (sum_parts), its bias and activation, the dense layers, the
    // loss into *loss_out, and the backward pass down to dL/dz of layer 0, into Dp for the sparse
    // update of W0 (times -lr for fused plain SGD (sgd), which also updates the dense layers and b0 here).
    // Returns false (nothing updated) when the loss is not finite.
    bool dense_part_csr(T* theta, const sparse::CsrBatch<T>& X, const T* Zp, std::int64_t ldp, int nparts, T* z0,
                        const T* Tt, std::int64_t B, double wd, bool sgd, double lr, const T* Wk, std::int64_t ldw,
                        T* Dp, double* loss_out) {
        const std::int64_t n1 = sizes_[1];
        T* g = g_.data();
        const T* tb = csr_dense_forward(theta, X, Zp, ldp, nparts, B, 0, B, Tt, tb_.data(), z0);
        const double l = loss_dz(theta, tb, B, wd, g, Wk, ldw);
        if (!loss_finite(l)) return false;
        *loss_out = l;
        const T* dz;
        if (sgd) {
            dz = backward_sgd(theta, nullptr, B, wd, g, lr, 1);
            T* b0 = theta + boff_[0];
            const T* db = g + boff_[0];
            for (std::int64_t j = 0; j < n1; ++j) b0[j] -= static_cast<T>(lr) * db[j];
        } else {
            dz = backward(theta, nullptr, B, wd, g, 1);
        }
        // Plain SGD's update of W0 is W0 + X^T Dp: the step -lr goes into Dp here.
        scaled_dz(dz, 0, B, sgd ? static_cast<T>(-lr) : T(1), Dp, ldp);
        return true;
    }

    // Rows [r0, r1) of a CSR step's dense part on a part Mlp (train_steps_csr with the dense part split):
    // z0's rows from the bands' parts (Zp, B rows each), bias and activation, the dense layers, the loss
    // of these rows (their share of the mean over B), backprop to dL/dz of layer 0 (times scale) into
    // Dp's rows, the gradient of the layers from b0 on into g (wd: part 0's only). Returns the loss share.
    double dense_rows(const T* theta, const sparse::CsrBatch<T>& X, const T* Zp, std::int64_t ldp, int nparts,
                      std::int64_t B, std::int64_t r0, std::int64_t r1, const T* Tt, T* tb, double wd, const T* Wk,
                      std::int64_t ldw, T* g, T* Dp, T scale) {
        const std::int64_t rows = r1 - r0;
        reserve(rows);
        n_total_ = double(B);
        T* z0 = (L_ == 1) ? zl_.data() : acts_[0].data();
        const T* t = csr_dense_forward(theta, X, Zp, ldp, nparts, B, r0, r1, Tt, tb, z0);
        const double l = loss_dz(theta, t, rows, wd, g, Wk, ldw);
        scaled_dz(backward(theta, nullptr, rows, wd, g, 1), r0, r1, scale, Dp, ldp);
        return l;
    }

    // Rows [r0, r1) of a CSR step up to the logits: z0's rows (into z0) from the bands' nparts parts of
    // layer 0's product (Zp, B rows each), bias and activation, the dense layers (into zl_); the rows'
    // targets gathered into tb's rows [r0, r1), which it returns.
    const T* csr_dense_forward(const T* theta, const sparse::CsrBatch<T>& X, const T* Zp, std::int64_t ldp,
                               int nparts, std::int64_t B, std::int64_t r0, std::int64_t r1, const T* Tt, T* tb,
                               T* z0) {
        const std::int64_t rows = r1 - r0, n1 = sizes_[1], c = sizes_.back();
        sum_parts(Zp + r0 * ldp, ldp, nparts, rows, z0, B * ldp);
        T* t = tb + r0 * c;
        for (std::int64_t r = 0; r < rows; ++r) std::memcpy(t + r * c, Tt + X.rows[r0 + r] * c, sizeof(T) * c);
        if (L_ > 1) {
            bias_activation(act_, z0, theta + boff_[0], rows, n1);
            forward(theta, z0, rows, zl_.data(), 1);
        }
        return t;
    }

    // Dp's rows [r0, r1) (padded to ldp) = scale dz (r1 - r0 rows of dL/dz of layer 0).
    void scaled_dz(const T* dz, std::int64_t r0, std::int64_t r1, T scale, T* Dp, std::int64_t ldp) const {
        const std::int64_t n1 = sizes_[1];
        for (std::int64_t r = 0; r < r1 - r0; ++r) {
            T* d = Dp + (r0 + r) * ldp;
            const T* dr = dz + r * n1;
            for (std::int64_t j = 0; j < n1; ++j) d[j] = scale * dr[j];
        }
    }

    // x itself when it is of type T, else a widened copy in xcast_ (grow-only: a new buffer per call
    // would page-fault).
    template <class X>
    const T* as_t(const X* x, std::int64_t count) {
        return as_type<T>(x, count, xcast_);
    }

    // loss_grad_sparse on one thread (small batches): x's nonzeros compressed once into CSR rows
    // (rows.hpp), the first layer's product from them row by row (W0's rows summed in registers, no
    // read-modify-write of z), and dW0 from the same nonzeros regrouped by column. Returns false as
    // loss_grad_sparse does.
    template <class X>
    bool loss_grad_rows(const T* theta, const X* x, const T* t, std::int64_t n, double wd, T* grad,
                        double* loss_out) {
        const std::int64_t n0 = sizes_.front(), n1 = sizes_[1];
        const T* W0 = theta + woff_[0];
        if (!sparse::all_finite(W0, n0 * n1)) return false;
        const size_t room = static_cast<size_t>(n * n0 + sparse::kRowSlack);
        if (csr_ptr_.size() < static_cast<size_t>(n + 1)) csr_ptr_.resize(static_cast<size_t>(n + 1));
        if (csr_ind_.size() < room) csr_ind_.resize(room);
        if (csr_val_.size() < room) csr_val_.resize(room);
        sparse::rows_compress(x, n, n0, csr_ptr_.data(), csr_ind_.data(), csr_val_.data());
        T* z0 = (L_ == 1) ? zl_.data() : acts_[0].data();
        sparse::csr_forward(csr_ptr_.data(), csr_ind_.data(), csr_val_.data(), n, W0, n1, z0, n1, n1);
        if (L_ > 1) {
            bias_activation(act_, z0, theta + boff_[0], n, n1);
            forward(theta, z0, n, zl_.data(), 1);
        }
        const double l = loss_dz(theta, t, n, wd, grad);
        if (!loss_finite(l)) return false;
        const T* dz = backward(theta, nullptr, n, wd, grad, 1);
        if (!sparse::all_finite(dz, n * n1)) return false;
        const std::int64_t ldp = sparse::padded_ld<T>(n1);
        T* Dp = dp_.get(n * ldp);  // 64-byte-aligned rows for the update's loads
        for (std::int64_t r = 0; r < n; ++r) std::memcpy(Dp + r * ldp, dz + r * n1, sizeof(T) * n1);
        if (row_ids_.size() < static_cast<size_t>(n)) {
            row_ids_.resize(static_cast<size_t>(n));
            for (std::int64_t r = 0; r < n; ++r) row_ids_[r] = r;
        }
        if (bands_.empty()) bands_.resize(1);
        const sparse::CsrBatch<T> X0{row_ids_.data(), n, csr_ptr_.data(), csr_ind_.data(), csr_val_.data()};
        bands_[0].build_band(X0, n0, 0, n0);
        sparse::UpdateSpec<T> u{&bands_[0], 0, n0, true, static_cast<T>(wd), W0, n1, Dp, ldp, grad + woff_[0], n1};
        sparse::csc_update(u, 0, n1);
        *loss_out = l;
        return true;
    }

    // Whether loss_grad should run the first layer on x's nonzeros: decided from a sample of up to 16
    // rows spread over the batch, whose column counts (col_nnz_) also set the threads' bands. Needs
    // n0 >= 32 to pay off.
    template <class X>
    bool use_sparse_input(const X* x, std::int64_t n, bool force) {
        const std::int64_t n0 = sizes_.front();
        if (n * n0 > std::int64_t(INT_MAX)) return false;  // int32 CSC offsets
        if (!force && n0 < 32) return false;
        const std::int64_t s = std::min<std::int64_t>(n, 16);
        col_nnz_.assign(static_cast<size_t>(n0), 0);
        for (std::int64_t i = 0; i < s; ++i) sparse::count_band(x + (i * n / s) * n0, 1, n0, 0, n0, col_nnz_.data());
        std::int64_t nnz = 0;
        for (std::int64_t k = 0; k < n0; ++k) nnz += col_nnz_[k];
        return force || double(nnz) <= kSparseDensity * double(s * n0);
    }

    // predict/loss's first layer on x's nonzeros (rows.hpp) on this many threads, or 0 for the dense
    // product: x mostly zeros (a sample of rows, as loss_grad decides) and W0 finite (a skipped
    // 0 * inf must stay NaN).
    template <class X>
    int rows_threads(const T* theta, const X* x, std::int64_t n) {
        const std::int64_t n0 = sizes_.front(), n1 = sizes_[1];
        if (n0 < 32) return 0;
        std::int64_t s = 0;
        const std::int64_t nnz = sparse::sampled_nonzeros(x, n, n0, &s);
        if (double(nnz) > kSparseDensity * double(s * n0)) return 0;
        if (!sparse::all_finite(theta + woff_[0], n0 * n1)) return 0;
        double dense = 0.0;  // the layers after the first, per row
        for (int l = 1; l < L_; ++l) dense += double(sizes_[l]) * double(sizes_[l + 1]);
        const double work = double(n) * (double(nnz) / double(s) * double(n1) + dense);
        if (in_part_ || work < call_work().rows || (work < call_work().sparse && !team_awake())) return 1;
        return std::max(1, static_cast<int>(std::min<std::int64_t>({team_threads(), n0 / 16, 8})));
    }

    // W0 for predict/loss's row-by-row sparse products, its rows on 64-byte lines (*ldw: its row stride): theta's W0
    // when they already are, else (calls of >= 32 rows) a padded copy. A row split over lines costs two
    // accesses per vector: 60,000 MNIST images through 784-50-10 float64, 62 -> 50 ms; loss of 100 rows,
    // 183 -> 164 us; fit's 10,000-image evaluation (784-100-10 float32, CSR), 8.9 -> 6.7 ms (copy included).
    // Not in loss_grad_rows: a gradient of 100 rows measured the same with and without it.
    const T* aligned_w0(const T* theta, std::int64_t rows, std::int64_t& ldw) {
        const std::int64_t n0 = sizes_.front(), n1 = sizes_[1];
        const T* W0 = theta + woff_[0];
        ldw = n1;
        if (rows < 32 || (n1 % sparse::line_elems<T>() == 0 && reinterpret_cast<std::uintptr_t>(W0) % 64 == 0))
            return W0;
        ldw = sparse::padded_ld<T>(n1);
        T* w = w0f_.get(n0 * ldw);
        for (std::int64_t i = 0; i < n0; ++i) std::memcpy(w + i * ldw, W0 + i * n1, sizeof(T) * n1);
        return w;
    }

    // forward() from x of type X: the first layer on x's nonzeros when nth_rows > 0, else the gemms
    // (a float x of a double net through a cast copy).
    // With a team (nth_rows > 1) the threads split the rows and each runs every layer on its own rows,
    // OpenBLAS on one thread inside: one set of threads per call, no OpenBLAS pool left spinning
    // against the team (and deep nets' dense layers are shared out too).
    template <class X>
    void forward_in(const T* theta, const X* x, std::int64_t rows, T* zl, int nth_rows) {
        const std::int64_t n0 = sizes_.front(), n1 = sizes_[1], c = sizes_.back();
        if (nth_rows > 0) {
            const int nth = static_cast<int>(std::min<std::int64_t>(nth_rows, rows));
            std::int64_t ldf;
            const T* Wf = aligned_w0(theta, rows, ldf);
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) if (nth > 1)
#endif
            {
                const int tid = team_thread(), nt = team_size();
                const std::int64_t r0 = rows * tid / nt, r1 = rows * (tid + 1) / nt;
                if (r1 > r0) {
                    T* z0 = (L_ == 1) ? zl + r0 * n1 : acts_[0].data() + r0 * n1;
                    sparse::rows_forward(x + r0 * n0, r1 - r0, n0, Wf, ldf, z0, n1, n1, 1);
                    if (L_ > 1) {
                        bias_activation(act_, z0, theta + boff_[0], r1 - r0, n1);
                        forward(theta, z0, r1 - r0, zl + r0 * c, 1, r0);
                    }
                }
            }
            if (nth > 1) team_done();
        } else {
            forward(theta, as_t(x, rows * n0), rows, zl);
        }
    }

    // Threads for a sparse first layer of `work` multiply-adds: one below kCsrParallelWork, else up to
    // 8, each band at least 16 columns wide.
    // OpenBLAS threads for a call of `passes` dense passes over n rows: one when it is small, else the
    // free cores.
    int blas_threads(std::int64_t n, int passes) const {
        if (in_part_) return 1;
        return blas_threads_for(double(n) * double(passes) * double(n_params_));
    }
    static int blas_threads_free() { return FreeCores::get().of(blas_num_threads()); }

    int sparse_threads(double work, bool one_call) const {
        int nth = 1;
#ifdef _OPENMP
        if (!in_part_ && work >= (one_call ? call_work().sparse : kCsrParallelWork))
            nth = static_cast<int>(std::min<std::int64_t>({team_threads(), sizes_.front() / 16, 8}));
#else
        (void)work;
#endif
        return std::max(nth, 1);
    }

    // band_ = nb bands of x's columns with about equal nonzeros by col_nnz_ (an image's middle rows
    // hold most of them).
    void set_bands(int nb) {
        const std::int64_t n0 = sizes_.front();
        band_.assign(static_cast<size_t>(nb) + 1, n0);
        band_[0] = 0;
        std::int64_t total = 0, run = 0;
        for (std::int64_t k = 0; k < n0; ++k) total += col_nnz_[k];
        int b = 1;
        for (std::int64_t k = 0; k < n0 && b < nb; ++k) {
            run += col_nnz_[k];
            while (b < nb && run * nb >= total * b) band_[b++] = k + 1;
        }
    }

    // The float32 reference computes the loss in float32: overflow there counts as not finite too.
    static bool loss_finite(double l) { return std::isfinite(l) && std::isfinite(static_cast<T>(l)); }

    // z0 (rows x n1) = the sum of the nparts parts of layer 0's product at Zp, Zp + stride, ... (one per
    // thread band, rows padded to ldp; stride 0: rows ldp).
    void sum_parts(const T* Zp, std::int64_t ldp, int nparts, std::int64_t rows, T* z0,
                   std::int64_t stride = 0) const {
        const std::int64_t n1 = sizes_[1];
        if (stride == 0) stride = rows * ldp;
        for (std::int64_t r = 0; r < rows; ++r) {
            T* zr = z0 + r * n1;
            std::memcpy(zr, Zp + r * ldp, sizeof(T) * n1);
            for (int u = 1; u < nparts; ++u) {
                const T* zu = Zp + u * stride + r * ldp;
                for (std::int64_t j = 0; j < n1; ++j) zr[j] += zu[j];
            }
        }
    }

    // loss_grad with the first layer on x's nonzeros. Threads split x's columns (and so W0's rows) in
    // bands and share nothing until the sums: each regroups its band by column (its own Csc), adds
    // its band's part of z0 = x W0 into its own buffer, and after thread 0 has summed those and run
    // the dense layers and the loss, writes its rows of dW0 = x^T dZ0 (+ wd W0).
    // Returns false (grad undefined) if W0, the loss or dL/dz of layer 0 is not finite: skipping zeros
    // would hide a 0 * inf there.
    bool loss_grad_sparse(const T* theta, const T* x, const T* t, std::int64_t n, double wd, T* grad,
                          double* loss_out, int nth) {
        const std::int64_t n0 = sizes_.front(), n1 = sizes_[1];
        const std::int64_t ldp = sparse::padded_ld<T>(n1);
        T* Zp = zp_.get(nth * n * ldp);  // thread t's part of z0 at Zp + t n ldp
        T* Dp = dp_.get(n * ldp);
        const T* W0 = theta + woff_[0];
        T* z0 = (L_ == 1) ? zl_.data() : acts_[0].data();
        if (static_cast<int>(bands_.size()) < nth) bands_.resize(static_cast<size_t>(nth));
        set_bands(nth);
        const BlasCap blas_guard(nth > 1 ? 1 : blas_threads_free());  // small gemms run inside our threads
        bool ok = false;
        std::exception_ptr err;
        std::atomic<bool> failed{false}, w0_bad{false};
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) if (nth > 1)
#endif
        {
            const int tid = team_thread(), nt = team_size();
            const std::int64_t k0 = band_[tid], k1 = band_[tid + 1];
            T* Zt = Zp + tid * n * ldp;
            std::fill(Zt, Zt + n * ldp, T(0));
            if (!sparse::all_finite(W0 + k0 * n1, (k1 - k0) * n1)) w0_bad = true;
            try {
                bands_[tid].build_dense(x, n, n0, k0, k1);
                sparse::csc_forward(bands_[tid], W0, n1, Zt, ldp, 0, n1);
            } catch (...) {  // (only allocation can fail)
                failed = true;
            }
#ifdef _OPENMP
#pragma omp barrier
#endif
            if (tid == 0 && !failed && !w0_bad) {
                try {
                    sum_parts(Zp, ldp, nt, n, z0);
                    if (L_ > 1) {
                        bias_activation(act_, z0, theta + boff_[0], n, n1);
                        forward(theta, z0, n, zl_.data(), 1);
                    }
                    const double l = loss_dz(theta, t, n, wd, grad);
                    if (loss_finite(l)) {
                        const T* dz = backward(theta, nullptr, n, wd, grad, 1);
                        for (std::int64_t r = 0; r < n; ++r) std::memcpy(Dp + r * ldp, dz + r * n1, sizeof(T) * n1);
                        ok = sparse::all_finite(dz, n * n1);
                        *loss_out = l;
                    }
                } catch (...) {
                    err = std::current_exception();
                }
            }
#ifdef _OPENMP
#pragma omp barrier
#endif
            if (ok && !err) {
                sparse::UpdateSpec<T> u{&bands_[tid], k0, k1, true, static_cast<T>(wd), W0, n1, Dp, ldp,
                                        grad + woff_[0], n1};
                sparse::csc_update(u, 0, n1);
            }
        }
        if (err) std::rethrow_exception(err);
        if (failed) throw std::bad_alloc();
        return ok;
    }

    // Every CSR row a step will read must be well formed before anything is touched: indptr
    // non-decreasing inside [0, nnz], and the column indices of the rows idx names strictly increasing
    // inside [0, n0). Only those rows are scanned (O(nnz of the batches), not O(nnz of X)).
    // Returns the largest number of nonzeros in one batch. rows_checked: the caller vouches for every
    // row's column indices (a CSR it built and froze, checked once), so only indptr and idx are checked:
    // the scan of each batch row's indices is a cache miss per row, ~15% of an MNIST epoch.
    std::int64_t check_csr(const std::int64_t* indptr, const std::int32_t* ind, std::int64_t nx, std::int64_t nnz,
                           const std::int64_t* idx, std::int64_t n_steps, std::int64_t B,
                           bool rows_checked, const char* what = "train_steps") const {
        const std::string w = std::string(what) + ": ";
        if (nx < 0 || nnz < 0) throw std::invalid_argument(w + "bad CSR sizes");
        if (indptr[0] < 0 || indptr[nx] > nnz)
            throw std::invalid_argument(w + "CSR indptr must start >= 0 and end <= nnz (" +
                                        std::to_string(nnz) + "), got " + std::to_string(indptr[0]) + " .. " +
                                        std::to_string(indptr[nx]));
        for (std::int64_t r = 0; r < nx; ++r)
            if (indptr[r + 1] < indptr[r])
                throw std::invalid_argument(w + "CSR indptr decreases at row " + std::to_string(r));
        const std::int64_t n0 = sizes_.front();
        std::int64_t max_nnz = 0;
        for (std::int64_t s = 0; s < n_steps; ++s) {
            std::int64_t step_nnz = 0;
            for (std::int64_t k = s * B; k < (s + 1) * B; ++k) {
                const std::int64_t row = idx[k];
                if (row < 0 || row >= nx)
                    throw std::invalid_argument(w + "idx[" + std::to_string(k / B) + ", " +
                                                std::to_string(k % B) + "] = " + std::to_string(row) +
                                                " is out of range [0, " + std::to_string(nx) + ")");
                const std::int64_t p0 = indptr[row], p1 = indptr[row + 1];
                step_nnz += p1 - p0;
                if (p1 == p0 || rows_checked) continue;
                // Strictly increasing and inside [0, n0): the first >= 0, each step > 0, the last < n0.
                // (Branch-free over the row so that the loop vectorises.)
                std::int32_t bad = 0;
                for (std::int64_t p = p0 + 1; p < p1; ++p) bad |= ind[p] <= ind[p - 1];
                if (bad || ind[p0] < 0 || ind[p1 - 1] >= n0)
                    throw std::invalid_argument(w + "CSR row " + std::to_string(row) +
                                                " has column indices that are not strictly increasing "
                                                "inside [0, " + std::to_string(n0) + ")");
            }
            if (step_nnz > INT_MAX)
                throw std::invalid_argument(w + "more than 2^31-1 nonzeros in one batch");
            max_nnz = std::max(max_nnz, step_nnz);
        }
        return max_nnz;
    }

    // Pull the next batch's rows toward the cache while the BLAS threads run this step's gemms:
    // the gather from a large data set is otherwise a DRAM-latency-bound copy.
    // (Prefetch instructions, not sparse::prefetch_lines' loads: here the loads would stall the thread
    // that also runs BLAS; measured ~3% slower.)
    static void prefetch_rows(const T* X, const std::int64_t* rows, std::int64_t B, std::int64_t n0) {
#if defined(__GNUC__)
        const std::int64_t per_line = 64 / static_cast<std::int64_t>(sizeof(T));
        for (std::int64_t r = 0; r < B; ++r) {
            const T* row = X + rows[r] * n0;
            for (std::int64_t i = 0; i < n0; i += per_line) __builtin_prefetch(row + i, 0, 2);
        }
#else
        (void)X; (void)rows; (void)B; (void)n0;
#endif
    }

    // The arguments both train_steps loops check first; false when there is no step to run.
    static bool check_steps(std::int64_t n_steps, std::int64_t B, Opt opt, std::int64_t step0) {
        if (n_steps < 0) throw std::invalid_argument("train_steps: n_steps must be >= 0");
        if (n_steps == 0) return false;
        need_rows(B);
        if (B > INT_MAX) throw std::invalid_argument("train_steps: batch too large for BLAS");
        if (opt_is_adam(opt) && step0 < 0)
            throw std::invalid_argument("train_steps: step0 must be >= 0 for adam, got " + std::to_string(step0));
        return true;
    }

    static void need_rows(std::int64_t n) {
        if (n < 1) throw std::invalid_argument("the batch must have at least 1 row, got " + std::to_string(n));
    }

    std::int64_t chunk_rows(std::int64_t n) const { return std::min(n, std::max(cap_, kChunkRows)); }

    // Scratch for `rows` rows; grows only.
    void reserve(std::int64_t rows) {
        if (rows <= cap_) return;
        for (int l = 0; l + 1 < L_; ++l) acts_[l].resize(rows * sizes_[l + 1]);
        zl_.resize(rows * sizes_.back());
        if (L_ > 1) {
            d0_.resize(rows * max_hidden_);
            d1_.resize(rows * max_hidden_);
        }
        cap_ = rows;
    }

    // w0/ld0: layer 0's W when it lives outside theta (train_steps_csr's padded copy).
    double decay_term(const T* theta, double wd, const T* w0 = nullptr, std::int64_t ld0 = 0) const {
        if (wd == 0.0) return 0.0;
        double s = 0.0;
        for (int l = 0; l < L_; ++l) {
            const std::int64_t rows = sizes_[l], n = sizes_[l + 1];
            const bool own = l == 0 && w0 != nullptr;
            const T* w = own ? w0 : theta + woff_[l];
            const std::int64_t ld = own ? ld0 : n;
            double sl = 0.0;
            for (std::int64_t i = 0; i < rows; ++i) {
                const T* wr = w + i * ld;
                // Reordered into vector lanes: one serial chain of double adds costs 4 cycles per entry.
#pragma omp simd reduction(+ : sl)
                for (std::int64_t j = 0; j < n; ++j) sl += double(wr[j] * wr[j]);
            }
            s += 0.5 * wd * sl;
        }
        return s;
    }

    // Hidden activations into acts_, last layer's x.W (no bias) into zl (rows x nL). x is the input of
    // layer l0 (the data for l0 = 0, acts_[l0 - 1] when the layers before were done elsewhere).
    // row_off: these rows start at row row_off of the scratch activations (a thread's share of them).
    void forward(const T* theta, const T* x, std::int64_t rows, T* zl, int l0 = 0, std::int64_t row_off = 0) {
        const T* a = x;
        const int m = static_cast<int>(rows);
        for (int l = l0; l < L_; ++l) {
            const int k = static_cast<int>(sizes_[l]), n = static_cast<int>(sizes_[l + 1]);
            T* z = (l == L_ - 1) ? zl : acts_[l].data() + row_off * n;
            gemm(false, false, m, n, k, T(1), a, k, theta + woff_[l], n, T(0), z, n);
            if (l < L_ - 1) bias_activation(act_, z, theta + boff_[l], rows, n);
            a = z;
        }
    }

    // Forward + loss; leaves dL/dz of the last layer in zl_ and its bias gradient in grad.
    double forward_loss_dz(const T* theta, const T* x, const T* t, std::int64_t n, double wd, T* grad) {
        forward(theta, x, n, zl_.data());
        return loss_dz(theta, t, n, wd, grad);
    }

    // The loss part of forward_loss_dz, on the logits (without bias) already in zl_.
    double loss_dz(const T* theta, const T* t, std::int64_t n, double wd, T* grad, const T* w0 = nullptr,
                   std::int64_t ld0 = 0) {
        const std::int64_t c = sizes_.back();
        const double nd = n_total_ > 0.0 ? n_total_ : double(n);  // (a part of loss_grad_split's rows)
        T* db = grad + boff_[L_ - 1];
        std::fill(db, db + c, T(0));
        const double s = output_layer(loss_, zl_.data(), theta + boff_[L_ - 1], t, n, c, true, static_cast<T>(nd), db);
        return s / nd + decay_term(theta, wd, w0, ld0);
    }

    // Backprop from dL/dz of the last layer (in zl_) into grad; the input layer's dX is skipped.
    // With l_stop = 1 layer 0's dW is left to the caller (sparse input): returns dL/dz of layer 0
    // (and layer 0's bias gradient is in grad already).
    T* backward(const T* theta, const T* x, std::int64_t rows, double wd, T* grad, int l_stop = 0) {
        const int m = static_cast<int>(rows);
        T* dz = zl_.data();
        T* bufs[2] = {d0_.data(), d1_.data()};
        int which = 0;
        for (int l = L_ - 1; l >= l_stop; --l) {
            const int k = static_cast<int>(sizes_[l]), n = static_cast<int>(sizes_[l + 1]);
            const T* a_in = (l == 0) ? x : acts_[l - 1].data();
            const T* w = theta + woff_[l];
            T* dw = grad + woff_[l];
            T beta = T(0);
            if (wd != 0.0) {  // dW = A^T dZ + wd * W in the gemm itself (beta = wd, C = W)
                std::memcpy(dw, w, sizeof(T) * static_cast<size_t>(k) * n);
                beta = T(wd);
            }
            gemm(true, false, k, n, m, T(1), a_in, k, dz, n, beta, dw, n);
            if (l > 0) {
                T* da = bufs[which];
                which ^= 1;
                gemm(false, true, m, k, n, T(1), dz, n, w, n, T(0), da, k);
                T* db = grad + boff_[l - 1];
                std::fill(db, db + k, T(0));
                activation_backward(act_, da, acts_[l - 1].data(), db, rows, k);
                dz = da;
            }
        }
        return dz;
    }

    // Plain SGD fused into backprop: W <- (1 - lr*wd) W - lr A^T dZ is one gemm writing straight into
    // theta (beta = 1 - lr*wd), so the gradient of W is never stored and no separate update pass reads
    // it back. dA = dZ W^T is taken before W changes. Biases: b -= lr * db from the small buffer `g`.
    // l_stop as in backward (layer 0's W and b are then left to the caller).
    T* backward_sgd(T* theta, const T* x, std::int64_t rows, double wd, T* g, double lr, int l_stop = 0) {
        const int m = static_cast<int>(rows);
        const T alpha = static_cast<T>(-lr), beta = static_cast<T>(1.0 - lr * wd);
        T* dz = zl_.data();
        T* bufs[2] = {d0_.data(), d1_.data()};
        int which = 0;
        for (int l = L_ - 1; l >= l_stop; --l) {
            const int k = static_cast<int>(sizes_[l]), n = static_cast<int>(sizes_[l + 1]);
            const T* a_in = (l == 0) ? x : acts_[l - 1].data();
            T* w = theta + woff_[l];
            T* da = nullptr;
            if (l > 0) {
                da = bufs[which];
                which ^= 1;
                gemm(false, true, m, k, n, T(1), dz, n, w, n, T(0), da, k);  // old W
            }
            gemm(true, false, k, n, m, alpha, a_in, k, dz, n, beta, w, n);
            T* b = theta + boff_[l];
            const T* db = g + boff_[l];  // filled by forward_loss_dz / activation_backward
            for (int j = 0; j < n; ++j) b[j] -= static_cast<T>(lr) * db[j];
            if (l > 0) {
                T* dbp = g + boff_[l - 1];
                std::fill(dbp, dbp + k, T(0));
                activation_backward(act_, da, acts_[l - 1].data(), dbp, rows, k);
                dz = da;
            }
        }
        return dz;
    }

    std::vector<std::int64_t> sizes_;
    Act act_;
    Loss loss_;
    int L_ = 0;
    std::int64_t n_params_ = 0;
    std::int64_t max_hidden_ = 0;
    std::vector<std::int64_t> woff_, boff_;
    std::int64_t cap_ = 0;                 // rows the scratch below can hold
    std::vector<std::vector<T>> acts_;     // hidden activations, one (cap x n_l) per hidden layer
    std::vector<T> zl_;                    // logits, then dL/dz of the last layer
    std::vector<T> d0_, d1_;               // dA / dZ of hidden layers, ping-pong
    std::vector<T> xb_, tb_, g_;           // train_steps: gathered batch and gradient
    std::vector<T> gch_;                   // train_steps_csr: each thread's chunk of W0's gradient
    std::vector<T> xcast_;                 // a float x of a double net, widened
    std::vector<std::int64_t> csr_ptr_, row_ids_;  // loss_grad_rows: x's nonzeros as CSR rows
    std::vector<std::int32_t> csr_ind_;
    std::vector<T> csr_val_;
    sparse::AlignedBuf<T> zp_, dp_, w0p_;  // train_steps_csr: padded z0, dZ0 and (SGD) W0
    sparse::AlignedBuf<T> w0f_;            // aligned_w0: W0 on 64-byte lines for the row-by-row products
    std::vector<sparse::Csc<T>> bands_;    // loss_grad on sparse x: x by column, a band per thread,
    std::vector<std::int64_t> band_;       // band t = columns [band_[t], band_[t+1]),
    std::vector<std::int32_t> col_nnz_;    // from the nonzeros of each column
    std::vector<std::unique_ptr<Mlp<T>>> parts_;  // loss_grad_split: one Mlp per part of the rows,
    std::vector<T> part_g_;                // the gradients of parts 1.. (part 0's goes to grad)
    bool in_part_ = false;                 // this Mlp runs one part: one thread, no further split
    double n_total_ = 0.0;                 // its losses are sums over this many rows (0: its own)
};

}  // namespace pfg
