// Shared math of the LRP kernels (csrc/cpu/lrp_*.cpp, csrc/cuda/lrp_*.cu): inline
// __host__ __device__ functions, so the OpenMP and CUDA versions compute the same thing.
#pragma once
#include <cstdint>

#ifndef HUDD_HD
#if defined(__CUDACC__)
#define HUDD_HD __host__ __device__ __forceinline__
#else
#define HUDD_HD inline
#endif
#endif

namespace hudd {

// Rows of n elements are walked in blocks of kLrpBlock so that one parallel loop over
// (row, block) pairs has a contiguous, vectorisable inner loop.
constexpr int64_t kLrpBlock = 4096;

HUDD_HD int64_t lrp_blocks_per_row(int64_t n) { return (n + kLrpBlock - 1) / kLrpBlock; }

// Modes of lrp_split / lrp_product (hudd_core/lrp/kernels.py: PLAIN, POSNEG, BOX).
enum LrpMode : int { kPlain = 0, kPosNeg = 1, kBox = 2 };

HUDD_HD int lrp_parts(int mode) { return mode == kPlain ? 1 : (mode == kPosNeg ? 2 : 3); }

// Zennit's stabiliser: z + eps * sign(z), sign(0) = +1 (never divides by ~0). The select
// picks a constant, not a result, so compilers if-convert it and vectorise the loops.
template <typename T>
HUDD_HD T lrp_stab(T z, T eps) {
  const T signed_eps = z >= T(0) ? eps : -eps;
  return z + signed_eps;
}

// Part p of the stacked input of a block convolution: [x+, x-] or [x, low, high].
template <typename T>
HUDD_HD T lrp_part(T x, int mode, int p, T low, T high) {
  if (mode == kPosNeg) return p == 0 ? (x > T(0) ? x : T(0)) : (x < T(0) ? x : T(0));
  if (mode == kBox) return p == 0 ? x : (p == 1 ? low : high);
  return x;
}

// Start and end (exclusive, clipped) of output window o along one dimension, and the
// extent PyTorch divides by (count_include_pad counts padding but not beyond it).
struct LrpWindow {
  int64_t start, end, extent;
};

HUDD_HD LrpWindow lrp_window(int64_t o, int64_t n_in, int64_t n_out, int64_t k, int64_t s,
                             int64_t p, bool adaptive) {
  if (adaptive) {
    const int64_t a = (o * n_in) / n_out;
    const int64_t e = ((o + 1) * n_in + n_out - 1) / n_out;
    return {a, e, e - a};
  }
  const int64_t a = o * s - p;
  const int64_t e = (a + k < n_in + p) ? a + k : n_in + p;
  return {a > 0 ? a : 0, e < n_in ? e : n_in, e - a};
}

// The outputs whose windows may contain input i (callers check containment).
HUDD_HD void lrp_candidates(int64_t i, int64_t n_in, int64_t n_out, int64_t k, int64_t s,
                            int64_t p, bool adaptive, int64_t* lo, int64_t* hi) {
  int64_t a, b;
  if (adaptive) {
    a = (i * n_out) / n_in - 1;
    b = ((i + 1) * n_out) / n_in + 1;
  } else {
    const int64_t t = i + p - k + 1;  // first o with o*s - p + k > i
    a = t <= 0 ? 0 : (t + s - 1) / s;
    b = (i + p) / s;
  }
  *lo = a < 0 ? 0 : a;
  *hi = b > n_out - 1 ? n_out - 1 : b;
}

}  // namespace hudd
