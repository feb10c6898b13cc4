// The one CPU-feature dispatch of the kernels that have instruction-set clones (optimizer updates,
// output layer, bias + activation, sparse first layer, scans, the numerical gradient's rank-1 rows).
// The wheel is built for the baseline x86-64 (never -march=native): each clone carries its own
// target attribute and level() picks one at run time. Tests force every lower level with
// request() (_core._set_isa) so that each clone is exercised on the machine they run on.
#pragma once

#include <algorithm>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define PFG_X86 1
#define PFG_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define PFG_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#endif

#if defined(__GNUC__)
#define PFG_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define PFG_ALWAYS_INLINE inline
#endif

namespace pfg {
namespace simd {

enum Level : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// What the CPU supports: kAvx512 (AVX-512 F + VL), kAvx2 (AVX2 + FMA) or kBaseline.
inline int detected() {
#ifdef PFG_X86
    static const int level = []() {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return int(kAvx512);
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return int(kAvx2);
        return int(kBaseline);
    }();
    return level;
#else
    return kBaseline;
#endif
}

// The level tests ask for (-1: the best the CPU has).
inline int& requested() {
    static int level = -1;
    return level;
}

// The level every dispatch uses now: the request, capped at what the CPU has.
inline int level() {
    const int want = requested();
    return want < 0 ? detected() : std::min(want, detected());
}

}  // namespace simd

#ifdef PFG_X86
// V512<T>: the AVX-512 operations the kernels use, by element type (float: 16 lanes, double: 8).
#define PFG_AVX512 __attribute__((target("avx512f"), always_inline)) inline

template <class T>
struct V512;
template <>
struct V512<float> {
    using R = __m512;
    using M = __mmask16;
    static constexpr int W = 16;
    static PFG_AVX512 R zero() { return _mm512_setzero_ps(); }
    static PFG_AVX512 R set1(float v) { return _mm512_set1_ps(v); }
    static PFG_AVX512 R load(const float* p) { return _mm512_loadu_ps(p); }
    static PFG_AVX512 R loadm(M m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
    static PFG_AVX512 void store(float* p, R v) { _mm512_storeu_ps(p, v); }
    static PFG_AVX512 void storem(float* p, M m, R v) { _mm512_mask_storeu_ps(p, m, v); }
    static PFG_AVX512 R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
    static PFG_AVX512 R mul(R a, R b) { return _mm512_mul_ps(a, b); }
    static PFG_AVX512 R add(R a, R b) { return _mm512_add_ps(a, b); }
    static PFG_AVX512 R sub(R a, R b) { return _mm512_sub_ps(a, b); }
    static PFG_AVX512 M nonzero(R a) { return _mm512_cmp_ps_mask(a, zero(), _CMP_NEQ_UQ); }  // NaN counts
};
template <>
struct V512<double> {
    using R = __m512d;
    using M = __mmask8;
    static constexpr int W = 8;
    static PFG_AVX512 R zero() { return _mm512_setzero_pd(); }
    static PFG_AVX512 R set1(double v) { return _mm512_set1_pd(v); }
    static PFG_AVX512 R load(const double* p) { return _mm512_loadu_pd(p); }
    static PFG_AVX512 R loadm(M m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
    static PFG_AVX512 void store(double* p, R v) { _mm512_storeu_pd(p, v); }
    static PFG_AVX512 void storem(double* p, M m, R v) { _mm512_mask_storeu_pd(p, m, v); }
    static PFG_AVX512 R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
    static PFG_AVX512 R mul(R a, R b) { return _mm512_mul_pd(a, b); }
    static PFG_AVX512 R add(R a, R b) { return _mm512_add_pd(a, b); }
    static PFG_AVX512 R sub(R a, R b) { return _mm512_sub_pd(a, b); }
    static PFG_AVX512 M nonzero(R a) { return _mm512_cmp_pd_mask(a, zero(), _CMP_NEQ_UQ); }  // NaN counts
};
#endif  // PFG_X86

}  // namespace pfg
