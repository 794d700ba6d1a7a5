// `geopipe launch` as a user runs it: dry runs, refusals with exit code 2, and real jobs started
// with mpirun on this host (exit status of the job, forwarded signals).
#include <geopipe/core/config.h>
#include <geopipe/core/plan.h>
#include <geopipe/launch/process.h>

#include "launch_test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

namespace geopipe::launch {
namespace {

namespace fs = std::filesystem;
using testing::src;
using testing::record_pid_and_sleep;
using testing::spawn;
using testing::survivors;
using testing::terminate_and_reap;
using testing::wait_for_rank_pids;
using testing::wait_until;

// A fresh folder per test, removed afterwards.
class LaunchCli : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    dir_ = fs::temp_directory_path() / ("geopipe-launch-cli-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // local4 with a plan made for it (the shipped fixture predates topology hashes).
  std::string local4_plan(const std::vector<std::pair<std::string, int>>& stages) {
    Topology t = testing::local4();
    save_plan(testing::make_plan(t, stages), path("plan.json"));
    return path("plan.json");
  }

  CommandResult geopipe(std::vector<std::string> args, double timeout_s = 120) {
    args.insert(args.begin(), GEOPIPE_CLI);
    return run_capture(args, timeout_s);
  }

  fs::path dir_;
};

const std::string kLocal4 = src("examples/topologies/local4.json");

TEST_F(LaunchCli, DryRunPrintsTheCommandAndFilesAndRunsNothing) {
  std::string plan = local4_plan({{"us-east", 1}, {"us-west", 1}, {"eu-central", 1}, {"ap-southeast", 1}});
  CommandResult r = geopipe({"launch", "--plan", plan, "--topology", kLocal4, "--dry-run", "--run-dir", path("run"), "--",
                             "touch", path("ran")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("# ---- file " + path("run") + "/hostfile\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("localhost slots=4"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("# rank 3: stage 3, region ap-southeast, host localhost"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("mpirun --hostfile " + path("run") + "/hostfile --oversubscribe"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("-x GEOPIPE_REGION=ap-southeast -x GEOPIPE_TOPOLOGY=" + kLocal4 +
                          " -x GEOPIPE_EMULATE=software -x GEOPIPE_PLAN=" + plan + " touch " + path("ran")),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(path("ran")));
  EXPECT_FALSE(fs::exists(path("run")));
}

TEST_F(LaunchCli, DryRunNetnsPrintsSetupAndTeardownWithoutTouchingTheHost) {
  CommandResult r = geopipe({"launch", "--topology", kLocal4, "--ranks-per-region", "1", "--emulate", "netns",
                             "--dry-run", "--", "true"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("# ---- netns setup"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ip netns delete geopipe-"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ip netns exec geopipe-"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("plm_rsh_agent"), std::string::npos) << r.output;
}

TEST_F(LaunchCli, RepeatedIfaceFlagsSetEachRegionsInterface) {
  CommandResult r = geopipe({"launch", "--topology", kLocal4, "--ranks-per-region", "1", "--iface", "eth0", "--iface",
                             "us-west=ib0", "--dry-run", "--", "prog"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("-x GEOPIPE_REGION=us-east -x GEOPIPE_TOPOLOGY=" + kLocal4 +
                          " -x GEOPIPE_EMULATE=software -x NCCL_SOCKET_IFNAME=eth0 -x OMPI_MCA_btl_tcp_if_include=eth0 prog"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("-x GEOPIPE_REGION=us-west -x GEOPIPE_TOPOLOGY=" + kLocal4 +
                          " -x GEOPIPE_EMULATE=software -x NCCL_SOCKET_IFNAME=ib0 -x OMPI_MCA_btl_tcp_if_include=ib0 prog"),
            std::string::npos)
      << r.output;
}

TEST_F(LaunchCli, SlurmPrintsAnSbatchScriptForHostsInTheTopology) {
  Topology t = testing::aws6_with_hosts();
  {
    std::ofstream(path("aws6.json")) << to_json(t).dump(1);
  }
  save_plan(testing::make_plan(t, {{"us-west-2-oregon", 2}, {"eu-central-1-frankfurt", 2}}), path("plan.json"));
  CommandResult r = geopipe({"launch", "--plan", path("plan.json"), "--topology", path("aws6.json"), "--slurm",
                             "--iface", "ens5", "--", "geopipe-train"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("#!/bin/bash\n", 0), 0u) << r.output;
  EXPECT_NE(r.output.find("#SBATCH --nodelist=10.0.1.1,10.0.4.1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("export NCCL_SOCKET_IFNAME=ens5;"), std::string::npos) << r.output;
}

TEST_F(LaunchCli, EachRankRunsInPlanOrderWithItsRegionEnvironment) {
  std::string plan = local4_plan({{"us-east", 1}, {"us-west", 1}, {"eu-central", 1}, {"ap-southeast", 1}});
  std::string script = "echo \"$GEOPIPE_REGION $GEOPIPE_EMULATE $GEOPIPE_TOPOLOGY $GEOPIPE_PLAN\" > " + path("rank.") +
                       "$OMPI_COMM_WORLD_RANK";
  CommandResult r = geopipe({"launch", "--plan", plan, "--topology", kLocal4, "--emulate", "none", "--timeout", "100",
                             "--", "sh", "-c", script});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const char* regions[] = {"us-east", "us-west", "eu-central", "ap-southeast"};
  for (int rank = 0; rank < 4; ++rank) {
    std::ifstream in(path("rank." + std::to_string(rank)));
    std::string line;
    std::getline(in, line);
    EXPECT_EQ(line, std::string(regions[rank]) + " none " + kLocal4 + " " + plan) << rank;
  }
}

TEST_F(LaunchCli, ExitsWithTheStatusOfAFailingRank) {
  CommandResult r = geopipe({"launch", "--topology", kLocal4, "--ranks-per-region", "1", "--emulate", "none", "--",
                             "sh", "-c", "if [ \"$GEOPIPE_REGION\" = eu-central ]; then exit 7; fi"});
  EXPECT_EQ(r.exit_code, 7) << r.output;
  CommandResult ok = geopipe({"launch", "--topology", kLocal4, "--ranks-per-region", "1", "--", "true"});
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  CommandResult missing = geopipe({"launch", "--topology", kLocal4, "--ranks-per-region", "1", "--emulate", "none", "--",
                                   path("no-such-program")});
  EXPECT_NE(missing.exit_code, 0) << missing.output;
}

TEST_F(LaunchCli, SigtermIsForwardedAndStopsEveryRank) {
  pid_t pid = spawn({GEOPIPE_CLI, "launch", "--topology", kLocal4, "--ranks-per-region", "1", "--emulate", "none", "--",
                     "sh", "-c", record_pid_and_sleep(path("pid."))});
  ASSERT_GE(pid, 0);
  std::vector<pid_t> ranks = wait_for_rank_pids(path("pid."), 4);
  int status = 0;
  bool ended = terminate_and_reap(pid, &status);
  ASSERT_EQ(ranks.size(), 4u) << "the ranks did not start";
  ASSERT_TRUE(ended) << "geopipe launch did not end after SIGTERM";
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_NE(WEXITSTATUS(status), 0);
  for (pid_t p : survivors(ranks)) ADD_FAILURE() << "rank process " << p << " still runs";
}

TEST_F(LaunchCli, TimeoutStopsTheJobWithStatus124) {
  CommandResult r = geopipe({"launch", "--topology", kLocal4, "--ranks-per-region", "1", "--emulate", "none",
                             "--timeout", "1", "--", "sleep", "300"});
  EXPECT_EQ(r.exit_code, 124) << r.output;
  EXPECT_NE(r.output.find("ran past --timeout"), std::string::npos) << r.output;
}

TEST_F(LaunchCli, BadInputExitsTwoAndNamesTheProblem) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  std::string plan2 = local4_plan({{"us-east", 1}, {"us-west", 2}});
  Topology bad_host = testing::aws6_with_hosts();
  bad_host.regions[3].hosts = {"no-such-host.invalid"};
  {
    std::ofstream(path("bad_host.json")) << to_json(bad_host).dump(1);
    std::ofstream(path("hosts.txt")) << "10.0.1.1 slots=1\n10.0.1.2 slots=1\n";
  }
  Topology aws = testing::aws6_with_hosts();
  {
    std::ofstream(path("aws.json")) << to_json(aws).dump(1);
  }
  save_plan(testing::make_plan(aws, {{"us-west-2-oregon", 3}}), path("plan3.json"));
  const std::vector<Case> cases = {
      {{"--plan", path("missing.json"), "--topology", kLocal4}, path("missing.json") + ": cannot open file"},
      {{"--plan", plan2, "--topology", kLocal4}, "region \"us-west\" is short of GPUs"},
      {{"--ranks-per-region", "1", "--topology", path("bad_host.json")}, "does not resolve"},
      {{"--plan", path("plan3.json"), "--topology", path("aws.json"), "--hostfile", path("hosts.txt")},
       "region \"us-west-2-oregon\" is short of slots"},
      {{"--topology", kLocal4}, "give either --plan PLAN or --ranks-per-region K"},
      {{"--ranks-per-region", "1", "--topology", kLocal4, "--emulate", "tc"}, "--emulate: expected software, netns"},
      {{"--ranks-per-region", "1", "--topology", kLocal4, "--iface", "mars=eth0"}, "region \"mars\" is not in"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = {"launch"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    args.insert(args.end(), {"--", "touch", path("ran")});
    CommandResult r = geopipe(args);
    SCOPED_TRACE(c.message);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << r.output;
  }
  CommandResult no_program = geopipe({"launch", "--ranks-per-region", "1", "--topology", kLocal4});
  EXPECT_EQ(no_program.exit_code, 2) << no_program.output;
  EXPECT_NE(no_program.output.find("no program to launch"), std::string::npos) << no_program.output;
  EXPECT_FALSE(fs::exists(path("ran")));
}

TEST_F(LaunchCli, NetnsWithoutRootIsRefusedWithExitTwo) {
  if (geteuid() == 0) {
    // Root here: drop to nobody in a child so the refusal path runs for real.
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      if (setgid(65534) != 0 || setuid(65534) != 0) _exit(99);
      execl(GEOPIPE_CLI, GEOPIPE_CLI, "launch", "--topology", kLocal4.c_str(), "--ranks-per-region", "1", "--emulate",
            "netns", "--", "true", static_cast<char*>(nullptr));
      _exit(98);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 99) GTEST_SKIP() << "cannot drop privileges here";
    EXPECT_EQ(WEXITSTATUS(status), 2);
    return;
  }
  CommandResult r = geopipe({"launch", "--topology", kLocal4, "--ranks-per-region", "1", "--emulate", "netns", "--",
                             "true"});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("needs root"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace geopipe::launch
