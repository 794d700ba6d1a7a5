// Group collectives over NCCL (group.h): a communicator of the MPI group's ranks, bootstrapped
// over it (the group's first rank makes the unique id); each collective is enqueued on the
// group's own stream after an event recorded on the legacy stream (where the caller's gradients
// were computed), and completes when its own event has passed.
#include <geopipe/comm/group.h>
#include <geopipe/comm/nccl_transport.h>

#include <geopipe/core/error.h>

#if GEOPIPE_HAVE_NCCL
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>
#endif

namespace geopipe::comm {

#if GEOPIPE_HAVE_NCCL

namespace {

void cuda_check(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) throw Error(what + ": " + cudaGetErrorString(err));
}
void nccl_check(ncclResult_t res, const std::string& what) {
  if (res != ncclSuccess) throw Error(what + ": " + ncclGetErrorString(res));
}

class NcclGroupRequest final : public GroupRequest::State {
 public:
  NcclGroupRequest(ncclComm_t comm, cudaStream_t stream, std::string what) : comm_(comm), what_(std::move(what)) {
    cuda_check(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreate");
    cuda_check(cudaEventRecord(done_, stream), "cudaEventRecord");
  }
  ~NcclGroupRequest() override { cudaEventDestroy(done_); }
  bool test() override {
    const cudaError_t q = cudaEventQuery(done_);
    if (q == cudaErrorNotReady) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess) throw Error(what_ + ": NCCL error " + ncclGetErrorString(async));
      return false;
    }
    cuda_check(q, what_ + ": cudaEventQuery");
    if (done_at_ == 0) done_at_ = steady_now_s();
    return true;
  }
  std::string describe() const override { return what_; }
  double completed_at() const override { return done_at_; }

 private:
  ncclComm_t comm_;
  cudaEvent_t done_ = nullptr;
  std::string what_;
  double done_at_ = 0;
};

class NcclGroup final : public ProcessGroup {
 public:
  NcclGroup(MpiGroup& mpi, int device) : ProcessGroup(mpi.name()), rank_(mpi.rank()), size_(mpi.size()),
                                         world_rank_(mpi.world_rank()) {
    if (!NcclTransport::available())
      throw Error("group " + name() + ": NCCL needs a CUDA device, none is visible on rank " + std::to_string(world_rank_));
    ncclUniqueId id;
    if (rank_ == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, *static_cast<MPI_Comm*>(mpi.mpi_comm()));
    cuda_check(cudaSetDevice(device), "cudaSetDevice");
    nccl_check(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank for group " + name());
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    cuda_check(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "cudaEventCreate");
  }
  ~NcclGroup() override {
    if (stream_) cudaStreamSynchronize(stream_);
    if (comm_) ncclCommDestroy(comm_);
    if (ready_) cudaEventDestroy(ready_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int world_rank() const override { return world_rank_; }
  bool on_gpu() const override { return true; }

  GroupRequest allreduce_sum(float* data, size_t count, const std::string& what) override {
    after_compute();
    nccl_check(ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_, stream_), "ncclAllReduce of " + what);
    return request("all-reduce of " + what);
  }
  GroupRequest reduce_scatter_sum(const float* send, float* recv, size_t count, const std::string& what) override {
    after_compute();
    nccl_check(ncclReduceScatter(send, recv, count, ncclFloat32, ncclSum, comm_, stream_), "ncclReduceScatter of " + what);
    return request("reduce-scatter of " + what);
  }
  GroupRequest allgather(const float* send, float* recv, size_t count, const std::string& what) override {
    after_compute();
    nccl_check(ncclAllGather(send, recv, count, ncclFloat32, comm_, stream_), "ncclAllGather of " + what);
    return request("all-gather of " + what);
  }

 private:
  // The collective starts when the work queued so far on the legacy stream (the gradients) is done.
  void after_compute() {
    cuda_check(cudaEventRecord(ready_, nullptr), "cudaEventRecord");
    cuda_check(cudaStreamWaitEvent(stream_, ready_, 0), "cudaStreamWaitEvent");
  }
  GroupRequest request(const std::string& what) {
    return GroupRequest(std::make_shared<NcclGroupRequest>(comm_, stream_, what), name(), world_rank_);
  }

  int rank_, size_, world_rank_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;
};

}  // namespace

std::unique_ptr<ProcessGroup> make_nccl_group(MpiGroup& mpi_group, int device) {
  return std::make_unique<NcclGroup>(mpi_group, device);
}

#else

std::unique_ptr<ProcessGroup> make_nccl_group(MpiGroup& mpi_group, int) {
  throw Error("group " + mpi_group.name() + ": this geopipe was built without NCCL");
}

#endif

}  // namespace geopipe::comm
