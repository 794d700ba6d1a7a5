// The pipeline executor: one small interpreter of this rank's action list, a switch per kind
// (run(): one loop for training and for evaluation, which is a forward-only list; any error is
// re-thrown saying where: "stage 2 (rank 2) at 2RECV_B3 of step 41: ..."). The links — backend
// per neighbour, codecs, posting, sends, metering — are runtime/src/stage_io.h's.
//
// - At the start of a step every RECV of the list is posted (irecv into its own buffer), so a
//   neighbour's send never waits for us; the F/B/I that needs a received tensor waits for it
//   (lowering may place its RECV earlier, where the peer sends). A rank may run several stages
//   (virtual stages: their tensors pass in memory) and split backward (I now, W later).
// - SEND_F/SEND_B are asynchronous; the step waits for them before the optimizer runs.
// - F m keeps micro-batch m's activations (stage_compute.h) until its B, or its W after I.
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
#include <geopipe/runtime/adaptive_codec.h>
#include <geopipe/runtime/data.h>
#include <geopipe/runtime/gpt.h>
#include <geopipe/runtime/optim.h>
#include <geopipe/core/schedule.h>
#include <geopipe/runtime/stage_compute.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace geopipe::comm {
class Communicator;
class NcclTransport;
class ProcessGroup;
}

namespace geopipe::runtime {

struct ExecutorOptions {
  uint64_t seed = 1;
  // "" or "plan": the plan's codec for that direction; otherwise this codec on every link.
  std::string codec_forward_override, codec_backward_override;
  double comm_timeout_s = 300;
  bool bf16_autocast = false;  // forward under bf16 autocast (parameters and optimizer stay fp32)
  Recompute recompute = Recompute::kNone;  // --recompute: keep only block inputs from F to the backward
  // --codec adaptive: every inter-rank link starts at the plan's codec and steps along
  // codec_ladder() between steps (adaptive_codec.h); the overrides above must then be empty.
  bool adaptive_codecs = false;
  AdaptivePolicy adaptive;
  bool record_trace = false;
  // Links the plan marks "nccl" use this transport (null: every link is MPI). Must outlive the executor.
  comm::NcclTransport* nccl = nullptr;
  // Data-parallel replicas (plan.replicas() > 1): the group of this rank's stage replicas, which
  // average their gradients (runtime/src/grad_reducer.h); null for one replica. Must outlive the
  // executor. `shard_optimizer` (ZeRO-1): each replica updates 1/R of each stage's parameters;
  // the stages' AdamW must then be built on GradReducer::shard_of's slices.
  comm::ProcessGroup* replica_group = nullptr;
  bool shard_optimizer = false;
  // Called after every F, B, I and W action (tests' fault hooks: GEOPIPE_TEST_FAULT kill).
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
  std::string codec;         // the codec this step's messages used (links between ranks; else "")
  std::string codec_next;    // --codec adaptive: the codec from the next step on, when it changes
  std::string codec_reason;  // why it changes
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
  // Activations this rank held, at their largest after any F of the step: micro-batches whose F ran
  // and whose B (or W) did not, summed over its stages (the schedule's peak_in_flight), and the
  // bytes they held (StageCompute::live_bytes; with recomputation also the one segment's graph a
  // backward rebuilds, StageCompute::rebuild_bytes).
  int peak_activations = 0;
  int64_t peak_activation_bytes = 0;
  // What this rank's tensors held at their peak, the planner's memory_bytes without its message
  // buffers and framework allowance (docs/SCHEDULER.md "Memory"): the activation peak above plus
  // its stages' parameters, gradients and optimizer state, measured after OPT.
  int64_t peak_held_bytes = 0;
  // Replicas: this rank's gradient collectives, from the first bucket's start to the last one's
  // end, and the part OPT waited for (not hidden behind the backward). 0 with one replica.
  double allreduce_s = 0, allreduce_exposed_s = 0;
  // Set by the training loop: what checkpoints cost this step — the seconds the loop was blocked
  // (host copy; waiting for the previous files), and the background write of the checkpoint
  // finished this step (trainer_parts.h: CheckpointWriter).
  double checkpoint_blocked_s = 0, checkpoint_write_s = 0;
  // Every directed link of the pipeline, "0->1", "1->0", "1->2", ... (empty for one stage).
  // run_training logs them (JSON log, progress line); its TrainResult::steps keep them empty.
  std::vector<LinkStats> links;
};

// One span for the Chrome/Perfetto trace ("X" events), microseconds since the Unix epoch.
struct TraceSpan {
  std::string name;  // "F3", "B3", "RECV_F3 wait", "OPT"
  double start_us = 0, dur_us = 0;
};

// The per-step reduction: one all-reduce carries the loss (the last stage's slot), each
// parameter unit's squared gradient norm (its owner's slot: the sum is exact, so every split gives
// one process's norm) and, per stage boundary, kLinkSlots link measurements (each end fills its own).
// With replicas, every replica's last stage adds its loss (the sum is divided by the replica
// count), the averaged gradients' norms come from replica 0 (ZeRO-1: each replica's slices), and
// the links and compute times are replica 0's.
struct StepReduction {
  static constexpr size_t kLinkSlots = 6;  // bytes, busy, wait forward; bytes, busy, wait backward
  StepReduction(int layers, int stages);
  double loss = 0;
  std::vector<double> unit_sq_norms;  // unit 0 (embedding) .. L + 1 (head)
  std::vector<LinkStats> links;       // after unpack: every directed link
  std::vector<double> stage_compute_s;  // per stage: its rank's compute this step, shared by its stages
  static size_t link_offset(int layers);  // index of the first link slot in pack()
  static size_t compute_offset(int layers, int stages);  // index of stage 0's compute slot
  std::vector<double> pack() const;
  static StepReduction unpack(const std::vector<double>& values, int layers, int stages);
  double grad_norm() const;  // global norm over the units, summed in unit order

 private:
  int num_stages_;
};

class StageIO;

// One stage (model chunk) this rank runs, with its optimizer: one per stage, so a stage's
// parameters and optimizer state go to its own checkpoint file whatever the placement.
struct StageChunk {
  int stage = 0;
  GptStage* model = nullptr;
  AdamW* optimizer = nullptr;
};

class PipelineExecutor {
 public:
  // `chunks`: the stages this rank runs (plan.stages_of_rank), in model order. `comm` may be null
  // only for a one-stage plan. `schedule` must be lowered and checked (prepare_schedule); its
  // placement must be the plan's. Throws InputError when the plan and the schedule disagree.
  PipelineExecutor(const Plan& plan, std::vector<StageChunk> chunks, const TokenDataset& data, comm::Communicator* comm,
                   Schedule schedule, const OptimConfig& optim, ExecutorOptions options);
  ~PipelineExecutor();

  StepStats train_step(int64_t step);
  // Mean validation loss over `batches` micro-batches (forward only, same on every rank): a
  // forward-only action list through the same interpreter.
  double evaluate(int64_t step, int batches);

  const std::vector<TraceSpan>& trace() const { return trace_; }
  const std::vector<Action>& actions() const { return actions_; }

 private:
  enum class Mode { kTrain, kEval };
  struct StepState;
  struct Chunk;
  void run(const std::vector<Action>& actions, StepState& s);
  void execute(size_t index, const Action& a, StepState& s);
  void issue_nccl_group(size_t index, StepState& s);
  void forward(const Action& a, StepState& s);
  void backward(const Action& a, StepState& s);  // B or I
  // After an F, and before a B or I with the graph its recomputation rebuilds: the step's peaks.
  void note_activations(StepState& s, int64_t rebuilding = 0) const;
  void note_held(StepState& s) const;            // after OPT: peak_held_bytes
  void start_adaptive_codecs();
  void adapt_codecs(StepState& s, const StepReduction& r);  // --codec adaptive, after the all-reduce
  void optimizer_step(StepState& s);
  void reduce_gradients(StepState& s);  // replicas: wait for the buckets, average (OPT)
  StepReduction local_reduction(const StepState& s) const;
  int global_micro_batch(int mb, const StepState& s) const;  // the data index of micro-batch mb
  at::Tensor tensor_to_send(const Action& a, StepState& s) const;
  Chunk& chunk(int stage);
  bool stage_here(int stage) const;
  std::vector<Action> eval_actions(int batches) const;
  std::string where(const Action& a, int64_t step) const;  // "stage 2 (rank 2) at 2RECV_B3 of step 41: "
  void span(const std::string& name, double start_us);

  const Plan& plan_;
  int rank_;
  int replica_ = 0, replicas_ = 1;
  std::vector<Chunk> chunks_;  // this rank's stages, in model order
  const TokenDataset& data_;
  comm::Communicator* comm_;
  std::vector<Action> actions_;
  std::map<size_t, size_t> nccl_groups_;  // runs of SEND/RECV with an NCCL operation: first -> one past the last
  OptimConfig optim_;
  ExecutorOptions options_;
  std::vector<TraceSpan> trace_;
  std::map<std::pair<int, int>, AdaptiveCodec> adaptive_;  // (from stage, to stage) between ranks
};

// Sum over ranks, in place (a no-op without a communicator). The per-unit gradient norms are
// exact this way: each unit is owned by one stage, the others contribute 0.
void allreduce_sum(comm::Communicator* comm, std::vector<double>& values, double timeout_s);

}  // namespace geopipe::runtime
