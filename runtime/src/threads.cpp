// A rank's compute threads: how many by default, and bounding all of them (trainer.h).
#include <geopipe/core/env.h>
#include <geopipe/core/error.h>
#include <geopipe/kernels/blas.h>
#include <geopipe/runtime/trainer.h>

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

namespace geopipe::runtime {

int ranks_on_this_host() {
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
  int local_size = 1;
  MPI_Comm_size(local, &local_size);
  MPI_Comm_free(&local);
  // Emulated regions in network namespaces look like separate hosts to MPI; launch says how
  // many ranks really share the cores.
  if (const char* v = std::getenv(env::kRanksOnHost); v && *v) {
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    if (*end != '\0' || n < 1 || n > 1 << 20)
      throw InputError(env::kRanksOnHost, "", std::string("expected a positive rank count, got \"") + v + "\"");
    local_size = std::max(local_size, static_cast<int>(n));
  }
  return local_size;
}

int default_threads_per_rank() {
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / ranks_on_this_host());
}

std::string set_compute_threads(int threads) {
  if (threads < 1) throw InputError("--threads", "threads", "expected >= 1, got " + std::to_string(threads));
  // LibTorch's intra-op pool is OpenMP here, and oneDNN runs on the same OpenMP runtime.
  at::set_num_threads(threads);
  // The BLAS keeps its own count: OpenBLAS's pthread build a pool of its own that ignores
  // OpenMP (more busy threads than asked), its OpenMP build its own copy of the OpenMP setting.
  kernels::set_blas_threads(threads);
  return fmt::format("{} thread{} (LibTorch intra-op {}); BLAS {}", threads, threads == 1 ? "" : "s",
                     at::get_num_threads(), kernels::describe(kernels::blas_info()));
}

}  // namespace geopipe::runtime
