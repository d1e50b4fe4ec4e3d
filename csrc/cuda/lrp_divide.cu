// CUDA stabilised division of the LRP rules: same contract as csrc/cpu/lrp_divide.cpp.
#include "hudd/cuda_check.cuh"
#include "hudd/lrp.h"
#include "hudd/lrp_cuda.cuh"
#include "hudd/lrp_ops.h"

namespace hudd {
namespace {

template <typename T>
__global__ void divide1_kernel(const T* r, const T* z, int64_t total, T e, T a, T* out) {
  HUDD_GRID_STRIDE(i, total) out[i] = a * r[i] / lrp_stab(z[i], e);
}

template <typename T>
__global__ void divide2_kernel(const T* r, const T* z, const T* gate, int64_t total, int64_t n,
                               T e, T a, T b, T* out) {
  HUDD_GRID_STRIDE(i, total) {
    const int64_t bi = i / n, j = i - bi * n;
    T sp = a * r[i] / lrp_stab(z[bi * 2 * n + j], e);
    T sn = b * r[i] / lrp_stab(z[bi * 2 * n + n + j], e);
    if (gate) {
      sp = gate[i] > T(0) ? sp : T(0);
      sn = gate[i] < T(0) ? sn : T(0);
    }
    out[bi * 2 * n + j] = sp;
    out[bi * 2 * n + n + j] = sn;
  }
}

}  // namespace

template <typename T>
void lrp_divide_cuda(const T* r, const T* z, const T* gate, int64_t batch, int64_t n, double eps,
                     double cp, double cn, int parts, T* out, void* stream) {
  const int64_t total = batch * n;
  if (total == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  if (parts == 1)
    divide1_kernel<T><<<lrp_blocks(total), kLrpThreads, 0, s>>>(r, z, total, T(eps), T(cp), out);
  else
    divide2_kernel<T><<<lrp_blocks(total), kLrpThreads, 0, s>>>(r, z, gate, total, n, T(eps),
                                                                T(cp), T(cn), out);
  check_launch("lrp_divide");
}

template void lrp_divide_cuda<float>(const float*, const float*, const float*, int64_t, int64_t,
                                     double, double, double, int, float*, void*);
template void lrp_divide_cuda<double>(const double*, const double*, const double*, int64_t,
                                      int64_t, double, double, double, int, double*, void*);

}  // namespace hudd
