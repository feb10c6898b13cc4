// Shared enums and argument checks for the kernels (no pybind11 here).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <stdexcept>
#include <string>
#include <vector>

namespace pfg {

// Codes and names of pyfastgrad/spec.py's LOSSES with mlp=True (activations: kernels/activations.hpp,
// optimizers: kernels/optim.hpp); tests/test_spec.py compares them with the registry through _core._spec().
enum class Loss { Softmax = 0, Mse = 1, Hinge = 2 };
constexpr const char* kLossNames[] = {"softmax", "mse", "hinge"};  // by code

constexpr double kDelta = 1e-7;  // inside log() of the cross-entropy, as the tutorials

// The code of name s in a name table (by code), else invalid_argument listing the names.
template <std::size_t N>
inline int parse_name(const char* const (&names)[N], const std::string& s, const char* what) {
    std::string known;
    for (std::size_t i = 0; i < N; ++i) {
        if (s == names[i]) return int(i);
        known += (i ? ", " : "") + std::string(names[i]);
    }
    throw std::invalid_argument("unknown " + std::string(what) + " '" + s + "' (expected one of " + known + ")");
}
inline Loss parse_loss(const std::string& s) { return static_cast<Loss>(parse_name(kLossNames, s, "loss")); }

// exp(x) from arithmetic only (no libm call), so that loops over arrays vectorise: the activations
// and the softmax spend most of a tiny net's step in exp. x = n ln2 + r, |r| <= ln2/2 (Cody-Waite
// split of ln2), exp(r) by its Taylor series cut where the remainder is below half an ulp (degree 7
// float, 13 double), 2^n built in the exponent bits. Within ~2 ulp of std::exp; NaN stays NaN,
// overflow gives inf, underflow 0 (results below the normal range flush to 0).
template <class T>
inline T exp_fast(T x) {
    constexpr bool F = sizeof(T) == 4;
    using I = typename std::conditional<F, std::int32_t, std::int64_t>::type;
    constexpr T hi = F ? T(88.72283) : T(709.782712893384);
    constexpr T lo = F ? T(-87.33654) : T(-708.3964185322641);
    constexpr T log2e = T(1.4426950408889634);
    constexpr T ln2_hi = F ? T(0.693145751953125) : T(0.6931471803691238);
    constexpr T ln2_lo = F ? T(1.428606765330187e-06) : T(1.9082149292705877e-10);
    constexpr T shifter = F ? T(12582912.0) : T(6755399441055744.0);  // 1.5 * 2^mantissa bits
    constexpr int mant = F ? 23 : 52;
    constexpr I bias = F ? 127 : 1023;
    const T xc = x > hi ? hi : (x < lo ? lo : x);
    const T t = xc * log2e + shifter;  // n = round(x log2 e) sits in t's low mantissa bits
    const T n = t - shifter;
    const T r = (xc - n * ln2_hi) - n * ln2_lo;
    T p;  // Horner, written out so the loop around exp_fast has no inner control flow
    if constexpr (F) {
        p = T(1.0 / 5040);
        p = p * r + T(1.0 / 720); p = p * r + T(1.0 / 120); p = p * r + T(1.0 / 24);
        p = p * r + T(1.0 / 6); p = p * r + T(0.5); p = p * r + T(1); p = p * r + T(1);
    } else {
        p = T(1.0 / 6227020800.0);
        p = p * r + T(1.0 / 479001600); p = p * r + T(1.0 / 39916800); p = p * r + T(1.0 / 3628800);
        p = p * r + T(1.0 / 362880); p = p * r + T(1.0 / 40320); p = p * r + T(1.0 / 5040);
        p = p * r + T(1.0 / 720); p = p * r + T(1.0 / 120); p = p * r + T(1.0 / 24);
        p = p * r + T(1.0 / 6); p = p * r + T(0.5); p = p * r + T(1); p = p * r + T(1);
    }
    // 2^n in the exponent bits. Unsigned arithmetic: the shift drops t's high bits by design, which
    // would be undefined behaviour (signed overflow) on a signed integer.
    using U = typename std::make_unsigned<I>::type;
    U tb;
    std::memcpy(&tb, &t, sizeof(T));
    const U sb = (tb + static_cast<U>(bias)) << mant;  // only n's low bits survive the shift
    T scale;
    std::memcpy(&scale, &sb, sizeof(T));
    T y = p * scale;
    y = x > hi ? std::numeric_limits<T>::infinity() : y;
    y = x < lo ? T(0) : y;
    return x != x ? x : y;  // NaN in, NaN out
}


inline std::int64_t count_params(const std::vector<std::int64_t>& sizes) {
    std::int64_t n = 0;
    for (size_t i = 1; i < sizes.size(); ++i) n += sizes[i - 1] * sizes[i] + sizes[i];
    return n;
}

// x (count entries) read as T: x itself when it is of type T, else a widened copy in buf (grow-only: a new
// buffer per call would page-fault). The tutorials feed float32 images to float64 nets.
template <class T>
inline const T* as_type(const T* x, std::int64_t, std::vector<T>&) {
    return x;
}
template <class T, class X>
inline const T* as_type(const X* x, std::int64_t count, std::vector<T>& buf) {
    if (buf.size() < static_cast<size_t>(count)) buf.resize(static_cast<size_t>(count));
    for (std::int64_t i = 0; i < count; ++i) buf[static_cast<size_t>(i)] = static_cast<T>(x[i]);
    return buf.data();
}

}  // namespace pfg
