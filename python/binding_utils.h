// Helpers shared by the binding files: raw pointers travel as integers (torch's
// data_ptr(), NumPy's ctypes.data); a CUDA stream travels as an integer or None (= CPU).
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace hudd_py {

template <typename T>
T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

inline void* stream_ptr(std::optional<std::uintptr_t> stream) {
  return reinterpret_cast<void*>(*stream);
}

inline void require_cuda_build(const char* op) {
#ifndef HUDD_WITH_CUDA
  throw std::runtime_error(std::string(op) +
                           ": hudd_core._C was built without CUDA (set HUDD_CUDA=on and rebuild)");
#endif
}

// Calls f<float> or f<double> according to the dtype name from Python.
template <typename F>
void dispatch_float(const std::string& dtype, const char* op, F&& f) {
  if (dtype == "float32") {
    f(float{});
  } else if (dtype == "float64") {
    f(double{});
  } else {
    throw std::invalid_argument(std::string(op) + ": unsupported dtype " + dtype);
  }
}

}  // namespace hudd_py
