// CUDA average-pool redistribution, Norm rule: same contract as csrc/cpu/lrp_avgpool.cpp.
// One thread per input element gathers the quotients of the windows that contain it.
#include "hudd/cuda_check.cuh"
#include "hudd/lrp.h"
#include "hudd/lrp_cuda.cuh"
#include "hudd/lrp_ops.h"

namespace hudd {
namespace {

struct Geo {
  int64_t kh, kw, sh, sw, ph, pw;
  bool adaptive, include_pad;
};

template <typename T>
__global__ void avgpool_kernel(const T* x, const T* z, const T* r, int64_t total, int64_t hi,
                               int64_t wi, int64_t ho, int64_t wo, Geo g, T e, bool accumulate,
                               T* out) {
  HUDD_GRID_STRIDE(i, total) {
    const int64_t p = i / (hi * wi), rem = i - p * hi * wi;
    const int64_t ih = rem / wi, iw = rem - ih * wi;
    int64_t h0, h1, w0, w1;
    lrp_candidates(ih, hi, ho, g.kh, g.sh, g.ph, g.adaptive, &h0, &h1);
    lrp_candidates(iw, wi, wo, g.kw, g.sw, g.pw, g.adaptive, &w0, &w1);
    T s = T(0);
    for (int64_t oh = h0; oh <= h1; ++oh) {
      const LrpWindow h = lrp_window(oh, hi, ho, g.kh, g.sh, g.ph, g.adaptive);
      if (ih < h.start || ih >= h.end) continue;
      for (int64_t ow = w0; ow <= w1; ++ow) {
        const LrpWindow w = lrp_window(ow, wi, wo, g.kw, g.sw, g.pw, g.adaptive);
        if (iw < w.start || iw >= w.end) continue;
        const int64_t div = (g.adaptive || g.include_pad) ? h.extent * w.extent
                                                          : (h.end - h.start) * (w.end - w.start);
        const int64_t o = p * ho * wo + oh * wo + ow;
        s += r[o] / lrp_stab(z[o], e) / static_cast<T>(div);
      }
    }
    out[i] = accumulate ? out[i] + x[i] * s : x[i] * s;
  }
}

}  // namespace

template <typename T>
void lrp_avgpool_cuda(const T* x, const T* z, const T* r, int64_t planes, int64_t hi, int64_t wi,
                      int64_t ho, int64_t wo, const int64_t* geo, double eps, bool accumulate,
                      T* out, void* stream) {
  const int64_t total = planes * hi * wi;
  if (total == 0) return;
  const Geo g{geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], geo[6] != 0, geo[7] != 0};
  avgpool_kernel<T><<<lrp_blocks(total), kLrpThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      x, z, r, total, hi, wi, ho, wo, g, T(eps), accumulate, out);
  check_launch("lrp_avgpool");
}

template void lrp_avgpool_cuda<float>(const float*, const float*, const float*, int64_t, int64_t,
                                      int64_t, int64_t, int64_t, const int64_t*, double, bool,
                                      float*, void*);
template void lrp_avgpool_cuda<double>(const double*, const double*, const double*, int64_t,
                                       int64_t, int64_t, int64_t, int64_t, const int64_t*, double,
                                       bool, double*, void*);

}  // namespace hudd
