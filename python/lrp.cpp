// Bindings of csrc/*/lrp_*: see hudd_core/lrp/kernels.py for the callers and the
// plain-torch reference of every op. A stream of None means the CPU implementation.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <vector>

#include "binding_utils.h"
#include "hudd/lrp_ops.h"

namespace py = pybind11;
using hudd_py::ptr;
using Addr = std::uintptr_t;
using Stream = std::optional<std::uintptr_t>;

namespace {

void check_mode(int mode, const char* op) {
  if (mode < 0 || mode > 2) throw std::invalid_argument(std::string(op) + ": unknown mode");
}

void lrp_divide(Addr r, Addr z, Addr gate, int64_t batch, int64_t n, double eps, double cp,
                double cn, int parts, Addr out, const std::string& dtype, Stream stream) {
  if (parts != 1 && parts != 2) throw std::invalid_argument("lrp_divide: parts must be 1 or 2");
  hudd_py::dispatch_float(dtype, "lrp_divide", [&](auto tag) {
    using T = decltype(tag);
    const T* g = gate ? ptr<const T>(gate) : nullptr;
    if (!stream) {
      hudd::lrp_divide_cpu<T>(ptr<const T>(r), ptr<const T>(z), g, batch, n, eps, cp, cn, parts,
                              ptr<T>(out));
      return;
    }
    hudd_py::require_cuda_build("lrp_divide");
#ifdef HUDD_WITH_CUDA
    hudd::lrp_divide_cuda<T>(ptr<const T>(r), ptr<const T>(z), g, batch, n, eps, cp, cn, parts,
                             ptr<T>(out), hudd_py::stream_ptr(stream));
#endif
  });
}

void lrp_split(Addr x, int64_t batch, int64_t n, int mode, double low, double high, Addr out,
               const std::string& dtype, Stream stream) {
  check_mode(mode, "lrp_split");
  hudd_py::dispatch_float(dtype, "lrp_split", [&](auto tag) {
    using T = decltype(tag);
    if (!stream) {
      hudd::lrp_split_cpu<T>(ptr<const T>(x), batch, n, mode, low, high, ptr<T>(out));
      return;
    }
    hudd_py::require_cuda_build("lrp_split");
#ifdef HUDD_WITH_CUDA
    hudd::lrp_split_cuda<T>(ptr<const T>(x), batch, n, mode, low, high, ptr<T>(out),
                            hudd_py::stream_ptr(stream));
#endif
  });
}

void lrp_product(Addr x, Addr c, int64_t batch, int64_t n, int mode, double low, double high,
                 bool accumulate, Addr out, const std::string& dtype, Stream stream) {
  check_mode(mode, "lrp_product");
  hudd_py::dispatch_float(dtype, "lrp_product", [&](auto tag) {
    using T = decltype(tag);
    if (!stream) {
      hudd::lrp_product_cpu<T>(ptr<const T>(x), ptr<const T>(c), batch, n, mode, low, high,
                               accumulate, ptr<T>(out));
      return;
    }
    hudd_py::require_cuda_build("lrp_product");
#ifdef HUDD_WITH_CUDA
    hudd::lrp_product_cuda<T>(ptr<const T>(x), ptr<const T>(c), batch, n, mode, low, high,
                              accumulate, ptr<T>(out), hudd_py::stream_ptr(stream));
#endif
  });
}

void lrp_maxpool_route(Addr r, Addr idx, int64_t planes, int64_t n_out, int64_t n_in,
                       bool accumulate, Addr out, const std::string& dtype, Stream stream) {
  hudd_py::dispatch_float(dtype, "lrp_maxpool_route", [&](auto tag) {
    using T = decltype(tag);
    if (!stream) {
      hudd::lrp_maxpool_route_cpu<T>(ptr<const T>(r), ptr<const int64_t>(idx), planes, n_out,
                                     n_in, accumulate, ptr<T>(out));
      return;
    }
    hudd_py::require_cuda_build("lrp_maxpool_route");
#ifdef HUDD_WITH_CUDA
    hudd::lrp_maxpool_route_cuda<T>(ptr<const T>(r), ptr<const int64_t>(idx), planes, n_out,
                                    n_in, accumulate, ptr<T>(out), hudd_py::stream_ptr(stream));
#endif
  });
}

void lrp_avgpool(Addr x, Addr z, Addr r, int64_t planes, int64_t hi, int64_t wi, int64_t ho,
                 int64_t wo, const std::vector<int64_t>& geo, double eps, bool accumulate,
                 Addr out, const std::string& dtype, Stream stream) {
  if (geo.size() != 8) throw std::invalid_argument("lrp_avgpool: geometry needs 8 entries");
  if (geo[6] == 0 && (geo[2] <= 0 || geo[3] <= 0))
    throw std::invalid_argument("lrp_avgpool: strides must be positive");
  hudd_py::dispatch_float(dtype, "lrp_avgpool", [&](auto tag) {
    using T = decltype(tag);
    if (!stream) {
      hudd::lrp_avgpool_cpu<T>(ptr<const T>(x), ptr<const T>(z), ptr<const T>(r), planes, hi, wi,
                               ho, wo, geo.data(), eps, accumulate, ptr<T>(out));
      return;
    }
    hudd_py::require_cuda_build("lrp_avgpool");
#ifdef HUDD_WITH_CUDA
    hudd::lrp_avgpool_cuda<T>(ptr<const T>(x), ptr<const T>(z), ptr<const T>(r), planes, hi, wi,
                              ho, wo, geo.data(), eps, accumulate, ptr<T>(out),
                              hudd_py::stream_ptr(stream));
#endif
  });
}

void lrp_sum_split(Addr a, Addr b, Addr r, int64_t n, double eps, Addr ra, Addr rb,
                   const std::string& dtype, Stream stream) {
  hudd_py::dispatch_float(dtype, "lrp_sum_split", [&](auto tag) {
    using T = decltype(tag);
    if (!stream) {
      hudd::lrp_sum_split_cpu<T>(ptr<const T>(a), ptr<const T>(b), ptr<const T>(r), n, eps,
                                 ptr<T>(ra), ptr<T>(rb));
      return;
    }
    hudd_py::require_cuda_build("lrp_sum_split");
#ifdef HUDD_WITH_CUDA
    hudd::lrp_sum_split_cuda<T>(ptr<const T>(a), ptr<const T>(b), ptr<const T>(r), n, eps,
                                ptr<T>(ra), ptr<T>(rb), hudd_py::stream_ptr(stream));
#endif
  });
}

}  // namespace

void init_lrp(py::module_& m) {
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("lrp_divide", &lrp_divide, nogil, "LRP stabilised division (one or two denominators).");
  m.def("lrp_split", &lrp_split, nogil, "LRP input parts: [x+, x-] or [x, low, high].");
  m.def("lrp_product", &lrp_product, nogil, "LRP input x contribution product.");
  m.def("lrp_maxpool_route", &lrp_maxpool_route, nogil, "LRP winner-take-all max-pool routing.");
  m.def("lrp_avgpool", &lrp_avgpool, nogil, "LRP average-pool redistribution (Norm rule).");
  m.def("lrp_sum_split", &lrp_sum_split, nogil, "LRP residual-addition split (Norm rule).");
}
