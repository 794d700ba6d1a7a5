// The NCCL backend: GPU buffers between ranks of the same region. Built only when NCCL was
// found (GEOPIPE_HAVE_NCCL); available() says whether it can run here (a GPU is present).
//
// - Communicators: ranks are grouped by region (MPI_Comm_split on the region index); the
//   region's first rank creates the ncclUniqueId and broadcasts it over MPI, then every rank
//   calls ncclCommInitRank. Collective over all ranks of the Communicator.
// - Ordering: each send/receive is enqueued on the transport's own comm stream after an event
//   recorded on the caller's compute stream (set_compute_stream; default the legacy stream), so
//   the transfer starts when the data is ready without a device-wide sync. stream_wait() makes
//   a compute stream wait for a finished receive, again by an event.
// - Headers: the message header travels over MPI (header only, kFlagOutOfBand) and is checked
//   on arrival exactly as on the MPI backend; wait() returns only when both the header check and
//   the GPU transfer are done. The payload is not checksummed (it never touches the host).
// - Sizes: NCCL moves exact counts, so the receiver must know the payload size: irecv's
//   capacity is the payload size (the runtime knows it from shapes and codecs).
// - Order: NCCL pairs operations in the order they are issued, so both ranks must issue their
//   sends and receives between a pair in the same order (the runtime's action lists guarantee
//   it). A rank that sends and receives at once (or sends to itself) brackets them in a batch
//   (transport.h: begin_batch/end_batch are ncclGroupStart/End here): NCCL refuses a self-send
//   outside a group.
#pragma once

#include <geopipe/comm/communicator.h>
#include <geopipe/comm/transport.h>

#include <memory>

namespace geopipe::comm {

class NcclTransport final : public Transport {
 public:
  // Built with NCCL and at least one CUDA device visible.
  static bool available();

  // `device`: the CUDA device this rank uses. Collective over all ranks of `mpi`.
  // Throws geopipe::Error when NCCL is not built in or no GPU is present.
  NcclTransport(Communicator& mpi, int device);
  ~NcclTransport() override;
  NcclTransport(const NcclTransport&) = delete;
  NcclTransport& operator=(const NcclTransport&) = delete;

  Backend backend() const override { return Backend::kNccl; }
  int rank() const override;   // world rank
  int size() const override;   // world size
  bool reaches(int peer) const;  // is `peer` in this rank's region?

  // `data` is device memory. Peers are world ranks of the same region.
  Request isend(const void* data, size_t bytes, int peer, int tag,
                const MessageHeader& header) override;
  Request irecv(void* data, size_t capacity, int peer, int tag, const Expect& expect) override;

  // ncclGroupStart / ncclGroupEnd; nested batches are one NCCL group.
  void begin_batch() override;
  void end_batch() override;

  void set_compute_stream(void* cuda_stream);  // cudaStream_t; nullptr: the legacy stream
  // Makes `cuda_stream` wait on the GPU until `request` (from this transport) has finished.
  static void stream_wait(const Request& request, void* cuda_stream);

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace geopipe::comm
