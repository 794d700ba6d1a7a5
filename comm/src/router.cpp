#include <geopipe/comm/nccl_transport.h>
#include <geopipe/comm/router.h>

#include <geopipe/core/error.h>

#include <algorithm>

namespace geopipe::comm {

Backend choose_backend(const std::string& my_region, const std::string& peer_region,
                       bool tensors_on_gpu, bool nccl_available) {
  if (my_region == peer_region && tensors_on_gpu && nccl_available) return Backend::kNccl;
  return Backend::kMpi;
}

bool Router::needs_nccl(const std::vector<std::string>& plan_transports, bool tensors_on_gpu) {
  const bool plan_wants_nccl =
      std::find(plan_transports.begin(), plan_transports.end(), "nccl") != plan_transports.end();
  return plan_wants_nccl && tensors_on_gpu && NcclTransport::available();
}

Router::Router(Communicator& mpi, NcclTransport* nccl, bool tensors_on_gpu)
    : mpi_(mpi), nccl_(nccl), tensors_on_gpu_(tensors_on_gpu),
      per_peer_(static_cast<size_t>(mpi.size()), Backend::kMpi) {
  for (int peer = 0; peer < mpi.size(); ++peer) {
    const bool reachable = nccl_ != nullptr && nccl_->reaches(peer);
    per_peer_[peer] = choose_backend(mpi.region(), mpi.region_of(peer), tensors_on_gpu, reachable);
  }
}

Backend Router::backend_for(int peer) const {
  if (peer < 0 || peer >= static_cast<int>(per_peer_.size()))
    throw Error("router: peer " + std::to_string(peer) + " is not a rank of this job");
  return per_peer_[peer];
}

Transport& Router::to(int peer) {
  if (backend_for(peer) == Backend::kNccl) return *nccl_;
  return mpi_;
}

std::string Router::follow_plan(int peer, const std::string& transport) {
  backend_for(peer);  // range check
  if (transport != "mpi" && transport != "nccl")
    throw InputError("plan", "links[].transport", "'" + transport + "': expected mpi or nccl");
  std::string why_not;
  if (transport == "nccl") {
    if (!tensors_on_gpu_) why_not = "this stage runs on the CPU";
    else if (nccl_ == nullptr) why_not = "NCCL is not available here";
    else if (!nccl_->reaches(peer)) why_not = "NCCL does not reach rank " + std::to_string(peer);
  }
  per_peer_[peer] = transport == "nccl" && why_not.empty() ? Backend::kNccl : Backend::kMpi;
  return why_not;
}

}  // namespace geopipe::comm
