// OpenMP average-pool redistribution, Norm rule (see hudd/lrp_ops.h): per plane, the
// stabilised quotients of the outputs, then one gather per input element.
#include <vector>

#include "hudd/lrp.h"
#include "hudd/lrp_ops.h"

namespace hudd {

template <typename T>
void lrp_avgpool_cpu(const T* x, const T* z, const T* r, int64_t planes, int64_t hi, int64_t wi,
                     int64_t ho, int64_t wo, const int64_t* geo, double eps, bool accumulate,
                     T* out) {
  const int64_t kh = geo[0], kw = geo[1], sh = geo[2], sw = geo[3], ph = geo[4], pw = geo[5];
  const bool adaptive = geo[6] != 0, include_pad = geo[7] != 0;
  const T e = static_cast<T>(eps);
#pragma omp parallel for schedule(static) if (planes * hi * wi > 32768)
  for (int64_t p = 0; p < planes; ++p) {
    std::vector<T> q(ho * wo);  // r / stab(z) / divisor of every output of the plane
    for (int64_t oh = 0; oh < ho; ++oh) {
      const LrpWindow h = lrp_window(oh, hi, ho, kh, sh, ph, adaptive);
      for (int64_t ow = 0; ow < wo; ++ow) {
        const LrpWindow w = lrp_window(ow, wi, wo, kw, sw, pw, adaptive);
        const int64_t div = (adaptive || include_pad) ? h.extent * w.extent
                                                      : (h.end - h.start) * (w.end - w.start);
        const int64_t o = p * ho * wo + oh * wo + ow;
        q[oh * wo + ow] = r[o] / lrp_stab(z[o], e) / static_cast<T>(div);
      }
    }
    for (int64_t ih = 0; ih < hi; ++ih) {
      int64_t h0, h1;
      lrp_candidates(ih, hi, ho, kh, sh, ph, adaptive, &h0, &h1);
      for (int64_t iw = 0; iw < wi; ++iw) {
        int64_t w0, w1;
        lrp_candidates(iw, wi, wo, kw, sw, pw, adaptive, &w0, &w1);
        T s = T(0);
        for (int64_t oh = h0; oh <= h1; ++oh) {
          const LrpWindow h = lrp_window(oh, hi, ho, kh, sh, ph, adaptive);
          if (ih < h.start || ih >= h.end) continue;
          for (int64_t ow = w0; ow <= w1; ++ow) {
            const LrpWindow w = lrp_window(ow, wi, wo, kw, sw, pw, adaptive);
            if (iw >= w.start && iw < w.end) s += q[oh * wo + ow];
          }
        }
        const int64_t i = p * hi * wi + ih * wi + iw;
        out[i] = accumulate ? out[i] + x[i] * s : x[i] * s;
      }
    }
  }
}

template void lrp_avgpool_cpu<float>(const float*, const float*, const float*, int64_t, int64_t,
                                     int64_t, int64_t, int64_t, const int64_t*, double, bool,
                                     float*);
template void lrp_avgpool_cpu<double>(const double*, const double*, const double*, int64_t,
                                      int64_t, int64_t, int64_t, int64_t, const int64_t*, double,
                                      bool, double*);

}  // namespace hudd
