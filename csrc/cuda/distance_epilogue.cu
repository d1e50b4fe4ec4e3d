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

// 2-D grid-stride loops over (r, c): any number of rows and columns, whatever the
// grid limits (grid.y <= 65535), with kTile × kTile threads per block.
#define HUDD_TILE_LOOP(r, rows, c, cols)                                                    \
  for (int64_t r = blockIdx.y * static_cast<int64_t>(blockDim.y) + threadIdx.y; r < (rows); \
       r += static_cast<int64_t>(blockDim.y) * gridDim.y)                                   \
    for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;          \
         c < (cols); c += static_cast<int64_t>(blockDim.x) * gridDim.x)

template <typename T>
__global__ void pdist_epilogue_kernel(const T* gram, int64_t ldg, const double* nx,
                                      const double* ny, int64_t rows, int64_t cols, int64_t row0,
                                      int64_t col0, const T* xi, const T* xj, int64_t dim,
                                      double tau, int64_t n, double* out) {
  HUDD_TILE_LOOP(r, rows, c, cols) {
    const int64_t i = row0 + r, j = col0 + c;
    if (j > i) out[condensed_index(n, i, j)] = pair_distance(gram, ldg, nx, ny, r, c, xi, xj,
                                                             dim, tau);
  }
}

template <typename T>
__global__ void cdist_epilogue_kernel(const T* gram, int64_t ldg, const double* nx,
                                      const double* ny, int64_t rows, int64_t cols, const T* xi,
                                      const T* xj, int64_t dim, double tau, double* out,
                                      int64_t ldo) {
  HUDD_TILE_LOOP(r, rows, c, cols) {
    out[r * ldo + c] = pair_distance(gram, ldg, nx, ny, r, c, xi, xj, dim, tau);
  }
}

constexpr int kReduceThreads = 256;  // a power of two: the shared-memory tree halves it

// Block-wide reduction of one value per thread; every thread gets the result. `shared`
// holds kReduceThreads entries; the trailing barrier lets the caller reuse it.
template <typename V, typename Op>
__device__ V block_reduce(V v, V* shared, Op op) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kReduceThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) shared[threadIdx.x] = op(shared[threadIdx.x], shared[threadIdx.x + stride]);
    __syncthreads();
  }
  const V result = shared[0];
  __syncthreads();
  return result;
}

struct Add {
  __device__ double operator()(double a, double b) const { return a + b; }
};
struct Max {
  __device__ double operator()(double a, double b) const { return a > b ? a : b; }
};

// One block per row (grid-stride over rows): centre it and reduce its squared norm.
template <typename T>
__global__ void center_rows_kernel(const T* x, const T* mean, int64_t rows, int64_t dim, T* out,
                                   double* sqnorm) {
  __shared__ double partial[kReduceThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    double s = 0.0;
    for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) {
      const T c = x[r * dim + k] - mean[k];
      out[r * dim + k] = c;
      s += static_cast<double>(c) * static_cast<double>(c);
    }
    s = block_reduce(s, partial, Add{});
    if (threadIdx.x == 0) sqnorm[r] = s;
  }
}

// Row maxima of the square matrix behind a condensed vector: one block per row, the
// threads stride along the row (the part right of the diagonal is contiguous and read
// coalesced), then a block reduction. Distances are >= 0, so 0 is the identity.
__global__ void condensed_row_max_kernel(const double* condensed, int64_t n, double* out) {
  __shared__ double partial[kReduceThreads];
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    double m = 0.0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      if (j == i) continue;
      const double v = condensed[j < i ? condensed_index(n, j, i) : condensed_index(n, i, j)];
      m = v > m ? v : m;
    }
    m = block_reduce(m, partial, Max{});
    if (threadIdx.x == 0) out[i] = m;
  }
}

// Rows [r0, r1) scaled: blocks stride over rows (grid.y) and columns (grid.x).
__global__ void condensed_rows_kernel(const double* condensed, int64_t n, int64_t r0, int64_t r1,
                                      const double* scale, float* out) {
  for (int64_t i = r0 + blockIdx.y; i < r1; i += gridDim.y) {
    const double inv = scale[i] > 0.0 ? 1.0 / scale[i] : 1.0;
    for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
         j += static_cast<int64_t>(blockDim.x) * gridDim.x) {
      float v = 0.0f;
      if (j != i)
        v = static_cast<float>(
            condensed[j < i ? condensed_index(n, j, i) : condensed_index(n, i, j)] * inv);
      out[(i - r0) * n + j] = v;
    }
  }
}

// Blocks along one grid dimension: enough to fill the GPU, never above `limit` (the
// kernels stride over the rest).
unsigned grid_blocks(int64_t items, int64_t per_block, int64_t limit) {
  const int64_t b = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 1 ? 1 : (b > limit ? limit : b));
}

constexpr int64_t kGridY = 65535;      // CUDA's limit of grid.y and grid.z
constexpr int64_t kGridX = 1 << 20;    // far below 2^31 - 1; each thread strides beyond

dim3 tile_grid(int64_t rows, int64_t cols) {
  return dim3(grid_blocks(cols, kTile, kGridX), grid_blocks(rows, kTile, kGridY));
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
  center_rows_kernel<T><<<grid_blocks(rows, 1, kGridX), kReduceThreads, 0,
                          static_cast<cudaStream_t>(stream)>>>(x, mean, rows, dim, out, sqnorm);
  check_launch("center_rows");
}

void condensed_row_max_cuda(const double* condensed, int64_t n, double* out, void* stream) {
  if (n == 0) return;
  condensed_row_max_kernel<<<grid_blocks(n, 1, kGridX), kReduceThreads, 0,
                             static_cast<cudaStream_t>(stream)>>>(condensed, n, out);
  check_launch("condensed_row_max");
}

void condensed_rows_cuda(const double* condensed, int64_t n, int64_t r0, int64_t r1,
                         const double* scale, float* out, void* stream) {
  if (r1 <= r0 || n == 0) return;
  const dim3 grid(grid_blocks(n, 256, kGridX), grid_blocks(r1 - r0, 1, kGridY));
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
