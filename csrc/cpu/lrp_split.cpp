// OpenMP input split of the sign-splitting LRP rules (see hudd/lrp_ops.h).
#include "hudd/lrp.h"
#include "hudd/lrp_ops.h"

namespace hudd {

template <typename T>
void lrp_split_cpu(const T* x, int64_t batch, int64_t n, int mode, double low, double high,
                   T* out) {
  const int k = lrp_parts(mode);
  const T lo = static_cast<T>(low), hi = static_cast<T>(high);
  const int64_t nb = lrp_blocks_per_row(n);
#pragma omp parallel for schedule(static) if (batch * n > 32768)
  for (int64_t blk = 0; blk < batch * nb; ++blk) {
    const int64_t bi = blk / nb, j0 = (blk - bi * nb) * kLrpBlock;
    const int64_t j1 = j0 + kLrpBlock < n ? j0 + kLrpBlock : n;
    const T* xb = x + bi * n;
    for (int p = 0; p < k; ++p) {
      T* ob = out + (bi * k + p) * n;
      for (int64_t j = j0; j < j1; ++j) ob[j] = lrp_part(xb[j], mode, p, lo, hi);
    }
  }
}

template void lrp_split_cpu<float>(const float*, int64_t, int64_t, int, double, double, float*);
template void lrp_split_cpu<double>(const double*, int64_t, int64_t, int, double, double,
                                    double*);

}  // namespace hudd
