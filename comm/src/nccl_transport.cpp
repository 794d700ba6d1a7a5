#include <geopipe/comm/nccl_transport.h>

#include <geopipe/core/error.h>

#if GEOPIPE_HAVE_NCCL
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>
#endif

#include <algorithm>
#include <sstream>
#include <thread>

namespace geopipe::comm {

#if GEOPIPE_HAVE_NCCL

namespace {

void cuda_check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw Error(std::string(what) + ": " + cudaGetErrorString(err));
}
void nccl_check(ncclResult_t res, const char* what) {
  if (res != ncclSuccess) throw Error(std::string(what) + ": " + ncclGetErrorString(res));
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

class NcclRequestState;

class NcclTransport::Impl {
 public:
  Communicator& mpi;
  std::unique_ptr<Communicator> headers;  // header-only messages for this transport
  std::vector<int> region_ranks;          // world ranks of this region, in NCCL rank order
  ncclComm_t comm = nullptr;
  cudaStream_t comm_stream = nullptr;
  cudaStream_t compute_stream = nullptr;
  int device = 0;
  int group_depth = 0;
  std::vector<std::shared_ptr<NcclRequestState>> group_pending;  // done events to record
  Impl(Communicator& m) : mpi(m) {}

  int local(int world_rank) const {
    auto it = std::find(region_ranks.begin(), region_ranks.end(), world_rank);
    return it == region_ranks.end() ? -1 : static_cast<int>(it - region_ranks.begin());
  }
};

class NcclRequestState final : public RequestState {
 public:
  NcclRequestState(NcclTransport::Impl* impl, Request header_request, bool is_send, int peer,
                   int tag, size_t bytes)
      : impl_(impl), header_(std::move(header_request)), is_send_(is_send), peer_(peer), tag_(tag),
        bytes_(bytes), start_(now_s()) {
    cuda_check(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreate");
  }
  ~NcclRequestState() override {
    if (done_) cudaEventDestroy(done_);
  }
  void record() {
    cuda_check(cudaEventRecord(done_, impl_->comm_stream), "cudaEventRecord");
    recorded_ = true;
  }
  bool test() override {
    if (!header_.test()) return false;  // throws on a header mismatch (names both ranks)
    if (!recorded_) return false;
    const cudaError_t q = cudaEventQuery(done_);
    if (q == cudaErrorNotReady) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(impl_->comm, &async);
      if (async != ncclSuccess) throw Error(describe() + ": NCCL error " + ncclGetErrorString(async));
      return false;
    }
    cuda_check(q, "cudaEventQuery");
    return true;
  }
  void wait(Seconds timeout) override {
    const double deadline = now_s() + timeout.count();
    while (!test()) {
      if (now_s() >= deadline)
        throw TimeoutError(describe() + ": timed out after " + std::to_string(now_s() - start_) +
                           " s (" + (header_.test() ? "header checked, GPU transfer pending"
                                                     : "header not yet arrived") + ")");
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  void cancel() override { header_.cancel(); }
  const MessageHeader& header() const override { return header_.header(); }
  std::vector<uint8_t>& payload() override { return empty_; }
  std::string describe() const override {
    std::ostringstream os;
    const int me = impl_->mpi.rank();
    os << "nccl " << (is_send_ ? "send" : "recv") << " rank " << me << " (region "
       << impl_->mpi.region() << ") " << (is_send_ ? "-> " : "<- ") << "rank " << peer_
       << " (region " << impl_->mpi.region_of(peer_) << "), tag " << tag_ << ", " << bytes_ << " B";
    return os.str();
  }
  Seconds default_timeout() const override { return header_.state()->default_timeout(); }
  cudaEvent_t done_event() const { return done_; }

 private:
  NcclTransport::Impl* impl_;
  Request header_;
  bool is_send_;
  int peer_, tag_;
  size_t bytes_;
  double start_;
  cudaEvent_t done_ = nullptr;
  bool recorded_ = false;
  std::vector<uint8_t> empty_;
};

bool NcclTransport::available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

NcclTransport::NcclTransport(Communicator& mpi, int device) : impl_(std::make_unique<Impl>(mpi)) {
  if (!available()) throw Error("NcclTransport: no CUDA device is visible on rank " +
                                std::to_string(mpi.rank()));
  Impl& im = *impl_;
  im.device = device;
  CommOptions header_options;
  header_options.region = mpi.region();
  header_options.emulate = EmulateMode::kNone;
  im.headers = std::make_unique<Communicator>(header_options);
  // Group ranks by region (colour = first rank of the region).
  const auto& regions = mpi.regions();
  int color = 0;
  while (regions[color] != mpi.region()) ++color;
  for (int r = 0; r < mpi.size(); ++r)
    if (regions[r] == mpi.region()) im.region_ranks.push_back(r);
  MPI_Comm region_comm;
  MPI_Comm_split(MPI_COMM_WORLD, color, mpi.rank(), &region_comm);
  ncclUniqueId id;
  if (im.local(mpi.rank()) == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, region_comm);
  MPI_Comm_free(&region_comm);
  cuda_check(cudaSetDevice(device), "cudaSetDevice");
  nccl_check(ncclCommInitRank(&im.comm, static_cast<int>(im.region_ranks.size()), id,
                              im.local(mpi.rank())),
             "ncclCommInitRank");
  cuda_check(cudaStreamCreateWithFlags(&im.comm_stream, cudaStreamNonBlocking), "cudaStreamCreate");
}

NcclTransport::~NcclTransport() {
  if (!impl_) return;
  if (impl_->comm) ncclCommDestroy(impl_->comm);
  if (impl_->comm_stream) cudaStreamDestroy(impl_->comm_stream);
}

int NcclTransport::rank() const { return impl_->mpi.rank(); }
int NcclTransport::size() const { return impl_->mpi.size(); }
bool NcclTransport::reaches(int peer) const { return impl_->local(peer) >= 0; }

void NcclTransport::set_compute_stream(void* cuda_stream) {
  impl_->compute_stream = static_cast<cudaStream_t>(cuda_stream);
}

void NcclTransport::begin_batch() {
  nccl_check(ncclGroupStart(), "ncclGroupStart");
  impl_->group_depth++;
}

void NcclTransport::end_batch() {
  if (impl_->group_depth == 0) throw Error("NcclTransport::end_batch without begin_batch");
  nccl_check(ncclGroupEnd(), "ncclGroupEnd");
  if (--impl_->group_depth == 0) {
    for (auto& r : impl_->group_pending) r->record();
    impl_->group_pending.clear();
  }
}

namespace {

Request enqueue(NcclTransport::Impl& im, Request header_request, bool is_send, void* data,
                size_t bytes, int peer, int tag) {
  auto state = std::make_shared<NcclRequestState>(&im, std::move(header_request), is_send, peer,
                                                  tag, bytes);
  cudaEvent_t ready;
  cuda_check(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreate");
  cuda_check(cudaEventRecord(ready, im.compute_stream), "cudaEventRecord");
  cuda_check(cudaStreamWaitEvent(im.comm_stream, ready, 0), "cudaStreamWaitEvent");
  cudaEventDestroy(ready);  // safe: destruction is deferred until the event completes
  if (is_send)
    nccl_check(ncclSend(data, bytes, ncclUint8, im.local(peer), im.comm, im.comm_stream), "ncclSend");
  else
    nccl_check(ncclRecv(data, bytes, ncclUint8, im.local(peer), im.comm, im.comm_stream), "ncclRecv");
  if (im.group_depth > 0) im.group_pending.push_back(state);  // enqueued at ncclGroupEnd
  else state->record();
  return Request(state);
}

}  // namespace

Request NcclTransport::isend(const void* data, size_t bytes, int peer, int tag,
                             const MessageHeader& header) {
  if (!reaches(peer))
    throw Error("nccl isend: rank " + std::to_string(rank()) + " cannot reach rank " +
                std::to_string(peer) + " (another region); use the MPI transport");
  MessageHeader h = header;
  h.flags |= kFlagOutOfBand;
  Request hdr = impl_->headers->isend(nullptr, bytes, peer, tag, h);
  return enqueue(*impl_, std::move(hdr), true, const_cast<void*>(data), bytes, peer, tag);
}

Request NcclTransport::irecv(void* data, size_t capacity, int peer, int tag, const Expect& expect) {
  if (!reaches(peer))
    throw Error("nccl irecv: rank " + std::to_string(rank()) + " cannot reach rank " +
                std::to_string(peer) + " (another region); use the MPI transport");
  Request hdr = impl_->headers->irecv(nullptr, capacity, peer, tag, expect);
  return enqueue(*impl_, std::move(hdr), false, data, capacity, peer, tag);
}

void NcclTransport::stream_wait(const Request& request, void* cuda_stream) {
  auto* state = dynamic_cast<NcclRequestState*>(request.state());
  if (!state) throw Error("NcclTransport::stream_wait: not a request of the NCCL transport");
  cuda_check(cudaStreamWaitEvent(static_cast<cudaStream_t>(cuda_stream), state->done_event(), 0),
             "cudaStreamWaitEvent");
}

#else  // built without NCCL: the class exists so callers compile; constructing it says why not.

class NcclTransport::Impl {};

bool NcclTransport::available() { return false; }
NcclTransport::NcclTransport(Communicator&, int) {
  throw Error("NcclTransport: this build has no NCCL (configure with CUDA and NCCL present)");
}
NcclTransport::~NcclTransport() = default;
int NcclTransport::rank() const { return 0; }
int NcclTransport::size() const { return 0; }
bool NcclTransport::reaches(int) const { return false; }
Request NcclTransport::isend(const void*, size_t, int, int, const MessageHeader&) { return {}; }
Request NcclTransport::irecv(void*, size_t, int, int, const Expect&) { return {}; }
void NcclTransport::set_compute_stream(void*) {}
void NcclTransport::begin_batch() {}
void NcclTransport::end_batch() {}
void NcclTransport::stream_wait(const Request&, void*) {}

#endif

}  // namespace geopipe::comm
