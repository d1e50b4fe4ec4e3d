// Launch helpers shared by the CUDA LRP kernels (csrc/cuda/lrp_*.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace hudd {

constexpr int kLrpThreads = 256;

// Blocks for a grid-stride loop over n elements (capped: each thread loops).
inline unsigned lrp_blocks(int64_t n) {
  const int64_t b = (n + kLrpThreads - 1) / kLrpThreads;
  return static_cast<unsigned>(b < 65535 * 8 ? (b > 0 ? b : 1) : 65535 * 8);
}

#define HUDD_GRID_STRIDE(i, n)                                                          \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

}  // namespace hudd
