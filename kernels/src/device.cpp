#include <geopipe/kernels/device.h>

#ifdef GEOPIPE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace geopipe::kernels {

bool built_with_cuda() {
#ifdef GEOPIPE_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef GEOPIPE_HAVE_CUDA
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

std::string cuda_describe() {
#ifdef GEOPIPE_HAVE_CUDA
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string("no GPU: ") + cudaGetErrorString(err);
  }
  if (n == 0) return "no GPU: no CUDA device";
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return "no GPU: cannot read device 0";
  return std::to_string(n) + " GPU(s); device 0: " + prop.name + " (sm_" + std::to_string(prop.major) +
         std::to_string(prop.minor) + ", " + std::to_string(prop.totalGlobalMem >> 20) + " MiB)";
#else
  return "no GPU: built without CUDA";
#endif
}

}  // namespace geopipe::kernels
