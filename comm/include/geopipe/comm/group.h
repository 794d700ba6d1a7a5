// Collectives inside a group of ranks: a stage's data-parallel replicas, which average their
// gradients (runtime/src/grad_reducer.h). Non-blocking all-reduce, reduce-scatter and all-gather
// of float32 buffers, each returning a GroupRequest that completes in the background.
//
// - MPI (host memory): a sub-communicator of the job's (MPI_Comm_split); the operations are MPI's
//   non-blocking collectives, driven by the Communicator's progress engine (its thread polls them
//   while any is pending, so they advance while the caller computes).
// - NCCL (GPU memory): a communicator of the same ranks, bootstrapped over the MPI group; the
//   operations run on the group's own stream after the caller's compute stream reached them.
// Every rank of a group must start the same collectives in the same order (MPI and NCCL both
// match them by order). Buffers stay valid and untouched until their request completed. A wait
// that times out throws TimeoutError naming this rank, the operation and the group's ranks; the
// job should stop then (its buffers may still be written: the runtime keeps them until exit).
#pragma once

#include <geopipe/comm/transport.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace geopipe::comm {

class Communicator;

// Seconds on the steady clock that completed_at() uses.
double steady_now_s();

// A handle to one non-blocking group collective. Cheap to copy (shared state).
class GroupRequest {
 public:
  class State {
   public:
    virtual ~State() = default;
    virtual bool test() = 0;  // true once complete; throws Error when it failed
    virtual std::string describe() const = 0;  // "all-reduce of bucket 2 (4194304 floats)"
    // When it completed (comm's steady clock, seconds; as seen by the progress engine on MPI, by
    // the first test() that saw it on NCCL). Valid once test() returned true.
    virtual double completed_at() const = 0;
  };
  GroupRequest() = default;
  GroupRequest(std::shared_ptr<State> state, std::string group_name, int world_rank)
      : state_(std::move(state)), group_(std::move(group_name)), rank_(world_rank) {}
  bool valid() const { return state_ != nullptr; }
  bool test() { return state_->test(); }
  double completed_at() const { return state_->completed_at(); }
  // Blocks until complete; after `timeout`, TimeoutError: "rank 3: all-reduce of ... in group
  // stage 1 replicas (ranks 2, 3) timed out after 5 s: a replica is missing, dead or stuck".
  void wait(Seconds timeout);

 private:
  std::shared_ptr<State> state_;
  std::string group_;
  int rank_ = 0;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;  // this rank's index in the group
  virtual int size() const = 0;
  virtual int world_rank() const = 0;
  const std::string& name() const { return name_; }  // "stage 1 replicas (ranks 2, 3)"
  virtual bool on_gpu() const = 0;  // buffers are device memory (NCCL)

  // `count` floats summed over the group, in place.
  virtual GroupRequest allreduce_sum(float* data, size_t count, const std::string& what) = 0;
  // `send` holds size() blocks of `count` floats; `recv` (count floats) gets the sum of block rank().
  virtual GroupRequest reduce_scatter_sum(const float* send, float* recv, size_t count, const std::string& what) = 0;
  // Every rank's `count` floats of `send`, in group order, into `recv` (size() x count floats).
  virtual GroupRequest allgather(const float* send, float* recv, size_t count, const std::string& what) = 0;

 protected:
  explicit ProcessGroup(std::string name) : name_(std::move(name)) {}

 private:
  std::string name_;
};

// The MPI group of the ranks that pass the same `color`, ordered by `key`. Collective over every
// rank of `comm` (each passes its own color and key). `name` names the group in errors.
// `comm` must outlive the group.
class MpiGroup final : public ProcessGroup {
 public:
  MpiGroup(Communicator& comm, int color, int key, std::string name);
  ~MpiGroup() override;
  MpiGroup(const MpiGroup&) = delete;
  MpiGroup& operator=(const MpiGroup&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int world_rank() const override;
  bool on_gpu() const override { return false; }
  GroupRequest allreduce_sum(float* data, size_t count, const std::string& what) override;
  GroupRequest reduce_scatter_sum(const float* send, float* recv, size_t count, const std::string& what) override;
  GroupRequest allgather(const float* send, float* recv, size_t count, const std::string& what) override;
  void* mpi_comm();  // the MPI_Comm (as void*: this header does not include mpi.h), for NCCL's bootstrap

 private:
  Communicator& comm_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
};

// An NCCL group of `mpi_group`'s ranks on CUDA device `device`. Collective over the group.
// Throws Error when NCCL is not built in or no GPU is present (NcclTransport::available()).
std::unique_ptr<ProcessGroup> make_nccl_group(MpiGroup& mpi_group, int device);

}  // namespace geopipe::comm
