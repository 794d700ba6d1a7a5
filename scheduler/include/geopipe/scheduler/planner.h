// Placement of one pipeline job on a (possibly partly busy) cluster: BACE-Pipe's bandwidth-aware
// pathfinder and cost-min allocator, the baselines' placement rules, the exact solver for small
// instances, and the conversion of a placement into a geopipe::Plan (core/plan.h).
#pragma once

#include <geopipe/core/config.h>
#include <geopipe/core/plan.h>
#include <geopipe/scheduler/cost_model.h>
#include <geopipe/scheduler/schedule_model.h>

#include <optional>
#include <utility>
#include <string>
#include <vector>

namespace geopipe::scheduler {

struct Profile;

enum class Policy {
  kBace,             // prioritization + bandwidth-aware pathfinder + cost-min allocator
  kDelayFirst,       // fastest placement on link capacity, price ignored, FIFO order
  kCostFirst,        // cheapest placement on the empty cluster, rigid (waits for it), FIFO order
  kFifo,             // FIFO order, first-fit placement in the topology's region order
  kExact,            // exhaustive search of every assignment (<= 6 regions, <= 8 stages)
  kBaceNoPriority,   // ablation: arrival order instead of the score
  kBaceNoBandwidth,  // ablation: no bandwidth check, capacity instead of residual bandwidth
  kBaceNoPrice,      // ablation: fastest feasible path (no price term)
};
const char* policy_name(Policy policy);  // "bace", "delay-first", ..., "bace-no-prio", "bace-no-bw", "bace-no-price"
std::optional<Policy> parse_policy(const std::string& name);
const std::vector<Policy>& all_policies();

inline constexpr int kExactMaxRegions = 6;
inline constexpr int kExactMaxStages = 8;

// What is free right now: GPUs per region and residual bandwidth per directed inter-region link
// (capacity minus the demand of running jobs that cross it), bytes/s, row-major [from][to].
struct ClusterState {
  std::vector<int> free_gpus;
  std::vector<double> residual_bps;
  std::vector<double> capacity_bps;
  // Everything free; every inter-region link's bandwidth multiplied by `bandwidth_scale`.
  static ClusterState empty(const Topology& topology, double bandwidth_scale = 1.0);
  int total_free() const;
};

struct PlannerOptions {
  CostParams cost;
  // The JCT/cost trade-off (--max-slowdown): the allocator takes the cheapest placement whose
  // iteration time is within (1 + max_slowdown) of the fastest feasible one; in the simulator BACE
  // may also wait for a cheaper placement while its expected completion stays within that factor
  // of starting now on the fastest (SimOptions, docs/SCHEDULER.md).
  double max_slowdown = 0.10;
  // "auto" (int8-block on hops that need it), "none", a codec for every inter-region hop, or
  // "adaptive": inter-region hops start where "auto" would and the runtime adapts them.
  std::string codec = "auto";
  // The placement search times the 1F1B family in closed form ("gpipe", "1f1b-lh"; anything else
  // as 1F1B, deepened where latency needs it for "auto"); plan_job then replays each candidate
  // schedule on the placement (schedule_options) and keeps this one, or for "auto" the fastest
  // that fits in memory. Any known_schedule_kinds() name or "auto".
  std::string schedule = "auto";
  int virtual_stages = 0;           // chunks per rank for "interleaved" (0: 2); zbv always has 2
  // Recomputation: "auto" (only when the activations would not fit otherwise), "none" or "full".
  std::string recompute = "auto";
  // ZeRO-1 (the runtime's --shard-optimizer): AdamW's moments divided among a stage's replicas.
  bool shard_optimizer = false;
  int fixed_stages = 0;             // 0: choose within the job's [min_stages, max_stages]
  // A job with "gpus" bounds: 0 lets the search choose its replicas, R fixes them (R must divide
  // its micro_batches). A job without them runs its `replicas`.
  int fixed_replicas = 0;
  bool bandwidth_check = true;      // every inter-region hop carries a micro-batch within the compute period
  bool price_term = true;           // false: the allocator takes the fastest feasible path
  bool use_residual = true;         // read residual bandwidth (BACE) or link capacity (baselines)
  long node_budget = 5000;          // pathfinder node expansions per stage count and pass
  const Profile* profile = nullptr; // measured compute times (profile.h); null: FLOPs model
  const CodecProfile* codec_profile = nullptr;  // measured codec speeds (profile.h); null: codec_rates' defaults
};

// A job placed on a sequence of regions, fully evaluated by the cost model.
struct Placement {
  std::vector<int> region;                     // region index per stage
  std::vector<int> layers;                     // transformer blocks per stage
  std::vector<std::string> codec_fwd, codec_bwd;  // per boundary k -> k+1
  std::vector<double> stage_s;                 // forward + backward of one micro-batch, per stage
  std::vector<double> hop_xfer_s;              // per boundary: transfer seconds of one message (larger direction)
  std::vector<double> hop_latency_s;           // per boundary: one-way latency
  std::vector<double> hop_fwd_bytes, hop_bwd_bytes;  // per boundary: bytes per micro-batch each way
  std::vector<double> hop_bps;                 // per boundary: bandwidth the evaluation assumed, bytes/s
  ScheduleKind kind = ScheduleKind::kOneFOneB;
  PipelineTiming timing;                       // the pipeline alone (one replica's)
  int replicas = 1;                            // copies of the pipeline; a stage holds this many GPUs of its region
  std::vector<double> allreduce_s;             // per stage: its replicas' gradient all-reduce (allreduce_time)
  std::vector<double> allreduce_exposed_s;     // per stage: the part its backward does not hide
  double iteration_s = 0;                      // timing's + the largest exposed all-reduce
  double job_s = 0;                            // iterations * iteration_s
  double energy_kwh = 0;                       // whole job
  double electricity_usd = 0;                  // whole job: energy at each region's price
  double egress_usd = 0;                       // whole job: every boundary's traffic, both ways (boundary_egress_usd)
  double cost_usd = 0;                         // whole job: electricity + egress, what the allocator minimizes
  bool bandwidth_ok = true;                    // every inter-region hop's transfer <= compute period
  double worst_hop_ratio = 0;                  // max over inter-region hops of transfer / compute period
  int stages() const { return static_cast<int>(region.size()); }
  int inter_region_hops() const;
};

// The job as `replicas` copies of its pipeline run it. A job with "gpus" bounds shares its
// micro_batches among them (micro_batches / replicas each, the bounds dropped: the result is a
// concrete job, as a plan records it); another job keeps micro_batches per replica.
JobSpec replica_job(const JobSpec& job, int replicas);
// The replica counts the search tries: a job's `replicas`; with "gpus" bounds every divisor of
// micro_batches up to max_gpus, or options.fixed_replicas (InputError naming --replicas when it
// does not divide micro_batches).
std::vector<int> replica_counts(const JobSpec& job, const PlannerOptions& options);

// The peak bytes each stage of a placement needs on its GPU by the planner's memory model
// (MemoryEstimate: training state, activations, the framework's allowance) without replaying a
// schedule: its closed-form schedule's micro-batches in flight (GPipe M, the 1F1B kinds their
// warm-up + 1), with or without recomputation, no message buffers (they need the lowered lists).
// `job` as its replicas run it (replica_job). For the simulator, which places jobs with the
// search alone.
std::vector<double> placement_memory_bytes(const JobSpec& job, const Placement& placement, bool shard_optimizer,
                                           bool recompute = false);
// Whether every stage fits in its region's usable memory (usable_memory_bytes; a region without
// gpu_mem_gb always fits): as it is, only with recomputation (as plan_job's --recompute auto
// would turn on), or not at all.
enum class MemoryFit { kFits, kWithRecompute, kOver };
MemoryFit placement_fit(const Topology& topology, const JobSpec& job, const Placement& placement, bool shard_optimizer);

// Evaluates one region sequence for job.replicas copies of the pipeline: layer balance, codecs
// (per options.codec; an inter-region link's bandwidth shared by the replicas' pipelines),
// timing with each stage's gradient all-reduce, energy and cost of every replica.
// `hop_bps` overrides the bandwidth of each boundary (the simulator's fair shares); empty: the
// state's residual (use_residual) or capacity. nullopt when two consecutive regions have no link.
std::optional<Placement> evaluate_path(const Topology& topology, const JobSpec& job, const std::vector<int>& regions,
                                       const ClusterState& state, const PlannerOptions& options,
                                       const std::vector<double>& hop_bps = {});

struct PlanResult {
  std::optional<Placement> placement;
  std::string why;   // when no placement: which constraint failed and the best that could be done
  long nodes = 0;    // search nodes expanded (pathfinder / exact)
};

// Places a job under a policy on the current state (free GPUs per region). The ablations and BACE
// share this entry; the multi-tenant parts of a policy (order, rigid waiting) live in the
// simulator. Every replica count replica_counts() allows is searched with its stage counts (S x R
// within the job's "gpus" bounds), a stage taking R GPUs of one region; the policy's objective
// picks among all of them (BACE: the cheapest within the slack of the fastest; delay-first and
// bace-no-price the fastest; cost-first the cheapest; fifo the fewest replicas that fit).
PlanResult place_job(Policy policy, const Topology& topology, const JobSpec& job, const ClusterState& state,
                     const PlannerOptions& options);

// Exhaustive search over every assignment of regions to stages (any order, revisits allowed):
// the true optimum of the allocator's objective (least cost with iteration time within max_slowdown
// of the fastest feasible assignment, ties by time). InputError beyond 6 regions or 8 stages.
PlanResult exact_placement(const Topology& topology, const JobSpec& job, const ClusterState& state,
                           const PlannerOptions& options);

// What --codec auto weighs on one inter-region hop, per micro-batch.
struct HopCodecInputs {
  double plain_xfer_s = 0;       // an uncompressed message over the slower direction
  double compute_period_s = 0;   // the slowest stage's forward + backward
  double codec_s = 0;            // int8-block's encode + decode work on the busier end of the hop
  double egress_saved_usd = 0;   // both directions' egress, uncompressed minus int8-block
  double codec_usd = 0;          // the electricity of the codec work on both ends
  double max_slowdown = 0;       // how much slower the hop may make the period for a saving
  bool weigh_price = true;       // false: the time rule alone (policies that ignore price)
};
// The codecs (forward, backward) of an inter-region hop under the --codec option. "auto"
// compresses (int8-block) a hop whose plain transfer is slower than the compute period (the
// bandwidth check asks for it; the codec's work is then paid in the stages), and, weighing
// price, a hop whose egress saving exceeds the codec's electricity while the codec's work keeps
// the period within (1 + max_slowdown); it never compresses a hop that keeps up just to shorten
// the pipeline's fill (paid once an iteration, against the codec's rounding on every message).
// "adaptive" starts where the time rule puts a hop (the runtime then adapts to the link's time);
// "int4-block" is for activations only (gradients int8-block); any other name is used both ways.
std::pair<std::string, std::string> hop_codecs(const std::string& codec_option, const HopCodecInputs& hop);
// The inputs of hop_codecs for a hop from region a to b at bandwidths (bytes/s) each way.
HopCodecInputs hop_codec_inputs(const Topology& topology, const JobSpec& job, const PlannerOptions& options, int a,
                                int b, double bps_ab, double bps_ba, double compute_period_s);
// The codec work one micro-batch adds to the stages at each end of a boundary (sender of the
// activations `from`, receiver `to`): the sender encodes activations and decodes gradients, the
// receiver the reverse; forward work in `forward_s`, backward work in `backward_s`.
struct BoundaryCodecWork {
  double from_forward_s = 0, from_backward_s = 0, to_forward_s = 0, to_backward_s = 0;
};
BoundaryCodecWork boundary_codec_work(const JobSpec& job, const Region& from, const Region& to,
                                      const std::string& codec_fwd, const std::string& codec_bwd,
                                      const CodecProfile* profile);

// The transport between ranks in regions a and b: "nccl" inside one GPU region, "mpi" otherwise
// (between regions, and on CPU ranks).
const char* link_transport(const Topology& topology, int region_a, int region_b);

// The message buffers a plan's `rank` holds on its device (MemoryEstimate::buffers, from the
// plan's links: their transport, codecs and the job's message bytes); the part of
// predicted.memory_bytes a run's tensor accounting does not see.
double plan_buffer_bytes(const Plan& plan, const Topology& topology, int rank);

// One schedule kind on a placement's ranks: its stage chunks (S ranks x V chunks, layers balanced
// by each rank's device), the links between chunks on different ranks, the replayed iteration
// and the memory each rank needs. Ranks here are pipeline positions (a plan's replicas of one
// position hold the same).
struct ScheduleOption {
  std::string kind;
  int virtual_stages = 1;
  bool recompute = false;                      // keep only block inputs; the backward recomputes
  std::string unavailable;                     // why this kind cannot run here; empty when it can
  std::vector<int> warmup;                     // 1f1b and 1f1b-lh: forwards before the first backward, per rank
                                               // (1f1b-lh: lowered where the deeper one does not fit)
  std::vector<int> chunk_layers, chunk_rank;   // per chunk, model order
  std::vector<std::string> codec_fwd, codec_bwd;  // per chunk boundary ("none" on one rank)
  std::vector<bool> adaptive;                  // per chunk boundary: --codec adaptive, between regions
  std::vector<double> fwd_bytes, bwd_bytes;    // per chunk boundary, bytes per micro-batch (0 on one rank)
  std::vector<double> boundary_bps;            // per chunk boundary, the slower direction (0 on one rank)
  std::vector<double> chunk_s;                 // forward + backward of one micro-batch, per chunk
  ScheduleTiming timing;                       // iteration_s (with the largest exposed all-reduce), per-rank
                                               // compute and peak activations
  std::vector<double> allreduce_s;             // per rank, with replicas: its gradient all-reduce (allreduce_time)
  std::vector<double> allreduce_exposed_s;     // per rank, with replicas: the part its backward does not hide
  std::vector<MemoryEstimate> memory;          // per rank: predicted peak bytes by part
  std::vector<double> memory_limit_bytes;      // per rank: usable_memory_bytes of its region (0: not given)
  bool fits() const;                           // runnable and every rank within its limit
  double peak_memory_bytes() const;            // the largest rank's total
};

// Every schedule kind `options.schedule` allows on the placement ("auto": all of them, interleaved
// with options.virtual_stages or 2), in known_schedule_kinds() order.
std::vector<ScheduleOption> schedule_options(const Topology& topology, const JobSpec& job, const Placement& placement,
                                             const PlannerOptions& options);
// The option a plan takes: the requested kind (InfeasibleError when it cannot run or does not fit,
// saying why: for memory the stage, its region, the bytes it needs by part and the bytes its GPU
// offers), or for "auto" the fastest that fits (ties: fewer peak activations, then list order).
const ScheduleOption& pick_schedule(const std::vector<ScheduleOption>& options, const std::string& requested);

// Plans one job on an empty cluster; InfeasibleError (exit 3) saying which constraint failed.
// The plan fits in memory: when no schedule fits on the placement the search chose, plan_job
// turns on recomputation (options.recompute "auto"), then tries more stages (unless fixed), each
// without and then with recomputation, up to the job's most; with none that fits, the refusal
// names the stage and the bytes of the last (most stages) attempt.
// Pipeline position p runs its chunks in the placement's region p. With R > 1 replicas (the
// job's `replicas`, or chosen within its "gpus" bounds) every stage takes R GPUs of its region
// and lists R ranks, rank p * R + r being replica r of position p; with a fixed R a region too
// small for that is named in the refusal. The plan's job is replica_job(job, R); its iteration
// holds the largest exposed all-reduce; energy and cost come from the chosen schedule's replayed
// iteration and each rank's compute, over every replica. `considered` (optional) receives every
// schedule option evaluated.
Plan plan_job(Policy policy, const Topology& topology, const JobSpec& job, const PlannerOptions& options,
              std::vector<ScheduleOption>* considered = nullptr);


}  // namespace geopipe::scheduler
