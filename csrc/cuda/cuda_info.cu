// CUDA side of hudd/cuda_info.h; the CPU-only build uses csrc/cpu/cuda_info.cpp.
#include <cuda_runtime.h>

#include <sstream>

#include "hudd/cuda_info.h"

#ifndef HUDD_CUDA_ARCHS
#error "CMakeLists.txt passes HUDD_CUDA_ARCHS (the CMAKE_CUDA_ARCHITECTURES it compiles for)"
#endif

namespace hudd {
namespace {

// Compiled with the same architectures as every other kernel: if the runtime finds an
// image of it for a device, it finds one of theirs.
__global__ void probe_kernel(int* out) {
  if (out) *out = 1;
}

}  // namespace

bool cuda_compiled() { return true; }

bool cuda_available() {
  int count = 0;
  // Without a driver the static runtime returns an error (e.g. 35) instead of crashing.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    return false;
  }
  return count > 0;
}

std::vector<std::string> cuda_archs() {
  // HUDD_CUDA_ARCHS is CMake's list, commas for semicolons: "75-real,...,120-virtual".
  std::vector<std::string> archs;
  std::stringstream list(HUDD_CUDA_ARCHS);
  for (std::string item; std::getline(list, item, ',');) {
    const auto dash = item.find('-');
    const std::string number = item.substr(0, dash);
    const std::string kind = dash == std::string::npos ? "" : item.substr(dash + 1);
    if (kind != "virtual") archs.push_back("sm_" + number);
    if (kind != "real") archs.push_back("compute_" + number);
  }
  return archs;
}

std::string kernel_image_error(int device) {
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess) {
    cudaGetLastError();
    return "no CUDA device";
  }
  cudaError_t err = cudaSetDevice(device);
  cudaFuncAttributes attr;
  if (err == cudaSuccess) err = cudaFuncGetAttributes(&attr, probe_kernel);
  cudaGetLastError();  // not sticky, but leave no error for the next launch to find
  cudaSetDevice(previous);
  return err == cudaSuccess ? "" : cudaGetErrorString(err);
}

}  // namespace hudd
