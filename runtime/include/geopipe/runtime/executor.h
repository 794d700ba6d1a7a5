// The pipeline executor: one small interpreter of this rank's action list, a switch per kind.
//
// - At the start of a step every RECV of the list is posted (irecv into its own buffer), so a
//   neighbour's send never waits for us; the F/B that needs a received tensor waits for it
//   (lowering may place its RECV earlier, where the peer sends). Runs one stage per rank with
//   F/B only; chunks per rank and split backward (I/W) are refused until the interpreter lands.
// - SEND_F/SEND_B are asynchronous; the step waits for them before the optimizer runs.
// - F m keeps (input, output) of micro-batch m until B m, then frees them.
// - Links the plan marks with a codec carry compressed tensors (kernels' LibTorch adapter):
//   forward activations with the link's codec_forward, their gradients with codec_backward.
// - Links the plan marks "nccl" (same region) go over comm's NcclTransport when the stage's
//   tensors are on a GPU and NCCL reaches the peer (otherwise MPI, with a warning): tensors and
//   compressed bytes stay on the GPU. NCCL pairs operations in issue order and a send holds its
//   stream until the receive runs, so nothing is posted early there: each run of consecutive
//   sends and receives (comm_groups) is issued as one NCCL group when the list reaches it, which
//   every generated schedule survives (simulate_rendezvous; runtime_schedule_test).
// - OPT: gradient norm from every stage's per-unit squared norms (one all-reduce), clipping,
//   AdamW with the step's learning rate. The loss is the mean over micro-batches, all-reduced
//   from the last stage so every rank reports it.
// A one-stage plan runs the same code without a communicator: the single-process reference.
#pragma once

#include <geopipe/core/plan.h>
#include <geopipe/runtime/data.h>
#include <geopipe/runtime/gpt.h>
#include <geopipe/runtime/optim.h>
#include <geopipe/runtime/schedule.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace geopipe::comm {
class Communicator;
class NcclTransport;
class Router;
}

namespace geopipe::runtime {

struct ExecutorOptions {
  uint64_t seed = 1;
  // "" or "plan": the plan's codec for that direction; otherwise this codec on every link.
  std::string codec_forward_override, codec_backward_override;
  double comm_timeout_s = 300;
  bool bf16_autocast = false;  // forward under bf16 autocast (parameters and optimizer stay fp32)
  bool record_trace = false;
  // Links the plan marks "nccl" use this transport (null: every link is MPI). Must outlive the executor.
  comm::NcclTransport* nccl = nullptr;
  // Called after every F and B action (tests' fault hooks: GEOPIPE_TEST_FAULT kill).
  std::function<void(int64_t step, const Action& action)> after_compute;
};

// One directed link between consecutive stages in one step, measured by its two ends and
// gathered by the step's all-reduce (every rank sees every link). A step's sends are polled at
// every action boundary and every 200 us inside receive waits, so busy_s is exact to within one
// compute action's duration.
struct LinkStats {
  int from_stage = 0, to_stage = 0;  // from + 1 == to: activations; from - 1 == to: gradients
  double bytes = 0;    // on the wire (after the codec), sent by from_stage
  double busy_s = 0;   // sender: time with at least one of this step's messages in flight
  double wait_s = 0;   // receiver: time blocked waiting for them (transfer and upstream bubble)
  // Measured throughput: wire bytes over the time the link was busy (MB = 1e6 bytes).
  double mb_per_s() const { return busy_s > 0 ? bytes / busy_s / 1e6 : 0; }
  std::string name() const { return std::to_string(from_stage) + "->" + std::to_string(to_stage); }
};

struct StepStats {
  int64_t step = 0;
  double loss = 0;        // mean training loss over the step's micro-batches (every rank)
  double grad_norm = 0;   // global norm before clipping (every rank)
  double lr = 0;
  double step_s = 0;      // wall time of the step on this rank
  double compute_s = 0;   // in F, B and OPT
  double wait_s = 0;      // blocked in receive/send waits (bubble + transfer)
  // Bytes this rank sent: to the next stage (activations) and to the previous one (gradients),
  // raw = the tensors' uncompressed size, wire = after the codec.
  uint64_t fwd_raw = 0, fwd_wire = 0, bwd_raw = 0, bwd_wire = 0;
  // Every directed link of the pipeline, "0->1", "1->0", "1->2", ... (empty for one stage).
  // run_training logs them (JSON log, progress line); its TrainResult::steps keep them empty.
  std::vector<LinkStats> links;
};

// One span for the Chrome/Perfetto trace ("X" events), microseconds since the Unix epoch.
struct TraceSpan {
  std::string name;  // "F3", "B3", "RECV_F3 wait", "OPT"
  double start_us = 0, dur_us = 0;
};

class PipelineExecutor {
 public:
  // `comm` may be null only for a one-stage plan. `schedule` must be lowered and checked
  // (prepare_schedule). Throws InputError when the plan and the schedule disagree.
  PipelineExecutor(const Plan& plan, int stage, GptStage& model, AdamW& optimizer, const TokenDataset& data,
                   comm::Communicator* comm, Schedule schedule, const OptimConfig& optim, ExecutorOptions options);
  ~PipelineExecutor();

  StepStats train_step(int64_t step);
  // Mean validation loss over `batches` micro-batches (forward only, same on every rank).
  double evaluate(int64_t step, int batches);

  const std::vector<TraceSpan>& trace() const { return trace_; }
  const std::vector<Action>& actions() const { return actions_; }
  std::string codec_to_next() const { return codec_fwd_; }  // "none" when no next stage
  std::string codec_to_prev() const { return codec_bwd_; }

 private:
  struct Impl;
  const Plan& plan_;
  int stage_;
  GptStage& model_;
  AdamW& optimizer_;
  const TokenDataset& data_;
  comm::Communicator* comm_;
  std::vector<Action> actions_;
  OptimConfig optim_;
  ExecutorOptions options_;
  std::string codec_fwd_ = "none", codec_bwd_ = "none";  // codec on my outgoing links
  std::string codec_in_fwd_ = "none", codec_in_bwd_ = "none";  // codec of what I receive
  std::unique_ptr<comm::Router> router_;        // backend per neighbour (null for one stage)
  bool nccl_prev_ = false, nccl_next_ = false;  // link to the previous / next stage goes over NCCL
  std::map<size_t, size_t> nccl_groups_;        // NCCL groups of actions_: first index -> one past the last
  std::vector<TraceSpan> trace_;
};

// Sum over ranks, in place (a no-op without a communicator). The per-unit gradient norms are
// exact this way: each unit is owned by one stage, the others contribute 0.
void allreduce_sum(comm::Communicator* comm, std::vector<double>& values, double timeout_s);

}  // namespace geopipe::runtime
