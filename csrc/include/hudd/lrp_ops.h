// Entry points of the LRP kernels: a cpu/ and (when built with CUDA) a cuda/
// implementation with the same arguments; the CUDA ones take a cudaStream_t as void*.
// Pointers are raw and contiguous; hudd_core/lrp/kernels.py validates shapes and holds
// the plain-torch reference of every op.
#pragma once
#include <cstdint>

namespace hudd {

// Stabilised division. parts == 1: out = cp * r / stab(z) over batch*n entries.
// parts == 2: z and out are (batch, 2, n), r and gate (batch, n):
//   out[b,0] = cp * r / stab(z[b,0]) [* (gate > 0)], out[b,1] = cn * r / stab(z[b,1]) [* (gate < 0)]
// (gate may be null): the two denominators of alpha-beta and gamma in one pass.
template <typename T>
void lrp_divide_cpu(const T* r, const T* z, const T* gate, int64_t batch, int64_t n, double eps,
                    double cp, double cn, int parts, T* out);

// Stacked input parts (batch, K, n) of x (batch, n): [x+, x-] or [x, low, high].
template <typename T>
void lrp_split_cpu(const T* x, int64_t batch, int64_t n, int mode, double low, double high,
                   T* out);

// Input x contribution: out (+)= sum_k part_k(x) * c[b, k, :] (c is (batch, K, n)).
template <typename T>
void lrp_product_cpu(const T* x, const T* c, int64_t batch, int64_t n, int mode, double low,
                     double high, bool accumulate, T* out);

// Winner-take-all: out[p, idx[p, o]] (+)= r[p, o] per plane p (idx flat in the plane),
// summed in output order. Indices outside [0, n_in) are skipped; the CPU version returns
// how many there were. The CUDA version is deterministic unless `deterministic` is false
// (then one atomicAdd per output: faster with few planes, order-dependent rounding).
template <typename T>
int64_t lrp_maxpool_route_cpu(const T* r, const int64_t* idx, int64_t planes, int64_t n_out,
                           int64_t n_in, bool accumulate, T* out);

// Average-pool Norm rule over (planes, hi, wi) -> (planes, ho, wo):
// out (+)= x * sum over windows containing the input of r / stab(z) / extent.
// geo = {kh, kw, sh, sw, ph, pw, adaptive, count_include_pad}.
template <typename T>
void lrp_avgpool_cpu(const T* x, const T* z, const T* r, int64_t planes, int64_t hi, int64_t wi,
                     int64_t ho, int64_t wo, const int64_t* geo, double eps, bool accumulate,
                     T* out);

// Residual addition z = a + b: ra = a * r / stab(z), rb = b * r / stab(z).
template <typename T>
void lrp_sum_split_cpu(const T* a, const T* b, const T* r, int64_t n, double eps, T* ra, T* rb);

#ifdef HUDD_WITH_CUDA
template <typename T>
void lrp_divide_cuda(const T* r, const T* z, const T* gate, int64_t batch, int64_t n, double eps,
                     double cp, double cn, int parts, T* out, void* stream);
template <typename T>
void lrp_split_cuda(const T* x, int64_t batch, int64_t n, int mode, double low, double high,
                    T* out, void* stream);
template <typename T>
void lrp_product_cuda(const T* x, const T* c, int64_t batch, int64_t n, int mode, double low,
                      double high, bool accumulate, T* out, void* stream);
template <typename T>
void lrp_maxpool_route_cuda(const T* r, const int64_t* idx, int64_t planes, int64_t n_out,
                            int64_t n_in, bool accumulate, bool deterministic, T* out,
                            void* stream);
template <typename T>
void lrp_avgpool_cuda(const T* x, const T* z, const T* r, int64_t planes, int64_t hi, int64_t wi,
                      int64_t ho, int64_t wo, const int64_t* geo, double eps, bool accumulate,
                      T* out, void* stream);
template <typename T>
void lrp_sum_split_cuda(const T* a, const T* b, const T* r, int64_t n, double eps, T* ra, T* rb,
                        void* stream);
#endif

}  // namespace hudd
