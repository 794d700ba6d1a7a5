#include <geopipe/core/error.h>
#include <geopipe/scheduler/planner.h>
#include <geopipe/scheduler/profile.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <sstream>

namespace geopipe::scheduler {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kRelEps = 1e-9;
}  // namespace

// ---- Policies -------------------------------------------------------------------------------

const char* policy_name(Policy p) {
  switch (p) {
    case Policy::kBace: return "bace";
    case Policy::kDelayFirst: return "delay-first";
    case Policy::kCostFirst: return "cost-first";
    case Policy::kFifo: return "fifo";
    case Policy::kExact: return "exact";
    case Policy::kBaceNoPriority: return "bace-no-prio";
    case Policy::kBaceNoBandwidth: return "bace-no-bw";
    case Policy::kBaceNoPrice: return "bace-no-price";
  }
  return "bace";
}

const std::vector<Policy>& all_policies() {
  static const std::vector<Policy> all = {Policy::kBace,           Policy::kDelayFirst,      Policy::kCostFirst,
                                          Policy::kFifo,           Policy::kExact,           Policy::kBaceNoPriority,
                                          Policy::kBaceNoBandwidth, Policy::kBaceNoPrice};
  return all;
}

std::optional<Policy> parse_policy(const std::string& name) {
  for (Policy p : all_policies())
    if (name == policy_name(p)) return p;
  return std::nullopt;
}

// ---- Cluster state --------------------------------------------------------------------------

ClusterState ClusterState::empty(const Topology& t, double scale) {
  ClusterState s;
  const int R = t.num_regions();
  for (const auto& r : t.regions) s.free_gpus.push_back(r.gpus);
  s.capacity_bps.assign(static_cast<size_t>(R) * R, 0.0);
  for (int a = 0; a < R; ++a)
    for (int b = 0; b < R; ++b)
      if (a != b)
        if (auto l = t.link(a, b)) s.capacity_bps[static_cast<size_t>(a) * R + b] = l->bytes_per_s() * scale;
  s.residual_bps = s.capacity_bps;
  return s;
}

int ClusterState::total_free() const { return std::accumulate(free_gpus.begin(), free_gpus.end(), 0); }

JobSpec replica_job(const JobSpec& job, int replicas) {
  JobSpec j = job;
  if (job.chooses_replicas()) {
    j.micro_batches = job.micro_batches / replicas;  // the step's micro-batches shared among the replicas
    j.min_gpus = j.max_gpus = 0;
  }
  j.replicas = replicas;
  return j;
}

std::vector<int> replica_counts(const JobSpec& job, const PlannerOptions& options) {
  if (!job.chooses_replicas()) return {std::max(1, job.replicas)};
  if (options.fixed_replicas > 0) {
    if (job.micro_batches % options.fixed_replicas != 0)
      throw InputError("--replicas", "", std::to_string(options.fixed_replicas) + " replicas do not divide job \"" +
                                            job.name + "\"'s " + std::to_string(job.micro_batches) +
                                            " micro-batches (with \"gpus\", each replica runs micro_batches / R)");
    return {options.fixed_replicas};
  }
  std::vector<int> out;
  for (int R = 1; R <= job.micro_batches && R <= job.max_gpus; ++R)
    if (job.micro_batches % R == 0) out.push_back(R);
  return out;
}

std::vector<double> placement_memory_bytes(const JobSpec& job, const Placement& p, bool shard_optimizer,
                                           bool recompute) {
  const int S = p.stages(), M = job.micro_batches;
  const double state = state_bytes_per_parameter(job.model.dtype, job.replicas, shard_optimizer).total();
  std::vector<double> bytes;
  for (int k = 0; k < S; ++k) {
    const bool last = k + 1 == S;
    const int warmup = k < static_cast<int>(p.timing.warmup.size()) ? p.timing.warmup[k] : S - 1 - k;
    const int in_flight = p.kind == ScheduleKind::kGPipe ? M : std::min(M, warmup + 1);
    const double params = chunk_parameters(job.model, p.layers[k], k == 0, last);
    const ActivationBytes act = chunk_activations(job.model, job.micro_batch, p.layers[k], last, recompute);
    bytes.push_back(params * state + in_flight * act.per_micro_batch + act.transient + kFrameworkAllowanceBytes);
  }
  return bytes;
}

MemoryFit placement_fit(const Topology& topology, const JobSpec& job, const Placement& p, bool shard_optimizer) {
  for (bool recompute : {false, true}) {
    const std::vector<double> bytes = placement_memory_bytes(job, p, shard_optimizer, recompute);
    bool fits = true;
    for (int k = 0; k < p.stages(); ++k) {
      const double usable = usable_memory_bytes(topology.regions[p.region[k]]);
      fits = fits && (usable <= 0 || bytes[k] <= usable);
    }
    if (fits) return recompute ? MemoryFit::kWithRecompute : MemoryFit::kFits;
  }
  return MemoryFit::kOver;
}

int Placement::inter_region_hops() const {
  int n = 0;
  for (size_t k = 0; k + 1 < region.size(); ++k) n += region[k] != region[k + 1];
  return n;
}

const char* link_transport(const Topology& topology, int region_a, int region_b) {
  return region_a == region_b && topology.regions[region_a].gpu_type != "cpu" ? "nccl" : "mpi";
}

std::pair<std::string, std::string> hop_codecs(const std::string& codec_option, const HopCodecInputs& hop) {
  if (codec_option == "auto" || codec_option == "adaptive") {
    const double period = hop.compute_period_s;
    const bool needed = hop.plain_xfer_s > period * (1 + kRelEps);
    const bool cheaper = codec_option == "auto" && hop.weigh_price && hop.egress_saved_usd > hop.codec_usd &&
                         period + hop.codec_s <= period * (1 + hop.max_slowdown) * (1 + kRelEps);
    if (needed || cheaper) return {"int8-block", "int8-block"};
    return {"none", "none"};
  }
  if (codec_option == "int4-block") return {"int4-block", "int8-block"};  // int4 is for activations only
  return {codec_option, codec_option};
}

BoundaryCodecWork boundary_codec_work(const JobSpec& job, const Region& from, const Region& to,
                                      const std::string& codec_fwd, const std::string& codec_bwd,
                                      const CodecProfile* profile) {
  const CodecWork fwd_at_from = codec_work(job, codec_fwd, codec_rates(from, codec_fwd, profile));
  const CodecWork fwd_at_to = codec_work(job, codec_fwd, codec_rates(to, codec_fwd, profile));
  const CodecWork bwd_at_from = codec_work(job, codec_bwd, codec_rates(from, codec_bwd, profile));
  const CodecWork bwd_at_to = codec_work(job, codec_bwd, codec_rates(to, codec_bwd, profile));
  return {fwd_at_from.encode_s, bwd_at_from.decode_s, fwd_at_to.decode_s, bwd_at_to.encode_s};
}

namespace {

// USD per second of one GPU of the region at board power (power * PUE * price).
double gpu_usd_per_s(const Region& r) { return r.gpu_power_w * r.pue * r.price_usd_per_kwh / 3.6e6; }

// hop_codec_inputs with int8-block's work at the hop's two ends already known (`int8`).
HopCodecInputs hop_inputs(const Topology& topology, const JobSpec& job, const PlannerOptions& options, int a, int b,
                          double bps_ab, double bps_ba, double compute_period_s, const BoundaryCodecWork& int8) {
  const Region &ra = topology.regions[a], &rb = topology.regions[b];
  const double plain = boundary_bytes(job, "none"), packed = boundary_bytes(job, "int8-block");
  const double at_a = int8.from_forward_s + int8.from_backward_s, at_b = int8.to_forward_s + int8.to_backward_s;
  HopCodecInputs hop;
  hop.plain_xfer_s = plain / std::min(bps_ab, bps_ba);
  hop.compute_period_s = compute_period_s;
  hop.codec_s = std::max(at_a, at_b);
  const auto ab = topology.link(a, b), ba = topology.link(b, a);
  if (ab && ba)
    hop.egress_saved_usd = boundary_egress_usd(plain, plain, *ab, *ba, 1) - boundary_egress_usd(packed, packed, *ab, *ba, 1);
  hop.codec_usd = at_a * gpu_usd_per_s(ra) + at_b * gpu_usd_per_s(rb);
  hop.max_slowdown = options.max_slowdown;
  hop.weigh_price = options.price_term;
  return hop;
}

}  // namespace

HopCodecInputs hop_codec_inputs(const Topology& topology, const JobSpec& job, const PlannerOptions& options, int a,
                                int b, double bps_ab, double bps_ba, double compute_period_s) {
  const BoundaryCodecWork int8 = boundary_codec_work(job, topology.regions[a], topology.regions[b], "int8-block",
                                                     "int8-block", options.codec_profile);
  return hop_inputs(topology, job, options, a, b, bps_ab, bps_ba, compute_period_s, int8);
}

// ---- Evaluation -----------------------------------------------------------------------------

namespace {

// Everything about a (job, topology, state, options) that does not depend on the path.
struct Context {
  const Topology& topo;
  const JobSpec& job;
  const ClusterState& state;
  const PlannerOptions& opt;
  int R = 0;
  int replicas = 1;              // job.replicas: copies of the pipeline, each stage's in its region
  std::vector<DeviceTimes> dev;  // per region
  std::vector<double> rate;      // USD per second of one GPU at board power (power * PUE * price)
  std::vector<CodecWork> int8;    // per region: int8-block's encode and decode of one message
  double bytes_none = 0;

  Context(const Topology& t, const JobSpec& j, const ClusterState& s, const PlannerOptions& o)
      : topo(t), job(j), state(s), opt(o), R(t.num_regions()), replicas(std::max(1, j.replicas)) {
    for (const auto& r : t.regions) {
      dev.push_back(device_times(r, j, o.cost, o.profile));
      rate.push_back(gpu_usd_per_s(r));
      int8.push_back(codec_work(j, "int8-block", codec_rates(r, "int8-block", o.codec_profile)));
    }
    bytes_none = boundary_bytes(j, "none");
  }
  // The codec work of a hop a -> b with these codecs (boundary_codec_work; int8-block from the cache).
  BoundaryCodecWork codec_work_of(int a, int b, const std::string& fwd, const std::string& bwd) const {
    if (fwd == "none" && bwd == "none") return {};
    if (fwd == "int8-block" && bwd == "int8-block")
      return {int8[a].encode_s, int8[a].decode_s, int8[b].decode_s, int8[b].encode_s};
    return boundary_codec_work(job, topo.regions[a], topo.regions[b], fwd, bwd, opt.codec_profile);
  }
  // Bandwidth one pipeline sees from region a to region b: the replicas' R pipelines all cross
  // the one link between their stages' regions and share it.
  double bw(int a, int b) const {
    const auto& v = opt.use_residual ? state.residual_bps : state.capacity_bps;
    return v[static_cast<size_t>(a) * R + b] / replicas;
  }
  bool linked(int a, int b) const { return a == b || state.capacity_bps[static_cast<size_t>(a) * R + b] > 0; }
  // The codec pair of a hop a -> b at these bandwidths against compute period `pc`.
  std::pair<std::string, std::string> codecs(int a, int b, double bw_f, double bw_b, double pc) const {
    if (opt.codec != "auto" && opt.codec != "adaptive") return hop_codecs(opt.codec, {});  // the inputs are not read
    const BoundaryCodecWork w = codec_work_of(a, b, "int8-block", "int8-block");
    return hop_codecs(opt.codec, hop_inputs(topo, job, opt, a, b, bw_f, bw_b, pc, w));
  }
  // Smallest bytes any allowed codec can send (for lower bounds).
  double min_bytes() const {
    if (opt.codec == "none") return bytes_none;
    if (opt.codec == "auto" || opt.codec == "adaptive") return boundary_bytes(job, "int8-block");
    return boundary_bytes(job, opt.codec);
  }
};

struct Eval {
  bool ok = false;          // all hops linked and usable
  bool bandwidth_ok = true;
  double iteration_s = kInf;
  double cost_usd = kInf;   // whole job
};

// The closed-form timing of the 1F1B family (or GPipe) that options.schedule asks for; "auto"
// deepens 1F1B's warm-up where latency stalls it.
PipelineTiming time_path(const Context& c, const std::vector<double>& t, const std::vector<double>& x,
                         const std::vector<double>& lat, ScheduleKind& kind) {
  const int M = c.job.micro_batches, slots = c.opt.cost.shared_compute_slots;
  kind = c.opt.schedule == "gpipe"     ? ScheduleKind::kGPipe
         : c.opt.schedule == "1f1b-lh" ? ScheduleKind::kOneFOneBLatencyHiding
                                       : ScheduleKind::kOneFOneB;
  PipelineTiming timing = pipeline_timing(t, x, lat, M, kind, slots);
  if (kind == ScheduleKind::kOneFOneB && c.opt.schedule == "auto" && timing.latency_stall) {
    kind = ScheduleKind::kOneFOneBLatencyHiding;
    timing = pipeline_timing(t, x, lat, M, kind, slots);
  }
  return timing;
}

// Each stage's gradient all-reduce among its replicas (none without replicas), hidden behind the
// stage's backward of one micro-batch except as allreduce_time says.
std::vector<AllReduceTime> stage_allreduce(const Context& c, const std::vector<int>& split,
                                           const std::vector<DeviceTimes>& dev) {
  const size_t S = split.size();
  if (c.replicas == 1) return std::vector<AllReduceTime>(S);
  std::vector<AllReduceTime> out;
  for (size_t k = 0; k < S; ++k) {
    const bool first = k == 0, last = k + 1 == S;
    const double params = chunk_parameters(c.job.model, split[k], first, last);
    const double backward = split[k] * dev[k].layer.backward_s + (first ? dev[k].embedding.backward_s : 0) +
                            (last ? dev[k].head.backward_s : 0);
    out.push_back(allreduce_time(params * kGradBytesPerParameter, backward, c.replicas, c.topo.intra_region));
  }
  return out;
}

// The boundaries of one pipeline on `path` against compute period `pc`: each hop's transfer time
// (larger direction) and latency, its codecs (recorded in `out`), the egress of one iteration,
// and the bandwidth check. ok is false when two consecutive regions have no usable link.
struct Hops {
  bool ok = false;
  bool bandwidth_ok = true;
  std::vector<double> x, lat;
  std::vector<double> codec_s;  // per stage: the codec work its hops add to one micro-batch
  double egress = 0;  // USD of one iteration of this pipeline
  double worst = 0;   // max over inter-region hops of transfer / compute period
};

Hops time_hops(const Context& c, const std::vector<int>& path, double pc, const std::vector<double>& hop_override,
               Placement* out) {
  Hops h;
  const size_t S = path.size();
  h.x.assign(S ? S - 1 : 0, 0.0);
  h.lat.assign(S ? S - 1 : 0, 0.0);
  h.codec_s.assign(S, 0.0);
  const LinkSpec& intra = c.topo.intra_region;
  for (size_t j = 0; j + 1 < S; ++j) {
    const int a = path[j], b = path[j + 1];
    double bw_f, bw_b;
    std::pair<std::string, std::string> codec{"none", "none"};
    if (!hop_override.empty()) {
      bw_f = bw_b = hop_override[j];
    } else if (a == b) {
      bw_f = bw_b = intra.bytes_per_s();
    } else {
      if (!c.linked(a, b)) return h;
      bw_f = c.bw(a, b);
      bw_b = c.bw(b, a);
    }
    if (bw_f <= 0 || bw_b <= 0) return h;
    if (a != b) {
      codec = c.codecs(a, b, bw_f, bw_b, pc);
      const BoundaryCodecWork w = c.codec_work_of(a, b, codec.first, codec.second);
      h.codec_s[j] += w.from_forward_s + w.from_backward_s;
      h.codec_s[j + 1] += w.to_forward_s + w.to_backward_s;
    }
    const double bytes_f = a == b ? c.bytes_none : boundary_bytes(c.job, codec.first);
    const double bytes_b = a == b ? c.bytes_none : boundary_bytes(c.job, codec.second);
    h.x[j] = std::max(bytes_f / bw_f, bytes_b / bw_b);
    h.lat[j] = (a == b ? intra.latency_ms : c.topo.link(a, b)->latency_ms) * 1e-3;
    h.egress += boundary_egress_usd(bytes_f, bytes_b, *c.topo.link(a, b), *c.topo.link(b, a), c.job.micro_batches);
    if (a != b) {
      h.worst = std::max(h.worst, h.x[j] / pc);
      if (h.x[j] > pc * (1 + kRelEps)) h.bandwidth_ok = false;
    }
    if (out) {
      out->codec_fwd.push_back(codec.first);
      out->codec_bwd.push_back(codec.second);
      out->hop_fwd_bytes.push_back(bytes_f);
      out->hop_bwd_bytes.push_back(bytes_b);
      out->hop_bps.push_back(std::min(bw_f, bw_b));
    }
  }
  h.ok = true;
  return h;
}

Eval evaluate(const Context& c, const std::vector<int>& path, const std::vector<double>& hop_override, Placement* out) {
  Eval e;
  const size_t S = path.size();
  std::vector<DeviceTimes> dev(S);
  for (size_t k = 0; k < S; ++k) dev[k] = c.dev[path[k]];
  std::vector<int> split = balance_layers(c.job.model.layers, dev);
  std::vector<double> t = stage_times(split, dev);
  const double pc = *std::max_element(t.begin(), t.end());
  Hops hops = time_hops(c, path, pc, hop_override, out);
  if (!hops.ok) return e;
  e.bandwidth_ok = hops.bandwidth_ok;
  const std::vector<double>& x = hops.x;
  const std::vector<double>& lat = hops.lat;
  // The codecs run on the stages' devices: their work lengthens those stages (the hops were
  // chosen against the compute period without it).
  for (size_t k = 0; k < S; ++k) t[k] += hops.codec_s[k];
  ScheduleKind kind;
  const PipelineTiming timing = time_path(c, t, x, lat, kind);
  std::vector<AllReduceTime> reduce = stage_allreduce(c, split, dev);
  double exposed = 0;
  for (const AllReduceTime& a : reduce) exposed = std::max(exposed, a.exposed_s);
  const double iteration = timing.iteration_s + exposed;
  std::vector<const Region*> regs(S);
  for (size_t k = 0; k < S; ++k) regs[k] = &c.topo.regions[path[k]];
  // Every replica computes the same: energy and egress are one pipeline's times the replicas.
  EnergyCost ec = iteration_energy(regs, t, iteration, c.job.micro_batches, c.opt.cost);
  ec.energy_j *= c.replicas;
  ec.cost_usd *= c.replicas;
  const double egress = hops.egress * c.replicas;
  e.ok = true;
  e.iteration_s = iteration;
  e.cost_usd = (ec.cost_usd + egress) * c.job.iterations;
  if (out) {
    out->region = path;
    out->layers = split;
    out->stage_s = t;
    out->hop_xfer_s = x;
    out->hop_latency_s = lat;
    out->kind = kind;
    out->timing = timing;
    out->replicas = c.replicas;
    for (const AllReduceTime& a : reduce) {
      out->allreduce_s.push_back(a.total_s);
      out->allreduce_exposed_s.push_back(a.exposed_s);
    }
    out->iteration_s = iteration;
    out->job_s = iteration * c.job.iterations;
    out->energy_kwh = joules_to_kwh(ec.energy_j) * c.job.iterations;
    out->electricity_usd = ec.cost_usd * c.job.iterations;
    out->egress_usd = egress * c.job.iterations;
    out->cost_usd = e.cost_usd;
    out->bandwidth_ok = e.bandwidth_ok;
    out->worst_hop_ratio = hops.worst;
  }
  return e;
}

Placement full(const Context& c, const std::vector<int>& path) {
  Placement p;
  evaluate(c, path, {}, &p);
  return p;
}

// ---- Pathfinder -----------------------------------------------------------------------------

enum class Goal { kMinTime, kMinCost };

// "a is better than b" under a goal; ties (within a relative epsilon) go to the other measure,
// except that a policy that ignores price (`price_ties` false) keeps the first path found.
bool better(Goal g, double ta, double ca, double tb, double cb, bool price_ties = true) {
  auto lt = [](double x, double y) { return x < y * (1 - kRelEps); };
  auto eq = [&](double x, double y) { return !lt(x, y) && !lt(y, x); };
  if (g == Goal::kMinTime) return lt(ta, tb) || (price_ties && eq(ta, tb) && lt(ca, cb));
  return lt(ca, cb) || (eq(ca, cb) && lt(ta, tb));
}

struct SearchOut {
  std::vector<int> best;
  double best_t = kInf, best_c = kInf;
  long nodes = 0;
};

// Depth-first branch and bound over region blocks: a path is a sequence of distinct regions,
// each taking a run of consecutive stages (at most its free GPUs). Children are tried cheapest
// (or fastest link) first with the largest block first; a partial path is cut when a hop cannot
// carry a micro-batch within the slowest possible compute period (bandwidth check), or when a
// lower bound on its iteration time / cost cannot beat the incumbent or the time cap.
class Pathfinder {
 public:
  Pathfinder(const Context& c, int S, Goal goal, double time_cap) : c_(c), S_(S), goal_(goal), cap_(time_cap) {
    const int L = c.job.model.layers;
    // Per kind of work, the slowest and the fastest free device (totals only: bounds need no split).
    double slow_layer = 0, slow_embed = 0, slow_head = 0, fast_layer = kInf, fast_embed = kInf, fast_head = kInf;
    min_rate_ = kInf;
    for (int r = 0; r < c.R; ++r) {
      if (c.state.free_gpus[r] <= 0) continue;
      slow_layer = std::max(slow_layer, c.dev[r].layer.total());
      slow_embed = std::max(slow_embed, c.dev[r].embedding.total());
      slow_head = std::max(slow_head, c.dev[r].head.total());
      fast_layer = std::min(fast_layer, c.dev[r].layer.total());
      fast_embed = std::min(fast_embed, c.dev[r].embedding.total());
      fast_head = std::min(fast_head, c.dev[r].head.total());
      min_rate_ = std::min(min_rate_, c.rate[r]);
    }
    DeviceTimes slow;
    slow.layer.forward_s = slow_layer;
    slow.embedding.forward_s = slow_embed;
    slow.head.forward_s = slow_head;
    std::vector<DeviceTimes> all_slow(S, slow);
    auto ts = stage_times(balance_layers(L, all_slow), all_slow);
    pc_ub_ = *std::max_element(ts.begin(), ts.end());
    f_lb_ = L * fast_layer + fast_embed + fast_head;
    min_bytes_ = c.min_bytes();
    used_.assign(c.R, 0);
  }

  // `seed`: a path known to satisfy the goal's constraints (the incumbent to beat), or empty.
  SearchOut run(long budget, const std::vector<int>& seed = {}) {
    budget_ = budget;
    path_.clear();
    if (!seed.empty()) {
      path_ = seed;
      leaf();
      path_.clear();
    }
    dfs(-1, 0.0, 0.0, 0.0, 0.0);
    return out_;
  }

 private:
  double time_lb(double max_x, double hop_fill) const {
    const int M = c_.job.micro_batches;
    return (M - 1) * std::max(f_lb_ / S_, max_x) + f_lb_ + hop_fill;
  }
  // `egress`: a lower bound on the egress (USD per iteration) of the hops placed so far.
  double cost_lb(double t_lb, double rate_sum, int remaining, double egress) const {
    const double idle = c_.opt.cost.idle_power_fraction;
    const int M = c_.job.micro_batches;
    // Every replica's GPUs and pipeline pay the same.
    return c_.job.iterations * c_.replicas *
           (idle * t_lb * (rate_sum + remaining * min_rate_) + (1 - idle) * M * min_rate_ * f_lb_ + egress);
  }
  // The least egress (USD per iteration) a block of n stages in region r adds after `last`: the hop
  // into it at the fewest bytes any allowed codec sends, and its n - 1 uncompressed hops inside r.
  double block_egress_lb(int last, int r, int n) const {
    const int M = c_.job.micro_batches;
    const LinkSpec& intra = c_.topo.intra_region;
    double usd = (n - 1) * boundary_egress_usd(c_.bytes_none, c_.bytes_none, intra, intra, M);
    if (last >= 0) usd += boundary_egress_usd(min_bytes_, min_bytes_, *c_.topo.link(last, r), *c_.topo.link(r, last), M);
    return usd;
  }

  void dfs(int last, double max_x, double hop_fill, double rate_sum, double egress) {
    if (++out_.nodes > budget_ && (!out_.best.empty() || out_.nodes > 2 * budget_)) return;
    const int placed = static_cast<int>(path_.size());
    if (placed == S_) {
      leaf();
      return;
    }
    // Stages still to place need at least one more hop out of `last`'s block.
    double next_hop = 0;
    if (last >= 0) {
      next_hop = kInf;
      for (int r = 0; r < c_.R; ++r) {
        if (used_[r] || c_.state.free_gpus[r] <= 0 || !c_.linked(last, r)) continue;
        const double bw = std::min(c_.bw(last, r), c_.bw(r, last));
        if (bw > 0) next_hop = std::min(next_hop, 2.0 * (min_bytes_ / bw + c_.topo.link(last, r)->latency_ms * 1e-3));
      }
      if (next_hop == kInf) return;  // dead end: nowhere left to go
    }
    const double tlb = time_lb(max_x, hop_fill + next_hop);
    if (tlb > cap_ * (1 + kRelEps)) return;
    if (goal_ == Goal::kMinTime && !out_.best.empty() && tlb >= out_.best_t * (1 - kRelEps)) return;
    if (goal_ == Goal::kMinCost && !out_.best.empty() &&
        cost_lb(tlb, rate_sum, S_ - placed, egress) >= out_.best_c * (1 - kRelEps))
      return;

    struct Child {
      int region;
      double x, lat, key1, key2;
    };
    std::vector<Child> kids;
    for (int r = 0; r < c_.R; ++r) {
      if (used_[r] || c_.state.free_gpus[r] <= 0) continue;
      double x = 0, lat = 0;
      if (last >= 0) {
        if (!c_.linked(last, r)) continue;
        const double bw = std::min(c_.bw(last, r), c_.bw(r, last));
        if (bw <= 0) continue;
        x = min_bytes_ / bw;
        lat = c_.topo.link(last, r)->latency_ms * 1e-3;
        if (c_.opt.bandwidth_check && x > pc_ub_ * (1 + kRelEps)) continue;
      }
      const double speed = 1.0 / std::max(c_.dev[r].layer.total(), 1e-300);
      Child k{r, x, lat, 0, 0};
      if (goal_ == Goal::kMinCost) {
        k.key1 = c_.rate[r];
        k.key2 = x + lat;
      } else {
        k.key1 = x + lat;
        k.key2 = -speed;
      }
      kids.push_back(k);
    }
    std::stable_sort(kids.begin(), kids.end(), [](const Child& a, const Child& b) {
      return a.key1 < b.key1 || (a.key1 == b.key1 && a.key2 < b.key2);
    });
    for (const Child& k : kids) {
      const int most = std::min(c_.state.free_gpus[k.region], S_ - placed);
      used_[k.region] = 1;
      // Block sizes tried: the largest (fill a cheap or fast region), one less, and a single GPU
      // (a region used as a bridge). Other sizes are pruned (docs/SCHEDULER.md).
      int sizes[3] = {most, most - 1, 1};
      for (int si = 0; si < 3; ++si) {
        const int n = sizes[si];
        if (n < 1 || (si > 0 && n >= sizes[si - 1]) || (si == 2 && n == sizes[0])) continue;
        for (int i = 0; i < n; ++i) path_.push_back(k.region);
        const double intra_fill = (n - 1) * 2.0 * c_.topo.intra_region.latency_ms * 1e-3;
        dfs(k.region, std::max(max_x, k.x), hop_fill + (last >= 0 ? 2.0 * (k.x + k.lat) : 0.0) + intra_fill,
            rate_sum + n * c_.rate[k.region], egress + block_egress_lb(last, k.region, n));
        path_.resize(placed);
        if (stop()) break;
      }
      used_[k.region] = 0;
      if (stop()) return;
    }
  }

  // Out of budget: stop once a path is known (or, with none, after twice the budget).
  bool stop() const { return out_.nodes > budget_ && (!out_.best.empty() || out_.nodes > 2 * budget_); }

  void leaf() {
    Eval e = evaluate(c_, path_, {}, nullptr);
    if (!e.ok) return;
    if (c_.opt.bandwidth_check && !e.bandwidth_ok) return;
    if (e.iteration_s > cap_ * (1 + kRelEps)) return;
    if (out_.best.empty() || better(goal_, e.iteration_s, e.cost_usd, out_.best_t, out_.best_c, c_.opt.price_term)) {
      out_.best = path_;
      out_.best_t = e.iteration_s;
      out_.best_c = e.cost_usd;
    }
  }

  const Context& c_;
  int S_;
  Goal goal_;
  double cap_;
  double pc_ub_ = 0, f_lb_ = 0, min_bytes_ = 0, min_rate_ = 0;
  long budget_ = 0;
  std::vector<int> path_;
  std::vector<char> used_;
  SearchOut out_;
};

// Stage counts to try with `replicas`: the job's range (or --stages), within its "gpus" bounds
// (S x R in [min_gpus, max_gpus]); a wide range is sampled (min, max and the powers of two
// between) unless `every`.
std::vector<int> stage_counts(const JobSpec& job, const PlannerOptions& opt, int replicas, bool every = false) {
  int lo = job.min_stages, hi = job.max_stages;
  if (opt.fixed_stages > 0) lo = hi = opt.fixed_stages;
  if (job.chooses_replicas()) {
    lo = std::max(lo, (job.min_gpus + replicas - 1) / replicas);
    hi = std::min(hi, job.max_gpus / replicas);
  }
  std::vector<int> out;
  if (every || hi - lo < 8) {
    for (int s = lo; s <= hi; ++s) out.push_back(s);
    return out;
  }
  out.push_back(lo);
  for (int p = 1; p < hi; p *= 2)
    if (p > lo) out.push_back(p);
  out.push_back(hi);
  return out;
}

// A job with "gpus" bounds whose --stages / --replicas (or stage range) leave no S x R inside
// them: an input contradiction whatever the cluster (InputError naming the flag that fixed it).
void check_bounds_reachable(const JobSpec& job, const PlannerOptions& opt) {
  if (!job.chooses_replicas()) return;
  const std::vector<int> rs = replica_counts(job, opt);
  for (int R : rs)
    if (!stage_counts(job, opt, R).empty()) return;
  const int lo = opt.fixed_stages > 0 ? opt.fixed_stages : job.min_stages;
  const int hi = opt.fixed_stages > 0 ? opt.fixed_stages : job.max_stages;
  std::string replicas;
  for (int R : rs) replicas += (replicas.empty() ? "" : ", ") + std::to_string(R);
  const char* flag = opt.fixed_replicas > 0 ? "--replicas" : opt.fixed_stages > 0 ? "--stages" : "gpus";
  throw InputError(flag, "",
                   "job \"" + job.name + "\": no stages x replicas within its \"gpus\" bounds [" +
                       std::to_string(job.min_gpus) + ", " + std::to_string(job.max_gpus) + "]: stages " +
                       (lo == hi ? std::to_string(lo) : std::to_string(lo) + ".." + std::to_string(hi)) +
                       " x replicas " + (rs.empty() ? "(none divides the micro-batches)" : replicas));
}

// One replica count the search tries: the job as its replicas run it, the regions' free GPUs as
// stage slots (a stage takes `replicas` GPUs of one region), and the stage counts to try.
struct Variant {
  JobSpec job;
  ClusterState slots;
  std::vector<int> counts;
};

std::vector<Variant> variants(const JobSpec& job, const ClusterState& state, const PlannerOptions& opt,
                              bool every_count = false) {
  std::vector<Variant> out;
  for (int R : replica_counts(job, opt)) {
    Variant v{replica_job(job, R), state, stage_counts(job, opt, R, every_count)};
    if (v.counts.empty()) continue;
    for (int& free : v.slots.free_gpus) free /= R;
    out.push_back(std::move(v));
  }
  return out;
}

// One search context per variant (each refers to its variant, which must outlive it).
// The options with price ignored: the fastest placement's codecs are chosen for time alone.
PlannerOptions time_only(PlannerOptions opt) {
  opt.price_term = false;
  return opt;
}

std::vector<Context> contexts(const Topology& topology, const std::vector<Variant>& vs, const PlannerOptions& opt) {
  std::vector<Context> cs;
  cs.reserve(vs.size());
  for (const Variant& v : vs) cs.emplace_back(topology, v.job, v.slots, opt);
  return cs;
}

// A path found for one variant.
struct Pick {
  size_t variant = 0;
  std::vector<int> path;
  double t = kInf, c = kInf;
};

std::string region_list(const Topology& t, const std::vector<int>& path) {
  std::ostringstream s;
  for (size_t k = 0; k < path.size(); ++k) {
    if (k == 0 || path[k] != path[k - 1]) s << (k ? " -> " : "") << t.regions[path[k]].name;
    size_t n = 1;
    while (k + 1 < path.size() && path[k + 1] == path[k]) ++k, ++n;
    s << " x" << n;
  }
  return s.str();
}

std::string fmt(double v) {
  std::ostringstream s;
  s.precision(4);
  s << v;
  return s.str();
}

// Says why nothing was placed: GPUs, links, or bandwidth (with the best path without the check).
std::string explain(const Context& c, const std::vector<int>& counts, const PlannerOptions& opt, long* nodes) {
  const int free = c.state.total_free();
  if (free < counts.front() && c.replicas == 1)
    return "too few GPUs: job \"" + c.job.name + "\" needs at least " + std::to_string(counts.front()) +
           " (one per stage), " + std::to_string(free) + " free";
  if (free < counts.front())
    return "too few GPUs: job \"" + c.job.name + "\" needs at least " + std::to_string(counts.front()) + " stages of " +
           std::to_string(c.replicas) + " replicas (" + std::to_string(counts.front() * c.replicas) +
           " GPUs), each stage's replicas in one region; the free GPUs hold " + std::to_string(free) +
           (free == 1 ? " such stage" : " such stages");
  PlannerOptions relaxed = opt;
  relaxed.bandwidth_check = false;
  Context rc(c.topo, c.job, c.state, relaxed);
  SearchOut best;
  for (int S : counts) {
    if (S > free) continue;
    SearchOut o = Pathfinder(rc, S, Goal::kMinTime, kInf).run(opt.node_budget);
    *nodes += o.nodes;
    if (!o.best.empty() && (best.best.empty() || o.best_t < best.best_t)) best = o;
  }
  if (best.best.empty()) return "no path: the regions with free GPUs are not linked to each other";
  Placement p = full(rc, best.best);
  std::string s = "no path meets the bandwidth constraint (every inter-region hop must carry a micro-batch within the "
                  "slowest stage's compute time";
  const bool auto_codec = opt.codec == "auto" || opt.codec == "adaptive";
  s += opt.codec == "none" ? ", without compression"
                           : ", compressing with " + (auto_codec ? std::string("int8-block") : opt.codec);
  s += "); best without it: " + region_list(c.topo, p.region) + ", a hop takes " + fmt(p.worst_hop_ratio) +
       "x the compute period (" + fmt(p.timing.compute_period_s) + " s), iteration " + fmt(p.iteration_s) + " s";
  return s;
}

// BACE's allocator over every (replicas, stages) the job allows: pass 1 the fastest feasible
// path, its hops' codecs chosen for time alone (`fast_cs`: options without the price term, so
// the bound does not compound with the codec choice's own), pass 2 the cheapest within
// max_slowdown of it (ties by time). Without the price term the fastest wins (delay-first,
// bace-no-price; then `fast_cs` and `cs` are alike).
PlanResult bace_like(const std::vector<Context>& fast_cs, const std::vector<Context>& cs, const std::vector<Variant>& vs,
                     bool price_term) {
  PlanResult res;
  Pick fastest;
  std::vector<std::vector<std::vector<int>>> fastest_of(vs.size());
  for (size_t v = 0; v < vs.size(); ++v) {
    fastest_of[v].resize(vs[v].counts.size());
    for (size_t i = 0; i < vs[v].counts.size(); ++i) {
      if (vs[v].counts[i] > vs[v].slots.total_free()) continue;
      SearchOut o = Pathfinder(fast_cs[v], vs[v].counts[i], Goal::kMinTime, kInf).run(cs[v].opt.node_budget);
      res.nodes += o.nodes;
      fastest_of[v][i] = o.best;
      if (!o.best.empty() &&
          (fastest.path.empty() || better(Goal::kMinTime, o.best_t, o.best_c, fastest.t, fastest.c, price_term)))
        fastest = {v, o.best, o.best_t, o.best_c};
    }
  }
  if (fastest.path.empty()) return res;
  if (!price_term) {
    res.placement = full(fast_cs[fastest.variant], fastest.path);
    return res;
  }
  const double cap = fastest.t * (1 + cs.front().opt.max_slowdown);
  // The incumbent: the fastest path with its codecs chosen as pass 2 chooses them (within the cap).
  Pick best = fastest;
  const Eval seed = evaluate(cs[fastest.variant], fastest.path, {}, nullptr);
  if (seed.ok && seed.iteration_s <= cap) best.t = seed.iteration_s, best.c = seed.cost_usd;
  for (size_t v = 0; v < vs.size(); ++v)
    for (size_t i = 0; i < vs[v].counts.size(); ++i) {
      if (vs[v].counts[i] > vs[v].slots.total_free()) continue;
      // The fastest path of this stage count, when within the cap, is the incumbent to beat.
      SearchOut o =
          Pathfinder(cs[v], vs[v].counts[i], Goal::kMinCost, cap).run(cs[v].opt.node_budget, fastest_of[v][i]);
      res.nodes += o.nodes;
      if (!o.best.empty() && better(Goal::kMinCost, o.best_t, o.best_c, best.t, best.c))
        best = {v, o.best, o.best_t, o.best_c};
    }
  res.placement = full(cs[best.variant], best.path);
  return res;
}

// The cheapest path on the state over every (replicas, stages), ties by time.
PlanResult cheapest(const std::vector<Context>& cs, const std::vector<Variant>& vs) {
  PlanResult res;
  Pick best;
  for (size_t v = 0; v < vs.size(); ++v)
    for (int S : vs[v].counts) {
      if (S > vs[v].slots.total_free()) continue;
      SearchOut so = Pathfinder(cs[v], S, Goal::kMinCost, kInf).run(cs[v].opt.node_budget);
      res.nodes += so.nodes;
      if (!so.best.empty() && (best.path.empty() || better(Goal::kMinCost, so.best_t, so.best_c, best.t, best.c)))
        best = {v, so.best, so.best_t, so.best_c};
    }
  if (!best.path.empty()) res.placement = full(cs[best.variant], best.path);
  return res;
}

// FIFO's first fit: the fewest replicas that fit (a plain pipeline where one fits), and with
// them the most stages, regions in file order, free GPUs taken in turn.
PlanResult first_fit(const std::vector<Context>& cs, const std::vector<Variant>& vs) {
  PlanResult res;
  for (size_t v = 0; v < vs.size(); ++v) {
    const Context& c = cs[v];
    for (auto it = vs[v].counts.rbegin(); it != vs[v].counts.rend(); ++it) {
      const int S = *it;
      std::vector<int> path;
      for (int r = 0; r < c.R && static_cast<int>(path.size()) < S; ++r)
        for (int g = 0; g < c.state.free_gpus[r] && static_cast<int>(path.size()) < S; ++g) path.push_back(r);
      if (static_cast<int>(path.size()) < S) continue;
      Placement p;
      if (evaluate(c, path, {}, &p).ok) {
        res.placement = std::move(p);
        return res;
      }
    }
  }
  return res;
}

// Why nothing was placed, worded for the variant that explains it best: one whose slots hold its
// fewest stages (so links or bandwidth failed), else the first (too few GPUs).
std::string explain_all(const std::vector<Context>& cs, const std::vector<Variant>& vs, const JobSpec& job,
                        const PlannerOptions& opt, long* nodes) {
  if (vs.empty())
    return "no stage count of job \"" + job.name + "\" fits its \"gpus\" bounds [" + std::to_string(job.min_gpus) +
           ", " + std::to_string(job.max_gpus) + "] with the replicas asked for";
  size_t v = 0;
  for (size_t k = 0; k < vs.size(); ++k)
    if (vs[k].slots.total_free() >= vs[k].counts.front()) {
      v = k;
      break;
    }
  return explain(cs[v], vs[v].counts, opt, nodes);
}

}  // namespace

std::optional<Placement> evaluate_path(const Topology& topology, const JobSpec& job, const std::vector<int>& regions,
                                       const ClusterState& state, const PlannerOptions& options,
                                       const std::vector<double>& hop_bps) {
  if (regions.empty()) return std::nullopt;
  Context c(topology, job, state, options);
  Placement p;
  if (!evaluate(c, regions, hop_bps, &p).ok) return std::nullopt;
  return p;
}

namespace {

// What a policy changes in the options: the checks it skips and whether it weighs price.
PlannerOptions policy_options(Policy policy, PlannerOptions o) {
  switch (policy) {
    case Policy::kBace:
    case Policy::kBaceNoPriority:
      break;
    case Policy::kBaceNoPrice: o.price_term = false; break;
    case Policy::kBaceNoBandwidth: o.bandwidth_check = false, o.use_residual = false; break;
    case Policy::kDelayFirst: o.bandwidth_check = false, o.use_residual = false, o.price_term = false; break;
    case Policy::kCostFirst:
    case Policy::kFifo: o.bandwidth_check = false, o.use_residual = false; break;
    case Policy::kExact: break;
  }
  return o;
}

}  // namespace

PlanResult place_job(Policy policy, const Topology& topology, const JobSpec& job, const ClusterState& state,
                     const PlannerOptions& options) {
  if (policy == Policy::kExact) return exact_placement(topology, job, state, options);
  const PlannerOptions o = policy_options(policy, options);
  const std::vector<Variant> vs = variants(job, state, o);
  const std::vector<Context> cs = contexts(topology, vs, o);
  const PlannerOptions fast_o = time_only(o);  // outlives the contexts that refer to it
  PlanResult res;
  if (!vs.empty()) {
    if (policy == Policy::kFifo)
      res = first_fit(cs, vs);
    else if (policy == Policy::kDelayFirst)
      res = bace_like(cs, cs, vs, /*price_term=*/false);
    else if (policy == Policy::kCostFirst)
      res = cheapest(cs, vs);
    else
      res = bace_like(contexts(topology, vs, fast_o), cs, vs, o.price_term);
  }
  if (!res.placement) res.why = explain_all(cs, vs, job, o, &res.nodes);
  return res;
}

PlanResult exact_placement(const Topology& topology, const JobSpec& job, const ClusterState& state,
                           const PlannerOptions& options) {
  const std::vector<Variant> vs = variants(job, state, options, /*every_count=*/true);
  int most = 0;
  for (const Variant& v : vs) most = std::max(most, v.counts.back());
  if (topology.num_regions() > kExactMaxRegions || most > kExactMaxStages)
    throw InputError(topology.source, "", "the exact solver handles at most " + std::to_string(kExactMaxRegions) +
                                              " regions and " + std::to_string(kExactMaxStages) + " stages (got " +
                                              std::to_string(topology.num_regions()) + " regions, up to " +
                                              std::to_string(most) + " stages)");
  const std::vector<Context> cs = contexts(topology, vs, options);
  const PlannerOptions fast_o = time_only(options);  // as bace_like: the fastest with time-only codecs
  const std::vector<Context> fast_cs = contexts(topology, vs, fast_o);
  PlanResult res;
  if (vs.empty()) {
    res.why = explain_all(cs, vs, job, options, &res.nodes);
    return res;
  }
  const int R = topology.num_regions();
  // Feasible assignments, the path packed as base-R digits (R <= 6, S <= 8: fits easily).
  struct Leaf {
    size_t variant;
    uint64_t code;
    int stages;
    double t, cost;
    double fastest_t;  // with time-only codecs (kInf when that evaluation is infeasible)
  };
  auto encode = [&](const std::vector<int>& p) {
    uint64_t code = 0;
    for (int r : p) code = code * static_cast<uint64_t>(R) + static_cast<uint64_t>(r);
    return code;
  };
  auto decode = [&](const Leaf& l) {
    std::vector<int> p(l.stages);
    uint64_t code = l.code;
    for (int k = l.stages - 1; k >= 0; --k) p[k] = static_cast<int>(code % R), code /= R;
    return p;
  };
  std::vector<Leaf> leaves;
  std::vector<int> path, used(R, 0);
  size_t v = 0;
  std::function<void(int)> rec = [&](int S) {
    const Context& c = cs[v];
    ++res.nodes;
    if (static_cast<int>(path.size()) == S) {
      Eval e = evaluate(c, path, {}, nullptr);
      if (e.ok && (!options.bandwidth_check || e.bandwidth_ok)) {
        const Eval f = options.price_term ? evaluate(fast_cs[v], path, {}, nullptr) : e;
        const bool f_ok = f.ok && (!options.bandwidth_check || f.bandwidth_ok);
        leaves.push_back({v, encode(path), S, e.iteration_s, e.cost_usd, f_ok ? f.iteration_s : kInf});
      }
      return;
    }
    for (int r = 0; r < R; ++r) {
      if (used[r] >= c.state.free_gpus[r]) continue;
      if (!path.empty() && !c.linked(path.back(), r)) continue;
      ++used[r];
      path.push_back(r);
      rec(S);
      path.pop_back();
      --used[r];
    }
  };
  for (v = 0; v < vs.size(); ++v)
    for (int S : vs[v].counts) rec(S);
  if (leaves.empty()) {
    res.why = explain_all(cs, vs, job, options, &res.nodes);
    return res;
  }
  double t_fast = kInf;
  for (const auto& l : leaves) t_fast = std::min(t_fast, l.fastest_t);
  const Leaf* best = nullptr;
  for (const auto& l : leaves) {
    if (l.t > t_fast * (1 + options.max_slowdown) * (1 + kRelEps)) continue;
    if (!options.price_term) {
      if (!best || better(Goal::kMinTime, l.t, l.cost, best->t, best->cost, false)) best = &l;
    } else if (!best || better(Goal::kMinCost, l.t, l.cost, best->t, best->cost)) {
      best = &l;
    }
  }
  if (!best) {  // every leaf's codecs for price cost more than the bound: the fastest as it is
    for (const auto& l : leaves)
      if (!best || l.fastest_t < best->fastest_t) best = &l;
    res.placement = full(fast_cs[best->variant], decode(*best));
    return res;
  }
  res.placement = full(cs[best->variant], decode(*best));
  return res;
}

namespace {

// A per-rank prediction from one value per pipeline position: replica r of position p is rank
// p * replicas + r, and every replica of a position holds the same chunks.
template <typename T>
std::vector<T> per_rank(const std::vector<T>& per_position, int replicas) {
  std::vector<T> out;
  for (const T& v : per_position) out.insert(out.end(), static_cast<size_t>(replicas), v);
  return out;
}

// Stage chunks in model order. Ranks are grouped by pipeline position (replica r of position p
// is rank p * R + r), so launch, which fills a region's hosts in rank order, keeps a stage's
// replicas together, and a rank holds the same replica of every chunk at its position.
void add_stages(Plan& plan, const Topology& topology, const Placement& p, const ScheduleOption& o, int replicas) {
  int begin = 0;
  for (size_t c = 0; c < o.chunk_rank.size(); ++c) {
    StagePlan s;
    s.index = static_cast<int>(c);
    s.region = topology.regions[p.region[o.chunk_rank[c]]].name;
    for (int r = 0; r < replicas; ++r) s.ranks.push_back(o.chunk_rank[c] * replicas + r);
    s.layer_begin = begin;
    s.layer_end = begin + o.chunk_layers[c];
    begin = s.layer_end;
    plan.stages.push_back(s);
  }
}

void add_links(Plan& plan, const Topology& topology, const Placement& p, const ScheduleOption& o, int replicas) {
  const int N = static_cast<int>(o.chunk_rank.size()), M = plan.job.micro_batches;
  for (int c = 0; c + 1 < N; ++c) {
    LinkPlan l;
    l.from_stage = c;
    l.to_stage = c + 1;
    l.from_region = plan.stages[c].region;
    l.to_region = plan.stages[c + 1].region;
    l.codec_forward = o.codec_fwd[c];
    l.codec_backward = o.codec_bwd[c];
    const int region = p.region[o.chunk_rank[c]];
    const bool same = region == p.region[o.chunk_rank[c + 1]];
    l.transport = link_transport(topology, region, p.region[o.chunk_rank[c + 1]]);
    l.adaptive = o.adaptive[c];
    plan.links.push_back(l);
    // Share of the boundary's bandwidth the job uses over the iteration. Every replica's
    // pipeline sends over the one link between two regions; inside a region each replica pair
    // has a path of its own.
    const int pipelines = same ? 1 : replicas;
    const double demand = pipelines * M * std::max(o.fwd_bytes[c], o.bwd_bytes[c]) / o.timing.iteration_s;
    plan.predicted.link_utilisation.push_back(o.boundary_bps[c] > 0 ? demand / o.boundary_bps[c] : 0.0);
  }
}

// Egress (USD) of one iteration of one pipeline: every boundary between chunks on different ranks,
// at the prices of the links (or of intra_region) between their regions. Chunks on one rank send
// nothing.
double pipeline_egress_usd(const Topology& topology, const Placement& p, const ScheduleOption& o, int micro_batches) {
  double usd = 0;
  for (size_t c = 0; c + 1 < o.chunk_rank.size(); ++c) {
    if (o.chunk_rank[c] == o.chunk_rank[c + 1]) continue;
    const int a = p.region[o.chunk_rank[c]], b = p.region[o.chunk_rank[c + 1]];
    usd += boundary_egress_usd(o.fwd_bytes[c], o.bwd_bytes[c], *topology.link(a, b), *topology.link(b, a),
                               micro_batches);
  }
  return usd;
}

void add_predictions(Plan& plan, const Topology& topology, const Placement& p, const ScheduleOption& o,
                     const CostParams& cost, int replicas) {
  const int M = plan.job.micro_batches;
  // The replayed iteration holds the replicas' sharing of the inter-region links and the largest
  // exposed all-reduce (schedule_options); energy counts every GPU: each replica computes its own
  // M micro-batches within the same iteration.
  const double iteration = o.timing.iteration_s;
  std::vector<const Region*> regs;
  std::vector<double> per_mb;
  for (int r = 0; r < p.stages(); ++r)
    for (int k = 0; k < replicas; ++k) {
      regs.push_back(&topology.regions[p.region[r]]);
      per_mb.push_back(o.timing.rank_compute_s[r] / M);
    }
  EnergyCost ec = iteration_energy(regs, per_mb, iteration, M, cost);
  plan.predicted.iteration_s = iteration;
  plan.predicted.jct_s = iteration * plan.job.iterations;
  plan.predicted.energy_kwh = joules_to_kwh(ec.energy_j) * plan.job.iterations;
  plan.predicted.electricity_usd = ec.cost_usd * plan.job.iterations;
  // Every replica's pipeline sends its own activations and gradients, over a shared link between
  // regions or a path of its own inside one: egress counts each of them.
  plan.predicted.egress_usd = pipeline_egress_usd(topology, p, o, M) * plan.job.iterations * replicas;
  plan.predicted.cost_usd = plan.predicted.electricity_usd + plan.predicted.egress_usd;
  plan.predicted.stage_compute_s = o.chunk_s;
  plan.predicted.peak_activations = per_rank(o.timing.peak_activations, replicas);
  std::vector<double> memory;
  for (const MemoryEstimate& m : o.memory) memory.push_back(m.total());
  plan.predicted.memory_bytes = per_rank(memory, replicas);
  plan.predicted.allreduce_s = per_rank(o.allreduce_s, replicas);
  plan.predicted.allreduce_exposed_s = per_rank(o.allreduce_exposed_s, replicas);
}

// `job`: as its replicas run it (replica_job); `spec_hash`: the hash of the job file as given.
Plan make_plan(const Topology& topology, const JobSpec& job, const Placement& p, const ScheduleOption& o,
               const std::string& policy, const CostParams& cost, const std::string& spec_hash) {
  Plan plan;
  plan.job = job;
  add_stages(plan, topology, p, o, job.replicas);
  add_links(plan, topology, p, o, job.replicas);
  plan.schedule.kind = o.kind;
  plan.schedule.virtual_stages = o.virtual_stages;
  plan.schedule.warmup = o.warmup;  // the 1F1B kinds' depths; empty for the others
  plan.schedule.recompute = o.recompute;
  add_predictions(plan, topology, p, o, cost, job.replicas);
  plan.provenance.policy = policy;
  plan.provenance.topology_name = topology.name;
  plan.provenance.topology_hash = topology.hash();
  plan.provenance.job_hash = spec_hash;
  plan.provenance.generator = std::string("geopipe ") + GEOPIPE_VERSION;
  return plan;
}

// A job with a fixed R > 1 replicas: InfeasibleError when no region set holds its fewest stages
// with R GPUs of one region each, naming every region with its GPUs (and the stages it holds).
void check_replica_room(const Topology& topology, const JobSpec& job, const PlannerOptions& options,
                        const std::string& refusal) {
  const int R = job.replicas;
  if (R == 1 || job.chooses_replicas()) return;  // one GPU a stage, or bounds: explain() words the shortage
  const int fewest = options.fixed_stages > 0 ? options.fixed_stages : job.min_stages;
  int slots = 0;
  for (const Region& region : topology.regions) slots += region.gpus / R;
  if (slots >= fewest) return;
  std::string regions;
  for (size_t i = 0; i < topology.regions.size(); ++i) {
    const Region& region = topology.regions[i];
    const int held = region.gpus / R;
    regions += (i ? ", " : "") + region.name + " has " + std::to_string(region.gpus) + " GPU" +
               (region.gpus == 1 ? "" : "s") + " (" + std::to_string(held) + " stage" + (held == 1 ? "" : "s") + ")";
  }
  throw InfeasibleError(refusal + "too few GPUs for " + std::to_string(R) + " replicas: each stage needs " +
                        std::to_string(R) + " GPUs in one region and the job at least " + std::to_string(fewest) +
                        (fewest == 1 ? " stage (" : " stages (") + std::to_string(fewest * R) +
                        " GPUs); " + regions);
}

// The plan of the placement's fastest fitting schedule, without recomputation and then with it
// (as options.recompute allows); nullopt with `why` the last refusal when nothing fits.
std::optional<Plan> fit_on(Policy policy, const Topology& topology, const JobSpec& spec, const Placement& placement,
                           const PlannerOptions& options, std::vector<ScheduleOption>* considered, std::string& why) {
  const JobSpec job = replica_job(spec, placement.replicas);
  std::vector<bool> modes = {options.recompute == "full"};
  if (options.recompute == "auto") modes.push_back(true);
  for (bool recompute : modes) {
    PlannerOptions o = options;
    o.recompute = recompute ? "full" : "none";
    // The replay chooses codecs as the policy's search did (price-blind policies for time alone).
    std::vector<ScheduleOption> all = schedule_options(topology, job, placement, policy_options(policy, o));
    try {
      const ScheduleOption& chosen = pick_schedule(all, options.schedule);
      Plan plan = make_plan(topology, job, placement, chosen, policy_name(policy), options.cost, spec.hash());
      if (considered) *considered = std::move(all);
      return plan;
    } catch (const InfeasibleError& e) {
      why = e.what();
    }
  }
  return std::nullopt;
}

}  // namespace

Plan plan_job(Policy policy, const Topology& topology, const JobSpec& job, const PlannerOptions& options,
              std::vector<ScheduleOption>* considered) {
  if (options.fixed_stages > 0 && options.fixed_stages > job.model.layers)
    throw InputError("--stages", "", "asked for " + std::to_string(options.fixed_stages) + " stages but job \"" +
                                         job.name + "\" has " + std::to_string(job.model.layers) + " layers");
  if (options.profile) check_profile_matches(*options.profile, job);
  check_bounds_reachable(job, options);
  const std::string refusal =
      "cannot place job \"" + job.name + "\" on " + topology.name + " (policy " + policy_name(policy) + "): ";
  check_replica_room(topology, job, options, refusal);
  const ClusterState state = ClusterState::empty(topology);
  PlanResult r = place_job(policy, topology, job, state, options);
  if (!r.placement) throw InfeasibleError(refusal + r.why);
  std::string why;
  if (auto plan = fit_on(policy, topology, job, *r.placement, options, considered, why)) return *plan;
  // The search does not model memory: more stages spread the parameters and the activations.
  const int first = r.placement->stages();
  const int most = options.fixed_stages > 0 ? first : std::min(job.max_stages, job.model.layers);
  for (int S = first + 1; S <= most; ++S) {
    PlannerOptions more = options;
    more.fixed_stages = S;
    PlanResult wider = place_job(policy, topology, job, state, more);
    if (!wider.placement) continue;
    std::string why_here;
    if (auto plan = fit_on(policy, topology, job, *wider.placement, options, considered, why_here)) return *plan;
    why = why_here + " (with " + std::to_string(S) + " stages)";
  }
  throw InfeasibleError(refusal + why);
}

}  // namespace geopipe::scheduler
