// Schedule options on a placement: each kind's stage chunks, links, replayed time and memory
// (planner.h, schedule_options / pick_schedule); docs/SCHEDULER.md ("Choosing a schedule").
#include <geopipe/core/error.h>
#include <geopipe/core/schedule.h>
#include <geopipe/scheduler/planner.h>

#include <algorithm>
#include <cstdio>
#include <limits>

namespace geopipe::scheduler {

namespace {

// Seconds of one micro-batch through `blocks` blocks (+ the embedding / head at the ends).
ChunkCost chunk_cost(const DeviceTimes& d, int blocks, bool first, bool last) {
  ChunkCost c;
  auto add = [&c](const WorkTimes& w, double n) {
    c.forward_s += n * w.forward_s;
    c.backward_s += n * w.backward_s;
    c.input_grad_s += n * w.input_grad_s;
    c.weight_grad_s += n * w.weight_grad_s;
  };
  add(d.layer, blocks);
  if (first) add(d.embedding, 1);
  if (last) add(d.head, 1);
  return c;
}

int chunks_per_rank(const std::string& kind, const PlannerOptions& opt) {
  if (kind == "zbv") return 2;
  if (kind == "interleaved") return opt.virtual_stages > 0 ? opt.virtual_stages : 2;
  return 1;
}

// Fills the boundaries between chunks on different ranks: codecs, bytes, bandwidth, costs.
// Returns why a boundary cannot be used (two regions without a link), or empty.
std::string fill_boundaries(const Topology& topo, const JobSpec& job, const Placement& p, const PlannerOptions& opt,
                            double compute_period_s, ScheduleOption& o, std::vector<BoundaryCost>& costs) {
  const size_t N = o.chunk_rank.size();
  const double plain = boundary_bytes(job, "none");
  costs.assign(N > 0 ? N - 1 : 0, {});
  for (size_t c = 0; c + 1 < N; ++c) {
    const int ra = o.chunk_rank[c], rb = o.chunk_rank[c + 1];
    std::pair<std::string, std::string> codec{"none", "none"};
    double fwd = 0, bwd = 0, bps = 0;
    if (ra != rb) {
      const int a = p.region[ra], b = p.region[rb];
      const auto ab = topo.link(a, b), ba = topo.link(b, a);
      if (!ab || !ba)
        return "stage chunks " + std::to_string(c) + " and " + std::to_string(c + 1) + " would cross " +
               topo.regions[a].name + " -> " + topo.regions[b].name + ", which has no link";
      const double bw_f = ab->bytes_per_s(), bw_b = ba->bytes_per_s();
      if (a != b) codec = hop_codecs(opt.codec, plain / std::min(bw_f, bw_b), compute_period_s);
      fwd = boundary_bytes(job, codec.first);
      bwd = boundary_bytes(job, codec.second);
      bps = std::min(bw_f, bw_b);
      costs[c] = {fwd / bw_f, bwd / bw_b, std::max(ab->latency_ms, ba->latency_ms) * 1e-3};
    }
    o.codec_fwd.push_back(codec.first);
    o.codec_bwd.push_back(codec.second);
    o.adaptive.push_back(opt.codec == "adaptive" && ra != rb && p.region[ra] != p.region[rb]);
    o.fwd_bytes.push_back(fwd);
    o.bwd_bytes.push_back(bwd);
    o.boundary_bps.push_back(bps);
  }
  return {};
}

// Per rank: 16 bytes per parameter of its chunks + its peak activations x its largest chunk's.
void fill_memory(const Topology& topo, const JobSpec& job, const Placement& p, ScheduleOption& o) {
  const int R = p.stages(), N = static_cast<int>(o.chunk_rank.size());
  o.memory_bytes.assign(R, 0.0);
  std::vector<double> act(R, 0.0);
  for (int c = 0; c < N; ++c) {
    const int r = o.chunk_rank[c];
    o.memory_bytes[r] += kBytesPerParameter * chunk_parameters(job.model, o.chunk_layers[c], c == 0, c + 1 == N);
    act[r] = std::max(act[r], chunk_activation_bytes(job.model, job.micro_batch, o.chunk_layers[c], c + 1 == N, false));
  }
  for (int r = 0; r < R; ++r) {
    o.memory_bytes[r] += o.timing.peak_activations.at(r) * act[r];
    o.memory_limit_bytes.push_back(topo.regions[p.region[r]].gpu_mem_gb * 1e9);
  }
}

ScheduleOption evaluate_option(const Topology& topo, const JobSpec& job, const Placement& p, const PlannerOptions& opt,
                               const std::string& kind) {
  ScheduleOption o;
  o.kind = kind;
  o.virtual_stages = chunks_per_rank(kind, opt);
  const int R = p.stages(), M = job.micro_batches, N = R * o.virtual_stages;
  if (job.model.layers < N) {
    o.unavailable = std::to_string(N) + " stage chunks (" + std::to_string(R) + " ranks x " +
                    std::to_string(o.virtual_stages) + ") need at least one block each; the model has " +
                    std::to_string(job.model.layers);
    return o;
  }
  if (kind == "1f1b") o.warmup = one_f_one_b_warmup(R);
  if (kind == "1f1b-lh")
    o.warmup = pipeline_timing(p.stage_s, p.hop_xfer_s, p.hop_latency_s, M, ScheduleKind::kOneFOneBLatencyHiding).warmup;
  Schedule lowered;
  try {
    lowered = lower(schedule_for(kind, R, M, o.virtual_stages, o.warmup));
  } catch (const InputError& e) {
    o.unavailable = e.diagnostics().empty() ? e.what() : e.diagnostics().front().message;
    return o;
  }
  o.chunk_rank = lowered.stage_rank;
  std::vector<DeviceTimes> dev;
  for (int c = 0; c < N; ++c)
    dev.push_back(device_times(topo.regions[p.region[o.chunk_rank[c]]], job, opt.cost, opt.profile));
  o.chunk_layers = balance_layers(job.model.layers, dev);
  std::vector<ChunkCost> costs;
  double period = 0;
  for (int c = 0; c < N; ++c) {
    costs.push_back(chunk_cost(dev[c], o.chunk_layers[c], c == 0, c + 1 == N));
    o.chunk_s.push_back(costs.back().forward_s + costs.back().backward_s);
    period = std::max(period, o.chunk_s.back());
  }
  std::vector<BoundaryCost> links;
  o.unavailable = fill_boundaries(topo, job, p, opt, period, o, links);
  if (!o.unavailable.empty()) return o;
  o.timing = time_schedule(lowered, costs, links, opt.cost.shared_compute_slots);
  fill_memory(topo, job, p, o);
  return o;
}

std::string gb(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f GB", bytes / 1e9);
  return b;
}

// Why a runnable option does not fit: the first rank over its limit.
std::string over_memory(const ScheduleOption& o) {
  for (size_t r = 0; r < o.memory_bytes.size(); ++r)
    if (o.memory_limit_bytes[r] > 0 && o.memory_bytes[r] > o.memory_limit_bytes[r])
      return "rank " + std::to_string(r) + " needs " + gb(o.memory_bytes[r]) + " (" +
             std::to_string(o.timing.peak_activations[r]) + " micro-batches of activations in flight), its GPU has " +
             gb(o.memory_limit_bytes[r]);
  return {};
}

int max_peak(const ScheduleOption& o) {
  return o.timing.peak_activations.empty()
             ? 0
             : *std::max_element(o.timing.peak_activations.begin(), o.timing.peak_activations.end());
}

}  // namespace

bool ScheduleOption::fits() const { return unavailable.empty() && over_memory(*this).empty(); }

std::vector<ScheduleOption> schedule_options(const Topology& topology, const JobSpec& job, const Placement& placement,
                                             const PlannerOptions& options) {
  std::vector<ScheduleOption> out;
  for (const auto& kind : known_schedule_kinds())
    if (options.schedule == "auto" || options.schedule == kind)
      out.push_back(evaluate_option(topology, job, placement, options, kind));
  if (out.empty())
    throw InputError("--schedule", "", "unknown schedule \"" + options.schedule + "\"");
  return out;
}

const ScheduleOption& pick_schedule(const std::vector<ScheduleOption>& options, const std::string& requested) {
  const ScheduleOption* best = nullptr;
  std::string why;
  for (const auto& o : options) {
    if (requested != "auto" && o.kind != requested) continue;
    const std::string no = o.unavailable.empty() ? over_memory(o) : o.unavailable;
    if (!no.empty()) {
      why += (why.empty() ? "" : "; ") + o.kind + ": " + no;
      continue;
    }
    if (!best || o.timing.iteration_s < best->timing.iteration_s * (1 - 1e-9) ||
        (o.timing.iteration_s <= best->timing.iteration_s * (1 + 1e-9) && max_peak(o) < max_peak(*best)))
      best = &o;
  }
  if (!best)
    throw InfeasibleError("no schedule " + std::string(requested == "auto" ? "fits" : "\"" + requested + "\" fits") +
                          " on this placement: " + (why.empty() ? "none was evaluated" : why));
  return *best;
}

}  // namespace geopipe::scheduler
