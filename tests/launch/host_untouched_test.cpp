// `geopipe launch --emulate netns` never touches the host's own network namespace: its
// interfaces, addresses, routes, policy rules, qdiscs/classes/filters, forwarding switches and
// firewall rules are the same before, during (sampled from a thread of this process while the
// launch runs in a child process: set-up, job, tear-down) and after a run that succeeds, one whose
// job fails, and one stopped with SIGTERM; the only namespaces that come and go are the run's
// own geopipe-<launcher pid>-*, and `geopipe launch --cleanup` deletes no namespace of a live
// process or of another program. Skipped when not root or when `ip netns add` is refused.
#include <geopipe/launch/netns.h>
#include <geopipe/launch/process.h>

#include "launch_test_util.h"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

namespace geopipe::launch {
using testing::netns_test_setup;
using testing::spawn;
using testing::survivors;
using testing::terminate_and_reap;
using testing::wait_for_rank_pids;
using testing::wait_until;
namespace {

namespace fs = std::filesystem;

bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::istringstream in(path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  std::string dir;
  while (std::getline(in, dir, ':'))
    if (!dir.empty() && access((dir + "/" + program).c_str(), X_OK) == 0) return true;
  return false;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Output of a command with what legitimately changes by itself removed: address and route
// lifetimes, packet/byte counters, iptables-save's dated comment lines.
std::string normalised(const std::vector<std::string>& argv) {
  CommandResult r = run_capture(argv, 20);
  std::string s = "exit " + std::to_string(r.exit_code) + "\n" + r.output;
  static const std::regex lifetimes(R"((valid_lft|preferred_lft|expires) \S+)");
  static const std::regex ipt_counters(R"(\[\d+:\d+\])");
  static const std::regex nft_counters(R"(packets \d+ bytes \d+)");
  static const std::regex comments(R"((^|\n)#[^\n]*)");
  s = std::regex_replace(s, lifetimes, "$1 _");
  s = std::regex_replace(s, ipt_counters, "[_:_]");
  s = std::regex_replace(s, nft_counters, "packets _ bytes _");
  s = std::regex_replace(s, comments, "$1#");
  return s;
}

struct HostSnapshot {
  std::map<std::string, std::string> parts;  // what -> normalised output
  std::set<std::string> namespaces;          // `ip netns list` names
};

std::set<std::string> namespace_names() {
  CommandResult r = run_capture({"ip", "netns", "list"}, 20);
  std::set<std::string> out;
  std::istringstream in(r.output);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.insert(line.substr(0, line.find(' ')));  // "name (id: 3)"
  return out;
}

HostSnapshot snapshot_host() {
  HostSnapshot h;
  auto add = [&](const std::vector<std::string>& argv) {
    std::string key;
    for (const auto& a : argv) key += (key.empty() ? "" : " ") + a;
    h.parts[key] = normalised(argv);
  };
  add({"ip", "-o", "link", "show"});
  add({"ip", "-o", "addr", "show"});
  add({"ip", "route", "show", "table", "all"});
  add({"ip", "-6", "route", "show", "table", "all"});
  add({"ip", "rule", "show"});
  add({"ip", "-6", "rule", "show"});
  add({"ip", "neigh", "show", "proxy"});
  add({"tc", "qdisc", "show"});
  // Classes and filters of every host interface (a qdisc listing alone would miss a filter).
  std::istringstream links(run_capture({"ip", "-o", "link", "show"}, 20).output);
  std::string line;
  static const std::regex name(R"(^\d+: ([^:@ ]+)[@:])");
  std::smatch m;
  while (std::getline(links, line)) {
    if (!std::regex_search(line, m, name)) continue;
    add({"tc", "class", "show", "dev", m[1]});
    add({"tc", "filter", "show", "dev", m[1]});
    add({"tc", "filter", "show", "dev", m[1], "ingress"});
  }
  for (const char* f : {"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding",
                        "/proc/sys/net/bridge/bridge-nf-call-iptables"})
    h.parts[f] = read_file(f);
  for (const char* tool : {"iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save"})
    if (on_path(tool)) add({tool});
  if (on_path("nft")) add({"nft", "list", "ruleset"});
  h.namespaces = namespace_names();
  return h;
}

// Every difference between two snapshots (empty: identical), as readable lines.
std::vector<std::string> differences(const HostSnapshot& before, const HostSnapshot& now) {
  std::vector<std::string> out;
  for (const auto& [what, text] : before.parts) {
    auto it = now.parts.find(what);
    if (it == now.parts.end())
      out.push_back("`" + what + "` disappeared");
    else if (it->second != text)
      out.push_back("`" + what + "` changed:\n--- before\n" + text + "--- now\n" + it->second);
  }
  for (const auto& [what, text] : now.parts)
    if (!before.parts.count(what)) out.push_back("`" + what + "` appeared:\n" + text);
  return out;
}

// Namespaces in `now` that were not in `before`, and namespaces of `before` that are gone.
std::pair<std::vector<std::string>, std::vector<std::string>> namespace_changes(const std::set<std::string>& before,
                                                                               const std::set<std::string>& now) {
  std::vector<std::string> added, removed;
  for (const auto& n : now)
    if (!before.count(n)) added.push_back(n);
  for (const auto& n : before)
    if (!now.count(n)) removed.push_back(n);
  return {added, removed};
}

// Samples the host from a thread of its own until stopped; keeps the first difference it sees
// and every namespace that appeared.
class HostWatcher {
 public:
  explicit HostWatcher(const HostSnapshot& before) : before_(before), thread_([this] { loop(); }) {}
  ~HostWatcher() { stop(); }
  void stop() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int samples() const { return samples_; }
  std::vector<std::string> first_difference() {
    std::lock_guard<std::mutex> g(mu_);
    return first_difference_;
  }
  std::set<std::string> namespaces_seen() {
    std::lock_guard<std::mutex> g(mu_);
    return seen_;
  }
  std::set<std::string> namespaces_removed() {
    std::lock_guard<std::mutex> g(mu_);
    return removed_;
  }

 private:
  void loop() {
    while (!done_) {
      HostSnapshot now = snapshot_host();
      auto diff = differences(before_, now);
      auto [added, removed] = namespace_changes(before_.namespaces, now.namespaces);
      std::lock_guard<std::mutex> g(mu_);
      if (first_difference_.empty() && !diff.empty()) first_difference_ = diff;
      seen_.insert(added.begin(), added.end());
      removed_.insert(removed.begin(), removed.end());
      ++samples_;
    }
  }
  HostSnapshot before_;
  std::atomic<bool> done_{false};
  std::atomic<int> samples_{0};
  std::mutex mu_;
  std::vector<std::string> first_difference_;
  std::set<std::string> seen_, removed_;
  std::thread thread_;
};

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + "\n";
  return s;
}

class HostUntouched : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = netns_test_setup("geopipe-host-untouched-", dir_);
    if (!why.empty()) GTEST_SKIP() << why;
    before_ = snapshot_host();
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // The shipped four-region topology: 5 namespaces, a bridge, 4 veth pairs, htb classes and
  // filters for 12 ordered region pairs.
  std::vector<std::string> launch_args(const std::vector<std::string>& job) {
    std::vector<std::string> a = {GEOPIPE_CLI, "launch", "--topology", testing::src("examples/topologies/local4.json"),
                                  "--ranks-per-region", "1", "--emulate", "netns", "--timeout", "120", "--"};
    a.insert(a.end(), job.begin(), job.end());
    return a;
  }

  // The host as it was before, and no namespace left that was not there before.
  void expect_host_as_before(const char* when) {
    HostSnapshot after = snapshot_host();
    EXPECT_EQ(differences(before_, after), std::vector<std::string>{}) << when;
    auto [added, removed] = namespace_changes(before_.namespaces, after.namespaces);
    EXPECT_EQ(added, std::vector<std::string>{}) << when << ": namespaces left behind";
    EXPECT_EQ(removed, std::vector<std::string>{}) << when << ": namespaces that were not the run's were deleted";
  }

  // What the watcher saw while launch `launcher` ran: no host change, and only that run's
  // namespaces (geopipe-<launcher>-*) appearing, none disappearing.
  void expect_watch_clean(HostWatcher& w, pid_t launcher) {
    w.stop();
    EXPECT_GT(w.samples(), 0);
    EXPECT_EQ(w.first_difference(), std::vector<std::string>{}) << "the host changed while the launch ran";
    const std::string ours = std::string(kNetnsPrefix) + std::to_string(launcher) + "-";
    for (const auto& ns : w.namespaces_seen())
      EXPECT_EQ(ns.rfind(ours, 0), 0u) << "namespace " << ns << " appeared during the run, not named " << ours << "*";
    EXPECT_EQ(w.namespaces_removed(), std::set<std::string>{}) << "namespaces that were not the run's disappeared";
  }

  fs::path dir_;
  HostSnapshot before_;
};

TEST_F(HostUntouched, SnapshotSeesAHostChange) {
  // The comparison must be able to fail: an interface and a namespace made here show up. A veth
  // pair, not a dummy interface: some kernels have no dummy driver, every one that runs the
  // netns emulation has veth.
  const std::string veth = "gpt" + std::to_string(getpid() % 100000);
  ASSERT_EQ(run_capture({"ip", "link", "add", veth + "a", "type", "veth", "peer", "name", veth + "b"}).exit_code, 0);
  HostSnapshot now = snapshot_host();
  run_capture({"ip", "link", "del", veth + "a"});  // removes its peer too
  EXPECT_FALSE(differences(before_, now).empty()) << "an added interface went unnoticed";
  EXPECT_EQ(differences(before_, snapshot_host()), std::vector<std::string>{}) << "removing it did not restore";

  const std::string ns = "gptest-" + std::to_string(getpid());
  ASSERT_EQ(run_capture({"ip", "netns", "add", ns}).exit_code, 0);
  auto [added, removed] = namespace_changes(before_.namespaces, namespace_names());
  run_capture({"ip", "netns", "delete", ns});
  EXPECT_EQ(added, std::vector<std::string>{ns});
}

TEST_F(HostUntouched, SuccessfulRunChangesNothingOnTheHostDuringOrAfter) {
  // Each rank records its pid and its network namespace, then waits for the go file.
  const std::string pidfile = (dir_ / "pid.").string(), go = (dir_ / "go").string();
  const std::string nsfile = (dir_ / "ns.").string();
  const std::string script = "readlink /proc/self/ns/net > " + nsfile + "$OMPI_COMM_WORLD_RANK && " +
                             "echo $$ > " + pidfile + "$OMPI_COMM_WORLD_RANK.tmp && mv " + pidfile +
                             "$OMPI_COMM_WORLD_RANK.tmp " + pidfile + "$OMPI_COMM_WORLD_RANK && " +
                             "i=0; while [ ! -e " + go + " ] && [ $i -lt 1000 ]; do sleep 0.1; i=$((i+1)); done";
  HostWatcher watcher(before_);
  pid_t pid = spawn(launch_args({"sh", "-c", script}));
  ASSERT_GT(pid, 0);
  std::vector<pid_t> ranks = wait_for_rank_pids(pidfile, 4, 90);
  // During the job: the run's namespaces are there, the ranks run in them, the host is as before.
  HostSnapshot during = snapshot_host();
  std::ofstream(go) << "go\n";
  int status = 0;
  bool ended = wait_until([&] { return waitpid(pid, &status, WNOHANG) == pid; }, 90);
  if (!ended) terminate_and_reap(pid, &status);
  ASSERT_EQ(ranks.size(), 4u) << "the ranks did not start";
  EXPECT_TRUE(ended && WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;

  EXPECT_EQ(differences(before_, during), std::vector<std::string>{}) << "the host changed while the job ran";
  auto [added, removed] = namespace_changes(before_.namespaces, during.namespaces);
  const std::string ours = std::string(kNetnsPrefix) + std::to_string(pid) + "-";
  EXPECT_EQ(added.size(), 5u) << "expected the hub and 4 region namespaces: " << joined(added);
  for (const auto& ns : added) EXPECT_EQ(ns.rfind(ours, 0), 0u) << ns;
  EXPECT_EQ(removed, std::vector<std::string>{});
  const std::string host_ns = fs::read_symlink("/proc/self/ns/net").string();
  for (int r = 0; r < 4; ++r) {
    std::string ns = read_file(nsfile + std::to_string(r));
    EXPECT_FALSE(ns.empty()) << "rank " << r;
    EXPECT_EQ(ns.find(host_ns), std::string::npos) << "rank " << r << " ran in the host's namespace";
  }
  expect_watch_clean(watcher, pid);
  expect_host_as_before("after a successful run");
}

TEST_F(HostUntouched, FailedJobChangesNothingOnTheHost) {
  HostWatcher watcher(before_);
  pid_t pid = spawn(launch_args({"sh", "-c", "sleep 1; exit 7"}));
  ASSERT_GT(pid, 0);
  int status = 0;
  bool ended = wait_until([&] { return waitpid(pid, &status, WNOHANG) == pid; }, 120);
  if (!ended) terminate_and_reap(pid, &status);
  EXPECT_TRUE(ended && WIFEXITED(status) && WEXITSTATUS(status) == 7) << "status " << status;
  expect_watch_clean(watcher, pid);
  expect_host_as_before("after a failed job");
}

TEST_F(HostUntouched, SigtermedRunChangesNothingOnTheHost) {
  const std::string pidfile = (dir_ / "pid.").string();
  HostWatcher watcher(before_);
  pid_t pid = spawn(launch_args({"sh", "-c", testing::record_pid_and_sleep(pidfile)}));
  ASSERT_GT(pid, 0);
  std::vector<pid_t> ranks = wait_for_rank_pids(pidfile, 4, 90);
  HostSnapshot during = snapshot_host();
  int status = 0;
  bool ended = terminate_and_reap(pid, &status);
  ASSERT_EQ(ranks.size(), 4u) << "the ranks did not start";
  EXPECT_TRUE(ended) << "geopipe launch did not end after SIGTERM";
  for (pid_t p : survivors(ranks)) ADD_FAILURE() << "rank process " << p << " still runs";
  EXPECT_EQ(differences(before_, during), std::vector<std::string>{}) << "the host changed while the job ran";
  expect_watch_clean(watcher, pid);
  expect_host_as_before("after SIGTERM");
}

TEST_F(HostUntouched, CleanupDeletesNoNamespaceOfALiveProcessOrOfAnotherProgram) {
  // geopipe-<this test's pid>-x looks like a run's namespace, but its pid is alive; the other
  // is not named like ours at all. `--cleanup` must leave both.
  const std::string live = std::string(kNetnsPrefix) + std::to_string(getpid()) + "-x";
  const std::string other = "other-" + std::to_string(getpid());
  ASSERT_EQ(run_capture({"ip", "netns", "add", live}).exit_code, 0);
  ASSERT_EQ(run_capture({"ip", "netns", "add", other}).exit_code, 0);
  CommandResult r = run_capture({GEOPIPE_CLI, "launch", "--cleanup"}, 60);
  std::set<std::string> now = namespace_names();
  run_capture({"ip", "netns", "delete", live});
  run_capture({"ip", "netns", "delete", other});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(now.count(live)) << "--cleanup deleted the namespace of a live pid\n" << r.output;
  EXPECT_TRUE(now.count(other)) << "--cleanup deleted a namespace that is not geopipe's\n" << r.output;
  // (Leftovers of killed runs may legitimately be gone: only the host itself is compared.)
  EXPECT_EQ(differences(before_, snapshot_host()), std::vector<std::string>{}) << "after --cleanup";
}

}  // namespace
}  // namespace geopipe::launch
