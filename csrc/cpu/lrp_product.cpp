// OpenMP input x contribution product of the LRP rules (see hudd/lrp_ops.h).
#include "hudd/lrp.h"
#include "hudd/lrp_ops.h"

namespace hudd {

template <typename T>
void lrp_product_cpu(const T* x, const T* c, int64_t batch, int64_t n, int mode, double low,
                     double high, bool accumulate, T* out) {
  const int k = lrp_parts(mode);
  const T lo = static_cast<T>(low), hi = static_cast<T>(high);
  const int64_t nb = lrp_blocks_per_row(n);
#pragma omp parallel for schedule(static) if (batch * n > 32768)
  for (int64_t blk = 0; blk < batch * nb; ++blk) {
    const int64_t bi = blk / nb, j0 = (blk - bi * nb) * kLrpBlock;
    const int64_t j1 = j0 + kLrpBlock < n ? j0 + kLrpBlock : n;
    const T* xb = x + bi * n;
    const T* cb = c + bi * k * n;
    T* ob = out + bi * n;
    // One specialised loop per mode: no per-element dispatch, so each vectorises.
    if (mode == kPlain) {
      for (int64_t j = j0; j < j1; ++j) ob[j] = (accumulate ? ob[j] : T(0)) + xb[j] * cb[j];
    } else if (mode == kPosNeg) {
      const T* cn = cb + n;
      for (int64_t j = j0; j < j1; ++j) {
        const T xp = xb[j] > T(0) ? xb[j] : T(0), xn = xb[j] < T(0) ? xb[j] : T(0);
        ob[j] = (accumulate ? ob[j] : T(0)) + xp * cb[j] + xn * cn[j];
      }
    } else {
      const T* cl = cb + n;
      const T* ch = cb + 2 * n;
      for (int64_t j = j0; j < j1; ++j)
        ob[j] = (accumulate ? ob[j] : T(0)) + xb[j] * cb[j] + lo * cl[j] + hi * ch[j];
    }
  }
}

template void lrp_product_cpu<float>(const float*, const float*, int64_t, int64_t, int, double,
                                     double, bool, float*);
template void lrp_product_cpu<double>(const double*, const double*, int64_t, int64_t, int, double,
                                      double, bool, double*);

}  // namespace hudd
