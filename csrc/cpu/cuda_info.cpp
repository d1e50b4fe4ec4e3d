// CPU-only build: no CUDA. The CUDA build replaces this file with csrc/cuda/cuda_info.cu.
#ifndef HUDD_WITH_CUDA
#include "hudd/cuda_info.h"

namespace hudd {
bool cuda_compiled() { return false; }
bool cuda_available() { return false; }
std::vector<std::string> cuda_archs() { return {}; }
std::string kernel_image_error(int) { return "hudd_core._C was built without CUDA"; }
}  // namespace hudd
#endif
