// Thin templated wrapper over scipy-openblas32's CBLAS (symbols carry the scipy_ prefix).
#pragma once
#include <cblas.h>

#include <mutex>

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

// While a guard that is `on` lives, OpenBLAS runs single-threaded: the caller's own (OpenMP) threads
// call it and must not each start BLAS's. The setting is process-wide, so guards of concurrent calls
// share it: the first one in sets 1, the last one out restores what it found.
class BlasSingleThread {
public:
    explicit BlasSingleThread(bool on) : on_(on) {
        if (!on_) return;
        std::lock_guard<std::mutex> lock(mu());
        if (depth()++ == 0) {
            saved() = blas_num_threads();
            if (saved() > 1) blas_set_num_threads(1);
        }
    }
    ~BlasSingleThread() {
        if (!on_) return;
        std::lock_guard<std::mutex> lock(mu());
        if (--depth() == 0 && saved() > 1) blas_set_num_threads(saved());
    }
    BlasSingleThread(const BlasSingleThread&) = delete;
    BlasSingleThread& operator=(const BlasSingleThread&) = delete;

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
    bool on_;
};

}  // namespace pfg
