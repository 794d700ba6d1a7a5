#include <geopipe/core/error.h>
#include <geopipe/scheduler/simulator.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace geopipe::scheduler {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
// Completions ahead that BACE plans a waiting job on when weighing a wait (worth_waiting).
constexpr int kLookahead = 3;
}

std::vector<double> fair_shares(const std::vector<double>& demands, double capacity) {
  std::vector<double> share(demands.size(), 0.0);
  std::vector<size_t> order(demands.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return demands[a] < demands[b]; });
  double left = capacity;
  size_t n = order.size();
  for (size_t k = 0; k < order.size(); ++k, --n) {
    const double equal = left / static_cast<double>(n);
    const double give = std::min(demands[order[k]], equal);
    share[order[k]] = give;
    left -= give;
  }
  return share;
}

namespace {

std::string describe_regions(const Topology& t, const std::vector<int>& path) {
  std::ostringstream s;
  for (size_t k = 0; k < path.size();) {
    size_t n = 0;
    const int r = path[k];
    while (k < path.size() && path[k] == r) ++k, ++n;
    s << (s.tellp() > 0 ? " -> " : "") << t.regions[r].name << " x" << n;
  }
  return s.str();
}

struct Running {
  int job = 0;
  Placement place;
  int micro_batches = 0; // per replica and iteration (replica_job)
  double remaining = 0;  // iterations left
  double iter_s = 0;     // iteration time under the current link shares
  double watts = 0;      // energy rate, J/s
  double usd_per_s = 0;  // electricity
  double egress_usd_per_s = 0;
};

struct Waiting {
  int job = 0;
  double nominal_s = 0;      // run time on the empty cluster (the score's "computation time")
  double demand_bps = 0;     // bytes/s an inter-region hop of this job needs to keep up with compute
  long failed_at = -1;       // cluster version at the last failed placement or decision to wait
  bool holding = false;      // that decision was to wait for a cheaper placement (it could start)
  bool relaxed = false;
  std::optional<Placement> rigid;  // cost-first: the placement it waits for
  // BACE: its placement on the empty cluster (the cheapest within max_slowdown of the fastest),
  // which it may wait for when what is free now costs more (worth_waiting).
  std::optional<Placement> target;
  double hold_until = -1;    // waiting for a cheaper placement ends by then; -1: not waiting
  bool released = false;     // hold_until passed: tried again then, never waits again
};

class Simulation {
 public:
  Simulation(const Topology& t, const Workload& w, Policy p, const SimOptions& o)
      : topo_(t), work_(w), policy_(p), opt_(o), R_(t.num_regions()) {
    empty_ = ClusterState::empty(t, o.bandwidth_scale);
    state_ = empty_;
    res_.policy = policy_name(p);
    res_.bandwidth_scale = o.bandwidth_scale;
    for (const auto& j : w.jobs) {
      JobRecord r;
      r.name = j.name;
      r.arrival_s = j.arrival_s;
      res_.jobs.push_back(r);
    }
  }

  SimResult run() {
    size_t next_arrival = 0;
    double now = 0;
    while (true) {
      double t_arr = next_arrival < work_.jobs.size() ? work_.jobs[next_arrival].arrival_s : kInf;
      double t_fin = kInf;
      for (const auto& r : running_) t_fin = std::min(t_fin, now + r.remaining * r.iter_s);
      const double t = std::min({t_arr, t_fin, next_hold_deadline(now)});
      if (t == kInf) break;
      advance(now, t);
      now = t;
      ++res_.events;
      bool changed = false;
      // Completions (every job due by now, within rounding).
      for (size_t i = 0; i < running_.size();) {
        if (running_[i].remaining * running_[i].iter_s <= 1e-9 * std::max(1.0, now)) {
          finish(i, now);
          changed = true;
        } else {
          ++i;
        }
      }
      // The links a finished job used are free before anyone is placed on them.
      if (changed) reshare();
      while (next_arrival < work_.jobs.size() && work_.jobs[next_arrival].arrival_s <= now)
        arrive(static_cast<int>(next_arrival++));
      release_due_holds(now);
      if (schedule(now)) reshare();
    }
    summarize();
    return std::move(res_);
  }

 private:
  // The earliest deadline of a job waiting for a cheaper placement: an event, at which it starts on
  // what is free (release_due_holds).
  double next_hold_deadline(double now) const {
    double t = kInf;
    for (const auto& w : waiting_)
      if (!w.released && w.hold_until > now) t = std::min(t, w.hold_until);
    return t;
  }
  void release_due_holds(double now) {
    for (auto& w : waiting_)
      if (!w.released && w.hold_until >= 0 && w.hold_until <= now) w.released = true, w.failed_at = -1;
  }

  bool fifo_family() const {
    return policy_ == Policy::kFifo || policy_ == Policy::kDelayFirst || policy_ == Policy::kCostFirst;
  }

  // The BACE policies that weigh price may wait for a cheaper placement (worth_waiting).
  bool waits_for_cheaper() const {
    return policy_ == Policy::kBace || policy_ == Policy::kBaceNoPriority || policy_ == Policy::kBaceNoBandwidth;
  }

  // When the GPUs `need` (per region) are expected free if running jobs keep their current rates
  // and nobody else takes them; kInf when they never are.
  double expected_free_at(const std::vector<int>& need, double now) const {
    auto fits = [&](const std::vector<int>& free) {
      for (int r = 0; r < R_; ++r)
        if (need[r] > free[r]) return false;
      return true;
    };
    if (fits(state_.free_gpus)) return now;
    for (const auto& [at, free] : releases(now, kInf, static_cast<int>(running_.size())))
      if (fits(free)) return at;
    return kInf;
  }

  // Free GPUs after each of the next `count` distinct expected completions before `by` (running
  // jobs keep their current rates), with the time of each.
  std::vector<std::pair<double, std::vector<int>>> releases(double now, double by, int count) const {
    std::vector<std::pair<double, const Running*>> ends;
    for (const auto& r : running_) ends.push_back({now + r.remaining * r.iter_s, &r});
    std::sort(ends.begin(), ends.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::pair<double, std::vector<int>>> out;
    std::vector<int> free = state_.free_gpus;
    for (size_t i = 0; i < ends.size() && ends[i].first < by; ++i) {
      for (int reg : ends[i].second->place.region) free[reg] += ends[i].second->place.replicas;
      if (i + 1 < ends.size() && ends[i + 1].first <= ends[i].first) continue;  // same instant: one release
      out.push_back({ends[i].first, free});
      if (static_cast<int>(out.size()) == count) break;
    }
    return out;
  }

  // The --max-slowdown trade-off across time: rather than start now on `now_p`, a job waits when a
  // cheaper placement is expected soon enough that waiting plus that placement's run still ends
  // within (1 + max_slowdown) of starting now. Candidates: its target (the placement on the empty
  // cluster) once its GPUs are expected free, and what the policy would place after each of the
  // next kLookahead completions (on the links as they are now). The first such decision fixes a
  // deadline (the latest start that keeps the bound), so a job whose cheaper placement is taken by
  // others waits at most that long and then starts on what is free.
  bool worth_waiting(Waiting& w, const Placement& now_p, double now) {
    if (w.hold_until >= 0 && now >= w.hold_until) return false;
    const double by = now + (1 + opt_.planner.max_slowdown) * now_p.job_s;
    double best_cost = now_p.cost_usd * (1 - 1e-9), best_run = -1;
    if (w.target && w.target->cost_usd < best_cost) {
      std::vector<int> need(R_, 0);
      for (int r : w.target->region) need[r] += w.target->replicas;  // a stage holds its replicas' GPUs
      if (expected_free_at(need, now) + w.target->job_s <= by)
        best_cost = w.target->cost_usd, best_run = w.target->job_s;
    }
    PlannerOptions po = opt_.planner;
    if (w.relaxed) po.bandwidth_check = false;
    for (const auto& [at, free] : releases(now, by, kLookahead)) {
      ClusterState later = state_;
      later.free_gpus = free;
      ++res_.placements_tried;
      const PlanResult pr = place_job(policy_, topo_, work_.jobs[w.job], later, po);
      if (pr.placement && pr.placement->cost_usd < best_cost && at + pr.placement->job_s <= by)
        best_cost = pr.placement->cost_usd, best_run = pr.placement->job_s;
    }
    if (best_run < 0) return false;
    if (w.hold_until < 0) w.hold_until = by - best_run;
    return true;
  }

  void advance(double from, double to) {
    const double dt = to - from;
    if (dt <= 0) return;
    for (auto& r : running_) {
      r.remaining = std::max(0.0, r.remaining - dt / r.iter_s);
      JobRecord& rec = res_.jobs[r.job];
      rec.energy_kwh += r.watts * dt / 3.6e6;
      rec.electricity_usd += r.usd_per_s * dt;
      rec.egress_usd += r.egress_usd_per_s * dt;
      rec.cost_usd = rec.electricity_usd + rec.egress_usd;
    }
  }

  void arrive(int j) {
    const JobSpec& job = work_.jobs[j];
    Waiting w;
    w.job = j;
    PlannerOptions po = opt_.planner;
    PlanResult on_empty;
    if (policy_ == Policy::kCostFirst) {
      on_empty = place_job(Policy::kCostFirst, topo_, job, empty_, po);
      w.rigid = on_empty.placement;
    } else {
      const Policy probe = fifo_family() ? policy_ : (policy_ == Policy::kBaceNoPriority ? Policy::kBace : policy_);
      on_empty = place_job(probe, topo_, job, empty_, po);
      if (!on_empty.placement && !fifo_family()) {
        // No bandwidth-feasible path even on an idle cluster: place it without the check (reported).
        po.bandwidth_check = false;
        PlanResult relaxed = place_job(probe, topo_, job, empty_, po);
        if (relaxed.placement) {
          w.relaxed = true;
          res_.jobs[j].relaxed = true;
          on_empty = relaxed;
        }
      }
    }
    ++res_.placements_tried;
    if (!on_empty.placement) {
      res_.jobs[j].waiting_reason = "never placeable on this topology: " + on_empty.why;
      return;  // reported as never started; it cannot block the queue
    }
    w.nominal_s = on_empty.placement->job_s;
    if (waits_for_cheaper()) w.target = on_empty.placement;
    w.demand_bps = on_empty.placement->replicas * boundary_bytes(job, "none") /
                   std::max(1e-12, on_empty.placement->timing.compute_period_s);
    waiting_.push_back(w);
  }

  double priority(const Waiting& w, double now) const {
    // Highest response ratio next, divided by the job's bandwidth pressure on the residual network.
    double sum = 0;
    int n = 0;
    for (size_t i = 0; i < state_.capacity_bps.size(); ++i)
      if (state_.capacity_bps[i] > 0) sum += state_.residual_bps[i], ++n;
    const double mean_residual = n ? sum / n : 0;
    const double pressure = mean_residual > 0 ? w.demand_bps / mean_residual : 1e9;
    const double wait = now - work_.jobs[w.job].arrival_s;
    return (wait + w.nominal_s) / (w.nominal_s * (1.0 + pressure));
  }

  std::optional<Placement> try_place(const Waiting& w) {
    const JobSpec& job = work_.jobs[w.job];
    ++res_.placements_tried;
    if (policy_ == Policy::kCostFirst) {
      std::vector<int> need(R_, 0);
      for (int r : w.rigid->region) need[r] += w.rigid->replicas;
      for (int r = 0; r < R_; ++r)
        if (need[r] > state_.free_gpus[r]) return std::nullopt;
      return w.rigid;
    }
    PlannerOptions po = opt_.planner;
    if (w.relaxed) po.bandwidth_check = false;
    PlanResult pr = place_job(policy_, topo_, job, state_, po);
    if (!pr.placement) res_.jobs[w.job].waiting_reason = pr.why;
    return pr.placement;
  }

  bool schedule(double now) {
    bool started = false;
    if (fifo_family()) {
      // Strict arrival order: the head waits for its placement and everyone waits behind it.
      while (!waiting_.empty()) {
        Waiting& w = waiting_.front();
        if (w.failed_at == version_) break;
        auto p = try_place(w);
        if (!p) {
          w.failed_at = version_;
          break;
        }
        start(w, std::move(*p), now);
        waiting_.erase(waiting_.begin());
        started = true;
      }
      return started;
    }
    std::vector<size_t> order(waiting_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    if (policy_ != Policy::kBaceNoPriority) {
      std::vector<double> prio(waiting_.size());
      for (size_t i = 0; i < waiting_.size(); ++i) prio[i] = priority(waiting_[i], now);
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return prio[a] > prio[b]; });
    }
    std::vector<char> gone(waiting_.size(), 0);
    for (size_t i : order) {
      Waiting& w = waiting_[i];
      const double ratio = (now - work_.jobs[w.job].arrival_s + w.nominal_s) / w.nominal_s;
      if (w.failed_at == version_ && w.holding) continue;  // still waiting by choice: reserves nothing
      std::optional<Placement> p;
      if (w.failed_at != version_) p = try_place(w);
      w.holding = false;
      if (!p) {
        w.failed_at = version_;
        if (ratio >= opt_.reserve_ratio) break;  // aged long enough: hold the GPUs that free up for it
        continue;
      }
      if (worth_waiting(w, *p, now)) {
        w.failed_at = version_;  // retried at the next completion, or at its deadline (run())
        w.holding = true;
        continue;
      }
      start(w, std::move(*p), now);
      gone[i] = 1;
      started = true;
    }
    if (started) {
      std::vector<Waiting> keep;
      for (size_t i = 0; i < waiting_.size(); ++i)
        if (!gone[i]) keep.push_back(std::move(waiting_[i]));
      waiting_ = std::move(keep);
    }
    return started;
  }

  void start(const Waiting& w, Placement p, double now) {
    for (int r : p.region) state_.free_gpus[r] -= p.replicas;  // a stage holds its replicas' GPUs
    JobRecord& rec = res_.jobs[w.job];
    rec.start_s = now;
    rec.stages = p.stages();
    rec.replicas = p.replicas;
    const JobSpec& spec = work_.jobs[w.job];
    const MemoryFit fit = placement_fit(topo_, replica_job(spec, p.replicas), p, opt_.planner.shard_optimizer);
    rec.memory_fits = fit != MemoryFit::kOver;
    rec.needs_recompute = fit == MemoryFit::kWithRecompute;
    res_.over_memory += fit == MemoryFit::kOver;
    res_.needs_recompute += fit == MemoryFit::kWithRecompute;
    rec.inter_region_hops = p.inter_region_hops();
    rec.regions = describe_regions(topo_, p.region);
    rec.planned_s = p.job_s;
    rec.waiting_reason.clear();
    Running r;
    r.job = w.job;
    r.remaining = work_.jobs[w.job].iterations;
    r.micro_batches = replica_job(work_.jobs[w.job], p.replicas).micro_batches;
    r.iter_s = p.iteration_s;
    r.place = std::move(p);
    running_.push_back(std::move(r));
    reshare();  // the next placement sees this job's bandwidth use
  }

  void finish(size_t i, double now) {
    Running& r = running_[i];
    for (int reg : r.place.region) state_.free_gpus[reg] += r.place.replicas;
    res_.jobs[r.job].end_s = now;
    running_.erase(running_.begin() + static_cast<long>(i));
    ++version_;
  }

  // Max-min fair shares on every directed inter-region link; recomputes each running job's
  // iteration time, energy and cost rates, and the residual bandwidth the planner sees.
  void reshare() {
    struct Use {
      size_t run;
      size_t hop;
      bool forward;
      double bytes;
      double demand;
    };
    std::vector<std::vector<Use>> users(static_cast<size_t>(R_) * R_);
    for (size_t i = 0; i < running_.size(); ++i) {
      const Placement& p = running_[i].place;
      const double pc = p.timing.compute_period_s;
      for (size_t j = 0; j + 1 < p.region.size(); ++j) {
        const int a = p.region[j], b = p.region[j + 1];
        if (a == b) continue;
        const size_t ab = static_cast<size_t>(a) * R_ + b, ba = static_cast<size_t>(b) * R_ + a;
        // The job's R pipelines cross this link together: R messages per micro-batch slot.
        const double fwd = p.replicas * p.hop_fwd_bytes[j], bwd = p.replicas * p.hop_bwd_bytes[j];
        users[ab].push_back({i, j, true, fwd, std::min(fwd / pc, empty_.capacity_bps[ab])});
        users[ba].push_back({i, j, false, bwd, std::min(bwd / pc, empty_.capacity_bps[ba])});
      }
    }
    std::vector<std::vector<double>> xfer(running_.size());
    for (size_t i = 0; i < running_.size(); ++i) xfer[i] = running_[i].place.hop_xfer_s;
    // Intra-region hops keep their planned transfer time; inter-region ones are recomputed below.
    for (size_t i = 0; i < running_.size(); ++i) {
      const Placement& p = running_[i].place;
      for (size_t j = 0; j + 1 < p.region.size(); ++j)
        if (p.region[j] != p.region[j + 1]) xfer[i][j] = 0;
    }
    for (size_t l = 0; l < users.size(); ++l) {
      const double cap = empty_.capacity_bps[l];
      double total = 0;
      for (const auto& u : users[l]) total += u.demand;
      state_.residual_bps[l] = std::max(0.0, cap - total);
      if (users[l].empty() || cap <= 0) continue;
      res_.max_link_oversubscription = std::max(res_.max_link_oversubscription, total / cap);
      std::vector<double> seen(users[l].size());
      if (total <= cap) {
        for (size_t k = 0; k < users[l].size(); ++k) seen[k] = cap - (total - users[l][k].demand);
      } else {
        std::vector<double> d;
        for (const auto& u : users[l]) d.push_back(u.demand);
        seen = fair_shares(d, cap);
      }
      for (size_t k = 0; k < users[l].size(); ++k) {
        const Use& u = users[l][k];
        xfer[u.run][u.hop] = std::max(xfer[u.run][u.hop], u.bytes / seen[k]);
      }
    }
    for (size_t i = 0; i < running_.size(); ++i) {
      Running& r = running_[i];
      const Placement& p = r.place;
      const JobSpec& job = work_.jobs[r.job];
      PipelineTiming tm = pipeline_timing(p.stage_s, xfer[i], p.hop_latency_s, r.micro_batches, p.kind);
      // The gradient all-reduce runs inside each region: the link shares do not change it.
      const double iteration = p.iteration_s - p.timing.iteration_s + tm.iteration_s;
      std::vector<const Region*> regs;
      for (int reg : p.region) regs.push_back(&topo_.regions[reg]);
      EnergyCost ec = iteration_energy(regs, p.stage_s, iteration, r.micro_batches, opt_.planner.cost);
      r.iter_s = iteration;
      r.watts = p.replicas * ec.energy_j / iteration;  // every replica's GPUs
      r.usd_per_s = p.replicas * ec.cost_usd / iteration;
      // A job's bytes per iteration do not depend on its link shares: egress accrues per iteration done.
      r.egress_usd_per_s = p.egress_usd / job.iterations / iteration;
    }
  }

  void summarize() {
    std::vector<double> jct;
    for (const auto& j : res_.jobs) {
      res_.energy_kwh += j.energy_kwh;
      res_.electricity_usd += j.electricity_usd;
      res_.egress_usd += j.egress_usd;
      res_.cost_usd += j.cost_usd;
      if (j.end_s >= 0) {
        jct.push_back(j.jct_s());
        res_.makespan_s = std::max(res_.makespan_s, j.end_s);
      } else {
        ++res_.never_started;
        if (j.waiting_reason.empty()) res_.jobs[&j - res_.jobs.data()].waiting_reason = "still waiting at the end";
      }
    }
    res_.finished = static_cast<int>(jct.size());
    if (!jct.empty()) {
      double sum = 0;
      for (double v : jct) sum += v;
      res_.avg_jct_s = sum / jct.size();
      std::sort(jct.begin(), jct.end());
      const size_t rank = static_cast<size_t>(std::ceil(0.95 * jct.size()));
      res_.p95_jct_s = jct[std::max<size_t>(rank, 1) - 1];
    }
  }

  const Topology& topo_;
  const Workload& work_;
  Policy policy_;
  SimOptions opt_;
  int R_;
  ClusterState empty_, state_;
  std::vector<Running> running_;
  std::vector<Waiting> waiting_;
  long version_ = 0;  // bumped at every completion: resources only grow then
  SimResult res_;
};

}  // namespace

SimResult simulate(const Topology& topology, const Workload& workload, Policy policy, const SimOptions& options) {
  if (policy == Policy::kExact)
    throw InputError("--policy", "", "\"exact\" solves one job on an empty cluster (geopipe plan --policy exact); "
                                     "it is not a queue policy for the simulator");
  return Simulation(topology, workload, policy, options).run();
}

}  // namespace geopipe::scheduler
