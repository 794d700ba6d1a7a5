// The plan: the contract between the scheduler (which writes it), launch (which places ranks by
// it) and the runtime (which executes exactly what it says). Versioned JSON; see DESIGN.md.
#pragma once

#include <geopipe/core/config.h>

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

namespace geopipe {

inline constexpr int kPlanVersion = 1;

// Bytes of one gradient bucket a stage's replicas all-reduce (PyTorch DDP's default
// bucket_cap_mb): the runtime's reducer sends them, the scheduler times them.
inline constexpr long long kGradBucketBytes = 25 << 20;

// Codec names understood across the project (kernels implements them; core only checks names).
// "none", "int8-block", "fp8-e4m3-block", "fp8-e5m2-block", "int4-block".
const std::vector<std::string>& known_codec_names();

// A stage is a model chunk. With one chunk per rank (schedule.virtual_stages = 1) every stage has
// ranks of its own; with V > 1 a rank runs V stages, placed as the schedule kind says (interleaved:
// stage s on rank s % R; zbv: rank r holds stages r and 2R-1-r), all in one region.
struct StagePlan {
  int index = 0;
  std::string region;
  // MPI ranks that run this stage: one per data-parallel replica, replica r at ranks[r]. Every
  // stage has the same count (parse_plan checks); replica r of stage k talks only to replica r
  // of stages k +- 1, and a stage's replicas average their gradients (runtime/grad_reducer.h).
  std::vector<int> ranks;
  int layer_begin = 0;      // transformer blocks [layer_begin, layer_end)
  int layer_end = 0;
};

struct LinkPlan {
  int from_stage = 0;
  int to_stage = 0;
  std::string from_region, to_region;
  std::string codec_forward = "none";   // activations, from_stage -> to_stage
  std::string codec_backward = "none";  // their gradients, to_stage -> from_stage
  std::string transport = "mpi";        // "mpi" or "nccl"
  // The runtime steps this link's codecs along adaptive_codec_ladder() while training, starting
  // at codec_forward / codec_backward (runtime/adaptive_codec.h). JSON: "codec": {"adaptive": true}.
  bool adaptive = false;
};

// The codecs an adaptive link steps through, lightest compression first: activations none,
// int8-block, int4-block; gradients none, int8-block (int4 is too coarse for gradients).
const std::vector<std::string>& adaptive_codec_ladder(bool activations);

// Schedule kinds a plan may name (runtime/schedule.h generates them): "gpipe", "1f1b",
// "1f1b-lh" (latency-hiding 1F1B), "interleaved" (Megatron's interleaved 1F1B), "zb-h1" and
// "zbv" (zero bubble, split backward).
const std::vector<std::string>& known_schedule_kinds();

struct SchedulePlan {
  std::string kind = "1f1b";
  // Forward micro-batches each stage runs before its first backward (1F1B family, one per
  // stage); plain 1F1B uses S - 1 - stage, the latency-hiding variant adds what hides latency.
  std::vector<int> warmup;
  int virtual_stages = 1;  // stages (chunks) per rank: V > 1 for interleaved, 2 for zbv
  // Keep only each block's input from F to the backward, which recomputes the block (the runtime's
  // --recompute full): the planner turns it on when the activations would not fit otherwise.
  // JSON "recompute": true, written only when set, so plans without it read and hash as before.
  bool recompute = false;
};

struct Prediction {
  double iteration_s = 0;
  double jct_s = 0;
  double energy_kwh = 0;
  double cost_usd = 0;          // the job's cost: electricity_usd + egress_usd
  double electricity_usd = 0;   // energy at each region's price
  double egress_usd = 0;        // bytes on the wire between ranks at the links' egress prices
  std::vector<double> stage_compute_s;   // forward + backward of one micro-batch, per stage
  std::vector<double> link_utilisation;  // per LinkPlan, fraction of the link's bandwidth
  std::vector<int> peak_activations;     // per rank: most micro-batch activations alive at once
  // Per rank: predicted peak bytes on its device (parameters, gradients, optimizer state, peak
  // activations, message buffers, the framework's allowance; docs/SCHEDULER.md "Memory").
  std::vector<double> memory_bytes;
  // Per rank, with replicas (empty without): its stage's gradient all-reduce among the replicas,
  // and the part the backward does not hide (the largest is in iteration_s; docs/SCHEDULER.md,
  // "Replicas").
  std::vector<double> allreduce_s;
  std::vector<double> allreduce_exposed_s;
};

struct Provenance {
  std::string policy;
  std::string topology_name;
  std::string topology_hash;
  std::string job_hash;
  std::string generator;  // "geopipe <version>"
};

struct Plan {
  int version = kPlanVersion;
  JobSpec job;
  std::vector<StagePlan> stages;
  std::vector<LinkPlan> links;
  SchedulePlan schedule;
  Prediction predicted;
  Provenance provenance;

  int num_stages() const { return static_cast<int>(stages.size()); }
  int world_size() const;                 // number of distinct ranks
  int stage_of_rank(int rank) const;      // the rank's first stage; -1 when it has none
  std::vector<int> stages_of_rank(int rank) const;  // in model order (V of them with virtual stages)
  const LinkPlan* link_between(int from_stage, int to_stage) const;  // nullptr if none
  // Data-parallel replicas: ranks per stage (1 for a plan without stages).
  int replicas() const { return stages.empty() ? 1 : static_cast<int>(stages.front().ranks.size()); }
  // The replica `rank` belongs to (its index in its stages' rank lists); -1 when it has no stage.
  int replica_of(int rank) const;
  // The rank of replica `replica` of stage `stage`.
  int rank_of(int stage, int replica) const { return stages.at(static_cast<size_t>(stage)).ranks.at(static_cast<size_t>(replica)); }
  // Content hash (hex) of the whole plan: the runtime stamps it on what a run writes (trace,
  // run.json) so `geopipe report` can tell files of this plan from files of another run.
  std::string hash() const;
};

// Parses and checks the plan on its own (stage indices, contiguous non-overlapping layer
// ranges covering the model, unique ranks 0..N-1, links between consecutive stages, known
// codecs, schedule kind and warm-up depths). Throws InputError listing every problem.
Plan parse_plan(const nlohmann::json& doc, const std::string& file);
Plan load_plan(const std::string& path);
nlohmann::json to_json(const Plan& plan);
void save_plan(const Plan& plan, const std::string& path);  // atomic: temp file + rename

// Refuses a plan that does not match the world it is run in: topology hash and regions,
// and (when world_size > 0) the MPI world size. Throws InputError naming the plan file.
void check_plan_against(const Plan& plan, const Topology& topology, const std::string& plan_file,
                        int world_size = 0);

}  // namespace geopipe
