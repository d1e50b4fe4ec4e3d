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
  const int64_t nb = lrp_blocks_per_row(n);
#pragma omp parallel for schedule(static) if (total > 32768)
  for (int64_t blk = 0; blk < batch * nb; ++blk) {
    const int64_t bi = blk / nb, j0 = (blk - bi * nb) * kLrpBlock;
    const int64_t j1 = j0 + kLrpBlock < n ? j0 + kLrpBlock : n;
    const T* rb = r + bi * n;
    const T* zp = z + bi * 2 * n;
    const T* zn = zp + n;
    T* op = out + bi * 2 * n;
    T* on = op + n;
    if (gate) {  // gamma: positive outputs use the first split, negative the second
      const T* g = gate + bi * n;
      for (int64_t j = j0; j < j1; ++j) {
        const T sp = a * rb[j] / lrp_stab(zp[j], e), sn = b * rb[j] / lrp_stab(zn[j], e);
        const T mp = static_cast<T>(g[j] > T(0)), mn = static_cast<T>(g[j] < T(0));
        op[j] = mp * sp;  // a mask product (not a select of results) vectorises
        on[j] = mn * sn;
      }
    } else {
      for (int64_t j = j0; j < j1; ++j) {
        op[j] = a * rb[j] / lrp_stab(zp[j], e);
        on[j] = b * rb[j] / lrp_stab(zn[j], e);
      }
    }
  }
}

template void lrp_divide_cpu<float>(const float*, const float*, const float*, int64_t, int64_t,
                                    double, double, double, int, float*);
template void lrp_divide_cpu<double>(const double*, const double*, const double*, int64_t,
                                     int64_t, double, double, double, int, double*);

}  // namespace hudd
