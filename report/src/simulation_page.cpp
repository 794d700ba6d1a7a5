// The simulation page (`geopipe simulate --html`): per scenario, each policy's JCT distribution
// (CDF), cost, energy and makespan bars, and every policy's (average JCT, cost) on one plot.
#include "page.h"

#include <geopipe/report/report.h>
#include <geopipe/report/svg.h>

#include <algorithm>
#include <sstream>

namespace geopipe::report {

namespace {

using svg::escape;
using svg::fmt;

constexpr double kHour = 3600;

svg::LineChart jct_cdf(const SimulationScenario& sc, const std::string& id) {
  svg::LineChart c{id, "Job completion time, CDF", "JCT (hours)", "fraction of jobs finished"};
  c.y_from_zero = true;
  for (size_t i = 0; i < sc.policies.size(); ++i) {
    std::vector<double> jct = sc.policies[i].jct_s;
    std::sort(jct.begin(), jct.end());
    // Fraction of the whole workload (jobs never started never reach 1).
    const double n = static_cast<double>(jct.size() + static_cast<size_t>(sc.policies[i].never_started));
    svg::Series s{sc.policies[i].policy, page::palette(i)};
    for (size_t k = 0; k < jct.size(); ++k) s.points.emplace_back(jct[k] / kHour, static_cast<double>(k + 1) / n);
    c.series.push_back(s);
  }
  return c;
}

svg::BarChart policy_bars(const SimulationScenario& sc, const std::string& id, const std::string& title,
                          const std::string& unit, double (*value)(const PolicyOutcome&)) {
  svg::BarChart b{id, title, unit};
  b.width = 420;
  b.height = 260;
  b.series_names = {title};
  b.series_colors = {page::palette(0)};
  for (const auto& p : sc.policies) {
    b.categories.push_back(p.policy);
    b.values.push_back({value(p)});
  }
  return b;
}

std::string scenario_html(const SimulationScenario& sc, size_t index) {
  const std::string k = "-" + std::to_string(index);
  svg::LineChart scatter{"chart-jct-cost" + k, "Average JCT against cost, per policy", "average JCT (hours)", "cost (US$)"};
  for (size_t i = 0; i < sc.policies.size(); ++i) {
    svg::Series s{sc.policies[i].policy, page::palette(i), {{sc.policies[i].avg_jct_s / kHour, sc.policies[i].cost_usd}}};
    s.line = false;
    s.label_points = true;
    scatter.series.push_back(s);
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : sc.policies)
    rows.push_back({p.policy, fmt(p.avg_jct_s / kHour), fmt(p.p95_jct_s / kHour), fmt(p.makespan_s / kHour),
                    fmt(p.energy_kwh), "$" + fmt(p.cost_usd), std::to_string(p.jct_s.size()),
                    std::to_string(p.never_started)});
  std::ostringstream o;
  o << "<div class=\"grid\">" << svg::line_chart(jct_cdf(sc, "chart-jct-cdf" + k)) << svg::line_chart(scatter) << "</div>"
    << "<div class=\"grid\">"
    << svg::bar_chart(policy_bars(sc, "chart-cost" + k, "Cost", "US$", [](const PolicyOutcome& p) { return p.cost_usd; }))
    << svg::bar_chart(policy_bars(sc, "chart-energy" + k, "Energy", "kWh",
                                  [](const PolicyOutcome& p) { return p.energy_kwh; }))
    << svg::bar_chart(policy_bars(sc, "chart-makespan" + k, "Makespan", "hours",
                                  [](const PolicyOutcome& p) { return p.makespan_s / kHour; }))
    << "</div>"
    << page::table("policies", {"policy", "avg JCT h", "p95 JCT h", "makespan h", "energy kWh", "cost", "finished",
                                "never started"},
                   rows);
  return page::section("scenario" + k, sc.title, o.str());
}

}  // namespace

std::string render_simulation_html(const std::string& title, const std::vector<SimulationScenario>& scenarios) {
  std::string body = "<h1>" + escape(title) + "</h1>\n";
  for (size_t i = 0; i < scenarios.size(); ++i) body += scenario_html(scenarios[i], i);
  return page::document(title, body);
}

}  // namespace geopipe::report
