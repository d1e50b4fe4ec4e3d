// The extension module hudd_core._C: one init_<op> function per binding file.
#include <pybind11/pybind11.h>

#include "hudd/cuda_info.h"

namespace py = pybind11;

void init_distance(py::module_& m);
void init_lrp(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "Compiled CPU/CUDA kernels of hudd_core.";
  m.def("cuda_compiled", &hudd::cuda_compiled, "True when built with nvcc.");
  m.def("cuda_available", &hudd::cuda_available, "True when a CUDA device can run the kernels.");
  init_distance(m);
  init_lrp(m);
}
