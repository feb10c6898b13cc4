// Sparse-input kernels of the first layer, for inputs that are mostly zeros (MNIST: ~81%).
// Header-only, no pybind11.
//
// Only the nonzeros are touched, so per step the first layer costs ~2 nnz n1 multiply-adds instead of
// 2 B n0 n1. The batch is regrouped by column (Csc: from CSR rows, build_band, or from a dense x,
// build_dense), each thread a band of the columns; then, over a range [j0, j1) of the output columns,
//   csc_forward: z[r, j] += sum over column i's entries (r, v) of v W[i, j] (W's row in registers);
//   csc_update:  Y[i, j] = init + sum_e v_e D[r_e, j] over column i's entries e,
//                init = beta S[i, j] (0 when beta == 0), so each row of Y is read and written once
//                per step however many samples touch it.
// Both have an AVX-512 version (up to 8 vectors of the row in registers, masked tail) picked at run
// time, and a portable one (also compiled for AVX2+FMA). They run at L1/L2 bandwidth, so callers
// should give them rows aligned to 64 bytes (see padded_ld). dense_to_csr's kernels are at the end.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/simd.hpp"
#include "kernels/scan.hpp"

#ifdef PFG_X86
#include <immintrin.h>
#endif

namespace pfg {
namespace sparse {

// Entries per 64-byte line: the unit in which column ranges are split (no line is shared).
template <class T>
constexpr std::int64_t line_elems() { return 64 / static_cast<std::int64_t>(sizeof(T)); }

// A row length rounded up to whole lines, so rows of a padded copy start on line boundaries.
template <class T>
inline std::int64_t padded_ld(std::int64_t n) { return (n + line_elems<T>() - 1) / line_elems<T>() * line_elems<T>(); }

// Grow-only scratch whose data starts on a 64-byte boundary.
template <class T>
struct AlignedBuf {
    std::vector<T> store;
    T* ptr = nullptr;
    std::int64_t cap = 0;
    T* get(std::int64_t n) {
        if (n > cap) {
            store.assign(static_cast<size_t>(n + line_elems<T>()), T(0));
            const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(store.data());
            ptr = reinterpret_cast<T*>((a + 63) & ~std::uintptr_t(63));
            cap = n;
        }
        return ptr;
    }
};

// The rows of X one step uses: rows[0..B) index the CSR arrays.
template <class T>
struct CsrBatch {
    const std::int64_t* rows;
    std::int64_t B;
    const std::int64_t* indptr;
    const std::int32_t* ind;
    const T* val;
};

// Every 64-byte line of [p, p + bytes) toward the cache, by one load each. (Prefetch instructions
// measured no faster than no prefetching at all on this project's Xeon VM, plain loads ~25 us a step
// faster: the CPU drops prefetches when its fill buffers are busy, and a batch's rows need thousands.)
inline void prefetch_lines(const void* p, std::size_t bytes) {
    if (bytes == 0) return;
    const std::uintptr_t a0 = reinterpret_cast<std::uintptr_t>(p), end = a0 + bytes;
    (void)*reinterpret_cast<const volatile unsigned char*>(a0);
    for (std::uintptr_t a = (a0 | 63) + 1; a < end; a += 64) (void)*reinterpret_cast<const volatile unsigned char*>(a);
}

// Part `part` of `parts` of each of the batch rows [r0, r1) (by position in the row, a line more on
// each side): threads that each read a band of the columns fetch about their share only.
template <class T>
inline void prefetch_row_parts(const CsrBatch<T>& X, std::int64_t r0, std::int64_t r1, int part, int parts) {
    for (std::int64_t r = r0; r < r1; ++r) {
        const std::int64_t p0 = X.indptr[X.rows[r]], n = X.indptr[X.rows[r] + 1] - p0;
        const std::int64_t a = std::max<std::int64_t>(0, n * part / parts - 16);
        const std::int64_t b = std::min<std::int64_t>(n, n * (part + 1) / parts + 16);
        if (b <= a) continue;
        prefetch_lines(X.ind + p0 + a, sizeof(std::int32_t) * (b - a));
        prefetch_lines(X.val + p0 + a, sizeof(T) * (b - a));
    }
}

// One nonzero of the batch, regrouped by column: its batch row and value. Packed so that a scatter
// writes one line per column, not two (the scatter is bound by lines missing L1).
template <class T>
struct CscEntry {
    std::int32_t r;
    T v;
};

// The batch's nonzeros grouped by column (a counting sort; in row order within a column).
template <class T>
struct Csc {
    std::vector<std::int32_t> cptr;  // n0 + 1 column starts
    std::vector<std::int32_t> next;  // fill positions while scattering
    std::vector<std::int32_t> cols;  // the columns that have entries, ascending
    std::vector<CscEntry<T>> ent;
    std::vector<std::int64_t> span;  // build_band: each batch row's run in the CSR arrays

    // From the batch rows' nonzeros in columns [k0, k1): each row's part is one run of its
    // ascending indices, found by binary search. The other columns stay empty.
    void build_band(const CsrBatch<T>& X, std::int64_t n0, std::int64_t k0, std::int64_t k1) {
        cptr.assign(static_cast<size_t>(n0) + 1, 0);
        span.resize(static_cast<size_t>(2 * X.B));
        std::int32_t* cp = cptr.data() + 1;
        for (std::int64_t r = 0; r < X.B; ++r) {
            const std::int32_t* b = X.ind + X.indptr[X.rows[r]];
            const std::int32_t* e = X.ind + X.indptr[X.rows[r] + 1];
            if (k0 > 0) b = std::lower_bound(b, e, static_cast<std::int32_t>(k0));
            if (k1 < n0) e = std::lower_bound(b, e, static_cast<std::int32_t>(k1));
            span[2 * r] = b - X.ind;
            span[2 * r + 1] = e - X.ind;
            for (; b < e; ++b) ++cp[*b];
        }
        starts_from_counts(n0);
        std::int32_t* nx = next.data();
        CscEntry<T>* en = ent.data();
        for (std::int64_t r = 0; r < X.B; ++r) {
            const std::int32_t r32 = static_cast<std::int32_t>(r);
            for (std::int64_t p = span[2 * r]; p < span[2 * r + 1]; ++p) en[nx[X.ind[p]]++] = CscEntry<T>{r32, X.val[p]};
        }
    }

    // From the columns [k0, k1) of a dense x (n x n0, row-major; NaN counts as a nonzero): threads
    // can each build one band. Other columns stay empty.
    void build_dense(const T* x, std::int64_t n, std::int64_t n0, std::int64_t k0, std::int64_t k1);

private:
    // cptr[i + 1] holds column i's count: make cptr the column starts, next the fill positions, cols
    // the columns with entries, and room in ent for them all.
    void starts_from_counts(std::int64_t n0) {
        cols.clear();
        next.resize(static_cast<size_t>(n0));
        for (std::int64_t i = 0; i < n0; ++i) {
            if (cptr[i + 1]) cols.push_back(static_cast<std::int32_t>(i));
            next[i] = cptr[i];
            cptr[i + 1] += cptr[i];
        }
        if (ent.size() < static_cast<size_t>(cptr[n0])) ent.resize(cptr[n0]);
    }
};

// What csc_update writes: rows [i0, i1) of Y (all of them, or only those with entries).
template <class T>
struct UpdateSpec {
    const Csc<T>* csc;
    std::int64_t i0, i1;
    bool all_rows;   // false: rows without entries are left alone (then S == Y and beta == 1)
    T beta;          // init = beta * S (0: zeros, S not read)
    const T* S;
    std::int64_t lds;
    const T* D;
    std::int64_t ldd;
    T* Y;
    std::int64_t ldy;
    std::int64_t y0 = 0;  // Y holds rows from y0 on (a chunk's buffer): row i at Y + (i - y0) ldy
};

// ---- portable kernels ------------------------------------------------------------------------
template <class T>
inline void csc_update_row_body(const UpdateSpec<T>& u, std::int64_t i, std::int64_t j0, std::int64_t j1) {
    T* __restrict y = u.Y + (i - u.y0) * u.ldy;
    if (u.beta == T(0)) {
        for (std::int64_t j = j0; j < j1; ++j) y[j] = T(0);
    } else if (!(u.beta == T(1) && u.S == u.Y)) {
        const T* s = u.S + i * u.lds;
        for (std::int64_t j = j0; j < j1; ++j) y[j] = u.beta * s[j];
    }
    const std::int32_t* cptr = u.csc->cptr.data();
    const CscEntry<T>* en = u.csc->ent.data();
    for (std::int32_t e = cptr[i]; e < cptr[i + 1]; ++e) {
        const T a = en[e].v;
        const T* __restrict d = u.D + std::int64_t(en[e].r) * u.ldd;
        for (std::int64_t j = j0; j < j1; ++j) y[j] += a * d[j];
    }
}

// (Plain loops, no lambdas: a lambda would not inherit the AVX2 clone's target attribute.)
template <class T>
inline void csc_update_body(const UpdateSpec<T>& u, std::int64_t j0, std::int64_t j1) {
    if (u.all_rows) {
        for (std::int64_t i = u.i0; i < u.i1; ++i) csc_update_row_body(u, i, j0, j1);
    } else {
        const auto& cols = u.csc->cols;
        auto it = std::lower_bound(cols.begin(), cols.end(), static_cast<std::int32_t>(u.i0));
        for (; it != cols.end() && *it < u.i1; ++it) csc_update_row_body(u, std::int64_t(*it), j0, j1);
    }
}

#ifdef PFG_X86
template <class T>
__attribute__((target("avx2,fma"))) void csc_forward_avx2(const Csc<T>& c, const T* W, std::int64_t ldw, T* z,
                                                         std::int64_t ldz, std::int64_t j0, std::int64_t j1) {
    csc_forward_body(c, W, ldw, z, ldz, j0, j1);
}
template <class T>
__attribute__((target("avx2,fma"))) void csc_update_avx2(const UpdateSpec<T>& u, std::int64_t j0, std::int64_t j1) {
    csc_update_body(u, j0, j1);
}

// ---- AVX-512 kernels -------------------------------------------------------------------------
// Row i of the update, NV vectors from column j0.
template <class T, int NV>
__attribute__((target("avx512f"), always_inline)) inline void csc_update_row(const UpdateSpec<T>& u, std::int64_t i,
                                                                            std::int64_t j0,
                                                                            typename V512<T>::M last, bool in_place) {
    using V = V512<T>;
    T* y = u.Y + (i - u.y0) * u.ldy + j0;
    typename V::R acc[NV];
    if (u.beta == T(0)) {
#pragma GCC unroll 8
        for (int k = 0; k < NV; ++k) acc[k] = V::zero();
    } else {
        const T* s = u.S + i * u.lds + j0;
#pragma GCC unroll 8
        for (int k = 0; k < NV - 1; ++k) acc[k] = V::load(s + k * V::W);
        acc[NV - 1] = V::loadm(last, s + (NV - 1) * V::W);
        if (!in_place) {
            const typename V::R beta = V::set1(u.beta);
#pragma GCC unroll 8
            for (int k = 0; k < NV; ++k) acc[k] = V::mul(beta, acc[k]);
        }
    }
    const CscEntry<T>* en = u.csc->ent.data();
    const std::int32_t e1 = u.csc->cptr[i + 1];
    std::int32_t e = u.csc->cptr[i];
    typename V::R acc2[NV];  // a second set: with few vectors a row, one set would wait on the FMA latency
#pragma GCC unroll 8
    for (int k = 0; k < NV; ++k) acc2[k] = V::zero();
    for (; e + 1 < e1; e += 2) {
        const typename V::R a = V::set1(en[e].v), a2 = V::set1(en[e + 1].v);
        const T* d = u.D + std::int64_t(en[e].r) * u.ldd + j0;
        const T* d2 = u.D + std::int64_t(en[e + 1].r) * u.ldd + j0;
#pragma GCC unroll 8
        for (int k = 0; k < NV - 1; ++k) {
            acc[k] = V::fma(a, V::load(d + k * V::W), acc[k]);
            acc2[k] = V::fma(a2, V::load(d2 + k * V::W), acc2[k]);
        }
        acc[NV - 1] = V::fma(a, V::loadm(last, d + (NV - 1) * V::W), acc[NV - 1]);
        acc2[NV - 1] = V::fma(a2, V::loadm(last, d2 + (NV - 1) * V::W), acc2[NV - 1]);
    }
    if (e < e1) {
        const typename V::R a = V::set1(en[e].v);
        const T* d = u.D + std::int64_t(en[e].r) * u.ldd + j0;
#pragma GCC unroll 8
        for (int k = 0; k < NV - 1; ++k) acc[k] = V::fma(a, V::load(d + k * V::W), acc[k]);
        acc[NV - 1] = V::fma(a, V::loadm(last, d + (NV - 1) * V::W), acc[NV - 1]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < NV; ++k) acc[k] = V::add(acc[k], acc2[k]);
#pragma GCC unroll 8
    for (int k = 0; k < NV - 1; ++k) V::store(y + k * V::W, acc[k]);
    V::storem(y + (NV - 1) * V::W, last, acc[NV - 1]);
}

template <class T, int NV>
__attribute__((target("avx512f"))) void csc_update_tile(const UpdateSpec<T>& u, std::int64_t j0,
                                                        typename V512<T>::M last) {
    const bool in_place = u.beta == T(1) && u.S == u.Y;
    if (u.all_rows) {
        for (std::int64_t i = u.i0; i < u.i1; ++i) csc_update_row<T, NV>(u, i, j0, last, in_place);
    } else {
        const auto& cols = u.csc->cols;
        auto it = std::lower_bound(cols.begin(), cols.end(), static_cast<std::int32_t>(u.i0));
        for (; it != cols.end() && *it < u.i1; ++it) csc_update_row<T, NV>(u, *it, j0, last, in_place);
    }
}

template <class T, int NV>
__attribute__((target("avx512f"))) void csc_forward_tile(const Csc<T>& c, const T* W, std::int64_t ldw, T* z,
                                                         std::int64_t ldz, typename V512<T>::M last) {
    using V = V512<T>;
    const CscEntry<T>* en = c.ent.data();
    for (const std::int32_t i : c.cols) {
        const T* w = W + std::int64_t(i) * ldw;
        typename V::R wv[NV];
#pragma GCC unroll 8
        for (int k = 0; k < NV - 1; ++k) wv[k] = V::load(w + k * V::W);
        wv[NV - 1] = V::loadm(last, w + (NV - 1) * V::W);
        const std::int32_t e1 = c.cptr[i + 1];
        for (std::int32_t e = c.cptr[i]; e < e1; ++e) {
            const typename V::R v = V::set1(en[e].v);
            T* zr = z + std::int64_t(en[e].r) * ldz;
#pragma GCC unroll 8
            for (int k = 0; k < NV - 1; ++k) V::store(zr + k * V::W, V::fma(v, wv[k], V::load(zr + k * V::W)));
            V::storem(zr + (NV - 1) * V::W, last, V::fma(v, wv[NV - 1], V::loadm(last, zr + (NV - 1) * V::W)));
        }
    }
}

constexpr int kMaxTileVecs = 8;  // 8 accumulators + operands stay well inside the 32 zmm registers

// Splits [j0, j1) into tiles of up to kMaxTileVecs vectors: f(tile start, vectors, last vector's mask).
template <class T, class F>
inline void for_each_tile(std::int64_t j0, std::int64_t j1, F&& f) {
    constexpr std::int64_t W = V512<T>::W;
    for (std::int64_t t0 = j0; t0 < j1; t0 += kMaxTileVecs * W) {
        const std::int64_t width = std::min<std::int64_t>(j1 - t0, kMaxTileVecs * W);
        const int nv = static_cast<int>((width + W - 1) / W);
        const int tail = static_cast<int>(width - (nv - 1) * W);  // 1..W
        f(t0, nv, static_cast<typename V512<T>::M>((1u << tail) - 1u));
    }
}

#define PFG_TILE_SWITCH(NV, CALL) \
    switch (NV) {                 \
        case 1: CALL(1); break;   \
        case 2: CALL(2); break;   \
        case 3: CALL(3); break;   \
        case 4: CALL(4); break;   \
        case 5: CALL(5); break;   \
        case 6: CALL(6); break;   \
        case 7: CALL(7); break;   \
        default: CALL(8); break;  \
    }

template <class T>
void csc_forward_avx512(const Csc<T>& c, const T* W, std::int64_t ldw, T* z, std::int64_t ldz, std::int64_t j0,
                        std::int64_t j1) {
    for_each_tile<T>(j0, j1, [&](std::int64_t t0, int nv, typename V512<T>::M mask) {
#define PFG_CALL(K) csc_forward_tile<T, K>(c, W + t0, ldw, z + t0, ldz, mask)
        PFG_TILE_SWITCH(nv, PFG_CALL)
#undef PFG_CALL
    });
}

template <class T>
void csc_update_avx512(const UpdateSpec<T>& u, std::int64_t j0, std::int64_t j1) {
    for_each_tile<T>(j0, j1, [&](std::int64_t t0, int nv, typename V512<T>::M mask) {
#define PFG_CALL(K) csc_update_tile<T, K>(u, t0, mask)
        PFG_TILE_SWITCH(nv, PFG_CALL)
#undef PFG_CALL
    });
}
#undef PFG_TILE_SWITCH

#endif  // PFG_X86


// ---- dense columns to CSC, and the forward product from it -------------------------------------
// The column counts of a dense batch, portable and AVX2 (picked by simd::level()): it reads every entry of
// x once per call, which at SSE2 width costs ~10 us on MNIST batches.
template <class T>
inline void count_band_body(const T* __restrict x, std::int64_t n, std::int64_t n0, std::int64_t k0,
                            std::int64_t k1, std::int32_t* __restrict cnt) {
    for (std::int64_t r = 0; r < n; ++r) {  // one compare and add per entry
        const T* xr = x + r * n0;
        for (std::int64_t k = k0; k < k1; ++k) cnt[k] += xr[k] != T(0);
    }
}

#ifdef PFG_X86
template <class T>
__attribute__((target("avx2,fma"))) void count_band_avx2(const T* x, std::int64_t n, std::int64_t n0,
                                                         std::int64_t k0, std::int64_t k1, std::int32_t* cnt) {
    count_band_body(x, n, n0, k0, k1, cnt);
}
#endif


// cnt[k] += nonzeros (NaN included) in rows [0, n) of column k of x (n x n0), for k in [k0, k1).
template <class T>
inline void count_band(const T* x, std::int64_t n, std::int64_t n0, std::int64_t k0, std::int64_t k1,
                       std::int32_t* cnt) {
#ifdef PFG_X86
    if (simd::level() >= 1) return count_band_avx2(x, n, n0, k0, k1, cnt);
#endif
    count_band_body(x, n, n0, k0, k1, cnt);
}

template <class T>
inline void build_dense_scatter_body(const T* x, std::int64_t n, std::int64_t n0, std::int64_t k0, std::int64_t k1,
                                     std::int32_t* nx, CscEntry<T>* en) {
    for (std::int64_t r = 0; r < n; ++r) {
        const T* xr = x + r * n0;
        for (std::int64_t k = k0; k < k1; ++k)
            if (xr[k] != T(0)) en[nx[k]++] = CscEntry<T>{static_cast<std::int32_t>(r), xr[k]};
    }
}

#ifdef PFG_X86
// 16 columns at a time down all the rows: the entries go to only 16 columns' lists, whose ends stay
// in L1 (row by row they would go to all the band's columns). One compare per 16 entries, one entry
// per set bit (most 16-column runs of an image row are blank).
template <class T>
__attribute__((target("avx512f"))) void build_dense_scatter_avx512(const T* x, std::int64_t n, std::int64_t n0,
                                                                   std::int64_t k0, std::int64_t k1,
                                                                   std::int32_t* nx, CscEntry<T>* en) {
    for (std::int64_t k = k0; k < k1; k += 16) {
        const std::int64_t left = k1 - k;
        const __mmask16 in = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
        for (std::int64_t r = 0; r < n; ++r) {
            const T* xr = x + r * n0;
            unsigned m;
            if constexpr (sizeof(T) == 4) {
                m = _mm512_mask_cmp_ps_mask(in, _mm512_maskz_loadu_ps(in, reinterpret_cast<const float*>(xr) + k),
                                            _mm512_setzero_ps(), _CMP_NEQ_UQ);
            } else {
                const __mmask8 in0 = __mmask8(in & 0xFF), in1 = __mmask8(in >> 8);
                const double* xd = reinterpret_cast<const double*>(xr) + k;
                const unsigned m0 = _mm512_mask_cmp_pd_mask(in0, _mm512_maskz_loadu_pd(in0, xd), _mm512_setzero_pd(),
                                                            _CMP_NEQ_UQ);
                const unsigned m1 = _mm512_mask_cmp_pd_mask(in1, _mm512_maskz_loadu_pd(in1, xd + 8),
                                                            _mm512_setzero_pd(), _CMP_NEQ_UQ);
                m = m0 | (m1 << 8);
            }
            const std::int32_t r32 = static_cast<std::int32_t>(r);
            for (; m; m &= m - 1) {
                const std::int64_t c = k + __builtin_ctz(m);
                en[nx[c]++] = CscEntry<T>{r32, xr[c]};
            }
        }
    }
}
#endif

// z[r, j] += sum over the entries (r, v) of column i of v W[i, j], for j in [j0, j1): each row of W
// is read once (kept in registers by the vector version), z's rows are read and written in cache.
template <class T>
inline void csc_forward_body(const Csc<T>& c, const T* W, std::int64_t ldw, T* z, std::int64_t ldz,
                             std::int64_t j0, std::int64_t j1) {
    const CscEntry<T>* en = c.ent.data();
    for (const std::int32_t i : c.cols) {
        const T* __restrict w = W + std::int64_t(i) * ldw;
        for (std::int32_t e = c.cptr[i]; e < c.cptr[i + 1]; ++e) {
            T* __restrict zr = z + std::int64_t(en[e].r) * ldz;
            const T v = en[e].v;
            for (std::int64_t j = j0; j < j1; ++j) zr[j] += v * w[j];
        }
    }
}

// Columns [j0, j1) of the update described by u (see the top of this file).
template <class T>
inline void csc_update(const UpdateSpec<T>& u, std::int64_t j0, std::int64_t j1) {
    if (j1 <= j0 || u.i1 <= u.i0) return;
#ifdef PFG_X86
    const int level = simd::level();
    if (level == 2) return csc_update_avx512(u, j0, j1);
    if (level == 1) return csc_update_avx2(u, j0, j1);
#endif
    csc_update_body(u, j0, j1);
}

// z[:, j0:j1) += the columns of c times W's rows (see csc_forward_body); z is not cleared first.
template <class T>
inline void csc_forward(const Csc<T>& c, const T* W, std::int64_t ldw, T* z, std::int64_t ldz, std::int64_t j0,
                        std::int64_t j1) {
    if (j1 <= j0) return;
#ifdef PFG_X86
    const int level = simd::level();
    if (level == 2) return csc_forward_avx512(c, W, ldw, z, ldz, j0, j1);
    if (level == 1) return csc_forward_avx2(c, W, ldw, z, ldz, j0, j1);
#endif
    csc_forward_body(c, W, ldw, z, ldz, j0, j1);
}

template <class T>
void Csc<T>::build_dense(const T* x, std::int64_t n, std::int64_t n0, std::int64_t k0, std::int64_t k1) {
    cptr.assign(static_cast<size_t>(n0) + 1, 0);
    count_band(x, n, n0, k0, k1, cptr.data() + 1);
    starts_from_counts(n0);
#ifdef PFG_X86
    if (simd::level() == 2) return build_dense_scatter_avx512(x, n, n0, k0, k1, next.data(), ent.data());
#endif
    build_dense_scatter_body(x, n, n0, k0, k1, next.data(), ent.data());
}

}  // namespace sparse
}  // namespace pfg
