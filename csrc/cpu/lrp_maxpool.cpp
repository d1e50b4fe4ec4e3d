// OpenMP winner-take-all max-pool routing (see hudd/lrp_ops.h): one plane per thread,
// so overlapping windows need no atomics, and each plane sums in output order
// (deterministic).
#include <algorithm>

#include "hudd/lrp_ops.h"

namespace hudd {

template <typename T>
int64_t lrp_maxpool_route_cpu(const T* r, const int64_t* idx, int64_t planes, int64_t n_out,
                              int64_t n_in, bool accumulate, T* out) {
  int64_t outside = 0;
#pragma omp parallel for schedule(static) reduction(+ : outside) if (planes * n_in > 32768)
  for (int64_t p = 0; p < planes; ++p) {
    T* op = out + p * n_in;
    if (!accumulate) std::fill(op, op + n_in, T(0));
    const T* rp = r + p * n_out;
    const int64_t* ip = idx + p * n_out;
    for (int64_t o = 0; o < n_out; ++o) {
      const int64_t k = ip[o];
      if (k < 0 || k >= n_in) {  // never write outside the plane
        ++outside;
        continue;
      }
      op[k] += rp[o];
    }
  }
  return outside;
}

template int64_t lrp_maxpool_route_cpu<float>(const float*, const int64_t*, int64_t, int64_t,
                                              int64_t, bool, float*);
template int64_t lrp_maxpool_route_cpu<double>(const double*, const int64_t*, int64_t, int64_t,
                                               int64_t, bool, double*);

}  // namespace hudd
