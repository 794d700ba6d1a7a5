// `geopipe simulate`: compares scheduling policies on a multi-tenant workload (given or generated).
#include "commands.h"

#include <geopipe/core/config.h>
#include <geopipe/core/error.h>
#include <geopipe/report/report.h>
#include <geopipe/scheduler/simulator.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

namespace geopipe::cli {

namespace {

struct SimulateOptions {
  std::string topology, workload, json_out, csv_out, html_out;
  std::vector<std::string> policies = {"bace", "delay-first", "cost-first", "fifo"};
  std::vector<double> scales = {1.0};
  uint64_t seed = 1;
  int jobs = 200;
  double load = 0.8;
  double max_slowdown = scheduler::PlannerOptions{}.max_slowdown;
  double efficiency = 0.4;
  bool pareto = false;
};

scheduler::SimOptions sim_options(const SimulateOptions& o, double scale, double max_slowdown) {
  scheduler::SimOptions so;
  so.bandwidth_scale = scale;
  so.planner.max_slowdown = max_slowdown;
  so.planner.cost.efficiency = o.efficiency;
  return so;
}

// --pareto at one bandwidth scale: BACE at every pareto_slowdowns() value (ascending), then each
// requested baseline, with the frontier marked; printed, and returned as JSON.
nlohmann::json run_pareto(const Topology& topology, const Workload& workload, const SimulateOptions& o,
                          const std::vector<scheduler::Policy>& policies, double scale) {
  std::vector<scheduler::ParetoPoint> points;
  for (double x : scheduler::pareto_slowdowns())
    points.push_back(
        {x, scheduler::simulate(topology, workload, scheduler::Policy::kBace, sim_options(o, scale, x)), ""});
  for (auto p : policies)
    if (p == scheduler::Policy::kDelayFirst || p == scheduler::Policy::kCostFirst || p == scheduler::Policy::kFifo)
      points.push_back({-1, scheduler::simulate(topology, workload, p, sim_options(o, scale, o.max_slowdown)), ""});
  scheduler::mark_frontier(points);
  std::ostringstream title;
  title << "JCT/cost frontier of bace across --max-slowdown x: topology " << topology.name << ", workload "
        << workload.name << " (" << workload.jobs.size() << " jobs), inter-region bandwidth x" << scale;
  std::cout << scheduler::format_pareto(title.str(), points) << "\n";
  nlohmann::json out = {{"bandwidth_scale", scale}, {"points", nlohmann::json::array()}};
  for (const auto& p : points) out["points"].push_back(scheduler::to_json(p));
  return out;
}

// The simulator's results as the report library's page takes them.
report::SimulationScenario to_scenario(const std::string& title,
                                       const std::vector<scheduler::SimResult>& results) {
  report::SimulationScenario sc{title, {}};
  for (const auto& r : results) {
    report::PolicyOutcome p;
    p.policy = r.policy;
    for (const auto& j : r.jobs)
      if (j.jct_s() >= 0) p.jct_s.push_back(j.jct_s());
    p.never_started = r.never_started;
    p.avg_jct_s = r.avg_jct_s;
    p.p95_jct_s = r.p95_jct_s;
    p.makespan_s = r.makespan_s;
    p.energy_kwh = r.energy_kwh;
    p.cost_usd = r.cost_usd;
    sc.policies.push_back(std::move(p));
  }
  return sc;
}

void write_json(const std::string& path, const nlohmann::json& doc) {
  if (path.empty()) return;
  std::ofstream out(path, std::ios::trunc);
  if (!out) throw Error("cannot write " + path);
  out << doc.dump(2) << "\n";
}

int run_simulate(const SimulateOptions& o) {
  Topology topology = load_topology(o.topology);
  Workload workload;
  if (!o.workload.empty()) {
    workload = load_workload(o.workload);
  } else {
    workload = scheduler::generate_workload(topology, {o.jobs, o.load, o.seed});
  }
  std::vector<scheduler::Policy> policies;
  for (const auto& name : o.policies) {
    auto p = scheduler::parse_policy(name);
    if (!p || *p == scheduler::Policy::kExact)
      throw InputError("--policy", "", "unknown queue policy \"" + name +
                                           "\" (expected bace, delay-first, cost-first, fifo, bace-no-prio, "
                                           "bace-no-bw or bace-no-price)");
    policies.push_back(*p);
  }
  for (double s : o.scales)
    if (!(s > 0)) throw InputError("--bandwidth-scale", "", "expected positive factors, got " + std::to_string(s));

  nlohmann::json doc = {{"topology", topology.name},
                        {"topology_hash", topology.hash()},
                        {"workload", workload.name},
                        {"jobs", workload.jobs.size()},
                        {"seed", o.seed},
                        {"scenarios", nlohmann::json::array()}};
  if (o.pareto) {
    doc["pareto"] = nlohmann::json::array();
    for (double scale : o.scales) doc["pareto"].push_back(run_pareto(topology, workload, o, policies, scale));
    write_json(o.json_out, doc);
    return kExitOk;
  }
  std::vector<scheduler::SimResult> all;
  std::vector<report::SimulationScenario> scenarios;
  for (double scale : o.scales) {
    std::vector<scheduler::SimResult> results;
    nlohmann::json sc = {{"bandwidth_scale", scale}, {"results", nlohmann::json::array()}};
    for (auto p : policies) {
      const scheduler::SimOptions so = sim_options(o, scale, o.max_slowdown);
      auto t0 = std::chrono::steady_clock::now();
      results.push_back(scheduler::simulate(topology, workload, p, so));
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      nlohmann::json r = scheduler::to_json(results.back(), !o.json_out.empty());
      r["wall_s"] = secs;
      sc["results"].push_back(r);
    }
    std::ostringstream title;
    title << "scenario: topology " << topology.name << ", workload " << workload.name << " (" << workload.jobs.size()
          << " jobs), inter-region bandwidth x" << scale;
    std::cout << scheduler::format_scenario(title.str(), results) << "\n";
    scenarios.push_back(to_scenario(title.str(), results));
    doc["scenarios"].push_back(sc);
    all.insert(all.end(), results.begin(), results.end());
  }
  write_json(o.json_out, doc);
  if (!o.csv_out.empty()) scheduler::write_jobs_csv(all, o.csv_out);
  if (!o.html_out.empty()) {
    report::write_html(o.html_out, report::render_simulation_html("geopipe simulate: " + topology.name + ", " +
                                                                      workload.name, scenarios));
    std::cout << "html: " << o.html_out << "\n";
  }
  return kExitOk;
}

}  // namespace

void register_simulate(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<SimulateOptions>();
  auto* cmd = app.add_subcommand("simulate", "Compare scheduling policies on a multi-tenant workload");
  cmd->add_option("--topology", o->topology, "Topology file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--workload", o->workload, "Workload file (default: generate one from --seed, --jobs, --load)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--policy", o->policies, "Policies, comma separated (default bace,delay-first,cost-first,fifo)")
      ->delimiter(',');
  cmd->add_option("--bandwidth-scale", o->scales, "Inter-region bandwidth factors, comma separated (default 1)")
      ->delimiter(',');
  cmd->add_option("--seed", o->seed, "Seed of the generated workload (default 1)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--jobs", o->jobs, "Jobs in the generated workload (default 200)")->check(CLI::Range(1, 1000000));
  cmd->add_option("--load", o->load, "Offered GPU load of the generated workload (default 0.8)")
      ->check(CLI::Range(0.01, 100.0));
  add_max_slowdown_option(cmd, o->max_slowdown);
  auto* pareto = cmd->add_flag("--pareto", o->pareto,
                               "Print BACE's JCT/cost frontier: BACE at --max-slowdown 0, 0.05, 0.1, 0.25, 0.5, 1 "
                               "and 2 next to the baselines among --policy, each point marked on the frontier or "
                               "dominated (--json: every point)");
  cmd->add_option("--efficiency", o->efficiency, "Achieved fraction of peak GPU FLOP/s (default 0.4)")
      ->check(CLI::Range(0.001, 1.0));
  const auto folder_exists = [](const std::string& path) {  // refuse a path in a missing folder before simulating
    const auto folder = std::filesystem::path(path).parent_path();
    return folder.empty() || std::filesystem::is_directory(folder) ? std::string()
                                                                   : "folder " + folder.string() + " does not exist";
  };
  cmd->add_option("--json", o->json_out, "Write every result (and per-job records) as JSON")->check(folder_exists);
  cmd->add_option("--csv", o->csv_out, "Write one row per job and policy")->check(folder_exists)->excludes(pareto);
  cmd->add_option("--html", o->html_out, "Write a self-contained HTML page: JCT CDF per policy, cost, energy, makespan")
      ->check(folder_exists)
      ->excludes(pareto);
  cmd->callback([o, &exit_code] { exit_code = run_simulate(*o); });
}

}  // namespace geopipe::cli
