// The first layer's product z = x W over each row's nonzeros, for predict and loss on inputs that are
// mostly zeros (MNIST: ~81%). Header-only, no pybind11.
//
// Row by row: the row's nonzeros are gathered once (column index, value), then the rows of W they
// name are summed into z's row a tile of up to 8 vectors at a time, the tile held in registers. Unlike
// the column-grouped kernels of csc.hpp (which loss_grad needs, to write each row of dW once), nothing
// is regrouped, so rows split freely over threads. x may be float32 for a float64 W (each value is
// widened exactly, as a cast of x would): the tutorials feed float32 images to float64 nets, and a
// float64 copy of the batch would cost more than the product.
// AVX-512 version picked at run time; a portable one (also compiled for AVX2+FMA).
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/blas.hpp"
#include "core/parallel.hpp"
#include "core/simd.hpp"
#include "kernels/scan.hpp"
#include "mlp/csc.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pfg {
namespace sparse {

// Slack the vector gathers may write past n0 entries.
constexpr std::int64_t kRowSlack = 16;

// The first layer runs on the nonzeros when at most this share of x is nonzero (MNIST: 0.19).
// 784-100-10, batch 100, float32, uniform random x: sparse 210 us at 0.2, 343 at 0.5; gemm ~295.
constexpr double kSparseDensity = 0.4;

// Nonzeros (NaN included) in a sample of up to 16 rows spread over x (n x n0); *rows = the rows sampled.
template <class X>
inline std::int64_t sampled_nonzeros(const X* x, std::int64_t n, std::int64_t n0, std::int64_t* rows) {
    const std::int64_t s = std::min<std::int64_t>(n, 16);
    std::int64_t nnz = 0;
    for (std::int64_t i = 0; i < s; ++i) {
        const X* xr = x + (i * n / s) * n0;
        for (std::int64_t k = 0; k < n0; ++k) nnz += xr[k] != X(0);
    }
    *rows = s;
    return nnz;
}

// ---- portable -------------------------------------------------------------------------------------
template <class T, class X>
inline void rows_forward_body(const X* __restrict x, std::int64_t n, std::int64_t n0, const T* __restrict W,
                              std::int64_t ldw, T* __restrict z, std::int64_t ldz, std::int64_t n1,
                              std::int32_t* __restrict idx, X* __restrict val) {
    for (std::int64_t r = 0; r < n; ++r) {
        const X* xr = x + r * n0;
        std::int64_t m = 0;
        for (std::int64_t k = 0; k < n0; ++k) {  // branch-free: ~19% of MNIST's entries are nonzero
            idx[m] = static_cast<std::int32_t>(k);
            val[m] = xr[k];
            m += xr[k] != X(0);  // NaN counts as nonzero
        }
        T* zr = z + r * ldz;
        for (std::int64_t j = 0; j < n1; ++j) zr[j] = T(0);
        for (std::int64_t e = 0; e < m; ++e) {
            const T a = static_cast<T>(val[e]);
            const T* w = W + std::int64_t(idx[e]) * ldw;
            for (std::int64_t j = 0; j < n1; ++j) zr[j] += a * w[j];
        }
    }
}

#ifdef PFG_X86
template <class T, class X>
PFG_TARGET_AVX2 void rows_forward_avx2(const X* x, std::int64_t n, std::int64_t n0, const T* W, std::int64_t ldw,
                                       T* z, std::int64_t ldz, std::int64_t n1, std::int32_t* idx, X* val) {
    rows_forward_body(x, n, n0, W, ldw, z, ldz, n1, idx, val);
}

// ---- AVX-512 ----------------------------------------------------------------------------------------
// The nonzeros of one row into idx/val (compressed in registers and stored whole: a compressing store
// to memory is slow on some CPUs); returns their count. idx/val need n0 + kRowSlack entries.
PFG_TARGET_AVX512 inline std::int64_t row_nonzeros_avx512(const float* xr, std::int64_t n0, std::int32_t* idx,
                                                          float* val) {
    const __m512i step = _mm512_set1_epi32(16);
    __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    std::int64_t m = 0;
    for (std::int64_t k = 0; k < n0; k += 16) {
        const std::int64_t left = n0 - k;
        const __mmask16 in = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
        const __m512 v = _mm512_maskz_loadu_ps(in, xr + k);
        const __mmask16 nz = _mm512_mask_cmp_ps_mask(in, v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        _mm512_storeu_si512(idx + m, _mm512_maskz_compress_epi32(nz, iota));
        _mm512_storeu_ps(val + m, _mm512_maskz_compress_ps(nz, v));
        m += __builtin_popcount(nz);
        iota = _mm512_add_epi32(iota, step);
    }
    return m;
}

// 8 at a time into double values: double x, or float x widened first (exact; a double net's rows).
template <class X>
PFG_TARGET_AVX512 inline std::int64_t row_nonzeros_avx512(const X* xr, std::int64_t n0, std::int32_t* idx,
                                                          double* val) {
    const __m256i step = _mm256_set1_epi32(8);
    __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    std::int64_t m = 0;
    for (std::int64_t k = 0; k < n0; k += 8) {
        const std::int64_t left = n0 - k;
        const __mmask8 in = left >= 8 ? __mmask8(0xFF) : __mmask8((1u << left) - 1u);
        __m512d v;
        if constexpr (std::is_same_v<X, float>)
            v = _mm512_maskz_cvtps_pd(in, _mm256_maskz_loadu_ps(in, xr + k));
        else
            v = _mm512_maskz_loadu_pd(in, xr + k);
        const __mmask8 nz = _mm512_mask_cmp_pd_mask(in, v, _mm512_setzero_pd(), _CMP_NEQ_UQ);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx + m), _mm256_maskz_compress_epi32(nz, iota));
        _mm512_storeu_pd(val + m, _mm512_maskz_compress_pd(nz, v));
        m += __builtin_popcount(nz);
        iota = _mm256_add_epi32(iota, step);
    }
    return m;
}

// z's row (NV vectors from the tile start) = sum over the gathered nonzeros of a * W's row.
template <class T, class X, int NV>
PFG_TARGET_AVX512 PFG_ALWAYS_INLINE void row_tile_avx512(const std::int32_t* idx, const X* val, std::int64_t m,
                                                         const T* W, std::int64_t ldw, T* zr,
                                                         typename V512<T>::M last) {
    using V = V512<T>;
    typename V::R acc[NV], acc2[NV];  // two sets: with few vectors a row, one would wait on FMA latency
#pragma GCC unroll 8
    for (int k = 0; k < NV; ++k) acc[k] = acc2[k] = V::zero();
    std::int64_t e = 0;
    for (; e + 1 < m; e += 2) {
        const typename V::R a = V::set1(static_cast<T>(val[e])), a2 = V::set1(static_cast<T>(val[e + 1]));
        const T* w = W + std::int64_t(idx[e]) * ldw;
        const T* w2 = W + std::int64_t(idx[e + 1]) * ldw;
#pragma GCC unroll 8
        for (int k = 0; k < NV - 1; ++k) {
            acc[k] = V::fma(a, V::load(w + k * V::W), acc[k]);
            acc2[k] = V::fma(a2, V::load(w2 + k * V::W), acc2[k]);
        }
        acc[NV - 1] = V::fma(a, V::loadm(last, w + (NV - 1) * V::W), acc[NV - 1]);
        acc2[NV - 1] = V::fma(a2, V::loadm(last, w2 + (NV - 1) * V::W), acc2[NV - 1]);
    }
    if (e < m) {
        const typename V::R a = V::set1(static_cast<T>(val[e]));
        const T* w = W + std::int64_t(idx[e]) * ldw;
#pragma GCC unroll 8
        for (int k = 0; k < NV - 1; ++k) acc[k] = V::fma(a, V::load(w + k * V::W), acc[k]);
        acc[NV - 1] = V::fma(a, V::loadm(last, w + (NV - 1) * V::W), acc[NV - 1]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < NV - 1; ++k) V::store(zr + k * V::W, V::add(acc[k], acc2[k]));
    V::storem(zr + (NV - 1) * V::W, last, V::add(acc[NV - 1], acc2[NV - 1]));
}

// z's row = the gathered nonzeros (idx, val: m of them) times W's rows, tile by tile.
template <class T, class X>
PFG_TARGET_AVX512 void row_product_avx512(const std::int32_t* idx, const X* val, std::int64_t m, const T* W,
                                          std::int64_t ldw, T* zr, std::int64_t n1) {
    using V = V512<T>;
    constexpr std::int64_t kTile = 8 * V::W;
    for (std::int64_t t0 = 0; t0 < n1; t0 += kTile) {
        const std::int64_t width = std::min(n1 - t0, kTile);
        const int nv = static_cast<int>((width + V::W - 1) / V::W);
        const int tail = static_cast<int>(width - (nv - 1) * V::W);  // 1..W
        const auto last = static_cast<typename V::M>((1u << tail) - 1u);
        switch (nv) {
            case 1: row_tile_avx512<T, X, 1>(idx, val, m, W + t0, ldw, zr + t0, last); break;
            case 2: row_tile_avx512<T, X, 2>(idx, val, m, W + t0, ldw, zr + t0, last); break;
            case 3: row_tile_avx512<T, X, 3>(idx, val, m, W + t0, ldw, zr + t0, last); break;
            case 4: row_tile_avx512<T, X, 4>(idx, val, m, W + t0, ldw, zr + t0, last); break;
            case 5: row_tile_avx512<T, X, 5>(idx, val, m, W + t0, ldw, zr + t0, last); break;
            case 6: row_tile_avx512<T, X, 6>(idx, val, m, W + t0, ldw, zr + t0, last); break;
            case 7: row_tile_avx512<T, X, 7>(idx, val, m, W + t0, ldw, zr + t0, last); break;
            default: row_tile_avx512<T, X, 8>(idx, val, m, W + t0, ldw, zr + t0, last); break;
        }
    }
}

template <class T, class X>
PFG_TARGET_AVX512 void rows_forward_avx512(const X* x, std::int64_t n, std::int64_t n0, const T* W,
                                           std::int64_t ldw, T* z, std::int64_t ldz, std::int64_t n1,
                                           std::int32_t* idx, X* val) {
    for (std::int64_t r = 0; r < n; ++r) {
        const std::int64_t m = row_nonzeros_avx512(x + r * n0, n0, idx, val);
        row_product_avx512(idx, val, m, W, ldw, z + r * ldz, n1);
    }
}

template <class T>
PFG_TARGET_AVX512 void csr_forward_avx512(const std::int64_t* ptr, const std::int32_t* ind, const T* val,
                                          std::int64_t n, const T* W, std::int64_t ldw, T* z, std::int64_t ldz,
                                          std::int64_t n1) {
    for (std::int64_t r = 0; r < n; ++r)
        row_product_avx512(ind + ptr[r], val + ptr[r], ptr[r + 1] - ptr[r], W, ldw, z + r * ldz, n1);
}

template <class T, class X>
PFG_TARGET_AVX512 void rows_compress_avx512(const X* x, std::int64_t n, std::int64_t n0, std::int64_t* ptr,
                                            std::int32_t* ind, T* val) {
    ptr[0] = 0;
    for (std::int64_t r = 0; r < n; ++r) ptr[r + 1] = ptr[r] + row_nonzeros_avx512(x + r * n0, n0, ind + ptr[r], val + ptr[r]);
}
#endif  // PFG_X86

// z (n x n1, row stride ldz) = x (n x n0) W (n0 x n1, row stride ldw) over x's nonzeros, on nth threads
// (rows split between them). Equal to the dense product up to the order of the sums, when W is finite
// (a skipped zero times inf would have been NaN: callers check W).
template <class T, class X>
void rows_forward(const X* x, std::int64_t n, std::int64_t n0, const T* W, std::int64_t ldw, T* z,
                  std::int64_t ldz, std::int64_t n1, int nth) {
    if (n <= 0 || n1 <= 0) return;
    nth = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(nth, n)));
#ifdef _OPENMP
#pragma omp parallel num_threads(nth) if (nth > 1)
#endif
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int tid = 0, nt = 1;
#endif
        const std::int64_t r0 = n * tid / nt, r1 = n * (tid + 1) / nt;
        std::vector<std::int32_t> idx(static_cast<size_t>(n0 + kRowSlack));
        std::vector<X> val(static_cast<size_t>(n0 + kRowSlack));
        const X* xs = x + r0 * n0;
        T* zs = z + r0 * ldz;
#ifdef PFG_X86
        const int level = simd::level();
        if (level == 2)
            rows_forward_avx512(xs, r1 - r0, n0, W, ldw, zs, ldz, n1, idx.data(), val.data());
        else if (level == 1)
            rows_forward_avx2(xs, r1 - r0, n0, W, ldw, zs, ldz, n1, idx.data(), val.data());
        else
#endif
            rows_forward_body(xs, r1 - r0, n0, W, ldw, zs, ldz, n1, idx.data(), val.data());
    }
}

// The nonzeros of x (n x n0) as CSR: ptr (n + 1), ind and val (room for ptr[n] + kRowSlack entries; at
// most n n0 + kRowSlack). Values widened to T exactly.
template <class T, class X>
void rows_compress(const X* x, std::int64_t n, std::int64_t n0, std::int64_t* ptr, std::int32_t* ind, T* val) {
#ifdef PFG_X86
    if (simd::level() == 2) return rows_compress_avx512(x, n, n0, ptr, ind, val);
#endif
    ptr[0] = 0;
    std::int64_t m = 0;
    for (std::int64_t r = 0; r < n; ++r) {
        const X* xr = x + r * n0;
        for (std::int64_t k = 0; k < n0; ++k) {  // branch-free, as rows_forward_body
            ind[m] = static_cast<std::int32_t>(k);
            val[m] = static_cast<T>(xr[k]);
            m += xr[k] != X(0);
        }
        ptr[r + 1] = m;
    }
}

template <class T>
inline void csr_forward_body(const std::int64_t* ptr, const std::int32_t* ind, const T* val, std::int64_t n,
                             const T* __restrict W, std::int64_t ldw, T* __restrict z, std::int64_t ldz,
                             std::int64_t n1) {
    for (std::int64_t r = 0; r < n; ++r) {
        T* zr = z + r * ldz;
        for (std::int64_t j = 0; j < n1; ++j) zr[j] = T(0);
        for (std::int64_t e = ptr[r]; e < ptr[r + 1]; ++e) {
            const T a = val[e];
            const T* w = W + std::int64_t(ind[e]) * ldw;
            for (std::int64_t j = 0; j < n1; ++j) zr[j] += a * w[j];
        }
    }
}
#ifdef PFG_X86
template <class T>
PFG_TARGET_AVX2 void csr_forward_avx2(const std::int64_t* ptr, const std::int32_t* ind, const T* val, std::int64_t n,
                                      const T* W, std::int64_t ldw, T* z, std::int64_t ldz, std::int64_t n1) {
    csr_forward_body(ptr, ind, val, n, W, ldw, z, ldz, n1);
}
#endif

// z (n x n1) = the CSR rows times W (one thread; as rows_forward).
template <class T>
void csr_forward(const std::int64_t* ptr, const std::int32_t* ind, const T* val, std::int64_t n, const T* W,
                 std::int64_t ldw, T* z, std::int64_t ldz, std::int64_t n1) {
#ifdef PFG_X86
    const int level = simd::level();
    if (level == 2) return csr_forward_avx512(ptr, ind, val, n, W, ldw, z, ldz, n1);
    if (level == 1) return csr_forward_avx2(ptr, ind, val, n, W, ldw, z, ldz, n1);
#endif
    csr_forward_body(ptr, ind, val, n, W, ldw, z, ldz, n1);
}

// z's row = m nonzeros (ind, val) times W's rows, summed in registers.
template <class T>
inline void csr_forward_one(const std::int32_t* ind, const T* val, std::int64_t m, const T* W, std::int64_t ldw, T* zr,
                            std::int64_t n1) {
#ifdef PFG_X86
    if (simd::level() == 2) return row_product_avx512(ind, val, m, W, ldw, zr, n1);
#endif
    const std::int64_t one[2] = {0, m};
    csr_forward(one, ind, val, 1, W, ldw, zr, n1, n1);
}

// Rows [r0, r1) of z (B x n1) = the batch's CSR rows (X.rows[r]) times W, each row summed in registers.
template <class T>
void csr_batch_forward(const CsrBatch<T>& X, std::int64_t r0, std::int64_t r1, const T* W, std::int64_t ldw, T* z,
                       std::int64_t ldz, std::int64_t n1) {
#ifdef PFG_X86
    if (simd::level() == 2) {
        for (std::int64_t r = r0; r < r1; ++r) {
            const std::int64_t p0 = X.indptr[X.rows[r]], p1 = X.indptr[X.rows[r] + 1];
            row_product_avx512(X.ind + p0, X.val + p0, p1 - p0, W, ldw, z + r * ldz, n1);
        }
        return;
    }
#endif
    for (std::int64_t r = r0; r < r1; ++r) {
        const std::int64_t p0 = X.indptr[X.rows[r]];
        const std::int64_t one[2] = {0, X.indptr[X.rows[r] + 1] - p0};
        csr_forward(one, X.ind + p0, X.val + p0, 1, W, ldw, z + r * ldz, ldz, n1);
    }
}

// z (n x n1) = x (n x n0) W (n0 x n1) for a layer stack's first affine layer: over x's nonzeros when
// x is mostly zeros (at most `density` nonzero in a sample of up to 16 rows) and W is finite, on
// threads when the work is large (call_work().sparse), else OpenBLAS's gemm. Returns whether the
// nonzeros were used.
// Whether a first-layer kernel should skip x's zeros: n0 >= 32 and at most `density` of a sample of up to
// 16 rows nonzero; *per_row = the sample's nonzeros per row.
template <class T>
bool mostly_zeros(const T* x, std::int64_t n, std::int64_t n0, double density, double* per_row) {
    if (n0 < 32) return false;
    std::int64_t s = 0;
    const std::int64_t nnz = sampled_nonzeros(x, n, n0, &s);
    *per_row = double(nnz) / double(s);
    return double(nnz) <= density * double(s * n0);
}

// C (m x k2) = op(A) B by gemm, OpenBLAS's threads only for a big product (call_work().blas).
template <class T>
void first_layer_gemm(bool ta, std::int64_t m, std::int64_t k2, std::int64_t k, const T* A, std::int64_t lda,
                      const T* B, T* C) {
    const BlasCap blas_guard(blas_threads_for(double(m) * double(k2) * double(k)));
    gemm(ta, false, static_cast<int>(m), static_cast<int>(k2), static_cast<int>(k), T(1), A, static_cast<int>(lda), B,
         static_cast<int>(k2), T(0), C, static_cast<int>(k2));
}

// threads: 0 picks by the product's work (a team only for big ones), else that many (1 inside a caller's own
// threads, as a layer stack's parts). The bits do not depend on it.
template <class T>
bool first_layer_product(const T* x, std::int64_t n, std::int64_t n0, const T* W, std::int64_t n1, T* z,
                         double density = kSparseDensity, int threads = 0) {
    if (n <= 0 || n1 <= 0) return false;
    double per_row = 0.0;
    if (mostly_zeros(x, n, n0, density, &per_row) && all_finite(W, n0 * n1)) {
        const double work = double(n) * per_row * double(n1);
        const int nth = threads > 0 ? threads : (work >= call_work().sparse ? team_threads() : 1);
        rows_forward(x, n, n0, W, n1, z, n1, n1, nth);
        if (nth > 1) team_done();
        return true;
    }
    first_layer_gemm(false, n, n1, n0, x, n0, W, z);
    return false;
}

// dW (n0 x n1) = x^T D for a layer stack's first affine layer (x (n x n0), D (n x n1)): over x's nonzeros
// (compressed by row, regrouped by column, as Mlp::loss_grad_rows does) when x is mostly zeros and D
// finite (a skipped 0 * inf must stay NaN), else by gemm. Returns whether the nonzeros were used.
template <class T>
bool first_layer_grad(const T* x, std::int64_t n, std::int64_t n0, const T* D, std::int64_t n1, T* dW,
                      double density = kSparseDensity) {
    if (n <= 0 || n1 <= 0) {
        std::fill(dW, dW + n0 * n1, T(0));
        return false;
    }
    double per_row = 0.0;
    if (mostly_zeros(x, n, n0, density, &per_row) && all_finite(D, n * n1)) {
        // grow-only scratch per thread: a fresh buffer of n * n0 entries per call would page-fault
        thread_local std::vector<std::int64_t> ptr, ids;
        thread_local std::vector<std::int32_t> ind;
        thread_local std::vector<T> val;
        thread_local Csc<T> csc;
        const size_t room = static_cast<size_t>(n * n0 + kRowSlack);
        if (ptr.size() < static_cast<size_t>(n + 1)) ptr.resize(static_cast<size_t>(n + 1));
        if (ind.size() < room) ind.resize(room);
        if (val.size() < room) val.resize(room);
        if (ids.size() < static_cast<size_t>(n)) {
            const std::int64_t from = static_cast<std::int64_t>(ids.size());
            ids.resize(static_cast<size_t>(n));
            for (std::int64_t r = from; r < n; ++r) ids[static_cast<size_t>(r)] = r;
        }
        rows_compress(x, n, n0, ptr.data(), ind.data(), val.data());
        const CsrBatch<T> X{ids.data(), n, ptr.data(), ind.data(), val.data()};
        csc.build_band(X, n0, 0, n0);
        const UpdateSpec<T> u{&csc, 0, n0, true, T(0), nullptr, 0, D, n1, dW, n1};
        csc_update(u, 0, n1);
        return true;
    }
    first_layer_gemm(true, n0, n1, n, x, n0, D, dW);
    return false;
}

}  // namespace sparse
}  // namespace pfg
