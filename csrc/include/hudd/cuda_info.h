// Run-time facts about CUDA, answered without a GPU or driver present.
#pragma once
#include <string>
#include <vector>

namespace hudd {
// True when the module was compiled with nvcc.
bool cuda_compiled();
// True when the CUDA runtime finds a device. False when built without CUDA, or when
// the driver or device is missing (the static runtime then reports an error, not a crash).
bool cuda_available();
// The code compiled into the module: "sm_XY" (machine code) and "compute_XY" (PTX, which
// the driver compiles for newer devices). Empty without CUDA.
std::vector<std::string> cuda_archs();
// "" when `device` can run our kernels (a machine-code or PTX image matches it), else why
// not (e.g. "no kernel image is available for execution on the device").
std::string kernel_image_error(int device);
}  // namespace hudd
