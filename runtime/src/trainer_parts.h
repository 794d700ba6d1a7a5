// The training loop's parts (trainer.cpp runs them in order), each in a file of its own:
// test fault hooks (test_fault.cpp), the checkpoint protocol (train_checkpoint.cpp) and what a
// run reports — progress line, JSON log, summary, merged trace (run_report.cpp). Private to the
// runtime.
#pragma once

#include <geopipe/runtime/checkpoint.h>
#include <geopipe/runtime/executor.h>
#include <geopipe/runtime/trainer.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace geopipe::comm {
class Communicator;
}

namespace geopipe::runtime::detail {

// GEOPIPE_TEST_FAULT (trainer.h: TestFault) for this rank: parsed and checked against the job
// once, then asked at the three places a fault can strike.
class FaultHooks {
 public:
  FaultHooks(const TrainConfig& config, int rank, const comm::Communicator* comm);  // comm: nullptr for one stage
  void install(ExecutorOptions& options) const;  // kill / stop: SIGKILL / SIGSTOP after the step's first F/B
  void before_step(int64_t step, comm::Communicator* comm) const;  // corrupt: the step's first send; cut
  void after_step(int64_t step, const std::vector<StageChunk>& chunks) const;  // perturb: a parameter
  // kill-in-checkpoint: what to run half-way through writing `file` after step `step` (or nothing).
  std::function<void()> checkpoint_midway(int64_t step, const std::string& file) const;

 private:
  // cut: the job emulates its links and has a rank in the region, else an InputError.
  void check_cut(const std::string& text, const comm::Communicator* comm) const;

  TestFault fault_;
  bool mine_ = false;
};

// Each stage's layers [begin, end): what a checkpoint's manifest records (checkpoint.h).
inline std::vector<std::pair<int, int>> layer_split(const Plan& plan) {
  std::vector<std::pair<int, int>> layers;
  for (const StagePlan& sp : plan.stages) layers.emplace_back(sp.layer_begin, sp.layer_end);
  return layers;
}

// Optimizer-state files per stage: the replica count with a sharded optimizer (each replica
// writes its shard), else 1.
inline int optimizer_shards(const Plan& plan, const TrainConfig& cfg) {
  return cfg.shard_optimizer ? plan.replicas() : 1;
}

// What a checkpoint cost: the seconds the training loop was blocked (copying its tensors to host
// memory, and waiting at the end for its files), and the seconds the files took in the background.
struct CheckpointTimes {
  double blocked_s = 0, write_s = 0;
};

// Asynchronous checkpoints (checkpoint_writer.cpp): begin() copies this rank's stages to host
// memory and writes their files on a thread of its own; finish() — called by the loop at the
// end of the next step, the end of the run, or by the next begin() — waits for the thread, then
// every rank exchanges file sizes, CRC32Cs and the replicas' parameter digests, and rank 0
// writes the manifest (checkpoint.h). Until then the previous manifest names the last complete
// checkpoint. Both are collective.
class CheckpointWriter {
 public:
  CheckpointWriter(const Plan& plan, const TrainConfig& config, comm::Communicator* comm);
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;
  // The checkpoint after `step` optimizer steps; `midway` is the test hook run half-way through
  // this rank's first file. Returns the seconds the loop was blocked.
  double begin(const std::vector<StageChunk>& chunks, int64_t step, std::function<void()> midway = {});
  // Throws Error when a rank could not write its files or the replicas disagree (no manifest then).
  CheckpointTimes finish();
  bool pending() const { return pending_; }

 private:
  struct Job {  // what the writer thread leaves for finish()
    std::vector<double> files;    // (bytes, crc32c) per file, this rank's slots
    std::vector<double> digests;  // parameter CRC32C per (stage, replica), this rank's slots
    std::string error;
    double write_s = 0;
  };
  void write_files(bool writes, const std::function<void()>& midway);
  void check_replicas_agree(const std::vector<double>& digests) const;
  Manifest manifest_of(const std::vector<double>& files) const;

  const Plan& plan_;
  const TrainConfig& cfg_;
  comm::Communicator* comm_;
  int rank_, replica_, shards_;
  std::vector<StageCheckpoint> snapshot_;
  Job job_;
  std::thread thread_;
  bool pending_ = false;
  int64_t step_ = 0;
};

// Keeps the JSON log's step lines up to `last_step` and the supervisor's restart lines (rank 0).
void trim_json_log(const std::string& path, int64_t last_step);

// --resume: every rank verifies its own stage files, all refuse together naming the file when
// any is damaged, else load parameters and optimizer state. Returns the step to continue from.
// Collective.
int64_t resume(const Plan& plan, const TrainConfig& config, const std::vector<StageChunk>& chunks,
               comm::Communicator* comm);

// Sums over a run's steps of what the summary reports: this rank's time, and every directed
// link's wire bytes (the same on every rank: the step's reduction carries them).
struct RunTotals {
  double compute_s = 0, wait_s = 0, wall_s = 0;
  // Replicas' gradient all-reduce and its unhidden part, over the steps after the first.
  double allreduce_s = 0, allreduce_exposed_s = 0;
  double checkpoint_blocked_s = 0, checkpoint_write_s = 0;  // this rank's, over the run
  int64_t checkpoints = 0;
  std::map<std::pair<int, int>, double> link_wire;  // (from stage, to stage) -> bytes
  // --codec adaptive: (from stage, to stage) -> codec -> seconds of the steps it ran
  std::map<std::pair<int, int>, std::map<std::string, double>> codec_time;
  int64_t steps = 0;
  void add(const StepStats& st);
};

// Rank 0's progress line and JSON log line of each step.
class StepLogger {
 public:
  StepLogger(const Plan& plan, const TrainConfig& config, bool rank0, int64_t first_step, int64_t iters);
  void log(const StepStats& st, std::optional<double> val_loss);

 private:
  const TrainConfig& config_;
  bool rank0_;
  int64_t first_step_, iters_;
  double tokens_per_step_;
  std::chrono::steady_clock::time_point start_;
  std::ofstream json_;
};

// The end-of-run summary (rank 0; "" elsewhere): per stage compute / comm-wait / idle, bytes per
// link raw and on the wire, electricity. Collective (one all-reduce of every rank's totals).
std::string summarize(const Plan& plan, const TrainConfig& config, const RunTotals& totals, const TrainResult& result,
                      comm::Communicator* comm);
// Every rank's spans to rank 0, which writes one Chrome/Perfetto trace (a track per rank). Collective.
// `first_step`: the run's first step (after a resume), for the trace's metadata.
void write_trace(const Plan& plan, const TrainConfig& config, const std::vector<TraceSpan>& spans, int64_t first_step,
                 comm::Communicator* comm);

}  // namespace geopipe::runtime::detail
