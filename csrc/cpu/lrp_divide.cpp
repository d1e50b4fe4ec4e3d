// OpenMP stabilised division of the LRP rules (see hudd/lrp_ops.h).
#include "hudd/lrp.h"
#include "hudd/lrp_ops.h"

namespace hudd {

template <typename T>
void lrp_divide_cpu(const T* r, const T* z, const T* gate, int64_t batch, int64_t n, double eps,
                    double cp, double cn, int parts, T* out) {
  const T e = static_cast<T>(eps), a = static_cast<T>(cp), b = static_cast<T>(cn);
  const int64_t total = batch * n;
  if (parts == 1) {
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; ++i) out[i] = a * r[i] / lrp_stab(z[i], e);
    return;
  }
#pragma omp parallel for schedule(static) if (total > 32768)
  for (int64_t i = 0; i < total; ++i) {
    const int64_t bi = i / n, j = i - bi * n;
    const T* zb = z + bi * 2 * n;
    T* ob = out + bi * 2 * n;
    T sp = a * r[i] / lrp_stab(zb[j], e);
    T sn = b * r[i] / lrp_stab(zb[n + j], e);
    if (gate) {  // gamma: positive outputs use the first split, negative the second
      sp = gate[i] > T(0) ? sp : T(0);
      sn = gate[i] < T(0) ? sn : T(0);
    }
    ob[j] = sp;
    ob[n + j] = sn;
  }
}

template void lrp_divide_cpu<float>(const float*, const float*, const float*, int64_t, int64_t,
                                    double, double, double, int, float*);
template void lrp_divide_cpu<double>(const double*, const double*, const double*, int64_t,
                                     int64_t, double, double, double, int, double*);

}  // namespace hudd
