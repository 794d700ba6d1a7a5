// The training loop around the executor: builds this rank's stage from the plan, resumes from
// a checkpoint, runs the steps, evaluates, checkpoints, logs (progress line, JSON lines), writes
// the merged Chrome trace and the end-of-run summary. `geopipe-train` is flag parsing around
// run_training(); tests call it directly.
#pragma once

#include <geopipe/core/config.h>
#include <geopipe/core/plan.h>
#include <geopipe/runtime/executor.h>
#include <geopipe/runtime/optim.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace geopipe::comm {
class Communicator;
}

namespace geopipe::runtime {

struct TrainConfig {
  std::string plan_file;            // for messages
  std::optional<int64_t> iters;     // total optimizer steps; unset: the job's iterations; 0: none
  uint64_t seed = 1;
  std::string dtype = "fp32";       // fp32 | bf16 (bf16 autocast in forward)
  std::string codec = "plan";       // none | int8 | fp8 | int4 | plan | adaptive | a full codec name
  std::string schedule = "plan";    // gpipe | 1f1b | 1f1b-lh | zb-h1 | plan (one stage per rank)
  std::string recompute = "none";   // none | full (keep block inputs, recompute in the backward)
  std::string schedule_file;        // overrides `schedule` when set
  std::string data_file;
  std::string data_format = "text";
  double val_fraction = 0.1;
  int eval_every = 0;               // 0: never (validation also runs at the end when > 0)
  int eval_batches = 4;
  std::string json_log;             // one JSON object per step (rank 0)
  std::string trace_file;           // merged Chrome/Perfetto trace (rank 0 writes it)
  std::string checkpoint_dir;
  int checkpoint_every = 0;
  // Also checkpoint the initial weights as step 0 (not on --resume): an outside tool (or
  // `--iters 0`) can then start from exactly geopipe's initialisation.
  bool checkpoint_at_start = false;
  bool resume = false;
  bool shard_optimizer = false;     // ZeRO-1 over each stage's replicas (plan.replicas() > 1)
  double comm_timeout_s = 300;
  std::string device = "cpu";       // cpu | cuda | auto
  std::optional<Topology> topology; // for the electricity cost in the summary
  OptimConfig optim = [] { OptimConfig o; o.decay_steps = 0; return o; }();  // decay_steps <= 0: iters
  bool progress = true;             // rank 0 prints a progress line per step
  // Fault injection for tests (see TestFault); nullopt: env GEOPIPE_TEST_FAULT, read once.
  std::optional<std::string> test_fault;
};

// FOR TESTS ONLY: env GEOPIPE_TEST_FAULT makes one rank fail on purpose, to prove the fault
// promises (docs/RELIABILITY.md). STEP is the 1-based step of the progress line and JSON log.
//   kill:rank=R:step=S                SIGKILL on rank R after its first F/B of step S
//                                     (mid-iteration, with messages in flight)
//   stop:rank=R:step=S                SIGSTOP on rank R at the same point (a hung rank: its
//                                     neighbours time out waiting for it)
//   kill-in-checkpoint:rank=R:step=S  SIGKILL on rank R half-way through writing its stage
//                                     file of the checkpoint after step S (temp file partly written)
//   corrupt:rank=R:step=S             rank R's first send of step S flips a payload byte after
//                                     its checksum was computed (comm's TestFault::kCorruptPayload)
//   perturb:rank=R:step=S             rank R adds 1e-3 to its first parameter after step S's
//                                     optimizer step (a replica diverges: the next checkpoint's
//                                     replica check stops the job naming the stage and replicas)
//   cut:region=NAME:step=S            every rank cuts the emulated links into and out of region
//                                     NAME as step S begins (comm's LinkShaper::cut_region): the
//                                     region is partitioned from the others, whose ranks and its
//                                     own time out waiting for each other (needs emulated links)
// Before raising SIGKILL the rank prints one line to stderr:
//   "geopipe-train: rank R: GEOPIPE_TEST_FAULT <kind>: SIGKILL at step S ... (unix_ms T)".
struct TestFault {
  enum class Kind { kNone, kKill, kStop, kKillInCheckpoint, kCorrupt, kPerturb, kCut };
  Kind kind = Kind::kNone;
  int rank = -1;       // every kind but cut
  std::string region;  // cut
  int64_t step = 0;
};
// The rank this rank's training is blocked on (a pipeline peer; -2: a collective; -1: none): the
// current wait once it has lasted a second, or a wait of a second or more that ended less than a
// second ago (a hung peer continued by the launcher just before terminating the job may have
// released it). Async-signal-safe: for the failure record a rank terminated by its launcher
// leaves (geopipe launch --max-restarts follows the waits to the hung rank).
int rank_waiting_for();
int64_t rank_waited_ms();  // how long that wait lasted

// "" -> kNone. A malformed value is an InputError naming GEOPIPE_TEST_FAULT.
TestFault parse_test_fault(const std::string& text);

struct TrainResult {
  std::vector<StepStats> steps;       // steps run in this call
  std::vector<std::pair<int64_t, double>> val_losses;  // (step, validation loss)
  int64_t first_step = 0;             // > 0 after a resume
  std::string summary;                // the end-of-run summary (rank 0; empty elsewhere)
  int64_t optimizer_state_bytes = 0;  // this rank's AdamW moments (÷ R with --shard-optimizer)
};

// Maps --codec to (forward, backward) codec names: "int8" -> int8-block both ways, "fp8" ->
// fp8-e4m3-block forward / fp8-e5m2-block backward, "int4" -> int4-block forward / int8-block
// backward (int4 gradients are too coarse, as the plan validator also says); "plan" and
// "adaptive" (which starts at the plan's codecs, ExecutorOptions::adaptive_codecs) -> {"", ""}.
std::pair<std::string, std::string> codec_pair(const std::string& flag);

// Ranks that share this machine's cores: MPI's shared-memory group, or more when `geopipe
// launch` says so (core/env.h kRanksOnHost: regions emulated in namespaces). Needs MPI.
int ranks_on_this_host();
// Compute threads for this rank when the user gave none: the host's cores shared by the ranks
// on this host (emulated regions on one host must not oversubscribe it). Needs MPI initialised.
int default_threads_per_rank();
// Bounds ALL of this rank's compute threads to `threads`: LibTorch's intra-op pool (OpenMP,
// shared with oneDNN) and the BLAS library's own (kernels/blas.h). Returns one line for the
// log: the thread count and the BLAS library actually loaded, e.g.
// "1 thread (LibTorch intra-op 1); BLAS OpenBLAS 0.3.21 (openmp, 1 thread) /usr/lib/...".
std::string set_compute_threads(int threads);

// --device cpu|cuda|auto -> the device (InputError when cuda is asked for and absent).
at::Device pick_device(const std::string& name);

// The most bytes the CUDA caching allocator has had handed out at once on `device` since the
// process started or the last reset_device_allocator_peak (its own statistics: every tensor, none
// of the CUDA context); what the plan's
// predicted memory_bytes minus the framework allowance describes on a GPU rank. nullopt on a CPU
// device, or with a LibTorch built without CUDA.
std::optional<int64_t> device_allocator_peak_bytes(const at::Device& device);
// Starts the allocator's peak over from what is allocated now (one measurement per run); no-op
// where device_allocator_peak_bytes has no answer.
void reset_device_allocator_peak(const at::Device& device);

// Runs training for this rank. `comm` may be null for a one-stage plan. Collective: every rank
// of the plan calls it with the same config.
TrainResult run_training(const Plan& plan, const TrainConfig& config, comm::Communicator* comm);

// Gathers every stage's checkpoint named by DIR/manifest.json into one file in nanoGPT's layout
// ({"model": state dict, "model_args": {...}, "iter_num": step}; see save_model_file), loadable
// with torch.load. Checks that every parameter of `model` is there. Returns the step exported.
int64_t export_checkpoint(const std::string& checkpoint_dir, const ModelSpec& model, const std::string& out_file);

// Profile mode: times embedding, blocks and head (forward and backward) of the plan's model on
// this device and writes geopipe::scheduler's profile JSON (for `geopipe plan --profile`).
// With a communicator of several ranks (stages that will share one host, e.g. emulated regions),
// every rank measures at the same time and rank 0 writes the mean over the ranks: times under
// the contention training will see. Collective over `comm`'s ranks.
void write_profile(const Plan& plan, const std::string& device, const std::string& out_file, int repeats = 5,
                   comm::Communicator* comm = nullptr, double timeout_s = 300);

}  // namespace geopipe::runtime
