// Discrete-event multi-tenant simulator (docs/SCHEDULER.md §Simulator): jobs arrive, wait, start
// on GPUs held per region, and complete; inter-region links are shared max-min fairly by the jobs
// that cross them, so an oversubscribed link slows every job on it, and every start or completion
// recomputes every running job's progress rate. Plus a seeded workload generator.
#pragma once

#include <geopipe/core/config.h>
#include <geopipe/scheduler/planner.h>

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace geopipe::scheduler {

// Deterministic random numbers: std::mt19937_64's raw output with our own distributions, so a seed
// gives the same workload with every standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  double uniform();                           // [0, 1)
  double uniform(double lo, double hi);       // [lo, hi)
  double exponential(double mean);
  int pick(const std::vector<double>& weights);  // index drawn with probability ~ weight
 private:
  std::mt19937_64 engine_;  // the engine's sequence is fixed by the standard; its distributions are not
};

struct WorkloadGenOptions {
  int jobs = 200;
  double load = 0.8;   // offered GPU load: arrival rate * mean GPU-seconds per job / cluster GPUs
  uint64_t seed = 1;
};

// Poisson arrivals; models from 1.3B to 30B parameters (GPT-3 shapes) with 4-16 stages; iterations
// log-uniform in [200, 4000]; the mix favours small models (see docs/SCHEDULER.md).
Workload generate_workload(const Topology& topology, const WorkloadGenOptions& options);

struct SimOptions {
  PlannerOptions planner;       // for BACE and the baselines' placement searches
  double bandwidth_scale = 1.0; // multiplies every inter-region link's bandwidth
  double reserve_ratio = 4.0;   // BACE: a job whose response ratio (wait + E) / E reaches this stops others from starting
};

struct JobRecord {
  std::string name;
  double arrival_s = 0;
  double start_s = -1;          // -1: never started
  double end_s = -1;            // -1: never finished
  int stages = 0;
  int replicas = 1;             // copies of the pipeline: the job held stages x replicas GPUs
  // The planner's memory model on the placement (placement_fit): every stage fits its GPU, and
  // whether only with recomputation. The simulator places with the search alone and reports
  // these; it neither refuses a placement that does not fit nor charges recomputation's time.
  bool memory_fits = true;
  bool needs_recompute = false;
  int inter_region_hops = 0;
  std::string regions;          // e.g. "us-east-2-ohio x8"
  double planned_s = 0;         // run time the placement predicted when it started (links as seen then)
  double energy_kwh = 0;
  double electricity_usd = 0;
  double egress_usd = 0;
  double cost_usd = 0;          // electricity + egress
  bool relaxed = false;         // no bandwidth-feasible path even on the empty cluster: placed without the check
  std::string waiting_reason;   // for jobs never started: why
  double jct_s() const { return end_s < 0 ? -1 : end_s - arrival_s; }
};

struct SimResult {
  std::string policy;
  double bandwidth_scale = 1;
  std::vector<JobRecord> jobs;  // in workload order
  int finished = 0;
  int never_started = 0;
  double avg_jct_s = 0, p95_jct_s = 0, makespan_s = 0;
  double energy_kwh = 0, electricity_usd = 0, egress_usd = 0, cost_usd = 0;  // cost: electricity + egress
  long events = 0;
  long placements_tried = 0;
  double max_link_oversubscription = 0;  // max over time and links of demand / capacity
  int over_memory = 0;                   // jobs started on a placement that does not fit (memory_fits false)
  int needs_recompute = 0;               // jobs started on a placement that fits only with recomputation
};

// Runs one policy over the workload. InputError for "exact" (a single-job solver, not a queue policy).
SimResult simulate(const Topology& topology, const Workload& workload, Policy policy, const SimOptions& options);

// ---- Reports (the CLI and the benchmark print the same tables) ---------------------------------

// Percent change of `value` against `base` (negative: lower than the baseline).
double percent_change(double value, double base);
// One scenario's table: a row per policy (avg / p95 JCT, makespan, energy, electricity, egress and
// their total cost, finished), then
// each policy's change in % against each baseline (delay-first, cost-first, fifo) that was run.
std::string format_scenario(const std::string& title, const std::vector<SimResult>& results);
nlohmann::json to_json(const SimResult& result, bool with_jobs);
// One row per job and policy: policy, bandwidth_scale, name, arrival_s, start_s, end_s, jct_s, ...
void write_jobs_csv(const std::vector<SimResult>& results, const std::string& path);

// ---- The JCT/cost frontier across --max-slowdown (geopipe simulate --pareto) ------------------

// One run on the frontier table: BACE at one max_slowdown, or a baseline.
struct ParetoPoint {
  double max_slowdown = -1;    // BACE's knob; -1 for a baseline
  SimResult result;
  std::string dominated_by;    // the first other point with avg JCT and cost both <= and one <; empty: on the frontier
  std::string label() const;   // "bace x=0.25" or the baseline's policy name
};
// The knob values --pareto runs BACE at, ascending.
const std::vector<double>& pareto_slowdowns();
// Fills each point's dominated_by against every other point (BACE's and the baselines').
void mark_frontier(std::vector<ParetoPoint>& points);
// A row per point in the given order: avg / p95 JCT, makespan, electricity, egress, cost, frontier.
std::string format_pareto(const std::string& title, const std::vector<ParetoPoint>& points);
nlohmann::json to_json(const ParetoPoint& point);

// Max-min fair shares of one link's capacity among demands (water filling): nobody gets more than
// it asks, and capacity left by small demands is shared equally by the rest.
std::vector<double> fair_shares(const std::vector<double>& demands, double capacity);

}  // namespace geopipe::scheduler
