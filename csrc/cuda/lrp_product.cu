// CUDA input x contribution product: same contract as csrc/cpu/lrp_product.cpp.
#include "hudd/cuda_check.cuh"
#include "hudd/lrp.h"
#include "hudd/lrp_cuda.cuh"
#include "hudd/lrp_ops.h"

namespace hudd {
namespace {

template <typename T>
__global__ void product_kernel(const T* x, const T* c, int64_t total, int64_t n, int mode, T lo,
                               T hi, bool accumulate, T* out) {
  const int k = lrp_parts(mode);
  HUDD_GRID_STRIDE(i, total) {
    const int64_t bi = i / n, j = i - bi * n;
    T s = T(0);
    for (int p = 0; p < k; ++p) s += lrp_part(x[i], mode, p, lo, hi) * c[(bi * k + p) * n + j];
    out[i] = accumulate ? out[i] + s : s;
  }
}

}  // namespace

template <typename T>
void lrp_product_cuda(const T* x, const T* c, int64_t batch, int64_t n, int mode, double low,
                      double high, bool accumulate, T* out, void* stream) {
  const int64_t total = batch * n;
  if (total == 0) return;
  product_kernel<T><<<lrp_blocks(total), kLrpThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      x, c, total, n, mode, T(low), T(high), accumulate, out);
  check_launch("lrp_product");
}

template void lrp_product_cuda<float>(const float*, const float*, int64_t, int64_t, int, double,
                                      double, bool, float*, void*);
template void lrp_product_cuda<double>(const double*, const double*, int64_t, int64_t, int,
                                       double, double, bool, double*, void*);

}  // namespace hudd
