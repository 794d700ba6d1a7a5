// Schedule options on a placement: each kind's stage chunks, links, replayed time and memory
// (planner.h, schedule_options / pick_schedule); docs/SCHEDULER.md ("Choosing a schedule").
#include <geopipe/core/error.h>
#include <geopipe/core/schedule.h>
#include <geopipe/scheduler/planner.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace geopipe::scheduler {

namespace {

// Seconds of one micro-batch through `blocks` blocks (+ the embedding / head at the ends). With
// recomputation the backward (B, or I when split: the runtime recomputes there) runs the forward again.
ChunkCost chunk_cost(const DeviceTimes& d, int blocks, bool first, bool last, bool recompute) {
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
  if (recompute) {
    c.backward_s += c.forward_s;
    c.input_grad_s += c.forward_s;
  }
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
      // Between regions the replicas' pipelines share the link: each sees 1/R of it (as in the
      // placement search); inside a region each pair of replicas has a path of its own.
      const double share = a != b ? std::max(1, job.replicas) : 1;
      const double bw_f = ab->bytes_per_s() / share, bw_b = ba->bytes_per_s() / share;
      if (a != b) codec = hop_codecs(opt.codec, hop_codec_inputs(topo, job, opt, a, b, bw_f, bw_b, compute_period_s));
      fwd = boundary_bytes(job, codec.first);
      bwd = boundary_bytes(job, codec.second);
      bps = std::min(ab->bytes_per_s(), ba->bytes_per_s());
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

// The codecs run on the chunks' devices (planner.h, boundary_codec_work): the sender's encode of
// the activations is part of its forward, the receiver's decode of them part of its forward; the
// gradient's encode is part of the receiver's backward (its input gradient, I when split), its
// decode part of the sender's.
void add_codec_work(const Topology& topo, const JobSpec& job, const Placement& p, const PlannerOptions& opt,
                    ScheduleOption& o, std::vector<ChunkCost>& costs) {
  for (size_t c = 0; c + 1 < o.chunk_rank.size(); ++c) {
    if (o.codec_fwd[c] == "none" && o.codec_bwd[c] == "none") continue;
    const Region& from = topo.regions[p.region[o.chunk_rank[c]]];
    const Region& to = topo.regions[p.region[o.chunk_rank[c + 1]]];
    const BoundaryCodecWork w = boundary_codec_work(job, from, to, o.codec_fwd[c], o.codec_bwd[c], opt.codec_profile);
    auto add = [](ChunkCost& cost, double forward_s, double backward_s) {
      cost.forward_s += forward_s;
      cost.backward_s += backward_s;
      cost.input_grad_s += backward_s;
    };
    add(costs[c], w.from_forward_s, w.from_backward_s);
    add(costs[c + 1], w.to_forward_s, w.to_backward_s);
  }
  for (size_t c = 0; c < costs.size(); ++c) o.chunk_s[c] = costs[c].forward_s + costs[c].backward_s;
}

// Buffers one end of a boundary between ranks holds on its device: its sends (`out`) one way,
// its receives (`in`) the other, each at its codec's bytes on the wire.
double end_buffer_bytes(bool cpu_rank, bool nccl, int micro_batches, double out_bytes, const std::string& out_codec,
                        double in_bytes, const std::string& in_codec) {
  return messages_held(cpu_rank, nccl, out_codec != "none", false, micro_batches) * out_bytes +
         messages_held(cpu_rank, nccl, in_codec != "none", true, micro_batches) * in_bytes;
}

// Message buffers: each boundary between ranks, both directions.
void add_buffers(const Topology& topo, const JobSpec& job, const Placement& p, ScheduleOption& o) {
  for (size_t c = 0; c + 1 < o.chunk_rank.size(); ++c) {
    const int ra = o.chunk_rank[c], rb = o.chunk_rank[c + 1];
    if (ra == rb) continue;
    const bool nccl = std::string(link_transport(topo, p.region[ra], p.region[rb])) == "nccl";
    auto cpu = [&](int rank) { return topo.regions[p.region[rank]].gpu_type == "cpu"; };
    o.memory[ra].buffers += end_buffer_bytes(cpu(ra), nccl, job.micro_batches, o.fwd_bytes[c], o.codec_fwd[c],
                                             o.bwd_bytes[c], o.codec_bwd[c]);
    o.memory[rb].buffers += end_buffer_bytes(cpu(rb), nccl, job.micro_batches, o.bwd_bytes[c], o.codec_bwd[c],
                                             o.fwd_bytes[c], o.codec_fwd[c]);
  }
}

// Per rank: the training state of its chunks' parameters, the peak of the activations its
// schedule holds (each chunk's own size, peak_held_bytes) plus recomputation's transient, the
// message buffers and the framework's allowance (cost_model.h, MemoryEstimate).
void fill_memory(const Topology& topo, const JobSpec& job, const Placement& p, const PlannerOptions& opt,
                 const Schedule& lowered, ScheduleOption& o) {
  const int R = p.stages(), N = static_cast<int>(o.chunk_rank.size());
  const StateBytes per = state_bytes_per_parameter(job.model.dtype, job.replicas, opt.shard_optimizer);
  o.memory.assign(R, MemoryEstimate{});
  std::vector<double> act(N), transient(R, 0.0);
  for (int c = 0; c < N; ++c) {
    MemoryEstimate& m = o.memory[o.chunk_rank[c]];
    const double n = chunk_parameters(job.model, o.chunk_layers[c], c == 0, c + 1 == N);
    m.weights += n * per.weights;
    m.gradients += n * per.gradients;
    m.optimizer += n * per.optimizer;
    const ActivationBytes a = chunk_activations(job.model, job.micro_batch, o.chunk_layers[c], c + 1 == N, o.recompute);
    act[c] = a.per_micro_batch;
    transient[o.chunk_rank[c]] = std::max(transient[o.chunk_rank[c]], a.transient);
  }
  const std::vector<double> peak = peak_held_bytes(lowered, act);
  for (int r = 0; r < R; ++r) {
    o.memory[r].activations = peak[r] + transient[r];
    o.memory_limit_bytes.push_back(usable_memory_bytes(topo.regions[p.region[r]]));
  }
  add_buffers(topo, job, p, o);
}

// Each rank's gradient all-reduce among its replicas (allreduce_time over all its chunks'
// parameters, hidden behind the backward of its first chunk, the last one the rank runs), and
// the largest exposed part added to the iteration.
void add_allreduce(const Topology& topo, const JobSpec& job, const std::vector<ChunkCost>& costs, ScheduleOption& o) {
  if (job.replicas <= 1) return;
  const int ranks = static_cast<int>(o.timing.rank_compute_s.size()), N = static_cast<int>(o.chunk_rank.size());
  std::vector<double> params(ranks, 0.0), backward(ranks, -1.0);
  for (int c = 0; c < N; ++c) {
    const int r = o.chunk_rank[c];
    params[r] += chunk_parameters(job.model, o.chunk_layers[c], c == 0, c + 1 == N);
    if (backward[r] < 0) backward[r] = costs[c].backward_s;
  }
  double exposed = 0;
  for (int r = 0; r < ranks; ++r) {
    const AllReduceTime a =
        allreduce_time(params[r] * kGradBytesPerParameter, std::max(0.0, backward[r]), job.replicas, topo.intra_region);
    o.allreduce_s.push_back(a.total_s);
    o.allreduce_exposed_s.push_back(a.exposed_s);
    exposed = std::max(exposed, a.exposed_s);
  }
  o.timing.iteration_s += exposed;
}

ScheduleOption evaluate_option(const Topology& topo, const JobSpec& job, const Placement& p, const PlannerOptions& opt,
                               const std::string& kind, bool recompute, const std::vector<int>& warmup) {
  ScheduleOption o;
  o.kind = kind;
  o.recompute = recompute;
  o.virtual_stages = chunks_per_rank(kind, opt);
  const int R = p.stages(), M = job.micro_batches, N = R * o.virtual_stages;
  if (job.model.layers < N) {
    o.unavailable = std::to_string(N) + " stage chunks (" + std::to_string(R) + " ranks x " +
                    std::to_string(o.virtual_stages) + ") need at least one block each; the model has " +
                    std::to_string(job.model.layers);
    return o;
  }
  o.warmup = warmup;
  if (kind == "1f1b") o.warmup = one_f_one_b_warmup(R);
  if (kind == "1f1b-lh" && o.warmup.empty())
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
    costs.push_back(chunk_cost(dev[c], o.chunk_layers[c], c == 0, c + 1 == N, recompute));
    o.chunk_s.push_back(costs.back().forward_s + costs.back().backward_s);
    period = std::max(period, o.chunk_s.back());
  }
  std::vector<BoundaryCost> links;
  o.unavailable = fill_boundaries(topo, job, p, opt, period, o, links);
  if (!o.unavailable.empty()) return o;
  add_codec_work(topo, job, p, opt, o, costs);
  o.timing = time_schedule(lowered, costs, links, opt.cost.shared_compute_slots);
  add_allreduce(topo, job, costs, o);
  fill_memory(topo, job, p, opt, lowered, o);
  return o;
}

// 1F1B-LH's deeper warm-up costs memory: a rank over its limit gets a shallower one, never below
// plain 1F1B's S - 1 - r (rank r holds w + 1 micro-batches at its peak). Empty when nothing changes.
std::vector<int> lowered_warmup(const ScheduleOption& o) {
  const std::vector<int> plain = one_f_one_b_warmup(static_cast<int>(o.warmup.size()));
  std::vector<int> w = o.warmup;
  bool changed = false;
  for (size_t r = 0; r < w.size(); ++r) {
    const double over = o.memory[r].total() - o.memory_limit_bytes[r];
    const int held = o.timing.peak_activations[r];
    if (o.memory_limit_bytes[r] <= 0 || over <= 0 || held <= 0 || w[r] <= plain[r]) continue;
    // With recomputation this spreads the rebuilt block's bytes over the micro-batches held: the
    // drop can fall short, and fitted_option lowers again.
    const double per_micro_batch = o.memory[r].activations / held;
    const int drop = static_cast<int>(std::ceil(over / per_micro_batch));
    w[r] = std::max(plain[r], w[r] - drop);
    changed = true;
  }
  return changed ? w : std::vector<int>{};
}

ScheduleOption fitted_option(const Topology& topo, const JobSpec& job, const Placement& p, const PlannerOptions& opt,
                             const std::string& kind, bool recompute) {
  ScheduleOption o = evaluate_option(topo, job, p, opt, kind, recompute, {});
  // Each pass lowers every warm-up strictly, so this ends (at the latest at plain 1F1B's depths).
  while (kind == "1f1b-lh" && o.unavailable.empty() && !o.fits()) {
    const std::vector<int> w = lowered_warmup(o);
    if (w.empty()) break;
    o = evaluate_option(topo, job, p, opt, kind, recompute, w);
  }
  return o;
}

std::string gb(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f GB", bytes / 1e9);
  return b;
}

std::string fmt_factor() {
  char b[16];
  std::snprintf(b, sizeof b, "%g", kMemorySafetyFactor);
  return b;
}

// "stage 2" or, for a rank with several chunks, "stages 1 and 6".
std::string stages_of(const ScheduleOption& o, int rank) {
  std::vector<int> mine;
  for (size_t c = 0; c < o.chunk_rank.size(); ++c)
    if (o.chunk_rank[c] == rank) mine.push_back(static_cast<int>(c));
  std::string s = mine.size() == 1 ? "stage " : "stages ";
  for (size_t i = 0; i < mine.size(); ++i)
    s += (i ? (i + 1 == mine.size() ? " and " : ", ") : "") + std::to_string(mine[i]);
  return s;
}

std::string bytes(double b) {
  char t[64];
  std::snprintf(t, sizeof t, "%.0f bytes", b);
  return t;
}

// Why a runnable option does not fit: the first rank over its limit, with the parts of its need.
std::string over_memory(const ScheduleOption& o) {
  for (size_t r = 0; r < o.memory.size(); ++r) {
    const MemoryEstimate& m = o.memory[r];
    if (o.memory_limit_bytes[r] <= 0 || m.total() <= o.memory_limit_bytes[r]) continue;
    const std::string who = stages_of(o, static_cast<int>(r));
    const int held = o.timing.peak_activations[r];
    return who + (who.rfind("stages ", 0) == 0 ? " need " : " needs ") + bytes(m.total()) + " (" + gb(m.total()) +
           ": weights, gradients and optimizer state " + gb(m.weights + m.gradients + m.optimizer) + ", activations " +
           gb(m.activations) + " for " + std::to_string(held) +
           (held == 1 ? " micro-batch in flight" : " micro-batches in flight") +
           (o.recompute ? " with recomputation" : "") + ", message buffers " + gb(m.buffers) + ", framework " +
           gb(m.framework) + "), its GPU offers " + bytes(o.memory_limit_bytes[r]) + " (" +
           gb(o.memory_limit_bytes[r]) + ", gpu_mem_gb x " + fmt_factor() + ")";
  }
  return {};
}

int max_peak(const ScheduleOption& o) {
  return o.timing.peak_activations.empty()
             ? 0
             : *std::max_element(o.timing.peak_activations.begin(), o.timing.peak_activations.end());
}

}  // namespace

double plan_buffer_bytes(const Plan& plan, const Topology& topology, int rank) {
  const int replica = plan.replica_of(rank);
  double total = 0;
  for (const LinkPlan& l : plan.links) {
    const int from = plan.rank_of(l.from_stage, replica), to = plan.rank_of(l.to_stage, replica);
    if (from == to || (rank != from && rank != to)) continue;
    const int here = rank == from ? l.from_stage : l.to_stage;
    const int region = topology.region_index(plan.stages.at(static_cast<size_t>(here)).region);
    const bool cpu = region >= 0 && topology.regions[static_cast<size_t>(region)].gpu_type == "cpu";
    const double fwd = boundary_bytes(plan.job, l.codec_forward), bwd = boundary_bytes(plan.job, l.codec_backward);
    total += rank == from ? end_buffer_bytes(cpu, l.transport == "nccl", plan.job.micro_batches, fwd, l.codec_forward,
                                             bwd, l.codec_backward)
                          : end_buffer_bytes(cpu, l.transport == "nccl", plan.job.micro_batches, bwd, l.codec_backward,
                                             fwd, l.codec_forward);
  }
  return total;
}

bool ScheduleOption::fits() const { return unavailable.empty() && over_memory(*this).empty(); }

double ScheduleOption::peak_memory_bytes() const {
  double most = 0;
  for (const auto& m : memory) most = std::max(most, m.total());
  return most;
}

std::vector<ScheduleOption> schedule_options(const Topology& topology, const JobSpec& job, const Placement& placement,
                                             const PlannerOptions& options) {
  std::vector<ScheduleOption> out;
  for (const auto& kind : known_schedule_kinds())
    if (options.schedule == "auto" || options.schedule == kind)
      out.push_back(fitted_option(topology, job, placement, options, kind, options.recompute == "full"));
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
