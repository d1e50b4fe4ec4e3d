// OpenMP epilogue of the GEMM distances: clamp, recompute cancelled pairs, sqrt, scatter.
#include <algorithm>
#include <cmath>
#include <vector>

#include <omp.h>

#include "hudd/distance.h"
#include "hudd/distance_ops.h"

namespace hudd {
namespace {

template <typename T>
double exact_sqdist(const T* a, const T* b, int64_t dim) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < dim; ++k) {
    const double d = static_cast<double>(a[k]) - static_cast<double>(b[k]);
    s += d * d;
  }
  return s;
}

template <typename T>
double pair_distance(const T* gram, int64_t ldg, const double* nx, const double* ny, int64_t r,
                     int64_t c, const T* xi, const T* xj, int64_t dim, double tau) {
  double d2 = gemm_sqdist(nx[r], ny[c], static_cast<double>(gram[r * ldg + c]));
  if (needs_exact(d2, nx[r], ny[c], tau)) d2 = exact_sqdist(xi + r * dim, xj + c * dim, dim);
  return std::sqrt(d2);
}

}  // namespace

template <typename T>
void pdist_epilogue_cpu(const T* gram, int64_t ldg, const double* nx, const double* ny,
                        int64_t rows, int64_t cols, int64_t row0, int64_t col0, const T* xi,
                        const T* xj, int64_t dim, double tau, int64_t n, double* out) {
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = row0 + r;
    // Only pairs i < j belong to the condensed vector.
    const int64_t c_begin = std::max<int64_t>(0, i + 1 - col0);
    if (c_begin >= cols) continue;
    double* dst = out + condensed_index(n, i, col0 + c_begin);  // contiguous in j
    for (int64_t c = c_begin; c < cols; ++c)
      dst[c - c_begin] = pair_distance(gram, ldg, nx, ny, r, c, xi, xj, dim, tau);
  }
}

template <typename T>
void cdist_epilogue_cpu(const T* gram, int64_t ldg, const double* nx, const double* ny,
                        int64_t rows, int64_t cols, const T* xi, const T* xj, int64_t dim,
                        double tau, double* out, int64_t ldo) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r * ldo + c] = pair_distance(gram, ldg, nx, ny, r, c, xi, xj, dim, tau);
}

template <typename T>
void center_rows_cpu(const T* x, const T* mean, int64_t rows, int64_t dim, T* out,
                     double* sqnorm) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* src = x + r * dim;
    T* dst = out + r * dim;
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < dim; ++k) {
      const T c = src[k] - mean[k];
      dst[k] = c;
      s += static_cast<double>(c) * static_cast<double>(c);
    }
    sqnorm[r] = s;
  }
}

void condensed_row_max_cpu(const double* condensed, int64_t n, double* out) {
  std::fill(out, out + n, 0.0);
  // Each thread keeps its own maxima (row i's entries are scattered over the vector),
  // then they are reduced.
#pragma omp parallel
  {
    std::vector<double> local(n, 0.0);
#pragma omp for schedule(dynamic, 16) nowait
    for (int64_t i = 0; i < n - 1; ++i) {
      const double* row = condensed + condensed_index(n, i, i + 1);
      double m = local[i];
      for (int64_t j = i + 1; j < n; ++j) {
        const double v = row[j - i - 1];
        m = std::max(m, v);
        local[j] = std::max(local[j], v);
      }
      local[i] = m;
    }
#pragma omp critical
    for (int64_t i = 0; i < n; ++i) out[i] = std::max(out[i], local[i]);
  }
}

void condensed_rows_cpu(const double* condensed, int64_t n, int64_t r0, int64_t r1,
                        const double* scale, float* out) {
  auto inv = [&](int64_t i) { return scale[i] > 0.0 ? 1.0 / scale[i] : 1.0; };
  // Upper triangle and diagonal: row i of the condensed vector is contiguous in j.
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t i = r0; i < r1; ++i) {
    float* dst = out + (i - r0) * n;
    const double s = inv(i);
    const double* src = i + 1 < n ? condensed + condensed_index(n, i, i + 1) : nullptr;
    dst[i] = 0.0f;
    for (int64_t j = i + 1; j < n; ++j) dst[j] = static_cast<float>(src[j - i - 1] * s);
  }
  // Lower triangle (j < i): entry (j, i) sits in condensed row j. Tiles keep both the
  // reads (along i) and the transposed writes (along j) in cache.
  constexpr int64_t kTile = 64;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t jt = 0; jt < r1 - 1; jt += kTile) {
    for (int64_t it = std::max(r0, jt + 1); it < r1; it += kTile) {
      const int64_t i_end = std::min(it + kTile, r1);
      for (int64_t j = jt; j < std::min(jt + kTile, i_end - 1); ++j) {
        const double* row = condensed + condensed_index(n, j, j + 1) - (j + 1);
        for (int64_t i = std::max(it, j + 1); i < i_end; ++i)
          out[(i - r0) * n + j] = static_cast<float>(row[i] * inv(i));
      }
    }
  }
}

template void pdist_epilogue_cpu<float>(const float*, int64_t, const double*, const double*,
                                        int64_t, int64_t, int64_t, int64_t, const float*,
                                        const float*, int64_t, double, int64_t, double*);
template void pdist_epilogue_cpu<double>(const double*, int64_t, const double*, const double*,
                                         int64_t, int64_t, int64_t, int64_t, const double*,
                                         const double*, int64_t, double, int64_t, double*);
template void center_rows_cpu<float>(const float*, const float*, int64_t, int64_t, float*,
                                     double*);
template void center_rows_cpu<double>(const double*, const double*, int64_t, int64_t, double*,
                                      double*);
template void cdist_epilogue_cpu<float>(const float*, int64_t, const double*, const double*,
                                        int64_t, int64_t, const float*, const float*, int64_t,
                                        double, double*, int64_t);
template void cdist_epilogue_cpu<double>(const double*, int64_t, const double*, const double*,
                                         int64_t, int64_t, const double*, const double*, int64_t,
                                         double, double*, int64_t);

}  // namespace hudd
