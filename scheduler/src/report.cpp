#include <geopipe/core/error.h>
#include <geopipe/scheduler/simulator.h>

#include <nlohmann/json.hpp>

#include <cstdarg>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace geopipe::scheduler {

double percent_change(double value, double base) { return base != 0 ? 100.0 * (value - base) / base : 0.0; }

namespace {
std::string printf_str(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string printf_str(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}
}  // namespace

std::string format_scenario(const std::string& title, const std::vector<SimResult>& results) {
  std::ostringstream out;
  out << title << "\n";
  out << printf_str("%-14s %12s %12s %12s %12s %12s %12s %12s %9s\n", "policy", "avg JCT (h)", "p95 JCT (h)",
                    "makespan (h)", "energy (kWh)", "elec. (USD)", "egress (USD)", "cost (USD)", "finished");
  for (const auto& r : results)
    out << printf_str("%-14s %12.3f %12.3f %12.3f %12.1f %12.2f %12.2f %12.2f %5d/%-3zu\n", r.policy.c_str(),
                      r.avg_jct_s / 3600, r.p95_jct_s / 3600, r.makespan_s / 3600, r.energy_kwh, r.electricity_usd,
                      r.egress_usd, r.cost_usd, r.finished, r.jobs.size());
  const char* baselines[] = {"delay-first", "cost-first", "fifo"};
  bool header = false;
  for (const auto& r : results) {
    for (const char* b : baselines) {
      const SimResult* base = nullptr;
      for (const auto& x : results)
        if (x.policy == b) base = &x;
      if (!base || base == &r) continue;
      if (!header) {
        out << "change against each baseline (negative = lower than the baseline):\n";
        out << printf_str("%-14s %-12s %9s %9s %9s %9s %9s\n", "policy", "vs", "avg JCT", "p95 JCT", "makespan",
                          "energy", "cost");
        header = true;
      }
      out << printf_str("%-14s %-12s %8.1f%% %8.1f%% %8.1f%% %8.1f%% %8.1f%%\n", r.policy.c_str(), b,
                        percent_change(r.avg_jct_s, base->avg_jct_s), percent_change(r.p95_jct_s, base->p95_jct_s),
                        percent_change(r.makespan_s, base->makespan_s), percent_change(r.energy_kwh, base->energy_kwh),
                        percent_change(r.cost_usd, base->cost_usd));
    }
  }
  for (const auto& r : results)
    if (r.never_started > 0)
      out << r.policy << ": " << r.never_started << " job(s) never started (see the per-job CSV for why)\n";
  return out.str();
}

nlohmann::json to_json(const SimResult& r, bool with_jobs) {
  nlohmann::json j = {{"policy", r.policy},
                      {"bandwidth_scale", r.bandwidth_scale},
                      {"jobs", r.jobs.size()},
                      {"finished", r.finished},
                      {"never_started", r.never_started},
                      {"avg_jct_s", r.avg_jct_s},
                      {"p95_jct_s", r.p95_jct_s},
                      {"makespan_s", r.makespan_s},
                      {"energy_kwh", r.energy_kwh},
                      {"electricity_usd", r.electricity_usd},
                      {"egress_usd", r.egress_usd},
                      {"cost_usd", r.cost_usd},
                      {"events", r.events},
                      {"placements_tried", r.placements_tried},
                      {"max_link_oversubscription", r.max_link_oversubscription},
                      {"over_memory", r.over_memory},
                      {"needs_recompute", r.needs_recompute}};
  if (with_jobs) {
    j["job_records"] = nlohmann::json::array();
    for (const auto& x : r.jobs)
      j["job_records"].push_back({{"name", x.name},
                                  {"arrival_s", x.arrival_s},
                                  {"start_s", x.start_s},
                                  {"end_s", x.end_s},
                                  {"stages", x.stages},
                                  {"replicas", x.replicas},
                                  {"memory_fits", x.memory_fits},
                                  {"needs_recompute", x.needs_recompute},
                                  {"inter_region_hops", x.inter_region_hops},
                                  {"regions", x.regions},
                                  {"planned_s", x.planned_s},
                                  {"energy_kwh", x.energy_kwh},
                                  {"electricity_usd", x.electricity_usd},
                                  {"egress_usd", x.egress_usd},
                                  {"cost_usd", x.cost_usd},
                                  {"relaxed", x.relaxed},
                                  {"waiting_reason", x.waiting_reason}});
  }
  return j;
}

void write_jobs_csv(const std::vector<SimResult>& results, const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) throw Error("cannot write " + path);
  auto quote = [](const std::string& s) {
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  out << "policy,bandwidth_scale,job,arrival_s,start_s,end_s,jct_s,stages,replicas,inter_region_hops,regions,planned_s,"
         "energy_kwh,electricity_usd,egress_usd,cost_usd,relaxed,waiting_reason\n";
  for (const auto& r : results)
    for (const auto& j : r.jobs)
      out << r.policy << "," << r.bandwidth_scale << "," << quote(j.name) << "," << j.arrival_s << "," << j.start_s
          << "," << j.end_s << "," << j.jct_s() << "," << j.stages << "," << j.replicas << ","
          << j.inter_region_hops << ","
          << quote(j.regions) << "," << j.planned_s << "," << j.energy_kwh << "," << j.electricity_usd << ","
          << j.egress_usd << "," << j.cost_usd << ","
          << (j.relaxed ? 1 : 0) << "," << quote(j.waiting_reason) << "\n";
  if (!out) throw Error("error while writing " + path);
}

// ---- Frontier -------------------------------------------------------------------------------

std::string ParetoPoint::label() const {
  return max_slowdown < 0 ? result.policy : result.policy + printf_str(" x=%g", max_slowdown);
}

const std::vector<double>& pareto_slowdowns() {
  static const std::vector<double> x = {0, 0.05, 0.1, 0.25, 0.5, 1, 2};
  return x;
}

void mark_frontier(std::vector<ParetoPoint>& points) {
  for (auto& p : points) {
    p.dominated_by.clear();
    const double j = p.result.avg_jct_s, c = p.result.cost_usd;
    for (const auto& q : points) {
      const double qj = q.result.avg_jct_s, qc = q.result.cost_usd;
      if (&q != &p && qj <= j && qc <= c && (qj < j || qc < c)) {
        p.dominated_by = q.label();
        break;
      }
    }
  }
}

std::string format_pareto(const std::string& title, const std::vector<ParetoPoint>& points) {
  std::ostringstream out;
  out << title << "\n";
  out << printf_str("%-16s %12s %12s %12s %12s %12s %12s  %s\n", "policy", "avg JCT (h)", "p95 JCT (h)",
                    "makespan (h)", "elec. (USD)", "egress (USD)", "cost (USD)", "frontier");
  for (const auto& p : points) {
    const SimResult& r = p.result;
    out << printf_str("%-16s %12.3f %12.3f %12.3f %12.2f %12.2f %12.2f  %s\n", p.label().c_str(), r.avg_jct_s / 3600,
                      r.p95_jct_s / 3600, r.makespan_s / 3600, r.electricity_usd, r.egress_usd, r.cost_usd,
                      p.dominated_by.empty() ? "yes" : ("no (dominated by " + p.dominated_by + ")").c_str());
  }
  return out.str();
}

nlohmann::json to_json(const ParetoPoint& p) {
  nlohmann::json j = to_json(p.result, false);
  j["label"] = p.label();
  if (p.max_slowdown >= 0) j["max_slowdown"] = p.max_slowdown;
  j["on_frontier"] = p.dominated_by.empty();
  if (!p.dominated_by.empty()) j["dominated_by"] = p.dominated_by;
  return j;
}

}  // namespace geopipe::scheduler
