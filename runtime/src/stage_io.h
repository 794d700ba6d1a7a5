// Everything one stage does on its links in a step (torch.distributed.pipelining's stage I/O,
// Megatron's p2p_communication): which backend reaches each neighbour (comm's Router, the one
// place that decides), the codec of each direction, receives posted at the start of the step
// (MPI) or issued with their group (NCCL: comm_groups, one Transport batch each), sends and their
// completion, and the link measurements of the step. One per stage a rank runs. The executor's
// interpreter calls it per action; it throws plain errors ("2RECV_F0 waited 5 s for stage 1
// (rank 1): ...") and the interpreter adds where ("stage 2 (rank 2) at 2F0 of step 3: ...").
#pragma once

#include <geopipe/comm/transport.h>
#include <geopipe/core/plan.h>
#include <geopipe/runtime/executor.h>

#include <ATen/ATen.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace geopipe::comm {
class Communicator;
class Router;
}

namespace geopipe::runtime {

// The job's id in every message header: a hash of the job's name (a message of another job is refused).
uint64_t job_id_of(const std::string& job_name);

class StageIO {
 public:
  // Training moves the plan's codecs over the plan's backends; evaluation moves uncompressed
  // activations over MPI on tags of their own (tags.h).
  enum class Mode { kTrain, kEval };

  // `replica`: this rank's data-parallel replica; its peers are the same replica of the
  // neighbouring stages.
  StageIO(const Plan& plan, int stage, int replica, at::Device device, comm::Communicator* comm,
          const ExecutorOptions& options, std::vector<TraceSpan>* trace);
  ~StageIO();

  // Starts a step of `micro_batches` over `actions` (this rank's list; the actions of this stage
  // are its own): posts every receive of this stage that is not on NCCL.
  void begin(int64_t step, const std::vector<Action>& actions, Mode mode, int micro_batches);
  // Is this SEND/RECV of this stage on an NCCL link (issued with its group, not on its own)?
  bool on_nccl(const Action& action) const;
  // Issues NCCL operation `index` inside the caller's group: posts a RECV, or sends `tensor`.
  void issue(size_t index, const at::Tensor& tensor);
  bool issued(size_t index) const { return issued_.at(index); }
  // Waits for the tensor of this stage's receive (RECV_F or RECV_B of micro-batch mb), decoded
  // and on the stage's device: the compute that needs it calls this (a RECV action may be placed
  // well before it, where the peer sends).
  at::Tensor wait_recv(ActionKind recv_kind, int mb);
  // SEND_F / SEND_B of action `index`.
  void send(size_t index, const at::Tensor& tensor);
  // Notes which sends have finished (their end time is the links' busy time).
  void poll_sends();
  // Waits for every send of the step (before OPT: the next step reuses tags and buffers).
  void finish_sends();
  // Nothing posted and not received (a step that ended cleanly).
  bool idle() const { return recvs_.empty(); }

  // Seconds blocked this step: in receives, and for sends before OPT.
  double wait_s() const { return wait_prev_s_ + wait_next_s_ + send_wait_s_; }
  // This stage's slots of the step's link measurements (StepReduction::links).
  void fill_links(std::vector<double>& slots, size_t link0) const;
  void add_bytes(StepStats& st) const;

  // The codec of the directed link from_stage -> to_stage, one end of which is this stage, from
  // the next step on (--codec adaptive; between steps only: receives are posted at a step's start).
  void set_codec(int from_stage, int to_stage, const std::string& codec);
  const std::string& codec_to_next() const { return codec_fwd_; }
  const std::string& codec_to_prev() const { return codec_bwd_; }

 private:
  struct Posted {
    comm::Request request;
    at::Tensor buffer;  // decoded tensor (codec none) or the wire bytes (compressed)
    bool compressed = false;
  };
  struct InFlight {
    comm::Request request;
    bool forward = true;             // to the next stage (activation) or the previous (gradient)
    double start_s = 0, end_s = -1;  // seconds since the step began; end < 0: not seen complete
  };
  int neighbour(const Action& a) const;  // the stage a SEND goes to or a RECV comes from
  int peer_rank(int stage) const { return plan_.rank_of(stage, replica_); }
  bool link_on_nccl(int stage) const;
  comm::Transport& transport(int stage);
  const std::string& codec_of(const Action& a) const;
  int tag_of(const Action& a) const;
  void post(const Action& a);
  void send_now(const Action& a, const at::Tensor& tensor);
  void span(const std::string& name, double start_us) const;
  double since_start() const;
  void wait_posted(Posted& p, const Action& recv);

  const Plan& plan_;
  const int stage_;
  const int replica_;
  const at::Device device_;
  comm::Communicator* comm_;
  const ExecutorOptions& options_;
  std::vector<TraceSpan>* trace_;
  const uint64_t job_id_;
  std::unique_ptr<comm::Router> router_;        // null for one stage
  bool nccl_prev_ = false, nccl_next_ = false;  // link to the previous / next stage goes over NCCL
  std::string codec_fwd_ = "none", codec_bwd_ = "none";        // what I send
  std::string codec_in_fwd_ = "none", codec_in_bwd_ = "none";  // what I receive

  // The step.
  int64_t step_ = 0;
  Mode mode_ = Mode::kTrain;
  int micro_batches_ = 0;  // of the step (training) or of the evaluation: messages' tags
  const std::vector<Action>* actions_ = nullptr;
  std::vector<bool> issued_;  // NCCL operations already issued with their group
  std::chrono::steady_clock::time_point start_;
  std::map<std::pair<ActionKind, int>, Posted> recvs_;
  std::vector<InFlight> sends_;
  std::vector<std::pair<double, double>> busy_next_, busy_prev_;
  double wait_prev_s_ = 0, wait_next_s_ = 0, send_wait_s_ = 0;
  uint64_t fwd_raw_ = 0, fwd_wire_ = 0, bwd_raw_ = 0, bwd_wire_ = 0;
};

}  // namespace geopipe::runtime
