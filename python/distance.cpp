// Bindings of csrc/*/distance_epilogue.*: see hudd_core/distance.py for the caller.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "binding_utils.h"
#include "hudd/distance_ops.h"

namespace py = pybind11;
using hudd_py::ptr;
using Stream = std::optional<std::uintptr_t>;

namespace {

void pdist_epilogue(std::uintptr_t gram, int64_t ldg, std::uintptr_t nx, std::uintptr_t ny,
                    int64_t rows, int64_t cols, int64_t row0, int64_t col0, std::uintptr_t xi,
                    std::uintptr_t xj, int64_t dim, double tau, int64_t n, std::uintptr_t out,
                    const std::string& dtype, Stream stream) {
  hudd_py::dispatch_float(dtype, "pdist_epilogue", [&](auto tag) {
    using T = decltype(tag);
    if (!stream) {
      hudd::pdist_epilogue_cpu<T>(ptr<const T>(gram), ldg, ptr<const double>(nx),
                                  ptr<const double>(ny), rows, cols, row0, col0,
                                  ptr<const T>(xi), ptr<const T>(xj), dim, tau, n,
                                  ptr<double>(out));
      return;
    }
    hudd_py::require_cuda_build("pdist_epilogue");
#ifdef HUDD_WITH_CUDA
    hudd::pdist_epilogue_cuda<T>(ptr<const T>(gram), ldg, ptr<const double>(nx),
                                 ptr<const double>(ny), rows, cols, row0, col0, ptr<const T>(xi),
                                 ptr<const T>(xj), dim, tau, n, ptr<double>(out),
                                 hudd_py::stream_ptr(stream));
#endif
  });
}

void cdist_epilogue(std::uintptr_t gram, int64_t ldg, std::uintptr_t nx, std::uintptr_t ny,
                    int64_t rows, int64_t cols, std::uintptr_t xi, std::uintptr_t xj, int64_t dim,
                    double tau, std::uintptr_t out, int64_t ldo, const std::string& dtype,
                    Stream stream) {
  hudd_py::dispatch_float(dtype, "cdist_epilogue", [&](auto tag) {
    using T = decltype(tag);
    if (!stream) {
      hudd::cdist_epilogue_cpu<T>(ptr<const T>(gram), ldg, ptr<const double>(nx),
                                  ptr<const double>(ny), rows, cols, ptr<const T>(xi),
                                  ptr<const T>(xj), dim, tau, ptr<double>(out), ldo);
      return;
    }
    hudd_py::require_cuda_build("cdist_epilogue");
#ifdef HUDD_WITH_CUDA
    hudd::cdist_epilogue_cuda<T>(ptr<const T>(gram), ldg, ptr<const double>(nx),
                                 ptr<const double>(ny), rows, cols, ptr<const T>(xi),
                                 ptr<const T>(xj), dim, tau, ptr<double>(out), ldo,
                                 hudd_py::stream_ptr(stream));
#endif
  });
}

void center_rows(std::uintptr_t x, std::uintptr_t mean, int64_t rows, int64_t dim,
                 std::uintptr_t out, std::uintptr_t sqnorm, const std::string& dtype,
                 Stream stream) {
  hudd_py::dispatch_float(dtype, "center_rows", [&](auto tag) {
    using T = decltype(tag);
    if (!stream) {
      hudd::center_rows_cpu<T>(ptr<const T>(x), ptr<const T>(mean), rows, dim, ptr<T>(out),
                               ptr<double>(sqnorm));
      return;
    }
    hudd_py::require_cuda_build("center_rows");
#ifdef HUDD_WITH_CUDA
    hudd::center_rows_cuda<T>(ptr<const T>(x), ptr<const T>(mean), rows, dim, ptr<T>(out),
                              ptr<double>(sqnorm), hudd_py::stream_ptr(stream));
#endif
  });
}

void condensed_row_max(std::uintptr_t condensed, int64_t n, std::uintptr_t out, Stream stream) {
  if (!stream) {
    hudd::condensed_row_max_cpu(ptr<const double>(condensed), n, ptr<double>(out));
    return;
  }
  hudd_py::require_cuda_build("condensed_row_max");
#ifdef HUDD_WITH_CUDA
  hudd::condensed_row_max_cuda(ptr<const double>(condensed), n, ptr<double>(out),
                               hudd_py::stream_ptr(stream));
#endif
}

void condensed_rows(std::uintptr_t condensed, int64_t n, int64_t r0, int64_t r1,
                    std::uintptr_t scale, std::uintptr_t out, Stream stream) {
  if (!stream) {
    hudd::condensed_rows_cpu(ptr<const double>(condensed), n, r0, r1, ptr<const double>(scale),
                             ptr<float>(out));
    return;
  }
  hudd_py::require_cuda_build("condensed_rows");
#ifdef HUDD_WITH_CUDA
  hudd::condensed_rows_cuda(ptr<const double>(condensed), n, r0, r1, ptr<const double>(scale),
                            ptr<float>(out), hudd_py::stream_ptr(stream));
#endif
}

}  // namespace

void init_distance(py::module_& m) {
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("pdist_epilogue", &pdist_epilogue, nogil, "GEMM block -> condensed distances.");
  m.def("cdist_epilogue", &cdist_epilogue, nogil, "GEMM block -> dense distances.");
  m.def("center_rows", &center_rows, nogil, "x - mean and float64 squared row norms.");
  m.def("condensed_row_max", &condensed_row_max, nogil, "Row maxima of a condensed matrix.");
  m.def("condensed_rows", &condensed_rows, nogil, "Scaled rows of a condensed matrix.");
}
