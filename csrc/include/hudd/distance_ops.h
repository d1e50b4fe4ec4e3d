// Entry points of the distance kernels: a cpu/ and (when built with CUDA) a cuda/
// implementation with the same arguments; the CUDA ones take a cudaStream_t as void*.
// Pointers are raw and contiguous (row-major); the Python layer validates shapes.
#pragma once
#include <cstdint>

namespace hudd {

// Block epilogue of pdist: gram (rows x cols, leading dim ldg) holds the dot products
// of the centred rows [row0, row0+rows) and [col0, col0+cols); nx/ny their squared
// norms; xi/xj the raw (uncentred) rows used for exact recomputation. Writes pairs
// i < j into the condensed vector `out` of n points.
template <typename T>
void pdist_epilogue_cpu(const T* gram, int64_t ldg, const double* nx, const double* ny,
                        int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                        const T* xi, const T* xj, int64_t dim, double tau, int64_t n,
                        double* out);

// Block epilogue of cdist: same inputs, writes out[r * ldo + c] for every pair.
template <typename T>
void cdist_epilogue_cpu(const T* gram, int64_t ldg, const double* nx, const double* ny,
                        int64_t rows, int64_t cols, const T* xi, const T* xj, int64_t dim,
                        double tau, double* out, int64_t ldo);

// out = x - mean (rows x dim) and sqnorm[r] = ||out[r]||^2 accumulated in float64:
// the centring that keeps the GEMM form accurate, in one pass over memory.
template <typename T>
void center_rows_cpu(const T* x, const T* mean, int64_t rows, int64_t dim, T* out,
                     double* sqnorm);

// Largest entry of every row of the square matrix behind a condensed vector.
void condensed_row_max_cpu(const double* condensed, int64_t n, double* out);

// Rows [r0, r1) of the square matrix, row i divided by scale[i] (0 left as is), as float32.
void condensed_rows_cpu(const double* condensed, int64_t n, int64_t r0, int64_t r1,
                        const double* scale, float* out);

#ifdef HUDD_WITH_CUDA
template <typename T>
void pdist_epilogue_cuda(const T* gram, int64_t ldg, const double* nx, const double* ny,
                         int64_t rows, int64_t cols, int64_t row0, int64_t col0,
                         const T* xi, const T* xj, int64_t dim, double tau, int64_t n,
                         double* out, void* stream);
template <typename T>
void cdist_epilogue_cuda(const T* gram, int64_t ldg, const double* nx, const double* ny,
                         int64_t rows, int64_t cols, const T* xi, const T* xj, int64_t dim,
                         double tau, double* out, int64_t ldo, void* stream);
template <typename T>
void center_rows_cuda(const T* x, const T* mean, int64_t rows, int64_t dim, T* out,
                      double* sqnorm, void* stream);
void condensed_row_max_cuda(const double* condensed, int64_t n, double* out, void* stream);
void condensed_rows_cuda(const double* condensed, int64_t n, int64_t r0, int64_t r1,
                         const double* scale, float* out, void* stream);
#endif

}  // namespace hudd
