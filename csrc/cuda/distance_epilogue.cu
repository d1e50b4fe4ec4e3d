// CUDA epilogue of the GEMM distances: same contract as csrc/cpu/distance_epilogue.cpp.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "hudd/cuda_check.cuh"
#include "hudd/distance.h"
#include "hudd/distance_ops.h"

namespace hudd {
namespace {

constexpr int kTile = 16;

template <typename T>
__device__ double pair_distance(const T* gram, int64_t ldg, const double* nx, const double* ny,
                                int64_t r, int64_t c, const T* xi, const T* xj, int64_t dim,
                                double tau) {
  double d2 = gemm_sqdist(nx[r], ny[c], static_cast<double>(gram[r * ldg + c]));
  if (needs_exact(d2, nx[r], ny[c], tau)) {
    // Rare: only cancelled pairs take this per-thread loop.
    const T* a = xi + r * dim;
    const T* b = xj + c * dim;
    double s = 0.0;
    for (int64_t k = 0; k < dim; ++k) {
      const double d = static_cast<double>(a[k]) - static_cast<double>(b[k]);
      s += d * d;
    }
    d2 = s;
  }
  return sqrt(d2);
}

template <typename T>
__global__ void pdist_epilogue_kernel(const T* gram, int64_t ldg, const double* nx,
                                      const double* ny, int64_t rows, int64_t cols, int64_t row0,
                                      int64_t col0, const T* xi, const T* xj, int64_t dim,
                                      double tau, int64_t n, double* out) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t r = blockIdx.y * static_cast<int64_t>(blockDim.y) + threadIdx.y;
  if (r >= rows || c >= cols) return;
  const int64_t i = row0 + r, j = col0 + c;
  if (j <= i) return;
  out[condensed_index(n, i, j)] = pair_distance(gram, ldg, nx, ny, r, c, xi, xj, dim, tau);
}

template <typename T>
__global__ void cdist_epilogue_kernel(const T* gram, int64_t ldg, const double* nx,
                                      const double* ny, int64_t rows, int64_t cols, const T* xi,
                                      const T* xj, int64_t dim, double tau, double* out,
                                      int64_t ldo) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t r = blockIdx.y * static_cast<int64_t>(blockDim.y) + threadIdx.y;
  if (r >= rows || c >= cols) return;
  out[r * ldo + c] = pair_distance(gram, ldg, nx, ny, r, c, xi, xj, dim, tau);
}

// One block per row: centre it and reduce its squared norm in shared memory.
template <typename T>
__global__ void center_rows_kernel(const T* x, const T* mean, int64_t dim, T* out,
                                   double* sqnorm) {
  __shared__ double partial[256];
  const int64_t r = blockIdx.x;
  double s = 0.0;
  for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) {
    const T c = x[r * dim + k] - mean[k];
    out[r * dim + k] = c;
    s += static_cast<double>(c) * static_cast<double>(c);
  }
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) sqnorm[r] = partial[0];
}

__global__ void condensed_row_max_kernel(const double* condensed, int64_t n, double* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  double m = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    if (j == i) continue;
    const double v = condensed[j < i ? condensed_index(n, j, i) : condensed_index(n, i, j)];
    m = v > m ? v : m;
  }
  out[i] = m;
}

__global__ void condensed_rows_kernel(const double* condensed, int64_t n, int64_t r0, int64_t r1,
                                      const double* scale, float* out) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t i = r0 + blockIdx.y;
  if (j >= n || i >= r1) return;
  float v = 0.0f;
  if (j != i) {
    const double inv = scale[i] > 0.0 ? 1.0 / scale[i] : 1.0;
    v = static_cast<float>(
        condensed[j < i ? condensed_index(n, j, i) : condensed_index(n, i, j)] * inv);
  }
  out[(i - r0) * n + j] = v;
}

dim3 tile_grid(int64_t rows, int64_t cols) {
  return dim3(static_cast<unsigned>((cols + kTile - 1) / kTile),
              static_cast<unsigned>((rows + kTile - 1) / kTile));
}

}  // namespace

template <typename T>
void pdist_epilogue_cuda(const T* gram, int64_t ldg, const double* nx, const double* ny,
                         int64_t rows, int64_t cols, int64_t row0, int64_t col0, const T* xi,
                         const T* xj, int64_t dim, double tau, int64_t n, double* out,
                         void* stream) {
  if (rows == 0 || cols == 0) return;
  pdist_epilogue_kernel<T><<<tile_grid(rows, cols), dim3(kTile, kTile), 0,
                             static_cast<cudaStream_t>(stream)>>>(
      gram, ldg, nx, ny, rows, cols, row0, col0, xi, xj, dim, tau, n, out);
  check_launch("pdist_epilogue");
}

template <typename T>
void cdist_epilogue_cuda(const T* gram, int64_t ldg, const double* nx, const double* ny,
                         int64_t rows, int64_t cols, const T* xi, const T* xj, int64_t dim,
                         double tau, double* out, int64_t ldo, void* stream) {
  if (rows == 0 || cols == 0) return;
  cdist_epilogue_kernel<T><<<tile_grid(rows, cols), dim3(kTile, kTile), 0,
                             static_cast<cudaStream_t>(stream)>>>(gram, ldg, nx, ny, rows, cols,
                                                                  xi, xj, dim, tau, out, ldo);
  check_launch("cdist_epilogue");
}

template <typename T>
void center_rows_cuda(const T* x, const T* mean, int64_t rows, int64_t dim, T* out,
                      double* sqnorm, void* stream) {
  if (rows == 0) return;
  center_rows_kernel<T><<<static_cast<unsigned>(rows), 256, 0,
                          static_cast<cudaStream_t>(stream)>>>(x, mean, dim, out, sqnorm);
  check_launch("center_rows");
}

void condensed_row_max_cuda(const double* condensed, int64_t n, double* out, void* stream) {
  if (n == 0) return;
  condensed_row_max_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0,
                             static_cast<cudaStream_t>(stream)>>>(condensed, n, out);
  check_launch("condensed_row_max");
}

void condensed_rows_cuda(const double* condensed, int64_t n, int64_t r0, int64_t r1,
                         const double* scale, float* out, void* stream) {
  if (r1 <= r0 || n == 0) return;
  const dim3 grid(static_cast<unsigned>((n + 255) / 256), static_cast<unsigned>(r1 - r0));
  condensed_rows_kernel<<<grid, 256, 0, static_cast<cudaStream_t>(stream)>>>(condensed, n, r0, r1,
                                                                            scale, out);
  check_launch("condensed_rows");
}

template void pdist_epilogue_cuda<float>(const float*, int64_t, const double*, const double*,
                                         int64_t, int64_t, int64_t, int64_t, const float*,
                                         const float*, int64_t, double, int64_t, double*, void*);
template void pdist_epilogue_cuda<double>(const double*, int64_t, const double*, const double*,
                                          int64_t, int64_t, int64_t, int64_t, const double*,
                                          const double*, int64_t, double, int64_t, double*, void*);
template void center_rows_cuda<float>(const float*, const float*, int64_t, int64_t, float*,
                                      double*, void*);
template void center_rows_cuda<double>(const double*, const double*, int64_t, int64_t, double*,
                                       double*, void*);
template void cdist_epilogue_cuda<float>(const float*, int64_t, const double*, const double*,
                                         int64_t, int64_t, const float*, const float*, int64_t,
                                         double, double*, int64_t, void*);
template void cdist_epilogue_cuda<double>(const double*, int64_t, const double*, const double*,
                                          int64_t, int64_t, const double*, const double*, int64_t,
                                          double, double*, int64_t, void*);

}  // namespace hudd
