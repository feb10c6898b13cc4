// Whole-array scans (no inf/NaN, nonzero counts) and the dense-to-CSR conversion: each in a portable and
// an AVX2/AVX-512 version picked by simd::level(). Validation, the sparse first layer and fit's CSR
// build use them.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "core/simd.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pfg {
namespace sparse {

template <class T>
inline bool all_finite_body(const T* __restrict a, std::int64_t count) {
    int bad = 0;  // an integer OR: vectorises (a float sum would be one long dependency chain)
    for (std::int64_t i = 0; i < count; ++i) bad |= !(std::fabs(a[i]) <= std::numeric_limits<T>::max());
    return !bad;
}

#ifdef PFG_X86
// x - x is 0 for finite x and NaN for inf or NaN; NaN survives the sums. Two sums hide the add latency.
template <class T>
__attribute__((target("avx512f"))) bool all_finite_avx512(const T* a, std::int64_t count) {
    using V = V512<T>;
    typename V::R s0 = V::zero(), s1 = V::zero();
    std::int64_t i = 0;
    for (; i + 2 * V::W <= count; i += 2 * V::W) {
        const typename V::R v0 = V::load(a + i), v1 = V::load(a + i + V::W);
        s0 = V::add(s0, V::sub(v0, v0));
        s1 = V::add(s1, V::sub(v1, v1));
    }
    for (; i < count; i += V::W) {
        const auto m = static_cast<typename V::M>(count - i >= V::W ? (1u << V::W) - 1u : (1u << (count - i)) - 1u);
        const typename V::R v = V::loadm(m, a + i);
        s0 = V::add(s0, V::sub(v, v));
    }
    return V::nonzero(V::add(s0, s1)) == 0;
}

#endif

#ifdef PFG_X86
template <class T>
__attribute__((target("avx2,fma"))) bool all_finite_avx2(const T* a, std::int64_t count) {
    return all_finite_body(a, count);
}
#endif

// No inf or NaN in a[0, count).
template <class T>
inline bool all_finite(const T* a, std::int64_t count) {
#ifdef PFG_X86
    const int level = simd::level();
    if (level == 2) return all_finite_avx512(a, count);
    if (level == 1) return all_finite_avx2(a, count);
#endif
    return all_finite_body(a, count);
}

template <class T>
inline std::int64_t count_nonzero_body(const T* __restrict x, std::int64_t count) {
    std::int32_t k = 0;  // (32-bit lanes: twice the width of 64-bit ones; callers pass < 2^31 entries)
    for (std::int64_t i = 0; i < count; ++i) k += x[i] != T(0);
    return k;
}

#ifdef PFG_X86
template <class T>
__attribute__((target("avx2,fma"))) std::int64_t count_nonzero_avx2(const T* x, std::int64_t count) {
    return count_nonzero_body(x, count);
}
#endif

// Nonzeros (NaN included) of x[0, count), count < 2^31.
template <class T>
inline std::int64_t count_nonzero(const T* x, std::int64_t count) {
#ifdef PFG_X86
    if (simd::level() >= 1) return count_nonzero_avx2(x, count);
#endif
    return count_nonzero_body(x, count);
}

// ---- dense rows to CSR (fit's conversion of a whole data set) ------------------------------------
// Nonzeros (NaN included) of each row of x (n x n0) into counts[n].
template <class T>
inline void count_rows(const T* x, std::int64_t n, std::int64_t n0, std::int64_t* counts) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n * n0 >= (1 << 18))
#endif
    for (std::int64_t r = 0; r < n; ++r) counts[r] = count_nonzero(x + r * n0, n0);
}

template <class T>
inline void pack_row_body(const T* __restrict x, std::int64_t n0, std::int32_t* __restrict ind, T* __restrict val) {
    std::int64_t p = 0;
    for (std::int64_t j = 0; j < n0; ++j)
        if (x[j] != T(0)) {  // NaN != 0: kept, as the dense product sees it
            ind[p] = static_cast<std::int32_t>(j);
            val[p++] = x[j];
        }
}

#ifdef PFG_X86
// 16 entries a compare; the nonzeros are compressed in registers and stored whole while a whole vector
// still fits in the row's share of ind/val (a compress straight to memory is slow on some CPUs), with
// a masked store at the row's end (rows are packed in parallel: nothing may spill into the next one).
__attribute__((target("avx512f"))) inline void pack_row_avx512(const float* x, std::int64_t n0, std::int32_t* ind,
                                                              float* val, std::int64_t len) {
    std::int64_t p = 0;
    __m512i cols = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(16);
    for (std::int64_t j = 0; j < n0; j += 16, cols = _mm512_add_epi32(cols, step)) {
        const __mmask16 in = n0 - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n0 - j)) - 1u);
        const __m512 v = _mm512_maskz_loadu_ps(in, x + j);
        const __mmask16 m = _mm512_mask_cmp_ps_mask(in, v, _mm512_setzero_ps(), _CMP_NEQ_UQ);
        if (!m) continue;
        const int k = __builtin_popcount(m);
        if (p + 16 <= len) {
            _mm512_storeu_ps(val + p, _mm512_maskz_compress_ps(m, v));
            _mm512_storeu_si512(ind + p, _mm512_maskz_compress_epi32(m, cols));
        } else {
            const __mmask16 out = __mmask16((1u << k) - 1u);
            _mm512_mask_storeu_ps(val + p, out, _mm512_maskz_compress_ps(m, v));
            _mm512_mask_storeu_epi32(ind + p, out, _mm512_maskz_compress_epi32(m, cols));
        }
        p += k;
    }
}
#endif

// CSR of x (n x n0, row-major) into indptr (n + 1, from counts_rows' counts already summed into it:
// indptr[r] = start of row r), ind and val (indptr[n] entries each).
template <class T>
inline void pack_rows(const T* x, std::int64_t n, std::int64_t n0, const std::int64_t* indptr, std::int32_t* ind,
                      T* val) {
#ifdef PFG_X86
    const bool v512 = std::is_same<T, float>::value && simd::level() == 2;
#endif
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n * n0 >= (1 << 18))
#endif
    for (std::int64_t r = 0; r < n; ++r) {
        const std::int64_t p0 = indptr[r];
#ifdef PFG_X86
        if constexpr (std::is_same<T, float>::value)
            if (v512) {
                pack_row_avx512(x + r * n0, n0, ind + p0, val + p0, indptr[r + 1] - p0);
                continue;
            }
#endif
        pack_row_body(x + r * n0, n0, ind + p0, val + p0);
    }
}

}  // namespace sparse
}  // namespace pfg
