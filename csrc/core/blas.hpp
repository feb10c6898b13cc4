// Thin templated wrapper over scipy-openblas32's CBLAS (symbols carry the scipy_ prefix).
#pragma once
#include <cblas.h>

#include <mutex>

#include "core/parallel.hpp"

namespace pfg {

// C = alpha * op(A) * op(B) + beta * C, all row-major.
inline void gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
    scipy_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                      m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
    scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                      m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

inline int blas_num_threads() { return scipy_openblas_get_num_threads(); }
inline void blas_set_num_threads(int n) { scipy_openblas_set_num_threads(n); }
inline const char* blas_config() { return scipy_openblas_get_config(); }

// OpenBLAS threads for one call of `work` multiply-adds: one below call_work().blas (a pool woken per
// call spins against the caller's next kernels), else the cores other processes leave free.
inline int blas_threads_for(double work) {
    return work < call_work().blas ? 1 : FreeCores::get().of(blas_num_threads());
}

// While a guard lives, OpenBLAS runs on at most `cap` threads: 1 where the caller's own (OpenMP)
// threads call it and must not each start BLAS's, or where the call is too small to wake a team; the
// free cores (parallel.hpp) on a busy machine. The setting is process-wide, so guards of nested or
// concurrent calls share it: the first one in saves the count, each one may lower it, the last one out
// restores what the first found.
class BlasCap {
public:
    explicit BlasCap(int cap) {
        std::lock_guard<std::mutex> lock(mu());
        if (depth()++ == 0) {
            saved() = blas_num_threads();
            applied() = saved();
        }
        if (cap < applied()) {
            applied() = cap < 1 ? 1 : cap;
            blas_set_num_threads(applied());
        }
    }
    ~BlasCap() {
        std::lock_guard<std::mutex> lock(mu());
        if (--depth() == 0 && applied() != saved()) blas_set_num_threads(saved());
    }
    BlasCap(const BlasCap&) = delete;
    BlasCap& operator=(const BlasCap&) = delete;

private:
    static std::mutex& mu() {
        static std::mutex m;
        return m;
    }
    static int& depth() {
        static int d = 0;
        return d;
    }
    static int& saved() {
        static int n = 1;
        return n;
    }
    static int& applied() {
        static int n = 1;
        return n;
    }
};

}  // namespace pfg
