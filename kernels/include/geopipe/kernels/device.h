// GPU detection that never crashes: on a machine without a GPU or without a driver,
// cudaGetDeviceCount() fails and that simply means "no GPU".
#pragma once

#include <string>

namespace geopipe::kernels {

bool built_with_cuda();     // were the CUDA kernels compiled into this build?
int cuda_device_count();    // 0 without CUDA, without a driver, or without a device
std::string cuda_describe();  // one line: device name and compute capability, or why none

}  // namespace geopipe::kernels
