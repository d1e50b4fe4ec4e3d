// Shared math of the distance epilogue: used by the OpenMP and the CUDA kernels alike.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define HUDD_HD __host__ __device__ __forceinline__
#else
#define HUDD_HD inline
#endif

namespace hudd {

// Position of pair (i, j), i < j, in SciPy's condensed distance vector of n points.
HUDD_HD int64_t condensed_index(int64_t n, int64_t i, int64_t j) {
  return n * i - i * (i + 1) / 2 + (j - i - 1);
}

// ||x||^2 + ||y||^2 - 2 x.y, clamped at 0 (rounding can make it negative).
HUDD_HD double gemm_sqdist(double nx, double ny, double dot) {
  const double d2 = nx + ny - 2.0 * dot;
  return d2 > 0.0 ? d2 : 0.0;
}

// The GEMM form cancels catastrophically when d^2 is small against the norms:
// such pairs are recomputed directly from the raw rows.
HUDD_HD bool needs_exact(double d2, double nx, double ny, double tau) {
  return d2 <= tau * (nx + ny);
}

}  // namespace hudd
