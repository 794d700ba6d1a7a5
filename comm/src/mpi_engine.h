// Private to geopipe_comm: the MPI engine behind Communicator. One Engine per Communicator owns
// every MPI request of the transport; all of them are created, tested and retired under one
// mutex (mu_), by whichever thread holds it: the caller inside isend/irecv/test/wait, or the
// progress thread when nobody waits.
//
// mpi_engine.cpp: construction, posting, progress and completion of messages.
// collectives.cpp: allreduce/barrier with a timeout and the collectives abandoned after one.
// comm_options.cpp: CommOptions and the environment resolved into the engine's settings.
#pragma once

#include "comm_options.h"

#include <geopipe/comm/auth.h>
#include <geopipe/comm/communicator.h>

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace geopipe::comm {

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline std::string fmt_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f s", s);
  return buf;
}

inline std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, static_cast<size_t>(len));
}

const char* thread_level_name(int level);

// Polling policy shared by waiting callers and the progress thread: spin while things move,
// then sleep in growing steps so that an idle rank leaves the CPU to compute.
struct Backoff {
  double spin_s;  // poll without sleeping this long after the last progress
  double cap_s;   // longest sleep between polls afterwards
  double idle_since = -1;
  double sleep_s = 0;
  Backoff(double spin, double cap) : spin_s(spin), cap_s(cap) {}
  void reset() { idle_since = -1; sleep_s = 0; }
  // Seconds to sleep before polling again (0: poll at once).
  double next(double now) {
    if (idle_since < 0) idle_since = now;
    if (now - idle_since < spin_s) return 0;
    sleep_s = sleep_s == 0 ? 2e-6 : std::min(sleep_s * 2, cap_s);
    return sleep_s;
  }
};

// A caller inside wait() polls like MPI_Wait for up to 1 ms (yielding the core to any other
// runnable thread between polls), then sleeps in growing steps of at most 100 us. The progress
// thread spins only 50 us, then sleeps up to 200 us while data moves (a send, or a receive whose
// header came), or until the shaper releases a piece. While only receives wait for their peer's
// header (a pipeline posts a whole step's receives at its start) it sleeps up to 2 ms: each poll
// costs the core it shares with the compute (MPI_Testsome over every request), measured at 13 %
// of a 2-rank pipeline's compute at 200 us; a consumer that needs the message polls it itself.
inline constexpr double kWaiterSpinS = 1e-3, kWaiterSleepCapS = 100e-6;
inline constexpr double kProgressSpinS = 50e-6, kProgressSleepCapS = 200e-6, kProgressWaitingCapS = 2e-3;

enum OpState : int { kActive = 0, kArrived = 1, kDone = 2, kFailed = 3 };

// One message (a send or a receive) and everything the engine needs to move it.
struct Op {
  // Counts the engine's live records (CommQueues::live_messages).
  explicit Op(std::atomic<int64_t>* live_counter) : live(live_counter) { ++*live; }
  ~Op() { --*live; }
  Op(const Op&) = delete;
  Op& operator=(const Op&) = delete;
  std::atomic<int64_t>* live;

  bool is_send = false;
  int peer = 0;
  int tag = 0;
  MessageHeader header;  // send: as sent; receive: as received (valid from kArrived)
  std::atomic<int> state{kActive};
  std::string error;     // written before state becomes kFailed
  double start = 0;
  std::mutex verify_mu;

  // Pieces: piece 0 is the header message (with an inline payload), pieces 1.. the chunks.
  int pieces = 1;
  int posted = 0;        // pieces posted so far (sends) / chunk receives posted (receives)
  int completed = 0;     // pieces completed
  int inflight = 0;
  std::vector<double> release;  // send: when each piece may be posted (shaper)
  std::vector<uint8_t> wire;    // send: encoded header (+ inline payload); receive: header buffer
  const uint8_t* data = nullptr;  // send: the payload
  size_t bytes = 0;               // send: payload bytes
  size_t truncate_last = 0;       // fault injection: bytes left out of the last chunk

  // Receive side.
  uint8_t* user = nullptr;
  size_t capacity = 0;
  bool any_size = false;
  Expect expect;
  std::vector<uint8_t> payload;   // irecv_any_size
  std::vector<uint8_t> scratch;   // drains a rejected message's chunks
  uint8_t* dest = nullptr;
  bool header_done = false;       // header message completed (maybe not yet processed)
  bool header_processed = false;
  std::string pending_error;      // found at the header: drain the chunks, then fail
  size_t arrived_bytes = 0;
  bool cancelled = false;
};

// Authenticated sequence numbers received from one peer (under mu_): all below `low`, and
// those above it in `above` (messages on different tags complete out of order).
struct SeenSequences {
  uint32_t low = 0;
  std::set<uint32_t> above;
  bool insert(uint32_t seq) {  // false: already seen (a replay)
    if (seq < low || !above.insert(seq).second) return false;
    while (!above.empty() && *above.begin() == low) {
      above.erase(above.begin());
      ++low;
    }
    return true;
  }
};

class Communicator::Engine {
 public:
  explicit Engine(CommOptions options);
  ~Engine();

  int rank_ = 0, size_ = 1;
  std::string region_;
  std::vector<std::string> regions_;
  std::vector<int> region_index_;  // shaper region of each rank
  std::unique_ptr<LinkShaper> shaper_;
  bool checksum_ = true;
  std::shared_ptr<const AuthKey> auth_;  // null: messages carry no tag
  std::vector<SeenSequences> seen_;      // per peer
  size_t chunk_bytes_ = 1 << 20;
  int max_inflight_ = 16;
  double default_timeout_s_ = 300;
  MPI_Comm hdr_comm_ = MPI_COMM_NULL, data_comm_ = MPI_COMM_NULL, coll_comm_ = MPI_COMM_NULL;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool idle_sleeping_ = false;  // the progress thread waits for work (needs a notify)
  std::atomic<int> waiters_{0};
  std::thread progress_;
  std::atomic<TestFault> fault_{TestFault::kNone};
  std::unique_ptr<std::atomic<uint32_t>[]> seq_;

  // Under mu_.
  struct Slot {
    std::shared_ptr<Op> op;
    int piece;  // 0 header, >= 1 chunk
  };
  std::vector<MPI_Request> reqs_;
  std::vector<Slot> slots_;
  std::deque<std::shared_ptr<Op>> sending_;    // sends with pieces not yet posted, in order
  std::deque<std::shared_ptr<Op>> recv_order_; // receives whose header is not yet processed
  std::atomic<double> next_release_{0};        // earliest pending shaper release (0: none)

  std::atomic<uint64_t> sent_msgs_{0}, recv_msgs_{0}, sent_bytes_{0}, recv_bytes_{0};
  std::atomic<int64_t> live_ops_{0};
  std::atomic<double> shaper_delay_{0};
  // Collectives given up after a timeout: MPI still owns them, so their communicator is never
  // freed (freeing it under a pending collective crashes Open MPI's progress engine).
  // Their buffers stay alive here too: MPI may still write into them.
  struct Abandoned {
    MPI_Request request;
    std::unique_ptr<std::vector<double>> buffer;
  };
  std::vector<Abandoned> abandoned_;
  // Group collectives in flight (group.h): polled by progress_locked while any is pending, so
  // they advance while the caller computes. Completed ones leave the list.
  struct GroupOp {
    MPI_Request request = MPI_REQUEST_NULL;
    bool done = false;
    int error = MPI_SUCCESS;
    double done_at = 0;  // now_s() when the progress engine saw it complete
  };
  std::vector<std::shared_ptr<GroupOp>> group_ops_;

  std::string who(int rank) const {
    return "rank " + std::to_string(rank) + " (region " + regions_[rank] + ")";
  }
  std::string describe(const Op& op) const;
  void check_peer_tag(int peer, int tag, const char* what) const;

  // Construction steps (mpi_engine.cpp).
  void open_communicators();
  void gather_regions();
  void apply(const ResolvedOptions& options);

  Request isend(const void* data, size_t bytes, int peer, int tag, const MessageHeader& header);
  Request irecv(void* data, size_t capacity, bool any_size, int peer, int tag, const Expect& expect);
  void encode_send(Op& op, const MessageHeader& header, TestFault fault);
  void schedule_send(Op& op);

  bool finish(Op& op);
  bool test(const std::shared_ptr<Op>& op);
  void wait(const std::shared_ptr<Op>& op, Seconds timeout);
  void cancel(const std::shared_ptr<Op>& op);
  std::string timeout_message(const Op& op, double waited) const;

  // Under mu_.
  bool progress_locked();
  bool post_due_locked(double now);
  void post_piece_locked(const std::shared_ptr<Op>& op);
  void post_recv_locked(const std::shared_ptr<Op>& op, void* buf, int count, MPI_Comm comm, int piece);
  void on_complete_locked(Slot& slot, const MPI_Status& status, int err);
  void process_headers_locked();
  void process_header_locked(const std::shared_ptr<Op>& op);
  std::string refusal_locked(const Op& op, const MessageHeader& h);
  std::string mismatch(const Op& op, const MessageHeader& h) const;
  void accept_inline_locked(Op& op, const MessageHeader& h, const std::string& problem);
  void accept_chunked_locked(const std::shared_ptr<Op>& op, const std::string& problem);
  void post_chunk_receives_locked(const std::shared_ptr<Op>& op);
  void fail_locked(Op& op, const std::string& message);
  void update_next_release_locked();
  bool idle_locked() const { return reqs_.empty() && sending_.empty() && group_ops_.empty(); }
  // Data is moving: a send is in flight or waits for the shaper, or a receive's header arrived.
  bool moving_locked() const;

  void progress_main();

  // Collectives (collectives.cpp). On a timeout, `buffer` moves into abandoned_ (MPI may still
  // write into it).
  void collective_wait(MPI_Request& req, std::unique_ptr<std::vector<double>>& buffer,
                       Seconds timeout, const std::string& what);
  void allreduce(double* values, int count, MPI_Op op, Seconds timeout, const char* name);
  void barrier(Seconds timeout);
  // At destruction: have the abandoned collectives finished since? Buffers of those still
  // pending are leaked on purpose (MPI may still write into them).
  bool settle_abandoned_collectives();
  // Group collectives (group.cpp): `post` posts one non-blocking MPI collective into the request
  // it is given; it runs under the engine's lock, then the progress thread polls it.
  std::shared_ptr<GroupOp> start_group_op(const std::function<int(MPI_Request*)>& post, const std::string& what);
  bool test_group_op(GroupOp& op);  // true once complete; throws Error when MPI reported one
  bool progress_group_ops_locked();
};

}  // namespace geopipe::comm
