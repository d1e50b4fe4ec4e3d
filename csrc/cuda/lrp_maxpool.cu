// CUDA winner-take-all max-pool routing: same contract as csrc/cpu/lrp_maxpool.cpp
// (zero fill, then one atomicAdd per output: overlapping windows may share a winner).
#include "hudd/cuda_check.cuh"
#include "hudd/lrp_cuda.cuh"
#include "hudd/lrp_ops.h"

namespace hudd {
namespace {

template <typename T>
__global__ void zero_kernel(T* out, int64_t total) {
  HUDD_GRID_STRIDE(i, total) out[i] = T(0);
}

template <typename T>
__global__ void route_kernel(const T* r, const int64_t* idx, int64_t total, int64_t n_out,
                             int64_t n_in, T* out) {
  HUDD_GRID_STRIDE(i, total) {
    const int64_t p = i / n_out;
    atomicAdd(out + p * n_in + idx[i], r[i]);
  }
}

}  // namespace

template <typename T>
void lrp_maxpool_route_cuda(const T* r, const int64_t* idx, int64_t planes, int64_t n_out,
                            int64_t n_in, bool accumulate, T* out, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (!accumulate && planes * n_in > 0) {
    zero_kernel<T><<<lrp_blocks(planes * n_in), kLrpThreads, 0, s>>>(out, planes * n_in);
    check_launch("lrp_maxpool_route (zero)");
  }
  const int64_t total = planes * n_out;
  if (total == 0) return;
  route_kernel<T><<<lrp_blocks(total), kLrpThreads, 0, s>>>(r, idx, total, n_out, n_in, out);
  check_launch("lrp_maxpool_route");
}

template void lrp_maxpool_route_cuda<float>(const float*, const int64_t*, int64_t, int64_t,
                                            int64_t, bool, float*, void*);
template void lrp_maxpool_route_cuda<double>(const double*, const int64_t*, int64_t, int64_t,
                                             int64_t, bool, double*, void*);

}  // namespace hudd
