// The generated mpirun command, hostfile, Slurm script and netns commands.
#include <geopipe/core/env.h>
#include <geopipe/core/error.h>
#include <geopipe/launch/command.h>
#include <geopipe/launch/launch.h>
#include <geopipe/launch/netns.h>
#include <geopipe/launch/process.h>

#include "launch_test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

namespace geopipe::launch {
namespace {

using testing::aws6_with_hosts;
using testing::local4;
using testing::make_plan;

// The app contexts of an mpirun argv (split at ":"), the first one without the global options.
std::vector<std::vector<std::string>> app_contexts(const std::vector<std::string>& argv) {
  std::vector<std::vector<std::string>> out(1);
  for (const auto& a : argv) {
    if (a == ":")
      out.emplace_back();
    else
      out.back().push_back(a);
  }
  auto& first = out.front();
  first.erase(first.begin(), std::find(first.begin(), first.end(), "-np"));
  return out;
}

bool has_pair(const std::vector<std::string>& v, const std::string& a, const std::string& b) {
  for (size_t i = 0; i + 1 < v.size(); ++i)
    if (v[i] == a && v[i + 1] == b) return true;
  return false;
}

LaunchSpec local4_spec() {
  Topology t = local4();
  Plan plan = make_plan(t, {{"us-east", 1}, {"us-west", 1}, {"eu-central", 1}, {"ap-southeast", 1}});
  LaunchSpec s;
  s.placement = place_plan(plan, "plan.json", t, make_inventory(t, Emulation::kSoftware));
  s.emulation = Emulation::kSoftware;
  s.topology_path = "/data/local4.json";
  s.plan_path = "/data/plan.json";
  s.run_dir = "/run/gp";
  s.program = {"geopipe-train", "--plan", "/data/plan.json", "it's quoted"};
  return s;
}

LaunchSpec aws6_spec(const std::vector<std::string>& ifaces) {
  Topology t = aws6_with_hosts();
  Plan plan = make_plan(t, {{"us-west-2-oregon", 34}, {"us-east-1-virginia", 2}});
  LaunchSpec s;
  s.placement = place_plan(plan, "plan.json", t, make_inventory(t, Emulation::kNone));
  s.emulation = Emulation::kNone;
  s.topology_path = "/data/aws6.json";
  s.run_dir = "/run/gp";
  s.job_name = "gpt 1.3b";
  s.program = {"geopipe-train", "--steps", "10"};
  s.interfaces = Interfaces::parse(ifaces, t);
  return s;
}

TEST(LaunchCommand, Local4SoftwareHasOneAppContextPerRankInPlanOrder) {
  LaunchSpec s = local4_spec();
  MpirunCommand cmd = build_mpirun(s);
  EXPECT_EQ(cmd.argv[0], "mpirun");
  EXPECT_TRUE(has_pair(cmd.argv, "--hostfile", "/run/gp/hostfile"));
  EXPECT_TRUE(has_pair(cmd.argv, "--bind-to", "none"));
  EXPECT_NE(std::find(cmd.argv.begin(), cmd.argv.end(), "--oversubscribe"), cmd.argv.end());
  auto ctx = app_contexts(cmd.argv);
  ASSERT_EQ(ctx.size(), 4u);
  const char* regions[] = {"us-east", "us-west", "eu-central", "ap-southeast"};
  for (int r = 0; r < 4; ++r) {
    SCOPED_TRACE(r);
    EXPECT_TRUE(has_pair(ctx[r], "-np", "1"));
    EXPECT_TRUE(has_pair(ctx[r], "--host", "localhost"));
    EXPECT_TRUE(has_pair(ctx[r], "-x", std::string("GEOPIPE_REGION=") + regions[r]));
    EXPECT_TRUE(has_pair(ctx[r], "-x", "GEOPIPE_TOPOLOGY=/data/local4.json"));
    EXPECT_TRUE(has_pair(ctx[r], "-x", "GEOPIPE_EMULATE=software"));
    EXPECT_TRUE(has_pair(ctx[r], "-x", "GEOPIPE_PLAN=/data/plan.json"));
    // All 4 emulated regions share this host's cores (runtime: default threads per rank).
    EXPECT_TRUE(has_pair(ctx[r], "-x", std::string(env::kRanksOnHost) + "=4"));
    // The program and its arguments close each app context, untouched.
    std::vector<std::string> tail(ctx[r].end() - 4, ctx[r].end());
    EXPECT_EQ(tail, s.program);
  }
  ASSERT_EQ(cmd.files.size(), 2u);
  EXPECT_EQ(cmd.files[0].path, "/run/gp/hostfile");
  EXPECT_NE(cmd.files[0].content.find("\nlocalhost slots=4"), std::string::npos) << cmd.files[0].content;
  auto placement = nlohmann::json::parse(cmd.files[1].content);
  EXPECT_EQ(placement["ranks"][2]["region"], "eu-central");
  EXPECT_EQ(placement["ranks"][2]["stage"], 2);
}

TEST(LaunchCommand, ForwardsTheAuthKeyFileAndLinkEventsOnlyWhenSet) {
  unsetenv("GEOPIPE_AUTH_KEY_FILE");
  unsetenv("GEOPIPE_LINK_EVENTS");
  for (const auto& a : build_mpirun(local4_spec()).argv) {
    EXPECT_EQ(a.find("GEOPIPE_AUTH_KEY_FILE"), std::string::npos) << a;
    EXPECT_EQ(a.find("GEOPIPE_LINK_EVENTS"), std::string::npos) << a;
  }
  setenv("GEOPIPE_AUTH_KEY_FILE", "/secrets/job.key", 1);
  setenv("GEOPIPE_LINK_EVENTS", "us-east>us-west@5+2=0", 1);
  auto ctx = app_contexts(build_mpirun(local4_spec()).argv);
  unsetenv("GEOPIPE_AUTH_KEY_FILE");
  unsetenv("GEOPIPE_LINK_EVENTS");
  ASSERT_EQ(ctx.size(), 4u);
  for (const auto& c : ctx) {  // every rank, including those on other hosts, gets them
    EXPECT_TRUE(has_pair(c, "-x", "GEOPIPE_AUTH_KEY_FILE=/secrets/job.key"));
    EXPECT_TRUE(has_pair(c, "-x", "GEOPIPE_LINK_EVENTS=us-east>us-west@5+2=0"));
  }
}

TEST(LaunchCommand, Aws6ClusterGroupsConsecutiveRanksPerHostAndSetsInterfaces) {
  LaunchSpec s = aws6_spec({"eth0", "us-east-1-virginia=ens5"});
  MpirunCommand cmd = build_mpirun(s);
  EXPECT_TRUE(has_pair(cmd.argv, "oob_tcp_if_include", "eth0,ens5"));
  EXPECT_EQ(std::find(cmd.argv.begin(), cmd.argv.end(), "--oversubscribe"), cmd.argv.end());
  auto ctx = app_contexts(cmd.argv);
  ASSERT_EQ(ctx.size(), 3u);  // 32 ranks on 10.0.1.1, 2 on 10.0.1.2, 2 on 10.0.2.1
  EXPECT_TRUE(has_pair(ctx[0], "-np", "32"));
  EXPECT_TRUE(has_pair(ctx[0], "--host", "10.0.1.1"));
  EXPECT_TRUE(has_pair(ctx[1], "-np", "2"));
  EXPECT_TRUE(has_pair(ctx[1], "--host", "10.0.1.2"));
  EXPECT_TRUE(has_pair(ctx[0], "-x", "NCCL_SOCKET_IFNAME=eth0"));
  EXPECT_TRUE(has_pair(ctx[0], "-x", "OMPI_MCA_btl_tcp_if_include=eth0"));
  EXPECT_TRUE(has_pair(ctx[2], "--host", "10.0.2.1"));
  EXPECT_TRUE(has_pair(ctx[2], "-x", "GEOPIPE_REGION=us-east-1-virginia"));
  EXPECT_TRUE(has_pair(ctx[2], "-x", "NCCL_SOCKET_IFNAME=ens5"));
  EXPECT_TRUE(has_pair(ctx[2], "-x", "GEOPIPE_EMULATE=none"));
  for (const auto& c : ctx)  // real hosts: MPI knows which ranks share one
    for (const auto& word : c) EXPECT_EQ(word.rfind(env::kRanksOnHost, 0), std::string::npos) << word;
  const std::string& hostfile = cmd.files[0].content;
  EXPECT_NE(hostfile.find("10.0.1.1 slots=32  # us-west-2-oregon"), std::string::npos) << hostfile;
  EXPECT_NE(hostfile.find("10.0.1.2 slots=2  # us-west-2-oregon"), std::string::npos) << hostfile;
  EXPECT_NE(hostfile.find("10.0.2.1 slots=2  # us-east-1-virginia"), std::string::npos) << hostfile;
}

TEST(LaunchCommand, IfaceFlagRejectsUnknownRegionAndBadNames) {
  Topology t = local4();
  EXPECT_THROW(Interfaces::parse({"mars=eth0"}, t), InputError);
  EXPECT_THROW(Interfaces::parse({"us-east="}, t), InputError);
  EXPECT_THROW(Interfaces::parse({"eth0,eth1"}, t), InputError);
  Interfaces i = Interfaces::parse({"eth0", "us-east=ib0"}, t);
  EXPECT_EQ(i.for_region("us-east"), "ib0");
  EXPECT_EQ(i.for_region("us-west"), "eth0");
}

TEST(LaunchCommand, SlurmScriptListsOneHostPerRankAndExportsEachRanksRegion) {
  LaunchSpec s = aws6_spec({"eth0"});
  std::string script = build_slurm_script(s);
  EXPECT_NE(script.find("#SBATCH --ntasks=36\n"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --nodes=3\n"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --nodelist=10.0.1.1,10.0.1.2,10.0.2.1\n"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --job-name='gpt 1.3b'\n"), std::string::npos) << script;
  // Host list: rank r on line r+1.
  auto begin = script.find("<<'GEOPIPE_HOSTS'\n") + 18;
  auto end = script.find("GEOPIPE_HOSTS\n", begin);
  std::string hosts = script.substr(begin, end - begin);
  EXPECT_EQ(std::count(hosts.begin(), hosts.end(), '\n'), 36);
  EXPECT_EQ(hosts.substr(0, 9), "10.0.1.1\n");
  EXPECT_EQ(hosts.substr(hosts.size() - 18), "10.0.2.1\n10.0.2.1\n");
  EXPECT_NE(script.find("srun --mpi=pmix --distribution=arbitrary --ntasks=36"), std::string::npos) << script;
  EXPECT_NE(script.find("geopipe-rank geopipe-train --steps 10\n"), std::string::npos) << script;
  EXPECT_NE(script.find("34|35) export GEOPIPE_REGION=us-east-1-virginia;"), std::string::npos) << script;
}

TEST(LaunchCommand, SlurmScriptSetsTheRightRegionWhenBashRunsIt) {
  // Run the per-rank part of the script the way srun would, for a few SLURM_PROCIDs.
  LaunchSpec s = aws6_spec({});
  s.program = {"sh", "-c", "echo \"$GEOPIPE_REGION|$GEOPIPE_EMULATE\""};
  std::string script = build_slurm_script(s);
  auto begin = script.find("bash -c ");
  ASSERT_NE(begin, std::string::npos);
  std::string srun_tail = script.substr(begin);
  srun_tail.pop_back();  // newline
  for (auto [procid, want] : std::vector<std::pair<int, std::string>>{
           {0, "us-west-2-oregon|none"}, {33, "us-west-2-oregon|none"}, {35, "us-east-1-virginia|none"}}) {
    CommandResult r = run_capture({"sh", "-c", "SLURM_PROCID=" + std::to_string(procid) + " " + srun_tail});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output, want + "\n") << procid;
  }
  CommandResult r = run_capture({"sh", "-c", "SLURM_PROCID=99 " + srun_tail});
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

TEST(LaunchCommand, TcpLinksReachMpirunAndTheSlurmScriptOnlyWhenAsked) {
  LaunchSpec s = aws6_spec({});
  auto mca = [](const std::vector<std::string>& argv) {  // the value after --mca btl_tcp_links, or ""
    for (size_t i = 0; i + 2 < argv.size(); ++i)
      if (argv[i] == "--mca" && argv[i + 1] == "btl_tcp_links") return argv[i + 2];
    return std::string();
  };
  EXPECT_EQ(mca(build_mpirun(s).argv), "");
  EXPECT_EQ(build_slurm_script(s).find("btl_tcp_links"), std::string::npos);
  s.tcp_links = 4;
  EXPECT_EQ(mca(build_mpirun(s).argv), "4");
  EXPECT_NE(build_slurm_script(s).find("\nexport OMPI_MCA_btl_tcp_links=4\n"), std::string::npos);
}

TEST(LaunchCommand, SlurmRefusesAnEmulatedLaunch) {
  EXPECT_THROW(build_slurm_script(local4_spec()), InputError);
}

TEST(LaunchCommand, SlurmScriptCarriesWarningsAsCommentsUnderItsHeader) {
  LaunchSpec s = aws6_spec({});
  s.warnings = {"host \"a.invalid\" of region \"r\" does not resolve", "a second\nline"};
  std::string script = build_slurm_script(s);
  EXPECT_NE(script.find("placement).\n# warning: host \"a.invalid\" of region \"r\" does not resolve\n"
                        "# warning: a second line\n#SBATCH --job-name="),
            std::string::npos)
      << script;
  CommandResult syntax = run_capture({"bash", "-n", "-c", script});  // still a script bash accepts
  EXPECT_EQ(syntax.exit_code, 0) << syntax.output;
}

// Open MPI's root refusal: which launches get --allow-run-as-root, which are refused, in each mode.
TEST(LaunchCommand, AllowRunAsRootIsAddedWhereMpirunRunsAsRootAndRefusedWhereNothingAllowsIt) {
  enum Outcome { kNoFlag, kFlag, kRefused };
  struct Case {
    Emulation emulation;
    bool requested;      // --allow-run-as-root
    bool starts_mpirun;  // false: --dry-run or --slurm
    Launcher launcher;   // {root, the two OMPI_ALLOW_RUN_AS_ROOT* variables are 1}
    Outcome want;
  };
  const Launcher root{true, false}, root_with_env{true, true}, user{false, false};
  const std::vector<Case> cases = {
      {Emulation::kSoftware, false, true, root, kRefused},
      {Emulation::kSoftware, false, true, root_with_env, kNoFlag},
      {Emulation::kSoftware, false, true, user, kNoFlag},
      {Emulation::kSoftware, true, true, root, kFlag},
      {Emulation::kSoftware, true, true, user, kFlag},  // Open MPI accepts it from anyone
      {Emulation::kSoftware, false, false, root, kNoFlag},
      {Emulation::kNone, false, true, root, kRefused},
      {Emulation::kNone, false, true, root_with_env, kNoFlag},
      {Emulation::kNone, true, true, root, kFlag},
      {Emulation::kNone, true, false, root, kFlag},  // --dry-run prints the command as it would run
      {Emulation::kNone, false, false, root, kNoFlag},
      {Emulation::kNetns, false, true, root, kFlag},  // netns needs root: the flag comes by itself
      {Emulation::kNetns, false, true, root_with_env, kFlag},
      {Emulation::kNetns, false, false, user, kFlag},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(emulation_name(c.emulation)) + (c.requested ? " --allow-run-as-root" : "") +
                 (c.starts_mpirun ? "" : " --dry-run") + (c.launcher.root ? " as root" : " as a user") +
                 (c.launcher.env_allows_root ? " with OMPI_ALLOW_RUN_AS_ROOT*=1" : ""));
    if (c.want == kRefused) {
      try {
        mpirun_allows_root(c.emulation, c.requested, c.starts_mpirun, c.launcher);
        ADD_FAILURE() << "not refused";
      } catch (const InputError& e) {
        EXPECT_STREQ(e.what(), "mpirun: Open MPI refuses to run as root: pass --allow-run-as-root to geopipe launch, "
                               "or export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1");
      }
      continue;
    }
    LaunchSpec s = c.emulation == Emulation::kNone ? aws6_spec({}) : local4_spec();
    s.emulation = c.emulation;
    s.allow_run_as_root = mpirun_allows_root(c.emulation, c.requested, c.starts_mpirun, c.launcher);
    const std::vector<std::string> argv = build_mpirun(s).argv;
    auto mpirun = std::find(argv.begin(), argv.end(), "mpirun");
    ASSERT_NE(mpirun, argv.end());
    EXPECT_EQ(std::count(argv.begin(), argv.end(), "--allow-run-as-root"), c.want == kFlag ? 1 : 0);
    if (c.want == kFlag) {
      EXPECT_EQ(*(mpirun + 1), "--allow-run-as-root");  // a global option, before any app context
    }
  }
}

TEST(LaunchCommand, OpenMpisRootVariablesAllowRootOnlyWhenBothAreOne) {
  // Saved and restored: other tests in this binary may rely on them.
  auto saved = [](const char* name) {
    const char* v = std::getenv(name);
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
  const auto allow = saved(kOmpiAllowRunAsRoot), confirm = saved(kOmpiAllowRunAsRootConfirm);
  auto set = [](const char* name, const char* value) { value ? setenv(name, value, 1) : unsetenv(name); };
  struct Case {
    const char* allow;
    const char* confirm;
    bool allows;
  };
  for (const Case& c : std::vector<Case>{{"1", "1", true}, {"1", nullptr, false}, {nullptr, "1", false},
                                         {"yes", "1", false}, {"1", "true", false}}) {
    set(kOmpiAllowRunAsRoot, c.allow);
    set(kOmpiAllowRunAsRootConfirm, c.confirm);
    EXPECT_EQ(Launcher::current().env_allows_root, c.allows)
        << (c.allow ? c.allow : "(unset)") << " " << (c.confirm ? c.confirm : "(unset)");
  }
  set(kOmpiAllowRunAsRoot, allow ? allow->c_str() : nullptr);
  set(kOmpiAllowRunAsRootConfirm, confirm ? confirm->c_str() : nullptr);
  EXPECT_EQ(Launcher::current().root, geteuid() == 0);
}

TEST(LaunchCommand, ShellQuotingSurvivesAShell) {
  std::vector<std::string> words = {"plain", "with space", "it's", "$HOME", "a\"b", "", "*", "back\\slash"};
  std::vector<std::string> argv = {"printf", "[%s]"};
  argv.insert(argv.end(), words.begin(), words.end());
  CommandResult r = run_capture({"sh", "-c", shell_join(argv)});
  EXPECT_EQ(r.output, "[plain][with space][it's][$HOME][a\"b][][*][back\\slash]");
  EXPECT_EQ(shell_quote("us-east=10.0.0.1:/x,y"), "us-east=10.0.0.1:/x,y");  // no quotes needed
}

TEST(LaunchCommand, NetnsLayoutIsNamedAfterThePidAndTouchesOnlyItsNamespaces) {
  Topology t = local4();
  NetnsLayout l = make_netns_layout(t, {"us-east", "ap-southeast"}, 4242);
  EXPECT_EQ(l.hub, "geopipe-4242-hub");
  ASSERT_EQ(l.regions.size(), 2u);
  EXPECT_EQ(l.regions[1].netns, "geopipe-4242-r1");
  EXPECT_EQ(l.subnet, "198.18.146.0/24");  // 4242 % 512 = 146
  EXPECT_EQ(l.regions[1].address, "198.18.146.11");
  EXPECT_EQ(make_netns_layout(t, {"us-east"}, 4242 + 256).subnet, "198.19.146.0/24");

  auto setup = netns_setup_commands(l, t, false);
  const auto namespaces = l.namespaces();
  for (const auto& c : setup) {
    SCOPED_TRACE(shell_join(c));
    // Every command creates one of our namespaces or runs inside one (-n NAMESPACE).
    bool creates = c.size() == 4 && c[0] == "ip" && c[1] == "netns" && c[2] == "add";
    bool inside = c.size() > 2 && c[1] == "-n";
    ASSERT_TRUE(creates || inside);
    const std::string& ns = creates ? c[3] : c[2];
    EXPECT_NE(std::find(namespaces.begin(), namespaces.end(), ns), namespaces.end());
  }
  // us-east -> ap-southeast is 0.1 Gbit/s: an htb class at 100000 kbit and a filter on the
  // destination's address, both on us-east's interface; the reverse on ap-southeast's.
  auto has = [&](const std::vector<std::string>& want) {
    return std::find(setup.begin(), setup.end(), want) != setup.end();
  };
  EXPECT_TRUE(has({"tc", "-n", "geopipe-4242-r0", "class", "add", "dev", "gpeth", "parent", "1:", "classid", "1:11", "htb",
                   "rate", "100000kbit", "ceil", "100000kbit", "burst", "125000b", "cburst", "125000b", "quantum", "60000"}));
  EXPECT_TRUE(has({"tc", "-n", "geopipe-4242-r0", "filter", "add", "dev", "gpeth", "parent", "1:", "protocol", "ip",
                   "prio", "1", "u32", "match", "ip", "dst", "198.18.146.11/32", "flowid", "1:11"}));
  EXPECT_TRUE(has({"tc", "-n", "geopipe-4242-r1", "filter", "add", "dev", "gpeth", "parent", "1:", "protocol", "ip",
                   "prio", "1", "u32", "match", "ip", "dst", "198.18.146.10/32", "flowid", "1:10"}));
  // With netem the link's one-way latency goes under the class.
  auto with_netem = netns_setup_commands(l, t, true);
  EXPECT_NE(std::find(with_netem.begin(), with_netem.end(),
                      std::vector<std::string>{"tc", "-n", "geopipe-4242-r0", "qdisc", "add", "dev", "gpeth", "parent",
                                               "1:11", "handle", "11:", "netem", "delay", "40ms", "limit", "100000"}),
            with_netem.end());
  // Teardown deletes exactly the namespaces setup created, regions first.
  auto down = netns_teardown_commands(l);
  ASSERT_EQ(down.size(), 3u);
  EXPECT_EQ(down.back(), (std::vector<std::string>{"ip", "netns", "delete", "geopipe-4242-hub"}));
}

TEST(LaunchCommand, NetnsDropsTrafficBetweenRegionsWithoutALink) {
  Topology t = local4();
  t.links.erase(t.links.begin());  // us-east <-> us-west
  t.finalize();
  NetnsLayout l = make_netns_layout(t, {"us-east", "us-west"}, 7);
  auto setup = netns_setup_commands(l, t, false);
  EXPECT_NE(std::find(setup.begin(), setup.end(),
                      std::vector<std::string>{"tc", "-n", "geopipe-7-r0", "filter", "add", "dev", "gpeth", "parent", "1:",
                                               "protocol", "ip", "prio", "1", "u32", "match", "ip", "dst",
                                               "198.18.7.11/32", "action", "drop"}),
            setup.end());
}

TEST(LaunchCommand, NetnsCommandRunsMpirunInTheHubWithTheAgent) {
  LaunchSpec s = local4_spec();
  s.emulation = Emulation::kNetns;
  s.netns_launcher = "geopipe-9-hub";
  s.netns_agent = "/run/gp/netns-agent.sh";
  s.netns_subnet = "198.18.9.0/24";
  s.emulate_env = "netns";
  for (auto& r : s.placement.ranks) r.host = "geopipe-9-r" + std::to_string(r.rank);
  MpirunCommand cmd = build_mpirun(s);
  EXPECT_EQ(std::vector<std::string>(cmd.argv.begin(), cmd.argv.begin() + 5),
            (std::vector<std::string>{"ip", "netns", "exec", "geopipe-9-hub", "mpirun"}));
  EXPECT_TRUE(has_pair(cmd.argv, "plm_rsh_agent", "/run/gp/netns-agent.sh"));
  EXPECT_TRUE(has_pair(cmd.argv, "btl_tcp_if_include", "198.18.9.0/24"));
  auto ctx = app_contexts(cmd.argv);
  EXPECT_TRUE(has_pair(ctx[3], "--host", "geopipe-9-r3"));
  EXPECT_TRUE(has_pair(ctx[3], "-x", "GEOPIPE_EMULATE=netns"));
  auto agent = std::find_if(cmd.files.begin(), cmd.files.end(), [](const GeneratedFile& f) { return f.executable; });
  ASSERT_NE(agent, cmd.files.end());
  EXPECT_NE(agent->content.find("exec ip netns exec \"$ns\" /bin/sh -c \"$*\""), std::string::npos) << agent->content;
  EXPECT_NE(agent->content.find("session=/run/gp/sessions/\"$ns\""), std::string::npos) << agent->content;
  EXPECT_NE(agent->content.find("OMPI_MCA_orte_tmpdir_base=\"$session\""), std::string::npos) << agent->content;
}

TEST(LaunchCommand, NetnsPutsAStagesReplicasInItsRegionsNamespace) {
  // 2 stages x 2 replicas on two regions of 2 GPUs; --dry-run builds the layout without root.
  const auto dir = std::filesystem::temp_directory_path() / ("geopipe-netns-replicas-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  Topology t = local4();
  t.regions.resize(2);
  t.links.resize(1);  // us-east <-> us-west
  for (auto& region : t.regions) region.gpus = 2;
  const std::string topology_file = (dir / "topology.json").string(), plan_file = (dir / "plan.json").string();
  std::ofstream(topology_file) << to_json(t).dump(1);
  t = load_topology(topology_file);
  save_plan(make_plan(t, {{"us-east", 2}, {"us-west", 2}}), plan_file);

  LaunchRequest q;
  q.topology_file = topology_file;
  q.plan_file = plan_file;
  q.emulation = Emulation::kNetns;
  q.dry_run = true;
  q.run_dir = dir.string();
  q.program = {"geopipe-train"};
  LaunchSpec s = prepare_launch(q);
  const std::string east = "geopipe-" + std::to_string(getpid()) + "-r0";
  const std::string west = "geopipe-" + std::to_string(getpid()) + "-r1";
  ASSERT_EQ(s.placement.world_size(), 4);
  for (int r = 0; r < 4; ++r) {
    SCOPED_TRACE(r);
    EXPECT_EQ(s.placement.ranks[r].host, r < 2 ? east : west);
    EXPECT_EQ(s.placement.ranks[r].region, r < 2 ? "us-east" : "us-west");
  }
  MpirunCommand cmd = build_mpirun(s);
  auto ctx = app_contexts(cmd.argv);
  ASSERT_EQ(ctx.size(), 2u);  // one app context per namespace, its two replicas in it
  EXPECT_TRUE(has_pair(ctx[0], "-np", "2"));
  EXPECT_TRUE(has_pair(ctx[0], "--host", east));
  EXPECT_TRUE(has_pair(ctx[0], "-x", "GEOPIPE_REGION=us-east"));
  EXPECT_TRUE(has_pair(ctx[1], "-np", "2"));
  EXPECT_TRUE(has_pair(ctx[1], "--host", west));
  EXPECT_TRUE(has_pair(ctx[1], "-x", "GEOPIPE_REGION=us-west"));
  EXPECT_NE(cmd.files[0].content.find(east + " slots=2  # us-east\n" + west + " slots=2  # us-west\n"),
            std::string::npos)
      << cmd.files[0].content;
  std::filesystem::remove_all(dir);
}

TEST(LaunchCommand, RunCaptureReportsStatusOutputAndTimeout) {
  CommandResult ok = run_capture({"sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(ok.exit_code, 3);
  EXPECT_EQ(ok.output, "out\nerr\n");
  CommandResult missing = run_capture({"/nonexistent/program"});
  EXPECT_EQ(missing.exit_code, 127);
  CommandResult slow = run_capture({"sleep", "30"}, 0.3);
  EXPECT_EQ(slow.exit_code, 124);
  EXPECT_THROW(run_checked({"false"}), Error);
}

}  // namespace
}  // namespace geopipe::launch
