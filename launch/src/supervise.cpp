#include <geopipe/launch/supervise.h>

#include <geopipe/launch/process.h>

#include <geopipe/core/env.h>
#include <geopipe/core/error.h>
#include <geopipe/scheduler/planner.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <ostream>
#include <thread>

#include <sys/stat.h>
#include <unistd.h>

namespace geopipe::launch {

namespace fs = std::filesystem;

namespace {

constexpr double kStaleWaitS = 1.0;

std::string rank_name(const Plan& plan, int rank) {
  return "rank " + std::to_string(rank) + " (" + plan.stages[static_cast<size_t>(plan.stage_of_rank(rank))].region + ")";
}

}  // namespace

Diagnosis diagnose(const Plan& plan, const std::vector<FailureRecord>& records) {
  Diagnosis d;
  std::map<int, const FailureRecord*> by_rank;
  std::map<int, int> waits;  // rank -> the rank it was blocked on (timed out, or when terminated)
  std::set<int> undecided;   // ranks blocked in a collective
  for (const FailureRecord& r : records) {
    by_rank[r.rank] = &r;
    // A wait of under a second when the launcher terminated the rank is not part of the hang: a
    // stopped rank that was just continued (to be terminated) may have started one.
    // A rank blocked in a collective (peer -2) waits on a group, not on one rank: the chain stops
    // there undecided rather than blaming it.
    if (r.peer == -2) undecided.insert(r.rank);
    if (r.peer >= 0 && r.peer < plan.world_size() &&
        (r.kind == "timeout" || (r.kind == "terminated" && r.waited_s >= kStaleWaitS)))
      waits[r.rank] = r.peer;
  }
  std::vector<std::string> causes;
  for (int rank = 0; rank < plan.world_size(); ++rank)
    if (!by_rank.count(rank)) {
      d.suspects.insert(rank);
      causes.push_back(rank_name(plan, rank) + " left no failure record (killed or crashed)");
    }
  for (const FailureRecord& r : records) {
    if (r.kind == "timeout" && r.peer >= 0 && waits.count(r.rank)) {
      // Follow the waits to the rank at the end: it was not blocked on anyone (hung, or dead).
      std::string chain = "rank " + std::to_string(r.rank) + " timed out waiting for rank " + std::to_string(r.peer);
      std::set<int> seen = {r.rank};
      int at = r.peer;
      while (waits.count(at) && seen.insert(at).second) {
        at = waits[at];
        chain += ", which waited for rank " + std::to_string(at);
      }
      if (undecided.count(at)) {
        causes.push_back(chain + " (which waited in a collective: the failed rank is not known)");
        continue;
      }
      d.suspects.insert(at);
      causes.push_back(chain + (by_rank.count(at) ? " (which was not waiting: hung)" : ""));
    } else if (r.kind == "error" || r.kind == "bad-input" || r.kind == "timeout") {
      causes.push_back("rank " + std::to_string(r.rank) + ": " + r.message);
    }
  }
  std::map<std::string, std::pair<int, int>> per_region;  // region -> (ranks, suspects)
  for (int rank = 0; rank < plan.world_size(); ++rank) {
    auto& [ranks, suspects] = per_region[plan.stages[static_cast<size_t>(plan.stage_of_rank(rank))].region];
    ++ranks;
    suspects += d.suspects.count(rank) ? 1 : 0;
  }
  for (const auto& [region, counts] : per_region)
    if (counts.first == counts.second) d.lost_regions.push_back(region);
  for (const std::string& c : causes) d.cause += (d.cause.empty() ? "" : "; ") + c;
  if (d.cause.empty()) d.cause = "the job exited non-zero without a failure record";
  return d;
}

Topology without_regions(const Topology& topology, const std::vector<std::string>& regions) {
  auto gone = [&](const std::string& name) { return std::find(regions.begin(), regions.end(), name) != regions.end(); };
  Topology t = topology;
  t.regions.erase(std::remove_if(t.regions.begin(), t.regions.end(), [&](const Region& r) { return gone(r.name); }),
                  t.regions.end());
  t.links.erase(std::remove_if(t.links.begin(), t.links.end(),
                               [&](const Link& l) { return gone(l.a) || gone(l.b); }),
                t.links.end());
  t.finalize();
  return t;
}

namespace {

using Clock = std::chrono::steady_clock;

// The value of `flag` in PROGRAM ARGS (after split_equals); nullptr when absent.
std::string* arg_value(std::vector<std::string>& args, const std::string& flag) {
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == flag) return &args[i + 1];
  return nullptr;
}

// "--flag=V" becomes "--flag" "V", so that a value can be replaced in place.
void split_equals(std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (const std::string& a : args) {
    const size_t eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
      out.push_back(a.substr(0, eq));
      out.push_back(a.substr(eq + 1));
    } else {
      out.push_back(a);
    }
  }
  args = out;
}

struct LogTail {  // what the program's JSON log says about the failed attempt
  int64_t last_step = 0;
  double redone_s = 0;         // step_s of the steps after `from_step`
  double since_last_s = 0;     // seconds since its last line was written (the failure, near enough)
};
LogTail read_log_tail(const std::string& path, int64_t from_step) {
  LogTail t;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;
    const int64_t step = j["step"].get<int64_t>();
    t.last_step = std::max(t.last_step, step);
    if (step > from_step && j.contains("step_s") && j["step_s"].is_number()) t.redone_s += j["step_s"].get<double>();
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    const double mtime = static_cast<double>(st.st_mtim.tv_sec) + 1e-9 * static_cast<double>(st.st_mtim.tv_nsec);
    t.since_last_s = std::max(0.0, std::chrono::duration<double>(
                                       std::chrono::system_clock::now().time_since_epoch()).count() - mtime);
  }
  return t;
}

int64_t manifest_step(const std::string& checkpoint_dir) {
  std::ifstream in(fs::path(checkpoint_dir) / "manifest.json");
  const auto j = nlohmann::json::parse(in, nullptr, false);
  return j.is_object() && j.contains("step") && j["step"].is_number_integer() ? j["step"].get<int64_t>() : -1;
}

// The job planned again on what is left; its plan and topology files next to the old plan.
void replan(LaunchRequest& request, std::vector<std::string>& args, const Diagnosis& d, int attempt,
            std::ostream& out) {
  const auto t0 = Clock::now();
  const Plan old = load_plan(request.plan_file);
  const Topology left = without_regions(load_topology(request.topology_file), d.lost_regions);
  const auto policy = scheduler::parse_policy(old.provenance.policy);
  scheduler::PlannerOptions po;
  po.schedule = "auto";
  Plan plan;
  try {
    plan = scheduler::plan_job(policy ? *policy : scheduler::Policy::kBace, left, old.job, po);
  } catch (const InfeasibleError& e) {
    throw InfeasibleError("geopipe launch --replan: without region(s) " + nlohmann::json(d.lost_regions).dump() +
                          " the job does not fit what is left: " + e.what());
  }
  const fs::path dir = fs::path(request.plan_file).parent_path();
  const std::string stem = fs::path(request.plan_file).stem().string();
  const std::string topo_file = (dir / (stem + ".restart-" + std::to_string(attempt) + ".topology.json")).string();
  const std::string plan_file = (dir / (stem + ".restart-" + std::to_string(attempt) + ".json")).string();
  std::ofstream(topo_file) << to_json(left).dump(2) << "\n";
  plan.provenance.topology_name = topo_file;
  save_plan(plan, plan_file);
  request.topology_file = topo_file;
  request.plan_file = plan_file;
  if (std::string* p = arg_value(args, "--plan")) *p = plan_file;
  if (std::string* t = arg_value(args, "--topology")) *t = topo_file;
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.3f", std::chrono::duration<double>(Clock::now() - t0).count());
  out << "geopipe launch: re-planned without " << nlohmann::json(d.lost_regions).dump() << " in " << secs << " s: " << plan.num_stages() << " stages on "
      << plan.world_size() << " ranks, " << plan_file << "\n";
}

}  // namespace

int supervise(LaunchRequest request, const SuperviseOptions& o, std::ostream& out) {
  std::vector<std::string>& args = request.program;
  split_equals(args);
  if (o.replan && (request.plan_file.empty() || !arg_value(args, "--plan")))
    throw InputError("--replan", "replan", "needs --plan and the program's own --plan argument (which it replaces)");
  const std::string root = (request.run_dir.empty() ? fs::temp_directory_path() / "geopipe-supervise"
                                                    : fs::path(request.run_dir) / "failures").string() +
                           "-" + std::to_string(::getpid());
  const std::string* ckpt = arg_value(args, "--checkpoint-dir");
  const std::string checkpoint_dir = ckpt ? *ckpt : "";
  const std::string* log = arg_value(args, "--json-log");
  const std::string json_log = log ? *log : "";
  std::vector<std::string> restarts;  // one line each, for the closing summary
  for (int attempt = 0;; ++attempt) {
    const std::string failures = root + "/attempt-" + std::to_string(attempt);
    fs::remove_all(failures);
    setenv(env::kFailureDir, failures.c_str(), 1);
    const int status = launch(request, out);
    if (const int sig = last_forwarded_signal(); sig != 0) {  // the user stopped the job: not a failure
      out << "geopipe launch: stopped by signal " << sig << "; not restarting\n";
      if (request.run_dir.empty()) fs::remove_all(root);
      return status;
    }
    const std::vector<FailureRecord> records = read_failure_records(failures);
    if (status == kExitOk && records.empty()) {
      if (request.run_dir.empty()) fs::remove_all(root);
      if (!restarts.empty()) {
        out << "geopipe launch: the job finished after " << restarts.size() << " restart(s):\n";
        for (const std::string& r : restarts) out << "  " << r << "\n";
      }
      return kExitOk;
    }
    const Diagnosis d = request.plan_file.empty() ? Diagnosis{{}, {}, "the job exited " + std::to_string(status)}
                                                  : diagnose(load_plan(request.plan_file), records);
    out << "geopipe launch: attempt " << attempt + 1 << " failed (exit " << status << "): " << d.cause << "\n";
    const bool bad_input = std::any_of(records.begin(), records.end(), [](auto& r) { return r.kind == "bad-input"; });
    if (status == kExitBadInput || bad_input) {  // a restart would fail the same way
      if (request.run_dir.empty()) fs::remove_all(root);
      return kExitBadInput;
    }
    if (attempt >= o.max_restarts) {
      out << "geopipe launch: giving up: the job failed " << attempt + 1 << " time(s), --max-restarts " << o.max_restarts
          << "; last cause: " << d.cause << "\n";
      if (request.run_dir.empty()) fs::remove_all(root);
      return status == kExitOk ? kExitFailure : status;
    }
    if (o.replan && !d.lost_regions.empty()) replan(request, args, d, attempt + 1, out);
    const int64_t resumed = checkpoint_dir.empty() ? -1 : manifest_step(checkpoint_dir);
    if (resumed >= 0 && std::find(args.begin(), args.end(), "--resume") == args.end()) args.push_back("--resume");
    unsetenv(env::kTestFault);  // a test's fault strikes the first attempt only
    const LogTail tail = json_log.empty() ? LogTail{} : read_log_tail(json_log, std::max<int64_t>(resumed, 0));
    std::this_thread::sleep_for(std::chrono::duration<double>(o.backoff_s));
    nlohmann::json line = {{"restart", attempt + 1},
                           {"cause", d.cause},
                           {"plan", request.plan_file},
                           {"lost_regions", o.replan ? d.lost_regions : std::vector<std::string>{}},
                           {"resume_step", std::max<int64_t>(resumed, 0)},
                           {"steps_redone", std::max<int64_t>(tail.last_step - std::max<int64_t>(resumed, 0), 0)},
                           // the steps to train again, and the time from the last logged step to this relaunch
                           {"seconds_lost", tail.redone_s + tail.since_last_s}};
    if (!json_log.empty()) std::ofstream(json_log, std::ios::app) << line.dump() << "\n";
    char lost[32];
    std::snprintf(lost, sizeof lost, "%.1f", line["seconds_lost"].get<double>());
    restarts.push_back("restart " + std::to_string(attempt + 1) + ": " + d.cause + "; plan " + request.plan_file + ", " +
                       std::to_string(line["steps_redone"].get<int64_t>()) + " step(s) redone, " + lost + " s lost");
    out << "geopipe launch: restart " << attempt + 1 << " of " << o.max_restarts << " from "
        << (resumed >= 0 ? "the checkpoint of step " + std::to_string(resumed) : std::string("the start")) << " ("
        << line["steps_redone"].get<int64_t>() << " step(s) redone)\n";
    out.flush();
  }
}

}  // namespace geopipe::launch
