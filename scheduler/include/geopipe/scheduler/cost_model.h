// The cost model shared by every policy and by the simulator (docs/SCHEDULER.md §Cost model):
// FLOPs of a GPT layer, per-device stage times, bytes crossing a stage boundary, link time,
// pipeline iteration time (GPipe / 1F1B / latency-hiding 1F1B) with bubbles, stalls and warm-up
// depths, and energy / electricity cost. Pure functions; every formula has a hand-computed test.
#pragma once

#include <geopipe/core/config.h>
#include <geopipe/core/plan.h>
#include <geopipe/scheduler/profile.h>

#include <string>
#include <vector>

namespace geopipe::scheduler {

struct CostParams {
  double efficiency = 0.4;           // achieved fraction of a GPU's peak gpu_tflops
  double idle_power_fraction = 0.2;  // a reserved GPU waiting in a bubble draws this share of board power
  // > 0: every stage runs on one host that can compute only this many stages at once (emulated
  // regions: the host's cores, one LibTorch thread per rank). 0: each stage has its own device.
  int shared_compute_slots = 0;
};

// Floating-point operations of one micro-batch.
struct Flops {
  double forward = 0;
  double backward = 0;
};

// One transformer block, micro-batch b, sequence s, width h:
// forward = b*s*(24*h^2 + 4*s*h) (QKV 6h^2, output 2h^2, MLP 16h^2 per token; QK^T and AV 4sh),
// backward = 2 * forward. Heads do not change the count.
Flops layer_flops(const ModelSpec& model, int micro_batch);
// Token + position embedding: forward 2*b*s*h (lookup and add, memory bound), backward the same.
Flops embedding_flops(const ModelSpec& model, int micro_batch);
// Final norm + LM head + softmax cross-entropy: forward 2*b*s*h*V + 5*b*s*V, backward 2 * 2*b*s*h*V.
Flops head_flops(const ModelSpec& model, int micro_batch);

// Seconds of one micro-batch of one kind of work on one device: the forward, the full backward,
// and the backward split as zero-bubble schedules run it (I: the input gradient the previous stage
// needs; W: the weight gradients, which can wait). The profile's record (profile.h), so a measured
// profile and the FLOPs model fill the same fields.
using WorkTimes = PhaseTimes;

struct DeviceTimes {
  WorkTimes layer;      // one transformer block
  WorkTimes embedding;  // token + position embedding (first stage)
  WorkTimes head;       // final norm + LM head + loss (last stage)
  bool from_profile = false;
};

// FLOPs / (gpu_tflops * 1e12 * efficiency), or the measured profile when its device matches the
// region's gpu_type (profile.h states the rule). `profile` may be null. Without a measured split,
// a block's and the head's backward divide evenly into I and W (each linear layer's input and
// weight gradients are one matrix product of the forward's size each); the embedding's backward is
// all W (its input is token ids: no input gradient).
DeviceTimes device_times(const Region& region, const JobSpec& job, const CostParams& params,
                         const Profile* profile = nullptr);

// Bytes of one micro-batch's activations (or their gradients) crossing a boundary:
// micro_batch * seq_len * d_model * dtype bytes, divided by the codec's ratio.
double boundary_bytes(const JobSpec& job, const std::string& codec);
// Compression ratio of a codec on `dtype` elements: dtype bytes / codec payload bytes per element
// (int8/fp8: 1 byte, int4: 0.5 byte; per-block scales, under 4 %, are not counted).
double codec_ratio(const std::string& codec, DType dtype);
// ---- Codec compute (docs/SCHEDULER.md, "Codec compute") ------------------------------------

// A GPU's codec speed where no codec profile measured it: an assumption (about a third of an
// H100's HBM bandwidth; the kernels' goal is 80 %) until scripts/gpu-check.sh's codec bench run is
// given to the planner with --codec-profile.
inline constexpr double kAssumedGpuCodecBps = 1e12;
// The speed of `codec` on a region's device: the codec profile's when it applies to the region
// (profile.h) and measured the codec; otherwise on a CPU region (gpu_type "cpu") the CPU twins'
// one-core figures measured by geopipe-codec-bench (docs/PERFORMANCE.md, "Kernels", the largest
// tensor), on a GPU region kAssumedGpuCodecBps. "none" has no rates (zero).
CodecRates codec_rates(const Region& region, const std::string& codec, const CodecProfile* profile = nullptr);
// Seconds to encode one micro-batch's boundary message (the sender) and to decode it (the
// receiver): the plain tensor and the wire bytes, read + written, over the rate. 0 for "none".
struct CodecWork {
  double encode_s = 0;
  double decode_s = 0;
};
CodecWork codec_work(const JobSpec& job, const std::string& codec, const CodecRates& rates);

// Link time of one message: bytes / bandwidth + one-way latency.
double link_time_s(double bytes, const LinkSpec& link);

// Egress (USD) of one iteration over one boundary: M micro-batches of activations leave by
// `forward` (fwd_bytes each) and their gradients come back by `backward` (bwd_bytes each), each
// direction at its link's egress_usd_per_gb. Bytes are those on the wire, after the codec
// (boundary_bytes); a GB is 1e9 bytes. Callers multiply by iterations and by the pipelines
// (replicas) that cross the boundary.
double boundary_egress_usd(double fwd_bytes, double bwd_bytes, const LinkSpec& forward, const LinkSpec& backward,
                           int micro_batches);
inline constexpr double kBytesPerGB = 1e9;

// Splits `layers` transformer blocks over stages with the given per-device times, minimizing the
// slowest stage; stage 0 also carries the embedding and the last stage the LM head and loss.
// Every stage gets at least one block. Returns blocks per stage (sums to `layers`).
std::vector<int> balance_layers(int layers, const std::vector<DeviceTimes>& stage_devices);
// Forward + backward seconds of one micro-batch per stage for a split.
std::vector<double> stage_times(const std::vector<int>& split, const std::vector<DeviceTimes>& stage_devices);

enum class ScheduleKind { kGPipe, kOneFOneB, kOneFOneBLatencyHiding };
const char* schedule_kind_name(ScheduleKind kind);  // "gpipe", "1f1b", "1f1b-lh"

// What a pipeline iteration costs in time. Inputs per stage k: t[k] = forward + backward seconds of
// one micro-batch; per boundary j (stage j -> j+1): x[j] = transfer seconds of one message per
// direction (bytes / bandwidth, the larger of activation and gradient), lat[j] = one-way latency.
struct PipelineTiming {
  double compute_period_s = 0;  // max_k t[k]
  double period_s = 0;          // steady-state time per micro-batch: max(compute, links, stalls);
                                // GPipe: max(forward, link) + max(backward, link), one wave each way
  double fill_s = 0;            // one micro-batch through every stage and link and back
  double iteration_s = 0;       // (M - 1) * period + fill
  std::vector<int> warmup;      // forwards each stage runs before its first backward
  bool link_bound = false;      // a link is slower than the slowest stage (it stalls the pipe)
  bool latency_stall = false;   // the warm-up depths do not cover a round trip
  bool compute_shared = false;  // the shared compute slots, not the pipeline, set the iteration time
};
// `shared_compute_slots` D (CostParams): when 0 < D < stages, the stages take turns on D compute
// slots, so the iteration also lasts at least the work divided among the slots, M * sum_k t[k] / D,
// plus the start and the end of the iteration where fewer than D stages can have work: the first
// D - 1 stages' forward, backward and round trip of one micro-batch,
// sum_{k < D-1} (t[k] + 2 (x[k] + lat[k])). The iteration is the larger of that and the
// one-device-per-stage time; period_s stays the latter's.
PipelineTiming pipeline_timing(const std::vector<double>& t, const std::vector<double>& x,
                               const std::vector<double>& lat, int micro_batches, ScheduleKind kind,
                               int shared_compute_slots = 0);

// ---- Memory of a rank (docs/SCHEDULER.md, "Memory") ----------------------------------------

// Share of a region's gpu_mem_gb a plan may fill: the caching allocator rounds blocks up and
// fragments, and the backward's temporary gradients (not modelled) need room.
inline constexpr double kMemorySafetyFactor = 0.9;
// What a rank's process holds besides the model and its messages: the CUDA context with
// LibTorch's kernels (~0.5 GB), cuBLAS workspaces, NCCL's channel buffers, or on a CPU rank the
// libraries and the allocator's arenas.
inline constexpr double kFrameworkAllowanceBytes = 1e9;

// The bytes a region's GPU offers a plan: gpu_mem_gb * 1e9 * kMemorySafetyFactor; 0 when the
// topology gives no gpu_mem_gb (nothing is checked then).
double usable_memory_bytes(const Region& region);

// Parameters of stage chunk: one block 12h^2 + 13h; the embedding (V + s) h; the head 2h + V h
// (untied LM head).
double chunk_parameters(const ModelSpec& model, int blocks, bool first, bool last);

// Bytes per parameter of the training state. Weights and gradients in the model's dtype; a
// 16-bit model adds its fp32 master copy; AdamW's two fp32 moments, divided among the stage's
// replicas with ZeRO-1 (`shard_optimizer`). fp32: 4 + 4 + 8; bf16: 2 + 2 + 4 + 8. The runtime
// holds a bf16 model as fp32 weights and gradients under autocast: the same 16 bytes.
struct StateBytes {
  double weights = 0, gradients = 0, optimizer = 0;  // optimizer: master copy + moments
  double total() const { return weights + gradients + optimizer; }
};
StateBytes state_bytes_per_parameter(DType dtype, int replicas, bool shard_optimizer);

// Activations of one stage chunk, fp32 values as the runtime saves them
// (StageCompute::graph_bytes_estimate), N = b s tokens, a heads. Without recomputation a
// micro-batch keeps from its F to its backward, per block, 16 N h + 4 N + b a s^2 values (the
// block's saved tensors, the attention probabilities included); the last chunk adds the head's
// 2 N h + 2 N + N V, another chunk its output N h. With recomputation it keeps each block's input
// N h (and the head's input on the last chunk), and the backward rebuilds one segment's graph at
// a time: `transient`, one block's (or the head's) full activations, held once per rank.
struct ActivationBytes {
  double per_micro_batch = 0;
  double transient = 0;
};
ActivationBytes chunk_activations(const ModelSpec& model, int micro_batch, int blocks, bool last, bool recompute);

// Messages of one direction of one boundary between ranks that sit in a rank's device memory
// during a step, as the runtime keeps them. Every send is held until the step's end (M), on the
// device unless a GPU rank sends it compressed over MPI (the packed bytes are copied to host
// memory). MPI receives are all posted at the step's start (M) into host memory, which is the
// device's only on a CPU rank; an NCCL receive is posted with its group (1).
int messages_held(bool cpu_rank, bool nccl, bool compressed, bool receiving, int micro_batches);

// Predicted peak bytes of one rank, by part.
struct MemoryEstimate {
  double weights = 0, gradients = 0, optimizer = 0;
  double activations = 0;  // peak of the micro-batches in flight (+ recomputation's transient)
  double buffers = 0;      // message buffers on the device (messages_held x bytes on the wire)
  double framework = kFrameworkAllowanceBytes;
  double total() const { return weights + gradients + optimizer + activations + buffers + framework; }
};

// ---- Gradient all-reduce of a stage's replicas (docs/SCHEDULER.md, "Replicas") ------------

// The runtime's reducer sends a stage's gradients in buckets of kGradBucketBytes (core/plan.h),
// as fp32.
inline constexpr double kGradBytesPerParameter = 4;

// Ring all-reduce of `grad_bytes` among `replicas` ranks over `intra` (the replicas of a stage
// share its region), in kGradBucketBytes buckets, the last one the remainder. One bucket of n
// bytes: 2(R - 1)/R * n / bandwidth + 2(R - 1) * latency (2(R - 1) ring steps). The buckets but
// the last are ready while the stage's last backward runs (`backward_s`) and hide behind it; the
// last is ready only at its end. Exposed = max(last bucket, total - backward_s). R = 1: zeros.
struct AllReduceTime {
  double total_s = 0;    // every bucket, back to back
  double exposed_s = 0;  // what the backward does not hide: added to the iteration
};
AllReduceTime allreduce_time(double grad_bytes, double backward_s, int replicas, const LinkSpec& intra);

// Energy (joules) of one iteration on the stages' GPUs (one GPU per stage): busy time at board
// power, the rest of the iteration at idle power, times PUE. Cost in USD at each region's
// electricity price (a job's cost adds the egress, boundary_egress_usd).
struct EnergyCost {
  double energy_j = 0;
  double cost_usd = 0;
};
EnergyCost iteration_energy(const std::vector<const Region*>& stage_regions, const std::vector<double>& t,
                            double iteration_s, int micro_batches, const CostParams& params);

inline double joules_to_kwh(double j) { return j / 3.6e6; }

}  // namespace geopipe::scheduler
