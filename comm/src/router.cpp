#include <geopipe/comm/nccl_transport.h>
#include <geopipe/comm/router.h>

#include <geopipe/core/error.h>

namespace geopipe::comm {

Backend choose_backend(const std::string& my_region, const std::string& peer_region,
                       bool tensors_on_gpu, bool nccl_available) {
  if (my_region == peer_region && tensors_on_gpu && nccl_available) return Backend::kNccl;
  return Backend::kMpi;
}

Router::Router(Communicator& mpi, NcclTransport* nccl, bool tensors_on_gpu)
    : mpi_(mpi), nccl_(nccl), per_peer_(static_cast<size_t>(mpi.size()), Backend::kMpi) {
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

void Router::set_plan_transport(int peer, const std::string& transport) {
  backend_for(peer);  // range check
  if (transport == "mpi") {
    per_peer_[peer] = Backend::kMpi;
  } else if (transport == "nccl") {
    if (nccl_ == nullptr || !nccl_->reaches(peer))
      throw InputError("plan", "links[].transport",
                       "'nccl' to rank " + std::to_string(peer) + " (region " + mpi_.region_of(peer) +
                           ") from rank " + std::to_string(mpi_.rank()) + " (region " +
                           mpi_.region() + "): NCCL cannot reach that peer here");
    per_peer_[peer] = Backend::kNccl;
  } else {
    throw InputError("plan", "links[].transport", "'" + transport + "': expected mpi or nccl");
  }
}

}  // namespace geopipe::comm
