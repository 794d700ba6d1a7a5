// The cost model shared by every policy and by the simulator (docs/SCHEDULER.md §Cost model):
// FLOPs of a GPT layer, per-device stage times, bytes crossing a stage boundary, link time,
// pipeline iteration time (GPipe / 1F1B / latency-hiding 1F1B) with bubbles, stalls and warm-up
// depths, and energy / electricity cost. Pure functions; every formula has a hand-computed test.
#pragma once

#include <geopipe/core/config.h>

#include <string>
#include <vector>

namespace geopipe::scheduler {

struct Profile;  // profile.h

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

// Seconds for one micro-batch (forward + backward) of each kind of work on one device.
struct DeviceTimes {
  double layer_s = 0;
  double embedding_s = 0;
  double head_s = 0;
  bool from_profile = false;
};

// FLOPs / (gpu_tflops * 1e12 * efficiency), or the measured profile when its device matches the
// region's gpu_type (profile.h states the rule). `profile` may be null.
DeviceTimes device_times(const Region& region, const JobSpec& job, const CostParams& params,
                         const Profile* profile = nullptr);

// Bytes of one micro-batch's activations (or their gradients) crossing a boundary:
// micro_batch * seq_len * d_model * dtype bytes, divided by the codec's ratio.
double boundary_bytes(const JobSpec& job, const std::string& codec);
// Compression ratio of a codec on `dtype` elements: dtype bytes / codec payload bytes per element
// (int8/fp8: 1 byte, int4: 0.5 byte; per-block scales, under 4 %, are not counted).
double codec_ratio(const std::string& codec, DType dtype);
// Link time of one message: bytes / bandwidth + one-way latency.
double link_time_s(double bytes, const LinkSpec& link);

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

// Energy (joules) of one iteration on the stages' GPUs (one GPU per stage): busy time at board
// power, the rest of the iteration at idle power, times PUE. Cost in USD at each region's price.
struct EnergyCost {
  double energy_j = 0;
  double cost_usd = 0;
};
EnergyCost iteration_energy(const std::vector<const Region*>& stage_regions, const std::vector<double>& t,
                            double iteration_s, int micro_batches, const CostParams& params);

inline double joules_to_kwh(double j) { return j / 3.6e6; }

}  // namespace geopipe::scheduler
