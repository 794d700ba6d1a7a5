// Collectives with a timeout (allreduce, barrier): non-blocking MPI collectives on the engine's
// private communicator, polled against the deadline. A collective given up after a timeout stays
// MPI's: it is kept in Engine::abandoned_ with its buffer until the engine is destroyed.
#include "mpi_engine.h"

#include <geopipe/core/error.h>

namespace geopipe::comm {

void Communicator::Engine::collective_wait(MPI_Request& req,
                                           std::unique_ptr<std::vector<double>>& buffer,
                                           Seconds timeout, const std::string& what) {
  const double begin = now_s();
  Backoff backoff(kWaiterSpinS, kWaiterSleepCapS);
  while (true) {
    int flag = 0;
    const int err = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
    if (err != MPI_SUCCESS) throw Error(who(rank_) + ": " + what + " failed: " + mpi_error_string(err));
    if (flag) return;
    const double now = now_s();
    if (now - begin >= timeout.count()) {
      abandoned_.push_back(Abandoned{req, std::move(buffer)});
      throw TimeoutError(who(rank_) + ": " + what + " timed out after " + fmt_seconds(now - begin) +
                         " waiting for all " + std::to_string(size_) +
                         " ranks (a rank is missing, dead or stuck)");
    }
    const double pause = std::min(backoff.next(now), begin + timeout.count() - now);
    if (pause > 0) std::this_thread::sleep_for(Seconds(pause));
  }
}

// The collective works on a heap copy: after a timeout MPI may still write into it.
void Communicator::Engine::allreduce(double* values, int count, MPI_Op op, Seconds timeout,
                                     const char* name) {
  auto buffer = std::make_unique<std::vector<double>>(values, values + count);
  MPI_Request req;
  const int err = MPI_Iallreduce(MPI_IN_PLACE, buffer->data(), count, MPI_DOUBLE, op, coll_comm_, &req);
  if (err != MPI_SUCCESS) throw Error(who(rank_) + ": " + name + " failed: " + mpi_error_string(err));
  collective_wait(req, buffer, timeout, std::string(name) + " of " + std::to_string(count) + " doubles");
  std::copy(buffer->begin(), buffer->end(), values);
}

void Communicator::Engine::barrier(Seconds timeout) {
  MPI_Request req;
  MPI_Ibarrier(coll_comm_, &req);
  std::unique_ptr<std::vector<double>> none;
  collective_wait(req, none, timeout, "barrier");
}

bool Communicator::Engine::settle_abandoned_collectives() {
  bool all_done = true;
  for (Abandoned& a : abandoned_) {
    int flag = 0;
    MPI_Test(&a.request, &flag, MPI_STATUS_IGNORE);
    all_done = all_done && flag;
    if (!flag) (void)a.buffer.release();  // MPI may still write into it: leak it on purpose
  }
  return all_done;
}

void Communicator::allreduce_sum(double* values, int count, Seconds timeout) {
  engine_->allreduce(values, count, MPI_SUM, timeout, "allreduce_sum");
}
void Communicator::allreduce_max(double* values, int count, Seconds timeout) {
  engine_->allreduce(values, count, MPI_MAX, timeout, "allreduce_max");
}
void Communicator::barrier(Seconds timeout) { engine_->barrier(timeout); }

}  // namespace geopipe::comm
