// Helpers shared by the launch tests: shipped topologies and plans built on them.
#pragma once

#include <geopipe/core/config.h>
#include <geopipe/core/plan.h>
#include <geopipe/launch/netns.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace geopipe::launch::testing {

inline std::string src(const std::string& rel) { return std::string(GEOPIPE_SOURCE_DIR) + "/" + rel; }

// The common start of the root-only netns tests: "" when they can run here (then Open MPI may run
// as root and `dir` is a fresh folder named `prefix` + pid), else the reason to skip.
inline std::string netns_test_setup(const std::string& prefix, std::filesystem::path& dir) {
  std::string why = netns_unavailable_reason();
  if (!why.empty()) return why;
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  dir = std::filesystem::temp_directory_path() / (prefix + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  return "";
}

inline Topology local4() { return load_topology(src("examples/topologies/local4.json")); }

// aws6 with hosts added: numeric addresses resolve without DNS. Oregon gets two hosts (its 64
// GPUs split 32/32), every other region one.
inline Topology aws6_with_hosts() {
  Topology t = load_topology(src("examples/topologies/aws6.json"));
  for (size_t i = 0; i < t.regions.size(); ++i) {
    const std::string net = "10.0." + std::to_string(i + 1) + ".";
    t.regions[i].hosts = {net + "1"};
    if (i == 0) t.regions[i].hosts.push_back(net + "2");
  }
  return t;
}

// A plan for `topology`: stage i in regions[i].first with regions[i].second ranks, ranks
// numbered in stage order, one layer per stage.
inline Plan make_plan(const Topology& topology, const std::vector<std::pair<std::string, int>>& stages) {
  Plan p;
  p.job = load_job(src("examples/jobs/gpt-tiny.json"));
  p.job.name = "test-job";
  p.job.model.layers = static_cast<int>(stages.size());
  p.job.min_stages = p.job.max_stages = static_cast<int>(stages.size());
  int rank = 0;
  for (size_t i = 0; i < stages.size(); ++i) {
    StagePlan s;
    s.index = static_cast<int>(i);
    s.region = stages[i].first;
    for (int k = 0; k < stages[i].second; ++k) s.ranks.push_back(rank++);
    s.layer_begin = static_cast<int>(i);
    s.layer_end = static_cast<int>(i) + 1;
    p.stages.push_back(s);
    p.schedule.warmup.push_back(static_cast<int>(stages.size() - 1 - i));
    if (i > 0) {
      LinkPlan l;
      l.from_stage = static_cast<int>(i) - 1;
      l.to_stage = static_cast<int>(i);
      l.from_region = stages[i - 1].first;
      l.to_region = stages[i].first;
      p.links.push_back(l);
    }
  }
  p.provenance.policy = "manual";
  p.provenance.generator = "launch tests";
  p.provenance.job_hash = p.job.hash();
  p.provenance.topology_hash = topology.hash();
  p.provenance.topology_name = topology.name;
  return p;
}


// Polls `done` every 50 ms for up to `seconds`.
inline bool wait_until(const std::function<bool()>& done, double seconds) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

// A shell script for each rank: writes its pid to PREFIX<rank> (atomically), then sleeps far
// longer than any test.
inline std::string record_pid_and_sleep(const std::string& prefix) {
  return "echo $$ > " + prefix + "$OMPI_COMM_WORLD_RANK.tmp && mv " + prefix + "$OMPI_COMM_WORLD_RANK.tmp " + prefix +
         "$OMPI_COMM_WORLD_RANK && exec sleep 300";
}

// Starts `args` (args[0] a path) in a child; `own_group` puts it in a process group of its own.
inline pid_t spawn(std::vector<std::string> args, bool own_group = false) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    if (own_group) setpgid(0, 0);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Waits until PREFIX0..PREFIX<n-1> exist, then reads the pids; empty if they never appeared.
inline std::vector<pid_t> wait_for_rank_pids(const std::string& prefix, int n, double seconds = 60) {
  bool started = wait_until([&] {
    for (int r = 0; r < n; ++r)
      if (!std::filesystem::exists(prefix + std::to_string(r))) return false;
    return true;
  }, seconds);
  std::vector<pid_t> pids;
  for (int r = 0; r < n && started; ++r) {
    std::ifstream in(prefix + std::to_string(r));
    pid_t p = 0;
    in >> p;
    pids.push_back(p);
  }
  return pids;
}

// Sends SIGTERM and reaps the child; SIGKILL if it has not ended within `seconds`.
// Returns whether it ended by itself; *status gets its wait status.
inline bool terminate_and_reap(pid_t pid, int* status, double seconds = 60) {
  kill(pid, SIGTERM);
  bool ended = wait_until([&] { return waitpid(pid, status, WNOHANG) == pid; }, seconds);
  if (!ended) {
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
  }
  return ended;
}

// The processes that are still alive after `seconds` (each then killed, so nothing leaks).
inline std::vector<pid_t> survivors(const std::vector<pid_t>& pids, double seconds = 20) {
  std::vector<pid_t> alive;
  for (pid_t p : pids) {
    if (!wait_until([&] { return kill(p, 0) != 0; }, seconds)) {
      alive.push_back(p);
      kill(p, SIGKILL);
    }
  }
  return alive;
}

}  // namespace geopipe::launch::testing
