// Turns CUDA launch errors into C++ exceptions (pybind11 maps them to RuntimeError).
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace hudd {

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("hudd_core CUDA error in ") + what + ": " +
                             cudaGetErrorString(err) + " (code " +
                             std::to_string(static_cast<int>(err)) + ")");
}

inline void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

}  // namespace hudd
