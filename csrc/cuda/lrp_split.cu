// CUDA input split of the sign-splitting LRP rules: same contract as csrc/cpu/lrp_split.cpp.
#include "hudd/cuda_check.cuh"
#include "hudd/lrp.h"
#include "hudd/lrp_cuda.cuh"
#include "hudd/lrp_ops.h"

namespace hudd {
namespace {

template <typename T>
__global__ void split_kernel(const T* x, int64_t total, int64_t n, int mode, T lo, T hi, T* out) {
  const int k = lrp_parts(mode);
  HUDD_GRID_STRIDE(i, total) {
    const int64_t bi = i / n, j = i - bi * n;
    for (int p = 0; p < k; ++p) out[(bi * k + p) * n + j] = lrp_part(x[i], mode, p, lo, hi);
  }
}

}  // namespace

template <typename T>
void lrp_split_cuda(const T* x, int64_t batch, int64_t n, int mode, double low, double high,
                    T* out, void* stream) {
  const int64_t total = batch * n;
  if (total == 0) return;
  split_kernel<T><<<lrp_blocks(total), kLrpThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      x, total, n, mode, T(low), T(high), out);
  check_launch("lrp_split");
}

template void lrp_split_cuda<float>(const float*, int64_t, int64_t, int, double, double, float*,
                                    void*);
template void lrp_split_cuda<double>(const double*, int64_t, int64_t, int, double, double,
                                     double*, void*);

}  // namespace hudd
