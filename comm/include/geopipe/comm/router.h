// Picks the backend per peer: a peer in the same region with both tensors on GPU and NCCL
// available -> NCCL; anything else (another region, CPU tensors, no NCCL) -> MPI. A plan's
// link may also say "mpi" explicitly (LinkPlan::transport), which wins over NCCL.
#pragma once

#include <geopipe/comm/communicator.h>
#include <geopipe/comm/transport.h>

#include <string>
#include <vector>

namespace geopipe::comm {

class NcclTransport;

Backend choose_backend(const std::string& my_region, const std::string& peer_region,
                       bool tensors_on_gpu, bool nccl_available);

class Router {
 public:
  // `nccl` may be null (no GPU / not built). Transports must outlive the router.
  Router(Communicator& mpi, NcclTransport* nccl, bool tensors_on_gpu);
  Backend backend_for(int peer) const;
  Transport& to(int peer);
  // The plan says which transport a link uses; "mpi" forces MPI for that peer, "nccl" is
  // honoured only where NCCL can reach the peer (else InputError naming the peer).
  void set_plan_transport(int peer, const std::string& transport);

 private:
  Communicator& mpi_;
  NcclTransport* nccl_;
  std::vector<Backend> per_peer_;
};

}  // namespace geopipe::comm
