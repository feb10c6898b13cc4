// Thin templated wrapper over scipy-openblas32's CBLAS (symbols carry the scipy_ prefix).
#pragma once
#include <cblas.h>

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

}  // namespace pfg
