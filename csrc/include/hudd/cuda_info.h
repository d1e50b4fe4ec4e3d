// Run-time facts about CUDA, answered without a GPU or driver present.
#pragma once

namespace hudd {
// True when the module was compiled with nvcc.
bool cuda_compiled();
// True when a CUDA device can run our kernels. False when built without CUDA, or when
// the driver or device is missing (the static runtime then reports an error, not a crash).
bool cuda_available();
}  // namespace hudd
