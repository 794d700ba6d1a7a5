#include <geopipe/launch/supervise.h>

#include <geopipe/launch/process.h>

#include <geopipe/core/env.h>
#include <geopipe/core/error.h>
#include <geopipe/core/run_dir.h>
#include <geopipe/scheduler/planner.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
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

namespace {

const std::string& region_of(const Plan& plan, int rank) {
  return plan.stages[static_cast<size_t>(plan.stage_of_rank(rank))].region;
}

using RegionPair = std::pair<std::string, std::string>;  // sorted

// The chain of waits from `first` (which timed out waiting for `peer`), up to the rank at its
// end or, when it comes back to a rank already in it, up to and including that rank again.
std::vector<int> follow_waits(int first, int peer, const std::map<int, int>& waits) {
  std::vector<int> chain = {first, peer};
  std::set<int> seen = {first};
  while (waits.count(chain.back()) && seen.insert(chain.back()).second) chain.push_back(waits.at(chain.back()));
  return chain;
}

// The pairs of regions joined by a wait of the chain's cycle, if it ends in one: ranks that wait
// for each other in a ring cannot be helped by anyone, so neither end is hung and the links
// between their regions must be what failed.
std::set<RegionPair> cut_links_of(const Plan& plan, const std::vector<int>& chain) {
  std::set<RegionPair> cut;
  const auto begin = std::find(chain.begin(), chain.end() - 1, chain.back());
  if (begin == chain.end() - 1) return cut;  // no cycle
  for (auto it = begin; it + 1 != chain.end(); ++it) {
    const std::string &a = region_of(plan, *it), &b = region_of(plan, *(it + 1));
    if (a != b) cut.insert(std::minmax(a, b));
  }
  return cut;
}

// The first pipeline stage a region runs (the plan's stage order).
int first_stage_in(const Plan& plan, const std::string& region) {
  for (int s = 0; s < plan.num_stages(); ++s)
    if (plan.stages[static_cast<size_t>(s)].region == region) return s;
  return plan.num_stages();
}

// The region partitioned by the cut links (docs/RELIABILITY.md, "Links cut"): the one region at
// an end of every cut link; with one cut link, its downstream end. Every stage first blocks on
// its upstream neighbour, so cutting region X leaves the ring X-1 <-> X (the one case this
// misreads: a cut of the first region leaves the same ring as a cut of the second). Empty when
// the evidence names no one region.
std::string partitioned_region(const Plan& plan, const std::set<RegionPair>& cut) {
  std::map<std::string, int> ends;
  for (const auto& [a, b] : cut) ++ends[a], ++ends[b];
  std::vector<std::string> common;
  for (const auto& [region, n] : ends)
    if (n == static_cast<int>(cut.size())) common.push_back(region);
  if (common.size() == 1) return common.front();
  if (common.size() != 2) return "";
  return first_stage_in(plan, common[0]) > first_stage_in(plan, common[1]) ? common[0] : common[1];
}

std::string link_names(const std::set<RegionPair>& cut) {
  std::string out;
  for (const auto& [a, b] : cut) out += (out.empty() ? "" : ", ") + a + " <-> " + b;
  return out;
}

// The hosts whose every rank is a suspect, in regions that are not lost (d.lost_regions).
void lost_hosts(const Placement& placement, Diagnosis& d, std::vector<std::string>& causes) {
  std::map<std::string, std::vector<int>> ranks_of;  // host -> its ranks
  for (const RankPlace& p : placement.ranks) ranks_of[p.host].push_back(p.rank);
  for (const HostSlots& h : placement.hosts) {
    const std::vector<int>& ranks = ranks_of[h.host];
    const bool all = !ranks.empty() && std::all_of(ranks.begin(), ranks.end(), [&](int r) { return d.suspects.count(r); });
    if (!all || std::count(d.lost_regions.begin(), d.lost_regions.end(), h.region)) continue;
    d.lost_hosts.push_back({h.region, h.host, h.slots});
    std::string list;
    for (int r : ranks) list += (list.empty() ? "" : ", ") + std::to_string(r);
    causes.push_back("host " + h.host + " of region " + h.region + " is lost (every rank it ran failed: " + list +
                     "); the region keeps its other hosts");
  }
}

}  // namespace

Diagnosis diagnose(const Plan& plan, const std::vector<FailureRecord>& records, const Placement* placement) {
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
  std::set<RegionPair> cut;
  for (const FailureRecord& r : records) {
    if (r.kind == "timeout" && r.peer >= 0 && waits.count(r.rank)) {
      // Follow the waits to the rank at the end: it was not blocked on anyone (hung, or dead).
      const std::vector<int> chain = follow_waits(r.rank, r.peer, waits);
      std::string text = "rank " + std::to_string(r.rank) + " timed out waiting for rank " + std::to_string(chain[1]);
      for (size_t i = 2; i < chain.size(); ++i) text += ", which waited for rank " + std::to_string(chain[i]);
      const int at = chain.back();
      const std::set<RegionPair> ring = cut_links_of(plan, chain);
      if (!ring.empty()) {
        cut.insert(ring.begin(), ring.end());
        causes.push_back(text + " (waits in a ring across regions: cut link(s) " + link_names(ring) + ")");
      } else if (std::count(chain.begin(), chain.end() - 1, at) || undecided.count(at)) {
        causes.push_back(text + (undecided.count(at) ? " (which waited in a collective" : " (a ring of waits") +
                         ": the failed rank is not known)");
      } else {
        d.suspects.insert(at);
        causes.push_back(text + (by_rank.count(at) ? " (which was not waiting: hung)" : ""));
      }
    } else if (r.kind == "error" || r.kind == "bad-input" || r.kind == "timeout") {
      causes.push_back("rank " + std::to_string(r.rank) + ": " + r.message);
    }
  }
  if (!cut.empty()) {
    const std::string region = partitioned_region(plan, cut);
    causes.push_back(region.empty() ? "links cut (" + link_names(cut) + "): no one region is partitioned"
                                    : "links cut: region " + region + " is partitioned from the others");
    for (int rank = 0; rank < plan.world_size() && !region.empty(); ++rank)
      if (region_of(plan, rank) == region) d.suspects.insert(rank);
  }
  std::map<std::string, std::pair<int, int>> per_region;  // region -> (ranks, suspects)
  for (int rank = 0; rank < plan.world_size(); ++rank) {
    auto& [ranks, suspects] = per_region[region_of(plan, rank)];
    ++ranks;
    suspects += d.suspects.count(rank) ? 1 : 0;
  }
  for (const auto& [region, counts] : per_region)
    if (counts.first == counts.second) d.lost_regions.push_back(region);
  if (placement) lost_hosts(*placement, d, causes);
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

Topology without_hosts(const Topology& topology, const std::vector<LostHost>& hosts) {
  Topology t = topology;
  for (const LostHost& h : hosts) {
    const int index = t.region_index(h.region);
    auto* list = index >= 0 ? &t.regions[static_cast<size_t>(index)].hosts : nullptr;
    const auto at = list ? std::find(list->begin(), list->end(), h.host) : std::vector<std::string>::iterator{};
    if (!list || at == list->end())
      throw InputError(topology.name, "regions", "region " + h.region + " has no host " + h.host + " to drop");
    Region& r = t.regions[static_cast<size_t>(index)];
    // The GPUs the host offered (as the inventory counted them), not only the ranks it ran.
    r.gpus = std::max(0, r.gpus - host_gpu_share(r, static_cast<int>(at - list->begin())));
    list->erase(at);
  }
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

// What a re-plan leaves out: `["eu-central"]`, `host h2 of us-east`, or both.
std::string lost_text(const Diagnosis& d) {
  std::string out = d.lost_regions.empty() ? "" : nlohmann::json(d.lost_regions).dump();
  for (const LostHost& h : d.lost_hosts) out += (out.empty() ? "" : ", ") + ("host " + h.host + " of " + h.region);
  return out;
}

nlohmann::json lost_hosts_json(const std::vector<LostHost>& hosts) {
  nlohmann::json out = nlohmann::json::array();
  for (const LostHost& h : hosts) out.push_back({{"region", h.region}, {"host", h.host}});
  return out;
}

// Where the attempt's ranks ran (for lost hosts); nullopt when the request cannot be placed.
std::optional<Placement> placement_of(const LaunchRequest& request) {
  if (request.plan_file.empty()) return std::nullopt;
  try {
    return prepare_launch(request).placement;
  } catch (const Error& e) {
    std::fprintf(stderr, "geopipe launch: cannot tell which hosts the attempt used (no lost-host check): %s\n",
                 e.what());
    return std::nullopt;
  }
}

// The job planned again on what is left; its plan and topology files next to the first plan and
// named after it (PLAN.restart-K.json, whatever plan the failed attempt ran).
void replan(LaunchRequest& request, std::vector<std::string>& args, const Diagnosis& d, int attempt,
            const std::string& first_plan, std::ostream& out) {
  const auto t0 = Clock::now();
  const Plan old = load_plan(request.plan_file);
  const Topology left = without_regions(without_hosts(load_topology(request.topology_file), d.lost_hosts), d.lost_regions);
  const auto policy = scheduler::parse_policy(old.provenance.policy);
  scheduler::PlannerOptions po;
  po.schedule = "auto";
  Plan plan;
  try {
    plan = scheduler::plan_job(policy ? *policy : scheduler::Policy::kBace, left, old.job, po);
  } catch (const InfeasibleError& e) {
    throw InfeasibleError("geopipe launch --replan: without " + lost_text(d) + " the job does not fit what is left: " +
                          e.what());
  }
  const fs::path dir = fs::path(first_plan).parent_path();
  const std::string stem = fs::path(first_plan).stem().string();
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
  out << "geopipe launch: re-planned without " << lost_text(d) << " in " << secs << " s: " << plan.num_stages() << " stages on "
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
  // The program's checkpoints and step log: its own flags, else where its --run-dir puts them.
  const std::string* program_run_dir = arg_value(args, "--run-dir");
  auto in_run_dir = [&](const char* name) {
    return program_run_dir ? (fs::path(*program_run_dir) / name).string() : std::string();
  };
  const std::string* ckpt = arg_value(args, "--checkpoint-dir");
  const std::string checkpoint_dir = ckpt ? *ckpt : in_run_dir(run_dir::kCheckpoints);
  const std::string* log = arg_value(args, "--json-log");
  const std::string json_log = log ? *log : in_run_dir(run_dir::kStepLog);
  const std::string first_plan = request.plan_file;
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
    const std::optional<Placement> placed = placement_of(request);
    const Diagnosis d = request.plan_file.empty()
                            ? Diagnosis{{}, {}, {}, "the job exited " + std::to_string(status)}
                            : diagnose(load_plan(request.plan_file), records, placed ? &*placed : nullptr);
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
    if (o.replan && (!d.lost_regions.empty() || !d.lost_hosts.empty()))
      replan(request, args, d, attempt + 1, first_plan, out);
    const int64_t resumed = checkpoint_dir.empty() ? -1 : manifest_step(checkpoint_dir);
    if (resumed >= 0 && std::find(args.begin(), args.end(), "--resume") == args.end()) args.push_back("--resume");
    unsetenv(env::kTestFault);  // a test's fault strikes the first attempt only
    const LogTail tail = json_log.empty() ? LogTail{} : read_log_tail(json_log, std::max<int64_t>(resumed, 0));
    std::this_thread::sleep_for(std::chrono::duration<double>(o.backoff_s));
    nlohmann::json line = {{"restart", attempt + 1},
                           {"cause", d.cause},
                           {"plan", request.plan_file},
                           {"lost_regions", o.replan ? d.lost_regions : std::vector<std::string>{}},
                           {"lost_hosts", lost_hosts_json(o.replan ? d.lost_hosts : std::vector<LostHost>{})},
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
