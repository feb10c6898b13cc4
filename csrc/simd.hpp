// The one CPU-feature dispatch of the kernels that have instruction-set clones (optimizer updates,
// output layer, bias + activation, sparse first layer, scans, the numerical gradient's rank-1 rows).
// The wheel is built for the baseline x86-64 (never -march=native): each clone carries its own
// target attribute and level() picks one at run time. Tests force every lower level with
// request() (_core._set_isa) so that each clone is exercised on the machine they run on.
#pragma once

#include <algorithm>

#if defined(__GNUC__) && defined(__x86_64__)
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
}  // namespace pfg
