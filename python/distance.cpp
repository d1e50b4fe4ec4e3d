// Bindings of csrc/*/distance_epilogue.*: see hudd_core/distance.py for the callers and the
// plain-torch twins. Sizes are read from the tensors and checked against each other.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "binding_utils.h"
#include "hudd/distance_ops.h"

namespace py = pybind11;
using hudd_py::ptr;

namespace {

constexpr const char* kF64 = "float64";

int64_t pairs(int64_t n) { return n * (n - 1) / 2; }

void check_points(hudd_py::Call& c, int64_t n) {
  if (n < 0) c.fail("n", "must be >= 0, got " + std::to_string(n));
  if (n > 3037000499) c.fail("n", "is too large (n * (n - 1) / 2 overflows int64)");
}

// The operands shared by both epilogues: the GEMM block (first: it fixes the device and
// dtype), the squared norms of its rows and columns and the raw rows behind them.
struct Epilogue {
  hudd_py::Call::Matrix gram;
  const hudd_py::TensorView *nx, *ny, *xi, *xj;
  int64_t dim;
};

Epilogue epilogue_args(hudd_py::Call& c, py::handle gram, py::handle nx, py::handle ny,
                       py::handle xi, py::handle xj) {
  Epilogue e{c.matrix(gram, "gram", -1, -1), nullptr, nullptr, nullptr, nullptr, 0};
  e.nx = &c.tensor(nx, "nx", e.gram.rows, kF64);
  e.ny = &c.tensor(ny, "ny", e.gram.cols, kF64);
  e.xi = &c.rows(xi, "xi", e.gram.rows, -1);
  e.dim = e.xi->shape[1];
  e.xj = &c.rows(xj, "xj", e.gram.cols, e.dim);
  return e;
}

void pdist_epilogue(py::handle gram, py::handle nx, py::handle ny, int64_t row0, int64_t col0,
                    py::handle xi, py::handle xj, double tau, int64_t n, py::handle out) {
  hudd_py::Call c("pdist_epilogue");
  const Epilogue e = epilogue_args(c, gram, nx, ny, xi, xj);
  check_points(c, n);
  if (row0 < 0 || row0 + e.gram.rows > n)
    c.fail("row0", "+ rows must lie in [0, n = " + std::to_string(n) + "]");
  if (col0 < 0 || col0 + e.gram.cols > n)
    c.fail("col0", "+ cols must lie in [0, n = " + std::to_string(n) + "]");
  const auto o = c.tensor(out, "out", pairs(n), kF64).ptr;
  c.run_float([&](auto tag) {
    using T = decltype(tag);
    const auto args = std::make_tuple(
        ptr<const T>(e.gram.ptr), e.gram.ld, ptr<const double>(e.nx->ptr),
        ptr<const double>(e.ny->ptr), e.gram.rows, e.gram.cols, row0, col0,
        ptr<const T>(e.xi->ptr), ptr<const T>(e.xj->ptr), e.dim, tau, n, ptr<double>(o));
    if (!c.on_cuda()) return std::apply(hudd::pdist_epilogue_cpu<T>, args);
#ifdef HUDD_WITH_CUDA
    std::apply(hudd::pdist_epilogue_cuda<T>, std::tuple_cat(args, std::make_tuple(c.stream())));
#endif
  });
}

void cdist_epilogue(py::handle gram, py::handle nx, py::handle ny, py::handle xi, py::handle xj,
                    double tau, py::handle out) {
  hudd_py::Call c("cdist_epilogue");
  const Epilogue e = epilogue_args(c, gram, nx, ny, xi, xj);
  const auto o = c.matrix(out, "out", e.gram.rows, e.gram.cols, kF64);
  c.run_float([&](auto tag) {
    using T = decltype(tag);
    const auto args = std::make_tuple(
        ptr<const T>(e.gram.ptr), e.gram.ld, ptr<const double>(e.nx->ptr),
        ptr<const double>(e.ny->ptr), e.gram.rows, e.gram.cols, ptr<const T>(e.xi->ptr),
        ptr<const T>(e.xj->ptr), e.dim, tau, ptr<double>(o.ptr), o.ld);
    if (!c.on_cuda()) return std::apply(hudd::cdist_epilogue_cpu<T>, args);
#ifdef HUDD_WITH_CUDA
    std::apply(hudd::cdist_epilogue_cuda<T>, std::tuple_cat(args, std::make_tuple(c.stream())));
#endif
  });
}

void center_rows(py::handle x, py::handle mean, py::handle out, py::handle sqnorm) {
  hudd_py::Call c("center_rows");
  const auto& vx = c.rows(x, "x", -1, -1);
  const int64_t rows = vx.shape[0], dim = vx.shape[1];
  const auto m = c.tensor(mean, "mean", dim).ptr;
  const auto o = c.rows(out, "out", rows, dim).ptr;
  const auto s = c.tensor(sqnorm, "sqnorm", rows, kF64).ptr;
  c.run_float([&](auto tag) {
    using T = decltype(tag);
    const auto args = std::make_tuple(ptr<const T>(vx.ptr), ptr<const T>(m), rows, dim,
                                      ptr<T>(o), ptr<double>(s));
    if (!c.on_cuda()) return std::apply(hudd::center_rows_cpu<T>, args);
#ifdef HUDD_WITH_CUDA
    std::apply(hudd::center_rows_cuda<T>, std::tuple_cat(args, std::make_tuple(c.stream())));
#endif
  });
}

void condensed_row_max(py::handle condensed, int64_t n, py::handle out) {
  hudd_py::Call c("condensed_row_max");
  check_points(c, n);
  const auto d = c.tensor(condensed, "condensed", pairs(n), kF64).ptr;
  const auto o = c.tensor(out, "out", n, kF64).ptr;
  c.run([&] {
    if (!c.on_cuda()) return hudd::condensed_row_max_cpu(ptr<const double>(d), n, ptr<double>(o));
#ifdef HUDD_WITH_CUDA
    hudd::condensed_row_max_cuda(ptr<const double>(d), n, ptr<double>(o), c.stream());
#endif
  });
}

void condensed_rows(py::handle condensed, int64_t n, int64_t r0, int64_t r1, py::handle scale,
                    py::handle out) {
  hudd_py::Call c("condensed_rows");
  check_points(c, n);
  if (r0 < 0 || r1 < r0 || r1 > n)
    c.fail("r0, r1", "must satisfy 0 <= r0 <= r1 <= n = " + std::to_string(n));
  const auto d = c.tensor(condensed, "condensed", pairs(n), kF64).ptr;
  const auto s = c.tensor(scale, "scale", n, kF64).ptr;
  const auto o = c.tensor(out, "out", (r1 - r0) * n, "float32").ptr;
  c.run([&] {
    const auto args = std::make_tuple(ptr<const double>(d), n, r0, r1, ptr<const double>(s),
                                      ptr<float>(o));
    if (!c.on_cuda()) return std::apply(hudd::condensed_rows_cpu, args);
#ifdef HUDD_WITH_CUDA
    std::apply(hudd::condensed_rows_cuda, std::tuple_cat(args, std::make_tuple(c.stream())));
#endif
  });
}

}  // namespace

void init_distance(py::module_& m) {
  using py::arg;
  m.def("pdist_epilogue", &pdist_epilogue, "GEMM block -> condensed distances.", arg("gram"),
        arg("nx"), arg("ny"), arg("row0"), arg("col0"), arg("xi"), arg("xj"), arg("tau"),
        arg("n"), arg("out"));
  m.def("cdist_epilogue", &cdist_epilogue, "GEMM block -> dense distances.", arg("gram"),
        arg("nx"), arg("ny"), arg("xi"), arg("xj"), arg("tau"), arg("out"));
  m.def("center_rows", &center_rows, "x - mean and float64 squared row norms.", arg("x"),
        arg("mean"), arg("out"), arg("sqnorm"));
  m.def("condensed_row_max", &condensed_row_max, "Row maxima of a condensed matrix.",
        arg("condensed"), arg("n"), arg("out"));
  m.def("condensed_rows", &condensed_rows, "Scaled rows of a condensed matrix.",
        arg("condensed"), arg("n"), arg("r0"), arg("r1"), arg("scale"), arg("out"));
}
