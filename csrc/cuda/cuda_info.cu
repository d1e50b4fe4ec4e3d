// CUDA side of hudd/cuda_info.h; the CPU-only build uses csrc/cpu/cuda_info.cpp.
#include <cuda_runtime.h>

#include "hudd/cuda_info.h"

namespace hudd {

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

}  // namespace hudd
