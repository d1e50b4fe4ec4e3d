// CUDA residual-addition split, Norm rule: same contract as csrc/cpu/lrp_sum.cpp.
#include "hudd/cuda_check.cuh"
#include "hudd/lrp.h"
#include "hudd/lrp_cuda.cuh"
#include "hudd/lrp_ops.h"

namespace hudd {
namespace {

template <typename T>
__global__ void sum_split_kernel(const T* a, const T* b, const T* r, int64_t n, T e, T* ra,
                                 T* rb) {
  HUDD_GRID_STRIDE(i, n) {
    const T s = r[i] / lrp_stab(a[i] + b[i], e);
    ra[i] = a[i] * s;
    rb[i] = b[i] * s;
  }
}

}  // namespace

template <typename T>
void lrp_sum_split_cuda(const T* a, const T* b, const T* r, int64_t n, double eps, T* ra, T* rb,
                        void* stream) {
  if (n == 0) return;
  sum_split_kernel<T><<<lrp_blocks(n), kLrpThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      a, b, r, n, T(eps), ra, rb);
  check_launch("lrp_sum_split");
}

template void lrp_sum_split_cuda<float>(const float*, const float*, const float*, int64_t, double,
                                        float*, float*, void*);
template void lrp_sum_split_cuda<double>(const double*, const double*, const double*, int64_t,
                                         double, double*, double*, void*);

}  // namespace hudd
