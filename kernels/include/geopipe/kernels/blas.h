// The BLAS library behind LibTorch's CPU matrix products, and its thread count.
//
// Debian's LibTorch calls sgemm_ through libblas.so.3, which resolves to whatever the system's
// alternatives point at: the reference (netlib) BLAS is ~12x slower than OpenBLAS for the GPT
// stages (docs/PERFORMANCE.md). So the library is looked up, never assumed: the shared object
// that actually provides sgemm_ to this process, or, in a process that has not loaded a BLAS
// (the `geopipe` command), the one libblas.so.3 resolves to. OpenBLAS keeps a thread pool of
// its own (pthread build) or follows OpenMP (OpenMP build); set_blas_threads() bounds either.
#pragma once

#include <string>

namespace geopipe::kernels {

struct BlasInfo {
  std::string library;    // resolved path of the shared object providing sgemm_; "" if none
  std::string name;       // "OpenBLAS 0.3.21", "reference BLAS (netlib)", "BLIS", "MKL", "unknown"
  std::string threading;  // "openmp", "pthread", "serial" (OpenBLAS), "" when unknown
  std::string config;     // the library's own configuration string, when it has one
  int threads = 0;        // the library's current thread count; 0 when it cannot say
  bool in_process = false;  // true: loaded by this process; false: found by loading libblas.so.3
  bool optimized() const { return name.rfind("reference", 0) != 0 && !library.empty(); }
};

BlasInfo blas_info();
// One line, e.g. "OpenBLAS 0.3.21 (openmp, 1 thread) /usr/lib/.../openblas-openmp/libblas.so.3".
std::string describe(const BlasInfo& info);

// Bounds the BLAS library's own threads (OpenBLAS: openblas_set_num_threads). Returns false
// when the library has no such control (reference BLAS is single-threaded anyway).
bool set_blas_threads(int threads);

}  // namespace geopipe::kernels
