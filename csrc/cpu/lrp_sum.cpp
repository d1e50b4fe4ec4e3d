// OpenMP residual-addition split, Norm rule (see hudd/lrp_ops.h).
#include "hudd/lrp.h"
#include "hudd/lrp_ops.h"

namespace hudd {

template <typename T>
void lrp_sum_split_cpu(const T* a, const T* b, const T* r, int64_t n, double eps, T* ra, T* rb) {
  const T e = static_cast<T>(eps);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const T s = r[i] / lrp_stab(a[i] + b[i], e);
    ra[i] = a[i] * s;
    rb[i] = b[i] * s;
  }
}

template void lrp_sum_split_cpu<float>(const float*, const float*, const float*, int64_t, double,
                                       float*, float*);
template void lrp_sum_split_cpu<double>(const double*, const double*, const double*, int64_t,
                                        double, double*, double*);

}  // namespace hudd
