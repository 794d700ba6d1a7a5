// Group collectives over MPI (group.h): a sub-communicator per group, non-blocking collectives
// registered with the engine so its progress thread drives them.
#include <geopipe/comm/group.h>

#include "mpi_engine.h"

#include <geopipe/core/error.h>

#include <algorithm>
#include <sstream>

namespace geopipe::comm {

double steady_now_s() { return now_s(); }

void GroupRequest::wait(Seconds timeout) {
  const double begin = now_s();
  Backoff backoff(kWaiterSpinS, kWaiterSleepCapS);
  while (!state_->test()) {
    const double now = now_s();
    if (now - begin >= timeout.count())
      throw TimeoutError("rank " + std::to_string(rank_) + ": " + state_->describe() + " in group " + group_ +
                         " timed out after " + fmt_seconds(now - begin) +
                         ": a replica is missing, dead or stuck");
    const double pause = std::min(backoff.next(now), begin + timeout.count() - now);
    if (pause > 0) std::this_thread::sleep_for(Seconds(pause));
  }
}

namespace {

class MpiGroupRequest final : public GroupRequest::State {
 public:
  MpiGroupRequest(Communicator::Engine& engine, std::shared_ptr<Communicator::Engine::GroupOp> op, std::string what)
      : engine_(engine), op_(std::move(op)), what_(std::move(what)) {}
  bool test() override { return engine_.test_group_op(*op_); }
  std::string describe() const override { return what_; }
  double completed_at() const override { return op_->done_at; }

 private:
  Communicator::Engine& engine_;
  std::shared_ptr<Communicator::Engine::GroupOp> op_;
  std::string what_;
};

void mpi_check(int err, const std::string& what) {
  if (err != MPI_SUCCESS) throw Error(what + " failed: " + mpi_error_string(err));
}

}  // namespace

std::shared_ptr<Communicator::Engine::GroupOp> Communicator::Engine::start_group_op(
    const std::function<int(MPI_Request*)>& post, const std::string& what) {
  auto op = std::make_shared<GroupOp>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    mpi_check(post(&op->request), who(rank_) + ": " + what);
    group_ops_.push_back(op);
    if (idle_sleeping_) cv_.notify_one();
  }
  return op;
}

bool Communicator::Engine::progress_group_ops_locked() {
  bool progressed = false;
  for (auto it = group_ops_.begin(); it != group_ops_.end();) {
    GroupOp& op = **it;
    int flag = 0;
    op.error = MPI_Test(&op.request, &flag, MPI_STATUS_IGNORE);
    if (flag || op.error != MPI_SUCCESS) {
      op.done = true;
      op.done_at = now_s();
      progressed = true;
      it = group_ops_.erase(it);
    } else {
      ++it;
    }
  }
  return progressed;
}

bool Communicator::Engine::test_group_op(GroupOp& op) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!op.done) progress_group_ops_locked();
  if (op.done && op.error != MPI_SUCCESS) throw Error(who(rank_) + ": group collective failed: " + mpi_error_string(op.error));
  return op.done;
}

struct MpiGroup::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  std::vector<std::shared_ptr<Communicator::Engine::GroupOp>> pending;  // the comm may be freed when all are done

  GroupRequest start(Communicator& comm, const std::string& group, const std::string& what,
                     const std::function<int(MPI_Comm, MPI_Request*)>& post) {
    Communicator::Engine& e = *comm.engine_;
    auto op = e.start_group_op([&](MPI_Request* r) { return post(this->comm, r); }, what);
    pending.erase(std::remove_if(pending.begin(), pending.end(), [](const auto& o) { return o->done; }), pending.end());
    pending.push_back(op);
    return GroupRequest(std::make_shared<MpiGroupRequest>(e, op, what), group, comm.rank());
  }
};

MpiGroup::MpiGroup(Communicator& comm, int color, int key, std::string name)
    : ProcessGroup(std::move(name)), comm_(comm), impl_(std::make_unique<Impl>()) {
  Communicator::Engine& e = *comm.engine_;
  mpi_check(MPI_Comm_split(e.coll_comm_, color, key, &impl_->comm), e.who(e.rank_) + ": creating group " + this->name());
  MPI_Comm_set_errhandler(impl_->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(impl_->comm, &rank_);
  MPI_Comm_size(impl_->comm, &size_);
}

MpiGroup::~MpiGroup() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized || impl_->comm == MPI_COMM_NULL) return;
  Communicator::Engine& e = *comm_.engine_;
  std::lock_guard<std::mutex> lock(e.mu_);
  e.progress_group_ops_locked();
  for (const auto& op : impl_->pending)
    if (!op->done) return;  // MPI still owns a collective on it (after a timeout): never free it
  MPI_Comm_free(&impl_->comm);
}

int MpiGroup::world_rank() const { return comm_.rank(); }

void* MpiGroup::mpi_comm() { return &impl_->comm; }

GroupRequest MpiGroup::allreduce_sum(float* data, size_t count, const std::string& what) {
  return impl_->start(comm_, name(), "all-reduce of " + what, [&](MPI_Comm c, MPI_Request* r) {
    return MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), MPI_FLOAT, MPI_SUM, c, r);
  });
}

GroupRequest MpiGroup::reduce_scatter_sum(const float* send, float* recv, size_t count, const std::string& what) {
  return impl_->start(comm_, name(), "reduce-scatter of " + what, [&](MPI_Comm c, MPI_Request* r) {
    return MPI_Ireduce_scatter_block(send, recv, static_cast<int>(count), MPI_FLOAT, MPI_SUM, c, r);
  });
}

GroupRequest MpiGroup::allgather(const float* send, float* recv, size_t count, const std::string& what) {
  return impl_->start(comm_, name(), "all-gather of " + what, [&](MPI_Comm c, MPI_Request* r) {
    return MPI_Iallgather(send, static_cast<int>(count), MPI_FLOAT, recv, static_cast<int>(count), MPI_FLOAT, c, r);
  });
}

}  // namespace geopipe::comm
