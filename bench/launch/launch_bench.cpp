// geopipe-launch-bench: what `geopipe launch` costs and what --emulate netns delivers.
//   setup+teardown of N region namespaces (library only, no process started in them)
//   `geopipe launch` of N regions x 1 rank running `true`, --emulate software and netns (wall
//   time from start to exit: namespaces, mpirun, daemons, teardown)
//   the MPI rate across one emulated link of --rate-mbit (netns), as a fraction of the limit
// Prints a table; --json FILE writes the same rows. netns rows need root (skipped otherwise).
//   geopipe-launch-bench [--regions 4] [--repeat 5] [--rate-mbit 200] [--mib 48] [--json FILE]
#include <geopipe/core/config.h>
#include <geopipe/launch/netns.h>
#include <geopipe/launch/process.h>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace {

using geopipe::launch::CommandResult;
using geopipe::launch::run_capture;
using Clock = std::chrono::steady_clock;

struct Row {
  std::string name;
  int regions = 0;
  int ranks = 0;
  int repeats = 0;
  double mean_s = 0, min_s = 0, max_s = 0;
  std::string result;  // e.g. measured rate, or why skipped
};

// A topology of n regions, every pair linked at `gbps`, written to `file`.
void write_topology(const std::string& file, int n, double gbps) {
  nlohmann::json t;
  t["name"] = "bench" + std::to_string(n);
  t["intra_region"] = {{"gbps", 10}, {"latency_ms", 0.05}};
  t["regions"] = nlohmann::json::array();
  for (int i = 0; i < n; ++i)
    t["regions"].push_back({{"name", "r" + std::to_string(i)}, {"gpus", 2}, {"gpu_type", "cpu"}, {"gpu_tflops", 0.02},
                            {"gpu_mem_gb", 4}, {"gpu_power_w", 100}, {"pue", 1.2}, {"price_usd_per_kwh", 0.1}});
  t["links"] = nlohmann::json::array();
  for (int a = 0; a < n; ++a)
    for (int b = a + 1; b < n; ++b)
      t["links"].push_back({{"a", "r" + std::to_string(a)}, {"b", "r" + std::to_string(b)}, {"gbps", gbps},
                            {"latency_ms", 0}});
  std::ofstream(file) << t.dump(1);
}

template <class F>
Row timed(const std::string& name, int regions, int ranks, int repeats, F&& once) {
  Row row;
  row.name = name;
  row.regions = regions;
  row.ranks = ranks;
  row.repeats = repeats;
  std::vector<double> s;
  for (int i = 0; i < repeats; ++i) {
    auto t0 = Clock::now();
    std::string err = once();
    s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    if (!err.empty()) {
      row.result = "FAILED: " + err;
      break;
    }
  }
  row.min_s = *std::min_element(s.begin(), s.end());
  row.max_s = *std::max_element(s.begin(), s.end());
  for (double x : s) row.mean_s += x / s.size();
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  int regions = 4, repeat = 5;
  double rate_mbit = 200;
  int mib = 48;
  std::string json_out;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--regions") regions = std::stoi(next());
    else if (a == "--repeat") repeat = std::stoi(next());
    else if (a == "--rate-mbit") rate_mbit = std::stod(next());
    else if (a == "--mib") mib = std::stoi(next());
    else if (a == "--json") json_out = next();
    else {
      std::fprintf(stderr, "usage: %s [--regions N] [--repeat N] [--rate-mbit M] [--mib N] [--json FILE]\n", argv[0]);
      return 2;
    }
  }
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("geopipe-launch-bench-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string topo = (dir / "topology.json").string();
  const std::string topo2 = (dir / "two.json").string();
  write_topology(topo, regions, rate_mbit / 1000);
  write_topology(topo2, 2, rate_mbit / 1000);
  const std::string k = "1";

  std::vector<Row> rows;
  auto launch_true = [&](const std::string& emulate) {
    return [&, emulate]() -> std::string {
      CommandResult r = run_capture({GEOPIPE_CLI, "launch", "--topology", topo, "--ranks-per-region", k, "--emulate",
                                     emulate, "--timeout", "60", "--", "true"},
                                    90);
      return r.exit_code == 0 ? "" : r.output;
    };
  };
  rows.push_back(timed("launch software, true", regions, regions, repeat, launch_true("software")));

  const std::string why = geopipe::launch::netns_unavailable_reason();
  if (!why.empty()) {
    rows.push_back({"netns rows", regions, 0, 0, 0, 0, 0, "skipped: " + why});
  } else {
    geopipe::Topology t = geopipe::load_topology(topo);
    std::vector<std::string> names;
    for (const auto& r : t.regions) names.push_back(r.name);
    rows.push_back(timed("netns setup+teardown", regions, 0, repeat, [&]() -> std::string {
      try {
        geopipe::launch::NetnsEmulation e(geopipe::launch::make_netns_layout(t, names, getpid()), t);
        e.teardown();
      } catch (const std::exception& ex) {
        return ex.what();
      }
      return "";
    }));
    rows.push_back(timed("launch netns, true", regions, regions, repeat, launch_true("netns")));
    std::vector<double> rates;
    Row rate = timed("launch netns, MPI rate", 2, 2, repeat, [&]() -> std::string {
      CommandResult r = run_capture({GEOPIPE_CLI, "launch", "--topology", topo2, "--ranks-per-region", k, "--emulate",
                                     "netns", "--timeout", "120", "--", LAUNCH_MPI_RATE, "--mib", std::to_string(mib)},
                                    150);
      std::smatch m;
      if (r.exit_code != 0 || !std::regex_search(r.output, m, std::regex(R"(rate_mbit_per_s=([0-9.]+))")))
        return r.output;
      rates.push_back(std::stod(m[1]));
      return "";
    });
    if (rate.result.empty() && !rates.empty()) {
      std::sort(rates.begin(), rates.end());
      char buf[160];
      std::snprintf(buf, sizeof buf, "%.1f Mbit/s median (%.1f..%.1f) = %.1f %% of %.0f", rates[rates.size() / 2],
                    rates.front(), rates.back(), 100 * rates[rates.size() / 2] / rate_mbit, rate_mbit);
      rate.result = buf;
    }
    rows.push_back(rate);
  }
  fs::remove_all(dir);

  std::printf("# geopipe-launch-bench: %d regions, %d repeats\n", regions, repeat);
  std::printf("%-26s %7s %5s %7s %8s %8s %8s  %s\n", "case", "regions", "ranks", "repeats", "mean(s)", "min(s)",
              "max(s)", "result");
  nlohmann::json j = nlohmann::json::array();
  for (const auto& r : rows) {
    std::printf("%-26s %7d %5d %7d %8.3f %8.3f %8.3f  %s\n", r.name.c_str(), r.regions, r.ranks, r.repeats, r.mean_s,
                r.min_s, r.max_s, r.result.c_str());
    j.push_back({{"case", r.name}, {"regions", r.regions}, {"ranks", r.ranks}, {"repeats", r.repeats},
                 {"mean_s", r.mean_s}, {"min_s", r.min_s}, {"max_s", r.max_s}, {"result", r.result}});
  }
  if (!json_out.empty()) std::ofstream(json_out) << j.dump(1) << "\n";
  bool failed = std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.result.rfind("FAILED", 0) == 0; });
  return failed ? 1 : 0;
}
