// CUDA winner-take-all max-pool routing: same contract as csrc/cpu/lrp_maxpool.cpp.
// Deterministic by default: one warp owns a plane and walks its outputs in order, 32 at a
// time; lanes routing to the same input are summed in lane order by the lowest of them,
// which alone writes (no atomics, so the rounding is the same on every run).
#include "hudd/cuda_check.cuh"
#include "hudd/lrp_cuda.cuh"
#include "hudd/lrp_ops.h"

namespace hudd {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = kLrpThreads / kWarp;

template <typename T>
__global__ void zero_kernel(T* out, int64_t total) {
  HUDD_GRID_STRIDE(i, total) out[i] = T(0);
}

template <typename T>
__global__ void route_ordered_kernel(const T* r, const int64_t* idx, int64_t planes,
                                     int64_t n_out, int64_t n_in, T* out) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + threadIdx.x / kWarp;
       p < planes; p += warps) {  // uniform across the warp: the shuffles see all lanes
    const T* rp = r + p * n_out;
    const int64_t* ip = idx + p * n_out;
    T* op = out + p * n_in;
    for (int64_t o0 = 0; o0 < n_out; o0 += kWarp) {
      const int64_t o = o0 + lane;
      int64_t k = o < n_out ? ip[o] : -1;
      if (k >= n_in) k = -1;  // outside the plane: never written
      const T v = k >= 0 ? rp[o] : T(0);
      T sum = T(0);
      bool leader = k >= 0;
      for (int src = 0; src < kWarp; ++src) {
        const int64_t ks = __shfl_sync(0xffffffffu, k, src);
        const T vs = __shfl_sync(0xffffffffu, v, src);
        if (ks == k) {
          sum += vs;
          if (src < lane) leader = false;
        }
      }
      if (leader) op[k] += sum;
      __syncwarp();  // orders this chunk's writes before the next chunk's reads
    }
  }
}

template <typename T>
__global__ void route_atomic_kernel(const T* r, const int64_t* idx, int64_t total, int64_t n_out,
                                    int64_t n_in, T* out) {
  HUDD_GRID_STRIDE(i, total) {
    const int64_t p = i / n_out, k = idx[i];
    if (k >= 0 && k < n_in) atomicAdd(out + p * n_in + k, r[i]);
  }
}

}  // namespace

template <typename T>
void lrp_maxpool_route_cuda(const T* r, const int64_t* idx, int64_t planes, int64_t n_out,
                            int64_t n_in, bool accumulate, bool deterministic, T* out,
                            void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  if (!accumulate && planes * n_in > 0) {
    zero_kernel<T><<<lrp_blocks(planes * n_in), kLrpThreads, 0, s>>>(out, planes * n_in);
    check_launch("lrp_maxpool_route (zero)");
  }
  const int64_t total = planes * n_out;
  if (total == 0 || n_in == 0) return;
  if (deterministic) {
    const int64_t blocks = (planes + kWarpsPerBlock - 1) / kWarpsPerBlock;
    route_ordered_kernel<T><<<lrp_blocks(blocks * kLrpThreads), kLrpThreads, 0, s>>>(
        r, idx, planes, n_out, n_in, out);
  } else {
    route_atomic_kernel<T><<<lrp_blocks(total), kLrpThreads, 0, s>>>(r, idx, total, n_out, n_in,
                                                                     out);
  }
  check_launch("lrp_maxpool_route");
}

template void lrp_maxpool_route_cuda<float>(const float*, const int64_t*, int64_t, int64_t,
                                            int64_t, bool, bool, float*, void*);
template void lrp_maxpool_route_cuda<double>(const double*, const int64_t*, int64_t, int64_t,
                                             int64_t, bool, bool, double*, void*);

}  // namespace hudd
