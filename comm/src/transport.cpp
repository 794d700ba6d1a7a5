// What every backend shares (transport.h).
#include <geopipe/comm/transport.h>

namespace geopipe::comm {

const char* backend_name(Backend backend) { return backend == Backend::kMpi ? "mpi" : "nccl"; }

void wait_all(std::vector<Request>& requests, Seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (auto& r : requests) {
    const Seconds left = deadline - std::chrono::steady_clock::now();
    r.wait(left.count() > 0 ? left : Seconds(0));
  }
}

}  // namespace geopipe::comm
