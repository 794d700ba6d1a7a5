// The public Communicator (communicator.h): MPI start-up and shutdown, and a thin face over the
// MPI engine (mpi_engine.h), whose settings come from comm_options.cpp.
#include "mpi_engine.h"

#include <geopipe/comm/communicator.h>

#include <geopipe/core/error.h>

#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif

namespace geopipe::comm {

void init_mpi(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
  else MPI_Query_thread(&provided);
  if (provided < MPI_THREAD_MULTIPLE)
    throw Error(std::string("MPI provides only ") + thread_level_name(provided) +
                "; geopipe needs MPI_THREAD_MULTIPLE (Open MPI >= 3 provides it)");
}

void finalize_mpi() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Finalize();
}

bool mpi_cuda_aware() {
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  return MPIX_Query_cuda_support() == 1;
#else
  return false;
#endif
}

Communicator::Communicator(CommOptions options) : engine_(std::make_unique<Engine>(std::move(options))) {}
Communicator::~Communicator() = default;

int Communicator::rank() const { return engine_->rank_; }
int Communicator::size() const { return engine_->size_; }
const std::string& Communicator::region() const { return engine_->region_; }
const std::string& Communicator::region_of(int rank) const {
  if (rank < 0 || rank >= engine_->size_)
    throw Error("region_of: rank " + std::to_string(rank) + " is not in [0, " +
                std::to_string(engine_->size_) + ")");
  return engine_->regions_[rank];
}
const std::vector<std::string>& Communicator::regions() const { return engine_->regions_; }
bool Communicator::emulating() const { return engine_->shaper_ != nullptr; }
void Communicator::begin_step(int64_t step) {
  if (engine_->shaper_) engine_->shaper_->begin_step(step + 1, now_s());
}
const LinkShaper* Communicator::shaper() const { return engine_->shaper_.get(); }
void Communicator::cut_region(const std::string& region) {
  if (!engine_->shaper_) throw Error("cut_region " + region + ": needs emulated links (GEOPIPE_EMULATE software or netns)");
  const int index = engine_->shaper_->region_index(region);
  if (index < 0) throw Error("cut_region: the link shaper has no region " + region);
  engine_->shaper_->cut_region(index, now_s());
}
bool Communicator::checksum_enabled() const { return engine_->checksum_; }
bool Communicator::authenticating() const { return engine_->auth_ != nullptr; }
size_t Communicator::chunk_bytes() const { return engine_->chunk_bytes_; }

Request Communicator::isend(const void* data, size_t bytes, int peer, int tag,
                            const MessageHeader& header) {
  return engine_->isend(data, bytes, peer, tag, header);
}
Request Communicator::irecv(void* data, size_t capacity, int peer, int tag, const Expect& expect) {
  return engine_->irecv(data, capacity, false, peer, tag, expect);
}
Request Communicator::irecv_any_size(int peer, int tag, const Expect& expect) {
  return engine_->irecv(nullptr, 0, true, peer, tag, expect);
}

CommStats Communicator::stats() const {
  CommStats s;
  s.messages_sent = engine_->sent_msgs_;
  s.messages_received = engine_->recv_msgs_;
  s.bytes_sent = engine_->sent_bytes_;
  s.bytes_received = engine_->recv_bytes_;
  s.shaper_delay_s = engine_->shaper_delay_;
  return s;
}

CommQueues Communicator::queues() const {
  Engine& e = *engine_;
  CommQueues q;
  std::lock_guard<std::mutex> lock(e.mu_);
  q.mpi_requests = e.reqs_.size();
  q.sends_queued = e.sending_.size();
  q.receives_queued = e.recv_order_.size();
  q.live_messages = e.live_ops_.load();
  q.abandoned_collectives = e.abandoned_.size();
  for (MPI_Comm c : {e.hdr_comm_, e.data_comm_}) {
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, c, &flag, MPI_STATUS_IGNORE);
    q.unexpected_messages = q.unexpected_messages || flag != 0;
  }
  return q;
}

void Communicator::inject_fault_for_testing(TestFault fault) { engine_->fault_ = fault; }

}  // namespace geopipe::comm
