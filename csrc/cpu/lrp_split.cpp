// OpenMP input split of the sign-splitting LRP rules (see hudd/lrp_ops.h).
#include "hudd/lrp.h"
#include "hudd/lrp_ops.h"

namespace hudd {

template <typename T>
void lrp_split_cpu(const T* x, int64_t batch, int64_t n, int mode, double low, double high,
                   T* out) {
  const int k = lrp_parts(mode);
  const T lo = static_cast<T>(low), hi = static_cast<T>(high);
  const int64_t total = batch * n;
#pragma omp parallel for schedule(static) if (total > 32768)
  for (int64_t i = 0; i < total; ++i) {
    const int64_t bi = i / n, j = i - bi * n;
    T* ob = out + bi * k * n + j;
    for (int p = 0; p < k; ++p) ob[p * n] = lrp_part(x[i], mode, p, lo, hi);
  }
}

template void lrp_split_cpu<float>(const float*, int64_t, int64_t, int, double, double, float*);
template void lrp_split_cpu<double>(const double*, int64_t, int64_t, int, double, double,
                                    double*);

}  // namespace hudd
