// geopipe-sched-bench: the scheduler's measured claims (docs/SCHEDULER.md, docs/PERFORMANCE.md).
//   --mode quality     BACE vs delay-first / cost-first / fifo (+ ablations) on aws6, gcp5 and
//                      aws-mixed5 (--topology), generated workloads over seeds and bandwidth scales:
//                      avg JCT and cost, % changes, and issue 16's goals per point (met / MISSED)
//   --mode optimality  BACE's allocator vs the exact solver on random small instances: cost gap
//   --mode speed       planning one job on 16 regions x 64 stages; simulating 1,000 jobs on aws6
// Prints tables; --json FILE writes every number.
#include <geopipe/core/config.h>
#include <geopipe/core/error.h>
#include <geopipe/scheduler/planner.h>
#include <geopipe/scheduler/simulator.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <ctime>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace gs = geopipe::scheduler;
using nlohmann::json;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// CPU time of this thread: what "on one core" means on a machine shared with other work.
double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const double pos = q * (v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = static_cast<size_t>(std::ceil(pos));
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? NAN : s / v.size();
}

// ---- quality --------------------------------------------------------------------------------

// --gpu-bounds: every job may hold from its fewest stages up to 4 x its most stages in GPUs, the
// policy choosing its replicas (docs/SCHEDULER.md, "Replicas").
void bound_gpus(geopipe::Workload& w) {
  for (geopipe::JobSpec& job : w.jobs) {
    job.min_gpus = job.min_stages;
    job.max_gpus = 4 * job.max_stages;
  }
}

const std::vector<gs::Policy> kBaselines = {gs::Policy::kDelayFirst, gs::Policy::kCostFirst, gs::Policy::kFifo};

bool is_baseline(gs::Policy p) { return std::find(kBaselines.begin(), kBaselines.end(), p) != kBaselines.end(); }

// Issue 16's goals for BACE at one point (topology, bandwidth scale), over the seeds' means.
struct Goals {
  bool jct_vs_fifo;            // mean avg JCT <= fifo's
  bool cost_vs_delay_first;    // mean cost >= 20 % below delay-first's
  bool never_worse_on_both;    // no seed where a baseline has both lower avg JCT and lower cost
  bool makespan_vs_fifo;       // mean makespan <= 1.05 x fifo's
};

std::vector<double> metric(const std::vector<gs::SimResult>& runs, double gs::SimResult::*field, double scale = 1) {
  std::vector<double> v;
  for (const auto& r : runs) v.push_back(r.*field / scale);
  return v;
}

// Per policy, its means over the seeds (a table row) and every seed (JSON).
json policy_rows(const std::vector<gs::Policy>& policies, const std::vector<std::vector<gs::SimResult>>& res) {
  std::printf("%-14s %11s %11s %11s %11s %10s %11s %10s %8s\n", "policy", "avgJCT(h)", "p95JCT(h)", "makespan(h)",
              "energy(kWh)", "elec(USD)", "egress(USD)", "cost(USD)", "unfin.");
  json rows = json::array();
  for (size_t p = 0; p < policies.size(); ++p) {
    const auto a = metric(res[p], &gs::SimResult::avg_jct_s, 3600),
               p95 = metric(res[p], &gs::SimResult::p95_jct_s, 3600),
               mk = metric(res[p], &gs::SimResult::makespan_s, 3600), e = metric(res[p], &gs::SimResult::energy_kwh),
               el = metric(res[p], &gs::SimResult::electricity_usd), eg = metric(res[p], &gs::SimResult::egress_usd),
               c = metric(res[p], &gs::SimResult::cost_usd);
    int unfinished = 0;
    for (const auto& r : res[p]) unfinished += r.never_started;
    std::printf("%-14s %11.3f %11.3f %11.3f %11.1f %10.2f %11.2f %10.2f %8d\n", gs::policy_name(policies[p]), mean(a),
                mean(p95), mean(mk), mean(e), mean(el), mean(eg), mean(c), unfinished);
    rows.push_back({{"policy", gs::policy_name(policies[p])}, {"avg_jct_h", a}, {"p95_jct_h", p95}, {"makespan_h", mk},
                    {"energy_kwh", e}, {"electricity_usd", el}, {"egress_usd", eg}, {"cost_usd", c},
                    {"never_started", unfinished}});
  }
  return rows;
}

// Every non-baseline policy against every baseline, per seed.
json change_rows(const std::vector<gs::Policy>& policies, const std::vector<std::vector<gs::SimResult>>& res) {
  std::printf("%-14s %-12s %24s %24s %10s\n", "policy", "vs", "avg JCT % mean [min,max]", "cost % mean [min,max]",
              "both worse");
  json rows = json::array();
  for (size_t p = 0; p < policies.size(); ++p) {
    if (is_baseline(policies[p])) continue;
    for (size_t b = 0; b < policies.size(); ++b) {
      if (!is_baseline(policies[b])) continue;
      std::vector<double> dj, dc;
      int both_worse = 0;
      for (size_t s = 0; s < res[p].size(); ++s) {
        dj.push_back(gs::percent_change(res[p][s].avg_jct_s, res[b][s].avg_jct_s));
        dc.push_back(gs::percent_change(res[p][s].cost_usd, res[b][s].cost_usd));
        both_worse += dj.back() > 0 && dc.back() > 0;
      }
      std::printf("%-14s %-12s %7.1f [%6.1f,%6.1f]   %7.1f [%6.1f,%6.1f]   %7d/%zu\n", gs::policy_name(policies[p]),
                  gs::policy_name(policies[b]), mean(dj), *std::min_element(dj.begin(), dj.end()),
                  *std::max_element(dj.begin(), dj.end()), mean(dc), *std::min_element(dc.begin(), dc.end()),
                  *std::max_element(dc.begin(), dc.end()), both_worse, res[p].size());
      rows.push_back({{"policy", gs::policy_name(policies[p])}, {"baseline", gs::policy_name(policies[b])},
                      {"avg_jct_pct", dj}, {"cost_pct", dc}, {"both_worse", both_worse}});
    }
  }
  return rows;
}

// The goals for BACE (policies[0]) against the baselines (all present in `policies`).
json check_goals(const std::vector<gs::Policy>& policies, const std::vector<std::vector<gs::SimResult>>& res) {
  auto runs = [&](gs::Policy p) -> const std::vector<gs::SimResult>& {
    return res[std::find(policies.begin(), policies.end(), p) - policies.begin()];
  };
  const auto& bace = runs(gs::Policy::kBace);
  const auto& fifo = runs(gs::Policy::kFifo);
  const auto& df = runs(gs::Policy::kDelayFirst);
  const double jct = mean(metric(bace, &gs::SimResult::avg_jct_s));
  const double fifo_jct = mean(metric(fifo, &gs::SimResult::avg_jct_s));
  const double cost_pct = gs::percent_change(mean(metric(bace, &gs::SimResult::cost_usd)),
                                             mean(metric(df, &gs::SimResult::cost_usd)));
  const double mk_pct = gs::percent_change(mean(metric(bace, &gs::SimResult::makespan_s)),
                                           mean(metric(fifo, &gs::SimResult::makespan_s)));
  int both_worse = 0;
  for (gs::Policy b : kBaselines)
    for (size_t s = 0; s < bace.size(); ++s)
      both_worse += runs(b)[s].avg_jct_s < bace[s].avg_jct_s && runs(b)[s].cost_usd < bace[s].cost_usd;
  const Goals g{jct <= fifo_jct, cost_pct <= -20.0, both_worse == 0, mk_pct <= 5.0};
  auto word = [](bool met) { return met ? "met" : "MISSED"; };
  std::printf("goals: avg JCT %.3f h vs fifo %.3f h: %s; cost vs delay-first %+.1f %% (<= -20 %%): %s; "
              "runs a baseline beats on both: %d: %s; makespan vs fifo %+.1f %% (<= +5 %%): %s\n",
              jct / 3600, fifo_jct / 3600, word(g.jct_vs_fifo), cost_pct, word(g.cost_vs_delay_first), both_worse,
              word(g.never_worse_on_both), mk_pct, word(g.makespan_vs_fifo));
  return {{"avg_jct_h", jct / 3600},          {"fifo_avg_jct_h", fifo_jct / 3600},
          {"jct_vs_fifo_met", g.jct_vs_fifo}, {"cost_vs_delay_first_pct", cost_pct},
          {"cost_vs_delay_first_met", g.cost_vs_delay_first},
          {"runs_worse_on_both", both_worse}, {"never_worse_on_both_met", g.never_worse_on_both},
          {"makespan_vs_fifo_pct", mk_pct},   {"makespan_vs_fifo_met", g.makespan_vs_fifo},
          {"all_met", g.jct_vs_fifo && g.cost_vs_delay_first && g.never_worse_on_both && g.makespan_vs_fifo}};
}

json quality(const geopipe::Topology& topo, const std::vector<uint64_t>& seeds, const std::vector<double>& scales,
             int jobs, double load, bool ablations, double max_slowdown, bool gpu_bounds) {
  std::vector<gs::Policy> policies = {gs::Policy::kBace, gs::Policy::kDelayFirst, gs::Policy::kCostFirst,
                                      gs::Policy::kFifo};
  if (ablations)
    for (auto p : {gs::Policy::kBaceNoPriority, gs::Policy::kBaceNoBandwidth, gs::Policy::kBaceNoPrice})
      policies.push_back(p);
  json out = json::array();
  std::printf("# quality: topology %s, %d jobs per workload, load %.2f, max_slowdown %g, seeds", topo.name.c_str(),
              jobs, load, max_slowdown);
  for (auto s : seeds) std::printf(" %llu", static_cast<unsigned long long>(s));
  std::printf("%s\n", gpu_bounds ? "; replicas chosen (\"gpus\": [fewest stages, 4 x most stages])" : "");
  for (double scale : scales) {
    std::vector<std::vector<gs::SimResult>> res(policies.size());  // [policy][seed]
    for (uint64_t seed : seeds) {
      geopipe::Workload w = gs::generate_workload(topo, {jobs, load, seed});
      if (gpu_bounds) bound_gpus(w);
      for (size_t p = 0; p < policies.size(); ++p) {
        gs::SimOptions o;
        o.bandwidth_scale = scale;
        o.planner.max_slowdown = max_slowdown;
        res[p].push_back(gs::simulate(topo, w, policies[p], o));
      }
    }
    std::printf("\n%s, bandwidth x%g (mean over %zu seeds)\n", topo.name.c_str(), scale, seeds.size());
    json sc = {{"topology", topo.name}, {"bandwidth_scale", scale}};
    sc["policies"] = policy_rows(policies, res);
    sc["changes"] = change_rows(policies, res);
    sc["goals"] = check_goals(policies, res);
    out.push_back(sc);
  }
  return out;
}

// ---- optimality -----------------------------------------------------------------------------

geopipe::Topology random_topology(gs::Rng& rng, int regions, int min_gpus, int max_gpus, double min_gbps,
                                  double max_gbps) {
  json doc = {{"name", "random"}, {"intra_region", {{"gbps", 100}, {"latency_ms", 0.5}}}};
  doc["regions"] = json::array();
  const double tflops[] = {312, 989, 989};  // A100 or H100
  for (int i = 0; i < regions; ++i)
    doc["regions"].push_back({{"name", "r" + std::to_string(i)},
                              {"gpus", min_gpus + static_cast<int>(rng.uniform() * (max_gpus - min_gpus + 1))},
                              {"gpu_type", "gpu"},
                              {"gpu_tflops", tflops[static_cast<int>(rng.uniform() * 3)]},
                              {"gpu_mem_gb", 80},
                              {"gpu_power_w", 700},
                              {"pue", rng.uniform(1.1, 1.4)},
                              {"price_usd_per_kwh", rng.uniform(0.05, 0.25)}});
  doc["links"] = json::array();
  for (int i = 0; i < regions; ++i)
    for (int k = i + 1; k < regions; ++k)
      doc["links"].push_back({{"a", "r" + std::to_string(i)},
                              {"b", "r" + std::to_string(k)},
                              {"gbps", std::exp(rng.uniform(std::log(min_gbps), std::log(max_gbps)))},
                              {"latency_ms", rng.uniform(2, 80)}});
  return geopipe::parse_topology(doc, "random");
}

// The same topology with an egress price on each direction of each link, drawn from the AWS list
// prices (docs/TOPOLOGIES.md) with a generator of its own, so that --egress prices the very
// instances of the run without it.
geopipe::Topology with_egress(gs::Rng& rng, const geopipe::Topology& t) {
  const double prices[] = {0.01, 0.02, 0.02, 0.09};
  json doc = geopipe::to_json(t);
  const size_t pairs = doc["links"].size();
  for (size_t i = 0; i < pairs; ++i) {
    json reverse = doc["links"][i];
    std::swap(reverse["a"], reverse["b"]);
    doc["links"][i]["egress_usd_per_gb"] = prices[static_cast<int>(rng.uniform() * 4)];
    reverse["egress_usd_per_gb"] = prices[static_cast<int>(rng.uniform() * 4)];
    doc["links"].push_back(reverse);
  }
  return geopipe::parse_topology(doc, "random");
}

geopipe::JobSpec random_job(gs::Rng& rng, int layers, int min_stages, int max_stages) {
  const int widths[] = {1024, 2048, 4096};
  json doc = {{"name", "job"},
              {"model",
               {{"layers", layers},
                {"d_model", widths[static_cast<int>(rng.uniform() * 3)]},
                {"heads", 16},
                {"seq_len", 2048},
                {"vocab", 50304},
                {"dtype", "bf16"}}},
              {"micro_batch", 1 + static_cast<int>(rng.uniform() * 4)},
              {"micro_batches", 32},
              {"iterations", 1000}};
  doc["stages"] = min_stages == max_stages ? json(min_stages) : json({min_stages, max_stages});
  return geopipe::parse_job(doc, "job");
}

// The job with "gpus": [its fewest stages, the cluster's GPUs]: the planner chooses the replicas.
geopipe::JobSpec with_gpu_bounds(const geopipe::JobSpec& job, const geopipe::Topology& topo) {
  json doc = geopipe::to_json(job);
  doc["gpus"] = {job.min_stages, std::max(job.min_stages, topo.total_gpus())};
  return geopipe::parse_job(doc, "job");
}

json optimality(int instances, uint64_t seed, bool egress, bool gpu_bounds) {
  gs::Rng rng(seed), price_rng(seed + 1);
  std::vector<double> gaps, bace_ms, exact_ms;
  int both = 0, bace_missed = 0, none = 0, outside_window = 0, bace_replicated = 0, exact_replicated = 0;
  json rows = json::array();
  for (int i = 0; i < instances; ++i) {
    const int R = 3 + static_cast<int>(rng.uniform() * 4);  // 3..6 regions
    auto topo = random_topology(rng, R, 1, 4, 0.2, 20);
    if (egress) topo = with_egress(price_rng, topo);
    const int smax = std::min(gs::kExactMaxStages, topo.total_gpus());
    const int S = 2 + static_cast<int>(rng.uniform() * (smax - 1));
    const bool range = rng.uniform() < 0.5;
    auto job = random_job(rng, 32, range ? std::max(2, S - 3) : S, S);
    if (gpu_bounds) job = with_gpu_bounds(job, topo);
    auto state = gs::ClusterState::empty(topo);
    gs::PlannerOptions o;
    auto t0 = std::chrono::steady_clock::now();
    auto b = gs::place_job(gs::Policy::kBace, topo, job, state, o);
    bace_ms.push_back(1e3 * seconds_since(t0));
    t0 = std::chrono::steady_clock::now();
    auto e = gs::exact_placement(topo, job, state, o);
    exact_ms.push_back(1e3 * seconds_since(t0));
    json row = {{"regions", R}, {"stages", {job.min_stages, job.max_stages}}};
    if (gpu_bounds && b.placement) {
      row["bace_replicas"] = b.placement->replicas;
      bace_replicated += b.placement->replicas > 1;
    }
    if (gpu_bounds && e.placement) {
      row["exact_replicas"] = e.placement->replicas;
      exact_replicated += e.placement->replicas > 1;
    }
    if (!e.placement) {
      ++none;
    } else if (!b.placement) {
      ++bace_missed;
    } else {
      ++both;
      gs::PlannerOptions fastest = o;
      fastest.max_slowdown = 0;
      const double t_fast = gs::exact_placement(topo, job, state, fastest).placement->iteration_s;
      const bool inside = b.placement->iteration_s <= t_fast * (1 + o.max_slowdown) * (1 + 1e-9);
      outside_window += !inside;
      const double gap = gs::percent_change(b.placement->cost_usd, e.placement->cost_usd);
      gaps.push_back(gap);
      row["gap_pct"] = gap;
      row["bace_inside_exact_window"] = inside;
    }
    rows.push_back(row);
  }
  std::printf("# optimality: %d random instances (3-6 regions, 1-4 GPUs each, 2-8 stages, half with a stage "
              "range)%s%s\n",
              instances, egress ? ", egress 0.01-0.09 USD/GB per direction" : "",
              gpu_bounds ? ", replicas chosen (\"gpus\": [fewest stages, the cluster's GPUs])" : "");
  std::printf("%-10s %8s %8s %8s %8s %8s %12s %12s %14s\n", "instances", "compared", "median%", "p90%", "max%",
              "min%", "bace_missed", "infeasible", "outside_window");
  std::printf("%-10d %8d %8.2f %8.2f %8.2f %8.2f %12d %12d %14d\n", instances, both, quantile(gaps, 0.5),
              quantile(gaps, 0.9), gaps.empty() ? NAN : *std::max_element(gaps.begin(), gaps.end()),
              gaps.empty() ? NAN : *std::min_element(gaps.begin(), gaps.end()), bace_missed, none, outside_window);
  if (gpu_bounds)
    std::printf("plans with replicas (R > 1): bace %d, exact %d\n", bace_replicated, exact_replicated);
  std::printf("planning time per instance: bace median %.3f ms max %.3f ms; exact median %.1f ms max %.1f ms\n",
              quantile(bace_ms, 0.5), *std::max_element(bace_ms.begin(), bace_ms.end()), quantile(exact_ms, 0.5),
              *std::max_element(exact_ms.begin(), exact_ms.end()));
  return {{"instances", instances},  {"compared", both},       {"gap_pct", gaps},
          {"bace_missed", bace_missed}, {"infeasible", none},  {"outside_window", outside_window},
          {"bace_ms", bace_ms},      {"exact_ms", exact_ms},   {"rows", rows}};
}

// ---- speed ----------------------------------------------------------------------------------

json speed(const geopipe::Topology& aws6, int reps) {
  gs::Rng rng(2026);
  std::vector<double> plan_ms, plan_cpu_ms;
  std::vector<long> nodes;
  int feasible = 0;
  for (int i = 0; i < reps; ++i) {
    auto topo = random_topology(rng, 16, 4, 12, 5, 40);
    auto job = random_job(rng, 96, 64, 64);
    auto state = gs::ClusterState::empty(topo);
    auto t0 = std::chrono::steady_clock::now();
    const double c0 = thread_cpu_s();
    auto r = gs::place_job(gs::Policy::kBace, topo, job, state, {});
    plan_cpu_ms.push_back(1e3 * (thread_cpu_s() - c0));
    plan_ms.push_back(1e3 * seconds_since(t0));
    nodes.push_back(r.nodes);
    feasible += r.placement.has_value();
  }
  std::printf("# speed (one thread)\n");
  std::printf("%-44s %10s %10s %10s %10s\n", "case", "median", "p90", "max", "unit");
  std::printf("%-44s %10.2f %10.2f %10.2f %10s\n", "plan 1 job, 16 regions x 64 stages (bace)", quantile(plan_ms, 0.5),
              quantile(plan_ms, 0.9), *std::max_element(plan_ms.begin(), plan_ms.end()), "ms");
  std::printf("%-44s %10.2f %10.2f %10.2f %10s\n", "  same, thread CPU time", quantile(plan_cpu_ms, 0.5),
              quantile(plan_cpu_ms, 0.9), *std::max_element(plan_cpu_ms.begin(), plan_cpu_ms.end()), "ms");
  std::vector<double> sim_s, sim_cpu_s;
  for (uint64_t seed = 1; seed <= 3; ++seed) {
    auto w = gs::generate_workload(aws6, {1000, 0.8, seed});
    auto t0 = std::chrono::steady_clock::now();
    const double c0 = thread_cpu_s();
    auto r = gs::simulate(aws6, w, gs::Policy::kBace, {});
    sim_cpu_s.push_back(thread_cpu_s() - c0);
    sim_s.push_back(seconds_since(t0));
  }
  std::printf("%-44s %10.3f %10.3f %10.3f %10s\n", "simulate 1,000 jobs on aws6 (bace)", quantile(sim_s, 0.5),
              quantile(sim_s, 0.9), *std::max_element(sim_s.begin(), sim_s.end()), "s");
  std::printf("%-44s %10.3f %10.3f %10.3f %10s\n", "  same, thread CPU time", quantile(sim_cpu_s, 0.5),
              quantile(sim_cpu_s, 0.9), *std::max_element(sim_cpu_s.begin(), sim_cpu_s.end()), "s");
  std::printf("(plans found: %d of %d; search nodes median %.0f)\n", feasible, reps,
              quantile(std::vector<double>(nodes.begin(), nodes.end()), 0.5));
  return {{"plan_16x64_ms", plan_ms},   {"plan_16x64_cpu_ms", plan_cpu_ms}, {"plan_nodes", nodes},
          {"plans_found", feasible},    {"simulate_1000_s", sim_s},         {"simulate_1000_cpu_s", sim_cpu_s}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"geopipe-sched-bench: scheduler quality, optimality gap and speed"};
  std::string mode = "all", json_out;
  const std::string shipped = std::string(GEOPIPE_SOURCE_DIR) + "/examples/topologies/";
  std::vector<std::string> topologies = {shipped + "aws6.json", shipped + "gcp5.json", shipped + "aws-mixed5.json"};
  double max_slowdown = gs::PlannerOptions{}.max_slowdown;
  std::vector<uint64_t> seeds = {1, 2, 3, 4, 5};
  std::vector<double> scales = {0.25, 0.5, 1, 2};
  int jobs = 200, instances = 100, reps = 20;
  double load = 0.8;
  bool ablations = true, egress = false, gpu_bounds = false;
  app.add_option("--mode", mode, "quality, optimality, speed or all")
      ->check(CLI::IsMember({"quality", "optimality", "speed", "all"}));
  app.add_option("--topology", topologies,
                 "Topologies for quality, comma separated (default: aws6, gcp5 and aws-mixed5); speed simulates on "
                 "the first")
      ->delimiter(',')
      ->check(CLI::ExistingFile);
  app.add_option("--max-slowdown", max_slowdown, "BACE's --max-slowdown in quality mode (default 0.1)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seeds", seeds, "Workload seeds")->delimiter(',');
  app.add_option("--bandwidth-scale", scales, "Bandwidth factors")->delimiter(',');
  app.add_option("--jobs", jobs, "Jobs per generated workload");
  app.add_option("--load", load, "Offered load of generated workloads");
  app.add_option("--instances", instances, "Random instances for the optimality gap");
  app.add_flag("--egress", egress, "Optimality: price every link direction (0.01-0.09 USD/GB)");
  app.add_flag("--gpu-bounds", gpu_bounds,
               "Replicas chosen: optimality jobs may hold up to the cluster's GPUs, quality jobs up to 4 x their most "
               "stages (\"gpus\")");
  app.add_option("--reps", reps, "Random 16x64 planning instances");
  app.add_flag("!--no-ablations", ablations, "Skip the BACE ablations in quality mode");
  app.add_option("--json", json_out, "Write all numbers as JSON");
  CLI11_PARSE(app, argc, argv);
  try {
    json doc = {{"topologies", json::array()}, {"max_slowdown", max_slowdown}};
    if (mode == "quality" || mode == "all") {
      doc["quality"] = json::array();
      for (const auto& path : topologies) {
        auto topo = geopipe::load_topology(path);
        doc["topologies"].push_back(topo.name);
        for (auto& point : quality(topo, seeds, scales, jobs, load, ablations, max_slowdown, gpu_bounds))
          doc["quality"].push_back(point);
      }
      int met = 0;
      for (const auto& point : doc["quality"]) met += point["goals"]["all_met"].get<bool>();
      std::printf("\nall goals met at %d of %zu points\n", met, doc["quality"].size());
    }
    if (mode == "optimality" || mode == "all") doc["optimality"] = optimality(instances, 7, egress, gpu_bounds);
    if (mode == "speed" || mode == "all") doc["speed"] = speed(geopipe::load_topology(topologies.front()), reps);
    if (!json_out.empty()) std::ofstream(json_out) << doc.dump(2) << "\n";
  } catch (const geopipe::Error& e) {
    std::cerr << "geopipe-sched-bench: " << e.what() << "\n";
    return e.exit_code();
  }
  return 0;
}
