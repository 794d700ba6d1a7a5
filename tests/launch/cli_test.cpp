// `geopipe launch` as a user runs it: dry runs, refusals with exit code 2, and real jobs started
// with mpirun on this host (exit status of the job, forwarded signals).
#include <geopipe/core/config.h>
#include <geopipe/core/plan.h>
#include <geopipe/launch/command.h>
#include <geopipe/launch/process.h>

#include "launch_test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
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
                          " -x GEOPIPE_EMULATE=software -x GEOPIPE_PLAN=" + plan + " -x GEOPIPE_RANKS_ON_HOST=4 touch " + path("ran")),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(path("ran")));
  EXPECT_FALSE(fs::exists(path("run")));
}

TEST_F(LaunchCli, TcpLinksFlagReachesMpirunsLine) {
  CommandResult r = geopipe({"launch", "--topology", kLocal4, "--ranks-per-region", "1", "--tcp-links", "4",
                             "--dry-run", "--", "true"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(" --mca btl_tcp_links 4 "), std::string::npos) << r.output;
  CommandResult bad = geopipe({"launch", "--topology", kLocal4, "--ranks-per-region", "1", "--tcp-links", "0",
                               "--dry-run", "--", "true"});
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("--tcp-links"), std::string::npos) << bad.output;
}

TEST_F(LaunchCli, LinkEventsFileIsCheckedAndReachesEveryRank) {
  const std::string events = path("events.txt");
  std::ofstream(events) << "# slow the transatlantic link for 10 steps\n"
                           "us-east>eu-central@s5+10=62500kbit,80ms\n\n"
                           "eu-central>us-east@2+1.5=0  # a stall\n";
  CommandResult r = geopipe({"launch", "--topology", kLocal4, "--ranks-per-region", "1", "--link-events", events,
                             "--dry-run", "--", "true"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("GEOPIPE_LINK_EVENTS=us-east>eu-central@s5+10=62500kbit,80ms;eu-central>us-east@2+1.5=0"),
            std::string::npos) << r.output;
  std::ofstream(events) << "us-east>eu-central@s5+10=62500kbit\nus-east>mars@1+1=1mbit\n";
  CommandResult bad = geopipe({"launch", "--topology", kLocal4, "--ranks-per-region", "1", "--link-events", events,
                               "--dry-run", "--", "true"});
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("events.txt:2"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("no region 'mars'"), std::string::npos) << bad.output;
  std::ofstream(events) << "us-east>eu-central@s0+10=1mbit\n";
  CommandResult step0 = geopipe({"launch", "--topology", kLocal4, "--ranks-per-region", "1", "--link-events", events,
                                 "--dry-run", "--", "true"});
  EXPECT_EQ(step0.exit_code, 2) << step0.output;
  EXPECT_NE(step0.output.find("events.txt:1"), std::string::npos) << step0.output;
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
                          " -x GEOPIPE_EMULATE=software -x GEOPIPE_RANKS_ON_HOST=4 -x NCCL_SOCKET_IFNAME=eth0 -x OMPI_MCA_btl_tcp_if_include=eth0 prog"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("-x GEOPIPE_REGION=us-west -x GEOPIPE_TOPOLOGY=" + kLocal4 +
                          " -x GEOPIPE_EMULATE=software -x GEOPIPE_RANKS_ON_HOST=4 -x NCCL_SOCKET_IFNAME=ib0 -x OMPI_MCA_btl_tcp_if_include=ib0 prog"),
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
  std::string plan2 = local4_plan({{"us-east", 2}, {"us-west", 2}});  // 2 replicas per stage, 1 GPU per region
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
      {{"--plan", plan2, "--topology", kLocal4}, "region \"us-east\" is short of GPUs"},
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

// A fresh folder under /tmp that every user may enter (mkdtemp makes it 0700), removed with this
// object: what a test run as nobody needs, wherever the checkout and the build tree live.
class FolderForEveryone {
 public:
  FolderForEveryone() {
    std::string name = "/tmp/geopipe-launch-nobody-XXXXXX";
    if (mkdtemp(name.data()) && chmod(name.c_str(), 0755) == 0) path_ = name;
  }
  ~FolderForEveryone() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  FolderForEveryone(const FolderForEveryone&) = delete;
  FolderForEveryone& operator=(const FolderForEveryone&) = delete;

  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  // Copies `file` in, readable (and with `executable`, runnable) by everyone; its new path.
  std::string copy_in(const std::string& file, bool executable) const {
    const fs::path to = fs::path(path_) / fs::path(file).filename();
    fs::copy_file(file, to, fs::copy_options::overwrite_existing);
    fs::permissions(to, executable ? fs::perms(0755) : fs::perms(0644));
    return to.string();
  }

 private:
  std::string path_;
};

// Runs `args` (args[0] a path) as uid/gid 65534 (nobody) in `cwd`, with stdout and stderr through
// a pipe. Exit code 99: privileges could not be dropped; 98: the exec failed (the output says why).
CommandResult run_as_nobody(std::vector<std::string> args, const std::string& cwd) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  if (pipe(fds) != 0) return {-1, "pipe failed"};
  pid_t pid = fork();
  if (pid == 0) {
    // Plain system calls only between fork and exec (strerror is safe: the test has one thread).
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    close(fds[1]);
    if (chdir(cwd.c_str()) != 0 || setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(99);
    execv(argv[0], argv.data());
    const char* why = strerror(errno);
    (void)!write(STDERR_FILENO, "exec failed: ", 13);
    (void)!write(STDERR_FILENO, why, strlen(why));
    _exit(98);
  }
  close(fds[1]);
  CommandResult r;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) != 0;) {
    if (n > 0) r.output.append(buf, static_cast<size_t>(n));
    else if (errno != EINTR) break;
  }
  close(fds[0]);
  int status = 0;
  if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  return r;
}

TEST_F(LaunchCli, NetnsWithoutRootIsRefusedWithExitTwo) {
  const std::vector<std::string> args = {"launch", "--topology", "", "--ranks-per-region", "1", "--emulate", "netns",
                                         "--", "true"};
  CommandResult r;
  if (geteuid() != 0) {
    std::vector<std::string> a = args;
    a[2] = kLocal4;
    r = geopipe(a);
  } else {
    // Root here: run the refusal for real as nobody. Nobody may not be able to reach the build
    // tree or the checkout (a clone under `mktemp -d` or root's 0700 home), so the binary and the
    // topology go into a folder of their own under /tmp. The binary carries no RPATH into the
    // build tree (the project's libraries are static; it needs only system libraries).
    struct statvfs tmp {};
    if (statvfs("/tmp", &tmp) == 0 && (tmp.f_flag & ST_NOEXEC)) GTEST_SKIP() << "/tmp is mounted noexec";
    FolderForEveryone folder;
    ASSERT_TRUE(folder.ok()) << "cannot make a folder under /tmp: " << std::strerror(errno);
    std::vector<std::string> a = args;
    a.insert(a.begin(), folder.copy_in(GEOPIPE_CLI, true));
    a[3] = folder.copy_in(kLocal4, false);
    r = run_as_nobody(a, folder.path());
    if (r.exit_code == 99) GTEST_SKIP() << "cannot drop privileges to uid 65534 here";
  }
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--emulate netns needs root"), std::string::npos) << r.output;
}

// Two regions whose hosts are under the reserved .invalid TLD (RFC 6761), so they never resolve.
std::string write_unresolvable_topology(const std::string& file) {
  Topology t = testing::local4();
  t.regions.resize(2);
  t.regions[0].name = "east";
  t.regions[0].hosts = {"east-node1.invalid"};
  t.regions[1].name = "west";
  t.regions[1].hosts = {"west-node1.invalid"};
  t.links.resize(1);  // local4's first link joins its first two regions
  t.links[0].a = "east";
  t.links[0].b = "west";
  std::ofstream(file) << to_json(t).dump(1);
  return file;
}

TEST_F(LaunchCli, SlurmAndDryRunWarnAboutHostsThatDoNotResolveHereAndGoOn) {
  const std::string topo = write_unresolvable_topology(path("two.json"));
  const std::string east = "# warning: " + topo + ": regions[0].hosts[0]: host \"east-node1.invalid\" of region "
                           "\"east\" does not resolve on this machine";
  const std::string west = "# warning: " + topo + ": regions[1].hosts[0]: host \"west-node1.invalid\" of region "
                           "\"west\" does not resolve on this machine";

  // The script alone on stdout (what `> job.sbatch` keeps); the warnings also go to stderr.
  CommandResult slurm = run_capture({"sh", "-c", shell_join({GEOPIPE_CLI, "launch", "--topology", topo,
                                                             "--ranks-per-region", "1", "--slurm", "--", "prog"}) +
                                                     " 2>" + shell_quote(path("stderr"))});
  ASSERT_EQ(slurm.exit_code, 0) << slurm.output;
  EXPECT_EQ(slurm.output.rfind("#!/bin/bash\n", 0), 0u) << slurm.output;
  std::ifstream err_file(path("stderr"));
  const std::string err((std::istreambuf_iterator<char>(err_file)), std::istreambuf_iterator<char>());
  EXPECT_NE(err.find("host \"east-node1.invalid\" of region \"east\" does not resolve"), std::string::npos) << err;
  EXPECT_NE(slurm.output.find(east), std::string::npos) << slurm.output;
  EXPECT_NE(slurm.output.find(west), std::string::npos) << slurm.output;
  EXPECT_NE(slurm.output.find("#SBATCH --nodelist=east-node1.invalid,west-node1.invalid\n"), std::string::npos)
      << slurm.output;
  EXPECT_NE(slurm.output.find("geopipe-rank prog\n"), std::string::npos) << slurm.output;

  CommandResult dry = geopipe({"launch", "--topology", topo, "--ranks-per-region", "1", "--dry-run", "--", "prog"});
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  EXPECT_NE(dry.output.find(east), std::string::npos) << dry.output;
  EXPECT_NE(dry.output.find(west), std::string::npos) << dry.output;
  EXPECT_NE(dry.output.find("# rank 1: stage -1, region west, host west-node1.invalid\n"), std::string::npos)
      << dry.output;
  EXPECT_NE(dry.output.find("-np 1 --host east-node1.invalid -x GEOPIPE_REGION=east"), std::string::npos)
      << dry.output;

  // mpirun started from here must reach the hosts from here: still a refusal naming the host.
  CommandResult real = geopipe({"launch", "--topology", topo, "--ranks-per-region", "1", "--", "touch", path("ran")});
  EXPECT_EQ(real.exit_code, 2) << real.output;
  EXPECT_NE(real.output.find("host \"east-node1.invalid\" of region \"east\" does not resolve"), std::string::npos)
      << real.output;
  EXPECT_EQ(real.output.find("# warning"), std::string::npos) << real.output;
  EXPECT_FALSE(fs::exists(path("ran")));
}

// The CLI with Open MPI's two OMPI_ALLOW_RUN_AS_ROOT* variables removed from its environment.
CommandResult geopipe_without_root_variables(std::vector<std::string> args) {
  args.insert(args.begin(), {"env", "-u", kOmpiAllowRunAsRoot, "-u", kOmpiAllowRunAsRootConfirm, GEOPIPE_CLI});
  return run_capture(args, 120);
}

TEST_F(LaunchCli, RootWithoutAllowRunAsRootIsRefusedInOneLineBeforeMpirunStarts) {
  if (geteuid() != 0) GTEST_SKIP() << "Open MPI refuses only root; this runs as uid " << geteuid();
  for (const char* emulate : {"software", "none"}) {
    SCOPED_TRACE(emulate);
    CommandResult r = geopipe_without_root_variables({"launch", "--topology", kLocal4, "--ranks-per-region", "1",
                                                      "--emulate", emulate, "--", "touch", path("ran")});
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_EQ(r.output,
              "geopipe: error: mpirun: Open MPI refuses to run as root: pass --allow-run-as-root to geopipe launch, "
              "or export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1\n");
    EXPECT_FALSE(fs::exists(path("ran")));
  }
}

TEST_F(LaunchCli, AllowRunAsRootLetsMpirunStartWithoutOpenMpisVariables) {
  // As root this is what makes the job start; as anyone else Open MPI accepts the flag unchanged.
  CommandResult r = geopipe_without_root_variables({"launch", "--topology", kLocal4, "--ranks-per-region", "1",
                                                    "--allow-run-as-root", "--timeout", "100", "--", "touch",
                                                    path("ran")});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(path("ran"))) << r.output;
}

TEST_F(LaunchCli, DryRunShowsAllowRunAsRootWhereMpirunGetsIt) {
  const std::vector<std::string> base = {"launch", "--topology", kLocal4, "--ranks-per-region", "1", "--dry-run"};
  auto dry_run = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {"--", "prog"});
    return geopipe_without_root_variables(args);  // a dry run is never refused, root or not
  };
  CommandResult plain = dry_run({});
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_EQ(plain.output.find("--allow-run-as-root"), std::string::npos) << plain.output;
  CommandResult flag = dry_run({"--allow-run-as-root"});
  ASSERT_EQ(flag.exit_code, 0) << flag.output;
  EXPECT_NE(flag.output.find("\nmpirun --allow-run-as-root --hostfile "), std::string::npos) << flag.output;
  // netns needs root, so its mpirun always runs as root: the flag comes by itself.
  CommandResult netns = dry_run({"--emulate", "netns"});
  ASSERT_EQ(netns.exit_code, 0) << netns.output;
  EXPECT_NE(netns.output.find("-hub mpirun --allow-run-as-root --hostfile "), std::string::npos) << netns.output;
}

}  // namespace
}  // namespace geopipe::launch
