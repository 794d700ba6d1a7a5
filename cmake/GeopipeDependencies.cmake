# Every dependency is found with CMake's own modules or the package's config file.
# Debian packages on CPU machines; PyTorch's LibTorch (Torch_DIR) on GPU machines.

find_package(Threads REQUIRED)
find_package(nlohmann_json 3.2 REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)
find_package(MPI REQUIRED COMPONENTS C CXX)
find_package(Torch REQUIRED)
if(GEOPIPE_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# ---- CUDA toolkit and NCCL: optional, auto-detected --------------------------------------
# Where nvcc exists the .cu files are compiled even without a GPU, so every build proves the
# kernels compile. cudaGetDeviceCount() failing at run time simply means "no GPU".
set(GEOPIPE_HAVE_CUDA OFF)
set(GEOPIPE_HAVE_NCCL OFF)
if(NOT GEOPIPE_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES "80;90" CACHE STRING "GPU architectures for the kernels")
    endif()
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(GEOPIPE_HAVE_CUDA ON)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV NCCL_HOME PATH_SUFFIXES include)
    find_library(NCCL_LIBRARY NAMES nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ENV NCCL_HOME PATH_SUFFIXES lib lib64)
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      add_library(geopipe_nccl INTERFACE)
      target_include_directories(geopipe_nccl INTERFACE ${NCCL_INCLUDE_DIR})
      target_link_libraries(geopipe_nccl INTERFACE ${NCCL_LIBRARY})
      set(GEOPIPE_HAVE_NCCL ON)
    elseif(GEOPIPE_CUDA STREQUAL "ON")
      message(FATAL_ERROR "GEOPIPE_CUDA=ON but NCCL (nccl.h, libnccl) was not found; set NCCL_HOME")
    endif()
  elseif(GEOPIPE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "GEOPIPE_CUDA=ON but no CUDA compiler (nvcc) was found")
  endif()
endif()

# LibTorch built with CUDA (PyTorch 2.x wheels) vs CPU-only (Debian 1.13): the LibTorch adapter
# uses the current CUDA stream only when both LibTorch and our kernels have CUDA.
set(GEOPIPE_TORCH_HAS_CUDA OFF)
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES OR CAFFE2_USE_CUDA)
  set(GEOPIPE_TORCH_HAS_CUDA ON)
endif()
