// OpenMP input x contribution product of the LRP rules (see hudd/lrp_ops.h).
#include "hudd/lrp.h"
#include "hudd/lrp_ops.h"

namespace hudd {

template <typename T>
void lrp_product_cpu(const T* x, const T* c, int64_t batch, int64_t n, int mode, double low,
                     double high, bool accumulate, T* out) {
  const int k = lrp_parts(mode);
  const T lo = static_cast<T>(low), hi = static_cast<T>(high);
  const int64_t total = batch * n;
#pragma omp parallel for schedule(static) if (total > 32768)
  for (int64_t i = 0; i < total; ++i) {
    const int64_t bi = i / n, j = i - bi * n;
    const T* cb = c + bi * k * n + j;
    T s = T(0);
    for (int p = 0; p < k; ++p) s += lrp_part(x[i], mode, p, lo, hi) * cb[p * n];
    out[i] = accumulate ? out[i] + s : s;
  }
}

template void lrp_product_cpu<float>(const float*, const float*, int64_t, int64_t, int, double,
                                     double, bool, float*);
template void lrp_product_cpu<double>(const double*, const double*, int64_t, int64_t, int, double,
                                      double, bool, double*);

}  // namespace hudd
