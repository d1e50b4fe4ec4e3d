// Bindings of csrc/*/lrp_*: see hudd_core/lrp/kernels.py for the callers and the
// plain-torch twin of every op. The tensors' device picks the CPU or CUDA implementation;
// every tensor is checked to hold exactly the elements its kernel reads or writes.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "binding_utils.h"
#include "hudd/lrp.h"
#include "hudd/lrp_ops.h"

namespace py = pybind11;
using hudd_py::ptr;

namespace {

void check_mode(hudd_py::Call& c, int mode) {
  if (mode < hudd::kPlain || mode > hudd::kBox)
    c.fail("mode", "must be 0 (plain), 1 (pos/neg) or 2 (box), got " + std::to_string(mode));
}

// batch × n elements, both counts non-negative and the product far from overflowing
// (a wrapped product could match a tensor's size and pass the checks below).
int64_t elements(hudd_py::Call& c, int64_t batch, int64_t n) {
  if (batch < 0) c.fail("batch", "must be >= 0, got " + std::to_string(batch));
  if (n < 0) c.fail("n", "must be >= 0, got " + std::to_string(n));
  constexpr int64_t kMax = int64_t{1} << 60;  // room for the 3 parts of the box rule
  if (n > 0 && batch > kMax / n) c.fail("batch * n", "is too large");
  return batch * n;
}

void lrp_divide(py::handle r, py::handle z, py::handle gate, int64_t batch, int64_t n,
                double eps, double cp, double cn, int parts, py::handle out) {
  hudd_py::Call c("lrp_divide");
  if (parts != 1 && parts != 2) c.fail("parts", "must be 1 or 2, got " + std::to_string(parts));
  const int64_t total = elements(c, batch, n);
  const auto pr = c.tensor(r, "r", total).ptr;
  const auto pz = c.tensor(z, parts == 2 ? "z2" : "z", parts * total).ptr;
  if (parts == 1 && !gate.is_none()) c.fail("gate", "needs parts == 2");
  const auto pg = c.optional(gate, "gate", total);
  const auto po = c.tensor(out, "out", parts * total).ptr;
  c.run_float([&](auto tag) {
    using T = decltype(tag);
    const auto args = std::make_tuple(ptr<const T>(pr), ptr<const T>(pz), ptr<const T>(pg),
                                      batch, n, eps, cp, cn, parts, ptr<T>(po));
    if (!c.on_cuda()) return std::apply(hudd::lrp_divide_cpu<T>, args);
#ifdef HUDD_WITH_CUDA
    std::apply(hudd::lrp_divide_cuda<T>, std::tuple_cat(args, std::make_tuple(c.stream())));
#endif
  });
}

void lrp_split(py::handle x, int64_t batch, int64_t n, int mode, double low, double high,
               py::handle out) {
  hudd_py::Call c("lrp_split");
  check_mode(c, mode);
  const int64_t total = elements(c, batch, n);
  const auto px = c.tensor(x, "x", total).ptr;
  const auto po = c.tensor(out, "out", hudd::lrp_parts(mode) * total).ptr;
  c.run_float([&](auto tag) {
    using T = decltype(tag);
    const auto args =
        std::make_tuple(ptr<const T>(px), batch, n, mode, low, high, ptr<T>(po));
    if (!c.on_cuda()) return std::apply(hudd::lrp_split_cpu<T>, args);
#ifdef HUDD_WITH_CUDA
    std::apply(hudd::lrp_split_cuda<T>, std::tuple_cat(args, std::make_tuple(c.stream())));
#endif
  });
}

void lrp_product(py::handle x, py::handle contrib, int64_t batch, int64_t n, int mode,
                 double low, double high, bool accumulate, py::handle out) {
  hudd_py::Call c("lrp_product");
  check_mode(c, mode);
  const int64_t total = elements(c, batch, n);
  const auto px = c.tensor(x, "x", total).ptr;
  const auto pc = c.tensor(contrib, "c", hudd::lrp_parts(mode) * total).ptr;
  const auto po = c.tensor(out, "out", total).ptr;
  c.run_float([&](auto tag) {
    using T = decltype(tag);
    const auto args = std::make_tuple(ptr<const T>(px), ptr<const T>(pc), batch, n, mode, low,
                                      high, accumulate, ptr<T>(po));
    if (!c.on_cuda()) return std::apply(hudd::lrp_product_cpu<T>, args);
#ifdef HUDD_WITH_CUDA
    std::apply(hudd::lrp_product_cuda<T>, std::tuple_cat(args, std::make_tuple(c.stream())));
#endif
  });
}

void lrp_maxpool_route(py::handle r, py::handle idx, int64_t planes, int64_t n_out,
                       int64_t n_in, bool accumulate, bool deterministic, py::handle out) {
  hudd_py::Call c("lrp_maxpool_route");
  const int64_t routed = elements(c, planes, n_out);
  if (n_in < 0) c.fail("n_in", "must be >= 0, got " + std::to_string(n_in));
  const auto pr = c.tensor(r, "r", routed).ptr;
  const auto pi = c.tensor(idx, "idx", routed, "int64").ptr;
  const auto po = c.tensor(out, "out", planes * n_in).ptr;
  int64_t outside = 0;
  c.run_float([&](auto tag) {
    using T = decltype(tag);
    const auto args = std::make_tuple(ptr<const T>(pr), ptr<const int64_t>(pi), planes, n_out,
                                      n_in, accumulate);
    if (!c.on_cuda()) {
      outside = std::apply(hudd::lrp_maxpool_route_cpu<T>,
                           std::tuple_cat(args, std::make_tuple(ptr<T>(po))));
      return;
    }
#ifdef HUDD_WITH_CUDA
    std::apply(hudd::lrp_maxpool_route_cuda<T>,
               std::tuple_cat(args, std::make_tuple(deterministic, ptr<T>(po), c.stream())));
#endif
  });
  if (outside > 0)
    c.fail("idx", "holds " + std::to_string(outside) + " indices outside [0, n_in = " +
                      std::to_string(n_in) + ")");
}

void lrp_avgpool(py::handle x, py::handle z, py::handle r, int64_t planes, int64_t hi,
                 int64_t wi, int64_t ho, int64_t wo, const std::vector<int64_t>& geo, double eps,
                 bool accumulate, py::handle out) {
  hudd_py::Call c("lrp_avgpool");
  if (geo.size() != 8) c.fail("geometry", "needs 8 entries, got " + std::to_string(geo.size()));
  if (geo[6] == 0 && (geo[0] <= 0 || geo[1] <= 0 || geo[2] <= 0 || geo[3] <= 0 || geo[4] < 0 ||
                      geo[5] < 0))
    c.fail("geometry", "needs positive kernel sizes and strides and non-negative padding");
  if (hi < 0 || wi < 0 || ho < 0 || wo < 0) c.fail("hi, wi, ho, wo", "must be >= 0");
  const int64_t n_in = elements(c, planes, hi * wi);
  const int64_t n_out = elements(c, planes, ho * wo);
  if (n_in > 0 && n_out == 0) c.fail("ho, wo", "must be positive when there is an input");
  const auto px = c.tensor(x, "x", n_in).ptr;
  const auto pz = c.tensor(z, "z", n_out).ptr;
  const auto pr = c.tensor(r, "r", n_out).ptr;
  const auto po = c.tensor(out, "out", n_in).ptr;
  c.run_float([&](auto tag) {
    using T = decltype(tag);
    const auto args = std::make_tuple(ptr<const T>(px), ptr<const T>(pz), ptr<const T>(pr),
                                      planes, hi, wi, ho, wo, geo.data(), eps, accumulate,
                                      ptr<T>(po));
    if (!c.on_cuda()) return std::apply(hudd::lrp_avgpool_cpu<T>, args);
#ifdef HUDD_WITH_CUDA
    std::apply(hudd::lrp_avgpool_cuda<T>, std::tuple_cat(args, std::make_tuple(c.stream())));
#endif
  });
}

void lrp_sum_split(py::handle a, py::handle b, py::handle r, int64_t n, double eps,
                   py::handle ra, py::handle rb) {
  hudd_py::Call c("lrp_sum_split");
  const int64_t total = elements(c, 1, n);
  const auto pa = c.tensor(a, "a", total).ptr;
  const auto pb = c.tensor(b, "b", total).ptr;
  const auto pr = c.tensor(r, "r", total).ptr;
  const auto pra = c.tensor(ra, "ra", total).ptr;
  const auto prb = c.tensor(rb, "rb", total).ptr;
  c.run_float([&](auto tag) {
    using T = decltype(tag);
    const auto args = std::make_tuple(ptr<const T>(pa), ptr<const T>(pb), ptr<const T>(pr), n,
                                      eps, ptr<T>(pra), ptr<T>(prb));
    if (!c.on_cuda()) return std::apply(hudd::lrp_sum_split_cpu<T>, args);
#ifdef HUDD_WITH_CUDA
    std::apply(hudd::lrp_sum_split_cuda<T>, std::tuple_cat(args, std::make_tuple(c.stream())));
#endif
  });
}

}  // namespace

void init_lrp(py::module_& m) {
  using py::arg;
  m.def("lrp_divide", &lrp_divide, "LRP stabilised division (one or two denominators).",
        arg("r"), arg("z"), arg("gate").none(true), arg("batch"), arg("n"), arg("eps"),
        arg("cp"), arg("cn"), arg("parts"), arg("out"));
  m.def("lrp_split", &lrp_split, "LRP input parts: [x+, x-] or [x, low, high].", arg("x"),
        arg("batch"), arg("n"), arg("mode"), arg("low"), arg("high"), arg("out"));
  m.def("lrp_product", &lrp_product, "LRP input x contribution product.", arg("x"), arg("c"),
        arg("batch"), arg("n"), arg("mode"), arg("low"), arg("high"), arg("accumulate"),
        arg("out"));
  m.def("lrp_maxpool_route", &lrp_maxpool_route, "LRP winner-take-all max-pool routing.",
        arg("r"), arg("idx"), arg("planes"), arg("n_out"), arg("n_in"), arg("accumulate"),
        arg("deterministic"), arg("out"));
  m.def("lrp_avgpool", &lrp_avgpool, "LRP average-pool redistribution (Norm rule).", arg("x"),
        arg("z"), arg("r"), arg("planes"), arg("hi"), arg("wi"), arg("ho"), arg("wo"),
        arg("geometry"), arg("eps"), arg("accumulate"), arg("out"));
  m.def("lrp_sum_split", &lrp_sum_split, "LRP residual-addition split (Norm rule).", arg("a"),
        arg("b"), arg("r"), arg("n"), arg("eps"), arg("ra"), arg("rb"));
}
