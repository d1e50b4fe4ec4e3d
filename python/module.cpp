// The extension module hudd_core._C: one init_<op> function per binding file.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "hudd/cuda_info.h"

namespace py = pybind11;

void init_distance(py::module_& m);
void init_lrp(py::module_& m);

PYBIND11_MODULE(_C, m) {
  m.doc() = "Compiled CPU/CUDA kernels of hudd_core.";
  m.def("cuda_compiled", &hudd::cuda_compiled, "True when built with nvcc.");
  m.def("cuda_available", &hudd::cuda_available, "True when the CUDA runtime finds a device.");
  m.def("cuda_archs", &hudd::cuda_archs,
        "Compiled CUDA code: 'sm_XY' machine code and 'compute_XY' PTX ([] without CUDA).");
  m.def("kernel_image_error", &hudd::kernel_image_error, py::arg("device"),
        "'' when the kernels have an image for CUDA device `device`, else the reason.");
  init_distance(m);
  init_lrp(m);
}
