// --emulate netns for real: regions in network namespaces with kernel rate limits, mpirun across
// them, and nothing left behind. Skipped when not root or when `ip netns add` is refused.
#include <geopipe/launch/netns.h>
#include <geopipe/launch/process.h>

#include "launch_test_util.h"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

namespace geopipe::launch {
using testing::record_pid_and_sleep;
using testing::netns_test_setup;
using testing::spawn;
using testing::survivors;
using testing::terminate_and_reap;
using testing::wait_for_rank_pids;
using testing::wait_until;
namespace {

namespace fs = std::filesystem;


// Interfaces of the host's own namespace whose names our runs use inside their namespaces.
std::vector<std::string> host_links_named_like_ours() {
  std::vector<std::string> out;
  CommandResult r = run_capture({"ip", "-o", "link", "show"});
  std::regex name(R"(^\d+: (gpv\d+|gpbr|gpeth)[@:])");
  std::istringstream in(r.output);
  std::string line;
  std::smatch m;
  while (std::getline(in, line))
    if (std::regex_search(line, m, name)) out.push_back(m[1]);
  return out;
}

class LaunchNetns : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = netns_test_setup("geopipe-launch-netns-", dir_);
    if (!why.empty()) GTEST_SKIP() << why;
    auto before = list_geopipe_namespaces();
    before_ = std::set<std::string>(before.begin(), before.end());
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Two regions joined by one link of `gbps`, no latency (this kernel may lack netem).
  std::string two_regions(double gbps) {
    std::string file = (dir_ / "two.json").string();
    std::ofstream(file) << R"({"name": "two", "intra_region": {"gbps": 10, "latency_ms": 0.05},
      "regions": [
        {"name": "west", "gpus": 2, "gpu_type": "cpu", "gpu_tflops": 0.02, "gpu_mem_gb": 4, "gpu_power_w": 100, "pue": 1.2, "price_usd_per_kwh": 0.1},
        {"name": "east", "gpus": 2, "gpu_type": "cpu", "gpu_tflops": 0.02, "gpu_mem_gb": 4, "gpu_power_w": 100, "pue": 1.2, "price_usd_per_kwh": 0.1}],
      "links": [{"a": "west", "b": "east", "gbps": )"
                        << gbps << R"(, "latency_ms": 0}]})";
    return file;
  }

  void expect_nothing_left() {
    auto after = list_geopipe_namespaces();
    for (const auto& ns : after) EXPECT_TRUE(before_.count(ns)) << "namespace left behind: " << ns;
    EXPECT_EQ(host_links_named_like_ours(), std::vector<std::string>{}) << "an interface leaked into the host";
  }

  fs::path dir_;
  std::set<std::string> before_;
};

// Measured MPI rate between two emulated regions, in Mbit/s (-1 if the output has none).
double measured_rate(const std::string& output) {
  std::smatch m;
  if (!std::regex_search(output, m, std::regex(R"(rate_mbit_per_s=([0-9.]+))"))) return -1;
  return std::stod(m[1]);
}

// Runs `measure` (one launch, returning Mbit/s or -1) until a run reaches 80 % of `limit`, at
// most `attempts` times. Every run must stay at or below 105 % (the kernel enforces the limit);
// reaching the rate is asked of the best run only, since other load on a 2-core machine can
// only slow a run down. Returns the best rate.
double best_rate_within_limit(double limit, int attempts, const std::function<double()>& measure) {
  double best = -1;
  for (int i = 0; i < attempts && best < 0.80 * limit; ++i) {
    double mbit = measure();
    EXPECT_GT(mbit, 0) << "run " << i << " measured nothing";
    EXPECT_LE(mbit, 1.05 * limit) << "run " << i << " went past the limit";
    best = std::max(best, mbit);
  }
  EXPECT_GE(best, 0.80 * limit);
  return best;
}

TEST_F(LaunchNetns, LinkOf200MbitIsEnforcedBetweenTwoRegionsAndTornDown) {
  std::string topo = two_regions(0.2);
  double best = best_rate_within_limit(200, 3, [&] {
    CommandResult r = run_capture({GEOPIPE_CLI, "launch", "--topology", topo, "--ranks-per-region", "1", "--emulate",
                                   "netns", "--timeout", "150", "--", LAUNCH_MPI_RATE, "--mib", "32"},
                                  200);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("region0=west regionN=east"), std::string::npos) << r.output;
    double mbit = measured_rate(r.output);
    std::cout << "netns 200 Mbit/s link: measured " << mbit << " Mbit/s\n";
    return mbit;
  });
  RecordProperty("rate_mbit_per_s", std::to_string(best));
  expect_nothing_left();
}

TEST_F(LaunchNetns, P2pBenchAcross200MbitLinkReachesTheRate) {
#ifndef GEOPIPE_P2P_BENCH
  GTEST_SKIP() << "geopipe-p2p-bench is not part of this build";
#else
  // The comm part's benchmark over its own transport (--mode geopipe), launched like a job.
  const std::string json = (dir_ / "p2p.json").string();
  const std::string topo = two_regions(0.2);
  best_rate_within_limit(200, 2, [&] {
    fs::remove(json);
    CommandResult r = run_capture({GEOPIPE_CLI, "launch", "--topology", topo, "--ranks-per-region", "1", "--emulate",
                                   "netns", "--timeout", "150", "--", GEOPIPE_P2P_BENCH, "--mode", "geopipe", "-b", "4M",
                                   "-e", "4M", "-n", "6", "-w", "1", "-W", "4", "--json", json},
                                  200);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::ifstream in(json);
    std::stringstream ss;
    ss << in.rdbuf();
    std::smatch m;
    std::string text = ss.str();
    if (!std::regex_search(text, m, std::regex(R"("mb_s":\s*([0-9.eE+-]+))"))) {
      ADD_FAILURE() << "no rate in geopipe-p2p-bench's JSON\n" << r.output;
      return -1.0;
    }
    const double mbit = std::stod(m[1]) * 8;  // MB/s is 1e6 bytes/s
    std::cout << "geopipe-p2p-bench over a 200 Mbit/s netns link: " << mbit << " Mbit/s\n";
    return mbit;
  });
  expect_nothing_left();
#endif
}

TEST_F(LaunchNetns, RanksOfOneRegionShareOneNamespaceOfTheirOwn) {
  // Two ranks per region: each records the network namespace it runs in.
  const std::string out = (dir_ / "ns.").string();
  CommandResult r = run_capture({GEOPIPE_CLI, "launch", "--topology", two_regions(0.2), "--ranks-per-region", "2",
                                 "--emulate", "netns", "--timeout", "100", "--", "sh", "-c",
                                 "readlink /proc/self/ns/net > " + out + "$OMPI_COMM_WORLD_RANK.$GEOPIPE_REGION"},
                                150);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto ns_of = [&](const std::string& suffix) {
    std::ifstream in(out + suffix);
    std::string s;
    std::getline(in, s);
    return s;
  };
  const std::string host_ns = fs::read_symlink("/proc/self/ns/net").string();
  const std::string w0 = ns_of("0.west"), w1 = ns_of("1.west"), e2 = ns_of("2.east"), e3 = ns_of("3.east");
  ASSERT_FALSE(w0.empty() || w1.empty() || e2.empty() || e3.empty()) << r.output;
  EXPECT_EQ(w0, w1);
  EXPECT_EQ(e2, e3);
  EXPECT_NE(w0, e2);
  EXPECT_NE(w0, host_ns);
  EXPECT_NE(e2, host_ns);
  expect_nothing_left();
}

TEST_F(LaunchNetns, FailingJobStillTearsDownAndReportsItsStatus) {
  CommandResult r = run_capture({GEOPIPE_CLI, "launch", "--topology", two_regions(0.2), "--ranks-per-region", "1",
                                 "--emulate", "netns", "--timeout", "100", "--", "sh", "-c", "exit 5"},
                                150);
  EXPECT_EQ(r.exit_code, 5) << r.output;
  expect_nothing_left();
}

TEST_F(LaunchNetns, SigtermStopsTheRanksAndTearsDown) {
  std::string pidfile = (dir_ / "pid.").string();
  pid_t pid = spawn({GEOPIPE_CLI, "launch", "--topology", two_regions(0.2), "--ranks-per-region", "1", "--emulate",
                     "netns", "--", "sh", "-c", record_pid_and_sleep(pidfile)});
  ASSERT_GE(pid, 0);
  std::vector<pid_t> ranks = wait_for_rank_pids(pidfile, 2);
  int status = 0;
  bool ended = terminate_and_reap(pid, &status);
  ASSERT_EQ(ranks.size(), 2u) << "the ranks did not start";
  EXPECT_TRUE(ended) << "geopipe launch did not end after SIGTERM";
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  for (pid_t p : survivors(ranks)) ADD_FAILURE() << "rank process " << p << " still runs";
  expect_nothing_left();
}

TEST_F(LaunchNetns, CleanupRemovesNamespacesOfAKilledRun) {
  std::string pidfile = (dir_ / "pid.").string();
  pid_t pid = spawn({GEOPIPE_CLI, "launch", "--topology", two_regions(0.2), "--ranks-per-region", "1", "--emulate",
                     "netns", "--", "sh", "-c", record_pid_and_sleep(pidfile)},
                    /*own_group=*/true);
  ASSERT_GE(pid, 0);
  const std::string hub = "geopipe-" + std::to_string(pid) + "-hub";
  bool started = wait_until([&] { return fs::exists(pidfile + "0") && fs::exists(pidfile + "1"); }, 60);
  auto ours = list_geopipe_namespaces();
  // Kill the launcher and everything it started the hard way: no chance to tear down.
  kill(-pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  for (int r = 0; r < 2; ++r) {
    std::ifstream in(pidfile + std::to_string(r));
    pid_t p = 0;
    if (in >> p && p > 0) kill(p, SIGKILL);
  }
  ASSERT_TRUE(started) << "the ranks did not start";
  EXPECT_NE(std::find(ours.begin(), ours.end(), hub), ours.end()) << "the run's namespaces were not there";

  CommandResult r = run_capture({GEOPIPE_CLI, "launch", "--cleanup"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("removed network namespace " + hub), std::string::npos) << r.output;
  expect_nothing_left();
}

}  // namespace
}  // namespace geopipe::launch
