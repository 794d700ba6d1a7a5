// The one place that decides the backend per peer: a peer in the same region with both tensors
// on GPU and NCCL available -> NCCL; anything else (another region, CPU tensors, no NCCL) -> MPI.
// A plan's link may also name its transport (LinkPlan::transport): follow_plan applies it.
//
// How the runtime uses it: needs_nccl() tells every rank alike whether to create the
// NcclTransport (collectively), the Router then routes each peer, and the plan's transport of
// each neighbour's link goes through follow_plan(), whose answer says why "nccl" fell back to MPI.
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
  // Must this job create an NcclTransport? Yes when a link's transport (`plan_transports`, one
  // per link of the plan) is "nccl", the tensors are on a GPU and NCCL can run here. Every rank
  // gets the same answer from the same plan and device kind: creating the transport is collective.
  static bool needs_nccl(const std::vector<std::string>& plan_transports, bool tensors_on_gpu);

  // `nccl` may be null (no GPU / not built). Transports must outlive the router.
  Router(Communicator& mpi, NcclTransport* nccl, bool tensors_on_gpu);
  Backend backend_for(int peer) const;
  Transport& to(int peer);
  // Applies the plan's transport of the link to `peer`: "mpi" forces MPI; "nccl" takes NCCL
  // where NCCL reaches the peer, else keeps MPI and returns why not (for the caller's warning:
  // "this stage runs on the CPU", ...); "" when the plan was followed. Anything else is an
  // InputError naming the transport.
  std::string follow_plan(int peer, const std::string& transport);

 private:
  Communicator& mpi_;
  NcclTransport* nccl_;
  bool tensors_on_gpu_;
  std::vector<Backend> per_peer_;
};

}  // namespace geopipe::comm
